//! In-flight coalescing: concurrent identical cacheable requests make one
//! upstream request.
//!
//! The first request for a key becomes the leader and registers a
//! [`Flight`]; later ones, on any worker, follow it. The leader publishes
//! the response head (only for a 2xx answer) and then every body piece as
//! it relays it, so followers stream the answer as it arrives instead of
//! after it ends. A leader that gets no cacheable answer releases its
//! followers (they go upstream on their own); one that breaks off after the
//! head cuts them short, like a broken upstream would.
//!
//! The flight is shared across worker threads: a std mutex per flight
//! (held for a copy, never across an await) and wakers, which monoio's
//! `sync` feature lets any thread wake.

use std::{
    collections::HashMap,
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Poll, Waker},
};

use bytes::{Bytes, BytesMut};

use super::CacheKey;
use crate::tap::Usage;

/// The response head followers replay.
#[derive(Debug)]
pub struct FlightHead {
    pub status: u16,
    /// Stored response headers (`Name: value\r\n` lines).
    pub headers: Bytes,
    pub stream: bool,
    /// The body length when the upstream declared one (non-stream).
    pub length: Option<u64>,
}

#[derive(Debug, Default)]
enum Phase {
    #[default]
    Waiting,
    Streaming(Arc<FlightHead>),
    Done {
        head: Arc<FlightHead>,
        usage: Option<Usage>,
        /// The whole body, frozen: followers still copying read it here.
        body: Bytes,
    },
    /// No cacheable answer before the head: followers go on their own.
    Released,
    /// Broke off after the head.
    Cut,
}

#[derive(Debug, Default)]
struct State {
    phase: Phase,
    /// The body from byte `base` on: past `max_bytes` (so it will not be
    /// stored), bytes every follower has copied are dropped.
    body: BytesMut,
    base: usize,
    /// Followers still here: they count out when they leave, so the leader
    /// knows when no one needs the rest of the answer.
    followers: usize,
    /// Each follower's progress (absolute offset), by slot; None once gone.
    offsets: Vec<Option<usize>>,
    wakers: Vec<Waker>,
}

#[derive(Debug, Default)]
pub struct Flight {
    state: Mutex<State>,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, f: impl FnOnce(&mut State)) {
        let wakers = {
            let mut s = self.lock();
            f(&mut s);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// What a follower learns next.
#[derive(Debug)]
pub enum Update {
    /// The leader got no cacheable answer: go upstream alone.
    Released,
    Head(Arc<FlightHead>),
    /// More body bytes were appended to the follower's buffer.
    Data,
    /// The body is complete; the leader's usage, if known.
    End(Option<Usage>),
    /// The leader's response broke off after the head.
    Cut,
}

/// A follower's position in a flight.
pub struct Follower {
    flight: Arc<Flight>,
    slot: usize,
    head_seen: bool,
    /// Bytes of the body copied so far (from its very start).
    offset: usize,
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut s = self.flight.lock();
        if let Some(o) = s.offsets.get_mut(self.slot) {
            *o = None;
        }
        s.followers = s.followers.saturating_sub(1);
    }
}

impl Follower {
    /// Waits for the next update; body bytes are appended to `out`.
    pub async fn next(&mut self, out: &mut BytesMut) -> Update {
        poll_fn(|cx| {
            let mut s = self.flight.lock();
            let head = match &s.phase {
                Phase::Waiting => None,
                Phase::Released => return Poll::Ready(Update::Released),
                Phase::Streaming(h) | Phase::Done { head: h, .. } => Some(h.clone()),
                Phase::Cut if !self.head_seen => return Poll::Ready(Update::Released),
                Phase::Cut => return Poll::Ready(Update::Cut),
            };
            if let Some(h) = head {
                if !self.head_seen {
                    self.head_seen = true;
                    return Poll::Ready(Update::Head(h));
                }
                let body: &[u8] = match &s.phase {
                    Phase::Done { body, .. } => body,
                    _ => &s.body,
                };
                // Never behind `base`: only bytes every follower copied
                // are dropped.
                let from = self.offset.saturating_sub(s.base);
                if body.len() > from {
                    out.extend_from_slice(&body[from..]);
                    self.offset = s.base + body.len();
                    let (slot, offset) = (self.slot, self.offset);
                    if let Some(o) = s.offsets.get_mut(slot) {
                        *o = Some(offset);
                    }
                    return Poll::Ready(Update::Data);
                }
                if let Phase::Done { usage, .. } = &s.phase {
                    return Poll::Ready(Update::End(*usage));
                }
            }
            if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                s.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// The leader's side. Dropping it without [`Leader::finish`] releases or
/// cuts the followers.
pub struct Leader {
    flight: Arc<Flight>,
    /// Where it is registered (None: coalescing off, or no longer
    /// accepting followers).
    registry: Option<(Arc<Flights>, CacheKey)>,
    /// Bytes kept for the entry and the followers, up to this.
    max_bytes: usize,
    /// Past `max_bytes` with no follower: nothing is kept any more.
    abandoned: bool,
    /// Past `max_bytes`: the body is not stored.
    oversized: bool,
}

impl Leader {
    /// A flight no one can join (coalescing off): it only collects the
    /// body for the store.
    pub fn solo(max_bytes: usize) -> Leader {
        Leader { flight: Arc::default(), registry: None, max_bytes, abandoned: false, oversized: false }
    }

    /// Whether identical requests are following this one.
    pub fn has_followers(&self) -> bool {
        self.flight.lock().followers > 0
    }

    /// The answer is cacheable: followers get this head and then the body.
    pub fn head(&mut self, head: FlightHead) {
        let head = Arc::new(head);
        self.flight.publish(|s| s.phase = Phase::Streaming(head));
    }

    /// The answer is not cacheable (not 2xx): followers go on their own.
    pub fn release(&mut self) {
        self.unregister();
        self.abandoned = true;
        self.flight.publish(|s| s.phase = Phase::Released);
    }

    /// Appends the next piece of the body as the client sees it. The
    /// flight never holds more than `max_bytes` of it: past that the answer
    /// will not be stored and admits no new followers; bytes every follower
    /// has copied are dropped, and followers that fall `max_bytes` behind
    /// are cut short (their connections close, like a broken upstream's).
    pub fn data(&mut self, piece: &[u8]) {
        if self.abandoned || piece.is_empty() {
            return;
        }
        let mut s = self.flight.lock();
        if s.body.len() + piece.len() > self.max_bytes {
            drop(s);
            self.unregister();
            s = self.flight.lock();
            if s.followers == 0 {
                self.abandoned = true;
                s.body = BytesMut::new();
                drop(s);
                // Late joiners that registered between the checks.
                return self.flight.publish(|s| s.phase = Phase::Released);
            }
            self.oversized = true;
            let copied = s.offsets.iter().flatten().copied().min().unwrap_or(s.base + s.body.len());
            let drop_n = copied.saturating_sub(s.base).min(s.body.len());
            let _ = s.body.split_to(drop_n);
            s.base += drop_n;
            if s.body.len() + piece.len() > self.max_bytes {
                self.abandoned = true;
                s.body = BytesMut::new();
                drop(s);
                return self.flight.publish(|s| s.phase = Phase::Cut);
            }
        }
        s.body.extend_from_slice(piece);
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        for w in wakers {
            w.wake();
        }
    }

    /// The body is complete. Returns it for the store, unless it grew past
    /// the entry limit.
    pub fn finish(mut self, usage: Option<Usage>) -> Option<Bytes> {
        self.unregister();
        let mut body = None;
        let abandoned = self.abandoned || self.oversized;
        let max = self.max_bytes;
        self.flight.publish(|s| {
            if let Phase::Streaming(head) = &s.phase {
                let whole = std::mem::take(&mut s.body).freeze();
                if !abandoned && whole.len() <= max {
                    body = Some(whole.clone());
                }
                s.phase = Phase::Done { head: head.clone(), usage, body: whole };
            }
        });
        self.abandoned = true;
        body
    }

    fn unregister(&mut self) {
        if let Some((flights, key)) = self.registry.take() {
            flights.remove(key, &self.flight);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.unregister();
        self.flight.publish(|s| {
            if matches!(s.phase, Phase::Waiting | Phase::Streaming(_)) {
                s.phase = Phase::Cut;
            }
        });
    }
}

/// Joining a key's flight.
pub enum Join {
    Leader(Leader),
    Follower(Follower),
}

/// The registry of flights, lock-striped by key.
pub struct Flights {
    shards: Box<[Mutex<Registry>]>,
}

type Registry = HashMap<CacheKey, Arc<Flight>>;

const SHARDS: usize = 64;

impl Flights {
    pub fn new() -> Arc<Flights> {
        Arc::new(Flights { shards: (0..SHARDS).map(|_| Mutex::default()).collect() })
    }

    fn shard(&self, key: CacheKey) -> MutexGuard<'_, Registry> {
        let i = (key.0 as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leads a new flight for `key` or follows the one in progress.
    pub fn join(self: &Arc<Self>, key: CacheKey, max_bytes: usize) -> Join {
        let mut shard = self.shard(key);
        if let Some(f) = shard.get(&key) {
            let flight = f.clone();
            drop(shard);
            let slot = {
                let mut s = flight.lock();
                s.followers += 1;
                s.offsets.push(Some(0));
                s.offsets.len() - 1
            };
            return Join::Follower(Follower { flight, slot, head_seen: false, offset: 0 });
        }
        let flight = Arc::new(Flight::default());
        shard.insert(key, flight.clone());
        Join::Leader(Leader {
            flight,
            registry: Some((self.clone(), key)),
            max_bytes,
            abandoned: false,
            oversized: false,
        })
    }

    fn remove(&self, key: CacheKey, flight: &Arc<Flight>) {
        let mut shard = self.shard(key);
        if shard.get(&key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            shard.remove(&key);
        }
    }

    /// Flights in progress (for tests and stats).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> FlightHead {
        FlightHead { status: 200, headers: Bytes::new(), stream: true, length: None }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(f)
    }

    #[test]
    fn followers_on_other_threads_get_the_stream_as_it_arrives() {
        let flights = Flights::new();
        let Join::Leader(mut leader) = flights.join(CacheKey(1), 1 << 20) else { panic!("first is the leader") };
        let followers: Vec<_> = (0..4)
            .map(|_| match flights.join(CacheKey(1), 1 << 20) {
                Join::Follower(f) => f,
                Join::Leader(_) => panic!("second must follow"),
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: Vec<_> = followers
            .into_iter()
            .map(|mut f| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    block_on(async move {
                        let mut out = BytesMut::new();
                        let mut pieces = 0;
                        loop {
                            match f.next(&mut out).await {
                                Update::Head(h) => assert_eq!(h.status, 200),
                                Update::Data => {
                                    pieces += 1;
                                    let _ = tx.send(out.len());
                                }
                                Update::End(u) => return (out, pieces, u),
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                    })
                })
            })
            .collect();
        leader.head(head());
        leader.data(b"data: 1\n\n");
        // Every follower sees the first event before the second exists.
        for _ in 0..4 {
            assert_eq!(rx.recv().ok(), Some(9));
        }
        leader.data(b"data: 2\n\n");
        let usage = Some(Usage { output: 2, ..Usage::default() });
        assert_eq!(leader.finish(usage).as_deref(), Some(&b"data: 1\n\ndata: 2\n\n"[..]));
        for t in threads {
            let (out, pieces, u) = t.join().expect("follower thread");
            assert_eq!(&out[..], b"data: 1\n\ndata: 2\n\n");
            assert!(pieces >= 2);
            assert_eq!(u, usage);
        }
        assert!(flights.is_empty());
    }

    #[test]
    fn a_failed_leader_releases_or_cuts() {
        let flights = Flights::new();
        let Join::Leader(mut leader) = flights.join(CacheKey(2), 1 << 20) else { panic!() };
        let Join::Follower(mut f) = flights.join(CacheKey(2), 1 << 20) else { panic!() };
        leader.release();
        assert!(matches!(block_on(f.next(&mut BytesMut::new())), Update::Released));
        assert!(flights.is_empty());
        drop(leader);

        let Join::Leader(mut leader) = flights.join(CacheKey(3), 1 << 20) else { panic!() };
        let Join::Follower(mut f) = flights.join(CacheKey(3), 1 << 20) else { panic!() };
        let Join::Follower(mut late) = flights.join(CacheKey(3), 1 << 20) else { panic!() };
        leader.head(head());
        let mut out = BytesMut::new();
        assert!(matches!(block_on(f.next(&mut out)), Update::Head(_)));
        drop(leader);
        // One that already answered its client is cut short; one that had
        // not yet sent anything may still go upstream on its own.
        assert!(matches!(block_on(f.next(&mut out)), Update::Cut));
        assert!(matches!(block_on(late.next(&mut out)), Update::Released));
        assert!(flights.is_empty());
    }

    #[test]
    fn followers_that_leave_are_counted_out() {
        let flights = Flights::new();
        let Join::Leader(mut leader) = flights.join(CacheKey(6), 1 << 20) else { panic!() };
        let Join::Follower(f) = flights.join(CacheKey(6), 1 << 20) else { panic!() };
        assert!(leader.has_followers());
        drop(f);
        assert!(!leader.has_followers(), "the leader need not read on for a follower that left");
        leader.head(head());
        let _ = leader.finish(None);
    }

    #[test]
    fn the_flight_never_holds_more_than_max_bytes() {
        let flights = Flights::new();
        let Join::Leader(mut leader) = flights.join(CacheKey(7), 8) else { panic!() };
        let Join::Follower(mut quick) = flights.join(CacheKey(7), 8) else { panic!() };
        let Join::Follower(mut slow) = flights.join(CacheKey(7), 8) else { panic!() };
        leader.head(head());
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        assert!(matches!(block_on(quick.next(&mut a)), Update::Head(_)));
        assert!(matches!(block_on(slow.next(&mut b)), Update::Head(_)));
        leader.data(b"12345");
        assert!(matches!(block_on(quick.next(&mut a)), Update::Data));
        assert!(matches!(block_on(slow.next(&mut b)), Update::Data));
        // Past 8 bytes: what both copied is dropped, the rest still flows.
        leader.data(b"67890");
        assert!(matches!(block_on(quick.next(&mut a)), Update::Data));
        leader.data(b"abc");
        assert!(matches!(block_on(quick.next(&mut a)), Update::Data));
        assert_eq!(&a[..], b"1234567890abc");
        // `slow` has copied 5 of 13: 8 behind. One more byte and it would
        // hold 9 for it: followers are cut rather than the flight growing.
        leader.data(b"d");
        assert!(matches!(block_on(quick.next(&mut a)), Update::Cut));
        assert!(matches!(block_on(slow.next(&mut b)), Update::Cut));
        assert_eq!(leader.finish(None), None);
    }

    #[test]
    fn oversized_bodies_are_not_kept_without_followers() {
        let flights = Flights::new();
        let Join::Leader(mut leader) = flights.join(CacheKey(4), 8) else { panic!() };
        leader.head(head());
        leader.data(b"12345");
        leader.data(b"67890");
        assert!(flights.is_empty(), "no new followers once too big");
        assert_eq!(leader.finish(None), None);
        let Join::Leader(mut leader) = flights.join(CacheKey(5), 8) else { panic!() };
        let Join::Follower(mut f) = flights.join(CacheKey(5), 8) else { panic!() };
        leader.head(head());
        let mut out = BytesMut::new();
        assert!(matches!(block_on(f.next(&mut out)), Update::Head(_)));
        leader.data(b"12345");
        assert!(matches!(block_on(f.next(&mut out)), Update::Data));
        leader.data(b"67890");
        assert_eq!(leader.finish(None), None, "too big to store");
        assert!(matches!(block_on(f.next(&mut out)), Update::Data));
        assert_eq!(&out[..], b"1234567890", "a follower that keeps up gets all of it");
        assert!(matches!(block_on(f.next(&mut out)), Update::End(None)));
    }
}

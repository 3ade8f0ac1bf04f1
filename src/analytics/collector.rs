//! The analytics thread: merges worker deltas into totals, 10-second
//! buckets for the last hour, and gauges.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Counters, Delta, HistKey, Hists, SeriesKey};
use crate::server::shutdown::Shutdown;

/// Two rings of time buckets: 10-second ones for the last minute and
/// one-minute ones for the last hour (66 buckets of histograms per series,
/// not 360).
pub const SHORT: Duration = Duration::from_secs(10);
const SHORT_KEEP: usize = 6;
pub const LONG: Duration = Duration::from_secs(60);
const LONG_KEEP: usize = 60;

#[derive(Debug, Default)]
pub struct Bucket {
    /// Bucket number since start (elapsed / BUCKET).
    pub index: u64,
    pub counters: HashMap<SeriesKey, Counters>,
    pub hists: HashMap<HistKey, Hists>,
}

#[derive(Debug)]
pub struct State {
    pub started: Instant,
    pub totals: HashMap<SeriesKey, Counters>,
    pub hists: HashMap<HistKey, Hists>,
    pub short: VecDeque<Bucket>,
    pub long: VecDeque<Bucket>,
    pub attempts: HashMap<(Arc<str>, &'static str), u64>,
    pub ratelimited: HashMap<Arc<str>, u64>,
    pub records_dropped: u64,
    /// Per worker: (open client connections, open upstream connections).
    pub open: HashMap<usize, (u64, u64)>,
}

impl State {
    pub fn new() -> State {
        State {
            started: Instant::now(),
            totals: HashMap::new(),
            hists: HashMap::new(),
            short: VecDeque::new(),
            long: VecDeque::new(),
            attempts: HashMap::new(),
            ratelimited: HashMap::new(),
            records_dropped: 0,
            open: HashMap::new(),
        }
    }

    /// Current bucket number for a bucket width.
    pub fn bucket_now(&self, width: Duration) -> u64 {
        self.started.elapsed().as_secs() / width.as_secs()
    }

    pub fn merge(&mut self, d: Delta) {
        let short_now = self.bucket_now(SHORT);
        let long_now = self.bucket_now(LONG);
        for (ring, now, keep) in [(&mut self.short, short_now, SHORT_KEEP), (&mut self.long, long_now, LONG_KEEP)] {
            if ring.back().is_none_or(|b| b.index != now) {
                ring.push_back(Bucket { index: now, ..Bucket::default() });
                while ring.len() > keep {
                    ring.pop_front();
                }
            }
        }
        let (Some(short), Some(long)) = (self.short.back_mut(), self.long.back_mut()) else { return };
        for (k, c) in d.counters {
            short.counters.entry(k.clone()).or_default().add(&c);
            long.counters.entry(k.clone()).or_default().add(&c);
            self.totals.entry(k).or_default().add(&c);
        }
        for (k, h) in d.hists {
            short.hists.entry(k.clone()).or_default().add(&h);
            long.hists.entry(k.clone()).or_default().add(&h);
            self.hists.entry(k).or_default().add(&h);
        }
        for (k, n) in d.attempts {
            *self.attempts.entry(k).or_default() += n;
        }
        for (k, n) in d.ratelimited {
            *self.ratelimited.entry(k).or_default() += n;
        }
        self.records_dropped += d.records_dropped;
        self.open.insert(d.worker, (d.open_client, d.open_upstream));
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Collector;

impl Collector {
    /// Starts the thread. It ends once `stop` is triggered (after the
    /// workers have finished) and the queue is empty, or when every sender
    /// is gone.
    pub fn spawn(
        rx: crossbeam_channel::Receiver<Delta>,
        state: Arc<Mutex<State>>,
        stop: Arc<Shutdown>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("aigw-analytics".into()).spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(d) => {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.merge(d);
                        // Take what else is queued under the same lock.
                        while let Ok(d) = rx.try_recv() {
                            s.merge(d);
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if stop.is_triggered() => return,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
    }
}

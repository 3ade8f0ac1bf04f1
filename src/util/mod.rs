//! Leaf helpers every module may use: clocks, the shutdown signal, giving
//! memory back, and small async combinators for the I/O loops.

pub mod memory;
pub mod send_now;
pub mod shutdown;

use std::{future::Future, pin::Pin, task::Poll};

/// A HashMap for the maps every request touches (series, model labels,
/// provider and key lookups, the idle-connection set). std's SipHash cost
/// ~1,500 instructions per proxied request there (callgrind,
/// docs/benchmarks.md); foldhash is several times cheaper on short keys
/// and still seeded per map, so a client choosing model names or key ids
/// cannot aim collisions at one bucket.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Current wall-clock time in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures, left first; resolves with whichever finishes first.
/// Neither is dropped here, so a pinned long-lived future can be raced
/// again in the next round (the client-disconnect watch relies on this).
pub async fn race<A: Future, B: Future>(mut a: Pin<&mut A>, mut b: Pin<&mut B>) -> Either<A::Output, B::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

/// `fut`, or None once `expiry` fires. Unlike `monoio::time::timeout`, the
/// timer is the caller's and outlives the call: a stream's reads all end at
/// the same deadline, so one timer is armed per stream instead of one per
/// read (each `timeout` inserts a timer into the wheel, takes it out again
/// and reads the clock; docs/benchmarks.md "Streams event by event").
pub async fn until<F: Future>(fut: F, mut expiry: Pin<&mut monoio::time::Sleep>) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if expiry.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::{pin::pin, time::Duration};

    use super::until;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime").block_on(f)
    }

    #[test]
    fn one_timer_bounds_many_calls() {
        run(async {
            let start = std::time::Instant::now();
            let mut expiry = pin!(monoio::time::sleep(Duration::from_millis(200)));
            // Calls that finish in time get their output, and leave the
            // timer armed for the next.
            for i in 0..5u32 {
                let got = until(async move { i }, expiry.as_mut()).await;
                assert_eq!(got, Some(i));
                let got = until(monoio::time::sleep(Duration::from_millis(1)), expiry.as_mut()).await;
                assert_eq!(got, Some(()));
            }
            // A call still pending at the deadline gets None, at the
            // deadline and not before.
            assert_eq!(until(std::future::pending::<()>(), expiry.as_mut()).await, None);
            assert!(start.elapsed() >= Duration::from_millis(200));
            // Once fired, the timer stays fired: later calls end at once
            // unless their future is ready on its first poll.
            assert_eq!(until(std::future::pending::<()>(), expiry.as_mut()).await, None);
            assert_eq!(until(async { 7 }, expiry.as_mut()).await, Some(7));
        });
    }
}

//! Leaf helpers every module may use: clocks, the shutdown signal, giving
//! memory back, and small async combinators for the I/O loops.

pub mod memory;
pub mod send_now;
pub mod shutdown;
pub mod timer;

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

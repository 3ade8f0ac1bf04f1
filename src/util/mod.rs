//! Leaf helpers every module may use: clocks, the shutdown signal, giving
//! memory back, and small async combinators for the I/O loops.

pub mod memory;
pub mod shutdown;

use std::{future::Future, pin::Pin, task::Poll};

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

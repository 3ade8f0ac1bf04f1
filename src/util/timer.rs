//! One deadline timer per client connection, re-armed for each wait
//! instead of a new `monoio::time::timeout` per read. The connection's own
//! reads and its upstream reads never wait at the same time, so the same
//! timer bounds both (`service::ClientIo::timer`).
//!
//! Why: monoio's `Sleep` is 640 bytes aligned to 128 (its timer entry is
//! cache-padded). Held inline, it made every future that waited on a read
//! that large and that aligned, so each request's futures were mostly
//! timer and padding, and every await moved them (docs/benchmarks.md
//! "Saturation: kernel and user time per request"). Boxed once per
//! connection and re-armed, it costs one allocation per connection, and a
//! later deadline is a store (`reset` extends the entry in place; the wheel
//! moves it only if it comes due first), where each `timeout` inserted an
//! entry into the wheel and took it out again.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use monoio::time::Sleep;

/// How far off an unarmed timer is: never reached by a live connection.
const UNARMED: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct Timer(Pin<Box<Sleep>>);

impl Timer {
    /// A timer that fires at nothing until `bound` arms it. Must be called
    /// on a runtime with timers (every worker's is).
    pub fn new(now: Instant) -> Self {
        Self(Box::pin(monoio::time::sleep_until(monoio::time::Instant::from_std(now + UNARMED))))
    }

    /// `fut`, or None once `deadline` passes. A plain future rather than an
    /// `async fn`: every layer of `async fn` between a read and its caller
    /// copies the read's state once more on each call.
    pub fn bound<F: Future>(&mut self, deadline: Instant, fut: F) -> Bounded<'_, F> {
        let deadline = monoio::time::Instant::from_std(deadline);
        if self.0.deadline() != deadline {
            self.0.as_mut().reset(deadline);
        }
        Bounded { fut, expiry: self.0.as_mut() }
    }
}

pin_project_lite::pin_project! {
    /// A future raced against a timer that outlives it (`Timer::bound`).
    pub struct Bounded<'a, F> {
        #[pin]
        fut: F,
        expiry: Pin<&'a mut Sleep>,
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Some(v));
        }
        if this.expiry.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Timer;

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime").block_on(f)
    }

    #[test]
    fn each_wait_ends_at_its_own_deadline() {
        run(async {
            let start = Instant::now();
            let mut timer = Timer::new(start);
            // Finished in time: the output, whatever the deadline.
            assert_eq!(timer.bound(start + Duration::from_secs(60), async { 1 }).await, Some(1));
            // A nearer deadline than the last one still fires on time.
            let near = Instant::now() + Duration::from_millis(30);
            assert_eq!(timer.bound(near, std::future::pending::<()>()).await, None);
            assert!(Instant::now() >= near);
            // Once fired, a later deadline re-arms it.
            let again = Instant::now() + Duration::from_millis(20);
            let got = timer.bound(again, monoio::time::sleep(Duration::from_millis(1))).await;
            assert_eq!(got, Some(()));
            assert_eq!(timer.bound(again, std::future::pending::<()>()).await, None);
            assert!(Instant::now() >= again);
            // A deadline already past ends a pending wait at once.
            let past = Instant::now();
            assert_eq!(timer.bound(past, std::future::pending::<()>()).await, None);
        });
    }
}

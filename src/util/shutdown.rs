//! Process-wide shutdown signal: set once (SIGTERM, SIGINT, or a test's
//! handle) and observed by every worker runtime and helper thread.
//!
//! Each worker registers one waker for its accept loop; nothing per request
//! touches the mutex.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    sleepers: Condvar,
    sleep_lock: Mutex<()>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        if self.flag.swap(true, Ordering::SeqCst) {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers {
            w.wake();
        }
        let _guard = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.notify_all();
    }

    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown is triggered.
    pub fn wait(&self) -> Wait<'_> {
        Wait { shutdown: self, registered: false }
    }

    /// For plain threads: sleeps up to `d`; true if shutdown was triggered.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_triggered() {
            return true;
        }
        let _ = self.sleepers.wait_timeout(guard, d);
        self.is_triggered()
    }
}

pub struct Wait<'a> {
    shutdown: &'a Shutdown,
    registered: bool,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.is_triggered() {
            return Poll::Ready(());
        }
        // A task's waker is stable, so one registration is enough.
        if !self.registered {
            self.shutdown.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(cx.waker().clone());
            self.registered = true;
            // Re-check: trigger() may have drained the list just before.
            if self.shutdown.is_triggered() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// Installs SIGTERM/SIGINT handlers that trigger `shutdown` from a helper
/// thread.
pub fn on_signals(shutdown: std::sync::Arc<Shutdown>) -> std::io::Result<()> {
    use signal_hook::{
        consts::{SIGINT, SIGTERM},
        iterator::Signals,
    };
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new().name("aigw-signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            log::info!("received signal {sig}: draining");
            shutdown.trigger();
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn wakes_a_runtime_from_another_thread() {
        let s = Arc::new(Shutdown::new());
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
            rt.block_on(async move { s2.wait().await });
        });
        std::thread::sleep(Duration::from_millis(50));
        s.trigger();
        t.join().expect("joined");
        assert!(s.sleep(Duration::from_secs(5)));
    }
}

//! Passive health per upstream: a circuit breaker fed by real requests.
//!
//! `failure_threshold` consecutive failures (connect errors, timeouts, 5xx)
//! open the breaker for `cooldown`: routes try the upstream last. After the
//! cool-down it is half-open: the next request probes it; success closes
//! the breaker, failure opens it for another cool-down. Atomics only.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

pub struct Health {
    failures: AtomicU32,
    /// Unix ms until which the breaker is open (0: closed).
    open_until: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

impl Health {
    pub fn new(threshold: u32, cooldown: Duration) -> Health {
        Health {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: threshold.max(1),
            cooldown_ms: u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Whether routes should try this upstream in its turn.
    pub fn available(&self, now_ms: u64) -> bool {
        self.open_until.load(Ordering::Relaxed) <= now_ms
    }

    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Relaxed);
        }
    }

    pub fn failure(&self, now_ms: u64) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n >= self.threshold {
            // Opened now, or re-opened by a failed probe.
            self.open_until.store(now_ms.saturating_add(self.cooldown_ms), Ordering::Relaxed);
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn state(&self, now_ms: u64) -> &'static str {
        let until = self.open_until.load(Ordering::Relaxed);
        if until > now_ms {
            "open"
        } else if self.failures() >= self.threshold {
            "half-open"
        } else {
            "closed"
        }
    }
}

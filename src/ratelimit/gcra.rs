//! GCRA (the generic cell rate algorithm, as in governor): one number per
//! bucket, the theoretical arrival time (TAT). A bucket allows `limit`
//! units per `window` sustained and `burst` units at once; admitting `c`
//! units moves TAT forward by `c × interval`. Exact, O(1), no timers, and a
//! bucket whose TAT has passed is the same as no bucket (so idle ones can
//! be dropped).

use std::time::Duration;

/// A rule's rate in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time one unit takes to replenish.
    pub interval: u64,
    /// Burst capacity as time: `burst × interval`.
    pub tolerance: u64,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow { remaining: u64, reset: Duration },
    Deny { retry_after: Duration, reset: Duration },
}

impl Rate {
    pub fn new(limit: u64, window: Duration, burst: u64) -> Rate {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let interval = (window / limit.max(1)).max(1);
        Rate { interval, tolerance: interval.saturating_mul(burst.max(1)) }
    }

    /// The same rule at `fraction` of its rate and burst (at least one
    /// unit): what a host may spend alone while the shared store is down.
    pub fn scaled(&self, fraction: f64) -> Rate {
        let interval = ((self.interval as f64 / fraction).ceil() as u64).max(1);
        let burst = ((self.tolerance / self.interval) as f64 * fraction).floor().max(1.0) as u64;
        Rate { interval, tolerance: interval.saturating_mul(burst) }
    }

    /// Burst capacity in units.
    pub fn burst(&self) -> u64 {
        self.tolerance / self.interval
    }

    /// Units left at `now` for a bucket at `tat`.
    fn remaining(&self, tat: u64, now: u64) -> u64 {
        let used = tat.saturating_sub(now);
        self.tolerance.saturating_sub(used) / self.interval
    }

    /// Admits `cost` units at `now` if they fit; returns the new TAT.
    /// `cost = 0` only asks whether the bucket is out of debt (token
    /// limits: the cost is known after the response).
    pub fn check(&self, tat: u64, now: u64, cost: u64) -> (Decision, Option<u64>) {
        let base = tat.max(now);
        let new_tat = base.saturating_add(cost.saturating_mul(self.interval));
        // With cost 0, room for at least one unit is required.
        let needed = new_tat.max(base.saturating_add(if cost == 0 { self.interval } else { 0 }));
        if needed - now <= self.tolerance {
            let reset = Duration::from_nanos(new_tat - now);
            (Decision::Allow { remaining: self.remaining(new_tat, now), reset }, Some(new_tat))
        } else {
            let retry_after = Duration::from_nanos(needed - now - self.tolerance);
            (Decision::Deny { retry_after, reset: Duration::from_nanos(base - now) }, None)
        }
    }

    /// Debits `cost` units after the fact (may go past the burst: debt).
    pub fn debit(&self, tat: u64, now: u64, cost: u64) -> u64 {
        tat.max(now).saturating_add(cost.saturating_mul(self.interval))
    }

    /// Gives back `cost` units admitted by `check` (a later rule refused
    /// the request).
    pub fn refund(&self, tat: u64, cost: u64) -> u64 {
        tat.saturating_sub(cost.saturating_mul(self.interval))
    }

    /// The state of a bucket without changing it (for response headers).
    pub fn peek(&self, tat: u64, now: u64) -> (u64, Duration) {
        (self.remaining(tat, now), Duration::from_nanos(tat.saturating_sub(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn saturates_at_the_edges() {
        // A debit of every token there is (an upstream that reports usage
        // near u64::MAX) leaves the bucket in debt, not wrapped around.
        let r = Rate::new(100, Duration::from_secs(60), 100);
        let now = 10 * S;
        let tat = r.debit(0, now, u64::MAX);
        assert_eq!(tat, u64::MAX);
        assert!(matches!(r.check(tat, now, 0).0, Decision::Deny { .. }));
        assert!(matches!(r.check(tat, now, u64::MAX).0, Decision::Deny { .. }));
        assert_eq!(r.peek(tat, u64::MAX).0, r.burst());
        assert_eq!(r.refund(tat, u64::MAX), 0);
    }

    #[test]
    fn burst_then_steady_rate() {
        let r = Rate::new(10, Duration::from_secs(60), 10);
        let mut tat = 0;
        let now = 1000 * S;
        for i in 0..10 {
            let (d, t) = r.check(tat, now, 1);
            assert!(matches!(d, Decision::Allow { remaining, .. } if remaining == 9 - i), "{d:?}");
            tat = t.unwrap();
        }
        let (d, t) = r.check(tat, now, 1);
        assert_eq!(t, None);
        // One unit every 6 s.
        assert!(matches!(d, Decision::Deny { retry_after, .. } if retry_after == Duration::from_secs(6)), "{d:?}");
        assert!(r.check(tat, now + 6 * S - 1, 1).1.is_none());
        assert!(r.check(tat, now + 6 * S, 1).1.is_some());
        // After the window everything is back.
        assert!(matches!(r.check(tat, now + 60 * S, 1).0, Decision::Allow { remaining: 9, .. }));
    }

    #[test]
    fn token_debt_waits() {
        let r = Rate::new(1000, Duration::from_secs(60), 1000);
        let now = 10 * S;
        let (d, _) = r.check(0, now, 0);
        assert!(matches!(d, Decision::Allow { remaining: 1000, .. }));
        // A response of 3,000 tokens: two windows of debt.
        let tat = r.debit(0, now, 3000);
        let (d, _) = r.check(tat, now, 0);
        let Decision::Deny { retry_after, .. } = d else { panic!("{d:?}") };
        assert_eq!(retry_after.as_secs(), 120);
        assert!(r.check(tat, now + 121 * S, 0).1.is_some());
        assert_eq!(r.refund(r.debit(tat, now, 5), 5), tat);
    }
}

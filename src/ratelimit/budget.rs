//! Spend budgets per gateway key, per UTC day and calendar month.
//!
//! Reserve at admission, settle on completion: a request reserves an
//! estimate of its cost (prompt bytes / 3 as input tokens — a token is
//! almost never shorter than 3 bytes of JSON — plus its output cap, or
//! `DEFAULT_OUTPUT` when it sets none, at the model's price) and is refused
//! if spent + reserved + estimate would pass the budget. When it ends, the
//! reservation is released and the real cost (from the tap's usage) is
//! spent. Concurrent requests therefore cannot together overshoot by more
//! than what they cost beyond their own estimates: nothing, for requests
//! that set `max_tokens` and whose prompts tokenize at ≤ 1 token per 3
//! bytes. (Checking first and recording after, as other gateways do, lets N
//! concurrent requests overshoot by N full requests.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Output tokens assumed for a request with no output cap.
pub const DEFAULT_OUTPUT: u64 = 4096;

const SHARDS: usize = 16;

#[derive(Debug, Default, Clone, Copy)]
struct Period {
    /// Day or month number the figures belong to.
    id: u32,
    spent: f64,
    reserved: f64,
}

impl Period {
    fn roll(&mut self, id: u32) {
        if self.id != id {
            *self = Period { id, spent: 0.0, reserved: 0.0 };
        }
    }
}

#[derive(Debug, Default)]
struct Spend {
    day: Period,
    month: Period,
}

/// A key's budget limits, USD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub daily: Option<f64>,
    pub monthly: Option<f64>,
}

#[derive(Debug)]
pub struct Reservation {
    key: Arc<str>,
    day: u32,
    month: u32,
    amount: f64,
}

impl Reservation {
    pub fn amount(&self) -> f64 {
        self.amount
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exceeded {
    pub period: &'static str,
    pub limit: f64,
    pub retry_after: Duration,
}

type Shard = HashMap<Arc<str>, Spend>;

pub struct Budgets {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl Budgets {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `estimate` USD for a request of `key`, or says which budget
    /// it would pass.
    pub fn reserve(
        &self,
        key: &Arc<str>,
        limits: Limits,
        estimate: f64,
        now_unix: u64,
    ) -> Result<Reservation, Exceeded> {
        let (day, month) = (day_of(now_unix), month_of(now_unix));
        let mut shard = self.shard(key);
        let s = shard.entry(key.clone()).or_default();
        s.day.roll(day);
        s.month.roll(month);
        for (p, limit, name, next) in [
            (&s.day, limits.daily, "daily", next_day(now_unix)),
            (&s.month, limits.monthly, "monthly", next_month(now_unix)),
        ] {
            // A spent budget refuses even a request estimated at nothing.
            if let Some(limit) = limit
                && (p.spent + p.reserved + estimate > limit || p.spent + p.reserved >= limit)
            {
                return Err(Exceeded { period: name, limit, retry_after: Duration::from_secs(next - now_unix) });
            }
        }
        s.day.reserved += estimate;
        s.month.reserved += estimate;
        Ok(Reservation { key: key.clone(), day, month, amount: estimate })
    }

    /// Releases a reservation and spends what the request really cost.
    pub fn settle(&self, r: Reservation, actual: f64, now_unix: u64) {
        let mut shard = self.shard(&r.key);
        let s = shard.entry(r.key.clone()).or_default();
        if s.day.id == r.day {
            s.day.reserved = (s.day.reserved - r.amount).max(0.0);
        }
        if s.month.id == r.month {
            s.month.reserved = (s.month.reserved - r.amount).max(0.0);
        }
        s.day.roll(day_of(now_unix));
        s.month.roll(month_of(now_unix));
        s.day.spent += actual;
        s.month.spent += actual;
    }

    /// (spent today, spent this month) for a key.
    #[cfg(test)]
    pub fn spent(&self, key: &str, now_unix: u64) -> (f64, f64) {
        let shard = self.shard(key);
        shard.get(key).map_or((0.0, 0.0), |s| {
            let d = if s.day.id == day_of(now_unix) { s.day.spent } else { 0.0 };
            let m = if s.month.id == month_of(now_unix) { s.month.spent } else { 0.0 };
            (d, m)
        })
    }
}

/// The day or month number of a moment, as budgets count periods.
pub fn period_of(unix: u64, monthly: bool) -> u32 {
    if monthly { month_of(unix) } else { day_of(unix) }
}

fn day_of(unix: u64) -> u32 {
    (unix / 86_400) as u32
}

fn next_day(unix: u64) -> u64 {
    (unix / 86_400 + 1) * 86_400
}

/// (year, month 1–12) of a day number (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m)
}

/// Day number of the first day of (year, month).
fn days_from_civil(y: i64, m: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn month_of(unix: u64) -> u32 {
    let (y, m) = civil((unix / 86_400) as i64);
    (y * 12 + i64::from(m) - 1) as u32
}

fn next_month(unix: u64) -> u64 {
    let (y, m) = civil((unix / 86_400) as i64);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(y, m) * 86_400) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        // 2026-11-23T03:00:00Z
        let t = 1_795_402_800;
        assert_eq!(civil((t / 86_400) as i64), (2026, 11));
        assert_eq!(next_month(t), 1_796_083_200, "2026-12-01T00:00:00Z");
        assert_eq!(next_day(t), 1_795_478_400);
        assert_eq!(next_month(1_798_761_600 - 1), 1_798_761_600, "2027-01-01T00:00:00Z");
    }

    #[test]
    fn a_spent_budget_refuses_even_a_free_request() {
        let b = Budgets::default();
        let key: Arc<str> = Arc::from("k");
        let t = 1_700_000_000;
        let limits = Limits { daily: Some(1.0), monthly: None };
        let r = b.reserve(&key, limits, 0.5, t).expect("room");
        b.settle(r, 1.0, t);
        assert_eq!(b.reserve(&key, limits, 0.0, t).map(|_| ()).map_err(|e| e.period), Err("daily"));
    }

    #[test]
    fn reserve_then_settle() {
        let b = Budgets::default();
        let key: Arc<str> = Arc::from("k1");
        let limits = Limits { daily: Some(1.0), monthly: Some(10.0) };
        let t = 1_795_402_800;
        let r1 = b.reserve(&key, limits, 0.6, t).unwrap();
        // A concurrent request that would pass the budget with the first
        // one's reservation is refused.
        let e = b.reserve(&key, limits, 0.6, t).unwrap_err();
        assert_eq!((e.period, e.retry_after), ("daily", Duration::from_secs(75_600)));
        b.settle(r1, 0.1, t);
        let r2 = b.reserve(&key, limits, 0.6, t).unwrap();
        b.settle(r2, 0.85, t);
        assert!(b.reserve(&key, limits, 0.1, t).is_err());
        assert_eq!(b.spent("k1", t), (0.95, 0.95));
        // Next day: the daily budget is back, the monthly one remembers.
        assert!(b.reserve(&key, limits, 0.5, next_day(t)).is_ok());
        assert_eq!(b.spent("k1", next_day(t)), (0.0, 0.95));
    }
}

//! Limits and budgets shared by several hosts through Redis, without a
//! Redis round trip per request.
//!
//! Each host leases blocks of quota and spends them locally:
//!
//! - **Rate buckets.** Redis holds each bucket's GCRA state (TAT, in µs on
//!   Redis's clock, so hosts' clocks do not matter). A host takes a lease of
//!   `lease_fraction × burst` units (at least one) in one script call; the
//!   units are charged in Redis at once, so hosts together never admit more
//!   than the limit. Units a host does not use within `lease_ttl` go back.
//!   Token buckets lease tokens the same way; tokens a response used beyond
//!   the host's lease become debt, charged with the next call (or the
//!   periodic flush): the global overshoot is at most what the hosts'
//!   in-flight responses use beyond their leases.
//! - **Budgets.** Redis counts leased micro-dollars per key and period; a
//!   host leases `lease_fraction × budget` (or what one request needs) and
//!   reserves and settles locally against it, so the bound of
//!   `budget.rs` holds across hosts.
//! - **Outages.** When Redis cannot be reached within `redis_timeout`, a
//!   host falls back to its own buckets at `outage_fraction` of each limit
//!   (and one `outage_fraction` allowance of each budget per period): the
//!   gateway neither fails open nor closed, and during an outage N hosts
//!   admit at most N × outage_fraction of a limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use ring::digest;

use super::{
    budget::{self, Budgets, Exceeded, Limits, Reservation},
    gcra::{Decision, Rate},
    table::Table,
};
use crate::{
    config::LeaseConfig,
    redis::{Client, Reply, Target},
};

const SHARDS: usize = 16;

/// GCRA lease. KEYS[1]: the bucket. ARGV: interval µs, tolerance µs, units
/// wanted, units to charge first (debt; negative: a refund). Returns
/// {granted, room left after the grant, µs until one unit frees up}.
const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat + tonumber(ARGV[4]) * interval
if tat < now then tat = now end
local room = math.floor((tolerance - (tat - now)) / interval)
if room < 0 then room = 0 end
local grant = math.min(want, room)
tat = tat + grant * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
local wait = 0
if grant < want then wait = tat + interval - tolerance - now end
if wait < 0 then wait = 0 end
return {grant, room - grant, wait}
";

/// Budget lease. KEYS[1]: the key's period counter. ARGV: limit, wanted
/// (micro-USD), seconds to keep the counter. Returns what was granted.
const BUDGET_SCRIPT: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if grant <= 0 then return 0 end
redis.call('INCRBY', KEYS[1], grant)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return grant
";

#[derive(Debug)]
struct Lease {
    /// The bucket's Redis key.
    name: Arc<[u8]>,
    rate: Rate,
    /// Leased and not yet spent.
    units: u64,
    /// Spent beyond the lease, not yet charged in Redis.
    debt: u64,
    /// Table-clock ns after which unspent units go back.
    expires: u64,
    /// Room Redis reported after the last grant.
    remaining: u64,
}

/// This host's leases by (rule slot, bucket).
type LeaseMap = HashMap<(u32, u64), Lease>;

/// A key's budget allowance for one period on this host.
#[derive(Debug, Default, Clone, Copy)]
struct Allowance {
    period: u32,
    leased: f64,
    outage_used: bool,
}

pub struct Leases {
    client: Client,
    prefix: String,
    fraction: f64,
    ttl: u64,
    outage: f64,
    shards: Box<[Mutex<LeaseMap>]>,
    /// Buckets used while Redis is unreachable.
    fallback: Table,
    allowances: Mutex<HashMap<(Arc<str>, bool), Allowance>>,
}

impl Leases {
    pub fn new(cfg: &LeaseConfig) -> Leases {
        let r = &cfg.redis;
        let target = Target {
            addr: r.addr,
            display: r.display.clone(),
            password: r.password.clone(),
            db: r.db,
            timeout: r.timeout,
        };
        Leases {
            client: Client::new(target),
            prefix: r.prefix.clone(),
            fraction: cfg.lease_fraction,
            ttl: u64::try_from(cfg.lease_ttl.as_nanos()).unwrap_or(u64::MAX),
            outage: cfg.outage_fraction,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            fallback: Table::new(),
            allowances: Mutex::default(),
        }
    }

    pub fn errors(&self) -> u64 {
        self.client.errors()
    }

    fn shard(&self, bucket: u64) -> MutexGuard<'_, LeaseMap> {
        self.shards[(bucket as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Redis key of a bucket: the rule's label and a digest of the
    /// counted value, the same on every host.
    pub fn bucket_name(&self, label: &str, value: &[u8]) -> Arc<[u8]> {
        let d = digest::digest(&digest::SHA256, value);
        let hex = crate::auth::keyfile::hex(&d.as_ref()[..16]);
        Arc::from(format!("{}{label}:{hex}", self.prefix).into_bytes())
    }

    /// Checks a bucket (cost 1: a request; cost 0: a token bucket that must
    /// have room), leasing from Redis when the local lease is spent.
    pub async fn check(&self, slot: u32, bucket: u64, name: &Arc<[u8]>, rate: &Rate, now: u64, cost: u64) -> Decision {
        let (debit, want) = {
            let mut shard = self.shard(bucket);
            let l = shard.entry((slot, bucket)).or_insert_with(|| Lease {
                name: name.clone(),
                rate: *rate,
                units: 0,
                debt: 0,
                expires: 0,
                remaining: rate.burst(),
            });
            if l.expires > now && l.units >= cost.max(1) {
                l.units -= cost;
                return allow(rate, l.remaining + l.units);
            }
            // Unspent units of an expired lease go back with this call.
            let refund = if l.expires <= now { std::mem::take(&mut l.units) } else { 0 };
            let debit = i128::from(std::mem::take(&mut l.debt)) - i128::from(refund);
            (debit, ((rate.burst() as f64 * self.fraction) as u64).max(1))
        };
        match self.lease(name, rate, want, debit).await {
            Some((grant, room, wait)) => {
                let mut shard = self.shard(bucket);
                if let Some(l) = shard.get_mut(&(slot, bucket)) {
                    l.units += grant;
                    l.expires = now.saturating_add(self.ttl);
                    l.remaining = room;
                    if l.units >= cost.max(1) {
                        l.units -= cost;
                        return allow(rate, l.remaining + l.units);
                    }
                }
                let retry_after = Duration::from_micros(wait);
                Decision::Deny { retry_after, reset: retry_after }
            }
            None => {
                // Redis is away: put the debt back and spend a bounded
                // share of the limit on this host alone.
                if debit > 0
                    && let Some(l) = self.shard(bucket).get_mut(&(slot, bucket))
                {
                    l.debt += u64::try_from(debit).unwrap_or(0);
                }
                let outage = rate.scaled(self.outage);
                self.fallback.check(slot, bucket, &outage, now, cost)
            }
        }
    }
}

/// An admission with the shared bucket's state as this host last saw it.
fn allow(rate: &Rate, remaining: u64) -> Decision {
    let used = rate.burst().saturating_sub(remaining);
    Decision::Allow { remaining, reset: Duration::from_nanos(rate.interval.saturating_mul(used)) }
}

impl Leases {
    async fn lease(&self, name: &[u8], rate: &Rate, want: u64, debit: i128) -> Option<(u64, u64, u64)> {
        let interval = (rate.interval / 1000).max(1);
        let tolerance = interval.saturating_mul(rate.burst());
        let (i, t, w, d) = (interval.to_string(), tolerance.to_string(), want.to_string(), debit.to_string());
        let args: [&[u8]; 8] =
            [b"EVAL", LEASE_SCRIPT.as_bytes(), b"1", name, i.as_bytes(), t.as_bytes(), w.as_bytes(), d.as_bytes()];
        match self.client.run(&args).await {
            Ok(Reply::Array(v)) => match v.as_slice() {
                [Reply::Int(g), Reply::Int(r), Reply::Int(w)] => {
                    Some((u64::try_from(*g).ok()?, u64::try_from(*r).unwrap_or(0), u64::try_from(*w).unwrap_or(0)))
                }
                _ => {
                    self.client.count_error();
                    None
                }
            },
            _ => None,
        }
    }

    /// Gives back a unit admitted by `check` (a later rule refused).
    pub fn refund(&self, slot: u32, bucket: u64) {
        if let Some(l) = self.shard(bucket).get_mut(&(slot, bucket)) {
            l.units += 1;
        }
    }

    /// Spends tokens a finished response used from its bucket's lease;
    /// beyond the lease they become debt for the next Redis call.
    pub fn settle(&self, slot: u32, bucket: u64, tokens: u64) {
        if let Some(l) = self.shard(bucket).get_mut(&(slot, bucket)) {
            let from_lease = l.units.min(tokens);
            l.units -= from_lease;
            l.debt += tokens - from_lease;
        }
    }

    /// Charges debts, returns expired leases' units and forgets idle
    /// buckets. Run by one worker every lease_ttl / 2.
    pub async fn flush(&self, now: u64) {
        let mut due = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, l| {
                let expired = l.expires <= now;
                if l.debt > 0 || (expired && l.units > 0) {
                    let refund = if expired { std::mem::take(&mut l.units) } else { 0 };
                    due.push((l.name.clone(), l.rate, i128::from(std::mem::take(&mut l.debt)) - i128::from(refund)));
                }
                !expired
            });
        }
        for (name, rate, debit) in due {
            // A failed flush loses a refund (under-admits) or a debt (the
            // bound above): both are bounded by one lease per bucket.
            let _ = self.lease(&name, &rate, 0, debit).await;
        }
    }

    /// Reserves budget against this host's allowance, leasing more from
    /// Redis as needed.
    pub async fn reserve(
        &self,
        budgets: &Budgets,
        key: &Arc<str>,
        limits: Limits,
        estimate: f64,
        now_unix: u64,
    ) -> Result<Reservation, Exceeded> {
        for _ in 0..3 {
            let local = Limits {
                daily: limits.daily.map(|l| self.allowance(key, false, now_unix).min(l)),
                monthly: limits.monthly.map(|l| self.allowance(key, true, now_unix).min(l)),
            };
            match budgets.reserve(key, local, estimate, now_unix) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let monthly = e.period == "monthly";
                    let Some(limit) = (if monthly { limits.monthly } else { limits.daily }) else { return Err(e) };
                    let leased = self.allowance(key, monthly, now_unix);
                    if leased >= limit {
                        return Err(Exceeded { limit, ..e });
                    }
                    let want = (limit * self.fraction).max(estimate).min(limit - leased);
                    let granted = self.lease_budget(key, monthly, limit, want, now_unix, e.retry_after).await;
                    if granted <= 0.0 {
                        return Err(Exceeded { limit, ..e });
                    }
                }
            }
        }
        let local = Limits {
            daily: limits.daily.map(|l| self.allowance(key, false, now_unix).min(l)),
            monthly: limits.monthly.map(|l| self.allowance(key, true, now_unix).min(l)),
        };
        budgets.reserve(key, local, estimate, now_unix)
    }

    fn allowance(&self, key: &Arc<str>, monthly: bool, now_unix: u64) -> f64 {
        let period = budget::period_of(now_unix, monthly);
        let map = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(key.clone(), monthly)).filter(|a| a.period == period).map_or(0.0, |a| a.leased)
    }

    async fn lease_budget(
        &self,
        key: &Arc<str>,
        monthly: bool,
        limit: f64,
        want: f64,
        now_unix: u64,
        ends_in: Duration,
    ) -> f64 {
        let period = budget::period_of(now_unix, monthly);
        let name = format!("{}budget:{key}:{}{period}", self.prefix, if monthly { "m" } else { "d" });
        let micros = |usd: f64| ((usd * 1e6).round() as u64).to_string();
        let (l, w, ttl) = (micros(limit), micros(want), (ends_in.as_secs() + 86_400).to_string());
        let args: [&[u8]; 7] =
            [b"EVAL", BUDGET_SCRIPT.as_bytes(), b"1", name.as_bytes(), l.as_bytes(), w.as_bytes(), ttl.as_bytes()];
        let granted = match self.client.run(&args).await {
            Ok(Reply::Int(g)) => g.max(0) as f64 / 1e6,
            Ok(_) => {
                self.client.count_error();
                return 0.0;
            }
            Err(_) => {
                // Outage: one bounded allowance per key and period.
                let mut map = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
                let a = map.entry((key.clone(), monthly)).or_default();
                if a.period != period {
                    *a = Allowance { period, ..Allowance::default() };
                }
                if a.outage_used {
                    return 0.0;
                }
                a.outage_used = true;
                a.leased += limit * self.outage;
                return limit * self.outage;
            }
        };
        let mut map = self.allowances.lock().unwrap_or_else(|p| p.into_inner());
        let a = map.entry((key.clone(), monthly)).or_default();
        if a.period != period {
            *a = Allowance { period, ..Allowance::default() };
        }
        a.leased += granted;
        granted
    }
}

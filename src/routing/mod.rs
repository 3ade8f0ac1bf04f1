//! Routes: which target serves each attempt of a request.
//!
//! A route lists provider + model targets and a strategy that orders them
//! per request; attempts walk that order (`proxy/attempts.rs` retries and
//! falls back). Every upstream has passive health (`health.rs`): one that
//! keeps failing is ejected for a cool-down and then probed back, and
//! ejected targets go to the end of every order. In-flight counts per
//! upstream feed `least-outstanding`. All of it is atomics shared by the
//! workers.

pub mod health;

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use health::Health;

use crate::{
    config::{Provider, Route, Strategy},
    util::FastMap as HashMap,
};

pub struct Router {
    pub routes: Vec<Arc<Route>>,
    by_name: HashMap<String, usize>,
    /// Per upstream (provider index).
    pub health: Vec<Health>,
    inflight: Vec<AtomicU64>,
}

impl Router {
    pub fn new(routes: &[Route], providers: &[Provider]) -> Router {
        Router {
            by_name: routes.iter().enumerate().map(|(i, r)| (r.name.clone(), i)).collect(),
            routes: routes.iter().cloned().map(Arc::new).collect(),
            health: providers.iter().map(|p| Health::new(p.failure_threshold, p.cooldown)).collect(),
            inflight: providers.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.by_name.get(name).and_then(|&i| self.routes.get(i))
    }

    pub fn inflight(&self, upstream: usize) -> u64 {
        self.inflight.get(upstream).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts a request in flight on an upstream until the guard drops.
    pub fn start(&self, upstream: usize) -> InFlight<'_> {
        if let Some(c) = self.inflight.get(upstream) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        InFlight { router: self, upstream }
    }

    /// The order in which a request tries the route's targets: the
    /// strategy's order, with ejected upstreams moved to the end (still
    /// tried when nothing healthy is left).
    pub fn order(&self, route: &Route, prefix: &[u8], now_ms: u64) -> Vec<usize> {
        let n = route.targets.len();
        let mut order: Vec<usize> = (0..n).collect();
        match route.strategy {
            Strategy::Fallback => {}
            Strategy::Weighted => {
                let total: u64 = route.targets.iter().map(|t| u64::from(t.weight)).sum();
                if total > 0 {
                    let mut pick = random() % total;
                    let first = route
                        .targets
                        .iter()
                        .position(|t| {
                            let w = u64::from(t.weight);
                            if pick < w {
                                return true;
                            }
                            pick -= w;
                            false
                        })
                        .unwrap_or(0);
                    order.retain(|&i| i != first);
                    order.insert(0, first);
                }
            }
            Strategy::LeastOutstanding => {
                // Ties keep config order, rotated per request so equal
                // targets share the load.
                let start = (random() % n as u64) as usize;
                order.rotate_left(start);
                order.sort_by_key(|&i| self.inflight(route.targets[i].provider));
            }
            Strategy::PrefixAffinity => {
                // Rendezvous (highest random weight) hashing: each target
                // scores the prefix; the best wins. Same prefix, same
                // target; a removed target moves only its own prefixes.
                let mut scored: Vec<(u64, usize)> = (0..n)
                    .map(|i| {
                        let t = &route.targets[i];
                        let seed = (t.provider as u64) << 32 | i as u64;
                        (xxhash_rust::xxh3::xxh3_64_with_seed(prefix, seed), i)
                    })
                    .collect();
                scored.sort_by_key(|s| std::cmp::Reverse(s.0));
                order = scored.into_iter().map(|(_, i)| i).collect();
            }
        }
        // Stable: healthy first, in strategy order.
        order.sort_by_key(|&i| !self.health.get(route.targets[i].provider).is_none_or(|h| h.available(now_ms)));
        order
    }

    /// Per upstream state for /admin/stats.
    pub fn stats(&self, names: &[String], now_ms: u64) -> serde_json::Value {
        let targets: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let h = &self.health[i];
                serde_json::json!({
                    "provider": name,
                    "state": h.state(now_ms),
                    "consecutive_failures": h.failures(),
                    "in_flight": self.inflight(i),
                })
            })
            .collect();
        serde_json::Value::Array(targets)
    }
}

pub struct InFlight<'a> {
    router: &'a Router,
    upstream: usize,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.router.inflight.get(self.upstream) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A per-thread xorshift: weighted picks and jitter need spread, not
/// cryptographic randomness.
pub fn random() -> u64 {
    thread_local!(static STATE: Cell<u64> = Cell::new(seed()));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let id = std::thread::current().id();
    xxhash_rust::xxh3::xxh3_64(format!("{t}{id:?}").as_bytes()) | 1
}

#[cfg(test)]
mod tests;

//! Every bucket of every rule, shared by all workers: 64 shards, each a
//! mutex over a map from (rule slot, bucket hash) to the bucket's TAT. A
//! check holds one shard lock for a map lookup and a few arithmetic
//! operations; distinct buckets rarely share a shard.
//!
//! Bucket hashes are xxh3 with a per-process random seed, so a client
//! cannot craft header or address values that collide with another
//! client's bucket. Idle buckets (TAT in the past, i.e. full) are the same
//! as absent ones and are swept when a shard grows; a shard is capped, and
//! at the cap the bucket closest to being full is dropped first.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Instant,
};

use ring::rand::SecureRandom;

use super::gcra::{Decision, Rate};

const SHARDS: usize = 64;
/// Past this many buckets in a shard, full (idle) ones are swept.
const SWEEP_AT: usize = 1024;
/// Hard cap per shard (64 × 4,096 buckets ≈ 10 MiB at most).
const MAX_PER_SHARD: usize = 4096;

#[derive(Default)]
struct Shard {
    tats: HashMap<(u32, u64), u64>,
    /// Sweep when the map reaches this size; doubles past what a sweep
    /// left, so a shard of busy buckets is not rescanned on every insert.
    sweep_at: usize,
}

pub struct Table {
    shards: Box<[Mutex<Shard>]>,
    seed: u64,
    epoch: Instant,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    pub fn new() -> Table {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SystemRandom::new().fill(&mut seed);
        Table {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard { tats: HashMap::new(), sweep_at: SWEEP_AT })).collect(),
            seed: u64::from_le_bytes(seed),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds on the table's clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn bucket(&self, slot: u32, value: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(value, self.seed ^ u64::from(slot))
    }

    fn shard(&self, bucket: u64) -> MutexGuard<'_, Shard> {
        self.shards[(bucket as usize) % SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn check(&self, slot: u32, bucket: u64, rate: &Rate, now: u64, cost: u64) -> Decision {
        let mut shard = self.shard(bucket);
        let tat = shard.tats.get(&(slot, bucket)).copied().unwrap_or(0);
        let (decision, new_tat) = rate.check(tat, now, cost);
        if let Some(t) = new_tat
            && t != tat
        {
            shard.insert((slot, bucket), t, now);
        }
        decision
    }

    pub fn debit(&self, slot: u32, bucket: u64, rate: &Rate, now: u64, cost: u64) {
        let mut shard = self.shard(bucket);
        let tat = shard.tats.get(&(slot, bucket)).copied().unwrap_or(0);
        shard.insert((slot, bucket), rate.debit(tat, now, cost), now);
    }

    pub fn refund(&self, slot: u32, bucket: u64, rate: &Rate, cost: u64) {
        let mut shard = self.shard(bucket);
        if let Some(tat) = shard.tats.get_mut(&(slot, bucket)) {
            *tat = rate.refund(*tat, cost);
        }
    }

    /// Buckets held (for tests and stats).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.tats.len())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    fn insert(&mut self, k: (u32, u64), tat: u64, now: u64) {
        if !self.tats.contains_key(&k) {
            if self.tats.len() >= self.sweep_at {
                self.tats.retain(|_, t| *t > now);
                self.sweep_at = (self.tats.len() * 2).clamp(SWEEP_AT, MAX_PER_SHARD);
            }
            if self.tats.len() >= MAX_PER_SHARD
                && let Some(oldest) = self.tats.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
            {
                self.tats.remove(&oldest);
            }
        }
        self.tats.insert(k, tat);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn idle_buckets_are_swept_and_shards_capped() {
        let t = Table::new();
        let rate = Rate::new(1, Duration::from_secs(1), 1);
        for i in 0..100_000u64 {
            let b = t.bucket(0, &i.to_le_bytes());
            // Every bucket is idle again 1 s after its request.
            t.check(0, b, &rate, i * 20_000_000, 1);
        }
        assert!(t.len() <= SHARDS * SWEEP_AT + 1, "{}", t.len());
        // All busy at once: the cap holds.
        let t = Table::new();
        let slow = Rate::new(1, Duration::from_secs(3600), 1);
        for i in 0..(SHARDS * MAX_PER_SHARD + 5_000) as u64 {
            t.check(0, t.bucket(0, &i.to_le_bytes()), &slow, 1, 1);
        }
        assert!(t.len() <= SHARDS * MAX_PER_SHARD);
    }
}

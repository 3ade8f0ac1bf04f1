//! The in-process store: one quick_cache shared by every worker.
//!
//! quick_cache over moka (see docs/benchmarks.md, `cargo bench --bench
//! cache`): sharded RwLocks with CLOCK-Pro-style eviction, reads take a
//! shard read lock and no atomic write per hit, bounded by weight
//! (bytes), a small dependency tree. moka's TinyLFU admission suits scan
//! resistance, but its reads record into concurrent buffers and its
//! maintenance runs on whichever thread trips it; our entries carry their
//! own expiry, so moka's TTL machinery would go unused.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter, sync::Cache};

use super::{CacheKey, entry::Entry};

#[derive(Clone)]
struct ByBytes;

impl Weighter<CacheKey, Arc<Entry>> for ByBytes {
    fn weight(&self, _: &CacheKey, e: &Arc<Entry>) -> u64 {
        e.weight()
    }
}

/// Counts evictions (not purges or replacements).
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Arc<Entry>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: CacheKey, _: Arc<Entry>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct MemoryStore {
    cache: Cache<CacheKey, Arc<Entry>, ByBytes, DefaultHashBuilder, Evictions>,
    evictions: Arc<AtomicU64>,
}

impl MemoryStore {
    pub fn new(max_bytes: u64) -> MemoryStore {
        let evictions = Evictions::default();
        let counter = evictions.0.clone();
        // A typical chat answer with its headers is a few KiB.
        let items = usize::try_from(max_bytes / 4096).unwrap_or(usize::MAX).max(64);
        let cache = Cache::with(items, max_bytes, ByBytes, DefaultHashBuilder::default(), evictions);
        MemoryStore { cache, evictions: counter }
    }

    pub fn get(&self, key: CacheKey) -> Option<Arc<Entry>> {
        self.cache.get(&key)
    }

    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        self.cache.insert(key, entry);
    }

    pub fn remove(&self, key: CacheKey) -> bool {
        self.cache.remove(&key).is_some()
    }

    /// Removes entries of one provider (None: all); returns how many.
    pub fn purge(&self, provider: Option<&str>) -> u64 {
        let before = self.cache.len();
        match provider {
            None => self.cache.clear(),
            Some(p) => self.cache.retain(|_, e| &*e.provider != p),
        }
        before.saturating_sub(self.cache.len()) as u64
    }

    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn entries(&self) -> u64 {
        self.cache.len() as u64
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> u64 {
        self.cache.capacity()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(provider: &str, size: usize) -> Arc<Entry> {
        Arc::new(Entry {
            status: 200,
            headers: Bytes::new(),
            body: Bytes::from(vec![b'x'; size]),
            stream: false,
            expires_unix_ms: u64::MAX,
            provider: Arc::from(provider),
            usage: None,
        })
    }

    #[test]
    fn bounded_by_bytes_under_a_flood_of_distinct_keys() {
        let store = MemoryStore::new(1 << 20);
        for i in 0..20_000u128 {
            store.insert(CacheKey(i), entry("p", 1000));
            assert!(store.bytes() <= store.capacity(), "{} > {}", store.bytes(), store.capacity());
        }
        assert!(store.evictions() > 18_000, "{}", store.evictions());
        assert!(store.entries() < 1100);
    }

    #[test]
    fn purge_by_provider_and_key() {
        let store = MemoryStore::new(1 << 20);
        for i in 0..10u128 {
            store.insert(CacheKey(i), entry(if i % 2 == 0 { "a" } else { "b" }, 10));
        }
        assert_eq!(store.purge(Some("a")), 5);
        assert!(store.get(CacheKey(0)).is_none() && store.get(CacheKey(1)).is_some());
        assert!(store.remove(CacheKey(1)) && !store.remove(CacheKey(1)));
        assert_eq!(store.purge(None), 4);
        assert_eq!(store.bytes(), 0);
    }
}

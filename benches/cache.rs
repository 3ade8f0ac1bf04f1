//! Cache store and key costs: `cargo bench --bench cache`.
//!
//! The store comparison (quick_cache, which aigw uses, vs moka) needs the
//! moka side built: `cargo bench --bench cache --features bench-moka`.
//!
//! Two-thread figures run the operation on 2 threads at once and report
//! wall time / (2 × iterations): aggregate ns per operation, so a store that
//! scales perfectly shows half its one-thread figure.
#![allow(clippy::unwrap_used)]

use std::{hint::black_box, sync::Arc};

use aigw::cache::{CacheKey, Entry, key::KeyParts, memory::MemoryStore};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};

mod common;
use common::parallel;

const KEYS: u128 = 10_000;

fn entry() -> Arc<Entry> {
    Arc::new(Entry {
        status: 200,
        headers: Bytes::from_static(b"content-type: application/json\r\n"),
        body: Bytes::from(vec![b'x'; 1024]),
        stream: false,
        expires_unix_ms: u64::MAX,
        provider: Arc::from("openai"),
        usage: None,
    })
}

/// The operations both stores are measured on.
trait Store: Send + Sync {
    fn get(&self, k: CacheKey) -> Option<Arc<Entry>>;
    fn insert(&self, k: CacheKey, e: Arc<Entry>);
}

impl Store for MemoryStore {
    fn get(&self, k: CacheKey) -> Option<Arc<Entry>> {
        MemoryStore::get(self, k)
    }
    fn insert(&self, k: CacheKey, e: Arc<Entry>) {
        MemoryStore::insert(self, k, e)
    }
}

#[cfg(feature = "bench-moka")]
struct Moka(moka::sync::Cache<CacheKey, Arc<Entry>>);

#[cfg(feature = "bench-moka")]
impl Store for Moka {
    fn get(&self, k: CacheKey) -> Option<Arc<Entry>> {
        self.0.get(&k)
    }
    fn insert(&self, k: CacheKey, e: Arc<Entry>) {
        self.0.insert(k, e)
    }
}

type MakeStore = Arc<dyn Fn() -> Arc<dyn Store>>;

fn stores() -> Vec<(&'static str, MakeStore)> {
    #[cfg_attr(not(feature = "bench-moka"), allow(unused_mut))]
    let mut v: Vec<(&'static str, MakeStore)> =
        vec![("quick_cache", Arc::new(|| Arc::new(MemoryStore::new(256 << 20)) as Arc<dyn Store>))];
    #[cfg(feature = "bench-moka")]
    v.push((
        "moka",
        Arc::new(|| {
            let c = moka::sync::Cache::builder()
                .max_capacity(256 << 20)
                .weigher(|_: &CacheKey, e: &Arc<Entry>| u32::try_from(e.weight()).unwrap_or(u32::MAX))
                .build();
            Arc::new(Moka(c)) as Arc<dyn Store>
        }),
    ));
    v
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    for (name, make) in stores() {
        let s = make();
        let e = entry();
        for k in 0..KEYS {
            s.insert(CacheKey(k), e.clone());
        }
        g.bench_function(format!("{name}/get_hit/1_thread"), |b| {
            let mut i = 0u128;
            b.iter(|| {
                i = (i + 7919) % KEYS;
                black_box(s.get(CacheKey(i)))
            })
        });
        for (label, same_key) in [("same_key", true), ("distinct_keys", false)] {
            g.bench_function(format!("{name}/get_hit/2_threads_{label}"), |b| {
                b.iter_custom(|iters| {
                    let s = s.clone();
                    parallel(2, iters, move |t, i| {
                        let k = if same_key { 42 } else { (u128::from(i) * 7919 + t as u128 * 5000) % KEYS };
                        black_box(s.get(CacheKey(k)));
                    })
                })
            });
        }
        g.bench_function(format!("{name}/insert/2_threads_distinct_keys"), |b| {
            b.iter_custom(|iters| {
                let s = make();
                let e = e.clone();
                parallel(2, iters, move |t, i| s.insert(CacheKey((u128::from(i) << 1) | t as u128), e.clone()))
            })
        });
    }
    g.finish();
}

fn key(c: &mut Criterion) {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "What is the capital of France? ".repeat(30)
    );
    let vary: Vec<(&str, Option<&[u8]>)> = vec![
        ("anthropic-version", None),
        ("anthropic-beta", None),
        ("openai-organization", None),
        ("openai-project", None),
    ];
    c.bench_function(&format!("key/derive_{}_byte_body", body.len()), |b| {
        b.iter(|| {
            black_box(CacheKey::derive(&KeyParts {
                provider: "openai",
                method: b"POST",
                path: b"/v1/chat/completions",
                body: black_box(body.as_bytes()),
                scope: Some(7),
                vary: &vary,
                stripped: true,
            }))
        })
    });
}

criterion_group!(benches, store, key);
criterion_main!(benches);

//! Rate-limit and key-check costs: `cargo bench --bench limits`.
//!
//! Two-thread figures run on 2 threads at once and report wall time / (2 ×
//! operations): aggregate ns per check.
#![allow(clippy::unwrap_used)]

use std::{hint::black_box, sync::Arc, time::Duration};

use aigw::{
    auth::{
        KeySet,
        keyfile::{KeyFile, KeyRecord},
    },
    ratelimit::{gcra::Rate, table::Table},
};
use criterion::{Criterion, criterion_group, criterion_main};

mod common;
use common::parallel;

fn limit_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit_check");
    // A limit no one reaches, so every check admits and writes the bucket.
    let rate = Rate::new(u64::MAX / 2, Duration::from_secs(60), u64::MAX / 2);
    let table = Arc::new(Table::new());
    g.bench_function("1_thread", |b| {
        let bucket = table.bucket(0, b"10.0.0.1");
        b.iter(|| black_box(table.check(0, bucket, &rate, table.now(), 1)))
    });
    for (label, same) in [("2_threads_same_key", true), ("2_threads_distinct_keys", false)] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let table = table.clone();
                parallel(2, iters, move |t, i| {
                    let value = if same { 0u64.to_le_bytes() } else { ((t as u64) << 32 | (i % 1024)).to_le_bytes() };
                    let bucket = table.bucket(0, &value);
                    black_box(table.check(0, bucket, &rate, table.now(), 1));
                })
            })
        });
    }
    g.finish();
}

fn key_check(c: &mut Criterion) {
    let mut f = KeyFile::default();
    let (_, key) = f.create(KeyRecord::named("bench"), 0).unwrap();
    for i in 0..999 {
        f.create(KeyRecord::named(&format!("k{i}")), 0).unwrap();
    }
    let set = KeySet::from_file(&f).unwrap();
    c.bench_function("key_check/salted_sha256_of_1000_keys", |b| {
        b.iter(|| black_box(set.authenticate(black_box(key.as_bytes()), 1).is_ok()))
    });
}

criterion_group!(benches, limit_check, key_check);
criterion_main!(benches);

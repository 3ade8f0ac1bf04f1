//! Shared by the benches: running an operation on several threads at once.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

/// Runs `op(thread, i)` `iters` times on each of `threads` threads at once
/// and returns wall time / threads: with criterion's `iter_custom`, the
/// aggregate time per operation (a store that scales perfectly shows half
/// its one-thread figure on two threads).
pub fn parallel(threads: usize, iters: u64, op: impl Fn(usize, u64) + Send + Sync + 'static) -> Duration {
    let op = Arc::new(op);
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (op, start) = (op.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..iters {
                    op(t, i);
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    began.elapsed() / threads as u32
}

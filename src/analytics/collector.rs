//! The analytics thread: merges worker deltas into totals, 10-second
//! buckets for the last hour, and gauges.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Counters, Delta, HistKey, Hists, SeriesKey};
use crate::server::shutdown::Shutdown;

/// Width of one time bucket, and how many are kept (one hour).
pub const BUCKET: Duration = Duration::from_secs(10);
const BUCKETS: usize = 360;

#[derive(Debug, Default)]
pub struct Bucket {
    /// Bucket number since start (elapsed / BUCKET).
    pub index: u64,
    pub counters: HashMap<SeriesKey, Counters>,
    pub hists: HashMap<HistKey, Hists>,
}

#[derive(Debug)]
pub struct State {
    pub started: Instant,
    pub totals: HashMap<SeriesKey, Counters>,
    pub hists: HashMap<HistKey, Hists>,
    pub buckets: VecDeque<Bucket>,
    pub attempts: HashMap<(Arc<str>, &'static str), u64>,
    pub records_dropped: u64,
    /// Per worker: (open client connections, open upstream connections).
    pub open: HashMap<usize, (u64, u64)>,
}

impl State {
    pub fn new() -> State {
        State {
            started: Instant::now(),
            totals: HashMap::new(),
            hists: HashMap::new(),
            buckets: VecDeque::new(),
            attempts: HashMap::new(),
            records_dropped: 0,
            open: HashMap::new(),
        }
    }

    pub fn bucket_now(&self) -> u64 {
        self.started.elapsed().as_secs() / BUCKET.as_secs()
    }

    pub fn merge(&mut self, d: Delta) {
        let now = self.bucket_now();
        if self.buckets.back().is_none_or(|b| b.index != now) {
            self.buckets.push_back(Bucket { index: now, ..Bucket::default() });
            while self.buckets.len() > BUCKETS {
                self.buckets.pop_front();
            }
        }
        let Some(bucket) = self.buckets.back_mut() else { return };
        for (k, c) in d.counters {
            bucket.counters.entry(k.clone()).or_default().add(&c);
            self.totals.entry(k).or_default().add(&c);
        }
        for (k, h) in d.hists {
            bucket.hists.entry(k.clone()).or_default().add(&h);
            self.hists.entry(k).or_default().add(&h);
        }
        for (k, n) in d.attempts {
            *self.attempts.entry(k).or_default() += n;
        }
        self.records_dropped += d.records_dropped;
        self.open.insert(d.worker, (d.open_client, d.open_upstream));
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Collector;

impl Collector {
    /// Starts the thread. It ends once `stop` is triggered (after the
    /// workers have finished) and the queue is empty, or when every sender
    /// is gone.
    pub fn spawn(
        rx: crossbeam_channel::Receiver<Delta>,
        state: Arc<Mutex<State>>,
        stop: Arc<Shutdown>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("aigw-analytics".into()).spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(d) => {
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.merge(d);
                        // Take what else is queued under the same lock.
                        while let Ok(d) = rx.try_recv() {
                            s.merge(d);
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if stop.is_triggered() => return,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
    }
}

//! The analytics thread: merges worker deltas into totals, 10-second
//! buckets for the last hour, and gauges.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{Counters, Delta, HistKey, Hists, SeriesKey};
use crate::util::shutdown::Shutdown;

/// Two rings of time buckets: 10-second ones for the last minute and
/// one-minute ones for the last hour (66 buckets of histograms per series,
/// not 360).
pub const SHORT: Duration = Duration::from_secs(10);
const SHORT_KEEP: usize = 6;
pub const LONG: Duration = Duration::from_secs(60);
const LONG_KEEP: usize = 60;

/// Model labels the collector keeps series for, across all workers and
/// providers; past it, new models count under "other". Model names come
/// from clients: without a total bound, names rotated by a client would
/// grow /metrics and the histograms without end.
pub const MAX_MODEL_LABELS: usize = 128;
/// Histogram series one time bucket holds (the rest go to "other"): three
/// HDR histograms (~39 KiB) per series in each of 66 buckets would be
/// ~2.6 MiB per model otherwise. Worst case with this bound: ~45 MiB.
const MAX_BUCKET_HISTS: usize = 16;

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
    pub short: VecDeque<Bucket>,
    pub long: VecDeque<Bucket>,
    pub attempts: HashMap<(Arc<str>, &'static str), u64>,
    pub ratelimited: HashMap<Arc<str>, u64>,
    /// Guardrail findings (bounded: policies and detectors come from the
    /// config, actions and directions are fixed words).
    pub guardrails: HashMap<super::GuardKey, u64>,
    /// Requests a budget let through unpriced, per model label.
    pub unpriced: HashMap<Arc<str>, u64>,
    pub records_dropped: u64,
    /// Per worker: (open client connections, open upstream connections).
    pub open: HashMap<usize, (u64, u64)>,
    /// The model labels series exist for (`MAX_MODEL_LABELS` at most).
    models: std::collections::HashSet<Arc<str>>,
}

impl State {
    pub fn new() -> State {
        State {
            started: Instant::now(),
            totals: HashMap::new(),
            hists: HashMap::new(),
            short: VecDeque::new(),
            long: VecDeque::new(),
            attempts: HashMap::new(),
            ratelimited: HashMap::new(),
            guardrails: HashMap::new(),
            unpriced: HashMap::new(),
            records_dropped: 0,
            open: HashMap::new(),
            models: std::collections::HashSet::new(),
        }
    }

    /// The label a model's series use: itself while there is room, "other"
    /// once `MAX_MODEL_LABELS` models have series.
    fn model_label(&mut self, model: Arc<str>) -> Arc<str> {
        if self.models.contains(&model) || &*model == "other" {
            return model;
        }
        if self.models.len() >= MAX_MODEL_LABELS {
            return other();
        }
        self.models.insert(model.clone());
        model
    }

    /// Current bucket number for a bucket width.
    pub fn bucket_now(&self, width: Duration) -> u64 {
        self.started.elapsed().as_secs() / width.as_secs()
    }

    pub fn merge(&mut self, d: Delta) {
        let short_now = self.bucket_now(SHORT);
        let long_now = self.bucket_now(LONG);
        for (ring, now, keep) in [(&mut self.short, short_now, SHORT_KEEP), (&mut self.long, long_now, LONG_KEEP)] {
            if ring.back().is_none_or(|b| b.index != now) {
                ring.push_back(Bucket { index: now, ..Bucket::default() });
                while ring.len() > keep {
                    ring.pop_front();
                }
            }
        }
        let mut counters = d.counters;
        let mut hists = d.hists;
        for (k, _) in counters.iter_mut() {
            k.model = self.model_label(k.model.clone());
        }
        for (k, _) in hists.iter_mut() {
            k.model = self.model_label(k.model.clone());
        }
        let (Some(short), Some(long)) = (self.short.back_mut(), self.long.back_mut()) else { return };
        for (k, c) in counters {
            short.counters.entry(k.clone()).or_default().add(&c);
            long.counters.entry(k.clone()).or_default().add(&c);
            self.totals.entry(k).or_default().add(&c);
        }
        for (k, h) in hists {
            for bucket in [&mut *short, &mut *long] {
                bucket_hist(bucket, &k).add_samples(&h);
            }
            self.hists.entry(k).or_default().add_samples(&h);
        }
        for (k, n) in d.attempts {
            *self.attempts.entry(k).or_default() += n;
        }
        for (k, n) in d.guardrails {
            *self.guardrails.entry(k).or_default() += n;
        }
        for (k, n) in d.ratelimited {
            *self.ratelimited.entry(k).or_default() += n;
        }
        for (k, n) in d.unpriced {
            let k = self.model_label(k);
            *self.unpriced.entry(k).or_default() += n;
        }
        self.records_dropped += d.records_dropped;
        self.open.insert(d.worker, (d.open_client, d.open_upstream));
    }
}

fn other() -> Arc<str> {
    thread_local!(static OTHER: Arc<str> = Arc::from("other"));
    OTHER.with(Arc::clone)
}

/// A bucket's histograms for a series; past `MAX_BUCKET_HISTS` series the
/// bucket keeps one "other" per provider.
fn bucket_hist<'b>(bucket: &'b mut Bucket, k: &HistKey) -> &'b mut Hists {
    let key = if bucket.hists.contains_key(k) || bucket.hists.len() < MAX_BUCKET_HISTS {
        k.clone()
    } else {
        HistKey { provider: k.provider.clone(), model: other() }
    };
    bucket.hists.entry(key).or_default()
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
            // Deltas came since the last idle second.
            let mut busy = false;
            loop {
                // Deltas wake it; the timeout only looks for the stop flag
                // (the channel closing ends it at once).
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(d) => {
                        busy = true;
                        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                        s.merge(d);
                        // Take what else is queued under the same lock.
                        while let Ok(d) = rx.try_recv() {
                            s.merge(d);
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if stop.is_triggered() => return,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if busy => {
                        // A second without deltas: the load ended.
                        busy = false;
                        crate::util::memory::collect();
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
        })
    }
}

//! The worker-local half: aggregate per request with no shared state; the
//! worker flushes the deltas and its batch of log records every second (the
//! proxy worker).

use std::{
    cell::{Cell, RefCell},
    sync::Arc,
    time::Duration,
};

use crossbeam_channel::TrySendError;

use crate::util::FastMap as HashMap;

use super::{Analytics, Counters, Delta, HistKey, LatencySamples, Record, SeriesKey};

#[derive(Default)]
struct Local {
    counters: HashMap<SeriesKey, Counters>,
    hists: HashMap<HistKey, LatencySamples>,
    attempts: HashMap<(Arc<str>, &'static str), u64>,
    ratelimited: HashMap<Arc<str>, u64>,
    guardrails: HashMap<super::GuardKey, u64>,
    unpriced: HashMap<Arc<str>, u64>,
    records_dropped: u64,
}

/// Distinct model labels a worker keeps; the model name comes from the
/// client, so past this every new name is counted under "other" instead of
/// growing /metrics and the collector without bound (the collector bounds
/// the total over all workers the same way).
const MAX_MODELS: usize = super::collector::MAX_MODEL_LABELS;

/// Log records a worker gathers before it sends them on at once, if its
/// flush has not sent them first. One send per batch, not per request: the
/// log thread blocks on the channel and each send may wake it (a futex call
/// on the worker, a context switch on the log thread), so at light load it
/// wakes at most once per flush per worker; under load once per 256
/// requests.
pub const RECORD_BATCH: usize = 256;
/// The smallest vector a batch starts with.
const MIN_BATCH_VEC: usize = 16;

pub struct Recorder {
    worker: usize,
    /// Model labels interned once: no allocation per request.
    models: RefCell<HashMap<Box<str>, Arc<str>>>,
    out: Analytics,
    local: RefCell<Local>,
    /// A delta that found the channel full, merged into the next one.
    pending: RefCell<Option<Delta>>,
    /// Log records not yet sent (`RECORD_BATCH` at most).
    records: RefCell<Vec<Record>>,
    /// How many records the last batch held: the next batch's vector is
    /// sized for as many once, where growing it by doubling copied each
    /// record (576 bytes) once more on average, ~650 instructions per
    /// request (callgrind, docs/benchmarks.md).
    batch_hint: Cell<usize>,
    /// Upstream connections this worker holds (in use or pooled).
    pub open_upstream: Cell<u64>,
    /// The gauges (open client, open upstream) of the last delta sent.
    sent_gauges: Cell<Option<(u64, u64)>>,
}

/// Series label for requests that never reached a provider or model.
fn none() -> Arc<str> {
    thread_local!(static NONE: Arc<str> = Arc::from("none"));
    NONE.with(Arc::clone)
}

impl Recorder {
    pub fn new(worker: usize, out: Analytics) -> Recorder {
        Recorder {
            worker,
            models: RefCell::new(HashMap::default()),
            out,
            local: RefCell::new(Local::default()),
            pending: RefCell::new(None),
            records: RefCell::new(Vec::new()),
            batch_hint: Cell::new(MIN_BATCH_VEC),
            open_upstream: Cell::new(0),
            sent_gauges: Cell::new(None),
        }
    }

    /// Accounts one finished request and queues its log record.
    pub fn record(&self, rec: Record) {
        {
            let mut local = self.local.borrow_mut();
            let provider = rec.provider.clone().unwrap_or_else(none);
            let model = rec.model.as_deref().map_or_else(none, |m| self.model_label(m));
            let key =
                SeriesKey { provider: provider.clone(), model: model.clone(), status: rec.status, cache: rec.cache };
            let c = local.counters.entry(key).or_default();
            c.requests += 1;
            // Upstream numbers may be anything: counters saturate.
            if let Some(u) = rec.usage {
                c.input_tokens = c.input_tokens.saturating_add(u.input.saturating_sub(u.cached_input));
                c.cached_input_tokens = c.cached_input_tokens.saturating_add(u.cached_input);
                c.cache_write_tokens = c.cache_write_tokens.saturating_add(u.cache_write);
                c.output_tokens = c.output_tokens.saturating_add(u.output);
            }
            c.estimated += u64::from(rec.estimated);
            c.cost_usd += rec.cost_usd.unwrap_or(0.0);
            c.bytes_in += rec.bytes_in;
            c.bytes_out += rec.bytes_out;
            if let Some(u) = rec.saved {
                c.saved_input_tokens = c.saved_input_tokens.saturating_add(u.input);
                c.saved_output_tokens = c.saved_output_tokens.saturating_add(u.output);
            }
            c.saved_cost_usd += rec.saved_cost_usd.unwrap_or(0.0);
            c.coalesced += u64::from(rec.coalesced);
            if rec.unpriced {
                *local.unpriced.entry(model.clone()).or_default() += 1;
            }
            let h = local.hists.entry(HistKey { provider: provider.clone(), model }).or_default();
            h.duration.record(micros(rec.duration));
            if let Some(t) = rec.ttfb {
                h.ttfb.record(micros(t));
            }
            if let Some(t) = rec.upstream {
                h.upstream.record(micros(t));
            }
            for e in &rec.guardrails {
                let key = (e.policy.clone(), e.detector.clone(), e.action.as_str(), e.direction.as_str());
                *local.guardrails.entry(key).or_default() += u64::from(e.count);
            }
            if let Some(rule) = &rec.limited_by {
                *local.ratelimited.entry(rule.clone()).or_default() += 1;
            }
            for p in &rec.failed_attempts {
                *local.attempts.entry((p.clone(), "failed")).or_default() += 1;
            }
            if rec.provider.is_some() && rec.attempts > 0 {
                let outcome = if rec.error.is_some_and(|e| e.starts_with("upstream")) { "error" } else { "ok" };
                *local.attempts.entry((provider.clone(), outcome)).or_default() += 1;
                let retried = rec.attempts.saturating_sub(1 + rec.failed_attempts.len() as u32);
                if retried > 0 {
                    *local.attempts.entry((provider, "retry")).or_default() += u64::from(retried);
                }
            }
        }
        let full = {
            let mut records = self.records.borrow_mut();
            if records.capacity() == 0 {
                // Sized when the first record comes, not when a batch
                // leaves: an idle worker holds no empty batch.
                records.reserve_exact(self.batch_hint.get());
            } else if records.len() == records.capacity() {
                let len = records.len();
                // Load rose past the last batch: straight to a full batch,
                // one copy of the records so far rather than one per
                // doubling.
                records.reserve_exact(RECORD_BATCH.saturating_sub(len).max(1));
            }
            records.push(rec);
            records.len() >= RECORD_BATCH
        };
        if full {
            self.send_records();
        }
    }

    /// Sends the gathered log records as one batch; a full channel drops
    /// them (counted), never blocks the worker.
    fn send_records(&self) {
        let batch = std::mem::take(&mut *self.records.borrow_mut());
        if batch.is_empty() {
            return;
        }
        self.batch_hint.set(batch.len().clamp(MIN_BATCH_VEC, RECORD_BATCH));
        let n = batch.len() as u64;
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.out.records.try_send(batch) {
            self.local.borrow_mut().records_dropped += n;
        }
    }

    fn model_label(&self, model: &str) -> Arc<str> {
        let mut models = self.models.borrow_mut();
        if let Some(label) = models.get(model) {
            return label.clone();
        }
        if models.len() >= MAX_MODELS {
            thread_local!(static OTHER: Arc<str> = Arc::from("other"));
            return OTHER.with(Arc::clone);
        }
        let label: Arc<str> = Arc::from(model);
        models.insert(model.into(), label.clone());
        label
    }

    /// Nothing was recorded since the last flush, and nothing waits.
    pub fn is_idle(&self) -> bool {
        let l = self.local.borrow();
        l.counters.is_empty()
            && l.records_dropped == 0
            && self.pending.borrow().is_none()
            && self.records.borrow().is_empty()
    }

    /// Moves the local aggregates into a delta and tries to send it; if the
    /// channel is full the delta waits for the next flush (never lost).
    pub fn flush(&self, open_client: u64) {
        // First, so that records the log channel refused count in this delta.
        self.send_records();
        // Nothing new to say: no delta, so an idle gateway does not wake the
        // collector.
        let gauges = (open_client, self.open_upstream.get());
        if self.is_idle() && self.sent_gauges.get() == Some(gauges) {
            return;
        }
        self.sent_gauges.set(Some(gauges));
        let taken = std::mem::take(&mut *self.local.borrow_mut());
        let mut delta =
            self.pending.borrow_mut().take().unwrap_or_else(|| Delta { worker: self.worker, ..Delta::default() });
        merge_into(&mut delta, taken);
        delta.open_client = open_client;
        delta.open_upstream = self.open_upstream.get();
        if let Err(TrySendError::Full(d) | TrySendError::Disconnected(d)) = self.out.deltas.try_send(delta) {
            *self.pending.borrow_mut() = Some(d);
        }
    }
}

fn merge_into(delta: &mut Delta, local: Local) {
    // Deltas that waited are small: merge by linear search.
    for (k, c) in local.counters {
        match delta.counters.iter_mut().find(|(dk, _)| *dk == k) {
            Some((_, dc)) => dc.add(&c),
            None => delta.counters.push((k, c)),
        }
    }
    for (k, h) in local.hists {
        match delta.hists.iter_mut().find(|(dk, _)| *dk == k) {
            Some((_, dh)) => dh.absorb(h),
            None => delta.hists.push((k, h)),
        }
    }
    add_counts(&mut delta.attempts, local.attempts);
    add_counts(&mut delta.ratelimited, local.ratelimited);
    add_counts(&mut delta.guardrails, local.guardrails);
    add_counts(&mut delta.unpriced, local.unpriced);
    delta.records_dropped += local.records_dropped;
}

/// Adds per-label counts into a delta's list.
fn add_counts<K: PartialEq>(into: &mut Vec<(K, u64)>, counts: HashMap<K, u64>) {
    for (k, n) in counts {
        match into.iter_mut().find(|(dk, _)| *dk == k) {
            Some((_, dn)) => *dn += n,
            None => into.push((k, n)),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::analytics::{State, log::Recent};

    /// A recorder on channels of these capacities, and their receivers.
    fn recorder(
        deltas: usize,
        batches: usize,
    ) -> (Recorder, crossbeam_channel::Receiver<Delta>, crossbeam_channel::Receiver<Vec<Record>>) {
        let (deltas, delta_rx) = crossbeam_channel::bounded(deltas);
        let (records, record_rx) = crossbeam_channel::bounded(batches);
        let out = Analytics {
            deltas,
            records,
            state: Arc::new(Mutex::new(State::new())),
            recent: Arc::new(Mutex::new(Recent::default())),
        };
        (Recorder::new(0, out), delta_rx, record_rx)
    }

    #[test]
    fn model_labels_are_interned_and_capped() {
        let (r, _, _) = recorder(1, 1);
        let a = r.model_label("gpt-4o");
        assert!(Arc::ptr_eq(&a, &r.model_label("gpt-4o")));
        for i in 0..MAX_MODELS {
            r.model_label(&format!("m{i}"));
        }
        assert_eq!(&*r.model_label("one-too-many"), "other");
        assert_eq!(&*r.model_label("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn records_go_in_batches_and_a_full_channel_counts_what_it_refused() {
        let (r, delta_rx, record_rx) = recorder(16, 1);
        let mut ctx = crate::proxy::ctx::RequestCtx::for_tests();
        let mut one = || r.record(Record::of(&mut ctx, Duration::ZERO));
        for i in 0..RECORD_BATCH - 1 {
            one();
            if i == MIN_BATCH_VEC {
                // Past the first batch's guess, one regrowth to a full batch.
                assert_eq!(r.records.borrow().capacity(), RECORD_BATCH);
            }
        }
        assert!(record_rx.is_empty(), "nothing goes before a batch is full");
        one();
        assert_eq!(record_rx.try_recv().map(|b| b.len()), Ok(RECORD_BATCH));
        // A flush sends what there is.
        one();
        r.flush(0);
        assert_eq!(record_rx.try_recv().map(|b| b.len()), Ok(1));
        // The channel holds one batch: the next two are refused and counted,
        // in the delta of the flush that found the channel full.
        one();
        r.flush(0);
        one();
        one();
        r.flush(0);
        assert_eq!(record_rx.len(), 1);
        assert_eq!(delta_rx.try_iter().map(|d| d.records_dropped).sum::<u64>(), 2);
        assert!(r.is_idle());
    }
}

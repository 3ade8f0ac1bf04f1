//! The worker-local half: aggregate per request with no shared state, flush
//! deltas every 250 ms.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use crossbeam_channel::TrySendError;

use super::{Analytics, Counters, Delta, HistKey, Hists, Record, SeriesKey};

const FLUSH_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Local {
    counters: HashMap<SeriesKey, Counters>,
    hists: HashMap<HistKey, Hists>,
    attempts: HashMap<(Arc<str>, &'static str), u64>,
    ratelimited: HashMap<Arc<str>, u64>,
    records_dropped: u64,
}

/// Distinct model labels a worker keeps; the model name comes from the
/// client, so past this every new name is counted under "other" instead of
/// growing /metrics and the collector without bound.
const MAX_MODELS: usize = 1000;

pub struct Recorder {
    worker: usize,
    /// Model labels interned once: no allocation per request.
    models: RefCell<HashMap<Box<str>, Arc<str>>>,
    out: Analytics,
    local: RefCell<Local>,
    /// A delta that found the channel full, merged into the next one.
    pending: RefCell<Option<Delta>>,
    /// Upstream connections this worker holds (in use or pooled).
    pub open_upstream: Cell<u64>,
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
            models: RefCell::new(HashMap::new()),
            out,
            local: RefCell::new(Local::default()),
            pending: RefCell::new(None),
            open_upstream: Cell::new(0),
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
            if let Some(u) = rec.usage {
                c.input_tokens += u.input.saturating_sub(u.cached_input);
                c.cached_input_tokens += u.cached_input;
                c.cache_write_tokens += u.cache_write;
                c.output_tokens += u.output;
            }
            c.estimated += u64::from(rec.estimated);
            c.cost_usd += rec.cost_usd.unwrap_or(0.0);
            c.bytes_in += rec.bytes_in;
            c.bytes_out += rec.bytes_out;
            if let Some(u) = rec.saved {
                c.saved_input_tokens += u.input;
                c.saved_output_tokens += u.output;
            }
            c.saved_cost_usd += rec.saved_cost_usd.unwrap_or(0.0);
            c.coalesced += u64::from(rec.coalesced);
            let h = local.hists.entry(HistKey { provider: provider.clone(), model }).or_default();
            h.duration.saturating_record(micros(rec.duration));
            if let Some(t) = rec.ttfb {
                h.ttfb.saturating_record(micros(t));
            }
            if let Some(t) = rec.upstream {
                h.upstream.saturating_record(micros(t));
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
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.out.records.try_send(Box::new(rec)) {
            self.local.borrow_mut().records_dropped += 1;
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

    /// Moves the local aggregates into a delta and tries to send it; if the
    /// channel is full the delta waits for the next flush (never lost).
    pub fn flush(&self, open_client: u64) {
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
            Some((_, dh)) => dh.add(&h),
            None => delta.hists.push((k, h)),
        }
    }
    for (k, n) in local.attempts {
        match delta.attempts.iter_mut().find(|(dk, _)| *dk == k) {
            Some((_, dn)) => *dn += n,
            None => delta.attempts.push((k, n)),
        }
    }
    for (k, n) in local.ratelimited {
        match delta.ratelimited.iter_mut().find(|(dk, _)| *dk == k) {
            Some((_, dn)) => *dn += n,
            None => delta.ratelimited.push((k, n)),
        }
    }
    delta.records_dropped += local.records_dropped;
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The worker task that flushes every 250 ms, and once more at the end.
pub async fn flush_loop(rec: Rc<Recorder>, ctx: Rc<crate::server::listener::ServerCtx>) {
    loop {
        monoio::time::sleep(FLUSH_EVERY).await;
        rec.flush(ctx.open_connections() as u64);
        if ctx.draining() && ctx.open_connections() == 0 {
            rec.flush(0);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::analytics::{State, log::Recent};

    #[test]
    fn model_labels_are_interned_and_capped() {
        let (deltas, _rx1) = crossbeam_channel::bounded(1);
        let (records, _rx2) = crossbeam_channel::bounded(1);
        let out = Analytics {
            deltas,
            records,
            state: Arc::new(Mutex::new(State::new())),
            recent: Arc::new(Mutex::new(Recent::default())),
        };
        let r = Recorder::new(0, out);
        let a = r.model_label("gpt-4o");
        assert!(Arc::ptr_eq(&a, &r.model_label("gpt-4o")));
        for i in 0..MAX_MODELS {
            r.model_label(&format!("m{i}"));
        }
        assert_eq!(&*r.model_label("one-too-many"), "other");
        assert_eq!(&*r.model_label("gpt-4o"), "gpt-4o");
    }
}

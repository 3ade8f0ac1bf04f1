//! Accounting for every request, off the hot path.
//!
//! Each worker aggregates locally (`recorder.rs`: counters and HDR
//! histograms, no shared atomics or locks per request) and ships a delta
//! and the requests' records every second (records sooner in batches of
//! 256 under load), over bounded crossbeam channels. One collector thread
//! merges deltas (`collector.rs`) for `/metrics` and `/admin/stats`
//! (`exposition.rs`); one log thread writes the request log and keeps the
//! recent records for `/admin/logs`
//! (`log.rs`). A full channel never blocks a worker: records are dropped and
//! counted; deltas stay in the worker and go with the next flush.

mod collector;
pub mod exposition;
pub mod log;
pub mod recorder;
mod samples;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use collector::{Collector, State};
use hdrhistogram::Histogram;
use samples::LatencySamples;

use crate::proxy::ctx::{CacheKey, RequestCtx, Usage};

/// A request's method: the common ones without an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Known(&'static str),
    Other(Box<[u8]>),
}

impl Method {
    pub fn of(raw: &[u8]) -> Method {
        const KNOWN: [&str; 7] = ["POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"];
        match KNOWN.iter().find(|m| m.as_bytes() == raw) {
            Some(m) => Method::Known(m),
            None => Method::Other(Box::from(raw)),
        }
    }

    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Method::Known(m) => std::borrow::Cow::Borrowed(m),
            Method::Other(raw) => String::from_utf8_lossy(raw),
        }
    }

    fn len(&self) -> usize {
        match self {
            Method::Known(_) => 0,
            Method::Other(raw) => raw.len(),
        }
    }
}

/// One request, as the log and the aggregates see it.
#[derive(Debug, Clone)]
pub struct Record {
    pub ts_unix_ms: u64,
    /// When the request ended (monotonic): `/admin/logs` orders by it, since
    /// workers hand their records over in batches, not as they finish.
    pub finished: Instant,
    /// The request id's 24 hex digits, and the method and path as the
    /// client sent them: copied without the UTF-8 check and allocation a
    /// String needs (~700 instructions per request on the worker); the log
    /// thread converts them when it writes.
    pub request_id: [u8; 24],
    pub client_ip: IpAddr,
    pub method: Method,
    pub path: Box<[u8]>,
    /// Provider name; None when the request never reached routing.
    pub provider: Option<Arc<str>>,
    pub model: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub cache: &'static str,
    /// The entry's key when the cache applied (logged as the hex that
    /// `/admin/cache/purge?key=` takes; formatted by the log thread).
    pub cache_key: Option<CacheKey>,
    /// Served by following an identical request in flight.
    pub coalesced: bool,
    /// What a hit (or coalesced answer) would have cost upstream.
    pub saved: Option<Usage>,
    pub saved_cost_usd: Option<f64>,
    /// The gateway key's id (auth mode "keys").
    pub client_key_id: Option<Arc<str>>,
    /// The rate limit or budget that refused the request.
    pub limited_by: Option<Arc<str>>,
    /// Guardrail findings: per policy, detector, action and side, a count
    /// (never the text).
    pub guardrails: Vec<crate::proxy::ctx::GuardEvent>,
    /// A budget let the request through although its model has no price.
    pub unpriced: bool,
    /// Providers of attempts that failed before the one relayed (retries
    /// and fallbacks).
    pub failed_attempts: Vec<Arc<str>>,
    pub attempts: u32,
    pub usage: Option<Usage>,
    pub estimated: bool,
    pub cost_usd: Option<f64>,
    pub ttfb: Option<Duration>,
    /// Time spent on the upstream: request sent to the last body byte.
    pub upstream: Option<Duration>,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The gateway's error code, when the gateway answered with an error
    /// or the response was cut short.
    pub error: Option<&'static str>,
    /// `x-aigw-metadata`, validated as a flat JSON object of ≤ 5 entries.
    pub metadata: Option<String>,
    /// Captured bodies (`[log] capture_bodies`), truncated, lossy UTF-8.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

impl Record {
    /// The record of a finished request, from its context: built once, at
    /// the end, and never consulted by the data path.
    pub fn of(ctx: &mut RequestCtx<'_>, duration: Duration) -> Record {
        let cache = ctx.cache_label();
        let r = std::mem::take(&mut ctx.response);
        Record {
            ts_unix_ms: ctx.ts_unix_ms,
            finished: ctx.started + duration,
            request_id: ctx.id.0,
            client_ip: ctx.peer,
            method: Method::of(&ctx.method),
            path: Box::from(&ctx.path[..]),
            provider: std::mem::take(&mut ctx.provider),
            model: std::mem::take(&mut ctx.model),
            stream: ctx.facts.stream,
            status: r.status,
            cache,
            cache_key: ctx.cache.key,
            coalesced: ctx.cache.coalesced,
            saved: ctx.cache.saved,
            saved_cost_usd: ctx.cache.saved_cost_usd,
            client_key_id: ctx.identity.key.as_ref().map(|k| k.id.clone()),
            limited_by: std::mem::take(&mut ctx.admission.limited_by),
            guardrails: std::mem::take(&mut ctx.guard.events),
            unpriced: ctx.unpriced,
            failed_attempts: std::mem::take(&mut ctx.attempts.failed),
            attempts: ctx.attempts.made,
            usage: r.usage,
            estimated: r.estimated,
            cost_usd: r.cost_usd,
            ttfb: r.ttfb,
            upstream: ctx.attempts.upstream_time,
            duration,
            bytes_in: ctx.bytes_in,
            bytes_out: r.bytes_out,
            error: r.error,
            metadata: std::mem::take(&mut ctx.controls.metadata),
            request_body: r.request_body,
            response_body: r.response_body,
        }
    }
}

/// Series of the request counters: one per provider, model, status, cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub status: u16,
    pub cache: &'static str,
}

/// Series of the latency histograms: one per provider and model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HistKey {
    pub provider: Arc<str>,
    pub model: Arc<str>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub estimated: u64,
    pub cost_usd: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Tokens and cost that cache hits and coalesced requests did not spend.
    pub saved_input_tokens: u64,
    pub saved_output_tokens: u64,
    pub saved_cost_usd: f64,
    pub coalesced: u64,
}

impl Counters {
    /// Adds another's counts; token counts come from upstreams and saturate.
    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.cached_input_tokens = self.cached_input_tokens.saturating_add(o.cached_input_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.estimated += o.estimated;
        self.cost_usd += o.cost_usd;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.saved_input_tokens = self.saved_input_tokens.saturating_add(o.saved_input_tokens);
        self.saved_output_tokens = self.saved_output_tokens.saturating_add(o.saved_output_tokens);
        self.saved_cost_usd += o.saved_cost_usd;
        self.coalesced += o.coalesced;
    }
}

/// Latency histograms in microseconds, 1 µs to 1 hour, 2 significant digits,
/// 32-bit counts (~13 KiB each).
#[derive(Debug, Clone)]
pub struct Hists {
    pub duration: Histogram<u32>,
    pub ttfb: Histogram<u32>,
    pub upstream: Histogram<u32>,
}

impl Hists {
    pub fn new() -> Hists {
        Hists { duration: Self::histogram(), ttfb: Self::histogram(), upstream: Self::histogram() }
    }

    /// One empty latency histogram with the bounds above.
    pub fn histogram() -> Histogram<u32> {
        Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant, valid histogram bounds")
    }

    pub fn add(&mut self, o: &Hists) {
        let _ = self.duration.add(&o.duration);
        let _ = self.ttfb.add(&o.ttfb);
        let _ = self.upstream.add(&o.upstream);
    }

    /// Adds one worker's samples of a flush period.
    pub fn add_samples(&mut self, o: &LatencySamples) {
        o.duration.add_to(&mut self.duration);
        o.ttfb.add_to(&mut self.ttfb);
        o.upstream.add_to(&mut self.upstream);
    }
}

impl Default for Hists {
    fn default() -> Self {
        Self::new()
    }
}

/// `aigw_guardrail_actions_total` labels: policy, detector, action,
/// direction.
pub type GuardKey = (Arc<str>, Arc<str>, &'static str, &'static str);

/// One worker's aggregates since its previous flush.
#[derive(Debug, Default)]
pub struct Delta {
    pub worker: usize,
    pub counters: Vec<(SeriesKey, Counters)>,
    pub hists: Vec<(HistKey, LatencySamples)>,
    /// (provider, outcome) → attempts.
    pub attempts: Vec<((Arc<str>, &'static str), u64)>,
    /// Refusals per rate-limit rule (or budget).
    pub ratelimited: Vec<(Arc<str>, u64)>,
    /// Guardrail findings per (policy, detector, action, direction).
    pub guardrails: Vec<(GuardKey, u64)>,
    /// Requests a budget let through unpriced, per model label.
    pub unpriced: Vec<(Arc<str>, u64)>,
    pub records_dropped: u64,
    /// Gauges: this worker's open client and upstream connections.
    pub open_client: u64,
    pub open_upstream: u64,
}

/// Handles the workers and admin listener share.
#[derive(Clone)]
pub struct Analytics {
    pub deltas: crossbeam_channel::Sender<Delta>,
    /// Batches of at most `recorder::RECORD_BATCH` records.
    pub records: crossbeam_channel::Sender<Vec<Record>>,
    pub state: Arc<Mutex<State>>,
    pub recent: Arc<Mutex<log::Recent>>,
}

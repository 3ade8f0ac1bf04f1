//! The one per-request context. Every phase of `pipeline.rs` fills its part
//! of it, in order; limits, budgets and the cache read what earlier phases
//! wrote; `finish` settles from it, and the analytics record is built from
//! it once, at the very end (`analytics::Record::of`). Nothing here is
//! optional because analytics is off: the tap counts tokens for limits and
//! budgets whether analytics records them or not.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::controls::Controls;
use crate::{
    auth::GatewayKey,
    cache::CacheStatus,
    config::{Action, Moderation},
    guardrails::pseudonym::Pseudonyms,
    http::{Version, request::RequestHead},
    ratelimit::{Admission, budget::Reservation},
    service::RequestId,
};
pub use crate::{cache::CacheKey, guardrails::Event as GuardEvent, providers::body::RequestInfo, tap::Usage};

pub struct RequestCtx<'a> {
    // === arrival ===
    pub id: RequestId,
    pub peer: IpAddr,
    pub started: Instant,
    pub ts_unix_ms: u64,
    /// The request line as the record shows it: method and path without
    /// the query (slices of the frozen head, not copies), `-` when the head
    /// never parsed.
    pub method: Bytes,
    pub path: Bytes,
    pub bytes_in: u64,
    /// The client's HTTP version.
    pub version: Version,
    /// The connection may carry another request after this one.
    pub keep_alive: bool,

    /// Phase 1, authenticate.
    pub identity: Identity,
    /// Phase 2, the routing facts read from the body (`providers/body.rs`).
    pub facts: RequestInfo,
    /// Phase 3, resolve: the route or provider name the request addressed, the
    /// `provider` of limits and the cache. The candidates themselves are
    /// the pipeline's `Resolved`, borrowed from the worker.
    pub label: Option<&'a str>,
    /// Who is accounted for the request: the first candidate once resolved,
    /// the upstream that answered once attempts ran.
    pub provider: Option<Arc<str>>,
    pub model: Option<String>,
    /// Phase 5, admit.
    pub admission: Admitted,
    /// A budget let the request through although its model has no price.
    pub unpriced: bool,
    /// Phases 6 and 7: the `x-aigw-*` request controls, then the cache.
    pub controls: Controls,
    /// Phase 4, guard (request).
    pub guard: GuardCtx,
    pub cache: CacheCtx,
    /// Phase 8, attempts.
    pub attempts: Attempts,
    /// Phases 9 and 10, relay and finish.
    pub response: Response,
}

/// Who is calling (auth mode "keys").
#[derive(Default)]
pub struct Identity {
    pub key: Option<Arc<GatewayKey>>,
    /// The header that carried the gateway key: never forwarded.
    pub key_header: Option<&'static str>,
}

/// What admission took, to be settled when the request ends.
#[derive(Default)]
pub struct Admitted {
    /// The rate-limit buckets charged (token buckets are debited at the end).
    pub limits: Option<Admission>,
    /// The budget reserved; spent at the real cost at the end.
    pub reservation: Option<Reservation>,
    /// `x-ratelimit-*` lines for the response.
    pub headers: Vec<u8>,
    /// The rate limit or budget that refused the request.
    pub limited_by: Option<Arc<str>>,
}

/// What the guardrails did, and which act on the answer.
#[derive(Default)]
pub struct GuardCtx {
    /// The policies (indices) with a response action, in order: the
    /// server's, the route's, every candidate provider's.
    pub response: Vec<usize>,
    /// The body with findings redacted; None: the client's, unchanged.
    /// Everything after the guard phase (cache key, upstream, log capture)
    /// uses this one.
    pub body: Option<Bytes>,
    /// Findings per policy and detector, both sides, for the record and
    /// the metric.
    pub events: Vec<GuardEvent>,
    /// The placeholders a pseudonymize policy put in the request, restored
    /// in the answer; None when there are none. Never stored or logged.
    pub pseudonyms: Option<Arc<Pseudonyms>>,
    /// Remote checks to run alongside the upstream call (policy, check,
    /// block or flag); taken by the pipeline.
    pub checks: Vec<(Arc<str>, Moderation, Action)>,
}

impl GuardCtx {
    /// Whether the answer passes through the guardrails: a response
    /// policy applies, or placeholders are to be restored.
    pub fn reads_answer(&self) -> bool {
        !self.response.is_empty() || self.pseudonyms.is_some()
    }

    /// The body as the provider gets it.
    pub fn body_or(&self, client: &Bytes) -> Bytes {
        self.body.clone().unwrap_or_else(|| client.clone())
    }
}

/// The cache's part in the request.
#[derive(Default)]
pub struct CacheCtx {
    /// `x-aigw-cache-status`; None where the cache does not apply.
    pub status: Option<CacheStatus>,
    /// The entry's key, when the cache applied.
    pub key: Option<CacheKey>,
    /// Served by following an identical request in flight.
    pub coalesced: bool,
    /// What a hit (or coalesced answer) would have cost upstream.
    pub saved: Option<Usage>,
    pub saved_cost_usd: Option<f64>,
}

#[derive(Default)]
pub struct Attempts {
    /// Attempts made, retries included.
    pub made: u32,
    /// Providers of attempts that failed before the one relayed.
    pub failed: Vec<Arc<str>>,
    /// Time on the upstream: request sent to the last body byte.
    pub upstream_time: Option<Duration>,
}

/// What the client got, and what it used.
#[derive(Default)]
pub struct Response {
    pub status: u16,
    pub bytes_out: u64,
    /// When the response head went out, from `started`.
    pub ttfb: Option<Duration>,
    pub usage: Option<Usage>,
    /// Usage counted by the gateway, not reported by the provider.
    pub estimated: bool,
    pub cost_usd: Option<f64>,
    /// The gateway's error code, when it answered with an error or the
    /// response was cut short.
    pub error: Option<&'static str>,
    /// Captured bodies (`[log] capture_bodies`), truncated, lossy UTF-8.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

impl<'a> RequestCtx<'a> {
    /// The context of a request whose head parsed.
    pub fn new(head: &RequestHead, body_len: usize, peer: IpAddr, id: RequestId, started: Instant) -> Self {
        let mut ctx = Self::unparsed(peer, id, started);
        ctx.method = head.method_bytes();
        ctx.path = head.path_bytes();
        ctx.bytes_in = (head.len() + body_len) as u64;
        ctx.version = head.version();
        ctx
    }

    /// A context with nothing parsed, for unit tests of what reads a
    /// finished request (records, the log).
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self::unparsed(IpAddr::from([127, 0, 0, 1]), RequestId([b'0'; 24]), Instant::now())
    }

    /// The context of bytes that never made a valid request head.
    pub fn unparsed(peer: IpAddr, id: RequestId, started: Instant) -> Self {
        RequestCtx {
            id,
            peer,
            started,
            ts_unix_ms: crate::util::now_unix_ms(),
            method: Bytes::from_static(b"-"),
            path: Bytes::from_static(b"-"),
            bytes_in: 0,
            version: Version::Http11,
            keep_alive: false,
            identity: Identity::default(),
            facts: RequestInfo::default(),
            label: None,
            provider: None,
            model: None,
            admission: Admitted::default(),
            unpriced: false,
            controls: Controls::default(),
            guard: GuardCtx::default(),
            cache: CacheCtx::default(),
            attempts: Attempts::default(),
            response: Response::default(),
        }
    }

    /// The `cache` label of the metrics and the log.
    pub fn cache_label(&self) -> &'static str {
        self.cache.status.map_or("none", CacheStatus::label)
    }
}

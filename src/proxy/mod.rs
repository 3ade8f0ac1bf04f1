//! The per-request pipeline of the data listener:
//! route → rewrite the head → exchange with the upstream → relay the body.

mod access;
mod cached;
mod headers;
mod relay;

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use crate::{
    analytics::{Record, pricing::PriceTable, recorder::Recorder, request_body},
    auth::{Keys, WorkerKeys},
    cache::{
        Cache, CacheStatus, Lookup, Plan, PlanInput,
        flight::{Join, Leader},
    },
    config::ProviderKind,
    error::GatewayError,
    ratelimit::Limiter,
    server::conn::{ClientIo, Outcome, Request},
    upstream::{Upstream, exchange, pool::Pool},
};

/// What every worker shares, read-only.
pub struct Shared {
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    pub prices: PriceTable,
    /// `[log] capture_bodies`: how many bytes of each body to keep.
    pub capture: Option<usize>,
    pub cache: Arc<Cache>,
    /// Gateway keys (auth mode "keys").
    pub keys: Option<Arc<Keys>>,
    pub limiter: Arc<Limiter>,
}

impl Shared {
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        prices: PriceTable,
        capture: Option<usize>,
        cache: Arc<Cache>,
        keys: Option<Arc<Keys>>,
        limiter: Arc<Limiter>,
    ) -> Self {
        let by_name = upstreams.iter().map(|u| (u.name.clone(), u.index)).collect();
        Self { upstreams, by_name, prices, capture, cache, keys, limiter }
    }
}

/// A cacheable miss being relayed: the leader of its flight, and where the
/// answer goes once complete.
pub struct CacheFill {
    pub leader: Leader,
    pub key: crate::cache::CacheKey,
    pub ttl: std::time::Duration,
    /// The answer's stored headers, once its head arrived.
    pub headers: bytes::Bytes,
}

/// Per-worker state of the proxy: shared config, this worker's pools and
/// its analytics recorder.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: RefCell<Pool>,
    pub recorder: Option<Rc<Recorder>>,
    /// Upstream connections in use by requests on this worker.
    active_upstream: std::cell::Cell<u64>,
    /// This worker's snapshot of the key set.
    keys: Option<WorkerKeys>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, recorder: Option<Rc<Recorder>>) -> Self {
        let pool = Pool::new(shared.upstreams.iter().map(|u| u.pool).collect());
        let keys = shared.keys.clone().map(WorkerKeys::new);
        Self { shared, pool: RefCell::new(pool), recorder, active_upstream: std::cell::Cell::new(0), keys }
    }
}

pub async fn handle(
    w: &Worker,
    req: Request,
    io: &mut ClientIo,
    keep_alive: bool,
    mut rec: Option<&mut Record>,
) -> Result<Outcome, GatewayError> {
    let mut admitted = access::authenticate(w, &req, rec.as_deref_mut())?;
    let result = forward(w, &req, io, keep_alive, rec.as_deref_mut(), &mut admitted).await;
    access::settle(w, admitted, rec.as_deref());
    result
}

/// Everything after authentication: route, limits, cache, upstream.
async fn forward(
    w: &Worker,
    req: &Request,
    io: &mut ClientIo,
    keep_alive: bool,
    mut rec: Option<&mut Record>,
    admitted: &mut access::Admitted,
) -> Result<Outcome, GatewayError> {
    let (up, rest) = route(w, req.head.target())?;
    let info = match up.kind {
        ProviderKind::Gemini => request_body::gemini_path(rest).unwrap_or_default(),
        _ => request_body::scan(&req.body),
    };
    if let Some(r) = rec.as_deref_mut() {
        r.provider = Some(up.label.clone());
        r.model = info.model.clone();
        r.stream = info.stream;
    }
    access::admit(w, admitted, req, &up.name, info.model.as_deref(), rec.as_deref_mut()).await?;
    let mut body = req.body.clone();
    let mut strip_usage = false;
    if let Some(r) = rec.as_deref_mut() {
        if info.stream
            && !info.stream_options
            && up.inject_include_usage
            && is_chat_completions(req, rest)
            && let Some(b) = with_include_usage(&req.body)
        {
            body = b;
            strip_usage = true;
        }
        if let Some(max) = w.shared.capture {
            r.request_body = Some(String::from_utf8_lossy(&req.body[..req.body.len().min(max)]).into_owned());
        }
    }
    let metadata = metadata(req)?;
    if let Some(r) = rec.as_deref_mut() {
        r.metadata = metadata;
    }
    if let Some(reason) = &up.unavailable {
        return Err(GatewayError::ProviderUnavailable { provider: up.name.clone(), reason: reason.clone() });
    }
    let deadline = req.started + up.timeouts.total;

    let cache = &w.shared.cache;
    let plan = cache.plan(&PlanInput {
        head: &req.head,
        provider: &up.name,
        provider_ttl: up.cache_ttl,
        path: rest,
        body: &body,
        stripped: strip_usage,
        key_id: admitted.key.as_ref().map(|k| &*k.id),
    })?;
    let mut fill = None;
    let cache_status = match plan {
        Plan::Off => None,
        Plan::Bypass => Some(CacheStatus::Bypass),
        Plan::Use { key, ttl } => {
            if let Some(r) = rec.as_deref_mut() {
                r.cache_key = Some(key.hex());
            }
            let status = match cache.get(&up.name, key).await {
                Lookup::Hit(entry) => {
                    if let Some(r) = rec.as_deref_mut() {
                        r.cache = CacheStatus::Hit.label();
                    }
                    return Ok(cached::serve_hit(w, &entry, io, req, keep_alive, &admitted.headers, rec).await);
                }
                Lookup::Expired => CacheStatus::Expired,
                Lookup::Miss => CacheStatus::Miss,
            };
            let max = cache.config.max_entry_bytes;
            let join =
                if cache.config.coalesce { cache.flights.join(key, max) } else { Join::Leader(Leader::solo(max)) };
            match join {
                Join::Leader(leader) => fill = Some(CacheFill { leader, key, ttl, headers: bytes::Bytes::new() }),
                Join::Follower(f) => {
                    if let Some(r) = rec.as_deref_mut() {
                        r.cache = CacheStatus::Hit.label();
                    }
                    let followed = cached::follow(
                        w,
                        &up.name,
                        f,
                        io,
                        req,
                        keep_alive,
                        deadline,
                        &admitted.headers,
                        rec.as_deref_mut(),
                    )
                    .await?;
                    match followed {
                        cached::Followed::Done(outcome) => return Ok(outcome),
                        // The leader got no cacheable answer: this request
                        // goes upstream on its own and stores nothing.
                        cached::Followed::Released => {}
                    }
                }
            }
            Some(status)
        }
    };
    if let (Some(r), Some(s)) = (rec.as_deref_mut(), cache_status) {
        r.cache = s.label();
    }

    let outgoing = headers::upstream_request(req, up, rest, &body, rec.is_some(), admitted.key_header);
    let upstream_started = std::time::Instant::now();
    let start = match exchange::start(&w.pool, up, outgoing, deadline).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(r) = rec {
                r.attempts = 1;
            }
            return Err(e);
        }
    };
    w.active_upstream.set(w.active_upstream.get() + 1);
    let cache_out = relay::CacheOut { status: cache_status, fill };
    let extra = &admitted.headers;
    let outcome =
        relay::relay(w, up, start, io, req, keep_alive, deadline, rec.as_deref_mut(), strip_usage, cache_out, extra)
            .await;
    if let Some(r) = rec {
        r.upstream = Some(upstream_started.elapsed());
    }
    w.active_upstream.set(w.active_upstream.get().saturating_sub(1));
    if let Some(r) = &w.recorder {
        // The gauge: connections in use plus those idle in the pool.
        r.open_upstream.set(w.active_upstream.get() + w.pool.borrow().total_idle() as u64);
    }
    Ok(outcome)
}

fn is_chat_completions(req: &Request, rest: &[u8]) -> bool {
    let path = &rest[..rest.iter().position(|&b| b == b'?').unwrap_or(rest.len())];
    req.head.method() == b"POST" && path.ends_with(b"/chat/completions")
}

/// The body with `"stream_options":{"include_usage":true}` as its first
/// member, so the stream reports exact usage. The relay strips what this
/// adds before the client sees it.
fn with_include_usage(body: &bytes::Bytes) -> Option<bytes::Bytes> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body[i] == b'{')?;
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out.into())
}

/// `x-aigw-metadata`: a flat JSON object of at most 5 entries with scalar
/// values, for the request log. Anything else is refused with 400 rather
/// than silently dropped.
fn metadata(req: &Request) -> Result<Option<String>, GatewayError> {
    let Some(raw) = req.head.header("x-aigw-metadata") else {
        return Ok(None);
    };
    let bad = |why: &str| GatewayError::InvalidHeader { name: "x-aigw-metadata", why: why.to_string() };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).map_err(|_| bad("expected a JSON object"))?;
    if map.len() > 5 {
        return Err(bad("at most 5 keys"));
    }
    let too_big = |(k, v): (&String, &serde_json::Value)| {
        k.len() > 64 || v.is_object() || v.is_array() || v.as_str().is_some_and(|s| s.len() > 256)
    };
    if map.iter().any(too_big) {
        return Err(bad("keys up to 64 bytes; values strings (up to 256 bytes), numbers, booleans or null"));
    }
    Ok(Some(serde_json::Value::Object(map).to_string()))
}

/// `/{provider}/{rest}` → the provider and `/{rest}` (query included).
fn route<'a>(w: &'a Worker, target: &'a [u8]) -> Result<(&'a Upstream, &'a [u8]), GatewayError> {
    let after_slash = &target[1..];
    let end = after_slash.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after_slash.len());
    let name = &after_slash[..end];
    let rest = &after_slash[end..];
    let found = std::str::from_utf8(name).ok().and_then(|n| w.shared.by_name.get(n));
    match found.and_then(|&i| w.shared.upstreams.get(i)) {
        Some(up) => Ok((up, rest)),
        None => Err(GatewayError::NoSuchRoute { name: String::from_utf8_lossy(name).into_owned() }),
    }
}

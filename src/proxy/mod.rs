//! The per-request pipeline of the data listener:
//! route → rewrite the head → exchange with the upstream → relay the body.

mod access;
mod attempts;
mod cached;
mod headers;
mod models;
mod relay;
mod resolve;
pub mod translate;

use resolve::Api;
use translate::Translation;

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
    pub router: Arc<crate::routing::Router>,
}

impl Shared {
    pub fn new(
        upstreams: Vec<Arc<Upstream>>,
        prices: PriceTable,
        capture: Option<usize>,
        cache: Arc<Cache>,
        keys: Option<Arc<Keys>>,
        limiter: Arc<Limiter>,
        router: Arc<crate::routing::Router>,
    ) -> Self {
        let by_name = upstreams.iter().map(|u| (u.name.clone(), u.index)).collect();
        Self { upstreams, by_name, prices, capture, cache, keys, limiter, router }
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i)).map(|u| &**u)
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
    let scanned = request_body::scan(&req.body);
    let resolved = resolve::resolve(w, req, scanned.model.as_deref())?;
    if resolved.api == Api::Models {
        let body = models::list(w);
        let resp = crate::error::json_response_with(
            200,
            &body,
            req.head.version(),
            Some(req.id.as_bytes()),
            !keep_alive,
            &admitted.headers,
        );
        return Ok(if io.send(resp).await && keep_alive { Outcome::Reusable } else { Outcome::Close });
    }
    let first =
        resolved.candidates.first().ok_or_else(|| GatewayError::NoSuchRoute { name: resolved.label.to_string() })?;
    let single_gemini =
        resolved.route.is_none() && resolved.api == Api::Passthrough && first.up.kind == ProviderKind::Gemini;
    // Gemini's native API names the model in the path, not the body.
    let info = if single_gemini { request_body::gemini_path(resolved.rest).unwrap_or_default() } else { scanned };
    if let Some(r) = rec.as_deref_mut() {
        r.provider = Some(first.up.label.clone());
        r.model = first.model.clone().or_else(|| info.model.clone());
        r.stream = info.stream;
        if let Some(max) = w.shared.capture {
            r.request_body = Some(String::from_utf8_lossy(&req.body[..req.body.len().min(max)]).into_owned());
        }
    }
    access::admit(w, admitted, req, resolved.label, info.model.as_deref(), rec.as_deref_mut()).await?;
    let metadata = metadata(req)?;
    if let Some(r) = rec.as_deref_mut() {
        r.metadata = metadata;
    }
    let overrides = overrides(req)?;
    let deadline = req.started + overrides.timeout.unwrap_or(first.up.timeouts.total);
    let max_attempts = overrides
        .max_attempts
        .unwrap_or_else(|| resolved.route.as_ref().map_or(first.up.max_attempts, |r| r.max_attempts));
    let path: &[u8] = match resolved.api {
        Api::Chat => b"/v1/chat/completions",
        Api::Embeddings => b"/v1/embeddings",
        _ => resolved.rest,
    };
    let analytics = rec.is_some();
    let injects = |c: &resolve::Candidate<'_>| {
        analytics
            && info.stream
            && !info.stream_options
            && c.up.inject_include_usage
            && translate::kind_of(resolved.api, c.up.kind) == Translation::None
            && is_chat_completions(req, path)
    };

    let cache = &w.shared.cache;
    let plan = cache.plan(&PlanInput {
        head: &req.head,
        provider: resolved.label,
        provider_ttl: resolved.route.as_ref().and_then(|r| r.cache_ttl).or(first.up.cache_ttl),
        path,
        body: &req.body,
        stripped: injects(first),
        key_id: admitted.key.as_ref().map(|k| &*k.id),
    })?;
    let mut fill = None;
    let cache_status = match plan {
        Plan::Off => None,
        Plan::Bypass => Some(CacheStatus::Bypass),
        Plan::Use { key, ttl } => {
            if let Some(r) = rec.as_deref_mut() {
                r.cache_key = Some(key);
            }
            let status = match cache.get(resolved.label, key).await {
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
                        resolved.label,
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

    let order = match &resolved.route {
        Some(route) => {
            let prefix = request_body::prompt_prefix(&req.body, 2048);
            w.shared.router.order(route, prefix, crate::cache::entry::now_unix_ms())
        }
        None => Vec::new(),
    };
    // A single target: no route order to compute.
    let order: &[usize] = if order.is_empty() { &[0] } else { &order };
    let key_header = admitted.key_header;
    let build = |c: &resolve::Candidate<'_>| -> Result<(exchange::Outgoing, bool), GatewayError> {
        let kind = translate::kind_of(resolved.api, c.up.kind);
        let (body, rest, strip): (bytes::Bytes, std::borrow::Cow<'_, [u8]>, bool) = match kind {
            Translation::None => {
                let mut body = match &c.model {
                    Some(m) => with_model(&req.body, m),
                    None => req.body.clone(),
                };
                let strip = injects(c);
                if strip && let Some(b) = with_include_usage(&body) {
                    body = b;
                }
                (body, std::borrow::Cow::Borrowed(path), strip)
            }
            other => {
                let (body, rest) = translate::request(other, &req.body, c.model.as_deref(), info.stream)?;
                (body, std::borrow::Cow::Owned(rest), false)
            }
        };
        Ok((headers::upstream_request(req, c.up, &rest, &body, analytics, key_header), strip))
    };
    let upstream_started = std::time::Instant::now();
    let attempted =
        attempts::run(w, &resolved.candidates, order, max_attempts, deadline, build, rec.as_deref_mut()).await?;
    let chosen = &resolved.candidates[attempted.index];
    let up = chosen.up;
    if let Some(r) = rec.as_deref_mut() {
        r.provider = Some(up.label.clone());
        if let Some(m) = &chosen.model {
            r.model = Some(m.clone());
        }
    }
    let mut extra = admitted.headers.clone();
    if resolved.route.is_some() || resolved.api != Api::Passthrough {
        extra.extend_from_slice(
            format!("x-aigw-provider: {}\r\nx-aigw-attempts: {}\r\n", up.name, attempted.attempts).as_bytes(),
        );
    }
    let translation = translate::kind_of(resolved.api, up.kind);
    w.active_upstream.set(w.active_upstream.get() + 1);
    let cache_out = relay::CacheOut { status: cache_status, fill };
    let opts = relay::RelayOpts {
        strip_usage: attempted.strip_usage,
        cache: cache_out,
        extra: &extra,
        translation,
        include_usage: info.stream_options_usage(),
        model: chosen.model.as_deref().or(info.model.as_deref()).unwrap_or_default(),
        json_mode: translation == Translation::Anthropic && request_body::json_output(&req.body),
    };
    let outcome = relay::relay(w, up, attempted.start, io, req, keep_alive, deadline, rec.as_deref_mut(), opts).await;
    if let Some(r) = rec {
        r.upstream = Some(upstream_started.elapsed());
        r.attempts = attempted.attempts;
    }
    w.active_upstream.set(w.active_upstream.get().saturating_sub(1));
    if let Some(r) = &w.recorder {
        // The gauge: connections in use plus those idle in the pool.
        r.open_upstream.set(w.active_upstream.get() + w.pool.borrow().total_idle() as u64);
    }
    Ok(outcome)
}

/// `x-aigw-max-attempts` and `x-aigw-request-timeout`.
struct Overrides {
    max_attempts: Option<u32>,
    timeout: Option<std::time::Duration>,
}

fn overrides(req: &Request) -> Result<Overrides, GatewayError> {
    let num = |name: &'static str, max: u64| -> Result<Option<u64>, GatewayError> {
        match req.head.header(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|n| (1..=max).contains(n))
                .map(Some)
                .ok_or_else(|| GatewayError::InvalidHeader {
                    name,
                    why: format!("expected a whole number, 1 to {max}"),
                }),
        }
    };
    Ok(Overrides {
        max_attempts: num("x-aigw-max-attempts", 10)?.map(|n| n as u32),
        timeout: num("x-aigw-request-timeout", 3_600_000)?.map(std::time::Duration::from_millis),
    })
}

/// The body with its top-level `model` replaced (routes and
/// `provider/model` send the target's model).
fn with_model(body: &bytes::Bytes, model: &str) -> bytes::Bytes {
    let Some(span) = request_body::model_span(body) else { return body.clone() };
    let quoted = serde_json::Value::from(model).to_string();
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out.into()
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

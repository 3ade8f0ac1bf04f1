//! The admin listener: liveness and readiness for load balancers.
//! Metrics, stats and logs join it with the analytics pipeline.

use std::sync::Arc;

use crate::{
    analytics::{self, Analytics, exposition},
    cache::{Cache, CacheKey, Purge},
    error::{GatewayError, json_response},
    http::respond::{Head, To},
    service::{ClientIo, Outcome, Request, Service, respond_error},
    util::shutdown::Shutdown,
};

pub struct AdminCtx {
    /// The listener's own address: a `Host` naming it is ours.
    pub listen: std::net::SocketAddr,
    pub shutdown: Arc<Shutdown>,
    pub analytics: Option<Analytics>,
    pub cache: Option<Arc<Cache>>,
    /// `[auth] admin_token_env`: when set, every route but /healthz and
    /// /readyz needs `Authorization: Bearer TOKEN`.
    pub token: Option<Arc<str>>,
    pub limiter: Option<Arc<crate::ratelimit::Limiter>>,
    /// Routes and upstream health, with the providers' names.
    pub router: Option<(Arc<crate::routing::Router>, Arc<[String]>)>,
}

impl Service for AdminCtx {
    async fn handle(&self, req: Request, io: &mut ClientIo, keep_alive: bool) -> Outcome {
        let (version, id, head) = (req.head.version(), req.id, req.head.is_head_method());
        match handle(self, req, io, keep_alive).await {
            Ok(outcome) => outcome,
            Err(e) if head => {
                // A HEAD request gets the error's head alone.
                let mut resp = e.response(version, Some(id.as_bytes()), !keep_alive);
                resp.truncate(resp.len() - e.body().len());
                send(io, resp, keep_alive).await.unwrap_or(Outcome::Close)
            }
            Err(e) => respond_error(io, &e, version, id, keep_alive).await.0,
        }
    }
}

async fn handle(a: &AdminCtx, req: Request, io: &mut ClientIo, keep_alive: bool) -> Result<Outcome, GatewayError> {
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    // The dashboard page itself holds nothing: it fetches /admin/stats,
    // which the token guards.
    let open = matches!(path, b"/healthz" | b"/readyz" | b"/dashboard");
    // Without a token, the listener is on loopback (config requires a token
    // elsewhere); a browser page can still reach it by DNS rebinding — a
    // name of the attacker's resolving to 127.0.0.1 — but its requests then
    // carry the attacker's name as Host.
    if a.token.is_none() && !host_is_ours(&req, a.listen) {
        return Err(GatewayError::AdminHostRefused);
    }
    if let Some(token) = &a.token
        && !open
        && !token_matches(&req, token)
    {
        return Err(GatewayError::AdminTokenRequired);
    }
    // What changes state takes a request no web page can send without a
    // CORS preflight (which this listener never answers): one with a token
    // or the `x-aigw-admin` header.
    let changes_state = !matches!(req.head.method(), b"GET" | b"HEAD");
    if changes_state && req.head.header("authorization").is_none() && req.head.header("x-aigw-admin").is_none() {
        return Err(GatewayError::AdminHeaderRequired);
    }
    let (status, body) = match (req.head.method(), path) {
        (b"GET" | b"HEAD", b"/healthz") => (200, r#"{"status":"ok"}"#.to_string()),
        // A draining gateway still finishes its requests but should get no
        // new ones: the load balancer sees 503 and moves on.
        (b"GET" | b"HEAD", b"/readyz") if a.shutdown.is_triggered() => (503, r#"{"status":"draining"}"#.to_string()),
        (b"GET" | b"HEAD", b"/readyz") => (200, r#"{"status":"ready"}"#.to_string()),
        (b"GET", b"/metrics") if a.analytics.is_some() => {
            let body =
                a.analytics.as_ref().map(|an| metrics(an, a.cache.as_ref(), a.limiter.as_ref())).unwrap_or_default();
            return send(
                io,
                body_response(b"text/plain; version=0.0.4; charset=utf-8", &body, &req, keep_alive),
                keep_alive,
            )
            .await;
        }
        (b"GET", b"/dashboard") => {
            let resp = body_response(b"text/html; charset=utf-8", DASHBOARD, &req, keep_alive);
            return send(io, resp, keep_alive).await;
        }
        (b"GET", b"/admin/stats") if a.analytics.is_some() => {
            (200, a.analytics.as_ref().map(|an| stats(an, a)).unwrap_or_default())
        }
        (b"GET", b"/admin/logs") if a.analytics.is_some() => {
            (200, a.analytics.as_ref().map(|an| logs(an, query(target))).unwrap_or_default())
        }
        (b"POST" | b"DELETE", b"/admin/cache/purge") => match &a.cache {
            Some(cache) => (200, purge(cache, target).await?),
            None => return Err(GatewayError::AdminNotFound { what: "no cache" }),
        },
        _ => return Err(GatewayError::AdminNotFound { what: "no such admin endpoint" }),
    };
    let mut resp = json_response(status, &body, req.head.version(), Some(req.id.as_bytes()), !keep_alive);
    if req.head.is_head_method() {
        resp.truncate(resp.len() - body.len());
    }
    send(io, resp, keep_alive).await
}

/// Whether the request's `Host` names this listener: a loopback name or
/// address, or the address it listens on.
fn host_is_ours(req: &Request, listen: std::net::SocketAddr) -> bool {
    let Some(host) = req.head.header("host").and_then(|h| std::str::from_utf8(h).ok()) else {
        // HTTP/1.0 without Host: not a browser's request.
        return req.head.version() == crate::http::Version::Http10;
    };
    // Strip the port: `name:port`, `[v6]:port`, `[v6]`.
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback() || ip == listen.ip())
}

/// The admin token, compared in constant time.
fn token_matches(req: &Request, token: &str) -> bool {
    let presented = req.head.header("authorization").and_then(|v| v.strip_prefix(b"Bearer "));
    presented.is_some_and(|p| crate::auth::constant_time_eq(p, token.as_bytes()))
}

async fn send(io: &mut ClientIo, resp: bytes::BytesMut, keep_alive: bool) -> Result<Outcome, GatewayError> {
    Ok(if io.send(resp).await && keep_alive { Outcome::Reusable } else { Outcome::Close })
}

/// `/dashboard`: one static page that reads /admin/stats every 2 s.
const DASHBOARD: &str = include_str!("dashboard.html");

/// A 200 with a body of this content type.
fn body_response(content_type: &[u8], body: &str, req: &Request, keep_alive: bool) -> bytes::BytesMut {
    let to = To { version: req.head.version(), keep_alive, request_id: Some(req.id.as_bytes()) };
    Head::with_body(200, content_type, body.as_bytes(), &[], to)
}

fn metrics(a: &Analytics, cache: Option<&Arc<Cache>>, limiter: Option<&Arc<crate::ratelimit::Limiter>>) -> String {
    let log_total = a.recent.lock().map_or(0, |r| r.total);
    let gauges = cache_gauges(cache);
    let mut text = {
        let state = a.state.lock().unwrap_or_else(|p| p.into_inner());
        exposition::metrics(&state, log_total, &gauges)
    };
    if let Some(l) = limiter {
        exposition::limit_metrics(&mut text, l.table.len(), l.leases.as_ref().map(|x| x.errors()));
    }
    text
}

fn stats(a: &Analytics, ctx: &AdminCtx) -> String {
    let gauges = cache_gauges(ctx.cache.as_ref());
    let targets =
        ctx.router.as_ref().map_or(serde_json::Value::Null, |(r, names)| r.stats(names, crate::util::now_unix_ms()));
    let state = a.state.lock().unwrap_or_else(|p| p.into_inner());
    exposition::stats(&state, &gauges, targets)
}

fn cache_gauges(cache: Option<&Arc<Cache>>) -> exposition::CacheGauges {
    let Some(c) = cache else { return exposition::CacheGauges::default() };
    let (bytes, entries, evictions) = c.store_stats().unwrap_or_default();
    exposition::CacheGauges {
        backend: if c.store_stats().is_some() { "memory" } else { "redis" },
        bytes,
        entries,
        evictions,
        redis_errors: c.redis_errors(),
    }
}

/// `/admin/cache/purge`: everything, `?key=HEX` (as logged in
/// `cache_key`), or `?provider=NAME`.
async fn purge(cache: &Cache, target: &[u8]) -> Result<String, GatewayError> {
    let q = target.iter().position(|&b| b == b'?').map(|i| percent_decode(&target[i + 1..])).unwrap_or_default();
    let mut key = None;
    let mut provider = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("key", v)) => key = Some(v.to_string()),
            Some(("provider", v)) => provider = Some(v.to_string()),
            _ => return Err(GatewayError::AdminBadQuery { why: "purge takes key=HEX or provider=NAME" }),
        }
    }
    let what = match (&key, &provider) {
        (None, None) => Purge::All,
        (Some(k), None) => match CacheKey::parse_hex(k) {
            Some(k) => Purge::Key(k),
            None => return Err(GatewayError::AdminBadQuery { why: "key must be 32 hex digits" }),
        },
        (None, Some(p)) => Purge::Provider(p),
        (Some(_), Some(_)) => return Err(GatewayError::AdminBadQuery { why: "give key or provider, not both" }),
    };
    match cache.purge(what).await {
        Ok(n) => Ok(serde_json::json!({ "purged": n }).to_string()),
        Err(detail) => Err(GatewayError::CacheBackend { detail }),
    }
}

struct LogQuery {
    limit: usize,
    provider: Option<String>,
    model: Option<String>,
    status: Option<u16>,
}

/// `?limit=N&provider=P&model=M&status=S`, percent-decoded (model names
/// such as `meta-llama/Llama-3.1-8B` arrive as `meta-llama%2FLlama-3.1-8B`).
fn query(target: &[u8]) -> LogQuery {
    let mut q = LogQuery { limit: 100, provider: None, model: None, status: None };
    let Some(i) = target.iter().position(|&b| b == b'?') else { return q };
    for pair in target[i + 1..].split(|&b| b == b'&') {
        let pair = percent_decode(pair);
        let (k, v) = pair.split_once('=').unwrap_or((&pair, ""));
        match k {
            "limit" => q.limit = v.parse().unwrap_or(100).min(analytics::log::RECENT),
            "provider" => q.provider = Some(v.to_string()),
            "model" => q.model = Some(v.to_string()),
            "status" => q.status = v.parse().ok(),
            _ => {}
        }
    }
    q
}

/// `%XX` escapes and `+` as space; invalid escapes are kept as written.
fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match s[i] {
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn logs(a: &Analytics, q: LogQuery) -> String {
    let recent = a.recent.lock().unwrap_or_else(|p| p.into_inner());
    exposition::logs(&recent, q.limit, q.provider.as_deref(), q.model.as_deref(), q.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_query_is_percent_decoded() {
        let q = query(b"/admin/logs?limit=7&model=meta-llama%2FLlama-3.1-8B&provider=vllm&status=200&x=%zz");
        assert_eq!(q.limit, 7);
        assert_eq!(q.model.as_deref(), Some("meta-llama/Llama-3.1-8B"));
        assert_eq!(q.provider.as_deref(), Some("vllm"));
        assert_eq!(q.status, Some(200));
        assert_eq!(percent_decode(b"a+b%20c%"), "a b c%");
        assert_eq!(query(b"/admin/logs").limit, 100);
    }
}

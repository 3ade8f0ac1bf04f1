//! The admin listener: liveness and readiness for load balancers.
//! Metrics, stats and logs join it with the analytics pipeline.

use std::sync::Arc;

use crate::{
    analytics::{self, Analytics, exposition},
    cache::{Cache, CacheKey, Purge},
    error::{GatewayError, json_error, json_response},
    http::write,
    server::{
        conn::{ClientIo, Outcome, Request},
        shutdown::Shutdown,
    },
};

pub struct AdminCtx {
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

pub async fn handle(a: &AdminCtx, req: Request, io: &mut ClientIo, keep_alive: bool) -> Result<Outcome, GatewayError> {
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    // The dashboard page itself holds nothing: it fetches /admin/stats,
    // which the token guards.
    let open = matches!(path, b"/healthz" | b"/readyz" | b"/dashboard");
    if let Some(token) = &a.token
        && !open
        && !token_matches(&req, token)
    {
        let body = json_error(
            "admin token required: Authorization: Bearer TOKEN",
            "invalid_request_error",
            "invalid_admin_token",
        );
        let resp = crate::error::json_response_with(
            401,
            &body,
            req.head.version(),
            Some(req.id.as_bytes()),
            !keep_alive,
            b"WWW-Authenticate: Bearer\r\n",
        );
        return send(io, resp, keep_alive).await;
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
            Some(cache) => purge(cache, target).await,
            None => (404, json_error("no cache", "invalid_request_error", "not_found")),
        },
        _ => (404, json_error("no such admin endpoint", "invalid_request_error", "not_found")),
    };
    let mut resp = json_response(status, &body, req.head.version(), Some(req.id.as_bytes()), !keep_alive);
    if req.head.is_head_method() {
        resp.truncate(resp.len() - body.len());
    }
    send(io, resp, keep_alive).await
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
    let mut out = bytes::BytesMut::with_capacity(body.len() + 200);
    write::status_line(&mut out, req.head.version(), 200, b"");
    write::header(&mut out, b"Content-Type", content_type);
    write::header_u64(&mut out, b"Content-Length", body.len() as u64);
    if !keep_alive {
        write::header(&mut out, b"Connection", b"close");
    }
    write::end_head(&mut out);
    out.extend_from_slice(body.as_bytes());
    out
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
    let targets = ctx
        .router
        .as_ref()
        .map_or(serde_json::Value::Null, |(r, names)| r.stats(names, crate::cache::entry::now_unix_ms()));
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
async fn purge(cache: &Cache, target: &[u8]) -> (u16, String) {
    let q = target.iter().position(|&b| b == b'?').map(|i| percent_decode(&target[i + 1..])).unwrap_or_default();
    let mut key = None;
    let mut provider = None;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("key", v)) => key = Some(v.to_string()),
            Some(("provider", v)) => provider = Some(v.to_string()),
            _ => {
                return (400, json_error("purge takes key=HEX or provider=NAME", "invalid_request_error", "bad_query"));
            }
        }
    }
    let what = match (&key, &provider) {
        (None, None) => Purge::All,
        (Some(k), None) => match CacheKey::parse_hex(k) {
            Some(k) => Purge::Key(k),
            None => {
                return (400, json_error("key must be 32 hex digits", "invalid_request_error", "bad_query"));
            }
        },
        (None, Some(p)) => Purge::Provider(p),
        (Some(_), Some(_)) => {
            return (400, json_error("give key or provider, not both", "invalid_request_error", "bad_query"));
        }
    };
    match cache.purge(what).await {
        Ok(n) => (200, serde_json::json!({ "purged": n }).to_string()),
        Err(e) => (502, json_error(&e, "api_error", "cache_backend_error")),
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

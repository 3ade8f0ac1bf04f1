//! `[cache]`: the response cache's policy and store.

use std::{net::SocketAddr, time::Duration};

use super::{
    Errors,
    raw::{RawCache, RawCacheBackend, RawCacheScope},
};

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// TTL for providers without their own `cache_ttl`; zero: caching only
    /// when a request asks for it with `x-aigw-cache-ttl`.
    pub default_ttl: Duration,
    /// Bound on what the in-process store holds (bodies, headers, overhead).
    pub max_bytes: u64,
    /// Larger responses are relayed but never stored.
    pub max_entry_bytes: usize,
    pub scope: CacheScope,
    /// Request headers whose values are part of the key (lower case).
    pub vary_headers: Vec<String>,
    /// Concurrent identical cacheable requests share one upstream request.
    pub coalesce: bool,
    pub backend: CacheBackend,
}

/// Whose requests may hit each other's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Entries belong to the client identity that made them (its gateway
    /// key, or the credential it sent when the gateway has no keys).
    Key,
    /// One cache for every client.
    Shared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    Memory,
    Redis(RedisConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub addr: SocketAddr,
    /// `host:port` as written, for messages.
    pub display: String,
    pub password: Option<String>,
    pub db: u32,
    pub prefix: String,
    /// A lookup or store slower than this counts as a miss (or is dropped).
    pub timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            default_ttl: Duration::ZERO,
            max_bytes: 256 << 20,
            max_entry_bytes: 4 << 20,
            scope: CacheScope::Key,
            vary_headers: DEFAULT_VARY.iter().map(|s| (*s).to_string()).collect(),
            coalesce: true,
            backend: CacheBackend::Memory,
        }
    }
}

/// Headers that change what a provider answers to the same body.
const DEFAULT_VARY: &[&str] = &["anthropic-version", "anthropic-beta", "openai-organization", "openai-project"];

pub(super) fn validate(errors: &mut Errors, raw: RawCache) -> CacheConfig {
    let d = CacheConfig::default();
    let cfg = CacheConfig {
        default_ttl: raw.default_ttl.unwrap_or(d.default_ttl),
        max_bytes: raw.max_bytes.unwrap_or(d.max_bytes),
        max_entry_bytes: raw.max_entry_bytes.unwrap_or(d.max_entry_bytes),
        scope: match raw.scope {
            None | Some(RawCacheScope::Key) => CacheScope::Key,
            Some(RawCacheScope::Shared) => CacheScope::Shared,
        },
        vary_headers: raw
            .vary_headers
            .map_or(d.vary_headers, |v| v.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
        coalesce: raw.coalesce.unwrap_or(true),
        backend: CacheBackend::Memory,
    };
    if cfg.max_bytes < 1 << 20 {
        errors.push("cache.max_bytes", "must be at least 1048576 (1 MiB)");
    }
    // The store is sharded; an entry must fit well inside one shard.
    if cfg.max_entry_bytes == 0 || cfg.max_entry_bytes as u64 > cfg.max_bytes / 64 {
        errors.push("cache.max_entry_bytes", "must be between 1 and max_bytes / 64");
    }
    for h in &cfg.vary_headers {
        if h.is_empty() || !h.bytes().all(super::is_tchar) {
            errors.push("cache.vary_headers", format!("`{h}` is not a header name"));
        }
    }
    let redis_keys = raw.redis_url.is_some() || raw.redis_prefix.is_some() || raw.redis_timeout.is_some();
    let backend = match raw.backend {
        None | Some(RawCacheBackend::Memory) => {
            if redis_keys {
                errors.push("cache.backend", "redis_* keys are set but backend is not \"redis\"");
            }
            CacheBackend::Memory
        }
        Some(RawCacheBackend::Redis) => match raw.redis_url.as_deref().map(parse_redis_url) {
            None => {
                errors.push("cache.redis_url", "required when backend = \"redis\"");
                CacheBackend::Memory
            }
            Some(Err(e)) => {
                errors.push("cache.redis_url", e);
                CacheBackend::Memory
            }
            Some(Ok((addr, display, password, db))) => {
                let timeout = raw.redis_timeout.unwrap_or(Duration::from_millis(100));
                if timeout.is_zero() {
                    errors.push("cache.redis_timeout", "must be greater than 0");
                }
                CacheBackend::Redis(RedisConfig {
                    addr,
                    display,
                    password,
                    db,
                    prefix: raw.redis_prefix.unwrap_or_else(|| "aigw:cache:".into()),
                    timeout,
                })
            }
        },
    };
    CacheConfig { backend, ..cfg }
}

type ParsedRedisUrl = (SocketAddr, String, Option<String>, u32);

/// `redis://[:password@]host[:port][/db]`. The host is resolved once, at
/// start.
pub fn parse_redis_url(url: &str) -> Result<ParsedRedisUrl, String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| format!("`{url}`: expected redis://host:port[/db]"))?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
    let (hostport, db) = match rest.split_once('/') {
        Some((h, "")) => (h, 0),
        Some((h, db)) => (h, db.parse().map_err(|_| format!("`{db}` is not a database number"))?),
        None => (rest, 0),
    };
    let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| format!("`{with_port}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{with_port}` resolves to no address"))?;
    Ok((addr, with_port, password, db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        let (addr, display, pw, db) = parse_redis_url("redis://127.0.0.1").unwrap();
        assert_eq!((addr.port(), display.as_str(), pw, db), (6379, "127.0.0.1:6379", None, 0));
        let (addr, _, pw, db) = parse_redis_url("redis://:s3cret@127.0.0.1:7000/3").unwrap();
        assert_eq!((addr.port(), pw.as_deref(), db), (7000, Some("s3cret"), 3));
        assert!(parse_redis_url("http://127.0.0.1").is_err());
        assert!(parse_redis_url("redis://127.0.0.1:1/x").is_err());
    }
}

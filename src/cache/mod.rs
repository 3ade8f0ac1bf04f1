//! The response cache, shared by every worker.
//!
//! - `key.rs`: 128-bit keys over provider, path, body, scope and vary
//!   headers.
//! - `entry.rs`: a stored response (headers + body as `Bytes`).
//! - `memory.rs`: the in-process store (quick_cache, bounded by bytes).
//! - `redis.rs`: the optional Redis store (on `crate::redis`), so that
//!   several hosts share hits.
//! - `flight.rs`: coalescing of concurrent identical requests, with the
//!   leader's stream fanned out to its followers as it arrives.
//!
//! Policy lives here: which requests are cacheable, for how long, and the
//! `x-aigw-cache-*` headers.

pub mod entry;
pub mod flight;
pub mod key;
pub mod memory;
pub mod redis;

use std::{sync::Arc, time::Duration};

pub use entry::Entry;
pub use key::CacheKey;

use bytes::Bytes;

use self::{
    flight::{FlightHead, Flights, Leader},
    memory::MemoryStore,
};
use crate::{
    config::{CacheBackend, CacheConfig, CacheScope},
    error::GatewayError,
    http::request::RequestHead,
};

/// `x-aigw-cache-status`, and the `cache` label of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Caching applies to the route, but this request skipped it.
    Bypass,
    /// An entry was found but its TTL had passed; the answer is fresh.
    Expired,
}

impl CacheStatus {
    /// The `x-aigw-cache-status` line.
    pub fn line(self) -> &'static [u8] {
        match self {
            CacheStatus::Hit => b"x-aigw-cache-status: HIT\r\n",
            CacheStatus::Miss => b"x-aigw-cache-status: MISS\r\n",
            CacheStatus::Bypass => b"x-aigw-cache-status: BYPASS\r\n",
            CacheStatus::Expired => b"x-aigw-cache-status: EXPIRED\r\n",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Expired => "expired",
        }
    }
}

/// What the cache does for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Caching is off for this request's route: no cache header.
    Off,
    Bypass,
    Use {
        key: CacheKey,
        ttl: Duration,
    },
}

/// The longest TTL a request may ask for.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// `x-aigw-cache-key` values longer than this are refused.
const MAX_CUSTOM_KEY: usize = 512;

/// What a request brings to the plan.
pub struct PlanInput<'a> {
    pub head: &'a RequestHead,
    pub provider: &'a str,
    /// The provider's `cache_ttl`, if set.
    pub provider_ttl: Option<Duration>,
    /// Path and query under the provider.
    pub path: &'a [u8],
    /// The body as it will be forwarded.
    pub body: &'a [u8],
    pub stripped: bool,
    /// The gateway key's id, when the client presented one: it owns the
    /// client's entries under `scope = "key"`.
    pub key_id: Option<&'a str>,
}

/// Lookup result.
pub enum Lookup {
    Hit(Arc<Entry>),
    Expired,
    Miss,
}

pub struct Cache {
    pub config: CacheConfig,
    memory: Option<MemoryStore>,
    redis: Option<redis::RedisStore>,
    pub flights: Arc<Flights>,
}

impl Cache {
    pub fn new(config: CacheConfig) -> Cache {
        let (memory, redis) = match &config.backend {
            CacheBackend::Memory => (Some(MemoryStore::new(config.max_bytes)), None),
            CacheBackend::Redis(r) => (None, Some(redis::RedisStore::new(r.clone()))),
        };
        Cache { config, memory, redis, flights: Flights::new() }
    }

    /// Decides what the cache does for a request, from config and the
    /// `x-aigw-*` request headers (malformed ones are refused, not ignored).
    pub fn plan(&self, p: &PlanInput<'_>) -> Result<Plan, GatewayError> {
        let head = p.head;
        let skip = match head.header("x-aigw-skip-cache") {
            None => false,
            Some(v) => parse_bool(v).ok_or_else(|| invalid("x-aigw-skip-cache", "expected true or false"))?,
        };
        let asked_ttl = match head.header("x-aigw-cache-ttl") {
            None => None,
            Some(v) => Some(parse_ttl(v)?),
        };
        let custom = head.header("x-aigw-cache-key");
        if let Some(k) = custom
            && (k.is_empty() || k.len() > MAX_CUSTOM_KEY)
        {
            return Err(invalid("x-aigw-cache-key", "expected 1 to 512 bytes"));
        }
        let configured = p.provider_ttl.unwrap_or(self.config.default_ttl);
        let ttl = asked_ttl.unwrap_or(configured);
        // Caching applies to this request's route when config turns it on
        // or the request asks for it; only then does it get a status.
        let applies = !configured.is_zero() || asked_ttl.is_some() || skip || custom.is_some();
        if !applies {
            return Ok(Plan::Off);
        }
        if skip || ttl.is_zero() || !matches!(head.method(), b"POST" | b"GET") {
            return Ok(Plan::Bypass);
        }
        let scope = match self.config.scope {
            CacheScope::Shared => None,
            CacheScope::Key => match p.key_id {
                Some(id) => Some(key::identity(format!("gateway-key:{id}").as_bytes())),
                None => client_identity(head),
            },
        };
        let key = match custom {
            Some(k) => CacheKey::custom(p.provider, scope, k),
            None => {
                let vary: Vec<(&str, Option<&[u8]>)> =
                    self.config.vary_headers.iter().map(|h| (h.as_str(), head.header(h))).collect();
                CacheKey::derive(&key::KeyParts {
                    provider: p.provider,
                    method: head.method(),
                    path: p.path,
                    body: p.body,
                    scope,
                    vary: &vary,
                    stripped: p.stripped,
                })
            }
        };
        Ok(Plan::Use { key, ttl })
    }

    /// Looks `key` up in the configured store. A Redis failure or timeout
    /// is a miss: the cache never fails a request.
    pub async fn get(&self, provider: &str, key: CacheKey) -> Lookup {
        let found = match (&self.memory, &self.redis) {
            (Some(m), _) => m.get(key),
            (None, Some(r)) => r.get(provider, key).await.map(Arc::new),
            (None, None) => None,
        };
        match found {
            Some(e) if e.expired(crate::util::now_unix_ms()) => Lookup::Expired,
            Some(e) => Lookup::Hit(e),
            None => Lookup::Miss,
        }
    }

    /// Stores an entry. Redis writes go out on their own task: the client
    /// already has its answer and must not wait for them.
    pub fn put(&self, key: CacheKey, entry: Entry) {
        if entry.body.len() > self.config.max_entry_bytes {
            return;
        }
        match (&self.memory, &self.redis) {
            (Some(m), _) => m.insert(key, Arc::new(entry)),
            (None, Some(r)) => r.put(key, entry),
            (None, None) => {}
        }
    }

    /// Purges everything, one key, or one provider's entries; returns how
    /// many entries went.
    pub async fn purge(&self, what: Purge<'_>) -> Result<u64, String> {
        match (&self.memory, &self.redis) {
            (Some(m), _) => Ok(match what {
                Purge::All => m.purge(None),
                Purge::Provider(p) => m.purge(Some(p)),
                Purge::Key(k) => u64::from(m.remove(k)),
            }),
            (None, Some(r)) => r.purge(what).await,
            (None, None) => Ok(0),
        }
    }

    /// (bytes held, entries, evictions) of the in-process store; None for
    /// Redis, which keeps its own.
    pub fn store_stats(&self) -> Option<(u64, u64, u64)> {
        self.memory.as_ref().map(|m| (m.bytes(), m.entries(), m.evictions()))
    }

    pub fn redis_errors(&self) -> u64 {
        self.redis.as_ref().map_or(0, redis::RedisStore::errors)
    }
}

/// Whether an answer may be stored and shared with identical requests:
/// complete 2xx answers with a body (a 206 is only part of one).
pub fn storable(status: u16, has_body: bool) -> bool {
    (200..300).contains(&status) && status != 206 && has_body
}

/// A cacheable miss being relayed: the leader of its flight, and where the
/// answer goes once complete.
pub struct Fill {
    pub leader: Leader,
    pub key: CacheKey,
    pub ttl: Duration,
}

impl Fill {
    /// The answer's head arrived: followers get it, and the fill goes on,
    /// if the answer is `storable`; otherwise they are released to go
    /// upstream alone and nothing is stored.
    pub fn start(mut self, head: FlightHead, has_body: bool) -> Option<Fill> {
        if storable(head.status, has_body) {
            self.leader.head(head);
            Some(self)
        } else {
            self.leader.release();
            None
        }
    }

    /// The answer was relayed whole: followers get its end, and the entry
    /// is stored (`usage` only when the provider reported it exactly) if
    /// `store` — a stream that ended without its format's last event, or
    /// with an error event, reached the followers but is not kept.
    pub fn complete(self, cache: &Cache, entry: Stored, store: bool) {
        let Fill { leader, key, ttl } = self;
        if let Some(body) = leader.finish(entry.usage)
            && store
        {
            let expires_unix_ms =
                crate::util::now_unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            let Stored { status, headers, stream, provider, usage } = entry;
            cache.put(key, Entry { status, headers, body, stream, expires_unix_ms, provider, usage });
        }
    }
}

/// What an entry keeps besides its body (which the flight collected).
pub struct Stored {
    pub status: u16,
    pub headers: Bytes,
    pub stream: bool,
    pub provider: Arc<str>,
    pub usage: Option<crate::tap::Usage>,
}

#[derive(Debug, Clone, Copy)]
pub enum Purge<'a> {
    All,
    Key(CacheKey),
    Provider(&'a str),
}

fn invalid(name: &'static str, why: &str) -> GatewayError {
    GatewayError::InvalidHeader { name, why: why.to_string() }
}

fn parse_bool(v: &[u8]) -> Option<bool> {
    match v.to_ascii_lowercase().as_slice() {
        b"true" | b"1" | b"yes" => Some(true),
        b"false" | b"0" | b"no" => Some(false),
        _ => None,
    }
}

/// `x-aigw-cache-ttl: SECONDS`, 0 to 30 days.
fn parse_ttl(v: &[u8]) -> Result<Duration, GatewayError> {
    let bad = || invalid("x-aigw-cache-ttl", "expected whole seconds, 0 to 2592000");
    let s = std::str::from_utf8(v).map_err(|_| bad())?;
    let n: u64 = s.trim().parse().map_err(|_| bad())?;
    let ttl = Duration::from_secs(n);
    if ttl > MAX_TTL { Err(bad()) } else { Ok(ttl) }
}

/// Credentials a client may present; their hash scopes its entries while
/// the gateway has no keys of its own.
const CREDENTIALS: &[&str] = &["authorization", "x-api-key", "x-goog-api-key", "api-key"];

/// The identity that owns a client's entries under `scope = "key"`: a hash
/// of the credential it sent (None: anonymous clients share one scope).
fn client_identity(head: &RequestHead) -> Option<u128> {
    CREDENTIALS.iter().find_map(|h| head.header(h)).map(key::identity)
}

#[cfg(test)]
mod tests;

//! The upstream side: what the gateway knows about each provider (address,
//! TLS, credentials), per-worker keep-alive pools, and one request/response
//! exchange with stale-connection retry.

pub mod exchange;
pub mod io;
pub mod pool;
pub mod resolve;
pub mod tls;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
};

use bytes::{Bytes, BytesMut};

use crate::{
    config::{PoolConfig, Provider, ProviderKind, UpstreamTimeouts, UpstreamUrl},
    http::write,
};

/// One provider as the data path sees it. Built once at start, shared by
/// every worker read-only (the address list is refreshed off the hot path).
pub struct Upstream {
    pub index: usize,
    pub name: String,
    /// The name as the analytics label (shared, never copied per request).
    pub label: std::sync::Arc<str>,
    pub kind: ProviderKind,
    pub url: UpstreamUrl,
    pub timeouts: UpstreamTimeouts,
    pub pool: PoolConfig,
    pub passthrough_auth: bool,
    pub inject_include_usage: bool,
    /// Pre-rendered `Name: value\r\n` lines the gateway adds to every request.
    pub injected: Bytes,
    /// Lower-case names in `injected`: a client header of the same name is
    /// replaced, not duplicated.
    pub injected_names: Vec<Vec<u8>>,
    /// `anthropic-version` to add when the client did not send one.
    pub default_anthropic_version: Option<Bytes>,
    /// Why requests cannot be served (e.g. the key variable is unset).
    pub unavailable: Option<String>,
    pub tls: Option<tls::TlsTarget>,
    /// `cache_ttl`: this provider's default cache TTL, if set.
    pub cache_ttl: Option<std::time::Duration>,
    /// Attempts on this provider alone (pass-through).
    pub max_attempts: u32,
    /// `retry_unanswered`: a written POST without an answer may go again.
    pub retry_unanswered: bool,
    /// `models`, for `GET /v1/models`.
    pub models: Vec<String>,
    /// `guardrails`: policies for requests to this provider.
    pub guardrails: Vec<String>,
    addrs: RwLock<Arc<[SocketAddr]>>,
}

impl Upstream {
    /// `url` is the provider's base URL, or the embedded mock's address.
    pub fn new(index: usize, p: &Provider, url: UpstreamUrl) -> Result<Upstream, String> {
        let key = p.api_key_env.as_ref().map(|var| (var, std::env::var(var).ok().filter(|k| !k.is_empty())));
        let mut unavailable = None;
        let mut lines = BytesMut::new();
        let mut names = Vec::new();
        let mut add = |name: &str, value: &[u8]| {
            write::header(&mut lines, name.as_bytes(), value);
            names.push(name.to_ascii_lowercase().into_bytes());
        };
        if !p.passthrough_auth {
            match &key {
                Some((_, Some(k))) => {
                    if k.bytes().any(|b| b < b' ' || b == 0x7f) {
                        return Err(format!("provider {}: the API key has control characters", p.name));
                    }
                    let (name, value) = crate::providers::key_header(p.kind, k);
                    add(name, value.as_bytes());
                }
                Some((var, None)) => {
                    unavailable = Some(format!("no API key: set the environment variable {var}"));
                }
                None => {}
            }
        }
        for (name, value) in &p.headers {
            add(name, value.as_bytes());
        }
        let default_anthropic_version =
            (p.kind == ProviderKind::Anthropic).then(|| Bytes::from(p.anthropic_version.clone().into_bytes()));
        let tls = if url.is_tls() {
            Some(
                tls::TlsTarget::new(&url.host, p.tls_ca_file.as_deref())
                    .map_err(|e| format!("provider {}: {e}", p.name))?,
            )
        } else {
            None
        };
        let addrs: Arc<[SocketAddr]> = match url.host.parse::<IpAddr>() {
            Ok(ip) => Arc::new([SocketAddr::new(ip, url.port)]),
            Err(_) if url.host == "localhost" => resolve::lookup(&url.host, url.port).unwrap_or_default().into(),
            // Looked up by the resolver thread, so startup never waits on DNS.
            Err(_) => Arc::new([]),
        };
        Ok(Upstream {
            index,
            name: p.name.clone(),
            label: std::sync::Arc::from(p.name.as_str()),
            kind: p.kind,
            timeouts: p.timeouts,
            pool: p.pool,
            passthrough_auth: p.passthrough_auth,
            inject_include_usage: p.inject_include_usage,
            injected: lines.freeze(),
            injected_names: names,
            default_anthropic_version,
            unavailable,
            tls,
            cache_ttl: p.cache_ttl,
            max_attempts: p.max_attempts,
            retry_unanswered: p.retry_unanswered,
            models: p.models.clone(),
            guardrails: p.guardrails.clone(),
            addrs: RwLock::new(addrs),
            url,
        })
    }

    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs.read().map_or_else(|p| p.into_inner().clone(), |a| a.clone())
    }

    pub fn set_addrs(&self, addrs: Vec<SocketAddr>) {
        let mut guard = self.addrs.write().unwrap_or_else(|p| p.into_inner());
        *guard = addrs.into();
    }

    pub fn needs_dns(&self) -> bool {
        self.url.host.parse::<IpAddr>().is_err()
    }
}

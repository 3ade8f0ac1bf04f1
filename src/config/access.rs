//! `[auth]` and `[[rate_limits]]`: who may call, and how much.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use super::{
    Errors, Provider,
    raw::{RawAuth, RawAuthMode, RawRateLimit, RawUnit},
};

#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The admin token's environment variable; required when the admin
    /// listener is not on loopback.
    pub admin_token_env: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can reach the listener may call.
    #[default]
    None,
    /// Clients present a gateway key from this file (`aigw keys`).
    Keys { file: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    pub name: String,
    pub key: LimitKey,
    pub unit: Unit,
    /// `limit` units per `window`, sustained.
    pub limit: u64,
    pub window: Duration,
    /// Units that may be spent at once (default: `limit`).
    pub burst: u64,
    pub scope: Scope,
}

/// What a rule counts per.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Ip,
    /// The gateway key (auth mode "keys").
    Key,
    /// A request header's value (lower-case name); requests without it
    /// share one bucket.
    Header(String),
    Provider,
    Model,
    /// The route: today the first path segment (the provider name).
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    /// Input + output tokens the tap counted, debited after the response.
    Tokens,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

/// `match = { provider, route, model }`: the requests a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub provider: Option<String>,
    pub route: Option<String>,
    pub model: Option<String>,
}

/// An address range, for `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.trim().parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{text}`: bad prefix"))?
            }
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

pub(super) fn validate_auth(errors: &mut Errors, raw: RawAuth, admin_listen: Option<SocketAddr>) -> AuthConfig {
    let mode = match (raw.mode, raw.keys_file) {
        (None | Some(RawAuthMode::None), None) => AuthMode::None,
        (None | Some(RawAuthMode::None), Some(_)) => {
            errors.push("auth.keys_file", "set, but auth.mode is not \"keys\"");
            AuthMode::None
        }
        (Some(RawAuthMode::Keys), Some(file)) => AuthMode::Keys { file },
        (Some(RawAuthMode::Keys), None) => {
            errors.push("auth.keys_file", "required when mode = \"keys\" (create one with `aigw keys create`)");
            AuthMode::None
        }
    };
    if let Some(var) = &raw.admin_token_env
        && (var.is_empty() || var.contains('=') || var.contains('\0'))
    {
        errors.push("auth.admin_token_env", "must be an environment variable name");
    }
    if let Some(addr) = admin_listen
        && !addr.ip().is_loopback()
    {
        let token = raw.admin_token_env.as_deref().and_then(|v| std::env::var(v).ok()).filter(|t| !t.is_empty());
        if token.is_none() {
            errors.push(
                "server.admin_listen",
                format!(
                    "{addr} is not a loopback address: the admin listener needs a token \
                     ([auth] admin_token_env naming a set, non-empty variable)"
                ),
            );
        }
    }
    AuthConfig { mode, admin_token_env: raw.admin_token_env }
}

pub(super) fn validate_rules(
    errors: &mut Errors,
    raw: Vec<RawRateLimit>,
    providers: &[Provider],
    auth: &AuthConfig,
) -> Vec<RateLimitRule> {
    let mut rules: Vec<RateLimitRule> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |k: &str| format!("rate_limits[{i}].{k}");
        let before = errors.0.len();
        if r.name.is_empty() || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            errors.push(at("name"), "letters, digits, '-', '_' and '.' only");
        } else if rules.iter().any(|x| x.name == r.name) {
            errors.push(at("name"), format!("`{}` is used by another rule", r.name));
        }
        let key = match r.key.as_str() {
            "ip" => LimitKey::Ip,
            "key" => LimitKey::Key,
            "provider" => LimitKey::Provider,
            "model" => LimitKey::Model,
            "route" => LimitKey::Route,
            h if h.starts_with("header:") && h.len() > 7 && h[7..].bytes().all(super::is_tchar) => {
                LimitKey::Header(h[7..].to_ascii_lowercase())
            }
            other => {
                errors.push(at("key"), format!("`{other}`: expected ip, key, header:NAME, provider, model or route"));
                LimitKey::Ip
            }
        };
        if key == LimitKey::Key && auth.mode == AuthMode::None {
            errors.push(at("key"), "\"key\" needs [auth] mode = \"keys\"");
        }
        let unit = match r.unit {
            None | Some(RawUnit::Requests) => Unit::Requests,
            Some(RawUnit::Tokens) => Unit::Tokens,
        };
        if r.limit == 0 {
            errors.push(at("limit"), "must be at least 1");
        }
        if r.window.is_zero() {
            errors.push(at("window"), "must be greater than 0");
        }
        let burst = r.burst.unwrap_or(r.limit);
        if burst == 0 {
            errors.push(at("burst"), "must be at least 1");
        }
        if let Some(p) = &r.scope.provider
            && !providers.iter().any(|x| &x.name == p)
        {
            errors.push(at("match.provider"), format!("no provider named `{p}`"));
        }
        if errors.0.len() == before {
            rules.push(RateLimitRule {
                name: r.name,
                key,
                unit,
                limit: r.limit,
                window: r.window,
                burst,
                scope: super::access::Scope { provider: r.scope.provider, route: r.scope.route, model: r.scope.model },
            });
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()) && !one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}

/// `[limit_store]`: where rate-limit and budget state lives.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LimitStore {
    /// In this process: exact across its workers.
    #[default]
    Memory,
    /// Shared by every host through Redis, spent locally from leases.
    Redis(LeaseConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    pub redis: super::RedisConfig,
    /// Share of a bucket's burst (or of a budget) one host takes at a time.
    pub lease_fraction: f64,
    /// Leased units unused this long go back to Redis.
    pub lease_ttl: Duration,
    /// Share of each limit a host may spend on its own while Redis is
    /// unreachable.
    pub outage_fraction: f64,
}

pub(super) fn validate_store(errors: &mut Errors, raw: super::raw::RawLimitStore) -> LimitStore {
    use super::raw::RawCacheBackend;
    let redis_keys = raw.redis_url.is_some() || raw.redis_prefix.is_some() || raw.redis_timeout.is_some();
    match raw.backend {
        None | Some(RawCacheBackend::Memory) => {
            if redis_keys || raw.lease_fraction.is_some() || raw.lease_ttl.is_some() || raw.outage_fraction.is_some() {
                errors.push("limit_store.backend", "redis and lease keys are set but backend is not \"redis\"");
            }
            LimitStore::Memory
        }
        Some(RawCacheBackend::Redis) => {
            let Some(url) = raw.redis_url else {
                errors.push("limit_store.redis_url", "required when backend = \"redis\"");
                return LimitStore::Memory;
            };
            let (addr, display, password, db) = match super::cache::parse_redis_url(&url) {
                Ok(p) => p,
                Err(e) => {
                    errors.push("limit_store.redis_url", e);
                    return LimitStore::Memory;
                }
            };
            let mut fraction = |key: &str, v: Option<f64>, d: f64| {
                let v = v.unwrap_or(d);
                if !(v > 0.0 && v <= 1.0) {
                    errors.push(format!("limit_store.{key}"), "must be above 0 and at most 1");
                }
                v
            };
            let lease_fraction = fraction("lease_fraction", raw.lease_fraction, 0.05);
            let outage_fraction = fraction("outage_fraction", raw.outage_fraction, 0.1);
            let timeout = raw.redis_timeout.unwrap_or(Duration::from_millis(50));
            let lease_ttl = raw.lease_ttl.unwrap_or(Duration::from_secs(1));
            if timeout.is_zero() {
                errors.push("limit_store.redis_timeout", "must be greater than 0");
            }
            if lease_ttl.is_zero() {
                errors.push("limit_store.lease_ttl", "must be greater than 0");
            }
            let redis = super::RedisConfig {
                addr,
                display,
                password,
                db,
                prefix: raw.redis_prefix.unwrap_or_else(|| "aigw:limits:".into()),
                timeout,
            };
            LimitStore::Redis(LeaseConfig { redis, lease_fraction, lease_ttl, outage_fraction })
        }
    }
}

//! Configuration: TOML → raw serde types (`raw.rs`) → a validated [`Config`]
//! that holds only checked values. Every rejection names its key path, and
//! all errors of a file are reported together (`aigw check-config`).

mod access;
mod cache;
pub mod duration;
pub mod guardrails;
mod raw;
pub mod routes;
pub mod url;

use std::{fmt, net::SocketAddr, num::NonZeroUsize, path::PathBuf, time::Duration};

pub use access::{AuthConfig, AuthMode, Cidr, LeaseConfig, LimitKey, LimitStore, RateLimitRule, Scope, Unit};
pub use cache::{CacheBackend, CacheConfig, CacheScope, RedisConfig};
pub use guardrails::{Action, CheckApi, Moderation, Policy};
use raw::{
    RawAuth, RawCache, RawIoDriver, RawKind, RawLimitStore, RawLog, RawPinning, RawProvider, RawRateLimit, RawRoute,
    RawServer, RawWorkers,
};
pub use routes::{Route, Strategy, Target};
pub use url::{Scheme, UpstreamUrl};

/// The config `aigw` runs with when given none.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    /// In file order; a provider's index is its id on the hot path.
    pub providers: Vec<Provider>,
    pub log: LogConfig,
    /// `[pricing."MODEL"]` overrides on top of the built-in price table.
    pub pricing: std::collections::BTreeMap<String, crate::pricing::Price>,
    pub cache: CacheConfig,
    pub auth: AuthConfig,
    pub rate_limits: Vec<RateLimitRule>,
    pub limit_store: LimitStore,
    pub routes: Vec<Route>,
    /// `[guardrails.NAME]` policies, in name order.
    pub guardrails: Vec<Policy>,
}

/// `[log]`: the request log file.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// No path: records are kept in memory for /admin/logs only.
    pub path: Option<PathBuf>,
    /// Rotate when the file would grow past this.
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` … `FILE.keep`).
    pub keep: usize,
    /// Keep the first `capture_max_bytes` of request and response bodies in
    /// each record (off by default: bodies hold prompts and answers).
    pub capture_bodies: bool,
    pub capture_max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub workers: Workers,
    pub pin_workers: Pinning,
    pub io_driver: IoDriver,
    /// Per-request accounting (metrics, stats, request log). Off only to
    /// measure what it costs.
    pub analytics: bool,
    pub limits: Limits,
    pub timeouts: ServerTimeouts,
    /// Peers whose X-Forwarded-For is believed (for `ip` rate limits).
    pub trusted_proxies: Vec<Cidr>,
    /// TLS on the data listener: certificate chain and key (PEM), reloaded
    /// when the files change.
    pub tls: Option<TlsFiles>,
    /// Guardrail policies every request gets.
    pub guardrails: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per core this process may run on.
    Auto,
    Fixed(NonZeroUsize),
}

impl Workers {
    pub fn resolve(self) -> usize {
        match self {
            Workers::Fixed(n) => n.get(),
            Workers::Auto => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

/// Whether workers are pinned to cores.
///
/// A pinned worker whose core is busy with another process waits for it
/// where an unpinned thread would move to an idle core: pinning pays only on
/// cores the gateway owns. `Auto` takes "the operator narrowed the cores
/// this process may use" (taskset, systemd `CPUAffinity=`, a cpuset) as
/// "these cores are ours" and pins only then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    Auto,
    On,
    Off,
}

impl Pinning {
    pub fn resolve(self) -> bool {
        match self {
            Pinning::On => true,
            Pinning::Off => false,
            Pinning::Auto => match (allowed_cpus(), online_cpus()) {
                (Some(allowed), Some(online)) => pins_by_default(allowed, online),
                _ => false,
            },
        }
    }
}

/// `Auto`'s rule: pin when the allowed set is a strict subset of the
/// machine's cores.
fn pins_by_default(allowed: usize, online: usize) -> bool {
    allowed < online
}

/// Cores this process may run on (its affinity mask).
fn allowed_cpus() -> Option<usize> {
    core_affinity::get_core_ids().map(|ids| ids.len()).filter(|&n| n > 0)
}

/// Cores online on this machine.
fn online_cpus() -> Option<usize> {
    count_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?)
}

/// Counts a kernel CPU list such as `0-3,8,10-11`.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
        n = n.checked_add(hi.checked_sub(lo)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// Which monoio driver the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring when the kernel offers every op monoio needs, else epoll.
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ServerTimeouts {
    pub header_read: Duration,
    pub body_read: Duration,
    pub keepalive: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Anthropic,
    Gemini,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// `None` only for a `mock` provider without base_url: the gateway then
    /// starts the built-in mock on a loopback port and forwards to it.
    pub base_url: Option<UpstreamUrl>,
    pub api_key_env: Option<String>,
    pub passthrough_auth: bool,
    pub headers: Vec<(String, String)>,
    pub anthropic_version: String,
    /// Add `stream_options.include_usage` to streaming chat requests that
    /// lack it, and strip what it adds from the client's stream.
    pub inject_include_usage: bool,
    pub timeouts: UpstreamTimeouts,
    pub pool: PoolConfig,
    pub tls_ca_file: Option<PathBuf>,
    /// Cache TTL for this provider's responses; None: `[cache] default_ttl`.
    pub cache_ttl: Option<Duration>,
    /// Attempts on this provider alone (pass-through), 1 = no retries.
    pub max_attempts: u32,
    /// Send a non-idempotent request (POST) again to this provider after it
    /// was written and no answer came (the provider may have processed and
    /// billed it). Off by default.
    pub retry_unanswered: bool,
    /// Models listed by `GET /v1/models` as `provider/model`.
    pub models: Vec<String>,
    /// Consecutive failures that eject the provider from routes.
    pub failure_threshold: u32,
    /// How long an ejected provider is skipped before a probe.
    pub cooldown: Duration,
    /// Guardrail policies for requests to this provider.
    pub guardrails: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// From the request written to the first byte of the response head.
    pub first_byte: Duration,
    /// Whole exchange, streams included.
    pub total: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

/// One problem in a config file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { path: path.into(), message: message.into() });
    }
}

impl Config {
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Config::from_toml(EMBEDDED_DEFAULT)
    }

    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Config::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError { path: String::new(), message: format!("TOML syntax: {e}") }])
        })?;
        let mut errors = Errors(Vec::new());
        let mut server = None;
        let mut raw_log = None;
        let mut raw_cache = None;
        let mut raw_auth = None;
        let mut raw_rules = Vec::new();
        let mut raw_store = None;
        let mut raw_routes = Vec::new();
        let mut raw_policies = Vec::new();
        let mut pricing = std::collections::BTreeMap::new();
        let mut providers = Vec::new();
        for (key, value) in table {
            match key.as_str() {
                "server" => server = section::<RawServer>(&mut errors, "server", value),
                "log" => raw_log = section::<RawLog>(&mut errors, "log", value),
                "cache" => raw_cache = section::<RawCache>(&mut errors, "cache", value),
                "auth" => raw_auth = section::<RawAuth>(&mut errors, "auth", value),
                "limit_store" => raw_store = section::<RawLimitStore>(&mut errors, "limit_store", value),
                "routes" => match value {
                    toml::Value::Table(t) => {
                        for (name, v) in t {
                            if let Some(r) = section::<RawRoute>(&mut errors, &format!("routes.{name}"), v) {
                                raw_routes.push((name, r));
                            }
                        }
                    }
                    _ => errors.push("routes", "must be a table of [routes.NAME] sections"),
                },
                "guardrails" => match value {
                    toml::Value::Table(t) => {
                        for (name, v) in t {
                            let path = format!("guardrails.{name}");
                            if let Some(p) = section::<guardrails::RawPolicy>(&mut errors, &path, v) {
                                raw_policies.push((name, p));
                            }
                        }
                    }
                    _ => errors.push("guardrails", "must be a table of [guardrails.NAME] sections"),
                },
                "rate_limits" => match value {
                    toml::Value::Array(items) => {
                        for (i, v) in items.into_iter().enumerate() {
                            if let Some(r) = section::<RawRateLimit>(&mut errors, &format!("rate_limits[{i}]"), v) {
                                raw_rules.push(r);
                            }
                        }
                    }
                    _ => errors.push("rate_limits", "must be an array of [[rate_limits]] tables"),
                },
                "pricing" => match value {
                    toml::Value::Table(t) => {
                        for (model, v) in t {
                            let path = format!("pricing.\"{model}\"");
                            if let Some(p) = section::<crate::pricing::Price>(&mut errors, &path, v) {
                                let prices = [Some(p.input), Some(p.output), p.cached_input, p.cache_write];
                                if prices.iter().flatten().any(|x| !x.is_finite() || *x < 0.0) {
                                    errors.push(path, "prices must be finite and not negative");
                                } else {
                                    pricing.insert(model, p);
                                }
                            }
                        }
                    }
                    _ => errors.push("pricing", "must be a table of [pricing.\"MODEL\"] sections"),
                },
                "providers" => match value {
                    toml::Value::Table(t) => {
                        for (name, v) in t {
                            let path = format!("providers.{name}");
                            if let Some(p) = section::<RawProvider>(&mut errors, &path, v) {
                                providers.push((name, p));
                            }
                        }
                    }
                    _ => errors.push("providers", "must be a table of [providers.NAME] sections"),
                },
                k => errors.push(k, "unknown section"),
            }
        }
        let server = validate_server(&mut errors, server.unwrap_or_default());
        let providers: Vec<Provider> =
            providers.into_iter().filter_map(|(name, raw)| validate_provider(&mut errors, name, raw)).collect();
        if providers.is_empty() && errors.0.is_empty() {
            errors.push("providers", "at least one [providers.NAME] section is required");
        }
        let raw_log = raw_log.unwrap_or_default();
        let log = LogConfig {
            path: raw_log.path,
            max_bytes: raw_log.max_bytes.unwrap_or(100 << 20),
            keep: raw_log.keep.unwrap_or(5),
            capture_bodies: raw_log.capture_bodies.unwrap_or(false),
            capture_max_bytes: raw_log.capture_max_bytes.unwrap_or(4096),
        };
        if log.capture_max_bytes > 1 << 20 {
            errors.push("log.capture_max_bytes", "must be at most 1048576");
        }
        if log.max_bytes < 4096 {
            errors.push("log.max_bytes", "must be at least 4096");
        }
        let cache = cache::validate(&mut errors, raw_cache.unwrap_or_default());
        let auth =
            access::validate_auth(&mut errors, raw_auth.unwrap_or_default(), server.as_ref().map(|s| s.admin_listen));
        let rate_limits = access::validate_rules(&mut errors, raw_rules, &providers, &auth);
        let limit_store = access::validate_store(&mut errors, raw_store.unwrap_or_default());
        let routes: Vec<Route> = raw_routes
            .into_iter()
            .filter_map(|(name, raw)| routes::validate(&mut errors, name, raw, &providers))
            .collect();
        let mut guardrails: Vec<Policy> =
            raw_policies.into_iter().filter_map(|(name, raw)| guardrails::validate(&mut errors, name, raw)).collect();
        guardrails::resolve_checks(&mut errors, &mut guardrails, &providers, &routes);
        if let Some(s) = &server {
            guardrails::check_names(&mut errors, "server.guardrails", &s.guardrails, &guardrails);
        }
        for p in &providers {
            guardrails::check_names(
                &mut errors,
                &format!("providers.{}.guardrails", p.name),
                &p.guardrails,
                &guardrails,
            );
        }
        for r in &routes {
            guardrails::check_names(&mut errors, &format!("routes.{}.guardrails", r.name), &r.guardrails, &guardrails);
        }
        match (server, errors.0.is_empty()) {
            (Some(server), true) => Ok(Config {
                server,
                providers,
                log,
                pricing,
                cache,
                auth,
                rate_limits,
                limit_store,
                routes,
                guardrails,
            }),
            _ => Err(ConfigErrors(errors.0)),
        }
    }

    pub fn provider_index(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == name)
    }
}

/// Deserializes one section, recording the error with its full key path.
fn section<T: serde::de::DeserializeOwned>(errors: &mut Errors, prefix: &str, value: toml::Value) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." { prefix.to_string() } else { format!("{prefix}.{inner}") };
            errors.push(path, e.into_inner().message().to_string());
            None
        }
    }
}

fn validate_server(errors: &mut Errors, raw: RawServer) -> Option<Server> {
    let before = errors.0.len();
    let mut addr = |key: &str, value: Option<String>, default: &str| -> SocketAddr {
        let text = value.unwrap_or_else(|| default.to_string());
        text.parse().unwrap_or_else(|_| {
            errors.push(format!("server.{key}"), format!("`{text}` is not an IP:port address"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = addr("listen", raw.listen, "127.0.0.1:8080");
    let admin_listen = addr("admin_listen", raw.admin_listen, "127.0.0.1:9090");
    let workers = match raw.workers {
        None => Workers::Auto,
        Some(RawWorkers::Word(w)) if w == "auto" => Workers::Auto,
        Some(RawWorkers::Word(w)) => {
            errors.push("server.workers", format!("`{w}`: expected \"auto\" or a number"));
            Workers::Auto
        }
        Some(RawWorkers::Count(n)) => match usize::try_from(n).ok().and_then(NonZeroUsize::new) {
            Some(n) if n.get() <= 1024 => Workers::Fixed(n),
            _ => {
                errors.push("server.workers", format!("{n}: expected 1 to 1024"));
                Workers::Auto
            }
        },
    };
    let pin_workers = match raw.pin_workers {
        None => Pinning::Auto,
        Some(RawPinning::Flag(true)) => Pinning::On,
        Some(RawPinning::Flag(false)) => Pinning::Off,
        Some(RawPinning::Word(w)) if w == "auto" => Pinning::Auto,
        Some(RawPinning::Word(w)) => {
            errors.push("server.pin_workers", format!("`{w}`: expected \"auto\", true or false"));
            Pinning::Auto
        }
    };
    let limits = Limits {
        max_head_bytes: raw.max_head_bytes.unwrap_or(64 * 1024),
        max_headers: raw.max_headers.unwrap_or(128),
        max_body_bytes: raw.max_body_bytes.unwrap_or(32 * 1024 * 1024),
    };
    if !(1024..=1024 * 1024).contains(&limits.max_head_bytes) {
        errors.push("server.max_head_bytes", "must be between 1024 and 1048576");
    }
    if !(8..=crate::http::MAX_HEADERS_CAP).contains(&limits.max_headers) {
        errors.push("server.max_headers", format!("must be between 8 and {}", crate::http::MAX_HEADERS_CAP));
    }
    if limits.max_body_bytes == 0 {
        errors.push("server.max_body_bytes", "must be at least 1");
    }
    let timeouts = ServerTimeouts {
        header_read: raw.header_read_timeout.unwrap_or(Duration::from_secs(10)),
        body_read: raw.body_read_timeout.unwrap_or(Duration::from_secs(60)),
        keepalive: raw.keepalive_timeout.unwrap_or(Duration::from_secs(75)),
        shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(30)),
    };
    for (key, d) in [
        ("header_read_timeout", timeouts.header_read),
        ("body_read_timeout", timeouts.body_read),
        ("keepalive_timeout", timeouts.keepalive),
    ] {
        if d.is_zero() {
            errors.push(format!("server.{key}"), "must be greater than 0");
        }
    }
    let mut trusted_proxies = Vec::new();
    for p in raw.trusted_proxies.unwrap_or_default() {
        match Cidr::parse(&p) {
            Ok(c) => trusted_proxies.push(c),
            Err(e) => errors.push("server.trusted_proxies", e),
        }
    }
    let tls = match (raw.tls_cert, raw.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            for (k, path) in [("tls_cert", &cert), ("tls_key", &key)] {
                if !path.is_file() {
                    errors.push(format!("server.{k}"), format!("{} is not a readable file", path.display()));
                }
            }
            Some(TlsFiles { cert, key })
        }
        _ => {
            errors.push("server.tls_cert", "tls_cert and tls_key go together");
            None
        }
    };
    let server = Server {
        trusted_proxies,
        tls,
        listen,
        admin_listen,
        workers,
        pin_workers,
        analytics: raw.analytics.unwrap_or(true),
        io_driver: match raw.io_driver {
            None | Some(RawIoDriver::Auto) => IoDriver::Auto,
            Some(RawIoDriver::IoUring) => IoDriver::IoUring,
            Some(RawIoDriver::Epoll) => IoDriver::Epoll,
        },
        limits,
        timeouts,
        guardrails: raw.guardrails,
    };
    (errors.0.len() == before).then_some(server)
}

/// Names that would shadow the gateway's own routes.
const RESERVED_NAMES: &[&str] = &["v1", "admin", "healthz", "readyz", "metrics"];

fn validate_provider(errors: &mut Errors, name: String, raw: RawProvider) -> Option<Provider> {
    let before = errors.0.len();
    let at = |key: &str| format!("providers.{name}.{key}");
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        errors.push(format!("providers.{name}"), "name may hold only letters, digits, '-', '_' and '.'");
    }
    if RESERVED_NAMES.contains(&name.as_str()) {
        errors.push(format!("providers.{name}"), "name is reserved for the gateway's own routes");
    }
    let kind = match raw.kind {
        RawKind::Openai => ProviderKind::OpenAi,
        RawKind::Anthropic => ProviderKind::Anthropic,
        RawKind::Gemini => ProviderKind::Gemini,
        RawKind::Mock => ProviderKind::Mock,
    };
    let default_url = match kind {
        ProviderKind::OpenAi => Some("https://api.openai.com"),
        ProviderKind::Anthropic => Some("https://api.anthropic.com"),
        ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
        ProviderKind::Mock => None,
    };
    let base_url = match raw.base_url.as_deref().or(default_url) {
        Some(text) => match UpstreamUrl::parse(text) {
            Ok(u) => Some(u),
            Err(e) => {
                errors.push(at("base_url"), e);
                None
            }
        },
        None => None,
    };
    if let Some(var) = &raw.api_key_env
        && (var.is_empty() || var.contains('=') || var.contains('\0'))
    {
        errors.push(at("api_key_env"), "must be an environment variable name");
    }
    let mut headers = Vec::new();
    for (k, v) in raw.headers {
        let token_ok = !k.is_empty() && k.bytes().all(is_tchar);
        if !token_ok {
            errors.push(at(&format!("headers.{k}")), "not a valid header name");
        } else if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            errors.push(at(&format!("headers.{k}")), "header value has CR, LF or NUL");
        } else if is_gateway_managed(&k) {
            errors.push(at(&format!("headers.{k}")), "this header is set by the gateway itself");
        } else {
            headers.push((k, v));
        }
    }
    let timeouts = UpstreamTimeouts {
        connect: raw.connect_timeout.unwrap_or(Duration::from_secs(5)),
        first_byte: raw.first_byte_timeout.unwrap_or(Duration::from_secs(120)),
        total: raw.request_timeout.unwrap_or(Duration::from_secs(600)),
    };
    for (key, d) in [
        ("connect_timeout", timeouts.connect),
        ("first_byte_timeout", timeouts.first_byte),
        ("request_timeout", timeouts.total),
    ] {
        if d.is_zero() {
            errors.push(at(key), "must be greater than 0");
        }
    }
    if raw.max_attempts.is_some_and(|n| !(1..=10).contains(&n)) {
        errors.push(at("max_attempts"), "must be 1 to 10");
    }
    if raw.failure_threshold == Some(0) {
        errors.push(at("failure_threshold"), "must be at least 1");
    }
    let pool = PoolConfig {
        max_idle: raw.pool_max_idle.unwrap_or(256),
        idle_timeout: raw.pool_idle_timeout.unwrap_or(Duration::from_secs(60)),
    };
    if let Some(path) = &raw.tls_ca_file
        && !path.is_file()
    {
        errors.push(at("tls_ca_file"), format!("{} is not a readable file", path.display()));
    }
    let provider = Provider {
        kind,
        base_url,
        api_key_env: raw.api_key_env,
        passthrough_auth: raw.passthrough_auth,
        headers,
        anthropic_version: raw.anthropic_version.unwrap_or_else(|| "2023-06-01".into()),
        inject_include_usage: raw
            .inject_include_usage
            .unwrap_or(matches!(kind, ProviderKind::OpenAi | ProviderKind::Mock)),
        timeouts,
        pool,
        tls_ca_file: raw.tls_ca_file,
        cache_ttl: raw.cache_ttl,
        max_attempts: raw.max_attempts.unwrap_or(1),
        retry_unanswered: raw.retry_unanswered.unwrap_or(false),
        models: raw.models,
        failure_threshold: raw.failure_threshold.unwrap_or(5),
        cooldown: raw.cooldown.unwrap_or(Duration::from_secs(30)),
        guardrails: raw.guardrails,
        name,
    };
    (errors.0.len() == before).then_some(provider)
}

/// RFC 9110 token characters.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_gateway_managed(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding", "connection", "x-forwarded-for"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests;

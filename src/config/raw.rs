//! The config file as written: serde types with `deny_unknown_fields`, every
//! field optional so that defaults live in one place (`validate.rs`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub workers: Option<RawWorkers>,
    pub pin_workers: Option<RawPinning>,
    pub io_driver: Option<RawIoDriver>,
    pub analytics: Option<bool>,
    pub max_head_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub body_read_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub keepalive_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub shutdown_grace: Option<Duration>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub guardrails: Vec<String>,
}

/// `pin_workers = "auto"`, `true` or `false`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPinning {
    Flag(bool),
    Word(String),
}

/// `workers = "auto"` or `workers = 4`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawWorkers {
    Count(i64),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawIoDriver {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawKind {
    Openai,
    Anthropic,
    Gemini,
    Mock,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub path: Option<PathBuf>,
    pub max_bytes: Option<u64>,
    pub keep: Option<usize>,
    pub capture_bodies: Option<bool>,
    pub capture_max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: RawKind,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub passthrough_auth: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub anthropic_version: Option<String>,
    pub inject_include_usage: Option<bool>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub first_byte_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub request_timeout: Option<Duration>,
    pub pool_max_idle: Option<usize>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub pool_idle_timeout: Option<Duration>,
    pub tls_ca_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub cache_ttl: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub retry_unanswered: Option<bool>,
    #[serde(default)]
    pub models: Vec<String>,
    pub failure_threshold: Option<u32>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub cooldown: Option<Duration>,
    #[serde(default)]
    pub guardrails: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub default_ttl: Option<Duration>,
    pub max_bytes: Option<u64>,
    pub max_entry_bytes: Option<usize>,
    pub scope: Option<RawCacheScope>,
    pub vary_headers: Option<Vec<String>>,
    pub coalesce: Option<bool>,
    pub backend: Option<RawCacheBackend>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub redis_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawCacheScope {
    Key,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawCacheBackend {
    Memory,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub mode: Option<RawAuthMode>,
    pub keys_file: Option<PathBuf>,
    pub admin_token_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawAuthMode {
    None,
    Keys,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: String,
    pub key: String,
    pub unit: Option<RawUnit>,
    pub limit: u64,
    #[serde(deserialize_with = "duration::de")]
    pub window: Duration,
    pub burst: Option<u64>,
    #[serde(default, rename = "match")]
    pub scope: RawMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawUnit {
    Requests,
    Tokens,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub provider: Option<String>,
    pub route: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitStore {
    pub backend: Option<RawCacheBackend>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub redis_timeout: Option<Duration>,
    pub lease_fraction: Option<f64>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub lease_ttl: Option<Duration>,
    pub outage_fraction: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub strategy: Option<RawStrategy>,
    pub targets: Vec<RawTarget>,
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub cache_ttl: Option<Duration>,
    #[serde(default)]
    pub guardrails: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RawStrategy {
    Fallback,
    Weighted,
    LeastOutstanding,
    PrefixAffinity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: String,
    pub model: Option<String>,
    pub weight: Option<u32>,
}

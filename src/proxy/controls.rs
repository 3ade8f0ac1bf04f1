//! The `x-aigw-*` request controls that are not the cache's (those are read
//! by `cache::Cache::plan`): request-log metadata and the per-request retry
//! and timeout overrides. Malformed values are refused with 400, never
//! silently ignored. The overrides only ever lower what the operator set:
//! a client cannot buy itself more attempts or a longer hold on upstream
//! connections than the config allows.

use std::time::Duration;

use crate::{error::GatewayError, service::Request};

#[derive(Debug, Default)]
pub struct Controls {
    /// `x-aigw-metadata`, validated as a flat JSON object of ≤ 5 entries.
    pub metadata: Option<String>,
    /// `x-aigw-max-attempts`.
    max_attempts: Option<u32>,
    /// `x-aigw-request-timeout`.
    timeout: Option<Duration>,
}

impl Controls {
    /// Attempts for this request: the operator's, or fewer if asked.
    pub fn max_attempts(&self, operator: u32) -> u32 {
        self.max_attempts.map_or(operator, |n| n.min(operator))
    }

    /// The whole request's time bound: the operator's, or less if asked.
    pub fn timeout(&self, operator: Duration) -> Duration {
        self.timeout.map_or(operator, |t| t.min(operator))
    }
}

pub fn read(req: &Request) -> Result<Controls, GatewayError> {
    let metadata = metadata(req)?;
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
    Ok(Controls {
        metadata,
        max_attempts: num("x-aigw-max-attempts", 10)?.map(|n| n as u32),
        timeout: num("x-aigw-request-timeout", 3_600_000)?.map(Duration::from_millis),
    })
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

//! Attempts: retries with backoff and jitter, fallback across a route's
//! targets, and passive health — all before a byte goes to the client.
//!
//! Retried: connection failures, timeouts before the response head, and
//! responses 429, 500, 502, 503, 504 (the response is dropped unread). The
//! last attempt's answer is relayed whatever it is. Switching to another
//! upstream goes at once; trying the same one again waits an exponential
//! backoff with jitter, or the upstream's `Retry-After` when it says more.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Worker, resolve::Candidate};
use crate::{
    analytics::Record,
    cache::entry::now_unix_ms,
    error::GatewayError,
    routing::{InFlight, random},
    upstream::exchange::{self, Outgoing, ResponseStart},
};

/// The attempt that will be relayed.
pub struct Attempted<'a> {
    /// Index into the candidates.
    pub index: usize,
    pub start: ResponseStart,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The gateway added include_usage to this attempt's body.
    pub strip_usage: bool,
    /// Keeps the upstream's in-flight count until the relay ends.
    pub _inflight: InFlight<'a>,
}

const RETRY_STATUS: [u16; 5] = [429, 500, 502, 503, 504];
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A `Retry-After` longer than this is not waited for: the answer is
/// relayed to the client, who can decide.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

fn retryable(e: &GatewayError) -> bool {
    matches!(
        e,
        GatewayError::UpstreamConnect { .. }
            | GatewayError::UpstreamTls { .. }
            | GatewayError::UpstreamClosed { .. }
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol { .. }
    )
}

/// Exponential backoff with jitter: 100 ms × 2^n, capped at 2 s, scaled by
/// a random factor in [0.5, 1).
fn backoff(n: u32) -> Duration {
    let full = BACKOFF_BASE.saturating_mul(1 << n.min(5)).min(BACKOFF_MAX);
    full.mul_f64(0.5 + (random() % 1000) as f64 / 2000.0)
}

/// `Retry-After: SECONDS` from a response head.
fn retry_after(start: &ResponseStart) -> Option<Duration> {
    let h = &start.head;
    h.headers
        .iter()
        .find(|x| start.raw_head[x.name.clone()].eq_ignore_ascii_case(b"retry-after"))
        .and_then(|x| std::str::from_utf8(&start.raw_head[x.value.clone()]).ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[allow(clippy::too_many_arguments)]
pub async fn run<'a>(
    w: &'a Worker,
    candidates: &[Candidate<'a>],
    order: &[usize],
    max_attempts: u32,
    deadline: Instant,
    mut build: impl FnMut(&Candidate<'a>) -> Result<(Outgoing, bool), GatewayError>,
    mut rec: Option<&mut Record>,
) -> Result<Attempted<'a>, GatewayError> {
    let router = &w.shared.router;
    let mut last_err = None;
    let mut tried = 0u32;
    let available: Vec<usize> = order.iter().copied().filter(|&i| candidates[i].up.unavailable.is_none()).collect();
    if available.is_empty() {
        let up = candidates[order[0]].up;
        return Err(GatewayError::ProviderUnavailable {
            provider: up.name.clone(),
            reason: up.unavailable.clone().unwrap_or_default(),
        });
    }
    for n in 0..max_attempts {
        let index = available[n as usize % available.len()];
        let c = &candidates[index];
        let next_same = available[(n as usize + 1) % available.len()] == index;
        let last = n + 1 == max_attempts || Instant::now() >= deadline;
        tried += 1;
        let (outgoing, strip_usage) = build(c)?;
        let inflight = router.start(c.up.index);
        let health = &router.health[c.up.index];
        match exchange::start(&w.pool, c.up, outgoing, deadline).await {
            Ok(start) if !last && RETRY_STATUS.contains(&start.head.status) => {
                if start.head.status >= 500 {
                    health.failure(now_unix_ms());
                }
                note_failure(rec.as_deref_mut(), &c.up.label);
                let wait =
                    if next_same { retry_after(&start).unwrap_or_default().max(backoff(n)) } else { Duration::ZERO };
                log::debug!("provider {}: {} — attempt {} of {max_attempts}", c.up.name, start.head.status, n + 1);
                drop(start);
                if wait > MAX_RETRY_AFTER || Instant::now() + wait >= deadline {
                    // No time to wait: the next target, if any, goes now.
                    if next_same {
                        break;
                    }
                } else if !wait.is_zero() {
                    monoio::time::sleep(wait).await;
                }
            }
            Ok(start) => {
                if start.head.status >= 500 {
                    health.failure(now_unix_ms());
                } else if start.head.status != 429 {
                    health.success();
                }
                let attempts = tried + start.attempts - 1;
                return Ok(Attempted { index, start, attempts, strip_usage, _inflight: inflight });
            }
            Err(e) if !last && retryable(&e) => {
                health.failure(now_unix_ms());
                note_failure(rec.as_deref_mut(), &c.up.label);
                log::debug!("provider {}: {e:?} — attempt {} of {max_attempts}", c.up.name, n + 1);
                last_err = Some(e);
                if next_same {
                    monoio::time::sleep(backoff(n)).await;
                }
            }
            Err(e) => {
                if retryable(&e) {
                    health.failure(now_unix_ms());
                }
                if let Some(r) = rec {
                    r.attempts = tried;
                }
                return Err(e);
            }
        }
    }
    if let Some(r) = rec {
        r.attempts = tried;
    }
    Err(last_err.unwrap_or(GatewayError::UpstreamTimeout { provider: "route".into(), phase: "all attempts" }))
}

fn note_failure(rec: Option<&mut Record>, provider: &Arc<str>) {
    if let Some(r) = rec {
        r.failed_attempts.push(provider.clone());
    }
}

//! Attempts: retries with backoff and jitter, fallback across a route's
//! targets, and passive health — all before a byte goes to the client.
//!
//! Retried: connection failures, timeouts before the response head, and
//! responses 429, 500, 502, 503, 504 (the response is dropped unread). The
//! last attempt's answer is relayed whatever it is. Switching to another
//! upstream goes at once; trying the same one again waits an exponential
//! backoff with jitter, or the upstream's `Retry-After` when it says more.
//!
//! A request that is not idempotent (POST: every completion) and reached an
//! upstream whole, but got no answer (the connection closed, the first
//! byte timed out), is never sent to that upstream again — it may have been
//! processed and billed — unless the provider sets `retry_unanswered`. It
//! may still go to another target of a fallback route.

use std::time::{Duration, Instant};

use super::{Worker, ctx::Attempts, resolve::Candidate};
use crate::{
    error::GatewayError,
    routing::{InFlight, random},
    upstream::exchange::{self, Failed, Outgoing, ResponseStart},
    util::{now_unix_ms, timer::Timer},
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

/// Where and how often to try.
pub struct Plan<'p, 'a> {
    pub candidates: &'p [Candidate<'a>],
    /// Candidate indexes in the order to try them.
    pub order: &'p [usize],
    pub max_attempts: u32,
    pub deadline: Instant,
}

/// Walks the plan until an answer to relay; `build` renders the request
/// for a candidate (its body may differ per target), and the attempts made
/// are noted in `made`.
pub async fn run<'a>(
    w: &'a Worker,
    plan: Plan<'_, 'a>,
    mut build: impl FnMut(&Candidate<'a>) -> Result<(Outgoing, bool), GatewayError>,
    made: &mut Attempts,
    timer: &mut Timer,
) -> Result<Attempted<'a>, GatewayError> {
    let Plan { candidates, order, max_attempts, deadline } = plan;
    let router = &w.shared.router;
    let mut last_err = None;
    let mut tried = 0u32;
    let mut available: Vec<usize> = order.iter().copied().filter(|&i| candidates[i].up.unavailable.is_none()).collect();
    if available.is_empty() {
        let up = candidates[order[0]].up;
        return Err(GatewayError::ProviderUnavailable {
            provider: up.name.clone(),
            reason: up.unavailable.clone().unwrap_or_default(),
        });
    }
    // Position in `available`, round-robin; an upstream that may have acted
    // on an unanswered request leaves the list.
    let mut pos = 0usize;
    for n in 0..max_attempts {
        if available.is_empty() {
            break;
        }
        let slot = pos % available.len();
        pos += 1;
        let index = available[slot];
        let c = &candidates[index];
        let next_same = available[(slot + 1) % available.len()] == index;
        let last = n + 1 == max_attempts || Instant::now() >= deadline;
        tried += 1;
        let (outgoing, strip_usage) = build(c)?;
        let idempotent = outgoing.idempotent;
        let inflight = router.start(c.up.index);
        let health = &router.health[c.up.index];
        match exchange::start(&w.pool, c.up, outgoing, deadline, timer).await {
            Ok(start) if !last && RETRY_STATUS.contains(&start.head.status) => {
                if start.head.status >= 500 {
                    health.failure(now_unix_ms());
                }
                made.failed.push(c.up.label.clone());
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
                    // Boxed, as below: inline, monoio's timer (640 bytes,
                    // aligned to 128) would sit in every request's future.
                    Box::pin(monoio::time::sleep(wait)).await;
                }
            }
            Ok(start) => {
                if start.head.status >= 500 {
                    health.failure(now_unix_ms());
                } else if start.head.status != 429 {
                    health.success();
                }
                let attempts = tried + start.attempts - 1;
                made.made = attempts;
                return Ok(Attempted { index, start, attempts, strip_usage, _inflight: inflight });
            }
            Err(f) if !last && f.error.retryable() => {
                health.failure(now_unix_ms());
                made.failed.push(c.up.label.clone());
                log::debug!("provider {}: {:?} — attempt {} of {max_attempts}", c.up.name, f.error, n + 1);
                last_err = Some(f.error);
                if f.delivered && !idempotent && !c.up.retry_unanswered {
                    // The upstream got the whole request and may have acted
                    // on it (and billed it): never to this upstream again.
                    // Another target of the route may still answer.
                    available.remove(slot);
                    pos = slot;
                } else if next_same {
                    Box::pin(monoio::time::sleep(backoff(n))).await;
                }
            }
            Err(Failed { error: e, .. }) => {
                if e.retryable() {
                    health.failure(now_unix_ms());
                }
                made.made = tried;
                return Err(e);
            }
        }
    }
    made.made = tried;
    Err(last_err.unwrap_or(GatewayError::UpstreamTimeout { provider: "route".into(), phase: "all attempts" }))
}

//! Remote checks (a guardrail policy's `check_with`), run concurrently with
//! the upstream call: the pipeline joins the two, so the answer (a stream's
//! first byte included) goes out only once every check has passed, and a
//! flagged request is refused with 400 `content_blocked` before anything
//! of the answer was sent. A check that fails or outlasts its `timeout` is
//! decided by the policy's `on_error`.
//!
//! A cache hit is served without a check: the cache keys on the body, and
//! the same body passed its check when the entry was stored.

use std::{sync::Arc, time::Instant};

use bytes::{BufMut, BytesMut};

use super::{Worker, ctx::RequestCtx};
use crate::{
    config::{Action, Moderation},
    error::GatewayError,
    guardrails::{Direction, Event, json, moderation},
    upstream::exchange::{self, Outgoing},
    util::timer::Timer,
};

/// The checks one request needs, with the text they read.
pub struct Checks {
    policies: Vec<(Arc<str>, Moderation, Action)>,
    texts: Vec<String>,
}

/// One policy's check, answered.
#[derive(Debug)]
pub struct Asked {
    policy: Arc<str>,
    action: Action,
    block_on_error: bool,
    said: Said,
}

/// What one check said.
#[derive(Debug)]
pub enum Said {
    Passed,
    Flagged,
    /// No usable answer in time: `on_error` decides.
    Failed(String),
}

impl Checks {
    /// None: no selected policy checks remotely.
    pub fn plan(ctx: &mut RequestCtx<'_>, body: &[u8]) -> Option<Checks> {
        let policies = std::mem::take(&mut ctx.guard.checks);
        if policies.is_empty() {
            return None;
        }
        // The strings a model reads, as the guard phase found them (the
        // body parsed then, so it parses now).
        let texts = json::text_spans(body, json::REQUEST_ROOTS)
            .unwrap_or_default()
            .into_iter()
            .map(|s| json::unescape(&body[s.start + 1..s.end - 1]).into_owned())
            .collect::<Vec<_>>();
        // Nothing a model reads (a multipart upload, a GET): nothing to ask.
        if texts.iter().all(|t| t.trim().is_empty()) {
            return None;
        }
        Some(Checks { policies, texts })
    }

    /// Asks every check (one after another; each within its timeout and
    /// the request's deadline).
    pub async fn run(self, w: &Worker, deadline: Instant) -> Vec<Asked> {
        let mut asked = Vec::with_capacity(self.policies.len());
        for (policy, m, action) in self.policies {
            let until = (Instant::now() + m.timeout).min(deadline);
            let wait = until.saturating_duration_since(Instant::now());
            let said = match monoio::time::timeout(wait, ask(w, &m, &self.texts, until)).await {
                Ok(Ok(true)) => Said::Flagged,
                Ok(Ok(false)) => Said::Passed,
                Ok(Err(why)) => Said::Failed(why),
                Err(_) => Said::Failed(format!("no answer within {:?}", m.timeout)),
            };
            asked.push(Asked { policy, action, block_on_error: m.block_on_error, said });
        }
        asked
    }
}

/// Records what the checks said; Err: the first that blocks.
pub fn settle(ctx: &mut RequestCtx<'_>, asked: Vec<Asked>, anthropic: bool) -> Result<(), GatewayError> {
    let mut refused = None;
    for Asked { policy: name, action, block_on_error, said } in asked {
        let (detector, blocks) = match said {
            Said::Passed => continue,
            Said::Flagged => ("moderation", action == Action::Block),
            Said::Failed(why) => {
                log::warn!("guardrail policy {name}: the check failed: {why}");
                ("moderation_error", block_on_error)
            }
        };
        // A failed check that lets the request through is logged and
        // counted as a flag, whatever the policy's action.
        let action = if blocks { Action::Block } else { Action::Flag };
        ctx.guard.events.push(Event {
            policy: name.clone(),
            detector: Arc::from(detector),
            action,
            direction: Direction::Request,
            count: 1,
        });
        if blocks && refused.is_none() {
            refused = Some(GatewayError::ContentBlocked {
                policy: name.to_string(),
                detector: detector.to_string(),
                anthropic,
            });
        }
    }
    refused.map_or(Ok(()), Err)
}

/// One check: Ok(flagged), or why none of its targets answered (a route's
/// targets are tried in order, as long as time is left).
async fn ask(w: &Worker, m: &Moderation, texts: &[String], deadline: Instant) -> Result<bool, String> {
    let mut why = String::from("no target");
    for (provider, model) in &m.targets {
        let body = moderation::request_body(m, model.as_deref(), texts);
        match ask_one(w, m, provider, body, deadline).await {
            Ok(flagged) => return Ok(flagged),
            Err(e) => why = format!("{provider}: {e}"),
        }
    }
    Err(why)
}

async fn ask_one(w: &Worker, m: &Moderation, provider: &str, body: Vec<u8>, deadline: Instant) -> Result<bool, String> {
    let up = w.shared.upstream(provider).ok_or_else(|| format!("no provider {provider}"))?;
    let mut head = BytesMut::with_capacity(256 + up.injected.len() + body.len());
    head.put_slice(b"POST ");
    head.put_slice(up.url.path_prefix.as_bytes());
    head.put_slice(moderation::path(m).as_bytes());
    head.put_slice(b" HTTP/1.1\r\nHost: ");
    head.put_slice(up.url.host_header.as_bytes());
    head.put_slice(b"\r\n");
    head.put_slice(&up.injected);
    head.put_slice(format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    head.put_slice(&body);
    // A check changes nothing upstream: safe to send again on a fresh
    // connection when a pooled one turns out stale.
    let out = Outgoing { head, body: None, idempotent: true, head_request: false };
    // Its own timer: the checks run beside the request's attempts, which
    // wait on the client connection's.
    let mut timer = Timer::new(Instant::now());
    let mut start = exchange::start(&w.pool, up, out, deadline, &mut timer).await.map_err(|f| f.error.message())?;
    let (answer, reusable) = super::relay::read_whole(&mut start.conn, start.head.framing, deadline, &mut timer)
        .await
        .map_err(|()| "the check's answer broke off".to_string())?;
    if reusable && start.head.keep_alive {
        w.pool.borrow_mut().put(up.index, start.conn);
    }
    if !(200..300).contains(&start.head.status) {
        return Err(format!("the check answered {}", start.head.status));
    }
    moderation::flagged(m, &answer).map_err(str::to_string)
}

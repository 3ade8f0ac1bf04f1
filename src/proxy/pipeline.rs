//! The life of a request on the data listener, phase by phase. Each phase
//! is a function over the request (its bytes, never changed) and its
//! `RequestCtx` (everything the gateway decides and learns), called in this
//! order; `src/lib.rs` and `docs/architecture.md` list the same phases.
//!
//! 1. authenticate       `access.rs`    the gateway key → `ctx.identity`
//! 2. routing facts      `providers/body.rs`  model, stream → `ctx.facts`
//! 3. resolve            `resolve.rs`   provider, route or unified endpoint
//! 4. guard (request)    `guard.rs`     request-side guardrails
//! 5. admit              `access.rs`    scopes, rate limits, budget
//! 6. controls           `controls.rs`  `x-aigw-*` metadata, retry, timeout
//! 7. cache              `cached.rs`    lookup, hit, coalesce, or a fill
//! 8. attempts           `attempts.rs`  retries and fallback to an answer
//! 9. relay              `relay/`       filter chain: tap → translate →
//!    strip → guard (response) → cache recorder; the store decision
//! 10. finish            here           settle, then the record, once
//!
//! Every way a request ends — an answer, an error at any phase, the client
//! gone, the upstream cut — goes through `finish`.

use std::time::Instant;

use super::{
    Worker, access,
    attempts::{self, Plan},
    cached::{self, CacheLookup, Step},
    controls,
    ctx::RequestCtx,
    guard, models, moderate,
    outgoing::Builder,
    relay::{self, Answer},
    resolve::{self, Api, Resolved},
};
use crate::{
    analytics::Record,
    error::GatewayError,
    providers::{StreamFormat, Translation, body, gemini},
    service::{ClientIo, Outcome, Refused, Request, respond_error},
};

/// Written as a function returning an async block: an `async fn` keeps a
/// second copy of its by-value arguments in its state (the request, here),
/// and this state is part of every connection's task.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn handle(w: &Worker, req: Request, io: &mut ClientIo, keep_alive: bool) -> impl Future<Output = Outcome> {
    async move {
        let mut ctx = RequestCtx::new(&req.head, req.body.len(), req.peer.ip(), req.id, req.started);
        ctx.keep_alive = keep_alive;
        let outcome = match run(w, &req, &mut ctx, io).await {
            Ok(outcome) => outcome,
            Err(e) => answer_error(&mut ctx, &e, io).await,
        };
        finish(w, &mut ctx);
        outcome
    }
}

/// A request the connection loop could not complete: answered with its
/// error and accounted like any other.
pub async fn refuse(w: &Worker, r: Refused<'_>, io: &mut ClientIo) {
    let peer = r.peer.ip();
    let mut ctx = match r.head {
        Some(head) => RequestCtx::new(head, 0, peer, r.id, r.started),
        None => RequestCtx::unparsed(peer, r.id, r.started),
    };
    answer_error(&mut ctx, r.error, io).await;
    finish(w, &mut ctx);
}

/// Phases 1 to 9; an error from any of them is answered by the caller.
async fn run<'a>(
    w: &'a Worker,
    req: &'a Request,
    ctx: &mut RequestCtx<'a>,
    io: &mut ClientIo,
) -> Result<Outcome, GatewayError> {
    access::authenticate(w, req, ctx)?;
    let scanned = body::scan(&req.body)
        .map_err(|key| GatewayError::InvalidBody { param: key, why: "the key appears more than once".into() })?;
    check_model(scanned.model.as_deref())?;
    let target = resolve::resolve(w, req, scanned.model.as_deref())?;
    if target.api == Api::Models {
        return Ok(models::answer(w, ctx, io).await);
    }
    let first = target.candidates.first().ok_or_else(|| GatewayError::NoSuchRoute { name: target.label.into() })?;
    routing_facts(ctx, &target, scanned);
    check_model(ctx.facts.model.as_deref())?;
    guard::request(w, req, ctx, &target)?;
    // The body as the provider gets it, from here on (guardrails may have
    // redacted it).
    let sent = ctx.guard.body_or(&req.body);
    // Captured after the guard: the log keeps what the provider was sent,
    // never what a guardrail took out.
    if let Some(max) = w.shared.capture {
        ctx.response.request_body = Some(String::from_utf8_lossy(&sent[..sent.len().min(max)]).into_owned());
    }
    access::admit(w, req, ctx, &target).await?;
    ctx.controls = controls::read(req)?;

    let deadline = req.started + ctx.controls.timeout(first.up.timeouts.total);
    let builder = Builder::new(w, req, ctx, target.upstream_path());
    let lookup = CacheLookup {
        provider_ttl: target.route.as_ref().and_then(|r| r.cache_ttl).or(first.up.cache_ttl),
        path: target.upstream_path(),
        stripped: builder.adds_usage(first),
        deadline,
    };
    let fill = match cached::phase(w, req, ctx, &target, lookup, io).await? {
        Step::Served(outcome) => return Ok(outcome),
        Step::Upstream(fill) => fill,
    };

    let order = match &target.route {
        Some(route) => w.shared.router.order(route, body::prompt_prefix(&sent, 2048), crate::util::now_unix_ms()),
        None => Vec::new(),
    };
    let plan = Plan {
        candidates: &target.candidates,
        // A single target: no route order to compute.
        order: if order.is_empty() { &[0] } else { &order },
        max_attempts: ctx
            .controls
            .max_attempts(target.route.as_ref().map_or(first.up.max_attempts, |r| r.max_attempts)),
        deadline,
    };
    let upstream_started = Instant::now();
    let attempted = match moderate::Checks::plan(ctx, &sent) {
        None => attempts::run(w, plan, |c| builder.build(c), &mut ctx.attempts, &mut io.timer).await?,
        // The checks run while the upstream answers; nothing of the answer
        // goes out before they pass. Boxed: inline, their state would add
        // 2 KiB to every connection's future, checks or not.
        Some(checks) => {
            let checked = Box::pin(checks.run(w, deadline));
            let (attempted, said) =
                monoio::join!(attempts::run(w, plan, |c| builder.build(c), &mut ctx.attempts, &mut io.timer), checked);
            moderate::settle(ctx, said, guard::messages_api(req))?;
            attempted?
        }
    };
    let chosen = &target.candidates[attempted.index];
    ctx.provider = Some(chosen.up.label.clone());
    if let Some(m) = &chosen.model {
        ctx.model = Some(m.clone());
    }
    let answer = Answer {
        up: chosen.up,
        strip_usage: attempted.strip_usage,
        translation: chosen.translation,
        model: match chosen.translation {
            Translation::None => String::new(),
            _ => chosen.model.as_ref().or(ctx.facts.model.as_ref()).cloned().unwrap_or_default(),
        },
        json_mode: chosen.translation == Translation::Anthropic && body::json_output(&sent),
        deadline,
        fill,
        routed: routed_lines(&target, chosen.up, attempted.attempts),
        prompt: sent.clone(),
        format: StreamFormat::of(chosen.up.kind, target.upstream_path()),
        start: attempted.start,
    };
    w.upstream_busy(true);
    let outcome = relay::relay(w, ctx, answer, io).await;
    w.upstream_busy(false);
    ctx.attempts.upstream_time = Some(upstream_started.elapsed());
    Ok(outcome)
}

/// Phase 2's second half, once the target is known: the facts limits,
/// budgets and the record use. Gemini's native API names the model in the
/// path, not the body.
fn routing_facts<'a>(ctx: &mut RequestCtx<'a>, target: &Resolved<'a>, scanned: body::RequestInfo) {
    // `resolve` gives a single-provider target exactly one candidate.
    let Some(first) = target.candidates.first() else { return };
    let single_gemini = target.route.is_none()
        && target.api == Api::Passthrough
        && first.up.kind == crate::config::ProviderKind::Gemini;
    ctx.facts = if single_gemini { gemini::gemini_path(target.rest).unwrap_or_default() } else { scanned };
    ctx.label = Some(target.label);
    ctx.provider = Some(first.up.label.clone());
    ctx.model = first.model.clone().or_else(|| ctx.facts.model.clone());
}

/// Refuses model names longer than any real one: they would become
/// metric labels and log fields.
fn check_model(model: Option<&str>) -> Result<(), GatewayError> {
    match model {
        Some(m) if m.len() > body::MAX_MODEL_NAME => {
            Err(GatewayError::InvalidBody { param: "model", why: format!("at most {} bytes", body::MAX_MODEL_NAME) })
        }
        _ => Ok(()),
    }
}

/// On routed requests (a route, the unified endpoint) the answer says
/// which provider answered, after how many attempts.
fn routed_lines(target: &Resolved<'_>, up: &crate::upstream::Upstream, attempts: u32) -> Vec<u8> {
    if !target.names_provider() {
        return Vec::new();
    }
    format!("x-aigw-provider: {}\r\nx-aigw-attempts: {attempts}\r\n", up.name).into_bytes()
}

/// An error at any phase: its JSON answer, noted in the context.
async fn answer_error(ctx: &mut RequestCtx<'_>, e: &GatewayError, io: &mut ClientIo) -> Outcome {
    let (outcome, sent) = respond_error(io, e, ctx.version, ctx.id, ctx.keep_alive).await;
    ctx.response.status = e.status();
    ctx.response.error = Some(e.code());
    ctx.response.bytes_out += sent;
    outcome
}

/// Phase 10: the request is over, whichever way. Settle what admission
/// took (the tap counted the tokens whether analytics is on or not), then
/// build the record from the context, once.
fn finish(w: &Worker, ctx: &mut RequestCtx<'_>) {
    access::settle(w, ctx);
    if let Some(recorder) = &w.recorder {
        let duration = ctx.started.elapsed();
        recorder.record(Record::of(ctx, duration));
    }
}

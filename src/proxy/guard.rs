//! Guardrails: the place in the pipeline where policies inspect what goes
//! to the provider (`request`, before admission, so a blocked request costs
//! no budget and takes no rate-limit room) and what comes back
//! (`ResponseGuard`, a filter in the relay's chain between translation and
//! the cache recorder, so what is stored is what the client was allowed to
//! see), or, for an answer that is not a stream, on the whole answer before
//! it is sent (`answer`). The policies themselves live in `src/guardrails/`.

use std::{borrow::Cow, sync::Arc};

use bytes::Bytes;

use super::{Worker, ctx::RequestCtx, resolve::Resolved};
use crate::{
    auth::AuthError,
    error::GatewayError,
    guardrails::{Verdict, answer::AnswerVerdict, events::StreamGuard},
    providers::StreamFormat,
    service::Request,
};

/// Request-side guardrails: the server's policies, the route's and those of
/// every provider the request may reach (a route's fallback included). May
/// refuse the request or rewrite its body (`ctx.guard.body`).
pub fn request(w: &Worker, req: &Request, ctx: &mut RequestCtx<'_>, target: &Resolved<'_>) -> Result<(), GatewayError> {
    let g = &w.shared.guardrails;
    let key = ctx.identity.key.as_ref().map_or(&[][..], |k| &k.guardrails[..]);
    if g.is_empty() && key.is_empty() {
        return Ok(());
    }
    let route = target.route.as_ref().map(|r| &r.guardrails[..]);
    let providers = target.candidates.iter().map(|c| &c.up.guardrails[..]);
    let selected = g
        .select(route.into_iter().chain(providers), key)
        .map_err(|name| GatewayError::Forbidden(AuthError::UnknownPolicy(name.to_string())))?;
    if selected.is_empty() {
        return Ok(());
    }
    ctx.guard.response = g.response_side(&selected);
    match g.check_request(&selected, &req.body) {
        Verdict::Pass { body, events, pseudonyms } => {
            if let Cow::Owned(b) = body {
                ctx.guard.body = Some(Bytes::from(b));
            }
            ctx.guard.events = events;
            if !pseudonyms.is_empty() {
                ctx.guard.pseudonyms = Some(Arc::new(pseudonyms));
            }
            ctx.guard.checks = g.checks(&selected);
            Ok(())
        }
        Verdict::Block { policy, detector, events } => {
            ctx.guard.events = events;
            Err(GatewayError::ContentBlocked {
                policy: policy.to_string(),
                detector: detector.to_string(),
                anthropic: messages_api(req),
            })
        }
        // Forwarding what the policies could not read would let anything
        // through them.
        Verdict::Unreadable => {
            Err(GatewayError::InvalidBody { param: "body", why: "not a JSON object the guardrails can read".into() })
        }
    }
}

/// Whether the client speaks the Messages API (a refusal then has
/// Anthropic's error shape).
pub fn messages_api(req: &Request) -> bool {
    let target = req.head.target();
    target[..memchr::memchr(b'?', target).unwrap_or(target.len())].ends_with(b"/v1/messages")
}

/// Response-side guardrails over a streamed body, as the client gets it.
pub struct ResponseGuard(StreamGuard);

impl ResponseGuard {
    /// None: no policy acts on this answer (the chain skips the stage).
    /// `format`: the format the client receives (after translation).
    pub fn for_stream(w: &Worker, ctx: &RequestCtx<'_>, format: StreamFormat) -> Option<ResponseGuard> {
        if !ctx.guard.reads_answer() {
            return None;
        }
        Some(ResponseGuard(stream_guard(w, ctx, format)))
    }

    /// Passes `data` on to `out`, as the policies allow.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.0.feed(data, out);
    }

    /// The body ended: releases anything held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.0.finish(out);
    }

    /// What the policies found goes on the request's record.
    pub fn conclude(self, ctx: &mut RequestCtx<'_>) {
        ctx.guard.events.extend(self.0.events());
    }
}

/// Whether an answer is read whole for the response policies before it is
/// sent: a successful JSON answer (or an event stream that came with a
/// length), when a policy acts on answers. Streams are guarded as they
/// pass; error bodies are the provider's own; other media (audio, files)
/// are not text the policies read.
pub fn reads_whole(ctx: &RequestCtx<'_>, status: u16, content_type: Option<&[u8]>) -> bool {
    let text = content_type.is_some_and(|ct| {
        let ct = ct.to_ascii_lowercase();
        memchr::memmem::find(&ct, b"json").is_some() || memchr::memmem::find(&ct, b"text/event-stream").is_some()
    });
    ctx.guard.reads_answer() && (200..300).contains(&status) && text
}

fn stream_guard(w: &Worker, ctx: &RequestCtx<'_>, format: StreamFormat) -> StreamGuard {
    let g = StreamGuard::new(w.shared.guardrails.clone(), ctx.guard.response.clone(), format);
    match &ctx.guard.pseudonyms {
        Some(map) => g.restoring(map.clone()),
        None => g,
    }
}

/// Response-side guardrails over a whole answer: Ok(the body to send), or
/// the gateway's error when the answer cannot be read.
pub fn answer(
    w: &Worker,
    ctx: &mut RequestCtx<'_>,
    provider: &str,
    format: StreamFormat,
    is_sse: bool,
    body: Vec<u8>,
) -> Result<Vec<u8>, GatewayError> {
    if is_sse {
        // A stream that came with a length: guarded as one all the same.
        let mut g = stream_guard(w, ctx, format);
        let mut out = Vec::with_capacity(body.len());
        g.feed(&body, &mut out);
        g.finish(&mut out);
        ctx.guard.events.extend(g.events());
        return Ok(out);
    }
    match w.shared.guardrails.check_answer(&ctx.guard.response, format, &body, ctx.guard.pseudonyms.as_deref()) {
        AnswerVerdict::Pass { body: new, events } => {
            ctx.guard.events.extend(events);
            Ok(new.unwrap_or(body))
        }
        AnswerVerdict::Block { body, events, .. } => {
            ctx.guard.events.extend(events);
            Ok(body)
        }
        AnswerVerdict::Unreadable => Err(GatewayError::Untranslatable {
            provider: provider.to_string(),
            detail: "the answer is not a JSON object, so the response guardrails cannot read it",
        }),
    }
}

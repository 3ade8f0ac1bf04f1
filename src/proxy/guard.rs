//! Guardrails: the place in the pipeline where policies inspect what goes
//! to the provider (`request`, before admission, so a blocked request costs
//! no budget and takes no rate-limit room) and what comes back
//! (`ResponseGuard`, a filter in the relay's chain between translation and
//! the cache recorder, so what is stored is what the client was allowed to
//! see). The policies themselves live in `src/guardrails/`; the response
//! side passes everything through until it is built.

use std::borrow::Cow;

use bytes::Bytes;

use super::{Worker, ctx::RequestCtx, resolve::Resolved};
use crate::{error::GatewayError, guardrails::Verdict, service::Request};

/// Request-side guardrails: the server's policies, the route's and those of
/// every provider the request may reach (a route's fallback included). May
/// refuse the request or rewrite its body (`ctx.guard.body`).
pub fn request(w: &Worker, req: &Request, ctx: &mut RequestCtx<'_>, target: &Resolved<'_>) -> Result<(), GatewayError> {
    let g = &w.shared.guardrails;
    if g.is_empty() {
        return Ok(());
    }
    let route = target.route.as_ref().map(|r| &r.guardrails[..]);
    let providers = target.candidates.iter().map(|c| &c.up.guardrails[..]);
    let selected = g.select(route.into_iter().chain(providers));
    if selected.is_empty() {
        return Ok(());
    }
    match g.check_request(&selected, &req.body) {
        Verdict::Pass { body, events } => {
            if let Cow::Owned(b) = body {
                ctx.guard.body = Some(Bytes::from(b));
            }
            ctx.guard.events = events;
            Ok(())
        }
        Verdict::Block { policy, detector, events } => {
            ctx.guard.events = events;
            Err(GatewayError::ContentBlocked { policy: policy.to_string(), detector: detector.to_string() })
        }
        // Forwarding what the policies could not read would let anything
        // through them.
        Verdict::Unreadable => {
            Err(GatewayError::InvalidBody { param: "body", why: "not a JSON object the guardrails can read".into() })
        }
    }
}

/// Response-side guardrails over the decoded body the client will get.
#[derive(Debug, Default)]
pub struct ResponseGuard;

impl ResponseGuard {
    /// None: no policy applies to this response (the chain skips it).
    pub fn for_response(_ctx: &RequestCtx<'_>) -> Option<ResponseGuard> {
        None
    }

    /// Passes `data` on to `out`, as the policies allow.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(data);
    }

    /// The body ended: releases anything held back.
    pub fn finish(&mut self, _out: &mut Vec<u8>) {}
}

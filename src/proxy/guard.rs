//! Guardrails: the place in the pipeline where policies inspect what goes
//! to the provider (`request`, before admission, so a blocked request costs
//! no budget) and what comes back (`ResponseGuard`, a filter in the relay's
//! chain between translation and the cache recorder, so what is stored is
//! what the client was allowed to see). No policy exists yet: both pass
//! everything through unchanged.

use super::{Worker, ctx::RequestCtx};
use crate::{error::GatewayError, service::Request};

/// Request-side guardrails: may refuse the request or rewrite its body.
pub fn request(_w: &Worker, _req: &Request, _ctx: &mut RequestCtx<'_>) -> Result<(), GatewayError> {
    Ok(())
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

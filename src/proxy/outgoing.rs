//! The request as one candidate upstream gets it: the body with the
//! target's model, with include_usage added when the gateway counts tokens
//! on an OpenAI stream, or translated to the target's API; and the head
//! rewritten for it (`headers.rs`).

use std::borrow::Cow;

use bytes::Bytes;

use super::{Worker, ctx::RequestCtx, headers, resolve::Candidate};
use crate::{
    error::GatewayError,
    providers::{Translation, body, openai, translate},
    service::Request,
    upstream::exchange::Outgoing,
};

/// What the outgoing requests of one client request share.
pub struct Builder<'r> {
    req: &'r Request,
    /// The body as the provider gets it (guardrails may have redacted it).
    body: Bytes,
    /// Path and query of untranslated requests.
    path: &'r [u8],
    stream: bool,
    /// The gateway counts this request's tokens (analytics, a token limit or
    /// a budget): identity encoding, and include_usage where it can.
    counts_tokens: bool,
    /// Ask for an uncompressed answer (the tap or a guardrail reads it).
    identity: bool,
    /// include_usage may be added: a stream whose client did not ask for
    /// its usage chunk (no `stream_options`, or one without
    /// `include_usage: true`).
    may_add_usage: bool,
    key_header: Option<&'static str>,
}

impl<'r> Builder<'r> {
    pub fn new(w: &Worker, req: &'r Request, ctx: &RequestCtx<'r>, path: &'r [u8]) -> Self {
        Builder {
            req,
            body: ctx.guard.body_or(&req.body),
            path,
            stream: ctx.facts.stream,
            counts_tokens: w.counts_tokens(ctx),
            // The response policies read the answer: it must come plain.
            identity: w.counts_tokens(ctx) || ctx.guard.reads_answer(),
            may_add_usage: ctx.facts.stream && !ctx.facts.include_usage,
            key_header: ctx.identity.key_header,
        }
    }

    /// Whether the gateway adds include_usage for this candidate (and so
    /// strips the usage chunk from what the client gets).
    pub fn adds_usage(&self, c: &Candidate<'_>) -> bool {
        self.counts_tokens
            && self.may_add_usage
            && c.up.inject_include_usage
            && c.translation == Translation::None
            && openai::is_chat_completions(self.req.head.method(), self.path)
    }

    /// The request for `c`, and whether include_usage was added to it.
    pub fn build(&self, c: &Candidate<'_>) -> Result<(Outgoing, bool), GatewayError> {
        let (body, rest, strip): (Bytes, Cow<'_, [u8]>, bool) = match c.translation {
            Translation::None => {
                let mut body = match &c.model {
                    Some(m) => with_model(&self.body, m),
                    None => self.body.clone(),
                };
                let strip = self.adds_usage(c);
                if strip && let Some(b) = openai::with_include_usage(&body) {
                    body = b;
                }
                (body, Cow::Borrowed(self.path), strip)
            }
            other => {
                let (body, rest) = translate::request(other, &self.body, c.model.as_deref(), self.stream)?;
                (body, Cow::Owned(rest), false)
            }
        };
        let head = headers::upstream_request(self.req, c.up, &rest, &body, self.identity, self.key_header);
        Ok((head, strip))
    }
}

/// The body with its top-level `model` replaced (routes and
/// `provider/model` send the target's model).
fn with_model(body: &Bytes, model: &str) -> Bytes {
    let Some(span) = body::model_span(body) else { return body.clone() };
    let quoted = serde_json::Value::from(model).to_string();
    let mut out = Vec::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    out.into()
}

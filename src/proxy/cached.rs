//! The cache phase: the plan for this request, a lookup, and for a miss
//! the flight it leads or follows. Answers that do not go upstream are
//! written here: cache hits, and followers of an identical request in
//! flight.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{
    Worker,
    capture::{self, Capture},
    ctx::RequestCtx,
    headers,
    resolve::Resolved,
};
use crate::{
    cache::{
        CacheStatus, Entry, Fill, Lookup, Plan, PlanInput,
        flight::{Follower, Join, Leader, Update},
    },
    error::GatewayError,
    http::{
        Version,
        respond::{Framing, Head},
        write,
    },
    service::{ClientIo, Outcome, Request},
    tap::Usage,
};

/// Where the cache phase leaves a request.
pub enum Step {
    /// Answered from the cache or an identical request in flight.
    Served(Outcome),
    /// Goes upstream; with a fill when its answer is to be stored.
    Upstream(Option<Fill>),
}

/// What the cache phase needs to know of the request.
pub struct CacheLookup<'r> {
    pub provider_ttl: Option<std::time::Duration>,
    /// Path and query under the provider.
    pub path: &'r [u8],
    /// The gateway adds include_usage to the forwarded body.
    pub stripped: bool,
    pub deadline: Instant,
}

/// Plans, looks up, and joins or leads the flight of identical requests.
pub async fn phase(
    w: &Worker,
    req: &Request,
    ctx: &mut RequestCtx<'_>,
    target: &Resolved<'_>,
    l: CacheLookup<'_>,
    io: &mut ClientIo,
) -> Result<Step, GatewayError> {
    let cache = &w.shared.cache;
    // Keyed on what the model is asked: two requests that differ only in
    // a redacted value are one request to it.
    let body = ctx.guard.body_or(&req.body);
    let plan = cache.plan(&PlanInput {
        head: &req.head,
        provider: target.label,
        provider_ttl: l.provider_ttl,
        path: l.path,
        body: &body,
        stripped: l.stripped,
        key_id: ctx.identity.key.as_ref().map(|k| &*k.id),
    })?;
    let (key, ttl) = match plan {
        Plan::Off => return Ok(Step::Upstream(None)),
        // A pseudonymized request's answer is restored with a mapping that
        // is this request's alone: it is neither served from nor stored in
        // the cache (nor shared with an identical request in flight).
        Plan::Use { .. } if ctx.guard.pseudonyms.is_some() => {
            ctx.cache.status = Some(CacheStatus::Bypass);
            return Ok(Step::Upstream(None));
        }
        Plan::Bypass => {
            ctx.cache.status = Some(CacheStatus::Bypass);
            return Ok(Step::Upstream(None));
        }
        Plan::Use { key, ttl } => (key, ttl),
    };
    ctx.cache.key = Some(key);
    let status = match cache.get(target.label, key).await {
        Lookup::Hit(entry) => {
            ctx.cache.status = Some(CacheStatus::Hit);
            return Ok(Step::Served(serve_hit(w, &entry, io, ctx).await));
        }
        Lookup::Expired => CacheStatus::Expired,
        Lookup::Miss => CacheStatus::Miss,
    };
    let max = cache.config.max_entry_bytes;
    let join = if cache.config.coalesce { cache.flights.join(key, max) } else { Join::Leader(Leader::solo(max)) };
    match join {
        Join::Leader(leader) => {
            ctx.cache.status = Some(status);
            Ok(Step::Upstream(Some(Fill { leader, key, ttl })))
        }
        Join::Follower(f) => {
            ctx.cache.status = Some(CacheStatus::Hit);
            match follow(w, target.label, f, io, ctx, l.deadline).await? {
                Followed::Done(outcome) => Ok(Step::Served(outcome)),
                // The leader got no cacheable answer: this request goes
                // upstream on its own and stores nothing.
                Followed::Released => {
                    ctx.cache.status = Some(status);
                    Ok(Step::Upstream(None))
                }
            }
        }
    }
}

/// Bodies up to this size are copied behind the head (one write); larger
/// ones go out as the stored `Bytes`, uncopied.
const COALESCE: usize = 16 * 1024;

fn framing(stream: bool, length: Option<u64>, version: Version) -> Framing {
    match (stream, length, version) {
        (false, Some(n), _) => Framing::Length(n),
        (_, _, Version::Http11) => Framing::Chunked,
        (_, _, Version::Http10) => Framing::UntilClose,
    }
}

/// A response head for a cached or coalesced answer.
fn head(status: u16, stored: &[u8], framing: Framing, ctx: &RequestCtx<'_>, version: Version) -> BytesMut {
    let extra = &ctx.admission.headers;
    let head = Head {
        status,
        reason: b"",
        framing,
        version,
        keep_alive: ctx.keep_alive,
        lines: &[headers::cache_line(Some(CacheStatus::Hit)), extra],
        request_id: Some(ctx.id.as_bytes()),
    };
    let mut out = BytesMut::with_capacity(256 + stored.len() + extra.len());
    head.write(&mut out, |out| headers::copy_stored(out, stored, !extra.is_empty()));
    out
}

/// Saved tokens and cost, for the record of an answer that cost nothing
/// upstream: the record itself shows zero tokens.
fn note_saved(w: &Worker, ctx: &mut RequestCtx<'_>, usage: Option<Usage>) {
    ctx.response.usage = Some(Usage::default());
    ctx.response.cost_usd = Some(0.0);
    ctx.cache.saved = usage;
    ctx.cache.saved_cost_usd = match (usage, ctx.model.as_deref()) {
        (Some(u), Some(m)) => w.shared.prices.cost(m, &u),
        _ => None,
    };
}

/// Serves a stored entry. A stored stream is replayed as a stream (chunked
/// `text/event-stream`), all of it at once.
async fn serve_hit(w: &Worker, entry: &Entry, io: &mut ClientIo, ctx: &mut RequestCtx<'_>) -> Outcome {
    let version = ctx.version;
    let framing = framing(entry.stream, Some(entry.body.len() as u64), version);
    let mut out = head(entry.status, &entry.headers, framing, ctx, version);
    let body: Option<Bytes> = match framing {
        Framing::Chunked => {
            if entry.body.len() <= COALESCE {
                write::chunk(&mut out, &entry.body);
                out.extend_from_slice(write::LAST_CHUNK);
                None
            } else {
                write::chunk_size_line(&mut out, entry.body.len());
                Some(entry.body.clone())
            }
        }
        // Entries always have a body (`cache::storable`).
        Framing::Empty => None,
        Framing::Length(_) | Framing::UntilClose if entry.body.len() <= COALESCE => {
            out.extend_from_slice(&entry.body);
            None
        }
        Framing::Length(_) | Framing::UntilClose => Some(entry.body.clone()),
    };
    const CHUNKED_END: &[u8] = b"\r\n0\r\n\r\n";
    let chunked_end = if framing == Framing::Chunked { CHUNKED_END.len() } else { 0 };
    let total = out.len() + body.as_ref().map_or(0, |b| b.len() + chunked_end);
    let mut sent = io.send(out).await;
    if let Some(b) = body {
        sent = sent && io.send(b).await;
        if chunked_end > 0 {
            sent = sent && io.send(CHUNKED_END).await;
        }
    }
    ctx.response.status = entry.status;
    ctx.response.ttfb = Some(ctx.started.elapsed());
    ctx.response.bytes_out = if sent { total as u64 } else { 0 };
    ctx.response.response_body = capture::answer_max(w, ctx).map(|max| Capture::whole(max, &entry.body));
    note_saved(w, ctx, entry.usage);
    if !sent {
        ctx.response.error = Some("client_disconnected");
    }
    if sent && ctx.keep_alive && framing != Framing::UntilClose { Outcome::Reusable } else { Outcome::Close }
}

/// How following a flight ended.
enum Followed {
    Done(Outcome),
    /// The leader got no cacheable answer: go upstream alone.
    Released,
}

/// Relays the leader's answer to this follower as it arrives.
async fn follow(
    w: &Worker,
    provider: &str,
    mut f: Follower,
    io: &mut ClientIo,
    ctx: &mut RequestCtx<'_>,
    deadline: Instant,
) -> Result<Followed, GatewayError> {
    let version = ctx.version;
    let mut body = BytesMut::new();
    let mut out = BytesMut::new();
    let mut fr = Framing::Chunked;
    let mut head_sent = false;
    let mut bytes_out = 0u64;
    let mut capture = capture::answer_max(w, ctx).map(Capture::new);
    let outcome = loop {
        let update = match io.timer.bound(deadline, f.next(&mut body)).await {
            Some(u) => u,
            None if !head_sent => {
                return Err(GatewayError::UpstreamTimeout {
                    provider: provider.to_string(),
                    phase: "waiting for an identical request in flight",
                });
            }
            None => break Err("upstream_timeout"),
        };
        match update {
            Update::Released => return Ok(Followed::Released),
            Update::Head(h) => {
                fr = framing(h.stream, h.length, version);
                out = head(h.status, &h.headers, fr, ctx, version);
                head_sent = true;
                ctx.response.status = h.status;
                ctx.response.ttfb = Some(ctx.started.elapsed());
                // The head goes out with the first body bytes, if any are
                // already there.
                continue;
            }
            Update::Data => {
                if let Some(c) = capture.as_mut() {
                    c.feed(&body);
                }
                if fr == Framing::Chunked {
                    write::chunk(&mut out, &body);
                } else {
                    out.extend_from_slice(&body);
                }
                body.clear();
            }
            Update::End(usage) => {
                if fr == Framing::Chunked {
                    out.extend_from_slice(write::LAST_CHUNK);
                }
                let n = out.len() as u64;
                if !out.is_empty() && !io.send(std::mem::take(&mut out)).await {
                    break Err("client_disconnected");
                }
                bytes_out += n;
                note_saved(w, ctx, usage);
                break Ok(());
            }
            Update::Cut => break Err("upstream_cut_short"),
        }
        let n = out.len() as u64;
        if !io.send(std::mem::take(&mut out)).await {
            break Err("client_disconnected");
        }
        bytes_out += n;
    };
    ctx.cache.coalesced = true;
    ctx.response.bytes_out = bytes_out;
    ctx.response.response_body = capture.map(|c| c.text());
    if let Err(e) = outcome {
        ctx.response.error = Some(e);
    }
    Ok(Followed::Done(match outcome {
        Ok(()) if ctx.keep_alive && fr != Framing::UntilClose => Outcome::Reusable,
        _ => Outcome::Close,
    }))
}

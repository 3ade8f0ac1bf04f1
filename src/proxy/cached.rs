//! Answers that do not go upstream: cache hits, and followers of an
//! identical request in flight.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Worker;
use crate::{
    analytics::Record,
    cache::{
        CacheStatus, Entry,
        flight::{Follower, Update},
    },
    error::GatewayError,
    http::{Version, write},
    server::conn::{ClientIo, Outcome, Request},
    tap::Usage,
};

/// Bodies up to this size are copied behind the head (one write); larger
/// ones go out as the stored `Bytes`, uncopied.
const COALESCE: usize = 16 * 1024;

/// How the body is framed for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(stream: bool, length: Option<u64>, version: Version) -> Framing {
    match (stream, length, version) {
        (false, Some(n), _) => Framing::Length(n),
        (_, _, Version::Http11) => Framing::Chunked,
        (_, _, Version::Http10) => Framing::UntilClose,
    }
}

/// A response head for a cached or coalesced answer.
fn head(
    status: u16,
    headers: &[u8],
    framing: Framing,
    req: &Request,
    keep_alive: bool,
    status_header: CacheStatus,
    extra: &[u8],
) -> BytesMut {
    let mut out = BytesMut::with_capacity(256 + headers.len() + extra.len());
    write::status_line(&mut out, Version::Http11, status, b"");
    super::headers::copy_stored(&mut out, headers, !extra.is_empty());
    out.extend_from_slice(extra);
    match framing {
        Framing::Length(n) => write::header_u64(&mut out, b"Content-Length", n),
        Framing::Chunked => write::header(&mut out, b"Transfer-Encoding", b"chunked"),
        Framing::UntilClose => {}
    }
    write::header(&mut out, b"x-aigw-cache-status", status_header.header());
    write::header(&mut out, b"x-aigw-request-id", req.id.as_bytes());
    if !keep_alive || framing == Framing::UntilClose {
        write::header(&mut out, b"Connection", b"close");
    } else if req.head.version() == Version::Http10 {
        write::header(&mut out, b"Connection", b"keep-alive");
    }
    write::end_head(&mut out);
    out
}

/// Saved tokens and cost, for the record of an answer that cost nothing
/// upstream: the record itself shows zero tokens.
fn note_saved(w: &Worker, rec: &mut Record, usage: Option<Usage>) {
    rec.usage = Some(Usage::default());
    rec.cost_usd = Some(0.0);
    rec.saved = usage;
    rec.saved_cost_usd = match (usage, rec.model.as_deref()) {
        (Some(u), Some(m)) => w.shared.prices.cost(m, &u),
        _ => None,
    };
}

/// Serves a stored entry. A stored stream is replayed as a stream (chunked
/// `text/event-stream`), all of it at once.
pub async fn serve_hit(
    w: &Worker,
    entry: &Entry,
    io: &mut ClientIo,
    req: &Request,
    keep_alive: bool,
    extra: &[u8],
    rec: Option<&mut Record>,
) -> Outcome {
    let version = req.head.version();
    let framing = framing(entry.stream, Some(entry.body.len() as u64), version);
    let mut out = head(entry.status, &entry.headers, framing, req, keep_alive, CacheStatus::Hit, extra);
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
    if let Some(r) = rec {
        r.status = entry.status;
        r.ttfb = Some(req.started.elapsed());
        r.bytes_out = if sent { total as u64 } else { 0 };
        note_saved(w, r, entry.usage);
        if !sent {
            r.error = Some("client_disconnected");
        }
    }
    if sent && keep_alive && framing != Framing::UntilClose { Outcome::Reusable } else { Outcome::Close }
}

/// How following a flight ended.
pub enum Followed {
    Done(Outcome),
    /// The leader got no cacheable answer: go upstream alone.
    Released,
}

/// Relays the leader's answer to this follower as it arrives.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    w: &Worker,
    provider: &str,
    mut f: Follower,
    io: &mut ClientIo,
    req: &Request,
    keep_alive: bool,
    deadline: Instant,
    extra: &[u8],
    mut rec: Option<&mut Record>,
) -> Result<Followed, GatewayError> {
    let version = req.head.version();
    let mut body = BytesMut::new();
    let mut out = BytesMut::new();
    let mut fr = Framing::Chunked;
    let mut head_sent = false;
    let mut bytes_out = 0u64;
    let outcome = loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let update = match monoio::time::timeout(wait, f.next(&mut body)).await {
            Ok(u) => u,
            Err(_) if !head_sent => {
                return Err(GatewayError::UpstreamTimeout {
                    provider: provider.to_string(),
                    phase: "waiting for an identical request in flight",
                });
            }
            Err(_) => break Err("upstream_timeout"),
        };
        match update {
            Update::Released => return Ok(Followed::Released),
            Update::Head(h) => {
                fr = framing(h.stream, h.length, version);
                out = head(h.status, &h.headers, fr, req, keep_alive, CacheStatus::Hit, extra);
                head_sent = true;
                if let Some(r) = rec.as_deref_mut() {
                    r.status = h.status;
                    r.ttfb = Some(req.started.elapsed());
                }
                // The head goes out with the first body bytes, if any are
                // already there.
                continue;
            }
            Update::Data => {
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
                if let Some(r) = rec.as_deref_mut() {
                    note_saved(w, r, usage);
                }
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
    if let Some(r) = rec {
        r.coalesced = true;
        r.bytes_out = bytes_out;
        if let Err(e) = outcome {
            r.error = Some(e);
        }
    }
    Ok(Followed::Done(match outcome {
        Ok(()) if keep_alive && fr != Framing::UntilClose => Outcome::Reusable,
        _ => Outcome::Close,
    }))
}

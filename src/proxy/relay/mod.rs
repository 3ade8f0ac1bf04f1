//! Relaying the response body to the client as it arrives.
//!
//! Content-Length bodies are copied read by read (a small body that came
//! with the head goes out in the same write). Chunked and close-delimited
//! bodies are decoded and re-framed as chunks, one client write per
//! upstream read, so an SSE event reaches the client as soon as the
//! upstream sends it. While such a stream runs, a read on the client socket
//! stays pending: if the client leaves, the upstream connection is dropped
//! at once instead of when the next event fails to write.

use std::{pin::pin, time::Instant};

use bytes::{Buf, BytesMut};
use monoio::{
    buf::IoBufMut,
    io::{AsyncWriteRentExt, CancelableAsyncReadRent, Canceller},
};

use super::{
    CacheFill, Worker,
    headers::{ClientFraming, Extras, client_response_head, fresh_head, stored_headers},
    translate::{StreamTranslator, Translation},
};
use crate::{
    analytics::Record,
    cache::{
        CacheStatus, Entry,
        entry::now_unix_ms,
        flight::{FlightHead, Leader},
    },
    http::{
        Version,
        chunked::ChunkedDecoder,
        response::{ParsedResponse as ResponseHeadRef, ResponseFraming},
        write,
    },
    server::conn::{ClientIo, Outcome, Request},
    tap::{Tap, strip::UsageStripper},
    upstream::{Upstream, exchange::ResponseStart, io::Connection},
    util::{Either, race},
};

mod translated;

/// Small bodies are copied behind the head so both go in one write.
const COALESCE: usize = 64 * 1024;

/// How a body relay ended.
enum End {
    /// All of it was relayed; the upstream connection may be pooled.
    Complete {
        reusable: bool,
    },
    /// The upstream failed or timed out mid-body; the client's response is
    /// cut short and its connection must close.
    UpstreamFailed,
    ClientGone,
    /// The client left, but identical requests were following this one:
    /// the upstream body was read to its end for them (and the cache).
    ServedFollowers {
        reusable: bool,
    },
    /// The whole (small) answer is in `out`, not yet sent: the caller
    /// stores it first, so a request right behind this one hits.
    Ready {
        reusable: bool,
        out: BytesMut,
    },
}

/// What the client was sent, for the request record.
#[derive(Default)]
struct Progress {
    bytes_out: u64,
    /// When the response head went out (time to first byte).
    first_write: Option<Instant>,
}

impl Progress {
    fn sent(&mut self, n: usize) {
        self.bytes_out += n as u64;
        self.first_write.get_or_insert_with(Instant::now);
    }
}

/// The cache's part in a relayed response: its status header, and for a
/// cacheable miss the fill that records the answer.
pub struct CacheOut {
    pub status: Option<CacheStatus>,
    pub fill: Option<CacheFill>,
}

/// How a response is relayed besides its body.
pub struct RelayOpts<'a> {
    /// Remove the include_usage chunk the gateway asked for.
    pub strip_usage: bool,
    pub cache: CacheOut,
    /// Header lines to add (`x-ratelimit-*`, `x-aigw-provider`, …).
    pub extra: &'a [u8],
    /// Unified endpoint: the provider's answer becomes OpenAI's.
    pub translation: Translation,
    /// The client asked for the usage chunk (translated streams).
    pub include_usage: bool,
    /// The model the client is told about (translated answers).
    pub model: &'a str,
    /// `response_format` JSON answered through a forced tool (Anthropic).
    pub json_mode: bool,
}

#[allow(clippy::too_many_arguments)]
pub async fn relay(
    w: &Worker,
    up: &Upstream,
    start: ResponseStart,
    io: &mut ClientIo,
    req: &Request,
    keep_alive: bool,
    deadline: Instant,
    rec: Option<&mut Record>,
    opts: RelayOpts<'_>,
) -> Outcome {
    let RelayOpts { strip_usage, cache, extra, translation, include_usage, model, json_mode } = opts;
    let is_sse = response_header(&start.raw_head, &start.head, b"content-type")
        .is_some_and(|ct| ct.windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream")));
    let translated_stream = translation != Translation::None
        && is_sse
        && (200..300).contains(&start.head.status)
        && matches!(start.head.framing, ResponseFraming::Chunked | ResponseFraming::UntilClose);
    if translation != Translation::None && !translated_stream {
        let opts = RelayOpts { strip_usage, cache, extra, translation, include_usage, model, json_mode };
        return translated::relay_whole(w, up, start, io, req, keep_alive, deadline, rec, opts).await;
    }
    let ResponseStart { mut conn, head, raw_head, attempts } = start;
    let client_version = req.head.version();
    let framing = match (head.framing, client_version) {
        (ResponseFraming::Empty, _) => ClientFraming::Empty,
        (ResponseFraming::Length(n), _) => ClientFraming::Length(n),
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http11) => ClientFraming::Chunked,
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http10) => ClientFraming::UntilClose,
    };
    let keep_alive = keep_alive && framing != ClientFraming::UntilClose;
    let extras = Extras { cache: cache.status, lines: extra };
    let out = if translated_stream {
        fresh_head(head.status, b"text/event-stream", framing, client_version, keep_alive, req.id, extras)
    } else {
        client_response_head(&raw_head, &head, framing, client_version, keep_alive, req.id, extras)
    };
    let content_type = response_header(&raw_head, &head, b"content-type");
    let stored = if translated_stream {
        bytes::Bytes::from_static(b"content-type: text/event-stream\r\n")
    } else {
        stored_headers(&raw_head, &head)
    };
    let mut translator =
        translated_stream.then(|| StreamTranslator::new(translation, model, include_usage, json_mode)).flatten();
    let mut fill = cache.fill.map(|leader| CacheFill { headers: stored, ..leader });
    if let Some(f) = fill.as_mut() {
        // Only complete 2xx answers with a body are stored and shared.
        if (200..300).contains(&head.status) && head.status != 206 && head.framing != ResponseFraming::Empty {
            f.leader.head(FlightHead {
                status: head.status,
                headers: f.headers.clone(),
                stream: is_sse,
                length: match framing {
                    ClientFraming::Length(n) => Some(n),
                    _ => None,
                },
            });
        } else {
            f.leader.release();
            fill = None;
        }
    }
    let mut tap = rec.as_ref().map(|_| {
        let tap = Tap::for_content_type(content_type);
        match w.shared.capture {
            Some(max) => tap.capture(max),
            None => tap,
        }
    });
    let mut stripper = (strip_usage && is_sse).then(UsageStripper::new);

    let mut progress = Progress::default();
    let end = match head.framing {
        ResponseFraming::Empty => {
            let n = out.len();
            if io.send(out).await {
                progress.sent(n);
                End::Complete { reusable: conn.buf.is_empty() }
            } else {
                End::ClientGone
            }
        }
        ResponseFraming::Length(n) => {
            let leader = fill.as_mut().map(|f| &mut f.leader);
            relay_length(io, &mut conn, out, n, deadline, &mut tap, leader, &mut progress).await
        }
        ResponseFraming::Chunked | ResponseFraming::UntilClose => {
            let chunked_in = head.framing == ResponseFraming::Chunked;
            let chunked_out = framing == ClientFraming::Chunked;
            let leader = fill.as_mut().map(|f| &mut f.leader);
            let mut filter = Filter {
                tap: &mut tap,
                stripper: stripper.as_mut(),
                translator: translator.as_mut(),
                leader,
                scratch: Vec::new(),
                translated: Vec::new(),
            };
            relay_stream(io, &mut conn, out, chunked_in, chunked_out, deadline, &mut filter, &mut progress).await
        }
    };
    let (mut end, pending) = match end {
        End::Ready { reusable, out } => (End::Complete { reusable }, Some(out)),
        other => (other, None),
    };
    let complete = matches!(end, End::Complete { .. } | End::ServedFollowers { .. });
    let (usage, estimated) = tap.as_mut().map_or((None, false), |t| t.settle(complete));
    if let Some(CacheFill { leader, key, ttl, headers }) = fill
        && complete
    {
        // Usage only when the tap ran (analytics on) and it is exact.
        let usage = usage.filter(|_| !estimated);
        if let Some(body) = leader.finish(usage) {
            let entry = Entry {
                status: head.status,
                headers,
                body,
                stream: is_sse,
                expires_unix_ms: now_unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                provider: up.label.clone(),
                usage,
            };
            w.shared.cache.put(key, entry);
        }
    }
    if let Some(out) = pending {
        let len = out.len();
        if io.send(out).await {
            progress.sent(len);
        } else if let End::Complete { reusable } = end {
            // The answer was whole (and stored): only the client is gone.
            end = End::ServedFollowers { reusable };
        }
    }
    if let Some(rec) = rec {
        rec.status = head.status;
        rec.attempts = attempts;
        rec.bytes_out = progress.bytes_out;
        rec.ttfb = progress.first_write.map(|t| t.saturating_duration_since(req.started));
        (rec.usage, rec.estimated) = (usage, estimated);
        rec.response_body = tap.as_ref().and_then(Tap::captured);
        rec.cost_usd = match (&rec.usage, rec.model.as_deref()) {
            (Some(u), Some(model)) => w.shared.prices.cost(model, u),
            _ => None,
        };
        rec.error = match end {
            End::Complete { .. } => None,
            End::UpstreamFailed => Some("upstream_cut_short"),
            End::ClientGone | End::ServedFollowers { .. } => Some("client_disconnected"),
            End::Ready { .. } => None,
        };
    }
    match end {
        End::Complete { reusable } => {
            if reusable && head.keep_alive {
                w.pool.borrow_mut().put(up.index, conn);
            }
            if keep_alive { Outcome::Reusable } else { Outcome::Close }
        }
        End::UpstreamFailed => {
            log::warn!("provider {}: response cut short (request {})", up.name, req.id.as_str());
            Outcome::Close
        }
        End::ClientGone | End::Ready { .. } => Outcome::Close,
        End::ServedFollowers { reusable } => {
            if reusable && head.keep_alive {
                w.pool.borrow_mut().put(up.index, conn);
            }
            Outcome::Close
        }
    }
}

/// A response header's value, from the upstream's head.
fn response_header<'a>(raw: &'a [u8], head: &ResponseHeadRef, name: &[u8]) -> Option<&'a [u8]> {
    head.headers.iter().find(|h| raw[h.name.clone()].eq_ignore_ascii_case(name)).map(|h| &raw[h.value.clone()])
}

#[allow(clippy::too_many_arguments)]
async fn relay_length(
    io: &mut ClientIo,
    conn: &mut Connection,
    mut out: BytesMut,
    n: u64,
    deadline: Instant,
    tap: &mut Option<Tap>,
    mut leader: Option<&mut Leader>,
    progress: &mut Progress,
) -> End {
    let mut left = n;
    // The client left while identical requests follow: read on for them.
    let mut client_gone = false;
    let followers = |leader: &Option<&mut Leader>| leader.as_ref().is_some_and(|l| l.has_followers());
    loop {
        let take = conn.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        left -= take as u64;
        if let Some(t) = tap.as_mut() {
            t.observe(&conn.buf[..take]);
        }
        if let Some(l) = leader.as_deref_mut() {
            l.data(&conn.buf[..take]);
        }
        if client_gone {
            conn.buf.advance(take);
        } else if left == 0 && out.len() + take <= COALESCE {
            out.extend_from_slice(&conn.buf[..take]);
            conn.buf.advance(take);
            return End::Ready { reusable: conn.buf.is_empty(), out };
        } else {
            if !out.is_empty() {
                let len = out.len();
                if io.send(std::mem::take(&mut out)).await {
                    progress.sent(len);
                } else {
                    client_gone = true;
                }
            }
            if take > 0 {
                let chunk = conn.buf.split_to(take).freeze();
                if client_gone {
                    // Dropped: only the followers need it (they got it above).
                } else if io.send(chunk).await {
                    progress.sent(take);
                } else {
                    client_gone = true;
                }
            }
        }
        if client_gone && !followers(&leader) {
            return End::ClientGone;
        }
        if left == 0 {
            let reusable = conn.buf.is_empty();
            return if client_gone { End::ServedFollowers { reusable } } else { End::Complete { reusable } };
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return End::UpstreamFailed,
        }
    }
}

/// What a stream passes through on its way out: the tap sees the bytes as
/// the upstream sent them; the stripper, when the gateway added
/// include_usage, takes that back out.
struct Filter<'a> {
    tap: &'a mut Option<Tap>,
    stripper: Option<&'a mut UsageStripper>,
    /// Unified endpoint: the provider's events become OpenAI chunks.
    translator: Option<&'a mut StreamTranslator>,
    /// A cacheable miss: the bytes the client sees are kept and fanned out.
    leader: Option<&'a mut Leader>,
    scratch: Vec<u8>,
    translated: Vec<u8>,
}

impl Filter<'_> {
    /// Identical requests are following this one (see `End::ServedFollowers`).
    fn has_followers(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.has_followers())
    }

    fn put(&mut self, out: &mut BytesMut, data: &[u8], chunked_out: bool) {
        if let Some(t) = self.tap.as_mut() {
            t.observe(data);
        }
        let data = match self.translator.as_mut() {
            Some(tr) => {
                self.translated.clear();
                tr.feed(data, &mut self.translated);
                &self.translated[..]
            }
            None => data,
        };
        let data = match self.stripper.as_mut() {
            Some(s) => {
                self.scratch.clear();
                s.feed(data, &mut self.scratch);
                &self.scratch[..]
            }
            None => data,
        };
        if let Some(l) = self.leader.as_deref_mut() {
            l.data(data);
        }
        if chunked_out { write::chunk(out, data) } else { out.extend_from_slice(data) }
    }

    /// The upstream body ended: release what the stripper still holds and
    /// the translator's last events.
    fn end(&mut self, out: &mut BytesMut, chunked_out: bool) {
        if let Some(tr) = self.translator.as_mut() {
            self.translated.clear();
            tr.finish(&mut self.translated);
            if let Some(l) = self.leader.as_deref_mut() {
                l.data(&self.translated);
            }
            if chunked_out { write::chunk(out, &self.translated) } else { out.extend_from_slice(&self.translated) }
        }
        if let Some(s) = self.stripper.as_mut() {
            self.scratch.clear();
            s.finish(&mut self.scratch);
            if let Some(l) = self.leader.as_deref_mut() {
                l.data(&self.scratch);
            }
            if chunked_out { write::chunk(out, &self.scratch) } else { out.extend_from_slice(&self.scratch) }
        }
    }
}

/// Moves what `conn.buf` holds into `out`, framed for the client, through
/// the filter. Returns true when the upstream body is complete.
fn frame(
    conn: &mut Connection,
    decoder: &mut Option<ChunkedDecoder>,
    out: &mut BytesMut,
    chunked_out: bool,
    filter: &mut Filter<'_>,
) -> Result<bool, ()> {
    match decoder {
        Some(dec) => {
            let buf = &conn.buf;
            let consumed = dec.decode_all(buf, |r| filter.put(out, &buf[r], chunked_out)).map_err(|_| ())?;
            conn.buf.advance(consumed);
            Ok(dec.is_done())
        }
        None => {
            filter.put(out, &conn.buf, chunked_out);
            conn.buf.clear();
            Ok(false)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn relay_stream(
    io: &mut ClientIo,
    conn: &mut Connection,
    mut out: BytesMut,
    chunked_in: bool,
    chunked_out: bool,
    deadline: Instant,
    filter: &mut Filter<'_>,
    progress: &mut Progress,
) -> End {
    let ClientIo { rd, wr, buf: client_buf } = io;
    let mut decoder = chunked_in.then(ChunkedDecoder::new);

    // Watch the client: its read stays pending for the whole stream (plain
    // TCP only; see `ClientRead::cancelable`).
    let canceller = Canceller::new();
    let plain = rd.cancelable();
    let mut watching = plain.is_some();
    let mut watch_buf = if watching { std::mem::take(client_buf) } else { BytesMut::new() };
    watch_buf.reserve(1024);
    let len = watch_buf.len();
    let handle = canceller.handle();
    let mut watch = pin!(async move {
        match plain {
            Some(rd) => rd.cancelable_read(watch_buf.slice_mut(len..), handle).await,
            None => std::future::pending().await,
        }
    });

    // Set when the client left while identical requests follow this one:
    // the upstream is read to its end for them; nothing more is written.
    let mut client_gone = false;
    let end = loop {
        let done = match frame(conn, &mut decoder, &mut out, chunked_out, filter) {
            Ok(done) => done,
            Err(()) => break End::UpstreamFailed,
        };
        if done {
            filter.end(&mut out, chunked_out);
            if chunked_out {
                out.extend_from_slice(write::LAST_CHUNK);
            }
            let reusable = conn.buf.is_empty();
            if client_gone {
                break End::ServedFollowers { reusable };
            }
            let len = out.len();
            let sent = wr.write_all(std::mem::take(&mut out)).await.0.is_ok();
            if sent {
                progress.sent(len);
            }
            break match (sent, filter.has_followers()) {
                (true, _) => End::Complete { reusable },
                (false, true) => End::ServedFollowers { reusable },
                (false, false) => End::ClientGone,
            };
        }
        if client_gone {
            out.clear();
        } else if !out.is_empty() {
            let len = out.len();
            let (res, back) = wr.write_all(std::mem::take(&mut out)).await;
            out = back;
            out.clear();
            match (res.is_ok(), filter.has_followers()) {
                (true, _) => progress.sent(len),
                (false, true) => client_gone = true,
                (false, false) => break End::ClientGone,
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let mut read = pin!(monoio::time::timeout(wait, conn.read_more()));
        let result = if watching {
            match race(read.as_mut(), watch.as_mut()).await {
                Either::Left(r) => r,
                Either::Right((Ok(n), slice)) if n > 0 => {
                    // Pipelined bytes from the client, not a close: keep
                    // them for the next request and stop watching.
                    *client_buf = slice.into_inner();
                    watching = false;
                    read.await
                }
                Either::Right(_) => {
                    watching = false;
                    if !filter.has_followers() {
                        break End::ClientGone;
                    }
                    client_gone = true;
                    read.await
                }
            }
        } else {
            read.await
        };
        match result {
            Ok(Ok(0)) if decoder.is_none() => {
                // Close-delimited body: the close is its end.
                filter.end(&mut out, chunked_out);
                if chunked_out {
                    out.extend_from_slice(write::LAST_CHUNK);
                }
                if client_gone {
                    break End::ServedFollowers { reusable: false };
                }
                let len = out.len();
                let sent = out.is_empty() || wr.write_all(std::mem::take(&mut out)).await.0.is_ok();
                if sent {
                    progress.sent(len);
                }
                break if sent { End::Complete { reusable: false } } else { End::ClientGone };
            }
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break End::UpstreamFailed,
            Ok(Ok(_)) => {}
        }
    };
    if watching {
        canceller.cancel();
        // Whether cancelled or completed, the buffer holds every byte the
        // client sent: what was buffered before plus anything read since.
        let (_, slice) = watch.await;
        *client_buf = slice.into_inner();
    }
    end
}

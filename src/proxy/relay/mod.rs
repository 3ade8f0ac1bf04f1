//! Relaying the response body to the client as it arrives.
//!
//! Content-Length bodies are copied read by read (a small body that came
//! with the head goes out in the same write). Chunked and close-delimited
//! bodies are decoded and re-framed as chunks, one client write per
//! upstream read, through the filter chain (`filter.rs`), so an SSE event
//! reaches the client as soon as the upstream sends it. While such a stream
//! runs, a read on the client socket stays pending: if the client leaves,
//! the upstream connection is dropped at once instead of when the next
//! event fails to write. Translated answers that are not streams are read
//! whole (`whole.rs`), and so are answers a response guardrail reads before
//! they are sent. Every way a relay ends goes through `conclude`.

mod filter;
mod whole;

pub(crate) use whole::read_whole;

use std::{pin::pin, time::Instant};

use bytes::{Buf, Bytes, BytesMut};
use monoio::{
    buf::IoBufMut,
    io::{AsyncWriteRentExt, CancelableAsyncReadRent, Canceller},
};

use self::filter::Filter;
use super::{
    Worker,
    capture::{self, Capture},
    ctx::RequestCtx,
    guard::{self, ResponseGuard},
    headers,
};
use crate::{
    cache::{Fill, Stored, flight::FlightHead},
    http::{
        Version,
        chunked::ChunkedDecoder,
        respond::{Framing, Head},
        response::{ParsedResponse, ResponseFraming},
        write,
    },
    providers::{StreamFormat, Translation, translate::StreamTranslator},
    service::{ClientIo, Outcome},
    tap::{Tap, strip::UsageStripper},
    upstream::{Upstream, exchange::ResponseStart, io::Connection},
    util::{Either, race},
};

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
    /// The upstream's answer was read to its end and its last bytes are in
    /// `out`, not yet sent: a small answer whole, or a stream's last events
    /// and terminator. `conclude` stores and debits first, so a request
    /// right behind this one hits and is admitted against the debit.
    Ready {
        reusable: bool,
        out: BytesMut,
    },
}

impl End {
    /// The upstream's answer was read to its end.
    fn complete(&self) -> bool {
        matches!(self, End::Complete { .. } | End::ServedFollowers { .. } | End::Ready { .. })
    }
}

/// What the client was sent.
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

/// The answer an attempt got, and how to relay it.
pub struct Answer<'a> {
    pub up: &'a Upstream,
    pub start: ResponseStart,
    /// Remove the include_usage chunk the gateway asked for.
    pub strip_usage: bool,
    /// Unified endpoint: the provider's answer becomes OpenAI's.
    pub translation: Translation,
    /// The model the client is told about (translated answers only).
    pub model: String,
    /// `response_format` JSON answered through a forced tool (Anthropic).
    pub json_mode: bool,
    pub deadline: Instant,
    /// A cacheable miss: where the answer goes once complete.
    pub fill: Option<Fill>,
    /// `x-aigw-provider` and `x-aigw-attempts` lines (routed requests).
    pub routed: Vec<u8>,
    /// The client's request body: input tokens are counted from it when
    /// the provider reports none.
    pub prompt: Bytes,
    /// How the upstream's stream says it ended whole.
    pub format: StreamFormat,
}

/// Whether a Content-Type is an event stream.
fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| ct.windows(17).any(|w| w.eq_ignore_ascii_case(b"text/event-stream")))
}

/// A response header's value, from the upstream's head.
fn response_header<'a>(raw: &'a [u8], head: &ParsedResponse, name: &[u8]) -> Option<&'a [u8]> {
    head.headers.iter().find(|h| raw[h.name.clone()].eq_ignore_ascii_case(name)).map(|h| &raw[h.value.clone()])
}

/// How the client's body is framed, from the upstream's.
fn client_framing(upstream: ResponseFraming, version: Version) -> Framing {
    match (upstream, version) {
        (ResponseFraming::Empty, _) => Framing::Empty,
        (ResponseFraming::Length(n), _) => Framing::Length(n),
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http11) => Framing::Chunked,
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http10) => Framing::UntilClose,
    }
}

/// A function returning an async block rather than an `async fn`, which
/// would keep a second copy of the answer (464 bytes) in every
/// connection's task.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn relay<'a>(
    w: &'a Worker,
    ctx: &'a mut RequestCtx<'_>,
    a: Answer<'a>,
    io: &'a mut ClientIo,
) -> impl Future<Output = Outcome> + 'a {
    async move {
        let start = &a.start;
        let content_type = response_header(&start.raw_head, &start.head, b"content-type");
        let is_sse = is_event_stream(content_type);
        let streamed = is_sse
            && (200..300).contains(&start.head.status)
            && matches!(start.head.framing, ResponseFraming::Chunked | ResponseFraming::UntilClose);
        let translated_stream = a.translation != Translation::None && streamed;
        let guard_whole = guard::reads_whole(ctx, start.head.status, content_type)
            && !streamed
            && start.head.framing != ResponseFraming::Empty;
        if (a.translation != Translation::None && !translated_stream) || guard_whole {
            // Boxed: the whole-answer relay's state is the largest of the
            // relay's, and inline every connection's task would carry it.
            return Box::pin(whole::relay_whole(w, ctx, a, io)).await;
        }
        let mut tap = Tap::for_content_type(content_type);
        if !w.counts_tokens(ctx) {
            tap.set_not_counting();
        }
        tap.set_stream_format(a.format);
        let Answer { up, start, strip_usage, translation, model, json_mode, deadline, fill, routed, prompt, format } =
            a;
        // The upstream's own `x-ratelimit-*` give way when the gateway adds lines.
        let gateway_lines = !ctx.admission.headers.is_empty() || !routed.is_empty();
        let ResponseStart { mut conn, head, raw_head, .. } = start;
        let framing = client_framing(head.framing, ctx.version);
        let keep_alive = ctx.keep_alive && framing != Framing::UntilClose;
        let client_head = Head {
            status: head.status,
            reason: if translated_stream { b"" } else { &raw_head[head.reason.clone()] },
            framing,
            version: ctx.version,
            keep_alive,
            lines: &[headers::cache_line(ctx.cache.status), &ctx.admission.headers, &routed],
            request_id: Some(ctx.id.as_bytes()),
        };
        let head_room = raw_head.len() + ctx.admission.headers.len() + routed.len() + 160;
        // A short answer of known length goes out with its head in one
        // write (`Pump::length`): room for it now rather than a regrowth
        // (an allocation and a copy of the head) when it arrives.
        let body_room = match head.framing {
            ResponseFraming::Length(n) => {
                usize::try_from(n).ok().filter(|&n| n <= COALESCE.saturating_sub(head_room)).unwrap_or(0)
            }
            _ => 0,
        };
        let mut out = BytesMut::with_capacity(head_room + body_room);
        if translated_stream {
            client_head.write(&mut out, |out| write::header(out, b"Content-Type", b"text/event-stream"));
        } else {
            let has_body = framing != Framing::Empty;
            client_head.write(&mut out, |out| headers::upstream_lines(out, &raw_head, &head, has_body, gateway_lines));
        }
        // The headers a cache entry keeps: built only for an answer being
        // stored (most are not).
        let stored = match (&fill, translated_stream) {
            (None, _) => Bytes::new(),
            (Some(_), true) => Bytes::from_static(b"content-type: text/event-stream\r\n"),
            (Some(_), false) => headers::stored_headers(&raw_head, &head),
        };
        let flight_head = FlightHead {
            status: head.status,
            headers: stored.clone(),
            stream: is_sse,
            length: match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            },
        };
        let mut fill = fill.and_then(|f| f.start(flight_head, head.framing != ResponseFraming::Empty));

        let mut filter = Filter::new(&mut tap, fill.as_mut().map(|f| &mut f.leader), framing == Framing::Chunked);
        if translated_stream {
            filter.translator = StreamTranslator::new(translation, &model, ctx.facts.stream_options_usage(), json_mode);
        }
        filter.stripper = (strip_usage && is_sse).then(UsageStripper::new);
        filter.capture = capture::answer_max(w, ctx).map(Capture::new);
        if streamed {
            let client_format = if translated_stream { StreamFormat::OpenAiChat } else { format };
            filter.guard = ResponseGuard::for_stream(w, ctx, client_format);
        }
        let mut pump = Pump { io: &mut *io, conn: &mut conn, deadline, progress: Progress::default() };
        let end = match head.framing {
            ResponseFraming::Empty => {
                let n = out.len();
                if pump.io.send(out).await {
                    pump.progress.sent(n);
                    End::Complete { reusable: pump.conn.buf.is_empty() }
                } else {
                    End::ClientGone
                }
            }
            ResponseFraming::Length(n) => pump.length(out, n, &mut filter).await,
            ResponseFraming::Chunked | ResponseFraming::UntilClose => {
                pump.stream(out, head.framing == ResponseFraming::Chunked, &mut filter).await
            }
        };
        let cut = filter.cut;
        let guard = filter.guard.take();
        let captured = filter.capture.take().map(|c| c.text());
        drop(filter);
        if let Some(g) = guard {
            g.conclude(ctx);
        }
        let progress = pump.progress;
        let stored =
            Stored { status: head.status, headers: stored, stream: is_sse, provider: up.label.clone(), usage: None };
        let fill = fill.map(|f| (f, stored));
        let concluded = Concluded {
            up,
            conn,
            upstream: &head,
            status: head.status,
            cause: cut,
            tap,
            fill,
            progress,
            prompt,
            format,
            captured,
        };
        conclude(w, ctx, concluded, end, io).await
    }
}

/// A relay's end, whichever way it ended.
struct Concluded<'a> {
    up: &'a Upstream,
    conn: Connection,
    /// The upstream's head: whether it keeps the connection, and whether it
    /// answered 2xx (and so bills the request, whatever the client got).
    upstream: &'a ParsedResponse,
    /// The status the client was sent.
    status: u16,
    /// A more specific cause than the end's own (`upstream_cut_short`)
    /// for the record: an oversized event, an untranslatable answer.
    cause: Option<&'static str>,
    tap: Tap,
    /// A cacheable answer: the flight, and what its entry keeps.
    fill: Option<(Fill, Stored)>,
    progress: Progress,
    prompt: Bytes,
    format: StreamFormat,
    /// The start of the answer the client received (`filter::Capture`).
    captured: Option<String>,
}

/// The one end of every relay: usage from the tap, the cache store
/// decision and the token and budget debits (both before the held last
/// bytes go out, so a request the client sends as soon as it has the
/// answer hits the cache and is admitted against the debit, on any
/// worker), the context's response facts, the pooled connection.
async fn conclude(w: &Worker, ctx: &mut RequestCtx<'_>, c: Concluded<'_>, end: End, io: &mut ClientIo) -> Outcome {
    let Concluded { up, conn, upstream, status, cause, mut tap, fill, mut progress, prompt, format, captured } = c;
    // A provider bills a model call that answered 2xx. A request with
    // neither a body nor a model (GET /v1/models, a file download) is no
    // model call: without reported usage it costs no tokens, rather than
    // the never-zero estimate a model call gets.
    let model_call = !prompt.is_empty() || ctx.model.is_some();
    let billed = (200..300).contains(&upstream.status) && model_call;
    let complete = end.complete();
    let (usage, estimated) = tap.settle(complete, billed, || crate::tap::estimate::input_tokens(&prompt));
    if let Some((fill, stored)) = fill
        && complete
    {
        // A stream is stored only if it ended as its format ends a whole,
        // successful answer (`providers::StreamFormat`); stored usage only
        // when the provider reported it exactly.
        let store = !tap.is_stream() || format.complete(tap.signals());
        fill.complete(&w.shared.cache, Stored { usage: usage.filter(|_| !estimated), ..stored }, store);
    }
    let r = &mut ctx.response;
    (r.usage, r.estimated) = (usage, estimated);
    r.cost_usd = match (&r.usage, ctx.model.as_deref()) {
        (Some(u), Some(model)) => w.shared.prices.cost(model, u),
        _ => None,
    };
    super::access::settle(w, ctx);
    let mut end = end;
    if let End::Ready { reusable, out } = end {
        let len = out.len();
        end = if out.is_empty() || io.send(out).await {
            progress.sent(len);
            End::Complete { reusable }
        } else {
            // The answer was read whole (and stored): only the client is gone.
            End::ServedFollowers { reusable }
        };
    }
    let r = &mut ctx.response;
    r.status = status;
    r.bytes_out = progress.bytes_out;
    r.ttfb = progress.first_write.map(|t| t.saturating_duration_since(ctx.started));
    r.response_body = captured;
    // The client leaving is what the record says first; otherwise a known
    // cause says more than "cut short".
    r.error = match end {
        End::ClientGone | End::ServedFollowers { .. } => Some("client_disconnected"),
        End::UpstreamFailed => cause.or(Some("upstream_cut_short")),
        End::Complete { .. } | End::Ready { .. } => cause,
    };
    let keep_alive = upstream.keep_alive;
    let pool = |reusable: bool| {
        if reusable && keep_alive {
            w.pool.borrow_mut().put(up.index, conn);
        }
    };
    match end {
        End::Complete { reusable } => {
            pool(reusable);
            if ctx.keep_alive { Outcome::Reusable } else { Outcome::Close }
        }
        End::UpstreamFailed => {
            log::warn!("provider {}: response cut short (request {})", up.name, ctx.id.as_str());
            Outcome::Close
        }
        End::ClientGone | End::Ready { .. } => Outcome::Close,
        End::ServedFollowers { reusable } => {
            pool(reusable);
            Outcome::Close
        }
    }
}

/// Moves one response body from the upstream connection to the client.
struct Pump<'a> {
    io: &'a mut ClientIo,
    conn: &'a mut Connection,
    deadline: Instant,
    progress: Progress,
}

impl Pump<'_> {
    /// A Content-Length body, relayed byte for byte.
    async fn length(&mut self, mut out: BytesMut, n: u64, filter: &mut Filter<'_>) -> End {
        let Pump { io, conn, deadline, progress } = self;
        let mut left = n;
        // The client left while identical requests follow: read on for them.
        let mut client_gone = false;
        loop {
            let take = conn.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            left -= take as u64;
            filter.observe(&conn.buf[..take]);
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
            if client_gone && !filter.has_followers() {
                return End::ClientGone;
            }
            if left == 0 {
                let reusable = conn.buf.is_empty();
                return if client_gone { End::ServedFollowers { reusable } } else { End::Complete { reusable } };
            }
            match conn.read_by(&mut io.timer, *deadline).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return End::UpstreamFailed,
            }
        }
    }
}

/// Moves what `conn.buf` holds into `out`, framed for the client, through
/// the filter. Returns true when the upstream body is complete.
fn frame(
    conn: &mut Connection,
    decoder: &mut Option<ChunkedDecoder>,
    out: &mut BytesMut,
    filter: &mut Filter<'_>,
) -> Result<bool, ()> {
    match decoder {
        Some(dec) => {
            let buf = &conn.buf;
            let consumed = dec.decode_all(buf, |r| filter.put(out, &buf[r])).map_err(|_| ())?;
            conn.buf.advance(consumed);
            Ok(dec.is_done())
        }
        None => {
            filter.put(out, &conn.buf);
            conn.buf.clear();
            Ok(false)
        }
    }
}

impl Pump<'_> {
    /// A chunked or close-delimited body, re-framed for the client through
    /// the filter chain.
    async fn stream(&mut self, mut out: BytesMut, chunked_in: bool, filter: &mut Filter<'_>) -> End {
        let Pump { io, conn, deadline, progress } = self;
        let chunked_out = filter.chunked_out;
        let ClientIo { rd, wr, buf: client_buf, timer } = &mut **io;
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
            let done = match frame(conn, &mut decoder, &mut out, filter) {
                // An event past the caps: the stream is cut (`Filter::cut`).
                Ok(_) if filter.cut.is_some() => break End::UpstreamFailed,
                Ok(done) => done,
                Err(()) => break End::UpstreamFailed,
            };
            if done {
                filter.end(&mut out);
                if chunked_out {
                    out.extend_from_slice(write::LAST_CHUNK);
                }
                let reusable = conn.buf.is_empty();
                if client_gone {
                    break End::ServedFollowers { reusable };
                }
                // The last bytes go out from `conclude`, after the debits.
                break End::Ready { reusable, out: std::mem::take(&mut out) };
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
            let mut read = pin!(conn.read_by(timer, *deadline));
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
                Some(Ok(0)) if decoder.is_none() => {
                    // Close-delimited body: the close is its end.
                    filter.end(&mut out);
                    if chunked_out {
                        out.extend_from_slice(write::LAST_CHUNK);
                    }
                    if client_gone {
                        break End::ServedFollowers { reusable: false };
                    }
                    break End::Ready { reusable: false, out: std::mem::take(&mut out) };
                }
                Some(Ok(0)) | Some(Err(_)) | None => break End::UpstreamFailed,
                Some(Ok(_)) => {}
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
}

//! Answers read whole before anything is sent, then sent with their own
//! length: translated answers that are not streams (JSON, and every
//! error), and successful answers a response guardrail must read first.

use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};

use super::{Answer, Concluded, End, Progress, conclude, response_header};
use crate::{
    cache::{Stored, flight::FlightHead},
    error::GatewayError,
    http::{
        chunked::ChunkedDecoder,
        respond::{Framing, Head, To},
        response::ResponseFraming,
    },
    providers::{StreamFormat, Translation, translate},
    proxy::{
        Worker,
        capture::{self, Capture},
        ctx::RequestCtx,
        guard, headers,
    },
    service::{ClientIo, Outcome},
    tap::{Tap, strip::UsageStripper},
    upstream::{exchange::ResponseStart, io::Connection},
    util::timer::Timer,
};

/// Largest provider answer translated whole.
const MAX_WHOLE: usize = 32 << 20;

/// Reads the whole body; Ok((body, connection reusable)).
pub(crate) async fn read_whole(
    conn: &mut Connection,
    framing: ResponseFraming,
    deadline: Instant,
    timer: &mut Timer,
) -> Result<(Vec<u8>, bool), ()> {
    let mut more = async |conn: &mut Connection| -> Result<usize, ()> {
        match conn.read_by(timer, deadline).await {
            Some(Ok(n)) => Ok(n),
            _ => Err(()),
        }
    };
    match framing {
        ResponseFraming::Empty => Ok((Vec::new(), conn.buf.is_empty())),
        ResponseFraming::Length(n) => {
            let n = usize::try_from(n).ok().filter(|&n| n <= MAX_WHOLE).ok_or(())?;
            while conn.buf.len() < n {
                if more(conn).await? == 0 {
                    return Err(());
                }
            }
            let body = conn.buf[..n].to_vec();
            conn.buf.advance(n);
            Ok((body, conn.buf.is_empty()))
        }
        ResponseFraming::Chunked => {
            let mut dec = ChunkedDecoder::new();
            let mut body = Vec::new();
            loop {
                let buf = &conn.buf;
                let used = dec.decode_all(buf, |r| body.extend_from_slice(&buf[r])).map_err(|_| ())?;
                conn.buf.advance(used);
                if dec.is_done() {
                    return Ok((body, conn.buf.is_empty()));
                }
                if body.len() > MAX_WHOLE || more(conn).await? == 0 {
                    return Err(());
                }
            }
        }
        ResponseFraming::UntilClose => {
            loop {
                if conn.buf.len() > MAX_WHOLE {
                    return Err(());
                }
                if more(conn).await? == 0 {
                    break;
                }
            }
            Ok((std::mem::take(&mut conn.buf).to_vec(), false))
        }
    }
}

/// Reads the provider's whole answer, translates it and runs the response
/// guardrails over it (as they apply), and sends it with its own length. A
/// body that breaks off, or cannot be translated or read, is the gateway's
/// 502: nothing had gone to the client yet.
pub async fn relay_whole(w: &Worker, ctx: &mut RequestCtx<'_>, a: Answer<'_>, io: &mut ClientIo) -> Outcome {
    let Answer { up, start, strip_usage, translation, model, json_mode, deadline, fill, routed, prompt, format } = a;
    let ResponseStart { mut conn, head, raw_head, .. } = start;
    let content_type = response_header(&raw_head, &head, b"content-type");
    let is_sse = super::is_event_stream(content_type);
    // The stream's end markers are the provider's, as a relayed body's.
    let mut tap = Tap::for_content_type(content_type);
    if !w.counts_tokens(ctx) {
        tap.set_not_counting();
    }
    tap.set_stream_format(format);
    let translated = translation != Translation::None;
    let whole = read_whole(&mut conn, head.framing, deadline, &mut io.timer).await;
    let (answer, end) = match whole {
        Ok((body, reusable)) => {
            tap.observe(&body);
            let answer = if translated {
                translate::response(translation, head.status, &body, &model, json_mode)
                    .map(|(status, json)| (status, json.into_bytes()))
                    .map_err(|detail| GatewayError::Untranslatable { provider: up.name.clone(), detail })
            } else if strip_usage && is_sse {
                Ok((head.status, strip(&body)))
            } else {
                Ok((head.status, body))
            };
            // The client's format: a translated answer is OpenAI's.
            let client_format = if translated { StreamFormat::OpenAiChat } else { format };
            let answer = answer.and_then(|(status, body)| {
                if guard::reads_whole(ctx, status, if translated { Some(b"application/json") } else { content_type }) {
                    let sse = is_sse && !translated;
                    guard::answer(w, ctx, &up.name, client_format, sse, body).map(|b| (status, b))
                } else {
                    Ok((status, body))
                }
            });
            (answer, End::Complete { reusable })
        }
        Err(()) => (Err(GatewayError::UpstreamCutShort { provider: up.name.clone() }), End::UpstreamFailed),
    };
    let (status, body) = match &answer {
        Ok((status, body)) => (*status, body.clone()),
        // The gateway's own error, with the answer's usual lines.
        Err(e) => (e.status(), e.body().into_bytes()),
    };
    let lines = [headers::cache_line(ctx.cache.status), &ctx.admission.headers, &routed];
    // An untranslated answer keeps the provider's own headers.
    let own = answer.is_ok() && !translated;
    let out = if own {
        let head_out = Head {
            status,
            reason: &raw_head[head.reason.clone()],
            framing: Framing::Length(body.len() as u64),
            version: ctx.version,
            keep_alive: ctx.keep_alive,
            lines: &lines,
            request_id: Some(ctx.id.as_bytes()),
        };
        let gateway_lines = !ctx.admission.headers.is_empty() || !routed.is_empty();
        let mut out = BytesMut::with_capacity(raw_head.len() + body.len() + 256);
        head_out.write(&mut out, |out| headers::upstream_lines(out, &raw_head, &head, true, gateway_lines));
        out.extend_from_slice(&body);
        out
    } else {
        let to = To { version: ctx.version, keep_alive: ctx.keep_alive, request_id: Some(ctx.id.as_bytes()) };
        Head::with_body(status, b"application/json", &body, &lines, to)
    };
    let mut fill = fill;
    // Built only for an answer being stored: most are not.
    let stored_headers = match (&fill, own) {
        (None, _) => Bytes::new(),
        (Some(_), true) => headers::stored_headers(&raw_head, &head),
        (Some(_), false) => Bytes::from_static(b"content-type: application/json\r\n"),
    };
    if let Some(f) = fill.take() {
        // Only a 2xx answer is stored (the gateway's 502 never).
        let storable = answer.is_ok() && end.complete();
        let fh =
            FlightHead { status, headers: stored_headers.clone(), stream: is_sse, length: Some(body.len() as u64) };
        fill = f.start(fh, storable).map(|mut f| {
            f.leader.data(&body);
            f
        });
    }
    let stored = Stored { status, headers: stored_headers, stream: is_sse, provider: up.label.clone(), usage: None };
    let mut progress = Progress::default();
    let len = out.len();
    let end = match (end, answer.is_ok()) {
        // Held until the answer is stored, like a small relayed one.
        (End::Complete { reusable }, true) => End::Ready { reusable, out },
        (end, _) => {
            if io.send(out).await {
                progress.sent(len);
                end
            } else if end.complete() {
                End::ClientGone
            } else {
                end
            }
        }
    };
    let fill = fill.map(|f| (f, stored));
    let cause = answer.err().map(|e| e.code());
    // The log keeps what the client was sent (translated, redacted).
    let captured = capture::answer_max(w, ctx).map(|max| Capture::whole(max, &body));
    let concluded =
        Concluded { up, conn, upstream: &head, status, cause, tap, fill, progress, prompt, format, captured };
    conclude(w, ctx, concluded, end, io).await
}

/// A whole event stream without the usage chunk the gateway asked for.
fn strip(body: &[u8]) -> Vec<u8> {
    let mut s = UsageStripper::new();
    let mut out = Vec::with_capacity(body.len());
    // An event past the caps is dropped here (the stream's end is whole).
    let _ = s.feed(body, &mut out);
    s.finish(&mut out);
    out
}

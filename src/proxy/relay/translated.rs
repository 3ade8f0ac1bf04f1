//! Translated answers that are not streams (JSON, and every error): read
//! whole, translated, sent with their own length.

use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{Answer, Concluded, End, Progress, conclude, response_header};
use crate::{
    cache::{Stored, flight::FlightHead},
    error::GatewayError,
    http::{
        chunked::ChunkedDecoder,
        respond::{Head, To},
        response::ResponseFraming,
    },
    providers::translate,
    proxy::{Worker, ctx::RequestCtx, headers},
    service::{ClientIo, Outcome},
    tap::Tap,
    upstream::{exchange::ResponseStart, io::Connection},
};

/// Largest provider answer translated whole.
const MAX_WHOLE: usize = 32 << 20;

/// Reads the whole body; Ok((body, connection reusable)).
async fn read_whole(conn: &mut Connection, framing: ResponseFraming, deadline: Instant) -> Result<(Vec<u8>, bool), ()> {
    let more = async |conn: &mut Connection| -> Result<usize, ()> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, conn.read_more()).await {
            Ok(Ok(n)) => Ok(n),
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
            let body = conn.buf.split_to(n).to_vec();
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

/// Reads the provider's whole answer, translates it, and sends it with its
/// own length. A body that breaks off, or cannot be translated, is the
/// gateway's 502: nothing had gone to the client yet.
pub async fn relay_whole(w: &Worker, ctx: &mut RequestCtx<'_>, a: Answer<'_>, io: &mut ClientIo) -> Outcome {
    let Answer { up, start, translation, model, json_mode, deadline, fill, routed, prompt, format, .. } = a;
    let ResponseStart { mut conn, head, raw_head, .. } = start;
    let mut tap = Tap::for_content_type(response_header(&raw_head, &head, b"content-type"));
    if !w.counts_tokens(ctx) {
        tap = tap.not_counting();
    }
    let whole = read_whole(&mut conn, head.framing, deadline).await;
    let (answer, end) = match whole {
        Ok((body, reusable)) => {
            tap.observe(&body);
            let translated = translate::response(translation, head.status, &body, &model, json_mode)
                .map_err(|detail| GatewayError::Untranslatable { provider: up.name.clone(), detail });
            (translated, End::Complete { reusable })
        }
        Err(()) => (Err(GatewayError::UpstreamCutShort { provider: up.name.clone() }), End::UpstreamFailed),
    };
    let (status, json) = match &answer {
        Ok((status, json)) => (*status, json.clone()),
        // The gateway's own error, with the answer's usual lines.
        Err(e) => (e.status(), e.body()),
    };
    let to = To { version: ctx.version, keep_alive: ctx.keep_alive, request_id: Some(ctx.id.as_bytes()) };
    let lines = [headers::cache_line(ctx.cache.status), &ctx.admission.headers, &routed];
    let out = Head::with_body(status, b"application/json", json.as_bytes(), &lines, to);
    let mut fill = fill;
    if let Some(f) = fill.take() {
        // Only a translated 2xx answer is stored (the gateway's 502 never).
        let storable = answer.is_ok() && end.complete();
        let fh = FlightHead {
            status,
            headers: Bytes::from_static(b"content-type: application/json\r\n"),
            stream: false,
            length: Some(json.len() as u64),
        };
        fill = f.start(fh, storable).map(|mut f| {
            f.leader.data(json.as_bytes());
            f
        });
    }
    let stored = Stored {
        status,
        headers: Bytes::from_static(b"content-type: application/json\r\n"),
        stream: false,
        provider: up.label.clone(),
        usage: None,
    };
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
    let concluded = Concluded { up, conn, upstream: &head, status, cause, tap, fill, progress, prompt, format };
    conclude(w, ctx, concluded, end, io).await
}

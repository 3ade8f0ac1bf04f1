//! Translated answers that are not streams (JSON, and every error): read
//! whole, translated, sent with their own length.

use std::time::Instant;

use bytes::{Buf, Bytes};

use super::{End, Progress, RelayOpts, response_header};
use crate::{
    analytics::Record,
    cache::{Entry, entry::now_unix_ms, flight::FlightHead},
    http::{chunked::ChunkedDecoder, response::ResponseFraming},
    proxy::{
        CacheFill, Worker,
        headers::{ClientFraming, Extras, fresh_head},
        translate,
    },
    server::conn::{ClientIo, Outcome, Request},
    tap::Tap,
    upstream::{Upstream, exchange::ResponseStart, io::Connection},
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

#[allow(clippy::too_many_arguments)]
pub async fn relay_whole(
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
    let ResponseStart { mut conn, head, raw_head, attempts } = start;
    let content_type = response_header(&raw_head, &head, b"content-type");
    let mut tap = rec.as_ref().map(|_| Tap::for_content_type(content_type));
    let whole = read_whole(&mut conn, head.framing, deadline).await;
    let (status, json, reusable, end) = match whole {
        Ok((body, reusable)) => {
            if let Some(t) = tap.as_mut() {
                t.observe(&body);
            }
            let (status, json) = translate::response(opts.translation, head.status, &body, opts.model, opts.json_mode);
            (status, json, reusable, End::Complete { reusable })
        }
        // Nothing has gone to the client yet: a clean 502.
        Err(()) => (
            502,
            crate::error::json_error(
                &format!("provider `{}` broke off its answer", up.name),
                "api_error",
                "upstream_cut_short",
            ),
            false,
            End::UpstreamFailed,
        ),
    };
    let extras = Extras { cache: opts.cache.status, lines: opts.extra };
    let framing = ClientFraming::Length(json.len() as u64);
    let mut out = fresh_head(status, b"application/json", framing, req.head.version(), keep_alive, req.id, extras);
    out.extend_from_slice(json.as_bytes());
    let mut progress = Progress::default();
    let len = out.len();
    let sent = io.send(out).await;
    if sent {
        progress.sent(len);
    }
    let complete = matches!(end, End::Complete { .. });
    let (usage, estimated) = tap.as_mut().map_or((None, false), |t| t.settle(complete));
    if let Some(r) = rec {
        r.status = status;
        r.attempts = attempts;
        r.bytes_out = progress.bytes_out;
        r.ttfb = progress.first_write.map(|t| t.saturating_duration_since(req.started));
        r.usage = usage;
        r.estimated = estimated;
        r.cost_usd = match (&usage, r.model.as_deref()) {
            (Some(u), Some(m)) => w.shared.prices.cost(m, u),
            _ => None,
        };
        r.error = match (complete, sent) {
            (false, _) => Some("upstream_cut_short"),
            (true, false) => Some("client_disconnected"),
            (true, true) => None,
        };
    }
    if let Some(CacheFill { mut leader, key, ttl, .. }) = opts.cache.fill {
        if complete && (200..300).contains(&status) {
            let headers = Bytes::from_static(b"content-type: application/json\r\n");
            leader.head(FlightHead {
                status,
                headers: headers.clone(),
                stream: false,
                length: Some(json.len() as u64),
            });
            leader.data(json.as_bytes());
            let usage = usage.filter(|_| !estimated);
            if let Some(body) = leader.finish(usage) {
                let expires_unix_ms = now_unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
                let entry =
                    Entry { status, headers, body, stream: false, expires_unix_ms, provider: up.label.clone(), usage };
                w.shared.cache.put(key, entry);
            }
        } else {
            leader.release();
        }
    }
    if reusable && complete && head.keep_alive {
        w.pool.borrow_mut().put(up.index, conn);
    }
    if sent && keep_alive && complete { Outcome::Reusable } else { Outcome::Close }
}

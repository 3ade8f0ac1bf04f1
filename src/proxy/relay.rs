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
    Worker,
    headers::{ClientFraming, client_response_head},
};
use crate::{
    http::{Version, chunked::ChunkedDecoder, response::ResponseFraming, write},
    server::conn::{ClientIo, Outcome, Request},
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
}

pub async fn relay(
    w: &Worker,
    up: &Upstream,
    start: ResponseStart,
    io: &mut ClientIo,
    req: &Request,
    keep_alive: bool,
    deadline: Instant,
) -> Outcome {
    let ResponseStart { mut conn, head, raw_head } = start;
    let client_version = req.head.version();
    let framing = match (head.framing, client_version) {
        (ResponseFraming::Empty, _) => ClientFraming::Empty,
        (ResponseFraming::Length(n), _) => ClientFraming::Length(n),
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http11) => ClientFraming::Chunked,
        (ResponseFraming::Chunked | ResponseFraming::UntilClose, Version::Http10) => ClientFraming::UntilClose,
    };
    let keep_alive = keep_alive && framing != ClientFraming::UntilClose;
    let out = client_response_head(&raw_head, &head, framing, client_version, keep_alive, req.id);
    drop(raw_head);

    let end = match head.framing {
        ResponseFraming::Empty => {
            if io.send(out).await {
                End::Complete { reusable: conn.buf.is_empty() }
            } else {
                End::ClientGone
            }
        }
        ResponseFraming::Length(n) => relay_length(io, &mut conn, out, n, deadline).await,
        ResponseFraming::Chunked | ResponseFraming::UntilClose => {
            let chunked_in = head.framing == ResponseFraming::Chunked;
            let chunked_out = framing == ClientFraming::Chunked;
            relay_stream(io, &mut conn, out, chunked_in, chunked_out, deadline).await
        }
    };
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
        End::ClientGone => Outcome::Close,
    }
}

async fn relay_length(io: &mut ClientIo, conn: &mut Connection, mut out: BytesMut, n: u64, deadline: Instant) -> End {
    let mut left = n;
    loop {
        let take = conn.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        left -= take as u64;
        if left == 0 && out.len() + take <= COALESCE {
            out.extend_from_slice(&conn.buf[..take]);
            conn.buf.advance(take);
            let reusable = conn.buf.is_empty();
            return if io.send(out).await { End::Complete { reusable } } else { End::ClientGone };
        }
        if !out.is_empty() && !io.send(std::mem::take(&mut out)).await {
            return End::ClientGone;
        }
        if take > 0 {
            let chunk = conn.buf.split_to(take).freeze();
            if !io.send(chunk).await {
                return End::ClientGone;
            }
        }
        if left == 0 {
            return End::Complete { reusable: conn.buf.is_empty() };
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(wait, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return End::UpstreamFailed,
        }
    }
}

/// Moves what `conn.buf` holds into `out`, framed for the client.
/// Returns true when the upstream body is complete.
fn frame(
    conn: &mut Connection,
    decoder: &mut Option<ChunkedDecoder>,
    out: &mut BytesMut,
    chunked_out: bool,
) -> Result<bool, ()> {
    let put = |out: &mut BytesMut, data: &[u8]| {
        if chunked_out { write::chunk(out, data) } else { out.extend_from_slice(data) }
    };
    match decoder {
        Some(dec) => {
            let buf = &conn.buf;
            let consumed = dec.decode_all(buf, |r| put(out, &buf[r])).map_err(|_| ())?;
            conn.buf.advance(consumed);
            Ok(dec.is_done())
        }
        None => {
            put(out, &conn.buf);
            conn.buf.clear();
            Ok(false)
        }
    }
}

async fn relay_stream(
    io: &mut ClientIo,
    conn: &mut Connection,
    mut out: BytesMut,
    chunked_in: bool,
    chunked_out: bool,
    deadline: Instant,
) -> End {
    let ClientIo { rd, wr, buf: client_buf } = io;
    let mut decoder = chunked_in.then(ChunkedDecoder::new);

    // Watch the client: its read stays pending for the whole stream.
    let canceller = Canceller::new();
    let mut watch_buf = std::mem::take(client_buf);
    watch_buf.reserve(1024);
    let len = watch_buf.len();
    let mut watch = pin!(rd.cancelable_read(watch_buf.slice_mut(len..), canceller.handle()));
    let mut watching = true;

    let end = loop {
        let done = match frame(conn, &mut decoder, &mut out, chunked_out) {
            Ok(done) => done,
            Err(()) => break End::UpstreamFailed,
        };
        if done {
            if chunked_out {
                out.extend_from_slice(write::LAST_CHUNK);
            }
            let reusable = conn.buf.is_empty();
            let sent = wr.write_all(std::mem::take(&mut out)).await.0.is_ok();
            break if sent { End::Complete { reusable } } else { End::ClientGone };
        }
        if !out.is_empty() {
            let (res, back) = wr.write_all(std::mem::take(&mut out)).await;
            if res.is_err() {
                break End::ClientGone;
            }
            out = back;
            out.clear();
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
                    break End::ClientGone;
                }
            }
        } else {
            read.await
        };
        match result {
            Ok(Ok(0)) if decoder.is_none() => {
                // Close-delimited body: the close is its end.
                if chunked_out {
                    out.extend_from_slice(write::LAST_CHUNK);
                }
                let sent = out.is_empty() || wr.write_all(std::mem::take(&mut out)).await.0.is_ok();
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

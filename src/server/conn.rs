//! One client connection: read a head, read its body, hand the request to
//! the listener's service, repeat while keep-alive allows. Pipelined
//! requests are answered in order because each is handled to completion
//! before the next head is parsed from the bytes already buffered.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    rc::Rc,
    time::Instant,
};

use bytes::{Buf, Bytes, BytesMut};
use monoio::{io::AsyncWriteRent, net::TcpStream};

use super::listener::ServerCtx;
use crate::{
    error::GatewayError,
    http::{
        chunked::ChunkedDecoder,
        request::{self, BodyFraming, HeadLimits, RequestHead},
    },
    service::{ClientIo, Outcome, ReadError, Refused, Request, Service, stream},
    util::timer::Timer,
};

pub async fn serve<S: Service>(ctx: Rc<ServerCtx>, service: Rc<S>, stream: TcpStream, peer: SocketAddr) {
    let conn_id = ctx.conn_opened();
    let fd = stream.as_raw_fd();
    let started = Instant::now();
    let mut timer = Timer::new(started);
    let halves = match ctx.tls.as_ref().map(|t| t.acceptor()) {
        None => Some(stream::split_plain(stream)),
        // The handshake gets the head-read timeout: a client that connects
        // and says nothing is dropped like one that sends half a head.
        // Boxed: a handshake's state is 2 KiB, and inline every plain
        // connection's task would carry it too.
        Some(acceptor) => {
            match timer.bound(started + ctx.timeouts.header_read, Box::pin(acceptor.accept(stream))).await {
                Some(Ok(tls)) => Some(stream::split_tls(tls)),
                Some(Err(e)) => {
                    log::debug!("TLS handshake with {peer} failed: {e}");
                    None
                }
                None => None,
            }
        }
    };
    if let Some((rd, wr)) = halves {
        let mut io = ClientIo { rd, wr, buf: BytesMut::with_capacity(2048), timer };
        run(&ctx, &*service, &mut io, peer, conn_id, fd).await;
    }
    // Leave the idle set before the socket closes (drain may shut it down).
    ctx.conn_closed(conn_id);
}

async fn run<S: Service>(ctx: &ServerCtx, service: &S, io: &mut ClientIo, peer: SocketAddr, conn_id: u64, fd: RawFd) {
    loop {
        let head = match read_head(ctx, io, conn_id, fd).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => {
                let (started, id) = (Instant::now(), ctx.next_request_id());
                service.refuse(Refused { error: &error, head: None, peer, id, started }, io).await;
                io.linger().await;
                return;
            }
        };
        let started = Instant::now();
        let id = ctx.next_request_id();
        let body = match read_body(ctx, io, &head, started).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(error) => {
                service.refuse(Refused { error: &error, head: Some(&head), peer, id, started }, io).await;
                io.linger().await;
                return;
            }
        };
        let keep_alive = head.keep_alive() && !ctx.draining();
        let req = Request { head, body, peer, id, started };
        match service.handle(req, io, keep_alive).await {
            Outcome::Reusable if keep_alive => {}
            Outcome::Reusable | Outcome::Close => {
                let _ = io.wr.shutdown().await;
                return;
            }
            Outcome::Linger => {
                io.linger().await;
                return;
            }
        }
    }
}

/// Ok(None): the client went away or stayed idle past the keep-alive
/// timeout, and the connection just closes.
async fn read_head(
    ctx: &ServerCtx,
    io: &mut ClientIo,
    conn_id: u64,
    fd: RawFd,
) -> Result<Option<RequestHead>, GatewayError> {
    let limits = HeadLimits { max_head_bytes: ctx.limits.max_head_bytes, max_headers: ctx.limits.max_headers };
    let mut deadline: Option<Instant> = None;
    loop {
        if !io.buf.is_empty()
            && let Some(parsed) = request::parse(&io.buf, limits)?
        {
            let raw = io.buf.split_to(parsed.len).freeze();
            return Ok(Some(RequestHead::new(raw, parsed)));
        }
        let idle = io.buf.is_empty();
        let by = if idle {
            if ctx.draining() {
                return Ok(None);
            }
            ctx.set_idle(conn_id, fd);
            Instant::now() + ctx.timeouts.keepalive
        } else {
            *deadline.get_or_insert_with(|| Instant::now() + ctx.timeouts.header_read)
        };
        let result = io.read_more(by).await;
        if idle {
            ctx.set_busy(conn_id);
        }
        match result {
            Ok(0) | Err(ReadError::Io) => return Ok(None),
            Ok(_) => {}
            Err(ReadError::Timeout) if idle => return Ok(None),
            Err(ReadError::Timeout) => return Err(GatewayError::RequestTimeout),
        }
    }
}

/// Ok(None): the client closed mid-body; there is no one to answer.
/// The body must be whole `body_read` after the head was (`started`).
async fn read_body(
    ctx: &ServerCtx,
    io: &mut ClientIo,
    head: &RequestHead,
    started: Instant,
) -> Result<Option<Bytes>, GatewayError> {
    let max = ctx.limits.max_body_bytes;
    let deadline = started + ctx.timeouts.body_read;
    match head.framing() {
        BodyFraming::Empty => Ok(Some(Bytes::new())),
        BodyFraming::Length(n) => {
            let n = usize::try_from(n).ok().filter(|&n| n <= max).ok_or(GatewayError::BodyTooLarge { limit: max })?;
            if head.expect_continue() && io.buf.len() < n && !send_continue(io).await {
                return Ok(None);
            }
            while io.buf.len() < n {
                io.buf.reserve(n - io.buf.len());
                match io.read_more(deadline).await {
                    Ok(0) | Err(ReadError::Io) => return Ok(None),
                    Ok(_) => {}
                    Err(ReadError::Timeout) => return Err(GatewayError::RequestTimeout),
                }
            }
            Ok(Some(io.buf.split_to(n).freeze()))
        }
        BodyFraming::Chunked => {
            if head.expect_continue() && io.buf.is_empty() && !send_continue(io).await {
                return Ok(None);
            }
            let mut decoder = ChunkedDecoder::new();
            let mut body = BytesMut::new();
            loop {
                let buf = &io.buf;
                let consumed = decoder
                    .decode_all(buf, |r| body.extend_from_slice(&buf[r]))
                    .map_err(|e| GatewayError::BadRequest(e.as_str()))?;
                io.buf.advance(consumed);
                if body.len() > max {
                    return Err(GatewayError::BodyTooLarge { limit: max });
                }
                if decoder.is_done() {
                    return Ok(Some(body.freeze()));
                }
                match io.read_more(deadline).await {
                    Ok(0) | Err(ReadError::Io) => return Ok(None),
                    Ok(_) => {}
                    Err(ReadError::Timeout) => return Err(GatewayError::RequestTimeout),
                }
            }
        }
    }
}

async fn send_continue(io: &mut ClientIo) -> bool {
    io.send(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]).await
}

//! One client connection: read a head, read its body, hand the request to
//! the listener's handler, repeat while keep-alive allows. Pipelined
//! requests are answered in order because each is handled to completion
//! before the next head is parsed from the bytes already buffered.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
    net::TcpStream,
};

use super::{
    listener::ServerCtx,
    stream::{ClientRead, ClientWrite},
};
use crate::{
    analytics::Record,
    error::GatewayError,
    http::{
        Version,
        chunked::ChunkedDecoder,
        request::{self, BodyFraming, HeadLimits, RequestHead},
    },
};

/// A complete request: head, whole body, and who sent it.
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
    pub peer: SocketAddr,
    pub id: RequestId,
    /// When the head was complete.
    pub started: Instant,
}

/// `x-aigw-request-id`: 24 hex digits, unique per process run.
#[derive(Clone, Copy)]
pub struct RequestId(pub [u8; 24]);

impl RequestId {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The client socket, split so a stream can watch for the client leaving
/// while it writes, and the read buffer that holds pipelined bytes.
pub struct ClientIo {
    pub rd: ClientRead,
    pub wr: ClientWrite,
    pub buf: BytesMut,
}

impl ClientIo {
    /// Writes all of `data`; false if the client is gone.
    pub async fn send<T: monoio::buf::IoBuf + 'static>(&mut self, data: T) -> bool {
        self.wr.write_all(data).await.0.is_ok()
    }
}

/// What the handler left the connection fit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response is complete and framed; the next request may follow.
    Reusable,
    /// The response ends with the connection (or broke off mid-body).
    Close,
}

/// Which service a listener runs. An enum rather than a trait: three
/// concrete services, one match.
#[derive(Clone)]
pub enum Handler {
    Proxy(Rc<crate::proxy::Worker>),
    Mock(Rc<crate::mock::MockCtx>),
    Admin(Rc<crate::admin::AdminCtx>),
}

impl Handler {
    async fn handle(
        &self,
        req: Request,
        io: &mut ClientIo,
        keep_alive: bool,
        rec: Option<&mut Record>,
    ) -> Result<Outcome, GatewayError> {
        match self {
            Handler::Proxy(w) => crate::proxy::handle(w, req, io, keep_alive, rec).await,
            Handler::Mock(m) => crate::mock::handle(m, req, io, keep_alive).await,
            Handler::Admin(a) => crate::admin::handle(a, req, io, keep_alive).await,
        }
    }
}

impl Handler {
    /// Whether requests on this listener are accounted (the data listener).
    fn records(&self) -> bool {
        matches!(self, Handler::Proxy(w) if w.recorder.is_some())
    }

    fn finish(&self, rec: Option<Record>, started: Instant) {
        if let (Handler::Proxy(w), Some(mut rec)) = (self, rec)
            && let Some(recorder) = &w.recorder
        {
            rec.duration = started.elapsed();
            recorder.record(rec);
        }
    }
}

pub async fn serve(ctx: Rc<ServerCtx>, handler: Handler, stream: TcpStream, peer: SocketAddr) {
    let conn_id = ctx.conn_opened();
    let fd = stream.as_raw_fd();
    let halves = match ctx.tls.as_ref().map(|t| t.acceptor()) {
        None => Some(super::stream::split_plain(stream)),
        // The handshake gets the head-read timeout: a client that connects
        // and says nothing is dropped like one that sends half a head.
        Some(acceptor) => match monoio::time::timeout(ctx.timeouts.header_read, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(super::stream::split_tls(tls)),
            Ok(Err(e)) => {
                log::debug!("TLS handshake with {peer} failed: {e}");
                None
            }
            Err(_) => None,
        },
    };
    if let Some((rd, wr)) = halves {
        let mut io = ClientIo { rd, wr, buf: BytesMut::with_capacity(4096) };
        run(&ctx, &handler, &mut io, peer, conn_id, fd).await;
    }
    // Leave the idle set before the socket closes (drain may shut it down).
    ctx.conn_closed(conn_id);
}

async fn run(ctx: &ServerCtx, handler: &Handler, io: &mut ClientIo, peer: SocketAddr, conn_id: u64, fd: RawFd) {
    loop {
        let head = match read_head(ctx, io, conn_id, fd).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let started = Instant::now();
                let id = ctx.next_request_id();
                let mut rec = handler.records().then(|| Record::unparsed(peer.ip(), &id));
                let sent = respond_error(io, &e, Version::Http11, id, true).await;
                note_error(rec.as_mut(), &e, sent);
                handler.finish(rec, started);
                return;
            }
        };
        let started = Instant::now();
        let id = ctx.next_request_id();
        let version = head.version();
        let body = match read_body(ctx, io, &head).await {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                let mut rec = handler.records().then(|| Record::begin(&head, peer.ip(), &id, 0));
                let sent = respond_error(io, &e, version, id, true).await;
                note_error(rec.as_mut(), &e, sent);
                handler.finish(rec, started);
                return;
            }
        };
        let keep_alive = head.keep_alive() && !ctx.draining();
        let mut rec = handler.records().then(|| Record::begin(&head, peer.ip(), &id, body.len()));
        let req = Request { head, body, peer, id, started };
        let result = handler.handle(req, io, keep_alive, rec.as_mut()).await;
        match result {
            Ok(Outcome::Reusable) if keep_alive => handler.finish(rec, started),
            Ok(_) => {
                handler.finish(rec, started);
                let _ = io.wr.shutdown().await;
                return;
            }
            Err(e) => {
                let close = !keep_alive || e.closes_connection();
                let sent = respond_error(io, &e, version, id, close).await;
                note_error(rec.as_mut(), &e, sent);
                handler.finish(rec, started);
                if close {
                    return;
                }
            }
        }
    }
}

/// Writes the JSON error; returns the bytes sent (0 if the client is gone).
async fn respond_error(io: &mut ClientIo, e: &GatewayError, version: Version, id: RequestId, close: bool) -> u64 {
    let response = e.response(version, Some(id.as_bytes()), close);
    let len = response.len() as u64;
    if !io.send(response).await {
        return 0;
    }
    if close {
        linger(io).await;
    }
    len
}

fn note_error(rec: Option<&mut Record>, e: &GatewayError, sent: u64) {
    if let Some(rec) = rec {
        rec.status = e.status();
        rec.error = Some(e.code());
        rec.bytes_out += sent;
    }
}

/// Closes after an error without losing the response: a close with unread
/// bytes pending would send RST, and the client might discard our answer.
/// So we send FIN and read (and drop) what is still in flight, briefly.
async fn linger(io: &mut ClientIo) {
    let _ = io.wr.shutdown().await;
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut drained = 0usize;
    while drained < 1 << 20 {
        io.buf.clear();
        match read_more(io, deadline.saturating_duration_since(Instant::now())).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

enum ReadError {
    Timeout,
    Io,
}

/// Reads more bytes onto the end of `io.buf`. Ok(0): the client closed.
async fn read_more(io: &mut ClientIo, wait: Duration) -> Result<usize, ReadError> {
    if io.buf.capacity() - io.buf.len() < 2048 {
        io.buf.reserve(8192);
    }
    let buf = std::mem::take(&mut io.buf);
    let len = buf.len();
    match monoio::time::timeout(wait, io.rd.read(buf.slice_mut(len..))).await {
        Ok((res, slice)) => {
            io.buf = slice.into_inner();
            res.map_err(|_| ReadError::Io)
        }
        // The buffer went with the cancelled read; the connection closes.
        Err(_) => Err(ReadError::Timeout),
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
        let wait = if idle {
            if ctx.draining() {
                return Ok(None);
            }
            ctx.set_idle(conn_id, fd);
            ctx.timeouts.keepalive
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + ctx.timeouts.header_read);
            d.saturating_duration_since(Instant::now())
        };
        let result = read_more(io, wait).await;
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
async fn read_body(ctx: &ServerCtx, io: &mut ClientIo, head: &RequestHead) -> Result<Option<Bytes>, GatewayError> {
    let max = ctx.limits.max_body_bytes;
    let deadline = Instant::now() + ctx.timeouts.body_read;
    match head.framing() {
        BodyFraming::Empty => Ok(Some(Bytes::new())),
        BodyFraming::Length(n) => {
            let n = usize::try_from(n).ok().filter(|&n| n <= max).ok_or(GatewayError::BodyTooLarge { limit: max })?;
            if head.expect_continue() && io.buf.len() < n && !send_continue(io).await {
                return Ok(None);
            }
            while io.buf.len() < n {
                io.buf.reserve(n - io.buf.len());
                match read_more(io, deadline.saturating_duration_since(Instant::now())).await {
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
                match read_more(io, deadline.saturating_duration_since(Instant::now())).await {
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

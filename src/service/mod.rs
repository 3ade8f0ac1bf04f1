//! What a listener's service is handed and returns: the request, the
//! client's socket, the outcome. A leaf module: the connection loop
//! (`server/`) and the services (`proxy/`, `admin/`, `mock/`) both import
//! it, and it imports neither, so no import circle runs through the server.

pub mod stream;

use std::{
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt},
};

pub use self::stream::{ClientRead, ClientWrite};
use crate::{
    error::GatewayError,
    http::{Version, request::RequestHead},
    util::timer::Timer,
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

/// What the service left the connection fit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The response is complete and framed; the next request may follow.
    Reusable,
    /// The response ends with the connection (or broke off mid-body).
    Close,
    /// An error answer after which the connection closes: the close waits
    /// for what the client still sends (see `ClientIo::linger`), so its
    /// unread bytes do not turn our FIN into a reset that loses the answer.
    Linger,
}

/// A request the connection loop could not complete (bad head, bad or slow
/// body): the service answers with `error`, and the connection closes.
pub struct Refused<'a> {
    pub error: &'a GatewayError,
    /// The head, when it parsed.
    pub head: Option<&'a RequestHead>,
    pub peer: SocketAddr,
    pub id: RequestId,
    pub started: Instant,
}

/// The listener's live state a service may watch (its analytics flush
/// reports open connections and ends once the worker has drained).
pub trait Live {
    fn open_connections(&self) -> usize;
    fn draining(&self) -> bool;
}

/// A service on a listener. Three implementations (the gateway's proxy,
/// admin, mock), each a concrete type the server is generic over.
#[expect(
    async_fn_in_trait,
    reason = "thread-per-core runtimes: these futures never cross threads, no Send bound wanted"
)]
pub trait Service: 'static {
    /// Answers one request, its errors included.
    async fn handle(&self, req: Request, io: &mut ClientIo, keep_alive: bool) -> Outcome;

    /// Answers a request the connection loop refused; the connection closes.
    async fn refuse(&self, r: Refused<'_>, io: &mut ClientIo) {
        let version = r.head.map_or(Version::Http11, RequestHead::version);
        respond_error(io, r.error, version, r.id, true).await;
    }

    /// Worker start, on the worker's thread (background tasks go here).
    fn worker_started(self: &Rc<Self>, _live: Rc<dyn Live>) {}

    /// The worker's listener has drained.
    fn worker_stopped(&self) {}
}

/// Writes `e` as a JSON error; returns the outcome and the bytes sent (0
/// when the client is gone).
pub async fn respond_error(
    io: &mut ClientIo,
    e: &GatewayError,
    version: Version,
    id: RequestId,
    keep_alive: bool,
) -> (Outcome, u64) {
    let close = !keep_alive || e.closes_connection();
    let response = e.response(version, Some(id.as_bytes()), close);
    let len = response.len() as u64;
    if !io.send(response).await {
        return (Outcome::Close, 0);
    }
    (if close { Outcome::Linger } else { Outcome::Reusable }, len)
}

/// The client socket, split so a stream can watch for the client leaving
/// while it writes, the read buffer that holds pipelined bytes, and the
/// timer every read of the connection waits with (`util::timer`).
pub struct ClientIo {
    pub rd: ClientRead,
    pub wr: ClientWrite,
    pub buf: BytesMut,
    pub timer: Timer,
}

/// Why a client read gave nothing.
pub enum ReadError {
    Timeout,
    Io,
}

impl ClientIo {
    /// Writes all of `data`; false if the client is gone.
    pub async fn send<T: monoio::buf::IoBuf + 'static>(&mut self, data: T) -> bool {
        self.wr.write_all(data).await.0.is_ok()
    }

    /// Reads more bytes onto the end of `buf` by `deadline`. Ok(0): the
    /// client closed.
    ///
    /// A request's head and body are split off the front of `buf`; once they
    /// are dropped, the reserve here moves what is left to the front of the
    /// same allocation, so a keep-alive connection keeps one page for its
    /// heads. Bodies larger than that are reserved whole by the body read.
    pub async fn read_more(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(2048);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        match self.timer.bound(deadline, self.rd.read(buf.slice_mut(len..))).await {
            Some((res, slice)) => {
                self.buf = slice.into_inner();
                res.map_err(|_| ReadError::Io)
            }
            // The buffer went with the cancelled read; the connection closes.
            None => Err(ReadError::Timeout),
        }
    }

    /// Closes after an error without losing the response: a close with
    /// unread bytes pending would send RST, and the client might discard our
    /// answer. So we send FIN and read (and drop) what is still in flight,
    /// briefly.
    pub async fn linger(&mut self) {
        let _ = self.wr.shutdown().await;
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut drained = 0usize;
        while drained < 1 << 20 {
            self.buf.clear();
            match self.read_more(deadline).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    }
}

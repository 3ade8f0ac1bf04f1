//! An upstream socket, plain or TLS, and how one is opened.

use std::{
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use bytes::BytesMut;

use monoio::{
    BufResult,
    buf::{IoBuf, IoBufMut},
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};
use monoio_rustls::{ClientTlsStream, TlsConnector};

use super::Upstream;
use crate::error::GatewayError;

/// An open upstream connection and the bytes read from it but not yet used.
pub struct Connection {
    pub io: UpstreamIo,
    pub buf: BytesMut,
    fd: RawFd,
    /// Whether it came from the pool (a failure may then be a stale close).
    pub reused: bool,
    pub idle_since: Instant,
}

impl Connection {
    fn new(io: UpstreamIo, fd: RawFd) -> Self {
        Self { io, buf: BytesMut::with_capacity(8 * 1024), fd, reused: false, idle_since: Instant::now() }
    }

    /// Reads more bytes onto the end of `buf`; Ok(0) is end of stream.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 2048 {
            self.buf.reserve(8 * 1024);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = self.io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Cheap liveness check for a pooled connection that sat idle a while:
    /// a non-blocking peek sees the upstream's FIN (or an unsolicited
    /// response) before we send a request into a dead socket.
    pub fn looks_alive(&self) -> bool {
        if self.idle_since.elapsed() < Duration::from_secs(1) {
            return true;
        }
        let mut byte = 0u8;
        // SAFETY: `fd` is the open socket owned by `self.io`; recv writes at
        // most 1 byte into `byte`, which outlives the call.
        #[allow(unsafe_code)]
        let n = unsafe { libc::recv(self.fd, (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
    }
}

pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl UpstreamIo {
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamIo::Plain(s) => s.read(buf).await,
            UpstreamIo::Tls(s) => s.read(buf).await,
        }
    }

    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamIo::Plain(s) => s.write_all(buf).await,
            UpstreamIo::Tls(s) => s.write_all(buf).await,
        }
    }
}

/// Opens a connection: each resolved address in turn, then TLS if the
/// provider is https. Both bounded by the connect timeout.
pub async fn connect(up: &Upstream) -> Result<Connection, GatewayError> {
    let deadline = Instant::now() + up.timeouts.connect;
    let addrs = up.addrs();
    if addrs.is_empty() {
        return Err(GatewayError::UpstreamConnect {
            provider: up.name.clone(),
            detail: format!("{} has not resolved to an address (yet)", up.url.host),
        });
    }
    let mut last_error = String::new();
    let mut stream = None;
    for addr in addrs.iter() {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, TcpStream::connect_addr(*addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last_error = format!("{addr}: {e}"),
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout { provider: up.name.clone(), phase: "connect" });
            }
        }
    }
    let Some(stream) = stream else {
        return Err(GatewayError::UpstreamConnect { provider: up.name.clone(), detail: last_error });
    };
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let Some(tls) = &up.tls else {
        return Ok(Connection::new(UpstreamIo::Plain(stream), fd));
    };
    let connector = TlsConnector::from(tls.config.clone());
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, connector.connect(tls.server_name.clone(), stream)).await {
        Ok(Ok(s)) => Ok(Connection::new(UpstreamIo::Tls(Box::new(s)), fd)),
        Ok(Err(e)) => {
            // monoio-rustls's own Display is "io error" / "rustls error":
            // name the cause (a rejected certificate says why).
            let detail = match e {
                monoio_rustls::TlsError::Io(e) => e.to_string(),
                monoio_rustls::TlsError::Rustls(e) => e.to_string(),
            };
            Err(GatewayError::UpstreamTls { provider: up.name.clone(), detail })
        }
        Err(_) => Err(GatewayError::UpstreamTimeout { provider: up.name.clone(), phase: "TLS handshake" }),
    }
}

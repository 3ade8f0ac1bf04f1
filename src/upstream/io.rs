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
use crate::{
    error::GatewayError,
    util::{
        send_now,
        timer::{Bounded, Timer},
    },
};

/// The first read of a connection asks for this much: one page, as
/// nginx's `proxy_buffer_size`. A stream's events (a few hundred bytes
/// each) then live in one small buffer for the whole stream.
const READ_MIN: usize = 2 * 1024;
/// A read that fills what it was given doubles the next, up to this: a
/// large answer is read in few syscalls.
const READ_MAX: usize = 64 * 1024;

/// An open upstream connection and the bytes read from it but not yet used.
///
/// `buf` is read into and consumed from the front. Consumers copy out of it
/// or `advance` it; only large Content-Length bodies split pieces off.
/// While nothing else points into its allocation, an emptied buffer is
/// reused from the front by the next read instead of allocating again.
pub struct Connection {
    pub io: UpstreamIo,
    pub buf: BytesMut,
    /// How much the next read asks for (`READ_MIN..=READ_MAX`).
    read_size: usize,
    fd: RawFd,
    /// Whether it came from the pool (a failure may then be a stale close).
    pub reused: bool,
    pub idle_since: Instant,
}

impl Connection {
    fn new(io: UpstreamIo, fd: RawFd) -> Self {
        Self { io, buf: BytesMut::new(), read_size: READ_MIN, fd, reused: false, idle_since: Instant::now() }
    }

    /// Reads more bytes onto the end of `buf` (Ok(0) is end of stream), or
    /// None once `deadline` passes on `timer` (the client connection's: its
    /// own reads and its upstream's never overlap, so one timer serves both).
    pub fn read_by<'a>(
        &'a mut self,
        timer: &'a mut Timer,
        deadline: Instant,
    ) -> Bounded<'a, impl Future<Output = std::io::Result<usize>> + 'a> {
        let Connection { io, buf, read_size, .. } = self;
        timer.bound(deadline, read(io, buf, read_size))
    }

    /// Parks the connection idle: it holds no buffer (hundreds of pooled
    /// connections would otherwise pin theirs) and starts small again.
    pub fn park(&mut self, now: Instant) {
        self.buf = BytesMut::new();
        self.read_size = READ_MIN;
        self.idle_since = now;
    }

    /// Cheap liveness check for a pooled connection that sat idle a while:
    /// a non-blocking peek sees the upstream's FIN (or an unsolicited
    /// response) before we send a request into a dead socket. `idle`: how
    /// long it sat in the pool.
    pub fn looks_alive(&self, idle: Duration) -> bool {
        if idle < Duration::from_secs(1) {
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

/// Reads more bytes onto the end of `buf`, at most `read_size`, which
/// doubles after a read that filled it.
async fn read(io: &mut UpstreamIo, buf: &mut BytesMut, read_size: &mut usize) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < *read_size / 2 {
        // On a unique buffer whose front was consumed this moves what is
        // left to the front rather than allocating.
        buf.reserve(*read_size);
    }
    let taken = std::mem::take(buf);
    let len = taken.len();
    // At most `read_size`: a reserve may have left more room than asked.
    let room = (taken.capacity() - len).min(*read_size);
    let (res, slice) = io.read(taken.slice_mut(len..len + room)).await;
    *buf = slice.into_inner();
    if matches!(res, Ok(n) if n == room) {
        *read_size = (*read_size * 2).min(READ_MAX);
    }
    res
}

/// As the client halves (`service::stream`), the TLS arms' futures are
/// boxed, so a plain connection's read does not carry a rustls read's size.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

impl UpstreamIo {
    pub async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamIo::Plain(s) => s.read(buf).await,
            UpstreamIo::Tls(s) => Box::pin(s.read(buf)).await,
        }
    }

    pub async fn write_all<T: IoBuf + 'static>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamIo::Plain(s) => {
                let fd = s.as_raw_fd();
                send_now::write_all(s, fd, buf).await
            }
            UpstreamIo::Tls(s) => Box::pin(s.write_all(buf)).await,
        }
    }
}

/// Opens a connection: each resolved address in turn, then TLS if the
/// provider is https. Both bounded by the connect timeout, on `timer`.
pub async fn connect(up: &Upstream, timer: &mut Timer) -> Result<Connection, GatewayError> {
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
        match timer.bound(deadline, TcpStream::connect_addr(*addr)).await {
            Some(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Some(Err(e)) => last_error = format!("{addr}: {e}"),
            None => {
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
    // Boxed: a handshake's state is 2 KiB, and every request's future
    // holds this one's whether it connects or not.
    let handshake = Box::pin(connector.connect(tls.server_name.clone(), stream));
    match timer.bound(deadline, handshake).await {
        Some(Ok(s)) => Ok(Connection::new(UpstreamIo::Tls(Box::new(s)), fd)),
        Some(Err(e)) => {
            // monoio-rustls's own Display is "io error" / "rustls error":
            // name the cause (a rejected certificate says why).
            let detail = match e {
                monoio_rustls::TlsError::Io(e) => e.to_string(),
                monoio_rustls::TlsError::Rustls(e) => e.to_string(),
            };
            Err(GatewayError::UpstreamTls { provider: up.name.clone(), detail })
        }
        None => Err(GatewayError::UpstreamTimeout { provider: up.name.clone(), phase: "TLS handshake" }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use bytes::Buf;

    use super::*;

    /// A connection to a local socket whose other end the test writes.
    fn with_peer(test: impl AsyncFnOnce(Connection, std::net::TcpStream)) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
        rt.block_on(async move {
            let stream = TcpStream::connect_addr(addr).await.unwrap();
            let (peer, _) = listener.accept().unwrap();
            let fd = stream.as_raw_fd();
            test(Connection::new(UpstreamIo::Plain(stream), fd), peer).await;
        });
    }

    #[test]
    fn a_stream_of_small_reads_keeps_one_small_buffer() {
        with_peer(async |mut conn, mut peer| {
            let event = [b'x'; 300];
            let mut starts = Vec::new();
            for _ in 0..100 {
                peer.write_all(&event).unwrap();
                let mut got = 0;
                while got < event.len() {
                    got += read(&mut conn.io, &mut conn.buf, &mut conn.read_size).await.unwrap();
                }
                starts.push(conn.buf.as_ptr() as usize);
                // Consumed, as the stream relay consumes: copied out, then advanced.
                conn.buf.advance(got);
            }
            // 30 KB went through; every read landed in the first buffer.
            let first = starts[0];
            assert!(starts.iter().all(|&s| s >= first && s < first + READ_MIN), "{starts:?}");
            assert_eq!(conn.read_size, READ_MIN);
        });
    }

    #[test]
    fn reads_that_fill_the_buffer_grow_to_the_cap() {
        with_peer(async |mut conn, mut peer| {
            let body = vec![b'y'; 1 << 20];
            let writer = std::thread::spawn(move || peer.write_all(&body).map(|()| peer));
            let mut total = 0;
            while total < 1 << 20 {
                let n = read(&mut conn.io, &mut conn.buf, &mut conn.read_size).await.unwrap();
                assert!(n <= READ_MAX, "{n}");
                total += n;
                conn.buf.advance(n);
            }
            writer.join().unwrap().unwrap();
            assert_eq!(conn.read_size, READ_MAX);
            assert!(conn.buf.capacity() <= 2 * READ_MAX, "{}", conn.buf.capacity());
            conn.park(std::time::Instant::now());
            assert_eq!((conn.buf.capacity(), conn.read_size), (0, READ_MIN));
        });
    }
}

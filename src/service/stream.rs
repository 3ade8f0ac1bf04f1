//! The client connection's two halves, plain TCP or TLS (`server.tls_cert`).
//!
//! An enum rather than generics: the connection loop, the relay and the
//! cache paths stay one piece of code, and the branch per read or write is
//! nothing next to the system call behind it.
//!
//! The TLS arms' futures are boxed. A future holds the state of its largest
//! arm, and a rustls read or write future is ~550–750 bytes where a plain
//! socket's is ~60–170: inline, every plain connection's task (and every
//! open stream) would carry the TLS size. One allocation per TLS read or
//! write is small next to the record's cryptography.

use std::os::fd::{AsRawFd, RawFd};

use monoio::{
    BufResult,
    buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut},
    io::{AsyncReadRent, AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf, Splitable},
    net::TcpStream,
};
use monoio_rustls::ServerTlsStream;

use crate::util::send_now;

pub enum ClientRead {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(OwnedReadHalf<ServerTlsStream<TcpStream>>),
}

pub enum ClientWrite {
    /// With the socket's fd, for writes that try a plain `send` first
    /// (`util::send_now`); the half keeps the socket open.
    Plain(OwnedWriteHalf<TcpStream>, RawFd),
    Tls(OwnedWriteHalf<ServerTlsStream<TcpStream>>),
}

pub fn split_plain(stream: TcpStream) -> (ClientRead, ClientWrite) {
    let fd = stream.as_raw_fd();
    let (r, w) = stream.into_split();
    (ClientRead::Plain(r), ClientWrite::Plain(w, fd))
}

pub fn split_tls(stream: ServerTlsStream<TcpStream>) -> (ClientRead, ClientWrite) {
    let (r, w) = stream.into_split();
    (ClientRead::Tls(r), ClientWrite::Tls(w))
}

impl ClientRead {
    /// The plain socket, whose reads can be cancelled without losing bytes
    /// (the stream relay's disconnect watch). A TLS read cannot be
    /// cancelled mid-record, so TLS streams notice a client that left when
    /// the next write fails instead.
    pub fn cancelable(&mut self) -> Option<&mut OwnedReadHalf<TcpStream>> {
        match self {
            ClientRead::Plain(r) => Some(r),
            ClientRead::Tls(_) => None,
        }
    }
}

impl AsyncReadRent for ClientRead {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientRead::Plain(r) => r.read(buf).await,
            ClientRead::Tls(r) => Box::pin(r.read(buf)).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientRead::Plain(r) => r.readv(buf).await,
            ClientRead::Tls(r) => Box::pin(r.readv(buf)).await,
        }
    }
}

impl AsyncWriteRent for ClientWrite {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientWrite::Plain(w, fd) => send_now::write(w, *fd, buf).await,
            ClientWrite::Tls(w) => Box::pin(w.write(buf)).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ClientWrite::Plain(w, _) => w.writev(buf).await,
            ClientWrite::Tls(w) => Box::pin(w.writev(buf)).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ClientWrite::Plain(w, _) => w.flush().await,
            ClientWrite::Tls(w) => Box::pin(w.flush()).await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            ClientWrite::Plain(w, _) => w.shutdown().await,
            ClientWrite::Tls(w) => Box::pin(w.shutdown()).await,
        }
    }
}

//! Writes to a plain TCP socket that try a non-blocking `send(2)` first.
//!
//! Under io_uring a write is an operation: the task queues it, the runtime
//! submits it on its next `io_uring_enter`, the kernel completes it at once
//! (the socket's send buffer has room nearly always), and the task is polled
//! again to see the completion. That is a system call and a round trip
//! through the runtime for a write that could not block. At light load it
//! adds an `io_uring_enter` to each direction of every request (4 per request
//! where 2 wait for data; `strace -c`, docs/benchmarks.md "Light load:
//! wake-ups per request"). A `send` with `MSG_DONTWAIT` does the same work
//! in one plain call; only when the socket is full (`EAGAIN`) does the write
//! go through the runtime and wait for room.
//!
//! Safe to mix with the runtime's own writes on the same socket: every write
//! here is awaited before the next one starts, so no queued operation can be
//! overtaken. Hand-written because no crate offers this on monoio's owned
//! buffers.

use std::{io, os::fd::RawFd};

use monoio::{
    BufResult,
    buf::IoBuf,
    io::{AsyncWriteRent, AsyncWriteRentExt},
};

/// What a non-blocking `send` took of `buf`; `None` when the socket had no
/// room (or the call was interrupted): then the caller waits for room
/// through the runtime.
fn try_send<T: IoBuf>(fd: RawFd, buf: &T) -> Option<io::Result<usize>> {
    // SAFETY: `IoBuf` (an unsafe trait) promises `read_ptr` points at
    // `bytes_init` initialised bytes while `buf` is alive and unmoved; `buf`
    // is borrowed for the whole call. `fd` is a socket the caller's stream
    // owns and keeps open for that borrow. send(2) only reads the bytes.
    #[allow(unsafe_code)]
    let n = unsafe { libc::send(fd, buf.read_ptr().cast(), buf.bytes_init(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    match usize::try_from(n) {
        Ok(n) => Some(Ok(n)),
        Err(_) => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                _ => Some(Err(e)),
            }
        }
    }
}

/// One write, as `AsyncWriteRent::write`: what the socket takes now, or, if
/// it has no room, what it takes once it has.
pub async fn write<W: AsyncWriteRent, T: IoBuf>(w: &mut W, fd: RawFd, buf: T) -> BufResult<usize, T> {
    match try_send(fd, &buf) {
        Some(res) => (res, buf),
        None => w.write(buf).await,
    }
}

/// All of `buf`, as `AsyncWriteRentExt::write_all`.
pub async fn write_all<W: AsyncWriteRent, T: IoBuf>(w: &mut W, fd: RawFd, buf: T) -> BufResult<usize, T> {
    let len = buf.bytes_init();
    match try_send(fd, &buf) {
        Some(Ok(n)) if n == len => (Ok(n), buf),
        Some(Ok(n)) if n > 0 => {
            let (res, rest) = w.write_all(buf.slice(n..)).await;
            (res.map(|m| m + n), rest.into_inner())
        }
        // Nothing taken: the runtime's write_all says why (a zero-length
        // write is its WriteZero error, as before).
        Some(Ok(_)) | None => w.write_all(buf).await,
        Some(Err(e)) => (Err(e), buf),
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, os::fd::AsRawFd};

    use super::*;

    /// A send buffer that fills: the first write goes at once, the rest
    /// through the runtime whenever the small buffers are full (1 MiB
    /// through a few KiB of buffer: many times); every byte arrives once and
    /// in order.
    #[test]
    fn a_full_socket_falls_back_to_the_runtime_and_nothing_is_lost() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Small buffers both ends (the accepted socket inherits the
        // listener's): one send takes tens of KiB at most, so most of the
        // 1 MiB must go through the runtime's wait for room.
        socket2::SockRef::from(&listener).set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let total = 1 << 20;
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            // Exactly the bytes sent (the runtime closes the socket only
            // once it runs again, so no EOF to read up to).
            let mut got = vec![0u8; total];
            s.read_exact(&mut got).expect("read");
            got
        });
        let sent: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async move {
            // A small send buffer, so the socket is full long before 1 MiB.
            let std = std::net::TcpStream::connect(addr).expect("connect");
            socket2::SockRef::from(&std).set_send_buffer_size(4096).expect("SO_SNDBUF");
            let mut s = monoio::net::TcpStream::from_std(std).expect("monoio stream");
            let fd = s.as_raw_fd();
            // One write takes what the buffers hold, far from all of it ...
            let (first, _) = write(&mut s, fd, sent.clone()).await;
            let first = first.expect("first write");
            assert!(first > 0 && first < total / 4, "{first}");
            // ... and the rest must wait for room through the runtime.
            let (res, _) = write_all(&mut s, fd, sent[first..].to_vec()).await;
            assert_eq!(res.expect("write_all"), total - first);
        });
        assert!(reader.join().expect("reader") == expect);
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_wait() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async move {
            let mut s = monoio::net::TcpStream::connect(addr).await.expect("connect");
            let (peer, _) = listener.accept().expect("accept");
            drop(peer);
            let fd = s.as_raw_fd();
            // The first send may still be taken; once the peer's RST is
            // back, sends fail (EPIPE / ECONNRESET) rather than block.
            let mut failed = false;
            for _ in 0..500 {
                let (res, _) = write_all(&mut s, fd, vec![0u8; 1 << 16]).await;
                if res.is_err() {
                    failed = true;
                    break;
                }
                monoio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(failed);
        });
    }
}

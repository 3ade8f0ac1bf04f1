//! Per-listener, per-worker state and the accept loop.

use std::{
    cell::{Cell, RefCell},
    os::fd::RawFd,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use monoio::net::TcpListener;

use super::conn;
use crate::{
    config::{Limits, ServerTimeouts},
    service::{Live, RequestId, Service},
    util::{FastMap as HashMap, shutdown::Shutdown},
};

/// What a worker knows about the listener it serves: limits, timeouts, and
/// the connections it must close when draining.
pub struct ServerCtx {
    pub worker: usize,
    pub limits: Limits,
    pub timeouts: ServerTimeouts,
    pub shutdown: Arc<Shutdown>,
    /// TLS on this listener (the data listener with `server.tls_cert`).
    pub tls: Option<Arc<super::tls::ServerTls>>,
    draining: Cell<bool>,
    open: Cell<usize>,
    next_conn: Cell<u64>,
    next_request: Cell<u64>,
    /// Connections waiting for their next request, closable at once on drain.
    idle: RefCell<HashMap<u64, RawFd>>,
}

impl ServerCtx {
    pub fn new(
        worker: usize,
        limits: Limits,
        timeouts: ServerTimeouts,
        shutdown: Arc<Shutdown>,
        tls: Option<Arc<super::tls::ServerTls>>,
    ) -> Self {
        Self {
            worker,
            limits,
            timeouts,
            shutdown,
            tls,
            draining: Cell::new(false),
            open: Cell::new(0),
            next_conn: Cell::new(0),
            next_request: Cell::new(0),
            idle: RefCell::new(HashMap::default()),
        }
    }

    /// Process seed (8 hex), worker (4 hex), per-worker sequence (12 hex).
    pub fn next_request_id(&self) -> RequestId {
        let seq = self.next_request.get();
        self.next_request.set(seq + 1);
        let mut id = [0u8; 24];
        hex_into(&mut id[..8], u64::from(process_seed()));
        hex_into(&mut id[8..12], self.worker as u64);
        hex_into(&mut id[12..], seq);
        RequestId(id)
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    pub(super) fn conn_opened(&self) -> u64 {
        self.open.set(self.open.get() + 1);
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    pub(super) fn conn_closed(&self, id: u64) {
        self.open.set(self.open.get().saturating_sub(1));
        self.idle.borrow_mut().remove(&id);
    }

    pub(super) fn set_idle(&self, id: u64, fd: RawFd) {
        self.idle.borrow_mut().insert(id, fd);
    }

    pub(super) fn set_busy(&self, id: u64) {
        self.idle.borrow_mut().remove(&id);
    }

    /// Stops reading from idle keep-alive connections: their pending read
    /// returns end-of-stream and they close. Busy ones finish their
    /// response first and then see `draining()`.
    fn close_idle(&self) {
        for (_, fd) in self.idle.borrow_mut().drain() {
            shutdown_read(fd);
        }
    }
}

/// Gives memory back after a load peak. mimalloc keeps freed pages in this
/// thread's heap for reuse and purges freed arena memory only when some
/// thread calls into it; once the open connections fall to under half of
/// their recent peak, and again when the worker has had none for a second
/// after traffic, a forced collection returns them to the OS, so RSS comes
/// back near idle when traffic ends (docs/benchmarks.md, "Memory per
/// stream").
async fn trim_memory(ctx: Rc<ServerCtx>) {
    let mut peak = 0usize;
    // Traffic came since the last collection.
    let mut dirty = false;
    while !ctx.draining() {
        // Sampled every second while there is traffic to follow; an idle
        // worker (no connections, nothing to give back) looks every five,
        // so it wakes next to never.
        let quiet = !dirty && ctx.open_connections() == 0;
        monoio::time::sleep(Duration::from_secs(if quiet { 5 } else { 1 })).await;
        let open = ctx.open_connections();
        dirty |= open > 0 || peak > 0;
        if open * 2 < peak || (open == 0 && dirty) {
            ctx.idle.borrow_mut().shrink_to(open);
            crate::util::memory::collect();
            peak = open;
            dirty = open > 0;
        }
        peak = peak.max(open);
    }
}

fn hex_into(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Distinguishes request ids across restarts of the process.
fn process_seed() -> u32 {
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        nanos ^ std::process::id().rotate_left(16)
    })
}

fn shutdown_read(fd: RawFd) {
    // SAFETY: `fd` belongs to a connection that is still open: it is
    // removed from `idle` before its socket is dropped. shutdown(2) on a
    // valid socket has no memory effects.
    #[allow(unsafe_code)]
    unsafe {
        libc::shutdown(fd, libc::SHUT_RD);
    }
}

/// Accepts until shutdown, then waits for open connections to finish, for
/// at most the grace period.
pub async fn serve<S: Service>(ctx: Rc<ServerCtx>, listener: TcpListener, service: Rc<S>) {
    monoio::spawn(trim_memory(ctx.clone()));
    let shutdown = ctx.shutdown.clone();
    let mut stop = std::pin::pin!(shutdown.wait());
    loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            match crate::util::race(stop.as_mut(), accept).await {
                crate::util::Either::Left(()) => break,
                crate::util::Either::Right(r) => r,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(conn::serve(ctx.clone(), service.clone(), stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    ctx.draining.set(true);
    // Closing the listener makes the kernel stop routing connections here.
    drop(listener);
    ctx.close_idle();
    let deadline = std::time::Instant::now() + ctx.timeouts.shutdown_grace;
    while ctx.open_connections() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
        ctx.close_idle();
    }
    if ctx.open_connections() > 0 {
        log::warn!("grace period over: dropping {} connections", ctx.open_connections());
    }
}

impl Live for ServerCtx {
    fn open_connections(&self) -> usize {
        self.open.get()
    }

    fn draining(&self) -> bool {
        self.draining.get()
    }
}

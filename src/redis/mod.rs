//! A small Redis client on monoio, shared by the cache store and the rate
//! limit leases.
//!
//! Hand-written: the `redis` crate drives its connections on tokio or
//! async-std, and a blocking client would stall a worker's whole core. aigw
//! needs a handful of commands over RESP2 (`resp.rs`, sans-IO).
//!
//! Each worker thread keeps its own small pool of connections per client
//! (thread local: workers share nothing on the hot path). Every command is
//! bounded by the client's timeout; failures are counted.

pub mod resp;

use std::{
    cell::RefCell,
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;
use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};
pub use resp::Reply;

/// Idle connections kept per worker thread and client.
const MAX_IDLE: usize = 16;

/// How long the client stops trying after Redis failed to answer (timed
/// out, refused or dropped the connection). A Redis that blackholes —
/// accepts and never answers — would otherwise cost every request a whole
/// `redis_timeout`; with the breaker it costs one per cooldown.
pub const COOLDOWN: Duration = Duration::from_secs(2);

/// Where a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` as configured, for messages.
    pub display: String,
    pub password: Option<String>,
    pub db: u32,
    pub timeout: Duration,
}

struct Inner {
    id: u64,
    target: Target,
    errors: AtomicU64,
    breaker: Breaker,
}

/// A circuit breaker shared by every worker's use of one client: closed
/// (0), open until a moment (ms since `epoch`), or probing (one command
/// goes through to test the server; the rest fail fast meanwhile).
struct Breaker {
    open_until_ms: AtomicU64,
    probing: std::sync::atomic::AtomicBool,
}

const CLOSED: u64 = 0;

fn epoch_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let e = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(e.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Breaker {
    /// Whether a command may go to the server now.
    fn admit(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Acquire);
        if until == CLOSED {
            return true;
        }
        if epoch_ms() < until {
            return false;
        }
        // Cooled down: one probe at a time.
        !self.probing.swap(true, Ordering::AcqRel)
    }

    fn record(&self, healthy: bool) {
        if healthy {
            self.open_until_ms.store(CLOSED, Ordering::Release);
        } else {
            let until = epoch_ms().saturating_add(u64::try_from(COOLDOWN.as_millis()).unwrap_or(u64::MAX));
            self.open_until_ms.store(until, Ordering::Release);
        }
        self.probing.store(false, Ordering::Release);
    }
}

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

thread_local! {
    static POOLS: RefCell<HashMap<u64, Vec<Conn>>> = RefCell::new(HashMap::new());
}

pub enum Failure {
    Io,
    Timeout,
    Protocol,
    Refused(String),
    /// Not tried: the breaker is open after Redis stopped answering.
    Unavailable,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io => write!(f, "connection failed"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Protocol => write!(f, "protocol error"),
            Failure::Refused(e) => write!(f, "refused: {e}"),
            Failure::Unavailable => write!(f, "not tried: the breaker is open"),
        }
    }
}

impl Client {
    pub fn new(target: Target) -> Client {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let breaker =
            Breaker { open_until_ms: AtomicU64::new(CLOSED), probing: std::sync::atomic::AtomicBool::new(false) };
        Client { inner: Arc::new(Inner { id, target, errors: AtomicU64::new(0), breaker }) }
    }

    /// Commands that failed, timed out, or were refused.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Counts a failure found by the caller (a malformed value, say).
    pub fn count_error(&self) {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs one command within the timeout on a pooled connection; fails at
    /// once while the breaker is open.
    pub async fn run(&self, args: &[&[u8]]) -> Result<Reply, Failure> {
        if !self.inner.breaker.admit() {
            self.count_error();
            return Err(Failure::Unavailable);
        }
        let id = self.inner.id;
        // Boxed: inline, monoio's timer (640 bytes, aligned to 128) would
        // sit in the future of every request that may ask redis, asked or
        // not; the round trip dwarfs the allocation.
        let result = Box::pin(monoio::time::timeout(self.inner.target.timeout, async {
            let pooled = POOLS.with(|p| p.borrow_mut().get_mut(&id).and_then(Vec::pop));
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            let reply = exchange(&mut conn, args).await?;
            POOLS.with(|p| {
                let mut p = p.borrow_mut();
                let pool = p.entry(id).or_default();
                if pool.len() < MAX_IDLE {
                    pool.push(conn);
                }
            });
            Ok(reply)
        }))
        .await;
        let result = result.unwrap_or(Err(Failure::Timeout));
        // The server answered (even with an error or something odd): it is
        // there. Silence or a dropped connection opens the breaker.
        self.inner.breaker.record(!matches!(result, Err(Failure::Io | Failure::Timeout)));
        if let Err(e) = &result {
            self.count_error();
            log::debug!("redis {}: {e}", self.inner.target.display);
        }
        result
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let t = &self.inner.target;
        let stream = TcpStream::connect_addr(t.addr).await.map_err(|_| Failure::Io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { stream, buf: BytesMut::with_capacity(16 * 1024) };
        if let Some(pw) = &t.password {
            expect_ok(exchange(&mut conn, &[b"AUTH", pw.as_bytes()]).await?)?;
        }
        if t.db != 0 {
            let db = t.db.to_string();
            expect_ok(exchange(&mut conn, &[b"SELECT", db.as_bytes()]).await?)?;
        }
        Ok(conn)
    }
}

fn expect_ok(r: Reply) -> Result<(), Failure> {
    match r {
        Reply::Simple(_) => Ok(()),
        Reply::Error(e) => Err(Failure::Refused(e)),
        _ => Err(Failure::Protocol),
    }
}

/// Writes one command and reads its reply.
async fn exchange(conn: &mut Conn, args: &[&[u8]]) -> Result<Reply, Failure> {
    let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    resp::command(&mut out, args);
    conn.stream.write_all(out).await.0.map_err(|_| Failure::Io)?;
    conn.buf.clear();
    loop {
        if let Some((reply, used)) = resp::parse(&conn.buf).map_err(|_| Failure::Protocol)? {
            if used != conn.buf.len() {
                // One command in flight per connection: extra bytes mean
                // the stream is out of step.
                return Err(Failure::Protocol);
            }
            if let Reply::Error(e) = reply {
                return Err(Failure::Refused(e));
            }
            return Ok(reply);
        }
        if conn.buf.capacity() - conn.buf.len() < 4096 {
            conn.buf.reserve(64 * 1024);
        }
        let buf = std::mem::take(&mut conn.buf);
        let len = buf.len();
        let (res, slice) = conn.stream.read(monoio::buf::IoBufMut::slice_mut(buf, len..)).await;
        conn.buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return Err(Failure::Io),
            Ok(_) => {}
        }
    }
}

/// Escapes Redis glob metacharacters.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

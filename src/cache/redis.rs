//! The Redis store: entries as binary values under
//! `{prefix}{provider}:{key hex}` with a Redis TTL, so that every aigw host
//! behind one load balancer shares hits.
//!
//! Each worker thread keeps its own small pool of connections (thread
//! local: workers share nothing on the hot path). Every command is bounded
//! by `redis_timeout`; a failure, timeout or malformed value counts as a
//! miss and is counted in `aigw_cache_redis_errors_total`: a sick Redis
//! makes the gateway slower by at most the timeout, never wrong.

use std::{
    cell::RefCell,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{Bytes, BytesMut};
use monoio::{
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

use super::{
    CacheKey, Purge,
    entry::{Entry, now_unix_ms},
    resp::{self, Reply},
};
use crate::config::RedisConfig;

/// Idle connections kept per worker thread.
const MAX_IDLE: usize = 16;

struct Inner {
    config: RedisConfig,
    errors: AtomicU64,
}

#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

thread_local! {
    static POOL: RefCell<Vec<Conn>> = const { RefCell::new(Vec::new()) };
}

enum Failure {
    Io,
    Timeout,
    Protocol,
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io => write!(f, "connection failed"),
            Failure::Timeout => write!(f, "timed out"),
            Failure::Protocol => write!(f, "protocol error"),
            Failure::Refused(e) => write!(f, "refused: {e}"),
        }
    }
}

impl RedisStore {
    pub fn new(config: RedisConfig) -> RedisStore {
        RedisStore { inner: Arc::new(Inner { config, errors: AtomicU64::new(0) }) }
    }

    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    fn name(&self, provider: &str, key: CacheKey) -> Vec<u8> {
        format!("{}{provider}:{}", self.inner.config.prefix, key.hex()).into_bytes()
    }

    /// Runs one command within the timeout on a pooled connection.
    async fn run(&self, args: &[&[u8]]) -> Result<Reply, Failure> {
        let result = monoio::time::timeout(self.inner.config.timeout, async {
            let mut conn = match POOL.with(|p| p.borrow_mut().pop()) {
                Some(c) => c,
                None => self.connect().await?,
            };
            let reply = exchange(&mut conn, args).await?;
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < MAX_IDLE {
                    p.push(conn);
                }
            });
            Ok(reply)
        })
        .await;
        let result = result.unwrap_or(Err(Failure::Timeout));
        if let Err(e) = &result {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
            log::debug!("cache redis {}: {e}", self.inner.config.display);
        }
        result
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let stream = TcpStream::connect_addr(self.inner.config.addr).await.map_err(|_| Failure::Io)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn { stream, buf: BytesMut::with_capacity(16 * 1024) };
        if let Some(pw) = &self.inner.config.password {
            expect_ok(exchange(&mut conn, &[b"AUTH", pw.as_bytes()]).await?)?;
        }
        if self.inner.config.db != 0 {
            let db = self.inner.config.db.to_string();
            expect_ok(exchange(&mut conn, &[b"SELECT", db.as_bytes()]).await?)?;
        }
        Ok(conn)
    }

    pub async fn get(&self, provider: &str, key: CacheKey) -> Option<Entry> {
        match self.run(&[b"GET", &self.name(provider, key)]).await {
            Ok(Reply::Bulk(b)) => {
                let e = Entry::decode(b);
                if e.is_none() {
                    self.inner.errors.fetch_add(1, Ordering::Relaxed);
                }
                e
            }
            _ => None,
        }
    }

    /// Stores on a task of its own. Redis keeps the entry past its TTL (up
    /// to twice as long, at most an hour more) so that a lookup can tell
    /// EXPIRED from MISS, as the in-process store does.
    pub fn put(&self, key: CacheKey, entry: Entry) {
        let store = self.clone();
        monoio::spawn(async move {
            let left = entry.expires_unix_ms.saturating_sub(now_unix_ms());
            if left == 0 {
                return;
            }
            let px = (left + left.min(3_600_000)).to_string();
            let name = store.name(&entry.provider, key);
            let value = entry.encode();
            let _ = store.run(&[b"SET", &name, &value, b"PX", px.as_bytes()]).await;
        });
    }

    /// Deletes matching keys with SCAN + DEL (never KEYS, which blocks
    /// Redis on a large keyspace).
    pub async fn purge(&self, what: Purge<'_>) -> Result<u64, String> {
        let prefix = glob_escape(&self.inner.config.prefix);
        let pattern = match what {
            Purge::All => format!("{prefix}*"),
            Purge::Provider(p) => format!("{prefix}{}:*", glob_escape(p)),
            Purge::Key(k) => format!("{prefix}*:{}", k.hex()),
        };
        let mut cursor = b"0".to_vec();
        let mut removed = 0;
        loop {
            let reply = self
                .run(&[b"SCAN", &cursor, b"MATCH", pattern.as_bytes(), b"COUNT", b"1000"])
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let Reply::Array(mut parts) = reply else { return Err("redis: unexpected SCAN reply".into()) };
            let (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) = (parts.pop(), parts.pop()) else {
                return Err("redis: unexpected SCAN reply".into());
            };
            let names: Vec<Bytes> =
                keys.into_iter().filter_map(|k| if let Reply::Bulk(b) = k { Some(b) } else { None }).collect();
            if !names.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"DEL"];
                args.extend(names.iter().map(|b| &b[..]));
                if let Reply::Int(n) = self.run(&args).await.map_err(|e| format!("redis: {e}"))? {
                    removed += u64::try_from(n).unwrap_or(0);
                }
            }
            if &next[..] == b"0" {
                return Ok(removed);
            }
            cursor = next.to_vec();
        }
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
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

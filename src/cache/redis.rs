//! The Redis store: entries as binary values under
//! `{prefix}{provider}:{key hex}` with a Redis TTL, so that every aigw host
//! behind one load balancer shares hits.
//!
//! Every command is bounded by `redis_timeout` (`crate::redis`); a failure,
//! timeout or malformed value counts as a miss and is counted in
//! `aigw_cache_redis_errors_total`: a sick Redis makes the gateway slower
//! by at most the timeout, never wrong.

use std::sync::Arc;

use bytes::Bytes;

use super::{CacheKey, Purge, entry::Entry};
use crate::{
    config::RedisConfig,
    redis::{Client, Reply, Target, glob_escape},
    util::now_unix_ms,
};

#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
}

impl RedisStore {
    pub fn new(config: RedisConfig) -> RedisStore {
        let target = Target {
            addr: config.addr,
            display: config.display,
            password: config.password,
            db: config.db,
            timeout: config.timeout,
        };
        RedisStore { client: Client::new(target), prefix: Arc::from(config.prefix.as_str()) }
    }

    pub fn errors(&self) -> u64 {
        self.client.errors()
    }

    fn name(&self, provider: &str, key: CacheKey) -> Vec<u8> {
        format!("{}{provider}:{}", self.prefix, key.hex()).into_bytes()
    }

    pub async fn get(&self, provider: &str, key: CacheKey) -> Option<Entry> {
        match self.client.run(&[b"GET", &self.name(provider, key)]).await {
            Ok(Reply::Bulk(b)) => {
                let e = Entry::decode(b);
                if e.is_none() {
                    self.client.count_error();
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
            let _ = store.client.run(&[b"SET", &name, &value, b"PX", px.as_bytes()]).await;
        });
    }

    /// Deletes matching keys with SCAN + DEL (never KEYS, which blocks
    /// Redis on a large keyspace).
    pub async fn purge(&self, what: Purge<'_>) -> Result<u64, String> {
        let prefix = glob_escape(&self.prefix);
        let pattern = match what {
            Purge::All => format!("{prefix}*"),
            Purge::Provider(p) => format!("{prefix}{}:*", glob_escape(p)),
            Purge::Key(k) => format!("{prefix}*:{}", k.hex()),
        };
        let mut cursor = b"0".to_vec();
        let mut removed = 0;
        loop {
            let reply = self
                .client
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
                if let Reply::Int(n) = self.client.run(&args).await.map_err(|e| format!("redis: {e}"))? {
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

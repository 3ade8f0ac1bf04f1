//! Per-worker keep-alive pools, one stack per provider. Worker-local, so no
//! lock: a connection is only ever used by the thread that opened it.

use std::time::Instant;

use super::io::Connection;
use crate::config::PoolConfig;

pub struct Pool {
    /// Indexed by provider index. LIFO: the most recently used connection is
    /// the least likely to have been closed by the upstream.
    idle: Vec<Vec<Connection>>,
    config: Vec<PoolConfig>,
}

impl Pool {
    pub fn new(config: Vec<PoolConfig>) -> Self {
        Self { idle: config.iter().map(|_| Vec::new()).collect(), config }
    }

    /// A pooled connection younger than the idle timeout that still looks
    /// open, if any.
    pub fn take(&mut self, provider: usize) -> Option<Connection> {
        let timeout = self.config.get(provider)?.idle_timeout;
        let stack = self.idle.get_mut(provider)?;
        // One clock read for the whole take: at ~18 per request, clock
        // reads were 2.5% of a proxied request's CPU (docs/benchmarks.md).
        let now = Instant::now();
        while let Some(mut conn) = stack.pop() {
            let idle = now.saturating_duration_since(conn.idle_since);
            if idle < timeout && conn.looks_alive(idle) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&mut self, provider: usize, mut conn: Connection) {
        let (Some(stack), Some(config)) = (self.idle.get_mut(provider), self.config.get(provider)) else {
            return;
        };
        // The oldest idle connections sit at the bottom: close the expired
        // ones here, so a burst's connections do not linger after it.
        let now = Instant::now();
        let expired =
            stack.iter().take_while(|c| now.saturating_duration_since(c.idle_since) >= config.idle_timeout).count();
        if expired > 0 {
            stack.drain(..expired);
        }
        if stack.len() < config.max_idle {
            conn.park(now);
            stack.push(conn);
        }
    }

    pub fn idle_count(&self, provider: usize) -> usize {
        self.idle.get(provider).map_or(0, Vec::len)
    }

    pub fn total_idle(&self) -> usize {
        self.idle.iter().map(Vec::len).sum()
    }
}

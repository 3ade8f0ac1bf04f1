//! aigw: a self-hosted AI gateway on a thread-per-core io_uring runtime.
//!
//! # The life of a request (data listener)
//!
//! 1. `server/runtime.rs` — each worker thread, pinned to a core, runs a
//!    monoio runtime (io_uring, or epoll where io_uring is missing) and
//!    accepts on its own `SO_REUSEPORT` listener (`server/listener.rs`).
//! 2. `server/conn.rs` — the connection loop reads into a reusable buffer;
//!    `http/request.rs` parses the head in place (httparse) and applies
//!    RFC 9112's framing rules; the body is read whole (`http/chunked.rs`
//!    for chunked bodies) and moved as `Bytes`.
//! 3. `proxy/mod.rs` — routes `/{provider}/{rest}` to a provider.
//! 4. `proxy/headers.rs` — rewrites the head for the upstream: hop-by-hop
//!    and client credentials out; Host, X-Forwarded-For, the provider key
//!    and an exact Content-Length in.
//! 5. `upstream/exchange.rs` — takes a keep-alive connection from this
//!    worker's pool (`upstream/pool.rs`) or opens one (`upstream/io.rs`,
//!    rustls for https), sends, reads the response head; a stale pooled
//!    connection is retried once on a fresh one.
//! 6. `proxy/relay.rs` — writes the rewritten response head and relays the
//!    body as it arrives (re-framed as chunks for streams), watching for the
//!    client leaving; the upstream connection goes back to the pool.
//!    The tap (`tap/`) sees every decoded body byte on the way and reads
//!    the token usage from the one event or body that carries it.
//! 7. `error.rs` — anything that fails before the response head maps to one
//!    status and an OpenAI-shaped JSON error, in one place.
//! 8. `analytics/recorder.rs` — the connection loop hands the finished
//!    request's record (status, tokens, cost, timings) to the worker's
//!    recorder: local counters and histograms, shipped every 250 ms to the
//!    collector thread, and the record itself to the log thread.
//!
//! Shutdown (`server/shutdown.rs`): stop accepting, close idle keep-alive
//! connections, let in-flight requests and streams finish within the grace
//! period.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod http;
pub mod mock;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod routing;
pub mod server;
pub mod tap;
pub mod upstream;
mod util;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

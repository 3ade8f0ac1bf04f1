//! aigw: a self-hosted AI gateway on a thread-per-core io_uring runtime.
//!
//! # The life of a request (data listener)
//!
//! The connection (`server/`, generic over `service::Service`):
//!
//! - `server/runtime.rs` — each worker thread runs a monoio runtime (io_uring,
//!   or epoll where io_uring is missing) and accepts on its own
//!   `SO_REUSEPORT` listener (`server/listener.rs`).
//! - `server/conn.rs` — the connection loop reads into a reusable buffer;
//!   `http/request.rs` parses the head in place (httparse) and applies RFC
//!   9112's framing rules; the body is read whole (`http/chunked.rs` for
//!   chunked bodies) and handed to the service as a `service::Request`.
//!
//! The gateway's service, `proxy/pipeline.rs`: phases in this order over one
//! `proxy/ctx.rs` `RequestCtx`:
//!
//! 1. authenticate — `proxy/access.rs`: the gateway key.
//! 2. routing facts — `providers/body.rs`: model, stream, stream_options.
//! 3. resolve — `proxy/resolve.rs`: provider, route or unified endpoint.
//! 4. guard (request) — `proxy/guard.rs`: request-side guardrails.
//! 5. admit — `proxy/access.rs`: scopes, rate limits, budget.
//! 6. controls — `proxy/controls.rs`: `x-aigw-*` metadata, retries, timeout.
//! 7. cache — `proxy/cached.rs`: lookup, hit, coalesce, or a fill.
//! 8. attempts — `proxy/attempts.rs`, `proxy/outgoing.rs`,
//!    `upstream/exchange.rs`: retries and fallback until an answer.
//! 9. relay — `proxy/relay/mod.rs`: the head (`http/respond.rs`), then the
//!    body through the filter chain `proxy/relay/filter.rs`: tap (`tap/`) →
//!    translate (`providers/translate.rs`) → strip → guard (response) →
//!    cache recorder; the store decision (`cache/mod.rs`).
//! 10. finish — `proxy/pipeline.rs`: settle limits and budget from what the
//!     tap counted, then the `analytics::Record`, once
//!     (`analytics/recorder.rs`).
//!
//! Errors at any phase are `error.rs` `GatewayError`s: status, side,
//! retryability and code each decided in one exhaustive match.
//!
//! Shutdown (`util/shutdown.rs`, `server/listener.rs`): stop accepting, close
//! idle keep-alive connections, let in-flight requests and streams finish
//! within the grace period. `gateway.rs` starts and stops it all.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod gateway;
pub mod guardrails;
pub mod http;
pub mod mock;
pub mod pricing;
pub mod providers;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod routing;
pub mod server;
pub mod service;
pub mod tap;
pub mod upstream;
pub mod util;

// `--features system-alloc` builds with the C allocator instead, so heap
// profilers that interpose malloc (heaptrack, valgrind) see every
// allocation; see docs/benchmarks.md, "Memory per stream".
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

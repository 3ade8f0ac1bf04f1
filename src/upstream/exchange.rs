//! One request to an upstream, up to its response head.
//!
//! Stale-connection retry: a pooled connection may have been closed by the
//! upstream while idle. If sending fails, or an idempotent request's
//! connection ends before any response byte, the request goes once more on
//! a fresh connection. A POST whose reused connection ends silently after
//! the request was written is not retried (the upstream may have acted on
//! it); pooled connections idle for over a second are checked before reuse
//! so that case stays rare.

use std::{cell::RefCell, time::Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::{
    Upstream,
    io::{Connection, connect},
    pool::Pool,
};
use crate::{
    error::GatewayError,
    http::response::{self, ParsedResponse, ResponseError},
    util::timer::Timer,
};

/// Largest response head we accept from an upstream.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A request ready to send: the rewritten head (with the body appended when
/// small) and, for large bodies, the body on its own.
pub struct Outgoing {
    pub head: BytesMut,
    pub body: Option<Bytes>,
    pub idempotent: bool,
    pub head_request: bool,
}

/// The upstream has answered with a head; its body is next on `conn`.
pub struct ResponseStart {
    pub conn: Connection,
    pub head: ParsedResponse,
    pub raw_head: Bytes,
    /// Connections tried: 2 when a stale pooled one was retried.
    pub attempts: u32,
}

enum Failure {
    /// The request could not be written: safe to send again.
    NotSent(GatewayError),
    /// The head went out but not the whole body.
    Partial(GatewayError),
    /// Written, but the connection ended before any response byte.
    NoResponse(GatewayError),
    Fatal(GatewayError),
}

/// An exchange that got no usable answer.
#[derive(Debug)]
pub struct Failed {
    pub error: GatewayError,
    /// The whole request reached the upstream: it may have acted on it
    /// (and billed it) although no answer came back.
    pub delivered: bool,
}

pub async fn start(
    pool: &RefCell<Pool>,
    up: &Upstream,
    mut req: Outgoing,
    deadline: Instant,
    timer: &mut Timer,
) -> Result<ResponseStart, Failed> {
    let mut fresh_only = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let pooled = if fresh_only { None } else { pool.borrow_mut().take(up.index) };
        let conn = match pooled {
            Some(c) => c,
            None => connect(up, timer).await.map_err(|error| Failed { error, delivered: false })?,
        };
        let reused = conn.reused;
        let (result, back) = send(conn, up, req, deadline, timer).await;
        req = back;
        match result {
            Ok(start) => return Ok(ResponseStart { attempts, ..start }),
            Err(Failure::NotSent(_)) if reused => fresh_only = true,
            Err(Failure::NoResponse(_) | Failure::Partial(_)) if reused && req.idempotent => fresh_only = true,
            Err(Failure::Partial(_)) if reused => fresh_only = true,
            Err(Failure::NotSent(error) | Failure::Partial(error)) => return Err(Failed { error, delivered: false }),
            Err(Failure::NoResponse(error) | Failure::Fatal(error)) => return Err(Failed { error, delivered: true }),
        }
        log::debug!("provider {}: pooled connection was stale, retrying on a fresh one", up.name);
    }
}

/// Writes the request and reads the response head. Gives the request
/// buffers back so a retry can send them again.
async fn send(
    mut conn: Connection,
    up: &Upstream,
    req: Outgoing,
    deadline: Instant,
    timer: &mut Timer,
) -> (Result<ResponseStart, Failure>, Outgoing) {
    let Outgoing { head, body, idempotent, head_request } = req;
    let (res, head) = conn.io.write_all(head).await;
    let body = match (res, body) {
        (Err(e), body) => {
            let err = GatewayError::UpstreamConnect { provider: up.name.clone(), detail: e.to_string() };
            return (Err(Failure::NotSent(err)), Outgoing { head, body, idempotent, head_request });
        }
        (Ok(_), Some(body)) => {
            let (res, body) = conn.io.write_all(body).await;
            if let Err(e) = res {
                // Part of the request went out: the same connection cannot
                // be used again, but a fresh one may (a request without its
                // whole body cannot have been acted on).
                let err = GatewayError::UpstreamConnect { provider: up.name.clone(), detail: e.to_string() };
                return (Err(Failure::Partial(err)), Outgoing { head, body: Some(body), idempotent, head_request });
            }
            Some(body)
        }
        (Ok(_), None) => None,
    };
    let first_byte = (Instant::now() + up.timeouts.first_byte).min(deadline);
    let result = read_head(&mut conn, up, head_request, first_byte, timer).await;
    let req = Outgoing { head, body, idempotent, head_request };
    match result {
        Ok((parsed, raw_head)) => (Ok(ResponseStart { conn, head: parsed, raw_head, attempts: 1 }), req),
        Err(f) => (Err(f), req),
    }
}

async fn read_head(
    conn: &mut Connection,
    up: &Upstream,
    head_request: bool,
    deadline: Instant,
    timer: &mut Timer,
) -> Result<(ParsedResponse, Bytes), Failure> {
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, head_request, MAX_RESPONSE_HEAD) {
                Ok(Some(p)) if p.status == 101 => {
                    return Err(Failure::Fatal(protocol(up, "unexpected 101 Switching Protocols")));
                }
                // Interim responses (100 Continue, 103 Early Hints) are skipped.
                Ok(Some(p)) if p.status < 200 => {
                    conn.buf.advance(p.len);
                    continue;
                }
                Ok(Some(p)) => {
                    // A copy, not a split: the head lives as long as the
                    // answer, and a split would keep the read buffer shared,
                    // so every refill of a stream would allocate anew.
                    let raw = Bytes::copy_from_slice(&conn.buf[..p.len]);
                    conn.buf.advance(p.len);
                    return Ok((p, raw));
                }
                Ok(None) => {}
                Err(ResponseError::Malformed(why)) => return Err(Failure::Fatal(protocol(up, why))),
                Err(ResponseError::TooLarge) => {
                    return Err(Failure::Fatal(protocol(up, "response head too large")));
                }
            }
        }
        match conn.read_by(timer, deadline).await {
            Some(Ok(0)) if !received => {
                return Err(Failure::NoResponse(GatewayError::UpstreamClosed { provider: up.name.clone() }));
            }
            Some(Ok(0)) => return Err(Failure::Fatal(protocol(up, "connection closed inside the response head"))),
            Some(Ok(_)) => received = true,
            Some(Err(_)) if !received => {
                return Err(Failure::NoResponse(GatewayError::UpstreamClosed { provider: up.name.clone() }));
            }
            Some(Err(_)) => return Err(Failure::Fatal(protocol(up, "connection reset inside the response head"))),
            None => {
                return Err(Failure::Fatal(GatewayError::UpstreamTimeout {
                    provider: up.name.clone(),
                    phase: "waiting for the response head",
                }));
            }
        }
    }
}

fn protocol(up: &Upstream, detail: &'static str) -> GatewayError {
    GatewayError::UpstreamProtocol { provider: up.name.clone(), detail }
}

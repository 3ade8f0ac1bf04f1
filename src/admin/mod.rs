//! The admin listener: liveness and readiness for load balancers.
//! Metrics, stats and logs join it with the analytics pipeline.

use std::sync::Arc;

use crate::{
    error::{GatewayError, json_error, json_response},
    server::{
        conn::{ClientIo, Outcome, Request},
        shutdown::Shutdown,
    },
};

pub struct AdminCtx {
    pub shutdown: Arc<Shutdown>,
}

pub async fn handle(a: &AdminCtx, req: Request, io: &mut ClientIo, keep_alive: bool) -> Result<Outcome, GatewayError> {
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    let (status, body) = match (req.head.method(), path) {
        (b"GET" | b"HEAD", b"/healthz") => (200, r#"{"status":"ok"}"#.to_string()),
        // A draining gateway still finishes its requests but should get no
        // new ones: the load balancer sees 503 and moves on.
        (b"GET" | b"HEAD", b"/readyz") if a.shutdown.is_triggered() => (503, r#"{"status":"draining"}"#.to_string()),
        (b"GET" | b"HEAD", b"/readyz") => (200, r#"{"status":"ready"}"#.to_string()),
        _ => (404, json_error("no such admin endpoint", "invalid_request_error", "not_found")),
    };
    let mut resp = json_response(status, &body, req.head.version(), Some(req.id.as_bytes()), !keep_alive);
    if req.head.is_head_method() {
        resp.truncate(resp.len() - body.len());
    }
    Ok(if io.send(resp).await && keep_alive { Outcome::Reusable } else { Outcome::Close })
}

//! `GET /v1/models`: what the unified endpoint accepts as `model` — every
//! route, each provider's configured `models`, and each route target's
//! model, as `provider/model`.

use serde_json::json;

use super::{Worker, ctx::RequestCtx};
use crate::{
    http::respond::{Head, To},
    service::{ClientIo, Outcome},
};

/// Answers the list.
pub async fn answer(w: &Worker, ctx: &mut RequestCtx<'_>, io: &mut ClientIo) -> Outcome {
    let body = list(w);
    let to = To { version: ctx.version, keep_alive: ctx.keep_alive, request_id: Some(ctx.id.as_bytes()) };
    let resp = Head::with_body(200, b"application/json", body.as_bytes(), &[&ctx.admission.headers], to);
    let len = resp.len() as u64;
    let sent = io.send(resp).await;
    ctx.response.status = 200;
    ctx.response.bytes_out = if sent { len } else { 0 };
    if sent && ctx.keep_alive { Outcome::Reusable } else { Outcome::Close }
}

fn list(w: &Worker) -> String {
    let mut data = Vec::new();
    for r in &w.shared.router.routes {
        data.push(json!({ "id": r.name, "object": "model", "created": 0, "owned_by": "aigw-route" }));
    }
    let mut seen = std::collections::BTreeSet::new();
    for up in &w.shared.upstreams {
        for m in &up.models {
            seen.insert((up.name.clone(), m.clone()));
        }
    }
    for r in &w.shared.router.routes {
        for t in &r.targets {
            if let (Some(up), Some(m)) = (w.shared.upstreams.get(t.provider), &t.model) {
                seen.insert((up.name.clone(), m.clone()));
            }
        }
    }
    for (p, m) in seen {
        data.push(json!({ "id": format!("{p}/{m}"), "object": "model", "created": 0, "owned_by": p }));
    }
    json!({ "object": "list", "data": data }).to_string()
}

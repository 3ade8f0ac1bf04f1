//! `GET /v1/models`: what the unified endpoint accepts as `model` — every
//! route, each provider's configured `models`, and each route target's
//! model, as `provider/model`.

use serde_json::json;

use super::Worker;

pub fn list(w: &Worker) -> String {
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

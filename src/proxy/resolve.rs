//! What a request addresses: a provider (`/{provider}/{rest}`), a route
//! used as a prefix (`/{route}/{rest}`), or the unified endpoint
//! (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`) with `"model":
//! "provider/model"` or a route name. The result is the list of candidates
//! the attempts walk.

use std::sync::Arc;

use super::Worker;
use crate::{
    config::{ProviderKind, Route, routes::api_kind},
    error::GatewayError,
    server::conn::Request,
    upstream::Upstream,
};

/// Which API the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The provider's own API, forwarded as it is.
    Passthrough,
    /// `/v1/chat/completions`: OpenAI chat, translated for other kinds.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`, answered by the gateway.
    Models,
}

/// One place an attempt can go.
pub struct Candidate<'a> {
    pub up: &'a Upstream,
    /// The model to send (None: the client's, untouched).
    pub model: Option<String>,
}

pub struct Resolved<'a> {
    pub api: Api,
    /// The route or provider name: the `provider` of limits and the cache.
    pub label: &'a str,
    pub route: Option<Arc<Route>>,
    pub candidates: Vec<Candidate<'a>>,
    /// Path and query under the provider (pass-through).
    pub rest: &'a [u8],
}

/// Routes a request by its target and (unified endpoint) its body's
/// `model`, which the caller has already scanned.
pub fn resolve<'a>(w: &'a Worker, req: &'a Request, model: Option<&str>) -> Result<Resolved<'a>, GatewayError> {
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    let unified = match path {
        b"/v1/chat/completions" => Some(Api::Chat),
        b"/v1/embeddings" => Some(Api::Embeddings),
        b"/v1/models" => Some(Api::Models),
        _ => None,
    };
    if let Some(api) = unified {
        let method = req.head.method();
        match api {
            Api::Models if method != b"GET" => return Err(GatewayError::MethodNotAllowed { allowed: "GET" }),
            Api::Chat | Api::Embeddings if method != b"POST" => {
                return Err(GatewayError::MethodNotAllowed { allowed: "POST" });
            }
            _ => return unified_target(w, api, model),
        }
    }
    let after_slash = &target[1..];
    let end = after_slash.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after_slash.len());
    let name = std::str::from_utf8(&after_slash[..end]).unwrap_or("");
    let rest = &after_slash[end..];
    if let Some(up) = w.shared.upstream(name) {
        return Ok(Resolved {
            api: Api::Passthrough,
            label: &up.name,
            route: None,
            candidates: vec![Candidate { up, model: None }],
            rest,
        });
    }
    match w.shared.router.route(name) {
        Some(route) if route.kind.is_some() => Ok(Resolved {
            api: Api::Passthrough,
            label: &route.name,
            candidates: candidates(w, route),
            route: Some(route.clone()),
            rest,
        }),
        Some(route) => Err(GatewayError::BadRouteUse {
            name: route.name.clone(),
            why: "its targets speak different APIs: use it as a model on /v1/chat/completions",
        }),
        None => Err(GatewayError::NoSuchRoute { name: name.to_string() }),
    }
}

fn candidates<'a>(w: &'a Worker, route: &Route) -> Vec<Candidate<'a>> {
    route
        .targets
        .iter()
        .filter_map(|t| Some(Candidate { up: w.shared.upstreams.get(t.provider)?, model: t.model.clone() }))
        .collect()
}

fn unified_target<'a>(w: &'a Worker, api: Api, model: Option<&str>) -> Result<Resolved<'a>, GatewayError> {
    if api == Api::Models {
        return Ok(Resolved { api, label: "gateway", route: None, candidates: Vec::new(), rest: b"" });
    }
    let model = model.ok_or(GatewayError::InvalidBody {
        param: "model",
        why: "a model is required: \"provider/model\" or a route name".into(),
    })?;
    if let Some(route) = w.shared.router.route(model) {
        return Ok(Resolved {
            api,
            label: &route.name,
            candidates: candidates(w, route),
            route: Some(route.clone()),
            rest: b"",
        });
    }
    let Some((provider, name)) = model.split_once('/') else {
        return Err(GatewayError::ModelNotFound { model: model.to_string() });
    };
    let up = w.shared.upstream(provider).ok_or_else(|| GatewayError::ModelNotFound { model: model.to_string() })?;
    if api == Api::Embeddings && api_kind(up.kind) != ProviderKind::OpenAi {
        return Err(GatewayError::InvalidBody {
            param: "model",
            why: format!("provider `{provider}` has no embeddings on the unified endpoint"),
        });
    }
    Ok(Resolved {
        api,
        label: &up.name,
        route: None,
        candidates: vec![Candidate { up, model: Some(name.to_string()) }],
        rest: b"",
    })
}

//! What a request addresses: a provider (`/{provider}/{rest}`), a route
//! used as a prefix (`/{route}/{rest}`), or the unified endpoint
//! (`/v1/chat/completions`, `/v1/embeddings`, `/v1/models`) with `"model":
//! "provider/model"` or a route name. The result is the list of candidates
//! the attempts walk.

use std::sync::Arc;

use super::Worker;
pub use crate::providers::Api;
use crate::{
    config::{ProviderKind, Route, routes::api_kind},
    error::GatewayError,
    providers::Translation,
    service::Request,
    upstream::Upstream,
};

/// One place an attempt can go.
pub struct Candidate<'a> {
    pub up: &'a Upstream,
    /// The model to send (None: the client's, untouched).
    pub model: Option<String>,
    /// How the request and answer are translated for this target.
    pub translation: Translation,
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

impl Resolved<'_> {
    /// Routed (a route, or the unified endpoint): the answer names the
    /// provider that served it and the attempts made.
    pub fn names_provider(&self) -> bool {
        self.route.is_some() || self.api != Api::Passthrough
    }

    /// The path the upstream gets for untranslated requests.
    pub fn upstream_path(&self) -> &[u8] {
        self.api.upstream_path().unwrap_or(self.rest)
    }
}

/// Routes a request by its target and (unified endpoint) its body's
/// `model`, which the caller has already scanned.
pub fn resolve<'a>(w: &'a Worker, req: &'a Request, model: Option<&str>) -> Result<Resolved<'a>, GatewayError> {
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    if let Some(api) = Api::unified(path) {
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
    crate::http::path::check_segments(rest).map_err(|why| GatewayError::InvalidPath { why })?;
    if let Some(up) = w.shared.upstream(name) {
        return Ok(Resolved {
            api: Api::Passthrough,
            label: &up.name,
            route: None,
            candidates: vec![Candidate { up, model: None, translation: Translation::None }],
            rest,
        });
    }
    match w.shared.router.route(name) {
        Some(route) if route.kind.is_some() => Ok(Resolved {
            api: Api::Passthrough,
            label: &route.name,
            candidates: candidates(w, route, Api::Passthrough),
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

fn candidates<'a>(w: &'a Worker, route: &Route, api: Api) -> Vec<Candidate<'a>> {
    let candidate = |t: &crate::config::routes::Target| {
        let up: &Upstream = w.shared.upstreams.get(t.provider)?;
        Some(Candidate { up, model: t.model.clone(), translation: Translation::of(api, up.kind) })
    };
    route.targets.iter().filter_map(candidate).collect()
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
            candidates: candidates(w, route, api),
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
        candidates: vec![Candidate { up, model: Some(name.to_string()), translation: Translation::of(api, up.kind) }],
        rest: b"",
    })
}

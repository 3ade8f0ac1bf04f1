//! `[routes.NAME]`: a name clients use as `model` on the unified endpoint
//! (and as a path prefix when its targets share one API kind), mapped to
//! provider + model targets with a strategy, retries and fallback.

use std::time::Duration;

use super::{
    Errors, Provider, ProviderKind,
    raw::{RawRoute, RawStrategy},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    /// Attempts per request over all targets (default: targets + 1, at
    /// least 2); `x-aigw-max-attempts` lowers or raises it up to 10.
    pub max_attempts: u32,
    pub cache_ttl: Option<Duration>,
    /// Every target speaks this API: the route is also a pass-through
    /// prefix `/{route}/{rest}`.
    pub kind: Option<ProviderKind>,
    /// Guardrail policies for requests through this route.
    pub guardrails: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// In order; the next on failure.
    Fallback,
    /// By weight for the first attempt, then the others in order.
    Weighted,
    /// The target with the fewest requests in flight first.
    LeastOutstanding,
    /// Rendezvous hashing on the prompt prefix: requests sharing a prefix
    /// reach the same replica (and its prefix cache).
    PrefixAffinity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into `Config::providers`.
    pub provider: usize,
    /// The model sent upstream (None: the client's).
    pub model: Option<String>,
    pub weight: u32,
}

pub(super) fn validate(errors: &mut Errors, name: String, raw: RawRoute, providers: &[Provider]) -> Option<Route> {
    let before = errors.0.len();
    let at = |k: &str| format!("routes.{name}.{k}");
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        errors.push(format!("routes.{name}"), "name may hold only letters, digits, '-', '_' and '.'");
    }
    if super::RESERVED_NAMES.contains(&name.as_str()) || providers.iter().any(|p| p.name == name) {
        errors.push(format!("routes.{name}"), "name is taken by a provider or the gateway's own routes");
    }
    if raw.targets.is_empty() {
        errors.push(at("targets"), "at least one target");
    }
    let mut targets = Vec::new();
    for (i, t) in raw.targets.into_iter().enumerate() {
        match providers.iter().position(|p| p.name == t.provider) {
            Some(provider) => targets.push(Target { provider, model: t.model, weight: t.weight.unwrap_or(1) }),
            None => {
                errors.push(format!("routes.{name}.targets[{i}].provider"), format!("no provider `{}`", t.provider))
            }
        }
    }
    let strategy = match raw.strategy {
        None | Some(RawStrategy::Fallback) => Strategy::Fallback,
        Some(RawStrategy::Weighted) => Strategy::Weighted,
        Some(RawStrategy::LeastOutstanding) => Strategy::LeastOutstanding,
        Some(RawStrategy::PrefixAffinity) => Strategy::PrefixAffinity,
    };
    if strategy == Strategy::Weighted && targets.iter().all(|t| t.weight == 0) {
        errors.push(at("targets"), "weighted routes need a target with weight > 0");
    }
    let max_attempts = raw.max_attempts.unwrap_or((targets.len() as u32 + 1).max(2));
    if !(1..=10).contains(&max_attempts) {
        errors.push(at("max_attempts"), "must be 1 to 10");
    }
    let kinds: Vec<ProviderKind> =
        targets.iter().filter_map(|t| providers.get(t.provider)).map(|p| api_kind(p.kind)).collect();
    let kind = kinds.first().copied().filter(|k| kinds.iter().all(|x| x == k));
    (errors.0.len() == before).then_some(Route {
        name,
        strategy,
        targets,
        max_attempts,
        cache_ttl: raw.cache_ttl,
        kind,
        guardrails: raw.guardrails,
    })
}

/// The wire API a provider speaks (the mock speaks OpenAI's and
/// Anthropic's; it counts as OpenAI for routing).
pub fn api_kind(kind: ProviderKind) -> ProviderKind {
    match kind {
        ProviderKind::Mock => ProviderKind::OpenAi,
        k => k,
    }
}

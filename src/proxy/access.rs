//! Admission: the gateway key, rate limits and the budget, before anything
//! goes upstream; and settling what the request used once it ends. All of
//! it reads and writes the request's context: the identity it
//! authenticated, the charges it took, the usage the tap counted.

use std::sync::Arc;

use super::{
    Worker,
    ctx::{Identity, RequestCtx},
    resolve::Resolved,
};
use crate::{
    auth::{self, AuthError, keyfile::OnUnpriced},
    error::GatewayError,
    providers::body,
    ratelimit::{self, LimitInput, budget},
    service::Request,
    tap::Usage,
};

/// Checks the gateway key (auth mode "keys"): 401 without a valid one.
pub fn authenticate(w: &Worker, req: &Request, ctx: &mut RequestCtx<'_>) -> Result<(), GatewayError> {
    let Some(keys) = &w.keys else { return Ok(()) };
    let presented = auth::presented_key(&req.head);
    let key = keys.authenticate(presented.map(|(_, v)| v)).map_err(GatewayError::Unauthorized)?;
    ctx.identity = Identity { key_header: presented.map(|(h, _)| h), key: Some(key) };
    Ok(())
}

/// Provider and model permissions, rate limits, then the budget, for the
/// resolved target.
pub async fn admit(
    w: &Worker,
    req: &Request,
    ctx: &mut RequestCtx<'_>,
    target: &Resolved<'_>,
) -> Result<(), GatewayError> {
    let label = target.label;
    let model = ctx.facts.model.as_deref();
    let key = ctx.identity.key.as_deref();
    if let Some(k) = key {
        k.allows(label, model).map_err(|e| match e {
            AuthError::ProviderNotAllowed(_) | AuthError::ModelNotAllowed(_) => GatewayError::Forbidden(e),
            other => GatewayError::Unauthorized(other),
        })?;
    }
    let limiter = &w.shared.limiter;
    let a = &mut ctx.admission;
    if limiter.is_active(key) {
        let input = LimitInput { head: &req.head, peer: req.peer.ip(), key, provider: label, route: label, model };
        match limiter.admit(&input, limiter.table.now()).await {
            Ok(adm) => {
                ratelimit::headers(&mut a.headers, adm.requests, adm.tokens);
                a.limits = Some(adm);
            }
            Err(refusal) => {
                a.limited_by = Some(refusal.rule.clone());
                let mut headers = Vec::new();
                let state = Some(refusal.state);
                match refusal.unit {
                    crate::config::Unit::Requests => ratelimit::headers(&mut headers, state, None),
                    crate::config::Unit::Tokens => ratelimit::headers(&mut headers, None, state),
                }
                return Err(GatewayError::RateLimited {
                    rule: refusal.rule.to_string(),
                    unit: refusal.unit.as_str(),
                    retry_after_s: ratelimit::retry_after_secs(refusal.retry_after),
                    headers: String::from_utf8_lossy(&headers).into_owned(),
                });
            }
        }
    }
    if let Some(k) = key
        && (k.daily_usd.is_some() || k.monthly_usd.is_some())
    {
        let estimate = match estimate_cost(w, req, target, model) {
            Some(cost) => cost,
            None if k.on_unpriced == OnUnpriced::Deny => {
                return Err(GatewayError::UnpricedModel { model: served_model(target, model).to_string() });
            }
            None => {
                ctx.unpriced = true;
                0.0
            }
        };
        let limits = budget::Limits { daily: k.daily_usd, monthly: k.monthly_usd };
        let reserved = match &limiter.leases {
            Some(leases) => leases.reserve(&limiter.budgets, &k.id, limits, estimate, now_unix()).await,
            None => limiter.budgets.reserve(&k.id, limits, estimate, now_unix()),
        };
        match reserved {
            Ok(r) => a.reservation = Some(r),
            Err(e) => {
                // The request buckets keep their charge (a request was
                // made); token buckets are never debited for it.
                a.limits = None;
                a.limited_by = Some(Arc::from(if e.period == "daily" { "budget-daily" } else { "budget-monthly" }));
                return Err(GatewayError::BudgetExceeded {
                    period: e.period,
                    limit_usd: format!("{:.2}", e.limit),
                    retry_after_s: ratelimit::retry_after_secs(e.retry_after),
                });
            }
        }
    }
    Ok(())
}

/// What a request may cost at most, as far as the gateway can tell before
/// sending it: prompt bytes / 3 as input tokens, its output cap (or
/// `DEFAULT_OUTPUT`) as output tokens, at the price of the model each
/// candidate would serve (the route's target model, not the name the client
/// sent) — the most expensive of them, since any may answer. None when no
/// candidate's model has a price.
fn estimate_cost(w: &Worker, req: &Request, target: &Resolved<'_>, model: Option<&str>) -> Option<f64> {
    let output = body::max_output_tokens(&req.body).unwrap_or(budget::DEFAULT_OUTPUT);
    let usage = Usage { input: (req.body.len() as u64).div_ceil(3), output, ..Usage::default() };
    target
        .candidates
        .iter()
        .filter_map(|c| w.shared.prices.cost(c.model.as_deref().or(model)?, &usage))
        .reduce(f64::max)
}

/// The model named in an unpriced refusal: the first candidate's.
fn served_model<'m>(target: &'m Resolved<'_>, model: Option<&'m str>) -> &'m str {
    target.candidates.first().and_then(|c| c.model.as_deref()).or(model).unwrap_or("")
}

fn now_unix() -> u64 {
    crate::util::now_unix_ms() / 1000
}

/// Debits the tokens the request used and spends its real cost (the tap
/// counted them, whether analytics records the request or not). When the
/// gateway had to estimate the usage, the budget is charged at least what
/// admission reserved: an estimate never lets a request cost less than the
/// gateway expected of it.
pub fn settle(w: &Worker, ctx: &mut RequestCtx<'_>) {
    let limiter = &w.shared.limiter;
    if let (Some(adm), Some(u)) = (ctx.admission.limits.take(), ctx.response.usage) {
        limiter.settle_tokens(&adm, u.input.saturating_add(u.output), limiter.table.now());
    }
    if let Some(res) = ctx.admission.reservation.take() {
        let cost = ctx.response.cost_usd.unwrap_or(0.0);
        let charge = if ctx.response.estimated { cost.max(res.amount()) } else { cost };
        limiter.budgets.settle(res, charge, now_unix());
    }
}

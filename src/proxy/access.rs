//! Admission: the gateway key, rate limits and the budget, before anything
//! goes upstream; and settling what the request used once it ends.

use std::sync::Arc;

use super::Worker;
use crate::{
    analytics::{Record, request_body},
    auth::{self, AuthError, GatewayKey},
    error::GatewayError,
    ratelimit::{
        self, Admission, LimitInput,
        budget::{self, Reservation},
    },
    server::conn::Request,
    tap::Usage,
};

/// A request that was let in: what to settle when it ends, and the
/// headers its response carries.
#[derive(Default)]
pub struct Admitted {
    pub key: Option<Arc<GatewayKey>>,
    /// The header that carried the gateway key: never forwarded.
    pub key_header: Option<&'static str>,
    limits: Option<Admission>,
    reservation: Option<Reservation>,
    /// `x-ratelimit-*` lines for the response.
    pub headers: Vec<u8>,
}

/// Checks the gateway key (auth mode "keys"): 401 without a valid one.
pub fn authenticate(w: &Worker, req: &Request, rec: Option<&mut Record>) -> Result<Admitted, GatewayError> {
    let Some(keys) = &w.keys else { return Ok(Admitted::default()) };
    let presented = auth::presented_key(&req.head);
    let key = keys.authenticate(presented.map(|(_, v)| v)).map_err(GatewayError::Unauthorized)?;
    if let Some(r) = rec {
        r.client_key_id = Some(key.id.clone());
    }
    Ok(Admitted { key_header: presented.map(|(h, _)| h), key: Some(key), ..Admitted::default() })
}

/// Provider and model permissions, rate limits, then the budget.
pub async fn admit(
    w: &Worker,
    a: &mut Admitted,
    req: &Request,
    provider: &str,
    model: Option<&str>,
    rec: Option<&mut Record>,
) -> Result<(), GatewayError> {
    if let Some(k) = &a.key {
        k.allows(provider, model).map_err(|e| match e {
            AuthError::ProviderNotAllowed(_) | AuthError::ModelNotAllowed(_) => GatewayError::Forbidden(e),
            other => GatewayError::Unauthorized(other),
        })?;
    }
    let limiter = &w.shared.limiter;
    let key = a.key.as_deref();
    if limiter.is_active(key) {
        let input = LimitInput { head: &req.head, peer: req.peer.ip(), key, provider, route: provider, model };
        match limiter.admit(&input, limiter.table.now()).await {
            Ok(adm) => {
                ratelimit::headers(&mut a.headers, adm.requests, adm.tokens);
                a.limits = Some(adm);
            }
            Err(refusal) => {
                if let Some(r) = rec {
                    r.limited_by = Some(refusal.rule.clone());
                }
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
        let estimate = estimate_cost(w, req, model);
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
                if let Some(r) = rec {
                    r.limited_by = Some(Arc::from(if e.period == "daily" { "budget-daily" } else { "budget-monthly" }));
                }
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
/// `DEFAULT_OUTPUT`) as output tokens. 0 when the model has no price.
fn estimate_cost(w: &Worker, req: &Request, model: Option<&str>) -> f64 {
    let Some(model) = model else { return 0.0 };
    let output = request_body::max_output_tokens(&req.body).unwrap_or(budget::DEFAULT_OUTPUT);
    let usage = Usage { input: (req.body.len() as u64).div_ceil(3), output, ..Usage::default() };
    w.shared.prices.cost(model, &usage).unwrap_or(0.0)
}

fn now_unix() -> u64 {
    crate::cache::entry::now_unix_ms() / 1000
}

/// Debits the tokens the request used and spends its real cost. Without
/// analytics (no tap) the reservation is spent as it was estimated.
pub fn settle(w: &Worker, a: Admitted, rec: Option<&Record>) {
    let limiter = &w.shared.limiter;
    let usage = rec.and_then(|r| r.usage);
    if let (Some(adm), Some(u)) = (&a.limits, usage) {
        limiter.settle_tokens(adm, u.input + u.output, limiter.table.now());
    }
    if let Some(res) = a.reservation {
        let actual = match rec {
            Some(r) => r.cost_usd.unwrap_or(0.0),
            None => res.amount(),
        };
        limiter.budgets.settle(res, actual, now_unix());
    }
}

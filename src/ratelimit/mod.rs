//! Rate limits and budgets, exact across workers.
//!
//! - `gcra.rs`: the per-bucket arithmetic (one TAT per bucket).
//! - `table.rs`: every bucket of every rule in one lock-striped table that
//!   all workers update directly, with idle buckets dropped.
//! - `budget.rs`: USD budgets per gateway key, reserved and settled.
//!
//! A request is checked against every rule whose `match` fits it, plus its
//! key's own `rpm`/`tpm`. Request-unit buckets are charged at admission;
//! token-unit buckets only need to be out of debt and are charged the
//! tokens the tap counted once the response ends (so a key can briefly go
//! negative, then waits). If a later rule refuses, earlier charges are
//! refunded, so a refused request costs nothing.

pub mod budget;
pub mod gcra;
pub mod leases;
pub mod table;

use std::{fmt::Write as _, net::IpAddr, sync::Arc, time::Duration};

use gcra::{Decision, Rate};
use table::Table;

use crate::{
    auth::GatewayKey,
    config::{Cidr, LimitKey, RateLimitRule, Unit},
    http::request::RequestHead,
};

/// Bucket slots for a key's own limits (config rules use 0..n).
const KEY_RPM: u32 = u32::MAX - 1;
const KEY_TPM: u32 = u32::MAX - 2;

struct Compiled {
    rule: RateLimitRule,
    rate: Rate,
    /// `aigw_ratelimited_total{rule}` label.
    label: Arc<str>,
}

pub struct Limiter {
    rules: Vec<Compiled>,
    pub table: Table,
    pub budgets: budget::Budgets,
    /// `[limit_store] backend = "redis"`: state shared by hosts.
    pub leases: Option<leases::Leases>,
    trusted: Vec<Cidr>,
    key_rpm_label: Arc<str>,
    key_tpm_label: Arc<str>,
}

/// What a request brings to the check.
pub struct LimitInput<'a> {
    pub head: &'a RequestHead,
    pub peer: IpAddr,
    pub key: Option<&'a GatewayKey>,
    pub provider: &'a str,
    pub route: &'a str,
    pub model: Option<&'a str>,
}

/// The limit state the response reports (`x-ratelimit-*`), per unit: the
/// most restrictive bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnitState {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

/// A request that passed: what to charge when it ends.
#[derive(Debug, Default)]
pub struct Admission {
    /// Token buckets to debit: (slot, bucket hash, rate).
    debits: Vec<(u32, u64, Rate)>,
    pub requests: Option<UnitState>,
    pub tokens: Option<UnitState>,
}

impl Admission {
    /// Whether a token limit applies: the request's tokens must be counted.
    pub fn counts_tokens(&self) -> bool {
        !self.debits.is_empty()
    }
}

/// One bucket a request is checked against.
struct Bucket<'a> {
    slot: u32,
    hash: u64,
    /// Its Redis key, with a shared store.
    name: Option<Arc<[u8]>>,
    rate: Rate,
    unit: Unit,
    limit: u64,
    label: &'a Arc<str>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Arc<str>,
    pub unit: Unit,
    pub retry_after: Duration,
    pub state: UnitState,
}

impl Limiter {
    pub fn new(rules: &[RateLimitRule], trusted: Vec<Cidr>, store: &crate::config::LimitStore) -> Limiter {
        let rules = rules
            .iter()
            .map(|r| Compiled {
                rate: Rate::new(r.limit, r.window, r.burst),
                label: Arc::from(r.name.as_str()),
                rule: r.clone(),
            })
            .collect();
        Limiter {
            rules,
            table: Table::new(),
            budgets: budget::Budgets::default(),
            leases: match store {
                crate::config::LimitStore::Memory => None,
                crate::config::LimitStore::Redis(cfg) => Some(leases::Leases::new(cfg)),
            },
            trusted,
            key_rpm_label: Arc::from("key-rpm"),
            key_tpm_label: Arc::from("key-tpm"),
        }
    }

    /// Whether any limit could apply (nothing to do per request otherwise).
    pub fn is_active(&self, key: Option<&GatewayKey>) -> bool {
        !self.rules.is_empty() || key.is_some_and(|k| k.rpm.is_some() || k.tpm.is_some())
    }

    /// The client address for `ip` rules: the peer, or — when the peer is a
    /// trusted proxy — the right-most X-Forwarded-For entry that is not.
    pub fn client_ip(&self, head: &RequestHead, peer: IpAddr) -> IpAddr {
        if self.trusted.is_empty() || !self.trusted.iter().any(|c| c.contains(peer)) {
            return peer;
        }
        let Some(xff) = head.header("x-forwarded-for") else { return peer };
        let text = String::from_utf8_lossy(xff);
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if self.trusted.iter().any(|c| c.contains(ip)) => continue,
                Ok(ip) => return ip,
                // Garbage in the chain: stop at the last proxy we trust.
                Err(_) => return peer,
            }
        }
        peer
    }

    /// Checks every applicable bucket; charges request buckets.
    pub async fn admit(&self, input: &LimitInput<'_>, now: u64) -> Result<Admission, Refusal> {
        let mut adm = Admission::default();
        let mut charged: Vec<(u32, u64, Rate)> = Vec::new();
        let mut ip_text = None;
        let mut buckets: Vec<Bucket<'_>> = Vec::new();
        for (i, c) in self.rules.iter().enumerate() {
            let s = &c.rule.scope;
            let applies = s.provider.as_deref().is_none_or(|p| p == input.provider)
                && s.route.as_deref().is_none_or(|r| r == input.route)
                && s.model.as_deref().is_none_or(|m| Some(m) == input.model);
            if !applies {
                continue;
            }
            let value: &[u8] = match &c.rule.key {
                LimitKey::Ip => {
                    let ip = ip_text.get_or_insert_with(|| self.client_ip(input.head, input.peer).to_string());
                    ip.as_bytes()
                }
                LimitKey::Key => input.key.map_or(&b""[..], |k| k.id.as_bytes()),
                LimitKey::Header(h) => input.head.header(h).unwrap_or_default(),
                LimitKey::Provider => input.provider.as_bytes(),
                LimitKey::Model => input.model.unwrap_or_default().as_bytes(),
                LimitKey::Route => input.route.as_bytes(),
            };
            let slot = i as u32;
            let hash = self.table.bucket(slot, value);
            let name = self.leases.as_ref().map(|l| l.bucket_name(&c.label, value));
            buckets.push(Bucket {
                slot,
                hash,
                name,
                rate: c.rate,
                unit: c.rule.unit,
                limit: c.rule.limit,
                label: &c.label,
            });
        }
        if let Some(k) = input.key {
            for (slot, per_min, unit, label) in [
                (KEY_RPM, k.rpm, Unit::Requests, &self.key_rpm_label),
                (KEY_TPM, k.tpm, Unit::Tokens, &self.key_tpm_label),
            ] {
                if let Some(n) = per_min {
                    let rate = Rate::new(n, Duration::from_secs(60), n);
                    let hash = self.table.bucket(slot, k.id.as_bytes());
                    let name = self.leases.as_ref().map(|l| l.bucket_name(label, k.id.as_bytes()));
                    buckets.push(Bucket { slot, hash, name, rate, unit, limit: n, label });
                }
            }
        }
        for Bucket { slot, hash: bucket, name, rate, unit, limit, label } in buckets {
            let cost = if unit == Unit::Requests { 1 } else { 0 };
            let decision = match (&self.leases, &name) {
                (Some(leases), Some(name)) => leases.check(slot, bucket, name, &rate, now, cost).await,
                _ => self.table.check(slot, bucket, &rate, now, cost),
            };
            match decision {
                Decision::Allow { remaining, reset } => {
                    if cost > 0 {
                        charged.push((slot, bucket, rate));
                    } else {
                        adm.debits.push((slot, bucket, rate));
                    }
                    let state = UnitState { limit, remaining, reset };
                    let slot_state = if unit == Unit::Requests { &mut adm.requests } else { &mut adm.tokens };
                    if slot_state.is_none_or(|s| s.remaining > remaining) {
                        *slot_state = Some(state);
                    }
                }
                Decision::Deny { retry_after, reset } => {
                    for (slot, bucket, rate) in charged {
                        match &self.leases {
                            Some(leases) => leases.refund(slot, bucket),
                            None => self.table.refund(slot, bucket, &rate, 1),
                        }
                    }
                    return Err(Refusal {
                        rule: label.clone(),
                        unit,
                        retry_after,
                        state: UnitState { limit, remaining: 0, reset },
                    });
                }
            }
        }
        Ok(adm)
    }

    /// Charges the tokens a finished request used to its token buckets.
    pub fn settle_tokens(&self, adm: &Admission, tokens: u64, now: u64) {
        if tokens == 0 {
            return;
        }
        for (slot, bucket, rate) in &adm.debits {
            match &self.leases {
                Some(leases) => leases.settle(*slot, *bucket, tokens),
                None => self.table.debit(*slot, *bucket, rate, now, tokens),
            }
        }
    }
}

/// With a shared store: charges debts and returns unused leases every
/// half lease TTL. Runs on one worker.
pub async fn flush_loop(limiter: Arc<Limiter>, every: Duration, stop: Arc<crate::util::shutdown::Shutdown>) {
    let Some(leases) = &limiter.leases else { return };
    while !stop.is_triggered() {
        monoio::time::sleep(every).await;
        leases.flush(limiter.table.now()).await;
    }
}

/// `x-ratelimit-*` response headers (OpenAI's names), one set per unit.
pub fn headers(out: &mut Vec<u8>, adm_requests: Option<UnitState>, adm_tokens: Option<UnitState>) {
    for (unit, state) in [("requests", adm_requests), ("tokens", adm_tokens)] {
        if let Some(s) = state {
            let mut line = String::new();
            let _ = write!(
                line,
                "x-ratelimit-limit-{unit}: {}\r\nx-ratelimit-remaining-{unit}: {}\r\nx-ratelimit-reset-{unit}: {}\r\n",
                s.limit,
                s.remaining,
                reset_text(s.reset)
            );
            out.extend_from_slice(line.as_bytes());
        }
    }
}

/// OpenAI's reset format: `20ms`, `1.5s`, `6m0s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

#[cfg(test)]
mod tests;

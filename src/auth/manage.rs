//! `aigw keys create|list|revoke`: edits the key file the gateway watches.

use std::{fmt::Write as _, path::Path, time::Duration};

use super::keyfile::{KeyFile, KeyRecord, OnUnpriced};
use crate::util::now_unix_ms;

/// What `aigw keys create` may set.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: String,
    pub providers: Vec<String>,
    pub models: Vec<String>,
    pub expires_in: Option<Duration>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
    /// Refuse models without a price (the budget cannot count them).
    pub deny_unpriced: bool,
    /// Guardrail policies for this key's requests.
    pub guardrails: Vec<String>,
}

/// Adds a key; returns the key itself, which is shown once and never
/// stored.
pub fn create(file: &Path, new: NewKey) -> Result<(String, String), String> {
    if new.name.is_empty() {
        return Err("--name must not be empty".into());
    }
    // The same rule as policy names in the config: a name that could never
    // match one is a typo caught now, not a refused request later.
    if let Some(bad) = new
        .guardrails
        .iter()
        .find(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)))
    {
        return Err(format!("--guardrail \"{bad}\": a policy name holds only letters, digits, '-' and '_'"));
    }
    for usd in [new.daily_usd, new.monthly_usd].into_iter().flatten() {
        if !usd.is_finite() || usd < 0.0 {
            return Err("budgets must be finite and not negative".into());
        }
    }
    let now = now_unix_ms() / 1000;
    let mut f = KeyFile::load(file)?;
    let record = KeyRecord {
        providers: new.providers,
        models: new.models,
        expires_unix: new.expires_in.map(|d| now + d.as_secs()),
        rpm: new.rpm,
        tpm: new.tpm,
        daily_usd: new.daily_usd,
        monthly_usd: new.monthly_usd,
        on_unpriced: if new.deny_unpriced { OnUnpriced::Deny } else { OnUnpriced::Allow },
        guardrails: new.guardrails,
        ..KeyRecord::named(&new.name)
    };
    let (record, key) = f.create(record, now)?;
    f.save(file)?;
    Ok((record.id, key))
}

/// One line per key: id, name, state, restrictions.
pub fn list(file: &Path) -> Result<String, String> {
    let f = KeyFile::load(file)?;
    let now = now_unix_ms() / 1000;
    let mut out = String::from("ID        STATE    NAME  (providers, models, limits)\n");
    for k in &f.keys {
        let state = if k.revoked {
            "revoked"
        } else if k.expires_unix.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        };
        let _ = write!(out, "{:<9} {:<8} {}", k.id, state, k.name);
        let mut extra = Vec::new();
        if !k.providers.is_empty() {
            extra.push(format!("providers={}", k.providers.join(",")));
        }
        if !k.models.is_empty() {
            extra.push(format!("models={}", k.models.join(",")));
        }
        if let Some(e) = k.expires_unix {
            extra.push(format!("expires_unix={e}"));
        }
        for (n, v) in [("rpm", k.rpm), ("tpm", k.tpm)] {
            if let Some(v) = v {
                extra.push(format!("{n}={v}"));
            }
        }
        for (n, v) in [("daily_usd", k.daily_usd), ("monthly_usd", k.monthly_usd)] {
            if let Some(v) = v {
                extra.push(format!("{n}={v}"));
            }
        }
        if !k.guardrails.is_empty() {
            extra.push(format!("guardrails={}", k.guardrails.join(",")));
        }
        if k.on_unpriced == OnUnpriced::Deny {
            extra.push("on_unpriced=deny".into());
        }
        if !extra.is_empty() {
            let _ = write!(out, "  ({})", extra.join(", "));
        }
        out.push('\n');
    }
    Ok(out)
}

pub fn revoke(file: &Path, id: &str) -> Result<(), String> {
    let mut f = KeyFile::load(file)?;
    f.revoke(id)?;
    f.save(file)
}

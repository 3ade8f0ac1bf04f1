//! `[guardrails.NAME]`: named policies (detectors and what to do with a
//! finding on each side), attached by name to the server, providers and
//! routes (`guardrails = [...]`).

use serde::Deserialize;

use super::Errors;
use crate::guardrails::detect::{Builtin, Detector};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub detectors: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<RawPattern>,
    #[serde(default)]
    pub words: Vec<String>,
    pub request: Option<String>,
    pub response: Option<String>,
    /// The prompt_injection detector's score threshold.
    pub threshold: Option<f64>,
    /// A provider or route that checks each request (moderation).
    pub check_with: Option<String>,
    /// "moderations" (OpenAI's endpoint) or "chat" (a classifier model).
    pub check_api: Option<String>,
    pub check_model: Option<String>,
    pub timeout: Option<String>,
    pub on_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    pub name: String,
    pub regex: String,
}

/// What a policy does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Off,
    /// Nothing changes; the finding is counted and logged.
    Flag,
    /// Each finding is replaced by its marker (`[EMAIL]`).
    Redact,
    /// Request side: 400 `content_blocked`, nothing sent upstream.
    Block,
    /// Request side: each finding becomes a numbered placeholder
    /// (`[EMAIL_1]`), restored in the answer the client receives.
    Pseudonymize,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Flag => "flag",
            Action::Redact => "redact",
            Action::Block => "block",
            Action::Pseudonymize => "pseudonymize",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub detectors: Vec<Builtin>,
    /// (name, regex), in file order.
    pub patterns: Vec<(String, String)>,
    pub words: Vec<String>,
    /// `prompt_injection` is among the detectors: its score threshold.
    pub injection: Option<f64>,
    /// Each request is also checked by another provider.
    pub moderation: Option<Moderation>,
    pub request: Action,
    pub response: Action,
}

/// A policy's remote check (`check_with`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderation {
    /// The provider or route named by `check_with`.
    pub check_with: String,
    /// Who answers it, tried in order (a route's targets; a provider
    /// alone), each an OpenAI-compatible provider with the model sent.
    pub targets: Vec<(String, Option<String>)>,
    pub api: CheckApi,
    /// `check_model`: sent as `model` (required for `chat`); a route
    /// target's own model otherwise.
    pub model: Option<String>,
    /// How long the check may take.
    pub timeout: std::time::Duration,
    /// A failed or slow check blocks the request (`on_error = "block"`);
    /// otherwise it is let through.
    pub block_on_error: bool,
}

/// How the check is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckApi {
    /// `POST /v1/moderations` (OpenAI's shape): flagged if any result is.
    Moderations,
    /// `POST /v1/chat/completions` to a classifier such as Llama Guard:
    /// flagged if the answer starts with "unsafe".
    Chat,
}

/// How long a check may take unless `timeout` says otherwise.
pub const DEFAULT_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(800);

/// Custom patterns and words a policy may hold, and how long each may be:
/// they are compiled into one automaton per policy.
const MAX_PATTERNS: usize = 64;
const MAX_WORDS: usize = 1024;
const MAX_LEN: usize = 1024;

pub(super) fn validate(errors: &mut Errors, name: String, raw: RawPolicy) -> Option<Policy> {
    let before = errors.0.len();
    let at = |k: &str| format!("guardrails.{name}.{k}");
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        errors.push(format!("guardrails.{name}"), "name may hold only letters, digits, '-' and '_'");
    }
    let moderation = moderation(errors, &at, &raw);
    let mut detectors = Vec::new();
    let mut injection = false;
    for d in &raw.detectors {
        match Builtin::parse(d) {
            Some(b) if !detectors.contains(&b) => detectors.push(b),
            Some(_) => {}
            None if d == "prompt_injection" => injection = true,
            None => errors.push(
                at("detectors"),
                format!(
                    "unknown detector \"{d}\"; one of: {}, prompt_injection",
                    Builtin::ALL.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    let threshold = match raw.threshold {
        Some(_) if !injection => {
            errors.push(at("threshold"), "applies to the prompt_injection detector, which this policy does not use");
            None
        }
        Some(t) if !(t.is_finite() && t > 0.0 && t <= 100.0) => {
            errors.push(at("threshold"), "a score above 0 and at most 100");
            None
        }
        t => t,
    };
    if raw.patterns.len() > MAX_PATTERNS {
        errors.push(at("patterns"), format!("at most {MAX_PATTERNS} patterns"));
    }
    let mut patterns = Vec::new();
    for p in raw.patterns {
        let ok_name = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && Builtin::parse(&p.name).is_none();
        if !ok_name {
            errors.push(
                at("patterns"),
                format!("pattern name \"{}\": letters, digits and '_', not a built-in's", p.name),
            );
        }
        if p.regex.len() > MAX_LEN {
            errors.push(at("patterns"), format!("pattern \"{}\" is longer than {MAX_LEN} bytes", p.name));
        }
        patterns.push((p.name, p.regex));
    }
    if raw.words.len() > MAX_WORDS || raw.words.iter().any(|w| w.trim().is_empty() || w.len() > MAX_LEN) {
        errors.push(at("words"), format!("at most {MAX_WORDS} words, none empty or over {MAX_LEN} bytes"));
    }
    if detectors.is_empty() && !injection && patterns.is_empty() && raw.words.is_empty() && raw.check_with.is_none() {
        errors.push(format!("guardrails.{name}"), "a policy needs detectors, patterns, words or check_with");
    }
    let action = |errors: &mut Errors, key: &str, v: Option<&str>, default: Action| match v {
        None => Some(default),
        Some("off") => Some(Action::Off),
        Some("flag") => Some(Action::Flag),
        Some("redact") => Some(Action::Redact),
        Some("block") => Some(Action::Block),
        Some("pseudonymize") if key == "request" => Some(Action::Pseudonymize),
        Some(other) if key == "request" => {
            errors.push(at(key), format!("\"{other}\": one of redact, pseudonymize, block, flag, off"));
            None
        }
        Some(other) => {
            errors.push(at(key), format!("\"{other}\": one of redact, block, flag, off"));
            None
        }
    };
    // A check answers yes or no: a policy that has one blocks by default.
    let default = if raw.check_with.is_some() { Action::Block } else { Action::Redact };
    let request = action(errors, "request", raw.request.as_deref(), default);
    let response = action(errors, "response", raw.response.as_deref(), Action::Off);

    if errors.0.len() == before
        && let Err(e) = Detector::new(&detectors, &patterns, &raw.words)
    {
        errors.push(at("patterns"), format!("does not compile: {e}"));
    }
    (errors.0.len() == before).then(|| Policy {
        name,
        detectors,
        patterns,
        words: raw.words,
        injection: injection.then(|| threshold.unwrap_or(crate::guardrails::injection::DEFAULT_THRESHOLD)),
        moderation,
        request: request.unwrap_or(Action::Off),
        response: response.unwrap_or(Action::Off),
    })
}

/// The `check_with` keys (the target's existence and kind are checked
/// with the providers and routes, `resolve_checks`).
fn moderation(errors: &mut Errors, at: &dyn Fn(&str) -> String, raw: &RawPolicy) -> Option<Moderation> {
    let Some(provider) = raw.check_with.clone() else {
        for (key, set) in [
            ("check_api", raw.check_api.is_some()),
            ("check_model", raw.check_model.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("on_error", raw.on_error.is_some()),
        ] {
            if set {
                errors.push(at(key), "applies to a check (check_with), which this policy does not have");
            }
        }
        return None;
    };
    let api = match raw.check_api.as_deref() {
        None | Some("moderations") => CheckApi::Moderations,
        Some("chat") => CheckApi::Chat,
        Some(other) => {
            errors.push(at("check_api"), format!("\"{other}\": one of moderations, chat"));
            CheckApi::Moderations
        }
    };
    if api == CheckApi::Chat && raw.check_model.is_none() {
        errors.push(at("check_model"), "a chat check names the classifier model");
    }
    if raw.check_model.as_ref().is_some_and(|m| m.is_empty() || m.len() > 256) {
        errors.push(at("check_model"), "1 to 256 bytes");
    }
    let timeout = match raw.timeout.as_deref().map(super::duration::parse) {
        None => DEFAULT_CHECK_TIMEOUT,
        Some(Ok(d)) if !d.is_zero() && d <= std::time::Duration::from_secs(60) => d,
        Some(Ok(_)) => {
            errors.push(at("timeout"), "above 0 and at most 60s");
            DEFAULT_CHECK_TIMEOUT
        }
        Some(Err(e)) => {
            errors.push(at("timeout"), e);
            DEFAULT_CHECK_TIMEOUT
        }
    };
    let block_on_error = match raw.on_error.as_deref() {
        None | Some("allow") => false,
        Some("block") => true,
        Some(other) => {
            errors.push(at("on_error"), format!("\"{other}\": one of allow, block"));
            false
        }
    };
    // A check answers yes or no: there is nothing in the text to replace.
    if let Some(r) = raw.request.as_deref()
        && !matches!(r, "block" | "flag" | "off")
    {
        errors.push(at("request"), "a policy with check_with blocks, flags or is off: request = \"block\" or \"flag\"");
    }
    Some(Moderation {
        check_with: provider,
        targets: Vec::new(),
        api,
        model: raw.check_model.clone(),
        timeout,
        block_on_error,
    })
}

/// A check goes to a configured provider that speaks OpenAI's API, or to a
/// route whose targets all do (tried in the route's order).
pub(super) fn resolve_checks(
    errors: &mut Errors,
    policies: &mut [Policy],
    providers: &[super::Provider],
    routes: &[super::Route],
) {
    for p in policies {
        let Some(m) = &mut p.moderation else { continue };
        let at = format!("guardrails.{}.check_with", p.name);
        let targets: Vec<(&super::Provider, Option<&String>)> =
            match (providers.iter().find(|x| x.name == m.check_with), routes.iter().find(|r| r.name == m.check_with)) {
                (Some(x), _) => vec![(x, None)],
                (None, Some(r)) => r.targets.iter().map(|t| (&providers[t.provider], t.model.as_ref())).collect(),
                (None, None) => {
                    errors.push(at, format!("no provider or route \"{}\"", m.check_with));
                    continue;
                }
            };
        if targets.iter().any(|(x, _)| matches!(x.kind, super::ProviderKind::Anthropic | super::ProviderKind::Gemini)) {
            errors.push(at, "the check speaks OpenAI's API: openai or mock providers (vLLM, Llama Guard)");
            continue;
        }
        m.targets =
            targets.into_iter().map(|(x, model)| (x.name.clone(), m.model.clone().or(model.cloned()))).collect();
    }
}

/// Checks that every name in an attachment list is a policy.
pub(super) fn check_names(errors: &mut Errors, at: &str, names: &[String], policies: &[Policy]) {
    for n in names {
        if !policies.iter().any(|p| &p.name == n) {
            errors.push(at, format!("no [guardrails.{n}] policy"));
        }
    }
}

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
    pub request: Action,
    pub response: Action,
}

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
    if detectors.is_empty() && !injection && patterns.is_empty() && raw.words.is_empty() {
        errors.push(format!("guardrails.{name}"), "a policy needs detectors, patterns or words");
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
    let request = action(errors, "request", raw.request.as_deref(), Action::Redact);
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
        request: request.unwrap_or(Action::Off),
        response: response.unwrap_or(Action::Off),
    })
}

/// Checks that every name in an attachment list is a policy.
pub(super) fn check_names(errors: &mut Errors, at: &str, names: &[String], policies: &[Policy]) {
    for n in names {
        if !policies.iter().any(|p| &p.name == n) {
            errors.push(at, format!("no [guardrails.{n}] policy"));
        }
    }
}

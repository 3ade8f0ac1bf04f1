//! Guardrails: named policies that look for personal data, secrets and
//! listed words in what a model reads and writes, and redact, block or flag
//! what they find (`[guardrails.NAME]` in the config).
//!
//! - `detect.rs` — the detectors, compiled per policy into one RegexSet,
//!   and where on a live text a finding could still begin;
//! - `json.rs`   — the strings of a request body a model reads, and their
//!   rewrite;
//! - `sites.rs`  — the text strings of an answer, per provider format;
//! - `injection.rs` — the scored prompt-injection rules (requests only);
//! - `pseudonym.rs` — numbered placeholders and their restore in answers;
//! - `moderation.rs` — a policy's remote check: the question and the answer;
//! - `answer.rs` — response policies on a whole answer (redact, withhold);
//! - `stream.rs` — one policy over text arriving in pieces, with hold-back;
//! - `events.rs` — response policies on a live event stream.
//!

pub mod answer;
pub mod detect;
pub mod events;
pub mod injection;
pub mod json;
pub mod moderation;
pub mod pseudonym;
pub mod sites;
pub mod stream;

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use self::{
    detect::{Detector, Finding},
    pseudonym::Pseudonyms,
};
use crate::config::{self, Action};

/// Which way the text was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// Findings of one detector of one policy on one side of a request: what
/// the log record and the metric carry (never the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub policy: Arc<str>,
    pub detector: Arc<str>,
    pub action: Action,
    pub direction: Direction,
    pub count: u32,
}

struct Policy {
    name: Arc<str>,
    detector: Detector,
    /// Detector names as the events carry them, by kind index.
    names: Vec<Arc<str>>,
    request: Action,
    response: Action,
    moderation: Option<config::Moderation>,
}

/// Every policy, compiled once at start.
pub struct Guardrails {
    policies: Vec<Policy>,
    by_name: HashMap<String, usize>,
    /// `[server] guardrails`: applied to every request.
    server: Vec<usize>,
    /// Finds placeholders in answers; only when a policy pseudonymizes.
    pub(crate) restorer: Option<Detector>,
}

/// What the request-side policies decided.
#[derive(Debug)]
pub enum Verdict<'b> {
    /// Forward this body: the original bytes, or with findings redacted;
    /// `pseudonyms`: the placeholders it now holds, to restore in the
    /// answer (empty when no policy pseudonymized anything).
    Pass { body: Cow<'b, [u8]>, events: Vec<Event>, pseudonyms: Pseudonyms },
    /// Refuse the request: a block policy found something.
    Block { policy: Arc<str>, detector: Arc<str>, events: Vec<Event> },
    /// The body starts as a JSON object but is not one: it cannot be read,
    /// so it is not forwarded unread.
    Unreadable,
}

impl Guardrails {
    /// Compiles the validated policies (validation compiled them once
    /// already, so this does not fail).
    pub fn new(policies: &[config::Policy], server: &[String]) -> Result<Guardrails, String> {
        let mut compiled = Vec::with_capacity(policies.len());
        for p in policies {
            let mut detector = Detector::new(&p.detectors, &p.patterns, &p.words)
                .map_err(|e| format!("guardrails.{}: {e}", p.name))?;
            if let Some(threshold) = p.injection {
                detector = detector.with_injection(threshold);
            }
            let names = detector.kinds.iter().map(|k| Arc::from(k.name())).collect();
            compiled.push(Policy {
                name: Arc::from(p.name.as_str()),
                detector,
                names,
                request: p.request,
                response: p.response,
                moderation: p.moderation.clone(),
            });
        }
        let by_name: HashMap<String, usize> = policies.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        let server = server.iter().filter_map(|n| by_name.get(n).copied()).collect();
        let restorer = match policies.iter().any(|p| p.request == Action::Pseudonymize) {
            true => Some(pseudonym::restorer()?),
            false => None,
        };
        Ok(Guardrails { policies: compiled, by_name, server, restorer })
    }

    /// No policy is configured: the guard phase costs one branch.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies for one request: the server's, then those of each list
    /// given (provider, route), each once, in that order, then the calling
    /// key's. The config's lists were checked at start; a key's come from
    /// the key file, which changes without a restart, so a name it gives
    /// that no policy has is returned as the error.
    pub fn select<'n>(
        &self,
        lists: impl IntoIterator<Item = &'n [String]>,
        key: &'n [String],
    ) -> Result<Vec<usize>, &'n str> {
        let mut out = self.server.clone();
        for name in lists.into_iter().flatten() {
            if let Some(&i) = self.by_name.get(name)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
        for name in key {
            match self.by_name.get(name) {
                Some(&i) if !out.contains(&i) => out.push(i),
                Some(_) => {}
                None => return Err(name),
            }
        }
        Ok(out)
    }

    /// Of the selected policies, those that act on answers, in order.
    pub fn response_side(&self, selected: &[usize]) -> Vec<usize> {
        selected.iter().copied().filter(|&i| self.policies[i].response != Action::Off).collect()
    }

    /// Of the selected policies, those with a remote check that acts on
    /// requests: (name, the check, block or flag).
    pub fn checks(&self, selected: &[usize]) -> Vec<(Arc<str>, config::Moderation, Action)> {
        selected
            .iter()
            .map(|&i| &self.policies[i])
            .filter(|p| matches!(p.request, Action::Block | Action::Flag))
            .filter_map(|p| Some((p.name.clone(), p.moderation.clone()?, p.request)))
            .collect()
    }

    /// Runs the request-side policies over a request body, in order; a
    /// later policy reads what an earlier one redacted.
    pub fn check_request<'b>(&self, selected: &[usize], body: &'b [u8]) -> Verdict<'b> {
        let mut events = Vec::new();
        let mut pseudonyms = Pseudonyms::default();
        // Only JSON objects carry text the gateway knows how to read;
        // anything else (an empty GET body, a multipart upload) has none.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Verdict::Pass { body: Cow::Borrowed(body), events, pseudonyms };
        }
        let mut body = Cow::Borrowed(body);
        let active = selected.iter().map(|&i| &self.policies[i]).filter(|p| p.request != Action::Off);
        let mut findings = Vec::new();
        for p in active {
            let Some(spans) = json::text_spans(&body, json::REQUEST_ROOTS) else { return Verdict::Unreadable };
            let mut counts: Vec<u32> = vec![0; p.names.len()];
            let mut changes = Vec::new();
            for span in spans {
                let text = json::unescape(&body[span.start + 1..span.end - 1]);
                p.detector.find_request(&text, &mut findings);
                if findings.is_empty() {
                    continue;
                }
                for f in &findings {
                    counts[f.kind] += 1;
                }
                match p.request {
                    Action::Redact => changes.push((span, redact(&text, &findings, &p.detector))),
                    Action::Pseudonymize => {
                        changes.push((span, pseudonymize(&text, &findings, &p.detector, &mut pseudonyms)))
                    }
                    _ => {}
                }
            }
            let first = counts.iter().position(|&n| n > 0);
            for (kind, &count) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                events.push(Event {
                    policy: p.name.clone(),
                    detector: p.names[kind].clone(),
                    action: p.request,
                    direction: Direction::Request,
                    count,
                });
            }
            if let (Action::Block, Some(kind)) = (p.request, first) {
                return Verdict::Block { policy: p.name.clone(), detector: p.names[kind].clone(), events };
            }
            if !changes.is_empty() {
                body = Cow::Owned(json::rewrite(&body, &changes));
            }
        }
        Verdict::Pass { body, events, pseudonyms }
    }
}

/// `text` with each finding replaced by its numbered placeholder.
fn pseudonymize(text: &str, findings: &[Finding], detector: &Detector, map: &mut Pseudonyms) -> String {
    replace(text, findings, |f, out| {
        out.push_str(map.placeholder(detector.kinds[f.kind].label(), &text[f.span.clone()]))
    })
}

/// `text` with each finding replaced by its detector's marker.
pub fn redact(text: &str, findings: &[Finding], detector: &Detector) -> String {
    replace(text, findings, |f, out| {
        out.push('[');
        out.push_str(detector.kinds[f.kind].label());
        out.push(']');
    })
}

/// `text` with each finding (in order, none overlapping) replaced by what
/// `with` writes for it.
fn replace(text: &str, findings: &[Finding], mut with: impl FnMut(&Finding, &mut String)) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        out.push_str(&text[at..f.span.start]);
        with(f, &mut out);
        at = f.span.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests;

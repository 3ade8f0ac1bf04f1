//! Response-side policies on a whole (JSON) answer: the text strings of
//! the answer's format (`sites.rs`) are redacted in place, or the answer is
//! withheld the way the provider's own safety system withholds one.

use std::ops::Range;

use super::{
    Direction, Event, Guardrails,
    events::incomplete_edits,
    json::unescape,
    pseudonym::{Pseudonyms, restore},
    sites::{self, each, elements, quoted, set_member, span_of, splice},
};
use crate::{config::Action, providers::StreamFormat};

/// What the response-side policies decided about a whole answer.
#[derive(Debug)]
pub enum AnswerVerdict {
    /// Send this: None, the answer unchanged; Some, with findings redacted.
    Pass { body: Option<Vec<u8>>, events: Vec<Event> },
    /// A block policy found something: send this answer instead (content
    /// withheld, the format's safety finish).
    Block { body: Vec<u8>, policy: String, detector: String, events: Vec<Event> },
    /// Not a JSON object: its text cannot be read, so it is not passed on.
    Unreadable,
}

impl Guardrails {
    /// Runs the response-side `policies` (indices with a response action)
    /// over a whole answer in `format`, then restores the request's
    /// `pseudonyms` (restored values are not redacted again).
    pub fn check_answer(
        &self,
        policies: &[usize],
        format: StreamFormat,
        body: &[u8],
        pseudonyms: Option<&Pseudonyms>,
    ) -> AnswerVerdict {
        let mut events = Vec::new();
        let mut cur: Option<Vec<u8>> = None;
        let mut findings = Vec::new();
        for &pi in policies {
            let p = &self.policies[pi];
            let doc_bytes = cur.as_deref().unwrap_or(body);
            let Some(doc) = sites::find(format, doc_bytes, false) else { return AnswerVerdict::Unreadable };
            let mut counts = vec![0u32; p.names.len()];
            let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
            for site in &doc.sites {
                let text = unescape(&doc_bytes[site.span.start + 1..site.span.end - 1]);
                p.detector.find(&text, &mut findings);
                for f in &findings {
                    counts[f.kind] += 1;
                }
                if p.response == Action::Redact && !findings.is_empty() {
                    edits.push((site.span.clone(), quoted(&super::redact(&text, &findings, &p.detector))));
                }
            }
            let first = counts.iter().position(|&n| n > 0);
            for (kind, &count) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                events.push(Event {
                    policy: p.name.clone(),
                    detector: p.names[kind].clone(),
                    action: p.response,
                    direction: Direction::Response,
                    count,
                });
            }
            if let (Action::Block, Some(kind)) = (p.response, first) {
                return AnswerVerdict::Block {
                    body: withheld(format, doc_bytes),
                    policy: p.name.to_string(),
                    detector: p.names[kind].to_string(),
                    events,
                };
            }
            if !edits.is_empty() {
                let mut next = Vec::with_capacity(doc_bytes.len() + 64);
                splice(doc_bytes, &mut edits, &mut next);
                cur = Some(next);
            }
        }
        if let (Some(map), Some(det)) = (pseudonyms, &self.restorer)
            && !map.is_empty()
        {
            let doc_bytes = cur.as_deref().unwrap_or(body);
            let Some(doc) = sites::find(format, doc_bytes, false) else { return AnswerVerdict::Unreadable };
            let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
            for site in &doc.sites {
                let text = unescape(&doc_bytes[site.span.start + 1..site.span.end - 1]);
                if let Some(restored) = restore(det, map, &text) {
                    edits.push((site.span.clone(), quoted(&restored)));
                }
            }
            if !edits.is_empty() {
                let mut next = Vec::with_capacity(doc_bytes.len() + 64);
                splice(doc_bytes, &mut edits, &mut next);
                cur = Some(next);
            }
        }
        AnswerVerdict::Pass { body: cur, events }
    }
}

/// The answer with its content withheld, ending as the format's own
/// content filter ends one; ids, model and usage stay.
pub fn withheld(format: StreamFormat, body: &[u8]) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let set = |edits: &mut Vec<_>, v: &[u8], to: &[u8]| edits.push((span_of(body, v), to.to_vec()));
    match format {
        StreamFormat::OpenAiChat => each(body, b"choices", |cs| {
            elements(cs, |_, c| {
                each(c, b"message", |m| set(&mut edits, m, br#"{"role":"assistant","content":null,"refusal":null}"#));
                each(c, b"text", |t| set(&mut edits, t, b"\"\""));
                set_member(body, c, b"finish_reason", b"\"content_filter\"", &mut edits);
            })
        }),
        StreamFormat::Anthropic => {
            each(body, b"content", |c| set(&mut edits, c, b"[]"));
            each(body, b"stop_reason", |v| set(&mut edits, v, b"\"refusal\""));
        }
        StreamFormat::Gemini => each(body, b"candidates", |cs| {
            elements(cs, |_, c| {
                each(c, b"content", |v| set(&mut edits, v, br#"{"role":"model","parts":[]}"#));
                set_member(body, c, b"finishReason", b"\"SAFETY\"", &mut edits);
            })
        }),
        StreamFormat::OpenAiResponses => incomplete_edits(body, body, &mut edits),
    }
    let mut out = Vec::with_capacity(body.len());
    splice(body, &mut edits, &mut out);
    out
}

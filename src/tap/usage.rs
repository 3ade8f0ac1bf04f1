//! Token usage from provider responses, JSON bodies and stream events alike.
//!
//! Only candidates are parsed: a cheap byte scan for `"usage"` /
//! `"usageMetadata"` comes first, and simd-json runs only on the events that
//! pass it. Every provider reports usage as running totals, so a later
//! report replaces the fields it carries and never adds to them (Anthropic's
//! `message_delta.output_tokens`, Gemini's `usageMetadata` in every frame).

use simd_json::{BorrowedValue, prelude::*};

/// Tokens of one request, normalised across providers.
///
/// `input` counts every prompt token, cached or not (OpenAI's
/// `prompt_tokens`; Anthropic's `input_tokens` + cache reads + cache writes;
/// Gemini's `promptTokenCount`). `cached_input` and `cache_write` are the
/// parts of it read from or written to the provider's prompt cache, priced
/// differently from fresh input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Input tokens neither read from nor written to a prompt cache.
    pub fn fresh_input(&self) -> u64 {
        self.input.saturating_sub(self.cached_input.saturating_add(self.cache_write))
    }
}

/// Usage fields as reported so far; each report overwrites what it carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Partial {
    /// Anthropic reports input without cache reads and writes.
    input_excludes_cache: bool,
    input: Option<u64>,
    output: Option<u64>,
    cached_input: Option<u64>,
    cache_write: Option<u64>,
    reasoning: Option<u64>,
}

/// Accumulates usage over a response.
#[derive(Debug, Default)]
pub struct UsageTracker {
    seen: bool,
    partial: Partial,
    scratch: Vec<u8>,
}

/// Cheap pre-filter: could this JSON text carry usage? True when a
/// `"usage"` or `"usageMetadata"` key is followed by an object, so the
/// `"usage":null` that OpenAI puts in every chunk of an include_usage stream
/// is skipped without parsing.
pub fn may_carry_usage(json: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(b"\"usage");
    let mut at = 0;
    while let Some(i) = finder.find(&json[at..]) {
        let mut j = at + i + 6;
        if json[j..].starts_with(b"Metadata") {
            j += 8;
        }
        at = j;
        if json.get(j) != Some(&b'"') {
            continue;
        }
        let rest = &json[j + 1..];
        let Some(colon) = rest.iter().position(|b| !b.is_ascii_whitespace()) else { return false };
        if rest[colon] != b':' {
            continue;
        }
        let after = &rest[colon + 1..];
        if after.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return true;
        }
    }
    false
}

impl UsageTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at one JSON document (a whole body or one event's data).
    pub fn observe_json(&mut self, json: &[u8]) {
        if !may_carry_usage(json) {
            return;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(json);
        let Ok(v) = simd_json::to_borrowed_value(&mut self.scratch) else {
            return;
        };
        if let Some(p) = extract(&v) {
            self.seen = true;
            merge(&mut self.partial, p);
        }
    }

    /// The usage reported, if any was.
    pub fn usage(&self) -> Option<Usage> {
        if !self.seen {
            return None;
        }
        let p = &self.partial;
        let cached = p.cached_input.unwrap_or(0);
        let write = p.cache_write.unwrap_or(0);
        let mut input = p.input.unwrap_or(0);
        if p.input_excludes_cache {
            // Upstream numbers: saturate rather than wrap (or panic).
            input = input.saturating_add(cached).saturating_add(write);
        }
        Some(Usage {
            input,
            output: p.output.unwrap_or(0),
            cached_input: cached,
            cache_write: write,
            reasoning: p.reasoning.unwrap_or(0),
        })
    }
}

fn merge(into: &mut Partial, new: Partial) {
    into.input_excludes_cache |= new.input_excludes_cache;
    for (dst, src) in [
        (&mut into.input, new.input),
        (&mut into.output, new.output),
        (&mut into.cached_input, new.cached_input),
        (&mut into.cache_write, new.cache_write),
        (&mut into.reasoning, new.reasoning),
    ] {
        if src.is_some() {
            *dst = src;
        }
    }
}

fn num(v: Option<&BorrowedValue<'_>>) -> Option<u64> {
    v.and_then(|v| v.as_u64())
}

/// Finds usage in one parsed document, whatever the provider's shape.
fn extract(v: &BorrowedValue<'_>) -> Option<Partial> {
    // OpenAI chat / embeddings / Responses (non-stream), Anthropic message
    // and message_delta: a top-level `usage` object (null in OpenAI's
    // non-final stream chunks).
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        return Some(from_usage_object(u));
    }
    // Anthropic message_start: usage inside `message`.
    if let Some(u) = v.get("message").and_then(|m| m.get("usage")).filter(|u| u.is_object()) {
        return Some(from_usage_object(u));
    }
    // OpenAI Responses stream: `response.completed` carries the response.
    if let Some(u) = v.get("response").and_then(|r| r.get("usage")).filter(|u| u.is_object()) {
        return Some(from_usage_object(u));
    }
    // Gemini: `usageMetadata` in every frame, the last one authoritative.
    if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
        return Some(Partial {
            input_excludes_cache: false,
            input: num(u.get("promptTokenCount")),
            output: match (num(u.get("candidatesTokenCount")), num(u.get("thoughtsTokenCount"))) {
                (None, None) => None,
                (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
            },
            cached_input: num(u.get("cachedContentTokenCount")),
            cache_write: None,
            reasoning: num(u.get("thoughtsTokenCount")),
        });
    }
    None
}

fn from_usage_object(u: &BorrowedValue<'_>) -> Partial {
    let details = |outer: &str, inner: &str| num(u.get(outer).and_then(|d| d.get(inner)));
    // Anthropic names cache reads/writes at the top level of usage and
    // leaves them out of input_tokens.
    let cache_read = num(u.get("cache_read_input_tokens"));
    let cache_write = num(u.get("cache_creation_input_tokens"));
    let anthropic = cache_read.is_some() || cache_write.is_some();
    Partial {
        input_excludes_cache: anthropic,
        input: num(u.get("prompt_tokens")).or_else(|| num(u.get("input_tokens"))),
        output: num(u.get("completion_tokens")).or_else(|| num(u.get("output_tokens"))),
        cached_input: cache_read
            .or_else(|| details("prompt_tokens_details", "cached_tokens"))
            .or_else(|| details("input_tokens_details", "cached_tokens")),
        cache_write,
        reasoning: details("completion_tokens_details", "reasoning_tokens")
            .or_else(|| details("output_tokens_details", "reasoning_tokens")),
    }
}

#[cfg(test)]
mod tests;

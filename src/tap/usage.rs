//! Token usage from provider responses, JSON bodies and stream events alike.
//!
//! Only candidates are looked at: a cheap byte scan for `"usage"` /
//! `"usageMetadata"` comes first. A candidate is walked, not parsed: the
//! top-level members are skipped over (`providers::body::for_each_member`)
//! and only the usage object itself, a few hundred bytes, is parsed. Parsing
//! whole bodies was the largest single cost of a non-streaming request
//! (about a quarter of its instructions, measured with callgrind). Every
//! provider reports usage as running totals, so a later report replaces the
//! fields it carries and never adds to them (Anthropic's
//! `message_delta.output_tokens`, Gemini's `usageMetadata` in every frame).
//!
//! A key named twice counts the way clients' JSON parsers read it: the last
//! one wins, so what is charged is what the client was shown.

use crate::providers::body::for_each_member;

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
}

/// Cheap pre-filter: could this JSON text carry usage? True when a
/// `"usage"` or `"usageMetadata"` key is followed by an object, so the
/// `"usage":null` that OpenAI puts in every chunk of an include_usage stream
/// is skipped without parsing.
pub fn may_carry_usage(json: &[u8]) -> bool {
    // Built once: building a searcher costs more than most searches here.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage"));
    let finder = &*FINDER;
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
        if let Some(p) = extract(json) {
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

fn object(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|v| v.first() == Some(&b'{'))
}

/// The value of the last top-level member named `name` that holds an
/// object. None too when `doc` is not a whole JSON object.
fn member_object<'d>(doc: &'d [u8], name: &[u8]) -> Option<&'d [u8]> {
    let mut found = None;
    for_each_member(doc, |key, value| {
        if key == name {
            found = Some(value);
        }
        true
    })?;
    object(found)
}

/// A JSON number that is a whole count: digits only, no sign, fraction or
/// exponent, fitting u64 (what serde's `as_u64` accepts). Anything else,
/// `null` included, is no count.
fn count(v: &[u8]) -> Option<u64> {
    if v.is_empty() || (v.len() > 1 && v[0] == b'0') {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The count under `name` in a `*_details` object.
fn inner_count(v: &[u8], name: &[u8]) -> Option<u64> {
    let mut n = None;
    for_each_member(v, |key, value| {
        if key == name {
            n = count(value);
        }
        true
    })?;
    n
}

/// Every count a usage object may carry, under each provider's name.
#[derive(Default)]
struct Counts {
    prompt: Option<u64>,
    completion: Option<u64>,
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation: Option<u64>,
    prompt_cached: Option<u64>,
    input_cached: Option<u64>,
    completion_reasoning: Option<u64>,
    output_reasoning: Option<u64>,
    // Gemini's usageMetadata
    prompt_count: Option<u64>,
    candidates_count: Option<u64>,
    thoughts_count: Option<u64>,
    cached_count: Option<u64>,
}

/// Reads a usage object in one walk; None when it is not a whole object.
fn counts(u: &[u8]) -> Option<Counts> {
    let mut c = Counts::default();
    for_each_member(u, |key, v| {
        match key {
            b"prompt_tokens" => c.prompt = count(v),
            b"completion_tokens" => c.completion = count(v),
            b"input_tokens" => c.input = count(v),
            b"output_tokens" => c.output = count(v),
            b"cache_read_input_tokens" => c.cache_read = count(v),
            b"cache_creation_input_tokens" => c.cache_creation = count(v),
            b"prompt_tokens_details" => c.prompt_cached = inner_count(v, b"cached_tokens"),
            b"input_tokens_details" => c.input_cached = inner_count(v, b"cached_tokens"),
            b"completion_tokens_details" => c.completion_reasoning = inner_count(v, b"reasoning_tokens"),
            b"output_tokens_details" => c.output_reasoning = inner_count(v, b"reasoning_tokens"),
            b"promptTokenCount" => c.prompt_count = count(v),
            b"candidatesTokenCount" => c.candidates_count = count(v),
            b"thoughtsTokenCount" => c.thoughts_count = count(v),
            b"cachedContentTokenCount" => c.cached_count = count(v),
            _ => {}
        }
        true
    })?;
    Some(c)
}

/// Finds usage in one JSON document, whatever the provider's shape.
fn extract(doc: &[u8]) -> Option<Partial> {
    let mut usage = None;
    let mut message = None;
    let mut response = None;
    let mut metadata = None;
    // One walk over the top level; the last of each name wins.
    for_each_member(doc, |key, value| {
        let slot = match key {
            b"usage" => &mut usage,
            b"message" => &mut message,
            b"response" => &mut response,
            b"usageMetadata" => &mut metadata,
            _ => return true,
        };
        *slot = Some(value);
        true
    })?;
    // OpenAI chat / embeddings / Responses (non-stream), Anthropic message
    // and message_delta: a top-level `usage` object (null in OpenAI's
    // non-final stream chunks); Anthropic message_start: usage inside
    // `message`; OpenAI Responses stream: `response.completed` carries the
    // response.
    let openai_anthropic = object(usage)
        .or_else(|| object(message).and_then(|m| member_object(m, b"usage")))
        .or_else(|| object(response).and_then(|r| member_object(r, b"usage")));
    if let Some(c) = openai_anthropic.and_then(counts) {
        return Some(from_usage_object(&c));
    }
    // Gemini: `usageMetadata` in every frame, the last one authoritative.
    let c = object(metadata).and_then(counts)?;
    Some(Partial {
        input_excludes_cache: false,
        input: c.prompt_count,
        output: match (c.candidates_count, c.thoughts_count) {
            (None, None) => None,
            (n, t) => Some(n.unwrap_or(0).saturating_add(t.unwrap_or(0))),
        },
        cached_input: c.cached_count,
        cache_write: None,
        reasoning: c.thoughts_count,
    })
}

fn from_usage_object(c: &Counts) -> Partial {
    // Anthropic names cache reads/writes at the top level of usage and
    // leaves them out of input_tokens.
    let anthropic = c.cache_read.is_some() || c.cache_creation.is_some();
    Partial {
        input_excludes_cache: anthropic,
        input: c.prompt.or(c.input),
        output: c.completion.or(c.output),
        cached_input: c.cache_read.or(c.prompt_cached).or(c.input_cached),
        cache_write: c.cache_creation,
        reasoning: c.completion_reasoning.or(c.output_reasoning),
    }
}

#[cfg(test)]
mod tests;

//! Building OpenAI-shaped pieces: chunks, usage, errors.

use serde_json::{Value, json};

use crate::providers::Translation;

pub fn now() -> u64 {
    crate::util::now_unix_ms() / 1000
}

/// Writes a stream's `chat.completion.chunk` events. The part every chunk
/// shares (`id`, `created`, `model`) is rendered once per stream.
pub struct Chunks {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    prefix: Vec<u8>,
}

impl Chunks {
    pub fn new(id: &str, model: &str) -> Chunks {
        let mut prefix = b"data: {\"id\":".to_vec();
        let _ = serde_json::to_writer(&mut prefix, id);
        prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        prefix.extend_from_slice(now().to_string().as_bytes());
        prefix.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut prefix, model);
        prefix.push(b',');
        Chunks { prefix }
    }

    /// One chunk with this `delta` and `finish_reason`.
    pub fn delta(&self, out: &mut Vec<u8>, delta: &Value, finish: Option<&str>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        let _ = serde_json::to_writer(&mut *out, delta);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        let _ = serde_json::to_writer(&mut *out, &finish);
        out.extend_from_slice(b"}]}\n\n");
    }

    /// A content delta: the hot path of a translated stream.
    pub fn content(&self, out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":{\"content\":");
        let _ = serde_json::to_writer(&mut *out, text);
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    }

    /// The end of a stream: the usage chunk (when the client asked for it)
    /// from (input, output, cached input) tokens, then `[DONE]`.
    pub fn end(&self, out: &mut Vec<u8>, usage: Option<(u64, u64, u64)>) {
        if let Some((i, o, c)) = usage {
            self.usage(out, &self::usage(i, o, c));
        }
        done(out);
    }

    /// The usage chunk (`choices: []`).
    pub fn usage(&self, out: &mut Vec<u8>, usage: &Value) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b"\"choices\":[],\"usage\":");
        let _ = serde_json::to_writer(&mut *out, usage);
        out.extend_from_slice(b"}\n\n");
    }
}

pub fn event(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(v.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

pub fn done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

/// OpenAI usage from input (all of it, cached included), output and
/// cached input tokens.
pub fn usage(input: u64, output: u64, cached: u64) -> Value {
    json!({
        "prompt_tokens": input,
        "completion_tokens": output,
        "total_tokens": input.saturating_add(output),
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}

/// A provider's error answer, as an OpenAI error with a status OpenAI
/// clients know (Anthropic's 529 "overloaded" becomes 503).
pub fn error(t: Translation, status: u16, parsed: Option<&Value>, raw: &[u8]) -> (u16, String) {
    let (message, kind) = match (t, parsed) {
        (Translation::Anthropic, Some(v)) => {
            (v["error"]["message"].as_str().map(str::to_string), v["error"]["type"].as_str().map(str::to_string))
        }
        (Translation::Gemini, Some(v)) => (
            v["error"]["message"].as_str().map(str::to_string),
            v["error"]["status"].as_str().map(|s| s.to_ascii_lowercase()),
        ),
        _ => (None, None),
    };
    let message = message.unwrap_or_else(|| String::from_utf8_lossy(&raw[..raw.len().min(512)]).into_owned());
    let status = if status == 529 { 503 } else { status };
    let error_type = if (400..500).contains(&status) { "invalid_request_error" } else { "api_error" };
    let code = kind.unwrap_or_else(|| format!("http_{status}"));
    let body = json!({ "error": { "message": message, "type": error_type, "param": null, "code": code } });
    (status, body.to_string())
}

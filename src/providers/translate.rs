//! The unified endpoint's translation: OpenAI chat completions to and from
//! a provider's native API. Requests are translated whole; responses as
//! JSON whole, or as streams event by event as they arrive.
//!
//! A request field the target cannot honour is refused with 400 naming the
//! field (`UnsupportedField`), never silently dropped.

use bytes::Bytes;
use serde_json::Value;

pub use super::Translation;
use super::{anthropic::translate as anthropic, gemini::translate as gemini, openai::translate as openai};
use crate::error::GatewayError;

/// The upstream body and path for a translated chat request.
pub fn request(
    t: Translation,
    body: &[u8],
    model: Option<&str>,
    stream: bool,
) -> Result<(Bytes, Vec<u8>), GatewayError> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidBody { param: "body", why: format!("not JSON: {e}") })?;
    let obj = req.as_object().ok_or(GatewayError::InvalidBody { param: "body", why: "not a JSON object".into() })?;
    let model = model
        .map(str::to_string)
        .or_else(|| obj.get("model").and_then(Value::as_str).map(str::to_string))
        .ok_or(GatewayError::InvalidBody { param: "model", why: "required".into() })?;
    match t {
        Translation::Anthropic => {
            let out = anthropic::request(obj, &model)?;
            Ok((Bytes::from(out.to_string()), b"/v1/messages".to_vec()))
        }
        Translation::Gemini => {
            // The model goes into the upstream's request line: only the
            // characters model names use, nothing that could end the path.
            if model.is_empty() || !model.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                return Err(GatewayError::InvalidBody {
                    param: "model",
                    why: format!("`{model}` is not a Gemini model name"),
                });
            }
            let out = gemini::request(obj)?;
            let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            Ok((Bytes::from(out.to_string()), format!("/v1beta/models/{model}:{method}").into_bytes()))
        }
        Translation::None => Ok((Bytes::copy_from_slice(body), b"/v1/chat/completions".to_vec())),
    }
}

/// Translates a whole (non-stream) upstream answer to OpenAI's shape:
/// (status, JSON body). A provider's error answer is translated too; an
/// answer that cannot be read is the gateway's 502 (`Untranslatable`).
pub fn response(
    t: Translation,
    status: u16,
    body: &[u8],
    model: &str,
    json_mode: bool,
) -> Result<(u16, String), &'static str> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        return Ok(openai::error(t, status, parsed.as_ref(), body));
    }
    let Some(v) = parsed else {
        return Err("the answer is not JSON");
    };
    let out = match t {
        Translation::Anthropic => anthropic::response(&v, model, json_mode),
        Translation::Gemini => gemini::response(&v, model),
        Translation::None => Some(v),
    };
    match out {
        Some(v) => Ok((200, v.to_string())),
        None => Err("the answer has an unexpected shape"),
    }
}

/// A stream translator: native SSE bytes in, OpenAI `chat.completion.chunk`
/// events out.
pub enum StreamTranslator {
    Anthropic(anthropic::Stream),
    Gemini(gemini::Stream),
}

impl StreamTranslator {
    pub fn new(t: Translation, model: &str, include_usage: bool, json_mode: bool) -> Option<StreamTranslator> {
        match t {
            Translation::Anthropic => {
                Some(StreamTranslator::Anthropic(anthropic::Stream::new(model, include_usage, json_mode)))
            }
            Translation::Gemini => Some(StreamTranslator::Gemini(gemini::Stream::new(model, include_usage))),
            Translation::None => None,
        }
    }

    /// Feeds decoded upstream body bytes; appends translated events.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match self {
            StreamTranslator::Anthropic(s) => s.feed(data, out),
            StreamTranslator::Gemini(s) => s.feed(data, out),
        }
    }

    /// The upstream stream ended: the final events (`[DONE]`).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            StreamTranslator::Anthropic(s) => s.finish(out),
            StreamTranslator::Gemini(s) => s.finish(out),
        }
    }
}

/// Request fields every translation handles.
const COMMON_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
];

/// Refuses fields outside the common ones and `extra` (a null value, or
/// `n: 1`, is harmless).
pub(super) fn check_fields(
    req: &serde_json::Map<String, Value>,
    extra: &[&str],
    kind: &'static str,
) -> Result<(), GatewayError> {
    for (k, v) in req {
        let harmless = v.is_null() || (k == "n" && v.as_u64() == Some(1));
        if !COMMON_FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()) && !harmless {
            return Err(unsupported(kind, k.clone()));
        }
    }
    Ok(())
}

pub(super) fn unsupported(kind: &'static str, field: impl Into<String>) -> GatewayError {
    GatewayError::UnsupportedField { field: field.into(), provider_kind: kind }
}

pub(super) fn invalid(param: &'static str, why: impl Into<String>) -> GatewayError {
    GatewayError::InvalidBody { param, why: why.into() }
}

/// `stop` as a list of strings.
pub(super) fn stop_list(req: &serde_json::Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    match req.get("stop") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Value::Array(vec![Value::from(s.as_str())]))),
        Some(Value::Array(a)) => Ok(Some(Value::Array(a.clone()))),
        Some(_) => Err(invalid("stop", "a string or an array of strings")),
    }
}

/// `max_completion_tokens`, or the older `max_tokens`.
pub(super) fn max_tokens(req: &serde_json::Map<String, Value>) -> Option<u64> {
    req.get("max_completion_tokens").or_else(|| req.get("max_tokens")).and_then(Value::as_u64)
}

/// The JSON events in the next piece of an SSE body.
pub(super) fn sse_events(splitter: &mut crate::tap::sse::SseSplitter, data: &[u8]) -> Vec<Value> {
    let mut events = Vec::new();
    splitter.feed(data, &mut |e| {
        if let Ok(v) = serde_json::from_slice::<Value>(e.data) {
            events.push(v);
        }
    });
    events
}

#[cfg(test)]
mod tests;

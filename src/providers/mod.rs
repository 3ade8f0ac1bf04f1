//! What the gateway knows about each provider's API, in one place: the
//! path shapes it serves, the header its key goes in, where its usage is
//! reported, and the translation of the unified endpoint (OpenAI chat) to
//! and from its native API.
//!
//! - `openai/`: chat completions paths, the include_usage rewrite, OpenAI-
//!   shaped chunks and errors (the unified endpoint's output).
//! - `anthropic/`: Messages translation, the default `anthropic-version`.
//! - `gemini/`: generateContent translation, the model in the path.
//! - `translate.rs`: the dispatch over them for whole answers and streams.
//! - Usage itself is read by the tap (`tap/usage.rs`), which recognises
//!   every provider's usage object in one pass; see each module for its
//!   shape.

pub mod anthropic;
pub mod body;
pub mod gemini;
pub mod openai;
pub mod translate;

use crate::config::ProviderKind;

/// Header names that carry credentials; a client's are never forwarded
/// unless the provider has `passthrough_auth`.
pub const CREDENTIAL_HEADERS: [&[u8]; 4] = [b"authorization", b"x-api-key", b"api-key", b"x-goog-api-key"];

/// The header a provider of `kind` takes its API key in, and its value.
pub fn key_header(kind: ProviderKind, key: &str) -> (&'static str, String) {
    match kind {
        ProviderKind::OpenAi | ProviderKind::Mock => ("Authorization", format!("Bearer {key}")),
        ProviderKind::Anthropic => ("x-api-key", key.to_string()),
        ProviderKind::Gemini => ("x-goog-api-key", key.to_string()),
    }
}

/// Which API the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The provider's own API, forwarded as it is.
    Passthrough,
    /// `/v1/chat/completions`: OpenAI chat, translated for other kinds.
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`, answered by the gateway.
    Models,
}

impl Api {
    /// The unified endpoint a path names, if any.
    pub fn unified(path: &[u8]) -> Option<Api> {
        match path {
            b"/v1/chat/completions" => Some(Api::Chat),
            b"/v1/embeddings" => Some(Api::Embeddings),
            b"/v1/models" => Some(Api::Models),
            _ => None,
        }
    }

    /// The upstream path of a unified request (pass-through keeps the
    /// client's).
    pub fn upstream_path(self) -> Option<&'static [u8]> {
        match self {
            Api::Chat => Some(openai::CHAT_PATH),
            Api::Embeddings => Some(openai::EMBEDDINGS_PATH),
            Api::Passthrough | Api::Models => None,
        }
    }
}

/// The shape of an upstream event stream, for deciding when it ended as a
/// whole, successful answer (only those are stored in the cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// OpenAI chat (and legacy) completions: ends with `data: [DONE]`.
    OpenAiChat,
    /// OpenAI Responses: a `response.completed` event.
    OpenAiResponses,
    /// Anthropic Messages: `message_stop`.
    Anthropic,
    /// Gemini: a candidate with a `finishReason`.
    Gemini,
}

impl StreamFormat {
    /// The format a provider of `kind` streams on `path` (path and query
    /// the upstream gets).
    pub fn of(kind: ProviderKind, path: &[u8]) -> StreamFormat {
        match kind {
            ProviderKind::Anthropic => StreamFormat::Anthropic,
            ProviderKind::Gemini => StreamFormat::Gemini,
            ProviderKind::OpenAi | ProviderKind::Mock => {
                let path = &path[..memchr::memchr(b'?', path).unwrap_or(path.len())];
                if path.ends_with(b"/responses") { StreamFormat::OpenAiResponses } else { StreamFormat::OpenAiChat }
            }
        }
    }

    /// Whether a stream with these signals ended as a whole, successful
    /// answer: its format's last event came, and no event carried an error
    /// (Anthropic's `event: error` "overloaded", an OpenAI `{"error":…}`
    /// chunk, Responses' `response.failed`).
    pub fn complete(self, s: &StreamSignals) -> bool {
        let ended = match self {
            StreamFormat::OpenAiChat => s.done,
            StreamFormat::OpenAiResponses => s.response_completed,
            StreamFormat::Anthropic => s.message_stop,
            StreamFormat::Gemini => s.finish_reason,
        };
        ended && !s.error
    }
}

/// What the tap noticed about a stream's events, by cheap byte checks
/// (only those the stream's format needs, when it is known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamSignals {
    /// The format to look for; None: every format's markers.
    pub format: Option<StreamFormat>,
    /// `data: [DONE]`.
    pub done: bool,
    /// An event named or typed `error`, a `response.failed`, or data that
    /// is a top-level `{"error": …}` object.
    pub error: bool,
    pub message_stop: bool,
    pub response_completed: bool,
    /// A `"finishReason"` (Gemini's last candidate).
    pub finish_reason: bool,
}

impl StreamSignals {
    /// Notes one event.
    pub fn observe(&mut self, name: &[u8], data: &[u8]) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let has = |needle: &[u8]| memchr::memmem::find(data, needle).is_some();
        match name {
            b"error" | b"response.failed" => self.error = true,
            b"message_stop" => self.message_stop = true,
            b"response.completed" => self.response_completed = true,
            _ => {}
        }
        let body = data.trim_ascii_start();
        if body.starts_with(b"{\"error\"") || body.starts_with(b"{\"type\":\"error\"") {
            self.error = true;
        }
        if name.is_empty() {
            // Formats without event names say the same in the data.
            self.message_stop |= body.starts_with(b"{\"type\":\"message_stop\"");
            self.response_completed |= body.starts_with(b"{\"type\":\"response.completed\"");
            self.error |= body.starts_with(b"{\"type\":\"response.failed\"");
        }
        // The one marker that needs a search through the data: only for
        // Gemini (or an unknown format).
        let gemini = matches!(self.format, None | Some(StreamFormat::Gemini));
        if gemini && !self.finish_reason && has(b"\"finishReason\"") {
            self.finish_reason = true;
        }
    }
}

/// How a request and its answer are translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    None,
    Anthropic,
    Gemini,
}

impl Translation {
    /// Whether a request on `api` to a provider of `kind` is translated.
    pub fn of(api: Api, kind: ProviderKind) -> Translation {
        match (api, kind) {
            (Api::Chat, ProviderKind::Anthropic) => Translation::Anthropic,
            (Api::Chat, ProviderKind::Gemini) => Translation::Gemini,
            _ => Translation::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(events: &[(&str, &str)]) -> StreamSignals {
        let mut s = StreamSignals::default();
        for (name, data) in events {
            s.observe(name.as_bytes(), data.as_bytes());
        }
        s
    }

    #[test]
    fn each_format_knows_its_whole_successful_stream() {
        let gemini = StreamFormat::of(ProviderKind::Gemini, b"/v1beta/models/g:streamGenerateContent?alt=sse");
        let ok = signals(&[("", r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}]}"#)]);
        assert!(gemini.complete(&ok));
        assert!(!gemini.complete(&signals(&[("", r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}]}"#)])));
        let err = signals(&[("", r#"{"error":{"code":503}}"#), ("", r#"{"candidates":[{"finishReason":"STOP"}]}"#)]);
        assert!(!gemini.complete(&err));

        let responses = StreamFormat::of(ProviderKind::OpenAi, b"/v1/responses");
        assert_eq!(responses, StreamFormat::OpenAiResponses);
        assert!(responses.complete(&signals(&[("response.completed", r#"{"type":"response.completed"}"#)])));
        assert!(responses.complete(&signals(&[("", r#"{"type":"response.completed","response":{}}"#)])));
        assert!(!responses.complete(&signals(&[("response.failed", "{}"), ("response.completed", "{}")])));
        assert!(!responses.complete(&signals(&[("", r#"{"type":"response.output_text.delta"}"#)])));

        let chat = StreamFormat::of(ProviderKind::Mock, b"/v1/chat/completions?x=1");
        assert!(chat.complete(&signals(&[("", "{}"), ("", "[DONE]")])));
        assert!(!chat.complete(&signals(&[("", " {\"error\":{}}"), ("", "[DONE]")])));
        let anthropic = StreamFormat::of(ProviderKind::Anthropic, b"/v1/messages");
        assert!(anthropic.complete(&signals(&[("", r#"{"type":"message_stop"}"#)])));
        assert!(!anthropic.complete(&signals(&[("", r#"{"type":"error","error":{}}"#), ("message_stop", "{}")])));
    }
}

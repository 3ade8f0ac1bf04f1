//! OpenAI's API (and every OpenAI-compatible server: vLLM, SGLang, TGI,
//! llama.cpp, Ollama, the mock). Usage comes in a top-level `usage` object;
//! a chat stream carries it only when asked with
//! `stream_options.include_usage`, which the gateway adds (and strips back
//! out, `tap/strip.rs`) when it counts tokens.

pub mod translate;

use bytes::Bytes;

/// The unified endpoint's upstream paths.
pub const CHAT_PATH: &[u8] = b"/v1/chat/completions";
pub const EMBEDDINGS_PATH: &[u8] = b"/v1/embeddings";

/// Whether a POST to this path (query ignored) is a chat completion.
pub fn is_chat_completions(method: &[u8], path_and_query: &[u8]) -> bool {
    let end = path_and_query.iter().position(|&b| b == b'?').unwrap_or(path_and_query.len());
    method == b"POST" && path_and_query[..end].ends_with(b"/chat/completions")
}

/// The body with `stream_options.include_usage` set, so the stream reports
/// exact usage: added as the first member when the body has no
/// `stream_options`, merged into the one it has otherwise (`{}`,
/// `{"include_usage":false}`, other options kept). The relay strips what
/// this adds before the client sees it.
pub fn with_include_usage(body: &Bytes) -> Option<Bytes> {
    if let Some(span) = super::body::member_span(body, "stream_options") {
        let mut options = match serde_json::from_slice::<serde_json::Value>(&body[span.clone()]) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
        let merged = serde_json::Value::Object(options).to_string();
        let mut out = Vec::with_capacity(body.len() + 24);
        out.extend_from_slice(&body[..span.start]);
        out.extend_from_slice(merged.as_bytes());
        out.extend_from_slice(&body[span.end..]);
        return Some(out.into());
    }
    let open = body.iter().position(|b| !b.is_ascii_whitespace()).filter(|&i| body[i] == b'{')?;
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + 48);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_usage_is_added_or_merged() {
        let cases: [(&str, &str); 5] = [
            (
                r#"{"model":"m","stream":true}"#,
                r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#,
            ),
            ("{}", r#"{"stream_options":{"include_usage":true}}"#),
            (r#"{"stream":true,"stream_options":{}}"#, r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            (
                r#"{"stream_options":{"include_usage":false,"x":1},"stream":true}"#,
                r#"{"stream_options":{"include_usage":true,"x":1},"stream":true}"#,
            ),
            (r#"{"stream_options":null}"#, r#"{"stream_options":{"include_usage":true}}"#),
        ];
        for (body, want) in cases {
            let out = with_include_usage(&Bytes::from(body)).expect("an object");
            assert_eq!(std::str::from_utf8(&out), Ok(want), "{body}");
        }
    }
}

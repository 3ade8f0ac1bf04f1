//! A policy's remote check (`check_with`): what is asked of the checking
//! provider, and how its answer reads. The call itself is made by the
//! pipeline (`src/proxy/moderate.rs`), concurrently with the upstream one.
//!
//! Two ways to ask, both OpenAI-shaped so that any OpenAI-compatible server
//! answers them:
//! - `moderations`: `POST /v1/moderations` with every scanned string as one
//!   `input` entry; flagged if any result says `"flagged": true`.
//! - `chat`: `POST /v1/chat/completions` to a classifier model (Llama Guard
//!   on vLLM) with the strings as the user's message; flagged if the answer
//!   starts with "unsafe" (Llama Guard answers "safe", or "unsafe" and the
//!   categories on the next line).

use serde_json::Value;

use crate::config::{CheckApi, Moderation};

/// How many bytes of request text a check sends at most: a check is about
/// the prompt, not a way to ship a 32 MiB body twice.
pub const MAX_CHECKED: usize = 256 * 1024;

/// The path under the provider's base URL.
pub fn path(m: &Moderation) -> &'static str {
    match m.api {
        CheckApi::Moderations => "/v1/moderations",
        CheckApi::Chat => "/v1/chat/completions",
    }
}

/// The check's request body for these strings (cut at `MAX_CHECKED` bytes
/// in all, at a char boundary), with the target's model.
pub fn request_body(m: &Moderation, model: Option<&str>, texts: &[String]) -> Vec<u8> {
    let mut left = MAX_CHECKED;
    let mut kept: Vec<&str> = Vec::new();
    for t in texts.iter().filter(|t| !t.trim().is_empty()) {
        if left == 0 {
            break;
        }
        let mut end = t.len().min(left);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        kept.push(&t[..end]);
        left -= end;
    }
    let mut body = serde_json::Map::new();
    if let Some(model) = model {
        body.insert("model".into(), Value::from(model));
    }
    match m.api {
        CheckApi::Moderations => {
            body.insert("input".into(), Value::from(kept));
        }
        CheckApi::Chat => {
            let text = kept.join("\n\n");
            body.insert("messages".into(), serde_json::json!([{ "role": "user", "content": text }]));
            body.insert("max_tokens".into(), Value::from(16));
            body.insert("temperature".into(), Value::from(0));
            body.insert("stream".into(), Value::from(false));
        }
    }
    Value::Object(body).to_string().into_bytes()
}

/// Whether the check's (2xx) answer flags the request; Err: it does not
/// read as an answer of its kind.
pub fn flagged(m: &Moderation, answer: &[u8]) -> Result<bool, &'static str> {
    let v: Value = serde_json::from_slice(answer).map_err(|_| "the check's answer is not JSON")?;
    match m.api {
        CheckApi::Moderations => {
            let results = v["results"].as_array().ok_or("no results in the moderation answer")?;
            results.iter().try_fold(false, |any, r| Ok(any | r["flagged"].as_bool().ok_or("a result without flagged")?))
        }
        CheckApi::Chat => {
            let text = v["choices"][0]["message"]["content"].as_str().ok_or("no message in the classifier's answer")?;
            Ok(text.trim_start().to_ascii_lowercase().starts_with("unsafe"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(api: CheckApi, model: Option<&str>) -> Moderation {
        Moderation {
            check_with: "guard".into(),
            targets: vec![("guard".into(), model.map(String::from))],
            api,
            model: model.map(String::from),
            timeout: Duration::from_millis(800),
            block_on_error: false,
        }
    }

    #[test]
    fn asks_and_reads_both_ways() {
        let texts = vec!["hello".to_string(), "  ".to_string(), "how are you".to_string()];
        let m = check(CheckApi::Moderations, None);
        assert_eq!(path(&m), "/v1/moderations");
        assert_eq!(String::from_utf8(request_body(&m, None, &texts)).unwrap(), r#"{"input":["hello","how are you"]}"#);
        assert_eq!(flagged(&m, br#"{"results":[{"flagged":false},{"flagged":true}]}"#), Ok(true));
        assert_eq!(flagged(&m, br#"{"id":"x","results":[{"flagged":false}]}"#), Ok(false));
        assert!(flagged(&m, br#"{"results":[{}]}"#).is_err());
        assert!(flagged(&m, b"<html>").is_err());

        let c = check(CheckApi::Chat, Some("llama-guard-3"));
        let body: Value = serde_json::from_slice(&request_body(&c, Some("llama-guard-3"), &texts)).unwrap();
        assert_eq!(body["model"], "llama-guard-3");
        assert_eq!(body["messages"][0]["content"], "hello\n\nhow are you");
        let answer = |t: &str| serde_json::json!({"choices":[{"message":{"content":t}}]}).to_string();
        assert_eq!(flagged(&c, answer("\n\nunsafe\nS1").as_bytes()), Ok(true));
        assert_eq!(flagged(&c, answer("safe").as_bytes()), Ok(false));
        assert!(flagged(&c, b"{}").is_err());
    }

    #[test]
    fn what_is_sent_is_bounded() {
        let m = check(CheckApi::Moderations, None);
        let big = vec!["é".repeat(MAX_CHECKED); 3];
        let body: Value = serde_json::from_slice(&request_body(&m, None, &big)).unwrap();
        let sent: usize = body["input"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().len()).sum();
        assert!(sent <= MAX_CHECKED && sent > MAX_CHECKED - 4, "{sent}");
    }
}

//! Response-side guardrails end to end: the mock answers a given text
//! (`x-mock-content`), in every format, streamed and whole; the client must
//! get it redacted, or ended the way the provider's safety system ends an
//! answer, and the official SDK must read that ending.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{process::Command, time::Duration};

use aigw::mock::MockServer;
use common::*;
use serde_json::Value;

const POLICIES: &str = r#"
[guardrails.pii]
detectors = ["email", "credit_card"]
request = "off"
response = "redact"

[guardrails.secrets]
detectors = ["secret"]
request = "off"
response = "block"

[guardrails.watch]
detectors = ["ip_address"]
request = "off"
response = "flag"
"#;

fn start(mock: &aigw::mock::MockServer) -> Gateway {
    let toml = format!(
        "{}guardrails = [\"pii\", \"secrets\", \"watch\"]\n{}guardrails = [\"pii\", \"secrets\"]\n{}guardrails = [\"pii\", \"secrets\"]\n{}{POLICIES}",
        provider("mock", "mock", mock.addr),
        provider("anth", "anthropic", mock.addr),
        provider("gem", "gemini", mock.addr),
        provider("open", "mock", mock.addr),
    );
    Gateway::start("", &toml)
}

/// `text` as an `x-mock-content` header value (percent-encoded).
fn content(pieces: &[&str]) -> String {
    let joined = pieces.join("\u{1F}");
    let mut out = String::from("x-mock-content: ");
    for b in joined.bytes() {
        if b.is_ascii_alphanumeric() || b".,-_".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("\r\n");
    out
}

fn chat(model: &str, stream: bool) -> String {
    format!(r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#)
}

/// The text a client reads from a stream, in the client's format.
fn streamed_text(body: &[u8]) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut finishes = Vec::new();
    for line in String::from_utf8_lossy(body).lines() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
        if let Some(cs) = v["choices"].as_array() {
            for c in cs {
                text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
                if let Some(f) = c["finish_reason"].as_str() {
                    finishes.push(f.to_string());
                }
            }
        }
        text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
        if let Some(f) = v["delta"]["stop_reason"].as_str() {
            finishes.push(f.to_string());
        }
        if let Some(c) = v["candidates"].get(0) {
            text.push_str(c["content"]["parts"][0]["text"].as_str().unwrap_or(""));
            if let Some(f) = c["finishReason"].as_str() {
                finishes.push(f.to_string());
            }
        }
    }
    (text, finishes)
}

const TEXT: &str = "Reach jane.doe@example.com about card 4111 1111 1111 1111 today.";
const REDACTED: &str = "Reach [EMAIL] about card [CREDIT_CARD] today.";

#[test]
fn streams_are_redacted_wherever_the_chunks_split_in_every_format() {
    let mock = mock();
    let gw = start(&mock);
    let requests: [(&str, String); 4] = [
        ("/mock/v1/chat/completions", chat("gpt-4o-mini", true)),
        (
            "/anth/v1/messages",
            r#"{"model":"claude-x","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#.into(),
        ),
        (
            "/gem/v1beta/models/gemini-x:streamGenerateContent?alt=sse",
            r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#.into(),
        ),
        // The unified endpoint: Anthropic's stream translated to OpenAI's.
        ("/v1/chat/completions", chat("anth/claude-x", true)),
    ];
    let email = TEXT.find("jane").unwrap();
    let end = TEXT.find(" about").unwrap();
    for (path, body) in &requests {
        // The email split between two chunks at every byte.
        for cut in email..=end {
            let r = roundtrip(gw.addr, &post_with(path, body, &content(&[&TEXT[..cut], &TEXT[cut..]])));
            assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
            let (text, finishes) = streamed_text(&r.body);
            assert_eq!(text, REDACTED, "{path}, cut at {cut}:\n{}", String::from_utf8_lossy(&r.body));
            assert_eq!(finishes.len(), 1, "{path}: one finish, {finishes:?}");
        }
    }
}

#[test]
fn whole_answers_are_redacted_and_counted() {
    let mock = mock();
    let gw = start(&mock);
    let words = content(&[TEXT]);
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat("gpt-4o-mini", false), &words));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], REDACTED);
    assert_eq!(r.json()["usage"]["completion_tokens"], 9, "usage is the provider's (a chunk per word)");
    let body = r#"{"model":"claude-x","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/anth/v1/messages", body, &words));
    assert_eq!(r.json()["content"][0]["text"], REDACTED);
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", &chat("gem/gemini-x", false), &words));
    assert_eq!(r.json()["choices"][0]["message"]["content"], REDACTED);
    // The provider without policies answers as it was.
    let r = roundtrip(gw.addr, &post_with("/open/v1/chat/completions", &chat("gpt-4o-mini", false), &words));
    assert_eq!(r.json()["choices"][0]["message"]["content"], TEXT);
    // Flag changes nothing and counts.
    let r =
        roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat("m", true), &content(&["host 10.1.2.3 up"])));
    assert_eq!(streamed_text(&r.body).0, "host 10.1.2.3 up");

    let line = |d: &str, a: &str| {
        format!(
            "aigw_guardrail_actions_total{{policy=\"{}\",detector=\"{d}\",action=\"{a}\",direction=\"response\"}}",
            if a == "flag" { "watch" } else { "pii" }
        )
    };
    assert!(eventually(Duration::from_secs(10), || metric(&metrics_text(gw.admin), &line("ip_address", "flag")) == 1.0));
    let m = metrics_text(gw.admin);
    assert_eq!(metric(&m, &line("email", "redact")), 3.0, "{m}");
    assert_eq!(metric(&m, &line("credit_card", "redact")), 3.0, "{m}");
}

/// The request log keeps what the client was sent: a redacted value never
/// reaches the log's captured body, whole or streamed, translated or not.
#[test]
fn the_logged_answer_is_the_redacted_one() {
    let mock = mock();
    let toml = format!(
        "[log]\ncapture_bodies = true\ncapture_max_bytes = 65536\n{}guardrails = [\"pii\"]\n{}guardrails = [\"pii\"]\n{POLICIES}",
        provider("mock", "mock", mock.addr),
        provider("anth", "anthropic", mock.addr),
    );
    let gw = Gateway::start("", &toml);
    let words = content(&[TEXT]);
    let cases = [
        ("/mock/v1/chat/completions", chat("gpt-4o-mini", false)),
        ("/mock/v1/chat/completions", chat("gpt-4o-mini", true)),
        ("/v1/chat/completions", chat("anth/claude-x", false)),
        ("/v1/chat/completions", chat("anth/claude-x", true)),
    ];
    for (n, (path, body)) in cases.iter().enumerate() {
        let r = roundtrip(gw.addr, &post_with(path, body, &words));
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        let sent = String::from_utf8_lossy(&r.body).into_owned();
        assert!(!sent.contains("jane.doe"), "{sent}");
        let log = logs_once(gw.admin, n + 1);
        let logged = log["data"][0]["response_body"].as_str().unwrap_or_else(|| panic!("{path}: {log}"));
        assert!(logged.contains("[EMAIL]"), "{path}: {logged}");
        assert!(!logged.contains("jane.doe") && !logged.contains("4111"), "{path}: {logged}");
    }
}

#[test]
fn block_ends_answers_the_way_each_provider_does() {
    let mock = mock();
    let gw = start(&mock);
    let key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123";
    let leak = content(&["Here", " is", " the", " key:", &format!(" {key}"), " use", " it."]);
    // OpenAI stream: the content so far, a content_filter finish, [DONE].
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat("m", true), &leak));
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!body.contains("sk-proj"), "{body}");
    let (text, finishes) = streamed_text(&r.body);
    assert_eq!((text.as_str(), finishes), ("Here is the key: ", vec!["content_filter".to_string()]));
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // Anthropic stream: refusal, then message_stop.
    let anth = r#"{"model":"claude-x","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/anth/v1/messages", anth, &leak));
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!body.contains("sk-proj"), "{body}");
    assert_eq!(streamed_text(&r.body).1, ["refusal"]);
    assert!(body.trim_end().ends_with("{\"type\":\"message_stop\"}"), "{body}");
    // Gemini whole answer: SAFETY, no content.
    let gem = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let r = roundtrip(gw.addr, &post_with("/gem/v1beta/models/gemini-x:generateContent", gem, &leak));
    assert_eq!(r.json()["candidates"][0]["finishReason"], "SAFETY", "{}", r.json());
    assert!(!String::from_utf8_lossy(&r.body).contains("sk-proj"));
    // OpenAI JSON through the unified endpoint: content withheld.
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", &chat("anth/claude-x", false), &leak));
    let v = r.json();
    assert_eq!(
        (v["choices"][0]["finish_reason"].as_str(), &v["choices"][0]["message"]["content"]),
        (Some("content_filter"), &Value::Null)
    );
}

#[test]
fn the_openai_sdk_reads_redacted_and_blocked_answers() {
    let python = sdk_python();
    let mock = mock();
    let gw = start(&mock);
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="x")
text, leak = sys.argv[2], sys.argv[3]
def ask(model, content, stream):
    h = {"x-mock-content": content}
    if stream:
        out, finish = "", None
        for ch in c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=h):
            for choice in ch.choices:
                out += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return out, finish
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=h)
    return r.choices[0].message.content, r.choices[0].finish_reason
for model in ["mock/gpt-4o-mini", "anth/claude-x", "gem/gemini-x"]:
    for stream in [False, True]:
        print(model, stream, ask(model, text, stream), ask(model, leak, stream))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(format!("http://{}/v1", gw.addr))
        .arg(TEXT.replace(' ', "%20"))
        .arg("Here%20is%20sk-proj-abcdefghijklmnopqrstuvwxyz0123%20ok")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    for line in stdout.lines() {
        assert!(line.contains(&format!("('{REDACTED}', 'stop')")), "{line}");
        assert!(line.contains("'content_filter')"), "{line}");
        assert!(!line.contains("sk-proj"), "{line}");
    }
}

/// A gateway whose `ps` (the mock) and `anth` (Anthropic, translated)
/// providers pseudonymize `detectors` in requests. `top`: tables before the
/// providers; `ps_extra`: more keys of `ps`.
fn pseudonymizing(mock: &MockServer, top: &str, ps_extra: &str, detectors: &str) -> Gateway {
    let toml = format!(
        "{top}{}{ps_extra}guardrails = [\"pseudo\"]\n{}guardrails = [\"pseudo\"]\n\
         [guardrails.pseudo]\ndetectors = [{detectors}]\nrequest = \"pseudonymize\"\n",
        provider("ps", "mock", mock.addr),
        provider("anth", "anthropic", mock.addr),
    );
    Gateway::start("", &toml)
}

#[test]
fn pseudonymized_values_come_back_to_the_client_exactly() {
    let mock = mock();
    let gw = pseudonymizing(&mock, "[cache]\n", "cache_ttl = \"60s\"\n", r#""email", "phone""#);
    // What the provider sees: numbered placeholders, one per value.
    let ask = r#"{"model":"m","messages":[{"role":"user","content":"Write to jane@corp.example and bob@corp.example, cc jane@corp.example, call +1 415 555 2671."}]}"#;
    let r = roundtrip(gw.addr, &post("/ps/echo", ask));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["body"].as_str().unwrap(),
        r#"{"model":"m","messages":[{"role":"user","content":"Write to [EMAIL_1] and [EMAIL_2], cc [EMAIL_1], call [PHONE_1]."}]}"#
    );
    let ask_stream = ask.replacen(r#""model":"m","#, r#""model":"m","stream":true,"#, 1);
    let answer = "Sent to [EMAIL_2] and [EMAIL_1]; [PHONE_1] is busy; [EMAIL_7] is not yours.";
    let want = "Sent to bob@corp.example and jane@corp.example; +1 415 555 2671 is busy; [EMAIL_7] is not yours.";
    // Whole answers.
    let r = roundtrip(gw.addr, &post_with("/ps/v1/chat/completions", ask, &content(&[answer])));
    assert_eq!(r.json()["choices"][0]["message"]["content"], want);
    // Nothing was stored or served from the cache: the mapping is this
    // request's alone.
    assert_eq!(r.header("x-aigw-cache-status"), Some("BYPASS"));
    let r = roundtrip(gw.addr, &post_with("/ps/v1/chat/completions", ask, &content(&[answer])));
    assert_eq!(r.header("x-aigw-cache-status"), Some("BYPASS"));
    // Streams: a placeholder split between two chunks at every byte, on
    // the provider's own format and translated by the unified endpoint.
    let unified = ask_stream.replacen(r#""model":"m""#, r#""model":"anth/claude-x""#, 1);
    let at = answer.find("[EMAIL_2]").unwrap();
    for cut in at..=at + "[EMAIL_2]".len() {
        let pieces = content(&[&answer[..cut], &answer[cut..]]);
        for (path, body) in [("/ps/v1/chat/completions", &ask_stream), ("/v1/chat/completions", &unified)] {
            let r = roundtrip(gw.addr, &post_with(path, body, &pieces));
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(streamed_text(&r.body).0, want, "{path}, cut at {cut}:\n{}", String::from_utf8_lossy(&r.body));
        }
    }
    let line = "aigw_guardrail_actions_total{policy=\"pseudo\",detector=\"email\",action=\"pseudonymize\",direction=\"request\"}";
    assert!(eventually(Duration::from_secs(10), || metric(&metrics_text(gw.admin), line) >= 3.0));
}

/// The mapping is never logged: with `capture_bodies`, a pseudonymized
/// request's record keeps its placeholders and no answer (the answer holds
/// the values put back), whole, streamed or translated.
#[test]
fn pseudonymized_values_stay_out_of_the_request_log() {
    let mock = mock();
    let gw = pseudonymizing(&mock, "[log]\ncapture_bodies = true\ncapture_max_bytes = 65536\n", "", r#""email""#);
    let answer = content(&["Sent to [EMAIL_1]."]);
    let cases = [
        ("/ps/v1/chat/completions", r#"{"model":"m","messages":[{"role":"user","content":"mail jane@corp.example"}]}"#),
        (
            "/ps/v1/chat/completions",
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"mail jane@corp.example"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"anth/claude-x","messages":[{"role":"user","content":"mail jane@corp.example"}]}"#,
        ),
    ];
    for (n, (path, body)) in cases.iter().enumerate() {
        let r = roundtrip(gw.addr, &post_with(path, body, &answer));
        assert_eq!(r.status, 200, "{path}");
        assert!(String::from_utf8_lossy(&r.body).contains("jane@corp.example"), "the client gets the value back");
        let log = logs_once(gw.admin, n + 1);
        let rec = &log["data"][0];
        assert!(rec["request_body"].as_str().is_some_and(|b| b.contains("[EMAIL_1]")), "{rec}");
        assert!(rec["response_body"].is_null(), "{rec}");
        assert!(!log.to_string().contains("jane@corp"), "{log}");
    }
}

use serde_json::Value;

use super::*;
use crate::{
    config::{self, Action},
    guardrails::{Guardrails, answer::AnswerVerdict, detect::Builtin},
};

fn texts(format: StreamFormat, doc: &str, stream: bool) -> Vec<(String, Option<Chan>)> {
    let d = find(format, doc.as_bytes(), stream).unwrap();
    d.sites.iter().map(|s| (doc[s.span.start + 1..s.span.end - 1].to_string(), s.chan)).collect()
}

#[test]
fn finds_only_the_text_of_each_format() {
    let chat = r#"{"id":"x","choices":[{"index":1,"message":{"role":"assistant","content":"hi","refusal":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"q\":1}"}}]},"logprobs":{"content":[{"token":"hi"}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#;
    assert_eq!(texts(StreamFormat::OpenAiChat, chat, false), [("hi".into(), None), (r#"{\"q\":1}"#.into(), None)]);
    let chunk = r#"{"choices":[{"index":2,"delta":{"content":"a","tool_calls":[{"index":3,"function":{"arguments":"b"}}]},"finish_reason":null}]}"#;
    assert_eq!(
        texts(StreamFormat::OpenAiChat, chunk, true),
        [("a".into(), Some((2, 0))), ("b".into(), Some((2, TOOL + 3)))]
    );
    let anthropic = r#"{"id":"m","type":"message","content":[{"type":"text","text":"t"},{"type":"tool_use","id":"u","name":"n","input":{"city":"Paris","n":1}}],"stop_reason":"end_turn"}"#;
    assert_eq!(texts(StreamFormat::Anthropic, anthropic, false), [("t".into(), None), ("Paris".into(), None)]);
    let gemini = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"g"},{"functionCall":{"name":"f","args":{"a":"v"}}}]},"finishReason":"STOP","index":0}]}"#;
    assert_eq!(texts(StreamFormat::Gemini, gemini, false), [("g".into(), None), ("v".into(), None)]);
    let responses = r#"{"id":"r","status":"completed","output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"o","annotations":[]}]},{"type":"function_call","name":"f","arguments":"{}"}]}"#;
    assert_eq!(texts(StreamFormat::OpenAiResponses, responses, false), [("o".into(), None), ("{}".into(), None)]);
    // Duplicate members are each text; an escaped key is the same key.
    let dup = r#"{"choices":[{"delta":{"content":"one","c\u006fntent":"two"}}]}"#;
    assert_eq!(texts(StreamFormat::OpenAiChat, dup, true).len(), 2);
    assert!(find(StreamFormat::OpenAiChat, b"{\"choices\":", false).is_none());
}

fn guardrails(response: Action) -> Guardrails {
    let p = config::Policy {
        name: "pii".into(),
        detectors: vec![Builtin::Email],
        patterns: Vec::new(),
        words: Vec::new(),
        injection: None,
        moderation: None,
        request: Action::Off,
        response,
    };
    Guardrails::new(&[p], &[]).unwrap()
}

#[test]
fn whole_answers_are_redacted_or_withheld() {
    let chat = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"mail a@b.co"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3}}"#;
    let g = guardrails(Action::Redact);
    match g.check_answer(&[0], StreamFormat::OpenAiChat, chat.as_bytes(), None) {
        AnswerVerdict::Pass { body: Some(b), events } => {
            assert_eq!(String::from_utf8(b).unwrap(), chat.replace("a@b.co", "[EMAIL]"));
            assert_eq!(events[0].count, 1);
        }
        other => panic!("{other:?}"),
    }
    let clean = chat.replace("a@b.co", "nobody");
    assert!(matches!(
        g.check_answer(&[0], StreamFormat::OpenAiChat, clean.as_bytes(), None),
        AnswerVerdict::Pass { body: None, .. }
    ));
    let g = guardrails(Action::Block);
    let withheld = |format, body: &str| match g.check_answer(&[0], format, body.as_bytes(), None) {
        AnswerVerdict::Block { body, policy, detector, .. } => {
            assert_eq!((policy.as_str(), detector.as_str()), ("pii", "email"));
            serde_json::from_slice::<Value>(&body).unwrap()
        }
        other => panic!("{other:?}"),
    };
    let v = withheld(StreamFormat::OpenAiChat, chat);
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let v = withheld(
        StreamFormat::Anthropic,
        r#"{"type":"message","content":[{"type":"text","text":"a@b.co"}],"stop_reason":"end_turn"}"#,
    );
    assert_eq!((v["stop_reason"].as_str(), v["content"].as_array().map(Vec::len)), (Some("refusal"), Some(0)));
    let v = withheld(StreamFormat::Gemini, r#"{"candidates":[{"content":{"parts":[{"text":"a@b.co"}]},"index":0}]}"#);
    assert_eq!(v["candidates"][0]["finishReason"], "SAFETY");
    assert_eq!(v["candidates"][0]["content"]["parts"].as_array().map(Vec::len), Some(0));
    let v = withheld(
        StreamFormat::OpenAiResponses,
        r#"{"id":"r","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"a@b.co"}]}]}"#,
    );
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "content_filter");
    assert!(matches!(g.check_answer(&[0], StreamFormat::OpenAiChat, b"not json", None), AnswerVerdict::Unreadable));
}

#[test]
fn set_member_replaces_or_adds_and_keeps_json() {
    for (obj, want) in [
        (r#"{"a":1,"f":"x"}"#, r#"{"a":1,"f":"y"}"#),
        (r#"{"a":1}"#, r#"{"f":"y","a":1}"#),
        (r#"{ }"#, r#"{"f":"y" }"#),
    ] {
        let mut edits = Vec::new();
        set_member(obj.as_bytes(), obj.as_bytes(), b"f", b"\"y\"", &mut edits);
        let mut out = Vec::new();
        splice(obj.as_bytes(), &mut edits, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

//! Usage from fixture transcripts, written from each provider's documented
//! format, fed whole, split at every offset, and with CRLF line ends.

use super::*;
use crate::tap::{Tap, TapReport};

fn tap(content_type: &str, body: &[u8], cuts: &[usize]) -> TapReport {
    let mut t = Tap::for_content_type(Some(content_type.as_bytes()));
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        t.observe(&body[start..end]);
        start = end;
    }
    t.finish()
}

fn sse(body: &str) -> Option<Usage> {
    tap("text/event-stream; charset=utf-8", body.as_bytes(), &[]).usage
}

fn json(body: &str) -> Option<Usage> {
    tap("application/json", body.as_bytes(), &[]).usage
}

const OPENAI_STREAM: &str = include_str!("../fixtures/openai_chat_stream.sse");
const ANTHROPIC_STREAM: &str = include_str!("../fixtures/anthropic_stream.sse");
const GEMINI_STREAM: &str = include_str!("../fixtures/gemini_stream.sse");

#[test]
fn openai_chat_stream_final_usage_chunk() {
    let r = tap("text/event-stream", OPENAI_STREAM.as_bytes(), &[]);
    assert_eq!(r.usage, Some(Usage { input: 1200, output: 2, cached_input: 1024, cache_write: 0, reasoning: 0 }));
    assert!(r.done);
    assert_eq!(r.events, 6);
    assert_eq!(r.usage.map(|u| u.fresh_input()), Some(176));
}

#[test]
fn openai_chat_json_with_reasoning() {
    let u = json(include_str!("../fixtures/openai_chat.json"));
    assert_eq!(u, Some(Usage { input: 19, output: 10, cached_input: 0, cache_write: 0, reasoning: 8 }));
}

#[test]
fn vllm_choices_null_usage_chunk() {
    let u = sse(include_str!("../fixtures/vllm_chat_stream.sse"));
    assert_eq!(u, Some(Usage { input: 12, output: 2, ..Usage::default() }));
}

#[test]
fn openai_responses_completed_event() {
    let u = sse(include_str!("../fixtures/openai_responses_stream.sse"));
    assert_eq!(u, Some(Usage { input: 36, output: 87, cached_input: 0, cache_write: 0, reasoning: 64 }));
}

#[test]
fn openai_embeddings() {
    let u = json(include_str!("../fixtures/openai_embeddings.json"));
    assert_eq!(u, Some(Usage { input: 8, ..Usage::default() }));
}

#[test]
fn anthropic_stream_takes_the_last_running_total() {
    // message_start: 25 fresh + 100 cache writes + 2000 cache reads;
    // message_delta output_tokens 7 then 15: the total is 15, not 22.
    let u = sse(ANTHROPIC_STREAM);
    assert_eq!(u, Some(Usage { input: 2125, output: 15, cached_input: 2000, cache_write: 100, reasoning: 0 }));
    assert_eq!(u.map(|u| u.fresh_input()), Some(25));
}

#[test]
fn anthropic_json() {
    let u = json(include_str!("../fixtures/anthropic.json"));
    assert_eq!(u, Some(Usage { input: 60, output: 4, cached_input: 50, cache_write: 0, reasoning: 0 }));
}

#[test]
fn gemini_stream_takes_the_last_frame() {
    let u = sse(GEMINI_STREAM);
    assert_eq!(u, Some(Usage { input: 9, output: 25, cached_input: 4, cache_write: 0, reasoning: 20 }));
}

#[test]
fn prefilter_skips_null_usage() {
    assert!(!may_carry_usage(br#"{"choices":[],"usage":null}"#));
    assert!(!may_carry_usage(br#"{"text":"usage","x":"\"usage\" is"}"#));
    assert!(may_carry_usage(br#"{"usage" : {"prompt_tokens":1}}"#));
    assert!(may_carry_usage(br#"{"usageMetadata":{"promptTokenCount":1}}"#));
    assert!(may_carry_usage(br#"{"message":{"usage":null},"usage":{"output_tokens":2}}"#));
}

#[test]
fn no_usage_is_none() {
    assert_eq!(sse("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"), None);
    assert_eq!(json("{\"usage\":null}"), None);
    assert_eq!(json("not json {\"usage\":{"), None);
    assert_eq!(tap("text/plain", b"usage", &[]).usage, None);
}

#[test]
fn same_usage_at_every_split_and_with_crlf() {
    for (ct, body) in [
        ("text/event-stream", OPENAI_STREAM.to_string()),
        ("text/event-stream", ANTHROPIC_STREAM.to_string()),
        ("text/event-stream", GEMINI_STREAM.to_string()),
        ("text/event-stream", ANTHROPIC_STREAM.replace('\n', "\r\n")),
        ("text/event-stream", GEMINI_STREAM.replace('\n', "\r\n")),
        ("application/json", include_str!("../fixtures/anthropic.json").to_string()),
    ] {
        let whole = tap(ct, body.as_bytes(), &[]);
        assert!(whole.usage.is_some());
        for cut in 0..=body.len() {
            assert_eq!(tap(ct, body.as_bytes(), &[cut]), whole, "split at {cut}");
        }
    }
    // LF and CRLF transcripts agree.
    assert_eq!(
        tap("text/event-stream", OPENAI_STREAM.replace('\n', "\r\n").as_bytes(), &[]),
        tap("text/event-stream", OPENAI_STREAM.as_bytes(), &[])
    );
}

#[test]
fn numbers_near_the_limit_saturate() {
    let mut t = UsageTracker::new();
    let max = u64::MAX;
    t.observe_json(
        format!(r#"{{"type":"message_start","message":{{"usage":{{"input_tokens":{max},"cache_read_input_tokens":{max},"cache_creation_input_tokens":5,"output_tokens":1}}}}}}"#)
            .as_bytes(),
    );
    let u = t.usage().expect("usage");
    assert_eq!((u.input, u.cached_input, u.fresh_input()), (max, max, 0));
    let mut g = UsageTracker::new();
    g.observe_json(
        format!(r#"{{"usageMetadata":{{"candidatesTokenCount":{max},"thoughtsTokenCount":9}}}}"#).as_bytes(),
    );
    assert_eq!(g.usage().map(|u| u.output), Some(max));
}

fn io(input: u64, output: u64) -> Option<Usage> {
    Some(Usage { input, output, ..Usage::default() })
}

#[test]
fn only_top_level_usage_counts() {
    // The model's own text may quote a usage object: it is a string there.
    let quoted = r#"{"choices":[{"message":{"content":"{\"usage\":{\"prompt_tokens\":999}}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    assert_eq!(json(quoted), io(3, 4));
    // A nested object named usage is not the response's usage.
    assert_eq!(json(r#"{"choices":[{"usage":{"prompt_tokens":9,"completion_tokens":9}}]}"#), None);
    // Keys inside usage are compared decoded; a `usage` key spelled with
    // escapes passes no prefilter (no provider writes one), so the request
    // is estimated instead (never zero).
    assert_eq!(json(r#"{"usage":{"prompt_\u0074okens":5,"completion_tokens":6}}"#), io(5, 6));
    assert_eq!(json(r#"{"us\u0061ge":{"prompt_tokens":5,"completion_tokens":6}}"#), None);
}

#[test]
fn a_key_named_twice_counts_as_clients_read_it() {
    // JSON parsers in the SDKs keep the last duplicate: charge what they show.
    assert_eq!(
        json(
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":7,"completion_tokens":8}}"#
        ),
        io(7, 8)
    );
    assert_eq!(json(r#"{"usage":{"prompt_tokens":1,"prompt_tokens":2,"completion_tokens":3}}"#), io(2, 3));
    // A later null does not erase an earlier object: there is none to read.
    assert_eq!(json(r#"{"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":null}"#), None);
}

#[test]
fn truncated_or_broken_documents_carry_no_usage() {
    let whole = r#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4},"model":"m"}"#;
    assert_eq!(json(whole), io(3, 4));
    for cut in 1..whole.len() {
        assert_eq!(json(&whole[..cut]), None, "cut at {cut}");
    }
    assert_eq!(json(r#"{"usage":{"prompt_tokens":3,"completion_tokens":}}"#), None);
}

#[test]
fn only_whole_counts_are_counts() {
    for bad in ["1.5", "-1", "01", "1e3", "\"7\"", "true", "18446744073709551616"] {
        let body = format!(r#"{{"usage":{{"prompt_tokens":{bad},"completion_tokens":2}}}}"#);
        assert_eq!(json(&body), io(0, 2), "{bad}");
    }
    assert_eq!(json(r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":0}}"#), io(u64::MAX, 0));
}

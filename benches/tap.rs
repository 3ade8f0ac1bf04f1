//! Tap benchmarks: the SSE splitter plus usage extraction over realistic
//! transcripts (GB/s), and the cost of parsing one usage event.
//!
//! Decision they inform: whether observing every streamed byte is cheap
//! enough to leave on (the bar: throughput with the tap ≥ 0.97× without).
//! Baseline: a memchr pass over the same bytes (the least any line-based
//! observer must do).

use std::hint::black_box;

use aigw::tap::{Tap, usage::UsageTracker};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const OPENAI_EVENT: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":" fox"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
const OPENAI_USAGE: &str = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":1000,"total_tokens":2200,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":0}}}"#;
const ANTHROPIC_EVENT: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" fox\"}}";

fn openai_transcript(events: usize) -> Vec<u8> {
    let mut out = String::new();
    for _ in 0..events {
        out.push_str(OPENAI_EVENT);
        out.push_str("\n\n");
    }
    out.push_str(OPENAI_USAGE);
    out.push_str("\n\ndata: [DONE]\n\n");
    out.into_bytes()
}

fn anthropic_transcript(events: usize) -> Vec<u8> {
    let mut out = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":2000,\"cache_creation_input_tokens\":0,\"output_tokens\":1}}}\n\n",
    );
    for _ in 0..events {
        out.push_str(ANTHROPIC_EVENT);
        out.push_str("\n\n");
    }
    out.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1000}}\n\n");
    out.into_bytes()
}

/// Feeds the transcript in reads of `read` bytes, as a relay would.
fn run_tap(body: &[u8], read: usize) -> Option<u64> {
    let mut tap = Tap::for_content_type(Some(b"text/event-stream"));
    for piece in body.chunks(read) {
        tap.observe(piece);
    }
    tap.finish().usage.map(|u| u.output)
}

fn tap_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("tap");
    for (name, body) in
        [("openai_1000_events", openai_transcript(1000)), ("anthropic_1000_events", anthropic_transcript(1000))]
    {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("{name}/reads_of_one_event"), |b| b.iter(|| run_tap(black_box(&body), 240)));
        g.bench_function(format!("{name}/reads_of_16k"), |b| b.iter(|| run_tap(black_box(&body), 16 * 1024)));
        g.bench_function(format!("{name}/memchr_baseline"), |b| {
            b.iter(|| memchr::memchr_iter(b'\n', black_box(&body)).count())
        });
    }
    g.finish();
}

fn usage_extraction(c: &mut Criterion) {
    let json = OPENAI_USAGE.trim_start_matches("data: ").as_bytes();
    c.bench_function("usage/parse_one_usage_event", |b| {
        b.iter(|| {
            let mut t = UsageTracker::new();
            t.observe_json(black_box(json));
            t.usage()
        })
    });
    // A whole non-streaming answer: the usage is found by walking the body,
    // the answer itself (here ~1 KiB of text) is skipped, not parsed.
    let answer = "The quick brown fox jumps over the lazy dog. ".repeat(24);
    let body = format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{answer}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":8,"completion_tokens":16,"total_tokens":24,"prompt_tokens_details":{{"cached_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0}}}},"system_fingerprint":null}}"#
    );
    c.bench_function("usage/whole_chat_completion_body", |b| {
        b.iter(|| {
            let mut t = UsageTracker::new();
            t.observe_json(black_box(body.as_bytes()));
            t.usage()
        })
    });
    let plain = OPENAI_EVENT.trim_start_matches("data: ").as_bytes();
    c.bench_function("usage/skip_one_content_event", |b| {
        b.iter(|| {
            let mut t = UsageTracker::new();
            t.observe_json(black_box(plain));
            t.usage()
        })
    });
}

/// The unified endpoint's stream translation (Anthropic events → OpenAI
/// chunks), per event: it runs on every event of a translated stream, on
/// top of the tap.
fn translation(c: &mut Criterion) {
    use aigw::providers::{Translation, translate::StreamTranslator};
    let body = anthropic_transcript(1000);
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("anthropic_1000_events_to_openai_chunks", |b| {
        b.iter(|| {
            let mut t =
                StreamTranslator::new(Translation::Anthropic, "claude", true, false).unwrap_or_else(|| unreachable!());
            let mut out = Vec::with_capacity(256 * 1024);
            for piece in black_box(&body).chunks(240) {
                t.feed(piece, &mut out);
            }
            t.finish(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, tap_throughput, usage_extraction, translation);
criterion_main!(benches);

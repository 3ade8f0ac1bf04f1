//! Codec benchmarks: request-head parsing, chunked decoding, and the JSON
//! member walk that reads a request body's facts and an answer's usage.
//!
//! Decision they inform: whether our strict framing checks (a second pass
//! over the headers after httparse) and the byte-at-a-time chunk framing
//! cost anything next to the parse itself, and what the walk costs per
//! byte next to a full parse. Each has a naive baseline: httparse alone, a
//! memcpy of the same bytes, serde_json's parse.

use std::hint::black_box;

use aigw::http::{
    chunked::ChunkedDecoder,
    request::{self, HeadLimits},
};
use aigw::{providers::body, tap::usage::UsageTracker};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 64 * 1024, max_headers: 128 };

/// What the OpenAI Python SDK sends for a chat completion.
const SDK_HEAD: &[u8] = b"POST /openai/v1/chat/completions HTTP/1.1\r\n\
Host: localhost:8080\r\n\
Accept-Encoding: gzip, deflate\r\n\
Connection: keep-alive\r\n\
Accept: application/json\r\n\
Content-Type: application/json\r\n\
User-Agent: OpenAI/Python 1.54.4\r\n\
X-Stainless-Lang: python\r\n\
X-Stainless-Package-Version: 1.54.4\r\n\
X-Stainless-OS: Linux\r\n\
X-Stainless-Arch: x64\r\n\
X-Stainless-Runtime: CPython\r\n\
X-Stainless-Runtime-Version: 3.11.7\r\n\
Authorization: Bearer sk-aigw-0123456789abcdef0123456789abcdef\r\n\
X-Stainless-Async: false\r\n\
x-stainless-retry-count: 0\r\n\
Content-Length: 98\r\n\r\n";

fn head_parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_head");
    g.throughput(Throughput::Bytes(SDK_HEAD.len() as u64));
    g.bench_function("aigw_parse", |b| b.iter(|| request::parse(black_box(SDK_HEAD), LIMITS)));
    g.bench_function("httparse_only", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(black_box(SDK_HEAD)).map(|s| s.is_complete())
        })
    });
    g.finish();
}

/// An SSE transcript as a vLLM/OpenAI upstream frames it: one chunk per
/// event, ~230 bytes each.
fn sse_chunked(events: usize) -> Vec<u8> {
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":" fox"},"logprobs":null,"finish_reason":null}]}"#;
    let mut out = Vec::new();
    for _ in 0..events {
        out.extend_from_slice(format!("{:x}\r\n", event.len() + 2).as_bytes());
        out.extend_from_slice(event);
        out.extend_from_slice(b"\n\n\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn chunked_decoding(c: &mut Criterion) {
    let body = sse_chunked(1000);
    let mut g = c.benchmark_group("chunked_decode");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("aigw_decode_ranges", |b| {
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut data = 0usize;
            let n = dec.decode_all(black_box(&body), |r| data += r.len());
            (n, data)
        })
    });
    g.bench_function("aigw_decode_copy", |b| {
        let mut out = Vec::with_capacity(body.len());
        b.iter(|| {
            out.clear();
            let mut dec = ChunkedDecoder::new();
            let _ = dec.decode_all(black_box(&body), |r| out.extend_from_slice(&body[r]));
            out.len()
        })
    });
    g.bench_function("memcpy_baseline", |b| {
        let mut out = Vec::with_capacity(body.len());
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&body));
            out.len()
        })
    });
    g.finish();
}

/// A chat request as agents send it: a system prompt and `turns` user /
/// assistant exchanges, with a tool schema.
fn chat_body(turns: usize) -> Vec<u8> {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a careful assistant. Answer in \"plain\" English."}),
    ];
    for i in 0..turns {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {i}: what is the capital of France, and why?")}));
        messages.push(
            serde_json::json!({"role": "assistant", "content": format!("Answer {i}: Paris, since the tenth century.")}),
        );
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "temperature": 0.2,
        "stream": false,
    }))
    .expect("serialisable")
}

/// The answer `aigw mock` gives a chat completion.
const ANSWER: &[u8] = br#"{"id":"chatcmpl-mock-000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a mock answer from the gateway's built-in upstream."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":null}"#;

fn json_walk(c: &mut Criterion) {
    let mut g = c.benchmark_group("json_walk");
    for turns in [1, 40] {
        let b = chat_body(turns);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("scan_request_{}_bytes", b.len()), |bench| bench.iter(|| body::scan(black_box(&b))));
        g.bench_function(format!("serde_value_{}_bytes", b.len()), |bench| {
            bench.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&b)).is_ok())
        });
    }
    g.throughput(Throughput::Bytes(ANSWER.len() as u64));
    g.bench_function("usage_of_answer", |bench| {
        bench.iter(|| {
            let mut t = UsageTracker::new();
            t.observe_json(black_box(ANSWER));
            t.usage()
        })
    });
    g.finish();
}

criterion_group!(benches, head_parsing, chunked_decoding, json_walk);
criterion_main!(benches);

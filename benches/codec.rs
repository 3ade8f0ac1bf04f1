//! Codec benchmarks: request-head parsing and chunked decoding.
//!
//! Decision they inform: whether our strict framing checks (a second pass
//! over the headers after httparse) and the byte-at-a-time chunk framing
//! cost anything next to the parse itself. Each has a naive baseline:
//! httparse alone, and a memcpy of the same bytes.

use std::hint::black_box;

use aigw::http::{
    chunked::ChunkedDecoder,
    request::{self, HeadLimits},
};
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

criterion_group!(benches, head_parsing, chunked_decoding);
criterion_main!(benches);

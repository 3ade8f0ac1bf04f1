//! Guardrail benchmarks: how fast the built-in detector set scans text
//! (MiB/s on prose, on digit-heavy text, and with findings to validate;
//! on prose with the prompt-injection rules as well),
//! and what the live-stream redactor costs per delta.
//!
//! Decision they inform: whether a pii policy on both directions is cheap
//! enough to leave on (the bar: ≥ 500 MiB/s on prose for the one-shot scan).
//! Baseline: a memchr pass over the same bytes.

use std::{hint::black_box, sync::Arc};

use aigw::{
    config::{Action, Policy},
    guardrails::{
        Guardrails,
        detect::{Builtin, Detector},
        events::StreamGuard,
        stream::{LiveText, Mode},
    },
    providers::StreamFormat,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PROSE: &str = "The quick brown fox jumps over the lazy dog while the committee reviews \
the quarterly report, and nobody mentions the weather, the traffic or the coffee machine. ";
const DIGITS: &str = "Order 20240117-0042 shipped 3 items at 19.99, 4.50 and 120.00 on 2024-01-17 \
10:30; build 1.2.3.4 of v7, 98% done, ticket 4155552671, batch 000123456789. ";
const FINDINGS: &str = "Write to jane.doe@example.com or call +1 415 555 2671; card 4111 1111 1111 1111, \
IBAN DE89 3704 0044 0532 0130 00, key sk-proj-abcdefghijklmnopqrstuvwxyz012345. ";

fn detector() -> Detector {
    Detector::new(&Builtin::ALL, &[], &[]).unwrap_or_else(|e| unreachable!("{e}"))
}

fn text(unit: &str, bytes: usize) -> String {
    unit.repeat(bytes / unit.len() + 1)
}

fn scan(c: &mut Criterion) {
    let det = detector();
    let mut g = c.benchmark_group("scan");
    for (name, unit) in [("prose", PROSE), ("digits", DIGITS), ("findings", FINDINGS)] {
        let t = text(unit, 64 * 1024);
        g.throughput(Throughput::Bytes(t.len() as u64));
        let mut out = Vec::new();
        g.bench_function(name, |b| {
            b.iter(|| {
                det.find(black_box(&t), &mut out);
                out.len()
            })
        });
    }
    // The request side with the prompt-injection rules added: normalising
    // a copy of the text is the added cost.
    let with_injection = detector().with_injection(aigw::guardrails::injection::DEFAULT_THRESHOLD);
    let t = text(PROSE, 64 * 1024);
    g.throughput(Throughput::Bytes(t.len() as u64));
    let mut out = Vec::new();
    g.bench_function("prose_with_injection", |b| {
        b.iter(|| {
            with_injection.find_request(black_box(&t), &mut out);
            out.len()
        })
    });
    g.bench_function("memchr_baseline", |b| b.iter(|| memchr::memchr_iter(b'@', black_box(t.as_bytes())).count()));
    g.finish();
}

/// A stream's text in deltas of one word, through one redact policy.
fn live(c: &mut Criterion) {
    let det = detector();
    let mut g = c.benchmark_group("live");
    for (name, unit) in [("prose", PROSE), ("findings", FINDINGS)] {
        let t = text(unit, 16 * 1024);
        let words: Vec<&str> = t.split_inclusive(' ').collect();
        g.throughput(Throughput::Bytes(t.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut live = LiveText::new(Mode::Redact, det.kinds.len());
                let mut out = String::with_capacity(t.len());
                for w in &words {
                    live.push(&det, w, &mut out);
                }
                live.finish(&det, &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

/// The seven built-ins in one policy that redacts answers.
fn pii(request: Action) -> Policy {
    Policy {
        name: "pii".into(),
        detectors: Builtin::ALL.to_vec(),
        patterns: Vec::new(),
        words: Vec::new(),
        injection: None,
        moderation: None,
        request,
        response: Action::Redact,
    }
}

/// Whole OpenAI streams (one word per chunk) through the event guard.
fn events(c: &mut Criterion) {
    let g = Arc::new(Guardrails::new(&[pii(Action::Off)], &[]).unwrap_or_else(|e| unreachable!("{e}")));
    let t = text(PROSE, 4 * 1024);
    let mut stream = String::new();
    for w in t.split_inclusive(' ') {
        let delta = serde_json::json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":w},"logprobs":null,"finish_reason":null}]});
        stream.push_str(&format!("data: {delta}\n\n"));
    }
    stream.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let mut grp = c.benchmark_group("events");
    grp.throughput(Throughput::Bytes(stream.len() as u64));
    grp.bench_function("openai_stream_prose", |b| {
        b.iter(|| {
            let mut guard = StreamGuard::new(g.clone(), vec![0], StreamFormat::OpenAiChat);
            let mut out = Vec::with_capacity(stream.len() + 1024);
            guard.feed(black_box(stream.as_bytes()), &mut out);
            guard.finish(&mut out);
            out.len()
        })
    });
    grp.finish();
}

/// One small request and its JSON answer, as the loadtest sends them: what
/// a pii policy on both directions costs per request.
fn per_request(c: &mut Criterion) {
    let g = Guardrails::new(&[pii(Action::Redact)], &["pii".into()]).unwrap_or_else(|e| unreachable!("{e}"));
    let sel = g.select([], &[]).unwrap_or_default();
    let request = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}]}"#;
    let answer = br#"{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there friend how are you doing today","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":14,"completion_tokens":8,"total_tokens":22},"system_fingerprint":null}"#;
    let mut grp = c.benchmark_group("per_request");
    grp.bench_function("check_request_small", |b| {
        b.iter(|| {
            matches!(g.check_request(black_box(&sel), black_box(request)), aigw::guardrails::Verdict::Pass { .. })
        })
    });
    grp.bench_function("check_answer_small", |b| {
        b.iter(|| {
            matches!(
                g.check_answer(black_box(&sel), StreamFormat::OpenAiChat, black_box(answer), None),
                aigw::guardrails::answer::AnswerVerdict::Pass { .. }
            )
        })
    });
    grp.finish();
}

criterion_group!(benches, scan, live, events, per_request);
criterion_main!(benches);

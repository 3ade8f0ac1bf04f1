//! Routes, retries, fallback and the unified endpoint, end to end.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{io::Write, time::Duration};

use common::*;

fn unified(model: &str, extra: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello there"}}]{extra}}}"#)
}

/// An upstream that answers every request with `status` and a JSON error.
fn failing(status: u16) -> RawUpstream {
    RawUpstream::spawn(move |mut s| {
        while read_request(&mut s).is_some() {
            let body = r#"{"error":{"message":"down","type":"server_error"}}"#;
            let resp = format!(
                "HTTP/1.1 {status} Err\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn unified_endpoint_to_an_openai_kind_provider() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", &unified("mock/gpt-4o-mini", "")));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["model"], "gpt-4o-mini", "the provider got the model without its prefix");
    assert_eq!((r.header("x-aigw-provider"), r.header("x-aigw-attempts")), (Some("mock"), Some("1")));
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", &unified("nobody/x", "")));
    assert_eq!((r.status, r.error_code()), (404, "model_not_found".to_string()));
    assert_eq!(r.json()["error"]["param"], "model");
    let r = roundtrip(gw.addr, &post("/v1/embeddings", r#"{"model":"mock/text-embedding-3-small","input":"hi"}"#));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "list");
}

#[test]
fn fallback_on_500_timeout_and_refused_connections() {
    let m = mock();
    let bad = failing(500);
    let dead = dead_addr();
    let toml = format!(
        "{}{}{}first_byte_timeout = \"200ms\"\n{}[routes.chat]\ntargets = [{{ provider = \"bad\", model = \"a\" }}, {{ provider = \"dead\", model = \"b\" }}, {{ provider = \"slow\", model = \"c\" }}, {{ provider = \"mock\", model = \"gpt-4o-mini\" }}]\nmax_attempts = 4\n",
        provider("bad", "openai", bad.addr),
        provider("dead", "openai", dead),
        provider("slow", "mock", m.addr),
        provider("mock", "mock", m.addr),
    );
    let gw = Gateway::start("", &toml);
    let body = unified("chat", "");
    let raw = post_with("/v1/chat/completions", &body, "x-mock-ttft-ms: 1000\r\n");
    // The slow target waits 1 s (over its 200 ms first-byte timeout); the
    // others fail at once; the last one answers.
    let r = roundtrip(gw.addr, &raw);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!((r.header("x-aigw-provider"), r.header("x-aigw-attempts")), (Some("mock"), Some("4")));
    // The client saw one clean response; the attempts are all counted.
    let mut text = String::new();
    assert!(eventually(Duration::from_secs(5), || {
        text = metrics_text(gw.admin);
        metric(&text, "aigw_upstream_attempts_total{provider=\"bad\",outcome=\"failed\"}") == 1.0
    }));
    assert_eq!(metric(&text, "aigw_upstream_attempts_total{provider=\"dead\",outcome=\"failed\"}"), 1.0);
    assert_eq!(metric(&text, "aigw_upstream_attempts_total{provider=\"slow\",outcome=\"failed\"}"), 1.0);
    // With one attempt allowed, the first target's 500 is what comes back.
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", &body, "x-aigw-max-attempts: 1\r\n"));
    assert_eq!((r.status, r.header("x-aigw-provider")), (500, Some("bad")));
    // The route is also a pass-through prefix, with the same fallback.
    let r = roundtrip(
        gw.addr,
        &post_with("/chat/v1/chat/completions", &unified("whatever", ""), "x-mock-ttft-ms: 1000\r\n"),
    );
    assert_eq!((r.status, r.header("x-aigw-provider")), (200, Some("mock")));
    // Repeated failures eject a target: /admin/stats shows it.
    for _ in 0..5 {
        roundtrip(gw.addr, &post("/v1/chat/completions", &body));
    }
    let stats = roundtrip(gw.admin, &get("/admin/stats")).json();
    let bad_state =
        stats["targets"].as_array().unwrap().iter().find(|t| t["provider"] == "bad").unwrap()["state"].clone();
    assert_eq!(bad_state, "open", "{stats}");
    assert!(bad.connections.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[test]
fn weighted_split_within_tolerance() {
    let (a, b) = (mock(), mock());
    let toml = format!(
        "{}{}[routes.split]\nstrategy = \"weighted\"\ntargets = [{{ provider = \"a\", weight = 3 }}, {{ provider = \"b\", weight = 1 }}]\n",
        provider("a", "mock", a.addr),
        provider("b", "mock", b.addr),
    );
    let gw = Gateway::start("", &toml);
    let mut c = Client::connect(gw.addr);
    for _ in 0..1000 {
        c.send(&post("/v1/chat/completions", &unified("split", "")));
        assert_eq!(c.read_response().status, 200);
    }
    let (na, nb) = (a.requests(), b.requests());
    assert_eq!(na + nb, 1000);
    // 750 expected; 5 standard deviations is ±69.
    assert!((680..=820).contains(&na), "a {na}, b {nb}");
}

#[test]
fn prefix_affinity_is_sticky_and_even() {
    let mocks: Vec<_> = (0..4).map(|_| mock()).collect();
    let mut toml = String::new();
    for (i, m) in mocks.iter().enumerate() {
        toml.push_str(&provider(&format!("r{i}"), "mock", m.addr));
    }
    toml.push_str("[routes.llama]\nstrategy = \"prefix-affinity\"\ntargets = [{ provider = \"r0\" }, { provider = \"r1\" }, { provider = \"r2\" }, { provider = \"r3\" }]\n");
    let gw = Gateway::start("", &toml);
    let mut c = Client::connect(gw.addr);
    let ask = |c: &mut Client, prompt: &str| {
        let body = format!(
            r#"{{"model":"llama","messages":[{{"role":"system","content":"{prompt}"}},{{"role":"user","content":"q"}}]}}"#
        );
        c.send(&post("/v1/chat/completions", &body));
        let r = c.read_response();
        assert_eq!(r.status, 200);
        r.header("x-aigw-provider").unwrap().to_string()
    };
    let first = ask(&mut c, "You are a long shared system prompt");
    for _ in 0..20 {
        assert_eq!(ask(&mut c, "You are a long shared system prompt"), first, "same prefix, same replica");
    }
    for i in 0..400 {
        ask(&mut c, &format!("distinct prefix number {i}"));
    }
    let counts: Vec<u64> = mocks.iter().map(|m| m.requests()).collect();
    let total: u64 = counts.iter().sum();
    assert_eq!(total, 421);
    assert!(counts.iter().all(|&n| (60..=150).contains(&n)), "uneven: {counts:?}");
}

#[test]
fn anthropic_target_through_the_unified_endpoint() {
    let m = mock();
    let toml = format!(
        "{}models = [\"claude-y\"]\n[routes.claude]\ntargets = [{{ provider = \"anth\", model = \"claude-x\" }}]\n",
        provider("anth", "anthropic", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", &unified("claude", "")));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The quick brown fox jumps over the lazy dog.The quick brown fox jumps over"
    );
    assert_eq!(v["usage"]["completion_tokens"], 16);
    let r = roundtrip(
        gw.addr,
        &post(
            "/v1/chat/completions",
            &unified("anth/claude-x", r#","stream":true,"stream_options":{"include_usage":true}"#),
        ),
    );
    assert_eq!((r.status, r.framing, r.header("content-type")), (200, "chunked", Some("text/event-stream")));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<serde_json::Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "The quick brown fox jumps over the lazy dog.The quick brown fox jumps over");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 16);
    // Unsupported fields are refused, naming the field.
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", &unified("claude", r#","logprobs":true"#)));
    assert_eq!((r.status, r.error_code()), (400, "unsupported_parameter".to_string()));
    assert_eq!(r.json()["error"]["param"], "logprobs");
    // /v1/models lists routes and their targets.
    let models = roundtrip(gw.addr, &get("/v1/models")).json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["claude", "anth/claude-x", "anth/claude-y"]);
    // The log names the target that answered, with its usage.
    assert!(eventually(Duration::from_secs(5), || {
        let logs = roundtrip(gw.admin, &get("/admin/logs?limit=10&provider=anth")).json();
        logs["data"].as_array().unwrap().iter().any(|r| r["output_tokens"] == 16 && r["model"] == "claude-x")
    }));
}

/// Prefix affinity's effect, measured with the mock's prefix cache: 40
/// conversations of 8 turns (each turn resends the history) over 4
/// replicas, by prefix-affinity and by an even random split.
#[test]
fn prefix_affinity_raises_prefix_cache_hits() {
    let mut toml = String::new();
    let mut replicas = Vec::new();
    for set in ["aff", "rnd"] {
        for i in 0..4 {
            let m = mock();
            toml.push_str(&provider(&format!("{set}{i}"), "mock", m.addr));
            replicas.push(m);
        }
    }
    toml.push_str("[routes.affinity]\nstrategy = \"prefix-affinity\"\ntargets = [{ provider = \"aff0\" }, { provider = \"aff1\" }, { provider = \"aff2\" }, { provider = \"aff3\" }]\n");
    toml.push_str("[routes.random]\nstrategy = \"weighted\"\ntargets = [{ provider = \"rnd0\" }, { provider = \"rnd1\" }, { provider = \"rnd2\" }, { provider = \"rnd3\" }]\n");
    let gw = Gateway::start("", &toml);
    let mut c = Client::connect(gw.addr);
    for route in ["affinity", "random"] {
        let mut histories: Vec<Vec<serde_json::Value>> = (0..40)
            .map(|s| {
                let system =
                    format!("Session {s}: you are a careful assistant. {}", "Follow the house style. ".repeat(60));
                vec![serde_json::json!({"role": "system", "content": system})]
            })
            .collect();
        for turn in 0..8 {
            for h in histories.iter_mut() {
                h.push(serde_json::json!({"role": "user", "content": format!("question {turn}")}));
                let body = serde_json::json!({"model": route, "messages": h}).to_string();
                c.send(&post("/v1/chat/completions", &body));
                let r = c.read_response();
                assert_eq!(r.status, 200);
                let answer = r.json()["choices"][0]["message"]["content"].clone();
                h.push(serde_json::json!({"role": "assistant", "content": answer}));
            }
        }
    }
    let mut text = String::new();
    let ratio = |text: &str, set: &str| {
        let sum = |dir: &str| -> f64 {
            (0..4)
                .map(|i| {
                    metric(
                        text,
                        &format!(
                            "aigw_tokens_total{{provider=\"{set}{i}\",model=\"{}\",direction=\"{dir}\"}}",
                            if set == "aff" { "affinity" } else { "random" }
                        ),
                    )
                })
                .sum()
        };
        let (fresh, cached) = (sum("input"), sum("cached_input"));
        cached / (fresh + cached)
    };
    assert!(eventually(Duration::from_secs(5), || {
        text = metrics_text(gw.admin);
        metric(&text, "aigw_requests_total{") == 640.0
    }));
    let (aff, rnd) = (ratio(&text, "aff"), ratio(&text, "rnd"));
    eprintln!(
        "prompt tokens served from the replicas' prefix caches: prefix-affinity {:.1}%, random {:.1}%",
        aff * 100.0,
        rnd * 100.0
    );
    assert!(aff > 0.8, "affinity {aff}");
    assert!(aff > rnd + 0.3, "affinity {aff} vs random {rnd}");
}

#[test]
fn retry_after_is_honoured_and_per_request_overrides() {
    // 429 with Retry-After: 1 on the first request, then 200.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let m = mock();
    let mock_addr = m.addr;
    let flaky = RawUpstream::spawn(move |mut s| {
        while read_request(&mut s).is_some() {
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resp = if n == 0 {
                let body = r#"{"error":{"message":"slow down","type":"rate_limit"}}"#;
                format!(
                    "HTTP/1.1 429 Too Many\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                let body = r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    });
    let toml = format!(
        "{}{}[routes.one]\ntargets = [{{ provider = \"flaky\" }}]\n[routes.slowroute]\ntargets = [{{ provider = \"mock\" }}]\n",
        provider("flaky", "openai", flaky.addr),
        provider("mock", "mock", mock_addr),
    );
    let gw = Gateway::start("", &toml);
    let started = std::time::Instant::now();
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", &unified("one", "")));
    assert_eq!((r.status, r.header("x-aigw-attempts")), (200, Some("2")));
    assert!(started.elapsed() >= Duration::from_millis(1000), "waited the upstream's Retry-After");
    // x-aigw-request-timeout bounds the whole request.
    let r = roundtrip(
        gw.addr,
        &post_with(
            "/v1/chat/completions",
            &unified("slowroute", ""),
            "x-aigw-request-timeout: 200\r\nx-mock-ttft-ms: 2000\r\nx-aigw-max-attempts: 1\r\n",
        ),
    );
    assert_eq!((r.status, r.error_code()), (504, "upstream_timeout".to_string()));
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", &unified("one", ""), "x-aigw-max-attempts: 99\r\n"));
    assert_eq!((r.status, r.error_code()), (400, "invalid_header".to_string()));
}

#[test]
fn provider_errors_become_openai_errors() {
    let m = mock();
    let gw = Gateway::start("", &provider("anth", "anthropic", m.addr));
    let r =
        roundtrip(gw.addr, &post_with("/v1/chat/completions", &unified("anth/claude-x", ""), "x-mock-status: 400\r\n"));
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("x-mock-status"), "{v}");
}

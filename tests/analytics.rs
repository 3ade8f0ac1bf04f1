//! Accounting end to end: every request counted exactly once in /metrics
//! and in the request log, with the tokens the mock reported.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;

#[test]
fn totals_and_log_lines_match_what_was_sent() {
    let m = mock();
    let dir = std::env::temp_dir().join(format!("aigw-analytics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("requests.log");
    let _ = std::fs::remove_file(&log_path);
    let toml = format!("[log]\npath = \"{}\"\n{}", log_path.display(), provider("mock", "mock", m.addr));
    let gw = Gateway::start("", &toml);
    let addr = gw.addr;

    const CONNS: usize = 64;
    const PER_CONN: usize = 32;
    let threads: Vec<_> = (0..CONNS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut prompt_tokens = 0u64;
                for i in 0..PER_CONN {
                    let body = if (c + i) % 2 == 0 {
                        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"req {c} {i}"}}]}}"#)
                    } else {
                        format!(
                            r#"{{"model":"gpt-4o-mini","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"req {c} {i}"}}]}}"#
                        )
                    };
                    // The mock counts the `messages` JSON, a quarter token a byte.
                    let messages = format!(r#"[{{"role":"user","content":"req {c} {i}"}}]"#);
                    prompt_tokens += (messages.len() / 4).max(1) as u64;
                    client.send(&post("/mock/v1/chat/completions", &body));
                    assert_eq!(client.read_response().status, 200);
                }
                prompt_tokens
            })
        })
        .collect();
    let prompt_tokens: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let total = (CONNS * PER_CONN) as f64;

    let mut text = String::new();
    let settled = eventually(Duration::from_secs(10), || {
        text = String::from_utf8(roundtrip(gw.admin, &get("/metrics")).body).unwrap();
        metric(&text, "aigw_requests_total{") == total
    });
    assert!(settled, "requests_total never reached {total}:\n{text}");
    assert_eq!(metric(&text, "aigw_requests_total{provider=\"mock\",model=\"gpt-4o-mini\",status=\"200\""), total);
    assert_eq!(
        metric(&text, "aigw_tokens_total{provider=\"mock\",model=\"gpt-4o-mini\",direction=\"output\"}"),
        total * 16.0
    );
    assert_eq!(
        metric(&text, "aigw_tokens_total{provider=\"mock\",model=\"gpt-4o-mini\",direction=\"input\"}"),
        prompt_tokens as f64
    );
    assert_eq!(metric(&text, "aigw_request_duration_seconds_count{provider=\"mock\""), total);
    // gpt-4o-mini from the built-in price table: $0.15 / 1M in, $0.60 / 1M out.
    let cost = metric(&text, "aigw_cost_usd_total{provider=\"mock\",model=\"gpt-4o-mini\"}");
    let expected = (prompt_tokens as f64 * 0.15 + total * 16.0 * 0.60) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "cost {cost} vs {expected}");
    assert_eq!(metric(&text, "aigw_log_records_dropped_total"), 0.0);
    assert_eq!(m.requests(), CONNS as u64 * PER_CONN as u64);

    // One log line per request, each a JSON record with its usage.
    let lines = || std::fs::read_to_string(&log_path).map(|t| t.lines().count()).unwrap_or(0);
    assert!(eventually(Duration::from_secs(10), || lines() == CONNS * PER_CONN), "log has {} lines", lines());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let mut streams = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["output_tokens"], 16, "{line}");
        assert_eq!(v["provider"], "mock");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["request_id"].as_str().map(str::len), Some(24));
        streams += usize::from(v["stream"] == true);
    }
    assert_eq!(streams, CONNS * PER_CONN / 2);

    let stats = roundtrip(gw.admin, &get("/admin/stats")).json();
    assert_eq!(stats["totals"]["requests"], CONNS * PER_CONN);
    assert_eq!(stats["since_start"][0]["output_tokens"], CONNS * PER_CONN * 16);
    assert!(stats["last_1m"][0]["duration_ms"]["p99"].as_f64().is_some());
}

#[test]
fn errors_and_metadata_are_recorded_and_filterable() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let mut c = Client::connect(gw.addr);
    c.send(&post_with(
        "/mock/v1/chat/completions",
        CHAT,
        "x-aigw-metadata: {\"team\":\"search\",\"n\":3}\r\nAuthorization: Bearer sk-secret-client\r\n",
    ));
    assert_eq!(c.read_response().status, 200);
    c.send(&post_with("/mock/v1/chat/completions", CHAT, "x-aigw-metadata: [1,2]\r\n"));
    let r = c.read_response();
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_header"));
    c.send(&get("/nope/v1/models"));
    assert_eq!(c.read_response().status, 404);
    c.send(b"GET /mock/v1/models HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(c.read_response().status, 400);

    assert!(eventually(Duration::from_secs(5), || {
        roundtrip(gw.admin, &get("/admin/logs")).json()["data"].as_array().map(Vec::len) == Some(4)
    }));
    let logs = roundtrip(gw.admin, &get("/admin/logs?status=200")).json();
    let data = logs["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["metadata"]["team"], "search");
    assert_eq!(data[0]["input_tokens"], r#"[{"role":"user","content":"hi"}]"#.len() as u64 / 4);
    let all = roundtrip(gw.admin, &get("/admin/logs?limit=10")).body;
    assert!(!String::from_utf8_lossy(&all).contains("sk-secret-client"), "a credential reached the log");
    let bad = roundtrip(gw.admin, &get("/admin/logs?status=400")).json();
    let codes: Vec<_> =
        bad["data"].as_array().unwrap().iter().map(|r| r["error"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, ["bad_request", "invalid_header"]);
    let by_provider = roundtrip(gw.admin, &get("/admin/logs?provider=mock")).json();
    assert_eq!(by_provider["data"].as_array().unwrap().len(), 2);

    let metrics = String::from_utf8(roundtrip(gw.admin, &get("/metrics")).body).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let t = String::from_utf8(roundtrip(gw.admin, &get("/metrics")).body).unwrap();
            metric(&t, "aigw_requests_total{") == 4.0
        }),
        "{metrics}"
    );
}

#[test]
fn injected_include_usage_is_invisible_to_the_client() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"count my tokens"}]}"#;
    let direct = roundtrip(m.addr, &post("/v1/chat/completions", body));
    assert!(!String::from_utf8_lossy(&direct.body).contains("usage"));
    let proxied = roundtrip(gw.addr, &post("/mock/v1/chat/completions", body));
    assert_eq!(String::from_utf8_lossy(&proxied.body), String::from_utf8_lossy(&direct.body));

    // ...yet the gateway counted exactly what the mock reported.
    let mut log = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            log = roundtrip(gw.admin, &get("/admin/logs?limit=1")).json();
            log["data"][0]["output_tokens"] == 16
        }),
        "{log}"
    );
    let messages = r#"[{"role":"user","content":"count my tokens"}]"#;
    assert_eq!(log["data"][0]["input_tokens"], messages.len() as u64 / 4);
    assert_eq!(log["data"][0]["estimated"], false);

    // A client that asked for usage gets its usage chunk, untouched.
    let asked = CHAT_STREAM;
    let direct = roundtrip(m.addr, &post("/v1/chat/completions", asked));
    let proxied = roundtrip(gw.addr, &post("/mock/v1/chat/completions", asked));
    assert_eq!(proxied.body, direct.body);
    assert!(String::from_utf8_lossy(&proxied.body).contains("\"completion_tokens\":16"));
}

#[test]
fn missing_usage_is_estimated_with_the_tokenizer() {
    aigw::tap::estimate::load_now();
    let m = mock();
    // A server that ignores include_usage: the gateway does not ask for it.
    let toml = format!("{}inject_include_usage = false\n", provider("mock", "mock", m.addr));
    let gw = Gateway::start("", &toml);
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", body));
    assert!(r.body.ends_with(b"data: [DONE]\n\n"));
    let mut log = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(5), || {
            log = roundtrip(gw.admin, &get("/admin/logs?limit=1")).json();
            log["data"][0]["estimated"] == true
        }),
        "{log}"
    );
    // The mock's 16 words are one o200k token each.
    assert_eq!(log["data"][0]["output_tokens"], 16);

    // A stream cut short is recorded with the tokens seen so far, not zero.
    let mut c = Client::connect(gw.addr);
    c.send(&post_with("/mock/v1/chat/completions", body, "x-mock-tokens: 1000\r\nx-mock-delay-ms: 10\r\n"));
    c.read_until(b"\"content\":\" jumps\"");
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || {
            log = roundtrip(gw.admin, &get("/admin/logs?limit=1")).json();
            log["data"][0]["error"] == "client_disconnected"
        }),
        "{log}"
    );
    let seen = log["data"][0]["output_tokens"].as_u64().unwrap();
    assert!((5..1000).contains(&seen), "{log}");
    assert_eq!(log["data"][0]["estimated"], true);
    // Input is counted from the request, never zero.
    assert!(log["data"][0]["input_tokens"].as_u64().unwrap() >= 1, "{log}");

    // A request with no body and no model (listing models) is no model
    // call: it is charged no tokens, estimated or not.
    assert_eq!(roundtrip(gw.addr, &get("/mock/v1/models")).status, 200);
    assert!(
        eventually(Duration::from_secs(5), || {
            log = roundtrip(gw.admin, &get("/admin/logs?limit=1")).json();
            log["data"][0]["path"] == "/mock/v1/models"
        }),
        "{log}"
    );
    // No usage at all: null tokens, as for an error answer.
    let rec = &log["data"][0];
    assert!(rec["input_tokens"].is_null() && rec["output_tokens"].is_null(), "{log}");
    assert_eq!(rec["estimated"], false, "{log}");
}

#[test]
fn bodies_are_captured_only_when_asked_and_truncated() {
    let m = mock();
    let toml = format!("[log]\ncapture_bodies = true\ncapture_max_bytes = 40\n{}", provider("mock", "mock", m.addr));
    let gw = Gateway::start("", &toml);
    let r =
        roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", CHAT, "Authorization: Bearer sk-not-logged\r\n"));
    assert_eq!(r.status, 200);
    let mut log = serde_json::Value::Null;
    assert!(eventually(Duration::from_secs(5), || {
        log = roundtrip(gw.admin, &get("/admin/logs?limit=1")).json();
        log["data"][0]["status"] == 200
    }));
    assert_eq!(log["data"][0]["request_body"], &CHAT[..40]);
    assert_eq!(log["data"][0]["response_body"], String::from_utf8_lossy(&r.body[..40]).as_ref());
    assert!(!log.to_string().contains("sk-not-logged"));

    // Off by default.
    let plain = Gateway::start("", &provider("mock", "mock", m.addr));
    roundtrip(plain.addr, &post("/mock/v1/chat/completions", CHAT));
    assert!(eventually(Duration::from_secs(5), || {
        let l = roundtrip(plain.admin, &get("/admin/logs?limit=1")).json();
        l["data"][0]["status"] == 200
            && l["data"][0]["request_body"].is_null()
            && l["data"][0]["response_body"].is_null()
    }));
}

/// A translated answer is read whole before it is sent (`relay/whole.rs`);
/// its capture is what the client received, as a relayed one's is.
#[test]
fn translated_answers_are_captured_too() {
    let m = mock();
    let toml = format!(
        "[log]\ncapture_bodies = true\ncapture_max_bytes = 4096\n{}[routes.claude]\ntargets = [{{ provider = \"anth\", model = \"claude-x\" }}]\n",
        provider("anth", "anthropic", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", body));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["object"], "chat.completion");
    let log = logs_once(gw.admin, 1);
    let captured = log["data"][0]["response_body"].as_str().unwrap_or_else(|| panic!("{log}"));
    // OpenAI's chat completion, as the client received it.
    assert_eq!(captured.as_bytes(), &r.body[..]);
}

#[test]
fn upstream_is_asked_for_identity_encoding_so_usage_stays_readable() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let r = roundtrip(gw.addr, &post_with("/mock/echo", "{}", "Accept-Encoding: gzip, deflate\r\n"));
    let seen = r.json()["headers"].to_string().to_ascii_lowercase();
    assert!(!seen.contains("accept-encoding"), "{seen}");
    // With accounting off, the client's header goes through untouched.
    let bare = Gateway::start("analytics = false", &provider("mock", "mock", m.addr));
    let r = roundtrip(bare.addr, &post_with("/mock/echo", "{}", "Accept-Encoding: gzip, deflate\r\n"));
    assert!(r.json()["headers"].to_string().to_ascii_lowercase().contains("accept-encoding"));
}

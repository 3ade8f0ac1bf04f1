//! What a hostile client cannot do: raise the operator's limits, make the
//! gateway send a billed request twice, or leave the provider's path.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    io::{Read, Write},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

/// An upstream that answers every request with a 500.
fn failing() -> RawUpstream {
    RawUpstream::spawn(move |mut s| {
        while read_request(&mut s).is_some() {
            let body = r#"{"error":{"message":"down"}}"#;
            let resp = format!("HTTP/1.1 500 Err\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// An upstream that reads each request whole, counts it, and closes
/// without a word: it may have acted on the request.
fn silent(requests: Arc<AtomicUsize>) -> RawUpstream {
    RawUpstream::spawn(move |mut s| {
        if read_request(&mut s).is_some() {
            requests.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[test]
fn request_controls_lower_the_operators_limits_never_raise_them() {
    let bad = failing();
    let m = mock();
    let toml = format!(
        "{}{}request_timeout = \"300ms\"\n[routes.one]\ntargets = [{{ provider = \"bad\" }}]\n",
        provider("bad", "openai", bad.addr),
        provider("slow", "mock", m.addr),
    );
    let gw = Gateway::start("", &toml);
    // The route allows 2 attempts (one target + 1): asking for 5 gets 2.
    let body = r#"{"model":"one","messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", body, "x-aigw-max-attempts: 5\r\n"));
    assert_eq!((r.status, r.header("x-aigw-attempts")), (500, Some("2")));
    // Asking for fewer works.
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", body, "x-aigw-max-attempts: 1\r\n"));
    assert_eq!((r.status, r.header("x-aigw-attempts")), (500, Some("1")));
    // The provider's request_timeout (300 ms) bounds a request that asks
    // for 5 s while the upstream takes 3 s.
    let started = Instant::now();
    let r = roundtrip(
        gw.addr,
        &post_with("/slow/v1/chat/completions", CHAT, "x-aigw-request-timeout: 5000\r\nx-mock-ttft-ms: 3000\r\n"),
    );
    assert_eq!((r.status, r.error_code()), (504, "upstream_timeout".to_string()));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "held past the operator's timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn an_unanswered_post_is_not_sent_again_to_the_same_upstream() {
    let seen = Arc::new(AtomicUsize::new(0));
    let up = silent(seen.clone());
    let gw = Gateway::start("", &format!("{}max_attempts = 3\n", provider("silent", "openai", up.addr)));
    let r = roundtrip(gw.addr, &post("/silent/v1/chat/completions", CHAT));
    assert_eq!((r.status, r.error_code()), (502, "upstream_closed".to_string()));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a POST the upstream may have processed went again");

    // The operator may say the provider is safe to ask again.
    let again = Arc::new(AtomicUsize::new(0));
    let up = silent(again.clone());
    let toml = format!("{}max_attempts = 3\nretry_unanswered = true\n", provider("silent", "openai", up.addr));
    let gw = Gateway::start("", &toml);
    let r = roundtrip(gw.addr, &post("/silent/v1/chat/completions", CHAT));
    assert_eq!(r.status, 502);
    assert_eq!(again.load(Ordering::SeqCst), 3);

    // A fallback route still moves on to its next target.
    let once = Arc::new(AtomicUsize::new(0));
    let up = silent(once.clone());
    let m = mock();
    let toml = format!(
        "{}{}[routes.chat]\ntargets = [{{ provider = \"silent\" }}, {{ provider = \"mock\" }}]\nmax_attempts = 4\n",
        provider("silent", "openai", up.addr),
        provider("mock", "mock", m.addr),
    );
    let gw = Gateway::start("", &toml);
    let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post("/v1/chat/completions", body));
    assert_eq!((r.status, r.header("x-aigw-provider")), (200, Some("mock")));
    assert_eq!(once.load(Ordering::SeqCst), 1);
}

#[test]
fn paths_stay_inside_the_provider() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    for path in [
        "/mock/v1/../../admin",
        "/mock/../other/v1/chat/completions",
        "/mock/v1/./chat/completions",
        "/mock/v1/%2e%2e/secret",
        "/mock/v1/%2E%2e/secret",
        "/mock/v1/..%2Fsecret",
        "/mock/v1/..%5csecret",
        "/mock//v1/chat/completions",
        "/mock/v1//chat/completions",
    ] {
        let r = roundtrip(gw.addr, &post(path, CHAT));
        assert_eq!((r.status, r.error_code()), (400, "invalid_path".to_string()), "{path}");
    }
    assert_eq!(m.requests(), 0, "nothing reached the upstream");
    // Names with dots that are not dot segments pass.
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions?x=../y", CHAT));
    assert_eq!(r.status, 200);
}

#[test]
fn one_request_one_model() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    // A duplicate of a key the gateway reads is refused, whichever spelling.
    for (body, key) in [
        (r#"{"model":"mock/allowed","stream":false,"model":"mock/other","messages":[]}"#, "model"),
        (r#"{"model":"mock/allowed","mod\u0065l":"mock/other","messages":[]}"#, "model"),
        (r#"{"model":"mock/m","stream":false,"messages":[],"stream":true}"#, "stream"),
        (r#"{"model":"mock/m","max_tokens":1,"messages":[],"max_tokens":99999}"#, "max_tokens"),
    ] {
        let r = roundtrip(gw.addr, &post("/v1/chat/completions", body));
        assert_eq!((r.status, r.error_code()), (400, "invalid_request_body".to_string()), "{body}");
        assert_eq!(r.json()["error"]["param"], key);
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", body));
        assert_eq!(r.status, 400, "pass-through too: {body}");
    }
    assert_eq!(m.requests(), 0, "nothing reached the upstream");
    // An escaped key is the key it spells: this routes like "model".
    let r = roundtrip(
        gw.addr,
        &post(
            "/v1/chat/completions",
            r#"{"mod\u0065l":"mock/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    );
    assert_eq!((r.status, r.header("x-aigw-provider")), (200, Some("mock")));
    assert_eq!(r.json()["model"], "gpt-4o-mini");
}

/// The newest request-log record once `done` holds for it.
fn last_record(admin: std::net::SocketAddr, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut log = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(10), || {
        log = roundtrip(admin, &get("/admin/logs?limit=1")).json();
        done(&log["data"][0])
    });
    assert!(found, "no such record: {log}");
    log["data"][0].clone()
}

#[test]
fn missing_usage_is_estimated_never_zero() {
    aigw::tap::estimate::load_now();
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let prompt = "The quick brown fox jumps over the lazy dog.";
    // `stream_options` without include_usage: the gateway merges it in, so
    // the usage is exact, and strips it back out.
    let body = format!(
        r#"{{"model":"m","stream":true,"stream_options":{{}},"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &body));
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(text.ends_with("data: [DONE]\n\n") && !text.contains("\"usage\""), "{text}");
    let rec = last_record(gw.admin, |r| r["status"] == 200 && r["output_tokens"] == 16);
    assert_eq!(rec["estimated"], false, "{rec}");
    assert!(rec["input_tokens"].as_u64().unwrap() > 0, "{rec}");

    // A client gone before the usage chunk: input counted from the request.
    let body = format!(r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
    let mut c = Client::connect(gw.addr);
    c.send(&post_with("/mock/v1/chat/completions", &body, "x-mock-tokens: 1000\r\nx-mock-delay-ms: 10\r\n"));
    c.read_until(b"\"content\":\" jumps\"");
    drop(c);
    let rec = last_record(gw.admin, |r| r["error"] == "client_disconnected");
    assert_eq!(rec["estimated"], true, "{rec}");
    let input = rec["input_tokens"].as_u64().unwrap();
    assert!((10..40).contains(&input), "the prompt's tokens, not zero: {rec}");
    assert!(rec["output_tokens"].as_u64().unwrap() >= 5, "{rec}");

    // A JSON answer cut mid-body: estimated from what came, not zero.
    let cut = RawUpstream::spawn(|mut s| {
        if read_request(&mut s).is_some() {
            let part = r#"{"choices":[{"message":{"role":"assistant","content":"The quick brown fox"#;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n";
            let _ = s.write_all(format!("{head}{part}").as_bytes());
        }
    });
    let gw = Gateway::start("", &provider("cut", "openai", cut.addr));
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
    let _ = roundtrip_to_close(gw.addr, &post("/cut/v1/chat/completions", &body));
    let rec = last_record(gw.admin, |r| r["error"] == "upstream_cut_short");
    assert_eq!(rec["estimated"], true, "{rec}");
    assert!(rec["input_tokens"].as_u64().unwrap() >= 10, "{rec}");
    assert!(rec["output_tokens"].as_u64().unwrap() >= 1, "{rec}");
}

/// Sends `raw` and reads until the gateway closes (a cut response).
fn roundtrip_to_close(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.read_to_close()
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

#[test]
fn client_chosen_model_names_cannot_grow_memory() {
    let m = mock();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\n{}",
        provider("mock", "mock", m.addr)
    );
    let gw = Binary::serve(&config, &[]);
    let pid = gw.child.id();
    let send_all = |names: &mut dyn Iterator<Item = String>| {
        let mut c = Client::connect(gw.addr);
        let mut statuses = std::collections::BTreeMap::new();
        for name in names {
            let body = format!(r#"{{"model":"{name}","messages":[{{"role":"user","content":"hi"}}]}}"#);
            c.send(&post("/mock/v1/chat/completions", &body));
            *statuses.entry(c.read_response().status).or_insert(0) += 1;
        }
        statuses
    };
    // Warm up: the first requests allocate what every request reuses.
    send_all(&mut (0..200).map(|i| format!("warm-{i}")));
    // ... and are accounted: their records are in (the same flush sent their
    // delta, ahead of any later one), so the collector's 128 labels are the
    // warm-up's short names whichever worker flushes first.
    let metrics = || String::from_utf8(roundtrip(gw.admin, &get("/metrics")).body).unwrap();
    assert!(eventually(Duration::from_secs(10), || metric(&metrics(), "aigw_log_records_total ") == 200.0));
    let idle = rss(pid);
    // 10,000 distinct 4 KiB names: refused, and nothing kept of them.
    let statuses = send_all(&mut (0..10_000).map(|i| format!("{i:04}{}", "x".repeat(4092))));
    assert_eq!(statuses.get(&400), Some(&10_000));
    // 3,000 distinct names of a plausible length: served, counted under at
    // most 128 labels (the rest as "other").
    let statuses = send_all(&mut (0..3_000).map(|i| format!("model-{i:05}-{}", "y".repeat(180))));
    assert_eq!(statuses.get(&200), Some(&3_000));
    assert!(eventually(Duration::from_secs(10), || metrics().contains("model=\"other\"")));
    let text = metrics();
    assert!(text.len() < 1 << 20, "/metrics is {} bytes", text.len());
    let grown = rss(pid).saturating_sub(idle);
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);
}

#[test]
fn the_admin_listener_resists_web_pages() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let admin = |raw: &str| roundtrip(gw.admin, raw.as_bytes());
    // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its
    // own name as Host. Without an admin token, only loopback names pass.
    let r = admin("GET /admin/stats HTTP/1.1\r\nHost: evil.example:9090\r\n\r\n");
    assert_eq!((r.status, r.error_code()), (403, "host_not_allowed".to_string()));
    for host in ["localhost:9090", "127.0.0.1:9090", "[::1]:9090", "LOCALHOST"] {
        assert_eq!(admin(&format!("GET /admin/stats HTTP/1.1\r\nHost: {host}\r\n\r\n")).status, 200, "{host}");
    }
    // A state-changing route takes a request a page cannot send without a
    // CORS preflight: a form POST is refused, one with x-aigw-admin passes.
    let r = admin(
        "POST /admin/cache/purge HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!((r.status, r.error_code()), (403, "admin_header_required".to_string()));
    let r =
        admin("POST /admin/cache/purge HTTP/1.1\r\nHost: localhost\r\nx-aigw-admin: 1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn an_event_without_end_is_cut_not_buffered() {
    // An upstream whose stream is one event of endless data lines (no
    // blank line): the gateway holds at most 8 MiB of it, then cuts the
    // stream and says why in the log.
    let up = RawUpstream::spawn(|mut s| {
        if read_request(&mut s).is_none() {
            return;
        }
        let line = format!("data: {}\n", "x".repeat(16 * 1024 - 7));
        let chunk = format!("{:x}\r\n{line}\r\n", line.len());
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..1024 {
            // 16 MiB in all, unless the gateway hangs up first.
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        let _ = s.write_all(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
    });
    let gw = Gateway::start("", &provider("up", "openai", up.addr));
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut c = Client::connect(gw.addr);
    c.send(&post("/up/v1/chat/completions", body));
    let got = c.read_to_close();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    let body = &got[head_end..];
    assert!(!body.ends_with(b"0\r\n\r\n"), "a cut stream has no final chunk");
    let rec = last_record(gw.admin, |r| r["error"] == "upstream_event_too_large");
    assert_eq!(rec["status"], 200);
}

/// The provider's request_timeout bounds a whole answer, its body
/// included: a stream (chunked) or a Content-Length body still coming at
/// the deadline is cut there, the connection closed without the body's
/// end, so the client cannot take it for a whole answer. One timer guards
/// all of a body's reads (`util::until`); this holds it to the deadline.
#[test]
fn the_request_deadline_cuts_a_body_still_coming() {
    let m = mock();
    // A body that starts at once and then stalls.
    let stalled = RawUpstream::spawn(move |mut s| {
        if read_request(&mut s).is_some() {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n",
            );
            let _ = s.write_all(&[b'x'; 1000]);
            // Stall: hold the rest until the gateway gives up and closes
            // (bounded, in case it never does).
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.read(&mut [0u8; 1]);
        }
    });
    let toml = format!(
        "{}request_timeout = \"400ms\"\n{}request_timeout = \"400ms\"\n",
        provider("slow", "mock", m.addr),
        provider("stalled", "openai", stalled.addr),
    );
    let gw = Gateway::start("", &toml);

    // 40 events 50 ms apart: 2 s of stream against a 400 ms deadline.
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let started = Instant::now();
    let mut c = Client::connect(gw.addr);
    c.send(&post_with("/slow/v1/chat/completions", body, "x-mock-tokens: 40\r\nx-mock-delay-ms: 50\r\n"));
    let got = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    let took = started.elapsed();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("chat.completion.chunk"), "events before the deadline reach the client: {got}");
    assert!(!got.contains("[DONE]") && !got.ends_with("0\r\n\r\n"), "a cut stream must not look whole: {got}");
    assert!(took >= Duration::from_millis(350), "cut before the deadline: {took:?}");
    assert!(took < Duration::from_millis(1800), "not cut at the deadline: {took:?}");

    let started = Instant::now();
    let mut c = Client::connect(gw.addr);
    c.send(&post("/stalled/v1/files/f/content", CHAT));
    let got = c.read_to_close();
    let took = started.elapsed();
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").map_or(got.len(), |p| p + 4);
    assert!(got.len() - head_end < 100_000, "the body cannot be whole");
    assert!(took >= Duration::from_millis(350), "cut before the deadline: {took:?}");
    assert!(took < Duration::from_millis(2500), "not cut at the deadline: {took:?}");
}

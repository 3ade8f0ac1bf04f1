//! The response cache end to end: real sockets, the mock upstream, two
//! workers.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    sync::{Arc, Barrier},
    time::Duration,
};

use common::*;

/// A gateway with one mock provider whose answers are cached for a minute.
fn cached_gateway(cache_section: &str) -> (Gateway, aigw::mock::MockServer) {
    let m = mock();
    let toml = format!("{cache_section}\n{}cache_ttl = \"60s\"\n", provider("mock", "mock", m.addr));
    (Gateway::start("", &toml), m)
}

/// The worker that answered, from the request id (digits 8..12).
fn worker_of(r: &Response) -> String {
    r.header("x-aigw-request-id").unwrap()[8..12].to_string()
}

/// Sends `request` on `n` connections at once; the responses in order.
fn concurrently(addr: std::net::SocketAddr, n: usize, request: Vec<u8>) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(n));
    let request = Arc::new(request);
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, request) = (barrier.clone(), request.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                c.send(&request);
                c.read_response()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn chat(content: &str) -> String {
    format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{content}"}}]}}"#)
}

fn chat_stream(content: &str) -> String {
    format!(r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"user","content":"{content}"}}]}}"#)
}

#[test]
fn miss_then_hit_byte_identical_on_another_connection_and_worker() {
    let (gw, m) = cached_gateway("");
    let first = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("cache me")));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-aigw-cache-status"), Some("MISS"));
    let miss_worker = worker_of(&first);
    let mut other_worker_hit = false;
    for _ in 0..64 {
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("cache me")));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-aigw-cache-status"), Some("HIT"));
        assert_eq!(r.body, first.body, "a hit is byte-identical to the miss");
        assert_eq!(r.header("content-type"), first.header("content-type"));
        assert_ne!(r.header("x-aigw-request-id"), first.header("x-aigw-request-id"));
        if worker_of(&r) != miss_worker {
            other_worker_hit = true;
            break;
        }
    }
    assert!(other_worker_hit, "64 new connections never reached the other worker");
    assert_eq!(m.requests(), 1);

    // A different body, path, or credential is a different entry.
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("something else")));
    assert_eq!(r.header("x-aigw-cache-status"), Some("MISS"));
    let r = roundtrip(
        gw.addr,
        &post_with("/mock/v1/chat/completions", &chat("cache me"), "Authorization: Bearer someone-else\r\n"),
    );
    assert_eq!(r.header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(m.requests(), 3);
}

#[test]
fn stream_is_replayed_as_the_same_stream() {
    let (gw, m) = cached_gateway("");
    for body in [chat_stream("stream me"), CHAT_STREAM.to_string()] {
        let mut c = Client::connect(gw.addr);
        c.send(&post("/mock/v1/chat/completions", &body));
        let first = c.read_response();
        assert_eq!(first.header("x-aigw-cache-status"), Some("MISS"));
        assert_eq!(first.framing, "chunked");
        // Same connection (keep-alive after a replay) and a new one.
        c.send(&post("/mock/v1/chat/completions", &body));
        let again = c.read_response();
        let other = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &body));
        for hit in [again, other] {
            assert_eq!(hit.header("x-aigw-cache-status"), Some("HIT"));
            assert_eq!(hit.framing, "chunked", "a stream is replayed as a stream");
            assert_eq!(hit.header("content-type"), Some("text/event-stream"));
            assert_eq!(hit.body, first.body);
        }
        let text = String::from_utf8(first.body.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        // The gateway's own include_usage stays invisible in the replay;
        // a client that asked for usage gets its usage chunk back.
        assert_eq!(text.contains("\"usage\":{"), body.contains("include_usage"), "{text}");
    }
    assert_eq!(m.requests(), 2);
    // An HTTP/1.0 client gets the stored stream delimited by the close.
    let body = chat_stream("stream me");
    let raw = format!(
        "POST /mock/v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = roundtrip(gw.addr, raw.as_bytes());
    assert_eq!((r.header("x-aigw-cache-status"), r.framing), (Some("HIT"), "close"));
    assert!(String::from_utf8(r.body).unwrap().ends_with("data: [DONE]\n\n"));
}

#[test]
fn ttl_expiry_skip_and_per_request_ttl() {
    let m = mock();
    // No TTL in config: caching only when a request asks for it.
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let plain = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT));
    assert_eq!(plain.header("x-aigw-cache-status"), None, "no cache header where caching is off");
    let ask = |extra: &str| {
        let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat("ttl"), extra));
        assert_eq!(r.status, 200);
        r.header("x-aigw-cache-status").unwrap().to_string()
    };
    assert_eq!(ask("x-aigw-cache-ttl: 1\r\n"), "MISS");
    assert_eq!(ask("x-aigw-cache-ttl: 1\r\n"), "HIT");
    assert_eq!(ask("x-aigw-skip-cache: true\r\n"), "BYPASS");
    assert_eq!(ask("x-aigw-cache-ttl: 0\r\n"), "BYPASS");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ask("x-aigw-cache-ttl: 1\r\n"), "EXPIRED");
    assert_eq!(ask("x-aigw-cache-ttl: 1\r\n"), "HIT");
    assert_eq!(m.requests(), 5, "plain, miss, bypass, bypass, expired");
    // A bad control header is refused, not ignored.
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", CHAT, "x-aigw-cache-ttl: soon\r\n"));
    assert_eq!((r.status, r.error_code()), (400, "invalid_header".to_string()));
}

#[test]
fn custom_keys_and_errors_are_not_cached() {
    let (gw, m) = cached_gateway("");
    let with_key = |content: &str| {
        roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat(content), "x-aigw-cache-key: faq-7\r\n"))
    };
    let a = with_key("one wording");
    let b = with_key("another wording");
    assert_eq!(a.header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(b.header("x-aigw-cache-status"), Some("HIT"));
    assert_eq!(a.body, b.body);
    for _ in 0..2 {
        let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", &chat("fail"), "x-mock-status: 500\r\n"));
        assert_eq!((r.status, r.header("x-aigw-cache-status")), (500, Some("MISS")));
    }
    assert_eq!(m.requests(), 3);
}

#[test]
fn concurrent_identical_requests_make_one_upstream_request() {
    let (gw, m) = cached_gateway("");
    const N: usize = 100;
    for (body, stream) in [(chat("coalesce"), false), (chat_stream("coalesce"), true)] {
        let before = m.requests();
        // The mock waits 300 ms before answering, so all 100 arrive while
        // the first is in flight.
        let headers = "x-mock-ttft-ms: 300\r\nx-mock-delay-ms: 5\r\n";
        let responses = concurrently(gw.addr, N, post_with("/mock/v1/chat/completions", &body, headers));
        assert_eq!(m.requests() - before, 1, "exactly one upstream request for {N} identical ones");
        let first = &responses[0].body;
        for r in &responses {
            assert_eq!(r.status, 200);
            assert_eq!(&r.body, first);
            assert_eq!(r.framing, if stream { "chunked" } else { "length" });
        }
        let misses = responses.iter().filter(|r| r.header("x-aigw-cache-status") == Some("MISS")).count();
        assert_eq!(misses, 1);
    }
}

/// With `capture_bodies`, the request log keeps what each client received
/// however it was served: the miss, a hit, and a follower of a flight.
#[test]
fn hits_and_followers_log_the_answer_they_were_sent() {
    let (gw, _m) = cached_gateway("[log]\ncapture_bodies = true\ncapture_max_bytes = 65536\n");
    let miss = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("log me")));
    let hit = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("log me")));
    assert_eq!((miss.header("x-aigw-cache-status"), hit.header("x-aigw-cache-status")), (Some("MISS"), Some("HIT")));
    let log = logs_once(gw.admin, 2);
    for rec in log["data"].as_array().unwrap() {
        assert_eq!(rec["response_body"].as_str().map(str::as_bytes), Some(&miss.body[..]), "{rec}");
    }
    // A stream, its followers joining while the leader's answer is in flight.
    let headers = "x-mock-ttft-ms: 300\r\nx-mock-delay-ms: 5\r\n";
    let responses = concurrently(gw.addr, 3, post_with("/mock/v1/chat/completions", &chat_stream("log me"), headers));
    let log = logs_once(gw.admin, 5);
    let records = &log["data"].as_array().unwrap()[..3];
    assert!(records.iter().any(|r| r["coalesced"] == true), "{log}");
    for (rec, r) in records.iter().zip(&responses) {
        // The client's body decoded from its chunks is the event stream.
        let text = rec["response_body"].as_str().unwrap_or_else(|| panic!("{rec}"));
        assert!(text.starts_with("data: ") && text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(r.body, responses[0].body);
    }
}

#[test]
fn followers_get_the_stream_as_it_arrives_not_after_it_ends() {
    let (gw, m) = cached_gateway("");
    // 8 chunks 150 ms apart: the stream takes over a second.
    let headers = "x-mock-tokens: 8\r\nx-mock-delay-ms: 150\r\n";
    let request = post_with("/mock/v1/chat/completions", &chat_stream("fan out"), headers);
    let mut leader = Client::connect(gw.addr);
    leader.send(&request);
    let _ = leader.read_until(b"\r\n\r\n");
    let _ = leader.read_until(b"\n\n");
    // The leader is mid-stream; a follower joins.
    let started = std::time::Instant::now();
    let mut follower = Client::connect(gw.addr);
    follower.send(&request);
    let head = String::from_utf8(follower.read_until(b"\r\n\r\n")).unwrap();
    assert!(head.contains("x-aigw-cache-status: HIT"), "{head}");
    let first = follower.read_until(b"\n\n");
    let first_at = started.elapsed();
    assert!(!String::from_utf8_lossy(&first).contains("[DONE]"));
    let rest = follower.read_until(b"[DONE]\n\n\r\n0\r\n\r\n");
    let end_at = started.elapsed();
    assert!(end_at - first_at > Duration::from_millis(400), "first event at {first_at:?}, end at {end_at:?}");
    assert!(String::from_utf8_lossy(&rest).matches("data: ").count() >= 4, "later events arrived one by one");
    let _ = leader.read_until(b"\r\n0\r\n\r\n");
    assert_eq!(m.requests(), 1);
}

#[test]
fn a_failing_leader_releases_its_followers() {
    let (gw, m) = cached_gateway("");
    const N: usize = 10;
    // All ten arrive during the first one's 300 ms wait and follow it; its
    // 503 releases them and each goes upstream on its own.
    let headers = "x-mock-status: 503\r\nx-mock-ttft-ms: 300\r\n";
    let started = std::time::Instant::now();
    for r in concurrently(gw.addr, N, post_with("/mock/v1/chat/completions", &chat("doomed"), headers)) {
        assert_eq!(r.status, 503);
        assert_eq!(r.error_code(), "mock_error");
    }
    assert!(started.elapsed() >= Duration::from_millis(550), "followers waited for the leader, then went alone");
    assert_eq!(m.requests(), N as u64, "nothing cached");
}

#[test]
fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
    let (gw, _m) = cached_gateway("[cache]\nmax_bytes = 1048576\nmax_entry_bytes = 16384\n");
    let mut c = Client::connect(gw.addr);
    for i in 0..2000 {
        c.send(&post_with("/mock/v1/chat/completions", &chat(&format!("flood {i}")), "x-mock-tokens: 200\r\n"));
        assert_eq!(c.read_response().status, 200);
    }
    let text = metrics_text(gw.admin);
    let bytes = metric(&text, "aigw_cache_bytes ");
    assert!(bytes > 0.0 && bytes <= 1048576.0, "aigw_cache_bytes {bytes}");
    assert!(metric(&text, "aigw_cache_evictions_total ") > 500.0, "{text}");
}

#[test]
fn purge_and_cache_metrics() {
    let (gw, m) = cached_gateway("");
    let send = |content: &str| roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat(content)));
    assert_eq!(send("a").header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(send("b").header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(send("a").header("x-aigw-cache-status"), Some("HIT"));

    // Hits show zero tokens and what they saved; the log has the key. The
    // three requests may have landed on different workers, which flush
    // their counters independently: wait for all three.
    let mut text = String::new();
    assert!(eventually(Duration::from_secs(5), || {
        text = metrics_text(gw.admin);
        metric(&text, "aigw_cache_hits_total ") + metric(&text, "aigw_cache_misses_total ") == 3.0
    }));
    assert_eq!(metric(&text, "aigw_cache_hits_total "), 1.0);
    assert_eq!(metric(&text, "aigw_cache_misses_total "), 2.0);
    assert_eq!(
        metric(&text, "aigw_requests_total{provider=\"mock\",model=\"gpt-4o-mini\",status=\"200\",cache=\"hit\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "aigw_cache_saved_tokens_total{provider=\"mock\",model=\"gpt-4o-mini\",direction=\"output\"}"),
        16.0
    );
    assert!(metric(&text, "aigw_cache_saved_cost_usd_total{provider=\"mock\"") > 0.0);
    assert!(metric(&text, "aigw_cache_entries ") == 2.0);
    let stats = roundtrip(gw.admin, &get("/admin/stats")).json();
    assert!((stats["totals"]["cache_hit_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9, "{stats}");
    assert_eq!(stats["cache"]["saved_output_tokens"], 16);
    // The log thread takes the same flush's records on its own time.
    let mut logs = serde_json::Value::Null;
    assert!(eventually(Duration::from_secs(5), || {
        logs = roundtrip(gw.admin, &get("/admin/logs?limit=3")).json();
        logs["data"].as_array().map(Vec::len) == Some(3)
    }));
    let hit = &logs["data"][0];
    assert_eq!((hit["cache"].as_str(), hit["output_tokens"].as_u64()), (Some("hit"), Some(0)), "{hit}");
    assert_eq!(hit["saved_output_tokens"], 16);
    let key = hit["cache_key"].as_str().unwrap().to_string();

    let purge = |query: &str| {
        let raw = format!(
            "POST /admin/cache/purge{query} HTTP/1.1\r\nHost: localhost\r\nx-aigw-admin: 1\r\nContent-Length: 0\r\n\r\n"
        );
        roundtrip(gw.admin, raw.as_bytes())
    };
    // A streamed answer is stored just after its last chunk goes out (a
    // whole small answer before it): wait for the store before purging.
    let entries =
        |n: f64| eventually(Duration::from_secs(2), || metric(&metrics_text(gw.admin), "aigw_cache_entries ") == n);
    assert_eq!(purge("?key=nothex").status, 400);
    assert_eq!(purge(&format!("?key={key}")).json()["purged"], 1);
    assert_eq!(send("a").header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(send("b").header("x-aigw-cache-status"), Some("HIT"));
    assert!(entries(2.0));
    assert_eq!(purge("?provider=mock").json()["purged"], 2);
    assert_eq!(send("b").header("x-aigw-cache-status"), Some("MISS"));
    assert!(entries(1.0));
    assert_eq!(purge("").json()["purged"], 1);
    assert_eq!(send("a").header("x-aigw-cache-status"), Some("MISS"));
    assert_eq!(m.requests(), 5);
}

#[test]
fn followers_finish_when_the_leader_client_leaves() {
    let (gw, m) = cached_gateway("");
    let headers = "x-mock-tokens: 8\r\nx-mock-delay-ms: 100\r\n";
    let request = post_with("/mock/v1/chat/completions", &chat_stream("leader leaves"), headers);
    let mut leader = Client::connect(gw.addr);
    leader.send(&request);
    let _ = leader.read_until(b"\n\n");
    let mut follower = Client::connect(gw.addr);
    follower.send(&request);
    let _ = follower.read_until(b"\r\n\r\n");
    // The leader's client goes away mid-stream.
    drop(leader);
    let rest = follower.read_until(b"[DONE]\n\n\r\n0\r\n\r\n");
    assert!(String::from_utf8_lossy(&rest).matches("data: ").count() >= 7, "the follower got the whole stream");
    // The answer was read to its end, so it was stored too.
    let again = roundtrip(gw.addr, &request);
    assert_eq!(again.header("x-aigw-cache-status"), Some("HIT"));
    assert_eq!(m.requests(), 1);
}

/// An upstream that answers every request with this SSE body (chunked),
/// counting requests.
fn sse_upstream(events: &'static str, hits: Arc<std::sync::atomic::AtomicUsize>) -> RawUpstream {
    use std::io::Write;
    RawUpstream::spawn(move |mut s| {
        while read_request(&mut s).is_some() {
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n0\r\n\r\n",
                events.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn only_complete_successful_streams_are_stored() {
    const OPENAI_OK: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
    const OPENAI_ERROR: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n";
    const OPENAI_NO_DONE: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const ANTHROPIC_OK: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    const ANTHROPIC_ERROR: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    const ANTHROPIC_NO_STOP: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n";
    for (kind, path, events, stored) in [
        ("openai", "/v1/chat/completions", OPENAI_OK, true),
        ("openai", "/v1/chat/completions", OPENAI_ERROR, false),
        ("openai", "/v1/chat/completions", OPENAI_NO_DONE, false),
        ("anthropic", "/v1/messages", ANTHROPIC_OK, true),
        ("anthropic", "/v1/messages", ANTHROPIC_ERROR, false),
        ("anthropic", "/v1/messages", ANTHROPIC_NO_STOP, false),
    ] {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let up = sse_upstream(events, hits.clone());
        let toml = format!("{}cache_ttl = \"60s\"\n", provider("up", kind, up.addr));
        let gw = Gateway::start("", &toml);
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
        let raw = post(&format!("/up{path}"), body);
        let first = roundtrip(gw.addr, &raw);
        assert_eq!((first.status, first.header("x-aigw-cache-status")), (200, Some("MISS")));
        // The record is made once the store decision is taken.
        assert!(eventually(Duration::from_secs(10), || {
            roundtrip(gw.admin, &get("/admin/logs?limit=1")).json()["data"][0]["status"] == 200
        }));
        let second = roundtrip(gw.addr, &raw);
        let want = if stored { "HIT" } else { "MISS" };
        assert_eq!(second.header("x-aigw-cache-status"), Some(want), "{kind} {events:?}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), if stored { 1 } else { 2 });
    }
}

#[test]
fn a_flight_no_one_waits_for_ends_with_the_leaders_client() {
    let (gw, m) = cached_gateway("");
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"coalesce me"}]}"#;
    let raw = post_with("/mock/v1/chat/completions", body, "x-mock-tokens: 2000\r\nx-mock-delay-ms: 5\r\n");
    let mut leader = Client::connect(gw.addr);
    leader.send(&raw);
    leader.read_until(b"data: ");
    // An identical request follows the leader's flight, then leaves.
    let mut follower = Client::connect(gw.addr);
    follower.send(&raw);
    follower.read_until(b"data: ");
    drop(follower);
    // With no one left to read for (and an answer too long to matter
    // soon), the leader's client leaving ends the upstream read at once.
    std::thread::sleep(Duration::from_millis(50));
    drop(leader);
    let stats = m.stats.clone();
    assert!(
        eventually(Duration::from_secs(5), || stats.streams_aborted.load(std::sync::atomic::Ordering::SeqCst) == 1),
        "the upstream stream was read on for a follower that had left"
    );
    assert_eq!(m.requests(), 1, "one upstream request for both");
}

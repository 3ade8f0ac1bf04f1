//! RFC 9112 strictness, limits and client timeouts, checked on the wire:
//! each rejection gets its status and an OpenAI-style JSON error, the
//! connection closes, and nothing reaches the upstream.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn rejects(gw: &Gateway, m: &aigw::mock::MockServer, raw: &[u8], status: u16, code: &str) {
    let before = m.requests();
    let mut c = Client::connect(gw.addr);
    let _ = c.try_send(raw);
    let r = c.read_response();
    let shown = String::from_utf8_lossy(raw);
    assert_eq!(r.status, status, "{shown:?}");
    assert_eq!(r.error_code(), code, "{shown:?}");
    assert_eq!(r.header("connection"), Some("close"), "{shown:?}");
    assert!(r.header("x-aigw-request-id").is_some());
    assert!(c.closed_within(Duration::from_secs(2)), "connection left open after {shown:?}");
    assert_eq!(m.requests(), before, "{shown:?} reached the upstream");
}

#[test]
fn malformed_requests_are_400_and_never_forwarded() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let cases: &[&[u8]] = &[
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\nhi",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
        b"GET /mock/echo HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n  b\r\n\r\n",
        b"GET /mock/echo HTTP/1.1\r\nHost: t\r\nX-Nul: a\0b\r\n\r\n",
        b"GET /mock/echo HTTP/1.1\r\nHost: t\r\nX-Cr: a\rb\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /mock/echo HTTP/9.9\r\nHost: t\r\n\r\n",
        b"GET mock/echo HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /mock/echo HTTP/1.1\r\n\r\n",
    ];
    for raw in cases {
        rejects(&gw, &m, raw, 400, "bad_request");
    }
}

#[test]
fn limits_are_431_413_417() {
    let m = mock();
    let gw = Gateway::start(
        "max_head_bytes = 2048\nmax_body_bytes = 1024\nmax_headers = 16",
        &provider("mock", "mock", m.addr),
    );
    let big_head = format!("GET /mock/echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "a".repeat(4096));
    rejects(&gw, &m, big_head.as_bytes(), 431, "request_header_fields_too_large");
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET /mock/echo HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    rejects(&gw, &m, many.as_bytes(), 431, "request_header_fields_too_large");
    // Refused from the Content-Length alone, before any body byte is read.
    rejects(&gw, &m, b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n", 413, "request_too_large");
    let chunked = format!(
        "POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
        "b".repeat(2048)
    );
    rejects(&gw, &m, chunked.as_bytes(), 413, "request_too_large");
    rejects(
        &gw,
        &m,
        b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx",
        417,
        "expectation_failed",
    );
    // Right at the limit passes.
    let ok = roundtrip(gw.addr, &post("/mock/echo", &"c".repeat(1024)));
    assert_eq!(ok.status, 200);
}

#[test]
fn slow_clients_time_out_and_idle_ones_are_closed() {
    let m = mock();
    let gw = Gateway::start(
        "header_read_timeout = \"300ms\"\nbody_read_timeout = \"300ms\"\nkeepalive_timeout = \"300ms\"",
        &provider("mock", "mock", m.addr),
    );
    // Half a head, then nothing: 408.
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /mock/echo HTTP/1.1\r\nHo");
    let started = Instant::now();
    let r = c.read_response();
    assert_eq!((r.status, r.error_code().as_str()), (408, "request_timeout"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // Half a body: 408.
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(c.read_response().status, 408);
    // Idle keep-alive after a response: closed without a response.
    let mut c = Client::connect(gw.addr);
    c.send(&get("/mock/v1/models"));
    assert_eq!(c.read_response().status, 200);
    assert!(c.closed_within(Duration::from_secs(2)));
    assert_eq!(m.requests(), 1);
}

#[test]
fn unknown_provider_is_404_and_keeps_the_connection() {
    let m = mock();
    let gw = Gateway::start("", &provider("mock", "mock", m.addr));
    let mut c = Client::connect(gw.addr);
    for path in ["/", "/nope/v1/chat/completions", "/mockx/y"] {
        c.send(&get(path));
        let r = c.read_response();
        assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_route"), "{path}");
    }
    c.send(&get("/v1/chat/completions"));
    let r = c.read_response();
    assert_eq!((r.status, r.error_code().as_str()), (405, "method_not_allowed"));
    c.send(&get("/mock/v1/models"));
    assert_eq!(c.read_response().status, 200);
}

use super::*;

const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 64 * 1024, max_headers: 64 };

fn ok(raw: &str) -> ParsedRequest {
    match parse(raw.as_bytes(), LIMITS) {
        Ok(Some(p)) => p,
        other => panic!("{raw:?} → {other:?}"),
    }
}

fn err(raw: &str) -> HeadError {
    match parse(raw.as_bytes(), LIMITS) {
        Err(e) => e,
        other => panic!("{raw:?} accepted: {other:?}"),
    }
}

#[test]
fn simple_get() {
    let raw = "GET /mock/v1/models?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let p = ok(raw);
    assert_eq!(p.len, raw.len());
    assert_eq!(&raw[p.target.clone()], "/mock/v1/models?x=1");
    assert_eq!(&raw[p.method.clone()], "GET");
    assert_eq!(p.framing, BodyFraming::Empty);
    assert!(p.keep_alive);
}

#[test]
fn framing_and_connection() {
    assert_eq!(ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").framing, BodyFraming::Length(5));
    assert_eq!(ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").framing, BodyFraming::Chunked);
    assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    let p = ok("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    assert!(p.expect_continue);
    // 100-continue without a body has nothing to wait for.
    assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").expect_continue);
}

#[test]
fn rfc9112_rejections() {
    let cases = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n",
        "hello world\r\n\r\n",
    ];
    for raw in cases {
        assert!(matches!(err(raw), HeadError::Malformed(_)), "{raw:?}");
    }
}

#[test]
fn expect_other_than_continue_is_417() {
    assert_eq!(
        err("POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n"),
        HeadError::UnsupportedExpect
    );
}

#[test]
fn limits() {
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(2000));
    let small = HeadLimits { max_head_bytes: 1024, max_headers: 64 };
    assert_eq!(parse(big.as_bytes(), small), Err(HeadError::TooLarge));
    // A partial head past the limit is refused before it completes.
    assert_eq!(parse(&big.as_bytes()[..1500], small), Err(HeadError::TooLarge));
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(parse(raw.as_bytes(), LIMITS), Err(HeadError::TooManyHeaders));
}

/// Every prefix of a valid head is Partial; the whole is the same parse
/// whatever follows it (pipelined bytes).
#[test]
fn split_at_every_offset() {
    let raw = "POST /mock/v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Empty:\r\n\r\n";
    let whole = ok(raw);
    for k in 0..raw.len() {
        assert_eq!(parse(&raw.as_bytes()[..k], LIMITS), Ok(None), "prefix {k}");
    }
    let mut pipelined = raw.as_bytes().to_vec();
    pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(parse(&pipelined, LIMITS), Ok(Some(whole)));
}

#[test]
fn head_accessors() {
    let raw = "GET /x HTTP/1.1\r\nHost: a\r\nX-Thing:  v1 \r\n\r\nBODY";
    let p = ok(raw);
    let head = RequestHead::new(Bytes::from(raw), p);
    assert_eq!(head.header("x-thing"), Some(&b"v1"[..]));
    assert_eq!(head.header("missing"), None);
    assert_eq!(head.target(), b"/x");
    assert_eq!(head.headers().count(), 2);
}

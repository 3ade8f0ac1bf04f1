//! End-to-end pass-through: client → gateway → mock (or a hand-made
//! upstream), over real sockets on ephemeral ports.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    io::Write,
    net::TcpStream,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use common::*;

fn gateway_for(mock: &aigw::mock::MockServer) -> Gateway {
    Gateway::start("", &provider("mock", "mock", mock.addr))
}

#[test]
fn json_passes_through_byte_identical() {
    let m = mock();
    let gw = gateway_for(&m);
    let direct = roundtrip(m.addr, &post("/v1/chat/completions", CHAT));
    let proxied = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT));
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.body, direct.body);
    assert_eq!(proxied.framing, "length");
    assert_eq!(proxied.header("content-type"), Some("application/json"));
    let id = proxied.header("x-aigw-request-id").unwrap();
    assert_eq!(id.len(), 24);
    assert_eq!(proxied.json()["usage"]["completion_tokens"], 16);
}

#[test]
fn sse_passes_through_byte_identical() {
    let m = mock();
    let gw = gateway_for(&m);
    for body in [CHAT_STREAM, r#"{"model":"claude","stream":true,"max_tokens":5,"messages":[]}"#] {
        let path = if body.contains("claude") { "/v1/messages" } else { "/v1/chat/completions" };
        let direct = roundtrip(m.addr, &post(path, body));
        let proxied = roundtrip(gw.addr, &post(&format!("/mock{path}"), body));
        assert_eq!(proxied.status, 200);
        assert_eq!(proxied.header("content-type"), Some("text/event-stream"));
        assert_eq!(proxied.framing, "chunked");
        assert_eq!(String::from_utf8_lossy(&proxied.body), String::from_utf8_lossy(&direct.body));
    }
}

#[test]
fn first_event_arrives_before_the_second_is_sent() {
    let m = mock();
    let gw = gateway_for(&m);
    let mut c = Client::connect(gw.addr);
    let started = Instant::now();
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 3\r\nx-mock-delay-ms: 1500\r\n"));
    c.read_until(b"\r\n\r\n");
    // The first content event (with the role chunk) is sent at once; the
    // second 1.5 s later. It must reach us well before that.
    let first = c.read_until(b"\"content\":\"The\"");
    assert!(started.elapsed() < Duration::from_millis(1000), "first event took {:?}", started.elapsed());
    assert!(!String::from_utf8_lossy(&first).contains("quick"));
    let rest = c.read_until(b"data: [DONE]\n\n");
    assert!(started.elapsed() >= Duration::from_millis(2900));
    assert!(String::from_utf8_lossy(&rest).contains("\"completion_tokens\":3"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let m = mock();
    let gw = gateway_for(&m);
    let mut c = Client::connect(gw.addr);
    let mut all = get("/mock/v1/models");
    all.extend(post("/mock/v1/chat/completions", CHAT_STREAM));
    all.extend(post_with("/mock/echo", "x", "X-Order: third\r\n"));
    all.extend(get("/nope/x"));
    c.send(&all);
    let r1 = c.read_response();
    assert!(String::from_utf8_lossy(&r1.body).contains("\"object\":\"list\""));
    let r2 = c.read_response();
    assert!(r2.body.ends_with(b"data: [DONE]\n\n"));
    let r3 = c.read_response();
    assert!(r3.json()["headers"].to_string().contains("third"));
    let r4 = c.read_response();
    assert_eq!(r4.status, 404);
    assert_eq!(r4.error_code(), "unknown_route");
    // ...and the connection is still usable.
    c.send(&get("/mock/v1/models"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn chunked_request_body_is_reassembled() {
    let m = mock();
    let gw = gateway_for(&m);
    let raw = b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n";
    let r = roundtrip(gw.addr, raw);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["body"], "hello world");
    let headers = v["headers"].to_string().to_ascii_lowercase();
    assert!(headers.contains(r#"["content-length","11"]"#), "{headers}");
    assert!(!headers.contains("transfer-encoding"), "{headers}");
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let m = mock();
    let gw = gateway_for(&m);
    let mut c = Client::connect(gw.addr);
    c.send(b"POST /mock/echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let interim = c.read_until(b"\r\n\r\n");
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"ping");
    let r = c.read_response();
    assert_eq!(r.json()["body"], "ping");
}

#[test]
fn http10_client_gets_close_delimited_stream() {
    let m = mock();
    let gw = gateway_for(&m);
    let body = CHAT_STREAM;
    let raw = format!("POST /mock/v1/chat/completions HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let r = roundtrip(gw.addr, raw.as_bytes());
    assert_eq!(r.framing, "close");
    assert!(r.body.ends_with(b"data: [DONE]\n\n"));
    // Keep-alive HTTP/1.0 with a Content-Length response stays open.
    let mut c = Client::connect(gw.addr);
    c.send(b"GET /mock/v1/models HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET /mock/v1/models HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    assert!(c.closed_within(Duration::from_secs(2)));
}

#[test]
fn head_is_rewritten_for_the_upstream() {
    let m = mock();
    let toml = format!(
        "{}headers = {{ \"X-Team\" = \"infra\" }}\n{}passthrough_auth = true\n",
        provider("mock", "mock", m.addr),
        provider("pass", "openai", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let headers = "Authorization: Bearer client-gateway-key\r\nx-api-key: other\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nX-Keep: 1\r\nx-aigw-cache-ttl: 60\r\nX-Team: client-value\r\n";
    let r = roundtrip(gw.addr, &post_with("/mock/v1/echo?q=1", "{}", headers));
    let v = r.json();
    assert_eq!(v["target"], "/v1/echo?q=1");
    let seen: Vec<(String, String)> = serde_json::from_value(v["headers"].clone()).unwrap();
    let get =
        |n: &str| seen.iter().filter(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    assert_eq!(get("host"), [m.addr.to_string().as_str()]);
    assert!(get("authorization").is_empty(), "client credentials leaked: {seen:?}");
    assert!(get("x-api-key").is_empty());
    assert_eq!(get("x-forwarded-for"), ["10.1.1.1, 127.0.0.1"]);
    assert!(get("connection").is_empty() && get("x-hop").is_empty(), "{seen:?}");
    assert!(get("x-aigw-cache-ttl").is_empty());
    assert_eq!(get("x-keep"), ["1"]);
    assert_eq!(get("x-team"), ["infra"]);
    assert_eq!(get("content-length"), ["2"]);

    // passthrough_auth forwards the client's credentials.
    let r = roundtrip(gw.addr, &post_with("/pass/echo", "{}", "Authorization: Bearer sk-client\r\n"));
    assert!(r.json()["headers"].to_string().contains("Bearer sk-client"));
}

#[test]
fn provider_keys_are_injected_per_kind() {
    let m = mock();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\n\
         {}api_key_env = \"AIGW_TEST_OPENAI_KEY\"\n{}api_key_env = \"AIGW_TEST_ANTHROPIC_KEY\"\n\
         {}api_key_env = \"AIGW_TEST_GEMINI_KEY\"\n{}api_key_env = \"AIGW_TEST_UNSET_KEY\"\n",
        provider("oa", "openai", m.addr),
        provider("an", "anthropic", m.addr),
        provider("ge", "gemini", m.addr),
        provider("missing", "openai", m.addr),
    );
    let bin = Binary::serve(
        &config,
        &[
            ("AIGW_TEST_OPENAI_KEY", "sk-openai-secret"),
            ("AIGW_TEST_ANTHROPIC_KEY", "sk-ant-secret"),
            ("AIGW_TEST_GEMINI_KEY", "gm-secret"),
        ],
    );
    let seen = |path: &str, extra: &str| {
        roundtrip(bin.addr, &post_with(path, "{}", extra)).json()["headers"].to_string().to_ascii_lowercase()
    };
    let oa = seen("/oa/echo", "Authorization: Bearer gw-key\r\n");
    assert!(oa.contains(r#"["authorization","bearer sk-openai-secret"]"#), "{oa}");
    assert!(!oa.contains("gw-key"));
    let an = seen("/an/echo", "x-api-key: gw-key\r\n");
    assert!(an.contains(r#"["x-api-key","sk-ant-secret"]"#), "{an}");
    assert!(an.contains(r#"["anthropic-version","2023-06-01"]"#), "{an}");
    let an2 = seen("/an/echo", "anthropic-version: 2024-01-01\r\n");
    assert!(an2.contains("2024-01-01") && !an2.contains("2023-06-01"), "{an2}");
    let ge = seen("/ge/echo", "");
    assert!(ge.contains(r#"["x-goog-api-key","gm-secret"]"#), "{ge}");
    let r = roundtrip(bin.addr, &post("/missing/v1/chat/completions", CHAT));
    assert_eq!((r.status, r.error_code().as_str()), (503, "provider_unavailable"));
    assert!(String::from_utf8_lossy(&r.body).contains("AIGW_TEST_UNSET_KEY"));
    let log = bin.log.lock().unwrap().join("\n");
    assert!(!log.contains("secret"), "a key reached the log:\n{log}");
}

/// An upstream that answers each request with `response` and keeps the
/// connection open.
fn canned(response: &'static [u8]) -> RawUpstream {
    RawUpstream::spawn(move |mut s| {
        while read_request(&mut s).is_some() {
            if s.write_all(response).is_err() {
                return;
            }
        }
    })
}

#[test]
fn upstream_framings_are_reframed() {
    // close-delimited
    let close = RawUpstream::spawn(|mut s| {
        read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: a\n\ndata: b\n\n");
    });
    // chunked with extensions and trailers
    let chunked = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nX-T: 1\r\n\r\n");
    // large Content-Length body
    let big = RawUpstream::spawn(|mut s| {
        while read_request(&mut s).is_some() {
            let body = vec![b'z'; 1 << 20];
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
            let _ = s.write_all(&body);
        }
    });
    let toml = format!(
        "{}{}{}",
        provider("close", "openai", close.addr),
        provider("chunked", "openai", chunked.addr),
        provider("big", "openai", big.addr)
    );
    let gw = Gateway::start("", &toml);
    let mut c = Client::connect(gw.addr);
    c.send(&get("/close/x"));
    let r = c.read_response();
    assert_eq!((r.framing, r.body.as_slice()), ("chunked", &b"data: a\n\ndata: b\n\n"[..]));
    c.send(&get("/chunked/x"));
    let r = c.read_response();
    assert_eq!((r.framing, r.body.as_slice()), ("chunked", &b"abcdefg"[..]));
    assert!(r.header("trailer").is_none());
    c.send(&get("/big/x"));
    let r = c.read_response();
    assert_eq!((r.framing, r.body.len()), ("length", 1 << 20));
    assert!(r.body.iter().all(|&b| b == b'z'));
    // The chunked upstream's connection went back to the pool.
    c.send(&get("/chunked/y"));
    assert_eq!(c.read_response().body, b"abcdefg");
    assert_eq!(chunked.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn head_and_no_content_responses_have_no_body() {
    let up = canned(b"HTTP/1.1 204 No Content\r\n\r\n");
    let gw = Gateway::start("", &provider("up", "openai", up.addr));
    let mut c = Client::connect(gw.addr);
    c.send(&get("/up/a"));
    assert_eq!(c.read_response().status, 204);
    c.send(b"HEAD /up/b HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response_to(true);
    assert_eq!(r.status, 204);
}

#[test]
fn unreachable_upstream_is_502() {
    let gw = Gateway::start("", &provider("dead", "openai", dead_addr()));
    let r = roundtrip(gw.addr, &post("/dead/v1/chat/completions", CHAT));
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_unreachable"));
}

#[test]
fn hanging_upstream_is_504() {
    let hang = RawUpstream::spawn(|mut s| {
        read_request(&mut s);
        std::thread::sleep(Duration::from_secs(5));
    });
    let toml = format!("{}first_byte_timeout = \"300ms\"\n", provider("hang", "openai", hang.addr));
    let gw = Gateway::start("", &toml);
    let started = Instant::now();
    let r = roundtrip(gw.addr, &post("/hang/v1/chat/completions", CHAT));
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// One timer per client connection bounds its own reads and its
/// upstream's (`util::timer`). On one keep-alive connection each request
/// still ends at its own deadline: nearer or later than the last one's,
/// after one fired, and in the middle of a stream.
#[test]
fn each_request_on_a_connection_ends_at_its_own_deadline() {
    let m = mock();
    let gw = gateway_for(&m);
    let mut c = Client::connect(gw.addr);
    let stream = |tokens: u32, timeout_ms: u32| {
        let h = format!("x-mock-tokens: {tokens}\r\nx-mock-delay-ms: 100\r\nx-aigw-request-timeout: {timeout_ms}\r\n");
        post_with("/mock/v1/chat/completions", CHAT_STREAM, &h)
    };
    // Four events 100 ms apart under a 5 s deadline: whole.
    c.send(&stream(4, 5000));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("data: [DONE]"));
    // A nearer deadline than the last one's: the answer is 504 at it.
    let started = Instant::now();
    c.send(&post_with("/mock/v1/chat/completions", CHAT, "x-aigw-request-timeout: 300\r\nx-mock-ttft-ms: 3000\r\n"));
    let r = c.read_response();
    assert_eq!((r.status, r.error_code().as_str()), (504, "upstream_timeout"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_millis(2500), "{took:?}");
    // After that deadline fired, a later one holds: an answer 400 ms late
    // arrives.
    c.send(&post_with("/mock/v1/chat/completions", CHAT, "x-aigw-request-timeout: 5000\r\nx-mock-ttft-ms: 400\r\n"));
    assert_eq!(c.read_response().status, 200);
    // A deadline in the middle of a stream (20 events, 2 s) cuts it there:
    // no end marker, no last chunk, and the connection closes.
    let started = Instant::now();
    c.send(&stream(20, 500));
    let cut = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    let took = started.elapsed();
    assert!(cut.starts_with("HTTP/1.1 200"), "{cut}");
    assert!(cut.contains("\"content\""), "{cut}");
    assert!(!cut.contains("[DONE]") && !cut.ends_with("0\r\n\r\n"), "{cut}");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1800), "{took:?}");
}

#[test]
fn invalid_upstream_responses_are_502() {
    let garbage = canned(b"SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let smuggle = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let closes = RawUpstream::spawn(|mut s| {
        read_request(&mut s);
    });
    let toml = format!(
        "{}{}{}",
        provider("garbage", "openai", garbage.addr),
        provider("smuggle", "openai", smuggle.addr),
        provider("closes", "openai", closes.addr)
    );
    let gw = Gateway::start("", &toml);
    for (name, code) in [
        ("garbage", "upstream_invalid_response"),
        ("smuggle", "upstream_invalid_response"),
        ("closes", "upstream_closed"),
    ] {
        let r = roundtrip(gw.addr, &post(&format!("/{name}/v1/chat/completions"), CHAT));
        assert_eq!((r.status, r.error_code().as_str()), (502, code), "{name}");
    }
}

#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    // Answers one request per connection, advertising keep-alive, then
    // closes: the pooled connection is dead by the second request.
    let up = RawUpstream::spawn(|mut s| {
        if read_request(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    // One client connection is served by one worker, and so by one pool.
    let gw = Gateway::start("", &provider("up", "openai", up.addr));
    let mut c = Client::connect(gw.addr);
    for _ in 0..3 {
        c.send(&get("/up/x"));
        let r = c.read_response();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn client_disconnect_frees_the_upstream_at_once() {
    let m = mock();
    let gw = gateway_for(&m);
    let mut c = Client::connect(gw.addr);
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 1000\r\nx-mock-delay-ms: 50\r\n"));
    c.read_until(b"\"content\":\"The\"");
    assert_eq!(m.stats.streams_active.load(Ordering::SeqCst), 1);
    drop(c);
    // The mock notices within a couple of its 50 ms writes that the
    // gateway closed the upstream connection (the stream would last 50 s).
    assert!(
        eventually(Duration::from_secs(2), || m.stats.streams_aborted.load(Ordering::SeqCst) == 1),
        "upstream stream was not aborted"
    );
    assert_eq!(m.stats.streams_active.load(Ordering::SeqCst), 0);
    assert_eq!(m.stats.streams_completed.load(Ordering::SeqCst), 0);
}

#[test]
fn epoll_driver_serves_streams_too() {
    let m = mock();
    let gw = Gateway::start("io_driver = \"epoll\"", &provider("mock", "mock", m.addr));
    let direct = roundtrip(m.addr, &post("/v1/chat/completions", CHAT_STREAM));
    let proxied = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT_STREAM));
    assert_eq!(proxied.body, direct.body);
    let mut c = Client::connect(gw.addr);
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 1000\r\nx-mock-delay-ms: 50\r\n"));
    c.read_until(b"\"content\":\"The\"");
    drop(c);
    assert!(eventually(Duration::from_secs(2), || m.stats.streams_aborted.load(Ordering::SeqCst) == 1));
}

#[test]
fn tls_upstream_with_a_private_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("aigw-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();

    let server_config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
            )
            .unwrap(),
    );
    let up = RawUpstream::spawn(move |s: TcpStream| {
        let conn = rustls::ServerConnection::new(server_config.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if std::io::Read::read(&mut tls, &mut byte).unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let host = String::from_utf8_lossy(&head).lines().find(|l| l.starts_with("Host:")).unwrap_or("").to_string();
        let body = format!("{{\"host\":\"{}\"}}", host.trim_start_matches("Host: "));
        let _ = tls.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        let _ = tls.flush();
        std::thread::sleep(Duration::from_millis(200));
    });
    let toml = format!(
        "[providers.secure]\nkind = \"openai\"\nbase_url = \"https://localhost:{}\"\ntls_ca_file = \"{}\"\n\
         [providers.untrusted]\nkind = \"openai\"\nbase_url = \"https://localhost:{}\"\n",
        up.addr.port(),
        ca.display(),
        up.addr.port()
    );
    let gw = Gateway::start("", &toml);
    let r = roundtrip(gw.addr, &get("/secure/v1/models"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["host"], format!("localhost:{}", up.addr.port()));
    // Without the CA the certificate is refused.
    let r = roundtrip(gw.addr, &get("/untrusted/v1/models"));
    assert_eq!((r.status, r.error_code().as_str()), (502, "upstream_tls_error"));
}

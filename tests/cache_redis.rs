//! The Redis cache backend: two gateways (two "hosts") share hits through
//! a real redis-server.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn redis_gateway(redis: std::net::SocketAddr, mock: std::net::SocketAddr) -> Gateway {
    let toml = format!(
        "[cache]\nbackend = \"redis\"\nredis_url = \"redis://{redis}\"\nredis_prefix = \"test:\"\n{}cache_ttl = \"60s\"\n",
        provider("mock", "mock", mock)
    );
    Gateway::start("", &toml)
}

fn status_of(r: &Response) -> &str {
    r.header("x-aigw-cache-status").unwrap()
}

#[test]
fn two_hosts_share_hits_and_purges() {
    let redis = RedisServer::start();
    let m = mock();
    let (a, b) = (redis_gateway(redis.addr, m.addr), redis_gateway(redis.addr, m.addr));
    for body in [CHAT, CHAT_STREAM] {
        let first = roundtrip(a.addr, &post("/mock/v1/chat/completions", body));
        assert_eq!(status_of(&first), "MISS");
        // The store is written on its own task, just after the answer.
        let mut hit = None;
        assert!(eventually(Duration::from_secs(5), || {
            let r = roundtrip(b.addr, &post("/mock/v1/chat/completions", body));
            let is_hit = status_of(&r) == "HIT";
            hit = Some(r);
            is_hit
        }));
        let hit = hit.unwrap();
        assert_eq!(hit.body, first.body, "the other host's hit is byte-identical");
        assert_eq!(hit.framing, first.framing);
    }
    let upstream_before = m.requests();
    assert!(redis.command(&["DBSIZE"]).starts_with(":2"), "{}", redis.command(&["DBSIZE"]));
    let raw = b"POST /admin/cache/purge?provider=mock HTTP/1.1\r\nHost: localhost\r\nx-aigw-admin: 1\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(roundtrip(b.admin, raw).json()["purged"], 2);
    assert_eq!(status_of(&roundtrip(a.addr, &post("/mock/v1/chat/completions", CHAT))), "MISS");
    assert_eq!(m.requests(), upstream_before + 1);
}

#[test]
fn expired_entries_and_an_unreachable_redis() {
    let redis = RedisServer::start();
    let m = mock();
    let gw = redis_gateway(redis.addr, m.addr);
    let ask = || roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", CHAT, "x-aigw-cache-ttl: 1\r\n"));
    assert_eq!(status_of(&ask()), "MISS");
    assert!(eventually(Duration::from_secs(1), || status_of(&ask()) == "HIT"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(status_of(&ask()), "EXPIRED");

    // Redis goes away: every request still gets its answer (a miss), no
    // slower than the Redis timeout (100 ms; the bound leaves a loaded CI
    // machine room for scheduling), and the errors are counted.
    redis.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT));
        assert_eq!((r.status, status_of(&r)), (200, "MISS"));
        assert!(started.elapsed() < Duration::from_millis(100 + 500), "{:?}", started.elapsed());
    }
    let mut text = String::new();
    assert!(eventually(Duration::from_secs(5), || {
        text = metrics_text(gw.admin);
        metric(&text, "aigw_cache_redis_errors_total ") >= 5.0
    }));
    let raw = b"POST /admin/cache/purge HTTP/1.1\r\nHost: localhost\r\nx-aigw-admin: 1\r\nContent-Length: 0\r\n\r\n";
    let r = roundtrip(gw.admin, raw);
    assert_eq!((r.status, r.error_code()), (502, "cache_backend_error".to_string()));
}

#[test]
fn a_redis_that_never_answers_costs_one_timeout_per_cooldown() {
    // Accepts connections and never answers: every command would wait its
    // whole timeout. The client's breaker stops asking after the first.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blackhole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in blackhole.incoming() {
            held.push(s);
        }
    });
    let m = mock();
    let toml = format!(
        "[cache]\nbackend = \"redis\"\nredis_url = \"redis://{addr}\"\nredis_timeout = \"300ms\"\n{}cache_ttl = \"60s\"\n",
        provider("mock", "mock", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let started = Instant::now();
    for i in 0..10 {
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{i}"}}]}}"#);
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &body));
        assert_eq!((r.status, status_of(&r)), (200, "MISS"));
    }
    // Ten lookups at 300 ms each would take 3 s; with the breaker, the
    // first pays the timeout and the rest go straight upstream (within the
    // 2 s cooldown).
    let took = started.elapsed();
    assert!(took < Duration::from_millis(300 + 1000), "{took:?}");
    assert!(took >= Duration::from_millis(300), "the first lookup waited its timeout: {took:?}");
}

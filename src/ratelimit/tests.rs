use bytes::Bytes;

use super::*;
use crate::http::request::{self, HeadLimits};

fn head(extra: &str) -> RequestHead {
    let raw = format!("POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let parsed = request::parse(raw.as_bytes(), HeadLimits { max_head_bytes: 8192, max_headers: 64 }).unwrap().unwrap();
    RequestHead::new(Bytes::from(raw), parsed)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap().block_on(f)
}

fn rule(name: &str, key: LimitKey, unit: Unit, limit: u64) -> RateLimitRule {
    RateLimitRule {
        name: name.into(),
        key,
        unit,
        limit,
        window: Duration::from_secs(60),
        burst: limit,
        scope: crate::config::Scope::default(),
    }
}

fn input<'a>(h: &'a RequestHead, peer: &str) -> LimitInput<'a> {
    LimitInput {
        head: h,
        peer: peer.parse().unwrap(),
        key: None,
        provider: "openai",
        route: "openai",
        model: Some("m"),
    }
}

#[test]
fn per_ip_limit_admits_exactly_the_burst_and_refunds_on_a_later_refusal() {
    let l = Limiter::new(
        &[rule("ip", LimitKey::Ip, Unit::Requests, 3), rule("all", LimitKey::Provider, Unit::Requests, 4)],
        vec![],
        &crate::config::LimitStore::Memory,
    );
    let h = head("");
    let now = l.table.now();
    for i in 0..3 {
        let a = block_on(l.admit(&input(&h, "10.0.0.1"), now)).unwrap();
        assert_eq!(a.requests.unwrap().remaining, 2 - i);
    }
    let r = block_on(l.admit(&input(&h, "10.0.0.1"), now)).unwrap_err();
    assert_eq!((&*r.rule, r.retry_after), ("ip", Duration::from_secs(20)));
    // Another address passes the ip rule but the provider rule has one left.
    assert!(block_on(l.admit(&input(&h, "10.0.0.2"), now)).is_ok());
    let r = block_on(l.admit(&input(&h, "10.0.0.3"), now)).unwrap_err();
    assert_eq!(&*r.rule, "all");
    // 10.0.0.3's ip bucket was refunded: after the provider bucket refills,
    // it still has its whole burst.
    let later = now + 15_000_000_000;
    let a = block_on(l.admit(&input(&h, "10.0.0.3"), later)).unwrap();
    assert_eq!(a.requests.map(|s| s.remaining), Some(0), "most restrictive: the provider bucket");
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let l =
        Limiter::new(&[], vec![crate::config::Cidr::parse("127.0.0.1").unwrap()], &crate::config::LimitStore::Memory);
    let h = head("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n");
    assert_eq!(l.client_ip(&h, "127.0.0.1".parse().unwrap()).to_string(), "203.0.113.9");
    assert_eq!(l.client_ip(&h, "10.1.1.1".parse().unwrap()).to_string(), "10.1.1.1");
    let spoof = head("X-Forwarded-For: not-an-ip\r\n");
    assert_eq!(l.client_ip(&spoof, "127.0.0.1".parse().unwrap()).to_string(), "127.0.0.1");
}

#[test]
fn token_limits_debit_after_and_wait() {
    let l = Limiter::new(
        &[rule("tpm", LimitKey::Header("x-team".into()), Unit::Tokens, 1000)],
        vec![],
        &crate::config::LimitStore::Memory,
    );
    let h = head("x-team: a\r\n");
    let now = l.table.now();
    let a = block_on(l.admit(&input(&h, "10.0.0.1"), now)).unwrap();
    l.settle_tokens(&a, 2500, now);
    let r = block_on(l.admit(&input(&h, "10.0.0.1"), now)).unwrap_err();
    assert_eq!(r.unit, Unit::Tokens);
    assert_eq!(retry_after_secs(r.retry_after), 91);
    // Another team is unaffected.
    assert!(block_on(l.admit(&input(&head("x-team: b\r\n"), "10.0.0.1"), now)).is_ok());
}

#[test]
fn header_formats() {
    assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
    assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
    assert_eq!(reset_text(Duration::from_secs(2)), "2s");
    assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    let mut out = Vec::new();
    headers(&mut out, Some(UnitState { limit: 10, remaining: 9, reset: Duration::from_secs(6) }), None);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "x-ratelimit-limit-requests: 10\r\nx-ratelimit-remaining-requests: 9\r\nx-ratelimit-reset-requests: 6s\r\n"
    );
}

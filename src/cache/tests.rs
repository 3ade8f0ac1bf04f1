use bytes::Bytes;

use super::*;
use crate::http::request::{self, HeadLimits};

fn head(extra: &str) -> RequestHead {
    let raw = format!("POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let limits = HeadLimits { max_head_bytes: 8192, max_headers: 64 };
    let parsed = request::parse(raw.as_bytes(), limits).unwrap().unwrap();
    RequestHead::new(Bytes::from(raw), parsed)
}

fn plan(cache: &Cache, extra: &str, provider_ttl: Option<Duration>) -> Result<Plan, GatewayError> {
    let h = head(extra);
    cache.plan(&PlanInput {
        head: &h,
        provider: "openai",
        provider_ttl,
        path: b"/v1/chat/completions",
        body: b"{}",
        stripped: false,
        key_id: None,
    })
}

fn key_of(p: Result<Plan, GatewayError>) -> CacheKey {
    match p {
        Ok(Plan::Use { key, .. }) => key,
        other => panic!("expected a cacheable plan, got {other:?}"),
    }
}

#[test]
fn off_unless_configured_or_asked() {
    let c = Cache::new(CacheConfig::default());
    assert_eq!(plan(&c, "", None).unwrap(), Plan::Off);
    assert!(matches!(plan(&c, "x-aigw-cache-ttl: 60\r\n", None), Ok(Plan::Use { ttl, .. }) if ttl.as_secs() == 60));
    assert!(matches!(plan(&c, "", Some(Duration::from_secs(5))), Ok(Plan::Use { ttl, .. }) if ttl.as_secs() == 5));
    assert_eq!(plan(&c, "x-aigw-skip-cache: true\r\n", Some(Duration::from_secs(5))).unwrap(), Plan::Bypass);
    assert_eq!(plan(&c, "x-aigw-cache-ttl: 0\r\n", Some(Duration::from_secs(5))).unwrap(), Plan::Bypass);
    assert!(plan(&c, "x-aigw-cache-ttl: soon\r\n", None).is_err());
    assert!(plan(&c, "x-aigw-cache-ttl: 99999999\r\n", None).is_err());
    assert!(plan(&c, "x-aigw-skip-cache: maybe\r\n", None).is_err());
    assert!(plan(&c, &format!("x-aigw-cache-key: {}\r\n", "k".repeat(513)), None).is_err());
}

#[test]
fn scope_vary_and_custom_keys() {
    let c = Cache::new(CacheConfig { default_ttl: Duration::from_secs(60), ..CacheConfig::default() });
    let anon = key_of(plan(&c, "", None));
    let alice = key_of(plan(&c, "Authorization: Bearer alice\r\n", None));
    let bob = key_of(plan(&c, "Authorization: Bearer bob\r\n", None));
    assert!(anon != alice && alice != bob);
    assert_eq!(alice, key_of(plan(&c, "authorization: Bearer alice\r\nx-other: 1\r\n", None)));
    assert_ne!(alice, key_of(plan(&c, "Authorization: Bearer alice\r\nOpenAI-Organization: org-1\r\n", None)));
    let custom = key_of(plan(&c, "x-aigw-cache-key: faq\r\n", None));
    assert_eq!(custom, CacheKey::custom("openai", None, b"faq"));

    let shared = Cache::new(CacheConfig {
        default_ttl: Duration::from_secs(60),
        scope: CacheScope::Shared,
        ..CacheConfig::default()
    });
    assert_eq!(
        key_of(plan(&shared, "Authorization: Bearer alice\r\n", None)),
        key_of(plan(&shared, "Authorization: Bearer bob\r\n", None))
    );
}

#[test]
fn expired_entries_are_reported_as_such() {
    let c = Cache::new(CacheConfig::default());
    let entry = |expires_unix_ms| Entry {
        status: 200,
        headers: Bytes::new(),
        body: Bytes::from_static(b"{}"),
        stream: false,
        expires_unix_ms,
        provider: Arc::from("openai"),
        usage: None,
    };
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap();
    rt.block_on(async {
        assert!(matches!(c.get("openai", CacheKey(1)).await, Lookup::Miss));
        c.put(CacheKey(1), entry(crate::util::now_unix_ms() + 60_000));
        assert!(matches!(c.get("openai", CacheKey(1)).await, Lookup::Hit(_)));
        c.put(CacheKey(2), entry(crate::util::now_unix_ms() - 1));
        assert!(matches!(c.get("openai", CacheKey(2)).await, Lookup::Expired));
        assert_eq!(c.purge(Purge::All).await, Ok(2));
    });
}

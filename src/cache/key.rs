//! Cache keys: 128-bit xxh3 over everything that decides the answer.
//!
//! Every field goes in with its length first, so no two different requests
//! can hash the same bytes by moving a boundary.

use xxhash_rust::xxh3::Xxh3;

/// A response's identity in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

/// What the derived key covers.
pub struct KeyParts<'a> {
    pub provider: &'a str,
    pub method: &'a [u8],
    /// The path (and query) under the provider, as forwarded.
    pub path: &'a [u8],
    /// The body as forwarded, after the gateway's own rewrites.
    pub body: &'a [u8],
    /// The client identity that owns the entry; None when shared.
    pub scope: Option<u128>,
    /// The configured vary headers, in config order, with the request's
    /// values (None: absent).
    pub vary: &'a [(&'a str, Option<&'a [u8]>)],
    /// The gateway strips what it added to the stream (include_usage): the
    /// stored stream differs from one the client asked usage for.
    pub stripped: bool,
}

fn field(h: &mut Xxh3, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn scope(h: &mut Xxh3, scope: Option<u128>) {
    match scope {
        Some(s) => {
            h.update(&[1]);
            h.update(&s.to_le_bytes());
        }
        None => h.update(&[0]),
    }
}

impl CacheKey {
    pub fn derive(p: &KeyParts<'_>) -> CacheKey {
        let mut h = Xxh3::new();
        h.update(b"aigw-cache-v1\0");
        field(&mut h, p.provider.as_bytes());
        field(&mut h, p.method);
        field(&mut h, p.path);
        scope(&mut h, p.scope);
        h.update(&[u8::from(p.stripped)]);
        for (name, value) in p.vary {
            field(&mut h, name.as_bytes());
            match value {
                Some(v) => field(&mut h, v),
                None => h.update(&u64::MAX.to_le_bytes()),
            }
        }
        field(&mut h, p.body);
        CacheKey(h.digest128())
    }

    /// `x-aigw-cache-key: KEY`: the client names the entry. The key still
    /// lives in the provider's namespace and the client's scope, so one
    /// client cannot read another's entries by guessing names.
    pub fn custom(provider: &str, scope_id: Option<u128>, key: &[u8]) -> CacheKey {
        let mut h = Xxh3::new();
        h.update(b"aigw-cache-custom-v1\0");
        field(&mut h, provider.as_bytes());
        scope(&mut h, scope_id);
        field(&mut h, key);
        CacheKey(h.digest128())
    }

    /// 32 lower-case hex digits, as logged and as `/admin/cache/purge?key=`
    /// takes it.
    pub fn hex(self) -> String {
        format!("{:032x}", self.0)
    }

    pub fn parse_hex(s: &str) -> Option<CacheKey> {
        (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok().map(CacheKey)).flatten()
    }
}

/// The identity hash of a credential (never stored as such).
pub fn identity(credential: &[u8]) -> u128 {
    let mut h = Xxh3::new();
    h.update(b"aigw-identity\0");
    h.update(credential);
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(body: &'a [u8], vary: &'a [(&'a str, Option<&'a [u8]>)]) -> KeyParts<'a> {
        KeyParts {
            provider: "openai",
            method: b"POST",
            path: b"/v1/chat/completions",
            body,
            scope: None,
            vary,
            stripped: false,
        }
    }

    #[test]
    fn every_field_counts() {
        let base = CacheKey::derive(&parts(b"{}", &[]));
        assert_eq!(base, CacheKey::derive(&parts(b"{}", &[])));
        assert_ne!(base, CacheKey::derive(&parts(b"{ }", &[])));
        assert_ne!(base, CacheKey::derive(&KeyParts { provider: "vllm", ..parts(b"{}", &[]) }));
        assert_ne!(base, CacheKey::derive(&KeyParts { path: b"/v1/embeddings", ..parts(b"{}", &[]) }));
        assert_ne!(base, CacheKey::derive(&KeyParts { scope: Some(1), ..parts(b"{}", &[]) }));
        assert_ne!(base, CacheKey::derive(&KeyParts { stripped: true, ..parts(b"{}", &[]) }));
        let v1: &[(&str, Option<&[u8]>)] = &[("openai-organization", Some(b"a"))];
        let v2: &[(&str, Option<&[u8]>)] = &[("openai-organization", None)];
        assert_ne!(CacheKey::derive(&parts(b"{}", v1)), CacheKey::derive(&parts(b"{}", v2)));
        // Boundaries cannot move: provider "ab" + path "c" ≠ provider "a" + path "bc".
        let a = CacheKey::derive(&KeyParts { provider: "ab", path: b"c", ..parts(b"", &[]) });
        let b = CacheKey::derive(&KeyParts { provider: "a", path: b"bc", ..parts(b"", &[]) });
        assert_ne!(a, b);
    }

    #[test]
    fn custom_keys_are_scoped_and_hex_round_trips() {
        let k = CacheKey::custom("openai", None, b"faq-1");
        assert_ne!(k, CacheKey::custom("openai", Some(7), b"faq-1"));
        assert_ne!(k, CacheKey::custom("vllm", None, b"faq-1"));
        assert_eq!(CacheKey::parse_hex(&k.hex()), Some(k));
        assert_eq!(CacheKey::parse_hex("xyz"), None);
        assert_eq!(CacheKey::parse_hex(&"g".repeat(32)), None);
    }
}

//! A stored response and its wire form for the Redis backend.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};

use crate::tap::Usage;

/// One cached response: what the client was sent, minus per-request
/// headers (request id, framing, connection, cache status).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub status: u16,
    /// End-to-end response headers as `Name: value\r\n` lines.
    pub headers: Bytes,
    /// The body as the client received it, unframed.
    pub body: Bytes,
    /// An event stream: replayed chunked, as a stream.
    pub stream: bool,
    /// Wall-clock expiry (Unix ms), so entries shared through Redis agree
    /// across hosts.
    pub expires_unix_ms: u64,
    pub provider: Arc<str>,
    /// What the original response cost, for "saved by hits".
    pub usage: Option<Usage>,
}

/// Bookkeeping per entry beyond its bytes (key, Arc, store slot), so a flood
/// of tiny entries is bounded too.
pub const OVERHEAD: u64 = 160;

impl Entry {
    pub fn weight(&self) -> u64 {
        self.body.len() as u64 + self.headers.len() as u64 + self.provider.len() as u64 + OVERHEAD
    }

    pub fn expired(&self, now_unix_ms: u64) -> bool {
        now_unix_ms >= self.expires_unix_ms
    }

    /// The Redis value: a versioned binary record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.provider.len() + self.headers.len() + self.body.len());
        out.put_slice(MAGIC);
        out.put_u16(self.status);
        out.put_u8(u8::from(self.stream) | (u8::from(self.usage.is_some()) << 1));
        out.put_u64(self.expires_unix_ms);
        let u = self.usage.unwrap_or_default();
        for n in [u.input, u.output, u.cached_input, u.cache_write, u.reasoning] {
            out.put_u64(n);
        }
        // Provider names are short and heads are bounded far below 4 GiB;
        // the caps only keep the format's length fields honest.
        let provider = &self.provider.as_bytes()[..self.provider.len().min(usize::from(u16::MAX))];
        out.put_u16(provider.len() as u16);
        out.put_slice(provider);
        let headers = &self.headers[..self.headers.len().min(u32::MAX as usize)];
        out.put_u32(headers.len() as u32);
        out.put_slice(headers);
        out.put_slice(&self.body);
        out
    }

    /// None for anything that is not a well-formed record of this version
    /// (a value written by another program or version is a miss).
    pub fn decode(mut b: Bytes) -> Option<Entry> {
        const FIXED: usize = 4 + 2 + 1 + 8 + 5 * 8 + 2;
        if b.len() < FIXED || &b[..4] != MAGIC {
            return None;
        }
        b.advance(4);
        let status = b.get_u16();
        let flags = b.get_u8();
        let expires_unix_ms = b.get_u64();
        let mut n = [0u64; 5];
        for x in &mut n {
            *x = b.get_u64();
        }
        let plen = usize::from(b.get_u16());
        if b.len() < plen + 4 {
            return None;
        }
        let provider: Arc<str> = Arc::from(std::str::from_utf8(&b[..plen]).ok()?);
        b.advance(plen);
        let hlen = b.get_u32() as usize;
        if b.len() < hlen || !(200..300).contains(&status) {
            return None;
        }
        let headers = b.split_to(hlen);
        let usage = (flags & 2 != 0).then_some(Usage {
            input: n[0],
            output: n[1],
            cached_input: n[2],
            cache_write: n[3],
            reasoning: n[4],
        });
        Some(Entry { status, headers, body: b, stream: flags & 1 != 0, expires_unix_ms, provider, usage })
    }
}

const MAGIC: &[u8; 4] = b"AGC1";

/// Response headers that belong to one exchange, not to the answer: never
/// stored, so a hit gets its own.
pub fn stored_header(name: &[u8]) -> bool {
    const PER_EXCHANGE: &[&[u8]] =
        &[b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"date", b"set-cookie", b"age"];
    !(PER_EXCHANGE.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name.len() > 7 && name[..7].eq_ignore_ascii_case(b"x-aigw-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            status: 200,
            headers: Bytes::from_static(b"content-type: text/event-stream\r\n"),
            body: Bytes::from_static(b"data: {}\n\ndata: [DONE]\n\n"),
            stream: true,
            expires_unix_ms: 1_800_000_000_000,
            provider: Arc::from("openai"),
            usage: Some(Usage { input: 10, output: 20, cached_input: 3, cache_write: 0, reasoning: 5 }),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let e = entry();
        assert_eq!(Entry::decode(Bytes::from(e.encode())), Some(e.clone()));
        let plain = Entry { usage: None, stream: false, ..e };
        assert_eq!(Entry::decode(Bytes::from(plain.encode())), Some(plain));
    }

    #[test]
    fn truncated_or_foreign_values_are_misses() {
        let wire = entry().encode();
        for cut in 0..wire.len() - entry().body.len() {
            assert_eq!(Entry::decode(Bytes::copy_from_slice(&wire[..cut])), None, "cut at {cut}");
        }
        assert_eq!(Entry::decode(Bytes::from_static(b"hello world, not an entry at all, padding padding")), None);
    }

    #[test]
    fn per_exchange_headers_are_not_stored() {
        assert!(stored_header(b"Content-Type"));
        assert!(stored_header(b"openai-processing-ms"));
        assert!(!stored_header(b"Content-Length"));
        assert!(!stored_header(b"Set-Cookie"));
        assert!(!stored_header(b"x-aigw-request-id"));
    }
}

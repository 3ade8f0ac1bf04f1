//! HTTP/1.1 codec without I/O: parsers take bytes and answer Complete or
//! Partial, so every one of them can be tested by splitting its input at every
//! byte offset. The I/O loops live in `server/` and `upstream/`.
//!
//! Hand-written (on httparse for the head grammar) because it is our core:
//! heads are parsed in place and kept as offsets into one frozen buffer, and
//! bodies move as `Bytes` slices of the buffer they were read into.

pub mod chunked;
pub mod path;
pub mod request;
pub mod respond;
pub mod response;
pub mod write;

use std::ops::Range;

/// Upper bound on `server.max_headers`; the parser's header array lives on
/// the stack.
pub const MAX_HEADERS_CAP: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// A header as offsets into the head buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRef {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// Offset of `inner` within `outer`; both come from the same parse.
fn offset_in(outer: &[u8], inner: &[u8]) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    start..start + inner.len()
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &v[start..end]
}

/// Parses a Content-Length value: 1*DIGIT, nothing else (no sign, no list).
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// Iterates the comma-separated tokens of a list header, trimmed.
pub fn list_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 8] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        for bad in [&b""[..], b"+1", b"-1", b"1,1", b"1 1", b"0x10", b"99999999999999999999"] {
            assert_eq!(parse_content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn tokens_and_trim() {
        let t: Vec<_> = list_tokens(b" close , Keep-Alive,,").collect();
        assert_eq!(t, [&b"close"[..], b"Keep-Alive"]);
        assert_eq!(trim_ows(b" \t "), b"");
    }
}

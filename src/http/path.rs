//! Request paths that must stay inside the provider they address.
//!
//! `/{provider}/{rest}` is forwarded as the provider's base path + `rest`.
//! A dot segment in `rest` (`..`, `.`, percent-encoded in any case, or
//! hidden behind an encoded slash or a backslash that some servers treat as
//! one) would let a client reach other paths of the upstream host than the
//! gateway meant to expose — and be checked, limited and priced as one
//! thing while the upstream serves another. Such paths are refused, not
//! normalised: nothing a client sends is silently rewritten.

/// Why a path is refused.
pub const DOT_SEGMENT: &str = "dot segments (`.`, `..`) are not allowed in the path";
pub const EMPTY_SEGMENT: &str = "empty path segments (`//`) are not allowed";

/// Checks the path part (before any `?`) of `rest`, which starts with `/`
/// or is empty. A single trailing slash is allowed. Allocates only for a
/// segment with a percent escape.
pub fn check_segments(rest: &[u8]) -> Result<(), &'static str> {
    let path = &rest[..memchr::memchr(b'?', rest).unwrap_or(rest.len())];
    // The common case, checked in one pass: nothing that can make a dot
    // segment, and no empty one.
    if memchr::memchr3(b'.', b'%', b'\\', path).is_none() && memchr::memmem::find(path, b"//").is_none() {
        return Ok(());
    }
    let Some(path) = path.strip_prefix(b"/") else { return Ok(()) };
    let mut segments = path.split(|&b| b == b'/').peekable();
    while let Some(seg) = segments.next() {
        if seg.is_empty() {
            if segments.peek().is_none() {
                break;
            }
            return Err(EMPTY_SEGMENT);
        }
        let dots = |s: &[u8]| s.split(|&b| b == b'\\').any(|p| p == b"." || p == b"..");
        let bad = if memchr::memchr(b'%', seg).is_some() {
            // A decoded `/` or `\` splits the segment again for whoever
            // decodes it.
            percent_decode(seg).split(|&b| b == b'/').any(dots)
        } else {
            dots(seg)
        };
        if bad {
            return Err(DOT_SEGMENT);
        }
    }
    Ok(())
}

/// `%XX` decoded (any case); malformed escapes are kept as they are.
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_pass() {
        for ok in [&b""[..], b"/", b"/v1/chat/completions", b"/v1/models/", b"/v1/x?a=../b", b"/v1/a.b/..c/.d"] {
            assert_eq!(check_segments(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn dot_and_empty_segments_are_refused() {
        for bad in [
            &b"/.."[..],
            b"/v1/../admin",
            b"/v1/./x",
            b"/v1/%2e%2e/x",
            b"/v1/%2E%2e/x",
            b"/v1/.%2E",
            b"/v1/%2e",
            b"/v1/..%2fadmin",
            b"/v1/..%2Fadmin",
            b"/v1/a%2f..%2fb",
            b"/v1/..\\admin",
            b"/v1/..%5cadmin",
            b"/v1/..?x=1",
        ] {
            assert_eq!(check_segments(bad), Err(DOT_SEGMENT), "{}", String::from_utf8_lossy(bad));
        }
        for bad in [&b"//v1"[..], b"/v1//chat", b"/v1///"] {
            assert_eq!(check_segments(bad), Err(EMPTY_SEGMENT), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%2Fb%2fc%zz%4"), b"a/b/c%zz%4");
    }
}

//! Upstream response heads: parsed in place, framing decided per RFC 9112
//! §6.3 from the request method and the status.

use super::{HeaderRef, MAX_HEADERS_CAP, Version, list_tokens, offset_in, parse_content_length};

/// How the upstream delimits the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// HEAD, 1xx, 204, 304: no body whatever the headers say.
    Empty,
    Length(u64),
    Chunked,
    /// No length: the body ends when the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub len: usize,
    pub version: Version,
    pub status: u16,
    pub reason: std::ops::Range<usize>,
    pub headers: Vec<HeaderRef>,
    pub framing: ResponseFraming,
    /// The upstream lets us reuse the connection after this response.
    pub keep_alive: bool,
}

/// Why an upstream head is unusable: the gateway answers 502.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Malformed(&'static str),
    TooLarge,
}

/// Parses a response head at the start of `buf`; `Ok(None)`: read more.
pub fn parse(buf: &[u8], head_request: bool, max_head: usize) -> Result<Option<ParsedResponse>, ResponseError> {
    // Uninitialised, as the request parser's: filling 256 empty headers
    // (8 KiB) before every parse was ~2% of a proxied request's CPU at
    // saturation (perf, docs/benchmarks.md).
    let mut storage = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head { Err(ResponseError::TooLarge) } else { Ok(None) };
        }
        Err(_) => return Err(ResponseError::Malformed("invalid HTTP response head")),
    };
    if len > max_head {
        return Err(ResponseError::TooLarge);
    }
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(ResponseError::Malformed("incomplete status line"));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = version == Version::Http10;
    let mut headers = Vec::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(ResponseError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ResponseError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            chunked = list_tokens(h.value).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in list_tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && version == Version::Http10 {
                    close = false;
                }
            }
        }
        headers.push(HeaderRef { name: offset_in(buf, name), value: offset_in(buf, h.value) });
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseFraming::Empty
    } else if transfer_encoding {
        if content_length.is_some() {
            // Both is how response smuggling starts; refuse rather than guess.
            return Err(ResponseError::Malformed("both Content-Length and Transfer-Encoding"));
        }
        if chunked { ResponseFraming::Chunked } else { ResponseFraming::UntilClose }
    } else {
        match content_length {
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::UntilClose,
        }
    };
    let keep_alive = !close && framing != ResponseFraming::UntilClose;
    Ok(Some(ParsedResponse {
        len,
        version,
        status,
        reason: resp.reason.map_or(0..0, |r| offset_in(buf, r.as_bytes())),
        headers,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(raw: &str, head: bool) -> ResponseFraming {
        match parse(raw.as_bytes(), head, 65536) {
            Ok(Some(p)) => p.framing,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false), ResponseFraming::Length(3));
        assert_eq!(framing("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true), ResponseFraming::Empty);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false), ResponseFraming::Chunked);
        assert_eq!(framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false), ResponseFraming::UntilClose);
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n", false), ResponseFraming::UntilClose);
        assert_eq!(framing("HTTP/1.1 204 No Content\r\n\r\n", false), ResponseFraming::Empty);
        assert_eq!(framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), ResponseFraming::Empty);
        assert_eq!(framing("HTTP/1.1 103 Early Hints\r\n\r\n", false), ResponseFraming::Empty);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &str| parse(raw.as_bytes(), false, 65536).ok().flatten().map(|p| p.keep_alive);
        assert_eq!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Some(true));
        assert_eq!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), Some(false));
        assert_eq!(ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), Some(false));
        assert_eq!(ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"), Some(true));
        assert_eq!(ka("HTTP/1.1 200 OK\r\n\r\n"), Some(false));
    }

    #[test]
    fn rejects_invalid_heads() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        ] {
            assert!(matches!(parse(raw.as_bytes(), false, 65536), Err(ResponseError::Malformed(_))), "{raw:?}");
        }
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
        assert_eq!(parse(long.as_bytes(), false, 50), Err(ResponseError::TooLarge));
    }

    #[test]
    fn split_at_every_offset() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        for k in 0..raw.len() {
            assert_eq!(parse(&raw[..k], false, 65536), Ok(None), "prefix {k}");
        }
        assert!(matches!(parse(raw, false, 65536), Ok(Some(p)) if p.len == raw.len()));
    }
}

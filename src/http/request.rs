//! Request heads: parsed in place with httparse, checked against RFC 9112's
//! framing rules, and kept as offsets into the frozen head buffer.

use std::{mem::MaybeUninit, ops::Range};

use bytes::Bytes;

use super::{HeaderRef, MAX_HEADERS_CAP, Version, list_tokens, offset_in, parse_content_length, trim_ows};

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// Why a head was refused. Mapped to a status in `error.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Bad syntax or ambiguous framing: 400, then close.
    Malformed(&'static str),
    /// Head larger than `max_head_bytes`: 431.
    TooLarge,
    /// More header fields than `max_headers`: 431.
    TooManyHeaders,
    /// An `Expect` other than 100-continue: 417.
    UnsupportedExpect,
}

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

/// The result of a complete parse, as offsets into the bytes given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// Length of the head including the blank line.
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub version: Version,
    pub headers: Vec<HeaderRef>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Parses a request head from the start of `buf`.
/// `Ok(None)`: incomplete, read more.
pub fn parse(buf: &[u8], limits: HeadLimits) -> Result<Option<ParsedRequest>, HeadError> {
    // Uninitialised storage: zeroing 256 headers would cost as much as the
    // parse itself (see benches/codec.rs).
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut storage[..max_headers]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head_bytes { Err(HeadError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(describe(e))),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    if !path.starts_with('/') {
        return Err(HeadError::Malformed("request target must be an absolute path"));
    }

    let mut framing = Framing::default();
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if memchr::memchr3(0, b'\r', b'\n', h.value).is_some() {
            return Err(HeadError::Malformed("NUL, CR or LF in a header value"));
        }
        framing.observe(h.name.as_bytes(), h.value)?;
        headers.push(HeaderRef { name: offset_in(buf, h.name.as_bytes()), value: offset_in(buf, h.value) });
    }
    let (body, keep_alive, expect_continue) = framing.finish(version)?;
    Ok(Some(ParsedRequest {
        len,
        method: offset_in(buf, method.as_bytes()),
        target: offset_in(buf, path.as_bytes()),
        version,
        headers,
        framing: body,
        keep_alive,
        expect_continue,
    }))
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value (obs-fold or control character)",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status | httparse::Error::Token => "invalid request line",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Collects the headers that decide framing and connection reuse.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encodings: u32,
    close: bool,
    keep_alive: bool,
    expect: Option<bool>,
    hosts: u32,
}

impl Framing {
    fn observe(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeadError> {
        // Most headers are none of these: rule them out by length first.
        if !matches!(name.len(), 4 | 6 | 10 | 14 | 17) {
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.content_length.is_some() {
                return Err(HeadError::Malformed("duplicate Content-Length"));
            }
            let n = parse_content_length(value).ok_or(HeadError::Malformed("invalid Content-Length"))?;
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a lone `chunked` is accepted: any other coding (or
            // chunked twice) cannot be forwarded without re-coding it.
            self.transfer_encodings += 1;
            if !trim_ows(value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Malformed("Transfer-Encoding other than chunked"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in list_tokens(value) {
                self.close |= t.eq_ignore_ascii_case(b"close");
                self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expect = Some(trim_ows(value).eq_ignore_ascii_case(b"100-continue"));
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        }
        Ok(())
    }

    fn finish(self, version: Version) -> Result<(BodyFraming, bool, bool), HeadError> {
        let body = match (self.transfer_encodings, self.content_length) {
            (0, None) => BodyFraming::Empty,
            (0, Some(0)) => BodyFraming::Empty,
            (0, Some(n)) => BodyFraming::Length(n),
            (_, Some(_)) => return Err(HeadError::Malformed("both Content-Length and Transfer-Encoding")),
            (1, None) if version == Version::Http11 => BodyFraming::Chunked,
            (1, None) => return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request")),
            (_, None) => return Err(HeadError::Malformed("Transfer-Encoding repeated")),
        };
        if version == Version::Http11 && self.hosts != 1 {
            return Err(HeadError::Malformed("HTTP/1.1 request needs exactly one Host header"));
        }
        let keep_alive = match version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive && !self.close,
        };
        let expect_continue = match self.expect {
            None => false,
            Some(true) => version == Version::Http11 && body != BodyFraming::Empty,
            Some(false) => return Err(HeadError::UnsupportedExpect),
        };
        Ok((body, keep_alive, expect_continue))
    }
}

/// A parsed request head that owns its bytes.
#[derive(Debug, Clone)]
pub struct RequestHead {
    raw: Bytes,
    parsed: ParsedRequest,
}

impl RequestHead {
    /// `raw` must be the bytes `parsed` was parsed from (at least `parsed.len`).
    pub fn new(raw: Bytes, parsed: ParsedRequest) -> Self {
        Self { raw, parsed }
    }

    /// Bytes of the head on the wire.
    pub fn len(&self) -> usize {
        self.parsed.len
    }

    pub fn is_empty(&self) -> bool {
        self.parsed.len == 0
    }

    pub fn method(&self) -> &[u8] {
        &self.raw[self.parsed.method.clone()]
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &[u8] {
        &self.raw[self.parsed.target.clone()]
    }

    /// The method as a shared slice of the head (no copy).
    pub fn method_bytes(&self) -> Bytes {
        self.raw.slice(self.parsed.method.clone())
    }

    /// The target's path, without the query, as a shared slice of the head.
    pub fn path_bytes(&self) -> Bytes {
        let t = self.parsed.target.clone();
        let end = self.raw[t.clone()].iter().position(|&b| b == b'?').map_or(t.end, |q| t.start + q);
        self.raw.slice(t.start..end)
    }

    pub fn version(&self) -> Version {
        self.parsed.version
    }

    pub fn framing(&self) -> BodyFraming {
        self.parsed.framing
    }

    pub fn keep_alive(&self) -> bool {
        self.parsed.keep_alive
    }

    pub fn expect_continue(&self) -> bool {
        self.parsed.expect_continue
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.parsed.headers.iter().map(|h| (&self.raw[h.name.clone()], &self.raw[h.value.clone()]))
    }

    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    pub fn is_head_method(&self) -> bool {
        self.method() == b"HEAD"
    }
}

#[cfg(test)]
mod tests;

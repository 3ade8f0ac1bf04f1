//! The one builder of response heads the gateway sends: relayed upstream
//! answers, cache hits, translated answers, JSON errors, admin and mock
//! pages. Each caller says what is particular to it (its own header lines);
//! the builder writes what every answer has in the same way: the status
//! line, framing, the gateway's lines, the request id, the connection.

use bytes::BytesMut;

use super::{Version, write};

/// How the response body reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304): the upstream's Content-Length, if any, is
    /// passed on untouched by the caller's own lines.
    Empty,
    Length(u64),
    /// Chunks, written as the bytes arrive.
    Chunked,
    /// HTTP/1.0 client and no length: the body ends when we close.
    UntilClose,
}

/// A response head.
pub struct Head<'a> {
    pub status: u16,
    /// The reason phrase; empty: the standard one.
    pub reason: &'a [u8],
    pub framing: Framing,
    /// The client's version: a keep-alive HTTP/1.0 client is told so.
    pub version: Version,
    pub keep_alive: bool,
    /// Blocks of pre-rendered `Name: value\r\n` lines the gateway adds
    /// (`x-aigw-cache-status`, `x-ratelimit-*`, `Retry-After`, …), written
    /// in order: callers pass what they hold, nothing is joined first.
    pub lines: &'a [&'a [u8]],
    pub request_id: Option<&'a [u8]>,
}

impl Head<'_> {
    /// Writes the head; `own` writes the answer's own header lines
    /// (Content-Type, the upstream's headers) right after the status line.
    pub fn write(&self, out: &mut BytesMut, own: impl FnOnce(&mut BytesMut)) {
        // The status line says HTTP/1.1 whatever the client spoke: a server
        // sends its own version (RFC 9110 §6.2).
        write::status_line(out, Version::Http11, self.status, self.reason);
        own(out);
        match self.framing {
            Framing::Length(n) => write::header_u64(out, b"Content-Length", n),
            Framing::Chunked => write::header(out, b"Transfer-Encoding", b"chunked"),
            Framing::Empty | Framing::UntilClose => {}
        }
        for block in self.lines {
            out.extend_from_slice(block);
        }
        if let Some(id) = self.request_id {
            write::header(out, b"x-aigw-request-id", id);
        }
        if !self.keep_alive || self.framing == Framing::UntilClose {
            write::header(out, b"Connection", b"close");
        } else if self.version == Version::Http10 {
            write::header(out, b"Connection", b"keep-alive");
        }
        write::end_head(out);
    }

    /// A whole answer of `content_type` with this body.
    pub fn with_body(status: u16, content_type: &[u8], body: &[u8], lines: &[&[u8]], to: To<'_>) -> BytesMut {
        let head = Head {
            status,
            reason: b"",
            framing: Framing::Length(body.len() as u64),
            version: to.version,
            keep_alive: to.keep_alive,
            lines,
            request_id: to.request_id,
        };
        let extra: usize = lines.iter().map(|l| l.len()).sum();
        let mut out = BytesMut::with_capacity(256 + extra + body.len());
        head.write(&mut out, |out| write::header(out, b"Content-Type", content_type));
        out.extend_from_slice(body);
        out
    }
}

/// Who an answer goes to: the client's version, whether the connection
/// stays open, the request's id.
#[derive(Debug, Clone, Copy)]
pub struct To<'a> {
    pub version: Version,
    pub keep_alive: bool,
    pub request_id: Option<&'a [u8]>,
}

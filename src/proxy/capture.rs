//! The request log's captured answer (`[log] capture_bodies`): the start
//! of what the client received, after translation and response
//! guardrails, before chunk framing, whichever way it was served (relayed,
//! read whole, a cache hit, a coalesced follower). A value a guardrail
//! redacted must not reach the log either.

use super::{Worker, ctx::RequestCtx};

/// How much of this request's answer the log keeps, if any. None for a
/// pseudonymized request: the answer it received carries the values its
/// mapping put back, and those are never logged (its request's capture
/// holds the placeholders).
pub fn answer_max(w: &Worker, ctx: &RequestCtx<'_>) -> Option<usize> {
    w.shared.capture.filter(|_| ctx.guard.pseudonyms.is_none())
}

pub struct Capture {
    kept: Vec<u8>,
    max: usize,
}

impl Capture {
    pub fn new(max: usize) -> Self {
        Capture { kept: Vec::new(), max }
    }

    /// The capture of an answer sent in one piece.
    pub fn whole(max: usize, body: &[u8]) -> String {
        let mut c = Capture::new(max);
        c.feed(body);
        c.text()
    }

    pub fn feed(&mut self, data: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Lossy UTF-8: a cut may fall inside a character.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::Capture;

    #[test]
    fn keeps_the_first_max_bytes_across_pieces() {
        let mut c = Capture::new(5);
        for piece in [&b"ab"[..], b"", b"cde", b"fgh"] {
            c.feed(piece);
        }
        assert_eq!(c.text(), "abcde");
        assert_eq!(Capture::whole(2, "héllo".as_bytes()), "h\u{fffd}");
        assert_eq!(Capture::whole(0, b"x"), "");
    }
}

//! Takes back what the gateway added to a stream: when it set
//! `stream_options.include_usage` on a request that lacked it (to count
//! tokens exactly), the client must get exactly the stream it asked for. So
//! the usage-only chunk (`"choices":[]` with a usage object) is dropped and
//! the `,"usage":null` OpenAI appends to every other chunk is removed.
//!
//! It works on whole events: bytes are held until an event's blank line
//! arrives (events are what SSE clients act on, so none is delayed past its
//! own end), and everything else in the event passes unchanged.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

/// Re-emits an SSE stream without the include_usage additions.
#[derive(Debug, Default)]
pub struct UsageStripper {
    pending: Vec<u8>,
}

const USAGE_NULL: &[u8] = b",\"usage\":null";

/// Most bytes held while waiting for an event's end: an upstream that never
/// ends an event would otherwise make the stripper hold the rest of the
/// stream. Past it the stream is cut.
pub const MAX_PENDING: usize = 8 << 20;

/// The stream held an event longer than `MAX_PENDING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized;

impl UsageStripper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds decoded stream bytes; appends complete, cleaned events to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Oversized> {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(end) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            clean(event, out);
            start += end;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_PENDING {
            self.pending = Vec::new();
            return Err(Oversized);
        }
        Ok(())
    }

    /// The stream ended: pass on whatever is left (an unterminated event).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
    }
}

/// Length of the first complete event (through its blank line), if any.
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(j) = memchr::memchr2(b'\n', b'\r', &b[i..]) {
        let nl = i + j;
        let after = match (b[nl], b.get(nl + 1)) {
            (b'\r', Some(b'\n')) => nl + 2,
            (b'\r', None) => return None, // a CR at the end may be half a CRLF
            _ => nl + 1,
        };
        match (b.get(after), b.get(after + 1)) {
            (Some(b'\n'), _) => return Some(after + 1),
            (Some(b'\r'), Some(b'\n')) => return Some(after + 2),
            (Some(b'\r'), Some(_)) => return Some(after + 1),
            (Some(b'\r'), None) | (None, _) => return None,
            _ => i = after,
        }
    }
    None
}

// Searchers built once: `memmem::find` builds one per call, which cost
// more than the search on an event of a few hundred bytes (callgrind,
// docs/benchmarks.md "Streams event by event").
static NO_CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\":[]"));
static USAGE_OBJECT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":{"));
static LAST_USAGE_NULL: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(USAGE_NULL));

fn clean(event: &[u8], out: &mut Vec<u8>) {
    let usage_only = NO_CHOICES.find(event).is_some() && USAGE_OBJECT.find(event).is_some();
    if usage_only {
        return;
    }
    match last_usage_null(event) {
        Some(at) => {
            out.extend_from_slice(&event[..at]);
            out.extend_from_slice(&event[at + USAGE_NULL.len()..]);
        }
        None => out.extend_from_slice(event),
    }
}

/// Where the last `,"usage":null` starts. OpenAI puts it last in the
/// chunk (`…,"usage":null}` and the blank line), which is checked first;
/// a search from the end covers any other place.
fn last_usage_null(event: &[u8]) -> Option<usize> {
    let body = event.trim_ascii_end();
    if let Some(head) = body.strip_suffix(b"}")
        && head.ends_with(USAGE_NULL)
    {
        return Some(head.len() - USAGE_NULL.len());
    }
    LAST_USAGE_NULL.rfind(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_last_usage_null_wherever_it_is() {
        let last = b"data: {\"id\":\"c\",\"usage\":null}\n\n";
        assert_eq!(last_usage_null(last), Some(15));
        let middle = b"data: {\"id\":\"c\",\"usage\":null,\"x\":1}\r\n\r\n";
        assert_eq!(last_usage_null(middle), Some(15));
        let twice = b"data: {\"a\":{\"b\":1,\"usage\":null},\"usage\":null}\n\n";
        assert_eq!(last_usage_null(twice), LAST_USAGE_NULL.rfind(twice));
        assert_eq!(last_usage_null(b"data: {\"usage\":{}}\n\n"), None);
    }

    const WITH: &str = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\ndata: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\ndata: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n";
    const WITHOUT: &str = "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

    fn strip(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut s = UsageStripper::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            s.feed(&input[start..end], &mut out).expect("small events");
            start = end;
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn restores_the_stream_the_client_asked_for() {
        assert_eq!(String::from_utf8(strip(WITH.as_bytes(), &[])).ok().as_deref(), Some(WITHOUT));
        let crlf_with = WITH.replace('\n', "\r\n");
        let crlf_without = WITHOUT.replace('\n', "\r\n");
        assert_eq!(String::from_utf8(strip(crlf_with.as_bytes(), &[])).ok(), Some(crlf_without));
    }

    #[test]
    fn same_output_at_every_split() {
        for text in [WITH.to_string(), WITH.replace('\n', "\r\n")] {
            let whole = strip(text.as_bytes(), &[]);
            for cut in 0..=text.len() {
                assert_eq!(strip(text.as_bytes(), &[cut]), whole, "split at {cut}");
            }
        }
    }

    #[test]
    fn leaves_other_streams_alone() {
        let anthropic = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
        assert_eq!(strip(anthropic.as_bytes(), &[]), anthropic.as_bytes());
        assert_eq!(strip(b"data: partial", &[]), b"data: partial");
    }
}

//! The tap: observes a response body as it is relayed, without holding it
//! up, and reports the token usage it carried.
//!
//! SSE bodies go through the incremental splitter (`sse.rs`) and only
//! events that pass a byte scan are parsed (`usage.rs`). JSON bodies are
//! collected up to a cap and parsed once at the end.

pub mod sse;
pub mod strip;
pub mod usage;

pub use usage::Usage;

use self::{sse::SseSplitter, usage::UsageTracker};

/// JSON bodies larger than this are not parsed for usage.
const MAX_JSON: usize = 8 << 20;

#[derive(Debug)]
enum Mode {
    Sse(SseSplitter),
    Json { body: Vec<u8>, overflow: bool },
    Other,
}

/// What the tap saw, at the end of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapReport {
    pub usage: Option<Usage>,
    /// SSE events seen (0 for non-stream bodies).
    pub events: u64,
    /// The stream's `data: [DONE]` (OpenAI) was seen.
    pub done: bool,
}

#[derive(Debug)]
pub struct Tap {
    mode: Mode,
    tracker: UsageTracker,
    events: u64,
    done: bool,
}

impl Tap {
    /// A tap for a response with this Content-Type.
    pub fn for_content_type(content_type: Option<&[u8]>) -> Tap {
        let ct = content_type.unwrap_or_default();
        let has = |needle: &[u8]| ct.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
        let mode = if has(b"text/event-stream") {
            Mode::Sse(SseSplitter::new())
        } else if has(b"json") {
            Mode::Json { body: Vec::new(), overflow: false }
        } else {
            Mode::Other
        };
        Tap { mode, tracker: UsageTracker::new(), events: 0, done: false }
    }

    /// Observes the next decoded body bytes, in order.
    pub fn observe(&mut self, data: &[u8]) {
        let Tap { mode, tracker, events, done } = self;
        match mode {
            Mode::Sse(splitter) => splitter.feed(data, &mut |e| {
                *events += 1;
                if e.data == b"[DONE]" {
                    *done = true;
                } else {
                    tracker.observe_json(e.data);
                }
            }),
            Mode::Json { body, overflow } => {
                if body.len() + data.len() <= MAX_JSON {
                    body.extend_from_slice(data);
                } else {
                    *overflow = true;
                }
            }
            Mode::Other => {}
        }
    }

    /// Ends the response and reports.
    pub fn finish(&mut self) -> TapReport {
        if let Mode::Json { body, overflow: false } = &mut self.mode {
            let body = std::mem::take(body);
            self.tracker.observe_json(&body);
        }
        TapReport { usage: self.tracker.usage(), events: self.events, done: self.done }
    }
}

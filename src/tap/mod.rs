//! The tap: observes a response body as it is relayed, without holding it
//! up, and reports the token usage it carried.
//!
//! SSE bodies go through the incremental splitter (`sse.rs`) and only
//! events that pass a byte scan are parsed (`usage.rs`). JSON bodies are
//! collected up to a cap and parsed once at the end.

mod bpe;
pub mod estimate;
pub mod sse;
pub mod strip;
pub mod usage;

pub use usage::Usage;

use self::{sse::SseSplitter, usage::UsageTracker};
use crate::providers::StreamSignals;

/// JSON bodies larger than this are not parsed for usage.
const MAX_JSON: usize = 8 << 20;
/// Output text kept per stream for an estimate, should no usage arrive.
const MAX_TEXT: usize = 1 << 20;

#[derive(Debug)]
enum Mode {
    Sse(SseSplitter),
    /// The body up to `MAX_JSON`; `seen` counts every byte, kept or not.
    Json {
        body: Vec<u8>,
        overflow: bool,
        seen: u64,
    },
    Other {
        seen: u64,
    },
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
    /// The output text streamed so far (content deltas), for estimates,
    /// with the end offset of each event's part: deltas are counted one by
    /// one, as the model produced them (re-tokenizing the joined text would
    /// merge tokens across deltas).
    text: String,
    parts: Vec<u32>,
    /// How the stream's events say it went (`providers::StreamFormat`).
    signals: StreamSignals,
    /// Whether tokens are counted (analytics, a token limit or a budget):
    /// without, the tap only splits events for the cache's store decision
    /// and the size caps, and reads no usage.
    counting: bool,
}

impl Tap {
    /// A tap for a response with this Content-Type.
    pub fn for_content_type(content_type: Option<&[u8]>) -> Tap {
        let ct = content_type.unwrap_or_default();
        let has = |needle: &[u8]| ct.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
        let mode = if has(b"text/event-stream") {
            Mode::Sse(SseSplitter::new())
        } else if has(b"json") {
            Mode::Json { body: Vec::new(), overflow: false, seen: 0 }
        } else {
            Mode::Other { seen: 0 }
        };
        Tap {
            mode,
            tracker: UsageTracker::new(),
            events: 0,
            done: false,
            text: String::new(),
            parts: Vec::new(),
            signals: StreamSignals::default(),
            counting: true,
        }
    }

    // Setters rather than by-value builders: each by-value step moved the
    // whole ~300-byte tap once more.

    /// The stream's format: the tap then looks only for its markers.
    pub fn set_stream_format(&mut self, format: crate::providers::StreamFormat) {
        self.signals.format = Some(format);
    }

    /// Reads no usage and estimates nothing: no one counts this answer's
    /// tokens.
    pub fn set_not_counting(&mut self) {
        self.counting = false;
    }

    /// Observes the next decoded body bytes, in order.
    pub fn observe(&mut self, data: &[u8]) {
        let Tap { mode, tracker, events, done, text, parts, signals, counting } = self;
        match mode {
            Mode::Sse(splitter) => splitter.feed(data, &mut |e| {
                *events += 1;
                signals.observe(e.name, e.data);
                if e.data == b"[DONE]" {
                    *done = true;
                } else if *counting {
                    tracker.observe_json(e.data);
                    let before = text.len();
                    estimate::collect_text(e.data, text, MAX_TEXT);
                    if text.len() > before {
                        parts.push(text.len() as u32);
                    }
                }
            }),
            Mode::Json { body, overflow, seen } => {
                *seen += data.len() as u64;
                if !*counting {
                    return;
                }
                if body.len() + data.len() <= MAX_JSON {
                    body.extend_from_slice(data);
                } else {
                    *overflow = true;
                }
            }
            Mode::Other { seen } => *seen += data.len() as u64,
        }
    }

    /// An event passed the splitter's size cap (`sse::MAX_EVENT`).
    pub fn oversized(&self) -> bool {
        matches!(&self.mode, Mode::Sse(s) if s.oversized())
    }

    /// What the stream's events said about how it went.
    pub fn signals(&self) -> &StreamSignals {
        &self.signals
    }

    /// Whether the body is an event stream.
    pub fn is_stream(&self) -> bool {
        matches!(self.mode, Mode::Sse(_))
    }

    /// Usage to account, once the response is over. What the provider
    /// reported, when the response ended normally. Otherwise — no usage
    /// (a server that sends none, a client gone before the usage chunk, a
    /// body abandoned mid-read or over the tap's cap) or a stream cut short —
    /// the gateway counts: input from the request (`input`, called only
    /// then), output from what was relayed (never fewer than reported), and
    /// the result is flagged as estimated. Never zero for a successful
    /// answer. An error answer (`ok` false) with no usage costs nothing:
    /// providers do not bill refused requests.
    pub fn settle(&mut self, complete: bool, ok: bool, input: impl FnOnce() -> u64) -> (Option<Usage>, bool) {
        if !self.counting {
            return (None, false);
        }
        let report = self.finish();
        match report.usage {
            Some(u) if complete || !self.is_stream() => (Some(u), false),
            Some(mut u) => {
                u.output = u.output.max(self.estimate_output());
                if u.input == 0 {
                    u.input = input();
                }
                (Some(u), true)
            }
            None if !ok => (None, false),
            None => {
                let usage = Usage { input: input(), output: self.estimate_output().max(1), ..Usage::default() };
                (Some(usage), true)
            }
        }
    }

    /// Output tokens the relayed body held: the streamed text of a stream,
    /// the output fields of a JSON body (or its size past the tap's cap).
    fn estimate_output(&self) -> u64 {
        match &self.mode {
            Mode::Sse(_) => self.estimate_stream_output(),
            Mode::Json { body, overflow: false, .. } => {
                let mut text = String::new();
                estimate::collect_text(body, &mut text, MAX_TEXT);
                estimate::count(&text)
            }
            Mode::Json { seen, .. } | Mode::Other { seen } => seen.div_ceil(4),
        }
    }

    fn estimate_stream_output(&self) -> u64 {
        let mut start = 0;
        let mut total = 0;
        for &end in &self.parts {
            let end = end as usize;
            total += self.text.get(start..end).map_or(0, estimate::count);
            start = end;
        }
        total
    }

    /// Ends the response and reports.
    pub fn finish(&mut self) -> TapReport {
        if let Mode::Json { body, overflow: false, .. } = &mut self.mode {
            // Kept for an estimate should it carry no usage.
            self.tracker.observe_json(body);
        }
        TapReport { usage: self.tracker.usage(), events: self.events, done: self.done }
    }
}

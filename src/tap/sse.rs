//! Incremental Server-Sent Events splitter (WHATWG event-stream grammar).
//!
//! It observes the decoded body as it is forwarded and never holds it up.
//! Line ends (LF, CRLF or a lone CR) are found with memchr. The common event
//! — one `data:` line followed by a blank line in the same read — is handed
//! out as a slice of the input, uncopied. Only a line split across reads is
//! carried over, and only an event whose data spans reads or several lines
//! is copied into the event buffer.

use std::ops::Range;

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field; empty for the default "message" type.
    pub name: &'a [u8],
    /// The `data:` lines joined with `\n`.
    pub data: &'a [u8],
}

/// Longest line we carry over between reads; beyond it the rest of the line
/// is dropped from the carry (the bytes themselves are still forwarded).
const MAX_CARRY: usize = 1 << 20;
/// Largest event (its data lines together) the splitter assembles: the
/// upstream chooses how many `data:` lines an event has, and an event that
/// never ends would grow without bound. A larger one is not handed on, and
/// counted (`oversized`): the relay then cuts the stream.
pub const MAX_EVENT: usize = 8 << 20;

#[derive(Debug, Default)]
pub struct SseSplitter {
    /// A line whose end has not arrived yet.
    carry: Vec<u8>,
    /// The previous read ended in CR: a leading LF is that line's end.
    after_cr: bool,
    name: Vec<u8>,
    /// Data copied for events that span reads or have several lines.
    data: Vec<u8>,
    data_lines: u32,
    /// The event's only data line, still in the current input.
    pending: Option<Range<usize>>,
    /// The current event passed `MAX_EVENT`.
    too_big: bool,
    /// Events dropped for passing `MAX_EVENT`.
    oversized: u64,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the stream; `on_event` sees every event
    /// completed by them.
    pub fn feed(&mut self, input: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if input.is_empty() {
            return;
        }
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && input.first() == Some(&b'\n') {
            pos = 1;
        }
        while pos < input.len() {
            let Some(i) = memchr::memchr2(b'\n', b'\r', &input[pos..]) else {
                self.spill_pending(input);
                if self.carry.len() < MAX_CARRY {
                    let room = MAX_CARRY - self.carry.len();
                    let rest = &input[pos..];
                    self.carry.extend_from_slice(&rest[..rest.len().min(room)]);
                }
                return;
            };
            let end = pos + i;
            let next = match input[end] {
                b'\r' if input.get(end + 1) == Some(&b'\n') => end + 2,
                b'\r' if end + 1 == input.len() => {
                    self.after_cr = true;
                    end + 1
                }
                _ => end + 1,
            };
            if self.carry.is_empty() {
                self.line(input, Some(pos..end), on_event);
            } else {
                self.carry.extend_from_slice(&input[pos..end.min(pos + MAX_CARRY)]);
                let line = std::mem::take(&mut self.carry);
                self.line(&line, None, on_event);
                self.carry = line;
                self.carry.clear();
            }
            pos = next;
        }
        self.spill_pending(input);
    }

    /// Handles one complete line: `range` within `src` when it lies in the
    /// current input (so a data line can stay uncopied), else all of `src`.
    fn line(&mut self, src: &[u8], range: Option<Range<usize>>, on_event: &mut impl FnMut(Event<'_>)) {
        let (line, base) = match &range {
            Some(r) => (&src[r.clone()], r.start),
            None => (src, 0),
        };
        if line.is_empty() {
            self.dispatch(src, on_event);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value_start) = match memchr::memchr(b':', line) {
            Some(c) if line.get(c + 1) == Some(&b' ') => (&line[..c], c + 2),
            Some(c) => (&line[..c], c + 1),
            None => (line, line.len()),
        };
        match field {
            b"data" => {
                self.data_lines += 1;
                let value = base + value_start..base + line.len();
                if self.data_lines == 1 && range.is_some() {
                    self.pending = Some(value);
                } else {
                    self.spill_pending(src);
                    if self.data.len() + 1 + value.len() > MAX_EVENT {
                        self.too_big = true;
                    } else {
                        if self.data_lines > 1 {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(&src[value]);
                    }
                }
            }
            b"event" => {
                self.name.clear();
                self.name.extend_from_slice(&line[value_start..]);
            }
            _ => {} // id, retry, unknown fields
        }
    }

    fn dispatch(&mut self, src: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if std::mem::take(&mut self.too_big) {
            self.oversized += 1;
        } else if self.data_lines > 0 {
            let data = match self.pending.take() {
                Some(r) => &src[r],
                None => &self.data[..],
            };
            on_event(Event { name: &self.name, data });
        }
        self.name.clear();
        self.data.clear();
        self.data_lines = 0;
        self.pending = None;
    }

    /// The input is about to go away: copy a pending data line.
    fn spill_pending(&mut self, src: &[u8]) {
        if let Some(r) = self.pending.take() {
            if self.data.len() + r.len() > MAX_EVENT {
                self.too_big = true;
            } else {
                self.data.extend_from_slice(&src[r]);
            }
        }
    }

    /// Events dropped for passing `MAX_EVENT`, and whether the current
    /// one already has.
    pub fn oversized(&self) -> bool {
        self.oversized > 0 || self.too_big
    }
}

#[cfg(test)]
mod tests;

//! Incremental decoder for `Transfer-Encoding: chunked` (RFC 9112 §7.1).
//!
//! Sans-IO: it is fed whatever bytes arrived and hands back ranges of chunk
//! data within them, so the caller can forward or copy data without the
//! decoder ever buffering it. Framing bytes are checked one at a time; only
//! sizes and line lengths are kept between calls.

use std::ops::Range;

/// Longest chunk-extension or trailer line we skip over before refusing.
const MAX_LINE: usize = 4096;
/// Most trailer bytes in total.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    InvalidSize,
    SizeTooLarge,
    InvalidLineEnding,
    LineTooLong,
}

impl ChunkedError {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkedError::InvalidSize => "invalid chunk size",
            ChunkedError::SizeTooLarge => "chunk size too large",
            ChunkedError::InvalidLineEnding => "invalid line ending in chunked body",
            ChunkedError::LineTooLong => "chunk extension or trailer too long",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` counts them.
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// Inside `;ext=...`, skipped.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used, framing and data.
    pub consumed: usize,
    /// Chunk data in the input, at most one range per call.
    pub data: Option<Range<usize>>,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self { state: State::Size, size: 0, digits: 0, line: 0, trailers: 0 }
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads framing until a run of data (returned) or the end of input.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let take = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Decoded { consumed: i + take, data: Some(i..i + take) });
            }
            if self.state == State::Done {
                break;
            }
            self.step(input[i])?;
            i += 1;
        }
        Ok(Decoded { consumed: i, data: None })
    }

    /// Decodes all of `input`, calling `on_data` for each data range.
    /// Returns bytes consumed (less than `input.len()` only when done).
    pub fn decode_all(&mut self, input: &[u8], mut on_data: impl FnMut(Range<usize>)) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() && !self.is_done() {
            let d = self.decode(&input[pos..])?;
            if let Some(r) = d.data {
                on_data(pos + r.start..pos + r.end);
            }
            pos += d.consumed;
        }
        Ok(pos)
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        use State::*;
        self.state = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                if self.digits == 16 {
                    return Err(ChunkedError::SizeTooLarge);
                }
                self.digits += 1;
                self.size = (self.size << 4) | u64::from(hex(b));
                Size
            }
            (Size | SizeWs, b' ' | b'\t') if self.digits > 0 => SizeWs,
            (Size | SizeWs, b';') if self.digits > 0 => {
                self.line = 0;
                Ext
            }
            (Size | SizeWs, b'\r') if self.digits > 0 => SizeLf,
            (Size | SizeWs, _) => return Err(ChunkedError::InvalidSize),
            (Ext, b'\r') => SizeLf,
            (Ext, b'\n' | 0) => return Err(ChunkedError::InvalidLineEnding),
            (Ext, _) => {
                self.line += 1;
                if self.line > MAX_LINE {
                    return Err(ChunkedError::LineTooLong);
                }
                Ext
            }
            (SizeLf, b'\n') => {
                self.digits = 0;
                if self.size == 0 { TrailerStart } else { Data }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerLine, b'\n' | 0) => return Err(ChunkedError::InvalidLineEnding),
            (TrailerStart | TrailerLine, _) => {
                self.trailers += 1;
                if self.trailers > MAX_TRAILERS {
                    return Err(ChunkedError::LineTooLong);
                }
                if b == b'\r' { TrailerLf } else { TrailerLine }
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (SizeLf | DataCr | DataLf | TrailerLf | EndLf, _) => {
                return Err(ChunkedError::InvalidLineEnding);
            }
            (Data | Done, _) => self.state,
        };
        Ok(())
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests;

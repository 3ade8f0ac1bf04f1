//! One policy over text that arrives in pieces (the deltas of a stream).
//!
//! Each piece is appended to what is held; what can no longer change is
//! released at once. A finding could still start at the first place from
//! which the policy's rules, run anchored, have not died at the end of the
//! text so far (`Detector::live_from`): the start of a half-written email,
//! a digit run, a custom word's first word. Only that tail is held, so
//! prose goes out with at most a word of delay. Findings are looked for
//! with the same search as a whole text (`Detector::find_at`), so the
//! released text equals the one-shot redaction of the whole text, split
//! wherever the pieces were split (`fuzz/fuzz_targets/stream_redact.rs`).
//!
//! Two bounds keep memory and delay finite whatever the model writes:
//! - a held tail past `MAX_HOLD` is released anyway (a candidate longer
//!   than that may then be redacted in two parts);
//! - a private-key block is one finding to its END line, however long: its
//!   marker goes out when the BEGIN line is final, and what follows is
//!   dropped as it arrives until the block ends.

use std::sync::Arc;

use super::{
    detect::{Detector, Finding},
    pseudonym::Pseudonyms,
};

/// Longest tail held back for a candidate that may still grow.
pub const MAX_HOLD: usize = 4096;

/// What a policy does to the text it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Findings become their markers.
    Redact,
    /// The text is passed on as it is, up to the first finding; then
    /// nothing more (the answer is blocked).
    Block,
    /// Placeholders of the request's mapping become its values again (the
    /// detector is `pseudonym::restorer`).
    Restore,
}

/// Inside a private-key block: what ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pem {
    /// `-----END ` not seen yet.
    End,
    /// `-----END ` seen; the closing `-----` not yet.
    Close,
}

#[derive(Debug)]
pub struct LiveText {
    mode: Mode,
    /// Held text, after `done` bytes of already released context (one
    /// char: look-behind for word boundaries and the validators).
    buf: String,
    done: usize,
    pem: Option<Pem>,
    /// Findings so far, by the detector's kind index.
    pub counts: Vec<u32>,
    /// Block mode: a finding was released; nothing more passes.
    pub blocked: bool,
    findings: Vec<Finding>,
    matches: Vec<std::ops::Range<usize>>,
    /// Restore mode: the request's placeholders.
    map: Option<Arc<Pseudonyms>>,
}

impl LiveText {
    /// A restoring stage: placeholders of `map` become their values.
    pub fn restoring(map: Arc<Pseudonyms>) -> LiveText {
        LiveText { map: Some(map), ..LiveText::new(Mode::Restore, 1) }
    }

    pub fn new(mode: Mode, kinds: usize) -> LiveText {
        LiveText {
            mode,
            buf: String::new(),
            done: 0,
            pem: None,
            counts: vec![0; kinds],
            blocked: false,
            findings: Vec::new(),
            matches: Vec::new(),
            map: None,
        }
    }

    /// Bytes held back now (not counting context).
    pub fn held(&self) -> usize {
        self.buf.len() - self.done
    }

    /// Takes the next piece; appends to `out` what is final.
    pub fn push(&mut self, det: &Detector, piece: &str, out: &mut String) {
        if self.blocked {
            return;
        }
        self.buf.push_str(piece);
        self.release(det, false, out);
    }

    /// The text ended: everything held is final.
    pub fn finish(&mut self, det: &Detector, out: &mut String) {
        if !self.blocked {
            self.release(det, true, out);
        }
        self.buf.clear();
        self.done = 0;
    }

    fn release(&mut self, det: &Detector, at_end: bool, out: &mut String) {
        loop {
            if self.pem.is_some() && !self.skip_pem(at_end) {
                return;
            }
            let len = self.buf.len();
            let mut findings = std::mem::take(&mut self.findings);
            let mut matches = std::mem::take(&mut self.matches);
            det.find_at(&self.buf, self.done, &mut findings, &mut matches);
            let live = if at_end { None } else { det.live_from(&self.buf, self.done) };
            let mut cut = live.unwrap_or(len);
            let mut open_pem = None;
            // Text is final only up to a place no rule match spans: a
            // finding (or a match the validators refused, which still moves
            // where its rule's search resumes) that starts before the cut
            // but ends past it is held from where it starts.
            // At the end everything is final, an open block included (it
            // runs to the end of the text).
            loop {
                if at_end {
                    break;
                }
                let before = cut;
                for (i, f) in findings.iter().enumerate() {
                    if f.matched >= cut {
                        break;
                    }
                    let text = &self.buf[f.span.clone()];
                    if text.starts_with("-----BEGIN") && !pem_closed(text) {
                        open_pem = Some(i);
                        cut = f.span.start;
                        break;
                    }
                    if f.span.end > cut {
                        cut = f.matched;
                        break;
                    }
                }
                if let Some(m) = matches.iter().filter(|m| m.start < cut && m.end > cut).map(|m| m.start).min() {
                    cut = m;
                }
                // Held from before an open block: it is found again later.
                if open_pem.is_some_and(|i: usize| cut < findings[i].span.start) {
                    open_pem = None;
                }
                if cut == before {
                    break;
                }
            }
            self.matches = matches;
            if open_pem.is_none() && len - cut > MAX_HOLD {
                cut = forced_cut(&self.buf, self.done, &findings);
            }
            let upto = findings.iter().take_while(|f| f.span.end <= cut && f.matched < cut).count();
            self.emit(det, cut, &findings[..upto], out);
            if self.blocked {
                self.findings = findings;
                return;
            }
            let Some(i) = open_pem else {
                self.keep_from(cut);
                self.findings = findings;
                return;
            };
            // The block's marker is final now; its body is dropped as it
            // arrives. The search resumes after its END line.
            let f = &findings[i];
            self.counts[f.kind] += 1;
            match self.mode {
                Mode::Redact | Mode::Restore => marker(det, f, out),
                Mode::Block => {
                    self.blocked = true;
                    self.findings = findings;
                    return;
                }
            }
            let begin_end = self.buf[f.span.start..].find("PRIVATE KEY-----").map_or(len, |e| f.span.start + e + 16);
            self.findings = findings;
            self.buf.drain(..begin_end);
            self.done = 0;
            self.pem = Some(Pem::End);
        }
    }

    /// Drops the held part of a private-key block up to its end. True when
    /// the block ended (the rest of `buf` is ordinary text again).
    fn skip_pem(&mut self, at_end: bool) -> bool {
        loop {
            let (needle, phase): (&str, Pem) = match self.pem {
                Some(p @ Pem::End) => ("-----END ", p),
                Some(p @ Pem::Close) => ("-----", p),
                None => return true,
            };
            match self.buf.find(needle) {
                Some(i) => {
                    let after = i + needle.len();
                    if phase == Pem::End {
                        self.buf.drain(..after);
                        self.pem = Some(Pem::Close);
                    } else {
                        // One char of the block stays as look-behind.
                        self.buf.drain(..after - 1);
                        self.done = 1;
                        self.pem = None;
                        return true;
                    }
                }
                None => {
                    if at_end {
                        // A block cut short is a secret to the end.
                        self.buf.clear();
                        self.pem = None;
                        return false;
                    }
                    // Keep what could be the start of the needle.
                    let mut keep = self.buf.len().saturating_sub(needle.len() - 1);
                    while !self.buf.is_char_boundary(keep) {
                        keep += 1;
                    }
                    self.buf.drain(..keep);
                    return false;
                }
            }
        }
    }

    /// Releases `buf[done..cut]` with these findings (all inside it).
    fn emit(&mut self, det: &Detector, cut: usize, findings: &[Finding], out: &mut String) {
        let mut at = self.done;
        for f in findings {
            self.counts[f.kind] += 1;
            out.push_str(&self.buf[at..f.span.start]);
            if self.mode == Mode::Block {
                self.blocked = true;
                return;
            }
            match &self.map {
                Some(map) => {
                    let found = &self.buf[f.span.clone()];
                    out.push_str(map.value(found).unwrap_or(found));
                }
                None => marker(det, f, out),
            }
            at = f.span.end;
        }
        out.push_str(&self.buf[at..cut]);
    }

    /// Forgets what was released before `cut`, but for one char of context.
    fn keep_from(&mut self, cut: usize) {
        let mut from = cut.saturating_sub(1);
        while !self.buf.is_char_boundary(from) {
            from -= 1;
        }
        self.buf.drain(..from);
        self.done = cut - from;
    }
}

fn marker(det: &Detector, f: &Finding, out: &mut String) {
    out.push('[');
    out.push_str(det.kinds[f.kind].label());
    out.push(']');
}

/// Whether a private-key finding reached its END line.
fn pem_closed(block: &str) -> bool {
    block.find("-----END ").is_some_and(|i| block[i + 9..].contains("-----"))
}

/// Where to release an over-long hold: keep the last `MAX_HOLD / 2` bytes,
/// never cutting a finding in two (one that began at the start of the
/// hold is released whole).
fn forced_cut(buf: &str, done: usize, findings: &[Finding]) -> usize {
    let mut cut = buf.len() - MAX_HOLD / 2;
    while !buf.is_char_boundary(cut) {
        cut += 1;
    }
    match findings.iter().find(|f| f.span.start < cut && cut < f.span.end) {
        Some(f) if f.span.start > done => f.span.start,
        Some(f) => f.span.end,
        None => cut,
    }
}

#[cfg(test)]
mod tests;

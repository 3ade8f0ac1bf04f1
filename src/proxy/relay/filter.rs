//! The stream filter chain: every decoded body byte passes through it on
//! its way to the client, one upstream read at a time, never buffered
//! whole. In order:
//!
//! 1. tap — sees the bytes as the upstream sent them and counts usage;
//! 2. translate — the unified endpoint: native events become OpenAI chunks;
//! 3. strip — the usage chunk the gateway asked for is taken back out;
//! 4. guard — response-side guardrails (`proxy/guard.rs`);
//! 5. record — a cacheable answer's bytes, as the client sees them, go to
//!    the cache and to the followers of its flight, and their start to the
//!    request log when bodies are captured.
//!
//! Each stage that applies writes into its own scratch buffer, reused for
//! the whole response; a stage that does not apply costs one branch.

use bytes::BytesMut;

use crate::{
    cache::flight::Leader,
    http::write,
    providers::translate::StreamTranslator,
    proxy::capture::Capture,
    proxy::guard::ResponseGuard,
    tap::{Tap, strip::UsageStripper},
};

/// The record's error code for a stream cut for an oversized event.
const EVENT_TOO_LARGE: &str = "upstream_event_too_large";

pub struct Filter<'a> {
    pub tap: &'a mut Tap,
    pub translator: Option<StreamTranslator>,
    pub stripper: Option<UsageStripper>,
    pub guard: Option<ResponseGuard>,
    /// A cacheable miss: the bytes the client sees are kept and fanned out.
    pub leader: Option<&'a mut Leader>,
    /// `[log] capture_bodies`: the start of what the client sees.
    pub capture: Option<Capture>,
    /// How the client's body is framed: chunks, or bytes as they are.
    pub chunked_out: bool,
    /// Why the stream must be cut (an event past the size caps), as the
    /// error code the record gets.
    pub cut: Option<&'static str>,
    translated: Vec<u8>,
    stripped: Vec<u8>,
    guarded: Vec<u8>,
}

/// Runs one optional stage: its output, or the input when it is off.
fn stage<'d, S>(
    data: &'d [u8],
    s: Option<&mut S>,
    buf: &'d mut Vec<u8>,
    f: impl FnOnce(&mut S, &[u8], &mut Vec<u8>),
) -> &'d [u8] {
    match s {
        Some(s) => {
            buf.clear();
            f(s, data, buf);
            &buf[..]
        }
        None => data,
    }
}

impl<'a> Filter<'a> {
    pub fn new(tap: &'a mut Tap, leader: Option<&'a mut Leader>, chunked_out: bool) -> Self {
        Filter {
            tap,
            translator: None,
            stripper: None,
            guard: None,
            leader,
            capture: None,
            chunked_out,
            cut: None,
            translated: Vec::new(),
            stripped: Vec::new(),
            guarded: Vec::new(),
        }
    }

    /// Identical requests are following this one: if the client leaves,
    /// the upstream is still read to its end for them.
    pub fn has_followers(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.has_followers())
    }

    /// A body relayed byte for byte (Content-Length): only the tap and the
    /// recorder see it; the caller writes it out uncopied.
    pub fn observe(&mut self, data: &[u8]) {
        self.tap.observe(data);
        if let Some(l) = self.leader.as_deref_mut() {
            l.data(data);
        }
        if let Some(c) = self.capture.as_mut() {
            c.feed(data);
        }
    }

    /// Passes the next decoded upstream bytes through the chain into `out`.
    pub fn put(&mut self, out: &mut BytesMut, data: &[u8]) {
        if self.cut.is_some() {
            return;
        }
        self.tap.observe(data);
        if self.tap.oversized() {
            self.cut = Some(EVENT_TOO_LARGE);
            return;
        }
        let data = stage(data, self.translator.as_mut(), &mut self.translated, |t, d, o| t.feed(d, o));
        let mut oversized = false;
        let data = stage(data, self.stripper.as_mut(), &mut self.stripped, |s, d, o| oversized = s.feed(d, o).is_err());
        if oversized {
            self.cut = Some(EVENT_TOO_LARGE);
            return;
        }
        let data = stage(data, self.guard.as_mut(), &mut self.guarded, |g, d, o| g.feed(d, o));
        emit(self.leader.as_deref_mut(), self.capture.as_mut(), out, data, self.chunked_out);
    }

    /// The upstream body ended: the translator's last events and whatever
    /// the stripper and the guard still hold.
    pub fn end(&mut self, out: &mut BytesMut) {
        let mut tail = std::mem::take(&mut self.translated);
        tail.clear();
        if let Some(t) = self.translator.as_mut() {
            t.finish(&mut tail);
        }
        if let Some(s) = self.stripper.as_mut() {
            s.finish(&mut tail);
        }
        if let Some(g) = self.guard.as_mut() {
            self.guarded.clear();
            g.feed(&tail, &mut self.guarded);
            g.finish(&mut self.guarded);
            std::mem::swap(&mut tail, &mut self.guarded);
        }
        if !tail.is_empty() {
            emit(self.leader.as_deref_mut(), self.capture.as_mut(), out, &tail, self.chunked_out);
        }
        self.translated = tail;
    }
}

/// The end of the chain: the recorder, then the client's framing.
fn emit(
    leader: Option<&mut Leader>,
    capture: Option<&mut Capture>,
    out: &mut BytesMut,
    data: &[u8],
    chunked_out: bool,
) {
    if let Some(l) = leader {
        l.data(data);
    }
    if let Some(c) = capture {
        c.feed(data);
    }
    if chunked_out { write::chunk(out, data) } else { out.extend_from_slice(data) }
}

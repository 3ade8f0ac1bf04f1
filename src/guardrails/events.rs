//! Response-side policies on a live event stream.
//!
//! The stream is cut into events at blank lines (WHATWG event-stream
//! framing); an event with no text to change goes out byte for byte, one
//! whose text changed is written again (its `event:` and `data:` fields; a
//! rewritten event drops comments and `id:` lines, which no provider sends
//! with content). Each text delta goes through the request's policies in
//! order (`LiveText`), channel by channel, and the event carries what they
//! released. When an event closes a channel (a finish reason, a block's
//! stop, the end of the answer) what is still held is released first: in
//! that event's own text, or in an event written like the channel's last
//! delta, just before it.
//!
//! A block policy's finding ends the answer the way the provider's own
//! safety system ends one: OpenAI `finish_reason: "content_filter"`,
//! Anthropic `stop_reason: "refusal"`, Gemini `finishReason: "SAFETY"`,
//! Responses `response.incomplete` (reason `content_filter`). The content
//! before the finding is delivered; later content events are dropped, while
//! what reports usage and ends the stream still goes out.

use std::{ops::Range, sync::Arc};

use super::{
    Direction, Event, Guardrails,
    json::unescape,
    pseudonym::Pseudonyms,
    sites::{self, Chan, Doc, each, elements, quoted, raw_str, set_member, span_of, splice},
    stream::{LiveText, Mode},
};
use crate::{config::Action, providers::StreamFormat, tap::sse::MAX_EVENT};

/// Channels held at once: an upstream that opens more (choice indices
/// without end) has the text of the others read whole, event by event, so
/// memory stays bounded whatever it sends.
const MAX_CHANNELS: usize = 64;

/// A channel's last delta event: a flush is written like it.
#[derive(Debug, Default)]
struct Template {
    name: Vec<u8>,
    data: Vec<u8>,
    site: Range<usize>,
    /// Its other text strings: empty in the flush.
    others: Vec<Range<usize>>,
}

#[derive(Debug)]
struct Channel {
    key: Chan,
    /// One per active policy, in order.
    lives: Vec<LiveText>,
    /// After them: the request's placeholders restored.
    restore: Option<LiveText>,
    template: Option<Template>,
}

/// Why the answer was blocked.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub policy: Arc<str>,
    pub detector: Arc<str>,
}

pub struct StreamGuard {
    g: Arc<Guardrails>,
    /// Policy indices with a response action, in order.
    policies: Vec<usize>,
    format: StreamFormat,
    /// Bytes of an event whose end has not arrived.
    pending: Vec<u8>,
    chans: Vec<Channel>,
    /// Findings of closed channels and whole strings, per policy and kind.
    counts: Vec<Vec<u32>>,
    pub blocked: Option<Blocked>,
    /// Anthropic content blocks started and not stopped.
    open_blocks: Vec<u32>,
    /// OpenAI choice indices seen (each gets its content_filter finish).
    choices: Vec<u32>,
    /// The request's pseudonyms, restored after the policies ran.
    pseudonyms: Option<Arc<Pseudonyms>>,
}

impl StreamGuard {
    pub fn new(g: Arc<Guardrails>, policies: Vec<usize>, format: StreamFormat) -> StreamGuard {
        let counts = policies.iter().map(|&i| vec![0; g.policies[i].names.len()]).collect();
        StreamGuard {
            g,
            policies,
            format,
            pending: Vec::new(),
            chans: Vec::new(),
            counts,
            blocked: None,
            open_blocks: Vec::new(),
            choices: Vec::new(),
            pseudonyms: None,
        }
    }

    /// Restores the request's placeholders as the last stage (after the
    /// policies, so restored values are not redacted again).
    pub fn restoring(mut self, map: Arc<Pseudonyms>) -> StreamGuard {
        if self.g.restorer.is_some() && !map.is_empty() {
            self.pseudonyms = Some(map);
        }
        self
    }

    /// Takes the next bytes of the stream; writes what may go out.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        let mut i = 0;
        let buf = std::mem::take(&mut self.pending);
        while let Some(j) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
            let end = i + j;
            let next = match buf[end] {
                b'\r' if end + 1 == buf.len() => break, // a CR LF may be split
                b'\r' if buf[end + 1] == b'\n' => end + 2,
                _ => end + 1,
            };
            if end == i && i > start {
                // A blank line ends the event that started at `start`.
                self.event(&buf[start..next], out);
                start = next;
            } else if end == i {
                // A blank line with no event before it.
                out.extend_from_slice(&buf[start..next]);
                start = next;
            }
            i = next;
        }
        self.pending = buf;
        self.pending.drain(..start);
        if self.pending.len() > 2 * MAX_EVENT {
            // The tap cuts a stream before an event gets this big.
            self.pending.clear();
        }
    }

    /// The stream ended: everything held goes out.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            if self.blocked.is_none() {
                self.flush_all(out);
            }
            out.extend_from_slice(&rest);
        } else if self.blocked.is_none() {
            self.flush_all(out);
        }
    }

    /// What the policies found, for the record and the metric.
    pub fn events(&self) -> Vec<Event> {
        let mut totals = self.counts.clone();
        for c in &self.chans {
            for (k, live) in c.lives.iter().enumerate() {
                for (kind, n) in live.counts.iter().enumerate() {
                    totals[k][kind] += n;
                }
            }
        }
        let mut out = Vec::new();
        for (k, &pi) in self.policies.iter().enumerate() {
            let p = &self.g.policies[pi];
            for (kind, &count) in totals[k].iter().enumerate().filter(|(_, n)| **n > 0) {
                out.push(Event {
                    policy: p.name.clone(),
                    detector: p.names[kind].clone(),
                    action: p.response,
                    direction: Direction::Response,
                    count,
                });
            }
        }
        out
    }

    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let (name, data) = fields(raw);
        let Some(data) = data else {
            out.extend_from_slice(raw);
            return;
        };
        if self.blocked.is_some() {
            self.after_block(&name, &data, raw, out);
            return;
        }
        let Some(doc) = sites::find(self.format, &data, true) else {
            if data.trim_ascii() == b"[DONE]" {
                self.flush_all(out);
            }
            // An object that does not parse could hide text: it is dropped.
            if data.trim_ascii_start().first() != Some(&b'{') {
                out.extend_from_slice(raw);
            }
            return;
        };
        // Channels this event closes without text of theirs: their held
        // text goes out first, in events like their last deltas.
        let own: Vec<Chan> = doc.sites.iter().filter_map(|s| s.chan).collect();
        let closing: Vec<Chan> =
            self.chans.iter().map(|c| c.key).filter(|&k| doc.closes(k) && !own.contains(&k)).collect();
        for ch in closing {
            if self.blocked.is_none() {
                self.flush(ch, out);
            }
        }
        if self.blocked.is_some() {
            // The flush was cut: this event is past the end of the answer.
            self.after_block(&name, &data, raw, out);
            return;
        }
        self.track(&doc, &data);
        let mut edits = Vec::new();
        for (n, site) in doc.sites.iter().enumerate() {
            let text = unescape(&data[site.span.start + 1..site.span.end - 1]);
            if self.blocked.is_some() {
                edits.push((site.span.clone(), b"\"\"".to_vec()));
                continue;
            }
            let known = |ch: Chan| self.chans.iter().any(|c| c.key == ch) || self.chans.len() < MAX_CHANNELS;
            let new = match site.chan {
                Some(ch) if known(ch) => {
                    let close = doc.closes(ch);
                    let new = self.feed_text(ch, &text, close);
                    if !close && let Some(c) = self.chans.iter_mut().find(|c| c.key == ch) {
                        // Rewritten in place: one event's buffers per channel,
                        // not an allocation per delta.
                        let t = c.template.get_or_insert_with(Template::default);
                        t.name.clear();
                        t.name.extend_from_slice(&name);
                        t.data.clear();
                        t.data.extend_from_slice(&data);
                        t.site = site.span.clone();
                        t.others.clear();
                        let others = doc.sites.iter().enumerate().filter(|(m, _)| *m != n);
                        t.others.extend(others.map(|(_, s)| s.span.clone()));
                    }
                    new
                }
                _ => self.whole(&text),
            };
            if new != text {
                edits.push((site.span.clone(), quoted(&new)));
            }
        }
        let blocked_now = self.blocked.is_some();
        if blocked_now && self.format == StreamFormat::Gemini {
            safety_finish(&data, &mut edits);
        }
        if edits.is_empty() {
            out.extend_from_slice(raw);
        } else {
            let mut new = Vec::with_capacity(data.len() + 16);
            splice(&data, &mut edits, &mut new);
            write_event(&name, &new, out);
        }
        if blocked_now {
            self.close_blocked(&data, out);
        }
    }

    /// Remembers what a block's ending must close.
    fn track(&mut self, doc: &Doc, data: &[u8]) {
        match self.format {
            StreamFormat::Anthropic => {
                let index = sites::uint(data, b"index").unwrap_or(0);
                match &doc.kind[..] {
                    b"content_block_start"
                        if !self.open_blocks.contains(&index) && self.open_blocks.len() < MAX_CHANNELS =>
                    {
                        self.open_blocks.push(index)
                    }
                    b"content_block_stop" => self.open_blocks.retain(|&b| b != index),
                    _ => {}
                }
            }
            StreamFormat::OpenAiChat => {
                each(data, b"choices", |cs| {
                    elements(cs, |pos, c| {
                        let i = sites::uint(c, b"index").unwrap_or(pos);
                        if !self.choices.contains(&i) && self.choices.len() < MAX_CHANNELS {
                            self.choices.push(i);
                        }
                    })
                });
            }
            _ => {}
        }
    }

    /// One delta through the policies; `close`: the channel ends with it.
    fn feed_text(&mut self, ch: Chan, text: &str, close: bool) -> String {
        let idx = match self.chans.iter().position(|c| c.key == ch) {
            Some(i) => i,
            None => {
                let lives = self
                    .policies
                    .iter()
                    .map(|&pi| {
                        let p = &self.g.policies[pi];
                        let mode = if p.response == Action::Block { Mode::Block } else { Mode::Redact };
                        LiveText::new(mode, p.names.len())
                    })
                    .collect();
                let restore = self.pseudonyms.clone().map(LiveText::restoring);
                self.chans.push(Channel { key: ch, lives, restore, template: None });
                self.chans.len() - 1
            }
        };
        let mut cur = text.to_string();
        for (k, &pi) in self.policies.iter().enumerate() {
            let p = &self.g.policies[pi];
            let live = &mut self.chans[idx].lives[k];
            let mut next = String::new();
            live.push(&p.detector, &cur, &mut next);
            if close {
                live.finish(&p.detector, &mut next);
            }
            // A flag policy looks and lets the text through as it came.
            if p.response != Action::Flag {
                cur = next;
            }
            if live.blocked {
                let kind = live.counts.iter().position(|&n| n > 0).unwrap_or(0);
                self.blocked = Some(Blocked { policy: p.name.clone(), detector: p.names[kind].clone() });
                break;
            }
        }
        if let (Some(live), Some(det)) = (self.chans[idx].restore.as_mut(), self.g.restorer.as_ref()) {
            let mut next = String::with_capacity(cur.len());
            live.push(det, &cur, &mut next);
            // A blocked answer ends here: what it delivers is final.
            if close || self.blocked.is_some() {
                live.finish(det, &mut next);
            }
            cur = next;
        }
        if close && let Some(i) = self.chans.iter().position(|c| c.key == ch) {
            let c = self.chans.swap_remove(i);
            self.absorb(&c);
        }
        cur
    }

    /// A closed channel's findings join the totals.
    fn absorb(&mut self, c: &Channel) {
        for (k, live) in c.lives.iter().enumerate() {
            for (kind, n) in live.counts.iter().enumerate() {
                self.counts[k][kind] += n;
            }
        }
    }

    /// A string read whole: redacted by each policy in turn. In a
    /// Responses stream it repeats deltas already counted, so only its
    /// text changes; elsewhere (a tool call's arguments sent whole) it
    /// counts like any finding.
    fn whole(&mut self, text: &str) -> String {
        let count = self.format != StreamFormat::OpenAiResponses;
        let mut cur = text.to_string();
        let mut findings = Vec::new();
        for (k, &pi) in self.policies.iter().enumerate() {
            let p = &self.g.policies[pi];
            p.detector.find(&cur, &mut findings);
            let Some(first) = findings.first() else { continue };
            if count {
                for f in &findings {
                    self.counts[k][f.kind] += 1;
                }
            }
            match p.response {
                Action::Redact => cur = super::redact(&cur, &findings, &p.detector),
                Action::Block if count => {
                    cur.truncate(first.span.start);
                    self.blocked = Some(Blocked { policy: p.name.clone(), detector: p.names[first.kind].clone() });
                    break;
                }
                _ => {}
            }
        }
        if let (Some(map), Some(det)) = (&self.pseudonyms, &self.g.restorer)
            && let Some(restored) = super::pseudonym::restore(det, map, &cur)
        {
            cur = restored;
        }
        cur
    }

    /// Releases a channel's held text as an event like its last delta.
    fn flush(&mut self, ch: Chan, out: &mut Vec<u8>) {
        // Every open channel had a delta that did not close it: its template.
        let template = self.chans.iter_mut().find(|c| c.key == ch).and_then(|c| c.template.take());
        let text = self.feed_text(ch, "", true);
        let Some(t) = template else { return };
        if text.is_empty() {
            if self.blocked.is_some() {
                if self.format == StreamFormat::Gemini {
                    // The answer's end still says why.
                    let mut edits = vec![(t.site.clone(), b"\"\"".to_vec())];
                    edits.extend(t.others.iter().map(|s| (s.clone(), b"\"\"".to_vec())));
                    safety_finish(&t.data, &mut edits);
                    let mut data = Vec::new();
                    splice(&t.data, &mut edits, &mut data);
                    write_event(&t.name, &data, out);
                }
                self.close_blocked(&t.data, out);
            }
            return;
        }
        let mut edits = vec![(t.site.clone(), quoted(&text))];
        edits.extend(t.others.iter().map(|s| (s.clone(), b"\"\"".to_vec())));
        if self.blocked.is_some() && self.format == StreamFormat::Gemini {
            safety_finish(&t.data, &mut edits);
        }
        let mut data = Vec::new();
        splice(&t.data, &mut edits, &mut data);
        write_event(&t.name, &data, out);
        if self.blocked.is_some() {
            self.close_blocked(&t.data, out);
        }
    }

    fn flush_all(&mut self, out: &mut Vec<u8>) {
        let keys: Vec<Chan> = self.chans.iter().map(|c| c.key).collect();
        for ch in keys {
            if self.blocked.is_none() {
                self.flush(ch, out);
            }
        }
    }

    /// The events that end a blocked answer, right after the one that was
    /// cut (`data`: an event of this stream, for ids).
    fn close_blocked(&mut self, data: &[u8], out: &mut Vec<u8>) {
        match self.format {
            StreamFormat::OpenAiChat => {
                let member = |name: &[u8]| {
                    let mut v: &[u8] = b"null";
                    each(data, name, |x| v = x);
                    v.to_vec()
                };
                for &i in &self.choices {
                    let mut d = b"{\"id\":".to_vec();
                    d.extend_from_slice(&member(b"id"));
                    d.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
                    d.extend_from_slice(&member(b"created"));
                    d.extend_from_slice(b",\"model\":");
                    d.extend_from_slice(&member(b"model"));
                    d.extend_from_slice(
                        format!(
                            ",\"choices\":[{{\"index\":{i},\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"content_filter\"}}]}}"
                        )
                        .as_bytes(),
                    );
                    write_event(b"", &d, out);
                }
            }
            StreamFormat::Anthropic => {
                for b in std::mem::take(&mut self.open_blocks) {
                    let d = format!("{{\"type\":\"content_block_stop\",\"index\":{b}}}");
                    write_event(b"content_block_stop", d.as_bytes(), out);
                }
            }
            StreamFormat::Gemini | StreamFormat::OpenAiResponses => {}
        }
    }

    /// After a block: content is dropped; what ends the answer goes out,
    /// saying why it ended.
    fn after_block(&mut self, name: &[u8], data: &[u8], raw: &[u8], out: &mut Vec<u8>) {
        let kind = raw_str(data, b"type").unwrap_or_default();
        match self.format {
            StreamFormat::OpenAiChat => {
                let mut content = false;
                each(data, b"choices", |cs| elements(cs, |_, _| content = true));
                if !content {
                    out.extend_from_slice(raw);
                }
            }
            StreamFormat::Anthropic => match kind {
                b"content_block_start" | b"content_block_delta" | b"content_block_stop" => {}
                b"message_delta" => {
                    let mut edits = Vec::new();
                    each(data, b"delta", |d| {
                        each(d, b"stop_reason", |v| edits.push((span_of(data, v), b"\"refusal\"".to_vec())))
                    });
                    let mut new = Vec::new();
                    splice(data, &mut edits, &mut new);
                    write_event(name, &new, out);
                }
                _ => out.extend_from_slice(raw),
            },
            StreamFormat::Gemini => {}
            StreamFormat::OpenAiResponses => {
                let content = [&b"response.output_"[..], b"response.content_part.", b"response.function_call_"]
                    .iter()
                    .chain([&b"response.refusal."[..], b"response.reasoning"].iter())
                    .any(|p| kind.starts_with(p));
                if content {
                    return;
                }
                if kind == b"response.completed" {
                    let new = incomplete(data);
                    write_event(b"response.incomplete", &new, out);
                    return;
                }
                out.extend_from_slice(raw);
            }
        }
    }
}

/// A Gemini event's candidates end with `finishReason: "SAFETY"`.
fn safety_finish(data: &[u8], edits: &mut Vec<(Range<usize>, Vec<u8>)>) {
    each(data, b"candidates", |cs| elements(cs, |_, c| set_member(data, c, b"finishReason", b"\"SAFETY\"", edits)));
}

/// A Responses `response.completed` event turned into the
/// `response.incomplete` the API sends when its content filter stops one.
pub fn incomplete(data: &[u8]) -> Vec<u8> {
    let mut edits = Vec::new();
    each(data, b"type", |v| edits.push((span_of(data, v), b"\"response.incomplete\"".to_vec())));
    each(data, b"response", |r| incomplete_edits(data, r, &mut edits));
    let mut new = Vec::new();
    splice(data, &mut edits, &mut new);
    new
}

/// Edits making a Responses object (`r`, inside `doc`) an incomplete one.
pub fn incomplete_edits(doc: &[u8], r: &[u8], edits: &mut Vec<(Range<usize>, Vec<u8>)>) {
    each(r, b"status", |v| edits.push((span_of(doc, v), b"\"incomplete\"".to_vec())));
    each(r, b"output", |v| edits.push((span_of(doc, v), b"[]".to_vec())));
    set_member(doc, r, b"incomplete_details", b"{\"reason\":\"content_filter\"}", edits);
}

/// An event's `event:` name and its `data:` lines joined (None: no data).
fn fields(raw: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut name = Vec::new();
    let mut data: Option<Vec<u8>> = None;
    for line in raw.split(|&b| b == b'\n' || b == b'\r') {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => (&line[..c], line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = value.to_vec(),
            b"data" => match &mut data {
                Some(d) => {
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(value.to_vec()),
            },
            _ => {}
        }
    }
    (name, data)
}

/// Writes one event; data with line breaks becomes several `data:` lines.
fn write_event(name: &[u8], data: &[u8], out: &mut Vec<u8>) {
    if !name.is_empty() {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests;

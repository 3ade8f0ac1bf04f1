//! Where a model's output text lies in an answer, per provider format: the
//! strings the client's SDK shows or hands to code (content and refusals,
//! tool-call arguments, thinking), found without parsing the answer into a
//! tree, so they can be rewritten in place. Nothing else is touched: ids,
//! roles, finish reasons, usage and logprobs stay byte for byte.
//!
//! In a stream a text string is a delta of a channel (one choice's
//! content, one tool call's arguments, one content block, one candidate):
//! its pieces are read together across events. Some events also close
//! channels (a finish reason, `content_block_stop`, `[DONE]`), and some
//! repeat a channel's whole text (the Responses API's `*.done` events):
//! those strings are rewritten whole.

use std::ops::Range;

use crate::providers::{
    StreamFormat,
    body::{for_each_element, for_each_member},
};

/// A text channel: (choice, block, candidate or output index; the part of
/// it: content, refusal, a tool call).
pub type Chan = (u32, u32);

/// One text string of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The string, quotes included.
    pub span: Range<usize>,
    /// The channel it continues; None: a whole text.
    pub chan: Option<Chan>,
}

/// What one document (an event's data, or a whole answer) holds.
#[derive(Debug, Default)]
pub struct Doc {
    pub sites: Vec<Site>,
    /// Channels this event closes: (index, part) or every part of an index.
    pub ends: Vec<(u32, Option<u32>)>,
    /// The event closes every channel (the answer is over).
    pub ends_all: bool,
    /// The event's `type` member (Anthropic, Responses), as written.
    pub kind: Vec<u8>,
}

impl Doc {
    pub fn closes(&self, chan: Chan) -> bool {
        self.ends_all || self.ends.iter().any(|&(i, p)| i == chan.0 && p.is_none_or(|p| p == chan.1))
    }
}

/// Tool-call parts start here (a tool's own index is added).
const TOOL: u32 = 1 << 16;

/// Where a value lies in `doc` (it is a sub-slice of it).
pub fn span_of(doc: &[u8], v: &[u8]) -> Range<usize> {
    let start = v.as_ptr() as usize - doc.as_ptr() as usize;
    start..start + v.len()
}

/// Every member named `name` (duplicates too: a client reads one of them,
/// so each is rewritten).
pub fn each<'b>(obj: &'b [u8], name: &[u8], mut f: impl FnMut(&'b [u8])) {
    for_each_member(obj, |k, v| {
        if k == name {
            f(v);
        }
        true
    });
}

/// Every element of an array, with its position.
pub fn elements<'b>(arr: &'b [u8], mut f: impl FnMut(u32, &'b [u8])) {
    let mut n = 0;
    for_each_element(arr, |v| {
        f(n, v);
        n = n.saturating_add(1);
        true
    });
}

/// A whole-number member (the last, as clients read duplicates).
pub fn uint(obj: &[u8], name: &[u8]) -> Option<u32> {
    let mut out = None;
    each(obj, name, |v| out = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()));
    out
}

/// A string member's raw contents (the last).
pub fn raw_str<'b>(obj: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
    let mut out = None;
    each(obj, name, |v| {
        out = (v.len() >= 2 && v[0] == b'"').then(|| &v[1..v.len() - 1]);
    });
    out
}

struct Finder<'d> {
    doc: &'d [u8],
    stream: bool,
    out: Doc,
}

impl<'d> Finder<'d> {
    fn text(&mut self, v: &[u8], chan: Chan) {
        if v.first() == Some(&b'"') {
            let chan = self.stream.then_some(chan);
            self.out.sites.push(Site { span: span_of(self.doc, v), chan });
        }
    }

    /// A string always read whole (a `*.done` event's full text).
    fn whole(&mut self, v: &[u8]) {
        if v.first() == Some(&b'"') {
            self.out.sites.push(Site { span: span_of(self.doc, v), chan: None });
        }
    }

    /// Every text string inside a value (tool-call input objects).
    fn strings(&mut self, v: &[u8]) {
        let mut spans = Vec::new();
        let at = span_of(self.doc, v).start;
        if super::json::walk(v, at, &mut spans).is_some() {
            self.out.sites.extend(spans.into_iter().map(|span| Site { span, chan: None }));
        }
    }
}

/// The text of an answer or event in `format`; `stream`: `doc` is one
/// event's data. None: not a JSON object.
pub fn find(format: StreamFormat, doc: &[u8], stream: bool) -> Option<Doc> {
    // One walk checks the object and finds its type (the last, as
    // clients read duplicates).
    let mut kind: Option<&[u8]> = None;
    for_each_member(doc, |k, v| {
        if k == b"type" {
            kind = (v.len() >= 2 && v[0] == b'"').then(|| &v[1..v.len() - 1]);
        }
        true
    })?;
    let mut f = Finder { doc, stream, out: Doc::default() };
    if let Some(kind) = kind {
        f.out.kind = kind.to_vec();
    }
    match format {
        StreamFormat::OpenAiChat => openai_chat(&mut f, doc),
        StreamFormat::Anthropic => anthropic(&mut f, doc),
        StreamFormat::Gemini => gemini(&mut f, doc),
        StreamFormat::OpenAiResponses => responses(&mut f, doc),
    }
    f.out.sites.sort_by_key(|s| s.span.start);
    Some(f.out)
}

fn openai_chat(f: &mut Finder<'_>, doc: &[u8]) {
    // One walk per object, every member (duplicates included) dispatched
    // by name: this runs on every chunk of every guarded stream.
    let message = |f: &mut Finder<'_>, m: &[u8], ci: u32| {
        for_each_member(m, |k, v| {
            match k {
                b"content" => f.text(v, (ci, 0)),
                b"refusal" => f.text(v, (ci, 1)),
                b"tool_calls" => elements(v, |tpos, t| {
                    let ti = uint(t, b"index").unwrap_or(tpos);
                    each(t, b"function", |func| each(func, b"arguments", |v| f.text(v, (ci, TOOL + ti.min(TOOL)))));
                }),
                _ => {}
            }
            true
        });
    };
    each(doc, b"choices", |choices| {
        elements(choices, |pos, c| {
            let ci = uint(c, b"index").unwrap_or(pos);
            for_each_member(c, |k, v| {
                match k {
                    b"delta" | b"message" => message(f, v, ci),
                    // Legacy completions.
                    b"text" => f.text(v, (ci, 0)),
                    b"finish_reason" if v.first() == Some(&b'"') => f.out.ends.push((ci, None)),
                    _ => {}
                }
                true
            });
        })
    });
}

fn anthropic(f: &mut Finder<'_>, doc: &[u8]) {
    match &f.out.kind[..] {
        b"content_block_delta" => {
            let bi = uint(doc, b"index").unwrap_or(0);
            each(doc, b"delta", |d| {
                for key in [&b"text"[..], b"partial_json", b"thinking"] {
                    each(d, key, |v| f.text(v, (bi, 0)));
                }
            });
        }
        b"content_block_start" => each(doc, b"content_block", |b| content_block(f, b)),
        b"content_block_stop" => f.out.ends.push((uint(doc, b"index").unwrap_or(0), None)),
        b"message_delta" | b"message_stop" => f.out.ends_all = true,
        b"message_start" => each(doc, b"message", |m| each(m, b"content", |c| elements(c, |_, b| content_block(f, b)))),
        // A whole answer.
        _ if !f.stream => each(doc, b"content", |c| elements(c, |_, b| content_block(f, b))),
        _ => {}
    }
}

/// An Anthropic content block, whole.
fn content_block(f: &mut Finder<'_>, b: &[u8]) {
    each(b, b"text", |v| f.whole(v));
    each(b, b"thinking", |v| f.whole(v));
    each(b, b"input", |v| f.strings(v));
}

fn gemini(f: &mut Finder<'_>, doc: &[u8]) {
    each(doc, b"candidates", |cands| {
        elements(cands, |pos, c| {
            let ci = uint(c, b"index").unwrap_or(pos);
            each(c, b"content", |content| {
                each(content, b"parts", |parts| {
                    elements(parts, |_, p| {
                        each(p, b"text", |v| f.text(v, (ci, 0)));
                        each(p, b"functionCall", |call| each(call, b"args", |a| f.strings(a)));
                    })
                })
            });
            each(c, b"finishReason", |_| f.out.ends.push((ci, None)));
        })
    });
}

fn responses(f: &mut Finder<'_>, doc: &[u8]) {
    let oi = uint(doc, b"output_index").unwrap_or(0);
    let part = uint(doc, b"content_index").unwrap_or(0).min(TOOL - 1);
    let kind = f.out.kind.clone();
    match &kind[..] {
        b"response.output_text.delta" | b"response.refusal.delta" => each(doc, b"delta", |v| f.text(v, (oi, part))),
        b"response.function_call_arguments.delta" => each(doc, b"delta", |v| f.text(v, (oi, TOOL))),
        b"response.output_text.done" => {
            each(doc, b"text", |v| f.whole(v));
            f.out.ends.push((oi, Some(part)));
        }
        b"response.refusal.done" => {
            each(doc, b"refusal", |v| f.whole(v));
            f.out.ends.push((oi, Some(part)));
        }
        b"response.function_call_arguments.done" => {
            each(doc, b"arguments", |v| f.whole(v));
            f.out.ends.push((oi, Some(TOOL)));
        }
        b"response.content_part.added" | b"response.content_part.done" => each(doc, b"part", |p| output_part(f, p)),
        b"response.output_item.added" | b"response.output_item.done" => each(doc, b"item", |i| output_item(f, i)),
        b"response.completed" | b"response.incomplete" | b"response.failed" => {
            f.out.ends_all = true;
            each(doc, b"response", |r| each(r, b"output", |o| elements(o, |_, i| output_item(f, i))));
        }
        _ if !f.stream => each(doc, b"output", |o| elements(o, |_, i| output_item(f, i))),
        _ => {}
    }
}

fn output_item(f: &mut Finder<'_>, item: &[u8]) {
    each(item, b"content", |c| elements(c, |_, p| output_part(f, p)));
    each(item, b"arguments", |v| f.whole(v));
}

fn output_part(f: &mut Finder<'_>, p: &[u8]) {
    each(p, b"text", |v| f.whole(v));
    each(p, b"refusal", |v| f.whole(v));
}

/// Sets every member `name` of object `obj` (inside `doc`) to the JSON
/// `value`, adding the member first in the object when it is missing.
pub fn set_member(doc: &[u8], obj: &[u8], name: &[u8], value: &[u8], edits: &mut Vec<(Range<usize>, Vec<u8>)>) {
    let mut has = false;
    each(obj, name, |v| {
        has = true;
        edits.push((span_of(doc, v), value.to_vec()));
    });
    if !has && obj.first() == Some(&b'{') {
        let at = span_of(doc, obj).start + 1;
        let mut m = quoted(&String::from_utf8_lossy(name));
        m.push(b':');
        m.extend_from_slice(value);
        // An empty object takes the member without a comma after it.
        if obj[1..].trim_ascii_start().first() != Some(&b'}') {
            m.push(b',');
        }
        edits.push((at..at, m));
    }
}

/// Writes `doc` with each (span, bytes) put in place of its span (spans in
/// order, not overlapping; an empty span inserts).
pub fn splice(doc: &[u8], edits: &mut [(Range<usize>, Vec<u8>)], out: &mut Vec<u8>) {
    edits.sort_by_key(|e| (e.0.start, e.0.end));
    let mut at = 0;
    for (span, bytes) in edits.iter() {
        if span.start < at {
            continue;
        }
        out.extend_from_slice(&doc[at..span.start]);
        out.extend_from_slice(bytes);
        at = span.end;
    }
    out.extend_from_slice(&doc[at..]);
}

/// A string as a JSON string literal.
pub fn quoted(text: &str) -> Vec<u8> {
    // Serialising a str cannot fail.
    serde_json::to_vec(text).unwrap_or_default()
}

#[cfg(test)]
mod tests;

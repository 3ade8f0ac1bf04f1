//! The strings a model reads, found in a JSON body without parsing it, and
//! rewritten in place.
//!
//! Text lives under a few top-level members (`messages`, `system`, `input`,
//! `contents`, …); below them every string value is text except those under
//! keys that name, type or carry media (`role`, `type`, `id`, `url`,
//! `data`, …). Object keys are never text. Every member of a name is walked,
//! duplicates included: a provider that keeps the last duplicate and one
//! that keeps the first both see only scanned text.
//!
//! A body with no finding is forwarded byte for byte; one with findings
//! has only the changed strings re-encoded.

use std::{borrow::Cow, ops::Range};

use crate::providers::body::{for_each_member, skip_string, skip_value, ws};

/// Top-level members holding what a model reads in a request: chat and
/// Anthropic `messages`, Anthropic `system`, completions `prompt`,
/// embeddings/Responses `input` and `instructions`, Gemini `contents` and
/// `systemInstruction`.
pub const REQUEST_ROOTS: &[&[u8]] =
    &[b"messages", b"system", b"prompt", b"input", b"instructions", b"contents", b"systemInstruction"];

/// Keys whose values are never text: names, ids, kinds, media and
/// encodings (base64 images and files are not prose).
const NOT_TEXT: &[&[u8]] = &[
    b"role",
    b"type",
    b"id",
    b"name",
    b"tool_call_id",
    b"tool_use_id",
    b"call_id",
    b"model",
    b"media_type",
    b"mime_type",
    b"mimeType",
    b"data",
    b"url",
    b"detail",
    b"format",
    b"file_id",
    b"file_data",
    b"signature",
    b"cache_control",
    b"status",
];

/// The spans (quotes included) of the text strings of `body`, in order.
/// None: `body` is not a whole JSON object.
pub fn text_spans(body: &[u8], roots: &[&[u8]]) -> Option<Vec<Range<usize>>> {
    let base = body.as_ptr() as usize;
    let mut spans = Vec::new();
    let mut ok = true;
    for_each_member(body, |key, value| {
        if roots.contains(&key) {
            let at = value.as_ptr() as usize - base;
            ok &= walk(value, at, &mut spans).is_some();
        }
        ok
    })?;
    ok.then_some(spans)
}

/// One open container while walking: an object or an array, and whether
/// its values are text.
struct Open {
    object: bool,
    text: bool,
}

/// Pushes the spans of the text strings in one value (offsets + `at`).
/// Iterative: nesting depth costs heap, never stack.
pub(crate) fn walk(b: &[u8], at: usize, spans: &mut Vec<Range<usize>>) -> Option<()> {
    let mut stack: Vec<Open> = Vec::new();
    let mut i = 0;
    let mut text = true;
    loop {
        // A value starts at i.
        i = ws(b, i);
        match *b.get(i)? {
            b'"' => {
                let end = skip_string(b, i)?;
                if text {
                    spans.push(at + i..at + end);
                }
                i = end;
            }
            open @ (b'{' | b'[') => {
                let object = open == b'{';
                stack.push(Open { object, text });
                i = ws(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    stack.pop();
                    i += 1;
                } else {
                    if object {
                        (i, text) = member_key(b, i, text)?;
                    }
                    continue;
                }
            }
            _ => i = skip_value(b, i)?,
        }
        // After a value: the next member or element, or closing brackets.
        loop {
            let Some(top) = stack.last() else { return Some(()) };
            i = ws(b, i);
            match *b.get(i)? {
                b',' => {
                    i += 1;
                    text = top.text;
                    if top.object {
                        (i, text) = member_key(b, ws(b, i), top.text)?;
                    }
                    break;
                }
                b'}' if top.object => {
                    stack.pop();
                    i += 1;
                }
                b']' if !top.object => {
                    stack.pop();
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// Reads `"key":` at `i`; returns where its value starts and whether the
/// value is text.
fn member_key(b: &[u8], i: usize, text: bool) -> Option<(usize, bool)> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let end = skip_string(b, i)?;
    let raw = &b[i + 1..end - 1];
    let is_text = text
        && if memchr::memchr(b'\\', raw).is_none() {
            !NOT_TEXT.contains(&raw)
        } else {
            let key = unescape(raw);
            !NOT_TEXT.contains(&key.as_bytes())
        };
    let colon = ws(b, end);
    (*b.get(colon)? == b':').then_some((colon + 1, is_text))
}

/// The text of a JSON string's contents (between the quotes). Lossy on
/// purpose: a lone surrogate or a stray byte becomes U+FFFD instead of
/// making the string unscannable, since some providers' parsers accept what
/// serde would refuse.
pub fn unescape(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr(b'\\', raw).is_none() {
        return String::from_utf8_lossy(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = raw.get(i + 1) else { break };
        i += 2;
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            continue;
        }
        let hex = |at: usize| {
            raw.get(at..at + 4).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u32::from_str_radix(h, 16).ok())
        };
        let ch = match (e, hex(i)) {
            (b'u', Some(hi @ 0xD800..=0xDBFF)) => {
                let lo = (raw.get(i + 4..i + 6) == Some(b"\\u")).then(|| hex(i + 6)).flatten();
                match lo {
                    Some(lo @ 0xDC00..=0xDFFF) => {
                        i += 10;
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                    }
                    _ => {
                        i += 4;
                        None
                    }
                }
            }
            (b'u', Some(cp)) => {
                i += 4;
                char::from_u32(cp)
            }
            _ => None,
        };
        let mut buf = [0; 4];
        out.extend_from_slice(ch.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// `body` with each `(span, new text)` written over its string (spans in
/// order, quotes included), the new text JSON-encoded.
pub fn rewrite(body: &[u8], changes: &[(Range<usize>, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at = 0;
    for (span, text) in changes {
        out.extend_from_slice(&body[at..span.start]);
        // Serialising a String cannot fail.
        out.extend_from_slice(serde_json::to_string(text).unwrap_or_default().as_bytes());
        at = span.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(body: &str) -> Option<Vec<String>> {
        let spans = text_spans(body.as_bytes(), REQUEST_ROOTS)?;
        Some(spans.into_iter().map(|s| unescape(&body.as_bytes()[s.start + 1..s.end - 1]).into_owned()).collect())
    }

    #[test]
    fn finds_the_text_of_every_format() {
        let chat = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi a@b.co"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},{"role":"tool","tool_call_id":"c1","content":"result"}],"metadata":{"user":"u@x.io"}}"#;
        assert_eq!(texts(chat).unwrap(), ["be brief", "hi a@b.co", "{\"x\":1}", "result"]);
        let anthropic = r#"{"model":"claude","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"out"}]}]},{"role":"assistant","content":[{"type":"tool_use","id":"t2","name":"n","input":{"q":"query text","n":3}}]}]}"#;
        assert_eq!(texts(anthropic).unwrap(), ["sys", "out", "query text"]);
        let gemini = r#"{"contents":[{"role":"user","parts":[{"text":"hello"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}}]}],"systemInstruction":{"parts":[{"text":"rules"}]},"generationConfig":{"stopSequences":["x"]}}"#;
        assert_eq!(texts(gemini).unwrap(), ["hello", "rules"]);
        assert_eq!(texts(r#"{"input":["one","two"],"model":"e"}"#).unwrap(), ["one", "two"]);
        assert_eq!(texts(r#"{"prompt":"p","n":1,"input":{},"messages":[]}"#).unwrap(), ["p"]);
    }

    #[test]
    fn duplicate_and_escaped_keys_are_walked() {
        let body = r#"{"messages":[{"role":"user","content":"first"}],"m\u0065ssages":[{"r\u006fle":"user","content":"second"}]}"#;
        assert_eq!(texts(body).unwrap(), ["first", "second"]);
        // An escaped non-text key still is one.
        assert_eq!(texts(r#"{"messages":[{"\u0072ole":"user","content":"x"}]}"#).unwrap(), ["x"]);
    }

    #[test]
    fn broken_bodies_are_none_at_every_cut() {
        let body = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"model":"m"}"#;
        assert!(texts(body).is_some());
        for cut in 0..body.len() {
            assert!(texts(&body[..cut]).is_none(), "cut at {cut}");
        }
        assert!(texts(r#"{"messages":[{"content" "x"}]}"#).is_none());
        assert!(texts(r#"{"messages":[}"#).is_none());
        assert!(texts(r#"{"messages":{]}"#).is_none());
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let depth = 200_000;
        let body = format!(r#"{{"messages":{}"x"{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert_eq!(texts(&body).unwrap(), ["x"]);
    }

    #[test]
    fn unescape_is_lossy_never_failing() {
        assert_eq!(unescape(br#"a\"b\\c\/d\n\u0040\ud83d\ude00"#), "a\"b\\c/d\n@\u{1F600}");
        assert_eq!(unescape(br#"lone \ud800 surrogate"#), "lone \u{FFFD} surrogate");
        assert_eq!(unescape(br#"bad \x escape"#), "bad \u{FFFD} escape");
        assert_eq!(unescape(b"bytes \xff here"), "bytes \u{FFFD} here");
        assert_eq!(unescape(br#"cut \u00"#), "cut \u{FFFD}00");
    }

    #[test]
    fn rewrite_changes_only_the_spans() {
        let body = br#"{"messages":[{"role":"user","content":"mail a@b.co"}],"model":"m"}"#;
        let spans = text_spans(body, REQUEST_ROOTS).unwrap();
        let out = rewrite(body, &[(spans[0].clone(), "mail \"[EMAIL]\"".into())]);
        assert_eq!(out, br#"{"messages":[{"role":"user","content":"mail \"[EMAIL]\""}],"model":"m"}"#);
        assert_eq!(rewrite(body, &[]), body);
    }
}

//! The facts the gateway reads from a request body (model, stream,
//! stream_options, output cap, prompt prefix), without parsing it.
//!
//! Prompts can be hundreds of kilobytes; a full parse on every request to
//! read two fields would cost more than proxying. This walks the top-level
//! object only, skipping every other value (strings by memchr). Nested keys
//! of the same names (a tool schema's `"model"` property, say) are never
//! mistaken for the top-level ones.
//!
//! Keys are compared as JSON defines them: `"mod\u0065l"` is `model`. A
//! body that names a key the gateway reads twice is refused (`scan`):
//! providers that keep the last duplicate would serve another model than
//! the one checked, limited and priced.

/// What the request asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
    /// The body has a top-level `stream_options` key.
    pub stream_options: bool,
    /// ... with `include_usage: true`.
    pub include_usage: bool,
}

impl RequestInfo {
    /// Whether the client asked for the usage chunk of a stream.
    pub fn stream_options_usage(&self) -> bool {
        self.include_usage
    }
}

/// The longest model name a request may use. Model names become metric
/// labels, log fields and cache-key parts; real ones are far shorter.
pub const MAX_MODEL_NAME: usize = 256;

/// The keys the gateway reads: each may appear once.
const WATCHED: [&str; 6] = ["model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "messages"];

/// Reads the request's facts; Err(key) names a key the gateway reads that
/// the body has twice.
pub fn scan(body: &[u8]) -> Result<RequestInfo, &'static str> {
    let mut info = RequestInfo::default();
    let mut seen = [false; WATCHED.len()];
    let mut duplicate = None;
    let _ = for_each_member(body, |key, value| {
        if let Some(i) = WATCHED.iter().position(|w| w.as_bytes() == key)
            && std::mem::replace(&mut seen[i], true)
        {
            duplicate = Some(WATCHED[i]);
            return false;
        }
        match key {
            b"model" if value.first() == Some(&b'"') => info.model = serde_json::from_slice::<String>(value).ok(),
            b"stream" => info.stream = value == b"true",
            b"stream_options" => {
                info.stream_options = true;
                info.include_usage = serde_json::from_slice::<serde_json::Value>(value)
                    .is_ok_and(|v| v["include_usage"].as_bool() == Some(true));
            }
            _ => {}
        }
        true
    });
    match duplicate {
        Some(key) => Err(key),
        None => Ok(info),
    }
}

pub(crate) fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Index just past the string starting at `i` (which is a quote).
pub(crate) fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    string_end(b, i).map(|(end, _)| end)
}

/// Index just past the string starting at `i` (which is a quote), and
/// whether it holds an escape.
fn string_end(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut escaped = false;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[j] == b'"' {
            return Some((j + 1, escaped));
        }
        escaped = true;
        i = j + 2;
    }
}

/// Index just past the value starting at `i`.
pub(crate) fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let end = b[i..].iter().position(|&c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            // An empty value is no value: callers that loop over values
            // must always move forward (`[}` once looped forever).
            (end > 0).then_some(i + end)
        }
    }
}

/// Calls `f(raw element)` for each element of the array `b` until it
/// returns false. None: not a (complete) JSON array.
pub(crate) fn for_each_element<'b>(b: &'b [u8], mut f: impl FnMut(&'b [u8]) -> bool) -> Option<()> {
    let mut i = ws(b, 0);
    if *b.get(i)? != b'[' {
        return None;
    }
    i = ws(b, i + 1);
    if *b.get(i)? == b']' {
        return Some(());
    }
    loop {
        i = ws(b, i);
        let end = skip_value(b, i)?;
        if !f(&b[i..end]) {
            return Some(());
        }
        i = ws(b, end);
        match *b.get(i)? {
            b',' => i += 1,
            b']' => return Some(()),
            _ => return None,
        }
    }
}

/// Calls `f(key, raw value)` for each top-level member until it returns
/// false or the object ends; the key is unescaped (an escaped key costs one
/// decode). None: not a (complete) JSON object.
pub(crate) fn for_each_member<'b>(b: &'b [u8], mut f: impl FnMut(&[u8], &'b [u8]) -> bool) -> Option<()> {
    let mut i = ws(b, 0);
    if *b.get(i)? != b'{' {
        return None;
    }
    i += 1;
    loop {
        i = ws(b, i);
        match *b.get(i)? {
            b'}' => return Some(()),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let (key_end, escaped) = string_end(b, i)?;
        let raw_key = &b[i + 1..key_end - 1];
        let decoded;
        let key = if escaped {
            decoded = serde_json::from_slice::<String>(&b[i..key_end]).ok()?;
            decoded.as_bytes()
        } else {
            raw_key
        };
        i = ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = ws(b, i + 1);
        let value_end = skip_value(b, i)?;
        if !f(key, &b[i..value_end]) {
            return Some(());
        }
        i = value_end;
    }
}

/// Where the top-level `model` string value sits (quotes included).
pub fn model_span(body: &[u8]) -> Option<std::ops::Range<usize>> {
    member_span(body, "model").filter(|r| body[r.start] == b'"')
}

/// Where the value of the top-level member `name` sits.
pub fn member_span(body: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    let base = body.as_ptr() as usize;
    let mut span = None;
    for_each_member(body, |key, value| {
        if key == name.as_bytes() {
            let start = value.as_ptr() as usize - base;
            span = Some(start..start + value.len());
            return false;
        }
        true
    });
    span
}

/// The start of the prompt, for prefix-affinity routing, at most `max`
/// bytes: for chat, the raw `messages` up to the end of the first user
/// message — the part every turn of a conversation resends unchanged, so
/// all its turns hash alike; otherwise the raw `prompt` / `input` /
/// `contents` value.
pub fn prompt_prefix(body: &[u8], max: usize) -> &[u8] {
    let mut found: &[u8] = b"";
    for_each_member(body, |key, value| {
        if matches!(key, b"messages" | b"prompt" | b"input" | b"contents") {
            found = if key == b"messages" { through_first_user(value).unwrap_or(value) } else { value };
            return false;
        }
        true
    });
    &found[..found.len().min(max)]
}

/// The array's bytes from its `[` to the end of its first element whose
/// `role` is "user".
fn through_first_user(array: &[u8]) -> Option<&[u8]> {
    let mut i = ws(array, 0);
    if *array.get(i)? != b'[' {
        return None;
    }
    i += 1;
    loop {
        i = ws(array, i);
        match *array.get(i)? {
            b']' => return None,
            b',' => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let end = skip_value(array, i)?;
        let mut user = false;
        for_each_member(&array[i..end], |k, v| {
            user = k == b"role" && v == b"\"user\"";
            !user
        });
        if user {
            return Some(&array[..end]);
        }
        i = end;
    }
}

/// Whether `response_format` asks for JSON (a `type` other than "text"),
/// which Anthropic targets answer through a forced tool. Top level only,
/// like everything here: no full parse of the body.
pub fn json_output(body: &[u8]) -> bool {
    let mut json = false;
    for_each_member(body, |key, value| {
        if key != b"response_format" {
            return true;
        }
        let _ = for_each_member(value, |k, v| {
            if k == b"type" {
                json = v.first() == Some(&b'"') && v != b"\"text\"";
            }
            k != b"type"
        });
        false
    });
    json
}

/// The output cap a request sets: `max_tokens` (chat completions,
/// Anthropic), `max_completion_tokens`, `max_output_tokens` (Responses) or
/// Gemini's `generationConfig.maxOutputTokens`.
pub fn max_output_tokens(body: &[u8]) -> Option<u64> {
    let mut found = None;
    for_each_member(body, |key, value| {
        match key {
            b"max_tokens" | b"max_completion_tokens" | b"max_output_tokens" => {
                found = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).or(found);
            }
            b"generationConfig" => {
                let _ = for_each_member(value, |k, v| {
                    if k == b"maxOutputTokens" {
                        found = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                    }
                    true
                });
            }
            _ => {}
        }
        true
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of a body without duplicate keys.
    fn scan(body: &[u8]) -> RequestInfo {
        super::scan(body).expect("no duplicate keys")
    }

    #[test]
    fn duplicate_keys_the_gateway_reads_are_refused() {
        for (body, key) in [
            (&br#"{"model":"allowed","stream":false,"model":"other"}"#[..], "model"),
            (br#"{"mod\u0065l":"allowed","model":"other"}"#, "model"),
            (br#"{"model":"a","\u006dodel":"b"}"#, "model"),
            (br#"{"stream":false,"messages":[],"stream":true}"#, "stream"),
            (br#"{"stream_options":{},"stream_options":{"include_usage":true}}"#, "stream_options"),
            (br#"{"max_tokens":1,"max_tokens":100000}"#, "max_tokens"),
            (br#"{"max_completion_tokens":1,"max_completion_tokens":2}"#, "max_completion_tokens"),
            (br#"{"messages":[],"messages":[{"role":"user","content":"x"}]}"#, "messages"),
        ] {
            assert_eq!(super::scan(body), Err(key), "{}", String::from_utf8_lossy(body));
        }
        // Other keys may repeat (the gateway does not read them), nested
        // ones never count.
        assert!(super::scan(br#"{"user":"a","user":"b","model":"m","tools":[{"model":1},{"model":2}]}"#).is_ok());
    }

    #[test]
    fn escaped_keys_are_the_keys_they_spell() {
        let i = scan(br#"{"mod\u0065l":"m","str\u0065am":true}"#);
        assert_eq!((i.model.as_deref(), i.stream), (Some("m"), true));
        assert_eq!(model_span(br#"{"\u006dodel":"m"}"#), Some(14..17));
        assert_eq!(max_output_tokens(br#"{"max_\u0074okens":7}"#), Some(7));
    }

    #[test]
    fn finds_top_level_model_and_stream() {
        let body = br#"{"messages":[{"role":"user","content":"the \"model\": \"x\" and {\"stream\":true}"}],"tools":[{"function":{"parameters":{"properties":{"model":{"type":"string"}}}}}],"model":"gpt-4o-mini","stream": true}"#;
        assert_eq!(
            scan(body),
            RequestInfo { model: Some("gpt-4o-mini".into()), stream: true, ..RequestInfo::default() }
        );
        let with = scan(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(with.stream && with.stream_options && with.include_usage);
        assert_eq!(scan(br#" { "model" : "a\u00e9\"b" } "#).model.as_deref(), Some("a\u{e9}\"b"));
        assert_eq!(
            scan(br#"{"stream":false,"model":"m"}"#),
            RequestInfo { model: Some("m".into()), stream: false, ..RequestInfo::default() }
        );
    }

    #[test]
    fn malformed_arrays_end_the_walk() {
        // Found by `fuzz/fuzz_targets/body.rs`: an element starting with a
        // closing brace made the prompt-prefix walk loop forever.
        for body in
            [&br#"{"messages":[}]}"#[..], br#"{"messages":[{"role":"user"},}"#, br#"{"messages":[,}"#, b"{\"a\":}"]
        {
            let _ = prompt_prefix(body, 2048);
            let _ = super::scan(body);
            let _ = max_output_tokens(body);
            let _ = json_output(body);
        }
    }

    #[test]
    fn tolerates_anything() {
        for bad in [&b""[..], b"[]", b"{", b"{\"model\"", b"{\"model\":", b"{\"a\":[1,2", b"not json", b"{\"model\":5}"]
        {
            assert_eq!(scan(bad).model, None, "{bad:?}");
        }
        assert_eq!(scan(br#"{"model":"m","x":"#).model.as_deref(), Some("m"));
    }

    #[test]
    fn model_span_and_prompt_prefix() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}],"model":"r1"}"#;
        let span = model_span(body).unwrap();
        assert_eq!(&body[span], br#""r1""#);
        assert_eq!(prompt_prefix(body, 10), br#"[{"role":""#);
        // Every turn of a conversation shares its prefix through the first
        // user message.
        let t1 = br#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":"q1"}]}"#;
        let t2 = br#"{"messages":[{"role":"system","content":"S"},{"role":"user","content":"q1"},{"role":"assistant","content":"a"},{"role":"user","content":"q2"}]}"#;
        assert_eq!(prompt_prefix(t1, 4096), prompt_prefix(t2, 4096));
        assert_eq!(prompt_prefix(t1, 4096), br#"[{"role":"system","content":"S"},{"role":"user","content":"q1"}"#);
        assert_eq!(model_span(br#"{"model":5}"#), None);
    }

    #[test]
    fn json_output_requests() {
        assert!(json_output(br#"{"model":"m","response_format":{"type":"json_object"}}"#));
        assert!(json_output(br#"{"response_format":{"json_schema":{"type":"text"},"type":"json_schema"}}"#));
        assert!(!json_output(br#"{"response_format":{"type":"text"}}"#));
        assert!(!json_output(br#"{"messages":[{"response_format":{"type":"json_object"}}]}"#));
    }

    #[test]
    fn output_caps() {
        assert_eq!(max_output_tokens(br#"{"model":"m","messages":[{"max_tokens":1}],"max_tokens":256}"#), Some(256));
        assert_eq!(max_output_tokens(br#"{"max_completion_tokens": 99}"#), Some(99));
        assert_eq!(max_output_tokens(br#"{"generationConfig":{"temperature":1,"maxOutputTokens":64}}"#), Some(64));
        assert_eq!(max_output_tokens(br#"{"model":"m"}"#), None);
        assert_eq!(max_output_tokens(br#"{"max_tokens":"x"}"#), None);
    }
}

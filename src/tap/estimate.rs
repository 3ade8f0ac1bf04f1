//! Output tokens counted with a real tokenizer when a response carries no
//! usage: an OpenAI-compatible server that ignores `include_usage`, a client
//! that turned it off, a stream cut short.
//!
//! The o200k_base vocabulary (`bpe.rs`) takes ~7 MiB and ~15 ms to load,
//! so it is loaded on a helper thread the first time an estimate is needed
//! (until it is ready, estimates use 4 bytes per token; either way the
//! record says `estimated: true`), and dropped again once no estimate was
//! asked for `UNLOAD_AFTER`: estimates come in bursts (many streams cut at
//! once), and a gateway whose providers report usage should not keep the
//! vocabulary for the one burst it saw.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::bpe::Bpe;

enum State {
    Unloaded,
    Loading,
    /// `pinned`: loaded by `load_now`, never dropped.
    Ready {
        bpe: Arc<Bpe>,
        pinned: bool,
    },
}

static STATE: Mutex<State> = Mutex::new(State::Unloaded);
/// Milliseconds since `epoch()` of the last estimate.
static LAST_USE: AtomicU64 = AtomicU64::new(0);
const UNLOAD_AFTER: Duration = Duration::from_secs(5);

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Output-token estimate for `text`.
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        // Nothing to count: no reason to load (or keep) the vocabulary.
        return 0;
    }
    LAST_USE.store(now_ms(), Ordering::Relaxed);
    let bpe = {
        let mut s = state();
        match &*s {
            State::Ready { bpe, .. } => Some(bpe.clone()),
            State::Loading => None,
            State::Unloaded => {
                *s = State::Loading;
                let spawned = std::thread::Builder::new().name("aigw-tokenizer".into()).spawn(load_and_keep);
                if let Err(e) = spawned {
                    log::warn!("cannot start the tokenizer thread: {e}");
                    *s = State::Unloaded;
                }
                None
            }
        }
    };
    match bpe {
        Some(bpe) => bpe.count(text) as u64,
        None => text.len().div_ceil(4) as u64,
    }
}

/// The helper thread: loads the vocabulary, then drops it once unused for
/// `UNLOAD_AFTER` (checking once a second while it is loaded).
fn load_and_keep() {
    match Bpe::o200k() {
        Ok(bpe) => *state() = State::Ready { bpe: Arc::new(bpe), pinned: false },
        Err(e) => {
            // Stay in Loading: estimates keep the byte rule, no retry loop.
            log::warn!("cannot load the o200k tokenizer: {e}");
            return;
        }
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let mut s = state();
        match &*s {
            State::Ready { pinned: false, .. } => {
                if now_ms().saturating_sub(LAST_USE.load(Ordering::Relaxed)) >= UNLOAD_AFTER.as_millis() as u64 {
                    *s = State::Unloaded;
                    drop(s);
                    // Hand the freed pages back to the OS now rather than
                    // when some other thread next allocates, and the
                    // vocabulary's pages of the binary with them.
                    crate::util::memory::collect();
                    crate::util::memory::release_static(super::bpe::VOCAB);
                    return;
                }
            }
            _ => return,
        }
    }
}

/// The vocabulary is in memory.
pub fn is_loaded() -> bool {
    matches!(&*state(), State::Ready { .. })
}

/// Loads the tokenizer on this thread and keeps it (tests, benchmarks).
pub fn load_now() {
    if matches!(&*state(), State::Ready { pinned: true, .. }) {
        return;
    }
    // Built outside the lock: estimates on workers keep the byte rule
    // meanwhile instead of waiting for it.
    match Bpe::o200k() {
        Ok(bpe) => *state() = State::Ready { bpe: Arc::new(bpe), pinned: true },
        Err(e) => log::warn!("cannot load the o200k tokenizer: {e}"),
    }
}

/// Text tokenized at most per input estimate; a longer prompt is
/// extrapolated from it, so a client cannot make the gateway spend more
/// than ~a millisecond of tokenizer per request.
const MAX_INPUT_TEXT: usize = 256 << 10;

/// Input-token estimate for a request body the provider reported no usage
/// for: every JSON string value in it (message contents, system prompts,
/// tool descriptions and results) tokenized, or a quarter of its bytes when
/// it is not JSON. At least 1 for a non-empty body.
pub fn input_tokens(body: &[u8]) -> u64 {
    if body.is_empty() {
        return 0;
    }
    let mut text = String::new();
    let read = collect_strings(body, &mut text, MAX_INPUT_TEXT);
    let tokens = if text.is_empty() {
        body.len().div_ceil(4) as u64
    } else if read < body.len() {
        // Extrapolated from the part read.
        let counted = count(&text);
        counted.saturating_mul(body.len() as u64) / read.max(1) as u64
    } else {
        count(&text)
    };
    tokens.max(1)
}

/// `":"`: where a string value starts. Built once: building a searcher
/// costs more than searching one stream event.
static STRING_VALUE: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\":\""));

/// Appends every string value (`":"` followed by a string) of `json` to
/// `into`, until `cap` bytes of text; returns how far into `json` it read.
fn collect_strings(json: &[u8], into: &mut String, cap: usize) -> usize {
    let finder = &*STRING_VALUE;
    let mut at = 0;
    while let Some(i) = finder.find(&json[at..]) {
        let open = at + i + 2;
        let Some(close) = string_end(json, open) else { return json.len() };
        at = close;
        let raw = &json[open + 1..close - 1];
        if memchr::memchr(b'\\', raw).is_none() {
            into.push_str(&String::from_utf8_lossy(raw));
        } else if let Ok(s) = serde_json::from_slice::<String>(&json[open..close]) {
            into.push_str(&s);
        }
        if into.len() >= cap {
            return at;
        }
    }
    json.len()
}

/// Appends the text of the output fields in one stream event's JSON:
/// chat `content`, tool-call `arguments`, Responses `delta`, Anthropic
/// `text` / `partial_json`, Gemini `text`, `reasoning_content`.
///
/// One pass: every `":"` marks a string value; its key is checked against
/// the list, and only those values are copied (unescaped only if they hold
/// a backslash). `benches/tap.rs` measures it.
pub fn collect_text(json: &[u8], into: &mut String, cap: usize) {
    const KEYS: [&[u8]; 6] = [b"content", b"text", b"arguments", b"delta", b"partial_json", b"reasoning_content"];
    let finder = &*STRING_VALUE;
    let mut at = 0;
    while let Some(i) = finder.find(&json[at..]) {
        let colon = at + i + 1;
        let open = colon + 1;
        let Some(close) = string_end(json, open) else { return };
        at = close;
        let key_end = colon - 1;
        let Some(key_start) = memchr::memrchr(b'"', &json[..key_end]).map(|q| q + 1) else { continue };
        if !KEYS.contains(&&json[key_start..key_end]) || into.len() >= cap {
            continue;
        }
        let raw = &json[open + 1..close - 1];
        if memchr::memchr(b'\\', raw).is_none() {
            if let Ok(s) = std::str::from_utf8(raw) {
                into.push_str(s);
            }
        } else if let Ok(s) = serde_json::from_slice::<String>(&json[open..close]) {
            into.push_str(&s);
        }
    }
}

/// Index just past the JSON string whose opening quote is at `open`.
fn string_end(b: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[j] == b'"' {
            return Some(j + 1);
        }
        i = j + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_count_is_zero() {
        assert_eq!(count(""), 0);
    }

    #[test]
    fn collects_output_text_from_each_format() {
        let mut t = String::new();
        collect_text(br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#, &mut t, 1 << 20);
        collect_text(br#"{"choices":[{"delta":{"content":"Hello \"you\""}}]}"#, &mut t, 1 << 20);
        collect_text(
            br#"{"type":"content_block_delta","delta":{"type":"text_delta","text":" there"}}"#,
            &mut t,
            1 << 20,
        );
        collect_text(
            br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\":1}"}}]}}]}"#,
            &mut t,
            1 << 20,
        );
        collect_text(br#"{"type":"response.output_text.delta","delta":"!"}"#, &mut t, 1 << 20);
        assert_eq!(t, "Hello \"you\" there{\"a\":1}!");
    }

    #[test]
    fn input_is_counted_from_the_prompt_never_zero() {
        load_now();
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"The quick brown fox jumps over the lazy dog."}]}"#;
        // "m", "user" and the sentence (10 tokens).
        assert_eq!(input_tokens(body), 12);
        assert_eq!(input_tokens(b""), 0);
        assert_eq!(input_tokens(b"not json at all"), 4);
        assert_eq!(input_tokens(b"{}"), 1);
        // A long prompt is extrapolated from its first part.
        let long = format!(r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#, "word ".repeat(200_000));
        let n = input_tokens(long.as_bytes());
        assert!((180_000..=220_000).contains(&n), "{n}");
    }

    #[test]
    fn counts_with_o200k_once_loaded() {
        load_now();
        // The mock's words are one token each.
        assert_eq!(count("The quick brown fox jumps over the lazy dog."), 10);
    }
}

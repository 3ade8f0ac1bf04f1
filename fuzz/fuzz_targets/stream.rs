//! Fuzz target for what aigw reads from upstream bodies: the SSE splitter,
//! the usage tap, the usage stripper and the unified endpoint's stream
//! translators. Beyond "no panic": events, and the stripped stream, come
//! out the same however the bytes are split.
#![no_main]

use aigw::{
    providers::{Translation, translate::StreamTranslator},
    tap::{Tap, sse::SseSplitter, strip::UsageStripper},
};
use libfuzzer_sys::fuzz_target;

fn events(pieces: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = SseSplitter::new();
    let mut out = Vec::new();
    for p in pieces {
        s.feed(p, &mut |e| out.push((e.name.to_vec(), e.data.to_vec())));
    }
    out
}

fn stripped(pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = UsageStripper::new();
    let mut out = Vec::new();
    for p in pieces {
        let _ = s.feed(p, &mut out);
    }
    s.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let (a, b) = data.split_at(split);
    assert_eq!(events(&[data]), events(&[a, b]));
    assert_eq!(stripped(&[data]), stripped(&[a, b]));

    let mut tap = Tap::for_content_type(Some(b"text/event-stream"));
    tap.observe(a);
    tap.observe(b);
    let _ = tap.settle(false, true, || 1);

    for t in [Translation::Anthropic, Translation::Gemini] {
        if let Some(mut tr) = StreamTranslator::new(t, "m", true, false) {
            let mut out = Vec::new();
            tr.feed(a, &mut out);
            tr.feed(b, &mut out);
            tr.finish(&mut out);
            assert!(out.ends_with(b"data: [DONE]\n\n"));
        }
    }
});

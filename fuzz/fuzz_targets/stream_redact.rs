//! Fuzz target for the stream redactor (`guardrails/stream.rs`) and the
//! event guard (`guardrails/events.rs`). The first byte picks how the rest
//! is cut into pieces; the rest is the text (lossy UTF-8). The property:
//! the text fed in those pieces comes out exactly as the one-shot
//! redaction of the whole text (for texts under the 4 KiB hold bound), and
//! an OpenAI stream carrying the same pieces shows the client that text.
#![no_main]

use std::sync::{Arc, OnceLock};

use aigw::{
    config::{Action, Policy},
    guardrails::{
        Guardrails,
        detect::{Builtin, Detector},
        events::StreamGuard,
        redact,
        stream::{LiveText, MAX_HOLD, Mode},
    },
    providers::StreamFormat,
};
use libfuzzer_sys::fuzz_target;

fn custom() -> Vec<(String, String)> {
    vec![("employee_id".into(), r"EMP-\d{6}".into())]
}

fn words() -> Vec<String> {
    vec!["project aurora".into()]
}

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| Detector::new(&Builtin::ALL, &custom(), &words()).expect("the detectors compile"))
}

fn guardrails() -> Arc<Guardrails> {
    static G: OnceLock<Arc<Guardrails>> = OnceLock::new();
    G.get_or_init(|| {
        let p = Policy {
            name: "pii".into(),
            detectors: Builtin::ALL.to_vec(),
            patterns: custom(),
            words: words(),
            injection: None,
            moderation: None,
            request: Action::Off,
            response: Action::Redact,
        };
        Arc::new(Guardrails::new(&[p], &[]).expect("the policy compiles"))
    })
    .clone()
}

/// Cuts `text` into pieces: a cut after every `step`-th char boundary,
/// `step` from the seed.
fn pieces(seed: u8, text: &str) -> Vec<&str> {
    let step = usize::from(seed % 17) + 1;
    let mut out = Vec::new();
    let mut start = 0;
    for (n, (i, _)) in text.char_indices().enumerate() {
        if n > 0 && n % step == 0 {
            out.push(&text[start..i]);
            start = i;
        }
    }
    out.push(&text[start..]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    if text.len() >= MAX_HOLD {
        return;
    }
    let det = detector();
    let mut found = Vec::new();
    det.find(&text, &mut found);
    let want = redact(&text, &found, det);

    let parts = pieces(seed, &text);
    let mut live = LiveText::new(Mode::Redact, det.kinds.len());
    let mut got = String::new();
    for p in &parts {
        live.push(det, p, &mut got);
    }
    live.finish(det, &mut got);
    assert_eq!(got, want, "pieces {parts:?}");

    // The same pieces as OpenAI chunks, the stream cut at the seed's byte.
    let mut stream = String::new();
    for p in &parts {
        let delta = serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
        stream.push_str(&format!("data: {delta}\n\n"));
    }
    stream.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    let mut g = StreamGuard::new(guardrails(), vec![0], StreamFormat::OpenAiChat);
    let mut out = Vec::new();
    let cut = usize::from(seed).min(stream.len());
    g.feed(&stream.as_bytes()[..cut], &mut out);
    g.feed(&stream.as_bytes()[cut..], &mut out);
    g.finish(&mut out);
    let mut shown = String::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let Some(d) = line.strip_prefix("data: ") else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(d) else { continue };
        shown.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
    }
    assert_eq!(shown, want);
});

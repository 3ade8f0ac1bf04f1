//! Fuzz target for the guardrails' body walk and rewrite
//! (`guardrails/json.rs`, `guardrails/mod.rs`). Beyond "no panic": a body
//! a JSON parser accepts and the redaction rewrites is still JSON and still
//! readable by the walk; the lossy unescape agrees with serde wherever serde
//! can decode the string; the prompt-injection rules' spans, mapped back
//! from their normalised copy, cut the text at char boundaries (a slice
//! that did not would panic). (A second pass may find more: a redaction can
//! free a neighbour, as in `a@b.io+1 415 555 2671`.)
#![no_main]

use std::{borrow::Cow, sync::OnceLock};

use aigw::{
    config::{Action, Policy},
    guardrails::{Guardrails, Verdict, detect::Builtin, json},
};
use libfuzzer_sys::fuzz_target;

fn guardrails() -> &'static Guardrails {
    static G: OnceLock<Guardrails> = OnceLock::new();
    G.get_or_init(|| {
        let p = Policy {
            name: "pii".into(),
            detectors: Builtin::ALL.to_vec(),
            patterns: vec![("employee_id".into(), r"EMP-\d{6}".into())],
            words: vec!["project aurora".into()],
            injection: None,
            moderation: None,
            request: Action::Redact,
            response: Action::Off,
        };
        // Injection findings and numbered placeholders, after the redaction.
        let q = Policy {
            name: "pseudo".into(),
            detectors: vec![Builtin::Email, Builtin::Phone],
            patterns: Vec::new(),
            words: Vec::new(),
            injection: Some(0.5),
            moderation: None,
            request: Action::Pseudonymize,
            response: Action::Off,
        };
        Guardrails::new(&[p, q], &["pseudo".into(), "pii".into()]).expect("the policies compile")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(spans) = json::text_spans(data, json::REQUEST_ROOTS) {
        for s in spans {
            let quoted = &data[s.clone()];
            if let Ok(decoded) = serde_json::from_slice::<String>(quoted) {
                assert_eq!(json::unescape(&quoted[1..quoted.len() - 1]), decoded);
            }
        }
    }
    let g = guardrails();
    let sel = g.select([], &[]).unwrap_or_default();
    let Verdict::Pass { body, .. } = g.check_request(&sel, data) else { return };
    let Cow::Owned(out) = body else { return };
    if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "the rewrite broke the JSON");
    }
    assert!(json::text_spans(&out, json::REQUEST_ROOTS).is_some(), "the rewrite is not walkable");
});

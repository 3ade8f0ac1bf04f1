//! Fuzz target for the request-body scanner (`providers/body.rs`), which
//! decides what a request is checked, limited and priced as. Beyond "no
//! panic": whenever serde_json reads the body as an object and the scanner
//! accepts it (no duplicate key it reads), both see the same `model` and
//! `stream` — one request, one model — and `model_span` points at that
//! model.
#![no_main]

use aigw::providers::{body, gemini};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scanned = body::scan(data);
    let _ = body::prompt_prefix(data, 2048);
    let _ = body::max_output_tokens(data);
    let _ = body::json_output(data);
    let _ = gemini::gemini_path(data);
    let Ok(info) = scanned else { return };
    let span = body::model_span(data);
    if let Some(span) = &span {
        let at: Option<String> = serde_json::from_slice(&data[span.clone()]).ok();
        assert_eq!(at, info.model, "model_span and scan disagree");
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let model = map.get("model").and_then(|m| m.as_str()).map(str::to_string);
    assert_eq!(info.model, model, "the scanner and a JSON parser read different models");
    assert_eq!(info.stream, map.get("stream") == Some(&serde_json::Value::Bool(true)));
    assert_eq!(info.stream_options, map.contains_key("stream_options"));
});

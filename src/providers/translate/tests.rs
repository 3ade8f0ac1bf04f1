//! Translation fixtures: every field both ways, JSON and streams.

use serde_json::{Value, json};

use super::*;

/// A readable answer, translated.
fn response(t: Translation, status: u16, body: &[u8], model: &str, json_mode: bool) -> (u16, String) {
    super::response(t, status, body, model, json_mode).expect("a translatable answer")
}

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn chunks(sse: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(sse)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn anthropic_request_fields() {
    let req = obj(json!({
        "model": "ignored",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
        ],
        "max_tokens": 100, "temperature": 0.2, "top_p": 0.9, "stop": "END", "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required", "parallel_tool_calls": false, "user": "u-1",
    }));
    let out = anthropic::request(&req, "claude-x").unwrap();
    assert_eq!(out["model"], "claude-x");
    assert_eq!(out["system"], "Be brief.\n\nUse metric.");
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["stream"], true);
    assert_eq!(out["metadata"]["user_id"], "u-1");
    assert_eq!(
        out["messages"][0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0K"})
    );
    assert_eq!(
        out["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}})
    );
    assert_eq!(
        out["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "12C"}]})
    );
    assert_eq!(out["tools"][0]["input_schema"]["properties"]["city"]["type"], "string");
    assert_eq!(out["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
    // Defaults and refusals.
    let min = anthropic::request(&obj(json!({"messages": [{"role": "user", "content": "hi"}]})), "m").unwrap();
    assert_eq!(min["max_tokens"], 4096);
    for (field, body) in [
        ("logprobs", json!({"messages": [], "logprobs": true})),
        ("seed", json!({"messages": [], "seed": 7})),
        (
            "messages[0].content[0].type=input_audio",
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        ),
    ] {
        match anthropic::request(&obj(body), "m") {
            Err(GatewayError::UnsupportedField { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(anthropic::request(&obj(json!({"messages": [], "temperature": 1.5})), "m").is_err());
    // JSON mode: a forced tool.
    let j = anthropic::request(&obj(json!({"messages": [], "response_format": {"type": "json_object"}})), "m").unwrap();
    assert_eq!(j["tool_choice"], json!({"type": "tool", "name": "json_output"}));
}

#[test]
fn anthropic_response_and_errors() {
    let native = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0, "output_tokens": 7},
    });
    let (status, body) = response(Translation::Anthropic, 200, native.to_string().as_bytes(), "claude-x", false);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22, "prompt_tokens_details": {"cached_tokens": 5}})
    );
    let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let (status, body) = response(Translation::Anthropic, 529, err.to_string().as_bytes(), "m", false);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (503, Some("overloaded_error"), Some("Overloaded"))
    );
    let (status, _) = response(
        Translation::Anthropic,
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}"#,
        "m",
        false,
    );
    assert_eq!(status, 400);
}

#[test]
fn anthropic_stream_event_by_event() {
    let sse = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":12}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    // Fed in pieces of every size: the same chunks come out.
    let mut whole = Vec::new();
    for step in [1, 7, sse.len()] {
        let mut s = StreamTranslator::new(Translation::Anthropic, "claude-x", true, false).unwrap();
        let mut out = Vec::new();
        for piece in sse.as_bytes().chunks(step) {
            s.feed(piece, &mut out);
        }
        s.finish(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        let c = chunks(&out);
        if whole.is_empty() {
            whole = c.iter().map(|v| v["choices"].clone()).collect();
        }
        assert_eq!(c.iter().map(|v| v["choices"].clone()).collect::<Vec<_>>(), whole);
        assert_eq!(c[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(c[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(c[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"city\":");
        assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c[6]["usage"]["completion_tokens"], 12);
        assert_eq!(c[6]["usage"]["prompt_tokens"], 9);
        assert!(c.iter().all(|v| v["object"] == "chat.completion.chunk" && v["id"] == "msg_1"));
    }
}

#[test]
fn gemini_request_response_and_stream() {
    let req = obj(json!({
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "12C"},
        ],
        "max_tokens": 50, "temperature": 0.5, "stop": ["X"],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_object"},
    }));
    let out = gemini::request(&req).unwrap();
    assert_eq!(out["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(out["contents"][1]["parts"][0]["functionCall"], json!({"name": "weather", "args": {"city": "Oslo"}}));
    assert_eq!(out["contents"][2]["parts"][0]["functionResponse"]["name"], "weather");
    assert_eq!(out["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(out["generationConfig"]["responseMimeType"], "application/json");
    assert_eq!(out["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"], json!(["weather"]));
    assert!(matches!(
        gemini::request(&obj(json!({"messages": [], "logit_bias": {}}))),
        Err(GatewayError::UnsupportedField { .. })
    ));

    let native = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Cold."}]}, "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "cachedContentTokenCount": 1},
        "modelVersion": "gemini-x", "responseId": "r1",
    });
    let (_, body) = response(Translation::Gemini, 200, native.to_string().as_bytes(), "gemini-x", false);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Cold.");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 1);

    let sse = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Co\"}]}}],\"responseId\":\"r1\"}\r\n\r\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ld.\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2}}\r\n\r\n";
    let mut s = StreamTranslator::new(Translation::Gemini, "gemini-x", true, false).unwrap();
    let mut out = Vec::new();
    s.feed(sse.as_bytes(), &mut out);
    s.finish(&mut out);
    let c = chunks(&out);
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Co");
    assert_eq!(c[2]["choices"][0]["delta"]["content"], "ld.");
    assert_eq!(c[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(c[4]["usage"]["total_tokens"], 6);
}

#[test]
fn json_mode_and_gemini_streamed_tool_calls() {
    // Anthropic JSON mode: the forced tool's input is the content.
    let native = json!({
        "id": "msg_2", "model": "claude-x", "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "t", "name": "json_output", "input": {"answer": 42}}],
        "usage": {"input_tokens": 3, "output_tokens": 4},
    });
    let (_, body) = response(Translation::Anthropic, 200, native.to_string().as_bytes(), "claude-x", true);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "{\"answer\":42}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"]["tool_calls"].is_null());

    // Gemini streams whole function calls; they become tool_calls deltas
    // with running indexes and finish_reason "tool_calls".
    let sse = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Oslo\"}}}]},\"finishReason\":\"STOP\"}]}\n\n";
    let mut s = StreamTranslator::new(Translation::Gemini, "g", false, false).unwrap();
    let mut out = Vec::new();
    s.feed(sse.as_bytes(), &mut out);
    s.finish(&mut out);
    let c = chunks(&out);
    let call = &c[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!((call["index"].as_u64(), call["function"]["name"].as_str()), (Some(0), Some("weather")));
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(c[2]["choices"][0]["finish_reason"], "tool_calls");
    assert!(String::from_utf8(out).unwrap().ends_with("data: [DONE]\n\n"));
    // Gemini errors keep their status.
    let err = json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}});
    let (status, body) = response(Translation::Gemini, 429, err.to_string().as_bytes(), "g", false);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, v["error"]["code"].as_str()), (429, Some("resource_exhausted")));
}

#[test]
fn nothing_follows_done() {
    // Found by the `stream` fuzz target: events after message_stop used to
    // produce chunks after [DONE].
    let mut s = StreamTranslator::new(Translation::Anthropic, "m", false, false).unwrap();
    let mut out = Vec::new();
    s.feed(include_bytes!("../../../fuzz/seeds/stream/after_stop.sse"), &mut out);
    s.finish(&mut out);
    assert_eq!(String::from_utf8(out).unwrap(), "data: [DONE]\n\n");
}

#[test]
fn gemini_model_names_cannot_reach_the_request_line() {
    let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    assert!(request(Translation::Gemini, body, Some("gemini-2.5-flash"), false).is_ok());
    for bad in ["x HTTP/1.1\r\nHost: evil", "../../v1/secret", "a?key=1", ""] {
        assert!(
            matches!(request(Translation::Gemini, body, Some(bad), false), Err(GatewayError::InvalidBody { .. })),
            "{bad:?}"
        );
    }
}

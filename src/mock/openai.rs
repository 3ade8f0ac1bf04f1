//! OpenAI chat completions and embeddings, as the mock answers them.

use std::fmt::Write as _;

use super::{EventStream, MockCtx, Plan, TOOL_ARGS, parse_body, pause, prompt_tokens, response_id, send, tool_to_call};
use crate::{
    error::{GatewayError, json_response},
    service::{ClientIo, Outcome, Request},
};

pub async fn chat(
    m: &MockCtx,
    req: &Request,
    plan: &Plan,
    io: &mut ClientIo,
    keep_alive: bool,
) -> Result<Outcome, GatewayError> {
    let body = match parse_body(req) {
        Ok(v) => v,
        Err(resp) => return send(io, resp, false).await,
    };
    let model = serde_json::Value::from(body["model"].as_str().unwrap_or("mock-model")).to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"].as_bool().unwrap_or(false);
    let id = format!("chatcmpl-mock-{}", response_id(&body));
    let prompt = prompt_tokens(&body);
    let cached = m.prefixes.lookup_and_insert(&body).min(prompt);
    let n = plan.tokens;
    let usage = format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{n},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}},"completion_tokens_details":{{"reasoning_tokens":0}}}}"#,
        prompt + n
    );
    let tool = tool_to_call(&body);
    let call = |name: &str, args: &str| {
        format!(
            r#"{{"id":"call_mock_0","type":"function","function":{{"name":{},"arguments":{}}}}}"#,
            serde_json::Value::from(name),
            serde_json::Value::from(args)
        )
    };
    if !stream {
        pause(plan.ttft).await;
        let (message, finish) = match &tool {
            Some(name) => (
                format!(
                    r#"{{"role":"assistant","content":null,"tool_calls":[{}],"refusal":null}}"#,
                    call(name, TOOL_ARGS)
                ),
                "tool_calls",
            ),
            None => {
                let content = serde_json::Value::from(plan.text());
                (format!(r#"{{"role":"assistant","content":{content},"refusal":null}}"#), "stop")
            }
        };
        let json = format!(
            r#"{{"id":"{id}","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{message},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{usage},"system_fingerprint":null}}"#
        );
        return send(io, json_response(200, &json, req.head.version(), None, !keep_alive), keep_alive).await;
    }

    let Some(mut s) = EventStream::start(io, &m.stats, req.head.version(), keep_alive).await else {
        return Ok(Outcome::Close);
    };
    let usage_null = if include_usage { r#","usage":null"# } else { "" };
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"system_fingerprint\":null,\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{usage_null}}}\n\n"
        )
    };
    // The usage chunk (when asked for) and [DONE].
    let end = |out: &mut String| {
        if include_usage {
            let _ = write!(
                out,
                "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"system_fingerprint\":null,\"choices\":[],\"usage\":{usage}}}\n\n"
            );
        }
        out.push_str("data: [DONE]\n\n");
    };
    pause(plan.ttft).await;
    if let Some(name) = &tool {
        let start = format!(
            r#"{{"role":"assistant","content":null,"tool_calls":[{}]}}"#,
            call(name, "").replacen(r#""id""#, r#""index":0,"id""#, 1)
        );
        let args = format!(
            r#"{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}}"#,
            serde_json::Value::from(TOOL_ARGS)
        );
        let mut all = chunk(&start, "null");
        all.push_str(&chunk(&args, "null"));
        all.push_str(&chunk("{}", "\"tool_calls\""));
        end(&mut all);
        return Ok(s.finish(&all, keep_alive).await);
    }
    let mut first = chunk(r#"{"role":"assistant","content":"","refusal":null}"#, "null");
    for i in 0..n {
        let delta = format!(r#"{{"content":{}}}"#, serde_json::Value::from(plan.piece(i)));
        let event = chunk(&delta, "null");
        if i == 0 {
            first.push_str(&event);
            if !s.events(&first).await {
                return Ok(Outcome::Close);
            }
        } else {
            pause(plan.delay).await;
            if !s.events(&event).await {
                return Ok(Outcome::Close);
            }
        }
    }
    let mut tail = if n == 0 { first } else { String::new() };
    tail.push_str(&chunk("{}", "\"stop\""));
    end(&mut tail);
    Ok(s.finish(&tail, keep_alive).await)
}

/// A check's answer: moderation results per input, or a Llama Guard-like
/// verdict. Status 0: answer 200 after a pause (`mock-slow-check`).
pub fn check(body: &serde_json::Value, moderations: bool) -> (u16, String) {
    let texts: Vec<String> = if moderations {
        match &body["input"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => {
                a.iter().map(|v| v.as_str().or_else(|| v["text"].as_str()).unwrap_or_default().to_string()).collect()
            }
            _ => Vec::new(),
        }
    } else {
        vec![super::prompt_text(body)]
    };
    let lower: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
    if lower.iter().any(|t| t.contains("mock-failing-check")) {
        return (500, super::json_error("the check failed (mock-failing-check)", "api_error", "mock_error"));
    }
    let status = if lower.iter().any(|t| t.contains("mock-slow-check")) { 0 } else { 200 };
    let unsafe_ = |t: &String| t.contains("mock-unsafe");
    if !moderations {
        let verdict = if lower.iter().any(unsafe_) { "unsafe\nS1" } else { "safe" };
        let model = serde_json::Value::from(body["model"].as_str().unwrap_or("mock-guard")).to_string();
        let content = serde_json::Value::from(verdict);
        return (
            status,
            format!(
                r#"{{"id":"chatcmpl-mock-guard","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}}}"#
            ),
        );
    }
    let results: Vec<String> = lower
        .iter()
        .map(|t| {
            let f = unsafe_(t);
            let score = if f { 0.98 } else { 0.01 };
            format!(r#"{{"flagged":{f},"categories":{{"violence":{f}}},"category_scores":{{"violence":{score}}}}}"#)
        })
        .collect();
    (status, format!(r#"{{"id":"modr-mock","model":"omni-moderation-latest","results":[{}]}}"#, results.join(",")))
}

pub fn embeddings(body: &serde_json::Value) -> String {
    let prompt = prompt_tokens(body);
    format!(
        r#"{{"object":"list","data":[{{"object":"embedding","index":0,"embedding":[0.0023,-0.0093,0.0157,-0.0041]}}],"model":"mock-embedding","usage":{{"prompt_tokens":{prompt},"total_tokens":{prompt}}}}}"#
    )
}

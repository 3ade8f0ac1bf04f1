//! Gemini generateContent / streamGenerateContent (`alt=sse`), as the mock
//! answers them.

use super::{EventStream, MockCtx, Plan, TOOL_ARGS, parse_body, pause, prompt_tokens, send};
use crate::{
    error::{GatewayError, json_response},
    providers::body::RequestInfo,
    service::{ClientIo, Outcome, Request},
};

/// The function to call: the first declared, unless the conversation ends
/// with a function's response.
fn function_to_call(body: &serde_json::Value) -> Option<String> {
    let name = body["tools"][0]["functionDeclarations"][0]["name"].as_str()?;
    let last = body["contents"].as_array()?.last()?;
    let answered = last["parts"].as_array().is_some_and(|p| p.iter().any(|x| x.get("functionResponse").is_some()));
    (!answered).then(|| name.to_string())
}

pub async fn generate(
    m: &MockCtx,
    req: &Request,
    plan: &Plan,
    io: &mut ClientIo,
    keep_alive: bool,
    path: &RequestInfo,
) -> Result<Outcome, GatewayError> {
    let (model, stream) = (path.model.as_deref().unwrap_or_default(), path.stream);
    let body = match parse_body(req) {
        Ok(v) => v,
        Err(resp) => return send(io, resp, false).await,
    };
    let input = prompt_tokens(&body);
    let n = plan.tokens;
    let usage = format!(r#"{{"promptTokenCount":{input},"candidatesTokenCount":{n},"totalTokenCount":{}}}"#, input + n);
    let model = serde_json::Value::from(model).to_string();
    let call = function_to_call(&body);
    let call_part =
        |name: &str| format!(r#"{{"functionCall":{{"name":{},"args":{TOOL_ARGS}}}}}"#, serde_json::Value::from(name));
    if !stream {
        pause(plan.ttft).await;
        let parts = match &call {
            Some(name) => call_part(name),
            None => format!(r#"{{"text":{}}}"#, serde_json::Value::from(plan.text())),
        };
        let json = format!(
            r#"{{"candidates":[{{"content":{{"role":"model","parts":[{parts}]}},"finishReason":"STOP","index":0}}],"usageMetadata":{usage},"modelVersion":{model},"responseId":"mock-gemini"}}"#
        );
        return send(io, json_response(200, &json, req.head.version(), None, !keep_alive), keep_alive).await;
    }
    let Some(mut s) = EventStream::start(io, &m.stats, req.head.version(), keep_alive).await else {
        return Ok(Outcome::Close);
    };
    pause(plan.ttft).await;
    let event = |parts: &str, finish: &str, usage: &str| {
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{parts}]}}{finish},\"index\":0}}]{usage},\"modelVersion\":{model},\"responseId\":\"mock-gemini\"}}\r\n\r\n"
        )
    };
    let last_usage = format!(",\"usageMetadata\":{usage}");
    if let Some(name) = &call {
        let all = event(&call_part(name), ",\"finishReason\":\"STOP\"", &last_usage);
        return Ok(s.finish(&all, keep_alive).await);
    }
    for i in 0..n.saturating_sub(1) {
        if i > 0 {
            pause(plan.delay).await;
        }
        let text = format!(r#"{{"text":{}}}"#, serde_json::Value::from(plan.piece(i)));
        if !s.events(&event(&text, "", "")).await {
            return Ok(Outcome::Close);
        }
    }
    let text = format!(r#"{{"text":{}}}"#, serde_json::Value::from(if n > 0 { plan.piece(n - 1) } else { "" }));
    Ok(s.finish(&event(&text, ",\"finishReason\":\"STOP\"", &last_usage), keep_alive).await)
}

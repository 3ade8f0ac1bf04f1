//! Anthropic Messages, as the mock answers them.

use super::{EventStream, MockCtx, Plan, TOOL_ARGS, parse_body, pause, prompt_tokens, response_id, send, tool_to_call};
use crate::{
    error::{GatewayError, json_response},
    service::{ClientIo, Outcome, Request},
};

pub async fn messages(
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
    let id = format!("msg_mock_{}", response_id(&body));
    let input = prompt_tokens(&body);
    let n = plan.tokens;
    let tool = tool_to_call(&body);
    if !stream {
        pause(plan.ttft).await;
        let (content, stop) = match &tool {
            Some(name) => (
                format!(
                    r#"[{{"type":"tool_use","id":"toolu_mock_0","name":{},"input":{TOOL_ARGS}}}]"#,
                    serde_json::Value::from(name.as_str())
                ),
                "tool_use",
            ),
            None => {
                let text = serde_json::Value::from(plan.text());
                (format!(r#"[{{"type":"text","text":{text}}}]"#), "end_turn")
            }
        };
        let json = format!(
            r#"{{"id":"{id}","type":"message","role":"assistant","model":{model},"content":{content},"stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":{input},"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{n}}}}}"#
        );
        return send(io, json_response(200, &json, req.head.version(), None, !keep_alive), keep_alive).await;
    }

    let Some(mut s) = EventStream::start(io, &m.stats, req.head.version(), keep_alive).await else {
        return Ok(Outcome::Close);
    };
    pause(plan.ttft).await;
    if let Some(name) = &tool {
        let name = serde_json::Value::from(name.as_str());
        let args = serde_json::Value::from(TOOL_ARGS);
        let all = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"output_tokens\":1}}}}}}\n\n\
             event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_mock_0\",\"name\":{name},\"input\":{{}}}}}}\n\n\
             event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{args}}}}}\n\n\
             event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"tool_use\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{n}}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        );
        return Ok(s.finish(&all, keep_alive).await);
    }
    let mut first = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n\
         event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
         event: ping\ndata: {{\"type\":\"ping\"}}\n\n"
    );
    for i in 0..n {
        let event = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
            serde_json::Value::from(plan.piece(i))
        );
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
    tail.push_str(&format!(
        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
         event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{n}}}}}\n\n\
         event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    ));
    Ok(s.finish(&tail, keep_alive).await)
}

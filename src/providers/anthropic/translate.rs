//! OpenAI chat completions ⇄ Anthropic Messages.

use serde_json::{Map, Value, json};

use crate::providers::{
    openai::translate as openai,
    translate::{check_fields, invalid, max_tokens, sse_events, stop_list, unsupported as unsupported_in},
};
use crate::{error::GatewayError, tap::sse::SseSplitter};

const KIND: &str = "anthropic";
/// Anthropic requires `max_tokens`; OpenAI requests may omit it.
const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The forced tool that carries `response_format` JSON output.
const JSON_TOOL: &str = "json_output";

fn unsupported(field: impl Into<String>) -> GatewayError {
    unsupported_in(KIND, field)
}

/// Fields beyond the common ones Anthropic requests translate (or the
/// gateway consumes). Anything else is refused.
const EXTRA_FIELDS: &[&str] = &["parallel_tool_calls", "user"];

pub fn request(req: &Map<String, Value>, model: &str) -> Result<Value, GatewayError> {
    check_fields(req, EXTRA_FIELDS, KIND)?;
    let mut out = Map::new();
    out.insert("model".into(), model.into());
    out.insert("max_tokens".into(), max_tokens(req).unwrap_or(DEFAULT_MAX_TOKENS).into());
    if let Some(t) = req.get("temperature").filter(|v| !v.is_null()) {
        let t = t.as_f64().ok_or_else(|| invalid("temperature", "must be a number"))?;
        if t > 1.0 {
            return Err(invalid("temperature", "anthropic accepts 0 to 1"));
        }
        out.insert("temperature".into(), t.into());
    }
    if let Some(p) = req.get("top_p").filter(|v| !v.is_null()) {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stop) = stop_list(req)? {
        out.insert("stop_sequences".into(), stop);
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), true.into());
    }
    if let Some(u) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": u }));
    }
    let (system, messages) = messages(req.get("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), system.into());
    }
    out.insert("messages".into(), Value::Array(messages));
    let mut tools = match req.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => ts.iter().enumerate().map(|(i, t)| tool(i, t)).collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("tools", "an array")),
    };
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "none" => json!({ "type": "none" }),
            "required" => json!({ "type": "any" }),
            other => return Err(invalid("tool_choice", format!("`{other}`"))),
        }),
        Some(v) => match v["function"]["name"].as_str() {
            Some(name) => Some(json!({ "type": "tool", "name": name })),
            None => return Err(invalid("tool_choice", "expected {\"type\":\"function\",\"function\":{\"name\":…}}")),
        },
    };
    match req.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        None | Some("text") => {}
        Some(kind @ ("json_object" | "json_schema")) => {
            if !tools.is_empty() {
                return Err(unsupported("response_format with tools"));
            }
            let schema = if kind == "json_schema" {
                req["response_format"]["json_schema"]["schema"].clone()
            } else {
                json!({ "type": "object" })
            };
            tools.push(json!({ "name": JSON_TOOL, "description": "Answer with this JSON.", "input_schema": schema }));
            choice = Some(json!({ "type": "tool", "name": JSON_TOOL }));
        }
        Some(other) => return Err(unsupported(format!("response_format.type={other}"))),
    }
    if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        c["disable_parallel_tool_use"] = true.into();
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(Value::Object(out))
}

fn tool(i: usize, t: &Value) -> Result<Value, GatewayError> {
    if t["type"].as_str() != Some("function") {
        return Err(unsupported(format!("tools[{i}].type")));
    }
    let f = &t["function"];
    let name = f["name"].as_str().ok_or_else(|| invalid("tools", format!("tools[{i}].function.name is required")))?;
    let mut out = json!({
        "name": name,
        "input_schema": if f["parameters"].is_null() { json!({ "type": "object", "properties": {} }) } else { f["parameters"].clone() },
    });
    if let Some(d) = f["description"].as_str() {
        out["description"] = d.into();
    }
    Ok(out)
}

/// System text and Anthropic messages from OpenAI messages.
fn messages(messages: Option<&Value>) -> Result<(String, Vec<Value>), GatewayError> {
    let list = messages.and_then(Value::as_array).ok_or_else(|| invalid("messages", "an array is required"))?;
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in list.iter().enumerate() {
        if m.get("name").is_some_and(|n| !n.is_null()) {
            return Err(unsupported(format!("messages[{i}].name")));
        }
        let role = m["role"].as_str().unwrap_or("");
        match role {
            "system" | "developer" => system.push(text_only(&m["content"], i)?),
            "user" => push(&mut out, "user", content(&m["content"], i)?),
            "assistant" => {
                let mut blocks = match &m["content"] {
                    Value::Null => Vec::new(),
                    c => content(c, i)?,
                };
                if let Some(calls) = m["tool_calls"].as_array() {
                    for c in calls {
                        let args = c["function"]["arguments"].as_str().unwrap_or("{}");
                        let input: Value = serde_json::from_str(args).map_err(|_| {
                            invalid("messages", format!("messages[{i}].tool_calls arguments are not JSON"))
                        })?;
                        blocks.push(json!({
                            "type": "tool_use",
                            "id": c["id"].as_str().unwrap_or(""),
                            "name": c["function"]["name"].as_str().unwrap_or(""),
                            "input": input,
                        }));
                    }
                }
                push(&mut out, "assistant", blocks);
            }
            "tool" => {
                let result = json!({
                    "type": "tool_result",
                    "tool_use_id": m["tool_call_id"].as_str().unwrap_or(""),
                    "content": text_only(&m["content"], i)?,
                });
                push(&mut out, "user", vec![result]);
            }
            other => return Err(unsupported(format!("messages[{i}].role={other}"))),
        }
    }
    Ok((system.join("\n\n"), out))
}

/// Appends blocks, merging into the previous message of the same role
/// (Anthropic wants alternating turns; tool results follow as user turns).
fn push(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if let Some(last) = out.last_mut()
        && last["role"] == role
        && let Some(c) = last["content"].as_array_mut()
    {
        c.extend(blocks);
        return;
    }
    out.push(json!({ "role": role, "content": blocks }));
}

fn text_only(c: &Value, i: usize) -> Result<String, GatewayError> {
    match c {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => Ok(p["text"].as_str().unwrap_or("").to_string()),
                _ => Err(unsupported(format!("messages[{i}].content (only text here)"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.join("")),
        Value::Null => Ok(String::new()),
        _ => Err(invalid("messages", format!("messages[{i}].content"))),
    }
}

fn content(c: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    match c {
        Value::String(s) => Ok(vec![json!({ "type": "text", "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p["type"].as_str() {
                Some("text") => Ok(json!({ "type": "text", "text": p["text"].as_str().unwrap_or("") })),
                Some("image_url") => image(p["image_url"]["url"].as_str().unwrap_or(""), i, j),
                Some(other) => Err(unsupported(format!("messages[{i}].content[{j}].type={other}"))),
                None => Err(invalid("messages", format!("messages[{i}].content[{j}] has no type"))),
            })
            .collect(),
        _ => Err(invalid("messages", format!("messages[{i}].content"))),
    }
}

/// `data:` URLs become base64 image sources; http(s) URLs, URL sources.
fn image(url: &str, i: usize, j: usize) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("messages", format!("messages[{i}].content[{j}]: bad data URL")))?;
        let media = meta
            .strip_suffix(";base64")
            .ok_or_else(|| unsupported(format!("messages[{i}].content[{j}] (non-base64 data URL)")))?;
        return Ok(json!({ "type": "image", "source": { "type": "base64", "media_type": media, "data": data } }));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }));
    }
    Err(invalid("messages", format!("messages[{i}].content[{j}]: image_url must be a data: or http(s) URL")))
}

pub fn finish_reason(stop: Option<&str>, json_mode: bool) -> &'static str {
    match stop {
        Some("max_tokens") => "length",
        Some("tool_use") if !json_mode => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

fn usage_of(u: &Value) -> (u64, u64, u64) {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let cached = n("cache_read_input_tokens");
    (
        n("input_tokens").saturating_add(cached).saturating_add(n("cache_creation_input_tokens")),
        n("output_tokens"),
        cached,
    )
}

/// A Messages answer as a chat completion.
pub fn response(v: &Value, model: &str, json_mode: bool) -> Option<Value> {
    let blocks = v["content"].as_array()?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
            Some("tool_use") if json_mode && b["name"] == JSON_TOOL => text.push_str(&b["input"].to_string()),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": { "name": b["name"], "arguments": b["input"].to_string() },
            })),
            _ => {}
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }, "refusal": null });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let (input, output, cached) = usage_of(&v["usage"]);
    Some(json!({
        "id": v["id"],
        "object": "chat.completion",
        "created": openai::now(),
        "model": v["model"].as_str().unwrap_or(model),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(v["stop_reason"].as_str(), json_mode),
        }],
        "usage": openai::usage(input, output, cached),
    }))
}

/// Anthropic SSE → OpenAI chunks, event by event.
pub struct Stream {
    splitter: SseSplitter,
    chunks: openai::Chunks,
    model: String,
    include_usage: bool,
    json_mode: bool,
    /// Index of each content block among tool calls (None: text).
    blocks: Vec<Option<usize>>,
    tools: usize,
    usage: (u64, u64, u64),
    finish: Option<&'static str>,
    done: bool,
}

impl Stream {
    pub fn new(model: &str, include_usage: bool, json_mode: bool) -> Stream {
        Stream {
            splitter: SseSplitter::new(),
            chunks: openai::Chunks::new("", model),
            model: model.to_string(),
            include_usage,
            json_mode,
            blocks: Vec::new(),
            tools: 0,
            usage: (0, 0, 0),
            finish: None,
            done: false,
        }
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for v in sse_events(&mut self.splitter, data) {
            self.event(&v, out);
        }
    }

    fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        // After message_stop the stream is over: nothing follows [DONE].
        if self.done {
            return;
        }
        match v["type"].as_str() {
            Some("message_start") => {
                let m = &v["message"];
                if let Some(model) = m["model"].as_str() {
                    self.model = model.to_string();
                }
                self.chunks = openai::Chunks::new(m["id"].as_str().unwrap_or(""), &self.model);
                let (i, _, c) = usage_of(&m["usage"]);
                self.usage = (i, 0, c);
                self.chunks.delta(out, &json!({ "role": "assistant", "content": "" }), None);
            }
            Some("content_block_start") => {
                let b = &v["content_block"];
                if b["type"] == "tool_use" && !(self.json_mode && b["name"] == JSON_TOOL) {
                    let index = self.tools;
                    self.tools += 1;
                    self.blocks.push(Some(index));
                    let call = json!({ "index": index, "id": b["id"], "type": "function", "function": { "name": b["name"], "arguments": "" } });
                    self.chunks.delta(out, &json!({ "tool_calls": [call] }), None);
                } else {
                    self.blocks.push(None);
                }
            }
            Some("content_block_delta") => {
                let block = v["index"].as_u64().and_then(|i| self.blocks.get(i as usize).copied()).flatten();
                let d = &v["delta"];
                let delta = match (d["type"].as_str(), block) {
                    (Some("text_delta"), _) => return self.chunks.content(out, d["text"].as_str().unwrap_or("")),
                    (Some("input_json_delta"), Some(index)) => {
                        json!({ "tool_calls": [{ "index": index, "function": { "arguments": d["partial_json"] } }] })
                    }
                    // JSON mode: the forced tool's input is the answer.
                    (Some("input_json_delta"), None) => json!({ "content": d["partial_json"] }),
                    (Some("thinking_delta"), _) => json!({ "reasoning_content": d["thinking"] }),
                    _ => return,
                };
                self.chunks.delta(out, &delta, None);
            }
            Some("message_delta") => {
                let (_, output, _) = usage_of(&v["usage"]);
                self.usage.1 = self.usage.1.max(output);
                let finish = finish_reason(v["delta"]["stop_reason"].as_str(), self.json_mode);
                self.finish = Some(finish);
                self.chunks.delta(out, &json!({}), Some(finish));
            }
            Some("message_stop") => self.finish(out),
            Some("error") => {
                let e = json!({ "error": { "message": v["error"]["message"], "type": "api_error", "param": null, "code": v["error"]["type"] } });
                openai::event(out, &e);
            }
            _ => {}
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        self.chunks.end(out, self.include_usage.then_some(self.usage));
    }
}

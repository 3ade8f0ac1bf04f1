//! OpenAI chat completions ⇄ Gemini generateContent.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::providers::{
    openai::translate as openai,
    translate::{check_fields, invalid, max_tokens, sse_events, stop_list, unsupported as unsupported_in},
};
use crate::{error::GatewayError, tap::sse::SseSplitter};

const KIND: &str = "gemini";

fn unsupported(field: impl Into<String>) -> GatewayError {
    unsupported_in(KIND, field)
}

/// Gemini translates only the common fields.
const EXTRA_FIELDS: &[&str] = &[];

pub fn request(req: &Map<String, Value>) -> Result<Value, GatewayError> {
    check_fields(req, EXTRA_FIELDS, KIND)?;
    let mut config = Map::new();
    if let Some(m) = max_tokens(req) {
        config.insert("maxOutputTokens".into(), m.into());
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = stop_list(req)? {
        config.insert("stopSequences".into(), stop);
    }
    match req.get("response_format").and_then(|f| f.get("type")).and_then(Value::as_str) {
        None | Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert("responseSchema".into(), req["response_format"]["json_schema"]["schema"].clone());
        }
        Some(other) => return Err(unsupported(format!("response_format.type={other}"))),
    }
    let (system, contents) = contents(req.get("messages"))?;
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": [{ "text": system }] }));
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()) {
        let decls: Vec<Value> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t["type"] != "function" {
                    return Err(unsupported(format!("tools[{i}].type")));
                }
                let f = &t["function"];
                let mut d = json!({ "name": f["name"] });
                if !f["description"].is_null() {
                    d["description"] = f["description"].clone();
                }
                if !f["parameters"].is_null() {
                    d["parameters"] = f["parameters"].clone();
                }
                Ok(d)
            })
            .collect::<Result<_, _>>()?;
        out.insert("tools".into(), json!([{ "functionDeclarations": decls }]));
    }
    match req.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let mode = match s.as_str() {
                "auto" => "AUTO",
                "none" => "NONE",
                "required" => "ANY",
                other => return Err(invalid("tool_choice", format!("`{other}`"))),
            };
            out.insert("toolConfig".into(), json!({ "functionCallingConfig": { "mode": mode } }));
        }
        Some(v) => {
            let name =
                v["function"]["name"].as_str().ok_or_else(|| invalid("tool_choice", "expected a function name"))?;
            out.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": [name] } }),
            );
        }
    }
    Ok(Value::Object(out))
}

fn contents(messages: Option<&Value>) -> Result<(String, Vec<Value>), GatewayError> {
    let list = messages.and_then(Value::as_array).ok_or_else(|| invalid("messages", "an array is required"))?;
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    // Gemini answers a function by name; OpenAI by call id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in list.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        let (role, parts) = match role {
            "system" | "developer" => {
                system.push(text(&m["content"], i)?);
                continue;
            }
            "user" => ("user", parts(&m["content"], i)?),
            "assistant" => {
                let mut p = if m["content"].is_null() { Vec::new() } else { parts(&m["content"], i)? };
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let name = c["function"]["name"].as_str().unwrap_or("").to_string();
                    call_names.insert(c["id"].as_str().unwrap_or("").to_string(), name.clone());
                    let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("{}"))
                        .map_err(|_| invalid("messages", format!("messages[{i}].tool_calls arguments are not JSON")))?;
                    p.push(json!({ "functionCall": { "name": name, "args": args } }));
                }
                ("model", p)
            }
            "tool" => {
                let id = m["tool_call_id"].as_str().unwrap_or("");
                let name = call_names.get(id).cloned().ok_or_else(|| {
                    invalid("messages", format!("messages[{i}].tool_call_id matches no earlier tool call"))
                })?;
                let response = json!({ "name": name, "response": { "content": text(&m["content"], i)? } });
                ("user", vec![json!({ "functionResponse": response })])
            }
            other => return Err(unsupported(format!("messages[{i}].role={other}"))),
        };
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(p) = last["parts"].as_array_mut() {
                    p.extend(parts);
                }
            }
            _ => out.push(json!({ "role": role, "parts": parts })),
        }
    }
    Ok((system.join("\n\n"), out))
}

fn text(c: &Value, i: usize) -> Result<String, GatewayError> {
    match c {
        Value::String(s) => Ok(s.clone()),
        Value::Array(ps) => ps
            .iter()
            .map(|p| {
                p["text"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| unsupported(format!("messages[{i}].content (only text here)")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|t| t.join("")),
        Value::Null => Ok(String::new()),
        _ => Err(invalid("messages", format!("messages[{i}].content"))),
    }
}

fn parts(c: &Value, i: usize) -> Result<Vec<Value>, GatewayError> {
    match c {
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(ps) => ps
            .iter()
            .enumerate()
            .map(|(j, p)| match p["type"].as_str() {
                Some("text") => Ok(json!({ "text": p["text"] })),
                Some("image_url") => {
                    let url = p["image_url"]["url"].as_str().unwrap_or("");
                    let (meta, data) = url
                        .strip_prefix("data:")
                        .and_then(|r| r.split_once(','))
                        .ok_or_else(|| unsupported(format!("messages[{i}].content[{j}] (only data: image URLs)")))?;
                    let mime = meta.strip_suffix(";base64").unwrap_or(meta);
                    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
                }
                Some(other) => Err(unsupported(format!("messages[{i}].content[{j}].type={other}"))),
                None => Err(invalid("messages", format!("messages[{i}].content[{j}] has no type"))),
            })
            .collect(),
        _ => Err(invalid("messages", format!("messages[{i}].content"))),
    }
}

fn finish_reason(r: Option<&str>, tools: bool) -> &'static str {
    match r {
        _ if tools => "tool_calls",
        Some("MAX_TOKENS") => "length",
        Some("SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII") => "content_filter",
        _ => "stop",
    }
}

fn usage_of(u: &Value) -> (u64, u64, u64) {
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    (
        n("promptTokenCount"),
        n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
        n("cachedContentTokenCount"),
    )
}

/// (text, tool calls) of a candidate's parts; call ids count from `first`.
fn split_parts(parts: &[Value], first: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts {
        if p["thought"].as_bool() == Some(true) {
            continue;
        }
        if let Some(t) = p["text"].as_str() {
            text.push_str(t);
        }
        if let Some(f) = p.get("functionCall") {
            let index = first + calls.len();
            calls.push(json!({
                "index": index,
                "id": format!("call_{index}"),
                "type": "function",
                "function": { "name": f["name"], "arguments": f["args"].to_string() },
            }));
        }
    }
    (text, calls)
}

pub fn response(v: &Value, model: &str) -> Option<Value> {
    let cand = v["candidates"].get(0)?;
    let parts = cand["content"]["parts"].as_array().cloned().unwrap_or_default();
    let (text, mut calls) = split_parts(&parts, 0);
    for c in &mut calls {
        if let Some(o) = c.as_object_mut() {
            o.remove("index");
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }, "refusal": null });
    let tools = !calls.is_empty();
    if tools {
        message["tool_calls"] = Value::Array(calls);
    }
    let (i, o, c) = usage_of(&v["usageMetadata"]);
    Some(json!({
        "id": v["responseId"].as_str().map_or_else(|| "chatcmpl-gemini".to_string(), |id| format!("chatcmpl-{id}")),
        "object": "chat.completion",
        "created": openai::now(),
        "model": v["modelVersion"].as_str().unwrap_or(model),
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(cand["finishReason"].as_str(), tools) }],
        "usage": openai::usage(i, o, c),
    }))
}

/// Gemini SSE (`alt=sse`) → OpenAI chunks.
pub struct Stream {
    splitter: SseSplitter,
    chunks: openai::Chunks,
    model: String,
    include_usage: bool,
    started: bool,
    tools: usize,
    usage: (u64, u64, u64),
    done: bool,
}

impl Stream {
    pub fn new(model: &str, include_usage: bool) -> Stream {
        Stream {
            splitter: SseSplitter::new(),
            chunks: openai::Chunks::new("chatcmpl-gemini", model),
            model: model.to_string(),
            include_usage,
            started: false,
            tools: 0,
            usage: (0, 0, 0),
            done: false,
        }
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        for v in sse_events(&mut self.splitter, data) {
            self.event(&v, out);
        }
    }

    fn event(&mut self, v: &Value, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if let Some(m) = v["modelVersion"].as_str() {
                self.model = m.to_string();
            }
            let id =
                v["responseId"].as_str().map_or_else(|| "chatcmpl-gemini".to_string(), |id| format!("chatcmpl-{id}"));
            self.chunks = openai::Chunks::new(&id, &self.model);
            self.chunks.delta(out, &json!({ "role": "assistant", "content": "" }), None);
        }
        if !v["usageMetadata"].is_null() {
            self.usage = usage_of(&v["usageMetadata"]);
        }
        let Some(cand) = v["candidates"].get(0) else { return };
        let parts = cand["content"]["parts"].as_array().cloned().unwrap_or_default();
        let (text, calls) = split_parts(&parts, self.tools);
        self.tools += calls.len();
        if !text.is_empty() {
            self.chunks.content(out, &text);
        }
        if !calls.is_empty() {
            self.chunks.delta(out, &json!({ "tool_calls": calls }), None);
        }
        if let Some(r) = cand["finishReason"].as_str() {
            let finish = finish_reason(Some(r), self.tools > 0);
            self.chunks.delta(out, &json!({}), Some(finish));
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

//! The built-in mock LLM upstream (`aigw mock`, and the embedded `mock`
//! provider). It speaks just enough of the providers' wire formats for
//! tests, benchmarks and demos to exercise the gateway for real:
//!
//! - `POST …/chat/completions`: OpenAI chat completions, JSON with usage, or
//!   SSE `chat.completion.chunk` events (a usage chunk when
//!   `stream_options.include_usage` is true) then `data: [DONE]`.
//! - `POST …/messages`: Anthropic Messages, JSON, or SSE `message_start` …
//!   `message_stop` with usage.
//! - `POST …/models/{model}:generateContent` and `:streamGenerateContent`
//!   (`alt=sse`): Gemini, JSON or SSE with `usageMetadata`.
//! - `POST …/embeddings`, `GET …/models`: small OpenAI-shaped answers.
//! - `… /echo`: the request as the mock received it, as JSON (tests check
//!   what the gateway forwarded).
//! - `POST …/moderations`: OpenAI's moderation answer, one result per
//!   `input` string, flagged when it contains `mock-unsafe`
//!   (case-insensitive). And a chat model whose name contains `guard`
//!   answers like Llama Guard: `unsafe\nS1` when the prompt contains
//!   `mock-unsafe`, else `safe`. For both, a text containing
//!   `mock-slow-check` is answered after 2 s, and one containing
//!   `mock-failing-check` gets a 500 (tests of a check's timeout and
//!   failure).
//!
//! Every completion has exactly `tokens` content chunks and reports exactly
//! `tokens` completion/output tokens; prompt tokens are `max(1, len/4)` of
//! the `messages` (or `input`) JSON.
//! With `tools` in the request (and no tool result last), both formats
//! answer with one call to the first tool, arguments `{"location":"Paris"}`.
//! Per-request overrides: `x-mock-tokens`, `x-mock-delay-ms`,
//! `x-mock-ttft-ms`, `x-mock-status` (answer that status with an error,
//! after `x-mock-ttft-ms`), `x-mock-content` (answer this text instead,
//! percent-decoded: one content chunk, and one token, per word with its
//! leading space, or per piece between U+001F separators (`%1F`) when it
//! has any, so a test can split the text at any byte).

mod anthropic;
mod gemini;
mod openai;

use std::{
    net::SocketAddr,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::BytesMut;

use crate::{
    config::{IoDriver, Limits, ServerTimeouts},
    error::{GatewayError, json_error, json_response},
    http::{Version, write},
    server::{self, runtime::Threads},
    service::{ClientIo, Outcome, Request, Service, respond_error},
    util::shutdown::Shutdown,
};

#[derive(Debug, Clone, Copy)]
pub struct MockOptions {
    /// Content chunks (= completion tokens) per response.
    pub tokens: usize,
    /// Pause between content chunks of a stream.
    pub delay: Duration,
    /// Pause before the first content (streams) or the answer (JSON).
    pub ttft: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self { tokens: 16, delay: Duration::ZERO, ttft: Duration::ZERO }
    }
}

/// Counters tests read to check what reached the upstream.
#[derive(Debug, Default)]
pub struct MockStats {
    pub requests: AtomicU64,
    pub streams_active: AtomicI64,
    /// Streams whose client (the gateway) went away before the end.
    pub streams_aborted: AtomicU64,
    pub streams_completed: AtomicU64,
}

pub struct MockCtx {
    pub opts: MockOptions,
    pub stats: Arc<MockStats>,
    /// Prompt prefixes this server has seen, as an inference server's
    /// prefix cache would hold them (shared by the mock's workers).
    pub prefixes: Arc<PrefixCache>,
}

/// A stand-in for vLLM's prefix cache: every leading run of messages
/// (`messages[..k]`) a request carried is remembered; a later request
/// whose messages start the same way reports that prefix's tokens as
/// `cached_tokens` (`cache_read_input_tokens` for Anthropic), so routing
/// that keeps prefixes on one replica shows up in the usage.
#[derive(Default)]
pub struct PrefixCache {
    seen: std::sync::Mutex<std::collections::HashSet<u64>>,
}

/// Entries remembered at most (then the cache starts over, like an
/// evicting one).
const PREFIX_CACHE_MAX: usize = 100_000;

impl PrefixCache {
    /// Tokens of the longest cached prefix; remembers this prompt's.
    pub fn lookup_and_insert(&self, body: &serde_json::Value) -> usize {
        let Some(messages) = body["messages"].as_array() else { return 0 };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > PREFIX_CACHE_MAX {
            seen.clear();
        }
        let mut cached = 0;
        let mut text = String::from("[");
        for (k, m) in messages.iter().enumerate() {
            if k > 0 {
                text.push(',');
            }
            text.push_str(&m.to_string());
            let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
            // The last message is the new turn: it is stored, not matched.
            if k + 1 < messages.len() && seen.contains(&hash) {
                cached = text.len() / 4;
            }
            seen.insert(hash);
        }
        cached
    }
}

/// A running mock server.
pub struct MockServer {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
    shutdown: Arc<Shutdown>,
    threads: Option<Threads>,
}

impl MockServer {
    pub fn start(listen: SocketAddr, opts: MockOptions, workers: usize, pin: bool) -> std::io::Result<MockServer> {
        let stats = Arc::new(MockStats::default());
        let shutdown = Arc::new(Shutdown::new());
        let limits = Limits { max_head_bytes: 64 * 1024, max_headers: 128, max_body_bytes: 64 << 20 };
        let timeouts = ServerTimeouts {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(60),
            keepalive: Duration::from_secs(300),
            shutdown_grace: Duration::from_millis(200),
        };
        let s = stats.clone();
        let prefixes = Arc::new(PrefixCache::default());
        let make = move |_| Rc::new(MockCtx { opts, stats: s.clone(), prefixes: prefixes.clone() });
        let service = server::ServiceConfig {
            name: "aigw-mock",
            driver: IoDriver::Auto,
            limits,
            timeouts,
            shutdown: shutdown.clone(),
            tls: None,
        };
        let (addr, threads) = server::spawn_service(&service, listen, workers, pin, Arc::new(make))?;
        Ok(MockServer { addr, stats, shutdown, threads: Some(threads) })
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting and waits for the worker threads.
    pub fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.threads.take() {
            t.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Per-request settings: the server's, overridden by `x-mock-*` headers.
struct Plan {
    tokens: usize,
    delay: Duration,
    ttft: Duration,
    /// `x-mock-content`, in its chunks; None: the usual words.
    content: Option<Vec<String>>,
}

impl Plan {
    /// Content chunk `i`.
    fn piece(&self, i: usize) -> &str {
        match &self.content {
            Some(c) => c.get(i).map_or("", String::as_str),
            None => word(i),
        }
    }

    /// The whole answer's text.
    fn text(&self) -> String {
        (0..self.tokens).map(|i| self.piece(i)).collect()
    }
}

/// `x-mock-content`: percent-decoded (invalid UTF-8 replaced), split at
/// U+001F when present, else before each space.
fn content_chunks(raw: &[u8]) -> Vec<String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(b)) => {
                bytes.push(b);
                i += 3;
            }
            (c, _) => {
                bytes.push(c);
                i += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if text.contains('\u{1F}') {
        return text.split('\u{1F}').map(String::from).collect();
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices(' ') {
        if at > start {
            chunks.push(text[start..at].to_string());
            start = at;
        }
    }
    chunks.push(text[start..].to_string());
    chunks.retain(|c| !c.is_empty());
    chunks
}

fn header_num(req: &Request, name: &str) -> Option<u64> {
    req.head.header(name).and_then(|v| std::str::from_utf8(v).ok()).and_then(|s| s.trim().parse().ok())
}

impl Service for MockCtx {
    async fn handle(&self, req: Request, io: &mut ClientIo, keep_alive: bool) -> Outcome {
        let (version, id) = (req.head.version(), req.id);
        match handle(self, req, io, keep_alive).await {
            Ok(outcome) => outcome,
            Err(e) => respond_error(io, &e, version, id, keep_alive).await.0,
        }
    }
}

async fn handle(m: &MockCtx, req: Request, io: &mut ClientIo, keep_alive: bool) -> Result<Outcome, GatewayError> {
    m.stats.requests.fetch_add(1, Ordering::SeqCst);
    let content = req.head.header("x-mock-content").map(content_chunks);
    let plan = Plan {
        tokens: match &content {
            Some(c) => c.len(),
            None => header_num(&req, "x-mock-tokens").map_or(m.opts.tokens, |n| n.min(1_000_000) as usize),
        },
        delay: header_num(&req, "x-mock-delay-ms").map_or(m.opts.delay, Duration::from_millis),
        ttft: header_num(&req, "x-mock-ttft-ms").map_or(m.opts.ttft, Duration::from_millis),
        content,
    };
    let version = req.head.version();
    if let Some(status) = header_num(&req, "x-mock-status").filter(|s| (200..=599).contains(s)) {
        // An error takes its time too (x-mock-ttft-ms), like a real one.
        pause(plan.ttft).await;
        let body = json_error("mock error requested with x-mock-status", "api_error", "mock_error");
        return send(io, json_response(status as u16, &body, version, None, !keep_alive), keep_alive).await;
    }
    let target = req.head.target();
    let path = &target[..target.iter().position(|&b| b == b'?').unwrap_or(target.len())];
    let method = req.head.method();
    if path.ends_with(b"/echo") {
        return send(io, echo(&req, keep_alive), keep_alive).await;
    }
    match (method, path) {
        (b"POST", p) if p.ends_with(b"/moderations") || p.ends_with(b"/chat/completions") && is_classifier(&req) => {
            let body = match parse_body(&req) {
                Ok(v) => v,
                Err(resp) => return send(io, resp, false).await,
            };
            let (status, answer) = openai::check(&body, p.ends_with(b"/moderations"));
            if status == 0 {
                pause(Duration::from_secs(2)).await;
            }
            let status = if status == 0 { 200 } else { status };
            send(io, json_response(status, &answer, version, None, !keep_alive), keep_alive).await
        }
        (b"POST", p) if p.ends_with(b"/chat/completions") => openai::chat(m, &req, &plan, io, keep_alive).await,
        (b"POST", p) if p.ends_with(b"/messages") => anthropic::messages(m, &req, &plan, io, keep_alive).await,
        (b"POST", p) if p.ends_with(b":generateContent") || p.ends_with(b":streamGenerateContent") => {
            let info = crate::providers::gemini::gemini_path(p).unwrap_or_default();
            gemini::generate(m, &req, &plan, io, keep_alive, &info).await
        }
        (b"POST", p) if p.ends_with(b"/embeddings") => {
            let body = match parse_body(&req) {
                Ok(v) => openai::embeddings(&v),
                Err(resp) => return send(io, resp, false).await,
            };
            send(io, json_response(200, &body, version, None, !keep_alive), keep_alive).await
        }
        (b"GET", p) if p.ends_with(b"/models") => {
            let body = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"aigw-mock"}]}"#;
            send(io, json_response(200, body, version, None, !keep_alive), keep_alive).await
        }
        _ => {
            let body = json_error("the mock has no such endpoint", "invalid_request_error", "not_found");
            send(io, json_response(404, &body, version, None, !keep_alive), keep_alive).await
        }
    }
}

/// A chat request to a model named like a guard classifier.
fn is_classifier(req: &Request) -> bool {
    let Some(i) = memchr::memmem::find(&req.body, b"\"model\"") else { return false };
    let rest = &req.body[i + 7..req.body.len().min(i + 7 + 300)];
    let value = rest.split(|&b| b == b',' || b == b'}').next().unwrap_or_default();
    memchr::memmem::find(&value.to_ascii_lowercase(), b"guard").is_some()
}

async fn send(io: &mut ClientIo, response: BytesMut, keep_alive: bool) -> Result<Outcome, GatewayError> {
    if io.send(response).await && keep_alive { Ok(Outcome::Reusable) } else { Ok(Outcome::Close) }
}

/// Parses the JSON body, or answers 400 the way OpenAI does.
fn parse_body(req: &Request) -> Result<serde_json::Value, BytesMut> {
    serde_json::from_slice(&req.body).map_err(|e| {
        let body = json_error(&format!("invalid JSON body: {e}"), "invalid_request_error", "invalid_json");
        json_response(400, &body, req.head.version(), None, false)
    })
}

/// The prompt as the mock counts it: `messages` (chat, Anthropic) or
/// `input` (embeddings), as compact JSON. Other fields (`stream_options`,
/// sampling settings) are not part of the prompt, as with real providers.
fn prompt_text(body: &serde_json::Value) -> String {
    body.get("messages")
        .or_else(|| body.get("input"))
        .or_else(|| body.get("contents"))
        .map(|m| m.to_string())
        .unwrap_or_default()
}

/// Identical prompts get identical answers (ids included), so a response
/// through the gateway can be compared byte for byte with a direct one even
/// when the gateway added `stream_options`.
fn response_id(body: &serde_json::Value) -> String {
    let text = prompt_text(body);
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{hash:016x}")
}

/// Arguments of every tool call the mock makes.
const TOOL_ARGS: &str = r#"{"location":"Paris"}"#;

/// The tool to call: the first one offered, unless the conversation already
/// ends with a tool's result (then the mock answers in text).
fn tool_to_call(body: &serde_json::Value) -> Option<String> {
    let tool = body["tools"].get(0)?;
    let name = tool["function"]["name"].as_str().or_else(|| tool["name"].as_str())?;
    let last = body["messages"].as_array()?.last()?;
    let answered = last["role"] == "tool"
        || last["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    (!answered).then(|| name.to_string())
}

/// `max(1, len(prompt JSON) / 4)`: deterministic, so tests can predict it.
fn prompt_tokens(body: &serde_json::Value) -> usize {
    (prompt_text(body).len() / 4).max(1)
}

fn echo(req: &Request, keep_alive: bool) -> BytesMut {
    let headers: Vec<(String, String)> = req
        .head
        .headers()
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let body = serde_json::json!({
        "method": String::from_utf8_lossy(req.head.method()),
        "target": String::from_utf8_lossy(req.head.target()),
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    })
    .to_string();
    json_response(200, &body, req.head.version(), None, !keep_alive)
}

/// Writes a streaming response: head, then each event as one chunk.
struct EventStream<'a> {
    io: &'a mut ClientIo,
    stats: &'a MockStats,
    chunked: bool,
}

impl<'a> EventStream<'a> {
    async fn start(io: &'a mut ClientIo, stats: &'a MockStats, version: Version, keep_alive: bool) -> Option<Self> {
        let chunked = version == Version::Http11;
        let mut head = BytesMut::with_capacity(256);
        write::status_line(&mut head, version, 200, b"");
        write::header(&mut head, b"Content-Type", b"text/event-stream");
        write::header(&mut head, b"Cache-Control", b"no-cache");
        if chunked {
            write::header(&mut head, b"Transfer-Encoding", b"chunked");
        }
        if !keep_alive || !chunked {
            write::header(&mut head, b"Connection", b"close");
        }
        write::end_head(&mut head);
        stats.streams_active.fetch_add(1, Ordering::SeqCst);
        let mut s = EventStream { io, stats, chunked };
        if s.raw(head).await { Some(s) } else { None }
    }

    async fn raw(&mut self, data: BytesMut) -> bool {
        let ok = self.io.send(data).await;
        if !ok {
            self.stats.streams_active.fetch_sub(1, Ordering::SeqCst);
            self.stats.streams_aborted.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }

    /// Sends events (already `data: …\n\n`-framed) as one chunk.
    async fn events(&mut self, text: &str) -> bool {
        let mut out = BytesMut::with_capacity(text.len() + 16);
        if self.chunked {
            write::chunk(&mut out, text.as_bytes())
        } else {
            out.extend_from_slice(text.as_bytes())
        }
        self.raw(out).await
    }

    async fn finish(mut self, text: &str, keep_alive: bool) -> Outcome {
        let mut out = BytesMut::with_capacity(text.len() + 16);
        if self.chunked {
            write::chunk(&mut out, text.as_bytes());
            out.extend_from_slice(write::LAST_CHUNK);
        } else {
            out.extend_from_slice(text.as_bytes());
        }
        if !self.raw(out).await {
            return Outcome::Close;
        }
        self.stats.streams_active.fetch_sub(1, Ordering::SeqCst);
        self.stats.streams_completed.fetch_add(1, Ordering::SeqCst);
        if keep_alive && self.chunked { Outcome::Reusable } else { Outcome::Close }
    }
}

/// Words that are one token each in the common OpenAI tokenizers, so the
/// gateway's token estimates can be checked against the mock's counts.
const WORDS: [&str; 10] = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."];

fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        monoio::time::sleep(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::content_chunks;

    #[test]
    fn mock_content_is_decoded_and_split() {
        assert_eq!(content_chunks(b"Hi%20there, a%40b.co"), ["Hi", " there,", " a@b.co"]);
        assert_eq!(content_chunks(b"a%40%1Fb.co%1F x"), ["a@", "b.co", " x"]);
        assert_eq!(content_chunks(b"bad %zz %E2%9C%93"), ["bad", " %zz", " \u{2713}"]);
        assert!(content_chunks(b"").is_empty());
    }
}

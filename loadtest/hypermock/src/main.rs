//! A tokio/hyper OpenAI chat-completions mock that answers at once: the
//! kind of upstream the public AI-gateway boards put behind every contender
//! (the issue-12 method). `loadtest/compare.py --mock hyper` builds and uses
//! it in place of `aigw mock`, so the ratios can be taken both ways.
//!
//! It speaks only what the load tests send: `POST …/chat/completions`
//! (JSON with usage, or SSE chunks, a usage chunk when
//! `stream_options.include_usage`, then `[DONE]`), honouring `x-mock-tokens`
//! and `x-mock-delay-ms` like `aigw mock`; `GET …/models` for readiness.
//!
//!   hypermock --listen 127.0.0.1:9000 [--threads N]   (N: tokio's default)

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response,
    body::{Body, Bytes, Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, time::Sleep};

const WORDS: [&str; 8] = ["Hello", " there", ",", " how", " can", " I", " help", "?"];

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:9000".parse().expect("default address");
    let mut threads = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--listen" => listen = v.parse().expect("--listen ADDR:PORT"),
            "--threads" => threads = Some(v.parse::<usize>().expect("--threads N")),
            _ => panic!("usage: hypermock --listen ADDR:PORT [--threads N]"),
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build().expect("runtime").block_on(serve(listen));
}

async fn serve(listen: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service_fn(answer)).await;
        });
    }
}

type Answer = Response<Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>>;

async fn answer(req: Request<Incoming>) -> Result<Answer, Infallible> {
    let header = |name: &str| -> Option<u64> { req.headers().get(name)?.to_str().ok()?.parse().ok() };
    let tokens = header("x-mock-tokens").unwrap_or(16) as usize;
    let delay = Duration::from_millis(header("x-mock-delay-ms").unwrap_or(0));
    let path = req.uri().path().to_owned();
    if path.ends_with("/models") {
        return Ok(json(200, r#"{"object":"list","data":[{"id":"mock-model","object":"model"}]}"#.into()));
    }
    if !path.ends_with("/chat/completions") {
        return Ok(json(404, r#"{"error":{"message":"not found","type":"invalid_request_error"}}"#.into()));
    }
    let Ok(body) = req.into_body().collect().await else {
        return Ok(json(400, r#"{"error":{"message":"body","type":"invalid_request_error"}}"#.into()));
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return Ok(json(400, r#"{"error":{"message":"not JSON","type":"invalid_request_error"}}"#.into()));
    };
    let model = serde_json::Value::from(body["model"].as_str().unwrap_or("mock-model")).to_string();
    let prompt = (body["messages"].to_string().len() / 4).max(1);
    let usage =
        format!(r#"{{"prompt_tokens":{prompt},"completion_tokens":{tokens},"total_tokens":{}}}"#, prompt + tokens);
    let id = "chatcmpl-hypermock";
    if body["stream"].as_bool() != Some(true) {
        let text: String = (0..tokens).map(|i| WORDS[i % WORDS.len()]).collect();
        let content = serde_json::Value::from(text);
        return Ok(json(
            200,
            format!(
                r#"{{"id":"{id}","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":{content}}},"finish_reason":"stop"}}],"usage":{usage}}}"#
            ),
        ));
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut events = Vec::with_capacity(tokens + 1);
    let mut first = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for i in 0..tokens {
        let event = chunk(&format!(r#"{{"content":{}}}"#, serde_json::Value::from(WORDS[i % WORDS.len()])), "null");
        if i == 0 {
            first.push_str(&event);
            events.push(std::mem::take(&mut first));
        } else {
            events.push(event);
        }
    }
    let mut tail = first;
    tail.push_str(&chunk("{}", "\"stop\""));
    if include_usage {
        tail.push_str(&format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":{model},\"choices\":[],\"usage\":{usage}}}\n\n"
        ));
    }
    tail.push_str("data: [DONE]\n\n");
    events.push(tail);
    let body = Events { events: events.into_iter().map(Bytes::from).collect(), next: 0, delay, sleep: None };
    let mut resp = Response::new(Box::pin(body) as _);
    let h = resp.headers_mut();
    h.insert("content-type", "text/event-stream".parse().expect("header"));
    h.insert("cache-control", "no-cache".parse().expect("header"));
    Ok(resp)
}

fn json(status: u16, text: String) -> Answer {
    let mut resp = Response::new(Box::pin(Full::new(Bytes::from(text))) as _);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    resp.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    resp
}

/// A stream's events, `delay` apart after the first (chunked encoding).
struct Events {
    events: Vec<Bytes>,
    next: usize,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.next >= this.events.len() {
            return Poll::Ready(None);
        }
        // Pause before every event but the first (and the end, as aigw mock does).
        if this.next > 0 && !this.delay.is_zero() && this.next + 1 < this.events.len() {
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(this.delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let event = std::mem::take(&mut this.events[this.next]);
        this.next += 1;
        Poll::Ready(Some(Ok(Frame::data(event))))
    }
}

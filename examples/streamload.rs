//! Streaming load client for `loadtest/compare.sh`: opens N concurrent
//! streaming chat completions (paced by the mock via `x-mock-*` headers)
//! and measures what wrk cannot: time to first token, the gap between
//! consecutive content events, and whether every stream got every event.
//!
//! `cargo run --release --example streamload -- ADDR PATH STREAMS TOKENS DELAY_MS [THREADS] [RAMP_MS]`
//! Streams start evenly spread over RAMP_MS (default 0: as fast as the
//! accept queue allows), so TTFT measures the proxy, not a burst.
//! prints one JSON line. A stream is "stalled" if any gap exceeds the pace
//! by more than 250 ms, "lost" if it ended without all its events.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aigw::http::chunked::ChunkedDecoder;
use bytes::BytesMut;
use monoio::{
    buf::IoBufMut,
    io::{AsyncReadRent, AsyncWriteRentExt},
    net::TcpStream,
};

#[derive(Default)]
struct Totals {
    ok: usize,
    stalled: usize,
    lost: usize,
    errors: usize,
    ttft_us: Vec<u64>,
    gap_us: Vec<u64>,
}

struct Plan {
    addr: SocketAddr,
    request: Vec<u8>,
    tokens: usize,
    stall: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: streamload ADDR PATH STREAMS TOKENS DELAY_MS [THREADS] [RAMP_MS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().unwrap();
    let path = &args[2];
    let streams: usize = args[3].parse().unwrap();
    let tokens: usize = args[4].parse().unwrap();
    let delay_ms: u64 = args[5].parse().unwrap();
    let threads: usize = args.get(6).map_or(1, |t| t.parse().unwrap());
    let ramp = Duration::from_millis(args.get(7).map_or(0, |t| t.parse().unwrap()));
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Write a long story."}]}"#;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nx-mock-tokens: {tokens}\r\nx-mock-delay-ms: {delay_ms}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let plan = Arc::new(Plan { addr, request, tokens, stall: Duration::from_millis(delay_ms + 250) });
    let totals = Arc::new(Mutex::new(Totals::default()));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (plan, totals) = (plan.clone(), totals.clone());
            let mine = streams / threads + usize::from(t < streams % threads);
            std::thread::spawn(move || {
                let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().unwrap();
                rt.block_on(async move {
                    let mut tasks = Vec::with_capacity(mine);
                    let begin = Instant::now();
                    for i in 0..mine {
                        let (plan, totals) = (plan.clone(), totals.clone());
                        tasks.push(monoio::spawn(async move { one_stream(&plan, &totals).await }));
                        if !ramp.is_zero() {
                            let at = begin + ramp.mul_f64((i + 1) as f64 / mine as f64);
                            monoio::time::sleep(at.saturating_duration_since(Instant::now())).await;
                        } else if i % 200 == 199 {
                            // Steps, so the accept queue never overflows.
                            monoio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    for t in tasks {
                        t.await;
                    }
                });
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut t = totals.lock().unwrap();
    t.ttft_us.sort_unstable();
    t.gap_us.sort_unstable();
    let pct =
        |v: &[u64], p: f64| v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{{\"streams\":{streams},\"ok\":{},\"stalled\":{},\"lost\":{},\"errors\":{},\"ttft_p50_us\":{},\"ttft_p99_us\":{},\"gap_p50_us\":{},\"gap_p99_us\":{},\"gap_max_us\":{},\"seconds\":{:.2}}}",
        t.ok,
        t.stalled,
        t.lost,
        t.errors,
        pct(&t.ttft_us, 0.5),
        pct(&t.ttft_us, 0.99),
        pct(&t.gap_us, 0.5),
        pct(&t.gap_us, 0.99),
        t.gap_us.last().copied().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
}

async fn one_stream(plan: &Plan, totals: &Mutex<Totals>) {
    let Ok(mut s) = TcpStream::connect_addr(plan.addr).await else {
        totals.lock().unwrap().errors += 1;
        return;
    };
    let _ = s.set_nodelay(true);
    let sent = Instant::now();
    if s.write_all(plan.request.clone()).await.0.is_err() {
        totals.lock().unwrap().errors += 1;
        return;
    }
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut head_done = false;
    let mut decoder = ChunkedDecoder::new();
    let mut events = Vec::new(); // decoded body bytes not yet split into events
    let mut content_times: Vec<Instant> = Vec::with_capacity(plan.tokens);
    let mut done = false;
    while !done {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let len = buf.len();
        let (res, slice) = s.read(buf.slice_mut(len..)).await;
        buf = slice.into_inner();
        let now = Instant::now();
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let _ = buf.split_to(end + 4);
            head_done = true;
        }
        let data = &buf[..];
        let Ok(consumed) = decoder.decode_all(data, |r| events.extend_from_slice(&data[r])) else { break };
        let _ = buf.split_to(consumed);
        while let Some(end) = events.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = events.drain(..end + 2).collect();
            if event.windows(11).any(|w| w == b"\"content\":\"") && !event.windows(12).any(|w| w == b"\"content\":\"\"")
            {
                content_times.push(now);
            }
            if event.starts_with(b"data: [DONE]") {
                done = true;
            }
        }
    }
    let mut t = totals.lock().unwrap();
    if let Some(first) = content_times.first() {
        t.ttft_us.push(first.duration_since(sent).as_micros() as u64);
    }
    let mut stalled = false;
    for w in content_times.windows(2) {
        let gap = w[1].duration_since(w[0]);
        stalled |= gap > plan.stall;
        t.gap_us.push(gap.as_micros() as u64);
    }
    if !done || content_times.len() != plan.tokens {
        t.lost += 1;
    } else if stalled {
        t.stalled += 1;
    } else {
        t.ok += 1;
    }
}

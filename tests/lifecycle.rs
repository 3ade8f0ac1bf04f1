//! The binary's commands, the admin listener, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use common::*;

#[test]
fn in_flight_stream_finishes_after_shutdown_starts() {
    let m = mock();
    let gw = Gateway::start("shutdown_grace = \"10s\"", &provider("mock", "mock", m.addr));
    let addr = gw.addr;
    let admin = gw.admin;
    let mut c = Client::connect(addr);
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 10\r\nx-mock-delay-ms: 100\r\n"));
    c.read_until(b"\"content\":\"The\"");
    // An idle keep-alive connection is closed by the drain.
    let mut idle = Client::connect(addr);
    idle.send(&get("/mock/v1/models"));
    assert_eq!(idle.read_response().status, 200);

    let signal = gw.shutdown_signal();
    let waiter = std::thread::spawn(move || gw.wait());
    signal.trigger();
    assert!(idle.closed_within(Duration::from_secs(2)), "idle connection not closed on drain");
    let ready = roundtrip(admin, &get("/readyz"));
    assert_eq!(ready.status, 503);
    // The stream runs to its end, and says the connection will close.
    let rest = c.read_until(b"0\r\n\r\n");
    assert!(String::from_utf8_lossy(&rest).contains("data: [DONE]"));
    waiter.join().unwrap();
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after shutdown");
    assert_eq!(m.stats.streams_completed.load(Ordering::SeqCst), 1);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let m = mock();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace = \"10s\"\n{}",
        provider("mock", "mock", m.addr)
    );
    let mut bin = Binary::serve(&config, &[]);
    assert_eq!(roundtrip(bin.admin, &get("/healthz")).status, 200);
    assert_eq!(roundtrip(bin.admin, &get("/readyz")).status, 200);
    let mut c = Client::connect(bin.addr);
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 8\r\nx-mock-delay-ms: 100\r\n"));
    c.read_until(b"\"content\":\"The\"");
    let started = Instant::now();
    bin.sigterm();
    let rest = c.read_until(b"data: [DONE]\n\n");
    assert!(String::from_utf8_lossy(&rest).contains("\"completion_tokens\":8"));
    assert_eq!(bin.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(500), "exited before the stream ended");
    let log = bin.log.lock().unwrap().join("\n");
    assert!(log.contains("io_uring driver") || log.contains("epoll driver"), "{log}");
}

#[test]
fn grace_period_bounds_the_drain() {
    let m = mock();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\nshutdown_grace = \"300ms\"\n{}",
        provider("mock", "mock", m.addr)
    );
    let mut bin = Binary::serve(&config, &[]);
    let mut c = Client::connect(bin.addr);
    c.send(&post_with("/mock/v1/chat/completions", CHAT_STREAM, "x-mock-tokens: 1000\r\nx-mock-delay-ms: 100\r\n"));
    c.read_until(b"\"content\":\"The\"");
    let started = Instant::now();
    bin.sigterm();
    assert_eq!(bin.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn check_config_reports_every_error_with_its_path() {
    let dir = std::env::temp_dir().join(format!("aigw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\nworkers = 0\n[providers.a]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n[providers.b]\nkind = \"mock\"\ntimeout = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aigw")).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for path in ["server.listen", "server.workers", "providers.a.base_url", "providers.b.timeout"] {
        assert!(text.contains(&format!(": {path}: ")), "{path} missing from:\n{text}");
    }
    let good = dir.join("good.toml");
    std::fs::write(&good, "[providers.m]\nkind = \"mock\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aigw")).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["serve", "--help"], &["check-config", "--help"], &["mock", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_aigw")).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn mock_command_serves_with_its_flags() {
    let port = dead_addr().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["mock", "--listen", &format!("127.0.0.1:{port}"), "--tokens", "3", "--ttft-ms", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()));
    let r = roundtrip(addr, &post("/v1/chat/completions", CHAT));
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    let r = roundtrip(addr, &post("/v1/messages", r#"{"model":"claude","max_tokens":9,"messages":[]}"#));
    assert_eq!(r.json()["usage"]["output_tokens"], 3);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn embedded_default_mock_provider_answers() {
    // The embedded default config, on ephemeral ports: the built-in mock
    // answers on /mock with no key and no network.
    let toml = aigw::config::EMBEDDED_DEFAULT
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0");
    let config = aigw::config::Config::from_toml(&toml).unwrap();
    let running = aigw::gateway::start(&config).unwrap();
    let r = roundtrip(
        running.addr,
        &post("/mock/v1/chat/completions", r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
    running.stop();
}

//! Test harness: the gateway and the mock on ephemeral ports, a raw HTTP/1.1
//! client (so tests see exact bytes), and small hand-made upstreams that
//! misbehave on purpose.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aigw::{
    config::Config,
    gateway::{self, Running},
    mock::{MockOptions, MockServer},
};

// === gateway and mock ===

pub fn mock() -> MockServer {
    mock_with(MockOptions::default())
}

pub fn mock_with(opts: MockOptions) -> MockServer {
    MockServer::start("127.0.0.1:0".parse().unwrap(), opts, 1, false).unwrap()
}

/// A provider section pointing at `addr`.
pub fn provider(name: &str, kind: &str, addr: SocketAddr) -> String {
    format!("[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"http://{addr}\"\n")
}

pub struct Gateway {
    running: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl Gateway {
    /// `server` is extra `[server]` keys, `rest` the provider sections.
    pub fn start(server: &str, rest: &str) -> Gateway {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\npin_workers = false\n{server}\n{rest}"
        );
        let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let running = gateway::start(&config).unwrap();
        Gateway { addr: running.addr, admin: running.admin_addr, running: Some(running) }
    }

    pub fn shutdown_signal(&self) -> Arc<aigw::util::shutdown::Shutdown> {
        self.running.as_ref().unwrap().shutdown.clone()
    }

    /// Triggers shutdown and waits for the drain.
    pub fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }

    pub fn wait(mut self) {
        if let Some(r) = self.running.take() {
            r.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

// === raw HTTP client ===

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How the body was framed: "length", "chunked" or "close".
    pub framing: &'static str,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The OpenAI-style error code, asserting the error shape on the way.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "no error.message: {v}");
        assert!(v["error"]["type"].is_string(), "no error.type: {v}");
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }

    /// Writes without failing if the server already closed.
    pub fn try_send(&mut self, data: &[u8]) -> bool {
        self.stream.write_all(data).is_ok()
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                // A signal landed on this thread (io_uring's task-work
                // notification can do that): just read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return 0,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    fn take_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                let rest = self.buf.split_off(i + pat.len());
                return Some(std::mem::replace(&mut self.buf, rest));
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed inside a body");
        }
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// Raw bytes up to and including `pat` (panics on close first).
    pub fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
        self.take_until(pat).unwrap_or_else(|| panic!("closed before {:?}", String::from_utf8_lossy(pat)))
    }

    pub fn read_response(&mut self) -> Response {
        self.read_response_to(false)
    }

    pub fn read_response_to(&mut self, head_request: bool) -> Response {
        let head = self.read_until(b"\r\n\r\n");
        let text = String::from_utf8(head).unwrap();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let get = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
        let (body, framing) = if no_body {
            (Vec::new(), "length")
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            (self.read_chunked(), "chunked")
        } else if let Some(n) = get("content-length") {
            (self.take_exact(n.parse().unwrap()), "length")
        } else {
            (self.read_to_close(), "close")
        };
        Response { status, headers, body, framing }
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_until(b"\r\n");
            let size_text = String::from_utf8(line[..line.len() - 2].to_vec()).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                // trailers until an empty line
                while self.read_until(b"\r\n").len() > 2 {}
                return body;
            }
            body.extend(self.take_exact(size));
            assert_eq!(self.take_exact(2), b"\r\n");
        }
    }

    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// True if the server closed the connection (EOF within `wait`).
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1024];
        let closed = loop {
            match self.stream.read(&mut b) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        self.stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        closed
    }
}

/// One request on a fresh connection.
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(raw);
    c.read_response()
}

pub fn post(path: &str, body: &str) -> Vec<u8> {
    post_with(path, body, "")
}

/// A POST with extra header lines (each ending in \r\n).
pub fn post_with(path: &str, body: &str, headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

pub const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
pub const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// The sum of the /metrics samples whose line starts with `line_prefix`.
pub fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(line_prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// /metrics as text.
pub fn metrics_text(admin: SocketAddr) -> String {
    String::from_utf8(roundtrip(admin, &get("/metrics")).body).unwrap()
}

/// Polls `cond` until true or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// `/admin/logs?limit=n` once it holds `n` records (newest first); the
/// log thread gets them with the workers' flushes, up to a second late.
pub fn logs_once(admin: SocketAddr, n: usize) -> serde_json::Value {
    let mut log = serde_json::Value::Null;
    let got = eventually(Duration::from_secs(5), || {
        log = roundtrip(admin, &get(&format!("/admin/logs?limit={n}"))).json();
        log["data"].as_array().is_some_and(|d| d.len() == n)
    });
    assert!(got, "{n} records never came: {log}");
    log
}

// === hand-made upstreams ===

/// A TCP server that hands each connection to `behave` on its own thread
/// and counts connections. Threads end with the test process.
pub struct RawUpstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub fn spawn(behave: impl Fn(TcpStream) + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let behave = Arc::new(behave);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let behave = behave.clone();
                std::thread::spawn(move || behave(stream));
            }
        });
        RawUpstream { addr, connections }
    }
}

/// Reads one request head (and a Content-Length body) from a raw socket.
pub fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(head)
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// === the real binary ===

pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    pub fn serve(config: &str, envs: &[(&str, &str)]) -> Binary {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "aigw-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_aigw"))
            .args(["serve", "--config"])
            .arg(&path)
            .envs(envs.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) = line.split("aigw listening on http://").nth(1) {
                    let addr = rest.split(' ').next().unwrap().to_string();
                    let admin = rest.split("admin http://").nth(1).unwrap().split(')').next().unwrap().to_string();
                    let _ = tx.send((addr, admin));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let (addr, admin) = rx.recv_timeout(Duration::from_secs(20)).expect("gateway did not start");
        Binary { child, addr: addr.parse().unwrap(), admin: admin.parse().unwrap(), log }
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === redis ===

/// A real redis-server on a free port, killed on drop. CI installs it
/// (`.ci/run`); a missing binary fails the test rather than skipping it.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server; .ci/run does)");
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut server = RedisServer { addr, child };
            // Ours must be the one answering: two tests starting at once can
            // pick the same free port, and the loser's server exits.
            let pid = format!("process_id:{}", server.child.id());
            if eventually(Duration::from_secs(5), || {
                server.try_command(&["INFO", "server"]).is_some_and(|info| info.contains(&pid))
            }) {
                return server;
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        panic!("redis-server did not start");
    }

    /// Runs a command over raw RESP and returns the reply's first bytes.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap()
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python with the official `openai` SDK: `AIGW_SDK_PYTHON`, else the
/// venv `.ci/run` makes in `target/sdk-venv`.
pub fn sdk_python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("AIGW_SDK_PYTHON") {
        return std::path::PathBuf::from(p);
    }
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the openai SDK: run `python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install openai` (.ci/run does)"
    );
    venv
}

//! Access control end to end: gateway keys made with the real `aigw keys`
//! command, rate limits across both workers, budgets, the admin token.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use common::*;

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "aigw-access-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `aigw keys ...`; returns stdout (the key, for create).
fn keys_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aigw")).arg("keys").args(args).output().unwrap();
    assert!(out.status.success(), "aigw keys {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn create_key(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["create", "--file", file.to_str().unwrap(), "--name", "test"];
    args.extend_from_slice(extra);
    keys_cli(&args)
}

fn with_key(key: &str, body: &str) -> Vec<u8> {
    post_with("/mock/v1/chat/completions", body, &format!("Authorization: Bearer {key}\r\n"))
}

fn keyed_gateway(file: &Path, extra: &str, m: &aigw::mock::MockServer) -> Gateway {
    let toml = format!(
        "[auth]\nmode = \"keys\"\nkeys_file = \"{}\"\n{extra}\n{}",
        file.display(),
        provider("mock", "mock", m.addr)
    );
    Gateway::start("", &toml)
}

#[test]
fn key_lifecycle_create_use_revoke_expire() {
    let dir = temp_dir("keys");
    let file = dir.join("keys.toml");
    let m = mock();
    // The gateway starts before any key exists.
    let gw = keyed_gateway(&file, "", &m);
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT));
    assert_eq!((r.status, r.error_code()), (401, "missing_api_key".to_string()));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    let key = create_key(&file, &[]);
    assert!(key.starts_with("aigw-") && key.len() == 78, "{key}");
    assert!(!std::fs::read_to_string(&file).unwrap().contains(&key[14..]), "the file holds no plaintext key");
    // Picked up without a restart.
    assert!(eventually(Duration::from_secs(2), || roundtrip(gw.addr, &with_key(&key, CHAT)).status == 200));
    // Anthropic-style clients send x-api-key.
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", CHAT, &format!("x-api-key: {key}\r\n")));
    assert_eq!(r.status, 200);
    // The gateway key never goes upstream.
    let echo = roundtrip(gw.addr, &post_with("/mock/echo", "{}", &format!("Authorization: Bearer {key}\r\n"))).json();
    assert!(!echo.to_string().contains(&key[14..]), "{echo}");

    let wrong = format!("{}0000", &key[..key.len() - 4]);
    let r = roundtrip(gw.addr, &with_key(&wrong, CHAT));
    assert_eq!((r.status, r.error_code()), (401, "invalid_api_key".to_string()));

    // Revoked: refused within a second.
    let id = &key[5..13];
    keys_cli(&["revoke", "--file", file.to_str().unwrap(), id]);
    let revoked_at = Instant::now();
    // The watcher polls every 500 ms: a second, with room for a loaded CI.
    assert!(eventually(Duration::from_secs(3), || roundtrip(gw.addr, &with_key(&key, CHAT)).status == 401));
    assert!(revoked_at.elapsed() < Duration::from_secs(3));
    let listing = keys_cli(&["list", "--file", file.to_str().unwrap()]);
    assert!(listing.contains(id) && listing.contains("revoked"), "{listing}");

    // Expiry.
    let short = create_key(&file, &["--expires-in", "2s"]);
    assert!(eventually(Duration::from_secs(1), || roundtrip(gw.addr, &with_key(&short, CHAT)).status == 200));
    std::thread::sleep(Duration::from_millis(2100));
    let r = roundtrip(gw.addr, &with_key(&short, CHAT));
    assert_eq!((r.status, r.error_code()), (401, "expired_api_key".to_string()));

    // The log names the key, never the key itself.
    let mut logs = String::new();
    // Records reach the log thread with the worker's next flush (1 s).
    assert!(eventually(Duration::from_secs(5), || {
        logs = roundtrip(gw.admin, &get("/admin/logs?limit=1000")).json().to_string();
        logs.contains(&format!("\"client_key_id\":\"{id}\""))
    }));
    assert!(!logs.contains(&key[14..]));
}

#[test]
fn keys_limited_to_a_model_or_provider() {
    let dir = temp_dir("scope");
    let file = dir.join("keys.toml");
    let only_mini = create_key(&file, &["--model", "gpt-4o-mini"]);
    let only_other = create_key(&file, &["--provider", "other"]);
    let m = mock();
    let gw = keyed_gateway(&file, "", &m);
    assert_eq!(roundtrip(gw.addr, &with_key(&only_mini, CHAT)).status, 200);
    let big = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &with_key(&only_mini, big));
    assert_eq!((r.status, r.error_code()), (403, "permission_denied".to_string()));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    let r = roundtrip(gw.addr, &with_key(&only_other, CHAT));
    assert_eq!((r.status, r.error_code()), (403, "permission_denied".to_string()));
    assert_eq!(m.requests(), 1, "refused requests never reach the upstream");
}

#[test]
fn a_keys_guardrails_add_to_the_routes() {
    let dir = temp_dir("guard");
    let file = dir.join("keys.toml");
    let guarded = create_key(&file, &["--guardrail", "pii", "--guardrail", "pii"]);
    let plain = create_key(&file, &[]);
    let typo = create_key(&file, &["--guardrail", "pi"]);
    assert!(keys_cli(&["list", "--file", file.to_str().unwrap()]).contains("guardrails=pii"));
    let m = mock();
    let policy = "[guardrails.pii]\ndetectors = [\"email\"]\nrequest = \"redact\"\n";
    let gw = keyed_gateway(&file, policy, &m);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"write to jane@example.com"}]}"#;
    let sent = |key: &str| {
        let r = roundtrip(gw.addr, &post_with("/mock/echo", body, &format!("Authorization: Bearer {key}\r\n")));
        (r.status, r.json()["body"].as_str().map(str::to_string).unwrap_or_else(|| r.json().to_string()))
    };
    assert_eq!(sent(&guarded), (200, body.replace("jane@example.com", "[EMAIL]")));
    assert_eq!(sent(&plain), (200, body.to_string()));
    // A key naming a policy the config lacks is refused, not let through
    // unguarded; the upstream never sees it.
    let before = m.requests();
    let (status, err) = sent(&typo);
    assert_eq!(status, 403);
    assert!(err.contains("`pi`") && err.contains("permission_denied"), "{err}");
    assert_eq!(m.requests(), before);
    // The CLI refuses a name no policy could have.
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["keys", "create", "--file", file.to_str().unwrap(), "--name", "x", "--guardrail", "p i"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_limit_of_n_admits_exactly_n_of_a_burst_across_workers() {
    const N: usize = 20;
    let m = mock();
    // 20 per 20 s: one request back every second.
    let toml = format!(
        "[[rate_limits]]\nname = \"per-ip\"\nkey = \"ip\"\nlimit = {N}\nwindow = \"20s\"\n{}",
        provider("mock", "mock", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let addr = gw.addr;
    let threads: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..10)
                    .map(|_| {
                        c.send(&post("/mock/v1/chat/completions", CHAT));
                        c.read_response()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Response> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ok: Vec<_> = all.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<_> = all.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok.len(), limited.len()), (N, 9 * N), "exactly N of 10×N pass");
    for r in &ok {
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("20"));
        assert!(r.header("x-ratelimit-remaining-requests").is_some());
    }
    for r in &limited {
        assert_eq!(r.error_code(), "rate_limit_exceeded");
        assert_eq!(r.header("retry-after"), Some("1"), "one request comes back each second");
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    }
    assert_eq!(m.requests(), N as u64);
    // After Retry-After, one request passes again; the next one, sent
    // right behind it, is refused (unless a loaded machine held it back a
    // whole second, when the bucket has refilled one more).
    let mut passed_at = Instant::now();
    assert!(eventually(Duration::from_secs(5), || {
        passed_at = Instant::now();
        roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT)).status == 200
    }));
    let next = roundtrip(gw.addr, &post("/mock/v1/chat/completions", CHAT)).status;
    assert!(next == 429 || passed_at.elapsed() >= Duration::from_secs(1), "{next}");
    let mut text = String::new();
    assert!(eventually(Duration::from_secs(5), || {
        text = metrics_text(gw.admin);
        metric(&text, "aigw_ratelimited_total{rule=\"per-ip\"}") >= (9 * N) as f64
    }));
}

#[test]
fn token_limits_debit_what_the_tap_counted() {
    let m = mock();
    // 100 tokens a minute per x-team header; one answer is 16 output tokens
    // plus the prompt, and x-mock-tokens: 200 blows through the limit.
    let toml = format!(
        "[[rate_limits]]\nname = \"team-tokens\"\nkey = \"header:x-team\"\nunit = \"tokens\"\nlimit = 100\nwindow = \"60s\"\n{}",
        provider("mock", "mock", m.addr)
    );
    let gw = Gateway::start("", &toml);
    let send = |team: &str, tokens: u32| {
        roundtrip(
            gw.addr,
            &post_with("/mock/v1/chat/completions", CHAT, &format!("x-team: {team}\r\nx-mock-tokens: {tokens}\r\n")),
        )
    };
    let r = send("a", 200);
    assert_eq!((r.status, r.header("x-ratelimit-limit-tokens")), (200, Some("100")));
    let r = send("a", 1);
    assert_eq!((r.status, r.error_code()), (429, "rate_limit_exceeded".to_string()));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((60..=70).contains(&retry), "about a minute of debt: {retry}");
    assert_eq!(send("b", 1).status, 200, "other teams are not affected");
}

#[test]
fn token_limits_count_streams_with_analytics_off() {
    // Analytics off only stops recording: the tap still counts the tokens
    // a token limit debits, streams included (the gateway asks for the
    // usage chunk and strips it back out).
    let m = mock();
    let toml = format!(
        "[[rate_limits]]\nname = \"team-tokens\"\nkey = \"header:x-team\"\nunit = \"tokens\"\nlimit = 100\nwindow = \"60s\"\n{}",
        provider("mock", "mock", m.addr)
    );
    let gw = Gateway::start("analytics = false", &toml);
    let stream = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", stream, "x-team: a\r\nx-mock-tokens: 200\r\n"));
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("[DONE]") && !text.contains("\"usage\":{"), "the added usage chunk is stripped: {text}");
    let r = roundtrip(gw.addr, &post_with("/mock/v1/chat/completions", CHAT, "x-team: a\r\n"));
    assert_eq!((r.status, r.error_code()), (429, "rate_limit_exceeded".to_string()));
}

#[test]
fn budgets_stop_a_key_at_its_spend() {
    let dir = temp_dir("budget");
    let file = dir.join("keys.toml");
    // $1 per token, $200 a day: a few requests, then 429 budget_exceeded.
    let key = create_key(&file, &["--daily-usd", "200"]);
    let m = mock();
    let gw = keyed_gateway(&file, "[pricing.\"pricey\"]\ninput = 1000000.0\noutput = 1000000.0\n", &m);
    let body = r#"{"model":"pricey","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut passed = 0;
    let refusal = loop {
        let r = roundtrip(gw.addr, &with_key(&key, body));
        if r.status != 200 {
            break r;
        }
        passed += 1;
        assert!(passed < 50, "the budget never stopped the key");
    };
    assert_eq!((refusal.status, refusal.error_code()), (429, "budget_exceeded".to_string()));
    assert!(refusal.header("retry-after").unwrap().parse::<u64>().unwrap() <= 86_400);
    // Every admitted request cost 16 output + 8 prompt tokens = $24, and
    // was reserved at its estimate first, so the spend stayed within $200.
    // The records arrive on the log thread: wait until all are there.
    let mut logs = serde_json::Value::Null;
    assert!(eventually(Duration::from_secs(10), || {
        logs = roundtrip(gw.admin, &get("/admin/logs?limit=100&status=200")).json();
        logs["data"].as_array().is_some_and(|d| d.len() == passed)
    }));
    let spent: f64 = logs["data"].as_array().unwrap().iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    assert!(passed >= 3 && spent > 0.0 && spent <= 200.0, "passed {passed}, spent {spent}");
}

#[test]
fn admin_token_guards_everything_but_health() {
    let m = mock();
    // The token goes to the child process only, not this test's environment.
    let var = format!("AIGW_TEST_ADMIN_TOKEN_{}", std::process::id());
    let gw = {
        let toml = format!("[auth]\nadmin_token_env = \"{var}\"\n{}", provider("mock", "mock", m.addr));
        Binary::serve(
            &format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 1\npin_workers = false\n{toml}"
            ),
            &[(&var, "s3cret-token")],
        )
    };
    let metrics = |auth: &str| {
        let raw = format!("GET /metrics HTTP/1.1\r\nHost: a\r\n{auth}\r\n");
        roundtrip(gw.admin, raw.as_bytes()).status
    };
    assert_eq!(metrics(""), 401);
    assert_eq!(metrics("Authorization: Bearer wrong\r\n"), 401);
    assert_eq!(metrics("Authorization: Bearer s3cret-token\r\n"), 200);
    assert_eq!(roundtrip(gw.admin, &get("/healthz")).status, 200);
    // The dashboard page is open; the stats it reads are not.
    let page = roundtrip(gw.admin, &get("/dashboard"));
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert!(String::from_utf8_lossy(&page.body).contains("fetch(\"/admin/stats\""));
    assert_eq!(roundtrip(gw.admin, &get("/admin/stats")).status, 401);
    let raw = b"POST /admin/cache/purge HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(roundtrip(gw.admin, raw).status, 401);
}

#[test]
fn budgets_price_the_model_that_is_served() {
    let dir = temp_dir("target-price");
    let file = dir.join("keys.toml");
    let key = create_key(&file, &["--daily-usd", "100"]);
    let m = mock();
    // A route named "cheap" whose target serves "pricey" at $1 a token: a
    // request capped at 200 output tokens may cost $200+, so a $100 budget
    // refuses it before anything goes upstream (it used to reserve at the
    // price of "cheap": nothing).
    let extra = "[pricing.\"pricey\"]\ninput = 1000000.0\noutput = 1000000.0\n[routes.cheap]\ntargets = [{ provider = \"mock\", model = \"pricey\" }]\n";
    let gw = keyed_gateway(&file, extra, &m);
    let auth = format!("Authorization: Bearer {key}\r\n");
    let body = r#"{"model":"cheap","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", body, &auth));
    assert_eq!((r.status, r.error_code()), (429, "budget_exceeded".to_string()));
    let body = r#"{"model":"mock/pricey","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &post_with("/v1/chat/completions", body, &auth));
    assert_eq!((r.status, r.error_code()), (429, "budget_exceeded".to_string()));
    assert_eq!(m.requests(), 0);
}

#[test]
fn unpriced_models_follow_the_keys_choice() {
    let dir = temp_dir("unpriced");
    let file = dir.join("keys.toml");
    let allow = create_key(&file, &["--daily-usd", "100"]);
    let deny = create_key(&file, &["--daily-usd", "100", "--deny-unpriced"]);
    assert!(keys_cli(&["list", "--file", file.to_str().unwrap()]).contains("on_unpriced=deny"));
    let m = mock();
    let gw = keyed_gateway(&file, "", &m);
    let body = r#"{"model":"no-such-price","messages":[{"role":"user","content":"hi"}]}"#;
    let r = roundtrip(gw.addr, &with_key(&deny, body));
    assert_eq!((r.status, r.error_code()), (403, "model_not_priced".to_string()));
    let r = roundtrip(gw.addr, &with_key(&allow, body));
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(5), || {
        metric(&metrics_text(gw.admin), "aigw_unpriced_requests_total{model=\"no-such-price\"}") == 1.0
    }));
}

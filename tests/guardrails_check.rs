//! Remote checks (`check_with`) end to end: the mock answers
//! `/v1/moderations` and, for a model named like a guard, as a Llama Guard
//! classifier; texts with `mock-unsafe` are flagged, `mock-slow-check`
//! answers after 2 s, `mock-failing-check` gets a 500.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use aigw::config::Config;
use common::*;

const POLICIES: &str = r#"
[guardrails.mod]
check_with = "guard"
timeout = "800ms"

[guardrails.strict]
check_with = "guard"
timeout = "300ms"
on_error = "block"

[guardrails.llama]
check_with = "guard"
check_api = "chat"
check_model = "llama-guard-3-8b"

[guardrails.watch]
check_with = "guard"
request = "flag"

[guardrails.routed]
check_with = "guards"

[routes.guards]
targets = [{ provider = "down" }, { provider = "guard" }]
"#;

fn start(mock: &aigw::mock::MockServer) -> Gateway {
    let mut toml = provider("guard", "mock", mock.addr);
    // Nothing listens on port 1: a route's first target that refuses.
    toml.push_str(&provider("down", "mock", "127.0.0.1:1".parse().unwrap()));
    for (name, policy) in
        [("mock", "mod"), ("strict", "strict"), ("llama", "llama"), ("flagged", "watch"), ("via", "routed")]
    {
        toml.push_str(&format!("{}guardrails = [\"{policy}\"]\n", provider(name, "mock", mock.addr)));
    }
    Gateway::start("", &format!("{toml}{POLICIES}"))
}

fn chat(text: &str, stream: bool) -> String {
    format!(r#"{{"model":"m","stream":{stream},"messages":[{{"role":"user","content":"{text}"}}]}}"#)
}

fn metric_of(gw: &Gateway, policy: &str, detector: &str, action: &str) -> f64 {
    let line = format!(
        "aigw_guardrail_actions_total{{policy=\"{policy}\",detector=\"{detector}\",action=\"{action}\",direction=\"request\"}}"
    );
    metric(&metrics_text(gw.admin), &line)
}

#[test]
fn flagged_requests_are_refused_before_any_of_the_answer_goes_out() {
    let mock = mock();
    let gw = start(&mock);
    // Passed: the answer, streamed or not.
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("hello there", false)));
    assert_eq!(r.status, 200);
    let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("hello there", true)));
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
    // Flagged: 400 and nothing of the answer, though the upstream was
    // asked at the same time as the check (the mock saw both).
    for stream in [false, true] {
        let before = mock.requests();
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat("please MOCK-UNSAFE stuff", stream)));
        assert_eq!((r.status, r.error_code()), (400, "content_blocked".to_string()), "stream {stream}");
        let v = r.json();
        assert_eq!(v["error"]["param"], "mod");
        assert!(v["error"]["message"].as_str().unwrap().contains("moderation"), "{v}");
        assert_eq!(mock.requests() - before, 2, "the check and the upstream call");
    }
    // The Messages API gets Anthropic's error shape.
    let anth = r#"{"model":"claude","max_tokens":8,"messages":[{"role":"user","content":"mock-unsafe"}]}"#;
    let r = roundtrip(gw.addr, &post("/mock/v1/messages", anth));
    assert_eq!((r.status, r.json()["type"].as_str()), (400, Some("error")));
    // A classifier on a chat model (Llama Guard's "unsafe").
    let r = roundtrip(gw.addr, &post("/llama/v1/chat/completions", &chat("mock-unsafe", true)));
    assert_eq!((r.status, r.error_code()), (400, "content_blocked".to_string()));
    assert_eq!(roundtrip(gw.addr, &post("/llama/v1/chat/completions", &chat("hi", false))).status, 200);
    // A route as check_with: its targets in order, past one that refuses.
    let r = roundtrip(gw.addr, &post("/via/v1/chat/completions", &chat("mock-unsafe", false)));
    assert_eq!((r.status, r.error_code()), (400, "content_blocked".to_string()));
    assert_eq!(roundtrip(gw.addr, &post("/via/v1/chat/completions", &chat("fine", false))).status, 200);
    // flag: through, and counted.
    let r = roundtrip(gw.addr, &post("/flagged/v1/chat/completions", &chat("mock-unsafe", false)));
    assert_eq!(r.status, 200);
    assert!(eventually(Duration::from_secs(10), || {
        metric_of(&gw, "watch", "moderation", "flag") == 1.0
            && metric_of(&gw, "mod", "moderation", "block") == 3.0
            && metric_of(&gw, "llama", "moderation", "block") == 1.0
    }));
}

#[test]
fn a_slow_or_failing_check_is_decided_by_on_error() {
    let mock = mock();
    let gw = start(&mock);
    // on_error = allow: answered, the failure counted as a flag.
    for text in ["mock-slow-check", "mock-failing-check"] {
        let t = Instant::now();
        let r = roundtrip(gw.addr, &post("/mock/v1/chat/completions", &chat(text, true)));
        assert_eq!(r.status, 200, "{text}");
        assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
        // Not held for the 2 s the slow check would take.
        assert!(t.elapsed() < Duration::from_millis(1900), "{text}: {:?}", t.elapsed());
    }
    // on_error = block: refused, before any of the stream.
    for text in ["mock-slow-check", "mock-failing-check"] {
        let r = roundtrip(gw.addr, &post("/strict/v1/chat/completions", &chat(text, true)));
        assert_eq!((r.status, r.error_code()), (400, "content_blocked".to_string()), "{text}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("check"), "{}", r.json());
    }
    assert!(eventually(Duration::from_secs(10), || {
        metric_of(&gw, "mod", "moderation_error", "flag") == 2.0
            && metric_of(&gw, "strict", "moderation_error", "block") == 2.0
    }));
}

#[test]
fn config_errors_name_the_key() {
    let base = "[server]\n[providers.m]\nkind = \"mock\"\n[providers.a]\nkind = \"anthropic\"\n";
    for (extra, key, says) in [
        ("[guardrails.p]\ncheck_with = \"nope\"\n", "guardrails.p.check_with", "no provider or route"),
        (
            "[routes.r]\ntargets = [{ provider = \"m\" }, { provider = \"a\" }]\n[guardrails.p]\ncheck_with = \"r\"\n",
            "guardrails.p.check_with",
            "OpenAI",
        ),
        ("[guardrails.p]\ncheck_with = \"a\"\n", "guardrails.p.check_with", "OpenAI"),
        ("[guardrails.p]\ncheck_with = \"m\"\ncheck_api = \"chat\"\n", "guardrails.p.check_model", "classifier"),
        ("[guardrails.p]\ncheck_with = \"m\"\ntimeout = \"0s\"\n", "guardrails.p.timeout", "above 0"),
        ("[guardrails.p]\ncheck_with = \"m\"\non_error = \"maybe\"\n", "guardrails.p.on_error", "allow, block"),
        ("[guardrails.p]\ncheck_with = \"m\"\nrequest = \"redact\"\n", "guardrails.p.request", "blocks, flags"),
        ("[guardrails.p]\ndetectors = [\"email\"]\ntimeout = \"1s\"\n", "guardrails.p.timeout", "check_with"),
    ] {
        let toml = format!("{base}{extra}");
        let e = Config::from_toml(&toml).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(says), "{toml}\n→ {e}");
    }
}

#[test]
fn the_openai_sdk_sees_a_flagged_request_refused_and_its_own_values_restored() {
    let python = sdk_python();
    let mock = mock();
    let toml = format!(
        "{}{}{}guardrails = [\"mod\", \"pseudo\"]\n{POLICIES}\
         [guardrails.pseudo]\ndetectors = [\"email\"]\nrequest = \"pseudonymize\"\n",
        provider("guard", "mock", mock.addr),
        provider("down", "mock", "127.0.0.1:1".parse().unwrap()),
        provider("mock", "mock", mock.addr),
    );
    let gw = Gateway::start("", &toml);
    let script = r#"
import sys, openai
c = openai.OpenAI(base_url=sys.argv[1], api_key="x")
try:
    c.chat.completions.create(model="mock/m", messages=[{"role": "user", "content": "mock-unsafe"}], stream=True)
    print("not refused")
except openai.BadRequestError as e:
    print("refused", e.status_code, e.code, e.param)
# The model answers with the placeholder it was given; the client reads its own address.
out = ""
for ch in c.chat.completions.create(model="mock/m", messages=[{"role": "user", "content": "mail jane@corp.example"}],
                                    stream=True, extra_headers={"x-mock-content": "Sent%20to%20[EMAIL_1]."}):
    for choice in ch.choices:
        out += choice.delta.content or ""
print(out)
"#;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(format!("http://{}/v1", gw.addr))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["refused 400 content_blocked mod", "Sent to jane@corp.example."]);
}

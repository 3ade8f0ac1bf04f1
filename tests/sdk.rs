//! The official `openai` Python SDK against the unified endpoint, for an
//! OpenAI-kind upstream, an Anthropic one and a Gemini one (all the
//! built-in mock):
//! chat, stream, tools — every response and chunk must parse in the SDK.
//!
//! Needs a Python with `openai` installed: `.ci/run` makes
//! `target/sdk-venv`; `AIGW_SDK_PYTHON` points elsewhere.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{path::PathBuf, process::Command};

use common::*;

#[test]
fn openai_sdk_against_openai_anthropic_and_gemini_upstreams() {
    let m = mock();
    let toml = format!(
        "{}{}{}[routes.claude]\ntargets = [{{ provider = \"anth\", model = \"claude-x\" }}]\n",
        provider("mock", "mock", m.addr),
        provider("anth", "anthropic", m.addr),
        provider("gem", "gemini", m.addr),
    );
    let gw = Gateway::start("", &toml);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_sdk.py");
    for model in ["mock/gpt-4o-mini", "anth/claude-x", "claude", "gem/gemini-x"] {
        let out =
            Command::new(sdk_python()).arg(&script).arg(format!("http://{}/v1", gw.addr)).arg(model).output().unwrap();
        assert!(
            out.status.success(),
            "{model}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

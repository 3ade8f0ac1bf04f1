use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::{config, guardrails::detect::Builtin};

fn guard(response: Action, format: StreamFormat) -> StreamGuard {
    // Compiling the detectors is the slow part: once per action.
    static COMPILED: std::sync::Mutex<Vec<(Action, Arc<Guardrails>)>> = std::sync::Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().unwrap();
    if let Some((_, g)) = compiled.iter().find(|(a, _)| *a == response) {
        return StreamGuard::new(g.clone(), vec![0], format);
    }
    let p = config::Policy {
        name: "pii".into(),
        detectors: Builtin::ALL.to_vec(),
        patterns: vec![("employee_id".into(), r"EMP-\d{6}".into())],
        words: vec!["project aurora".into()],
        injection: None,
        moderation: None,
        request: Action::Off,
        response,
    };
    let g = Arc::new(Guardrails::new(&[p], &[]).unwrap());
    compiled.push((response, g.clone()));
    StreamGuard::new(g, vec![0], format)
}

fn one_shot(text: &str) -> String {
    let det = Detector::new(&Builtin::ALL, &[("employee_id".into(), r"EMP-\d{6}".into())], &["project aurora".into()])
        .unwrap();
    let mut f = Vec::new();
    det.find(text, &mut f);
    crate::guardrails::redact(text, &f, &det)
}

use crate::guardrails::detect::Detector;

/// A stream in `format` carrying these text deltas, as a provider sends it.
fn stream(format: StreamFormat, deltas: &[&str]) -> String {
    let q = |s: &str| Value::from(s).to_string();
    let mut out = String::new();
    match format {
        StreamFormat::OpenAiChat => {
            let chunk = |delta: &str, finish: &str| {
                format!(
                    "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
                )
            };
            out.push_str(&chunk(r#"{"role":"assistant","content":""}"#, "null"));
            for d in deltas {
                out.push_str(&chunk(&format!(r#"{{"content":{}}}"#, q(d)), "null"));
            }
            out.push_str(&chunk("{}", "\"stop\""));
            out.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n");
        }
        StreamFormat::Anthropic => {
            out.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n");
            out.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            for d in deltas {
                out.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n", q(d)));
            }
            out.push_str("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
            out.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n");
            out.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
        StreamFormat::Gemini => {
            for (i, d) in deltas.iter().enumerate() {
                let finish = if i + 1 == deltas.len() { ",\"finishReason\":\"STOP\"" } else { "" };
                out.push_str(&format!("data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":{}}}]}}{finish},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":1}}}}\r\n\r\n", q(d)));
            }
        }
        StreamFormat::OpenAiResponses => {
            out.push_str("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r1\",\"status\":\"in_progress\",\"output\":[]}}\n\n");
            for d in deltas {
                out.push_str(&format!("event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":{}}}\n\n", q(d)));
            }
            let all = q(&deltas.concat());
            out.push_str(&format!("event: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"output_index\":0,\"content_index\":0,\"text\":{all}}}\n\n"));
            out.push_str(&format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"r1\",\"status\":\"completed\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":{all}}}]}}],\"usage\":{{\"input_tokens\":1}}}}}}\n\n"));
        }
    }
    out
}

/// The events of a stream: (name, data JSON or text).
fn events_of(s: &str) -> Vec<(String, String)> {
    s.replace("\r\n", "\n")
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Vec::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (name, data.join("\n"))
        })
        .collect()
}

/// The text the client's SDK shows, and the answer's finish.
fn client_view(format: StreamFormat, s: &str) -> (String, String) {
    let mut text = String::new();
    let mut finish = String::new();
    for (name, data) in events_of(s) {
        let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
        match format {
            StreamFormat::OpenAiChat => {
                for c in v["choices"].as_array().unwrap() {
                    text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
                    if let Some(f) = c["finish_reason"].as_str() {
                        finish = f.into();
                    }
                }
            }
            StreamFormat::Anthropic => {
                text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
                if let Some(f) = v["delta"]["stop_reason"].as_str() {
                    finish = f.into();
                }
            }
            StreamFormat::Gemini => {
                text.push_str(v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or(""));
                if let Some(f) = v["candidates"][0]["finishReason"].as_str() {
                    finish = f.into();
                }
            }
            StreamFormat::OpenAiResponses => {
                if name == "response.output_text.delta" {
                    text.push_str(v["delta"].as_str().unwrap());
                }
                if name == "response.output_text.done" {
                    assert_eq!(v["text"].as_str().unwrap(), text, "done repeats the deltas");
                }
                if name.starts_with("response.") && v["response"]["status"].is_string() {
                    finish = v["response"]["status"].as_str().unwrap().into();
                }
            }
        }
    }
    (text, finish)
}

const FORMATS: [StreamFormat; 4] =
    [StreamFormat::OpenAiChat, StreamFormat::Anthropic, StreamFormat::Gemini, StreamFormat::OpenAiResponses];

/// How each format says an answer was stopped by a safety system.
const SAFETY_FINISHES: [(StreamFormat, &str); 4] = [
    (StreamFormat::OpenAiChat, "content_filter"),
    (StreamFormat::Anthropic, "refusal"),
    (StreamFormat::Gemini, "SAFETY"),
    (StreamFormat::OpenAiResponses, "incomplete"),
];

fn run(g: &mut StreamGuard, input: &str, cuts: &[usize]) -> String {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts.iter().chain([input.len()].iter()) {
        g.feed(&input.as_bytes()[at..c], &mut out);
        at = c;
    }
    g.finish(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn a_finding_split_anywhere_is_redacted_in_every_format() {
    let text = "Mail jane.doe@example.com, card 4111 1111 1111 1111 now.";
    let want = one_shot(text);
    assert_eq!(want, "Mail [EMAIL], card [CREDIT_CARD] now.");
    for format in FORMATS {
        // The finding split between two deltas at every char.
        for cut in (1..text.len()).filter(|&i| text.is_char_boundary(i)) {
            let input = stream(format, &[&text[..cut], &text[cut..]]);
            let out = run(&mut guard(Action::Redact, format), &input, &[]);
            let (got, _) = client_view(format, &out);
            assert_eq!(got, want, "{format:?} delta cut at {cut}:\n{out}");
        }
        // The bytes of the stream split at every offset, word deltas.
        let words: Vec<String> = text.split_inclusive(' ').map(String::from).collect();
        let deltas: Vec<&str> = words.iter().map(String::as_str).collect();
        let input = stream(format, &deltas);
        for cut in 1..input.len() {
            let mut g = guard(Action::Redact, format);
            let out = run(&mut g, &input, &[cut]);
            assert_eq!(client_view(format, &out).0, want, "{format:?} byte cut at {cut}");
            let total: u32 = g.events().iter().map(|e| e.count).sum();
            assert_eq!(total, 2, "{format:?}");
        }
    }
}

#[test]
fn clean_streams_pass_unchanged_but_for_the_hold() {
    for format in FORMATS {
        let input = stream(format, &["The", " quick", " brown", " fox."]);
        let out = run(&mut guard(Action::Redact, format), &input, &[]);
        assert_eq!(client_view(format, &out), client_view(format, &input), "{format:?}");
        // Flag changes nothing at all, and counts.
        let input = stream(format, &["a@b.co", "m x"]);
        let mut g = guard(Action::Flag, format);
        let out = run(&mut g, &input, &[]);
        assert_eq!(out, input, "{format:?}");
        assert_eq!(g.events().len(), 1);
    }
}

#[test]
fn block_ends_the_answer_the_provider_way() {
    for (format, want) in SAFETY_FINISHES {
        let input = stream(format, &["Sure: write", " to jane@", "example.com", " or", " call."]);
        let mut g = guard(Action::Block, format);
        let out = run(&mut g, &input, &[]);
        let (text, finish) = client_view(format, &out);
        assert_eq!(text, "Sure: write to ", "{format:?}:\n{out}");
        assert_eq!(finish, want, "{format:?}:\n{out}");
        assert!(g.blocked.is_some());
        assert!(!out.contains("jane"), "{format:?}");
        match format {
            StreamFormat::OpenAiChat => {
                assert!(out.ends_with("data: [DONE]\n\n"));
                assert!(out.contains("\"usage\""), "the usage chunk still goes out");
                assert_eq!(out.matches("finish_reason\":\"").count(), 1, "{out}");
            }
            StreamFormat::Anthropic => {
                assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
                assert_eq!(out.matches("content_block_stop").count(), 2, "one stop event:\n{out}");
            }
            StreamFormat::OpenAiResponses => {
                assert!(out.contains("event: response.incomplete"));
                assert!(out.contains("content_filter"));
            }
            StreamFormat::Gemini => {}
        }
    }
}

#[test]
fn a_block_found_when_a_channel_closes_ends_the_answer_once() {
    for (format, want) in SAFETY_FINISHES {
        // The email is only final when the text ends.
        let input = stream(format, &["Mail", " jane@example.co", "m"]);
        let mut g = guard(Action::Block, format);
        let out = run(&mut g, &input, &[]);
        assert!(g.blocked.is_some(), "{format:?}");
        assert!(!out.contains("jane"), "{format:?}:\n{out}");
        let (text, finish) = client_view(format, &out);
        assert_eq!((text.as_str(), finish.as_str()), ("Mail ", want), "{format:?}:\n{out}");
        let finishes = match format {
            StreamFormat::OpenAiChat => out.matches("\"finish_reason\":\"").count(),
            StreamFormat::Anthropic => out.matches("\"stop_reason\":\"").count(),
            StreamFormat::Gemini => out.matches("\"finishReason\"").count(),
            StreamFormat::OpenAiResponses => out.matches("event: response.incomplete").count(),
        };
        assert_eq!(finishes, 1, "{format:?}:\n{out}");
        if format == StreamFormat::Anthropic {
            assert_eq!(out.matches("event: content_block_stop").count(), 1, "{out}");
        }
    }
}

#[test]
fn channels_are_bounded_whatever_the_upstream_sends() {
    let mut g = guard(Action::Redact, StreamFormat::OpenAiChat);
    let mut out = Vec::new();
    for i in 0..10_000 {
        let chunk =
            format!("data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"mail a{i}@b.co x\"}}}}]}}\n\n");
        g.feed(chunk.as_bytes(), &mut out);
    }
    assert!(g.chans.len() <= MAX_CHANNELS && g.choices.len() <= MAX_CHANNELS);
    g.finish(&mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("@b.co"), "every channel's text is redacted, held or not");
}

/// A guard that restores `map` after a redact policy whose request side
/// pseudonymizes.
fn restoring_guard(format: StreamFormat, map: &Arc<crate::guardrails::pseudonym::Pseudonyms>) -> StreamGuard {
    static G: std::sync::OnceLock<Arc<Guardrails>> = std::sync::OnceLock::new();
    let g = G.get_or_init(|| {
        let p = config::Policy {
            name: "pii".into(),
            detectors: vec![Builtin::Email],
            patterns: Vec::new(),
            words: Vec::new(),
            injection: None,
            moderation: None,
            request: Action::Pseudonymize,
            response: Action::Redact,
        };
        Arc::new(Guardrails::new(&[p], &[]).unwrap())
    });
    StreamGuard::new(g.clone(), vec![0], format).restoring(map.clone())
}

#[test]
fn placeholders_split_anywhere_come_back_and_are_not_redacted_again() {
    let mut map = crate::guardrails::pseudonym::Pseudonyms::default();
    assert_eq!(map.placeholder("EMAIL", "jane@corp.example"), "[EMAIL_1]");
    assert_eq!(map.placeholder("EMAIL", "bob@corp.example"), "[EMAIL_2]");
    let map = Arc::new(map);
    // The model's own email is redacted; the restored ones are the user's.
    let text = "Reply to [EMAIL_2] and [EMAIL_1], not x@y.io; [EMAIL_3] [EMAIL] stay.";
    let want = "Reply to bob@corp.example and jane@corp.example, not [EMAIL]; [EMAIL_3] [EMAIL] stay.";
    for format in FORMATS {
        for cut in 1..text.len() {
            let input = stream(format, &[&text[..cut], &text[cut..]]);
            let out = run(&mut restoring_guard(format, &map), &input, &[]);
            assert_eq!(client_view(format, &out).0, want, "{format:?} delta cut at {cut}:\n{out}");
        }
        // One char per delta, the stream's bytes cut at every offset.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let deltas: Vec<&str> = chars.iter().map(String::as_str).collect();
        let input = stream(format, &deltas);
        for cut in (1..input.len()).step_by(7) {
            let mut g = restoring_guard(format, &map);
            let out = run(&mut g, &input, &[cut]);
            assert_eq!(client_view(format, &out).0, want, "{format:?} byte cut at {cut}");
            // Only the model's own email counts as a finding.
            assert_eq!(g.events().iter().map(|e| e.count).sum::<u32>(), 1, "{format:?}");
        }
    }
}

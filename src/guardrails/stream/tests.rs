use super::*;
use crate::guardrails::{
    detect::{Builtin, Detector},
    redact,
};

fn detector() -> Detector {
    let custom = vec![("employee_id".to_string(), r"EMP-\d{6}".to_string())];
    Detector::new(&Builtin::ALL, &custom, &["project aurora".to_string()]).unwrap()
}

fn one_shot(det: &Detector, text: &str) -> String {
    let mut f = Vec::new();
    det.find(text, &mut f);
    redact(text, &f, det)
}

/// The text fed in the given pieces, then finished.
fn streamed(det: &Detector, pieces: &[&str]) -> (String, Vec<String>) {
    let mut live = LiveText::new(Mode::Redact, det.kinds.len());
    let mut out = String::new();
    let mut steps = Vec::new();
    for p in pieces {
        let before = out.len();
        live.push(det, p, &mut out);
        steps.push(out[before..].to_string());
    }
    live.finish(det, &mut out);
    (out, steps)
}

const TEXTS: &[&str] = &[
    "Write to jane.doe@example.com or call +1 415 555 2671 today.",
    "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789.",
    "Server 10.0.0.1 and 2001:db8::8a2e:370:7334, but version 1.2.3.4.5 stays.",
    "key sk-proj-abcdefghijklmnopqrstuvwxyz012345 and Bearer abcdefghijklmnopqrstuv.",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nthen EMP-123456 on project  Aurora.",
    "cut -----BEGIN PRIVATE KEY-----\nMIIE 415-555-2671 never ends",
    "ünïcödé ✓ mail ü@b.co é 4111111111111111 ñ",
    "order 12345678901234 on 2024-01-02 at 10:30, v1.2.3",
];

#[test]
fn every_split_gives_the_whole_text_redaction() {
    let det = detector();
    for text in TEXTS {
        let want = one_shot(&det, text);
        let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &a in &bounds {
            let (got, _) = streamed(&det, &[&text[..a], &text[a..]]);
            assert_eq!(got, want, "split at {a} of {text:?}");
            for &b in bounds.iter().filter(|&&b| b >= a) {
                let (got, _) = streamed(&det, &[&text[..a], &text[a..b], &text[b..]]);
                assert_eq!(got, want, "split at {a},{b} of {text:?}");
            }
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(streamed(&det, &pieces).0, want, "char by char: {text:?}");
    }
}

#[test]
fn prose_is_held_back_by_at_most_a_word() {
    let det = detector();
    let words = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."];
    let (out, steps) = streamed(&det, &words);
    assert_eq!(out, words.concat());
    // After each word, everything but the last word (and what is glued
    // to it: "dog." could still become "dog.x@y.io") is out.
    for i in 1..words.len() {
        let released = steps[..=i].concat();
        assert!(released.len() >= words[..i - 1].concat().len(), "step {i}: {released:?}");
    }
    assert_eq!(steps[1], "The ");
}

#[test]
fn a_partial_finding_is_held_then_redacted() {
    let det = detector();
    let (out, steps) = streamed(&det, &["mail jane", ".doe@exam", "ple.com now", " ok"]);
    assert_eq!(out, "mail [EMAIL] now ok");
    assert!(!steps.concat().contains("jane"));
    assert_eq!(steps[0], "mail ");
}

#[test]
fn a_long_key_block_is_dropped_as_it_arrives() {
    let det = detector();
    let mut live = LiveText::new(Mode::Redact, det.kinds.len());
    let mut out = String::new();
    live.push(&det, "key: -----BEGIN PRIVATE KEY-----\n", &mut out);
    for _ in 0..10_000 {
        live.push(&det, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n", &mut out);
        assert!(live.held() < 64);
    }
    live.push(&det, "-----END PRIVATE KEY----- done", &mut out);
    live.finish(&det, &mut out);
    assert_eq!(out, "key: [SECRET] done");
}

#[test]
fn holding_is_bounded() {
    let det = detector();
    let mut live = LiveText::new(Mode::Redact, det.kinds.len());
    let mut out = String::new();
    // A never-ending candidate (a secret's alphabet).
    live.push(&det, "sk-", &mut out);
    for _ in 0..100_000 {
        live.push(&det, "abcdefgh", &mut out);
        assert!(live.held() <= MAX_HOLD + 8);
    }
    live.finish(&det, &mut out);
    assert!(out.starts_with("[SECRET]"));
}

#[test]
fn block_mode_stops_before_the_first_finding() {
    let det = detector();
    let mut live = LiveText::new(Mode::Block, det.kinds.len());
    let mut out = String::new();
    for p in ["Sure, write to ", "jane@", "example.com", " and more text"] {
        live.push(&det, p, &mut out);
    }
    live.finish(&det, &mut out);
    assert!(live.blocked);
    assert_eq!(out, "Sure, write to ");
    assert_eq!(live.counts.iter().sum::<u32>(), 1);
}

/// Random texts from fragments that make and break findings, cut at random
/// places: always the whole-text redaction (the fuzz target's property,
/// run here on every test).
#[test]
fn random_texts_and_cuts_match_the_whole_text() {
    // 200,000 rounds of three seeds (lengths up to 100 fragments) passed in
    // release; the suite runs a few thousand.
    const ROUNDS: usize = 3_000;
    const FRAGMENTS: &[&str] = &[
        " ",
        "  ",
        "\n",
        "a",
        "jane",
        ".",
        "@",
        "example",
        ".com",
        "+1",
        " 415",
        " 555",
        " 2671",
        "-",
        "4111",
        " 1111",
        "0",
        "9",
        "10.0.0.",
        "1",
        ":",
        "2001:db8::",
        "sk-",
        "abcdefghij",
        "KLMNOPQRST",
        "Bearer ",
        "EMP-",
        "123456",
        "project",
        " aurora",
        "Project  Aurora",
        "-----BEGIN PRIVATE KEY-----",
        "-----END PRIVATE KEY-----",
        "-----",
        "DE89",
        " 3704 0044 0532 0130 00",
        "123-45-",
        "6789",
        "é",
        "✓",
        "(415)",
        ")",
        "eyJhbGciOi",
        "eyJzdWIi",
    ];
    let det = detector();
    let mut seed = 0x0BAD_5EED_0DDB_A11Fu64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..ROUNDS {
        let len = 1 + next(60);
        let text: String = (0..len).map(|_| FRAGMENTS[next(FRAGMENTS.len())]).collect();
        let bounds: Vec<usize> = (1..text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        let mut cuts: Vec<usize> =
            (0..next(6)).filter_map(|_| bounds.get(next(bounds.len().max(1))).copied()).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([text.len()].iter()) {
            pieces.push(&text[at..c]);
            at = c;
        }
        assert_eq!(streamed(&det, &pieces).0, one_shot(&det, &text), "pieces {pieces:?}");
    }
}

use super::*;
use crate::guardrails::detect::Builtin;

fn policy(name: &str, detectors: &[Builtin], request: Action) -> config::Policy {
    config::Policy {
        name: name.into(),
        detectors: detectors.to_vec(),
        patterns: Vec::new(),
        words: Vec::new(),
        injection: None,
        moderation: None,
        request,
        response: Action::Off,
    }
}

fn body_of(v: &Verdict<'_>) -> String {
    match v {
        Verdict::Pass { body, .. } => String::from_utf8(body.to_vec()).unwrap(),
        other => panic!("not a pass: {other:?}"),
    }
}

#[test]
fn redacts_only_the_strings_with_findings() {
    let g = Guardrails::new(&[policy("pii", &[Builtin::Email, Builtin::CreditCard], Action::Redact)], &[]).unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"mail jane@example.com, card 4111 1111 1111 1111"},{"role":"assistant","content":"ok"}],"metadata":{"to":"boss@example.com"}}"#;
    let v = g.check_request(&g.select([], &[]).unwrap(), body.as_bytes());
    // No policy selected: untouched, borrowed.
    assert!(matches!(&v, Verdict::Pass { body: Cow::Borrowed(_), events, .. } if events.is_empty()));
    let sel = g.select([&["pii".to_string()][..]], &[]).unwrap();
    let v = g.check_request(&sel, body.as_bytes());
    assert_eq!(
        body_of(&v),
        r#"{"model":"m","messages":[{"role":"user","content":"mail [EMAIL], card [CREDIT_CARD]"},{"role":"assistant","content":"ok"}],"metadata":{"to":"boss@example.com"}}"#
    );
    let Verdict::Pass { events, .. } = v else { unreachable!() };
    let got: Vec<(&str, u32)> = events.iter().map(|e| (&*e.detector, e.count)).collect();
    assert_eq!(got, [("email", 1), ("credit_card", 1)]);
}

#[test]
fn a_clean_body_is_forwarded_byte_identical() {
    let g = Guardrails::new(&[policy("pii", &Builtin::ALL, Action::Redact)], &["pii".into()]).unwrap();
    let body = "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"caf\\u00e9 at 10:30, order 4155552671\"} ] }";
    let v = g.check_request(&g.select([], &[]).unwrap(), body.as_bytes());
    assert!(
        matches!(v, Verdict::Pass { body: Cow::Borrowed(b), ref events, .. } if b == body.as_bytes() && events.is_empty())
    );
}

#[test]
fn escaped_findings_are_found_and_rewritten() {
    let g = Guardrails::new(&[policy("pii", &[Builtin::Email], Action::Redact)], &["pii".into()]).unwrap();
    let body = r#"{"messages":[{"role":"user","content":"jane\u0040example.com \"quoted\""}]}"#;
    let v = g.check_request(&g.select([], &[]).unwrap(), body.as_bytes());
    assert_eq!(body_of(&v), r#"{"messages":[{"role":"user","content":"[EMAIL] \"quoted\""}]}"#);
}

#[test]
fn block_names_policy_and_detector_and_flag_changes_nothing() {
    let g = Guardrails::new(
        &[policy("flagger", &[Builtin::Email], Action::Flag), policy("secrets", &[Builtin::Secret], Action::Block)],
        &["flagger".into(), "secrets".into()],
    )
    .unwrap();
    let clean_secret = r#"{"messages":[{"role":"user","content":"a@b.io"}]}"#;
    let v = g.check_request(&g.select([], &[]).unwrap(), clean_secret.as_bytes());
    assert_eq!(body_of(&v), clean_secret);
    let body = r#"{"messages":[{"role":"user","content":"a@b.io key AKIAIOSFODNN7EXAMPLE"}]}"#;
    match g.check_request(&g.select([], &[]).unwrap(), body.as_bytes()) {
        Verdict::Block { policy, detector, events } => {
            assert_eq!((&*policy, &*detector), ("secrets", "secret"));
            let got: Vec<(&str, &str, Action)> = events.iter().map(|e| (&*e.policy, &*e.detector, e.action)).collect();
            assert_eq!(got, [("flagger", "email", Action::Flag), ("secrets", "secret", Action::Block)]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn later_policies_read_what_earlier_ones_redacted() {
    let g = Guardrails::new(
        &[policy("redact", &[Builtin::Email], Action::Redact), policy("block", &[Builtin::Email], Action::Block)],
        &["redact".into(), "block".into()],
    )
    .unwrap();
    let v = g.check_request(&g.select([], &[]).unwrap(), br#"{"messages":[{"role":"user","content":"a@b.io"}]}"#);
    assert_eq!(body_of(&v), r#"{"messages":[{"role":"user","content":"[EMAIL]"}]}"#);
}

#[test]
fn unreadable_and_non_json_bodies() {
    let g = Guardrails::new(&[policy("pii", &[Builtin::Email], Action::Redact)], &["pii".into()]).unwrap();
    assert!(matches!(
        g.check_request(&g.select([], &[]).unwrap(), br#"{"messages":[{"content":"a@b.io"}"#),
        Verdict::Unreadable
    ));
    assert!(matches!(g.check_request(&g.select([], &[]).unwrap(), b""), Verdict::Pass { .. }));
    assert!(matches!(g.check_request(&g.select([], &[]).unwrap(), b"--boundary\r\n"), Verdict::Pass { .. }));
}

#[test]
fn key_policies_add_to_the_config_lists_and_unknown_names_refuse() {
    let g = Guardrails::new(
        &[policy("a", &[Builtin::Email], Action::Redact), policy("b", &[Builtin::Phone], Action::Flag)],
        &["a".to_string()],
    )
    .unwrap();
    let key = ["b".to_string(), "a".to_string()];
    assert_eq!(g.select([], &key), Ok(vec![0, 1]));
    let route = ["b".to_string()];
    assert_eq!(g.select([&route[..]], &key), Ok(vec![0, 1]));
    let typo = ["a".to_string(), "nope".to_string()];
    assert_eq!(g.select([], &typo), Err("nope"));
}

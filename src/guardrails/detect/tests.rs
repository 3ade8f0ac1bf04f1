//! Per detector: what must be found (with its exact span) and what must not.

use super::*;

fn one(b: Builtin) -> Detector {
    Detector::new(&[b], &[], &[]).unwrap()
}

/// The matched texts.
fn found(d: &Detector, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    d.find(text, &mut out);
    out.iter().map(|f| text[f.span.clone()].to_string()).collect()
}

fn check(b: Builtin, yes: &[(&str, &str)], no: &[&str]) {
    let d = one(b);
    for (text, want) in yes {
        assert_eq!(found(&d, text), [*want], "{b:?} should find {want:?} in {text:?}");
    }
    for text in no {
        assert_eq!(found(&d, text), Vec::<String>::new(), "{b:?} should find nothing in {text:?}");
    }
}

#[test]
fn email() {
    check(
        Builtin::Email,
        &[
            ("write to jane.doe+news@example.co.uk today", "jane.doe+news@example.co.uk"),
            ("**[mail](mailto:ops@corp.io)**", "ops@corp.io"),
            ("```\nADMIN = \"root@db-1.internal.example\"\n```", "root@db-1.internal.example"),
            ("<a.b@c-d.org>", "a.b@c-d.org"),
        ],
        &["not an email: a@b", "user@localhost", "@handle on x.com", ".a@b..com", "email me at jane..doe@example.com"],
    );
}

#[test]
fn phone() {
    check(
        Builtin::Phone,
        &[
            ("call +1 415 555 2671 now", "+1 415 555 2671"),
            ("tel: +44 20 7946 0958.", "+44 20 7946 0958"),
            ("+4915123456789", "+4915123456789"),
            ("office (415) 555-2671", "(415) 555-2671"),
            ("415-555-2671", "415-555-2671"),
            ("415.555.2671", "415.555.2671"),
        ],
        &[
            "order 4155552671 shipped",
            "on 2024-01-15 at 10:30",
            "version 1.2.3",
            "ISBN 978-3-16-148410-0",
            "pi is 3.14159265358979",
            "ids 12-34",
            "+12 is a score",
        ],
    );
}

#[test]
fn credit_card() {
    check(
        Builtin::CreditCard,
        &[
            ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
            ("4111-1111-1111-1111", "4111-1111-1111-1111"),
            ("amex 378282246310005.", "378282246310005"),
            ("mc 5555555555554444", "5555555555554444"),
            ("disc 6011111111111117", "6011111111111117"),
        ],
        &[
            "4111 1111 1111 1112",       // Luhn fails
            "order 1234567890123456",    // Luhn fails
            "0000000000000000",          // passes Luhn, no issuer starts with 0
            "4111 1111-1111 1111",       // mixed separators
            "tracking 9400111899223344", // 9: not a card network
        ],
    );
}

#[test]
fn iban() {
    check(
        Builtin::Iban,
        &[
            ("pay DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
            ("GB82WEST12345698765432", "GB82WEST12345698765432"),
            ("FR1420041010050500013M02606", "FR1420041010050500013M02606"),
            ("NL91ABNA0417164300", "NL91ABNA0417164300"),
        ],
        &["DE89 3704 0044 0532 0130 01", "GB82WEST1234569876543", "XX00 0000 0000 0000"],
    );
}

#[test]
fn us_ssn() {
    check(
        Builtin::UsSsn,
        &[("ssn 123-45-6789.", "123-45-6789"), ("078-05-1121", "078-05-1121")],
        &["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000", "2024-01-15", "1123-45-6789"],
    );
}

#[test]
fn ip_address() {
    check(
        Builtin::IpAddress,
        &[
            ("from 192.168.1.20, port 22", "192.168.1.20"),
            ("10.0.0.1", "10.0.0.1"),
            ("host 2001:db8:85a3::8a2e:370:7334 down", "2001:db8:85a3::8a2e:370:7334"),
            ("fe80::1ff:fe23:4567:890a", "fe80::1ff:fe23:4567:890a"),
        ],
        &[
            "version 1.2.3.4.5",
            "256.1.1.1",
            "01.02.03.04",
            "at 10:30:45",
            "std::net::Ipv6Addr",
            "a::b",
            "mac 00:1a:2b:3c:4d:5e",
        ],
    );
}

#[test]
fn secret() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc=\n-----END RSA PRIVATE KEY-----";
    check(
        Builtin::Secret,
        &[
            ("key sk-proj-abcdefghijklmnopqrstuvwx1234 ok", "sk-proj-abcdefghijklmnopqrstuvwx1234"),
            ("sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", "sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA"),
            ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
            ("xoxb-123456789012-abcdef", "xoxb-123456789012-abcdef"),
            ("AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"),
            ("sk_live_abcdefghijklmnop1234", "sk_live_abcdefghijklmnop1234"),
            (&format!("token {jwt}"), jwt),
            (&format!("key:\n{pem}\nthanks"), pem),
            ("Authorization: Bearer abc123def456ghi789jkl", "abc123def456ghi789jkl"),
        ],
        &["sk-short", "risk-assessment-for-the-quarter", "the bearer of bad news", "AKIA1234", "eyJhbGciOi"],
    );
}

#[test]
fn a_private_key_cut_short_is_a_secret_to_the_end() {
    let d = one(Builtin::Secret);
    let text = "here: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    assert_eq!(found(&d, text), [&text[6..]]);
}

#[test]
fn custom_patterns_and_words() {
    let d = Detector::new(
        &[Builtin::Email],
        &[("employee_id".into(), r"EMP-\d{6}".into())],
        &["project aurora".into(), "Zeta".into()],
    )
    .unwrap();
    let text = "EMP-123456 on Project  AURORA wrote a@b.io; zeta, not zetas nor projectaurora";
    assert_eq!(found(&d, text), ["EMP-123456", "Project  AURORA", "a@b.io", "zeta"]);
    let mut out = Vec::new();
    d.find(text, &mut out);
    let labels: Vec<&str> = out.iter().map(|f| d.kinds[f.kind].label()).collect();
    assert_eq!(labels, ["EMPLOYEE_ID", "WORD", "EMAIL", "WORD"]);
}

#[test]
fn overlaps_keep_the_longest_at_each_start() {
    let d = Detector::new(&[Builtin::Phone, Builtin::CreditCard, Builtin::Email], &[], &[]).unwrap();
    // A card is not also a phone; an email's digits are not a phone.
    assert_eq!(found(&d, "4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
    assert_eq!(found(&d, "x 4155552671@sms.example.com"), ["4155552671@sms.example.com"]);
}

#[test]
fn every_builtin_compiles_with_the_others() {
    let d = Detector::new(&Builtin::ALL, &[], &["a b".into()]).unwrap();
    assert_eq!(d.kinds.len(), Builtin::ALL.len() + 1);
    let mut out = Vec::new();
    d.find("plain prose with nothing in it, ünïcödé too", &mut out);
    assert!(out.is_empty());
}

use super::*;

type Owned = Vec<(String, String)>;

fn events_split(input: &[u8], cuts: &[usize]) -> Owned {
    let mut s = SseSplitter::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        s.feed(&input[start..end], &mut |e: Event<'_>| {
            out.push((String::from_utf8_lossy(e.name).into_owned(), String::from_utf8_lossy(e.data).into_owned()))
        });
        start = end;
    }
    out
}

fn events(input: &[u8]) -> Owned {
    events_split(input, &[])
}

const STREAM: &str = ": keep-alive comment\n\nevent: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\ndata: line one\ndata: line two\n\ndata:no-space\nid: 7\nretry: 10\n\ndata\n\nevent: ignored-without-data\n\ndata: [DONE]\n\n";

fn expected() -> Owned {
    vec![
        ("message_start".into(), "{\"a\":1}".into()),
        ("ping".into(), "{}".into()),
        (String::new(), "line one\nline two".into()),
        (String::new(), "no-space".into()),
        (String::new(), String::new()),
        (String::new(), "[DONE]".into()),
    ]
}

#[test]
fn splits_events_with_fields_comments_and_multiline_data() {
    assert_eq!(events(STREAM.as_bytes()), expected());
}

#[test]
fn lf_crlf_and_cr_give_the_same_events() {
    let crlf = STREAM.replace('\n', "\r\n");
    let cr = STREAM.replace('\n', "\r");
    assert_eq!(events(crlf.as_bytes()), expected());
    assert_eq!(events(cr.as_bytes()), expected());
}

#[test]
fn same_events_split_at_every_offset() {
    for text in [STREAM.to_string(), STREAM.replace('\n', "\r\n"), STREAM.replace('\n', "\r")] {
        let input = text.as_bytes();
        for a in 0..=input.len() {
            assert_eq!(events_split(input, &[a]), expected(), "split at {a} of {text:?}");
        }
        for a in (0..=input.len()).step_by(3) {
            for b in a..=input.len() {
                assert_eq!(events_split(input, &[a, b]), expected(), "split at {a},{b}");
            }
        }
    }
}

#[test]
fn incomplete_event_is_not_dispatched() {
    assert_eq!(events(b"data: x\n"), Vec::new());
    assert_eq!(events(b"data: x"), Vec::new());
}

#[test]
fn event_bytes_are_byte_split_one_at_a_time() {
    let input = STREAM.replace('\n', "\r\n");
    let cuts: Vec<usize> = (1..input.len()).collect();
    assert_eq!(events_split(input.as_bytes(), &cuts), expected());
}

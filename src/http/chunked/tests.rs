use super::*;

/// Decodes `input` fed in pieces of the given sizes; returns the data and
/// whether the decoder finished, or the first error.
fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut consumed = 0;
    for &end in cuts.iter().chain(std::iter::once(&input.len())) {
        let piece = &input[start..end];
        let n = dec.decode_all(piece, |r| out.extend_from_slice(&piece[r]))?;
        consumed += n;
        start = end;
    }
    Ok((out, dec.is_done(), consumed))
}

fn decode(input: &[u8]) -> Result<(Vec<u8>, bool, usize), ChunkedError> {
    decode_split(input, &[])
}

const BODY: &[u8] =
    b"5\r\nhello\r\n7;name=\"v\"\r\n, world\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";

#[test]
fn decodes_with_extensions_and_trailers() {
    let (data, done, consumed) = decode(BODY).expect("valid");
    assert_eq!(data, b"hello, worldabcdefghijklmnopqrstuvwxyz");
    assert!(done);
    assert_eq!(consumed, BODY.len());
}

#[test]
fn split_at_every_offset_and_pair() {
    let (whole, _, _) = decode(BODY).expect("valid");
    for a in 0..=BODY.len() {
        let (d, done, _) = decode_split(BODY, &[a]).expect("valid");
        assert_eq!(d, whole, "split at {a}");
        assert!(done);
    }
    for a in 0..=BODY.len() {
        for b in a..=BODY.len() {
            let (d, _, _) = decode_split(BODY, &[a, b]).expect("valid");
            assert_eq!(d, whole, "split at {a},{b}");
        }
    }
}

#[test]
fn stops_at_the_end_of_the_body() {
    let mut input = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
    let end = input.len();
    input.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let (data, done, consumed) = decode(&input).expect("valid");
    assert_eq!((data.as_slice(), done, consumed), (&b"abc"[..], true, end));
}

#[test]
fn incomplete_is_not_done() {
    let (data, done, _) = decode(b"5\r\nhel").expect("valid so far");
    assert_eq!((data.as_slice(), done), (&b"hel"[..], false));
}

#[test]
fn rejects_bad_framing() {
    let cases: &[(&[u8], ChunkedError)] = &[
        (b"\r\n", ChunkedError::InvalidSize),
        (b"g\r\n", ChunkedError::InvalidSize),
        (b"-1\r\n", ChunkedError::InvalidSize),
        (b"+5\r\n", ChunkedError::InvalidSize),
        (b" 5\r\n", ChunkedError::InvalidSize),
        (b"0x5\r\n", ChunkedError::InvalidSize),
        (b"5 x\r\n", ChunkedError::InvalidSize),
        (b"10000000000000000\r\n", ChunkedError::SizeTooLarge),
        (b"5\nhello", ChunkedError::InvalidSize),
        (b"5\r\nhelloX\r\n", ChunkedError::InvalidLineEnding),
        (b"5\r\nhello\rX", ChunkedError::InvalidLineEnding),
        (b"5;a\nb\r\n", ChunkedError::InvalidLineEnding),
        (b"0\r\nX: y\n\r\n", ChunkedError::InvalidLineEnding),
        (b"0\r\n\rX", ChunkedError::InvalidLineEnding),
    ];
    for (input, want) in cases {
        assert_eq!(decode(input).map(|_| ()), Err(*want), "{:?}", String::from_utf8_lossy(input));
    }
    let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_LINE + 1));
    assert_eq!(decode(long_ext.as_bytes()).map(|_| ()), Err(ChunkedError::LineTooLong));
}

#[test]
fn max_size_chunk_header_is_accepted() {
    let mut dec = ChunkedDecoder::new();
    let d = dec.decode(b"ffffffffffffffff\r\nab").expect("valid");
    assert_eq!(d.data, Some(18..20));
}

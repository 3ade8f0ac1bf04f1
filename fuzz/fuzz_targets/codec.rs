//! Fuzz target for every parser that faces the network: request heads,
//! chunked bodies, upstream response heads. Beyond "no panic", it checks
//! the properties the server relies on:
//! - a complete head parses the same with more bytes behind it (pipelining);
//! - a chunked body decodes to the same data however it is split.
#![no_main]

use aigw::http::{
    chunked::ChunkedDecoder,
    request::{self, HeadLimits},
    response,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 8192, max_headers: 64 };

fn decode(data: &[u8], split: usize) -> (Result<Vec<u8>, ()>, bool) {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let split = split.min(data.len());
    for piece in [&data[..split], &data[split..]] {
        match dec.decode_all(piece, |r| out.extend_from_slice(&piece[r])) {
            Ok(_) => {}
            Err(_) => return (Err(()), dec.is_done()),
        }
        if dec.is_done() {
            break;
        }
    }
    (Ok(out), dec.is_done())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(p)) = request::parse(data, LIMITS) {
        assert!(p.len <= data.len());
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(request::parse(&more, LIMITS), Ok(Some(p)));
    }
    let _ = response::parse(data, false, 8192);
    let _ = response::parse(data, true, 8192);

    let split = data.first().copied().unwrap_or(0) as usize;
    let body = data.get(1..).unwrap_or_default();
    let (whole, whole_done) = decode(body, body.len());
    let (parts, parts_done) = decode(body, split);
    if whole_done && whole.is_ok() {
        assert_eq!(whole, parts);
        assert!(parts_done);
    }
});

//! A short, deterministic mutation run over the network-facing parsers, so
//! every `cargo test` exercises what the cargo-fuzz target (fuzz/) checks
//! at length: no panic, and the same answer however the input is split.
#![allow(clippy::unwrap_used, clippy::panic)]

use aigw::http::{
    chunked::ChunkedDecoder,
    request::{self, HeadLimits},
    response,
};

const LIMITS: HeadLimits = HeadLimits { max_head_bytes: 4096, max_headers: 32 };

const SEEDS: &[&[u8]] = &[
    b"POST /mock/v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"5\r\nhello\r\n6;e=1\r\n world\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 204 No Content\r\nContent-Length: 5\r\n\r\n",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u8] = b"\r\n:; \t0fF\x00\x7f\x80chunkedContent-Length,";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => {
                let other = SEEDS[rng.below(SEEDS.len())];
                let from = rng.below(other.len());
                let to = from + rng.below(other.len() - from);
                v.splice(at..at, other[from..to].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn decode(data: &[u8], split: usize) -> Option<Vec<u8>> {
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    for piece in [&data[..split], &data[split..]] {
        dec.decode_all(piece, |r| out.extend_from_slice(&piece[r])).ok()?;
        if dec.is_done() {
            return Some(out);
        }
    }
    None
}

#[test]
fn parsers_survive_mutations_and_agree_across_splits() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..30_000 {
        let seed = SEEDS[rng.below(SEEDS.len())];
        let input = mutate(&mut rng, seed);
        if let Ok(Some(p)) = request::parse(&input, LIMITS) {
            for k in 0..p.len {
                assert_eq!(request::parse(&input[..k], LIMITS).ok(), Some(None), "{input:?} prefix {k}");
            }
            let mut more = input.clone();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(request::parse(&more, LIMITS), Ok(Some(p)));
        }
        let _ = response::parse(&input, false, 4096);
        let _ = response::parse(&input, true, 4096);
        if let Some(whole) = decode(&input, input.len()) {
            for split in 0..input.len() {
                assert_eq!(decode(&input, split).as_ref(), Some(&whole), "{input:?} split {split}");
            }
        }
    }
}

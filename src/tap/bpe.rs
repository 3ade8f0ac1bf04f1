//! Token counting with OpenAI's o200k_base vocabulary, held compactly.
//!
//! Why not tiktoken-rs: its `CoreBPE` keeps the 200k-token vocabulary three
//! times over as one heap `Vec<u8>` per token (encoder, decoder, sorted
//! list) plus 128 regex clones: 51 MiB resident once loaded (RSS before and
//! after loading, docs/benchmarks.md "Memory per stream"), and an estimate is
//! needed exactly when many streams are cut at once. We only count tokens,
//! so this keeps the tokens in one byte arena (the vocabulary file itself)
//! with a table of `u32` indices: ~7 MiB with the compiled pattern. The counts equal tiktoken's (a test compares them
//! on varied text while tiktoken-rs is a dev-dependency).
//!
//! Counting is tiktoken's: split the text with the o200k pre-tokenizer
//! pattern, then merge each piece's bytes pairwise, lowest rank first.

use regex::Regex;

/// The vocabulary in rank order, each token as `u8 length` + bytes
/// (`scripts/o200k.py` makes it from OpenAI's o200k_base.tiktoken).
pub(crate) static VOCAB: &[u8] = include_bytes!("o200k.bin");

/// o200k's pre-tokenizer without its one look-ahead, `\s+(?!\S)`, which the
/// regex crate does not offer: `Bpe::pieces` applies it by hand.
const PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+",
);

/// Pieces longer than this are counted in slices of this size: merging is
/// quadratic in a piece's length, and a client chooses the text (a 100 KiB
/// run of punctuation is one piece). Real pieces are words, a few bytes.
const MAX_PIECE: usize = 512;

const NONE: u32 = u32::MAX;

pub struct Bpe {
    /// Start of each token's bytes in `VOCAB` (after its length byte); the
    /// index is the token's rank.
    starts: Vec<u32>,
    /// Open addressing over ranks + 1 (0 = empty), by a hash of the bytes.
    table: Vec<u32>,
    mask: usize,
    pattern: Regex,
}

impl Bpe {
    /// Reads the vocabulary and builds the lookup table (~20 ms).
    pub fn o200k() -> Result<Bpe, String> {
        let mut starts = Vec::with_capacity(200_000);
        let mut at = 0usize;
        while at < VOCAB.len() {
            let len = usize::from(VOCAB[at]);
            if len == 0 || at + 1 + len > VOCAB.len() {
                return Err(format!("o200k.bin is malformed at byte {at}"));
            }
            starts.push(u32::try_from(at + 1).map_err(|_| "o200k.bin is too large".to_string())?);
            at += 1 + len;
        }
        let size = (starts.len() * 2).next_power_of_two();
        let mut bpe = Bpe {
            starts,
            table: vec![0; size],
            mask: size - 1,
            pattern: Regex::new(PATTERN).map_err(|e| e.to_string())?,
        };
        for rank in 0..bpe.starts.len() {
            let token = bpe.token(rank);
            let mut slot = hash(token) & bpe.mask;
            while bpe.table[slot] != 0 {
                slot = (slot + 1) & bpe.mask;
            }
            bpe.table[slot] = rank as u32 + 1;
        }
        Ok(bpe)
    }

    fn token(&self, rank: usize) -> &'static [u8] {
        let start = self.starts[rank] as usize;
        &VOCAB[start..start + usize::from(VOCAB[start - 1])]
    }

    fn rank(&self, bytes: &[u8]) -> u32 {
        let mut slot = hash(bytes) & self.mask;
        loop {
            match self.table[slot] {
                0 => return NONE,
                r if self.token(r as usize - 1) == bytes => return r - 1,
                _ => slot = (slot + 1) & self.mask,
            }
        }
    }

    /// Tokens in `text` (tiktoken's `encode_ordinary(text).len()`).
    pub fn count(&self, text: &str) -> usize {
        let mut n = 0;
        self.pieces(text, |piece| {
            for slice in piece.chunks(MAX_PIECE) {
                n += self.merge_count(slice);
            }
        });
        n
    }

    /// Calls `f` with each pre-tokenized piece of `text`. The pattern's
    /// last branch is `\s+`; o200k's has `\s+(?!\S)` before it, so a run of
    /// whitespace followed by more text leaves its last character to the
    /// next piece (" world" stays one piece after "  ").
    fn pieces(&self, text: &str, mut f: impl FnMut(&[u8])) {
        let mut at = 0;
        while at < text.len() {
            let Some(m) = self.pattern.find_at(text, at) else { break };
            let mut end = m.end();
            let s = m.as_str();
            if end < text.len() && s.chars().all(char::is_whitespace) && !s.contains(['\r', '\n']) {
                // Came from `\s+` (a run with a newline matches the branch
                // before it) and text follows: back off one character,
                // unless that would leave nothing.
                if let Some((last, _)) = s.char_indices().next_back().filter(|&(i, _)| i > 0) {
                    end = m.start() + last;
                }
            }
            f(&text.as_bytes()[m.start()..end]);
            at = end;
        }
    }

    /// Tokens `piece` merges into: tiktoken's byte-pair merge, lowest rank
    /// first.
    fn merge_count(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece) != NONE {
            return usize::from(!piece.is_empty());
        }
        // (start of part, rank of the part merged with its right neighbour)
        let mut parts: Vec<(usize, u32)> = (0..piece.len() - 1).map(|i| (i, self.rank(&piece[i..i + 2]))).collect();
        parts.push((piece.len() - 1, NONE));
        parts.push((piece.len(), NONE));
        let pair_rank = |parts: &[(usize, u32)], i: usize| {
            if i + 3 < parts.len() { self.rank(&piece[parts[i].0..parts[i + 3].0]) } else { NONE }
        };
        let lowest = |parts: &[(usize, u32)]| {
            parts[..parts.len() - 1]
                .iter()
                .enumerate()
                .filter(|(_, p)| p.1 != NONE)
                .min_by_key(|(_, p)| p.1)
                .map(|(i, _)| i)
        };
        while let Some(i) = lowest(&parts) {
            if i > 0 {
                parts[i - 1].1 = pair_rank(&parts, i - 1);
            }
            parts[i].1 = pair_rank(&parts, i);
            parts.remove(i + 1);
        }
        parts.len() - 1
    }
}

fn hash(bytes: &[u8]) -> usize {
    xxhash_rust::xxh3::xxh3_64(bytes) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        let mut v: Vec<String> = [
            "The quick brown fox jumps over the lazy dog.",
            "Hello world",
            "  leading spaces and   inner  runs   ",
            "tabs\tand\nnewlines\r\n\r\nand  \n  mixed \n\n",
            "I'm sure they'll say it's fine, we've done what you'd want. DON'T SHOUT'S",
            "numbers 1 12 123 1234 12345 3.14159 2026-11-28 v1.2.3-rc.1",
            "punctuation!!! ??? ... --- *** /// \\\\ {\"a\": [1, 2]}",
            "code: fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }",
            "Ünïcödé façade naïve 日本語のテキスト 中文文本 한국어 텍스트 Ελληνικά русский",
            "emoji 😀🎉👍🏽 and ZWJ 👨‍👩‍👧 sequences",
            "https://example.com/path?query=1&b=2 user@example.org",
            "CamelCaseIdentifiers and snake_case_ones and SCREAMING_CASE",
            " ",
            "\n",
            "a",
            "",
            "   x",
            "x   ",
            "\u{3000}wide space\u{a0}nbsp",
            "/path/to/file.rs:123:45\n/another\r\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("lorem ipsum dolor sit amet ".repeat(200));
        v.push("!".repeat(3000));
        v
    }

    #[test]
    fn counts_equal_tiktokens() {
        let ours = Bpe::o200k().expect("vocabulary");
        let theirs = tiktoken_rs::o200k_base().expect("tiktoken");
        for text in corpus() {
            // One over-long piece is counted in slices: an upper bound.
            let want = theirs.encode_ordinary(&text).len();
            let got = ours.count(&text);
            if text.starts_with("!!!") {
                assert!(got >= want && got <= want + text.len() / MAX_PIECE + 1, "{got} vs {want}");
            } else {
                assert_eq!(got, want, "{text:?}");
            }
        }
    }

    #[test]
    fn counts_equal_tiktokens_on_random_mixes() {
        // Strings drawn from the characters the pattern treats differently:
        // cases, marks, digits, apostrophes, every kind of whitespace.
        const ALPHABET: [&str; 24] = [
            "a", "Z", "é", "Ǆ", "ʰ", "字", "\u{301}", "7", "٣", "'", "'s", "'LL", " ", "  ", "\t", "\n", "\r\n",
            "\u{a0}", "!", "/", "?!", "😀", "-", "\u{2028}",
        ];
        let ours = Bpe::o200k().expect("vocabulary");
        let theirs = tiktoken_rs::o200k_base().expect("tiktoken");
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            let mut text = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for k in 0..(seed % 24) {
                text.push_str(ALPHABET[((seed >> (k % 40)) as usize ^ (k as usize * 7)) % ALPHABET.len()]);
            }
            assert_eq!(ours.count(&text), theirs.encode_ordinary(&text).len(), "{text:?}");
        }
    }

    #[test]
    fn every_token_is_found_at_its_rank() {
        let bpe = Bpe::o200k().expect("vocabulary");
        assert_eq!(bpe.starts.len(), 199_998);
        for rank in (0..bpe.starts.len()).step_by(97) {
            assert_eq!(bpe.rank(bpe.token(rank)), rank as u32);
        }
        assert_eq!(bpe.rank(b"\xff\xfe not a token \xff"), NONE);
    }
}

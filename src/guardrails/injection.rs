//! The `prompt_injection` detector: a scored rule set over text normalised
//! against the usual evasions.
//!
//! The rules live in `injection/rules.toml` (compiled into the binary),
//! each with a score and with texts it must and must not match, which the
//! unit tests check. A scanned string whose matched rules' scores add up to
//! the policy's `threshold` (default 1.0, so any one high-confidence rule
//! is enough) is a finding; each matched rule's span is one.
//!
//! Matching runs on a normalised copy of the text: lower case, zero-width
//! and other invisible format characters dropped, accents stripped,
//! common Cyrillic and Greek look-alikes and full-width forms mapped to
//! ASCII, leetspeak digits read as letters, and every run of whitespace
//! made one space. Each byte of the copy remembers where it came from, so
//! a finding's span is a span of the original text and redaction replaces
//! what the client wrote.
//!
//! It reads requests only (what a user or a tool result tells the model);
//! on answers a policy's other detectors run without it.

use std::ops::Range;

use regex::Regex;
use serde::Deserialize;

use super::detect::Finding;

/// The score at which a string is an injection attempt unless the policy
/// sets `threshold`: a single high-confidence rule (1.0) reaches it; the
/// weaker ones need company.
pub const DEFAULT_THRESHOLD: f64 = 1.0;

const RULES: &str = include_str!("injection/rules.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(test), allow(dead_code))]
struct RawRule {
    id: String,
    score: f64,
    /// Over the normalised text (lower case, single spaces, ASCII letters).
    pattern: String,
    /// Texts this rule alone must find (the unit tests check them).
    #[serde(default, rename = "match")]
    matches: Vec<String>,
    /// Texts it must not find.
    #[serde(default, rename = "pass")]
    passes: Vec<String>,
}

/// The rules as the file writes them, for the tests: (id, regex, must
/// match, must not).
#[cfg(test)]
fn raw_rules() -> Vec<(String, Regex, Vec<String>, Vec<String>)> {
    let file: RuleFile = toml::from_str(RULES).unwrap_or_else(|e| panic!("rules.toml: {e}"));
    file.rule
        .into_iter()
        .map(|r| {
            let re = Regex::new(&ascii_boundaries(&r.pattern)).unwrap_or_else(|e| panic!("{}: {e}", r.id));
            (r.id, re, r.matches, r.passes)
        })
        .collect()
}

/// `\b` as an ASCII word boundary: the normalised text is ASCII where the
/// rules look, and a Unicode boundary would keep the scan off the DFA.
fn ascii_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)")
}

struct Rule {
    regex: Regex,
    score: f64,
}

/// The compiled rule set with one policy's threshold.
pub struct Injection {
    rules: Vec<Rule>,
    threshold: f64,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection").field("rules", &self.rules.len()).field("threshold", &self.threshold).finish()
    }
}

impl Injection {
    pub fn new(threshold: f64) -> Injection {
        // The file is part of the binary and its tests compile it: a broken
        // one cannot ship.
        #[allow(clippy::expect_used)]
        let file: RuleFile = toml::from_str(RULES).expect("injection/rules.toml parses");
        #[allow(clippy::expect_used)]
        let patterns: Vec<String> = file.rule.iter().map(|r| ascii_boundaries(&r.pattern)).collect();
        #[allow(clippy::expect_used)]
        let rules: Vec<Rule> = patterns
            .iter()
            .zip(&file.rule)
            .map(|(p, r)| Rule { regex: Regex::new(p).expect("injection rules compile"), score: r.score })
            .collect();
        Injection { rules, threshold }
    }

    /// Appends the findings in `text` (as `kind`), if its score reaches the
    /// threshold; returns the score.
    pub fn find(&self, text: &str, kind: usize, out: &mut Vec<Finding>) -> f64 {
        let norm = normalize::<false>(text, &mut Vec::new());
        // Rule by rule rather than as one RegexSet: each rule alone keeps
        // its literal prefilter (a memchr-speed skip to its first words),
        // which a set of them loses; on prose that is 3x faster.
        let hits: Vec<&Rule> = self.rules.iter().filter(|r| r.regex.is_match(&norm)).collect();
        let score: f64 = hits.iter().map(|r| r.score).sum();
        if hits.is_empty() || score + 1e-9 < self.threshold {
            return score;
        }
        let norm = Normalized::of(text);
        let mut spans: Vec<Range<usize>> =
            hits.iter().flat_map(|r| r.regex.find_iter(&norm.text).map(|m| norm.original(m.range(), text))).collect();
        spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
        // Overlapping rule matches become one finding.
        let mut merged: Vec<Range<usize>> = Vec::new();
        for s in spans {
            match merged.last_mut() {
                Some(last) if s.start < last.end => last.end = last.end.max(s.end),
                _ => merged.push(s),
            }
        }
        out.extend(merged.into_iter().map(|span| Finding { matched: span.start, span, kind }));
        score
    }
}

/// A text as the rules read it, and where each of its bytes came from.
pub struct Normalized {
    pub text: String,
    /// Per byte of `text`: where in the original the char that gave it
    /// starts (u32: request bodies are far below 4 GiB).
    from: Vec<u32>,
    original_len: usize,
}

/// How an ASCII byte reads: itself lower-cased, a leetspeak letter, or a
/// space (any whitespace or control byte).
const ASCII: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        t[i] = match b {
            b'0' => b'o',
            b'1' => b'i',
            b'3' => b'e',
            b'4' | b'@' => b'a',
            b'5' | b'$' => b's',
            b'7' => b't',
            b'A'..=b'Z' => b + 32,
            0..=32 | 127 => b' ',
            _ => b,
        };
        i += 1;
    }
    t
};

impl Normalized {
    pub fn of(original: &str) -> Normalized {
        let mut from = Vec::with_capacity(original.len());
        let text = normalize::<true>(original, &mut from);
        Normalized { text, from, original_len: original.len() }
    }

    /// The span of the original that a non-empty span of `text` came from:
    /// from the start of the char that gave its first byte to the end of
    /// the one that gave its last.
    pub fn original(&self, r: Range<usize>, original: &str) -> Range<usize> {
        let (Some(&a), Some(&b)) = (self.from.get(r.start), self.from.get(r.end.saturating_sub(1))) else {
            return 0..0;
        };
        let (a, b) = (a as usize, b as usize);
        if r.end <= r.start {
            return a..a;
        }
        let end = original.get(b..).and_then(|s| s.chars().next()).map_or(self.original_len, |c| b + c.len_utf8());
        a..end
    }
}

/// The normalised text; with `MAP`, `from` gets where each of its bytes
/// came from (the start of the original char). Without it the scan is
/// about twice as fast: the map is only built for a text that matched.
fn normalize<const MAP: bool>(original: &str, from: &mut Vec<u32>) -> String {
    let mut text: Vec<u8> = Vec::with_capacity(original.len());
    // Where a pending run of whitespace began (it becomes one space
    // before the next char that shows).
    let mut space: Option<u32> = None;
    let bytes = original.as_bytes();
    let mut at = 0;
    let mut utf8 = [0u8; 4];
    while at < bytes.len() {
        let b = bytes[at];
        if b.is_ascii() {
            let m = ASCII[b as usize];
            if m == b' ' {
                space.get_or_insert(at as u32);
            } else {
                if let Some(s) = space.take()
                    && !text.is_empty()
                {
                    text.push(b' ');
                    if MAP {
                        from.push(s);
                    }
                }
                text.push(m);
                if MAP {
                    from.push(at as u32);
                }
            }
            at += 1;
            continue;
        }
        let Some(c) = original[at..].chars().next() else { break };
        let here = at as u32;
        at += c.len_utf8();
        if c.is_whitespace() || c.is_control() {
            space.get_or_insert(here);
            continue;
        }
        if invisible(c) {
            continue;
        }
        for c in c.to_lowercase() {
            let Some(c) = fold(c) else { continue };
            if let Some(s) = space.take()
                && !text.is_empty()
            {
                text.push(b' ');
                if MAP {
                    from.push(s);
                }
            }
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            text.extend_from_slice(encoded);
            if MAP {
                from.resize(from.len() + encoded.len(), here);
            }
        }
    }
    // Whole chars were pushed, each as UTF-8: this does not fail.
    String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Characters that show nothing: zero-width spaces and joiners, the BOM,
/// soft hyphens, invisible operators, combining marks (what is left of an
/// accent once a letter is decomposed), variation selectors.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}' | '\u{FE00}'..='\u{FE0F}' | '\u{0300}'..='\u{036F}' | '\u{E0000}'..='\u{E007F}')
}

/// One lower-case char as the rules read it: ASCII look-alikes and
/// leetspeak become the letter they pass for. None: drop it.
fn fold(c: char) -> Option<char> {
    if c.is_ascii() {
        return Some(match c {
            '0' => 'o',
            '1' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            c => c,
        });
    }
    // Full-width ASCII (U+FF01..U+FF5E) is ASCII shifted.
    if ('\u{FF01}'..='\u{FF5E}').contains(&c) {
        return char::from_u32(c as u32 - 0xFEE0).map(|a| a.to_ascii_lowercase()).and_then(fold);
    }
    Some(match c {
        // Typographic quotes, as typed by phones and word processors.
        '\u{2018}' | '\u{2019}' | '\u{02BC}' | '\u{2032}' => '\'',
        // Latin letters with accents.
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => 'i',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ś' | 'š' | 'ş' => 's',
        'ź' | 'ż' | 'ž' => 'z',
        'ł' => 'l',
        'ď' => 'd',
        'ť' => 't',
        'ř' => 'r',
        // Cyrillic look-alikes (lower case; upper case was lowered).
        'а' => 'a',
        'в' => 'b',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'ѕ' => 's',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'ԁ' => 'd',
        'ԛ' => 'q',
        'ԝ' => 'w',
        // Greek look-alikes.
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'ɡ' => 'g',
        c => c,
    })
}

#[cfg(test)]
mod tests;

//! Detectors: what counts as personal data or a secret in a piece of text.
//!
//! One pass decides whether anything may be there: every rule of a policy
//! sits in one `RegexSet` (a single lazy-DFA scan over the text). Only the
//! rules that matched run again to find their spans, and each candidate is
//! validated before it counts (Luhn for cards, mod-97 for IBANs, ranges for
//! SSNs and IPv4, digit counts and separators for phones), so order numbers,
//! dates and version strings stay as they are.
//!
//! Word boundaries are ASCII (`(?-u:\b)`): a Unicode `\b` would send every
//! non-ASCII text to the slow engines.
//!
//! On a live stream the text arrives in pieces, so a detector also says
//! where a finding could still begin (`live_from`): the earliest place from
//! which the rules, run anchored on one lazy DFA, have not yet died at the
//! end of what arrived. Everything before it is final and may be released.

use std::ops::Range;

use regex::{Regex, RegexSet};

use super::injection::Injection;
use regex_automata::{
    Anchored, Input, MatchKind,
    hybrid::dfa::{Cache, DFA},
    util::pool::Pool,
};

/// The built-in detectors, by their config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    Email,
    Phone,
    CreditCard,
    Iban,
    UsSsn,
    IpAddress,
    Secret,
}

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::Email,
        Builtin::Phone,
        Builtin::CreditCard,
        Builtin::Iban,
        Builtin::UsSsn,
        Builtin::IpAddress,
        Builtin::Secret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::CreditCard => "credit_card",
            Builtin::Iban => "iban",
            Builtin::UsSsn => "us_ssn",
            Builtin::IpAddress => "ip_address",
            Builtin::Secret => "secret",
        }
    }

    pub fn parse(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The patterns that find candidates, each with the capture group that
    /// is the finding (0: the whole match); each becomes one rule.
    fn patterns(self) -> &'static [(&'static str, usize)] {
        match self {
            Builtin::Email => &[(
                r"(?-u:\b)[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?-u:\b)",
                0,
            )],
            // A loose shape; `valid` decides (digit count, separators).
            Builtin::Phone => &[(r"\+?\(?\d[\d ().\-]{5,22}\d", 0)],
            Builtin::CreditCard => &[(r"(?-u:\b)\d(?:[ \-]?\d){12,18}(?-u:\b)", 0)],
            Builtin::Iban => &[(r"(?-u:\b)[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)", 0)],
            Builtin::UsSsn => &[(r"(?-u:\b)\d{3}-\d{2}-\d{4}(?-u:\b)", 0)],
            Builtin::IpAddress => &[
                (r"(?-u:\b)(?:\d{1,3}\.){3}\d{1,3}(?-u:\b)", 0),
                (r"(?:[0-9A-Fa-f]{1,4}|:)(?::[0-9A-Fa-f]{0,4}){2,7}", 0),
            ],
            Builtin::Secret => &[
                // OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-…)
                (r"(?-u:\b)sk-[A-Za-z0-9_\-]{20,}", 0),
                // Stripe
                (r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}", 0),
                // AWS access key ids
                (r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)", 0),
                // GitHub, GitLab, Slack, Google API keys
                (r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|glpat-[A-Za-z0-9_\-]{20,})", 0),
                (r"(?-u:\b)xox[abprs]-[A-Za-z0-9\-]{10,}", 0),
                (r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}", 0),
                // JWTs: three base64url parts, the first two JSON objects
                (r"(?-u:\b)eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", 0),
                // PEM private keys: the BEGIN line; `span` extends to END
                (r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----", 0),
                // Bearer tokens: the token only (group 1), "Bearer" stays
                (r"(?i:bearer)[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)", 1),
            ],
        }
    }

    /// The marker a redaction writes.
    pub fn label(self) -> &'static str {
        match self {
            Builtin::Email => "EMAIL",
            Builtin::Phone => "PHONE",
            Builtin::CreditCard => "CREDIT_CARD",
            Builtin::Iban => "IBAN",
            Builtin::UsSsn => "US_SSN",
            Builtin::IpAddress => "IP_ADDRESS",
            Builtin::Secret => "SECRET",
        }
    }
}

/// Which detector a rule belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Builtin(Builtin),
    /// A named custom pattern; its label is the name upper-cased.
    Custom {
        name: String,
        label: String,
    },
    /// The policy's `words`, matched case-insensitively on word boundaries.
    Words,
    /// The scored prompt-injection rules (`injection.rs`).
    PromptInjection,
}

impl Kind {
    pub fn name(&self) -> &str {
        match self {
            Kind::Builtin(b) => b.name(),
            Kind::Custom { name, .. } => name,
            Kind::Words => "words",
            Kind::PromptInjection => "prompt_injection",
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Kind::Builtin(b) => b.label(),
            Kind::Custom { label, .. } => label,
            Kind::Words => "WORD",
            Kind::PromptInjection => "PROMPT_INJECTION",
        }
    }
}

struct Rule {
    regex: Regex,
    /// Index into `Detector::kinds`.
    kind: usize,
    /// The capture group that is the finding (0: the whole match).
    group: usize,
}

/// One finding: where, and which detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub span: Range<usize>,
    /// Where the rule's whole match starts: before `span` when the finding
    /// is a capture group (a bearer token without its "Bearer").
    pub matched: usize,
    /// Index into `Detector::kinds`.
    pub kind: usize,
}

type CacheFn = Box<dyn Fn() -> Cache + Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe>;

/// A policy's detectors compiled together.
pub struct Detector {
    set: RegexSet,
    rules: Vec<Rule>,
    pub kinds: Vec<Kind>,
    /// Every rule in one anchored lazy DFA that reports all matches: the
    /// streaming side asks it whether a match could still run on.
    live: std::sync::Arc<DFA>,
    /// The lazy DFA's caches, one per thread that uses it.
    caches: Pool<Cache, CacheFn>,
    /// The prompt-injection rules, with the kind index they report as;
    /// requests only (`find_request`).
    injection: Option<(Injection, usize)>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("kinds", &self.kinds).finish()
    }
}

/// Compiled size caps: a custom pattern cannot make a policy take more
/// than this (the regex crate's defaults are larger).
const SIZE_LIMIT: usize = 8 << 20;

impl Detector {
    /// Err: a pattern that does not compile (named, with the reason).
    pub fn new(builtins: &[Builtin], custom: &[(String, String)], words: &[String]) -> Result<Detector, String> {
        let mut kinds = Vec::new();
        let mut sources: Vec<(String, usize, usize)> = Vec::new();
        for &b in builtins {
            kinds.push(Kind::Builtin(b));
            for &(p, group) in b.patterns() {
                sources.push((p.to_string(), kinds.len() - 1, group));
            }
        }
        for (name, pattern) in custom {
            kinds.push(Kind::Custom { name: name.clone(), label: name.to_ascii_uppercase() });
            sources.push((pattern.clone(), kinds.len() - 1, 0));
        }
        if !words.is_empty() {
            kinds.push(Kind::Words);
            let alternatives: Vec<String> = words.iter().map(|w| words_pattern(w)).collect();
            sources.push((format!(r"(?i)(?-u:\b)(?:{})(?-u:\b)", alternatives.join("|")), kinds.len() - 1, 0));
        }
        let set = regex::RegexSetBuilder::new(sources.iter().map(|s| &s.0))
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        let rules: Vec<Rule> = sources
            .into_iter()
            .map(|(p, kind, group)| {
                let regex = regex::RegexBuilder::new(&p).size_limit(SIZE_LIMIT).build().map_err(|e| e.to_string())?;
                Ok(Rule { regex, kind, group })
            })
            .collect::<Result<_, String>>()?;
        let patterns: Vec<&str> = rules.iter().map(|r: &Rule| r.regex.as_str()).collect();
        let live = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    // A Unicode \b in a custom pattern makes non-ASCII bytes
                    // "quit" bytes; `live_from` then holds from there.
                    .unicode_word_boundary(true)
                    .cache_capacity(1 << 20),
            )
            .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(SIZE_LIMIT)))
            .build_many(&patterns)
            .map_err(|e| e.to_string())?;
        let live = std::sync::Arc::new(live);
        let for_caches = live.clone();
        let caches: Pool<Cache, CacheFn> = Pool::new(Box::new(move || for_caches.create_cache()));
        Ok(Detector { set, rules, kinds, live, caches, injection: None })
    }

    /// Adds the prompt-injection rules, scored against `threshold`.
    pub fn with_injection(mut self, threshold: f64) -> Detector {
        self.kinds.push(Kind::PromptInjection);
        self.injection = Some((Injection::new(threshold), self.kinds.len() - 1));
        self
    }

    /// The findings in a string of a request: `find`'s, and the
    /// prompt-injection rules' where the policy has them (an injection
    /// finding overlapping another keeps the earlier one).
    pub fn find_request(&self, text: &str, out: &mut Vec<Finding>) {
        self.find(text, out);
        let Some((inj, kind)) = &self.injection else { return };
        let before = out.len();
        inj.find(text, *kind, out);
        if out.len() > before && before > 0 {
            non_overlapping(out);
        }
    }

    /// The earliest char boundary at or after `from` where a finding could
    /// begin that the end of `text` does not decide yet: the anchored DFA
    /// started there is still alive after the last byte. None: every
    /// finding that starts in `text[from..]` is already final.
    pub fn live_from(&self, text: &str, from: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut cache = self.caches.get();
        (from..bytes.len()).filter(|&i| text.is_char_boundary(i)).find(|&i| self.alive(&mut cache, bytes, i))
    }

    /// Whether the anchored search from `at` can still match on past the
    /// end of `hay`. When the lazy DFA gives up (a quit byte, a thrashing
    /// cache) the answer is yes: holding more is always safe.
    fn alive(&self, cache: &mut Cache, hay: &[u8], at: usize) -> bool {
        let input = Input::new(hay).range(at..).anchored(Anchored::Yes);
        let Ok(mut sid) = self.live.start_state_forward(cache, &input) else { return true };
        for &b in &hay[at..] {
            match self.live.next_state(cache, sid, b) {
                Ok(next) if next.is_dead() => return false,
                Ok(next) if next.is_quit() => return true,
                Ok(next) => sid = next,
                Err(_) => return true,
            }
        }
        !sid.is_dead()
    }

    /// The findings in `text`, in order, none overlapping (at one start the
    /// longest wins).
    pub fn find(&self, text: &str, out: &mut Vec<Finding>) {
        self.find_at(text, 0, out, &mut Vec::new());
    }

    /// The findings that start at or after `from` (what lies before it is
    /// context: look-behind and the validators see it). After a private-key
    /// block the search starts over at its end, so a live stream, which
    /// drops such a block as it passes, finds the same as a whole text.
    /// `matches` gets every rule match, valid or not: where each rule's
    /// search resumes depends on them, so a stream may not cut inside one.
    pub fn find_at(&self, text: &str, from: usize, out: &mut Vec<Finding>, matches: &mut Vec<Range<usize>>) {
        out.clear();
        matches.clear();
        let mut at = from;
        let mut found = Vec::new();
        while at <= text.len() {
            let before = matches.len();
            self.find_once(text, at, &mut found, matches);
            let pem = found.iter().position(|f| text[f.span.clone()].starts_with("-----BEGIN"));
            match pem {
                Some(i) if found[i].span.end < text.len() => {
                    // Matches inside the block do not count: the search
                    // starts over after it.
                    let start = found[i].span.start;
                    let mut n = before;
                    matches.retain(|m| {
                        n += 1;
                        n - 1 < before || m.start < start
                    });
                    at = found[i].span.end;
                    out.extend(found.drain(..=i));
                }
                _ => {
                    out.append(&mut found);
                    return;
                }
            }
        }
    }

    fn find_once(&self, text: &str, from: usize, out: &mut Vec<Finding>, matches: &mut Vec<Range<usize>>) {
        out.clear();
        let hits = self.set.matches_at(text, from);
        if !hits.matched_any() {
            return;
        }
        for i in hits.iter() {
            let rule = &self.rules[i];
            let kind = &self.kinds[rule.kind];
            let mut at = from;
            while at <= text.len() {
                let found = if rule.group == 0 {
                    rule.regex.find_at(text, at).map(|m| (m.range(), m.range()))
                } else {
                    rule.regex.captures_at(text, at).and_then(|c| {
                        let whole = c.get(0)?.range();
                        Some((whole, c.get(rule.group).map_or(0..0, |g| g.range())))
                    })
                };
                let Some((whole, group)) = found else { break };
                matches.push(whole.clone());
                if !group.is_empty()
                    && let Some(span) = accept(kind, text, group)
                {
                    out.push(Finding { span, matched: whole.start, kind: rule.kind });
                }
                // An empty match moves on by one char, as find_iter does.
                at = if whole.is_empty() { next_char(text, whole.end) } else { whole.end };
            }
        }
        non_overlapping(out);
    }
}

/// Findings in order of where they start, none overlapping: at one start
/// the longest wins, and one that starts inside a kept finding goes.
fn non_overlapping(out: &mut Vec<Finding>) {
    out.sort_by(|a, b| a.span.start.cmp(&b.span.start).then(b.span.end.cmp(&a.span.end)));
    let mut end = 0;
    out.retain(|f| {
        let keep = f.span.start >= end;
        if keep {
            end = f.span.end;
        }
        keep
    });
}

/// The char boundary after `i` (past the end when `i` is the end).
fn next_char(text: &str, i: usize) -> usize {
    text[i..].chars().next().map_or(i + 1, |c| i + c.len_utf8())
}

/// A word or phrase as a pattern: literal, any run of whitespace between
/// its words.
fn words_pattern(w: &str) -> String {
    w.split_whitespace().map(regex::escape).collect::<Vec<_>>().join(r"\s+")
}

/// The finding's span if the candidate is one.
fn accept(kind: &Kind, text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let Kind::Builtin(b) = kind else { return Some(span) };
    let s = &text[span.clone()];
    let before = text[..span.start].bytes().next_back();
    let after = text[span.end..].bytes().next();
    let ok = match b {
        Builtin::Email => valid_email(s),
        Builtin::Phone => valid_phone(s, before, after),
        Builtin::CreditCard => valid_card(s),
        Builtin::Iban => valid_iban(s),
        Builtin::UsSsn => valid_ssn(s),
        Builtin::IpAddress => valid_ip(s, before, after),
        Builtin::Secret if s.starts_with("-----BEGIN") => return Some(span.start..pem_end(text, span.end)),
        Builtin::Secret => true,
    };
    ok.then_some(span)
}

/// A PEM block ends after its END line; a block cut short is a secret to
/// the end of the text.
fn pem_end(text: &str, from: usize) -> usize {
    let rest = &text[from..];
    let Some(end) = rest.find("-----END ") else { return text.len() };
    let close = &rest[end + 9..];
    match close.find("-----") {
        Some(i) => from + end + 9 + i + 5,
        None => text.len(),
    }
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.bytes().filter(u8::is_ascii_digit).map(|d| u32::from(d - b'0'))
}

fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    !local.starts_with('.') && !local.ends_with('.') && !local.contains("..") && domain.len() <= 253
}

/// Phone numbers: 8 to 15 digits after a `+` (E.164), else 10 or 11 digits
/// written in groups ("(415) 555-2671", "415-555-2671", "415.555.2671").
/// A plain run of digits is not a phone (order numbers, ids); neither is
/// anything glued to letters or digits around it, nor a date.
fn valid_phone(s: &str, before: Option<u8>, after: Option<u8>) -> bool {
    if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'+')
        || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return false;
    }
    let n = digits(s).count();
    let plus = s.starts_with('+');
    let groups = s.split(|c: char| " ().-".contains(c)).filter(|g| !g.is_empty()).count();
    // Separators never run three deep ("1 - - 2" is not a number).
    if s.contains("  ") || s.contains("--") || s.contains("..") {
        return false;
    }
    if plus { (8..=15).contains(&n) } else { (10..=11).contains(&n) && (groups >= 3 || s.starts_with('(')) }
}

/// Payment cards: 13 to 19 digits, one kind of separator at most, a
/// known first digit (2–6: Mastercard, Amex/Diners/JCB, Visa, Mastercard,
/// Discover/UnionPay) and a valid Luhn check digit.
fn valid_card(s: &str) -> bool {
    let seps: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_digit()).collect();
    if seps.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    let ds: Vec<u32> = digits(s).collect();
    if !(13..=19).contains(&ds.len()) || !(2..=6).contains(&ds[0]) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// IBAN lengths of the countries that issue them most (ISO 13616 registry);
/// other codes are held to the general 15–34.
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AT", 20),
    ("BE", 16),
    ("CH", 21),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GR", 27),
    ("IE", 22),
    ("IT", 27),
    ("LU", 20),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("SE", 24),
];

/// IBANs: the country's length and the mod-97 check (ISO 7064).
fn valid_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|&b| b != b' ').collect();
    let want = IBAN_LENGTHS.iter().find(|(c, _)| c.as_bytes() == &compact[..2]).map(|&(_, n)| n);
    match want {
        Some(n) if compact.len() != n => return false,
        None if !(15..=34).contains(&compact.len()) => return false,
        _ => {}
    }
    let rotated = compact[4..].iter().chain(&compact[..4]);
    let mut rem = 0u32;
    for &c in rotated {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    rem == 1
}

/// US social security numbers: area 001–899 but not 666, group 01–99,
/// serial 0001–9999 (SSA's never-issued ranges).
fn valid_ssn(s: &str) -> bool {
    let area: u32 = s[..3].parse().unwrap_or(0);
    let group: u32 = s[4..6].parse().unwrap_or(0);
    let serial: u32 = s[7..].parse().unwrap_or(0);
    (1..900).contains(&area) && area != 666 && group != 0 && serial != 0
}

/// IPv4 in dotted quads (each ≤ 255, no leading zeros) not inside a longer
/// dotted run (a version such as 1.2.3.4.5); IPv6 as std parses it, with at
/// least three groups written (so "a::b" or a clock "10:30" are not).
fn valid_ip(s: &str, before: Option<u8>, after: Option<u8>) -> bool {
    if s.contains('.') {
        let dotted_run = |c: Option<u8>| c == Some(b'.');
        if dotted_run(before) || (dotted_run(after)) {
            return false;
        }
        return s.split('.').all(|p| p.parse::<u8>().is_ok() && (p == "0" || !p.starts_with('0')));
    }
    if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b':')
        || after.is_some_and(|c| c.is_ascii_alphanumeric() || c == b':')
    {
        return false;
    }
    s.parse::<std::net::Ipv6Addr>().is_ok() && s.split(':').filter(|g| !g.is_empty()).count() >= 3
}

#[cfg(test)]
mod tests;

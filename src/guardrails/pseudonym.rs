//! Pseudonymization: a request's findings become numbered placeholders
//! (`[EMAIL_1]`, `[EMAIL_2]`), the same value always the same placeholder
//! within the request, and the answer the client receives gets the values
//! back. The mapping lives in the request's context only: it is never
//! stored, logged or cached.
//!
//! Placeholders in answers are found by one pattern compiled at start
//! (`restorer`); a match that is not one of this request's placeholders is
//! left as the model wrote it. On streams the restore is one more stage
//! after the response policies (`LiveText` in `Mode::Restore`), so a
//! placeholder split across chunks is held until it is whole, and the
//! restored values are not redacted again by those policies.

use std::collections::HashMap;

use super::detect::Detector;

/// The mapping of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pseudonyms {
    /// Placeholder → the original value.
    values: HashMap<String, String>,
    /// (label, value) → its placeholder.
    placeholders: HashMap<(String, String), String>,
    /// Per label, the last number given.
    last: HashMap<String, u32>,
}

impl Pseudonyms {
    /// The placeholder for `value` found by a detector with this marker
    /// label: the one it already has, or the label's next number.
    pub fn placeholder(&mut self, label: &str, value: &str) -> &str {
        let key = (label.to_string(), value.to_string());
        if !self.placeholders.contains_key(&key) {
            let n = self.last.entry(label.to_string()).or_insert(0);
            *n += 1;
            let p = format!("[{label}_{n}]");
            self.values.insert(p.clone(), value.to_string());
            self.placeholders.insert(key.clone(), p);
        }
        self.placeholders.get(&key).map_or("", String::as_str)
    }

    /// The value a placeholder stands for, if it is one of this request's.
    pub fn value(&self, placeholder: &str) -> Option<&str> {
        self.values.get(placeholder).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }
}

/// What every placeholder looks like: a marker label, `_`, a number.
const PLACEHOLDER: &str = r"\[[A-Z][A-Z0-9_]{0,63}_[1-9][0-9]{0,8}\]";

/// The detector that finds placeholders in answers.
pub fn restorer() -> Result<Detector, String> {
    Detector::new(&[], &[("pseudonym".to_string(), PLACEHOLDER.to_string())], &[])
}

/// `text` with each of this request's placeholders replaced by its value.
pub fn restore(det: &Detector, map: &Pseudonyms, text: &str) -> Option<String> {
    let mut found = Vec::new();
    det.find(text, &mut found);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut changed = false;
    for f in &found {
        if let Some(v) = map.value(&text[f.span.clone()]) {
            out.push_str(&text[at..f.span.start]);
            out.push_str(v);
            at = f.span.end;
            changed = true;
        }
    }
    out.push_str(&text[at..]);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_placeholder_numbered_per_label() {
        let mut p = Pseudonyms::default();
        assert_eq!(p.placeholder("EMAIL", "a@x.io"), "[EMAIL_1]");
        assert_eq!(p.placeholder("EMAIL", "b@x.io"), "[EMAIL_2]");
        assert_eq!(p.placeholder("PHONE", "+14155552671"), "[PHONE_1]");
        assert_eq!(p.placeholder("EMAIL", "a@x.io"), "[EMAIL_1]");
        assert_eq!(p.value("[EMAIL_2]"), Some("b@x.io"));
        assert_eq!(p.value("[EMAIL_3]"), None);
        assert_eq!(p.len(), 3);
        let det = restorer().unwrap();
        assert_eq!(
            restore(&det, &p, "to [EMAIL_2], [EMAIL_1] and [EMAIL_9]; [PHONE_1].").as_deref(),
            Some("to b@x.io, a@x.io and [EMAIL_9]; +14155552671.")
        );
        assert_eq!(restore(&det, &p, "nothing [EMAIL] here"), None);
    }
}

//! Human durations in config files: `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
//!
//! Hand-written because the grammar is four suffixes and a number; a crate
//! (humantime) would accept far more than we want to document.

use std::time::Duration;

/// Parses `<integer><unit>` where unit is `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. \"500ms\", \"30s\", \"5m\""))?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{text}`: number out of range"))?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => return Err(format!("`{text}`: unknown unit `{other}` (use ms, s, m or h)")),
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis).ok_or_else(|| format!("`{text}`: duration out of range"))
}

/// serde adapter: `#[serde(deserialize_with = "duration::de")]`.
pub fn de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// serde adapter for optional durations.
pub fn de_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects() {
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}

//! Cost per request from its usage and a price table.
//!
//! Cached-input and cache-write tokens are priced on their own, not as fresh
//! input (charging cache reads at the input price overstates Anthropic and
//! OpenAI bills several-fold for agents that reuse long prompts).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::tap::Usage;

/// The defaults shipped with aigw.
pub const DEFAULT_PRICES: &str = include_str!("prices.toml");

/// USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
}

impl Price {
    pub fn cost(&self, u: &Usage) -> f64 {
        let per = |tokens: u64, price: f64| tokens as f64 * price / 1e6;
        per(u.fresh_input(), self.input)
            + per(u.cached_input, self.cached_input.unwrap_or(self.input))
            + per(u.cache_write, self.cache_write.unwrap_or(self.input))
            + per(u.output, self.output)
    }
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    exact: BTreeMap<String, Price>,
    /// Prefix patterns (`claude-sonnet-4*` → `claude-sonnet-4`), longest
    /// first so the first match is the most specific.
    prefixes: Vec<(String, Price)>,
}

impl PriceTable {
    /// The shipped defaults, with `overrides` (from `[pricing]`) on top.
    pub fn new(overrides: &BTreeMap<String, Price>) -> Result<PriceTable, String> {
        let defaults: BTreeMap<String, Price> =
            toml::from_str(DEFAULT_PRICES).map_err(|e| format!("built-in price table: {e}"))?;
        let mut table = PriceTable::default();
        for (pattern, price) in defaults.into_iter().chain(overrides.iter().map(|(k, v)| (k.clone(), *v))) {
            match pattern.strip_suffix('*') {
                Some(prefix) => {
                    table.prefixes.retain(|(p, _)| p != prefix);
                    table.prefixes.push((prefix.to_string(), price));
                }
                None => {
                    table.exact.insert(pattern, price);
                }
            }
        }
        table.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(table)
    }

    pub fn price(&self, model: &str) -> Option<&Price> {
        self.exact
            .get(model)
            .or_else(|| self.prefixes.iter().find(|(p, _)| model.starts_with(p.as_str())).map(|(_, pr)| pr))
    }

    /// Cost in USD, or None for a model without a price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        let mut o = BTreeMap::new();
        o.insert("my-llama".to_string(), Price { input: 0.5, output: 1.0, cached_input: None, cache_write: None });
        o.insert(
            "gpt-4o-mini*".to_string(),
            Price { input: 1.0, output: 2.0, cached_input: Some(0.5), cache_write: None },
        );
        PriceTable::new(&o).expect("valid")
    }

    #[test]
    fn exact_beats_pattern_and_longest_pattern_wins() {
        let t = table();
        assert_eq!(t.price("my-llama").map(|p| p.input), Some(0.5));
        // Overridden pattern, and the longer `gpt-4o-mini*` beats `gpt-4o*`.
        assert_eq!(t.price("gpt-4o-mini-2024-07-18").map(|p| p.input), Some(1.0));
        assert_eq!(t.price("gpt-4o-2024-08-06").map(|p| p.input), Some(2.5));
        assert_eq!(t.price("o3-mini").map(|p| p.input), Some(1.10));
        assert_eq!(t.price("o3").map(|p| p.input), Some(2.0));
        assert!(t.price("unknown-model").is_none());
    }

    #[test]
    fn cached_and_cache_write_tokens_are_priced_separately() {
        let t = table();
        // Anthropic: 25 fresh, 2000 cache reads, 100 cache writes, 15 out.
        let u = Usage { input: 2125, output: 15, cached_input: 2000, cache_write: 100, reasoning: 0 };
        let cost = t.cost("claude-sonnet-4-5", &u).expect("priced");
        let expected = (25.0 * 3.0 + 2000.0 * 0.30 + 100.0 * 3.75 + 15.0 * 15.0) / 1e6;
        assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
        // Charging the cache reads as fresh input would cost 3.4x more.
        let naive = (2125.0 * 3.0 + 15.0 * 15.0) / 1e6;
        assert!(naive / cost > 3.0);
    }
}

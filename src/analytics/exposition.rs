//! `/metrics` (Prometheus text format 0.0.4), `/admin/stats` and
//! `/admin/logs` (JSON), rendered from the collector's state.

use std::{collections::HashMap, fmt::Write as _, sync::Arc};

use super::{Counters, HistKey, Hists, State, log::Recent};

/// Histogram buckets, in seconds.
const BUCKETS: [f64; 18] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The cache store's own figures, read at scrape time.
#[derive(Debug, Default)]
pub struct CacheGauges {
    pub backend: &'static str,
    pub bytes: u64,
    pub entries: u64,
    pub evictions: u64,
    pub redis_errors: u64,
}

/// (hits, misses) over series: a coalesced answer is a hit, an expired
/// entry a miss.
fn hits_misses<'a>(series: impl Iterator<Item = (&'a super::SeriesKey, &'a Counters)>) -> (u64, u64) {
    series.fold((0, 0), |(h, m), (k, c)| match k.cache {
        "hit" => (h + c.requests, m),
        "miss" | "expired" => (h, m + c.requests),
        _ => (h, m),
    })
}

fn hit_rate((hits, misses): (u64, u64)) -> f64 {
    if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 }
}

/// Counters summed per (provider, model).
type ByModel = [((Arc<str>, Arc<str>), Counters)];

fn cache_metrics(out: &mut String, s: &State, models: &ByModel, g: &CacheGauges) {
    let (hits, misses) = hits_misses(s.totals.iter());
    let coalesced: u64 = s.totals.values().map(|c| c.coalesced).sum();
    for (name, kind, help, v) in [
        ("aigw_cache_hits_total", "counter", "Answers served from the cache or a coalesced request.", hits),
        ("aigw_cache_misses_total", "counter", "Cacheable requests that went upstream (expired included).", misses),
        ("aigw_cache_coalesced_total", "counter", "Requests answered by an identical request in flight.", coalesced),
        ("aigw_cache_evictions_total", "counter", "Entries evicted to stay within cache.max_bytes.", g.evictions),
        ("aigw_cache_bytes", "gauge", "Bytes held by the in-process cache store.", g.bytes),
        ("aigw_cache_entries", "gauge", "Entries in the in-process cache store.", g.entries),
        ("aigw_cache_redis_errors_total", "counter", "Redis cache commands that failed or timed out.", g.redis_errors),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    out.push_str("# HELP aigw_cache_saved_tokens_total Tokens cache hits did not spend upstream.\n");
    out.push_str("# TYPE aigw_cache_saved_tokens_total counter\n");
    for ((p, m), c) in models {
        for (dir, n) in [("input", c.saved_input_tokens), ("output", c.saved_output_tokens)] {
            let _ = writeln!(
                out,
                "aigw_cache_saved_tokens_total{{provider=\"{}\",model=\"{}\",direction=\"{dir}\"}} {n}",
                esc(p),
                esc(m)
            );
        }
    }
    out.push_str("# HELP aigw_cache_saved_cost_usd_total What cache hits would have cost upstream, in USD.\n");
    out.push_str("# TYPE aigw_cache_saved_cost_usd_total counter\n");
    for ((p, m), c) in models {
        let _ = writeln!(
            out,
            "aigw_cache_saved_cost_usd_total{{provider=\"{}\",model=\"{}\"}} {}",
            esc(p),
            esc(m),
            c.saved_cost_usd
        );
    }
}

pub fn metrics(s: &State, log_total: u64, cache: &CacheGauges) -> String {
    let mut out = String::with_capacity(4096);
    let mut sorted: Vec<_> = s.totals.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));

    out.push_str("# HELP aigw_requests_total Requests answered, by provider, model, status and cache status.\n");
    out.push_str("# TYPE aigw_requests_total counter\n");
    for (k, c) in &sorted {
        let _ = writeln!(
            out,
            "aigw_requests_total{{provider=\"{}\",model=\"{}\",status=\"{}\",cache=\"{}\"}} {}",
            esc(&k.provider),
            esc(&k.model),
            k.status,
            k.cache,
            c.requests
        );
    }

    // Tokens and cost per provider and model (summed over status and cache).
    let mut by_model: HashMap<(Arc<str>, Arc<str>), Counters> = HashMap::new();
    for (k, c) in &sorted {
        by_model.entry((k.provider.clone(), k.model.clone())).or_default().add(c);
    }
    let mut models: Vec<_> = by_model.into_iter().collect();
    models.sort_by(|a, b| a.0.cmp(&b.0));
    out.push_str(
        "# HELP aigw_tokens_total Tokens by direction: input (not read from a prompt cache), output, cached_input.\n",
    );
    out.push_str("# TYPE aigw_tokens_total counter\n");
    for ((p, m), c) in &models {
        for (dir, n) in
            [("input", c.input_tokens), ("output", c.output_tokens), ("cached_input", c.cached_input_tokens)]
        {
            let _ = writeln!(
                out,
                "aigw_tokens_total{{provider=\"{}\",model=\"{}\",direction=\"{dir}\"}} {n}",
                esc(p),
                esc(m)
            );
        }
    }
    out.push_str("# HELP aigw_cost_usd_total Cost computed from usage and the price table, in USD.\n");
    out.push_str("# TYPE aigw_cost_usd_total counter\n");
    for ((p, m), c) in &models {
        let _ = writeln!(out, "aigw_cost_usd_total{{provider=\"{}\",model=\"{}\"}} {}", esc(p), esc(m), c.cost_usd);
    }

    cache_metrics(&mut out, s, &models, cache);

    let mut hists: Vec<_> = s.hists.iter().collect();
    hists.sort_by(|a, b| a.0.cmp(b.0));
    histogram(
        &mut out,
        "aigw_request_duration_seconds",
        "Whole request, first byte in to last byte out.",
        &hists,
        |h| &h.duration,
    );
    histogram(
        &mut out,
        "aigw_ttfb_seconds",
        "From the request to the first response byte sent to the client.",
        &hists,
        |h| &h.ttfb,
    );

    out.push_str("# HELP aigw_upstream_attempts_total Upstream attempts by outcome.\n");
    out.push_str("# TYPE aigw_upstream_attempts_total counter\n");
    let mut attempts: Vec<_> = s.attempts.iter().collect();
    attempts.sort();
    for ((p, outcome), n) in attempts {
        let _ = writeln!(out, "aigw_upstream_attempts_total{{provider=\"{}\",outcome=\"{outcome}\"}} {n}", esc(p));
    }
    out.push_str("# HELP aigw_ratelimited_total Requests refused by a rate-limit rule or a budget.\n");
    out.push_str("# TYPE aigw_ratelimited_total counter\n");
    let mut limited: Vec<_> = s.ratelimited.iter().collect();
    limited.sort();
    for (rule, n) in limited {
        let _ = writeln!(out, "aigw_ratelimited_total{{rule=\"{}\"}} {n}", esc(rule));
    }
    out.push_str("# HELP aigw_guardrail_actions_total Guardrail findings, by policy, detector, action and side.\n");
    out.push_str("# TYPE aigw_guardrail_actions_total counter\n");
    let mut guarded: Vec<_> = s.guardrails.iter().collect();
    guarded.sort();
    for ((policy, detector, action, direction), n) in guarded {
        let _ = writeln!(
            out,
            "aigw_guardrail_actions_total{{policy=\"{}\",detector=\"{}\",action=\"{action}\",direction=\"{direction}\"}} {n}",
            esc(policy),
            esc(detector)
        );
    }
    out.push_str(
        "# HELP aigw_unpriced_requests_total Requests a budget let through although their model has no price.\n",
    );
    out.push_str("# TYPE aigw_unpriced_requests_total counter\n");
    let mut unpriced: Vec<_> = s.unpriced.iter().collect();
    unpriced.sort();
    for (model, n) in unpriced {
        let _ = writeln!(out, "aigw_unpriced_requests_total{{model=\"{}\"}} {n}", esc(model));
    }
    out.push_str(
        "# HELP aigw_log_records_dropped_total Request-log records dropped because the log channel was full.\n",
    );
    out.push_str("# TYPE aigw_log_records_dropped_total counter\n");
    let _ = writeln!(out, "aigw_log_records_dropped_total {}", s.records_dropped);
    out.push_str("# HELP aigw_log_records_total Request-log records written.\n");
    out.push_str("# TYPE aigw_log_records_total counter\n");
    let _ = writeln!(out, "aigw_log_records_total {log_total}");
    out.push_str("# HELP aigw_connections_open Open connections, client side and upstream side.\n");
    out.push_str("# TYPE aigw_connections_open gauge\n");
    let (client, upstream) = s.open.values().fold((0, 0), |(a, b), (c, u)| (a + c, b + u));
    let _ = writeln!(out, "aigw_connections_open{{side=\"client\"}} {client}");
    let _ = writeln!(out, "aigw_connections_open{{side=\"upstream\"}} {upstream}");
    out
}

/// The rate limiter's own figures, read at scrape time.
pub fn limit_metrics(out: &mut String, buckets: usize, redis_errors: Option<u64>) {
    out.push_str("# HELP aigw_ratelimit_buckets Rate-limit buckets held in this process.\n");
    out.push_str("# TYPE aigw_ratelimit_buckets gauge\n");
    let _ = writeln!(out, "aigw_ratelimit_buckets {buckets}");
    if let Some(e) = redis_errors {
        out.push_str(
            "# HELP aigw_limit_store_redis_errors_total Lease and budget calls to Redis that failed or timed out.\n",
        );
        out.push_str("# TYPE aigw_limit_store_redis_errors_total counter\n");
        let _ = writeln!(out, "aigw_limit_store_redis_errors_total {e}");
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    hists: &[(&HistKey, &Hists)],
    pick: impl Fn(&Hists) -> &hdrhistogram::Histogram<u32>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (k, h) in hists {
        let h = pick(h);
        let labels = format!("provider=\"{}\",model=\"{}\"", esc(&k.provider), esc(&k.model));
        for le in BUCKETS {
            let upto = (le * 1e6) as u64;
            let n: u64 = h
                .iter_recorded()
                .filter(|v| v.value_iterated_to() <= upto)
                .map(|v| u64::from(v.count_at_value()))
                .sum();
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.len());
        let sum =
            h.iter_recorded().fold(0.0, |a, v| a + v.value_iterated_to() as f64 * f64::from(v.count_at_value())) / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.len());
    }
}

fn pcts(h: &hdrhistogram::Histogram<u32>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({ "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99) })
}

fn rows(counters: &HashMap<super::SeriesKey, Counters>, hists: &HashMap<HistKey, Hists>) -> serde_json::Value {
    let mut by_model: HashMap<HistKey, (Counters, u64, (u64, u64))> = HashMap::new();
    for (k, c) in counters {
        let e = by_model.entry(HistKey { provider: k.provider.clone(), model: k.model.clone() }).or_default();
        e.0.add(c);
        if k.status >= 400 {
            e.1 += c.requests;
        }
        let (h, m) = hits_misses(std::iter::once((k, c)));
        e.2.0 += h;
        e.2.1 += m;
    }
    let mut keys: Vec<_> = by_model.keys().cloned().collect();
    keys.sort();
    let rows: Vec<_> = keys
        .iter()
        .filter_map(|k| {
            let (c, errors, hm) = by_model.get(k)?;
            let h = hists.get(k);
            Some(serde_json::json!({
                "provider": &*k.provider,
                "model": &*k.model,
                "requests": c.requests,
                "errors": errors,
                "error_rate": if c.requests > 0 { *errors as f64 / c.requests as f64 } else { 0.0 },
                "cache_hit_rate": hit_rate(*hm),
                "cache_hits": hm.0,
                "saved_input_tokens": c.saved_input_tokens,
                "saved_output_tokens": c.saved_output_tokens,
                "saved_cost_usd": c.saved_cost_usd,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cached_input_tokens": c.cached_input_tokens,
                "estimated": c.estimated,
                "cost_usd": c.cost_usd,
                "duration_ms": h.map_or(serde_json::Value::Null, |h| pcts(&h.duration)),
                "ttfb_ms": h.map_or(serde_json::Value::Null, |h| pcts(&h.ttfb)),
                "upstream_ms": h.map_or(serde_json::Value::Null, |h| pcts(&h.upstream)),
            }))
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// Totals and per provider/model rows for the last minute, the last hour and
/// since start.
pub fn stats(s: &State, cache: &CacheGauges, targets: serde_json::Value) -> String {
    let window = |ring: &std::collections::VecDeque<super::collector::Bucket>, width, buckets: u64| {
        let now = s.bucket_now(width);
        let mut counters: HashMap<super::SeriesKey, Counters> = HashMap::new();
        let mut hists: HashMap<HistKey, Hists> = HashMap::new();
        for b in ring.iter().filter(|b| b.index + buckets > now) {
            for (k, c) in &b.counters {
                counters.entry(k.clone()).or_default().add(c);
            }
            for (k, h) in &b.hists {
                hists.entry(k.clone()).or_default().add(h);
            }
        }
        rows(&counters, &hists)
    };
    let mut total = Counters::default();
    let mut errors = 0;
    for (k, c) in &s.totals {
        total.add(c);
        if k.status >= 400 {
            errors += c.requests;
        }
    }
    serde_json::json!({
        "uptime_s": s.started.elapsed().as_secs(),
        "totals": {
            "requests": total.requests,
            "errors": errors,
            "error_rate": if total.requests > 0 { errors as f64 / total.requests as f64 } else { 0.0 },
            "cache_hit_rate": hit_rate(hits_misses(s.totals.iter())),
            "input_tokens": total.input_tokens,
            "output_tokens": total.output_tokens,
            "cached_input_tokens": total.cached_input_tokens,
            "cost_usd": total.cost_usd,
            "log_records_dropped": s.records_dropped,
        },
        "cache": {
            "backend": cache.backend,
            "hits": hits_misses(s.totals.iter()).0,
            "misses": hits_misses(s.totals.iter()).1,
            "coalesced": total.coalesced,
            "saved_input_tokens": total.saved_input_tokens,
            "saved_output_tokens": total.saved_output_tokens,
            "saved_cost_usd": total.saved_cost_usd,
            "bytes": cache.bytes,
            "entries": cache.entries,
            "evictions": cache.evictions,
            "redis_errors": cache.redis_errors,
        },
        "targets": targets,
        "guardrails": guardrail_rows(s),
        "last_1m": window(&s.short, super::collector::SHORT, 6),
        "last_1h": window(&s.long, super::collector::LONG, 60),
        "since_start": rows(&s.totals, &s.hists),
    })
    .to_string()
}

/// `/admin/stats` `guardrails`: findings since start, sorted.
fn guardrail_rows(s: &State) -> serde_json::Value {
    let mut g: Vec<_> = s.guardrails.iter().collect();
    g.sort();
    g.into_iter()
        .map(|((policy, detector, action, direction), n)| {
            serde_json::json!({
                "policy": &**policy, "detector": &**detector, "action": action,
                "direction": direction, "count": n,
            })
        })
        .collect()
}

/// The most recent records, newest first, filtered by exact matches. The
/// ring holds them in the order the workers' batches arrived, which across
/// workers is not the order they finished in: sorted here (≤ 1,000 records,
/// on the admin thread) rather than on every insert.
pub fn logs(r: &Recent, limit: usize, provider: Option<&str>, model: Option<&str>, status: Option<u16>) -> String {
    let mut matching: Vec<&super::Record> = r
        .records
        .iter()
        .filter(|rec| provider.is_none_or(|p| rec.provider.as_deref() == Some(p)))
        .filter(|rec| model.is_none_or(|m| rec.model.as_deref() == Some(m)))
        .filter(|rec| status.is_none_or(|s| rec.status == s))
        .collect();
    matching.sort_by_key(|rec| std::cmp::Reverse(rec.finished));
    let data: Vec<_> = matching.into_iter().take(limit).map(|rec| rec.to_json()).collect();
    serde_json::json!({ "object": "list", "data": data }).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::analytics::Record;

    /// Batches from two workers arrive in flush order; the log lists the
    /// requests in the order they finished.
    #[test]
    fn logs_are_newest_first_whatever_order_the_batches_came_in() {
        let mut ctx = crate::proxy::ctx::RequestCtx::for_tests();
        let mut recent = Recent::default();
        for ms in [3, 4, 1, 2] {
            recent.push(Record::of(&mut ctx, Duration::from_millis(ms)));
        }
        let v: serde_json::Value = serde_json::from_str(&logs(&recent, 3, None, None, None)).expect("json");
        let order: Vec<f64> =
            v["data"].as_array().expect("data").iter().filter_map(|r| r["duration_ms"].as_f64()).collect();
        assert_eq!(order, [4.0, 3.0, 2.0]);
    }
}

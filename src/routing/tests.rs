use std::time::Duration;

use super::*;
use crate::config::{ProviderKind, Target};

fn route(strategy: Strategy, weights: &[u32]) -> Route {
    Route {
        name: "r".into(),
        strategy,
        targets: weights.iter().enumerate().map(|(i, &w)| Target { provider: i, model: None, weight: w }).collect(),
        max_attempts: 3,
        cache_ttl: None,
        kind: Some(ProviderKind::OpenAi),
        guardrails: Vec::new(),
    }
}

fn router(n: usize) -> Router {
    Router {
        routes: Vec::new(),
        by_name: HashMap::default(),
        health: (0..n).map(|_| Health::new(2, Duration::from_secs(30))).collect(),
        inflight: (0..n).map(|_| AtomicU64::new(0)).collect(),
    }
}

#[test]
fn fallback_order_and_ejection() {
    let r = router(3);
    let route = route(Strategy::Fallback, &[1, 1, 1]);
    assert_eq!(r.order(&route, b"", 1000), vec![0, 1, 2]);
    r.health[0].failure(1000);
    assert_eq!(r.order(&route, b"", 1000), vec![0, 1, 2], "one failure is not enough");
    r.health[0].failure(1000);
    assert_eq!(r.order(&route, b"", 1000), vec![1, 2, 0], "ejected: tried last");
    assert_eq!(r.health[0].state(1000), "open");
    assert_eq!(r.health[0].state(31_001), "half-open");
    assert_eq!(r.order(&route, b"", 31_001), vec![0, 1, 2], "probed after the cool-down");
    r.health[0].success();
    assert_eq!(r.health[0].state(31_001), "closed");
}

#[test]
fn weighted_split_follows_weights() {
    let r = router(2);
    let route = route(Strategy::Weighted, &[3, 1]);
    let firsts = (0..10_000).filter(|_| r.order(&route, b"", 0)[0] == 0).count();
    assert!((7_200..7_800).contains(&firsts), "{firsts} of 10,000 on the weight-3 target");
}

#[test]
fn prefix_affinity_is_sticky_and_spread() {
    let r = router(4);
    let route = route(Strategy::PrefixAffinity, &[1, 1, 1, 1]);
    assert_eq!(r.order(&route, b"system: you are a pirate", 0)[0], r.order(&route, b"system: you are a pirate", 0)[0]);
    let mut counts = [0usize; 4];
    for i in 0..4000 {
        counts[r.order(&route, format!("prefix {i}").as_bytes(), 0)[0]] += 1;
    }
    assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
}

#[test]
fn least_outstanding_prefers_idle_targets() {
    let r = router(3);
    let route = route(Strategy::LeastOutstanding, &[1, 1, 1]);
    let _a = r.start(0);
    let _b = r.start(0);
    let _c = r.start(2);
    assert_eq!(r.order(&route, b"", 0)[0], 1);
    drop((_a, _b));
    assert_ne!(r.order(&route, b"", 0)[0], 2);
}

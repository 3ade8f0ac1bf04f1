//! Limits and budgets shared by two gateways ("hosts") through a real
//! redis-server, spent from leases.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::{process::Command, time::Duration};

use common::*;

fn shared_gateway(redis: std::net::SocketAddr, extra: &str, m: &aigw::mock::MockServer) -> Gateway {
    let toml = format!(
        "[limit_store]\nbackend = \"redis\"\nredis_url = \"redis://{redis}\"\nlease_fraction = 0.25\nlease_ttl = \"500ms\"\noutage_fraction = 0.25\n{extra}\n{}",
        provider("mock", "mock", m.addr)
    );
    Gateway::start("", &toml)
}

fn burst(addrs: &[std::net::SocketAddr], per_addr: usize) -> (usize, usize) {
    let threads: Vec<_> = addrs
        .iter()
        .flat_map(|&a| (0..4).map(move |_| a))
        .map(|addr| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                (0..per_addr / 4)
                    .map(|_| {
                        c.send(&post("/mock/v1/chat/completions", CHAT));
                        c.read_response().status
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    (statuses.iter().filter(|&&s| s == 200).count(), statuses.iter().filter(|&&s| s == 429).count())
}

#[test]
fn two_hosts_share_one_limit_and_survive_an_outage() {
    let redis = RedisServer::start();
    let m = mock();
    const N: usize = 40;
    // 40 per 40 s: one unit back per second; leases of 10.
    let rule = format!("[[rate_limits]]\nname = \"global\"\nkey = \"provider\"\nlimit = {N}\nwindow = \"40s\"\n");
    let (a, b) = (shared_gateway(redis.addr, &rule, &m), shared_gateway(redis.addr, &rule, &m));
    let (ok, limited) = burst(&[a.addr, b.addr], 200);
    // Leases are charged in Redis when taken: together the hosts never
    // pass the limit; at most one unspent lease per host is still out.
    assert!((N - 2 * 10..=N).contains(&ok), "ok {ok}");
    assert_eq!(ok + limited, 400);
    assert_eq!(m.requests(), ok as u64);

    // Redis goes away: each host may spend a quarter of the limit alone
    // (10 here), then refuses — bounded, not open, not closed.
    redis.stop();
    std::thread::sleep(Duration::from_millis(1100));
    let before = m.requests();
    let (ok_a, _) = burst(&[a.addr], 40);
    assert!((1..=11).contains(&ok_a), "outage allowance on one host: {ok_a}");
    assert_eq!(m.requests() - before, ok_a as u64);
    assert!(metric(&metrics_text(a.admin), "aigw_limit_store_redis_errors_total ") > 0.0);
}

#[test]
fn a_budget_holds_across_hosts() {
    let redis = RedisServer::start();
    let m = mock();
    let dir = std::env::temp_dir().join(format!("aigw-access-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.toml");
    let _ = std::fs::remove_file(&file);
    let out = Command::new(env!("CARGO_BIN_EXE_aigw"))
        .args(["keys", "create", "--file", file.to_str().unwrap(), "--name", "shared", "--daily-usd", "200"])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let extra = format!(
        "[auth]\nmode = \"keys\"\nkeys_file = \"{}\"\n[pricing.\"pricey\"]\ninput = 1000000.0\noutput = 1000000.0\n",
        file.display()
    );
    let (a, b) = (shared_gateway(redis.addr, &extra, &m), shared_gateway(redis.addr, &extra, &m));
    let body = r#"{"model":"pricey","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let send = |addr| {
        roundtrip(addr, &post_with("/mock/v1/chat/completions", body, &format!("Authorization: Bearer {key}\r\n")))
    };
    // Alternate hosts until the key is refused on both.
    let mut passed = 0;
    for i in 0..40 {
        let r = send(if i % 2 == 0 { a.addr } else { b.addr });
        match r.status {
            200 => passed += 1,
            429 => assert_eq!(r.error_code(), "budget_exceeded"),
            s => panic!("status {s}"),
        }
    }
    // $24 a request: at most 8 fit in $200 across both hosts.
    assert!((3..=8).contains(&passed), "passed {passed}");
    assert_eq!(send(a.addr).status, 429);
    assert_eq!(send(b.addr).status, 429);
}

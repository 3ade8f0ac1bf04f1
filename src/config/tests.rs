use super::*;

fn errors_of(toml: &str) -> Vec<String> {
    match Config::from_toml(toml) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| format!("{}: {}", e.path, e.message)).collect(),
    }
}

fn assert_rejects(toml: &str, path: &str) {
    let errors = errors_of(toml);
    assert!(errors.iter().any(|e| e.starts_with(&format!("{path}:"))), "expected an error at {path}, got {errors:?}");
}

const MOCK: &str = "[providers.m]\nkind = \"mock\"\n";

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().expect("default config");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.server.workers, Workers::Auto);
    assert_eq!(c.server.pin_workers, Pinning::Auto);
    let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["anthropic", "mock", "openai"]);
    assert!(c.providers[1].base_url.is_none());
}

#[test]
fn defaults_fill_missing_keys() {
    let c = Config::from_toml(MOCK).expect("valid");
    assert_eq!(c.server.limits.max_head_bytes, 65536);
    assert_eq!(c.server.limits.max_body_bytes, 32 << 20);
    assert_eq!(c.providers[0].timeouts.connect, Duration::from_secs(5));
}

#[test]
fn full_provider_parses() {
    let c = Config::from_toml(
        r#"
        [server]
        workers = 3
        io_driver = "epoll"
        shutdown_grace = "2s"
        [providers.vllm]
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v"
        passthrough_auth = true
        headers = { "X-Team" = "infra" }
        connect_timeout = "250ms"
        pool_max_idle = 8
        "#,
    )
    .expect("valid");
    let p = &c.providers[0];
    assert_eq!(c.server.workers.resolve(), 3);
    assert_eq!(c.server.io_driver, IoDriver::Epoll);
    assert_eq!(c.server.timeouts.shutdown_grace, Duration::from_secs(2));
    assert_eq!(p.base_url.as_ref().map(|u| u.path_prefix.as_str()), Some("/v"));
    assert!(p.passthrough_auth);
    assert_eq!(p.headers, vec![("X-Team".to_string(), "infra".to_string())]);
    assert_eq!(p.timeouts.connect, Duration::from_millis(250));
    assert_eq!(p.pool.max_idle, 8);
}

#[test]
fn syntax_error_is_reported() {
    let e = errors_of("[server\n");
    assert!(e[0].contains("TOML syntax"), "{e:?}");
}

#[test]
fn each_rejection_names_its_key() {
    assert_rejects(&format!("[server]\nlisten = \"nope\"\n{MOCK}"), "server.listen");
    assert_rejects(&format!("[server]\nadmin_listen = \"1.2.3.4\"\n{MOCK}"), "server.admin_listen");
    assert_rejects(&format!("[server]\nworkers = 0\n{MOCK}"), "server.workers");
    assert_rejects(&format!("[server]\nworkers = \"many\"\n{MOCK}"), "server.workers");
    assert_rejects(&format!("[server]\npin_workers = \"always\"\n{MOCK}"), "server.pin_workers");
    assert_rejects(&format!("[server]\nbogus = 1\n{MOCK}"), "server.bogus");
    assert_rejects(&format!("[server]\nio_driver = \"kqueue\"\n{MOCK}"), "server.io_driver");
    assert_rejects(&format!("[server]\nkeepalive_timeout = \"5\"\n{MOCK}"), "server.keepalive_timeout");
    assert_rejects(&format!("[server]\nheader_read_timeout = \"0s\"\n{MOCK}"), "server.header_read_timeout");
    assert_rejects(&format!("[server]\nmax_head_bytes = 10\n{MOCK}"), "server.max_head_bytes");
    assert_rejects(&format!("[server]\nmax_headers = 2\n{MOCK}"), "server.max_headers");
    assert_rejects(&format!("[server]\nmax_body_bytes = 0\n{MOCK}"), "server.max_body_bytes");
    assert_rejects("[providers.x]\nkind = \"cohere\"\n", "providers.x.kind");
    assert_rejects("[providers.x]\nkind = \"openai\"\nbase_url = \"ftp://h\"\n", "providers.x.base_url");
    assert_rejects("[providers.x]\nkind = \"openai\"\nfoo = 1\n", "providers.x.foo");
    assert_rejects("[providers.x]\nkind = \"openai\"\napi_key_env = \"\"\n", "providers.x.api_key_env");
    assert_rejects("[providers.x]\nkind = \"openai\"\nheaders = { \"a b\" = \"1\" }\n", "providers.x.headers.a b");
    assert_rejects("[providers.x]\nkind = \"openai\"\nheaders = { \"Host\" = \"1\" }\n", "providers.x.headers.Host");
    assert_rejects("[providers.x]\nkind = \"openai\"\nconnect_timeout = \"0ms\"\n", "providers.x.connect_timeout");
    assert_rejects("[providers.x]\nkind = \"openai\"\ntls_ca_file = \"/nonexistent\"\n", "providers.x.tls_ca_file");
    assert_rejects("[providers.v1]\nkind = \"mock\"\n", "providers.v1");
    assert_rejects("[providers.\"a/b\"]\nkind = \"mock\"\n", "providers.a/b");
    assert_rejects(&format!("[routes.chat]\ntargets = []\n{MOCK}"), "routes.chat.targets");
    assert_rejects(
        &format!("[routes.chat]\ntargets = [{{ provider = \"x\" }}]\n{MOCK}"),
        "routes.chat.targets[0].provider",
    );
    assert_rejects(&format!("[routes.m]\ntargets = [{{ provider = \"m\" }}]\n{MOCK}"), "routes.m");
    assert_rejects(
        &format!("[routes.r]\nstrategy = \"random\"\ntargets = [{{ provider = \"m\" }}]\n{MOCK}"),
        "routes.r.strategy",
    );
    assert_rejects(
        &format!("[routes.r]\nmax_attempts = 0\ntargets = [{{ provider = \"m\" }}]\n{MOCK}"),
        "routes.r.max_attempts",
    );
    assert_rejects(&format!("[auth]\nmode = \"keys\"\n{MOCK}"), "auth.keys_file");
    assert_rejects(&format!("[auth]\nmode = \"open\"\n{MOCK}"), "auth.mode");
    assert_rejects(&format!("[server]\nadmin_listen = \"0.0.0.0:9090\"\n{MOCK}"), "server.admin_listen");
    assert_rejects(&format!("[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n{MOCK}"), "server.trusted_proxies");
    assert_rejects(&format!("[server]\ntls_cert = \"/nonexistent\"\n{MOCK}"), "server.tls_cert");
    let rule = "[[rate_limits]]\nname = \"r\"\nkey = \"ip\"\nlimit = 10\nwindow = \"60s\"\n";
    assert!(errors_of(&format!("{rule}{MOCK}")).is_empty());
    assert_rejects(&format!("{rule}{rule}{MOCK}"), "rate_limits[1].name");
    assert_rejects(&format!("{}{MOCK}", rule.replace("\"ip\"", "\"user\"")), "rate_limits[0].key");
    assert_rejects(&format!("{}{MOCK}", rule.replace("\"ip\"", "\"key\"")), "rate_limits[0].key");
    assert_rejects(&format!("{}{MOCK}", rule.replace("limit = 10", "limit = 0")), "rate_limits[0].limit");
    assert_rejects(&format!("{}{MOCK}", rule.replace("60s", "0s")), "rate_limits[0].window");
    assert_rejects(&format!("{rule}match = {{ provider = \"nope\" }}\n{MOCK}"), "rate_limits[0].match.provider");
    // The tap counts tokens whether analytics records them or not.
    assert!(errors_of(&format!("{rule}unit = \"tokens\"\n[server]\nanalytics = false\n{MOCK}")).is_empty());
    assert_rejects(&format!("{rule}color = 1\n{MOCK}"), "rate_limits[0].color");
    assert_rejects(&format!("[limit_store]\nbackend = \"redis\"\n{MOCK}"), "limit_store.redis_url");
    assert_rejects(&format!("[limit_store]\nlease_fraction = 0.5\n{MOCK}"), "limit_store.backend");
    let store = "[limit_store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n";
    assert_rejects(&format!("{store}lease_fraction = 2.0\n{MOCK}"), "limit_store.lease_fraction");
    assert_rejects(&format!("{store}outage_fraction = 0.0\n{MOCK}"), "limit_store.outage_fraction");
    assert!(errors_of(&format!("{store}{MOCK}")).is_empty());
    assert_rejects(&format!("[cache]\nmax_bytes = 10\n{MOCK}"), "cache.max_bytes");
    assert_rejects(&format!("[cache]\nmax_entry_bytes = 100000000\n{MOCK}"), "cache.max_entry_bytes");
    assert_rejects(&format!("[cache]\nscope = \"global\"\n{MOCK}"), "cache.scope");
    assert_rejects(&format!("[cache]\nvary_headers = [\"a b\"]\n{MOCK}"), "cache.vary_headers");
    assert_rejects(&format!("[cache]\nbackend = \"redis\"\n{MOCK}"), "cache.redis_url");
    assert_rejects(&format!("[cache]\nredis_url = \"redis://127.0.0.1\"\n{MOCK}"), "cache.backend");
    assert_rejects(&format!("[cache]\nbackend = \"redis\"\nredis_url = \"http://x\"\n{MOCK}"), "cache.redis_url");
    assert_rejects(&format!("[cache]\ndefault_ttl = \"5\"\n{MOCK}"), "cache.default_ttl");
    assert_rejects(&format!("[log]\nmax_bytes = 10\n{MOCK}"), "log.max_bytes");
    assert_rejects(&format!("[pricing.\"m\"]\ninput = -1.0\noutput = 1.0\n{MOCK}"), "pricing.\"m\"");
    assert_rejects(&format!("[pricing.\"m\"]\ninput = 1.0\n{MOCK}"), "pricing.\"m\"");
    assert_rejects(&format!("[pricing.\"m\"]\ninput = 1.0\noutput = 1.0\nextra = 2.0\n{MOCK}"), "pricing.\"m\".extra");
    assert_rejects(&format!("[log]\nfile = \"x\"\n{MOCK}"), "log.file");
    assert_rejects("[whatever]\n", "whatever");
    assert_rejects("[server]\n", "providers");
}

#[test]
fn all_errors_are_reported_together() {
    let e = errors_of(
        "[server]\nlisten = \"x\"\nworkers = -1\n[providers.a]\nkind = \"zzz\"\n[providers.b]\nkind = \"openai\"\nbase_url = \"nope\"\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn cache_section() {
    let c = Config::from_toml(&format!(
        "[cache]\ndefault_ttl = \"5m\"\nscope = \"shared\"\nvary_headers = [\"X-Team\"]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6390/2\"\n{MOCK}cache_ttl = \"10s\"\n"
    ))
    .unwrap();
    assert_eq!(c.cache.default_ttl, Duration::from_secs(300));
    assert_eq!(c.cache.scope, CacheScope::Shared);
    assert_eq!(c.cache.vary_headers, vec!["x-team".to_string()]);
    assert!(matches!(&c.cache.backend, CacheBackend::Redis(r) if r.addr.port() == 6390 && r.db == 2));
    assert_eq!(c.providers[0].cache_ttl, Some(Duration::from_secs(10)));
    let d = Config::from_toml(MOCK).unwrap();
    assert_eq!(d.cache.default_ttl, Duration::ZERO);
    assert_eq!(d.cache.backend, CacheBackend::Memory);
}

#[test]
fn routes_section() {
    let c = Config::from_toml(&format!(
        "{MOCK}[providers.a]\nkind = \"anthropic\"\n[routes.chat]\nstrategy = \"prefix-affinity\"\ntargets = [{{ provider = \"m\", model = \"x\" }}, {{ provider = \"m\", weight = 3 }}]\n[routes.mixed]\ntargets = [{{ provider = \"m\" }}, {{ provider = \"a\" }}]\n"
    ))
    .unwrap();
    let chat = c.routes.iter().find(|r| r.name == "chat").unwrap();
    assert_eq!(chat.strategy, Strategy::PrefixAffinity);
    assert_eq!(chat.max_attempts, 3);
    assert_eq!(chat.targets[1].weight, 3);
    assert_eq!(chat.kind, Some(ProviderKind::OpenAi));
    assert_eq!(c.routes.iter().find(|r| r.name == "mixed").unwrap().kind, None);
}

#[test]
fn pinning_is_chosen_from_the_allowed_cores() {
    for (text, want) in [("true", Pinning::On), ("false", Pinning::Off), ("\"auto\"", Pinning::Auto)] {
        let c = Config::from_toml(&format!("[server]\npin_workers = {text}\n{MOCK}")).expect("valid");
        assert_eq!(c.server.pin_workers, want);
    }
    assert!(Pinning::On.resolve() && !Pinning::Off.resolve());
    // Auto: all of a machine's cores are a shared host; a narrowed set is ours.
    assert!(!pins_by_default(16, 16));
    assert!(pins_by_default(4, 16));
    assert_eq!(count_cpu_list("0-15\n"), Some(16));
    assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
    for bad in ["", "3-1", "a", "0-", "1,,2"] {
        assert_eq!(count_cpu_list(bad), None, "{bad:?}");
    }
}

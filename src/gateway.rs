//! The composition root: starting and stopping the gateway from a config.
//! Worker threads for the data listener (`proxy::Worker` on `server/`), one
//! thread for the admin listener, the embedded mock, the resolver, the
//! analytics threads. Everything else is built from here and imports
//! nothing back.

use std::{fmt, io, net::SocketAddr, rc::Rc, sync::Arc};

use crate::{
    admin::AdminCtx,
    analytics::{self, Analytics, recorder},
    auth::Keys,
    config::{AuthMode, Config, UpstreamUrl},
    mock::{MockOptions, MockServer},
    pricing::PriceTable,
    proxy,
    ratelimit::Limiter,
    server::{MakeService, ServiceConfig, runtime::Threads, spawn_service, tls},
    upstream::{Upstream, resolve},
    util::shutdown::Shutdown,
};

#[derive(Debug)]
pub enum StartError {
    Bind { what: &'static str, addr: SocketAddr, source: io::Error },
    Provider(String),
    Io(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { what, addr, source } => write!(f, "cannot listen on {addr} ({what}): {source}"),
            StartError::Provider(e) => write!(f, "{e}"),
            StartError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running gateway.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub workers: usize,
    /// Triggered by SIGTERM/SIGINT (see `shutdown::on_signals`) or by hand.
    pub shutdown: Arc<Shutdown>,
    admin_shutdown: Arc<Shutdown>,
    data: Threads,
    admin: Threads,
    /// The embedded mock provider(s), stopped after the workers drained.
    mocks: Vec<MockServer>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub analytics: Analytics,
    analytics_stop: Arc<Shutdown>,
    analytics_threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Waits for shutdown: workers drain within the grace period, then the
    /// admin listener and the embedded mocks stop.
    pub fn wait(self) {
        self.data.join();
        self.admin_shutdown.trigger();
        self.admin.join();
        for m in self.mocks {
            m.stop();
        }
        // Every worker has sent its last delta and records: let the
        // analytics and log threads finish what is queued and end.
        self.analytics_stop.trigger();
        drop(self.analytics);
        for t in self.analytics_threads {
            let _ = t.join();
        }
    }

    /// Triggers shutdown and waits for it.
    pub fn stop(self) {
        self.shutdown.trigger();
        self.wait();
    }
}

pub fn start(config: &Config) -> Result<Running, StartError> {
    let shutdown = Arc::new(Shutdown::new());
    let (upstreams, mocks) = start_upstreams(config)?;
    resolve::spawn(upstreams.clone(), shutdown.clone()).map_err(StartError::Io)?;

    let analytics_stop = Arc::new(Shutdown::new());
    let (analytics, mut analytics_threads) = start_analytics(config, &analytics_stop)?;
    let prices = PriceTable::new(&config.pricing).map_err(StartError::Provider)?;
    let capture = config.log.capture_bodies.then_some(config.log.capture_max_bytes);
    let cache = Arc::new(crate::cache::Cache::new(config.cache.clone()));
    let keys = match &config.auth.mode {
        AuthMode::None => None,
        AuthMode::Keys { file } => {
            let keys = Keys::load(file.clone()).map_err(StartError::Provider)?;
            analytics_threads.push(keys.watch(analytics_stop.clone()).map_err(StartError::Io)?);
            Some(keys)
        }
    };
    let limiter =
        Arc::new(Limiter::new(&config.rate_limits, config.server.trusted_proxies.clone(), &config.limit_store));
    let limiter_for_admin = limiter.clone();
    let router = Arc::new(crate::routing::Router::new(&config.routes, &config.providers));
    let router_for_admin = router.clone();
    let names: Arc<[String]> = config.providers.iter().map(|p| p.name.clone()).collect();
    let shared = Arc::new(proxy::Shared::new(proxy::SharedParts {
        upstreams: upstreams.clone(),
        prices,
        capture,
        cache: cache.clone(),
        keys,
        limiter,
        router,
        guardrails: Arc::new(
            crate::guardrails::Guardrails::new(&config.guardrails, &config.server.guardrails)
                .map_err(StartError::Provider)?,
        ),
    }));
    let workers = config.server.workers.resolve();
    let tls = match &config.server.tls {
        Some(files) => {
            let tls = tls::ServerTls::load(files.clone()).map_err(StartError::Provider)?;
            analytics_threads.push(tls.watch(analytics_stop.clone()).map_err(StartError::Io)?);
            Some(tls)
        }
        None => None,
    };
    let data_svc = ServiceConfig {
        name: "aigw",
        driver: config.server.io_driver,
        limits: config.server.limits,
        timeouts: config.server.timeouts,
        shutdown: shutdown.clone(),
        tls,
    };
    let for_workers = config.server.analytics.then(|| analytics.clone());
    let lease_flush = match &config.limit_store {
        crate::config::LimitStore::Redis(c) => Some(c.lease_ttl / 2),
        crate::config::LimitStore::Memory => None,
    };
    let flush_stop = shutdown.clone();
    let make: MakeService<proxy::Worker> = Arc::new(move |i| {
        let recorder = for_workers.as_ref().map(|a| Rc::new(recorder::Recorder::new(i, a.clone())));
        if let (0, Some(every)) = (i, lease_flush) {
            monoio::spawn(crate::ratelimit::flush_loop(shared.limiter.clone(), every, flush_stop.clone()));
        }
        Rc::new(proxy::Worker::new(shared.clone(), recorder))
    });
    let (addr, data) =
        spawn_service(&data_svc, config.server.listen, workers, config.server.pin_workers.resolve(), make)
            .map_err(|source| StartError::Bind { what: "data", addr: config.server.listen, source })?;

    // The admin listener outlives the drain so /readyz can say "draining".
    let admin_shutdown = Arc::new(Shutdown::new());
    let admin_listen = config.server.admin_listen;
    let admin_svc = ServiceConfig {
        name: "aigw-admin",
        driver: config.server.io_driver,
        limits: config.server.limits,
        timeouts: config.server.timeouts,
        shutdown: admin_shutdown.clone(),
        tls: None,
    };
    let ready = shutdown.clone();
    let for_admin = analytics.clone();
    let token: Option<Arc<str>> = config
        .auth
        .admin_token_env
        .as_deref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|t| !t.is_empty())
        .map(Arc::from);
    let make: MakeService<AdminCtx> = Arc::new(move |_| {
        Rc::new(AdminCtx {
            listen: admin_listen,
            shutdown: ready.clone(),
            analytics: Some(for_admin.clone()),
            cache: Some(cache.clone()),
            token: token.clone(),
            limiter: Some(limiter_for_admin.clone()),
            router: Some((router_for_admin.clone(), names.clone())),
        })
    });
    let (admin_addr, admin) = match spawn_service(&admin_svc, config.server.admin_listen, 1, false, make) {
        Ok(started) => started,
        Err(source) => {
            shutdown.trigger();
            data.join();
            return Err(StartError::Bind { what: "admin", addr: config.server.admin_listen, source });
        }
    };

    Ok(Running {
        addr,
        admin_addr,
        workers,
        shutdown,
        admin_shutdown,
        data,
        admin,
        mocks,
        upstreams,
        analytics,
        analytics_stop,
        analytics_threads,
    })
}

/// Every provider as the data path sees it; providers without a base URL
/// get an embedded mock of their own.
fn start_upstreams(config: &Config) -> Result<(Vec<Arc<Upstream>>, Vec<MockServer>), StartError> {
    let mut mocks = Vec::new();
    let mut upstreams = Vec::new();
    for (i, p) in config.providers.iter().enumerate() {
        let url = match &p.base_url {
            Some(u) => u.clone(),
            None => {
                let local = SocketAddr::from(([127, 0, 0, 1], 0));
                let m = MockServer::start(local, MockOptions::default(), 1, false).map_err(StartError::Io)?;
                let url = UpstreamUrl::parse(&format!("http://{}", m.addr)).map_err(StartError::Provider)?;
                log::info!("provider {}: built-in mock on {}", p.name, m.addr);
                mocks.push(m);
                url
            }
        };
        let up = Upstream::new(i, p, url).map_err(StartError::Provider)?;
        match &up.unavailable {
            Some(why) => log::warn!("provider {} ({}) is unavailable: {why}", p.name, p.kind.as_str()),
            None => log::info!("provider {} ({}) → {}", p.name, p.kind.as_str(), up.url),
        }
        upstreams.push(Arc::new(up));
    }
    Ok((upstreams, mocks))
}

/// Channels, the collector thread and the log thread.
fn start_analytics(
    config: &Config,
    stop: &Arc<Shutdown>,
) -> Result<(Analytics, Vec<std::thread::JoinHandle<()>>), StartError> {
    let (delta_tx, delta_rx) = crossbeam_channel::bounded(1024);
    // At most 64 Ki records wait for the log thread (256 batches).
    let (record_tx, record_rx) = crossbeam_channel::bounded(64 * 1024 / analytics::recorder::RECORD_BATCH);
    let state = Arc::new(std::sync::Mutex::new(analytics::State::new()));
    let recent = Arc::new(std::sync::Mutex::new(analytics::log::Recent::default()));
    let collector = analytics::Collector::spawn(delta_rx, state.clone(), stop.clone()).map_err(StartError::Io)?;
    let writer = analytics::log::spawn(record_rx, recent.clone(), config.log.clone(), stop.clone()).map_err(|e| {
        StartError::Provider(format!(
            "request log {}: {e}",
            config.log.path.as_deref().map_or("-".into(), |p| p.display().to_string())
        ))
    })?;
    Ok((Analytics { deltas: delta_tx, records: record_tx, state, recent }, vec![collector, writer]))
}

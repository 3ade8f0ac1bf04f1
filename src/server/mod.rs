//! Starting and stopping the gateway: worker threads for the data listener,
//! one thread for the admin listener, the embedded mock, the resolver.

pub mod conn;
pub mod listener;
pub mod runtime;
pub mod shutdown;
pub mod stream;
pub mod tls;

use std::{fmt, io, net::SocketAddr, rc::Rc, sync::Arc};

use conn::Handler;
use listener::ServerCtx;
use runtime::{Driver, Threads};
use shutdown::Shutdown;

use crate::{
    admin::AdminCtx,
    analytics::{self, Analytics, recorder},
    auth::Keys,
    config::AuthMode,
    config::{Config, IoDriver, Limits, ServerTimeouts, UpstreamUrl},
    mock::{MockOptions, MockServer},
    proxy,
    ratelimit::Limiter,
    upstream::{Upstream, resolve},
};

/// A listener's settings shared by all its workers.
pub struct Service {
    pub name: &'static str,
    pub driver: IoDriver,
    pub limits: Limits,
    pub timeouts: ServerTimeouts,
    pub shutdown: Arc<Shutdown>,
    pub tls: Option<Arc<tls::ServerTls>>,
}

pub type MakeHandler = Arc<dyn Fn(usize) -> Handler + Send + Sync>;

/// Binds `workers` SO_REUSEPORT listeners on `addr` and starts one runtime
/// thread per listener. Returns the bound address (port 0 resolved).
pub fn spawn_service(
    svc: &Service,
    addr: SocketAddr,
    workers: usize,
    pin: bool,
    make: MakeHandler,
) -> io::Result<(SocketAddr, Threads)> {
    let driver = Driver::choose(svc.driver)?;
    let listeners = runtime::bind_reuseport(addr, workers)?;
    let bound = listeners.first().map_or(Ok(addr), std::net::TcpListener::local_addr)?;
    let cores = runtime::worker_cores(listeners.len(), pin);
    let mut handles = Vec::with_capacity(listeners.len());
    for (i, (std_listener, core)) in listeners.into_iter().zip(cores).enumerate() {
        let make = make.clone();
        let (name, limits, timeouts, shutdown) = (svc.name, svc.limits, svc.timeouts, svc.shutdown.clone());
        let tls = svc.tls.clone();
        let thread_name = format!("{name}-{i}");
        handles.push(runtime::spawn_runtime(thread_name, driver, core, move |driver: Driver| async move {
            match core {
                Some(c) => log::info!("{name} worker {i}: {} driver, pinned to core {}", driver.as_str(), c.id),
                None => log::info!("{name} worker {i}: {} driver, not pinned", driver.as_str()),
            }
            let listener = match monoio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("{name} worker {i}: cannot register its listener: {e}");
                    return;
                }
            };
            let ctx = Rc::new(ServerCtx::new(i, limits, timeouts, shutdown, tls));
            let handler = make(i);
            let recorder = match &handler {
                Handler::Proxy(w) => w.recorder.clone(),
                _ => None,
            };
            if let Some(r) = &recorder {
                monoio::spawn(recorder::flush_loop(r.clone(), ctx.clone()));
            }
            listener::serve(ctx, listener, handler).await;
            if let Some(r) = recorder {
                r.flush(0);
            }
        })?);
    }
    Ok((bound, Threads { handles }))
}

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
    resolve::spawn(upstreams.clone(), shutdown.clone()).map_err(StartError::Io)?;

    let analytics_stop = Arc::new(Shutdown::new());
    let (analytics, mut analytics_threads) = start_analytics(config, &analytics_stop)?;
    let prices = analytics::pricing::PriceTable::new(&config.pricing).map_err(StartError::Provider)?;
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
    let shared = Arc::new(proxy::Shared::new(upstreams.clone(), prices, capture, cache.clone(), keys, limiter, router));
    let workers = config.server.workers.resolve();
    let tls = match &config.server.tls {
        Some(files) => {
            let tls = tls::ServerTls::load(files.clone()).map_err(StartError::Provider)?;
            analytics_threads.push(tls.watch(analytics_stop.clone()).map_err(StartError::Io)?);
            Some(tls)
        }
        None => None,
    };
    let data_svc = Service {
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
    let make: MakeHandler = Arc::new(move |i| {
        let recorder = for_workers.as_ref().map(|a| Rc::new(recorder::Recorder::new(i, a.clone())));
        if let (0, Some(every)) = (i, lease_flush) {
            monoio::spawn(crate::ratelimit::flush_loop(shared.limiter.clone(), every, flush_stop.clone()));
        }
        Handler::Proxy(Rc::new(proxy::Worker::new(shared.clone(), recorder)))
    });
    let (addr, data) = spawn_service(&data_svc, config.server.listen, workers, config.server.pin_workers, make)
        .map_err(|source| StartError::Bind { what: "data", addr: config.server.listen, source })?;

    // The admin listener outlives the drain so /readyz can say "draining".
    let admin_shutdown = Arc::new(Shutdown::new());
    let admin_svc = Service {
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
    let make: MakeHandler = Arc::new(move |_| {
        Handler::Admin(Rc::new(AdminCtx {
            shutdown: ready.clone(),
            analytics: Some(for_admin.clone()),
            cache: Some(cache.clone()),
            token: token.clone(),
            limiter: Some(limiter_for_admin.clone()),
            router: Some((router_for_admin.clone(), names.clone())),
        }))
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

/// Channels, the collector thread and the log thread.
fn start_analytics(
    config: &Config,
    stop: &Arc<Shutdown>,
) -> Result<(Analytics, Vec<std::thread::JoinHandle<()>>), StartError> {
    let (delta_tx, delta_rx) = crossbeam_channel::bounded(1024);
    let (record_tx, record_rx) = crossbeam_channel::bounded(64 * 1024);
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

//! The listener machinery every service shares: worker threads, the accept
//! loop, the connection loop, listener TLS. It knows nothing of what a
//! service does with a request (`service::Service`): the gateway, the admin
//! listener and the mock all run on it, and none of them is imported here.

pub mod conn;
pub mod listener;
pub mod runtime;
pub mod tls;

use std::{io, net::SocketAddr, rc::Rc, sync::Arc};

use listener::ServerCtx;
use runtime::{Driver, Threads};

use crate::{
    config::{IoDriver, Limits, ServerTimeouts},
    service::Service,
    util::shutdown::Shutdown,
};

/// A listener's settings shared by all its workers.
pub struct ServiceConfig {
    pub name: &'static str,
    pub driver: IoDriver,
    pub limits: Limits,
    pub timeouts: ServerTimeouts,
    pub shutdown: Arc<Shutdown>,
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// Builds worker `i`'s service, on that worker's thread.
pub type MakeService<S> = Arc<dyn Fn(usize) -> Rc<S> + Send + Sync>;

/// Binds `workers` SO_REUSEPORT listeners on `addr` and starts one runtime
/// thread per listener. Returns the bound address (port 0 resolved).
pub fn spawn_service<S: Service>(
    svc: &ServiceConfig,
    addr: SocketAddr,
    workers: usize,
    pin: bool,
    make: MakeService<S>,
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
            let service = make(i);
            service.worker_started(ctx.clone());
            listener::serve(ctx, listener, service.clone()).await;
            service.worker_stopped();
        })?);
    }
    Ok((bound, Threads { handles }))
}

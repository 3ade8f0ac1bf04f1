//! Name resolution off the hot path. getaddrinfo blocks, so a helper thread
//! looks up every provider host at start and then every 30 s, and workers
//! read the last answer when they open a connection (never per request).

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use super::Upstream;
use crate::util::shutdown::Shutdown;

const REFRESH: Duration = Duration::from_secs(30);

pub fn lookup(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Starts the resolver thread when any provider has a host name.
pub fn spawn(upstreams: Vec<Arc<Upstream>>, shutdown: Arc<Shutdown>) -> std::io::Result<()> {
    let named: Vec<_> = upstreams.into_iter().filter(|u| u.needs_dns() && u.unavailable.is_none()).collect();
    if named.is_empty() {
        return Ok(());
    }
    std::thread::Builder::new().name("aigw-resolver".into()).spawn(move || {
        loop {
            for u in &named {
                match lookup(&u.url.host, u.url.port) {
                    Ok(addrs) if !addrs.is_empty() => u.set_addrs(addrs),
                    Ok(_) => log::warn!("provider {}: {} resolved to no address", u.name, u.url.host),
                    Err(e) => log::warn!("provider {}: cannot resolve {}: {e}", u.name, u.url.host),
                }
            }
            if shutdown.sleep(REFRESH) {
                return;
            }
        }
    })?;
    Ok(())
}

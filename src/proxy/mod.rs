//! The per-request pipeline of the data listener:
//! route → rewrite the head → exchange with the upstream → relay the body.

mod headers;
mod relay;

use std::{cell::RefCell, collections::HashMap, sync::Arc};

use crate::{
    error::GatewayError,
    server::conn::{ClientIo, Outcome, Request},
    upstream::{Upstream, exchange, pool::Pool},
};

/// What every worker shares, read-only.
pub struct Shared {
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
}

impl Shared {
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Self {
        let by_name = upstreams.iter().map(|u| (u.name.clone(), u.index)).collect();
        Self { upstreams, by_name }
    }
}

/// Per-worker state of the proxy: shared config plus this worker's pools.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: RefCell<Pool>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>) -> Self {
        let pool = Pool::new(shared.upstreams.iter().map(|u| u.pool).collect());
        Self { shared, pool: RefCell::new(pool) }
    }
}

pub async fn handle(w: &Worker, req: Request, io: &mut ClientIo, keep_alive: bool) -> Result<Outcome, GatewayError> {
    let (up, rest) = route(w, req.head.target())?;
    if let Some(reason) = &up.unavailable {
        return Err(GatewayError::ProviderUnavailable { provider: up.name.clone(), reason: reason.clone() });
    }
    let deadline = req.started + up.timeouts.total;
    let outgoing = headers::upstream_request(&req, up, rest);
    let start = exchange::start(&w.pool, up, outgoing, deadline).await?;
    Ok(relay::relay(w, up, start, io, &req, keep_alive, deadline).await)
}

/// `/{provider}/{rest}` → the provider and `/{rest}` (query included).
fn route<'a>(w: &'a Worker, target: &'a [u8]) -> Result<(&'a Upstream, &'a [u8]), GatewayError> {
    let after_slash = &target[1..];
    let end = after_slash.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after_slash.len());
    let name = &after_slash[..end];
    let rest = &after_slash[end..];
    let found = std::str::from_utf8(name).ok().and_then(|n| w.shared.by_name.get(n));
    match found.and_then(|&i| w.shared.upstreams.get(i)) {
        Some(up) => Ok((up, rest)),
        None => Err(GatewayError::NoSuchRoute { name: String::from_utf8_lossy(name).into_owned() }),
    }
}

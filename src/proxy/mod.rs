//! The data listener's service: the per-request pipeline (`pipeline.rs`,
//! its phases in order over one `RequestCtx`, `ctx.rs`) and the state it
//! runs on: `Shared` (every worker, read-only) and `Worker` (this thread's
//! pools and recorder).

mod access;
mod attempts;
mod cached;
mod capture;
mod controls;
pub mod ctx;
mod guard;
mod headers;
mod models;
mod moderate;
mod outgoing;
mod pipeline;
mod relay;
mod resolve;

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use crate::{
    analytics::recorder::Recorder,
    auth::{Keys, WorkerKeys},
    cache::Cache,
    pricing::PriceTable,
    ratelimit::Limiter,
    service::{ClientIo, Live, Outcome, Refused, Request, Service},
    upstream::{Upstream, pool::Pool},
    util::FastMap as HashMap,
};

/// What `Shared` is built from.
pub struct SharedParts {
    pub upstreams: Vec<Arc<Upstream>>,
    pub prices: PriceTable,
    pub capture: Option<usize>,
    pub cache: Arc<Cache>,
    pub keys: Option<Arc<Keys>>,
    pub limiter: Arc<Limiter>,
    pub router: Arc<crate::routing::Router>,
    pub guardrails: Arc<crate::guardrails::Guardrails>,
}

/// What every worker shares, read-only.
pub struct Shared {
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    pub prices: PriceTable,
    /// `[log] capture_bodies`: how many bytes of each body to keep.
    pub capture: Option<usize>,
    pub cache: Arc<Cache>,
    /// Gateway keys (auth mode "keys").
    pub keys: Option<Arc<Keys>>,
    pub limiter: Arc<Limiter>,
    pub router: Arc<crate::routing::Router>,
    pub guardrails: Arc<crate::guardrails::Guardrails>,
}

impl Shared {
    pub fn new(parts: SharedParts) -> Self {
        let SharedParts { upstreams, prices, capture, cache, keys, limiter, router, guardrails } = parts;
        let by_name = upstreams.iter().map(|u| (u.name.clone(), u.index)).collect();
        Self { upstreams, by_name, prices, capture, cache, keys, limiter, router, guardrails }
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i)).map(|u| &**u)
    }
}

/// Per-worker state of the proxy: shared config, this worker's pools and
/// its analytics recorder.
pub struct Worker {
    pub shared: Arc<Shared>,
    pub pool: RefCell<Pool>,
    pub recorder: Option<Rc<Recorder>>,
    /// Upstream connections in use by requests on this worker.
    active_upstream: Cell<u64>,
    /// This worker's snapshot of the key set.
    keys: Option<WorkerKeys>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, recorder: Option<Rc<Recorder>>) -> Self {
        let pool = Pool::new(shared.upstreams.iter().map(|u| u.pool).collect());
        let keys = shared.keys.clone().map(WorkerKeys::new);
        Self { shared, pool: RefCell::new(pool), recorder, active_upstream: Cell::new(0), keys }
    }

    /// Whether this request's tokens are counted: for analytics, a token
    /// limit or a budget. Then the upstream is asked for identity encoding
    /// and, on OpenAI streams, for its usage chunk, so the tap can read them.
    fn counts_tokens(&self, ctx: &ctx::RequestCtx<'_>) -> bool {
        let a = &ctx.admission;
        self.recorder.is_some()
            || a.reservation.is_some()
            || a.limits.as_ref().is_some_and(crate::ratelimit::Admission::counts_tokens)
    }

    /// An upstream connection is in use / was given back (the gauge counts
    /// those in use plus those idle in the pool).
    fn upstream_busy(&self, busy: bool) {
        let n = self.active_upstream.get();
        self.active_upstream.set(if busy { n + 1 } else { n.saturating_sub(1) });
        if !busy && let Some(r) = &self.recorder {
            r.open_upstream.set(self.active_upstream.get() + self.pool.borrow().total_idle() as u64);
        }
    }
}

/// How often a worker ships its analytics delta and log records (the
/// connection gauges may lag that long). Each flush may wake the worker, the
/// collector and the log thread: at 250 ms, those 24 wake-ups a second with
/// two workers cost 5–10% of the CPU per request at 200 req/s
/// (docs/benchmarks.md, "Light load: wake-ups per request"). Under load
/// the log records go sooner, every `RECORD_BATCH` requests.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Service for Worker {
    // The pipeline's future itself, not an async wrapper around it: one
    // layer less in every connection's task.
    fn handle(&self, req: Request, io: &mut ClientIo, keep_alive: bool) -> impl Future<Output = Outcome> {
        pipeline::handle(self, req, io, keep_alive)
    }

    async fn refuse(&self, r: Refused<'_>, io: &mut ClientIo) {
        pipeline::refuse(self, r, io).await;
    }

    fn worker_started(self: &Rc<Self>, live: Rc<dyn Live>) {
        if let Some(rec) = self.recorder.clone() {
            monoio::spawn(async move {
                loop {
                    monoio::time::sleep(FLUSH_EVERY).await;
                    rec.flush(live.open_connections() as u64);
                    if live.draining() && live.open_connections() == 0 {
                        rec.flush(0);
                        return;
                    }
                }
            });
        }
    }

    fn worker_stopped(&self) {
        if let Some(r) = &self.recorder {
            r.flush(0);
        }
    }
}

//! Worker threads: one monoio runtime per thread, pinned to a core, each
//! with its own `SO_REUSEPORT` listener so the kernel spreads connections
//! and no worker ever hands work to another.

use std::{future::Future, io, net::SocketAddr, sync::Arc, thread::JoinHandle};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::IoDriver;

/// Which io driver a runtime ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    /// The driver for a configured choice. A forced io_uring on a kernel
    /// without it is an error: the operator asked for it explicitly.
    pub fn choose(choice: IoDriver) -> io::Result<Driver> {
        let uring = monoio::utils::detect_uring();
        match choice {
            IoDriver::Auto if uring => Ok(Driver::IoUring),
            IoDriver::Auto | IoDriver::Epoll => Ok(Driver::Epoll),
            IoDriver::IoUring if uring => Ok(Driver::IoUring),
            IoDriver::IoUring => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_driver = \"io_uring\" but this kernel does not offer io_uring (or blocks it)",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// io_uring set up for one thread that owns its ring: COOP_TASKRUN lets the
/// kernel run completion work at our next syscall instead of interrupting
/// the worker, and SINGLE_ISSUER drops locking monoio never needs. Measured
/// with wrk at c=32 on 2 cores: ~5% more requests/s than the plain ring
/// (docs/benchmarks.md). Kernels older than 6.0 refuse the flags; `plain`
/// is then the fallback.
fn uring_builder(tuned: bool) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if tuned {
        b.setup_coop_taskrun().setup_single_issuer();
    }
    b
}

/// Binds `n` listeners on one address with `SO_REUSEPORT`. Port 0 is
/// resolved by the first bind, and the rest join that port.
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Starts one thread running a monoio runtime; `pin` chooses its core.
pub fn spawn_runtime<F, Fut>(
    name: String,
    driver: Driver,
    pin: Option<core_affinity::CoreId>,
    f: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce(Driver) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        if let Some(core) = pin
            && !core_affinity::set_for_current(core)
        {
            log::warn!("{name}: could not pin to core {}", core.id);
        }
        let result = match driver {
            Driver::IoUring => {
                let build = |tuned| {
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .with_entries(1024)
                        .uring_builder(uring_builder(tuned))
                        .enable_timer()
                        .build()
                };
                build(true).or_else(|_| build(false)).map(|mut rt| rt.block_on(f(driver)))
            }
            Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(|mut rt| rt.block_on(f(driver))),
        };
        if let Err(e) = result {
            log::error!("{name}: cannot build the {} runtime: {e}", driver.as_str());
        }
    })
}

/// Cores to pin `n` workers to, round-robin over the cores this process may
/// use (so `taskset` narrows them). Empty when pinning is off.
pub fn worker_cores(n: usize, pin: bool) -> Vec<Option<core_affinity::CoreId>> {
    let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    (0..n).map(|i| if cores.is_empty() { None } else { Some(cores[i % cores.len()]) }).collect()
}

/// A set of started threads that stop together.
pub struct Threads {
    pub handles: Vec<JoinHandle<()>>,
}

impl Threads {
    pub fn join(self) {
        for h in self.handles {
            if h.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
    }
}

/// Shared by everything started with one `Shutdown`.
pub type ShutdownHandle = Arc<crate::util::shutdown::Shutdown>;

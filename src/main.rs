//! The `aigw` binary: parse the command line, load config, run.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use aigw::{
    config::Config,
    gateway,
    mock::{MockOptions, MockServer},
    util::shutdown,
};
use clap::{Parser, Subcommand};

/// Self-hosted AI gateway: one binary between your applications and LLM
/// providers. With no command, serves the embedded default config.
#[derive(Parser)]
#[command(name = "aigw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default command).
    Serve {
        /// TOML config file; without it, the embedded default (mock provider
        /// on /mock, openai and anthropic when their key variables are set).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print every error with its key path.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Manage gateway keys (auth mode "keys"): the running gateway picks up
    /// changes within a second.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Run the built-in mock LLM upstream (OpenAI, Anthropic and Gemini formats).
    Mock {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Content chunks (= completion tokens) per response.
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        /// Milliseconds between stream chunks.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Milliseconds before the first token (or the JSON answer).
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (it is shown once; the file keeps a salted hash).
    Create {
        /// The key file ([auth] keys_file); created if missing.
        #[arg(long)]
        file: PathBuf,
        /// A name for people (team, app).
        #[arg(long)]
        name: String,
        /// Providers it may call (repeat; default: all).
        #[arg(long = "provider")]
        providers: Vec<String>,
        /// Models it may request (repeat; default: all).
        #[arg(long = "model")]
        models: Vec<String>,
        /// Expiry from now: "30d", "12h", "90m".
        #[arg(long)]
        expires_in: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u64>,
        /// Tokens (input + output) per minute.
        #[arg(long)]
        tpm: Option<u64>,
        /// Spend per UTC day, USD.
        #[arg(long)]
        daily_usd: Option<f64>,
        /// Spend per UTC calendar month, USD.
        #[arg(long)]
        monthly_usd: Option<f64>,
        /// Refuse models the price table does not know (the budget cannot
        /// count them); without it they pass, reserved at nothing.
        #[arg(long)]
        deny_unpriced: bool,
        /// A guardrail policy ([guardrails.NAME] in the gateway's config)
        /// for this key's requests (repeat); adds to the route's.
        #[arg(long = "guardrail")]
        guardrails: Vec<String>,
    },
    /// List keys (ids, names, state, restrictions; never the keys).
    List {
        #[arg(long)]
        file: PathBuf,
    },
    /// Revoke a key by id: refused from then on (within a second).
    Revoke {
        #[arg(long)]
        file: PathBuf,
        /// The key's id (the 8 hex digits after `aigw-`).
        id: String,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .init();
    let cli = Cli::parse();
    raise_fd_limit();
    match cli.command.unwrap_or(Command::Serve { config: None }) {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Keys { action } => keys(action),
        Command::Mock { listen, tokens, delay_ms, ttft_ms, workers } => {
            let opts =
                MockOptions { tokens, delay: Duration::from_millis(delay_ms), ttft: Duration::from_millis(ttft_ms) };
            mock(listen, opts, workers.max(1))
        }
    }
}

/// Every proxied connection holds two descriptors (client and upstream):
/// lift the soft limit to the hard one, as nginx's worker_rlimit_nofile does.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass,
    // which lives on this stack frame for the duration of both calls.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match &path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    };
    let config = match config {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "aigw: invalid config {}:\n{errors}",
                path.map_or("(embedded)".into(), |p| p.display().to_string())
            );
            return ExitCode::from(2);
        }
    };
    let running = match gateway::start(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("aigw: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = shutdown::on_signals(running.shutdown.clone()) {
        eprintln!("aigw: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    log::info!(
        "aigw listening on http://{} (admin http://{}), {} workers",
        running.addr,
        running.admin_addr,
        running.workers
    );
    running.wait();
    log::info!("aigw stopped");
    ExitCode::SUCCESS
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!("{}: ok ({} providers)", file.display(), c.providers.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                if e.path.is_empty() {
                    println!("{}: {}", file.display(), e.message);
                } else {
                    println!("{}: {}: {}", file.display(), e.path, e.message);
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn keys(action: KeysAction) -> ExitCode {
    use aigw::auth::manage;
    let result = match action {
        KeysAction::Create {
            file,
            name,
            providers,
            models,
            expires_in,
            rpm,
            tpm,
            daily_usd,
            monthly_usd,
            deny_unpriced,
            guardrails,
        } => {
            let expires_in = match expires_in.as_deref().map(parse_days) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    eprintln!("aigw keys create: --expires-in: {e}");
                    return ExitCode::from(2);
                }
            };
            let new = manage::NewKey {
                name,
                providers,
                models,
                expires_in,
                rpm,
                tpm,
                daily_usd,
                monthly_usd,
                deny_unpriced,
                guardrails,
            };
            manage::create(&file, new).map(|(id, key)| {
                eprintln!("created key {id} in {} (shown once; store it now):", file.display());
                println!("{key}");
            })
        }
        KeysAction::List { file } => manage::list(&file).map(|t| print!("{t}")),
        KeysAction::Revoke { file, id } => manage::revoke(&file, &id).map(|()| eprintln!("revoked {id}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aigw keys: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A duration as config files write it, plus `d` for days.
fn parse_days(text: &str) -> Result<Duration, String> {
    match text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        Some(days) => Ok(Duration::from_secs(days * 86_400)),
        None => aigw::config::duration::parse(text),
    }
}

fn mock(listen: SocketAddr, opts: MockOptions, workers: usize) -> ExitCode {
    let server = match MockServer::start(listen, opts, workers, true) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aigw mock: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = Arc::new(shutdown::Shutdown::new());
    if let Err(e) = shutdown::on_signals(stop.clone()) {
        eprintln!("aigw mock: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    log::info!("aigw mock listening on http://{} ({} tokens, {:?} apart)", server.addr, opts.tokens, opts.delay);
    while !stop.sleep(Duration::from_secs(3600)) {}
    server.stop();
    ExitCode::SUCCESS
}

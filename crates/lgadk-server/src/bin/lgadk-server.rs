//! `lgadk-server`: serves the conversational assistant (the seed example's, on the offline
//! model by default) over LangGraph's API.
//!
//! ```text
//! cargo run -p lgadk-server                                   # 127.0.0.1:2024, memory, offline, no keys
//! cargo run -p lgadk-server -- --bind 0.0.0.0:8123 --backend redis --redis-url redis://127.0.0.1:6390 --api-keys keys.txt
//! ```
#![allow(clippy::print_stderr, reason = "a binary reports bad arguments on stderr")]

use std::process::ExitCode;
use std::time::Duration;

use lgadk_core::Error;
use lgadk_server::{ApiKeys, Cors, Limits, Server};
use lgadk_session::SessionManager;

const USAGE: &str = "usage: lgadk-server [--bind <addr:port>] [--backend memory|redis|postgres] [--redis-url <url>] [--database-url <url>] [--model <provider/model>] [--api-keys <file>] [--cors <origin,...|*>] [--shutdown-grace <seconds>]";

const HELP: &str = "Serves an lgadk conversational assistant (`agent`) over LangGraph's HTTP API.

Options (each also read from the environment variable shown):
  --bind <addr:port>        where to listen (LGADK_BIND; default 127.0.0.1:2024)
  --backend memory|redis|postgres
                            where threads live (LGADK_BACKEND; default memory)
  --redis-url <url>         Redis for --backend redis (LGADK_REDIS_URL)
  --database-url <url>      PostgreSQL for --backend postgres (LGADK_DATABASE_URL)
  --model <provider/model>  the assistant's model (LGADK_MODEL; default offline)
  --api-keys <file>         API key file, one `<key> <user-id> [admin]` per line
                            (LGADK_API_KEYS_FILE); without keys everyone is one anonymous user
  --cors <origins>          comma-separated origins allowed from browsers, or * (LGADK_CORS)
  --shutdown-grace <secs>   how long runs may finish after SIGTERM/SIGINT (default 10)
  -h, --help                print this help

RUST_LOG sets the log filter (default: info).";

#[derive(Debug, Default)]
struct Args {
    bind: Option<String>,
    backend: Option<String>,
    redis_url: Option<String>,
    database_url: Option<String>,
    model: Option<String>,
    api_keys: Option<String>,
    cors: Option<String>,
    shutdown_grace: Option<String>,
}

enum Parsed {
    Help,
    Run(Args),
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut parsed = Args::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => parsed.bind = Some(value()?),
            "--backend" => parsed.backend = Some(value()?),
            "--redis-url" => parsed.redis_url = Some(value()?),
            "--database-url" => parsed.database_url = Some(value()?),
            "--model" => parsed.model = Some(value()?),
            "--api-keys" => parsed.api_keys = Some(value()?),
            "--cors" => parsed.cors = Some(value()?),
            "--shutdown-grace" => parsed.shutdown_grace = Some(value()?),
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Parsed::Run(parsed))
}

fn or_env(value: Option<String>, var: &str) -> Option<String> {
    value.or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

async fn sessions(backend: &str, args: &Args) -> Result<SessionManager, String> {
    match backend {
        "memory" => Ok(SessionManager::in_memory()),
        #[cfg(feature = "redis")]
        "redis" => {
            let url = or_env(args.redis_url.clone(), "LGADK_REDIS_URL")
                .ok_or("--backend redis needs --redis-url or LGADK_REDIS_URL")?;
            SessionManager::redis(&url).await.map_err(|err| format!("cannot use Redis: {}", chain(&err)))
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = or_env(args.database_url.clone(), "LGADK_DATABASE_URL")
                .ok_or("--backend postgres needs --database-url or LGADK_DATABASE_URL")?;
            SessionManager::postgres(&url).await.map_err(|err| format!("cannot use PostgreSQL: {}", chain(&err)))
        }
        other => {
            let _ = args;
            Err(format!("backend `{other}` is not available (memory; redis and postgres with their features)"))
        }
    }
}

/// An error with its sources, one after the other.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn cors(spec: Option<&str>) -> Cors {
    match spec.map(str::trim) {
        None | Some("") => Cors::Disabled,
        Some("*") => Cors::AnyOrigin,
        Some(list) => Cors::Origins(list.split(',').map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect()),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// Listens on `bind` with a backlog for many clients connecting at once (`TcpListener::bind`
/// asks for 1024 pending connections; a burst of a thousand streams overflows it).
async fn listen(bind: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host(bind).await? {
        let socket =
            if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(4096)) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address resolves to nothing")))
}

async fn run(args: Args) -> Result<(), String> {
    let bind = or_env(args.bind.clone(), "LGADK_BIND").unwrap_or_else(|| "127.0.0.1:2024".to_owned());
    let backend = or_env(args.backend.clone(), "LGADK_BACKEND").unwrap_or_else(|| "memory".to_owned());
    let model_spec = or_env(args.model.clone(), "LGADK_MODEL").unwrap_or_else(|| "offline".to_owned());
    let sessions = sessions(&backend, &args).await?;
    let model = lgadk_llm::get_model(&model_spec).map_err(|err| format!("model `{model_spec}`: {}", chain(&err)))?;
    let graph = lgadk_server::conversational_graph(model, sessions.clone()).map_err(|err| chain(&err))?;
    let mut limits = Limits::default();
    if let Some(grace) = args.shutdown_grace.as_deref() {
        let seconds: f64 =
            grace.parse().map_err(|_| format!("--shutdown-grace: `{grace}` is not a number of seconds"))?;
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(format!("--shutdown-grace: `{grace}` is not a number of seconds"));
        }
        limits = limits.with_shutdown_grace(Duration::from_secs_f64(seconds));
    }
    let mut builder = Server::builder()
        .assistant("agent", graph)
        .sessions(sessions)
        .limits(limits)
        .cors(cors(or_env(args.cors.clone(), "LGADK_CORS").as_deref()));
    match or_env(args.api_keys.clone(), "LGADK_API_KEYS_FILE") {
        Some(path) => {
            let keys = ApiKeys::from_file(&path).map_err(|err: Error| chain(&err))?;
            tracing::info!(keys = keys.len(), file = %path, "API keys loaded: requests need a key");
            builder = builder.api_keys(keys);
        }
        None => tracing::warn!(
            "no API keys configured: authentication is OFF and every caller is the one user `{}`",
            lgadk_server::ANONYMOUS_USER
        ),
    }
    let server = builder.build().map_err(|err| chain(&err))?;
    let listener = listen(&bind).await.map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    let local = listener.local_addr().map_or(bind, |addr| addr.to_string());
    tracing::info!(address = %local, backend = %backend, model = %model_spec, "lgadk-server listening on http://{local}");
    server.serve(listener, shutdown_signal()).await.map_err(|err| chain(&err))
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            eprintln!("{HELP}\n\n{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Run(args)) => args,
        Err(err) => {
            eprintln!("lgadk-server: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("lgadk-server: {err}");
            ExitCode::FAILURE
        }
    }
}

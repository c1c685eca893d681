//! What the tool, multi-agent and memory examples share: the transcript macro, the session backend
//! from the command line, error chains and the tracing set-up.

use std::io::Write;
use std::process::ExitCode;

use lgadk::SessionManager;
use lgadk::core::Error;

/// Writes one line of the transcript; a closed stdout must not stop the run half-way.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}
pub(crate) use say;

/// The session manager for `--backend memory|redis` (`redis_url`, else `$LGADK_REDIS_URL`).
pub(crate) async fn session_manager(backend: &str, redis_url: Option<String>) -> Result<SessionManager, String> {
    match backend {
        "memory" => Ok(SessionManager::in_memory()),
        "redis" => redis_manager(redis_url).await,
        other => Err(format!("unknown backend `{other}`: use memory or redis")),
    }
}

/// The Redis URL for `--backend redis`: `--redis-url`, else `$LGADK_REDIS_URL`.
#[cfg(feature = "redis")]
pub(crate) fn redis_url(redis_url: Option<String>) -> Result<String, String> {
    redis_url
        .or_else(|| std::env::var("LGADK_REDIS_URL").ok().filter(|url| !url.trim().is_empty()))
        .ok_or_else(|| "--backend redis needs --redis-url <url> (or LGADK_REDIS_URL)".to_owned())
}

#[cfg(feature = "redis")]
async fn redis_manager(redis_url: Option<String>) -> Result<SessionManager, String> {
    let url = self::redis_url(redis_url)?;
    SessionManager::redis(&url).await.map_err(|err| format!("cannot use Redis at {url}: {}", chain(&err)))
}

#[cfg(not(feature = "redis"))]
async fn redis_manager(_: Option<String>) -> Result<SessionManager, String> {
    Err("this build has no Redis support: build lgadk with its `redis` feature".to_owned())
}

/// The error with its causes, `outer: inner: …`.
pub(crate) fn chain(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

/// `RUST_LOG=lgadk=info` prints the spans (one line as each closes) on stderr.
pub(crate) fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An example's whole command line on explicit streams: `parsed` is `Ok(None)` for `--help`
/// (then `help` goes to `out`), `Err` for bad arguments (to `err` with `usage`, exit code 2);
/// otherwise `run` runs, and its error goes to `err` with exit code 1.
pub(crate) async fn run_cli<A>(
    parsed: Result<Option<A>, String>,
    usage: &str,
    help: &str,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    run: impl AsyncFnOnce(A, &mut (dyn Write + Send)) -> Result<(), String>,
) -> ExitCode {
    let args = match parsed {
        Ok(Some(args)) => args,
        Ok(None) => {
            let _ = write!(out, "{help}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            say!(err, "error: {message}\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(args, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say!(err, "error: {message}");
            ExitCode::FAILURE
        }
    }
}

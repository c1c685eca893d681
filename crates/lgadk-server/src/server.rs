//! [`Server`] and its builder: the assistants it serves, the sessions behind its threads, the
//! API keys, limits and CORS, and serving with a graceful shutdown.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use lgadk_core::{Error, GraphState, Outcome, Result};
use lgadk_graph::CompiledGraph;
use lgadk_session::SessionManager;
use tokio::net::TcpListener;

use crate::assistant::{Assistant, GraphAssistant};
use crate::auth::ApiKeys;
use crate::metrics::Metrics;
use crate::runs::RunRegistry;

/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Limits the server applies to every request and run.
///
/// ```
/// use std::time::Duration;
/// use lgadk_server::Limits;
///
/// let limits = Limits::default().with_max_concurrent_runs_per_user(4).with_request_timeout(Duration::from_secs(10));
/// assert_eq!(limits.max_body_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body accepted, in bytes; a larger one is refused with 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// How long a request may take before it is answered with 504. Streams (`.../stream`), joins
    /// (`.../join`) and `.../wait` are not bound by it: they last as long as their run.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Runs one user may have pending or running at once; the next is refused with 429 and a
    /// `Retry-After` header. Default 16.
    pub max_concurrent_runs_per_user: usize,
    /// On shutdown, how long runs in flight may take to finish before they are cancelled
    /// (a cancelled run saves nothing). Default 10 s.
    pub shutdown_grace: Duration,
    /// Finished runs kept in memory for `runs.get`, `runs.list` and `runs.join`, across all
    /// threads; the oldest are forgotten first. Default 10,000.
    pub finished_runs_kept: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: Duration::from_secs(30),
            max_concurrent_runs_per_user: 16,
            shutdown_grace: Duration::from_secs(10),
            finished_runs_kept: 10_000,
        }
    }
}

impl Limits {
    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    #[must_use]
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`max_concurrent_runs_per_user`](Self::max_concurrent_runs_per_user).
    #[must_use]
    pub fn with_max_concurrent_runs_per_user(mut self, runs: usize) -> Self {
        self.max_concurrent_runs_per_user = runs;
        self
    }

    /// Sets [`shutdown_grace`](Self::shutdown_grace).
    #[must_use]
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets [`finished_runs_kept`](Self::finished_runs_kept).
    #[must_use]
    pub fn with_finished_runs_kept(mut self, runs: usize) -> Self {
        self.finished_runs_kept = runs;
        self
    }
}

/// Which browser origins may call the server (CORS). The default allows none: browsers then
/// refuse cross-origin calls, and other clients are unaffected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cors {
    /// No CORS headers are sent.
    #[default]
    Disabled,
    /// Any origin (`Access-Control-Allow-Origin: *`); credentials are never allowed with it.
    AnyOrigin,
    /// These exact origins, e.g. `https://chat.example.com`.
    Origins(Vec<String>),
}

/// An HTTP server speaking LangGraph's API over lgadk graphs and sessions.
///
/// Build one with [`Server::builder`], then either [`serve`](Self::serve) it on a listener
/// or mount [`into_router`](Self::into_router) in an existing axum application.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use lgadk_server::Server;
/// use lgadk_session::SessionManager;
///
/// let sessions = SessionManager::in_memory();
/// let graph = lgadk_server::conversational_graph(lgadk_server::offline_model(), sessions.clone())?;
/// let server = Server::builder().assistant("agent", graph).sessions(sessions).build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
/// // Serves until the future resolves; here it stops at once.
/// server.serve(listener, async {}).await?;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    pub(crate) state: Arc<AppState>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("assistants", &self.state.assistants.keys().collect::<Vec<_>>())
            .field("auth", &self.state.keys.is_some())
            .field("limits", &self.state.limits)
            .finish_non_exhaustive()
    }
}

/// What every request handler shares.
pub(crate) struct AppState {
    pub(crate) assistants: BTreeMap<String, Arc<dyn Assistant>>,
    /// The assistant used for a thread's state when its metadata names none.
    pub(crate) default_assistant: String,
    pub(crate) sessions: SessionManager,
    pub(crate) keys: Option<ApiKeys>,
    pub(crate) limits: Limits,
    pub(crate) cors: Cors,
    pub(crate) runs: Arc<RunRegistry>,
    pub(crate) metrics: Metrics,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
}

/// Builds a [`Server`]: see [`Server::builder`].
#[derive(Default)]
#[must_use]
pub struct ServerBuilder {
    assistants: Vec<(String, Arc<dyn Assistant>)>,
    sessions: Option<SessionManager>,
    keys: Option<ApiKeys>,
    limits: Limits,
    cors: Cors,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("assistants", &self.assistants.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("auth", &self.keys.is_some())
            .field("limits", &self.limits)
            .field("cors", &self.cors)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Serves `graph` as the assistant `name` (its `assistant_id` and `graph_id`). The first
    /// assistant added is the default one, whose state type reads threads no run has named
    /// an assistant for.
    pub fn assistant<S: GraphState>(mut self, name: impl Into<String>, graph: CompiledGraph<S>) -> Self {
        let name = name.into();
        let assistant: Arc<dyn Assistant> = Arc::new(GraphAssistant::new(name.clone(), graph));
        self.assistants.push((name, assistant));
        self
    }

    /// The session manager behind threads (thread = session). It must be the one the
    /// assistants' graphs save to; without it, the first assistant's is used.
    pub fn sessions(mut self, sessions: SessionManager) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Requires an API key on every request except `/ok`, `/ready` and `/metrics`, each key
    /// standing for a user. Without keys every caller is one anonymous user.
    pub fn api_keys(mut self, keys: ApiKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Body size, timeout, per-user run and shutdown limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Which browser origins may call the server.
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Checks the configuration and builds the server.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without any assistant, with two assistants of one name, with
    /// an assistant name that is not a valid path segment (1–128 bytes of `[A-Za-z0-9._:-]`),
    /// with an API key set that has no key, or with a zero run limit.
    pub fn build(self) -> Result<Server> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        let Some((first, first_assistant)) = self.assistants.first() else {
            return Err(invalid("the server needs at least one assistant".to_owned()));
        };
        let sessions = match self.sessions {
            Some(sessions) => sessions,
            None => first_assistant.sessions().clone(),
        };
        let default_assistant = first.clone();
        let mut assistants = BTreeMap::new();
        for (name, assistant) in self.assistants {
            if lgadk_core::SessionId::parse(&name).is_err() {
                return Err(invalid(format!(
                    "assistant name `{name}` must be 1-128 bytes of ASCII letters, digits and `.`, `_`, `:`, `-`"
                )));
            }
            if assistants.insert(name.clone(), assistant).is_some() {
                return Err(invalid(format!("two assistants are named `{name}`")));
            }
        }
        if self.keys.as_ref().is_some_and(ApiKeys::is_empty) {
            return Err(invalid("the API key set is empty: no caller could be let in".to_owned()));
        }
        if self.limits.max_concurrent_runs_per_user == 0 {
            return Err(invalid("max_concurrent_runs_per_user must be at least 1".to_owned()));
        }
        let metrics = Metrics::new();
        let runs = Arc::new(RunRegistry::new(self.limits, metrics.clone()));
        let state = AppState {
            assistants,
            default_assistant,
            sessions,
            keys: self.keys,
            limits: self.limits,
            cors: self.cors,
            runs,
            metrics,
            created_at: chrono::Utc::now(),
        };
        Ok(Server { state: Arc::new(state) })
    }
}

impl Server {
    /// A builder: add assistants, then [`build`](ServerBuilder::build).
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The routes, with authentication, limits, CORS, metrics and request ids, as an axum
    /// [`Router`] to serve or to nest in another application. Runs it starts are not
    /// cancelled when the router is dropped; use [`serve`](Self::serve) for a graceful
    /// shutdown.
    pub fn into_router(self) -> Router {
        crate::routes::router(self.state)
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down gracefully: it stops
    /// accepting connections, lets runs in flight finish for up to
    /// [`Limits::shutdown_grace`], cancels the rest (a cancelled run saves nothing), and
    /// returns once every connection is closed.
    ///
    /// # Errors
    /// [`Error::Backend`] (backend `"http"`) when accepting or serving fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        let router = self.into_router();
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let runs_state = Arc::clone(&state);
        // When shutdown is asked for: stop taking runs, give the ones in flight their grace,
        // cancel the rest; the connections streaming them then end and the server returns.
        let drain = async move {
            shutdown.await;
            let _ = stopping_tx.send(true);
            tracing::info!("shutting down: no new connections; waiting for runs in flight");
            runs_state.runs.drain(runs_state.limits.shutdown_grace).await;
        };
        let mut stopping = stopping_rx;
        let signal = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        };
        let drain_task = tokio::spawn(drain);
        let served = axum::serve(listener, router).with_graceful_shutdown(signal).await;
        // The server returns once every connection is closed; runs without one may still be
        // finishing within their grace.
        let _ = drain_task.await;
        tracing::info!("server stopped");
        served.map_err(|err| Error::Backend {
            backend: "http",
            op: "serve",
            outcome: Outcome::NotApplied,
            source: err.into(),
        })
    }
}

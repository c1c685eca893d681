//! lgadk over HTTP, speaking LangGraph's API so that its clients work unchanged: the official
//! `langgraph-sdk` (Python) and `@langchain/langgraph-sdk` (JS), and the UIs built on them.
//!
//! A thread is an lgadk session, owned by the user whose API key created it; a thread's state
//! and history are the session's checkpoints; a run is one turn of a [`CompiledGraph`](lgadk_graph::CompiledGraph)
//! (`command.resume` continues an interrupted one), run on a task of its own, in order per
//! thread, and streamed over SSE in LangGraph's stream modes (`values`, `updates`, `messages`,
//! `messages-tuple`, `custom`). Messages go over the wire as LangChain message dicts.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_server::{ApiKeys, Server, conversational_graph, offline_model};
//! use lgadk_session::SessionManager;
//!
//! let sessions = SessionManager::in_memory();
//! let graph = conversational_graph(offline_model(), sessions.clone())?;
//! let keys = ApiKeys::new().with_user("alice-secret-key", "alice")?;
//! let server = Server::builder().assistant("agent", graph).sessions(sessions).api_keys(keys).build()?;
//! // Mount it in an axum application, or serve it with `server.serve(listener, shutdown)`.
//! let router: axum::Router = server.into_router();
//! # let _ = router;
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//! | route | what |
//! |---|---|
//! | `POST /assistants/search`, `GET /assistants/{id}`, `GET /assistants/{id}/schemas` | the graphs served |
//! | `POST /threads`, `GET/PATCH/DELETE /threads/{id}`, `POST /threads/search` | threads (sessions) |
//! | `GET/POST /threads/{id}/state`, `POST /threads/{id}/history` | the latest and earlier checkpoints; `POST .../state` appends messages and sets fields as a new checkpoint |
//! | `POST /threads/{id}/runs` (background), `/runs/stream` (SSE), `/runs/wait` | runs; `/runs`, `/runs/stream`, `/runs/wait` without a thread make a throwaway one |
//! | `GET /threads/{id}/runs`, `GET .../runs/{run}`, `POST .../cancel`, `GET .../join`, `GET .../runs/{run}/stream` | following runs |
//! | `GET /threads/{id}/analytics`, `GET /users/me/analytics` | lgadk's session analytics |
//! | `GET /ok`, `GET /ready`, `GET /info`, `GET /metrics` | operations (no key needed) |
//!
//! Errors answer with LangGraph's shape, `{"detail": "..."}`: 401 without a valid key, 404 for
//! an unknown thread or someone else's, 409 for a busy thread (`multitask_strategy: reject`)
//! or a concurrent writer, 413 for a body over the limit, 422 naming the bad field, 429 with
//! `Retry-After` over the per-user run limit.
//!
//! # Feature flags
//! | feature | default | adds |
//! |---|---|---|
//! | `redis` | yes | `--backend redis` in the binary |
//! | `postgres` | no | `--backend postgres` in the binary |
//! | `openai` | yes | `--model openai/<model>` (and `ollama/<model>`) in the binary |

mod assistant;
mod auth;
mod error;
mod metrics;
mod routes;
mod runs;
mod server;
mod wire;

pub use assistant::{CONVERSATIONAL_PROMPT, conversational_graph, offline_model};
pub use auth::{ANONYMOUS_USER, ApiKeys, MIN_KEY_LEN};
pub use server::{Cors, DEFAULT_MAX_BODY_BYTES, Limits, Server, ServerBuilder};

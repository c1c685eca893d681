//! Graphs of agents for lgadk, run turn by turn on user sessions.
//!
//! A [`StateGraph`] wires nodes ([`Agent`](lgadk_core::Agent)s or async closures) with static
//! and routed edges; [`compile`](StateGraph::compile) checks it and returns a
//! [`CompiledGraph`] bound to a [`SessionManager`](lgadk_session::SessionManager).
//! [`CompiledGraph::run`] then runs one turn of a conversation: it loads the session's state
//! (from a per-process cache when the checkpoint version is unchanged), runs the nodes, saves a
//! checkpoint that appends only the turn's new messages, and tracks the interaction with the
//! usage the model reported and the measured wall time. Runs on one session take turns in a
//! process; across processes the second writer gets [`Error::Conflict`](lgadk_core::Error::Conflict)
//! before anything is written. [`GraphBuilder`] is the LG-ADK-style shortcut for chat graphs,
//! [`CompiledGraph::stream`] streams node and token events, and nodes may interrupt for human
//! input and be [resumed](CompiledGraph::resume).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use lgadk_core::{Agent, ChatState, Message, RunContext, Usage, UserId};
//! use lgadk_graph::{GraphBuilder, RunRequest};
//! use lgadk_session::SessionManager;
//!
//! /// Answers with the number of user messages it has seen: a stand-in for a model.
//! struct Counter;
//!
//! #[async_trait::async_trait]
//! impl Agent<ChatState> for Counter {
//!     fn name(&self) -> &str {
//!         "counter"
//!     }
//!     async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> lgadk_core::Result<()> {
//!         state.messages.push(Message::user(state.input.clone()));
//!         let seen = state.messages.iter().filter(|m| m.role == lgadk_core::Role::User).count();
//!         state.output = format!("message {seen}");
//!         state.messages.push(Message::assistant(state.output.clone()));
//!         ctx.add_usage(Usage::new(5, 2));
//!         Ok(())
//!     }
//! }
//!
//! let sessions = SessionManager::in_memory();
//! let graph = GraphBuilder::new("demo").add_agent(Counter).configure_session_management(sessions.clone()).build()?;
//!
//! let first = graph.run(RunRequest::new("hello").with_user(UserId::parse("alice")?)).await?;
//! let again = graph.run(RunRequest::new("again").with_session(first.session_id.clone())).await?;
//! assert_eq!(again.output, "message 2");
//! assert_eq!(again.state.messages.len(), 4);
//!
//! let summary = sessions.get_session_summary(&first.session_id).await?.expect("the session is live");
//! assert_eq!((summary.interactions, summary.total_tokens_in, summary.total_tokens_out), (2, 10, 4));
//! # Ok(())
//! # }
//! ```
//!
//! Main types: [`StateGraph`], [`GraphBuilder`], [`CompiledGraph`], [`RunRequest`],
//! [`RunResponse`], [`RunOptions`], [`RunEvent`].
//!
//! # Feature flags
//! Session backends are chosen through the [`SessionManager`](lgadk_session::SessionManager)
//! a graph is given, not by features.
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `testing` | no | [`testing`]: the graph-level conformance suite every session backend runs (not semver-stable) |

mod builder;
mod cache;
mod checkpoint;
mod compiled;
mod exec;
mod graph;
mod lock;
pub mod prebuilt;
mod run;
mod stream;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod turn;

pub use builder::GraphBuilder;
pub use cache::DEFAULT_CACHE_CAPACITY;
pub use checkpoint::StateSnapshot;
pub use compiled::CompiledGraph;
pub use graph::{DEFAULT_RECURSION_LIMIT, END, START, StateGraph};
pub use run::{RunOptions, RunRequest, RunResponse};
pub use stream::{RunEvent, RunStream};

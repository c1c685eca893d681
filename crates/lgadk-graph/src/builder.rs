//! [`GraphBuilder`]: the LG-ADK-style way to build a chat graph.

use std::future::Future;
use std::sync::Arc;

use lgadk_core::{Agent, ChatState, GraphError, Result, RunContext};
use lgadk_session::SessionManager;

use crate::compiled::CompiledGraph;
use crate::graph::{END, START, StateGraph};

/// Builds a graph over [`ChatState`] the way LG-ADK's `GraphBuilder` does.
///
/// `add_agent` adds an agent as a node named after [`Agent::name`]. With a single agent and no
/// edges, `build` wires `START → agent → END`; with several agents, connect them with
/// [`add_edge`](Self::add_edge) or [`add_conditional_edges`](Self::add_conditional_edges) and
/// set an entry point. Without
/// [`configure_session_management`](Self::configure_session_management), sessions live in
/// memory ([`SessionManager::in_memory`]).
///
/// ```
/// # use lgadk_core::{Agent, ChatState, RunContext};
/// # struct Echo;
/// # #[async_trait::async_trait]
/// # impl Agent<ChatState> for Echo {
/// #     fn name(&self) -> &str { "echo" }
/// #     async fn call(&self, state: &mut ChatState, _: &RunContext) -> lgadk_core::Result<()> {
/// #         state.output = state.input.clone();
/// #         Ok(())
/// #     }
/// # }
/// use lgadk_graph::GraphBuilder;
/// use lgadk_session::SessionManager;
///
/// let graph = GraphBuilder::new("assistant")
///     .add_agent(Echo)
///     .configure_session_management(SessionManager::in_memory())
///     .build()?;
/// assert_eq!(graph.name(), "assistant");
/// # Ok::<(), lgadk_core::Error>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct GraphBuilder {
    graph: StateGraph<ChatState>,
    nodes: Vec<String>,
    wired: bool,
}

impl GraphBuilder {
    /// A builder for the graph `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { graph: StateGraph::new(name), nodes: Vec::new(), wired: false }
    }

    /// Adds `agent` as a node named [`agent.name()`](Agent::name).
    pub fn add_agent(self, agent: impl Agent<ChatState>) -> Self {
        let name = agent.name().to_owned();
        self.add_node(name, agent)
    }

    /// Adds `agent` as the node `name`.
    pub fn add_node(mut self, name: impl Into<String>, agent: impl Agent<ChatState>) -> Self {
        let name = name.into();
        self.nodes.push(name.clone());
        self.graph = self.graph.add_node(name, agent);
        self
    }

    /// Adds an agent shared with other graphs as the node `name`.
    pub fn add_shared_node(mut self, name: impl Into<String>, agent: Arc<dyn Agent<ChatState>>) -> Self {
        let name = name.into();
        self.nodes.push(name.clone());
        self.graph = self.graph.add_shared_node(name, agent);
        self
    }

    /// Adds an async closure as the node `name` (see [`StateGraph::add_node_fn`]).
    pub fn add_node_fn<F, Fut>(mut self, name: impl Into<String>, node: F) -> Self
    where
        F: Fn(ChatState, Arc<RunContext>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ChatState>> + Send + 'static,
    {
        let name = name.into();
        self.nodes.push(name.clone());
        self.graph = self.graph.add_node_fn(name, node);
        self
    }

    /// Adds an edge (see [`StateGraph::add_edge`]).
    pub fn add_edge(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.wired = true;
        self.graph = self.graph.add_edge(from, to);
        self
    }

    /// Adds a router after `from` (see [`StateGraph::add_conditional_edges`]).
    pub fn add_conditional_edges<R, K, I, A, B>(mut self, from: impl Into<String>, router: R, mapping: I) -> Self
    where
        R: Fn(&ChatState) -> K + Send + Sync + 'static,
        K: Into<String>,
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        self.wired = true;
        self.graph = self.graph.add_conditional_edges(from, router, mapping);
        self
    }

    /// Makes `node` the first node to run.
    pub fn set_entry_point(self, node: impl Into<String>) -> Self {
        self.add_edge(START, node)
    }

    /// Makes the run end after `node`.
    pub fn set_finish_point(self, node: impl Into<String>) -> Self {
        self.add_edge(node, END)
    }

    /// Saves runs to `sessions` and tracks their interactions there.
    pub fn configure_session_management(mut self, sessions: SessionManager) -> Self {
        self.graph = self.graph.with_sessions(sessions);
        self
    }

    /// Sets the recursion limit (see [`StateGraph::with_recursion_limit`]).
    pub fn with_recursion_limit(mut self, limit: usize) -> Self {
        self.graph = self.graph.with_recursion_limit(limit);
        self
    }

    /// Checks the graph and returns it ready to run.
    ///
    /// # Errors
    /// [`GraphError::Invalid`] with no agent, or with several agents and no edges; otherwise
    /// as [`StateGraph::compile`].
    pub fn build(self) -> Result<CompiledGraph<ChatState>> {
        let Self { mut graph, nodes, wired } = self;
        if !wired {
            match nodes.as_slice() {
                [] => {
                    let reason = "it has no agent; add one with `add_agent`".to_owned();
                    return Err(GraphError::Invalid { graph: graph.name().to_owned(), reason }.into());
                }
                [only] => {
                    let only = only.clone();
                    graph = graph.add_edge(START, only.clone()).add_edge(only, END);
                }
                several => {
                    let reason = format!(
                        "it has {} agents and no edges; connect them with `add_edge` or `add_conditional_edges`",
                        several.len()
                    );
                    return Err(GraphError::Invalid { graph: graph.name().to_owned(), reason }.into());
                }
            }
        }
        graph.compile()
    }
}

//! Building a graph: nodes, edges, routers, and the checks [`StateGraph::compile`] runs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lgadk_core::{Agent, Error, GraphError, GraphState, Result, RunContext};
use lgadk_session::SessionManager;

use crate::cache::DEFAULT_CACHE_CAPACITY;
use crate::compiled::CompiledGraph;
use crate::exec::{Outcome, Start};
use tracing::Instrument as _;

/// The virtual node a run starts from: `add_edge(START, "first")` sets the entry point.
pub const START: &str = "__start__";
/// The virtual node a run ends at: `add_edge("last", END)` sets a finish point.
pub const END: &str = "__end__";
/// Steps a run may take before it fails with [`GraphError::RecursionLimit`], unless configured.
pub const DEFAULT_RECURSION_LIMIT: usize = 25;

pub(crate) type NodeFuture<S> = Pin<Box<dyn Future<Output = Result<S>> + Send + 'static>>;
pub(crate) type NodeFn<S> = Arc<dyn Fn(S, Arc<RunContext>) -> NodeFuture<S> + Send + Sync>;
pub(crate) type RouterFn<S> = Arc<dyn Fn(&S) -> String + Send + Sync>;

/// How a node runs: an [`Agent`] working on the state in place, or a closure taking the state
/// and returning the new one.
pub(crate) enum Node<S: GraphState> {
    Agent(Arc<dyn Agent<S>>),
    Fn(NodeFn<S>),
    Subgraph(Arc<dyn Subgraph<S>>),
}

/// A compiled graph run as one node of another: its state mapped in, run, mapped out.
#[async_trait::async_trait]
pub(crate) trait Subgraph<S>: Send + Sync {
    async fn run(&self, state: &mut S, ctx: &Arc<RunContext>) -> Result<()>;
}

struct Mapped<T: GraphState, I, O> {
    graph: CompiledGraph<T>,
    into: I,
    out: O,
}

#[async_trait::async_trait]
impl<S, T, I, O> Subgraph<S> for Mapped<T, I, O>
where
    S: GraphState,
    T: GraphState,
    I: Fn(&S) -> T + Send + Sync,
    O: Fn(&mut S, T) + Send + Sync,
{
    async fn run(&self, state: &mut S, ctx: &Arc<RunContext>) -> Result<()> {
        let mut inner = (self.into)(state);
        let topology = &self.graph.inner.topology;
        let limit = self.graph.options.recursion_limit.unwrap_or(topology.recursion_limit);
        let span = tracing::info_span!("graph.subgraph", graph = %topology.name);
        let outcome = topology.execute(&mut inner, Start::Entry, ctx, None, limit, 0).instrument(span).await?;
        match outcome {
            Outcome::Finished { .. } => {
                (self.out)(state, inner);
                Ok(())
            }
            Outcome::Interrupted { node, value, .. } => Err(Error::Interrupted { node, session_id: None, value }),
        }
    }
}

impl<S: GraphState> Clone for Node<S> {
    fn clone(&self) -> Self {
        match self {
            Self::Agent(agent) => Self::Agent(Arc::clone(agent)),
            Self::Fn(f) => Self::Fn(Arc::clone(f)),
            Self::Subgraph(graph) => Self::Subgraph(Arc::clone(graph)),
        }
    }
}

impl<S: GraphState> fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent(agent) => write!(f, "Agent({:?})", agent.name()),
            Self::Fn(_) => f.write_str("Fn"),
            Self::Subgraph(_) => f.write_str("Subgraph"),
        }
    }
}

struct Branch<S> {
    from: String,
    router: RouterFn<S>,
    mapping: Vec<(String, String)>,
}

/// A graph of nodes over a state `S`, built step by step and checked by [`compile`](Self::compile).
///
/// Nodes are [`Agent`]s ([`add_node`](Self::add_node)) or async closures
/// ([`add_node_fn`](Self::add_node_fn)). Edges are static ([`add_edge`](Self::add_edge)) or
/// chosen at run time by a router ([`add_conditional_edges`](Self::add_conditional_edges)).
/// Cycles are allowed; a run that takes more than the recursion limit of steps (default
/// [`DEFAULT_RECURSION_LIMIT`]) fails with [`GraphError::RecursionLimit`].
///
/// A node with several static edges fans out: the next step runs all targets concurrently, each
/// on its own copy of the state, and folds their results into the state with
/// [`GraphState::merge`] in the order the edges were added.
///
/// Builder methods record what they are given; every check happens in `compile`, so the
/// methods chain without `?`.
///
/// ```
/// use lgadk_core::ChatState;
/// use lgadk_graph::{END, START, StateGraph};
///
/// let graph = StateGraph::<ChatState>::new("echo")
///     .add_node_fn("echo", |mut state: ChatState, _ctx| async move {
///         state.output = state.input.clone();
///         Ok(state)
///     })
///     .add_edge(START, "echo")
///     .add_edge("echo", END)
///     .compile()?;
/// assert_eq!(graph.name(), "echo");
/// # Ok::<(), lgadk_core::Error>(())
/// ```
pub struct StateGraph<S: GraphState> {
    name: String,
    nodes: Vec<(String, Node<S>)>,
    edges: Vec<(String, String)>,
    branches: Vec<Branch<S>>,
    recursion_limit: usize,
    cache_capacity: usize,
    sessions: Option<SessionManager>,
}

impl<S: GraphState> fmt::Debug for StateGraph<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateGraph")
            .field("name", &self.name)
            .field("nodes", &self.nodes.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("edges", &self.edges)
            .field("branches", &self.branches.iter().map(|b| (&b.from, &b.mapping)).collect::<Vec<_>>())
            .field("recursion_limit", &self.recursion_limit)
            .finish_non_exhaustive()
    }
}

impl<S: GraphState> StateGraph<S> {
    /// An empty graph called `name` (the name appears in errors and spans).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
            edges: Vec::new(),
            branches: Vec::new(),
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            sessions: None,
        }
    }

    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds `agent` as the node `name`.
    #[must_use]
    pub fn add_node(mut self, name: impl Into<String>, agent: impl Agent<S>) -> Self {
        self.nodes.push((name.into(), Node::Agent(Arc::new(agent))));
        self
    }

    /// Adds an agent shared with other graphs as the node `name`.
    #[must_use]
    pub fn add_shared_node(mut self, name: impl Into<String>, agent: Arc<dyn Agent<S>>) -> Self {
        self.nodes.push((name.into(), Node::Agent(agent)));
        self
    }

    /// Adds an async closure as the node `name`: it receives a copy of the state and the run's
    /// context and returns the new state.
    #[must_use]
    pub fn add_node_fn<F, Fut>(mut self, name: impl Into<String>, node: F) -> Self
    where
        F: Fn(S, Arc<RunContext>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S>> + Send + 'static,
    {
        let node: NodeFn<S> = Arc::new(move |state, ctx| Box::pin(node(state, ctx)));
        self.nodes.push((name.into(), Node::Fn(node)));
        self
    }

    /// Adds the compiled graph `graph` as the node `name`: `into` maps this graph's state to
    /// the subgraph's, the subgraph runs from its `START` to its `END` (its nodes' usage and
    /// events count for this run; its own sessions and cache are not used), and `out` folds its
    /// final state back in.
    ///
    /// A node of the subgraph that interrupts interrupts this run at the node `name`; on resume
    /// the subgraph runs again from its start, so its nodes before the interrupting one run
    /// again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> lgadk_core::Result<()> {
    /// use lgadk_core::ChatState;
    /// use lgadk_graph::{END, START, StateGraph};
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct Shout {
    ///     text: String,
    /// }
    /// impl lgadk_core::GraphState for Shout {}
    ///
    /// let shout = StateGraph::<Shout>::new("shout")
    ///     .add_node_fn("upper", |mut s: Shout, _| async move {
    ///         s.text = s.text.to_uppercase();
    ///         Ok(s)
    ///     })
    ///     .add_edge(START, "upper")
    ///     .add_edge("upper", END)
    ///     .compile()?;
    /// let graph = StateGraph::<ChatState>::new("outer")
    ///     .add_subgraph("shout", shout, |s: &ChatState| Shout { text: s.input.clone() }, |s, out| s.output = out.text)
    ///     .add_edge(START, "shout")
    ///     .add_edge("shout", END)
    ///     .compile()?;
    /// let state = graph.invoke(ChatState { input: "hi".into(), ..ChatState::default() }).await?;
    /// assert_eq!(state.output, "HI");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn add_subgraph<T, I, O>(mut self, name: impl Into<String>, graph: CompiledGraph<T>, into: I, out: O) -> Self
    where
        T: GraphState,
        I: Fn(&S) -> T + Send + Sync + 'static,
        O: Fn(&mut S, T) + Send + Sync + 'static,
    {
        self.nodes.push((name.into(), Node::Subgraph(Arc::new(Mapped { graph, into, out }))));
        self
    }

    /// Adds an edge: after `from` runs, `to` runs. `from` may be [`START`], `to` may be [`END`].
    #[must_use]
    pub fn add_edge(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.edges.push((from.into(), to.into()));
        self
    }

    /// After `from` runs, `router` looks at the state and returns a key; `mapping` turns the key
    /// into the next node (or [`END`]). `from` may be [`START`] for a routed entry.
    ///
    /// A key missing from `mapping` fails the run with [`GraphError::UnknownRoute`].
    #[must_use]
    pub fn add_conditional_edges<R, K, I, A, B>(mut self, from: impl Into<String>, router: R, mapping: I) -> Self
    where
        R: Fn(&S) -> K + Send + Sync + 'static,
        K: Into<String>,
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        let router: RouterFn<S> = Arc::new(move |state| router(state).into());
        let mapping = mapping.into_iter().map(|(key, to)| (key.into(), to.into())).collect();
        self.branches.push(Branch { from: from.into(), router, mapping });
        self
    }

    /// Makes `node` the first node to run: the same as `add_edge(START, node)`.
    #[must_use]
    pub fn set_entry_point(self, node: impl Into<String>) -> Self {
        self.add_edge(START, node)
    }

    /// Makes the run end after `node`: the same as `add_edge(node, END)`.
    #[must_use]
    pub fn set_finish_point(self, node: impl Into<String>) -> Self {
        self.add_edge(node, END)
    }

    /// Steps a run may take (default [`DEFAULT_RECURSION_LIMIT`]); each step runs the nodes
    /// that became ready together.
    #[must_use]
    pub fn with_recursion_limit(mut self, limit: usize) -> Self {
        self.recursion_limit = limit;
        self
    }

    /// Binds the graph to `sessions`: runs load and save their state there and track their
    /// interactions. Without it the compiled graph uses [`SessionManager::in_memory`].
    #[must_use]
    pub fn with_sessions(mut self, sessions: SessionManager) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// How many sessions' latest states the compiled graph keeps in memory (default 1024), so a
    /// turn on a warm session checks the checkpoint version instead of loading the history.
    /// `0` turns the cache off.
    #[must_use]
    pub fn with_cache_capacity(mut self, sessions: usize) -> Self {
        self.cache_capacity = sessions;
        self
    }

    /// Checks the graph and returns the runnable [`CompiledGraph`].
    ///
    /// # Errors
    /// [`Error::Graph`] with [`GraphError::DuplicateNode`], [`GraphError::UnknownNode`] (an
    /// edge, router mapping or entry naming a node never added), [`GraphError::NoEntryPoint`],
    /// [`GraphError::Unreachable`], [`GraphError::DeadEnd`] (a node with no outgoing edge), or
    /// [`GraphError::Invalid`] (a reserved or empty node name, an edge out of `END` or into
    /// `START`, a node with both static and conditional edges, an empty router mapping, a
    /// recursion limit of 0).
    pub fn compile(self) -> Result<CompiledGraph<S>> {
        let sessions = self.sessions.clone().unwrap_or_else(SessionManager::in_memory);
        let cache_capacity = self.cache_capacity;
        let topology = self.into_topology()?;
        Ok(CompiledGraph::new(topology, sessions, cache_capacity))
    }

    fn invalid(&self, reason: impl Into<String>) -> Error {
        GraphError::Invalid { graph: self.name.clone(), reason: reason.into() }.into()
    }

    fn unknown(&self, node: &str) -> Error {
        GraphError::UnknownNode { graph: self.name.clone(), node: node.to_owned() }.into()
    }

    fn into_topology(self) -> Result<Topology<S>> {
        if self.recursion_limit == 0 {
            return Err(self.invalid("the recursion limit must be at least 1"));
        }
        let mut index = HashMap::new();
        for (i, (name, _)) in self.nodes.iter().enumerate() {
            if name.is_empty() || name == START || name == END {
                return Err(self.invalid(format!("`{name}` cannot name a node")));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(GraphError::DuplicateNode { graph: self.name.clone(), node: name.clone() }.into());
            }
        }
        let target = |to: &str| -> Result<Target> {
            match to {
                END => Ok(Target::End),
                START => Err(self.invalid("no edge can lead into START")),
                _ => index.get(to).map(|&i| Target::Node(i)).ok_or_else(|| self.unknown(to)),
            }
        };
        let source = |from: &str| -> Result<Option<usize>> {
            match from {
                START => Ok(None),
                END => Err(self.invalid("no edge can leave END")),
                _ => index.get(from).map(|&i| Some(i)).ok_or_else(|| self.unknown(from)),
            }
        };

        // Outgoing edges per source; `None` is START.
        let mut statics: HashMap<Option<usize>, Vec<Target>> = HashMap::new();
        for (from, to) in &self.edges {
            let from = source(from)?;
            let to = target(to)?;
            let targets = statics.entry(from).or_default();
            if !targets.contains(&to) {
                targets.push(to);
            }
        }
        let mut branches: HashMap<Option<usize>, Next<S>> = HashMap::new();
        for branch in &self.branches {
            let from = source(&branch.from)?;
            if branch.mapping.is_empty() {
                return Err(self.invalid(format!("the router after `{}` has an empty mapping", branch.from)));
            }
            if statics.contains_key(&from) || branches.contains_key(&from) {
                return Err(self.invalid(format!(
                    "`{}` has conditional edges and other outgoing edges; give it one router or static edges only",
                    branch.from
                )));
            }
            let mut mapping = HashMap::new();
            for (key, to) in &branch.mapping {
                mapping.insert(key.clone(), target(to)?);
            }
            branches.insert(from, Next::Branch { router: Arc::clone(&branch.router), mapping });
        }

        let mut next_of = |from: Option<usize>| -> Option<Next<S>> {
            branches.remove(&from).or_else(|| statics.remove(&from).map(Next::Static))
        };
        let Some(entry) = next_of(None) else {
            return Err(GraphError::NoEntryPoint { graph: self.name.clone() }.into());
        };
        let mut nexts = Vec::with_capacity(self.nodes.len());
        for (i, (name, _)) in self.nodes.iter().enumerate() {
            match next_of(Some(i)) {
                Some(next) => nexts.push(next),
                None => return Err(GraphError::DeadEnd { graph: self.name.clone(), node: name.clone() }.into()),
            }
        }

        // Every node must be reachable from START.
        let mut seen = HashSet::new();
        let mut queue: VecDeque<usize> = entry.targets().collect();
        while let Some(i) = queue.pop_front() {
            if seen.insert(i) {
                queue.extend(nexts[i].targets());
            }
        }
        if let Some((name, _)) = self.nodes.iter().enumerate().find(|(i, _)| !seen.contains(i)).map(|(_, n)| n) {
            return Err(GraphError::Unreachable { graph: self.name.clone(), node: name.clone() }.into());
        }

        let nodes =
            self.nodes.into_iter().zip(nexts).map(|((name, node), next)| CompiledNode { name, node, next }).collect();
        Ok(Topology { name: self.name, nodes, index, entry, recursion_limit: self.recursion_limit })
    }
}

/// Where an edge leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Node(usize),
    End,
}

/// What follows a node (or START).
pub(crate) enum Next<S> {
    Static(Vec<Target>),
    Branch { router: RouterFn<S>, mapping: HashMap<String, Target> },
}

impl<S> Next<S> {
    /// Every node this can lead to, for the reachability check.
    fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        let all: Box<dyn Iterator<Item = &Target>> = match self {
            Self::Static(targets) => Box::new(targets.iter()),
            Self::Branch { mapping, .. } => Box::new(mapping.values()),
        };
        all.filter_map(|target| match target {
            Target::Node(i) => Some(*i),
            Target::End => None,
        })
    }
}

pub(crate) struct CompiledNode<S: GraphState> {
    pub(crate) name: String,
    pub(crate) node: Node<S>,
    pub(crate) next: Next<S>,
}

/// A checked graph: nodes by index with their successors.
pub(crate) struct Topology<S: GraphState> {
    pub(crate) name: String,
    pub(crate) nodes: Vec<CompiledNode<S>>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) entry: Next<S>,
    pub(crate) recursion_limit: usize,
}

impl<S: GraphState> fmt::Debug for Topology<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("name", &self.name)
            .field("nodes", &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>())
            .field("recursion_limit", &self.recursion_limit)
            .finish_non_exhaustive()
    }
}

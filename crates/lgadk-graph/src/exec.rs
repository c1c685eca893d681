//! Running a compiled topology step by step, without any persistence.

use std::sync::Arc;

use futures_util::future::join_all;
use lgadk_core::{Error, GraphError, GraphState, Result, RunContext};
use tracing::Instrument as _;

use crate::graph::{Next, Node, START, Target, Topology};
use crate::stream::{EventTx, RunEvent};

/// How an execution stopped.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Every branch reached END.
    Finished {
        /// Steps taken so far in the turn.
        step: u64,
        /// The last node that ran.
        node: Option<String>,
    },
    /// A node returned [`Error::Interrupted`]; `frontier` runs again on resume.
    Interrupted { node: String, frontier: Vec<String>, step: u64, value: Option<serde_json::Value> },
}

/// Where an execution starts.
#[derive(Debug)]
pub(crate) enum Start {
    /// A new turn: from START.
    Entry,
    /// A resumed turn: these nodes run next.
    Frontier(Vec<String>),
}

impl<S: GraphState> Topology<S> {
    fn graph_error(&self, build: impl FnOnce(String) -> GraphError) -> Error {
        build(self.name.clone()).into()
    }

    /// The nodes that `next` leads to from the current state, in order, without END.
    fn successors(&self, from: &str, next: &Next<S>, state: &S, into: &mut Vec<usize>) -> Result<()> {
        let mut push = |target: Target| {
            if let Target::Node(i) = target
                && !into.contains(&i)
            {
                into.push(i);
            }
        };
        match next {
            Next::Static(targets) => targets.iter().copied().for_each(&mut push),
            Next::Branch { router, mapping } => {
                let key = router(state);
                let target = mapping.get(&key).copied().ok_or_else(|| {
                    self.graph_error(|graph| GraphError::UnknownRoute { graph, node: from.to_owned(), key })
                })?;
                push(target);
            }
        }
        Ok(())
    }

    /// A node that failed because the run was cancelled (a tool dropped mid-call, say) reports
    /// the cancellation, not its own error.
    fn unless_cancelled(&self, err: Error, ctx: &RunContext) -> Error {
        if ctx.is_cancelled() { self.graph_error(|graph| GraphError::Cancelled { graph }) } else { err }
    }

    fn resolve(&self, names: &[String]) -> Result<Vec<usize>> {
        names
            .iter()
            .map(|name| {
                self.index
                    .get(name)
                    .copied()
                    .ok_or_else(|| self.graph_error(|graph| GraphError::UnknownNode { graph, node: name.clone() }))
            })
            .collect()
    }

    /// Runs the graph on `state` until every branch reaches END, a node interrupts, or a node
    /// fails. `first_step` is the number of steps the turn already took (non-zero on resume);
    /// at most `limit` steps run in this call.
    pub(crate) async fn execute(
        &self,
        state: &mut S,
        start: Start,
        ctx: &Arc<RunContext>,
        events: Option<&EventTx<S>>,
        limit: usize,
        first_step: u64,
    ) -> Result<Outcome> {
        let mut frontier = Vec::new();
        match start {
            Start::Entry => self.successors(START, &self.entry, state, &mut frontier)?,
            Start::Frontier(names) => frontier = self.resolve(&names)?,
        }
        let mut step = first_step;
        let mut last = None;
        let mut taken = 0usize;
        while !frontier.is_empty() {
            if taken == limit {
                return Err(self.graph_error(|graph| GraphError::RecursionLimit { graph, limit }));
            }
            if ctx.is_cancelled() {
                return Err(self.graph_error(|graph| GraphError::Cancelled { graph }));
            }
            taken += 1;
            step += 1;
            if let [only] = frontier[..] {
                match self.run_node(only, state, ctx, events, step).await {
                    Ok(()) => {}
                    Err(Error::Interrupted { node, value, .. }) => {
                        let frontier = vec![self.nodes[only].name.clone()];
                        return Ok(Outcome::Interrupted { node, frontier, step: step - 1, value });
                    }
                    Err(err) => return Err(self.unless_cancelled(err, ctx)),
                }
            } else {
                let mut copies: Vec<S> = frontier.iter().map(|_| state.clone()).collect();
                let runs = copies.iter_mut().zip(&frontier).map(|(copy, &i)| self.run_node(i, copy, ctx, events, step));
                let results = join_all(runs).await;
                let mut failure = None;
                for result in results {
                    match result {
                        Ok(()) => {}
                        Err(Error::Interrupted { node, value, .. }) => {
                            let frontier = frontier.iter().map(|&i| self.nodes[i].name.clone()).collect();
                            return Ok(Outcome::Interrupted { node, frontier, step: step - 1, value });
                        }
                        Err(err) => {
                            failure.get_or_insert(err);
                        }
                    }
                }
                if let Some(err) = failure {
                    return Err(self.unless_cancelled(err, ctx));
                }
                for copy in copies {
                    state.merge(copy);
                }
            }
            let mut next = Vec::new();
            for &i in &frontier {
                let node = &self.nodes[i];
                self.successors(&node.name, &node.next, state, &mut next)?;
            }
            last = frontier.last().map(|&i| self.nodes[i].name.clone());
            frontier = next;
        }
        Ok(Outcome::Finished { step, node: last })
    }

    async fn run_node(
        &self,
        index: usize,
        state: &mut S,
        ctx: &Arc<RunContext>,
        events: Option<&EventTx<S>>,
        step: u64,
    ) -> Result<()> {
        let node = &self.nodes[index];
        let send = |event: RunEvent<S>| {
            if let Some(tx) = events {
                // A closed channel means the caller stopped listening; the run goes on.
                let _ = tx.send(Ok(event));
            }
        };
        send(RunEvent::NodeStarted { node: node.name.clone(), step });
        let span = tracing::info_span!("graph.node", node = %node.name, step);
        let result = async {
            match &node.node {
                Node::Agent(agent) => agent.call(state, ctx).await,
                Node::Subgraph(graph) => graph.run(state, ctx).await,
                Node::Fn(f) => {
                    *state = f(state.clone(), Arc::clone(ctx)).await?;
                    Ok(())
                }
            }
        }
        .instrument(span.clone())
        .await;
        if let Err(err) = &result {
            span.in_scope(|| tracing::info!(error = %err, "node stopped"));
        } else {
            send(RunEvent::NodeFinished { node: node.name.clone(), step });
        }
        result
    }
}

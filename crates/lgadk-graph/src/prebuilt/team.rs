//! [`Team`]: several tool loops in one graph, handing the conversation to each other through
//! generated `transfer_to_<agent>` tools, or run by a supervisor.
//!
//! Every agent is a [`ToolLoop`] (its model node and tool node). The agent that holds the
//! conversation is kept in the state's [`AgentRouting`](lgadk_core::AgentRouting), so a turn
//! starts with it — in this process or in another that loads the session cold — instead of
//! snapping back to the first agent.
//!
//! # The rules
//! - **A handoff is a tool call.** Each [`Handoff`] gives the agent a `transfer_to_<agent>`
//!   tool (with an optional `task` argument). The receiving agent answers in the same turn.
//! - **A handoff with other tool calls:** the other calls run (approvals included) and their
//!   results are kept; then the conversation moves.
//! - **Two handoffs in one message:** the first, in call order, is taken; every other one gets
//!   a result telling the model it was not taken and where the conversation went.
//! - **A handoff to an agent the team does not have** is an unknown tool: an error result the
//!   model reads.
//! - **At most [`Team::with_max_handoffs`] handoffs per turn** (default
//!   [`DEFAULT_MAX_HANDOFFS`]); then, as [`HandoffLimitPolicy`] says, the handoff is refused
//!   and the model answers itself, or the turn fails with
//!   [`Error::HandoffLimit`]. Never a silent loop.
//! - **What the receiving agent sees** of the history before the handoff is the handoff's
//!   [`HistoryView`]: everything (default), the last N messages (never starting inside a tool
//!   call's results), or only the task it was given.
//! - **Supervisor** ([`Team::supervised_by`]): the supervisor can hand to every worker; a worker
//!   that answers hands control back to the supervisor, which reads the answer and routes the
//!   next step or finishes the turn.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use std::sync::Arc;
//! use lgadk_core::{ChatState, HistoryView};
//! use lgadk_graph::prebuilt::{Handoff, Team, ToolLoop};
//! use lgadk_graph::RunRequest;
//! # use lgadk_core::{ChatModel, ChatRequest, ChatResponse, Message, Role, ToolCall, Usage};
//! # use lgadk_core::serde_json::json;
//! # /// Triage hands billing questions over; billing answers.
//! # #[derive(Debug)]
//! # struct Model;
//! # #[async_trait::async_trait]
//! # impl ChatModel for Model {
//! #     fn id(&self) -> &str { "doc/model" }
//! #     async fn chat(&self, request: ChatRequest) -> lgadk_core::Result<ChatResponse> {
//! #         let billing = request.messages[0].content.contains("billing");
//! #         let message = if billing {
//! #             Message::assistant("Your invoice is on its way.")
//! #         } else {
//! #             let call = ToolCall { id: "h1".into(), name: "transfer_to_billing".into(), arguments: json!({"task": "resend the invoice"}) };
//! #             Message { tool_calls: vec![call], ..Message::assistant("") }
//! #         };
//! #         Ok(ChatResponse { message, usage: Usage::new(1, 1), finish_reason: None })
//! #     }
//! # }
//! let model: Arc<dyn ChatModel> = Arc::new(Model);
//! let graph = Team::new()
//!     .agent(ToolLoop::new(Arc::clone(&model)).with_name("triage").with_system_prompt("You are triage."))
//!     .agent(ToolLoop::new(model).with_name("billing").with_system_prompt("You are billing."))
//!     .handoff("triage", Handoff::to("billing").with_description("Invoices and refunds").with_view(HistoryView::Last(4)))
//!     .graph::<ChatState>()?
//!     .compile()?;
//!
//! let first = graph.run(RunRequest::new("Please resend my invoice")).await?;
//! assert_eq!(first.output, "Your invoice is on its way.");
//! assert_eq!(first.state.routing.active.as_deref(), Some("billing"), "billing holds the conversation now");
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, HashSet};

use lgadk_core::{Error, HistoryView, Result, ToolSpec};
use serde_json::json;

use super::{ToolLoop, ToolLoopState, tools_condition};
use crate::graph::{END, START, StateGraph};

/// Default number of handoffs one turn may take.
pub const DEFAULT_MAX_HANDOFFS: u32 = 4;

/// What happens to a handoff past the turn's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HandoffLimitPolicy {
    /// The handoff is not taken; the model is told so and answers itself (the default).
    #[default]
    Refuse,
    /// The turn fails with [`Error::HandoffLimit`]; nothing is saved.
    Fail,
}

/// A way for one agent to hand the conversation to another: a `transfer_to_<agent>` tool.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Handoff {
    pub(super) to: String,
    description: Option<String>,
    keywords: Vec<String>,
    pub(super) view: HistoryView,
}

impl Handoff {
    /// A handoff to the agent `to`.
    pub fn to(agent: impl Into<String>) -> Self {
        Self { to: agent.into(), description: None, keywords: Vec::new(), view: HistoryView::All }
    }

    /// What the receiving agent handles, for the model deciding to hand over.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Words that make the offline model hand over ([`ToolSpec::keywords`]).
    pub fn with_keywords<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keywords: I) -> Self {
        self.keywords = keywords.into_iter().map(Into::into).collect();
        self
    }

    /// What the receiving agent sees of the history before the handoff (default all of it).
    pub fn with_view(mut self, view: HistoryView) -> Self {
        self.view = view;
        self
    }

    /// The tool's name: `transfer_to_<agent>`.
    pub fn tool_name(&self) -> String {
        format!("transfer_to_{}", self.to)
    }

    pub(super) fn spec(&self) -> ToolSpec {
        let description = match &self.description {
            Some(what) => format!("Hand the conversation to the `{}` agent: {what}", self.to),
            None => format!("Hand the conversation to the `{}` agent.", self.to),
        };
        let parameters = json!({
            "type": "object",
            "properties": {"task": {"type": "string", "description": "What the next agent should do, in one sentence."}},
        });
        ToolSpec::new(self.tool_name(), description, parameters).with_keywords(self.keywords.clone())
    }
}

/// A model node's part in a team: the handoff tools it offers and where a worker returns.
#[derive(Debug, Clone)]
pub(super) struct ModelTeam {
    pub(super) handoffs: Vec<ToolSpec>,
    pub(super) return_to: Option<String>,
    /// Whether the node adds the turn's user message itself (a group chat's selector does it
    /// for its participants).
    pub(super) adds_input: bool,
}

/// A tool node's part in a team: its handoffs by tool name and the per-turn limit.
#[derive(Debug, Clone)]
pub(super) struct ToolTeam {
    /// The agent's name (its model node).
    pub(super) agent: String,
    pub(super) handoffs: HashMap<String, Handoff>,
    pub(super) max_handoffs: u32,
    pub(super) policy: HandoffLimitPolicy,
}

/// Agents that hand a conversation to each other: see the [module docs](self).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Team {
    agents: Vec<ToolLoop>,
    handoffs: Vec<(String, Handoff)>,
    supervisor: Option<String>,
    max_handoffs: Option<u32>,
    policy: HandoffLimitPolicy,
}

impl Team {
    /// A team without agents yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an agent, named by [`ToolLoop::with_name`]. The first agent added starts new
    /// conversations.
    pub fn agent(mut self, agent: ToolLoop) -> Self {
        self.agents.push(agent);
        self
    }

    /// Lets agent `from` hand the conversation over as `handoff` says.
    pub fn handoff(mut self, from: impl Into<String>, handoff: Handoff) -> Self {
        self.handoffs.push((from.into(), handoff));
        self
    }

    /// Makes `supervisor` run the team: it starts every conversation, can hand to every other
    /// agent (a handoff given explicitly keeps its description and view), and every other
    /// agent that answers returns control to it.
    pub fn supervised_by(mut self, supervisor: ToolLoop) -> Self {
        self.supervisor = Some(supervisor.model_node_name().to_owned());
        self.agents.insert(0, supervisor);
        self
    }

    /// Handoffs one turn may take (default [`DEFAULT_MAX_HANDOFFS`]).
    pub fn with_max_handoffs(mut self, handoffs: u32) -> Self {
        self.max_handoffs = Some(handoffs);
        self
    }

    /// What happens to a handoff past the limit.
    pub fn with_handoff_limit_policy(mut self, policy: HandoffLimitPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn invalid(reason: String) -> Error {
        Error::InvalidConfig { reason }
    }

    /// The team as a graph named after its first agent.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a team without agents, two agents with one name, a name
    /// that is not 1–50 ASCII letters, digits, `_` or `-`, or a handoff from or to an agent the
    /// team does not have, or to itself.
    pub fn graph<S: ToolLoopState>(self) -> Result<StateGraph<S>> {
        let Self { agents, mut handoffs, supervisor, max_handoffs, policy } = self;
        let Some(first) = agents.first() else { return Err(Self::invalid("a team needs at least one agent".into())) };
        let root = first.model_node_name().to_owned();
        let names: Vec<String> = agents.iter().map(|a| a.model_node_name().to_owned()).collect();
        let mut seen = HashSet::new();
        for name in &names {
            let valid = (1..=50).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(Self::invalid(format!(
                    "agent name `{name}` must be 1 to 50 ASCII letters, digits, `_` or `-`"
                )));
            }
            if !seen.insert(name.as_str()) {
                return Err(Self::invalid(format!("two agents are named `{name}`")));
            }
        }
        if let Some(boss) = &supervisor {
            for worker in names.iter().filter(|n| *n != boss) {
                if !handoffs.iter().any(|(from, h)| from == boss && &h.to == worker) {
                    handoffs.push((boss.clone(), Handoff::to(worker.clone())));
                }
            }
        }
        for (from, handoff) in &handoffs {
            if !seen.contains(from.as_str()) {
                return Err(Self::invalid(format!("a handoff starts at `{from}`, which is not in the team")));
            }
            if !seen.contains(handoff.to.as_str()) {
                return Err(Self::invalid(format!("`{from}` hands off to `{}`, which is not in the team", handoff.to)));
            }
            if &handoff.to == from {
                return Err(Self::invalid(format!("`{from}` cannot hand off to itself")));
            }
        }

        let max_handoffs = max_handoffs.unwrap_or(DEFAULT_MAX_HANDOFFS);
        let mut steps = 0usize;
        let mut graph = StateGraph::new(root.clone());
        for agent in agents {
            let name = agent.model_node_name().to_owned();
            let tool_name = agent.tool_node_name().to_owned();
            let own: Vec<Handoff> = handoffs.iter().filter(|(from, _)| *from == name).map(|(_, h)| h.clone()).collect();
            for handoff in &own {
                if agent.tools.get(&handoff.tool_name()).is_some() {
                    return Err(Self::invalid(format!("`{name}` has a tool named `{}`", handoff.tool_name())));
                }
            }
            let mut model = agent.model_node();
            model.team = Some(ModelTeam {
                handoffs: own.iter().map(Handoff::spec).collect(),
                return_to: supervisor.clone().filter(|boss| *boss != name),
                adds_input: true,
            });
            let mut tools = agent.tool_node();
            tools.team = Some(ToolTeam {
                agent: name.clone(),
                handoffs: own.into_iter().map(|h| (h.tool_name(), h)).collect(),
                max_handoffs,
                policy,
            });
            steps = steps.saturating_add(agent.options.max_model_calls.saturating_mul(2).saturating_add(2));

            let after_model = {
                let name = name.clone();
                move |state: &S| -> String {
                    if tools_condition(state) == "tools" {
                        return "tools".to_owned();
                    }
                    match state.routing().and_then(|r| r.active.as_deref()) {
                        Some(active) if active != name => active.to_owned(),
                        _ => "end".to_owned(),
                    }
                }
            };
            let mut mapping: Vec<(String, String)> =
                vec![("tools".to_owned(), tool_name.clone()), ("end".to_owned(), END.to_owned())];
            mapping.extend(names.iter().filter(|n| **n != name).map(|n| (n.clone(), n.clone())));
            graph = graph
                .add_node(name.clone(), model)
                .add_node(tool_name.clone(), tools)
                .add_conditional_edges(name.clone(), after_model, mapping)
                .add_conditional_edges(tool_name, active_agent::<S>(names.clone(), root.clone()), pairs(&names));
        }
        let limit = steps.saturating_mul(max_handoffs as usize + 1).max(1);
        Ok(graph
            .add_conditional_edges(START, active_agent::<S>(names.clone(), root), pairs(&names))
            .with_recursion_limit(limit))
    }
}

fn pairs(names: &[String]) -> Vec<(String, String)> {
    names.iter().map(|n| (n.clone(), n.clone())).collect()
}

/// The router to the agent that holds the conversation (the first agent when none does, or
/// when the state names one the team no longer has).
fn active_agent<S: ToolLoopState>(names: Vec<String>, root: String) -> impl Fn(&S) -> String + Send + Sync + 'static {
    move |state: &S| match state.routing().and_then(|r| r.active.as_deref()) {
        Some(active) if names.iter().any(|n| n == active) => active.to_owned(),
        _ => root.clone(),
    }
}

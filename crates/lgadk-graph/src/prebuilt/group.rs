//! [`GroupChat`]: participants take turns speaking on one transcript — the session's log —
//! chosen round robin or by a model, until a round limit or a condition on the last message.
//!
//! The graph is a selector node and each participant's tool loop: `START` → selector →
//! participant → (its tools →) participant → selector → … → `END`. Each participant's
//! answer is signed with its name ([`Message::name`]) and every participant sees the whole
//! transcript. The selector adds the user's message when a turn starts, and ends the turn when
//! [`GroupChat::with_max_rounds`] participants have spoken (default
//! [`DEFAULT_MAX_ROUNDS`]) or [`GroupChat::until`]'s condition holds for the last answer; the
//! turn's output is the last answer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lgadk_core::Result<()> {
//! use std::sync::Arc;
//! use lgadk_core::ChatState;
//! use lgadk_graph::prebuilt::{GroupChat, SpeakerSelection, ToolLoop};
//! use lgadk_graph::RunRequest;
//! # use lgadk_core::{ChatModel, ChatRequest, ChatResponse, Message, Usage};
//! # #[derive(Debug)]
//! # struct Model;
//! # #[async_trait::async_trait]
//! # impl ChatModel for Model {
//! #     fn id(&self) -> &str { "doc/model" }
//! #     async fn chat(&self, request: ChatRequest) -> lgadk_core::Result<ChatResponse> {
//! #         let who = request.messages[0].content.clone();
//! #         let n = request.messages.len();
//! #         let text = if n > 4 { "DONE".to_owned() } else { format!("{who} says {n}") };
//! #         Ok(ChatResponse { message: Message::assistant(text), usage: Usage::new(1, 1), finish_reason: None })
//! #     }
//! # }
//! let model: Arc<dyn ChatModel> = Arc::new(Model);
//! let graph = GroupChat::new(SpeakerSelection::RoundRobin)
//!     .participant(ToolLoop::new(Arc::clone(&model)).with_name("writer").with_system_prompt("writer"))
//!     .participant(ToolLoop::new(model).with_name("critic").with_system_prompt("critic"))
//!     .with_max_rounds(6)
//!     .until(|last| last.content == "DONE")
//!     .graph::<ChatState>()?
//!     .compile()?;
//! let reply = graph.run(RunRequest::new("Write a haiku")).await?;
//! let speakers: Vec<_> = reply.state.messages.iter().filter_map(|m| m.name.as_deref()).collect();
//! assert_eq!(speakers, ["writer", "critic", "writer", "critic"]);
//! assert_eq!(reply.output, "DONE");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use lgadk_core::{Agent, ChatModel, ChatRequest, Error, Message, Result, Role, RunContext};

use super::model_node::history;
use super::team::ModelTeam;
use super::{ToolLoop, ToolLoopState, tools_condition};
use crate::graph::{END, START, StateGraph};

/// Default number of answers a group chat's turn may take.
pub const DEFAULT_MAX_ROUNDS: usize = 8;

/// How a group chat picks who speaks next.
#[derive(Clone)]
#[non_exhaustive]
pub enum SpeakerSelection {
    /// Participants in the order they were added, continuing after the last one who spoke
    /// (also across turns).
    RoundRobin,
    /// A model reads the transcript and the participants' names and answers with the next
    /// speaker's name; its usage counts for the turn. An answer naming no participant falls
    /// back to round robin.
    Model(Arc<dyn ChatModel>),
}

impl fmt::Debug for SpeakerSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RoundRobin => f.write_str("RoundRobin"),
            Self::Model(model) => f.debug_tuple("Model").field(&model.id()).finish(),
        }
    }
}

type Until = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// A group chat: see the [module docs](self).
#[derive(Clone)]
#[must_use]
pub struct GroupChat {
    participants: Vec<ToolLoop>,
    selection: SpeakerSelection,
    max_rounds: usize,
    until: Option<Until>,
    selector: String,
}

impl fmt::Debug for GroupChat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupChat")
            .field("participants", &self.participants.iter().map(ToolLoop::model_node_name).collect::<Vec<_>>())
            .field("selection", &self.selection)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

impl GroupChat {
    /// A group chat without participants yet, picking speakers as `selection` says.
    pub fn new(selection: SpeakerSelection) -> Self {
        Self {
            participants: Vec::new(),
            selection,
            max_rounds: DEFAULT_MAX_ROUNDS,
            until: None,
            selector: "select_speaker".to_owned(),
        }
    }

    /// Adds a participant, named by [`ToolLoop::with_name`].
    pub fn participant(mut self, participant: ToolLoop) -> Self {
        self.participants.push(participant);
        self
    }

    /// Answers one turn may take (default [`DEFAULT_MAX_ROUNDS`]; 0 counts as 1).
    pub fn with_max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds.max(1);
        self
    }

    /// Ends the turn as soon as `done` holds for the last answer.
    pub fn until(mut self, done: impl Fn(&Message) -> bool + Send + Sync + 'static) -> Self {
        self.until = Some(Arc::new(done));
        self
    }

    /// The chat as a graph named after its selector node (`select_speaker`).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without participants, or with two of one name or one named
    /// like the selector.
    pub fn graph<S: ToolLoopState>(self) -> Result<StateGraph<S>> {
        let Self { participants, selection, max_rounds, until, selector } = self;
        let names: Vec<String> = participants.iter().map(|p| p.model_node_name().to_owned()).collect();
        if names.is_empty() {
            return Err(Error::InvalidConfig { reason: "a group chat needs at least one participant".into() });
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) || *name == selector {
                return Err(Error::InvalidConfig { reason: format!("two participants are named `{name}`") });
            }
        }
        let mut steps = 1usize;
        let node = Selector { name: selector.clone(), names: names.clone(), selection, max_rounds, until };
        let after_select = {
            let names = names.clone();
            move |state: &S| -> String {
                match state.routing().and_then(|r| r.active.as_deref()) {
                    Some(speaker) if names.iter().any(|n| n == speaker) => speaker.to_owned(),
                    _ => "end".to_owned(),
                }
            }
        };
        let mut mapping: Vec<(String, String)> = names.iter().map(|n| (n.clone(), n.clone())).collect();
        mapping.push(("end".to_owned(), END.to_owned()));
        let mut graph = StateGraph::new(selector.clone())
            .add_node(selector.clone(), node)
            .add_edge(START, selector.clone())
            .add_conditional_edges(selector.clone(), after_select, mapping);
        for participant in participants {
            let name = participant.model_node_name().to_owned();
            let tool_name = participant.tool_node_name().to_owned();
            steps = steps.saturating_add(participant.options.max_model_calls.saturating_mul(2).saturating_add(1));
            let mut model = participant.model_node();
            model.team = Some(ModelTeam { handoffs: Vec::new(), return_to: None, adds_input: false });
            let after_model = |state: &S| if tools_condition(state) == "tools" { "tools" } else { "select" };
            graph = graph
                .add_node(name.clone(), model)
                .add_node(tool_name.clone(), participant.tool_node())
                .add_conditional_edges(
                    name.clone(),
                    after_model,
                    [("tools", tool_name.clone()), ("select", selector.clone())],
                )
                .add_edge(tool_name, name);
        }
        Ok(graph.with_recursion_limit(steps.saturating_mul(max_rounds).saturating_add(2)))
    }
}

/// The group chat's selector node.
struct Selector {
    name: String,
    names: Vec<String>,
    selection: SpeakerSelection,
    max_rounds: usize,
    until: Option<Until>,
}

impl Selector {
    /// The participant after the last one who spoke, or the first.
    fn round_robin(&self, messages: &[Message]) -> String {
        let last = messages
            .iter()
            .rev()
            .filter(|m| m.role == Role::Assistant)
            .find_map(|m| m.name.as_deref().and_then(|n| self.names.iter().position(|p| p == n)));
        let next = last.map_or(0, |i| (i + 1) % self.names.len());
        self.names[next].clone()
    }

    async fn ask_model(&self, model: &Arc<dyn ChatModel>, messages: &[Message], ctx: &RunContext) -> Result<String> {
        let mut prompt = Vec::with_capacity(messages.len() + 2);
        prompt.push(Message::system(format!(
            "You choose who speaks next in a group chat. The participants are: {}. Reply with one name only.",
            self.names.join(", ")
        )));
        prompt.extend_from_slice(messages);
        prompt.push(Message::user("Who speaks next? Reply with one name."));
        let reply = model.chat(ChatRequest::new(prompt)).await?;
        ctx.add_usage(reply.usage);
        let answer = reply.message.content.to_lowercase();
        let chosen = self.names.iter().filter_map(|n| answer.find(&n.to_lowercase()).map(|at| (at, n))).min();
        Ok(match chosen {
            Some((_, name)) => name.clone(),
            None => {
                tracing::info!(answer = %reply.message.content, "the selector named no participant; round robin instead");
                self.round_robin(messages)
            }
        })
    }
}

#[async_trait]
impl<S: ToolLoopState> Agent<S> for Selector {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut S, ctx: &RunContext) -> Result<()> {
        let returning = state.routing().is_some_and(|r| r.active.is_some());
        if state.routing().is_none() {
            let reason = format!("node `{}` needs a state that keeps an `AgentRouting`", self.name);
            return Err(Error::InvalidConfig { reason });
        }
        let input = state.input().to_owned();
        let messages = history(state, &self.name)?;
        if !returning {
            messages.push(Message::user(input));
        }
        let turn_start = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
        let answers = messages[turn_start..]
            .iter()
            .filter(|m| m.role == Role::Assistant && m.tool_calls.is_empty() && m.name.is_some())
            .count();
        let last = messages.last().filter(|m| m.role == Role::Assistant).cloned();
        let done =
            answers >= self.max_rounds || last.as_ref().zip(self.until.as_ref()).is_some_and(|(m, until)| until(m));
        let next = if done {
            None
        } else {
            Some(match &self.selection {
                SpeakerSelection::Model(model) => self.ask_model(model, messages, ctx).await?,
                _ => self.round_robin(messages),
            })
        };
        if let Some(last) = last.filter(|_| done) {
            state.set_output(&last.content);
        }
        if let Some(routing) = state.routing_mut() {
            routing.active = next;
        }
        Ok(())
    }
}

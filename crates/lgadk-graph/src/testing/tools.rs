//! Tool-loop scenarios of the graph conformance suite, and the scripted tool-calling model
//! they (and the crate's own tool-loop tests) run on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lgadk_core::{
    ApprovalDecisions, ApprovalRequest, ChatModel, ChatRequest, ChatResponse, ChatState, Error, FunctionTool, Message,
    Result, Role, ToolCall, ToolSet, Usage,
};
use serde_json::{Value, json};

use super::{GraphFixture, contents, interactions, new_session, request};
use crate::CompiledGraph;
use crate::prebuilt::{Handoff, Team, ToolLoop};

/// A model that calls tools by script: when the conversation ends with the user's message it
/// calls the scripted tools (ids `call_<messages so far>_<i>`, unique in a conversation); when
/// it ends with tool results it answers `done: <result>; <result>…`. Each call reports usage
/// (10, 5) and is recorded.
#[derive(Debug)]
pub struct ToolCallingModel {
    script: Vec<(String, Value)>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ToolCallingModel {
    /// A model that calls each `(tool, arguments)` of `script` in one message.
    pub fn new<I, N>(script: I) -> Arc<Self>
    where
        I: IntoIterator<Item = (N, Value)>,
        N: Into<String>,
    {
        let script = script.into_iter().map(|(name, args)| (name.into(), args)).collect();
        Arc::new(Self { script, requests: Mutex::default() })
    }

    /// The requests the model received, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How many times the model was called.
    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[async_trait]
impl ChatModel for ToolCallingModel {
    fn id(&self) -> &str {
        "conformance/tool-calling"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request.clone());
        tokio::task::yield_now().await;
        let results: Vec<&str> = request
            .messages
            .iter()
            .rev()
            .take_while(|m| m.role == Role::Tool)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let message = if results.is_empty() {
            let turn = request.messages.len();
            let calls = self
                .script
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| ToolCall {
                    id: format!("call_{turn}_{i}"),
                    name: name.clone(),
                    arguments: arguments.clone(),
                })
                .collect();
            Message { tool_calls: calls, ..Message::assistant("") }
        } else {
            Message::assistant(format!("done: {}", results.join("; ")))
        };
        Ok(ChatResponse { message, usage: Usage::new(10, 5), finish_reason: None })
    }
}

/// A `count` tool that counts its calls and a `send` tool that needs approval and records what
/// it sent.
struct Tools {
    counted: Arc<AtomicUsize>,
    sent: Arc<Mutex<Vec<String>>>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Send {
    to: String,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Count {
    what: String,
}

impl Tools {
    fn new() -> Self {
        Self { counted: Arc::default(), sent: Arc::default() }
    }

    fn set(&self) -> ToolSet {
        let counted = Arc::clone(&self.counted);
        let count = FunctionTool::new("count", "Counts.", move |args: Count, _| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, String>(format!("{} #{n}", args.what)) }
        });
        let sent = Arc::clone(&self.sent);
        let send = FunctionTool::new("send", "Sends a message.", move |args: Send, _| {
            sent.lock().unwrap().push(args.to.clone());
            async move { Ok::<_, String>(format!("sent to {}", args.to)) }
        })
        .requiring_approval();
        ToolSet::new().with(count).and_then(|set| set.with(send)).unwrap()
    }

    fn graph(
        &self,
        model: &Arc<ToolCallingModel>,
        sessions: &lgadk_session::SessionManager,
    ) -> CompiledGraph<ChatState> {
        ToolLoop::new(Arc::clone(model) as Arc<dyn ChatModel>)
            .with_tools(self.set())
            .graph::<ChatState>()
            .with_sessions(sessions.clone())
            .compile()
            .unwrap()
    }
}

/// A turn of the tool loop saves the model's tool calls and their results in the session's
/// history, so the next turn — on a graph built on another manager, with an empty cache —
/// sends the whole trace to the model; the turn's model calls add up in one interaction.
pub async fn tool_loop_trace_is_seen_by_the_next_turn_in_another_process(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = ToolCallingModel::new([("count", json!({"what": "apples"})), ("count", json!({"what": "pears"}))]);
    let tools = Tools::new();
    let id = new_session(&sessions).await;
    let first = tools.graph(&model, &sessions).run(request("count fruit", &id)).await.unwrap();
    assert_eq!(first.output, "done: apples #1; pears #2");
    assert_eq!((first.usage.prompt_tokens, first.usage.completion_tokens), (20, 10), "two model calls");
    assert_eq!(
        contents(&first.state.messages),
        ["count fruit", "", "apples #1", "pears #2", "done: apples #1; pears #2"]
    );

    let other = fx.manager().await;
    let second = tools.graph(&model, &other).run(request("again", &id)).await.unwrap();
    let sent = model.requests().remove(2).messages;
    assert_eq!(sent.len(), 6, "the second turn's first request carries the first turn's trace: {sent:?}");
    assert_eq!(sent[1].tool_calls.len(), 2);
    assert_eq!(sent[2].tool_call_id.as_deref(), Some("call_1_0"));
    assert_eq!(sent[3].tool_call_id.as_deref(), Some("call_1_1"));
    assert_eq!(second.state.messages.len(), 10);
    assert_eq!(interactions(&other, &id).await, 2, "one interaction per turn");
    let summary = other.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!((summary.total_tokens_in, summary.total_tokens_out), (40, 20));
}

/// Calls that need approval stop the loop with every pending call of the batch at once; the
/// calls that needed none ran and are never run again; a resume on a graph built on another
/// manager (another process, empty cache) applies one decision per call and the model reads
/// the results in call order.
pub async fn tool_approvals_resume_in_another_process_and_never_rerun_a_call(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = ToolCallingModel::new([
        ("count", json!({"what": "drafts"})),
        ("send", json!({"to": "ann"})),
        ("send", json!({"to": "bob"})),
        ("send", json!({"to": "cy"})),
    ]);
    let tools = Tools::new();
    let id = new_session(&sessions).await;
    let err = tools.graph(&model, &sessions).run(request("send it", &id)).await.unwrap_err();
    assert!(matches!(&err, Error::Interrupted { node, session_id: Some(got), .. } if node == "tools" && *got == id));
    let pending = ApprovalRequest::from_interrupt(&err).unwrap().pending;
    let ids: Vec<&str> = pending.iter().map(|p| p.call_id.as_str()).collect();
    assert_eq!(ids, ["call_1_1", "call_1_2", "call_1_3"], "every waiting call, in call order");
    assert_eq!(tools.counted.load(Ordering::SeqCst), 1);
    assert!(tools.sent.lock().unwrap().is_empty(), "nothing that needs approval ran");

    let other = fx.manager().await;
    let cold = tools.graph(&model, &other);
    // A decision missing for one call: refused, nothing written, still resumable.
    let partial = ApprovalDecisions::new().approve("call_1_1").approve("call_1_2");
    let refused = cold.resume(&id, partial.into()).await.unwrap_err();
    assert!(matches!(&refused, Error::InvalidConfig { reason } if reason.contains("call_1_3")), "{refused:?}");
    assert!(tools.sent.lock().unwrap().is_empty());

    let decisions = ApprovalDecisions::new()
        .approve("call_1_1")
        .reject("call_1_2", "bob is on holiday")
        .edit("call_1_3", json!({"to": "cyril"}));
    let done = cold.resume(&id, decisions.into()).await.unwrap();
    assert_eq!(tools.counted.load(Ordering::SeqCst), 1, "the call that ran before the interrupt did not run again");
    assert_eq!(*tools.sent.lock().unwrap(), ["ann", "cyril"]);
    let results: Vec<&Message> = done.state.messages.iter().filter(|m| m.role == Role::Tool).collect();
    let order: Vec<&str> = results.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
    assert_eq!(order, ["call_1_0", "call_1_1", "call_1_2", "call_1_3"]);
    assert!(results[2].content.contains("bob is on holiday"), "{}", results[2].content);
    assert!(results[3].content.contains("cyril") && results[3].content.contains("changed the arguments"));
    assert!(done.output.starts_with("done: drafts #1; sent to ann; "), "{}", done.output);
    assert!(done.state.tool_batch.is_none());
    assert_eq!(model.calls(), 2);
    assert_eq!(interactions(&sessions, &id).await, 2, "the interrupted turn and the resumed one");
}

/// Triage hands every first message to billing; every other agent answers `<agent> #<n>`,
/// `n` counting the model's calls. The agent is read off the system prompt `You are <agent>.`
#[derive(Debug, Default)]
struct HandoffModel {
    calls: AtomicUsize,
}

#[async_trait]
impl ChatModel for HandoffModel {
    fn id(&self) -> &str {
        "conformance/handoff"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::task::yield_now().await;
        let system = request.messages.first().map_or("", |m| m.content.as_str());
        let agent = system.trim_start_matches("You are ").trim_end_matches('.');
        let last_is_user = request.messages.last().is_some_and(|m| m.role == Role::User);
        let message = if agent == "triage" && last_is_user {
            let call = ToolCall { id: format!("h{n}"), name: "transfer_to_billing".into(), arguments: json!({}) };
            Message { tool_calls: vec![call], ..Message::assistant("") }
        } else {
            Message::assistant(format!("{agent} #{n}"))
        };
        Ok(ChatResponse { message, usage: Usage::new(1, 1), finish_reason: None })
    }
}

fn team_graph(model: &Arc<HandoffModel>, sessions: &lgadk_session::SessionManager) -> CompiledGraph<ChatState> {
    let agent = |name: &str| {
        ToolLoop::new(Arc::clone(model) as Arc<dyn ChatModel>)
            .with_name(name)
            .with_system_prompt(format!("You are {name}."))
    };
    Team::new()
        .agent(agent("triage"))
        .agent(agent("billing"))
        .handoff("triage", Handoff::to("billing"))
        .graph::<ChatState>()
        .unwrap()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap()
}

/// The agent that holds the conversation is stored with the session: after triage hands a
/// conversation to billing, the next turn — on a graph built on another manager (another
/// process, empty cache) — starts with billing, not with triage.
pub async fn team_next_turn_starts_with_the_agent_that_holds_the_conversation(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = Arc::new(HandoffModel::default());
    let id = new_session(&sessions).await;
    let first = team_graph(&model, &sessions).run(request("my invoice is wrong", &id)).await.unwrap();
    assert_eq!(first.output, "billing #2", "billing answered in the turn of the handoff");

    let other = fx.manager().await;
    let second = team_graph(&model, &other).run(request("and the one before?", &id)).await.unwrap();
    assert_eq!(second.output, "billing #3", "billing answered first, without triage");
    assert_eq!(second.state.routing.active.as_deref(), Some("billing"));
    let authors: Vec<Option<&str>> =
        second.state.messages.iter().filter(|m| m.role == Role::Assistant).map(|m| m.name.as_deref()).collect();
    assert_eq!(authors, [Some("triage"), Some("billing"), Some("billing")]);
    assert_eq!(interactions(&other, &id).await, 2);
    // The analytics per agent: triage worked in one turn, billing in both.
    let agents = other.get_session_summary(&id).await.unwrap().unwrap().agents;
    let counted: Vec<(&str, u64, u64)> =
        agents.iter().map(|(name, a)| (name.as_str(), a.interactions, a.tokens_in)).collect();
    assert_eq!(counted, [("billing", 2, 2), ("triage", 1, 1)]);
}

/// A log window never cuts the exchange in progress: a turn interrupted for approvals keeps
/// its question and the waiting call even under `LastMessages(1)`, the resume in another
/// process finds both, and the next turn's cut starts at its own question, never leaving a
/// tool result without its call.
pub async fn a_log_window_keeps_a_call_awaiting_approval_and_its_question(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = ToolCallingModel::new([("count", json!({"what": "drafts"})), ("send", json!({"to": "ann"}))]);
    let tools = Tools::new();
    let id = new_session(&sessions).await;
    let window = lgadk_core::LogRetention::LastMessages(1);
    let first = request("send it", &id).with_log_retention(window);
    let err = tools.graph(&model, &sessions).run(first).await.unwrap_err();
    assert!(ApprovalRequest::from_interrupt(&err).is_some(), "{err:?}");
    let checkpointer = sessions.checkpointer();
    let stored = checkpointer.messages(&id, 0..100).await.unwrap();
    assert_eq!(stored.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::User, Role::Assistant]);
    assert_eq!(stored[1].tool_calls.len(), 2, "the waiting call is kept");

    let other = fx.manager().await;
    let cold = tools.graph(&model, &other);
    let approve = ApprovalDecisions::new().approve("call_1_1");
    let done = cold.resume(&id, approve.into()).await.unwrap();
    assert_eq!(*tools.sent.lock().unwrap(), ["ann"]);
    assert_eq!(done.state.messages.len(), 5, "the whole exchange: question, call, two results, answer");
    assert_eq!(done.state.messages[0].content, "send it");

    let err = cold.run(request("again", &id)).await.unwrap_err();
    assert!(ApprovalRequest::from_interrupt(&err).is_some(), "{err:?}");
    let latest = checkpointer.latest(&id).await.unwrap().unwrap();
    assert_eq!(latest.log_range(), 5..7, "cut at the new question");
    let stored = checkpointer.messages(&id, 0..100).await.unwrap();
    assert_eq!(contents(&stored[..1]), ["again"]);
    assert!(stored.iter().all(|m| m.role != Role::Tool), "no result without its call");
}

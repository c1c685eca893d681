//! Team and group-chat scenarios of the graph conformance suite: each rule of the handoff
//! (with other calls, two in one message, an unknown agent, the per-turn cap), the views, the
//! supervisor and the group chat, on every backend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lgadk_core::{
    ChatModel, ChatRequest, ChatResponse, ChatState, Error, FunctionTool, HistoryView, Message, Result, Role, ToolCall,
    ToolSet, Usage,
};
use lgadk_session::SessionManager;
use serde_json::{Value, json};

use super::GraphFixture;
use crate::prebuilt::{GroupChat, Handoff, HandoffLimitPolicy, SpeakerSelection, Team, ToolLoop};
use crate::{CompiledGraph, RunRequest};

type Reply = dyn Fn(&str, &ChatRequest) -> Message + Send + Sync;

/// One model for the whole team: the agent is read off the system prompt (`You are <agent>.`);
/// every request is recorded with it.
struct TeamModel {
    reply: Box<Reply>,
    requests: Mutex<Vec<(String, ChatRequest)>>,
}

impl std::fmt::Debug for TeamModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TeamModel")
    }
}

impl TeamModel {
    fn new(reply: impl Fn(&str, &ChatRequest) -> Message + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self { reply: Box::new(reply), requests: Mutex::default() })
    }

    fn agents(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().map(|(agent, _)| agent.clone()).collect()
    }

    fn request(&self, i: usize) -> ChatRequest {
        self.requests.lock().unwrap()[i].1.clone()
    }
}

#[async_trait]
impl ChatModel for TeamModel {
    fn id(&self) -> &str {
        "test/team"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let system = request.messages.first().map(|m| m.content.clone()).unwrap_or_default();
        let agent = system.trim_start_matches("You are ").trim_end_matches('.').to_owned();
        let message = (self.reply)(&agent, &request);
        self.requests.lock().unwrap().push((agent, request));
        Ok(ChatResponse { message, usage: Usage::new(3, 2), finish_reason: None })
    }
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall { id: id.into(), name: name.into(), arguments }
}

fn calling(calls: Vec<ToolCall>) -> Message {
    Message { tool_calls: calls, ..Message::assistant("") }
}

fn last(request: &ChatRequest) -> &Message {
    request.messages.last().unwrap()
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Nothing {}

fn agent(model: &Arc<TeamModel>, name: &str) -> ToolLoop {
    ToolLoop::new(Arc::clone(model) as Arc<dyn ChatModel>)
        .with_name(name)
        .with_system_prompt(format!("You are {name}."))
}

fn support_team(model: &Arc<TeamModel>) -> Team {
    Team::new()
        .agent(agent(model, "triage"))
        .agent(agent(model, "billing"))
        .agent(agent(model, "tech"))
        .handoff("triage", Handoff::to("billing").with_description("invoices"))
        .handoff("triage", Handoff::to("tech"))
        .handoff("billing", Handoff::to("triage"))
}

fn compile(team: Team, sessions: &SessionManager) -> CompiledGraph<ChatState> {
    team.graph::<ChatState>().unwrap().with_sessions(sessions.clone()).compile().unwrap()
}

/// A handoff is a `transfer_to_<agent>` tool: the receiving agent answers in the same turn,
/// signs its answer, and the next turn starts with it.
pub async fn the_receiving_agent_answers_in_the_same_turn_and_keeps_the_conversation(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = TeamModel::new(|agent, request| match (agent, last(request).role) {
        ("triage", Role::User) => calling(vec![call("h1", "transfer_to_billing", json!({"task": "refund"}))]),
        (agent, _) => Message::assistant(format!("{agent} here")),
    });
    let graph = compile(support_team(&model), &sessions);
    let first = graph.run(RunRequest::new("I want a refund")).await.unwrap();
    assert_eq!(first.output, "billing here");
    assert_eq!(model.agents(), ["triage", "billing"]);
    assert_eq!(first.state.routing.active.as_deref(), Some("billing"));
    let handoff_result = &first.state.messages[2];
    assert_eq!(handoff_result.content, "Transferred the conversation to `billing`.");
    assert_eq!(first.state.messages[3].name.as_deref(), Some("billing"), "answers are signed in a team");
    // Triage was offered its handoffs as tools.
    let offered: Vec<String> = model.request(0).tools.iter().map(|t| t.name.clone()).collect();
    assert_eq!(offered, ["transfer_to_billing", "transfer_to_tech"]);

    let second = graph.run(RunRequest::new("thanks").with_session(first.session_id.clone())).await.unwrap();
    assert_eq!(second.output, "billing here");
    assert_eq!(model.agents(), ["triage", "billing", "billing"], "the next turn starts with billing");
    assert_eq!(second.state.routing.handoffs_this_turn, 0);
}

/// A model message with a handoff and other calls: the other calls run and keep their results,
/// the first handoff is taken, a second one is told it was not, and a handoff to an agent the
/// team lacks is an unknown-tool result.
pub async fn other_calls_of_a_handoff_message_run_and_keep_their_results(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let counted = Arc::new(AtomicUsize::new(0));
    let count = {
        let counted = Arc::clone(&counted);
        FunctionTool::new("count", "Counts.", move |_: Nothing, _| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, String>(format!("count {n}")) }
        })
    };
    let model = TeamModel::new(|agent, request| match (agent, last(request).role) {
        ("triage", Role::User) => calling(vec![
            call("h1", "transfer_to_billing", json!({})),
            call("c1", "count", json!({})),
            call("h2", "transfer_to_tech", json!({})),
            call("h3", "transfer_to_sales", json!({})),
        ]),
        (agent, _) => Message::assistant(format!("{agent} here")),
    });
    let team = Team::new()
        .agent(agent(&model, "triage").with_tools(ToolSet::new().with(count).unwrap()))
        .agent(agent(&model, "billing"))
        .agent(agent(&model, "tech"))
        .handoff("triage", Handoff::to("billing"))
        .handoff("triage", Handoff::to("tech"));
    let reply = compile(team, &sessions).run(RunRequest::new("help")).await.unwrap();
    let results: Vec<(&str, &str)> = reply
        .state
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.as_deref().unwrap(), m.content.as_str()))
        .collect();
    assert_eq!(results[0], ("h1", "Transferred the conversation to `billing`."));
    assert_eq!(results[1], ("c1", "count 1"), "the other call ran and its result is kept");
    assert!(results[2].1.starts_with("Not transferred: only the first handoff"), "{}", results[2].1);
    assert!(results[3].1.starts_with("Error: there is no tool named `transfer_to_sales`"), "{}", results[3].1);
    assert_eq!(reply.output, "billing here");
    assert_eq!(counted.load(Ordering::SeqCst), 1);
}

/// Two agents that always hand the conversation to each other.
fn ping_pong() -> Arc<TeamModel> {
    TeamModel::new(|agent, request| {
        let refused = last(request).content.starts_with("Not transferred");
        match agent {
            _ if refused => Message::assistant(format!("{agent} gives up")),
            "triage" => calling(vec![call(&format!("t{}", request.messages.len()), "transfer_to_billing", json!({}))]),
            _ => calling(vec![call(&format!("b{}", request.messages.len()), "transfer_to_triage", json!({}))]),
        }
    })
}

/// Two agents that hand the conversation back and forth stop at the per-turn cap: the handoff
/// is refused and the model answers, or the turn fails with `HandoffLimit` (policy `Fail`).
pub async fn handoffs_per_turn_are_capped_with_an_answer_or_an_error(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = ping_pong();
    let graph = compile(support_team(&model).with_max_handoffs(3), &sessions);
    let reply = graph.run(RunRequest::new("loop")).await.unwrap();
    // Three handoffs are taken; billing's fourth is refused and billing answers itself.
    assert_eq!(model.agents(), ["triage", "billing", "triage", "billing", "billing"]);
    assert_eq!(reply.output, "billing gives up");
    assert_eq!(reply.state.routing.handoffs_this_turn, 3);

    let model = ping_pong();
    let graph = compile(
        support_team(&model).with_max_handoffs(2).with_handoff_limit_policy(HandoffLimitPolicy::Fail),
        &sessions,
    );
    let err = graph.run(RunRequest::new("loop")).await.unwrap_err();
    assert!(matches!(&err, Error::HandoffLimit { agent, limit: 2 } if agent == "triage"), "{err:?}");
}

/// What the receiving agent sees of the history before the handoff: everything, the last N
/// messages (never starting with a result whose call was cut off), or only its task.
pub async fn a_handoff_view_limits_what_the_receiving_agent_sees(fx: GraphFixture) {
    let sessions = fx.manager().await;
    for (view, expected) in [
        (HistoryView::All, vec!["earlier", "noted", "before", "", "Transferred the conversation to `billing`."]),
        (HistoryView::Last(3), vec!["before", "", "Transferred the conversation to `billing`."]),
        // The window's first message would be a result without its call: it is left out.
        (HistoryView::Last(1), vec![]),
        (HistoryView::TaskOnly, vec!["check the invoice"]),
    ] {
        let model = TeamModel::new(|agent, request| match (agent, last(request).content.as_str()) {
            ("triage", "earlier") => Message::assistant("noted"),
            ("triage", "before") => {
                calling(vec![call("h1", "transfer_to_billing", json!({"task": "check the invoice"}))])
            }
            (agent, _) => Message::assistant(format!("{agent} here")),
        });
        let team = Team::new()
            .agent(agent(&model, "triage"))
            .agent(agent(&model, "billing"))
            .handoff("triage", Handoff::to("billing").with_view(view));
        let graph = compile(team, &sessions);
        let first = graph.run(RunRequest::new("earlier")).await.unwrap();
        graph.run(RunRequest::new("before").with_session(first.session_id)).await.unwrap();
        let seen = model.request(2);
        assert_eq!(seen.messages[0].content, "You are billing.");
        let contents: Vec<&str> = seen.messages[1..].iter().map(|m| m.content.as_str()).collect();
        let expected_len = expected.len();
        assert_eq!(&contents[..expected_len], expected.as_slice(), "{view:?}");
        assert_eq!(contents.len(), expected_len, "nothing after the handoff yet: {contents:?}");
        assert!(seen.messages.get(1).is_none_or(|m| m.role != Role::Tool), "never starts with an orphan result");
    }
}

/// A supervised team: the supervisor hands each step to a worker, every worker's answer comes
/// back to it, and its own answer ends the turn.
pub async fn a_supervisor_routes_each_step_and_reads_the_workers_answers(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = TeamModel::new(|agent, request| {
        let answers: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant && m.tool_calls.is_empty())
            .filter_map(|m| m.name.as_deref())
            .collect();
        match agent {
            "boss" if answers.is_empty() => calling(vec![call("s1", "transfer_to_research", json!({"task": "find"}))]),
            "boss" if answers == ["research"] => calling(vec![call("s2", "transfer_to_writer", json!({}))]),
            "boss" => Message::assistant(format!("final, after {}", answers.join(" and "))),
            worker => Message::assistant(format!("{worker} done")),
        }
    });
    let team = Team::new()
        .agent(agent(&model, "research"))
        .agent(agent(&model, "writer"))
        .supervised_by(agent(&model, "boss"));
    let reply = compile(team, &sessions).run(RunRequest::new("write a report")).await.unwrap();
    assert_eq!(model.agents(), ["boss", "research", "boss", "writer", "boss"]);
    assert_eq!(reply.output, "final, after research and writer");
    assert_eq!(reply.state.routing.active.as_deref(), Some("boss"), "the supervisor holds the conversation");
    assert_eq!((reply.usage.prompt_tokens, reply.usage.completion_tokens), (15, 10));
}

/// Each participant answers `<agent> <n>` with `n` the transcript's length.
fn speakers() -> Arc<TeamModel> {
    TeamModel::new(|agent, request| Message::assistant(format!("{agent} {}", request.messages.len())))
}

fn said(state: &ChatState) -> Vec<String> {
    state.messages.iter().filter(|m| m.role == Role::Assistant).map(|m| m.content.clone()).collect()
}

/// A round-robin group chat runs to its round limit, adds the user's message once per turn,
/// and the next turn goes on after the last speaker.
pub async fn round_robin_runs_to_the_round_limit_and_continues_next_turn(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = speakers();
    let graph = GroupChat::new(SpeakerSelection::RoundRobin)
        .participant(agent(&model, "ann"))
        .participant(agent(&model, "bob"))
        .participant(agent(&model, "cy"))
        .with_max_rounds(4)
        .graph::<ChatState>()
        .unwrap()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let first = graph.run(RunRequest::new("topic")).await.unwrap();
    assert_eq!(said(&first.state), ["ann 2", "bob 3", "cy 4", "ann 5"]);
    assert_eq!(first.output, "ann 5");
    assert_eq!(first.state.routing.active, None, "the chat ended");
    let second = graph.run(RunRequest::new("more").with_session(first.session_id)).await.unwrap();
    assert_eq!(said(&second.state)[4..], ["bob 7", "cy 8", "ann 9", "bob 10"], "round robin goes on after ann");
    let users = second.state.messages.iter().filter(|m| m.role == Role::User).count();
    assert_eq!(users, 2, "one user message per turn");
}

/// A group chat's stop condition on the last answer ends the turn; a lone participant speaks
/// again and again without the user's message being repeated.
pub async fn a_condition_on_the_last_answer_ends_the_turn_and_one_participant_may_speak_twice(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let model = TeamModel::new(|_, request| {
        let n = request.messages.len();
        Message::assistant(if n >= 4 { "FINAL".to_owned() } else { format!("draft {n}") })
    });
    let graph = GroupChat::new(SpeakerSelection::RoundRobin)
        .participant(agent(&model, "solo"))
        .until(|last| last.content == "FINAL")
        .graph::<ChatState>()
        .unwrap()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let reply = graph.run(RunRequest::new("go")).await.unwrap();
    assert_eq!(said(&reply.state), ["draft 2", "draft 3", "FINAL"]);
    assert_eq!(reply.output, "FINAL");
}

/// A model chooses each speaker by name (its usage counts for the turn); an answer that names
/// nobody falls back to round robin.
pub async fn a_model_picks_the_speaker_and_an_unknown_name_falls_back_to_round_robin(fx: GraphFixture) {
    let sessions = fx.manager().await;
    let picks = Arc::new(Mutex::new(vec!["I'd say Cy.", "nobody", "BOB, clearly"]));
    let selector = {
        let picks = Arc::clone(&picks);
        TeamModel::new(move |_, _| Message::assistant(picks.lock().unwrap().remove(0)))
    };
    let model = speakers();
    let graph = GroupChat::new(SpeakerSelection::Model(Arc::clone(&selector) as Arc<dyn ChatModel>))
        .participant(agent(&model, "ann"))
        .participant(agent(&model, "bob"))
        .participant(agent(&model, "cy"))
        .with_max_rounds(3)
        .graph::<ChatState>()
        .unwrap()
        .with_sessions(sessions.clone())
        .compile()
        .unwrap();
    let reply = graph.run(RunRequest::new("topic")).await.unwrap();
    assert_eq!(said(&reply.state), ["cy 2", "ann 3", "bob 4"], "cy, then round robin after cy, then bob");
    assert_eq!(reply.usage.prompt_tokens, 6 * 3, "three speakers and three selections");
    let asked = selector.request(0);
    assert!(asked.messages[0].content.contains("ann, bob, cy"), "{}", asked.messages[0].content);
}

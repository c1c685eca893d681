//! `ChatAgent` over scripted and conversational offline models.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests: a failure is a panic")]

use std::sync::{Arc, Mutex};

use lgadk_core::{
    Agent, AgentEvent, ChatState, Error, EventSink, GraphState, Message, ModelErrorKind, Role, RunContext, ToolSpec,
};
use lgadk_llm::{ChatAgent, OfflineModel, PromptTemplate, ScriptedReply};
use serde_json::json;

#[derive(Default)]
struct Events(Mutex<Vec<AgentEvent>>);

impl EventSink for Events {
    fn emit(&self, event: AgentEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn state(input: &str) -> ChatState {
    let mut state = ChatState::default();
    state.begin_turn(input);
    state
}

#[tokio::test]
async fn a_turn_sends_system_prompt_history_and_input_and_records_the_reply() {
    let model = Arc::new(OfflineModel::scripted(["first answer", "second answer"]));
    let agent = ChatAgent::new("assistant", Arc::<OfflineModel>::clone(&model))
        .with_system_prompt("Be kind.")
        .with_temperature(0.3);
    let ctx = RunContext::default();

    let mut state = state("first question");
    agent.call(&mut state, &ctx).await.unwrap();
    state.begin_turn("second question");
    agent.call(&mut state, &ctx).await.unwrap();

    assert_eq!(state.output, "second answer");
    let roles: Vec<Role> = state.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::User, Role::Assistant]);
    assert_eq!(state.messages[2].content, "second question");

    let second = &model.requests()[1];
    assert_eq!(second.temperature, Some(0.3));
    let sent: Vec<(Role, &str)> = second.messages.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        sent,
        [
            (Role::System, "Be kind."),
            (Role::User, "first question"),
            (Role::Assistant, "first answer"),
            (Role::User, "second question"),
        ]
    );
    let expected: u64 = model
        .requests()
        .iter()
        .zip(["first answer", "second answer"])
        .map(|(req, answer)| lgadk_llm::tokens::count_usage(req, &Message::assistant(answer)).total())
        .sum();
    assert_eq!(ctx.usage().total(), expected, "both turns' usage reaches the run");
}

#[tokio::test]
async fn the_template_renders_input_and_extra_values_but_history_keeps_the_raw_input() {
    let model = Arc::new(OfflineModel::scripted(["ok"]));
    let template = PromptTemplate::parse("[{lang}, level {level}] {input}").unwrap();
    let agent = ChatAgent::new("tutor", Arc::<OfflineModel>::clone(&model)).with_template(template);
    let mut state = state("What is ownership?");
    state.extra.insert("lang".into(), json!("Rust"));
    state.extra.insert("level".into(), json!(2));

    agent.call(&mut state, &RunContext::default()).await.unwrap();
    assert_eq!(model.requests()[0].messages[0].content, "[Rust, level 2] What is ownership?");
    assert_eq!(state.messages[0].content, "What is ownership?");

    let strict = ChatAgent::new("t", Arc::new(OfflineModel::scripted(["never"])))
        .with_template(PromptTemplate::parse("{missing} {input}").unwrap());
    let mut untouched = state.clone();
    let err = strict.call(&mut untouched, &RunContext::default()).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("`missing`")), "{err}");
    assert_eq!(untouched, state);
}

#[tokio::test]
async fn a_failing_model_leaves_the_state_and_usage_unchanged() {
    let agent = ChatAgent::new(
        "a",
        Arc::new(OfflineModel::scripted([ScriptedReply::failure(ModelErrorKind::ServerError, Some(500))])),
    );
    let mut s = state("hello");
    s.messages.push(Message::user("earlier"));
    let before = s.clone();
    let ctx = RunContext::default();
    let err = agent.call(&mut s, &ctx).await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(s, before);
    assert_eq!(ctx.usage().total(), 0);

    let streaming = RunContext::default().with_events(Arc::new(Events::default()));
    let err = agent.call(&mut s, &streaming).await.unwrap_err();
    assert!(matches!(err, Error::Model { .. }));
    assert_eq!(s, before);
}

#[tokio::test]
async fn streaming_runs_emit_tokens_and_assemble_the_reply() {
    let events = Arc::new(Events::default());
    let ctx = RunContext::default().with_events(Arc::<Events>::clone(&events));
    let agent = ChatAgent::new("assistant", Arc::new(OfflineModel::new()));
    let mut s = state("Hello! Can you tell me about machine learning?");
    agent.call(&mut s, &ctx).await.unwrap();

    let tokens: Vec<String> = events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            AgentEvent::Token { node, text } => {
                assert_eq!(node, "assistant");
                text.clone()
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert!(tokens.len() > 5);
    assert_eq!(tokens.concat(), s.output);
    assert!(s.output.starts_with("[offline model]"));
    assert_eq!(s.messages.last().unwrap().content, s.output);
    assert!(ctx.usage().completion_tokens > 0, "usage from the final chunk");
}

#[tokio::test]
async fn tool_calls_are_recorded_and_tool_results_continue_without_a_new_user_message() {
    let model = Arc::new(OfflineModel::scripted([
        ScriptedReply::tool_call("get_weather", json!({"city": "Oslo"})),
        ScriptedReply::text("Oslo: 4 °C and rain."),
    ]));
    let tool = ToolSpec::new("get_weather", "Weather", json!({"type": "object"}));
    let agent = ChatAgent::new("assistant", Arc::<OfflineModel>::clone(&model)).with_tools(vec![tool]);
    let ctx = RunContext::default();

    let mut s = state("Weather in Oslo?");
    agent.call(&mut s, &ctx).await.unwrap();
    let call = s.messages.last().unwrap().tool_calls[0].clone();
    assert_eq!(call.name, "get_weather");
    assert_eq!(model.requests()[0].tools.len(), 1);

    // A tool node answers the call; the agent then continues from the result.
    s.messages.push(Message::tool(call.id, "4 °C, rain"));
    agent.call(&mut s, &ctx).await.unwrap();
    assert_eq!(s.output, "Oslo: 4 °C and rain.");
    let roles: Vec<Role> = s.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Assistant]);
    assert_eq!(model.requests()[1].messages.last().unwrap().role, Role::Tool);
}

//! Executing graphs: routing, cycles, the recursion limit, fan-out and custom states.

use lgadk_core::{ChatState, Error, GraphError, GraphState, Message};
use lgadk_graph::{END, START, StateGraph};
use serde::{Deserialize, Serialize};

/// Appends `name` to the state's scratchpad, as a trace of the path taken.
fn visit(graph: StateGraph<ChatState>, name: &'static str) -> StateGraph<ChatState> {
    graph.add_node_fn(name, move |mut state: ChatState, _| async move {
        state.scratchpad.push_str(name);
        state.scratchpad.push(' ');
        Ok(state)
    })
}

#[tokio::test]
async fn router_sends_the_run_down_the_mapped_branch() {
    let graph = visit(visit(visit(StateGraph::new("router"), "triage"), "billing"), "support")
        .set_entry_point("triage")
        .add_conditional_edges(
            "triage",
            |state: &ChatState| if state.input.contains("invoice") { "money" } else { "other" },
            [("money", "billing"), ("other", "support")],
        )
        .set_finish_point("billing")
        .set_finish_point("support")
        .compile()
        .unwrap();
    let billing = graph.invoke(ChatState { input: "my invoice".into(), ..ChatState::default() }).await.unwrap();
    assert_eq!(billing.scratchpad, "triage billing ");
    let support = graph.invoke(ChatState { input: "help".into(), ..ChatState::default() }).await.unwrap();
    assert_eq!(support.scratchpad, "triage support ");
}

#[tokio::test]
async fn router_key_missing_from_mapping_fails_with_unknown_route() {
    let graph = visit(StateGraph::new("router"), "a")
        .set_entry_point("a")
        .add_conditional_edges("a", |_: &ChatState| "nope", [("yes", END)])
        .compile()
        .unwrap();
    let err = graph.invoke(ChatState::default()).await.unwrap_err();
    assert!(matches!(&err, Error::Graph(GraphError::UnknownRoute { key, node, .. }) if key == "nope" && node == "a"));
}

fn counting_loop(stop_at: usize) -> StateGraph<ChatState> {
    StateGraph::new("loop")
        .add_node_fn("count", |mut state: ChatState, _| async move {
            state.messages.push(Message::assistant("tick"));
            Ok(state)
        })
        .set_entry_point("count")
        .add_conditional_edges(
            "count",
            move |state: &ChatState| if state.messages.len() < stop_at { "again" } else { "done" },
            [("again", "count"), ("done", END)],
        )
}

#[tokio::test]
async fn cycle_that_ends_runs_until_its_router_stops_it() {
    let graph = counting_loop(7).compile().unwrap();
    let state = graph.invoke(ChatState::default()).await.unwrap();
    assert_eq!(state.messages.len(), 7);
}

#[tokio::test]
async fn cycle_within_exactly_the_limit_succeeds() {
    let graph = counting_loop(25).compile().unwrap();
    assert_eq!(graph.invoke(ChatState::default()).await.unwrap().messages.len(), 25);
}

#[tokio::test]
async fn endless_cycle_fails_with_recursion_limit() {
    let graph = counting_loop(usize::MAX).compile().unwrap();
    let err = graph.invoke(ChatState::default()).await.unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::RecursionLimit { limit: 25, .. })), "{err:?}");
    assert_eq!(err.to_string(), "graph `loop` hit its recursion limit of 25 steps");

    let graph = counting_loop(usize::MAX).with_recursion_limit(3).compile().unwrap();
    let err = graph.invoke(ChatState::default()).await.unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::RecursionLimit { limit: 3, .. })), "{err:?}");
}

#[tokio::test]
async fn fan_out_runs_both_branches_and_merges_in_edge_order() {
    let graph = StateGraph::<ChatState>::new("fan")
        .add_node_fn("left", |mut state: ChatState, _| async move {
            state.extra.insert("left".into(), true.into());
            Ok(state)
        })
        .add_node_fn("right", |mut state: ChatState, _| async move {
            state.extra.insert("right".into(), true.into());
            state.output = "from right".into();
            Ok(state)
        })
        .add_node_fn("join", |mut state: ChatState, _| async move {
            state.output = format!("{} keys, {}", state.extra.len(), state.output);
            Ok(state)
        })
        .add_edge(START, "left")
        .add_edge(START, "right")
        .add_edge("left", "join")
        .add_edge("right", "join")
        .set_finish_point("join")
        .compile()
        .unwrap();
    let state = graph.invoke(ChatState::default()).await.unwrap();
    assert_eq!(state.output, "2 keys, from right");
}

/// A custom typed state: no message history, snapshotted whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: u32,
    log: Vec<String>,
}

impl GraphState for Counter {
    fn begin_turn(&mut self, input: &str) {
        self.log.push(input.to_owned());
    }

    fn output(&self) -> String {
        self.value.to_string()
    }
}

#[tokio::test]
async fn custom_state_runs_the_same_way() {
    let graph = StateGraph::<Counter>::new("custom")
        .add_node_fn("inc", |mut state: Counter, _| async move {
            state.value += 1;
            Ok(state)
        })
        .set_entry_point("inc")
        .add_conditional_edges(
            "inc",
            |s: &Counter| if s.value < 3 { "more" } else { "stop" },
            [("more", "inc"), ("stop", END)],
        )
        .compile()
        .unwrap();
    assert_eq!(graph.invoke(Counter::default()).await.unwrap().value, 3);
}

#[tokio::test]
async fn node_error_is_returned_as_the_node_returned_it() {
    let graph = StateGraph::<ChatState>::new("boom")
        .add_node_fn("boom", |_: ChatState, _| async move { Err(Error::InvalidConfig { reason: "boom".into() }) })
        .set_entry_point("boom")
        .set_finish_point("boom")
        .compile()
        .unwrap();
    let err = graph.invoke(ChatState::default()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
}

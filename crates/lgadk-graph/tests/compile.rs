//! `compile` and `GraphBuilder::build` reject every malformed graph with a typed error.

use lgadk_core::{ChatState, Error, GraphError, Result};
use lgadk_graph::{CompiledGraph, END, GraphBuilder, START, StateGraph};

fn graph() -> StateGraph<ChatState> {
    StateGraph::new("g")
}

fn noop(graph: StateGraph<ChatState>, name: &str) -> StateGraph<ChatState> {
    graph.add_node_fn(name, |state: ChatState, _| async move { Ok(state) })
}

#[expect(clippy::panic, reason = "test helper: a wrong result fails the test")]
fn graph_error(result: Result<CompiledGraph<ChatState>>) -> GraphError {
    match result {
        Err(Error::Graph(err)) => err,
        other => panic!("expected a graph error, got {other:?}"),
    }
}

#[test]
fn compile_without_entry_fails_with_no_entry_point() {
    let err = graph_error(noop(graph(), "a").add_edge("a", END).compile());
    assert!(matches!(err, GraphError::NoEntryPoint { .. }), "{err:?}");
}

#[test]
fn compile_with_edge_to_unknown_node_fails_naming_it() {
    let err = graph_error(noop(graph(), "a").set_entry_point("a").add_edge("a", "ghost").compile());
    assert!(matches!(&err, GraphError::UnknownNode { node, .. } if node == "ghost"), "{err:?}");
    let err = graph_error(noop(graph(), "a").set_entry_point("nowhere").add_edge("a", END).compile());
    assert!(matches!(&err, GraphError::UnknownNode { node, .. } if node == "nowhere"), "{err:?}");
}

#[test]
fn compile_with_router_mapping_to_unknown_node_fails() {
    let g = noop(graph(), "a").set_entry_point("a").add_conditional_edges("a", |_: &ChatState| "x", [("x", "ghost")]);
    assert!(matches!(graph_error(g.compile()), GraphError::UnknownNode { node, .. } if node == "ghost"));
}

#[test]
fn compile_with_unreachable_node_fails_naming_it() {
    let g = noop(noop(graph(), "a"), "island").set_entry_point("a").set_finish_point("a").add_edge("island", END);
    let err = graph_error(g.compile());
    assert!(matches!(&err, GraphError::Unreachable { node, .. } if node == "island"), "{err:?}");
}

#[test]
fn compile_with_node_without_outgoing_edge_fails_with_dead_end() {
    let g = noop(noop(graph(), "a"), "b").set_entry_point("a").add_edge("a", "b");
    assert!(matches!(graph_error(g.compile()), GraphError::DeadEnd { node, .. } if node == "b"));
}

#[test]
fn compile_with_duplicate_node_fails() {
    let g = noop(noop(graph(), "a"), "a").set_entry_point("a").set_finish_point("a");
    assert!(matches!(graph_error(g.compile()), GraphError::DuplicateNode { node, .. } if node == "a"));
}

#[test]
fn compile_with_misused_virtual_nodes_fails_with_invalid() {
    let into_start = noop(graph(), "a").set_entry_point("a").add_edge("a", START);
    assert!(matches!(graph_error(into_start.compile()), GraphError::Invalid { .. }));
    let out_of_end = noop(graph(), "a").set_entry_point("a").set_finish_point("a").add_edge(END, "a");
    assert!(matches!(graph_error(out_of_end.compile()), GraphError::Invalid { .. }));
    let reserved = noop(graph(), END).add_edge(START, END);
    assert!(matches!(graph_error(reserved.compile()), GraphError::Invalid { .. }));
}

#[test]
fn compile_with_router_and_static_edge_on_one_node_fails() {
    let g = noop(noop(graph(), "a"), "b")
        .set_entry_point("a")
        .add_edge("a", "b")
        .add_conditional_edges("a", |_: &ChatState| "end", [("end", END)])
        .set_finish_point("b");
    assert!(matches!(graph_error(g.compile()), GraphError::Invalid { .. }));
}

#[test]
fn compile_with_zero_recursion_limit_fails() {
    let g = noop(graph(), "a").set_entry_point("a").set_finish_point("a").with_recursion_limit(0);
    assert!(matches!(graph_error(g.compile()), GraphError::Invalid { .. }));
}

#[test]
fn builder_with_one_agent_wires_start_to_end() {
    let graph = GraphBuilder::new("solo").add_node_fn("a", |state, _| async move { Ok(state) }).build().unwrap();
    assert_eq!(graph.name(), "solo");
}

#[test]
fn builder_with_several_agents_and_no_edges_fails() {
    let err = GraphBuilder::new("duo")
        .add_node_fn("a", |state, _| async move { Ok(state) })
        .add_node_fn("b", |state, _| async move { Ok(state) })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Graph(GraphError::Invalid { .. })), "{err:?}");
    assert!(err.to_string().contains("2 agents"), "{err}");
}

#[test]
fn builder_without_agents_fails() {
    assert!(matches!(GraphBuilder::new("empty").build(), Err(Error::Graph(GraphError::Invalid { .. }))));
}

#[test]
fn builder_with_several_agents_and_edges_builds() {
    let graph = GraphBuilder::new("duo")
        .add_node_fn("a", |state, _| async move { Ok(state) })
        .add_node_fn("b", |state, _| async move { Ok(state) })
        .set_entry_point("a")
        .add_edge("a", "b")
        .set_finish_point("b")
        .build();
    assert!(graph.is_ok());
}

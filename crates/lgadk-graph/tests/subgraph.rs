//! A compiled graph as a node of another: its state mapped in and out, its usage and events
//! counted for the outer run, its interrupts resumable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt as _;
use lgadk_core::{AgentEvent, ChatState, Error, GraphState, Message, RunContext, Usage};
use lgadk_graph::{CompiledGraph, END, RunEvent, RunRequest, START, StateGraph};
use serde::{Deserialize, Serialize};

/// The inner graph's own state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Draft {
    topic: String,
    text: String,
}

impl GraphState for Draft {}

fn drafting(reviews: Arc<AtomicUsize>) -> CompiledGraph<Draft> {
    StateGraph::<Draft>::new("drafting")
        .add_node_fn("write", |mut d: Draft, ctx: Arc<RunContext>| async move {
            d.text = format!("a draft about {}", d.topic);
            ctx.add_usage(Usage::new(7, 3));
            ctx.emit(AgentEvent::Token { node: "write".into(), text: d.text.clone() });
            Ok(d)
        })
        .add_node_fn("review", move |mut d: Draft, ctx: Arc<RunContext>| {
            let reviews = Arc::clone(&reviews);
            async move {
                reviews.fetch_add(1, Ordering::SeqCst);
                match ctx.resume_value() {
                    None if d.topic == "risky" => Err(Error::interrupt_with("review", serde_json::json!("approve?"))),
                    verdict => {
                        d.text = format!("{} ({})", d.text, verdict.map_or("ok".to_owned(), ToString::to_string));
                        Ok(d)
                    }
                }
            }
        })
        .add_edge(START, "write")
        .add_edge("write", "review")
        .add_edge("review", END)
        .compile()
        .unwrap()
}

fn outer(reviews: Arc<AtomicUsize>) -> CompiledGraph<ChatState> {
    StateGraph::<ChatState>::new("outer")
        .add_subgraph(
            "draft",
            drafting(reviews),
            |s: &ChatState| Draft { topic: s.input.clone(), text: String::new() },
            |s: &mut ChatState, d: Draft| {
                s.messages.push(Message::user(s.input.clone()));
                s.output.clone_from(&d.text);
                s.messages.push(Message::assistant(d.text));
            },
        )
        .add_edge(START, "draft")
        .add_edge("draft", END)
        .compile()
        .unwrap()
}

#[tokio::test]
async fn the_subgraph_runs_on_its_own_state_and_its_usage_and_events_count_for_the_run() {
    let graph = outer(Arc::default());
    let mut stream = graph.stream(RunRequest::new("owls"));
    let (mut tokens, mut nodes, mut done) = (Vec::new(), Vec::new(), None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            RunEvent::Token { node, text } => tokens.push(format!("{node}: {text}")),
            RunEvent::NodeStarted { node, .. } => nodes.push(node),
            RunEvent::Finished(response) => done = Some(response),
            _ => {}
        }
    }
    let done = done.unwrap();
    assert_eq!(done.output, "a draft about owls (ok)");
    assert_eq!(tokens, ["write: a draft about owls"], "the inner node's events reach the outer stream");
    assert_eq!(nodes, ["draft"], "the subgraph is one node of the outer graph");
    assert_eq!((done.usage.prompt_tokens, done.usage.completion_tokens), (7, 3));
    let summary = graph.sessions().get_session_summary(&done.session_id).await.unwrap().unwrap();
    assert_eq!(summary.total_tokens_in, 7);
}

#[tokio::test]
async fn an_interrupt_inside_the_subgraph_pauses_the_run_and_resume_reruns_the_subgraph() {
    let reviews = Arc::new(AtomicUsize::new(0));
    let graph = outer(Arc::clone(&reviews));
    let err = graph.run(RunRequest::new("risky")).await.unwrap_err();
    let Error::Interrupted { node, session_id: Some(id), value } = err else { panic!("{err:?}") };
    assert_eq!(node, "review");
    assert_eq!(value, Some(serde_json::json!("approve?")));
    assert_eq!(graph.history(&id, 1).await.unwrap()[0].next, ["draft"], "the outer run resumes at the subgraph");
    let done = graph.resume(&id, serde_json::json!("approved")).await.unwrap();
    assert_eq!(done.output, "a draft about risky (\"approved\")");
    assert_eq!(reviews.load(Ordering::SeqCst), 2);
}

//! The context window's invariants, over random conversations.

use std::collections::HashSet;

use lgadk_core::context::{ContextSummary, ContextWindow, EstimatedTokens, TokenCounter, window};
use lgadk_core::serde_json::json;
use lgadk_core::{Message, Role, ToolBatch, ToolCall};
use proptest::prelude::*;

/// One step of a random conversation.
#[derive(Debug, Clone)]
enum Step {
    User(usize),
    Assistant(usize),
    /// An assistant message with this many calls, followed by their results.
    Calls(usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..60).prop_map(Step::User),
        (0usize..60).prop_map(Step::Assistant),
        (1usize..4, 0usize..60).prop_map(|(n, len)| Step::Calls(n, len)),
    ]
}

/// A random conversation and its pending batch (the trailing calls waiting for approval).
#[derive(Debug, Clone)]
struct Conversation {
    messages: Vec<Message>,
    pending: Option<ToolBatch>,
}

fn calls(first_id: usize, n: usize) -> Message {
    let calls = (0..n)
        .map(|k| ToolCall { id: format!("call_{}", first_id + k), name: "lookup".into(), arguments: json!({"k": k}) })
        .collect();
    Message { tool_calls: calls, ..Message::assistant("") }
}

fn conversation() -> impl Strategy<Value = Conversation> {
    (any::<bool>(), prop::collection::vec(step(), 0..24), prop::option::of(1usize..4)).prop_map(
        |(system, steps, pending)| {
            let mut messages = Vec::new();
            if system {
                messages.push(Message::system("You are a careful assistant."));
            }
            let mut id = 0;
            for step in steps {
                match step {
                    // Numbered, so that equal messages never stand for each other in the checks.
                    Step::User(len) => messages.push(Message::user(format!("u{} {}", messages.len(), "u".repeat(len)))),
                    Step::Assistant(len) => {
                        messages.push(Message::assistant(format!("a{} {}", messages.len(), "a".repeat(len))));
                    }
                    Step::Calls(n, len) => {
                        messages.push(calls(id, n));
                        for k in 0..n {
                            messages.push(Message::tool(format!("call_{}", id + k), "r".repeat(len)));
                        }
                        id += n;
                    }
                }
            }
            let pending = pending.map(|n| {
                messages.push(calls(id, n));
                ToolBatch { call_ids: (id..id + n).map(|k| format!("call_{k}")).collect(), ..ToolBatch::default() }
            });
            Conversation { messages, pending }
        },
    )
}

fn policy() -> impl Strategy<Value = ContextWindow> {
    (prop::option::of(0usize..12), prop::option::of(0u64..600)).prop_map(|(messages, tokens)| {
        let mut policy = ContextWindow::default();
        policy.max_messages = messages;
        policy.max_tokens = tokens;
        policy
    })
}

/// Every tool result follows its call, and every call is followed by all its results, but for
/// `pending`, which may end the request without them.
fn check_pairing(messages: &[Message], pending: Option<&ToolBatch>) -> Result<(), TestCaseError> {
    let mut i = 0;
    while i < messages.len() {
        let message = &messages[i];
        prop_assert!(message.role != Role::Tool, "a tool result without its call at {i}: {messages:?}");
        i += 1;
        if message.role == Role::Assistant && !message.tool_calls.is_empty() {
            let wanted: HashSet<&str> = message.tool_calls.iter().map(|c| c.id.as_str()).collect();
            let mut got = HashSet::new();
            while i < messages.len() && messages[i].role == Role::Tool {
                let id = messages[i].tool_call_id.as_deref().unwrap_or("");
                prop_assert!(wanted.contains(id), "result {id} is not for the call before it");
                got.insert(id);
                i += 1;
            }
            let is_pending_tail = i == messages.len()
                && pending.is_some_and(|b| {
                    b.call_ids.iter().map(String::as_str).eq(message.tool_calls.iter().map(|c| c.id.as_str()))
                });
            prop_assert!(got == wanted || (got.is_empty() && is_pending_tail), "a call without all its results");
        }
    }
    Ok(())
}

/// The minimal legal window: the system prompt, the last user message, the last unit.
fn minimal(messages: &[Message]) -> Vec<Message> {
    let system_end = messages.iter().position(|m| m.role != Role::System).unwrap_or(messages.len());
    let mut out = messages[..system_end].to_vec();
    let mut last_unit = messages.len();
    while last_unit > system_end && messages[last_unit - 1].role == Role::Tool {
        last_unit -= 1;
    }
    last_unit = last_unit.saturating_sub(1).max(system_end);
    let last_user = messages[system_end..].iter().rposition(|m| m.role == Role::User).map(|p| p + system_end);
    if let Some(user) = last_user.filter(|&u| u < last_unit) {
        out.push(messages[user].clone());
    }
    out.extend_from_slice(&messages[last_unit..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn windows_keep_the_invariants(
        conversation in conversation(),
        policy in policy(),
        summary in prop::option::of("[a-z ]{1,80}"),
    ) {
        let Conversation { messages, pending } = conversation;
        let w = window(&messages, &policy, summary.as_deref());

        // The system prompt is kept, first.
        let system_end = messages.iter().position(|m| m.role != Role::System).unwrap_or(messages.len());
        prop_assert_eq!(&w.messages[..system_end], &messages[..system_end]);
        // The summary, when sent, comes right after it.
        let mut rest = &w.messages[system_end..];
        if w.summary_sent {
            let expected = ContextSummary::message(summary.as_deref().unwrap_or_default());
            prop_assert_eq!(rest.first(), Some(&expected));
            rest = &rest[1..];
        }
        // What remains is the history's messages, in order, with none left out or added.
        let mut kept = Vec::new();
        let mut from = system_end;
        for message in rest {
            let at = messages[from..].iter().position(|m| m == message).map(|p| p + from);
            prop_assert!(at.is_some(), "a message not from the history, or out of order");
            let at = at.unwrap_or_default();
            kept.push(at);
            from = at + 1;
        }
        let mut all: Vec<usize> = kept.iter().copied().chain(w.dropped.iter().copied()).collect();
        all.sort_unstable();
        prop_assert_eq!(all, (system_end..messages.len()).collect::<Vec<_>>());

        // Calls and results are never separated.
        check_pairing(&w.messages, pending.as_ref())?;
        // The pending batch is never dropped.
        if pending.is_some() {
            prop_assert_eq!(w.messages.last(), messages.last());
        }
        // The last user message is kept.
        if let Some(user) = messages.iter().rposition(|m| m.role == Role::User) {
            prop_assert!(kept.contains(&user));
        }
        // Within the budget, or the minimal window.
        let tokens: u64 = w.messages.iter().map(|m| EstimatedTokens.count_message(m)).sum();
        prop_assert_eq!(tokens, w.tokens);
        let counted = kept.len();
        let within = policy.max_tokens.is_none_or(|max| tokens <= max)
            && policy.max_messages.is_none_or(|max| counted <= max);
        if !within {
            prop_assert_eq!(&w.messages, &minimal(&messages));
            prop_assert!(w.minimal);
        }
        if w.minimal {
            let without_summary: Vec<Message> = w.messages[..system_end].iter().chain(rest).cloned().collect();
            prop_assert_eq!(without_summary, minimal(&messages));
        }
    }

    #[test]
    fn no_limit_sends_everything(conversation in conversation()) {
        let w = window(&conversation.messages, &ContextWindow::default(), None);
        prop_assert_eq!(w.messages, conversation.messages);
        prop_assert!(w.dropped.is_empty());
    }
}

//! Token counting with a real tokenizer, for providers that report no usage.
//!
//! Counts use OpenAI's `o200k_base` encoding (GPT-4o, GPT-4.1, o-series, GPT-5) through
//! `tiktoken-rs`, loaded once per process. For those models the numbers match what OpenAI bills
//! for plain chat messages; for other vocabularies (Llama, Mistral…) they are a tokenizer-based
//! estimate, never a length-based guess.
//!
//! # Formula
//! Following OpenAI's published recipe for chat models:
//! - every message costs [`TOKENS_PER_MESSAGE`] (3) plus the tokens of its role, its content,
//!   and, when set, its name plus [`TOKENS_PER_NAME`] (1);
//! - an assistant message's tool calls add the tokens of each call's name and JSON arguments;
//!   a tool message adds the tokens of the call id it answers;
//! - each offered tool adds the tokens of its name, description and JSON schema;
//! - the prompt adds [`REPLY_PRIMING_TOKENS`] (3) for the assistant reply the model starts.
//!
//! A completion costs the tokens of its content plus those of its tool calls.
//!
//! [`O200kCounter`] is the same count as a [`TokenCounter`], for the token budgets of
//! [`ContextWindow`](lgadk_core::ContextWindow):
//!
//! ```
//! use std::sync::Arc;
//! use lgadk_core::{ContextWindow, Message, TokenCounter};
//! use lgadk_llm::tokens::{self, O200kCounter};
//!
//! let policy = ContextWindow::token_budget(4_000).with_counter(Arc::new(O200kCounter));
//! let hello = Message::user("hello");
//! assert_eq!(policy.counter.count_message(&hello), tokens::count_message(&hello));
//! ```

use lgadk_core::{ChatRequest, Message, TokenCounter, ToolSpec, Usage};

/// Fixed overhead of every chat message (`<|start|>{role}<|message|>…<|end|>`).
pub use lgadk_core::context::TOKENS_PER_MESSAGE;
/// Extra overhead when a message carries a `name`.
pub use lgadk_core::context::TOKENS_PER_NAME;
/// Tokens that prime the assistant's reply at the end of every prompt.
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Loads the `o200k_base` tokenizer if this process has not yet (a fraction of a second, once).
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
}

/// The number of `o200k_base` tokens in `text`.
pub fn count_text(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let tokens = tiktoken_rs::o200k_base_singleton().encode_ordinary(text).len();
    u64::try_from(tokens).unwrap_or(u64::MAX)
}

/// Counts `o200k_base` tokens for context-window budgets: the same numbers as
/// [`count_text`] and [`count_message`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct O200kCounter;

impl TokenCounter for O200kCounter {
    fn count_text(&self, text: &str) -> u64 {
        count_text(text)
    }
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// Tokens a message costs inside a prompt, overhead included (see the [module docs](self)):
/// [`TokenCounter::count_message`] with the `o200k_base` tokenizer.
pub fn count_message(message: &Message) -> u64 {
    O200kCounter.count_message(message)
}

fn count_tool(tool: &ToolSpec) -> u64 {
    count_text(&tool.name) + count_text(&tool.description) + count_text(&tool.parameters.to_string())
}

/// Prompt tokens of `request`: its messages, its tools and the reply priming.
pub fn count_prompt(request: &ChatRequest) -> u64 {
    let messages: u64 = request.messages.iter().map(count_message).sum();
    let tools: u64 = request.tools.iter().map(count_tool).sum();
    messages + tools + REPLY_PRIMING_TOKENS
}

/// Completion tokens of a reply: its content and its tool calls, without message overhead.
pub fn count_completion(reply: &Message) -> u64 {
    let calls: u64 =
        reply.tool_calls.iter().map(|call| count_text(&call.name) + count_text(&json_text(&call.arguments))).sum();
    count_text(&reply.content) + calls
}

/// The usage of answering `request` with `reply`, counted with the tokenizer.
pub fn count_usage(request: &ChatRequest, reply: &Message) -> Usage {
    Usage::new(count_prompt(request), count_completion(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_counted_by_the_tokenizer_not_by_length() {
        assert_eq!(count_text(""), 0);
        assert_eq!(count_text("hello"), 1);
        // 44 characters, but far fewer than 44/4 = 11 tokens would suggest only by chance: check exact.
        let ids = tiktoken_rs::o200k_base_singleton().encode_ordinary("Can you explain neural networks specifically?");
        assert_eq!(count_text("Can you explain neural networks specifically?"), ids.len() as u64);
    }

    #[test]
    fn the_counter_counts_messages_as_the_usage_does() {
        let call = lgadk_core::ToolCall { id: "c1".into(), name: "add".into(), arguments: serde_json::json!({"a": 1}) };
        let messages = [
            Message { name: Some("bob".into()), ..Message::user("Can you add one?") },
            Message { tool_calls: vec![call], ..Message::assistant("") },
            Message::tool("c1", "2"),
        ];
        for message in &messages {
            assert_eq!(O200kCounter.count_message(message), count_message(message));
        }
    }

    #[test]
    fn prompt_follows_the_documented_formula() {
        let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user("hello")]);
        let expected = (3 + count_text("system") + count_text("Be brief."))
            + (3 + count_text("user") + count_text("hello"))
            + REPLY_PRIMING_TOKENS;
        assert_eq!(count_prompt(&request), expected);
    }
}

//! Bounded session logs: how much of its message log a session keeps.
//!
//! A session's log grows by every turn's messages. A [`LogRetention`] bounds it: after a turn,
//! the graph computes where the log may start ([`LogRetention::cut`], over whole units, as
//! [`window`](crate::context::window) cuts a request) and the store drops the positions before
//! that in the same atomic write as the turn ([`NewCheckpoint::log_start`](crate::NewCheckpoint::log_start)). Storage and the
//! cost of loading a session then stay in proportion to what is kept, not to the session's age.
//!
//! Positions stay absolute: a cut moves the log's start, never renumbers it, so a checkpoint's
//! [`log_len`](crate::Checkpoint::log_len) keeps its meaning and an older checkpoint reads what
//! remains of its range.
//!
//! # What a cut never does
//! - separate an assistant message with tool calls from its tool results (the log starts at a
//!   unit's first message);
//! - drop the latest user message or anything after it: the exchange in progress, a call
//!   waiting for approval included, is kept whole (without a user message, the last unit is);
//! - move the start back: what was dropped stays dropped.
//!
//! Leading system messages are not special: a node that needs a system prompt on every request
//! adds it when it builds the request (as the tool loop does), not to the history.
//!
//! ```
//! use lgadk_core::{LogRetention, Message, ToolCall};
//! use lgadk_core::serde_json::json;
//!
//! let call = ToolCall { id: "c1".into(), name: "weather".into(), arguments: json!({}) };
//! let log = vec![
//!     Message::user("Hi"),
//!     Message::assistant("Hello."),
//!     Message::user("Weather?"),
//!     Message { tool_calls: vec![call], ..Message::assistant("") },
//!     Message::tool("c1", "12°C"),
//!     Message::assistant("12°C."),
//! ];
//! // Three messages would start inside the call's unit: the cut keeps the whole exchange.
//! assert_eq!(LogRetention::LastMessages(3).cut(&log, 0), 2);
//! assert_eq!(LogRetention::LastMessages(4).cut(&log, 0), 2);
//! assert_eq!(LogRetention::KeepAll.cut(&log, 0), 0);
//! // What a running summary covers (its first 2 messages) can go.
//! assert_eq!(LogRetention::AfterSummary.cut(&log, 2), 2);
//! ```

use serde::{Deserialize, Serialize};

use crate::context::units;
use crate::message::{Message, Role};

/// How much of its message log a session keeps: see the [module docs](self).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "n")]
#[non_exhaustive]
pub enum LogRetention {
    /// Every message (the default): the log only grows.
    #[default]
    KeepAll,
    /// The last `n` messages, extended back to the start of the unit the first of them
    /// belongs to; more when the exchange in progress (from the latest user message) is
    /// longer.
    LastMessages(usize),
    /// What follows the running summary: the messages the state's summary covers
    /// ([`GraphState::summarized`](crate::GraphState::summarized), for a
    /// [`ChatState`](crate::ChatState) its [`ContextSummary`](crate::ContextSummary)) are
    /// dropped, since every later request carries the summary instead.
    AfterSummary,
}

impl LogRetention {
    /// How many messages at the start of `messages` (a session's retained history) this
    /// policy drops, given that a running summary stands for the first `summarized` of them.
    /// `0` drops nothing. Pure; see the [module docs](self) for what a cut never does.
    pub fn cut(&self, messages: &[Message], summarized: usize) -> usize {
        let wanted = match *self {
            Self::KeepAll => return 0,
            Self::LastMessages(n) => messages.len().saturating_sub(n),
            Self::AfterSummary => summarized.min(messages.len()),
        };
        if wanted == 0 {
            return 0;
        }
        let (units, _) = units(messages, 0);
        // The exchange in progress: from the latest user message, else the last unit.
        let limit = units
            .iter()
            .rev()
            .find(|unit| messages[unit.start].role == Role::User)
            .or(units.last())
            .map_or(0, |unit| unit.start);
        // The last unit boundary at or before `wanted` (a unit's first message): a cut there
        // leaves no tool result without its call.
        let boundary = units.iter().map(|unit| unit.start).take_while(|&start| start <= wanted).last().unwrap_or(0);
        boundary.min(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolCall;

    fn call(id: &str) -> Message {
        let call = ToolCall { id: id.into(), name: "t".into(), arguments: serde_json::json!({}) };
        Message { tool_calls: vec![call], ..Message::assistant("") }
    }

    fn conversation(turns: usize) -> Vec<Message> {
        (0..turns).flat_map(|i| [Message::user(format!("q{i}")), Message::assistant(format!("a{i}"))]).collect()
    }

    #[test]
    fn last_messages_keeps_the_last_n_of_a_plain_conversation() {
        let log = conversation(10);
        assert_eq!(LogRetention::LastMessages(4).cut(&log, 0), 16);
        assert_eq!(LogRetention::LastMessages(3).cut(&log, 0), 17);
        assert_eq!(LogRetention::LastMessages(50).cut(&log, 0), 0);
        // Never past the latest user message.
        assert_eq!(LogRetention::LastMessages(0).cut(&log, 0), 18);
    }

    #[test]
    fn a_cut_never_starts_inside_a_call_and_its_results() {
        let log = vec![
            Message::user("q"),
            call("a"),
            Message::tool("a", "1"),
            Message::assistant("x"),
            Message::user("q2"),
            Message::assistant("y"),
        ];
        // Keeping 4 would start at the tool result: the cut goes back to the call.
        assert_eq!(LogRetention::LastMessages(4).cut(&log, 0), 1);
        assert_eq!(LogRetention::AfterSummary.cut(&log, 2), 1);
        assert_eq!(LogRetention::AfterSummary.cut(&log, 3), 3);
    }

    #[test]
    fn a_call_awaiting_approval_and_its_question_are_kept() {
        let mut log = conversation(3);
        log.push(Message::user("do it"));
        log.push(call("pending"));
        assert_eq!(LogRetention::LastMessages(1).cut(&log, 0), 6);
        assert_eq!(LogRetention::AfterSummary.cut(&log, 8), 6);
    }

    #[test]
    fn keep_all_and_no_summary_drop_nothing() {
        let log = conversation(5);
        assert_eq!(LogRetention::KeepAll.cut(&log, 10), 0);
        assert_eq!(LogRetention::AfterSummary.cut(&log, 0), 0);
        assert_eq!(LogRetention::LastMessages(3).cut(&[], 0), 0);
    }

    #[test]
    fn a_log_without_user_messages_keeps_its_last_unit() {
        let log = vec![Message::assistant("a"), Message::assistant("b"), call("c"), Message::tool("c", "r")];
        assert_eq!(LogRetention::LastMessages(1).cut(&log, 0), 2);
    }

    #[test]
    fn serialized_as_kind_and_n() {
        let json = serde_json::to_value(LogRetention::LastMessages(50)).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "last_messages", "n": 50}));
        let back: LogRetention = serde_json::from_value(serde_json::json!({"kind": "after_summary"})).unwrap();
        assert_eq!(back, LogRetention::AfterSummary);
    }
}

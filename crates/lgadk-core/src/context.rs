//! Context windows: what of a long history a model request carries.
//!
//! A [`ContextWindow`] is applied when a request is *built*, never to what is stored: the
//! session's history keeps every message, and each request carries the system prompt, the
//! running summary (if any) and as many of the latest messages as the policy allows. The
//! window is computed by the pure function [`window`], which the tool loop's model node calls
//! (`ToolLoop::with_context_window` in `lgadk-graph`) and custom nodes can call themselves.
//!
//! # What a window keeps
//! The history (after the leading system messages, the *system prompt*) is cut into units
//! that are kept or dropped whole: a user message, a plain assistant message, or an assistant
//! message with tool calls together with the tool results that follow it. A window is
//! - the system prompt, always;
//! - the running summary, as one system message right after the system prompt, when there is
//!   one and it fits;
//! - the last user message, always (placed before the rest if it falls out of it);
//! - the last unit, always: a call waiting for approval (the last message of the history, its
//!   results not in it yet) is never dropped;
//! - then whole units, newest first, while the window stays within
//!   [`max_messages`](ContextWindow::max_messages) (the system prompt and summary not counted)
//!   and [`max_tokens`](ContextWindow::max_tokens).
//!
//! So a tool result never reaches a model without its call, and a call never without all its
//! results (except the pending batch at the very end, as the history holds it). If even the
//! *minimal window* (the system prompt, the last user message and the last unit) exceeds a
//! limit, the window is that minimal window: it is the least a model can be asked with.
//! Tool results whose call is not in the history right before them cannot be sent to any
//! provider and are left out.
//!
//! # Tokens
//! Budgets are counted by a [`TokenCounter`]. The default, [`EstimatedTokens`], needs no
//! tokenizer: one token per started 3 bytes of UTF-8 text plus OpenAI's per-message overhead,
//! which over-counts English text (about 4 bytes a token) by about a third and is close for
//! CJK text, so a budget it keeps is rarely exceeded by a real tokenizer. `lgadk-llm` has the
//! exact `o200k_base` counter (`lgadk_llm::tokens::O200kCounter`) for OpenAI's current models.
//!
//! # Summaries
//! With a [summarizer](ContextWindow::with_summarizer), messages that leave the window are
//! folded into a running [`ContextSummary`] kept in the state: each request summarizes only
//! the messages that left the window since the last summary (the old summary plus those
//! messages go to the summarizer), and the summarizer's usage counts for the turn.
//! [`ContextSummary::covers`] counts messages of the stored history, so the summary stays right
//! across turns and processes; should a window later reach back over covered messages (a
//! larger limit), they are sent verbatim as well: the model may read something twice, never
//! miss it. A summarizer that fails fails the request it was made for, as the model would.
//!
//! A custom node does what the tool loop does: [`window`] with the current summary;
//! [`ContextWindow::summary_due`] says what left since (a [`HistoryMap`] tells where the stored
//! history sits in the request); [`ContextWindow::summary_request`] is the summarizer's
//! request; the reply's text, with [`SummaryDue::covers`], is the new [`ContextSummary`] to
//! store; then [`window`] again with it.
//!
//! ```
//! use lgadk_core::context::{ContextWindow, window};
//! use lgadk_core::{Message, ToolCall};
//! use lgadk_core::serde_json::json;
//!
//! let call = ToolCall { id: "c1".into(), name: "weather".into(), arguments: json!({"city": "Oslo"}) };
//! let history = vec![
//!     Message::system("You are terse."),
//!     Message::user("Hi"),
//!     Message::assistant("Hello."),
//!     Message::user("Weather in Oslo?"),
//!     Message { tool_calls: vec![call], ..Message::assistant("") },
//!     Message::tool("c1", "12°C, rain"),
//! ];
//! // Two messages allowed: the call and its result travel together, with the system prompt
//! // and the question they answer.
//! let w = window(&history, &ContextWindow::last_messages(2), None);
//! let roles: Vec<_> = w.messages.iter().map(|m| m.content.as_str()).collect();
//! assert_eq!(roles, ["You are terse.", "Weather in Oslo?", "", "12°C, rain"]);
//! assert_eq!(w.dropped, vec![1, 2]);
//! assert!(w.minimal);
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::message::{Message, Role};
use crate::model::{ChatModel, ChatRequest};

/// Fixed overhead of every chat message in a prompt (OpenAI's recipe).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra overhead when a message carries a `name`.
pub const TOKENS_PER_NAME: u64 = 1;

/// Counts the tokens a prompt costs, for token budgets.
pub trait TokenCounter: fmt::Debug + Send + Sync + 'static {
    /// Tokens in `text`.
    fn count_text(&self, text: &str) -> u64;

    /// Tokens `message` costs inside a prompt: [`TOKENS_PER_MESSAGE`], its role and content,
    /// its name (plus [`TOKENS_PER_NAME`]), its tool calls' names and JSON arguments, and the
    /// call id a tool result answers.
    fn count_message(&self, message: &Message) -> u64 {
        let mut total =
            TOKENS_PER_MESSAGE + self.count_text(role_name(message.role)) + self.count_text(&message.content);
        if let Some(name) = &message.name {
            total += TOKENS_PER_NAME + self.count_text(name);
        }
        for call in &message.tool_calls {
            let arguments = match &call.arguments {
                serde_json::Value::String(raw) => self.count_text(raw),
                other => self.count_text(&other.to_string()),
            };
            total += self.count_text(&call.name) + arguments;
        }
        if let Some(id) = &message.tool_call_id {
            total += self.count_text(id);
        }
        total
    }
}

/// The role's wire name.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The tokenizer-free default counter: one token per started 3 bytes of UTF-8 (see the
/// [module docs](self)). Deterministic and cheap; an estimate, not a tokenizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EstimatedTokens;

impl TokenCounter for EstimatedTokens {
    fn count_text(&self, text: &str) -> u64 {
        u64::try_from(text.len().div_ceil(3)).unwrap_or(u64::MAX)
    }
}

/// The running summary of the messages that left the context window, kept in the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContextSummary {
    /// The summary's text.
    pub text: String,
    /// How many messages of the state's history (from its first message) the summary covers.
    /// When the session's log is cut, it counts from the first message kept
    /// ([`GraphState::history_cut`](crate::GraphState::history_cut)).
    pub covers: usize,
}

impl ContextSummary {
    /// A summary `text` covering the first `covers` messages of the history.
    pub fn new(text: impl Into<String>, covers: usize) -> Self {
        Self { text: text.into(), covers }
    }

    /// The system message that carries `text` in a request.
    pub fn message(text: &str) -> Message {
        Message::system(format!("Summary of the earlier conversation:\n{text}"))
    }
}

/// The default instructions of the summarizer.
pub const DEFAULT_SUMMARY_PROMPT: &str = "You maintain a running summary of a conversation between a user and an \
assistant that uses tools. You get the current summary (possibly empty) and the messages that follow it. Reply with \
the updated summary only: keep facts, decisions, names, numbers, tool results that matter and open questions; be brief.";

/// A context-window policy: see the [module docs](self).
#[derive(Clone)]
#[non_exhaustive]
pub struct ContextWindow {
    /// At most this many messages besides the system prompt and the summary.
    pub max_messages: Option<usize>,
    /// At most this many tokens for the whole window, as [`counter`](Self::counter) counts.
    pub max_tokens: Option<u64>,
    /// Counts tokens for [`max_tokens`](Self::max_tokens) (default [`EstimatedTokens`]).
    pub counter: Arc<dyn TokenCounter>,
    /// Folds messages that leave the window into a running summary, when set.
    pub summarizer: Option<Arc<dyn ChatModel>>,
    /// The summarizer's instructions (default [`DEFAULT_SUMMARY_PROMPT`]).
    pub summary_prompt: String,
}

impl fmt::Debug for ContextWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextWindow")
            .field("max_messages", &self.max_messages)
            .field("max_tokens", &self.max_tokens)
            .field("counter", &self.counter)
            .field("summarizer", &self.summarizer.as_ref().map(|m| m.id().to_owned()))
            .finish_non_exhaustive()
    }
}

impl Default for ContextWindow {
    /// No limit: every message is sent.
    fn default() -> Self {
        Self {
            max_messages: None,
            max_tokens: None,
            counter: Arc::new(EstimatedTokens),
            summarizer: None,
            summary_prompt: DEFAULT_SUMMARY_PROMPT.to_owned(),
        }
    }
}

impl ContextWindow {
    /// Keeps the last `n` messages (whole tool-call units; the system prompt not counted).
    pub fn last_messages(n: usize) -> Self {
        Self { max_messages: Some(n), ..Self::default() }
    }

    /// Keeps the window within `tokens`, counted with [`EstimatedTokens`] unless
    /// [`with_counter`](Self::with_counter) says otherwise.
    pub fn token_budget(tokens: u64) -> Self {
        Self { max_tokens: Some(tokens), ..Self::default() }
    }

    /// Sets [`max_messages`](Self::max_messages).
    #[must_use]
    pub fn with_max_messages(mut self, n: usize) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Sets [`max_tokens`](Self::max_tokens).
    #[must_use]
    pub fn with_max_tokens(mut self, tokens: u64) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Counts tokens with `counter`.
    #[must_use]
    pub fn with_counter(mut self, counter: Arc<dyn TokenCounter>) -> Self {
        self.counter = counter;
        self
    }

    /// Summarizes the messages that leave the window with `model`.
    #[must_use]
    pub fn with_summarizer(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.summarizer = Some(model);
        self
    }

    /// Replaces the summarizer's instructions.
    #[must_use]
    pub fn with_summary_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.summary_prompt = prompt.into();
        self
    }
}

/// What [`window`] keeps of a history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Window {
    /// The messages to send, in order: system prompt, summary, then the kept messages.
    pub messages: Vec<Message>,
    /// Indices (into the input) of the messages left out, ascending.
    pub dropped: Vec<usize>,
    /// Index (into the input) of the first message of the kept run of latest messages; the
    /// messages before it, but for the system prompt and a kept last user message, were left out.
    pub kept_from: usize,
    /// Whether the summary was sent.
    pub summary_sent: bool,
    /// Tokens of [`messages`](Self::messages) as the policy's counter counts them.
    pub tokens: u64,
    /// Whether the window is the minimal one: besides the system prompt (and the summary), only
    /// the last user message and the last unit.
    pub minimal: bool,
}

/// A run of messages kept or dropped whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Cuts `messages[from..]` into units; orphan tool results are returned apart.
pub(crate) fn units(messages: &[Message], from: usize) -> (Vec<Unit>, Vec<usize>) {
    let (mut units, mut orphans) = (Vec::new(), Vec::new());
    let mut i = from;
    while i < messages.len() {
        let message = &messages[i];
        if message.role == Role::Tool {
            orphans.push(i);
            i += 1;
            continue;
        }
        let mut end = i + 1;
        if message.role == Role::Assistant && !message.tool_calls.is_empty() {
            let ids: HashSet<&str> = message.tool_calls.iter().map(|c| c.id.as_str()).collect();
            while end < messages.len()
                && messages[end].role == Role::Tool
                && messages[end].tool_call_id.as_deref().is_some_and(|id| ids.contains(id))
            {
                end += 1;
            }
        }
        units.push(Unit { start: i, end });
        i = end;
    }
    (units, orphans)
}

/// The window `policy` keeps of `messages` (a request's messages: system prompt first, if any),
/// with the running `summary` text sent after the system prompt when it fits. Pure: the same
/// input gives the same window. See the [module docs](self) for what is kept.
pub fn window(messages: &[Message], policy: &ContextWindow, summary: Option<&str>) -> Window {
    let counter = policy.counter.as_ref();
    let system_end = messages.iter().position(|m| m.role != Role::System).unwrap_or(messages.len());
    let (units, orphans) = units(messages, system_end);
    let cost =
        |range: std::ops::Range<usize>| -> u64 { messages[range].iter().map(|m| counter.count_message(m)).sum() };
    let count = |unit: &Unit| unit.end - unit.start;

    let mut tokens = cost(0..system_end);
    let mut kept_messages = 0usize;
    // The last unit, always.
    let mut first = units.len();
    if let Some(last) = units.last() {
        first = units.len() - 1;
        tokens += cost(last.start..last.end);
        kept_messages += count(last);
    }
    // The last user message, always.
    let last_user = units.iter().rposition(|u| messages[u.start].role == Role::User);
    let pinned = last_user.filter(|&u| u < first);
    if let Some(u) = pinned {
        tokens += cost(units[u].start..units[u].end);
        kept_messages += 1;
    }
    let fits = |tokens: u64, kept: usize| {
        policy.max_tokens.is_none_or(|max| tokens <= max) && policy.max_messages.is_none_or(|max| kept <= max)
    };
    let mut minimal = true;
    let summary_message = summary.filter(|s| !s.is_empty()).map(ContextSummary::message);
    let mut summary_sent = false;
    if let Some(message) = &summary_message {
        let with = tokens + counter.count_message(message);
        if fits(with, kept_messages) {
            tokens = with;
            summary_sent = true;
        }
    }
    // Then whole units, newest first.
    while first > 0 {
        let candidate = first - 1;
        if Some(candidate) == pinned {
            first = candidate;
            continue;
        }
        let unit = &units[candidate];
        let (with_tokens, with_kept) = (tokens + cost(unit.start..unit.end), kept_messages + count(unit));
        if !fits(with_tokens, with_kept) {
            break;
        }
        minimal = false;
        tokens = with_tokens;
        kept_messages = with_kept;
        first = candidate;
    }

    let kept_from = units.get(first).map_or(messages.len(), |u| u.start);
    let mut out = Vec::with_capacity(system_end + 2 + kept_messages);
    out.extend_from_slice(&messages[..system_end]);
    if summary_sent {
        out.extend(summary_message);
    }
    let pinned_index = pinned.filter(|&u| u < first).map(|u| units[u].start);
    if let Some(at) = pinned_index {
        out.push(messages[at].clone());
    }
    let mut dropped = Vec::new();
    for unit in &units[..first] {
        if Some(unit.start) != pinned_index {
            dropped.extend(unit.start..unit.end);
        }
    }
    for unit in &units[first..] {
        out.extend_from_slice(&messages[unit.start..unit.end]);
    }
    dropped.extend(orphans);
    dropped.sort_unstable();
    Window { messages: out, dropped, kept_from, summary_sent, tokens, minimal }
}

/// Where the stored history sits in a request's messages: `messages[from..]` is
/// `history[offset..]` (before `from`: the system prompt, and anything a node put first, such as
/// a task). A [`ContextSummary::covers`] counts stored messages; this maps between the two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryMap {
    /// Index in the request's messages of the first message from the history.
    pub from: usize,
    /// Index in the history of that message.
    pub offset: usize,
}

impl HistoryMap {
    /// `messages[from..]` is `history[offset..]`.
    pub fn new(from: usize, offset: usize) -> Self {
        Self { from, offset }
    }

    /// Index in the request's messages of the history's message `stored`, or `from` if
    /// `stored` comes before the part the request carries.
    pub fn position(&self, stored: usize) -> usize {
        self.from + stored.saturating_sub(self.offset)
    }

    /// Index in the history of the request's message `at` (`at >= from`).
    pub fn stored(&self, at: usize) -> usize {
        at.saturating_sub(self.from) + self.offset
    }
}

/// What a summarizer has to fold in: see [`ContextWindow::summary_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SummaryDue {
    /// The request's messages that left the window since the last summary.
    pub range: std::ops::Range<usize>,
    /// What the refreshed summary will cover ([`ContextSummary::covers`]).
    pub covers: usize,
}

impl ContextWindow {
    /// What of `cut` (made by [`window`] over a request's messages laid out as `map` says) the
    /// summarizer must fold into `summary`: the messages that left the window since the
    /// summary was made. `None` without a summarizer or when nothing new left.
    pub fn summary_due(&self, cut: &Window, map: HistoryMap, summary: Option<&ContextSummary>) -> Option<SummaryDue> {
        self.summarizer.as_ref()?;
        let start = map.position(summary.map_or(0, |s| s.covers));
        (cut.kept_from > start && cut.kept_from >= map.from)
            .then(|| SummaryDue { range: start..cut.kept_from, covers: map.stored(cut.kept_from) })
    }

    /// The request that asks the summarizer to fold `left` into `summary`: the
    /// [`summary_prompt`](Self::summary_prompt), then the current summary and a
    /// [`transcript`] of `left`.
    pub fn summary_request(&self, summary: Option<&ContextSummary>, left: &[Message]) -> ChatRequest {
        let current = summary.map_or("(none yet)", |s| s.text.as_str());
        let prompt = format!("Current summary:\n{current}\n\nMessages that follow it:\n{}", transcript(left));
        ChatRequest::new(vec![Message::system(self.summary_prompt.clone()), Message::user(prompt)])
    }
}

/// Renders `messages` as plain text for a summarizer: one `role: content` line each, tool
/// calls as `role called name(arguments)`.
pub fn transcript(messages: &[Message]) -> String {
    let mut text = String::new();
    for message in messages {
        let role = message.name.as_deref().unwrap_or(role_name(message.role));
        if !message.content.is_empty() {
            text.push_str(&format!("{role}: {}\n", message.content));
        }
        for call in &message.tool_calls {
            text.push_str(&format!("{role} called {}({})\n", call.name, call.arguments));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ToolCall;

    fn call(ids: &[&str]) -> Message {
        let calls = ids
            .iter()
            .map(|id| ToolCall { id: (*id).into(), name: "t".into(), arguments: serde_json::json!({}) })
            .collect();
        Message { tool_calls: calls, ..Message::assistant("") }
    }

    #[test]
    fn no_limit_keeps_everything() {
        let history = vec![Message::system("s"), Message::user("a"), Message::assistant("b")];
        let w = window(&history, &ContextWindow::default(), None);
        assert_eq!(w.messages, history);
        assert!(w.dropped.is_empty());
    }

    #[test]
    fn a_call_and_its_results_are_kept_or_dropped_together() {
        let history = vec![
            Message::user("q"),
            call(&["a", "b"]),
            Message::tool("a", "1"),
            Message::tool("b", "2"),
            Message::assistant("done"),
        ];
        // Room for 4 messages: the answer and the user message are pinned; the 3-message
        // unit does not fit beside them.
        let w = window(&history, &ContextWindow::last_messages(4), None);
        assert_eq!(w.messages, vec![Message::user("q"), Message::assistant("done")]);
        assert_eq!(w.dropped, vec![1, 2, 3]);
        let w = window(&history, &ContextWindow::last_messages(5), None);
        assert_eq!(w.messages, history);
    }

    #[test]
    fn the_summary_follows_the_system_prompt() {
        let history = vec![Message::system("s"), Message::user("old"), Message::assistant("x"), Message::user("new")];
        let w = window(&history, &ContextWindow::last_messages(1), Some("earlier"));
        assert_eq!(w.messages, vec![Message::system("s"), ContextSummary::message("earlier"), Message::user("new")]);
        assert!(w.summary_sent);
        assert_eq!(w.kept_from, 3);
    }

    #[derive(Debug)]
    struct Never;

    #[async_trait::async_trait]
    impl ChatModel for Never {
        fn id(&self) -> &str {
            "never"
        }
        async fn chat(&self, _: ChatRequest) -> crate::Result<crate::ChatResponse> {
            Err(crate::Error::InvalidConfig { reason: "not called in these tests".into() })
        }
    }

    #[test]
    fn only_what_left_since_the_last_summary_is_due() {
        // System prompt, then the history from its message 0.
        let history = vec![
            Message::system("s"),
            Message::user("q0"),
            Message::assistant("a0"),
            Message::user("q1"),
            Message::assistant("a1"),
        ];
        let map = HistoryMap::new(1, 0);
        let plain = ContextWindow::last_messages(1);
        let cut = window(&history, &plain, None);
        assert_eq!(plain.summary_due(&cut, map, None), None, "no summarizer, nothing due");

        let policy = plain.with_summarizer(Arc::new(Never));
        let due = policy.summary_due(&cut, map, None).unwrap();
        // q1 (pinned) and a1 are kept: q0 and a0 left, the history's first two messages.
        assert_eq!((due.range, due.covers), (1..3, 2));
        let covered = ContextSummary::new("earlier", 2);
        assert_eq!(policy.summary_due(&cut, map, Some(&covered)), None, "already covered");
        let partly = ContextSummary::new("earlier", 1);
        assert_eq!(policy.summary_due(&cut, map, Some(&partly)).unwrap().range, 2..3);

        let request = policy.summary_request(Some(&partly), &history[2..4]);
        assert_eq!(request.messages[0].content, DEFAULT_SUMMARY_PROMPT);
        assert_eq!(
            request.messages[1].content,
            "Current summary:\nearlier\n\nMessages that follow it:\nassistant: a0\nuser: q1\n"
        );
    }

    #[test]
    fn orphan_results_are_left_out() {
        let history = vec![Message::tool("gone", "r"), Message::user("q")];
        let w = window(&history, &ContextWindow::default(), None);
        assert_eq!(w.messages, vec![Message::user("q")]);
        assert_eq!(w.dropped, vec![0]);
    }

    #[test]
    fn the_estimate_counts_started_triples_of_bytes() {
        assert_eq!(EstimatedTokens.count_text(""), 0);
        assert_eq!(EstimatedTokens.count_text("abcd"), 2);
        assert_eq!(EstimatedTokens.count_text("日本"), 2);
    }
}

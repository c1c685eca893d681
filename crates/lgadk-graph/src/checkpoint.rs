//! How a graph state becomes a checkpoint and back: the messages go to the session's message
//! log, the rest of the state into the snapshot; and how a [`LogRetention`] cuts the log.

use chrono::{DateTime, Utc};
use lgadk_core::json;
use lgadk_core::{
    Checkpoint, Checkpointer, Error, GraphError, GraphState, LogRetention, Message, NewCheckpoint, Result, SessionId,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::cache::Snapshot;

/// Why stored graph data could not be used; only ever the `source` of an [`Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointFailure {
    #[error("checkpoint {version} does not decode")]
    Decode {
        version: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint {version} covers {expected} messages but the log returned {found}")]
    ShortLog { version: u64, expected: u64, found: usize },
    #[error("the state's history has {found} messages, fewer than the {saved} already saved")]
    HistoryShrank { saved: u64, found: usize },
}

/// What the snapshot holds besides the state: the nodes still to run after an interrupt, and
/// the session's own log retention.
#[derive(Deserialize)]
struct Envelope {
    state: serde_json::Value,
    #[serde(default)]
    next: Vec<String>,
    #[serde(default)]
    retention: Option<LogRetention>,
}

/// [`Envelope`] as it is written: the state by reference, serialized in one pass.
#[derive(Serialize)]
struct EnvelopeRef<'a, S> {
    state: &'a S,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    next: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<LogRetention>,
}

/// Where a state's history sits in the session's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogSpan {
    /// Log position of the history's first message.
    pub(crate) start: u64,
    /// How long the stored log is: the history's messages at or past it are not stored yet.
    pub(crate) len: u64,
}

/// Applies `retention` to `state` after a turn: drops the messages it cuts from the front of
/// the history (whole units, see [`LogRetention::cut`]) and lets the state shift what indexes
/// into it. Returns how many were dropped.
pub(crate) fn apply_retention<S: GraphState>(state: &mut S, retention: LogRetention) -> usize {
    let summarized = state.summarized();
    let cut = retention.cut(state.messages(), summarized);
    if cut == 0 {
        return 0;
    }
    let Some(history) = state.messages_mut() else { return 0 };
    history.drain(..cut);
    state.history_cut(cut);
    cut
}

/// The checkpoint to write for `state`, whose history sits at `log.start..` of the session's
/// log: its messages at positions `log.len..` are the new log entries (all of them when the
/// history starts past the stored log, which the checkpoint then cuts), everything else is the
/// snapshot. The state is left as it was.
///
/// # Errors
/// [`GraphError::State`] when the state does not serialize, or when its history is shorter
/// than what is already saved (the log only grows at its end).
pub(crate) fn encode<S: GraphState>(
    graph: &str,
    state: &mut S,
    log: LogSpan,
    retention: Option<LogRetention>,
    next: &[String],
    step: u64,
    node: Option<String>,
) -> Result<NewCheckpoint> {
    let state_error =
        |source: lgadk_core::BoxError| -> Error { GraphError::State { graph: graph.to_owned(), source }.into() };
    let history = state.messages_mut().map(std::mem::take);
    // Through lgadk's JSON limit: a state nested too deep is refused before it is written,
    // and without recursing into it.
    let envelope = json::to_value(&EnvelopeRef { state: &*state, next, retention });
    let mut messages = Vec::new();
    if let Some(history) = history {
        let stored = log.len.saturating_sub(log.start);
        let saved = usize::try_from(stored).unwrap_or(usize::MAX);
        if history.len() < saved {
            let found = history.len();
            restore(state, history);
            return Err(state_error(CheckpointFailure::HistoryShrank { saved: stored, found }.into()));
        }
        messages = history[saved..].to_vec();
        restore(state, history);
    }
    let envelope = envelope.map_err(|err| err.into_error("a graph state", |source| state_error(source.into())))?;
    Ok(NewCheckpoint { state: envelope, step, node, messages, op: None, log_start: log.start })
}

fn restore<S: GraphState>(state: &mut S, history: Vec<Message>) {
    if let Some(slot) = state.messages_mut() {
        *slot = history;
    }
}

/// Reads `checkpoint` back: its snapshot, plus what the log still holds of its range. A later
/// cut may have dropped the beginning of that range: the state then starts where the log does
/// now ([`GraphState::history_cut`] shifts it), and the snapshot says so.
///
/// # Errors
/// [`Error::Corrupt`] when the snapshot does not decode or the log returned more than the
/// checkpoint's range; errors of [`Checkpointer::messages`].
pub(crate) async fn decode<S: GraphState>(
    checkpointer: &dyn Checkpointer,
    id: &SessionId,
    checkpoint: Checkpoint,
) -> Result<(Snapshot<S>, Option<String>, DateTime<Utc>)> {
    let range = checkpoint.log_range();
    let mut opened = open::<S>(id, checkpoint)?;
    let history = match opened.state.messages_mut() {
        Some(_) if !range.is_empty() => checkpointer.messages(id, range).await?,
        _ => Vec::new(),
    };
    finish(id, opened, history, Log::WhatRemains)
}

/// [`decode`] with the log (`checkpoint.log_range()`) already read, as
/// [`TurnStore::begin_turn`] returns it.
///
/// # Errors
/// [`Error::Corrupt`] when the snapshot does not decode or the log is not the checkpoint's
/// whole range.
///
/// [`TurnStore::begin_turn`]: lgadk_core::TurnStore::begin_turn
pub(crate) fn decode_with_log<S: GraphState>(
    id: &SessionId,
    checkpoint: Checkpoint,
    history: Vec<Message>,
) -> Result<Snapshot<S>> {
    Ok(finish(id, open::<S>(id, checkpoint)?, history, Log::Whole)?.0)
}

/// A checkpoint whose snapshot is decoded, its log not yet attached.
struct Opened<S> {
    state: S,
    next: Vec<String>,
    retention: Option<LogRetention>,
    checkpoint: Checkpoint,
}

/// What [`finish`] accepts as a checkpoint's log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Log {
    /// Exactly its range: a consistent read of the latest checkpoint.
    Whole,
    /// The end of its range: a later cut may have dropped the beginning.
    WhatRemains,
}

fn open<S: GraphState>(id: &SessionId, mut checkpoint: Checkpoint) -> Result<Opened<S>> {
    let version = checkpoint.version;
    let corrupt = |source| Error::corrupt(id, CheckpointFailure::Decode { version, source });
    let envelope: Envelope = serde_json::from_value(checkpoint.state.take()).map_err(corrupt)?;
    let state: S = serde_json::from_value(envelope.state).map_err(corrupt)?;
    Ok(Opened { state, next: envelope.next, retention: envelope.retention, checkpoint })
}

/// Gives the state its history: the checkpoint's log range, or what remains of it.
fn finish<S: GraphState>(
    id: &SessionId,
    opened: Opened<S>,
    history: Vec<Message>,
    log: Log,
) -> Result<(Snapshot<S>, Option<String>, DateTime<Utc>)> {
    let Opened { mut state, next, retention, checkpoint } = opened;
    let version = checkpoint.version;
    let expected = checkpoint.log_len.saturating_sub(checkpoint.log_start);
    let mut log_start = checkpoint.log_start;
    if let Some(slot) = state.messages_mut()
        && expected > 0
    {
        let found = u64::try_from(history.len()).unwrap_or(u64::MAX);
        if found > expected || (log == Log::Whole && found != expected) {
            let failure = CheckpointFailure::ShortLog { version, expected, found: history.len() };
            return Err(Error::corrupt(id, failure));
        }
        *slot = history;
        let dropped = expected - found;
        if dropped > 0 {
            log_start += dropped;
            state.history_cut(usize::try_from(dropped).unwrap_or(usize::MAX));
        }
    }
    let state = Arc::new(state);
    let snapshot =
        Snapshot { version, log_len: checkpoint.log_len, log_start, retention, step: checkpoint.step, next, state };
    Ok((snapshot, checkpoint.node, checkpoint.created_at))
}

/// A saved state as [`CompiledGraph::history`](crate::CompiledGraph::history) returns it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StateSnapshot<S> {
    /// The checkpoint version (monotonic per session, from 1).
    pub version: u64,
    /// The step of the turn that produced it.
    pub step: u64,
    /// The node that produced it: the last one that ran, or the one that interrupted.
    pub node: Option<String>,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
    /// The nodes that run on [`resume`](crate::CompiledGraph::resume); empty unless the turn
    /// was interrupted.
    pub next: Vec<String>,
    /// Where the session's message log was cut, as far as this state goes: the log position
    /// of the first message of `state`'s history, which is also how many messages before it
    /// were dropped (0: none). For an older checkpoint, a later cut may have dropped more of
    /// its history than when it was saved; the state then holds what remains.
    pub log_start: u64,
    /// The log position one past `state`'s last message: the history's length had nothing
    /// been dropped.
    pub log_len: u64,
    /// The state, with the conversation history as it was at this version (from `log_start`).
    pub state: S,
}

impl<S: Clone> StateSnapshot<S> {
    pub(crate) fn new(snapshot: Snapshot<S>, node: Option<String>, created_at: DateTime<Utc>) -> Self {
        let Snapshot { version, step, next, state, log_start, log_len, .. } = snapshot;
        Self { version, step, node, created_at, next, log_start, log_len, state: Arc::unwrap_or_clone(state) }
    }
}

#[cfg(test)]
mod tests {
    use lgadk_core::{ChatState, Message};

    use super::*;

    #[test]
    fn encode_writes_only_new_messages_and_keeps_the_state() {
        let mut state = ChatState { input: "hi".into(), ..ChatState::default() };
        state.messages = vec![Message::user("a"), Message::assistant("b"), Message::user("c")];
        let log = LogSpan { start: 0, len: 2 };
        let cp = encode("g", &mut state, log, None, &["n".into()], 3, Some("n".into())).unwrap();
        assert_eq!(cp.messages, vec![Message::user("c")]);
        assert_eq!(cp.state["state"]["messages"], serde_json::json!([]));
        assert_eq!(cp.state["state"]["input"], "hi");
        assert_eq!(cp.state["next"], serde_json::json!(["n"]));
        assert_eq!(state.messages.len(), 3, "the state is left as it was");
    }

    /// A turn that added more than the log keeps: the state was cut past the stored end, so
    /// the checkpoint carries only the kept messages and asks the store to start there.
    #[test]
    fn encode_after_a_cut_past_the_stored_end_sends_only_what_is_kept() {
        let mut state = ChatState {
            messages: (0..6).map(|n| Message::user(format!("m{n}"))).collect(),
            context_summary: Some(lgadk_core::ContextSummary::new("s", 4)),
            ..ChatState::default()
        };
        assert_eq!(apply_retention(&mut state, LogRetention::AfterSummary), 4);
        assert_eq!(state.context_summary.as_ref().map(|s| s.covers), Some(0));
        let cp = encode("g", &mut state, LogSpan { start: 4, len: 2 }, None, &[], 1, None).unwrap();
        assert_eq!((cp.log_start, cp.messages.len()), (4, 2));
        assert_eq!(cp.placement(0, 2), (4, 6));
    }

    /// The latest checkpoint's log must be its whole range; an older one's may have lost its
    /// beginning to a later cut, and its state then starts where the log does.
    #[test]
    fn a_log_shorter_than_the_range_is_corrupt_only_for_a_whole_read() {
        let id = SessionId::parse("s").unwrap();
        let mut state = ChatState::default();
        let envelope = encode("g", &mut state, LogSpan { start: 0, len: 0 }, None, &[], 1, None).unwrap().state;
        let checkpoint = Checkpoint {
            version: 2,
            step: 1,
            node: None,
            created_at: chrono::Utc::now(),
            log_len: 4,
            log_start: 1,
            state: envelope,
        };
        let rest = vec![Message::user("c"), Message::assistant("d")];
        let err = decode_with_log::<ChatState>(&id, checkpoint.clone(), rest.clone()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        let opened = open::<ChatState>(&id, checkpoint.clone()).unwrap();
        let (snapshot, _, _) = finish(&id, opened, rest, Log::WhatRemains).unwrap();
        assert_eq!((snapshot.log_start, snapshot.log_len, snapshot.state.messages.len()), (2, 4, 2));
        let opened = open::<ChatState>(&id, checkpoint).unwrap();
        let too_long = (0..4).map(|n| Message::user(format!("{n}"))).collect();
        assert!(finish(&id, opened, too_long, Log::WhatRemains).is_err(), "more than the range is corrupt");
    }

    #[test]
    fn encode_rejects_a_history_that_shrank() {
        let mut state = ChatState { messages: vec![Message::user("a")], ..ChatState::default() };
        let err = encode("g", &mut state, LogSpan { start: 0, len: 2 }, None, &[], 1, None).unwrap_err();
        assert!(matches!(err, Error::Graph(GraphError::State { .. })), "{err:?}");
        assert_eq!(state.messages.len(), 1);
    }
}

//! How a graph state becomes a checkpoint and back: the messages go to the session's
//! append-only log, the rest of the state into the snapshot.

use chrono::{DateTime, Utc};
use lgadk_core::json;
use lgadk_core::{Checkpoint, Checkpointer, Error, GraphError, GraphState, NewCheckpoint, Result, SessionId};
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

/// What the snapshot holds besides the state: the nodes still to run after an interrupt.
#[derive(Deserialize)]
struct Envelope {
    state: serde_json::Value,
    #[serde(default)]
    next: Vec<String>,
}

/// [`Envelope`] as it is written: the state by reference, serialized in one pass.
#[derive(Serialize)]
struct EnvelopeRef<'a, S> {
    state: &'a S,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    next: &'a [String],
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
    /// The state, with the conversation history as it was at this version.
    pub state: S,
}

/// The checkpoint to write for `state`: its messages past `log_len` are the new log entries,
/// everything else is the snapshot. The state is left as it was.
///
/// # Errors
/// [`GraphError::State`] when the state does not serialize, or when its history is shorter
/// than what is already saved (the log is append-only).
pub(crate) fn encode<S: GraphState>(
    graph: &str,
    state: &mut S,
    log_len: u64,
    next: &[String],
    step: u64,
    node: Option<String>,
) -> Result<NewCheckpoint> {
    let state_error =
        |source: lgadk_core::BoxError| -> Error { GraphError::State { graph: graph.to_owned(), source }.into() };
    let history = state.messages_mut().map(std::mem::take);
    // Through lgadk's JSON limit: a state nested too deep is refused before it is written,
    // and without recursing into it.
    let envelope = json::to_value(&EnvelopeRef { state: &*state, next });
    let mut messages = Vec::new();
    if let Some(history) = history {
        let saved = usize::try_from(log_len).unwrap_or(usize::MAX);
        if history.len() < saved {
            let found = history.len();
            restore(state, history);
            return Err(state_error(CheckpointFailure::HistoryShrank { saved: log_len, found }.into()));
        }
        messages = history[saved..].to_vec();
        restore(state, history);
    }
    let envelope = envelope.map_err(|err| err.into_error("a graph state", |source| state_error(source.into())))?;
    Ok(NewCheckpoint { state: envelope, step, node, messages, op: None })
}

fn restore<S: GraphState>(state: &mut S, history: Vec<lgadk_core::Message>) {
    if let Some(slot) = state.messages_mut() {
        *slot = history;
    }
}

/// Reads `checkpoint` back: its snapshot, plus the message log up to the length it saw.
///
/// # Errors
/// [`Error::Corrupt`] when the snapshot does not decode or the log is shorter than the
/// checkpoint says; errors of [`Checkpointer::messages`].
pub(crate) async fn decode<S: GraphState>(
    checkpointer: &dyn Checkpointer,
    id: &SessionId,
    checkpoint: Checkpoint,
) -> Result<(Snapshot<S>, Option<String>, DateTime<Utc>)> {
    let log_len = checkpoint.log_len;
    let mut opened = open::<S>(id, checkpoint)?;
    let history = match opened.state.messages_mut() {
        Some(_) if log_len > 0 => checkpointer.messages(id, 0..log_len).await?,
        _ => Vec::new(),
    };
    finish(id, opened, history)
}

/// [`decode`] with the log (`0..log_len`) already read, as [`TurnStore::begin_turn`] returns
/// it.
///
/// # Errors
/// [`Error::Corrupt`] when the snapshot does not decode or the log is shorter than the
/// checkpoint says.
///
/// [`TurnStore::begin_turn`]: lgadk_core::TurnStore::begin_turn
pub(crate) fn decode_with_log<S: GraphState>(
    id: &SessionId,
    checkpoint: Checkpoint,
    history: Vec<lgadk_core::Message>,
) -> Result<Snapshot<S>> {
    Ok(finish(id, open::<S>(id, checkpoint)?, history)?.0)
}

/// A checkpoint whose snapshot is decoded, its log not yet attached.
struct Opened<S> {
    state: S,
    next: Vec<String>,
    checkpoint: Checkpoint,
}

fn open<S: GraphState>(id: &SessionId, mut checkpoint: Checkpoint) -> Result<Opened<S>> {
    let version = checkpoint.version;
    let corrupt = |source| Error::corrupt(id, CheckpointFailure::Decode { version, source });
    let envelope: Envelope = serde_json::from_value(checkpoint.state.take()).map_err(corrupt)?;
    let state: S = serde_json::from_value(envelope.state).map_err(corrupt)?;
    Ok(Opened { state, next: envelope.next, checkpoint })
}

/// Gives the state its history, which must be the whole log the checkpoint saw.
fn finish<S: GraphState>(
    id: &SessionId,
    opened: Opened<S>,
    history: Vec<lgadk_core::Message>,
) -> Result<(Snapshot<S>, Option<String>, DateTime<Utc>)> {
    let Opened { mut state, next, checkpoint } = opened;
    let version = checkpoint.version;
    if let Some(slot) = state.messages_mut()
        && checkpoint.log_len > 0
    {
        if u64::try_from(history.len()).ok() != Some(checkpoint.log_len) {
            let failure = CheckpointFailure::ShortLog { version, expected: checkpoint.log_len, found: history.len() };
            return Err(Error::corrupt(id, failure));
        }
        *slot = history;
    }
    let state = Arc::new(state);
    let snapshot = Snapshot { version, log_len: checkpoint.log_len, step: checkpoint.step, next, state };
    Ok((snapshot, checkpoint.node, checkpoint.created_at))
}

impl<S: Clone> StateSnapshot<S> {
    pub(crate) fn new(snapshot: Snapshot<S>, node: Option<String>, created_at: DateTime<Utc>) -> Self {
        let Snapshot { version, step, next, state, .. } = snapshot;
        Self { version, step, node, created_at, next, state: Arc::unwrap_or_clone(state) }
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
        let cp = encode("g", &mut state, 2, &["n".into()], 3, Some("n".into())).unwrap();
        assert_eq!(cp.messages, vec![Message::user("c")]);
        assert_eq!(cp.state["state"]["messages"], serde_json::json!([]));
        assert_eq!(cp.state["state"]["input"], "hi");
        assert_eq!(cp.state["next"], serde_json::json!(["n"]));
        assert_eq!(state.messages.len(), 3, "the state is left as it was");
    }

    #[test]
    fn encode_rejects_a_history_that_shrank() {
        let mut state = ChatState { messages: vec![Message::user("a")], ..ChatState::default() };
        let err = encode("g", &mut state, 2, &[], 1, None).unwrap_err();
        assert!(matches!(err, Error::Graph(GraphError::State { .. })), "{err:?}");
        assert_eq!(state.messages.len(), 1);
    }
}

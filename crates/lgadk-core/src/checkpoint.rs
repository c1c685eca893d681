//! Graph state persistence per session: versioned snapshots plus a message log that grows at
//! its end and, under a [`LogRetention`](crate::LogRetention), is cut at its start.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::SessionId;
use crate::json;
use crate::message::Message;
use crate::op::OpId;

/// How many checkpoints per session a store keeps unless configured otherwise.
pub const DEFAULT_CHECKPOINT_RETENTION: usize = 20;

/// A saved graph state.
///
/// The conversation history is not inside `state`: it lives in the session's message log, of
/// which this checkpoint's history is positions `log_start..log_len`. Reading an older
/// checkpoint back therefore reads the log only up to its own length, and only from where the
/// log starts now (a later cut may have dropped the beginning of its range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Monotonic per session, starting at 1.
    pub version: u64,
    /// The graph step that produced it.
    pub step: u64,
    /// The node that produced it, if any.
    pub node: Option<String>,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
    /// Length of the message log when it was saved: one past the position of its last
    /// message.
    pub log_len: u64,
    /// Where the log started when it was saved: the position of its history's first message
    /// (0 unless the log was cut).
    #[serde(default)]
    pub log_start: u64,
    /// The serialized state, without its messages.
    pub state: serde_json::Value,
}

impl Checkpoint {
    /// The log positions this checkpoint's history covers: `log_start..log_len`.
    pub fn log_range(&self) -> Range<u64> {
        self.log_start..self.log_len
    }
}

/// What [`Checkpointer::put`] writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewCheckpoint {
    /// The serialized state, without its messages.
    pub state: serde_json::Value,
    /// The graph step that produced it.
    pub step: u64,
    /// The node that produced it, if any.
    pub node: Option<String>,
    /// Messages added since the previous checkpoint, appended to the log in the same atomic
    /// step as the snapshot.
    pub messages: Vec<Message>,
    /// Identifies this write, so that repeating it saves the checkpoint and appends its
    /// messages once (see [`OpId`]).
    pub op: Option<OpId>,
    /// Cuts the log: after this write it starts here, the positions before it dropped in the
    /// same atomic step (at or below the log's current start, nothing is dropped: `0`, the
    /// default, keeps everything). Past the log's current end, the positions in between are
    /// never written and [`messages`](Self::messages) go at `log_start..`: a turn that added
    /// more than it keeps sends only what it keeps. See [`LogRetention`](crate::LogRetention).
    pub log_start: u64,
}

impl NewCheckpoint {
    /// Sets [`log_start`](Self::log_start): the log positions before `start` are dropped
    /// with this write.
    #[must_use]
    pub fn with_log_start(mut self, start: u64) -> Self {
        self.log_start = start;
        self
    }

    /// Where this write leaves a log that spans positions `start..len`: its new start and
    /// length (see [`log_start`](Self::log_start)). Every store places messages this way.
    pub fn placement(&self, start: u64, len: u64) -> (u64, u64) {
        let at = len.max(self.log_start);
        (start.max(self.log_start), at.saturating_add(self.messages.len() as u64))
    }

    /// Sets the operation id: a repeat of this `put` with the same id returns the checkpoint
    /// saved the first time instead of writing again or failing with `Conflict`.
    #[must_use]
    pub fn with_op_id(mut self, op: OpId) -> Self {
        self.op = Some(op);
        self
    }
}

impl NewCheckpoint {
    /// Hands the checkpoint back if it can be stored and read back: its state nests below
    /// [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH) with one level to spare (a store may
    /// wrap it in a record of its own), and so does every message as it is logged. Otherwise
    /// drops it with a flat stack, however deep it is, and fails. Every store calls it before
    /// writing anything.
    ///
    /// # Errors
    /// [`Error::NestingTooDeep`](crate::Error::NestingTooDeep).
    pub fn check_depth(self) -> crate::Result<Self> {
        let verdict = json::check_value(&self.state, 1)
            .map_err(|_| crate::Error::NestingTooDeep { what: "a graph state", limit: json::MAX_JSON_DEPTH })
            .and_then(|()| self.messages.iter().try_for_each(json::check_message));
        match verdict {
            Ok(()) => Ok(self),
            Err(err) => {
                json::dispose(self.state);
                for message in self.messages {
                    message.tool_calls.into_iter().for_each(|call| json::dispose(call.arguments));
                }
                Err(err)
            }
        }
    }
}

/// Persists graph state per session so that a later run, in this process or another one,
/// continues the conversation.
///
/// # Contract
/// - Checkpoints belong to a live session: writes to an unknown, ended or expired session fail
///   with [`Error::SessionNotFound`](crate::Error::SessionNotFound), and ending or expiring a
///   session removes its checkpoints and log.
/// - `put` is compare-and-set on the version: when the latest version is not
///   `expected_version`, it fails with [`Error::Conflict`](crate::Error::Conflict) and writes
///   nothing, not even the messages.
/// - Retention is bounded: a store keeps the latest N checkpoints per session.
/// - The message log grows at its end: each `put` appends its messages in the same atomic
///   step as the snapshot, so a turn writes only what it added. Positions are absolute and
///   never reused. A `put` with a [`NewCheckpoint::log_start`] past the log's start drops the
///   positions before it in that same step (storage then holds only what follows), and the
///   saved checkpoint records the new start in [`Checkpoint::log_start`]; the start never
///   moves back.
/// - A `put` whose [`NewCheckpoint::op`] the store has already applied to the session writes
///   nothing and returns the version and log length saved the first time, even though the
///   latest version has moved past `expected_version` (see [`OpId`]).
/// - A failure that may have written is [`Error::Backend`](crate::Error::Backend) with
///   [`Outcome::Unknown`](crate::Outcome::Unknown); repeat it with the same op id.
#[async_trait]
pub trait Checkpointer: fmt::Debug + Send + Sync + 'static {
    /// The latest checkpoint version of a live session: `0` before the first checkpoint.
    /// One cheap call, used to validate a cached state.
    ///
    /// # Errors
    /// `SessionNotFound` for unknown, ended or expired sessions.
    async fn version(&self, id: &SessionId) -> Result<u64>;

    /// Saves a checkpoint if the latest version is still `expected_version` (0 for none) and
    /// returns it with its new version.
    ///
    /// # Errors
    /// `Conflict` on a stale version, `SessionNotFound`; nothing is written in either case.
    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint>;

    /// The newest checkpoint, or `None` if there is none (or no live session).
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>>;

    /// The checkpoint with this version, if still retained.
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>>;

    /// Up to `limit` retained checkpoints, newest first.
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>>;

    /// The messages at log positions `range`, clamped to the log's current start and length
    /// (what a cut dropped is not returned), in order.
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>>;

    /// Deletes the session's checkpoints and message log (the session itself stays).
    /// `false` if there were none.
    ///
    /// # Errors
    /// `Backend`.
    async fn delete(&self, id: &SessionId) -> Result<bool>;
}

macro_rules! forward_checkpointer {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Checkpointer + ?Sized> Checkpointer for $ptr<T> {
            async fn version(&self, id: &SessionId) -> Result<u64> {
                (**self).version(id).await
            }
            async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
                (**self).put(id, checkpoint, expected_version).await
            }
            async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
                (**self).latest(id).await
            }
            async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
                (**self).checkpoint(id, version).await
            }
            async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
                (**self).list(id, limit).await
            }
            async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
                (**self).messages(id, range).await
            }
            async fn delete(&self, id: &SessionId) -> Result<bool> {
                (**self).delete(id).await
            }
        }
    )+};
}

forward_checkpointer!(Arc, Box);

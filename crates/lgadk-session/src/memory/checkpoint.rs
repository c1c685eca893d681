//! The checkpointer and the turn calls of [`InMemoryStore`]: checkpoints, the message log and
//! a graph turn's read and commit, each under the session's shard lock.

use std::ops::Range;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, timestamp};
use lgadk_core::{
    Checkpoint, Checkpointer, Error, LatestCheckpoint, Message, NewCheckpoint, Result, SessionId, TurnCommit,
    TurnSaved, TurnStart, TurnStore,
};

use super::{Applied, InMemoryStore, RecentOps, Record, merged_size};

#[async_trait]
impl Checkpointer for InMemoryStore {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        self.inner
            .read_live(id, |record| record.history.as_ref().map_or(0, |h| h.version))
            .ok_or_else(|| Error::SessionNotFound(id.clone()))
    }

    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        let retention = self.inner.checkpoint_retention;
        let checkpoint = checkpoint.check_depth()?;
        self.inner.with_live(id, |record, now| {
            if let Some(saved) = repeated_put(record, &checkpoint, now) {
                return Ok(saved);
            }
            check_version(id, record, expected_version)?;
            Ok(append(record, checkpoint, now, retention))
        })
    }

    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        Ok(self.inner.read_live(id, |record| record.history.as_ref()?.checkpoints.back().cloned()).flatten())
    }

    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        let found = self.inner.read_live(id, |record| {
            record.history.as_ref()?.checkpoints.iter().rev().find(|cp| cp.version == version).cloned()
        });
        Ok(found.flatten())
    }

    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        let found = self.inner.read_live(id, |record| {
            record.history.as_ref().map(|h| h.checkpoints.iter().rev().take(limit).cloned().collect())
        });
        Ok(found.flatten().unwrap_or_default())
    }

    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        let found = self.inner.read_live(id, |record| Some(record.history.as_ref()?.slice(range)));
        Ok(found.flatten().unwrap_or_default())
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        match self.inner.with_live(id, |record, _| Ok(record.history.take().is_some_and(|h| h.version > 0))) {
            Err(Error::SessionNotFound(_)) => Ok(false),
            other => other,
        }
    }
}

/// The checkpoint a put with `checkpoint`'s op id saved before, if it was applied: the one
/// retained, or its like if retention dropped it since.
fn repeated_put(record: &Record, checkpoint: &NewCheckpoint, now: i64) -> Option<Checkpoint> {
    let Some(Applied::Checkpoint { version, log_len, log_start }) =
        RecentOps::find(record.ops.as_deref(), checkpoint.op)
    else {
        return None;
    };
    let saved = record.history.as_ref().and_then(|h| h.checkpoints.iter().find(|cp| cp.version == version));
    Some(saved.cloned().unwrap_or_else(|| Checkpoint {
        version,
        step: checkpoint.step,
        node: checkpoint.node.clone(),
        created_at: timestamp(now),
        log_len,
        log_start,
        state: checkpoint.state.clone(),
    }))
}

/// `Conflict` unless the record's latest checkpoint version is `expected`.
fn check_version(id: &SessionId, record: &Record, expected: u64) -> Result<()> {
    let actual = record.history.as_ref().map_or(0, |h| h.version);
    if actual != expected {
        return Err(Error::Conflict { id: id.clone(), expected, actual });
    }
    Ok(())
}

/// Appends the checkpoint and its messages (the version already checked), cuts the log where
/// it asks, applies retention and remembers its op id.
fn append(record: &mut Record, checkpoint: NewCheckpoint, now: i64, retention: usize) -> Checkpoint {
    let history = record.history.get_or_insert_with(Box::default);
    let (start, len) = checkpoint.placement(history.log_start, history.log_len());
    let NewCheckpoint { state, step, node, messages, op, .. } = checkpoint;
    // Positions below the new start go (all of them when it is past the end); the deque drops
    // them without moving the rest.
    let dropped = usize::try_from(start - history.log_start).unwrap_or(usize::MAX).min(history.log.len());
    history.log.drain(..dropped);
    history.log_start = start;
    history.log.extend(messages);
    history.version += 1;
    let saved = Checkpoint {
        version: history.version,
        step,
        node,
        created_at: timestamp(now),
        log_len: len,
        log_start: start,
        state,
    };
    history.checkpoints.push_back(saved.clone());
    while history.checkpoints.len() > retention {
        history.checkpoints.pop_front();
    }
    let applied = Applied::Checkpoint { version: saved.version, log_len: saved.log_len, log_start: saved.log_start };
    RecentOps::remember(&mut record.ops, op, applied);
    saved
}

/// Both turn calls under the session's shard lock: a read of one moment, and a commit that
/// checks everything before it writes anything.
#[async_trait]
impl TurnStore for InMemoryStore {
    async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>> {
        Ok(self.inner.read_live(id, |record| {
            let history = record.history.as_deref();
            let version = history.map_or(0, |h| h.version);
            let latest = history.filter(|_| cached_version != Some(version)).and_then(|h| {
                let checkpoint = h.checkpoints.back()?.clone();
                Some(LatestCheckpoint { messages: h.slice(checkpoint.log_range()), checkpoint })
            });
            TurnStart { session: record.to_session(), version, latest }
        }))
    }

    async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved> {
        let (limit, retention) = (self.inner.metadata_limit, self.inner.checkpoint_retention);
        let TurnCommit { checkpoint, expected_version, interaction, merge_metadata } = commit;
        let checkpoint = checkpoint.check_depth()?;
        let merge_metadata = merge_metadata.map(check_metadata_depth).transpose()?;
        self.inner.with_live(id, |record, now| {
            let stats = interaction.as_ref().map(|_| record.stats.clone());
            let metadata = merge_metadata.as_ref().map(|_| record.metadata.clone());
            if let Some(checkpoint) = repeated_put(record, &checkpoint, now) {
                return Ok(TurnSaved { checkpoint, stats, metadata });
            }
            check_version(id, record, expected_version)?;
            if let Some(update) = &merge_metadata {
                let size = merged_size(&record.metadata, update);
                if size > limit {
                    return Err(Error::MetadataTooLarge { size, limit });
                }
            }
            // Every check passed: from here on nothing fails.
            let checkpoint = append(record, checkpoint, now, retention);
            let mut active = false;
            let metadata = merge_metadata.map(|update| {
                record.metadata.extend(update);
                active = true;
                record.metadata.clone()
            });
            let stats = interaction.map(|turn| {
                if RecentOps::find(record.ops.as_deref(), turn.op).is_none() {
                    record.stats.record(&turn);
                    RecentOps::remember(&mut record.ops, turn.op, Applied::Write);
                }
                active = true;
                record.stats.clone()
            });
            if active {
                record.last_active_ms = record.last_active_ms.max(now);
            }
            Ok(TurnSaved { checkpoint, stats, metadata })
        })
    }
}

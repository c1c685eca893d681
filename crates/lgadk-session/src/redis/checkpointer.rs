//! [`Checkpointer`] on Redis: checkpoints and the message log in the session's slot.

use std::ops::Range;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, check_metadata_size, timestamp};
use lgadk_core::{
    Checkpoint, Checkpointer, Error, Message, NewCheckpoint, Result, SessionId, TurnCommit, TurnSaved, TurnStart,
    TurnStore,
};

use super::conn::Effect;
use super::decode::StoredBody;
use super::replies::{CpMessagesReply, CpPutReply, CpReadReply, CpVersionReply, TurnBeginReply, TurnCommitReply};
use super::scripts;
use super::{GC_GRACE_MS, RedisStore, clamp_i64, op_arg, writes};

#[async_trait]
impl Checkpointer for RedisStore {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_VERSION.prepare_invoke();
        invocation.key(&keys.record).key(&keys.checkpoints).arg(self.now());
        let CpVersionReply { version } = self.run("checkpoint_version", Effect::Read, &invocation, id).await?;
        Ok(version)
    }

    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        const OP: &str = "checkpoint_put";
        let checkpoint = checkpoint.check_depth()?;
        let now = self.now();
        let body =
            StoredBody { step: checkpoint.step, node: checkpoint.node.as_deref(), at: now, state: &checkpoint.state };
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_PUT.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(now).arg(expected_version).arg(self.inner.checkpoint_retention).arg(Self::json(
            OP,
            "a checkpoint",
            &body,
        )?);
        invocation.arg(op_arg(checkpoint.op)).arg(checkpoint.log_start);
        for message in &checkpoint.messages {
            invocation.arg(Self::json(OP, "a message", message)?);
        }
        match self.run(OP, writes(checkpoint.op), &invocation, id).await? {
            CpPutReply::Saved { version, log_len, log_start } => Ok(Checkpoint {
                version,
                step: checkpoint.step,
                node: checkpoint.node,
                created_at: timestamp(now),
                log_len,
                log_start,
                state: checkpoint.state,
            }),
            CpPutReply::Conflict { actual } => {
                Err(Error::Conflict { id: id.clone(), expected: expected_version, actual })
            }
        }
    }

    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        Ok(self.read_checkpoints(id, "list", 1).await?.into_iter().next())
    }

    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        if version == 0 {
            return Ok(None);
        }
        Ok(self.read_checkpoints(id, "one", version).await?.into_iter().next())
    }

    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read_checkpoints(id, "list", u64::try_from(limit).unwrap_or(u64::MAX)).await
    }

    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let first = clamp_i64(range.start.into());
        let last = clamp_i64((range.end - 1).into());
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_MESSAGES.prepare_invoke();
        invocation.key(&keys.record).key(&keys.log).key(&keys.checkpoints).arg(self.now()).arg(first).arg(last);
        let CpMessagesReply { messages } = self.run("checkpoint_messages", Effect::Read, &invocation, id).await?;
        Ok(messages)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        let keys = self.keys().session(id);
        let cmd = redis::cmd("DEL").arg(&keys.checkpoints).arg(&keys.log).clone();
        let deleted: i64 = self.caller().command("checkpoint_delete", Effect::Write, &cmd).await?;
        Ok(deleted > 0)
    }
}

impl RedisStore {
    pub(super) async fn read_checkpoints(&self, id: &SessionId, mode: &str, n: u64) -> Result<Vec<Checkpoint>> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::CP_READ.prepare_invoke();
        invocation.key(&keys.record).key(&keys.checkpoints).arg(self.now()).arg(mode).arg(n);
        let CpReadReply { checkpoints } = self.run("checkpoint_read", Effect::Read, &invocation, id).await?;
        Ok(checkpoints)
    }
}

/// A turn in two round trips: `turn_begin.lua` reads the session, its version and (when the
/// caller's cache is stale) the latest checkpoint with its log; `turn_commit.lua` checks
/// everything, then writes the checkpoint, the log, the interaction and the metadata merge.
/// All keys are the session's, in its slot, so both are one atomic EVALSHA on a cluster too.
#[async_trait]
impl TurnStore for RedisStore {
    async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>> {
        let keys = self.keys().session(id);
        let mut invocation = scripts::TURN_BEGIN.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation.arg(self.now()).arg(cached_version.map(|version| version.to_string()).unwrap_or_default());
        let TurnBeginReply { start } = self.run("begin_turn", Effect::Read, &invocation, id).await?;
        Ok(start)
    }

    async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved> {
        const OP: &str = "commit_turn";
        let limit = self.inner.metadata_limit;
        let TurnCommit { checkpoint, expected_version, interaction, merge_metadata } = commit;
        let checkpoint = checkpoint.check_depth()?;
        let merge_metadata = merge_metadata.map(check_metadata_depth).transpose()?;
        if let Some(update) = &merge_metadata {
            // The merged result is never smaller than the update itself.
            check_metadata_size(update, limit)?;
        }
        let now = self.now();
        let body =
            StoredBody { step: checkpoint.step, node: checkpoint.node.as_deref(), at: now, state: &checkpoint.state };
        let keys = self.keys().session(id);
        let mut invocation = scripts::TURN_COMMIT.prepare_invoke();
        for key in keys.all() {
            invocation.key(key);
        }
        invocation
            .arg(now)
            .arg(GC_GRACE_MS)
            .arg(expected_version)
            .arg(self.inner.checkpoint_retention)
            .arg(limit)
            .arg(Self::json(OP, "a checkpoint", &body)?)
            .arg(op_arg(checkpoint.op));
        match &interaction {
            Some(turn) if !turn.agents.is_empty() => invocation
                .arg(super::session::agent_shares(&turn.agents))
                .arg(clamp_i64(turn.tokens_in.into()))
                .arg(clamp_i64(turn.tokens_out.into()))
                .arg(clamp_i64(turn.response_time.as_micros()))
                .arg(op_arg(turn.op)),
            Some(turn) => invocation
                .arg("1")
                .arg(clamp_i64(turn.tokens_in.into()))
                .arg(clamp_i64(turn.tokens_out.into()))
                .arg(clamp_i64(turn.response_time.as_micros()))
                .arg(op_arg(turn.op)),
            None => invocation.arg("").arg(0).arg(0).arg(0).arg(""),
        };
        invocation.arg(checkpoint.log_start);
        match &merge_metadata {
            Some(update) => {
                invocation.arg(update.len() * 2);
                for (key, value) in update {
                    invocation.arg(key).arg(Self::json(OP, "metadata", value)?);
                }
            }
            None => {
                invocation.arg("");
            }
        }
        for message in &checkpoint.messages {
            invocation.arg(Self::json(OP, "a message", message)?);
        }
        match self.run(OP, writes(checkpoint.op), &invocation, id).await? {
            TurnCommitReply::Saved { version, log_len, log_start, stats, metadata } => Ok(TurnSaved {
                checkpoint: Checkpoint {
                    version,
                    step: checkpoint.step,
                    node: checkpoint.node,
                    created_at: timestamp(now),
                    log_len,
                    log_start,
                    state: checkpoint.state,
                },
                stats: interaction.map(|_| stats),
                metadata: merge_metadata.map(|_| metadata),
            }),
            TurnCommitReply::Conflict { actual } => {
                Err(Error::Conflict { id: id.clone(), expected: expected_version, actual })
            }
            TurnCommitReply::TooLarge { size } => Err(Error::MetadataTooLarge { size, limit }),
        }
    }
}

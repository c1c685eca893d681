//! [`Checkpointer`] and [`TurnStore`] on PostgreSQL: checkpoints, the message log (cut in the
//! same call that saves a checkpoint asking for it), and a graph turn as two statements.

use std::ops::Range;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, check_metadata_size, timestamp};
use lgadk_core::{
    Checkpoint, Checkpointer, Error, Interaction, LatestCheckpoint, Message, Metadata, NewCheckpoint, Result,
    SessionId, SessionStats, TurnCommit, TurnSaved, TurnStart, TurnStore,
};

use super::decode::Rows;
use super::session::{one, reader_bad, status};
use super::{Effect, PostgresStore, agent_shares, clamp_i64, op_arg, query, writes};

/// What `lgadk_commit` writes.
struct CommitArgs<'a> {
    checkpoint: &'a NewCheckpoint,
    expected_version: u64,
    interaction: Option<&'a Interaction>,
    merge: Option<&'a Metadata>,
}

/// What `lgadk_commit` saved.
struct Saved {
    version: u64,
    log_len: u64,
    log_start: u64,
    stats: SessionStats,
    metadata: Option<Metadata>,
}

impl PostgresStore {
    /// One `lgadk_commit`: the checkpoint compare-and-set with its messages, then the optional
    /// interaction and metadata merge, all or nothing.
    async fn commit(&self, op: &'static str, id: &SessionId, args: CommitArgs<'_>, now: i64) -> Result<Saved> {
        let CommitArgs { checkpoint, expected_version, interaction, merge } = args;
        let limit = self.inner.metadata_limit;
        let state = Self::json(op, "a checkpoint", &checkpoint.state)?;
        let messages = checkpoint
            .messages
            .iter()
            .map(|message| Self::json(op, "a message", message))
            .collect::<Result<Vec<_>>>()?;
        let (merge_json, merge_sizes) = match merge {
            Some(map) => {
                let (json, sizes) = Self::metadata_args(op, map)?;
                (Some(json), Some(sizes))
            }
            None => (None, None),
        };
        let cp_op = op_arg(checkpoint.op);
        let track_op = op_arg(interaction.and_then(|turn| turn.op));
        let turn = interaction.cloned().unwrap_or_default();
        let agents = agent_shares(&turn.agents);
        let effect = writes(checkpoint.op);
        let rows = self
            .rows(op, effect, || {
                query(&self.sql().commit)
                    .bind(id.as_str())
                    .bind(now)
                    .bind(clamp_i64(expected_version.into()))
                    .bind(clamp_i64(self.inner.checkpoint_retention as u128))
                    .bind(clamp_i64(checkpoint.step.into()))
                    .bind(checkpoint.node.as_deref())
                    .bind(state.as_str())
                    .bind(cp_op.as_str())
                    .bind(&messages)
                    .bind(interaction.is_some())
                    .bind(clamp_i64(turn.tokens_in.into()))
                    .bind(clamp_i64(turn.tokens_out.into()))
                    .bind(clamp_i64(turn.response_time.as_micros()))
                    .bind(track_op.as_str())
                    .bind(merge_json.as_deref())
                    .bind(merge_sizes.as_deref())
                    .bind(clamp_i64(limit as u128))
                    .bind(agents.as_str())
                    .bind(clamp_i64(checkpoint.log_start.into()))
            })
            .await?;
        let reader = Rows { op, effect, id };
        let row = one(&reader, &rows)?;
        match reader.get::<i32>(row, 0)? {
            status::OK => {
                let metadata: Option<String> = reader.get(row, 8)?;
                Ok(Saved {
                    version: reader.count(row, 1, "version")?,
                    log_len: reader.count(row, 2, "log_len")?,
                    log_start: reader.count(row, 10, "log_start")?,
                    stats: reader.stats(row, 3)?,
                    metadata: metadata.map(|text| reader.metadata(&text)).transpose()?,
                })
            }
            status::NOT_FOUND => Err(Error::SessionNotFound(id.clone())),
            status::CONFLICT => Err(Error::Conflict {
                id: id.clone(),
                expected: expected_version,
                actual: reader.count(row, 1, "version")?,
            }),
            status::TOO_LARGE => {
                let size: i64 = reader.get(row, 9)?;
                Err(Error::MetadataTooLarge { size: usize::try_from(size).unwrap_or(usize::MAX), limit })
            }
            other => Err(reader_bad(&reader, other)),
        }
    }

    async fn read_checkpoints<'q>(
        &self,
        op: &'static str,
        id: &SessionId,
        build: impl Fn() -> super::Statement<'q> + Send + Sync,
    ) -> Result<Vec<Checkpoint>> {
        let rows = self.rows(op, Effect::Read, build).await?;
        let reader = Rows { op, effect: Effect::Read, id };
        rows.iter().filter_map(|row| reader.checkpoint(row, 0).transpose()).collect()
    }
}

#[async_trait]
impl Checkpointer for PostgresStore {
    async fn version(&self, id: &SessionId) -> Result<u64> {
        const OP: &str = "checkpoint_version";
        let now = self.now();
        let rows = self.rows(OP, Effect::Read, || query(&self.sql().version).bind(id.as_str()).bind(now)).await?;
        let reader = Rows { op: OP, effect: Effect::Read, id };
        match rows.first() {
            Some(row) => reader.count(row, 0, "version"),
            None => Err(Error::SessionNotFound(id.clone())),
        }
    }

    async fn put(&self, id: &SessionId, checkpoint: NewCheckpoint, expected_version: u64) -> Result<Checkpoint> {
        let checkpoint = checkpoint.check_depth()?;
        let now = self.now();
        let args = CommitArgs { checkpoint: &checkpoint, expected_version, interaction: None, merge: None };
        let saved = self.commit("checkpoint_put", id, args, now).await?;
        Ok(Checkpoint {
            version: saved.version,
            step: checkpoint.step,
            node: checkpoint.node,
            created_at: timestamp(now),
            log_len: saved.log_len,
            log_start: saved.log_start,
            state: checkpoint.state,
        })
    }

    async fn latest(&self, id: &SessionId) -> Result<Option<Checkpoint>> {
        let now = self.now();
        let found = self
            .read_checkpoints("checkpoint_latest", id, || query(&self.sql().latest).bind(id.as_str()).bind(now))
            .await?;
        Ok(found.into_iter().next())
    }

    async fn checkpoint(&self, id: &SessionId, version: u64) -> Result<Option<Checkpoint>> {
        let Ok(version) = i64::try_from(version) else { return Ok(None) };
        let now = self.now();
        let found = self
            .read_checkpoints("checkpoint_read", id, || {
                query(&self.sql().checkpoint).bind(id.as_str()).bind(now).bind(version)
            })
            .await?;
        Ok(found.into_iter().next())
    }

    async fn list(&self, id: &SessionId, limit: usize) -> Result<Vec<Checkpoint>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_checkpoints("checkpoint_list", id, || {
            query(&self.sql().list_checkpoints).bind(id.as_str()).bind(now).bind(limit)
        })
        .await
    }

    async fn messages(&self, id: &SessionId, range: Range<u64>) -> Result<Vec<Message>> {
        const OP: &str = "checkpoint_messages";
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let now = self.now();
        let (start, end) = (clamp_i64(range.start.into()), clamp_i64(range.end.into()));
        let rows = self
            .rows(OP, Effect::Read, || query(&self.sql().messages).bind(id.as_str()).bind(now).bind(start).bind(end))
            .await?;
        let reader = Rows { op: OP, effect: Effect::Read, id };
        rows.iter()
            .map(|row| {
                let body: String = reader.get(row, 0)?;
                reader.json(&body, "a logged message")
            })
            .collect()
    }

    async fn delete(&self, id: &SessionId) -> Result<bool> {
        const OP: &str = "checkpoint_delete";
        let now = self.now();
        // Deleting twice deletes once: a repeat after a lost answer reports `false`.
        let rows = self
            .rows(OP, Effect::Repeatable, || query(&self.sql().delete_checkpoints).bind(id.as_str()).bind(now))
            .await?;
        let reader = Rows { op: OP, effect: Effect::Repeatable, id };
        match rows.first() {
            Some(row) => Ok(reader.count(row, 0, "version")? > 0),
            None => Ok(false),
        }
    }
}

/// A turn in two statements: one `SELECT` reads the session, its version and (when the
/// caller's cache is stale) the latest checkpoint with its log; one `lgadk_commit` checks
/// everything, then writes the checkpoint, the log, the interaction and the metadata merge.
#[async_trait]
impl TurnStore for PostgresStore {
    async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>> {
        const OP: &str = "begin_turn";
        let now = self.now();
        let cached = cached_version.map(|version| clamp_i64(version.into()));
        let rows = self
            .rows(OP, Effect::Read, || query(&self.sql().begin_turn).bind(id.as_str()).bind(now).bind(cached))
            .await?;
        let reader = Rows { op: OP, effect: Effect::Read, id };
        let Some(row) = rows.first() else { return Ok(None) };
        let session = reader.session(row)?;
        let version = reader.count(row, 10, "version")?;
        let latest = match reader.checkpoint(row, 11)? {
            Some(checkpoint) => {
                let bodies: Option<Vec<String>> = reader.get(row, 18)?;
                let messages = reader.messages(bodies.as_deref().unwrap_or_default())?;
                Some(LatestCheckpoint { checkpoint, messages })
            }
            None => None,
        };
        Ok(Some(TurnStart { session, version, latest }))
    }

    async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved> {
        let limit = self.inner.metadata_limit;
        let TurnCommit { checkpoint, expected_version, interaction, merge_metadata } = commit;
        let checkpoint = checkpoint.check_depth()?;
        let merge_metadata = merge_metadata.map(check_metadata_depth).transpose()?;
        if let Some(update) = &merge_metadata {
            // The merged result is never smaller than the update itself.
            check_metadata_size(update, limit)?;
        }
        let now = self.now();
        let args = CommitArgs {
            checkpoint: &checkpoint,
            expected_version,
            interaction: interaction.as_ref(),
            merge: merge_metadata.as_ref(),
        };
        let saved = self.commit("commit_turn", id, args, now).await?;
        Ok(TurnSaved {
            checkpoint: Checkpoint {
                version: saved.version,
                step: checkpoint.step,
                node: checkpoint.node,
                created_at: timestamp(now),
                log_len: saved.log_len,
                log_start: saved.log_start,
                state: checkpoint.state,
            },
            stats: interaction.map(|_| saved.stats),
            metadata: merge_metadata.map(|_| saved.metadata.unwrap_or_default()),
        })
    }
}

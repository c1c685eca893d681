//! The turn contract: what one graph turn reads before its nodes run and writes after, each
//! as one call, so a store can answer both in one round trip apiece.

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::{Checkpoint, Checkpointer, NewCheckpoint};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::message::Message;
use crate::session::{Interaction, Metadata, MetadataUpdate, Session, SessionStats};
use crate::store::SessionStore;

/// Where a turn starts, as [`TurnStore::begin_turn`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnStart {
    /// The session record (metadata and stats included).
    pub session: Session,
    /// The session's latest checkpoint version (0 before the first checkpoint).
    pub version: u64,
    /// The latest checkpoint with its message log, when the caller's cached state is not at
    /// `version` (and there is a checkpoint); `None` when the cache is current.
    pub latest: Option<LatestCheckpoint>,
}

/// A session's latest checkpoint and the log it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The message log at positions `checkpoint.log_range()`, in order.
    pub messages: Vec<Message>,
}

/// What a turn writes, as one [`TurnStore::commit_turn`].
#[derive(Debug, Clone, PartialEq)]
pub struct TurnCommit {
    /// The new checkpoint and its messages; give it an [`OpId`](crate::OpId) so a repeat saves
    /// it once.
    pub checkpoint: NewCheckpoint,
    /// Compare-and-set: the version the turn started from.
    pub expected_version: u64,
    /// The interaction to track (with an op id, so a repeat counts it once), if any.
    pub interaction: Option<Interaction>,
    /// Metadata to merge into the session's (top-level keys overwrite), if any.
    pub merge_metadata: Option<Metadata>,
}

/// What [`TurnStore::commit_turn`] saved.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnSaved {
    /// The saved checkpoint, with its version and log length.
    pub checkpoint: Checkpoint,
    /// The session's totals after the interaction; `None` when the commit tracked none.
    pub stats: Option<SessionStats>,
    /// The session's metadata after the merge; `None` when the commit merged nothing.
    pub metadata: Option<Metadata>,
}

/// A graph turn as two calls: [`begin_turn`](Self::begin_turn) reads everything a turn needs
/// and [`commit_turn`](Self::commit_turn) writes everything it produced.
///
/// Both have default implementations built from [`SessionStore`] and [`Checkpointer`], so
/// every backend is a `TurnStore` with an empty `impl`; the defaults make the calls a turn
/// made before, one after the other, and are **not atomic**. A backend that overrides them
/// answers each in one step (one round trip for a remote store).
///
/// # Contract (for backends that override `commit_turn`)
/// - `commit_turn` is atomic: it writes the checkpoint with its messages (and the cut of the
///   log its [`NewCheckpoint::log_start`] asks for), the interaction and the metadata merge
///   all together, or nothing at all. On a stale `expected_version`
///   ([`Error::Conflict`]), an absent session ([`Error::SessionNotFound`]), merged metadata
///   over the store's limit ([`Error::MetadataTooLarge`]) or data nested too deep
///   ([`Error::NestingTooDeep`]) nothing is written.
/// - A commit whose checkpoint op id the store has already applied writes nothing and answers
///   with the checkpoint saved the first time (and the current totals and metadata), even
///   though the version has moved on: a repeat after [`Outcome::Unknown`](crate::Outcome::Unknown)
///   applies once.
/// - Tracking an interaction or merging metadata bumps `last_active`, as
///   [`SessionStore::track_interaction`] and [`SessionStore::update_metadata`] do; a commit
///   with neither leaves it, as [`Checkpointer::put`] does.
/// - `begin_turn` is a consistent read of one moment: the session, its version and (when
///   returned) that version's checkpoint and its log, `checkpoint.log_range()` exactly: only
///   what the log retains, so a cut session loads in proportion to what it kept.
#[async_trait]
pub trait TurnStore: SessionStore + Checkpointer {
    /// The session, its latest checkpoint version and, unless `cached_version` is that
    /// version, its latest checkpoint with the log it covers. `None` if the session is
    /// unknown, ended or expired.
    ///
    /// Default: `get`, then `version` (skipped when nothing is cached), then `latest` and
    /// `messages` when the cache is stale.
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>> {
        let Some(session) = self.get(id).await? else { return Ok(None) };
        let version = match cached_version {
            Some(_) => match self.version(id).await {
                Ok(version) => version,
                Err(Error::SessionNotFound(_)) => return Ok(None),
                Err(err) => return Err(err),
            },
            None => u64::MAX,
        };
        if version == 0 || cached_version == Some(version) {
            return Ok(Some(TurnStart { session, version, latest: None }));
        }
        let Some(mut checkpoint) = self.latest(id).await? else {
            return Ok(Some(TurnStart { session, version: 0, latest: None }));
        };
        let range = checkpoint.log_range();
        let messages = if range.is_empty() { Vec::new() } else { self.messages(id, range).await? };
        // Two reads, not one: a commit between them may have cut the log further. What is left
        // is the end of the range; the turn's commit then fails its compare-and-set.
        let found = u64::try_from(messages.len()).unwrap_or(u64::MAX);
        checkpoint.log_start = checkpoint.log_start.max(checkpoint.log_len.saturating_sub(found));
        let version = checkpoint.version;
        Ok(Some(TurnStart { session, version, latest: Some(LatestCheckpoint { checkpoint, messages }) }))
    }

    /// Saves a turn: the checkpoint compare-and-set on `expected_version`, then the metadata
    /// merge and the interaction (see the trait's contract).
    ///
    /// Default: checks the nesting depth of the checkpoint and the metadata, then `put`,
    /// `update_metadata`, `track_interaction` in turn; a failure after the `put` (metadata
    /// over the store's limit, say) leaves the checkpoint saved.
    ///
    /// # Errors
    /// `Conflict`, `SessionNotFound`, `MetadataTooLarge`, `NestingTooDeep`, `Backend` (with
    /// [`Outcome::Unknown`](crate::Outcome::Unknown) when it may have written: repeat it with
    /// the same op ids).
    async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved> {
        let TurnCommit { checkpoint, expected_version, interaction, merge_metadata } = commit;
        // What can be refused without asking the store is refused before anything is written.
        let checkpoint = checkpoint.check_depth()?;
        let merge_metadata = merge_metadata.map(crate::session::check_metadata_depth).transpose()?;
        let checkpoint = self.put(id, checkpoint, expected_version).await?;
        let metadata = match merge_metadata {
            Some(update) => Some(self.update_metadata(id, MetadataUpdate::Merge(update)).await?),
            None => None,
        };
        let stats = match interaction {
            Some(turn) => Some(self.track_interaction(id, turn).await?),
            None => None,
        };
        Ok(TurnSaved { checkpoint, stats, metadata })
    }
}

macro_rules! forward_turn_store {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: TurnStore + ?Sized> TurnStore for $ptr<T> {
            async fn begin_turn(&self, id: &SessionId, cached_version: Option<u64>) -> Result<Option<TurnStart>> {
                (**self).begin_turn(id, cached_version).await
            }
            async fn commit_turn(&self, id: &SessionId, commit: TurnCommit) -> Result<TurnSaved> {
                (**self).commit_turn(id, commit).await
            }
        }
    )+};
}

forward_turn_store!(Arc, Box);

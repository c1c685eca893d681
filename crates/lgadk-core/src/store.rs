//! The session persistence contract.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{SessionId, UserId};
use crate::session::{Interaction, Metadata, MetadataUpdate, NewSession, Page, Session, SessionPage, SessionStats};

/// Persistence contract for sessions. Implement it for a backend; applications call the
/// `SessionManager` of `lgadk-session`, which adds validation, defaults and tracing on top.
///
/// # Contract
/// - Every method is atomic with respect to concurrent callers in any number of processes that
///   share the backend: no lost counter increments, no lost metadata keys.
/// - Expiry is decided by the store's clock: a session is expired when
///   `now - last_active > timeout`. Expired and ended sessions are absent: `get` returns `None`,
///   writes fail with [`Error::SessionNotFound`](crate::Error::SessionNotFound) and never bring
///   them back.
/// - Writes (`track_interaction`, `touch`, `update_metadata`) bump `last_active`; reads never do.
/// - Metadata larger than the store's limit once written fails with
///   [`Error::MetadataTooLarge`](crate::Error::MetadataTooLarge) and writes nothing.
/// - A failed call leaves stored data as it was (a write that failed with `Outcome::Unknown`
///   is applied whole or not at all). Backend faults are
///   [`Error::Backend`](crate::Error::Backend) with the cause as `source`; undecodable stored
///   data is [`Error::Corrupt`](crate::Error::Corrupt) naming the session.
/// - A backend fault says what it did to stored data: its
///   [`Outcome`](crate::Outcome) is `NotApplied` when nothing changed (reads always) and
///   `Unknown` when a write was sent and no answer came. Only the second may have written.
/// - Writes that are not naturally idempotent carry an [`OpId`](crate::OpId)
///   ([`Interaction::op`], [`NewSession::op`]). A store applies each op id at most once per
///   session, remembering at least the last [`OP_ID_WINDOW`](crate::OP_ID_WINDOW) of them for
///   as long as the session lives: a repeat changes nothing and returns the same kind of
///   success (the current totals; the session as created, not `AlreadyExists`).
#[async_trait]
pub trait SessionStore: fmt::Debug + Send + Sync + 'static {
    /// Short backend name for spans and errors: `"memory"`, `"redis"`.
    fn backend(&self) -> &'static str;

    /// Creates a session. `Timeout::Default` means
    /// [`DEFAULT_SESSION_TIMEOUT`](crate::DEFAULT_SESSION_TIMEOUT) here: the manager resolves
    /// its own default before calling.
    ///
    /// # Errors
    /// `AlreadyExists` if the id is taken by a live session; `MetadataTooLarge`.
    async fn create(&self, new: NewSession) -> Result<Session>;

    /// The session, or `None` if unknown, ended or expired.
    ///
    /// # Errors
    /// `Backend`, `Corrupt`.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>>;

    /// Whether the session is live. Cheaper than `get` in most backends.
    ///
    /// # Errors
    /// `Backend`.
    async fn exists(&self, id: &SessionId) -> Result<bool> {
        Ok(self.get(id).await?.is_some())
    }

    /// Adds one interaction to the session's stats and bumps `last_active`.
    ///
    /// # Errors
    /// `SessionNotFound` for unknown, ended or expired ids.
    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats>;

    /// Bumps `last_active`, extending the sliding timeout.
    ///
    /// # Errors
    /// `SessionNotFound` for unknown, ended or expired ids.
    async fn touch(&self, id: &SessionId) -> Result<()>;

    /// Merges into or replaces the session's metadata and returns the result.
    ///
    /// # Errors
    /// `SessionNotFound`; `MetadataTooLarge` if the result would exceed the limit (the stored
    /// metadata is then unchanged).
    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata>;

    /// One page of the user's live sessions, newest first. Costs in proportion to the page,
    /// never to the number of sessions in the store.
    ///
    /// # Errors
    /// `Backend`.
    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage>;

    /// Ends the session, deleting it with its checkpoints. `false` if it was not live.
    ///
    /// # Errors
    /// `Backend`.
    async fn end(&self, id: &SessionId) -> Result<bool>;

    /// Removes expired sessions (with their checkpoints and user-index entries) and returns how
    /// many it removed. Costs in proportion to what expired.
    ///
    /// # Errors
    /// `Backend`.
    async fn purge_expired(&self) -> Result<usize>;
}

macro_rules! forward_session_store {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: SessionStore + ?Sized> SessionStore for $ptr<T> {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            async fn create(&self, new: NewSession) -> Result<Session> {
                (**self).create(new).await
            }
            async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
                (**self).get(id).await
            }
            async fn exists(&self, id: &SessionId) -> Result<bool> {
                (**self).exists(id).await
            }
            async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
                (**self).track_interaction(id, turn).await
            }
            async fn touch(&self, id: &SessionId) -> Result<()> {
                (**self).touch(id).await
            }
            async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
                (**self).update_metadata(id, update).await
            }
            async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
                (**self).list_user_sessions(user, page).await
            }
            async fn end(&self, id: &SessionId) -> Result<bool> {
                (**self).end(id).await
            }
            async fn purge_expired(&self) -> Result<usize> {
                (**self).purge_expired().await
            }
        }
    )+};
}

forward_session_store!(Arc, Box);

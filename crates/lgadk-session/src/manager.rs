//! [`SessionManager`]: the session API applications call.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lgadk_core::session::{check_metadata_depth, check_metadata_size};
use lgadk_core::{
    AgentStats, Checkpointer, DEFAULT_METADATA_LIMIT, DEFAULT_SESSION_TIMEOUT, Error, Interaction, IntoOptionalUserId,
    IntoSessionId, IntoUserId, Metadata, MetadataUpdate, NewSession, OpId, Outcome, Page, Result, Session, SessionId,
    SessionPage, SessionStats, SessionStore, Timeout, TurnStore, UserId,
};
use serde::Serialize;
use tracing::Instrument;

use crate::memory::InMemoryStore;

/// The high-level session API: create sessions for users, track what each conversation costs,
/// read analytics, and expire idle sessions, over any [`SessionStore`] backend.
///
/// Cheap to clone (an `Arc` inside) and safe to share between tasks and threads. The method
/// names follow LG-ADK's session manager one to one, so code ports line by line; every call is
/// traced as a `session.<op>` span with the backend's name and the session id.
///
/// # Arguments
/// Id arguments take a [`SessionId`] or [`UserId`] by reference or by value, or text (`&str`,
/// `String`): see [`IntoSessionId`], [`IntoUserId`] and, for the owner of a new session,
/// [`IntoOptionalUserId`] (`"alice"`, `&alice`, `Some(alice)` or `None`). Text that is not a
/// valid id fails the call with `InvalidSessionId`/`InvalidUserId` before the store is asked
/// anything. A borrowed id is used as it is, with no clone.
///
/// # Absent sessions
/// One rule for every method: a session that is unknown, ended or expired is **absent**.
/// - Readers answer for it without an error: [`get_session`](Self::get_session),
///   [`get_session_metadata`](Self::get_session_metadata) and [`get_session_summary`](Self::get_session_summary) return
///   `Ok(None)`, [`session_exists`](Self::session_exists) and [`end_session`](Self::end_session)
///   `Ok(false)`, and the user listings leave it out.
/// - Writers fail with `SessionNotFound` and do not bring it back:
///   [`track_interaction`](Self::track_interaction),
///   [`record_interaction`](Self::record_interaction),
///   [`update_session_metadata`](Self::update_session_metadata), [`update_session`](Self::update_session).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use std::time::Duration;
/// use lgadk_session::{SessionManager, metadata};
///
/// let sessions = SessionManager::in_memory();
/// let id = sessions.create_session("alice", metadata! {"plan" => "pro"}).await?;
/// sessions.track_interaction(&id, 12, 40, Duration::from_millis(300)).await?;
/// let summary = sessions.get_session_summary(&id).await?.expect("the session is live");
/// assert_eq!(summary.interactions, 1);
/// assert_eq!(sessions.get_user_sessions("alice").await?, [id.clone()]);
/// assert_eq!(sessions.get_session_metadata(&id).await?.expect("live").get("plan"), Some(&"pro".into()));
/// assert!(sessions.end_session(&id).await?);
/// assert!(!sessions.session_exists(&id).await?);
/// assert!(sessions.get_session_summary(&id).await?.is_none(), "ended sessions read as absent");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn SessionStore>,
    checkpointer: Arc<dyn Checkpointer>,
    turns: Arc<dyn TurnStore>,
    default_timeout: Option<Duration>,
    metadata_limit: usize,
    unknown_outcome_retries: usize,
}

/// How often the manager repeats a write whose outcome is unknown unless configured otherwise.
pub const DEFAULT_UNKNOWN_OUTCOME_RETRIES: usize = 1;

/// LG-ADK's name for a thread-safe session manager. Every [`SessionManager`] is thread-safe
/// in Rust, so this is the same type.
pub type SynchronizedSessionManager = SessionManager;

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("store", &self.inner.store)
            .field("default_timeout", &self.inner.default_timeout)
            .field("metadata_limit", &self.inner.metadata_limit)
            .field("unknown_outcome_retries", &self.inner.unknown_outcome_retries)
            .finish_non_exhaustive()
    }
}

/// Configures a [`SessionManager`].
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn SessionStore>,
    checkpointer: Arc<dyn Checkpointer>,
    turns: Arc<dyn TurnStore>,
    default_timeout: Option<Duration>,
    metadata_limit: usize,
    unknown_outcome_retries: usize,
}

impl fmt::Debug for SessionManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("store", &self.store)
            .field("default_timeout", &self.default_timeout)
            .field("metadata_limit", &self.metadata_limit)
            .field("unknown_outcome_retries", &self.unknown_outcome_retries)
            .finish_non_exhaustive()
    }
}

impl SessionManagerBuilder {
    /// Idle timeout for sessions created with [`Timeout::Default`]; `None` means they never
    /// expire. Default: one hour.
    pub fn with_default_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Largest metadata map the manager passes on, serialized, in bytes (default 64 KiB).
    /// The store applies its own limit to the merged result as well.
    pub fn with_metadata_limit(mut self, bytes: usize) -> Self {
        self.metadata_limit = bytes;
        self
    }

    /// How many times a write whose outcome is unknown ([`Outcome::Unknown`]: sent, no answer)
    /// is repeated, with the same [`OpId`], before its error is returned (default
    /// [`DEFAULT_UNKNOWN_OUTCOME_RETRIES`], 0 turns it off). This covers `create_session*` and
    /// `track_interaction`/`record_interaction`; the store applies each op id at most once,
    /// so a repeat never counts twice.
    pub fn with_unknown_outcome_retries(mut self, retries: usize) -> Self {
        self.unknown_outcome_retries = retries;
        self
    }

    /// Builds the manager.
    pub fn build(self) -> SessionManager {
        SessionManager {
            inner: Arc::new(Shared {
                store: self.store,
                checkpointer: self.checkpointer,
                turns: self.turns,
                default_timeout: self.default_timeout,
                metadata_limit: self.metadata_limit,
                unknown_outcome_retries: self.unknown_outcome_retries,
            }),
        }
    }
}

/// A session's metadata beside its typed record fields, as
/// [`SessionManager::get_session_metadata`] returns it. The user's map is exactly as stored:
/// record fields are never mixed into it, so no key name is reserved.
///
/// It dereferences to the user's map, so `view.get("plan")`, `view["plan"]`, `view.len()` and
/// iteration read the metadata directly; the `metadata` field stays available.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionMetadata {
    /// The owning user.
    pub user_id: Option<UserId>,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// When it was last written to.
    pub last_active: DateTime<Utc>,
    /// The user's metadata.
    pub metadata: Metadata,
}

impl SessionMetadata {
    /// The user's map, without the record fields.
    pub fn into_metadata(self) -> Metadata {
        self.metadata
    }
}

impl std::ops::Deref for SessionMetadata {
    type Target = Metadata;

    fn deref(&self) -> &Metadata {
        &self.metadata
    }
}

/// The analytics of one session, as LG-ADK's session summary printed them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    /// The session.
    pub session_id: SessionId,
    /// The owning user.
    pub user_id: Option<UserId>,
    /// Tracked interactions.
    pub interactions: u64,
    /// Sum of prompt tokens.
    pub total_tokens_in: u64,
    /// Sum of completion tokens.
    pub total_tokens_out: u64,
    /// Mean response time per interaction.
    #[serde(with = "lgadk_core::session::duration_ms")]
    pub avg_response_time: Duration,
    /// Time from creation to the last write.
    #[serde(with = "lgadk_core::session::duration_ms")]
    pub duration: Duration,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// When it was last written to.
    pub last_active: DateTime<Utc>,
    /// The user's metadata.
    pub metadata: Metadata,
    /// The analytics per agent, for sessions of graphs that record who did the work (the tool
    /// loop, teams, `ChatAgent`): interactions each agent took part in, its tokens and time.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentStats>,
}

impl SessionSummary {
    fn of(session: Session) -> Self {
        Self {
            duration: session.duration(),
            avg_response_time: session.stats.avg_response_time(),
            interactions: session.stats.interactions,
            total_tokens_in: session.stats.total_tokens_in,
            total_tokens_out: session.stats.total_tokens_out,
            agents: session.stats.agents,
            session_id: session.id,
            user_id: session.user_id,
            created_at: session.created_at,
            last_active: session.last_active,
            metadata: session.metadata,
        }
    }
}

/// Stops the background reaper started by [`SessionManager::spawn_reaper`] when dropped.
#[derive(Debug)]
pub struct ReaperHandle {
    task: tokio::task::JoinHandle<()>,
}

impl ReaperHandle {
    /// Stops the reaper now (the same as dropping the handle).
    pub fn stop(self) {}
}

impl Drop for ReaperHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

macro_rules! span {
    ($op:literal, $self:ident) => {
        tracing::debug_span!(concat!("session.", $op), backend = $self.inner.store.backend())
    };
    ($op:literal, $self:ident, $id:expr) => {
        tracing::debug_span!(concat!("session.", $op), backend = $self.inner.store.backend(), session.id = %$id)
    };
}

/// Records an error on the current span once, at the manager boundary.
fn traced<T>(result: Result<T>) -> Result<T> {
    if let Err(err) = &result {
        tracing::debug!(error = %err, "session operation failed");
    }
    result
}

impl SessionManager {
    /// A manager over a fresh [`InMemoryStore`] with default settings.
    pub fn in_memory() -> Self {
        Self::new(InMemoryStore::new())
    }

    /// A manager over `store`, which also keeps the graphs' checkpoints and saves their
    /// turns, with default settings. Any [`SessionStore`] + [`Checkpointer`] becomes a
    /// [`TurnStore`] with an empty `impl`.
    pub fn new<S: SessionStore + Checkpointer + TurnStore>(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder for a manager over `store` with custom settings.
    pub fn builder<S: SessionStore + Checkpointer + TurnStore>(store: S) -> SessionManagerBuilder {
        let turns: Arc<dyn TurnStore> = Arc::new(store);
        SessionManagerBuilder {
            store: Arc::clone(&turns) as Arc<dyn SessionStore>,
            checkpointer: Arc::clone(&turns) as Arc<dyn Checkpointer>,
            turns,
            default_timeout: Some(DEFAULT_SESSION_TIMEOUT),
            metadata_limit: DEFAULT_METADATA_LIMIT,
            unknown_outcome_retries: DEFAULT_UNKNOWN_OUTCOME_RETRIES,
        }
    }

    /// A manager over a Redis store at `url` (e.g. `redis://127.0.0.1:6379/0`) with default
    /// settings; use [`RedisStore::builder`](crate::RedisStore::builder) for more control.
    ///
    /// # Errors
    /// `InvalidConfig` for a malformed URL, `Backend` when Redis cannot be reached.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str) -> Result<Self> {
        Ok(Self::new(crate::redis::RedisStore::builder(url).connect().await?))
    }

    /// A manager over a PostgreSQL store at `url` (e.g. `postgres://app@127.0.0.1:5432/app`)
    /// with default settings (schema `lgadk`, migrated on connect); use
    /// [`PostgresStore::builder`](crate::PostgresStore::builder) for more control.
    ///
    /// # Errors
    /// `InvalidConfig` for a malformed URL, `Backend` when the database cannot be reached or
    /// a migration fails.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub async fn postgres(url: &str) -> Result<Self> {
        Ok(Self::new(crate::postgres::PostgresStore::builder(url).connect().await?))
    }

    /// The session store behind this manager, as a plain trait object (calling through it
    /// costs one dynamic call per operation).
    pub fn store(&self) -> &dyn SessionStore {
        &*self.inner.store
    }

    /// The same backend as a checkpointer, for graphs.
    pub fn checkpointer(&self) -> &dyn Checkpointer {
        &*self.inner.checkpointer
    }

    /// The same backend as a [`TurnStore`]: one read to begin a graph turn, one write to
    /// commit it.
    pub fn turns(&self) -> &dyn TurnStore {
        &*self.inner.turns
    }

    /// The largest metadata map the manager passes on, serialized, in bytes (see
    /// [`SessionManagerBuilder::with_metadata_limit`]).
    pub fn metadata_limit(&self) -> usize {
        self.inner.metadata_limit
    }

    /// How many times a write whose outcome is unknown is repeated with its operation id (see
    /// [`SessionManagerBuilder::with_unknown_outcome_retries`]); graphs use the same for checkpoints.
    pub fn unknown_outcome_retries(&self) -> usize {
        self.inner.unknown_outcome_retries
    }

    /// The idle timeout given to sessions created with [`Timeout::Default`].
    pub fn default_timeout(&self) -> Option<Duration> {
        self.inner.default_timeout
    }

    /// Creates a session for `user_id` (`"alice"`, `&alice`, `Some(alice)`, or `None` for no
    /// owner) with `metadata` and the default timeout; returns its id.
    ///
    /// # Errors
    /// `InvalidUserId`, `MetadataTooLarge`, `Backend`.
    pub async fn create_session(&self, user_id: impl IntoOptionalUserId, metadata: Metadata) -> Result<SessionId> {
        let user_id = user_id.into_optional_user_id()?;
        let new = NewSession { user_id, metadata, ..NewSession::default() };
        Ok(self.create_session_with(new).await?.id)
    }

    /// Creates a session as described by `new` (caller-chosen id, timeout, …) and returns it.
    ///
    /// # Errors
    /// `AlreadyExists` if the id is taken, `MetadataTooLarge`, `Backend`.
    #[doc(alias = "create_session_with_id", alias = "register_session")]
    pub async fn create_session_with(&self, mut new: NewSession) -> Result<Session> {
        let span = match &new.id {
            Some(id) => span!("create", self, id),
            None => span!("create", self),
        };
        async move {
            new.metadata = check_metadata_depth(std::mem::take(&mut new.metadata))?;
            check_metadata_size(&new.metadata, self.inner.metadata_limit)?;
            if new.timeout == Timeout::Default {
                new.timeout = match self.inner.default_timeout {
                    Some(timeout) => Timeout::After(timeout),
                    None => Timeout::Never,
                };
            }
            // A repeat with this op id returns the session instead of `AlreadyExists`.
            new.op.get_or_insert_with(OpId::new);
            traced(self.repeat_unknown(|| self.dyn_store().create(new.clone())).await)
        }
        .instrument(span)
        .await
    }

    /// The session, or `None` if it is unknown, ended or expired.
    ///
    /// # Errors
    /// `InvalidSessionId`, `Backend`, `Corrupt`.
    pub async fn get_session(&self, id: impl IntoSessionId<'_>) -> Result<Option<Session>> {
        let id = id.into_session_id()?;
        traced(self.dyn_store().get(&id).instrument(span!("get", self, id)).await)
    }

    /// The session's metadata with its typed `user_id`, `created_at` and `last_active`, or
    /// `None` if the session is unknown, ended or expired.
    ///
    /// # Errors
    /// `InvalidSessionId`, `Backend`, `Corrupt`.
    pub async fn get_session_metadata(&self, id: impl IntoSessionId<'_>) -> Result<Option<SessionMetadata>> {
        let id = id.into_session_id()?;
        let session = self.read(&id, "get_metadata").await?;
        Ok(session.map(|session| SessionMetadata {
            user_id: session.user_id,
            created_at: session.created_at,
            last_active: session.last_active,
            metadata: session.metadata,
        }))
    }

    /// Adds one turn's tokens and response time to the session's totals and extends its timeout.
    ///
    /// # Errors
    /// `InvalidSessionId`; `SessionNotFound` if the session is unknown, ended or expired.
    pub async fn track_interaction(
        &self,
        id: impl IntoSessionId<'_>,
        tokens_in: u64,
        tokens_out: u64,
        response_time: Duration,
    ) -> Result<SessionStats> {
        self.record_interaction(id, Interaction::tokens(tokens_in, tokens_out).with_response_time(response_time)).await
    }

    /// [`track_interaction`](Self::track_interaction) with an [`Interaction`] value.
    ///
    /// Without an [`OpId`] the manager gives the interaction a fresh one. To repeat a call
    /// that failed with [`Outcome::Unknown`] yourself, set one and repeat it unchanged: it is
    /// counted once.
    ///
    /// # Errors
    /// `InvalidSessionId`; `SessionNotFound` if the session is unknown, ended or expired;
    /// `Backend` with [`Outcome::Unknown`] when it was sent (and repeated) without an answer.
    pub async fn record_interaction(&self, id: impl IntoSessionId<'_>, mut turn: Interaction) -> Result<SessionStats> {
        let id = id.into_session_id()?;
        turn.op.get_or_insert_with(OpId::new);
        let call = self.repeat_unknown(|| self.dyn_store().track_interaction(&id, turn.clone()));
        traced(call.instrument(span!("track_interaction", self, id)).await)
    }

    /// Every live session of `user`, newest first. For users with very many sessions, page
    /// with [`user_sessions`](Self::user_sessions) instead.
    ///
    /// # Errors
    /// `InvalidUserId`, `Backend`.
    pub async fn get_user_sessions(&self, user: impl IntoUserId<'_>) -> Result<Vec<SessionId>> {
        let user = user.into_user_id()?;
        let span = tracing::debug_span!("session.list_user", backend = self.inner.store.backend(), user.id = %user);
        async {
            let mut all = Vec::new();
            let mut page = Page::first(Page::MAX_LIMIT);
            loop {
                let got = traced(self.dyn_store().list_user_sessions(&user, page).await)?;
                all.extend(got.ids);
                match got.next {
                    Some(cursor) => page = Page::after(cursor, Page::MAX_LIMIT),
                    None => return Ok(all),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One page of `user`'s live sessions, newest first.
    ///
    /// # Errors
    /// `InvalidUserId`, `Backend`.
    pub async fn user_sessions(&self, user: impl IntoUserId<'_>, page: Page) -> Result<SessionPage> {
        let user = user.into_user_id()?;
        let span = tracing::debug_span!("session.list_user", backend = self.inner.store.backend(), user.id = %user);
        traced(self.dyn_store().list_user_sessions(&user, page).instrument(span).await)
    }

    /// Merges `metadata` into the session's metadata (`merge = true`: top-level keys overwrite,
    /// others stay) or replaces it (`merge = false`); returns the result.
    ///
    /// # Errors
    /// `InvalidSessionId`; `SessionNotFound`; `MetadataTooLarge` (the stored metadata is then
    /// unchanged).
    pub async fn update_session_metadata(
        &self,
        id: impl IntoSessionId<'_>,
        metadata: Metadata,
        merge: bool,
    ) -> Result<Metadata> {
        let id = id.into_session_id()?;
        async {
            let metadata = check_metadata_depth(metadata)?;
            check_metadata_size(&metadata, self.inner.metadata_limit)?;
            let update = if merge { MetadataUpdate::Merge(metadata) } else { MetadataUpdate::Replace(metadata) };
            traced(self.dyn_store().update_metadata(&id, update).await)
        }
        .instrument(span!("update_metadata", self, id))
        .await
    }

    /// Marks the session active now, extending its sliding timeout.
    ///
    /// # Errors
    /// `InvalidSessionId`; `SessionNotFound` if the session is unknown, ended or expired.
    #[doc(alias = "touch")]
    pub async fn update_session(&self, id: impl IntoSessionId<'_>) -> Result<()> {
        let id = id.into_session_id()?;
        traced(self.dyn_store().touch(&id).instrument(span!("touch", self, id)).await)
    }

    /// Ends the session, deleting it with its checkpoints; `false` if it was not live (ending
    /// an absent session is not an error, so ending twice is harmless).
    ///
    /// # Errors
    /// `InvalidSessionId`, `Backend`.
    #[doc(alias = "remove_session")]
    pub async fn end_session(&self, id: impl IntoSessionId<'_>) -> Result<bool> {
        let id = id.into_session_id()?;
        traced(self.dyn_store().end(&id).instrument(span!("end", self, id)).await)
    }

    /// Whether the session is live (not unknown, ended or expired). Does not extend it.
    ///
    /// # Errors
    /// `InvalidSessionId`, `Backend`.
    #[doc(alias = "is_session_valid")]
    pub async fn session_exists(&self, id: impl IntoSessionId<'_>) -> Result<bool> {
        let id = id.into_session_id()?;
        traced(self.dyn_store().exists(&id).instrument(span!("exists", self, id)).await)
    }

    /// Removes expired sessions now and returns how many were removed.
    ///
    /// # Errors
    /// `Backend`.
    #[doc(alias = "cleanup_expired_sessions")]
    pub async fn clear_expired_sessions(&self) -> Result<usize> {
        traced(self.dyn_store().purge_expired().instrument(span!("purge_expired", self)).await)
    }

    /// The session's analytics (interactions, tokens, average response time, duration), or
    /// `None` if the session is unknown, ended or expired.
    ///
    /// # Errors
    /// `InvalidSessionId`, `Backend`, `Corrupt`.
    #[doc(alias = "summary")]
    pub async fn get_session_summary(&self, id: impl IntoSessionId<'_>) -> Result<Option<SessionSummary>> {
        let id = id.into_session_id()?;
        Ok(self.read(&id, "summary").await?.map(SessionSummary::of))
    }

    /// Purges expired sessions every `interval` on the current tokio runtime until the
    /// returned handle is dropped. Failures are logged (`tracing::warn!`) and retried at the
    /// next tick.
    ///
    /// # Errors
    /// `NoRuntime` outside a Tokio runtime; `InvalidConfig` for a zero interval.
    pub fn spawn_reaper(&self, interval: Duration) -> Result<ReaperHandle> {
        if interval.is_zero() {
            return Err(Error::InvalidConfig { reason: "the reaper interval must be greater than zero".into() });
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::NoRuntime { op: "SessionManager::spawn_reaper" })?;
        let manager = self.clone();
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match manager.clear_expired_sessions().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "reaper purged expired sessions"),
                    Err(err) => tracing::warn!(error = %err, "reaper could not purge expired sessions"),
                }
            }
        });
        Ok(ReaperHandle { task })
    }

    /// Runs a write that carries an op id, repeating it while it fails with
    /// [`Outcome::Unknown`], up to the configured number of times.
    async fn repeat_unknown<T, F>(&self, mut call: impl FnMut() -> F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let mut left = self.inner.unknown_outcome_retries;
        loop {
            match call().await {
                Err(err) if left > 0 && err.outcome() == Some(Outcome::Unknown) => {
                    left -= 1;
                    tracing::debug!(error = %err, "outcome unknown; repeating the write with its operation id");
                }
                other => return other,
            }
        }
    }

    /// The store as a plain trait object: calling through the `Arc` would go through its
    /// forwarding impl and box every future twice.
    fn dyn_store(&self) -> &dyn SessionStore {
        &*self.inner.store
    }

    async fn read(&self, id: &SessionId, op: &'static str) -> Result<Option<Session>> {
        let span = tracing::debug_span!("session.get", backend = self.inner.store.backend(), session.id = %id, op);
        traced(self.dyn_store().get(id).instrument(span).await)
    }
}

//! Session records and the values passed to and from a [`SessionStore`](crate::SessionStore).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::from_ms;
use crate::error::{Error, Result};
use crate::id::{SessionId, UserId};
use crate::json;
use crate::op::OpId;

/// A session's user-defined metadata: a JSON object.
///
/// Build one with [`metadata!`](crate::metadata!), or as any `serde_json` map (`serde_json` is
/// re-exported as [`lgadk_core::serde_json`](crate::serde_json), so no separate dependency is
/// needed).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Builds a [`Metadata`] map from `key => value` pairs.
///
/// Keys are anything `Into<String>`; values anything `Into<serde_json::Value>` (text, numbers,
/// booleans, `Option`s, `Vec`s, another `Metadata`, or a `serde_json::json!` value for
/// anything nested). The conversions are checked by the compiler: building metadata cannot
/// fail at run time. A repeated key keeps its last value.
///
/// ```
/// use lgadk_core::{metadata, serde_json::json};
///
/// let plan = "pro";
/// let meta = metadata! {
///     "plan" => plan,
///     "seats" => 3,
///     "trial" => false,
///     "tags" => vec!["beta", "eu"],
///     "billing" => json!({"currency": "EUR"}),
/// };
/// assert_eq!(meta["plan"], "pro");
/// assert_eq!(meta["seats"], 3);
/// assert_eq!(meta["billing"]["currency"], "EUR");
/// assert!(metadata! {}.is_empty());
/// ```
#[macro_export]
macro_rules! metadata {
    ($($key:expr => $value:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut map = $crate::Metadata::new();
        $(
            map.insert(
                ::std::convert::Into::<::std::string::String>::into($key),
                ::std::convert::Into::<$crate::serde_json::Value>::into($value),
            );
        )*
        map
    }};
}

/// Metadata limit every backend applies unless configured otherwise: 64 KiB serialized.
pub const DEFAULT_METADATA_LIMIT: usize = 64 * 1024;

/// Idle time after which a session with [`Timeout::Default`] expires when no other default is
/// configured: one hour.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Serialized size of `metadata` in bytes (compact JSON), as the metadata limit counts it;
/// `usize::MAX` when it nests too deep to serialize (see [`crate::json`]).
pub fn metadata_size(metadata: &Metadata) -> usize {
    json_size(metadata)
}

/// Size of `value` as compact JSON, in bytes, counted without building the text; `usize::MAX`
/// when it nests [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH) levels or does not
/// serialize, so such a value never fits a size limit.
pub fn json_size<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    json::size(value).unwrap_or(usize::MAX)
}

/// Checks `metadata` against `limit`, and its nesting against
/// [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH), in one pass that never recurses past the
/// limit.
///
/// # Errors
/// [`Error::NestingTooDeep`] or [`Error::MetadataTooLarge`].
pub fn check_metadata_size(metadata: &Metadata, limit: usize) -> Result<()> {
    let size = json::size(metadata).map_err(|err| {
        err.into_error("metadata", |source| Error::InvalidConfig {
            reason: format!("metadata does not serialize: {source}"),
        })
    })?;
    if size > limit {
        return Err(Error::MetadataTooLarge { size, limit });
    }
    Ok(())
}

/// Hands `metadata` back if its nesting stays below
/// [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH) (the map itself is the first level);
/// otherwise drops it with a flat stack, however deep it is, and fails.
///
/// # Errors
/// [`Error::NestingTooDeep`].
pub fn check_metadata_depth(metadata: Metadata) -> Result<Metadata> {
    match json::check_map(&metadata, 0) {
        Ok(()) => Ok(metadata),
        Err(err) => {
            json::dispose(serde_json::Value::Object(metadata));
            Err(err.into_error("metadata", |source| Error::InvalidConfig { reason: source.to_string() }))
        }
    }
}

/// One stored session.
///
/// Times have millisecond precision. A session expires when `now - last_active > timeout`
/// (a sliding timeout); expired sessions are treated as absent by every store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session's id.
    pub id: SessionId,
    /// The user the session belongs to, if any.
    pub user_id: Option<UserId>,
    /// When the session was created.
    pub created_at: DateTime<Utc>,
    /// When the session was last written to (interaction, touch, metadata update).
    pub last_active: DateTime<Utc>,
    /// Idle time after which the session expires; `None` never expires.
    #[serde(with = "duration_ms::option")]
    pub timeout: Option<Duration>,
    /// The user's metadata, exactly as stored.
    pub metadata: Metadata,
    /// Aggregated usage.
    pub stats: SessionStats,
}

impl Session {
    /// When the session expires unless written to again; `None` if it never does.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let timeout = chrono::Duration::from_std(self.timeout?).ok()?;
        self.last_active.checked_add_signed(timeout)
    }

    /// Time between creation and the last write.
    pub fn duration(&self) -> Duration {
        (self.last_active - self.created_at).to_std().unwrap_or_default()
    }
}

/// Usage aggregated over a session's interactions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStats {
    /// Number of tracked interactions (turns).
    pub interactions: u64,
    /// Sum of prompt tokens.
    pub total_tokens_in: u64,
    /// Sum of completion tokens.
    pub total_tokens_out: u64,
    /// Sum of response times.
    #[serde(with = "duration_ms")]
    pub total_response_time: Duration,
    /// The same analytics per agent, for graphs whose turns record who did the work (the tool
    /// loop and teams do); empty otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentStats>,
}

/// One agent's part of a session's analytics: the interactions it took part in, the tokens
/// its model calls used and the time its nodes took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// Interactions (turns) the agent took part in.
    pub interactions: u64,
    /// Prompt tokens of its model calls.
    pub tokens_in: u64,
    /// Completion tokens of its model calls.
    pub tokens_out: u64,
    /// Time its nodes took.
    #[serde(with = "duration_ms")]
    pub time: Duration,
}

/// One agent's part of one interaction ([`Interaction::agents`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentShare {
    /// The agent (a node name).
    pub agent: String,
    /// Prompt tokens of its model calls in the turn.
    pub tokens_in: u64,
    /// Completion tokens of its model calls in the turn.
    pub tokens_out: u64,
    /// Time its nodes took in the turn.
    #[serde(with = "duration_ms")]
    pub time: Duration,
}

impl SessionStats {
    /// Mean response time per interaction; zero before the first one.
    pub fn avg_response_time(&self) -> Duration {
        match u32::try_from(self.interactions) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_response_time / n,
            Err(_) => Duration::from_secs_f64(self.total_response_time.as_secs_f64() / self.interactions as f64),
        }
    }

    /// Adds one interaction (saturating, so a counter never wraps).
    pub fn record(&mut self, turn: &Interaction) {
        self.interactions = self.interactions.saturating_add(1);
        self.total_tokens_in = self.total_tokens_in.saturating_add(turn.tokens_in);
        self.total_tokens_out = self.total_tokens_out.saturating_add(turn.tokens_out);
        self.total_response_time = self.total_response_time.saturating_add(turn.response_time);
        for share in &turn.agents {
            let agent = self.agents.entry(share.agent.clone()).or_default();
            agent.interactions = agent.interactions.saturating_add(1);
            agent.tokens_in = agent.tokens_in.saturating_add(share.tokens_in);
            agent.tokens_out = agent.tokens_out.saturating_add(share.tokens_out);
            agent.time = agent.time.saturating_add(share.time);
        }
    }
}

/// What one turn adds to a session's [`SessionStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// Prompt tokens of the turn.
    pub tokens_in: u64,
    /// Completion tokens of the turn.
    pub tokens_out: u64,
    /// Wall time of the turn.
    #[serde(with = "duration_ms")]
    pub response_time: Duration,
    /// Identifies this write, so that repeating it applies it once (see [`OpId`]). The
    /// `SessionManager` fills in a fresh one when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<OpId>,
    /// The turn broken down by agent (each agent once), when the graph records it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentShare>,
}

impl Interaction {
    /// An interaction with token counts and no response time.
    pub fn tokens(tokens_in: u64, tokens_out: u64) -> Self {
        Self { tokens_in, tokens_out, response_time: Duration::ZERO, op: None, agents: Vec::new() }
    }

    /// Sets the breakdown by agent.
    #[must_use]
    pub fn with_agents(mut self, agents: Vec<AgentShare>) -> Self {
        self.agents = agents;
        self
    }

    /// Sets the operation id: a repeat of this interaction with the same id is counted once.
    #[must_use]
    pub fn with_op_id(mut self, op: OpId) -> Self {
        self.op = Some(op);
        self
    }

    /// Sets the response time.
    #[must_use]
    pub fn with_response_time(mut self, response_time: Duration) -> Self {
        self.response_time = response_time;
        self
    }
}

/// How long a new session may stay idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// The default of whoever creates the session: the [`SessionManager`]'s configured default,
    /// or [`DEFAULT_SESSION_TIMEOUT`] when a store is called directly.
    ///
    /// [`SessionManager`]: https://docs.rs/lgadk-session
    #[default]
    Default,
    /// The session never expires; it lives until ended.
    Never,
    /// The session expires after this much idle time.
    After(Duration),
}

impl Timeout {
    /// The idle limit this timeout stands for, with `default` for [`Timeout::Default`].
    pub fn resolve(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Self::Default => default,
            Self::Never => None,
            Self::After(after) => Some(after),
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewSession {
    /// A caller-chosen id; a UUID v4 is generated when `None`.
    pub id: Option<SessionId>,
    /// The owning user, if any.
    pub user_id: Option<UserId>,
    /// Initial metadata.
    pub metadata: Metadata,
    /// Idle timeout.
    pub timeout: Timeout,
    /// Identifies this creation, so that repeating it returns the session it created instead
    /// of `AlreadyExists` (see [`OpId`]). The `SessionManager` fills in a fresh one when `None`.
    pub op: Option<OpId>,
}

impl NewSession {
    /// A session for `user`.
    pub fn for_user(user: UserId) -> Self {
        Self { user_id: Some(user), ..Self::default() }
    }

    /// Sets a caller-chosen id.
    #[must_use]
    pub fn with_id(mut self, id: SessionId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the initial metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Timeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the operation id: a repeat of this creation with the same id succeeds once more
    /// instead of failing with `AlreadyExists`.
    #[must_use]
    pub fn with_op_id(mut self, op: OpId) -> Self {
        self.op = Some(op);
        self
    }
}

/// How [`SessionStore::update_metadata`](crate::SessionStore::update_metadata) changes metadata.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetadataUpdate {
    /// Top-level keys of the given map overwrite or add to the stored ones; others stay.
    Merge(Metadata),
    /// The given map replaces the stored one entirely.
    Replace(Metadata),
}

impl MetadataUpdate {
    /// The map carried by the update.
    pub fn map(&self) -> &Metadata {
        match self {
            Self::Merge(map) | Self::Replace(map) => map,
        }
    }

    /// [`check_metadata_depth`] for the carried map: the update back, or the error with the map
    /// dropped.
    ///
    /// # Errors
    /// [`Error::NestingTooDeep`].
    pub fn check_depth(self) -> Result<Self> {
        Ok(match self {
            Self::Merge(map) => Self::Merge(check_metadata_depth(map)?),
            Self::Replace(map) => Self::Replace(check_metadata_depth(map)?),
        })
    }

    /// Applies the update to `stored` in place.
    pub fn apply_to(self, stored: &mut Metadata) {
        match self {
            Self::Merge(map) => stored.extend(map),
            Self::Replace(map) => *stored = map,
        }
    }
}

/// One page request for a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Where the previous page stopped; `None` for the first page.
    pub cursor: Option<Cursor>,
    /// Most items to return (at least 1; stores cap it at [`Page::MAX_LIMIT`]).
    pub limit: usize,
}

impl Page {
    /// The largest page a store returns.
    pub const MAX_LIMIT: usize = 1000;

    /// The first page, of up to `limit` items.
    pub fn first(limit: usize) -> Self {
        Self { cursor: None, limit }
    }

    /// The page after `cursor`, of up to `limit` items.
    pub fn after(cursor: Cursor, limit: usize) -> Self {
        Self { cursor: Some(cursor), limit }
    }

    /// `limit` clamped to `1..=MAX_LIMIT`.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::first(100)
    }
}

/// A position in a user's session list, which is ordered newest first by
/// `(created_at, id)`. Opaque to callers; printable and parseable so it can travel in an API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cursor {
    created_ms: i64,
    id: SessionId,
}

impl Cursor {
    /// The position of the session created at `created_ms` with `id`: the next page starts
    /// with the session after it.
    pub fn new(created_ms: i64, id: SessionId) -> Self {
        Self { created_ms, id }
    }

    /// Creation time of the last session returned, in ms since the epoch.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// Id of the last session returned.
    pub fn id(&self) -> &SessionId {
        &self.id
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.created_ms, self.id)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(raw: &str) -> Result<Self> {
        let invalid = || Error::InvalidConfig { reason: format!("`{raw}` is not a session list cursor") };
        let (ms, id) = raw.split_once(':').ok_or_else(invalid)?;
        let created_ms = ms.parse().map_err(|_| invalid())?;
        let id = SessionId::parse(id).map_err(|_| invalid())?;
        Ok(Self { created_ms, id })
    }
}

/// One page of a user's sessions, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPage {
    /// Live sessions on this page.
    pub ids: Vec<SessionId>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

/// Milliseconds since the epoch of a timestamp.
pub fn to_ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// Builds a timestamp from milliseconds (see [`from_ms`]).
pub fn timestamp(ms: i64) -> DateTime<Utc> {
    from_ms(ms)
}

/// Serde adapters storing a [`Duration`] as whole milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as integer milliseconds.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserializes from integer milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    /// The same for `Option<Duration>` (`null` for `None`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes as integer milliseconds or `null`.
        pub fn serialize<S: Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
            match value {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Deserializes from integer milliseconds or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_text() {
        let cursor = Cursor::new(-5, SessionId::parse("a:b").unwrap());
        let back: Cursor = cursor.to_string().parse().unwrap();
        assert_eq!(back, cursor);
        assert!("nope".parse::<Cursor>().is_err());
    }

    #[test]
    fn metadata_macro_builds_the_same_map_as_inserts() {
        let mut by_hand = Metadata::new();
        by_hand.insert("plan".into(), serde_json::json!("pro"));
        by_hand.insert("n".into(), serde_json::json!(3));
        by_hand.insert("none".into(), serde_json::Value::Null);
        let key = String::from("plan");
        let none: Option<u8> = None;
        assert_eq!(crate::metadata! { key => "basic", "n" => 3, "none" => none, "plan" => "pro" }, by_hand);
    }

    #[test]
    fn metadata_size_counts_compact_json() {
        let mut map = Metadata::new();
        map.insert("a".into(), serde_json::json!(1));
        assert_eq!(metadata_size(&map), r#"{"a":1}"#.len());
    }

    #[test]
    fn average_of_nothing_is_zero() {
        assert_eq!(SessionStats::default().avg_response_time(), Duration::ZERO);
        let mut stats = SessionStats::default();
        stats.record(&Interaction::tokens(1, 2).with_response_time(Duration::from_millis(10)));
        stats.record(&Interaction::tokens(1, 2).with_response_time(Duration::from_millis(30)));
        assert_eq!(stats.avg_response_time(), Duration::from_millis(20));
    }

    #[test]
    fn session_serializes_times_and_durations_plainly() {
        let session = Session {
            id: SessionId::parse("s1").unwrap(),
            user_id: None,
            created_at: timestamp(0),
            last_active: timestamp(1500),
            timeout: Some(Duration::from_secs(2)),
            metadata: Metadata::new(),
            stats: SessionStats::default(),
        };
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(json["timeout"], 2000);
        assert_eq!(session.duration(), Duration::from_millis(1500));
        assert_eq!(serde_json::from_value::<Session>(json).unwrap(), session);
    }
}

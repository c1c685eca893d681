//! [`SessionStore`] on PostgreSQL: one statement per operation.

use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::session::{check_metadata_depth, check_metadata_size, json_size, timestamp};
use lgadk_core::{
    Cursor, DEFAULT_SESSION_TIMEOUT, Error, Interaction, Metadata, MetadataUpdate, NewSession, Page, Result, Session,
    SessionId, SessionPage, SessionStats, SessionStore, UserId,
};

use super::decode::Rows;
use super::error::PgFailure;
use super::{
    Effect, MAX_TIMEOUT_MS, PURGE_BATCH, PostgresStore, agent_shares, clamp_i64, failed, op_arg, query, writes,
};

/// Status codes the functions answer with (see `schema.rs`).
pub(super) mod status {
    pub(crate) const OK: i32 = 1;
    pub(crate) const REPEATED: i32 = 2;
    pub(crate) const NOT_FOUND: i32 = 0;
    pub(crate) const CONFLICT: i32 = -2;
    pub(crate) const TOO_LARGE: i32 = -4;
}

impl PostgresStore {
    /// `map` as `jsonb` text, and the size of each key's `"key":value` as serde_json writes it
    /// (what the metadata limit counts), as `jsonb` text.
    pub(super) fn metadata_args(op: &'static str, map: &Metadata) -> Result<(String, String)> {
        let sizes: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .map(|(key, value)| (key.clone(), serde_json::Value::from(json_size(key) + 1 + json_size(value))))
            .collect();
        Ok((Self::json(op, "metadata", map)?, Self::json(op, "metadata", &sizes)?))
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create(&self, new: NewSession) -> Result<Session> {
        const OP: &str = "create";
        let mut new = new;
        new.metadata = check_metadata_depth(std::mem::take(&mut new.metadata))?;
        check_metadata_size(&new.metadata, self.inner.metadata_limit)?;
        let now = self.now();
        let id = new.id.unwrap_or_default();
        let timeout_ms = new
            .timeout
            .resolve(Some(DEFAULT_SESSION_TIMEOUT))
            .map(|timeout| clamp_i64(timeout.as_millis().min(u128::from(MAX_TIMEOUT_MS))));
        let (metadata, sizes) = Self::metadata_args(OP, &new.metadata)?;
        let user = new.user_id.as_ref().map(UserId::as_str);
        let op = op_arg(new.op);
        let effect = writes(new.op);
        let rows = self
            .rows(OP, effect, || {
                query(&self.sql().create)
                    .bind(id.as_str())
                    .bind(user)
                    .bind(now)
                    .bind(timeout_ms)
                    .bind(metadata.as_str())
                    .bind(sizes.as_str())
                    .bind(op.as_str())
            })
            .await?;
        let reader = Rows { op: OP, effect, id: &id };
        let row = one(&reader, &rows)?;
        let (created, last_active) = (reader.get::<i64>(row, 1)?, reader.get::<i64>(row, 2)?);
        let session = |created_ms: i64, last_active_ms: i64, metadata: Metadata| Session {
            id: id.clone(),
            user_id: new.user_id.clone(),
            created_at: timestamp(created_ms),
            last_active: timestamp(last_active_ms),
            timeout: timeout_ms.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis),
            metadata,
            stats: SessionStats::default(),
        };
        match reader.get::<i32>(row, 0)? {
            status::OK => Ok(session(now, now, new.metadata)),
            // The same creation, repeated: the session it created.
            status::REPEATED => Ok(session(created, last_active, new.metadata)),
            status::NOT_FOUND => Err(Error::AlreadyExists(id)),
            other => Err(reader_bad(&reader, other)),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>> {
        const OP: &str = "get";
        let now = self.now();
        let rows = self.rows(OP, Effect::Read, || query(&self.sql().get).bind(id.as_str()).bind(now)).await?;
        let reader = Rows { op: OP, effect: Effect::Read, id };
        rows.first().map(|row| reader.session(row)).transpose()
    }

    async fn exists(&self, id: &SessionId) -> Result<bool> {
        let now = self.now();
        let rows = self.rows("exists", Effect::Read, || query(&self.sql().exists).bind(id.as_str()).bind(now)).await?;
        Ok(!rows.is_empty())
    }

    async fn track_interaction(&self, id: &SessionId, turn: Interaction) -> Result<SessionStats> {
        const OP: &str = "track_interaction";
        let now = self.now();
        let op = op_arg(turn.op);
        let effect = writes(turn.op);
        let agents = agent_shares(&turn.agents);
        let rows = self
            .rows(OP, effect, || {
                query(&self.sql().track)
                    .bind(id.as_str())
                    .bind(now)
                    .bind(clamp_i64(turn.tokens_in.into()))
                    .bind(clamp_i64(turn.tokens_out.into()))
                    .bind(clamp_i64(turn.response_time.as_micros()))
                    .bind(op.as_str())
                    .bind(agents.as_str())
            })
            .await?;
        let reader = Rows { op: OP, effect, id };
        match rows.first() {
            Some(row) => reader.stats(row, 0),
            None => Err(Error::SessionNotFound(id.clone())),
        }
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        let now = self.now();
        let rows =
            self.rows("touch", Effect::Repeatable, || query(&self.sql().touch).bind(id.as_str()).bind(now)).await?;
        if rows.is_empty() { Err(Error::SessionNotFound(id.clone())) } else { Ok(()) }
    }

    async fn update_metadata(&self, id: &SessionId, update: MetadataUpdate) -> Result<Metadata> {
        const OP: &str = "update_metadata";
        let limit = self.inner.metadata_limit;
        let update = update.check_depth()?;
        // The result is never smaller than the update itself, so this saves a round trip.
        check_metadata_size(update.map(), limit)?;
        let (merge, map) = match &update {
            MetadataUpdate::Merge(map) => (true, map),
            MetadataUpdate::Replace(map) => (false, map),
            _ => return Err(Error::InvalidConfig { reason: "unsupported metadata update".into() }),
        };
        let (metadata, sizes) = Self::metadata_args(OP, map)?;
        let now = self.now();
        let rows = self
            .rows(OP, Effect::Write, || {
                query(&self.sql().update_metadata)
                    .bind(id.as_str())
                    .bind(now)
                    .bind(merge)
                    .bind(metadata.as_str())
                    .bind(sizes.as_str())
                    .bind(clamp_i64(limit as u128))
            })
            .await?;
        let reader = Rows { op: OP, effect: Effect::Write, id };
        let row = one(&reader, &rows)?;
        match reader.get::<i32>(row, 0)? {
            status::OK => {
                let text: Option<String> = reader.get(row, 2)?;
                reader.metadata(text.as_deref().unwrap_or("{}"))
            }
            status::NOT_FOUND => Err(Error::SessionNotFound(id.clone())),
            status::TOO_LARGE => {
                let size: i64 = reader.get(row, 1)?;
                Err(Error::MetadataTooLarge { size: usize::try_from(size).unwrap_or(usize::MAX), limit })
            }
            other => Err(reader_bad(&reader, other)),
        }
    }

    async fn list_user_sessions(&self, user: &UserId, page: Page) -> Result<SessionPage> {
        const OP: &str = "list_user_sessions";
        let limit = page.effective_limit();
        let now = self.now();
        // One more than the page, to learn whether another page follows.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = self
            .rows(OP, Effect::Read, || match &page.cursor {
                None => query(&self.sql().list_first).bind(user.as_str()).bind(now).bind(fetch),
                Some(cursor) => query(&self.sql().list_after)
                    .bind(user.as_str())
                    .bind(now)
                    .bind(fetch)
                    .bind(cursor.created_ms())
                    .bind(cursor.id().as_str()),
            })
            .await?;
        let more = rows.len() > limit;
        let mut ids = Vec::with_capacity(rows.len().min(limit));
        let mut last = None;
        for row in rows.iter().take(limit) {
            let raw: String = sqlx::Row::try_get(row, 0).map_err(|err| failed_read(OP, format!("column 0: {err}")))?;
            let created_ms: i64 =
                sqlx::Row::try_get(row, 1).map_err(|err| failed_read(OP, format!("column 1: {err}")))?;
            let id =
                SessionId::parse(&raw).map_err(|_| failed_read(OP, format!("stored session id `{raw}` is invalid")))?;
            ids.push(id.clone());
            last = Some(Cursor::new(created_ms, id));
        }
        Ok(SessionPage { ids, next: if more { last } else { None } })
    }

    async fn end(&self, id: &SessionId) -> Result<bool> {
        const OP: &str = "end";
        let now = self.now();
        // Deleting twice deletes once: a repeat after a lost answer reports `false`.
        let rows = self.rows(OP, Effect::Repeatable, || query(&self.sql().end).bind(id.as_str()).bind(now)).await?;
        let reader = Rows { op: OP, effect: Effect::Repeatable, id };
        match rows.first() {
            Some(row) => reader.get::<bool>(row, 0),
            None => Ok(false),
        }
    }

    async fn purge_expired(&self) -> Result<usize> {
        const OP: &str = "purge_expired";
        let mut removed = 0usize;
        loop {
            let now = self.now();
            let rows =
                self.rows(OP, Effect::Repeatable, || query(&self.sql().purge).bind(PURGE_BATCH).bind(now)).await?;
            let row = rows.first().ok_or_else(|| failed_read(OP, "no row".into()))?;
            let gone: i64 = sqlx::Row::try_get(row, 0).map_err(|err| failed_read(OP, format!("column 0: {err}")))?;
            let due: i64 = sqlx::Row::try_get(row, 1).map_err(|err| failed_read(OP, format!("column 1: {err}")))?;
            removed += usize::try_from(gone).unwrap_or(0);
            if due < PURGE_BATCH {
                return Ok(removed);
            }
        }
    }
}

/// The one row a function answers with.
pub(super) fn one<'r>(reader: &Rows<'_>, rows: &'r [sqlx::postgres::PgRow]) -> Result<&'r sqlx::postgres::PgRow> {
    rows.first().ok_or_else(|| {
        failed(
            reader.op,
            reader.effect,
            lgadk_core::Outcome::Unknown,
            PgFailure::BadReply { op: reader.op, detail: "no row".into() },
        )
    })
}

pub(super) fn reader_bad(reader: &Rows<'_>, status: i32) -> Error {
    failed(
        reader.op,
        reader.effect,
        lgadk_core::Outcome::Unknown,
        PgFailure::BadReply { op: reader.op, detail: format!("unknown status {status}") },
    )
}

fn failed_read(op: &'static str, detail: String) -> Error {
    Error::backend("postgres", op, PgFailure::BadReply { op, detail })
}

//! [`PostgresMemoryStore`]: long-term memory in PostgreSQL, on a [`PostgresStore`]'s pool.
//!
//! # Schema
//! One table in the store's schema, `memory_items` (migration 2):
//!
//! | column | type | holds |
//! |---|---|---|
//! | `namespace` | `text COLLATE "C"` | the segments joined by `\x1f` |
//! | `key` | `text COLLATE "C"` | the key |
//! | `value` | `jsonb` | the value |
//! | `created_ms`, `updated_ms` | `bigint` | times on the store's clock |
//! | `expires_ms` | `bigint`, null without a TTL | the expiry |
//! | `embedding` | `float4[]`, null without an embedder | the value's embedding |
//!
//! The primary key `(namespace, key)` in byte order is the contract's (namespace, key) order:
//! segments never contain control characters and `\x1f` sorts below every other character, so
//! a namespace prefix `P` is the key range `P <= namespace < P || ' '`. A partial index on
//! `expires_ms` serves purge, and a GIN index (`jsonb_path_ops`) serves filters.
//!
//! # Operations
//! Each is one statement, one round trip, with the store's clock as a parameter:
//! `put` is an upsert that keeps `created_ms` unless the old row had expired; `get`, `delete`
//! and `list` (a keyset page on the primary key, stepping over expired rows) read or remove by
//! key; `list_namespaces` reads the distinct namespaces under the prefix (not the items);
//! `purge_expired` deletes 256 expired rows per statement (`FOR UPDATE SKIP LOCKED`, so
//! purges from several processes share the work).
//!
//! `search` selects the live rows under the prefix that contain the filter (`value @>
//! filter`, the same containment as [`matches_filter`](lgadk_core::memory::matches_filter)),
//! with their embeddings only when the query is ranked by one, and ranks them here with
//! [`rank`]: the text ranking is defined by Rust's Unicode word rules, which SQL cannot repeat
//! exactly, and cosine over `float4[]` in SQL would need the pgvector extension, which is not
//! assumed. Its cost therefore follows the rows that pass the prefix and the filter.
//!
//! Through PgBouncer with the statement cache off, statements go as simple queries with
//! hex-encoded literals, as every statement of the store does.
//!
//! A JSON string holding the character U+0000 cannot be stored (`jsonb` refuses it): such a
//! put fails with `Error::Backend` and writes nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::memory::{
    Candidate, EmbedFields, Embedder, ItemCursor, ItemPage, ListRequest, MAX_PAGE_LIMIT, MemoryItem, MemoryKey,
    MemoryStore, Namespace, NamespaceRequest, SearchRequest, check_value, expires_at, rank,
};
use lgadk_core::serde_json::Value;
use lgadk_core::{Clock, Error, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;
use tracing::Instrument;

use super::{Effect, PgFailure, PostgresStore, query};
use crate::memory_store::{Embedding, SpanPrefix, memory_span, query_vector, value_vector};

const BACKEND: &str = "postgres";
/// Expired rows deleted per purge statement.
const PURGE_BATCH: i64 = 256;

/// The memory table, migration 2 (see the module docs).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE {s}.memory_items (
    namespace text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value jsonb NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    expires_ms bigint,
    embedding float4[],
    PRIMARY KEY (namespace, key)
);

CREATE INDEX memory_items_by_expiry ON {s}.memory_items (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE INDEX memory_items_by_value ON {s}.memory_items USING gin (value jsonb_path_ops);
"#;

/// The columns an item is read from, in the order [`item`] reads them.
const COLUMNS: &str = "m.namespace, m.key, m.value::text, m.created_ms, m.updated_ms, m.expires_ms";

/// The statements, with the schema in place.
struct Statements {
    put: Arc<str>,
    get: Arc<str>,
    delete: Arc<str>,
    list: Arc<str>,
    search: Arc<str>,
    namespaces: Arc<str>,
    purge: Arc<str>,
}

impl Statements {
    fn new(schema: &str) -> Self {
        let text = |sql: &str| -> Arc<str> { sql.replace("{s}", schema).into() };
        Self {
            put: text(
                "INSERT INTO {s}.memory_items AS m (namespace, key, value, created_ms, updated_ms, expires_ms, embedding) \
                 VALUES ($1, $2, $3::jsonb, $4, $4, $5, $6::float4[]) \
                 ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, \
                 created_ms = CASE WHEN m.expires_ms IS NULL OR $4 <= m.expires_ms THEN m.created_ms ELSE $4 END, \
                 updated_ms = $4, expires_ms = EXCLUDED.expires_ms, embedding = EXCLUDED.embedding \
                 RETURNING m.created_ms",
            ),
            get: text(&format!(
                "SELECT {COLUMNS} FROM {{s}}.memory_items m WHERE m.namespace = $1 AND m.key = $2 \
                 AND (m.expires_ms IS NULL OR $3 <= m.expires_ms)"
            )),
            delete: text(
                "DELETE FROM {s}.memory_items AS m WHERE m.namespace = $1 AND m.key = $2 \
                 RETURNING CASE WHEN m.expires_ms IS NULL OR $3 <= m.expires_ms THEN 1 ELSE 0 END::bigint",
            ),
            list: text(&format!(
                "SELECT {COLUMNS} FROM {{s}}.memory_items m WHERE (m.namespace, m.key) > ($1, $2) \
                 AND ($3::text IS NULL OR m.namespace < $3::text) AND (m.expires_ms IS NULL OR $4 <= m.expires_ms) \
                 ORDER BY m.namespace, m.key LIMIT $5"
            )),
            search: text(&format!(
                "SELECT {COLUMNS}, CASE WHEN $5 THEN m.embedding::text END FROM {{s}}.memory_items m \
                 WHERE m.namespace >= $1 AND ($2::text IS NULL OR m.namespace < $2::text) \
                 AND (m.expires_ms IS NULL OR $3 <= m.expires_ms) \
                 AND ($4::jsonb IS NULL OR m.value @> $4::jsonb) ORDER BY m.namespace, m.key"
            )),
            namespaces: text(
                "SELECT DISTINCT m.namespace FROM {s}.memory_items m \
                 WHERE m.namespace >= $1 AND ($2::text IS NULL OR m.namespace < $2::text) \
                 AND (m.expires_ms IS NULL OR $3 <= m.expires_ms) ORDER BY m.namespace",
            ),
            purge: text(
                "WITH due AS (SELECT m.namespace, m.key FROM {s}.memory_items m WHERE m.expires_ms < $1 \
                 ORDER BY m.expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED), \
                 gone AS (DELETE FROM {s}.memory_items AS m USING due \
                 WHERE m.namespace = due.namespace AND m.key = due.key RETURNING 1) \
                 SELECT count(*)::bigint FROM gone",
            ),
        }
    }
}

/// Long-term memory in PostgreSQL, on the pool, schema and clock of a [`PostgresStore`] (see
/// the [module docs](self) for the table and the cost of each operation). Cloning is cheap.
///
/// ```no_run
/// # async fn run() -> lgadk_core::Result<()> {
/// use lgadk_core::memory::{MemoryKey, MemoryStore, Namespace};
/// use lgadk_core::serde_json::json;
/// use lgadk_session::{PostgresMemoryStore, PostgresStore};
///
/// let sessions = PostgresStore::builder("postgres://app@127.0.0.1:5433/app").connect().await?;
/// let memory = PostgresMemoryStore::on(&sessions).build();
/// let prefs = Namespace::new(["users", "alice", "prefs"])?;
/// memory.put(&prefs, &MemoryKey::parse("theme")?, json!({"value": "dark"}), None).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresMemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: PostgresStore,
    sql: Statements,
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

impl fmt::Debug for PostgresMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMemoryStore")
            .field("schema", &self.inner.store.schema())
            .field("embedder", &self.inner.embedding.as_ref().map(|e| e.embedder.id().to_owned()))
            .finish_non_exhaustive()
    }
}

/// Configures a [`PostgresMemoryStore`].
#[must_use]
pub struct PostgresMemoryStoreBuilder {
    store: PostgresStore,
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

impl fmt::Debug for PostgresMemoryStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresMemoryStoreBuilder").field("schema", &self.store.schema()).finish_non_exhaustive()
    }
}

impl PostgresMemoryStore {
    /// A builder for a memory store in `store`'s schema (its migrations create the table), on
    /// its pool, with its clock.
    pub fn on(store: &PostgresStore) -> PostgresMemoryStoreBuilder {
        PostgresMemoryStoreBuilder { store: store.clone(), clock: Arc::clone(&store.inner.clock), embedding: None }
    }
}

impl PostgresMemoryStoreBuilder {
    /// Decides timestamps and expiry with `clock` (default: the session store's).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Embeds `fields` of every value put, and the query of every search, with `embedder`.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>, fields: EmbedFields) -> Self {
        self.embedding = Some(Embedding { embedder, fields });
        self
    }

    /// The store (nothing is sent until the first call).
    pub fn build(self) -> PostgresMemoryStore {
        let sql = Statements::new(self.store.schema());
        PostgresMemoryStore {
            inner: Arc::new(Inner { store: self.store, sql, clock: self.clock, embedding: self.embedding }),
        }
    }
}

/// A namespace as stored: its segments joined by `\x1f`.
fn namespace_text(namespace: &Namespace) -> String {
    namespace.segments().join("\u{1f}")
}

/// The first namespace text past everything under `prefix`.
fn upper_bound(prefix: &Namespace) -> String {
    format!("{}\u{20}", namespace_text(prefix))
}

fn bad(op: &'static str, effect: Effect, detail: String) -> Error {
    super::failed(op, effect, lgadk_core::Outcome::Unknown, PgFailure::BadReply { op, detail })
}

fn column<'r, T>(op: &'static str, row: &'r PgRow, index: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).map_err(|err| bad(op, Effect::Read, format!("column {index}: {err}")))
}

fn corrupt(namespace: &str, key: &str, source: impl Into<lgadk_core::BoxError>) -> Error {
    Error::CorruptMemory { namespace: namespace.replace('\u{1f}', "/"), key: key.to_owned(), source: source.into() }
}

/// An item from the [`COLUMNS`] of `row`.
fn item(op: &'static str, row: &PgRow) -> Result<MemoryItem> {
    let space: String = column(op, row, 0)?;
    let raw_key: String = column(op, row, 1)?;
    let value: String = column(op, row, 2)?;
    let namespace = Namespace::new(space.split('\u{1f}')).map_err(|err| corrupt(&space, &raw_key, err))?;
    let key = MemoryKey::parse(&raw_key).map_err(|err| corrupt(&space, &raw_key, err))?;
    let value: Value = lgadk_core::serde_json::from_str(&value)
        .map_err(|source| corrupt(&space, &raw_key, PgFailure::BadJson { what: "a memory value", source }))?;
    let expires: Option<i64> = column(op, row, 5)?;
    Ok(MemoryItem::from_stored(namespace, key, value, column(op, row, 3)?, column(op, row, 4)?, expires))
}

/// A `float4[]` as text (`{1.5,-2}`) as it was stored.
fn vector(item: &MemoryItem, text: &str) -> Result<Vec<f32>> {
    let inner = text.strip_prefix('{').and_then(|rest| rest.strip_suffix('}'));
    let broken = || corrupt(&item.namespace.to_string(), item.key.as_str(), "an embedding that is not a float4 array");
    let inner = inner.ok_or_else(broken)?;
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner.split(',').map(|x| x.parse::<f32>().map_err(|_| broken())).collect()
}

fn vector_text(vector: &[f32]) -> String {
    let parts: Vec<String> = vector.iter().map(f32::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

impl PostgresMemoryStore {
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn sql(&self) -> &Statements {
        &self.inner.sql
    }
}

#[async_trait]
impl MemoryStore for PostgresMemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn put(
        &self,
        namespace: &Namespace,
        key: &MemoryKey,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<MemoryItem> {
        let span = memory_span!("put", BACKEND, namespace, key);
        async move {
            let value = check_value(value)?;
            let json = PostgresStore::json("memory_put", "a memory value", &value)?;
            let embedding = value_vector(self.inner.embedding.as_ref(), &value).await?.map(|v| vector_text(&v));
            let now = self.now_ms();
            let expires = expires_at(now, ttl);
            let space = namespace_text(namespace);
            let rows = self
                .inner
                .store
                .rows("memory_put", Effect::Repeatable, || {
                    query(&self.sql().put)
                        .bind(space.as_str())
                        .bind(key.as_str())
                        .bind(json.as_str())
                        .bind(now)
                        .bind(expires)
                        .bind(embedding.as_deref())
                })
                .await?;
            let row = rows.first().ok_or_else(|| bad("memory_put", Effect::Repeatable, "no row".to_owned()))?;
            let created: i64 = row.try_get(0).map_err(|err| bad("memory_put", Effect::Repeatable, err.to_string()))?;
            Ok(MemoryItem::from_stored(namespace.clone(), key.clone(), value, created, now, expires))
        }
        .instrument(span)
        .await
    }

    async fn get(&self, namespace: &Namespace, key: &MemoryKey) -> Result<Option<MemoryItem>> {
        let span = memory_span!("get", BACKEND, namespace, key);
        async move {
            let space = namespace_text(namespace);
            let now = self.now_ms();
            let rows = self
                .inner
                .store
                .rows("memory_get", Effect::Read, || {
                    query(&self.sql().get).bind(space.as_str()).bind(key.as_str()).bind(now)
                })
                .await?;
            rows.first().map(|row| item("memory_get", row)).transpose()
        }
        .instrument(span)
        .await
    }

    async fn delete(&self, namespace: &Namespace, key: &MemoryKey) -> Result<bool> {
        let span = memory_span!("delete", BACKEND, namespace, key);
        async move {
            let space = namespace_text(namespace);
            let now = self.now_ms();
            let rows = self
                .inner
                .store
                .rows("memory_delete", Effect::Write, || {
                    query(&self.sql().delete).bind(space.as_str()).bind(key.as_str()).bind(now)
                })
                .await?;
            let Some(row) = rows.first() else { return Ok(false) };
            let live: i64 = row.try_get(0).map_err(|err| bad("memory_delete", Effect::Write, err.to_string()))?;
            Ok(live == 1)
        }
        .instrument(span)
        .await
    }

    async fn list(&self, request: ListRequest) -> Result<ItemPage> {
        let span = memory_span!("list", BACKEND, SpanPrefix(request.prefix.as_ref()));
        async move {
            let limit = request.effective_limit();
            // Start after (prefix, "") (every key is longer), or after the cursor when it is
            // further on.
            let mut start = (request.prefix.as_ref().map(namespace_text).unwrap_or_default(), String::new());
            if let Some(after) = &request.after {
                let cursor = (namespace_text(&after.namespace), after.key.as_str().to_owned());
                if cursor > start {
                    start = cursor;
                }
            }
            let upper = request.prefix.as_ref().map(upper_bound);
            let now = self.now_ms();
            let rows = self
                .inner
                .store
                .rows("memory_list", Effect::Read, || {
                    query(&self.sql().list)
                        .bind(start.0.as_str())
                        .bind(start.1.as_str())
                        .bind(upper.as_deref())
                        .bind(now)
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                })
                .await?;
            let items = rows.iter().map(|row| item("memory_list", row)).collect::<Result<Vec<_>>>()?;
            let next = if items.len() == limit { items.last().map(ItemCursor::of) } else { None };
            Ok(ItemPage { items, next })
        }
        .instrument(span)
        .await
    }

    async fn search(&self, request: SearchRequest) -> Result<Vec<MemoryItem>> {
        let span = memory_span!("search", BACKEND, SpanPrefix(request.prefix.as_ref()));
        async move {
            request.check()?;
            let query_vector = query_vector(self.inner.embedding.as_ref(), &request).await?;
            let lower = request.prefix.as_ref().map(namespace_text).unwrap_or_default();
            let upper = request.prefix.as_ref().map(upper_bound);
            let filter = match &request.filter {
                Value::Null => None,
                filter => Some(PostgresStore::json("memory_search", "a memory filter", filter)?),
            };
            let now = self.now_ms();
            let with_vectors = query_vector.is_some();
            let rows = self
                .inner
                .store
                .rows("memory_search", Effect::Read, || {
                    query(&self.sql().search)
                        .bind(lower.as_str())
                        .bind(upper.as_deref())
                        .bind(now)
                        .bind(filter.as_deref())
                        .bind(with_vectors)
                })
                .await?;
            let mut candidates = Vec::with_capacity(rows.len());
            for row in &rows {
                let item = item("memory_search", row)?;
                let text: Option<String> = column("memory_search", row, 6)?;
                let embedding = text.map(|text| vector(&item, &text)).transpose()?;
                candidates.push(Candidate { item, embedding });
            }
            Ok(rank(candidates, &request, query_vector.as_deref()))
        }
        .instrument(span)
        .await
    }

    /// One statement reading the distinct namespaces (not the items) under the prefix.
    async fn list_namespaces(&self, request: NamespaceRequest) -> Result<Vec<Namespace>> {
        let span = memory_span!("list_namespaces", BACKEND, SpanPrefix(request.prefix.as_ref()));
        async move {
            let lower = request.prefix.as_ref().map(namespace_text).unwrap_or_default();
            let upper = request.prefix.as_ref().map(upper_bound);
            let now = self.now_ms();
            let rows = self
                .inner
                .store
                .rows("memory_namespaces", Effect::Read, || {
                    query(&self.sql().namespaces).bind(lower.as_str()).bind(upper.as_deref()).bind(now)
                })
                .await?;
            let mut found: Vec<Namespace> = Vec::new();
            for row in &rows {
                let text: String = column("memory_namespaces", row, 0)?;
                let namespace = Namespace::new(text.split('\u{1f}')).map_err(|err| corrupt(&text, "", err))?;
                let namespace = match request.max_depth {
                    Some(depth) => namespace.truncated(depth),
                    None => namespace,
                };
                if found.last() != Some(&namespace) {
                    found.push(namespace);
                }
            }
            Ok(found.into_iter().skip(request.offset).take(request.limit.clamp(1, MAX_PAGE_LIMIT)).collect())
        }
        .instrument(span)
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let span = memory_span!("purge_expired", BACKEND);
        async move {
            let now = self.now_ms();
            let mut purged = 0_u64;
            loop {
                let rows = self
                    .inner
                    .store
                    .rows("memory_purge", Effect::Write, || query(&self.sql().purge).bind(now).bind(PURGE_BATCH))
                    .await?;
                let count: i64 = match rows.first() {
                    Some(row) => row.try_get(0).map_err(|err| bad("memory_purge", Effect::Write, err.to_string()))?,
                    None => 0,
                };
                purged += u64::try_from(count).unwrap_or(0);
                if count < PURGE_BATCH {
                    return Ok(purged);
                }
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_vectors_as_stored() {
        let space = Namespace::new(["users", "a b"]).unwrap();
        assert_eq!(namespace_text(&space), "users\u{1f}a b");
        assert_eq!(upper_bound(&space), "users\u{1f}a b ");
        let values = [1.5_f32, -2.0, 0.01, 1e-7];
        let item = MemoryItem::from_stored(space, MemoryKey::parse("k").unwrap(), Value::Null, 0, 0, None);
        assert_eq!(vector(&item, &vector_text(&values)).unwrap(), values);
        assert_eq!(vector(&item, "{}").unwrap(), Vec::<f32>::new());
        assert!(matches!(vector(&item, "{1,x}"), Err(Error::CorruptMemory { .. })));
        assert!(matches!(vector(&item, "1,2"), Err(Error::CorruptMemory { .. })));
    }
}

//! The memory records, the [`MemoryStore`] and [`Embedder`] contracts.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, ModelErrorKind, Result};
use crate::json;

/// Most segments a [`Namespace`] may have.
pub const MAX_NAMESPACE_DEPTH: usize = 16;
/// Longest namespace segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 128;
/// Longest [`MemoryKey`], in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The largest page [`MemoryStore::list`], [`MemoryStore::search`] and
/// [`MemoryStore::list_namespaces`] return; larger limits are clamped to it.
pub const MAX_PAGE_LIMIT: usize = 1000;
/// The page size of a [`SearchRequest`] that does not set one.
pub const DEFAULT_SEARCH_LIMIT: usize = 10;

/// The rule shared by namespace segments and keys: `1..=max` bytes, no control characters.
fn check_text(raw: &str, max: usize, too_long: &'static str) -> std::result::Result<(), &'static str> {
    if raw.is_empty() {
        return Err("it is empty");
    }
    if raw.len() > max {
        return Err(too_long);
    }
    if raw.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    Ok(())
}

/// Where memory items live: a path of 1 to [`MAX_NAMESPACE_DEPTH`] segments, such as
/// `["users", "alice", "prefs"]`. Each segment is 1 to [`MAX_SEGMENT_LEN`] bytes of UTF-8
/// without control characters (so `/`, spaces, `{`, `}` and any letter are fine).
///
/// Namespaces are ordered segment by segment, each compared byte-wise: every namespace that
/// starts with `["a"]` sorts after `["a"]` and before `["a-"]`, the order in which stores list
/// items. Cloning is cheap (a reference count). It serializes as a JSON array of strings and
/// deserializes only when valid.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<[String]>);

impl Namespace {
    /// Validates a namespace.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`] when there are no segments or more than
    /// [`MAX_NAMESPACE_DEPTH`], or a segment is empty, longer than [`MAX_SEGMENT_LEN`] bytes or
    /// contains a control character.
    pub fn new<I, S>(segments: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for segment in segments {
            if out.len() == MAX_NAMESPACE_DEPTH {
                return Err(Error::InvalidNamespace { reason: "it has more than 16 segments" });
            }
            let segment = segment.as_ref();
            check_text(segment, MAX_SEGMENT_LEN, "a segment is longer than 128 bytes")
                .map_err(|reason| Error::InvalidNamespace { reason })?;
            out.push(segment.to_owned());
        }
        if out.is_empty() {
            return Err(Error::InvalidNamespace { reason: "it has no segments" });
        }
        Ok(Self(out.into()))
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// How many segments it has (at least 1).
    pub fn depth(&self) -> usize {
        self.0.len()
    }

    /// Whether `prefix`'s segments are this namespace's first segments (a namespace starts
    /// with itself). `["users", "al"]` is not a prefix of `["users", "alice"]`.
    pub fn starts_with(&self, prefix: &Self) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// This namespace with one more segment.
    ///
    /// # Errors
    /// [`Error::InvalidNamespace`], as for [`Namespace::new`].
    pub fn child(&self, segment: &str) -> Result<Self> {
        Self::new(self.0.iter().map(String::as_str).chain([segment]))
    }

    /// Its first `depth` segments (itself when it is not deeper). `depth` 0 counts as 1.
    #[must_use]
    pub fn truncated(&self, depth: usize) -> Self {
        if depth >= self.0.len() {
            return self.clone();
        }
        Self(self.0[..depth.max(1)].to_vec().into())
    }
}

impl fmt::Display for Namespace {
    /// The segments joined by `/` (for people: a segment may itself contain `/`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Namespace").field(&&*self.0).finish()
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let segments = Vec::<Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(segments).map_err(serde::de::Error::custom)
    }
}

/// The key of an item within its namespace: 1 to [`MAX_KEY_LEN`] bytes of UTF-8 without
/// control characters. Cloning is cheap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryKey(Arc<str>);

impl MemoryKey {
    /// Validates a key.
    ///
    /// # Errors
    /// [`Error::InvalidMemoryKey`] when it is empty, longer than [`MAX_KEY_LEN`] bytes or
    /// contains a control character.
    pub fn parse(raw: &str) -> Result<Self> {
        check_text(raw, MAX_KEY_LEN, "it is longer than 256 bytes")
            .map_err(|reason| Error::InvalidMemoryKey { reason })?;
        Ok(Self(Arc::from(raw)))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MemoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryKey({:?})", &*self.0)
    }
}

impl FromStr for MemoryKey {
    type Err = Error;
    fn from_str(raw: &str) -> Result<Self> {
        Self::parse(raw)
    }
}

impl TryFrom<&str> for MemoryKey {
    type Error = Error;
    fn try_from(raw: &str) -> Result<Self> {
        Self::parse(raw)
    }
}

impl AsRef<str> for MemoryKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for MemoryKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MemoryKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = <Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A stored item, as reads return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryItem {
    /// Where it lives.
    pub namespace: Namespace,
    /// Its key within the namespace.
    pub key: MemoryKey,
    /// The stored JSON value.
    pub value: Value,
    /// When it was first put (kept by later puts; a put after it expired starts anew).
    pub created_at: DateTime<Utc>,
    /// When it was last put.
    pub updated_at: DateTime<Utc>,
    /// When it expires, if it was put with a TTL.
    pub expires_at: Option<DateTime<Utc>>,
    /// How well it matched a search's query (see [`SearchRequest`]); `None` outside a ranked
    /// search.
    pub score: Option<f64>,
}

impl MemoryItem {
    /// An item as a store keeps it: its times as milliseconds since the Unix epoch on the
    /// store's clock, no search score. Every backend builds its items with it.
    pub fn from_stored(
        namespace: Namespace,
        key: MemoryKey,
        value: Value,
        created_ms: i64,
        updated_ms: i64,
        expires_ms: Option<i64>,
    ) -> Self {
        Self {
            namespace,
            key,
            value,
            created_at: crate::clock::from_ms(created_ms),
            updated_at: crate::clock::from_ms(updated_ms),
            expires_at: expires_ms.map(crate::clock::from_ms),
            score: None,
        }
    }
}

/// Where a [`MemoryStore::list`] page stopped: the next page starts with the item after this
/// namespace and key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemCursor {
    /// The last item's namespace.
    pub namespace: Namespace,
    /// The last item's key.
    pub key: MemoryKey,
}

impl ItemCursor {
    /// The position of `item`.
    pub fn of(item: &MemoryItem) -> Self {
        Self { namespace: item.namespace.clone(), key: item.key.clone() }
    }
}

/// What [`MemoryStore::list`] reads: live items whose namespace starts with `prefix`, in
/// (namespace, key) order, after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// Only items under this namespace prefix; `None` for every item of the store.
    pub prefix: Option<Namespace>,
    /// Start after this item (exclusive); `None` for the first page.
    pub after: Option<ItemCursor>,
    /// Most items to return: clamped to `1..=`[`MAX_PAGE_LIMIT`].
    pub limit: usize,
}

impl ListRequest {
    /// The first page of up to 100 items under `prefix`.
    pub fn under(prefix: Namespace) -> Self {
        Self { prefix: Some(prefix), after: None, limit: 100 }
    }

    /// The first page of up to 100 items of the whole store.
    pub fn everything() -> Self {
        Self { prefix: None, after: None, limit: 100 }
    }

    /// Sets the page size.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Starts after `cursor` (from [`ItemPage::next`]).
    #[must_use]
    pub fn after(mut self, cursor: ItemCursor) -> Self {
        self.after = Some(cursor);
        self
    }

    /// `limit` clamped to `1..=MAX_PAGE_LIMIT`.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE_LIMIT)
    }
}

/// One page of [`MemoryStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct ItemPage {
    /// The items, in (namespace, key) order, `score` `None`.
    pub items: Vec<MemoryItem>,
    /// Where the next page starts; `None` when this page reached the end. (A full page may
    /// still be followed by an empty one.)
    pub next: Option<ItemCursor>,
}

/// What [`MemoryStore::search`] looks for.
///
/// # Matching
/// An item matches when it is live, its namespace starts with `prefix` (any namespace when
/// `None`) and its value contains `filter` ([`matches_filter`](crate::memory::matches_filter): every field of the filter is in
/// the value, with an equal scalar, a containing object or a containing array, at any depth;
/// `{}` or `null` match every value).
///
/// # Ranking
/// - Without a query (or one without any word): the matching items in (namespace, key) order,
///   `score` `None`.
/// - With a query, on a store without an embedder, or one whose items were put without an
///   embedding: [`text_score`](crate::memory::text_score), the share of the query's distinct
///   words found among the words of the item's key and of every string in its value (object keys
///   and string values), case-insensitive. Items scoring 0 are left out.
/// - With a query, on a store built with an [`Embedder`]: the query is embedded and every
///   matching item that has an embedding is ranked by [`cosine`](crate::memory::cosine)
///   similarity to it; items stored without one are left out.
///
/// Ranked results go by score, highest first, then the most recently updated, then (namespace,
/// key); `offset` items of that order are skipped and at most `limit` returned.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Only items under this namespace prefix; `None` for the whole store.
    pub prefix: Option<Namespace>,
    /// A JSON value each matching item's value must contain (usually an object such as
    /// `{"kind": "pref"}` or `{"user": {"plan": "pro"}}`); `Value::Null` matches everything.
    pub filter: Value,
    /// Text to rank by.
    pub query: Option<String>,
    /// Items of the order to skip.
    pub offset: usize,
    /// Most items to return: clamped to `1..=`[`MAX_PAGE_LIMIT`].
    pub limit: usize,
}

impl SearchRequest {
    /// Every item under `prefix`, up to [`DEFAULT_SEARCH_LIMIT`].
    pub fn under(prefix: Namespace) -> Self {
        Self { prefix: Some(prefix), ..Self::everywhere() }
    }

    /// Every item of the store, up to [`DEFAULT_SEARCH_LIMIT`].
    pub fn everywhere() -> Self {
        Self { prefix: None, filter: Value::Null, query: None, offset: 0, limit: DEFAULT_SEARCH_LIMIT }
    }

    /// Sets the filter.
    #[must_use]
    pub fn with_filter(mut self, filter: Value) -> Self {
        self.filter = filter;
        self
    }

    /// Sets the query.
    #[must_use]
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Sets the page: skip `offset`, return at most `limit`.
    #[must_use]
    pub fn with_page(mut self, offset: usize, limit: usize) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }

    /// `limit` clamped to `1..=MAX_PAGE_LIMIT`.
    pub fn effective_limit(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE_LIMIT)
    }

    /// The query, when it has at least one word.
    pub fn effective_query(&self) -> Option<&str> {
        self.query.as_deref().filter(|query| !crate::memory::words(query).is_empty())
    }

    /// Checks the filter can be stored and compared like a value: it nests below
    /// [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH) with one level to spare.
    ///
    /// # Errors
    /// [`Error::NestingTooDeep`].
    pub fn check(&self) -> Result<()> {
        json::check_value(&self.filter, 1)
            .map_err(|_| Error::NestingTooDeep { what: "a memory filter", limit: json::MAX_JSON_DEPTH })
    }
}

/// What [`MemoryStore::list_namespaces`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRequest {
    /// Only namespaces under this prefix; `None` for all.
    pub prefix: Option<Namespace>,
    /// Cut every namespace to this many segments (then deduplicate); `None` keeps them whole.
    pub max_depth: Option<usize>,
    /// Namespaces of the order to skip.
    pub offset: usize,
    /// Most namespaces to return: clamped to `1..=`[`MAX_PAGE_LIMIT`].
    pub limit: usize,
}

impl NamespaceRequest {
    /// The first 100 namespaces under `prefix` (`None`: all), whole.
    pub fn under(prefix: Option<Namespace>) -> Self {
        Self { prefix, max_depth: None, offset: 0, limit: 100 }
    }

    /// Cuts namespaces to `depth` segments.
    #[must_use]
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = Some(depth);
        self
    }

    /// Sets the page: skip `offset`, return at most `limit`.
    #[must_use]
    pub fn with_page(mut self, offset: usize, limit: usize) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }
}

/// Checks a value can be stored and read back: it nests below
/// [`MAX_JSON_DEPTH`](crate::json::MAX_JSON_DEPTH) with one level to spare (a store may wrap it
/// in a record of its own). Every store calls it before writing; a rejected value is dropped
/// with a flat stack.
///
/// # Errors
/// [`Error::NestingTooDeep`] naming `"a memory value"`.
pub fn check_value(value: Value) -> Result<Value> {
    match json::check_value(&value, 1) {
        Ok(()) => Ok(value),
        Err(_) => {
            json::dispose(value);
            Err(Error::NestingTooDeep { what: "a memory value", limit: json::MAX_JSON_DEPTH })
        }
    }
}

/// The expiry of an item put at `now_ms` with `ttl`, in ms since the epoch (saturating).
pub fn expires_at(now_ms: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|ttl| now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
}

/// Long-term memory: JSON items under namespaces. Implement it for a backend; agents and
/// tools reach it as `Arc<dyn MemoryStore>`.
///
/// # Contract
/// - **Validation first.** Namespaces and keys are valid by construction ([`Namespace`],
///   [`MemoryKey`]). A value is checked with [`check_value`] before anything is written: one
///   that nests too deep is [`Error::NestingTooDeep`] and changes nothing.
/// - **Atomic puts.** `put` replaces the value whole. Concurrent puts of one item leave one of
///   the values, never a mix, and one `created_at`; puts of different items never lose one
///   another.
/// - **Time is the store's clock.** `created_at`, `updated_at` and expiry come from the clock
///   the store was built with, in milliseconds.
/// - **TTL.** An item put with `ttl` expires at `put time + ttl` and is live while `now <=
///   expires_at`; after that it reads as absent: `get` returns `None`, `delete` `false`, `list`
///   and `search` leave it out, and a `put` creates it anew (new `created_at`). Reads never
///   extend a TTL. Every `put` sets the expiry from its own `ttl`: a put without one makes the
///   item permanent. How soon expired items are physically removed is the backend's business
///   ([`MemoryStore::purge_expired`] removes them all).
/// - **Order.** `list` goes by (namespace, key), namespaces compared segment by segment,
///   segments and keys byte-wise; a cursor keeps its place when items are added or removed
///   before it.
/// - **Search** filters and ranks as [`SearchRequest`] says. A store built with an embedder
///   embeds each value's text ([`embedding_text`](crate::memory::embedding_text)) at `put`, in
///   the same call, and stores the vector with the item; a put whose embedding fails writes
///   nothing.
/// - **Failures** are [`Error::Backend`] with the cause as `source` and an
///   [`Outcome`](crate::Outcome); a put is idempotent, so it is safe to repeat after
///   `Outcome::Unknown`. Stored data that does not decode is [`Error::CorruptMemory`].
#[async_trait]
pub trait MemoryStore: fmt::Debug + Send + Sync + 'static {
    /// Short backend name for spans and errors: `"memory"`, `"redis"`, `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Stores `value` under `namespace` and `key`, replacing what was there, and returns the
    /// item as stored (`score` `None`). `ttl`: see the contract.
    ///
    /// # Errors
    /// `NestingTooDeep`, an embedder's error, `Backend`; nothing is written in any of them.
    async fn put(
        &self,
        namespace: &Namespace,
        key: &MemoryKey,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<MemoryItem>;

    /// The live item, or `None`.
    ///
    /// # Errors
    /// `Backend`, `CorruptMemory`.
    async fn get(&self, namespace: &Namespace, key: &MemoryKey) -> Result<Option<MemoryItem>>;

    /// Removes the item; `false` if there was no live one.
    ///
    /// # Errors
    /// `Backend`.
    async fn delete(&self, namespace: &Namespace, key: &MemoryKey) -> Result<bool>;

    /// A page of live items under a prefix, in (namespace, key) order.
    ///
    /// # Errors
    /// `Backend`, `CorruptMemory`.
    async fn list(&self, request: ListRequest) -> Result<ItemPage>;

    /// Live items that match a filter, ranked by a query (see [`SearchRequest`]).
    ///
    /// # Errors
    /// `NestingTooDeep` for a filter that does, an embedder's error, `Backend`,
    /// `CorruptMemory`.
    async fn search(&self, request: SearchRequest) -> Result<Vec<MemoryItem>>;

    /// The distinct namespaces that hold live items under a prefix, cut to `max_depth`, in
    /// order, paged by `offset` and `limit`.
    ///
    /// The default pages through [`MemoryStore::list`], so it costs in proportion to the items
    /// under the prefix; a backend with a namespace index overrides it.
    ///
    /// # Errors
    /// `Backend`, `CorruptMemory`.
    async fn list_namespaces(&self, request: NamespaceRequest) -> Result<Vec<Namespace>> {
        let limit = request.limit.clamp(1, MAX_PAGE_LIMIT);
        let mut found: Vec<Namespace> = Vec::new();
        let mut page = ListRequest { prefix: request.prefix.clone(), after: None, limit: MAX_PAGE_LIMIT };
        loop {
            let got = self.list(page.clone()).await?;
            for item in got.items {
                let namespace = match request.max_depth {
                    Some(depth) => item.namespace.truncated(depth),
                    None => item.namespace,
                };
                if found.last() != Some(&namespace) {
                    found.push(namespace);
                }
            }
            if found.len() > request.offset.saturating_add(limit) {
                break;
            }
            match got.next {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        Ok(found.into_iter().skip(request.offset).take(limit).collect())
    }

    /// Removes every expired item and returns how many.
    ///
    /// # Errors
    /// `Backend`.
    async fn purge_expired(&self) -> Result<u64>;
}

macro_rules! forward_memory_store {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: MemoryStore + ?Sized> MemoryStore for $ptr<T> {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            async fn put(
                &self,
                namespace: &Namespace,
                key: &MemoryKey,
                value: Value,
                ttl: Option<Duration>,
            ) -> Result<MemoryItem> {
                (**self).put(namespace, key, value, ttl).await
            }
            async fn get(&self, namespace: &Namespace, key: &MemoryKey) -> Result<Option<MemoryItem>> {
                (**self).get(namespace, key).await
            }
            async fn delete(&self, namespace: &Namespace, key: &MemoryKey) -> Result<bool> {
                (**self).delete(namespace, key).await
            }
            async fn list(&self, request: ListRequest) -> Result<ItemPage> {
                (**self).list(request).await
            }
            async fn search(&self, request: SearchRequest) -> Result<Vec<MemoryItem>> {
                (**self).search(request).await
            }
            async fn list_namespaces(&self, request: NamespaceRequest) -> Result<Vec<Namespace>> {
                (**self).list_namespaces(request).await
            }
            async fn purge_expired(&self) -> Result<u64> {
                (**self).purge_expired().await
            }
        }
    )+};
}

forward_memory_store!(Arc, Box);

/// Turns texts into vectors for semantic search (an embeddings model).
///
/// # Contract
/// `embed` returns one vector per text, in order, each of [`Embedder::dimensions`] numbers;
/// failures are the provider's errors ([`Error::Model`] for a model provider). Stores call it
/// through [`embed_checked`], which turns a wrong count or length into
/// [`ModelErrorKind::MalformedResponse`].
#[async_trait]
pub trait Embedder: fmt::Debug + Send + Sync + 'static {
    /// The model id, e.g. `openai/text-embedding-3-small`.
    fn id(&self) -> &str;

    /// The length of every vector it returns.
    fn dimensions(&self) -> usize;

    /// One vector per text, in order.
    ///
    /// # Errors
    /// The provider's failures, usually [`Error::Model`].
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>>;
}

macro_rules! forward_embedder {
    ($($ptr:ident),+) => {$(
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: Embedder + ?Sized> Embedder for $ptr<T> {
            fn id(&self) -> &str {
                (**self).id()
            }
            fn dimensions(&self) -> usize {
                (**self).dimensions()
            }
            async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
                (**self).embed(texts).await
            }
        }
    )+};
}

forward_embedder!(Arc, Box);

/// [`Embedder::embed`], checked: one vector per text, each of the embedder's dimensions, every
/// number finite.
///
/// # Errors
/// The embedder's own errors; [`Error::Model`] with [`ModelErrorKind::MalformedResponse`] when
/// the answer breaks the contract.
pub async fn embed_checked(embedder: &dyn Embedder, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
    let count = texts.len();
    let vectors = embedder.embed(texts).await?;
    let malformed = |what: String| Error::model(embedder.id(), ModelErrorKind::MalformedResponse, None, what);
    if vectors.len() != count {
        return Err(malformed(format!("{} vectors for {count} texts", vectors.len())));
    }
    let dimensions = embedder.dimensions();
    for vector in &vectors {
        if vector.len() != dimensions {
            return Err(malformed(format!("a vector of {} numbers; expected {dimensions}", vector.len())));
        }
        if !vector.iter().all(|x| x.is_finite()) {
            return Err(malformed("a vector with a number that is not finite".to_owned()));
        }
    }
    Ok(vectors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn namespaces_are_validated() {
        assert!(Namespace::new(["users", "alice", "prefs"]).is_ok());
        assert!(Namespace::new(["with space/and {brace}", "ünï"]).is_ok());
        let long = "x".repeat(MAX_SEGMENT_LEN + 1);
        let too_deep = vec!["a"; MAX_NAMESPACE_DEPTH + 1];
        let bad: [&[&str]; 5] = [&[], &[""], &["a", ""], &[long.as_str()], &["tab\there"]];
        for segments in bad.iter().copied().chain([too_deep.as_slice()]) {
            let err = Namespace::new(segments).unwrap_err();
            assert!(matches!(err, Error::InvalidNamespace { .. }), "{segments:?}: {err:?}");
        }
        assert!(Namespace::new(vec!["a"; MAX_NAMESPACE_DEPTH]).is_ok());
        assert!(Namespace::new([&"x".repeat(MAX_SEGMENT_LEN)]).is_ok());
        assert!(serde_json::from_value::<Namespace>(json!(["a", "\u{0}"])).is_err());
        assert!(serde_json::from_value::<Namespace>(json!([])).is_err());
        let ns: Namespace = serde_json::from_value(json!(["a", "b"])).unwrap();
        assert_eq!(serde_json::to_value(&ns).unwrap(), json!(["a", "b"]));
        assert_eq!(ns.to_string(), "a/b");
    }

    #[test]
    fn keys_are_validated() {
        assert!(MemoryKey::parse("theme: dark/light {x}").is_ok());
        for bad in ["", "new\nline", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert!(matches!(MemoryKey::parse(bad), Err(Error::InvalidMemoryKey { .. })), "{bad:?}");
        }
        assert!(serde_json::from_value::<MemoryKey>(json!("")).is_err());
    }

    #[test]
    fn namespace_order_is_segment_wise() {
        let ns = |s: &[&str]| Namespace::new(s).unwrap();
        let mut all = vec![ns(&["a-"]), ns(&["a", "b"]), ns(&["a"]), ns(&["ab"]), ns(&["a", "a", "z"])];
        all.sort();
        assert_eq!(all, vec![ns(&["a"]), ns(&["a", "a", "z"]), ns(&["a", "b"]), ns(&["a-"]), ns(&["ab"])]);
        assert!(ns(&["a", "b"]).starts_with(&ns(&["a"])));
        assert!(!ns(&["ab"]).starts_with(&ns(&["a"])));
        assert_eq!(ns(&["a", "b", "c"]).truncated(2), ns(&["a", "b"]));
        assert_eq!(ns(&["a"]).truncated(0), ns(&["a"]));
        assert_eq!(ns(&["a"]).child("b").unwrap(), ns(&["a", "b"]));
    }

    #[test]
    fn too_deep_values_are_refused() {
        let mut deep = Value::Null;
        for _ in 0..json::MAX_JSON_DEPTH - 1 {
            deep = Value::Array(vec![deep]);
        }
        assert!(matches!(check_value(deep), Err(Error::NestingTooDeep { what: "a memory value", .. })));
        assert_eq!(check_value(json!({"a": [1]})).unwrap(), json!({"a": [1]}));
    }

    #[test]
    fn expiry_saturates() {
        assert_eq!(expires_at(1_000, None), None);
        assert_eq!(expires_at(1_000, Some(Duration::from_secs(2))), Some(3_000));
        assert_eq!(expires_at(1_000, Some(Duration::MAX)), Some(i64::MAX));
    }
}

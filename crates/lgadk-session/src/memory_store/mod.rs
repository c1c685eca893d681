//! Long-term memory backends: [`InMemoryMemoryStore`] here, `RedisMemoryStore` (feature
//! `redis`) and `PostgresMemoryStore` (feature `postgres`), each a
//! [`MemoryStore`] that passes the memory conformance suite of
//! `lgadk-core`.
//!
//! Every backend works the same way around its storage:
//! - the value is checked with [`check_value`] before
//!   anything is written, and a search's filter with
//!   [`SearchRequest::check`];
//! - a store built `with_embedder` embeds the value's text
//!   ([`embedding_text`]) before it writes, and stores the
//!   vector with the item; a search with a query embeds the query once;
//! - search reads the live items under the prefix (narrowed by the filter where the backend
//!   can), then [`rank`] filters, scores, orders and pages them, so
//!   every backend ranks alike;
//! - every call runs in a `memory.<op>` debug span (`memory.put`, `memory.get`,
//!   `memory.delete`, `memory.list`, `memory.search`, `memory.purge_expired`) with the backend,
//!   and the namespace and key where there is one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::memory::{
    Candidate, EmbedFields, Embedder, ItemCursor, ItemPage, ListRequest, MemoryItem, MemoryKey, MemoryStore, Namespace,
    SearchRequest, check_value, embed_checked, embedding_text, expires_at, matches_filter, rank,
};
use lgadk_core::serde_json::Value;
use lgadk_core::{Clock, Result, SystemClock};
use tracing::Instrument;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// A `memory.<op>` debug span for `backend`, with the namespace and key when given.
macro_rules! memory_span {
    ($op:literal, $backend:expr) => {
        tracing::debug_span!(concat!("memory.", $op), backend = $backend)
    };
    ($op:literal, $backend:expr, $namespace:expr) => {
        tracing::debug_span!(concat!("memory.", $op), backend = $backend, memory.namespace = %$namespace)
    };
    ($op:literal, $backend:expr, $namespace:expr, $key:expr) => {
        tracing::debug_span!(
            concat!("memory.", $op),
            backend = $backend,
            memory.namespace = %$namespace,
            memory.key = %$key
        )
    };
}
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) use memory_span;

/// A namespace prefix for a span: the prefix, or `*` for the whole store.
pub(crate) struct SpanPrefix<'a>(pub(crate) Option<&'a Namespace>);

impl fmt::Display for SpanPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(prefix) => prefix.fmt(f),
            None => f.write_str("*"),
        }
    }
}

/// The embedder of a semantic store and what of a value it embeds.
#[derive(Debug, Clone)]
pub(crate) struct Embedding {
    pub(crate) embedder: Arc<dyn Embedder>,
    pub(crate) fields: EmbedFields,
}

impl Embedding {
    /// The vector of `value`'s text, or `None` when it has none to embed.
    pub(crate) async fn of_value(&self, value: &Value) -> Result<Option<Vec<f32>>> {
        let Some(text) = embedding_text(value, &self.fields) else { return Ok(None) };
        Ok(embed_checked(&*self.embedder, vec![text]).await?.pop())
    }

    /// The vector of a search's query, when the request ranks by one.
    pub(crate) async fn of_query(&self, request: &SearchRequest) -> Result<Option<Vec<f32>>> {
        let Some(query) = request.effective_query() else { return Ok(None) };
        Ok(embed_checked(&*self.embedder, vec![query.to_owned()]).await?.pop())
    }
}

/// The query vector of `request` on a store with `embedding` (none without one).
pub(crate) async fn query_vector(embedding: Option<&Embedding>, request: &SearchRequest) -> Result<Option<Vec<f32>>> {
    match embedding {
        Some(embedding) => embedding.of_query(request).await,
        None => Ok(None),
    }
}

/// The vector of `value` on a store with `embedding` (none without one).
pub(crate) async fn value_vector(embedding: Option<&Embedding>, value: &Value) -> Result<Option<Vec<f32>>> {
    match embedding {
        Some(embedding) => embedding.of_value(value).await,
        None => Ok(None),
    }
}

/// Long-term memory in this process's memory.
///
/// Items live in one ordered map from namespace to an ordered map of keys, under one
/// `RwLock` (never held across an `.await`: embedding happens before the lock is taken), so a
/// prefix is one contiguous range: listing costs in proportion to the page plus the expired
/// items it steps over, and search to the items under the prefix. An expiry index ordered by
/// deadline makes [`purge_expired`](MemoryStore::purge_expired) cost in proportion to what
/// expired. Expired items are left in place until purged or overwritten; reads skip them.
/// Cloning is cheap and clones share the data.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lgadk_core::Result<()> {
/// use lgadk_core::memory::{MemoryKey, MemoryStore, Namespace, SearchRequest};
/// use lgadk_core::serde_json::json;
/// use lgadk_session::InMemoryMemoryStore;
///
/// let store = InMemoryMemoryStore::new();
/// let prefs = Namespace::new(["users", "alice", "prefs"])?;
/// store.put(&prefs, &MemoryKey::parse("theme")?, json!({"kind": "pref", "value": "dark"}), None).await?;
/// let found = store.search(SearchRequest::under(Namespace::new(["users", "alice"])?).with_query("theme")).await?;
/// assert_eq!(found[0].value["value"], "dark");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InMemoryMemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    data: RwLock<Data>,
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

#[derive(Default)]
struct Data {
    spaces: BTreeMap<Namespace, BTreeMap<MemoryKey, Entry>>,
    /// `(expires_ms, namespace, key)` of every item stored with a TTL.
    expiry: BTreeSet<(i64, Namespace, MemoryKey)>,
}

#[derive(Clone)]
struct Entry {
    value: Value,
    created_ms: i64,
    updated_ms: i64,
    expires_ms: Option<i64>,
    embedding: Option<Arc<[f32]>>,
}

impl Entry {
    fn is_live(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|deadline| now_ms <= deadline)
    }

    fn item(&self, namespace: &Namespace, key: &MemoryKey) -> MemoryItem {
        MemoryItem::from_stored(
            namespace.clone(),
            key.clone(),
            self.value.clone(),
            self.created_ms,
            self.updated_ms,
            self.expires_ms,
        )
    }
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Data {
    /// The namespaces under `prefix` (all without one), in order.
    fn under<'a>(
        &'a self,
        prefix: Option<&'a Namespace>,
        from: Bound<&'a Namespace>,
    ) -> impl Iterator<Item = (&'a Namespace, &'a BTreeMap<MemoryKey, Entry>)> + 'a {
        let start = match (prefix, from) {
            (_, Bound::Included(from)) => Bound::Included(from),
            (Some(prefix), _) => Bound::Included(prefix),
            (None, _) => Bound::Unbounded,
        };
        self.spaces
            .range::<Namespace, _>((start, Bound::Unbounded))
            .take_while(move |(namespace, _)| prefix.is_none_or(|prefix| namespace.starts_with(prefix)))
    }

    /// Removes an item and its expiry entry; the namespace goes when it is left empty.
    fn remove(&mut self, namespace: &Namespace, key: &MemoryKey) -> Option<Entry> {
        let keys = self.spaces.get_mut(namespace)?;
        let entry = keys.remove(key)?;
        if keys.is_empty() {
            self.spaces.remove(namespace);
        }
        if let Some(deadline) = entry.expires_ms {
            self.expiry.remove(&(deadline, namespace.clone(), key.clone()));
        }
        Some(entry)
    }
}

impl InMemoryMemoryStore {
    /// An empty store on the system clock, without an embedder.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder to set the clock and an embedder.
    pub fn builder() -> InMemoryMemoryStoreBuilder {
        InMemoryMemoryStoreBuilder { clock: Arc::new(SystemClock), embedding: None }
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}

impl Default for InMemoryMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryMemoryStore")
            .field("embedder", &self.inner.embedding.as_ref().map(|e| e.embedder.id().to_owned()))
            .finish_non_exhaustive()
    }
}

/// Configures an [`InMemoryMemoryStore`].
#[derive(Debug)]
#[must_use]
pub struct InMemoryMemoryStoreBuilder {
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

impl InMemoryMemoryStoreBuilder {
    /// Decides timestamps and expiry with `clock` (default: the system clock).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Embeds `fields` of every value put, and the query of every search, with `embedder`:
    /// searches with a query then rank by cosine similarity.
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>, fields: EmbedFields) -> Self {
        self.embedding = Some(Embedding { embedder, fields });
        self
    }

    /// The store.
    pub fn build(self) -> InMemoryMemoryStore {
        let inner = Inner { data: RwLock::new(Data::default()), clock: self.clock, embedding: self.embedding };
        InMemoryMemoryStore { inner: Arc::new(inner) }
    }
}

const BACKEND: &str = "memory";

#[async_trait]
impl MemoryStore for InMemoryMemoryStore {
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
            let embedding = value_vector(self.inner.embedding.as_ref(), &value).await?;
            let now = self.now_ms();
            let mut data = write(&self.inner.data);
            let created_ms = match data.remove(namespace, key) {
                Some(old) if old.is_live(now) => old.created_ms,
                _ => now,
            };
            let expires_ms = expires_at(now, ttl);
            let entry = Entry { value, created_ms, updated_ms: now, expires_ms, embedding: embedding.map(Arc::from) };
            let item = entry.item(namespace, key);
            if let Some(deadline) = expires_ms {
                data.expiry.insert((deadline, namespace.clone(), key.clone()));
            }
            data.spaces.entry(namespace.clone()).or_default().insert(key.clone(), entry);
            Ok(item)
        }
        .instrument(span)
        .await
    }

    async fn get(&self, namespace: &Namespace, key: &MemoryKey) -> Result<Option<MemoryItem>> {
        let span = memory_span!("get", BACKEND, namespace, key);
        async move {
            let now = self.now_ms();
            let data = read(&self.inner.data);
            let entry = data.spaces.get(namespace).and_then(|keys| keys.get(key));
            Ok(entry.filter(|entry| entry.is_live(now)).map(|entry| entry.item(namespace, key)))
        }
        .instrument(span)
        .await
    }

    async fn delete(&self, namespace: &Namespace, key: &MemoryKey) -> Result<bool> {
        let span = memory_span!("delete", BACKEND, namespace, key);
        async move {
            let now = self.now_ms();
            let mut data = write(&self.inner.data);
            Ok(data.remove(namespace, key).is_some_and(|entry| entry.is_live(now)))
        }
        .instrument(span)
        .await
    }

    async fn list(&self, request: ListRequest) -> Result<ItemPage> {
        let span = memory_span!("list", BACKEND, SpanPrefix(request.prefix.as_ref()));
        async move {
            let now = self.now_ms();
            let limit = request.effective_limit();
            let data = read(&self.inner.data);
            let from = request.after.as_ref().map_or(Bound::Unbounded, |after| Bound::Included(&after.namespace));
            let mut items = Vec::new();
            'spaces: for (namespace, keys) in data.under(request.prefix.as_ref(), from) {
                let start = match &request.after {
                    Some(after) if after.namespace == *namespace => Bound::Excluded(&after.key),
                    _ => Bound::Unbounded,
                };
                for (key, entry) in keys.range::<MemoryKey, _>((start, Bound::Unbounded)) {
                    if !entry.is_live(now) {
                        continue;
                    }
                    items.push(entry.item(namespace, key));
                    if items.len() == limit {
                        break 'spaces;
                    }
                }
            }
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
            let now = self.now_ms();
            let candidates: Vec<Candidate> = {
                let data = read(&self.inner.data);
                data.under(request.prefix.as_ref(), Bound::Unbounded)
                    .flat_map(|(namespace, keys)| keys.iter().map(move |(key, entry)| (namespace, key, entry)))
                    .filter(|(_, _, entry)| entry.is_live(now) && matches_filter(&entry.value, &request.filter))
                    .map(|(namespace, key, entry)| Candidate {
                        item: entry.item(namespace, key),
                        embedding: entry.embedding.as_deref().map(<[f32]>::to_vec),
                    })
                    .collect()
            };
            Ok(rank(candidates, &request, query_vector.as_deref()))
        }
        .instrument(span)
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        let span = memory_span!("purge_expired", BACKEND);
        async move {
            let now = self.now_ms();
            let mut data = write(&self.inner.data);
            let mut purged = 0;
            while let Some((deadline, namespace, key)) = data.expiry.first().cloned() {
                if deadline >= now {
                    break;
                }
                data.remove(&namespace, &key);
                purged += 1;
            }
            Ok(purged)
        }
        .instrument(span)
        .await
    }
}

//! [`RedisMemoryStore`]: long-term memory in Redis, on the connection of a [`RedisStore`].
//!
//! # Key layout
//! With `P` the store's prefix, four keys hold the whole memory store, all with the hash tag
//! `{P}` so they sit in one cluster slot and every script may touch all of them:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:mem:{P}:i` | sorted set, every score 0 | one member per item: its namespace's segments joined by `\x1f`, then `\x1e`, then its key |
//! | `P:mem:{P}:r` | hash | member → record: `created_ms,updated_ms,expires_ms,` then the value as JSON (`expires_ms` empty without a TTL) |
//! | `P:mem:{P}:e` | hash | member → embedding, little-endian `f32`s (stores built with an embedder) |
//! | `P:mem:{P}:x` | sorted set | member → expiry (ms), for items put with a TTL |
//!
//! Namespace segments and keys never contain control characters, and `\x1e` < `\x1f` < every
//! other character, so the byte order of members is the contract's (namespace, key) order and
//! a namespace prefix is one lexicographic range: `ZRANGEBYLEX` from
//! `prefix\x1e` (its own items) to just before `prefix\x20` (the end of its descendants).
//! Listing therefore costs in proportion to the page (plus the expired items it steps over),
//! never to the store's size.
//!
//! # Expiry
//! Expiry follows the store's clock, which every script receives: an item is live while
//! `now <= expires_ms`, and reads leave expired ones out. Each `put` also removes up to 16
//! items whose time has passed (in the same script), so storage stays near the live set while
//! anything writes; [`purge_expired`](MemoryStore::purge_expired) removes the rest, 256 per
//! call, in proportion to what expired.
//!
//! # Round trips
//! | operation | calls |
//! |---|---|
//! | `put` | 1 EVALSHA (after the embedding call, with an embedder) |
//! | `get` | 1 HGET |
//! | `delete` | 1 EVALSHA |
//! | `list` | 1 EVALSHA (it reads further inside the script when expired items leave the page short) |
//! | `search` | 1 EVALSHA returning every live item under the prefix (after embedding the query); filter and ranking run here, through [`rank`] |
//! | `purge_expired` | 1 EVALSHA per 256 expired items |
//!
//! The memory scripts are not among those a connection loads when it opens: the first call of
//! each on a server (or after a restart or `SCRIPT FLUSH`) meets NOSCRIPT and loads it (two
//! more round trips, once). The test `memory_store_redis` watches the commands with MONITOR.
//!
//! Search costs in proportion to the items under its prefix: scope it (a user's namespace),
//! or use PostgreSQL, which filters in SQL, for large shared namespaces.
//!
//! # Cluster
//! On a Redis Cluster the four keys share one slot, so the memory store lives on one master
//! (with its replicas): every operation stays one atomic script, at the cost of not spreading
//! over the cluster. Stores with different prefixes (one per tenant, say) land in different
//! slots.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use lgadk_core::memory::{
    Candidate, EmbedFields, Embedder, ItemCursor, ItemPage, ListRequest, MemoryItem, MemoryKey, MemoryStore, Namespace,
    SearchRequest, check_value, expires_at, rank,
};
use lgadk_core::serde_json::{self, Value};
use lgadk_core::{Clock, Error, Result};
use redis::Script;
use tracing::Instrument;

use super::{Embedding, SpanPrefix, memory_span, query_vector, value_vector};
use crate::RedisStore;
use crate::redis::{Caller, Effect, RedisFailure};

const BACKEND: &str = "redis";
/// Separates a member's namespace segments.
const SEGMENT: char = '\u{1f}';
/// Ends a member's namespace, before its key.
const END: char = '\u{1e}';
/// How many expired items a `put` removes on its way.
const PUT_SWEEP: usize = 16;
/// How many expired items one purge call removes.
const PURGE_BATCH: usize = 256;

/// Lua: reads the `created,updated,expires,` header of a record.
const HEADER: &str = r"
local function expiry(record)
  local x = string.match(record, '^%-?%d+,%-?%d+,(%-?%d*),')
  if x == nil or x == '' then return nil end
  return tonumber(x)
end
local function live(record, now)
  local x = expiry(record)
  return x == nil or now <= x
end
local function remove(keys, member)
  redis.call('ZREM', keys[1], member)
  redis.call('HDEL', keys[2], member)
  redis.call('HDEL', keys[3], member)
  redis.call('ZREM', keys[4], member)
end
";

macro_rules! script {
    ($name:ident, $body:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{HEADER}{}", $body)));
    };
}

// KEYS: index, records, embeddings, expiry. ARGV: member, now, expires ('' for none), value
// JSON, embedding ('' for none), sweep limit. Returns the item's created_ms.
script!(
    PUT,
    r"
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[6]))
for _, member in ipairs(due) do remove(KEYS, member) end
local created = ARGV[2]
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old and live(old, now) then created = string.match(old, '^(%-?%d+),') or ARGV[2] end
redis.call('HSET', KEYS[2], ARGV[1], created .. ',' .. ARGV[2] .. ',' .. ARGV[3] .. ',' .. ARGV[4])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
if ARGV[3] == '' then redis.call('ZREM', KEYS[4], ARGV[1]) else redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1]) end
if ARGV[5] == '' then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], ARGV[1], ARGV[5]) end
return {tonumber(created)}
"
);

// KEYS: as PUT. ARGV: member, now. Returns 1 when a live item was removed.
script!(
    DELETE,
    r"
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return {0} end
remove(KEYS, ARGV[1])
if live(old, tonumber(ARGV[2])) then return {1} end
return {0}
"
);

// KEYS: index, records. ARGV: min, max, limit, now. Returns member, record pairs of up to
// `limit` live items in order.
script!(
    LIST,
    r"
local limit, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local min, out, found = ARGV[1], {}, 0
while found < limit do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], min, ARGV[2], 'LIMIT', 0, limit - found)
  if #members == 0 then break end
  local records = redis.call('HMGET', KEYS[2], unpack(members))
  for i, member in ipairs(members) do
    local record = records[i]
    if record and live(record, now) then
      out[#out + 1] = member
      out[#out + 1] = record
      found = found + 1
    end
  end
  min = '(' .. members[#members]
end
return out
"
);

// KEYS: index, records, embeddings. ARGV: min, max, now, with embeddings ('1' or '0'). Returns
// member, record, embedding (false when none or not asked for) triples of every live item.
script!(
    SEARCH,
    r"
local now = tonumber(ARGV[3])
local out, min = {}, ARGV[1]
while true do
  local members = redis.call('ZRANGEBYLEX', KEYS[1], min, ARGV[2], 'LIMIT', 0, 512)
  if #members == 0 then break end
  local records = redis.call('HMGET', KEYS[2], unpack(members))
  local vectors = {}
  if ARGV[4] == '1' then vectors = redis.call('HMGET', KEYS[3], unpack(members)) end
  for i, member in ipairs(members) do
    local record = records[i]
    if record and live(record, now) then
      out[#out + 1] = member
      out[#out + 1] = record
      out[#out + 1] = vectors[i] or false
    end
  end
  min = '(' .. members[#members]
end
return out
"
);

// KEYS: as PUT. ARGV: now, batch. Removes up to `batch` items whose expiry passed; returns
// how many.
script!(
    PURGE,
    r"
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do remove(KEYS, member) end
return {#due}
"
);

/// Long-term memory in Redis, sharing the connection, prefix and clock of a [`RedisStore`]
/// (see the [module docs](self) for the key layout and round trips). Cloning is cheap.
///
/// ```no_run
/// # async fn run() -> lgadk_core::Result<()> {
/// use lgadk_core::memory::{MemoryKey, MemoryStore, Namespace};
/// use lgadk_core::serde_json::json;
/// use lgadk_session::RedisStore;
/// use lgadk_session::memory_store::redis::RedisMemoryStore;
///
/// let sessions = RedisStore::builder("redis://127.0.0.1:6390").connect().await?;
/// let memory = RedisMemoryStore::on(&sessions).build();
/// let prefs = Namespace::new(["users", "alice", "prefs"])?;
/// memory.put(&prefs, &MemoryKey::parse("theme")?, json!({"value": "dark"}), None).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisMemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    caller: Caller,
    keys: [String; 4],
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

impl fmt::Debug for RedisMemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMemoryStore")
            .field("index", &self.inner.keys[0])
            .field("embedder", &self.inner.embedding.as_ref().map(|e| e.embedder.id().to_owned()))
            .finish_non_exhaustive()
    }
}

/// Configures a [`RedisMemoryStore`].
#[must_use]
pub struct RedisMemoryStoreBuilder {
    caller: Caller,
    prefix: String,
    clock: Arc<dyn Clock>,
    embedding: Option<Embedding>,
}

impl fmt::Debug for RedisMemoryStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisMemoryStoreBuilder").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisMemoryStore {
    /// A builder for a memory store on `store`'s connection, with its prefix and clock.
    pub fn on(store: &RedisStore) -> RedisMemoryStoreBuilder {
        let (caller, prefix, clock) = store.shared_parts();
        RedisMemoryStoreBuilder { caller, prefix, clock, embedding: None }
    }
}

impl RedisMemoryStoreBuilder {
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
    pub fn build(self) -> RedisMemoryStore {
        let p = &self.prefix;
        let keys = [
            format!("{p}:mem:{{{p}}}:i"),
            format!("{p}:mem:{{{p}}}:r"),
            format!("{p}:mem:{{{p}}}:e"),
            format!("{p}:mem:{{{p}}}:x"),
        ];
        let inner = Inner { caller: self.caller, keys, clock: self.clock, embedding: self.embedding };
        RedisMemoryStore { inner: Arc::new(inner) }
    }
}

/// An item's member in the index: namespace segments joined by `\x1f`, `\x1e`, the key.
fn member(namespace: &Namespace, key: &MemoryKey) -> String {
    let mut out = namespace_text(namespace);
    out.push(END);
    out.push_str(key.as_str());
    out
}

fn namespace_text(namespace: &Namespace) -> String {
    let mut out = String::new();
    for (i, segment) in namespace.segments().iter().enumerate() {
        if i > 0 {
            out.push(SEGMENT);
        }
        out.push_str(segment);
    }
    out
}

/// The ZRANGEBYLEX bounds of everything under `prefix` (the whole index without one), after
/// `after` when given.
fn range(prefix: Option<&Namespace>, after: Option<&ItemCursor>) -> (String, String) {
    let (mut min, max) = match prefix {
        Some(prefix) => {
            let text = namespace_text(prefix);
            (format!("[{text}{END}"), format!("({text}\u{20}"))
        }
        None => ("-".to_owned(), "+".to_owned()),
    };
    if let Some(after) = after {
        let after = format!("({}", member(&after.namespace, &after.key));
        // Both start with `[` or `(` (or are `-`), then compare as members.
        if min == "-" || after[1..] >= min[1..] {
            min = after;
        }
    }
    (min, max)
}

fn corrupt(member: &str, detail: impl Into<lgadk_core::BoxError>) -> Error {
    let (namespace, key) = member.split_once(END).unwrap_or((member, ""));
    Error::CorruptMemory { namespace: namespace.replace(SEGMENT, "/"), key: key.to_owned(), source: detail.into() }
}

/// Decodes a member and its record into an item.
fn decode(member: &str, record: &[u8]) -> Result<MemoryItem> {
    let (space, key) = member.split_once(END).ok_or_else(|| corrupt(member, "member without a key"))?;
    let namespace = Namespace::new(space.split(SEGMENT)).map_err(|err| corrupt(member, err))?;
    let key = MemoryKey::parse(key).map_err(|err| corrupt(member, err))?;
    let mut parts = record.splitn(4, |b| *b == b',');
    let mut number = |what: &'static str| -> Result<Option<i64>> {
        let raw = parts.next().ok_or_else(|| corrupt(member, what))?;
        if raw.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(raw).map_err(|err| corrupt(member, err))?;
        text.parse::<i64>().map(Some).map_err(|err| corrupt(member, err))
    };
    let created = number("no created time")?.ok_or_else(|| corrupt(member, "no created time"))?;
    let updated = number("no updated time")?.ok_or_else(|| corrupt(member, "no updated time"))?;
    let expires = number("no expiry")?;
    let json = parts.next().ok_or_else(|| corrupt(member, "no value"))?;
    let value: Value = serde_json::from_slice(json).map_err(|err| corrupt(member, err))?;
    Ok(MemoryItem::from_stored(namespace, key, value, created, updated, expires))
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_of(member: &str, bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(corrupt(member, "an embedding whose length is not a multiple of 4 bytes"));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// The bytes of a reply element (`None` for nil or `false`).
fn bytes(value: &redis::Value) -> Option<&[u8]> {
    match value {
        redis::Value::BulkString(bytes) => Some(bytes),
        redis::Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn text(op: &'static str, value: &redis::Value) -> Result<String> {
    let bad = || Error::backend(BACKEND, op, RedisFailure::BadReply { script: op, detail: "expected a string" });
    let raw = bytes(value).ok_or_else(bad)?;
    String::from_utf8(raw.to_vec()).map_err(|_| bad())
}

impl RedisMemoryStore {
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn all_keys(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        for key in &self.inner.keys {
            invocation.key(key);
        }
    }

    async fn purge_batch(&self, now: i64) -> Result<usize> {
        let mut invocation = PURGE.prepare_invoke();
        self.all_keys(&mut invocation);
        invocation.arg(now).arg(PURGE_BATCH);
        let reply = self.run_int("purge_expired", Effect::Write, &invocation).await?;
        usize::try_from(reply).map_err(|_| {
            let failure = RedisFailure::BadReply { script: "purge_expired", detail: "a negative count" };
            Error::backend_unknown(BACKEND, "purge_expired", failure)
        })
    }

    async fn run(
        &self,
        op: &'static str,
        effect: Effect,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Vec<redis::Value>> {
        self.inner.caller.script(op, effect, invocation).await
    }

    /// The one integer a writing script answers with.
    async fn run_int(&self, op: &'static str, effect: Effect, invocation: &redis::ScriptInvocation<'_>) -> Result<i64> {
        match self.run(op, effect, invocation).await?.as_slice() {
            [redis::Value::Int(n)] => Ok(*n),
            _ => Err(Error::backend_unknown(
                BACKEND,
                op,
                RedisFailure::BadReply { script: op, detail: "expected one integer" },
            )),
        }
    }
}

#[async_trait]
impl MemoryStore for RedisMemoryStore {
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
            let json = lgadk_core::json::to_string(&value)
                .map_err(|err| err.into_error("a memory value", |err| Error::backend(BACKEND, "put", err)))?;
            let embedding = value_vector(self.inner.embedding.as_ref(), &value).await?;
            let now = self.now_ms();
            let expires = expires_at(now, ttl);
            let mut invocation = PUT.prepare_invoke();
            self.all_keys(&mut invocation);
            invocation
                .arg(member(namespace, key))
                .arg(now)
                .arg(expires.map(|x| x.to_string()).unwrap_or_default())
                .arg(json)
                .arg(embedding.as_deref().map(vector_bytes).unwrap_or_default())
                .arg(PUT_SWEEP);
            let created = self.run_int("put", Effect::Repeatable, &invocation).await?;
            Ok(MemoryItem::from_stored(namespace.clone(), key.clone(), value, created, now, expires))
        }
        .instrument(span)
        .await
    }

    async fn get(&self, namespace: &Namespace, key: &MemoryKey) -> Result<Option<MemoryItem>> {
        let span = memory_span!("get", BACKEND, namespace, key);
        async move {
            let member = member(namespace, key);
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&self.inner.keys[1]).arg(&member);
            let record: Option<Vec<u8>> = self.inner.caller.command("get", Effect::Read, &cmd).await?;
            let Some(record) = record else { return Ok(None) };
            let item = decode(&member, &record)?;
            let now = self.now_ms();
            Ok(item.expires_at.is_none_or(|deadline| now <= deadline.timestamp_millis()).then_some(item))
        }
        .instrument(span)
        .await
    }

    async fn delete(&self, namespace: &Namespace, key: &MemoryKey) -> Result<bool> {
        let span = memory_span!("delete", BACKEND, namespace, key);
        async move {
            let mut invocation = DELETE.prepare_invoke();
            self.all_keys(&mut invocation);
            invocation.arg(member(namespace, key)).arg(self.now_ms());
            let removed = self.run_int("delete", Effect::Write, &invocation).await?;
            Ok(removed == 1)
        }
        .instrument(span)
        .await
    }

    async fn list(&self, request: ListRequest) -> Result<ItemPage> {
        let span = memory_span!("list", BACKEND, SpanPrefix(request.prefix.as_ref()));
        async move {
            let limit = request.effective_limit();
            let (min, max) = range(request.prefix.as_ref(), request.after.as_ref());
            let mut invocation = LIST.prepare_invoke();
            invocation
                .key(&self.inner.keys[0])
                .key(&self.inner.keys[1])
                .arg(min)
                .arg(max)
                .arg(limit)
                .arg(self.now_ms());
            let reply = self.run("list", Effect::Read, &invocation).await?;
            let mut items = Vec::with_capacity(reply.len() / 2);
            for pair in reply.chunks(2) {
                let [member, record] = pair else { break };
                let member = text("list", member)?;
                let record = bytes(record).ok_or_else(|| corrupt(&member, "no record"))?;
                items.push(decode(&member, record)?);
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
            let (min, max) = range(request.prefix.as_ref(), None);
            let mut invocation = SEARCH.prepare_invoke();
            invocation
                .key(&self.inner.keys[0])
                .key(&self.inner.keys[1])
                .key(&self.inner.keys[2])
                .arg(min)
                .arg(max)
                .arg(self.now_ms())
                .arg(if query_vector.is_some() { "1" } else { "0" });
            let reply = self.run("search", Effect::Read, &invocation).await?;
            let mut candidates = Vec::with_capacity(reply.len() / 3);
            for triple in reply.chunks(3) {
                let [member, record, vector] = triple else { break };
                let member = text("search", member)?;
                let record = bytes(record).ok_or_else(|| corrupt(&member, "no record"))?;
                let item = decode(&member, record)?;
                let embedding = bytes(vector).map(|raw| vector_of(&member, raw)).transpose()?;
                candidates.push(Candidate { item, embedding });
            }
            Ok(rank(candidates, &request, query_vector.as_deref()))
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
                let batch = self.purge_batch(now).await?;
                purged += batch as u64;
                if batch < PURGE_BATCH {
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

    fn ns(segments: &[&str]) -> Namespace {
        Namespace::new(segments).unwrap()
    }

    #[test]
    fn member_order_is_the_contract_order() {
        let key = MemoryKey::parse("k").unwrap();
        let mut spaces = [ns(&["a-"]), ns(&["a", "b"]), ns(&["a"]), ns(&["ab"]), ns(&["a", "a", "z"])];
        let mut members: Vec<String> = spaces.iter().map(|space| member(space, &key)).collect();
        spaces.sort();
        members.sort();
        assert_eq!(members, spaces.iter().map(|space| member(space, &key)).collect::<Vec<_>>());
        let (min, max) = range(Some(&ns(&["a"])), None);
        assert_eq!((min.as_str(), max.as_str()), ("[a\u{1e}", "(a\u{20}"));
    }

    #[test]
    fn records_decode_and_bad_ones_are_corrupt() {
        let item = decode("u\u{1f}a\u{1e}k", br#"5,6,,{"x":1}"#).unwrap();
        assert_eq!(
            (item.namespace, item.key.as_str(), item.value),
            (ns(&["u", "a"]), "k", serde_json::json!({"x": 1}))
        );
        assert_eq!(item.expires_at, None);
        assert_eq!(decode("u\u{1e}k", b"5,6,9,1").unwrap().expires_at.map(|t| t.timestamp_millis()), Some(9));
        for (member, record) in
            [("u\u{1e}k", &b"5,6,"[..]), ("u\u{1e}k", b"x,6,,1"), ("u", b"5,6,,1"), ("u\u{1e}k", b"5,6,,{")]
        {
            assert!(matches!(decode(member, record), Err(Error::CorruptMemory { .. })), "{member:?} {record:?}");
        }
        assert_eq!(vector_of("m", &vector_bytes(&[1.5, -2.0])).unwrap(), [1.5, -2.0]);
        assert!(vector_of("m", &[0, 1, 2]).is_err());
    }
}

//! The conformance suite every [`MemoryStore`] backend runs (feature `testing`; not
//! semver-stable).
//!
//! Each scenario is an async function taking a fresh [`MemoryFixture`]. A backend's test file
//! writes one fixture function and expands the whole suite with
//! [`memory_store_conformance!`](crate::memory_store_conformance), one named test per scenario;
//! a unit test fails when a scenario is missing from the macro's list.
//!
//! In a backend crate's `tests/`: `async fn fixture() -> Option<MemoryFixture> { … }` then
//! `lgadk_core::memory_store_conformance!(fixture);`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{
    Embedder, ItemCursor, ListRequest, MemoryItem, MemoryKey, MemoryStore, Namespace, NamespaceRequest, SearchRequest,
};
use crate::json::MAX_JSON_DEPTH;
use crate::{Clock, Error, ManualClock, ModelErrorKind, Result};

/// A fresh backend for one scenario.
pub struct MemoryFixture {
    /// The store under test, empty, without an embedder.
    pub store: Arc<dyn MemoryStore>,
    /// The same backend built with [`MemoryFixture::embedder`] (embedding whole values), empty.
    /// It may share storage with `store`; scenarios use one or the other.
    pub semantic: Arc<dyn MemoryStore>,
    /// The embedder `semantic` was built with.
    pub embedder: TestEmbedder,
    /// The clock both stores were built with: expiry is tested by advancing it.
    pub clock: ManualClock,
    /// Whatever must live as long as the stores (a server guard); dropped when the test ends.
    pub keep_alive: Box<dyn Any + Send + Sync>,
}

impl MemoryFixture {
    /// A fixture on `store` and `semantic` (the same backend built with `embedder`), both built
    /// with `clock`.
    pub fn new<A: MemoryStore, B: MemoryStore>(
        store: Arc<A>,
        semantic: Arc<B>,
        embedder: TestEmbedder,
        clock: ManualClock,
    ) -> Self {
        Self { store, semantic, embedder, clock, keep_alive: Box::new(()) }
    }

    /// Keeps `guard` (a server) alive as long as the fixture.
    #[must_use]
    pub fn with_keep_alive(mut self, guard: impl Any + Send + Sync) -> Self {
        self.keep_alive = Box::new(guard);
        self
    }
}

impl std::fmt::Debug for MemoryFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFixture").field("store", &self.store).finish_non_exhaustive()
    }
}

/// The words [`TestEmbedder`] knows, by topic: a text's vector counts its words of each topic.
const TOPICS: [&[&str]; 4] = [
    &["food", "pizza", "pasta", "sushi", "basil", "dinner", "cheese", "tomato", "cook"],
    &["sport", "tennis", "football", "running", "match", "goal", "racket"],
    &["music", "jazz", "guitar", "piano", "concert", "song"],
    &["weather", "rain", "sunny", "snow", "forecast", "umbrella"],
];

/// A deterministic embedder for tests: a text's vector counts its words in each of four
/// topics (food, sport, music, weather), plus a small constant fifth component so no vector is
/// zero. "pasta" is then closer to "pizza with basil" than to "tennis", although the texts
/// share no word. Clones share their call counter and failure switch.
#[derive(Debug, Clone, Default)]
pub struct TestEmbedder {
    calls: Arc<AtomicUsize>,
    texts: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
}

impl TestEmbedder {
    /// A new embedder.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `embed` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many texts it embedded.
    pub fn texts(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }

    /// Makes every later call fail (`true`) or succeed again (`false`).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// The vector of `text`.
    pub fn vector(text: &str) -> Vec<f32> {
        let mut vector = vec![0.0_f32; TOPICS.len() + 1];
        for word in super::words(text) {
            if let Some(topic) = TOPICS.iter().position(|topic| topic.contains(&word.as_str())) {
                vector[topic] += 1.0;
            }
        }
        vector[TOPICS.len()] = 0.01;
        vector
    }
}

#[async_trait]
impl Embedder for TestEmbedder {
    fn id(&self) -> &str {
        "test/topics"
    }

    fn dimensions(&self) -> usize {
        TOPICS.len() + 1
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::model(self.id(), ModelErrorKind::ServerError, Some(500), "test embedder told to fail"));
        }
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|text| Self::vector(text)).collect())
    }
}

/// Expands the memory conformance suite into one `#[tokio::test]` per scenario.
///
/// `$fixture` is an `async fn() -> Option<MemoryFixture>`; `None` means the backend's service
/// is unavailable here, and the fixture itself must have said so loudly (and failed under CI).
/// The calling crate needs `tokio` (macros, multi-thread runtime) as a dev-dependency.
///
/// Every module-level `pub async fn` of this module is a scenario and must be in the macro's
/// list; a unit test compares the two.
#[macro_export]
macro_rules! memory_store_conformance {
    ($fixture:path) => {
        $crate::__memory_scenarios!(tests $fixture);
    };
}

/// The one list of memory scenarios: `tests <fixture>` expands the tests, `names` the names.
#[doc(hidden)]
#[macro_export]
macro_rules! __memory_scenarios {
    ($($mode:tt)+) => {
        $crate::__memory_expand! { $($mode)+;
            put_then_get_round_trips,
            overwrite_keeps_created_at,
            delete_removes_the_item,
            namespaces_are_isolated,
            list_by_prefix_pages_in_order,
            list_namespaces_cuts_to_depth,
            search_filters_on_json_fields,
            search_text_query_ranks_by_words,
            search_pages_with_offset,
            ttl_expiry_follows_the_store_clock,
            put_refreshes_the_ttl,
            purge_expired_counts_what_expired,
            invalid_input_writes_nothing,
            semantic_search_ranks_by_cosine,
            failed_embedding_writes_nothing,
            concurrent_puts_keep_every_item,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __memory_expand {
    (tests $fixture:path; $($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(fixture) = $fixture().await else { return };
            $crate::memory::testing::$name(fixture).await
        }
    )+};
    (names; $($name:ident),+ $(,)?) => {
        [$(stringify!($name)),+]
    };
}

fn ns(segments: &[&str]) -> Namespace {
    Namespace::new(segments).unwrap()
}

fn key(raw: &str) -> MemoryKey {
    MemoryKey::parse(raw).unwrap()
}

fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

fn names(items: &[MemoryItem]) -> Vec<String> {
    items.iter().map(|item| format!("{}:{}", item.namespace, item.key)).collect()
}

async fn list_all(store: &dyn MemoryStore, prefix: Option<Namespace>, page_size: usize) -> Vec<MemoryItem> {
    let mut all = Vec::new();
    let mut request = ListRequest { prefix, after: None, limit: page_size };
    loop {
        let page = store.list(request.clone()).await.unwrap();
        assert!(page.items.len() <= page_size, "a page holds at most its limit");
        all.extend(page.items);
        match page.next {
            Some(cursor) => request.after = Some(cursor),
            None => return all,
        }
    }
}

/// A put item reads back with its value, namespace and key exactly, whatever characters they
/// hold, and the store's clock as both times.
pub async fn put_then_get_round_trips(fx: MemoryFixture) {
    let now = fx.clock.now();
    let odd = ns(&["users", "a/b {c}", "ünï côdé", "x:y*z"]);
    let values = [
        ("k: v/é {x}", json!({"theme": "dark", "nested": {"list": [1, 2.5, null, true]}})),
        ("string", json!("just text")),
        ("number", json!(42)),
        ("null", Value::Null),
        ("deep", nested(MAX_JSON_DEPTH - 2)),
    ];
    for (raw, value) in &values {
        let put = fx.store.put(&odd, &key(raw), value.clone(), None).await.unwrap();
        assert_eq!((&put.namespace, put.key.as_str(), &put.value), (&odd, *raw, value));
        assert_eq!((put.created_at, put.updated_at, put.expires_at, put.score), (now, now, None, None));
        let got = fx.store.get(&odd, &key(raw)).await.unwrap().expect("a put item is readable");
        assert_eq!(got, put);
    }
    assert_eq!(fx.store.get(&odd, &key("absent")).await.unwrap(), None);
    assert_eq!(fx.store.get(&ns(&["users"]), &key("string")).await.unwrap(), None, "not found under a prefix");
}

/// A second put replaces the value whole and moves `updated_at`, keeping `created_at`.
pub async fn overwrite_keeps_created_at(fx: MemoryFixture) {
    let (prefs, theme) = (ns(&["users", "alice", "prefs"]), key("theme"));
    let first = fx.store.put(&prefs, &theme, json!({"v": "dark", "old": true}), None).await.unwrap();
    fx.clock.advance(Duration::from_secs(5));
    let second = fx.store.put(&prefs, &theme, json!({"v": "light"}), None).await.unwrap();
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.updated_at, fx.clock.now());
    assert!(second.updated_at > first.updated_at);
    let got = fx.store.get(&prefs, &theme).await.unwrap().unwrap();
    assert_eq!(got.value, json!({"v": "light"}), "replaced whole, not merged");
    assert_eq!((got.created_at, got.updated_at), (first.created_at, second.updated_at));
    assert_eq!(list_all(&*fx.store, Some(prefs), 10).await.len(), 1);
}

/// Delete removes the item (only it) and says whether there was one.
pub async fn delete_removes_the_item(fx: MemoryFixture) {
    let (space, a, b) = (ns(&["notes"]), key("a"), key("b"));
    fx.store.put(&space, &a, json!(1), None).await.unwrap();
    fx.store.put(&space, &b, json!(2), None).await.unwrap();
    assert!(fx.store.delete(&space, &a).await.unwrap());
    assert_eq!(fx.store.get(&space, &a).await.unwrap(), None);
    assert!(!fx.store.delete(&space, &a).await.unwrap(), "second delete");
    assert!(!fx.store.delete(&ns(&["elsewhere"]), &b).await.unwrap());
    assert_eq!(fx.store.get(&space, &b).await.unwrap().map(|item| item.value), Some(json!(2)));
    assert_eq!(names(&list_all(&*fx.store, None, 10).await), ["notes:b"]);
    assert!(fx.store.delete(&space, &b).await.unwrap());
    assert!(list_all(&*fx.store, None, 10).await.is_empty());
    assert!(fx.store.list_namespaces(NamespaceRequest::under(None)).await.unwrap().is_empty(), "no empty namespace");
}

/// One key in different namespaces names different items, and a prefix is a whole segment:
/// `["a"]` covers `["a", "b"]` but not `["ab"]`.
pub async fn namespaces_are_isolated(fx: MemoryFixture) {
    let k = key("k");
    for (i, space) in [ns(&["a"]), ns(&["a", "b"]), ns(&["ab"]), ns(&["a-"]), ns(&["b", "a"])].iter().enumerate() {
        fx.store.put(space, &k, json!(i), None).await.unwrap();
    }
    assert_eq!(fx.store.get(&ns(&["a", "b"]), &k).await.unwrap().unwrap().value, json!(1));
    assert_eq!(fx.store.get(&ns(&["ab"]), &k).await.unwrap().unwrap().value, json!(2));
    assert_eq!(names(&list_all(&*fx.store, Some(ns(&["a"])), 10).await), ["a:k", "a/b:k"]);
    assert_eq!(names(&list_all(&*fx.store, Some(ns(&["a", "b"])), 10).await), ["a/b:k"]);
    assert!(list_all(&*fx.store, Some(ns(&["a", "b", "c"])), 10).await.is_empty());
    let found = fx.store.search(SearchRequest::under(ns(&["a"])).with_page(0, 100)).await.unwrap();
    assert_eq!(names(&found), ["a:k", "a/b:k"]);
    assert!(fx.store.delete(&ns(&["a"]), &k).await.unwrap());
    assert_eq!(fx.store.get(&ns(&["a", "b"]), &k).await.unwrap().unwrap().value, json!(1), "a child is untouched");
}

/// `list` walks a prefix in (namespace, key) order, page by page, and a cursor keeps its place
/// when items are added before it or the item it names is deleted.
pub async fn list_by_prefix_pages_in_order(fx: MemoryFixture) {
    let puts = [
        (&["p", "b"][..], "z"),
        (&["p"][..], "k2"),
        (&["p", "a", "x"][..], "k"),
        (&["p", "a"][..], "k1"),
        (&["p", "a"][..], "k0"),
        (&["pa"][..], "k"),
        (&["o"][..], "k"),
        (&["p", "b"][..], "a"),
    ];
    for (space, raw) in puts {
        fx.store.put(&ns(space), &key(raw), json!({"at": raw}), None).await.unwrap();
    }
    let expected = ["p:k2", "p/a:k0", "p/a:k1", "p/a/x:k", "p/b:a", "p/b:z"];
    for size in [1, 2, 4, 100] {
        assert_eq!(names(&list_all(&*fx.store, Some(ns(&["p"])), size).await), expected, "pages of {size}");
    }
    let everything = names(&list_all(&*fx.store, None, 3).await);
    assert_eq!(everything, ["o:k", "p:k2", "p/a:k0", "p/a:k1", "p/a/x:k", "p/b:a", "p/b:z", "pa:k"]);

    let first = fx.store.list(ListRequest::under(ns(&["p"])).with_limit(3)).await.unwrap();
    assert_eq!(names(&first.items), ["p:k2", "p/a:k0", "p/a:k1"]);
    assert!(first.items.iter().all(|item| item.score.is_none()));
    let cursor = first.next.expect("more to come");
    assert_eq!(cursor, ItemCursor::of(&first.items[2]));
    fx.store.put(&ns(&["p"]), &key("k0"), json!({}), None).await.unwrap();
    assert!(fx.store.delete(&ns(&["p", "a"]), &key("k1")).await.unwrap());
    let rest = fx.store.list(ListRequest::under(ns(&["p"])).with_limit(10).after(cursor)).await.unwrap();
    assert_eq!(names(&rest.items), ["p/a/x:k", "p/b:a", "p/b:z"]);
    assert_eq!(rest.next, None);
    let clamped = fx.store.list(ListRequest::under(ns(&["p"])).with_limit(0)).await.unwrap();
    assert_eq!(clamped.items.len(), 1, "a limit of 0 counts as 1");
}

/// `list_namespaces` lists the namespaces holding items under a prefix, cut to a depth and
/// deduplicated, in order, with offset and limit.
pub async fn list_namespaces_cuts_to_depth(fx: MemoryFixture) {
    for space in [&["u", "a", "prefs"][..], &["u", "a", "facts"], &["u", "b", "prefs"], &["u", "b"], &["v"]] {
        fx.store.put(&ns(space), &key("k"), json!(1), None).await.unwrap();
    }
    let list = |request: NamespaceRequest| {
        let store = Arc::clone(&fx.store);
        async move {
            let got = store.list_namespaces(request).await.unwrap();
            got.iter().map(ToString::to_string).collect::<Vec<_>>()
        }
    };
    assert_eq!(list(NamespaceRequest::under(Some(ns(&["u"])))).await, ["u/a/facts", "u/a/prefs", "u/b", "u/b/prefs"]);
    assert_eq!(list(NamespaceRequest::under(None).with_max_depth(2)).await, ["u/a", "u/b", "v"]);
    assert_eq!(list(NamespaceRequest::under(None).with_max_depth(1)).await, ["u", "v"]);
    assert_eq!(list(NamespaceRequest::under(Some(ns(&["u"]))).with_page(1, 2)).await, ["u/a/prefs", "u/b"]);
    assert!(list(NamespaceRequest::under(Some(ns(&["w"])))).await.is_empty());
}

/// Filters select by containment: top-level and nested fields, array members, numbers by value;
/// a prefix and a filter combine.
pub async fn search_filters_on_json_fields(fx: MemoryFixture) {
    let alice = ns(&["users", "alice"]);
    let bob = ns(&["users", "bob"]);
    let items = [
        (&alice, "theme", json!({"kind": "pref", "value": "dark", "meta": {"source": "chat", "tags": ["ui", "a"]}})),
        (&alice, "lang", json!({"kind": "pref", "value": "fr", "meta": {"source": "form"}, "weight": 2})),
        (&alice, "birthday", json!({"kind": "fact", "value": "05-01", "weight": 2.0})),
        (&bob, "theme", json!({"kind": "pref", "value": "light"})),
        (&bob, "plain", json!("a string value")),
    ];
    for (space, raw, value) in items {
        fx.store.put(space, &key(raw), value, None).await.unwrap();
    }
    let search = |request: SearchRequest| {
        let store = Arc::clone(&fx.store);
        async move { names(&store.search(request.with_page(0, 100)).await.unwrap()) }
    };
    let everywhere = SearchRequest::everywhere;
    assert_eq!(
        search(everywhere().with_filter(json!({"kind": "pref"}))).await,
        ["users/alice:lang", "users/alice:theme", "users/bob:theme"]
    );
    assert_eq!(
        search(SearchRequest::under(alice.clone()).with_filter(json!({"kind": "pref"}))).await,
        ["users/alice:lang", "users/alice:theme"]
    );
    assert_eq!(search(everywhere().with_filter(json!({"meta": {"source": "chat"}}))).await, ["users/alice:theme"]);
    assert_eq!(search(everywhere().with_filter(json!({"meta": {"tags": ["a"]}}))).await, ["users/alice:theme"]);
    assert_eq!(
        search(everywhere().with_filter(json!({"weight": 2}))).await,
        ["users/alice:birthday", "users/alice:lang"]
    );
    assert!(search(everywhere().with_filter(json!({"kind": "pref", "value": "blue"}))).await.is_empty());
    assert!(search(everywhere().with_filter(json!({"missing": null}))).await.is_empty());
    assert_eq!(search(everywhere()).await.len(), 5, "no filter: every item");
    assert_eq!(search(everywhere().with_filter(json!({}))).await.len(), 4, "{{}} matches every object");
    let plain = fx.store.search(everywhere().with_filter(json!({"kind": "pref"}))).await.unwrap();
    assert!(plain.iter().all(|item| item.score.is_none()), "no query, no score");
}

/// Without an embedder a query ranks by the share of its words found in the item (key, object
/// keys, strings), case-insensitive, ties to the most recently updated; no word found, no result.
pub async fn search_text_query_ranks_by_words(fx: MemoryFixture) {
    let notes = ns(&["users", "alice", "notes"]);
    fx.store.put(&notes, &key("n1"), json!({"text": "Prefers DARK mode in the editor"}), None).await.unwrap();
    fx.clock.advance(Duration::from_millis(10));
    fx.store.put(&notes, &key("n2"), json!({"text": "likes dark chocolate"}), None).await.unwrap();
    fx.store.put(&notes, &key("n3"), json!({"text": "allergic to nuts"}), None).await.unwrap();
    fx.store.put(&ns(&["users", "bob"]), &key("n4"), json!({"text": "dark mode everywhere"}), None).await.unwrap();
    fx.store.put(&notes, &key("mode"), json!({"topics": ["light"]}), None).await.unwrap();

    let found = fx.store.search(SearchRequest::under(ns(&["users", "alice"])).with_query("dark mode")).await.unwrap();
    assert_eq!(names(&found), ["users/alice/notes:n1", "users/alice/notes:mode", "users/alice/notes:n2"]);
    let scores: Vec<f64> = found.iter().map(|item| item.score.unwrap()).collect();
    assert!((scores[0] - 1.0).abs() < 1e-9 && (scores[1] - 0.5).abs() < 1e-9, "{scores:?}");
    assert!((scores[2] - 0.5).abs() < 1e-9, "{scores:?}");
    let by_key = fx.store.search(SearchRequest::everywhere().with_query("TEXT nuts")).await.unwrap();
    assert_eq!(names(&by_key)[0], "users/alice/notes:n3", "object keys count as words");
    assert!(fx.store.search(SearchRequest::everywhere().with_query("pizza")).await.unwrap().is_empty());
    let no_words = fx.store.search(SearchRequest::under(notes).with_query(" ... ").with_page(0, 100)).await.unwrap();
    assert_eq!(no_words.len(), 4, "a query without words is no query");
    assert!(no_words.iter().all(|item| item.score.is_none()));
}

/// Offset and limit page through the ranked order without repeating or losing an item.
pub async fn search_pages_with_offset(fx: MemoryFixture) {
    let space = ns(&["paged"]);
    for i in 0..7 {
        fx.store.put(&space, &key(&format!("k{i}")), json!({"text": "apple", "i": i}), None).await.unwrap();
        fx.clock.advance(Duration::from_millis(1));
    }
    let mut seen = Vec::new();
    for offset in (0..8).step_by(3) {
        let page = fx.store.search(SearchRequest::under(space.clone()).with_query("apple").with_page(offset, 3));
        seen.extend(names(&page.await.unwrap()));
    }
    let newest_first: Vec<String> = (0..7).rev().map(|i| format!("paged:k{i}")).collect();
    assert_eq!(seen, newest_first, "equal scores: the most recently updated first");
    let plain = fx.store.search(SearchRequest::under(space.clone()).with_page(5, 10)).await.unwrap();
    assert_eq!(names(&plain), ["paged:k5", "paged:k6"]);
    assert!(fx.store.search(SearchRequest::under(space).with_page(7, 10)).await.unwrap().is_empty());
}

/// An item with a TTL is live up to and including its expiry on the store's clock, then absent
/// everywhere; reads do not extend it, and a put after expiry starts a new item.
pub async fn ttl_expiry_follows_the_store_clock(fx: MemoryFixture) {
    let (space, k) = (ns(&["session", "scratch"]), key("draft"));
    let put = fx.store.put(&space, &k, json!({"text": "draft note"}), Some(Duration::from_secs(10))).await.unwrap();
    let deadline = fx.clock.now() + chrono::Duration::seconds(10);
    assert_eq!(put.expires_at, Some(deadline));
    fx.store.put(&space, &key("keep"), json!({"text": "kept note"}), None).await.unwrap();
    fx.clock.advance(Duration::from_secs(10));
    assert_eq!(fx.store.get(&space, &k).await.unwrap().and_then(|item| item.expires_at), Some(deadline));
    assert_eq!(list_all(&*fx.store, Some(space.clone()), 10).await.len(), 2, "reads did not extend it");
    fx.clock.advance(Duration::from_millis(1));
    assert_eq!(fx.store.get(&space, &k).await.unwrap(), None);
    assert_eq!(names(&list_all(&*fx.store, Some(space.clone()), 10).await), ["session/scratch:keep"]);
    let found = fx.store.search(SearchRequest::under(space.clone()).with_query("note")).await.unwrap();
    assert_eq!(names(&found), ["session/scratch:keep"]);
    assert_eq!(fx.store.search(SearchRequest::everywhere()).await.unwrap().len(), 1);
    assert!(!fx.store.delete(&space, &k).await.unwrap(), "an expired item is not deleted");
    let again = fx.store.put(&space, &k, json!({"text": "new"}), None).await.unwrap();
    assert_eq!((again.created_at, again.expires_at), (fx.clock.now(), None), "a new item");
}

/// Each put sets the expiry from its own TTL: a later put pushes it back, a put without a TTL
/// makes the item permanent.
pub async fn put_refreshes_the_ttl(fx: MemoryFixture) {
    let (space, k) = (ns(&["ttl"]), key("k"));
    let ttl = Some(Duration::from_secs(10));
    fx.store.put(&space, &k, json!(1), ttl).await.unwrap();
    fx.clock.advance(Duration::from_secs(8));
    let refreshed = fx.store.put(&space, &k, json!(2), ttl).await.unwrap();
    assert_eq!(refreshed.expires_at, Some(fx.clock.now() + chrono::Duration::seconds(10)));
    fx.clock.advance(Duration::from_secs(8));
    let live = fx.store.get(&space, &k).await.unwrap().expect("the second put moved the expiry");
    assert_eq!((live.value, live.created_at), (json!(2), refreshed.created_at));
    let permanent = fx.store.put(&space, &k, json!(3), None).await.unwrap();
    assert_eq!(permanent.expires_at, None);
    fx.clock.advance(Duration::from_secs(3600 * 24 * 365));
    assert_eq!(fx.store.get(&space, &k).await.unwrap().map(|item| item.value), Some(json!(3)));
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
}

/// `purge_expired` removes exactly the expired items and counts them.
pub async fn purge_expired_counts_what_expired(fx: MemoryFixture) {
    let space = ns(&["purge"]);
    for (raw, ttl) in [("a", Some(1)), ("b", Some(1)), ("c", Some(60)), ("d", None)] {
        fx.store.put(&space, &key(raw), json!(raw), ttl.map(Duration::from_secs)).await.unwrap();
    }
    fx.store.put(&ns(&["purge", "child"]), &key("e"), json!("e"), Some(Duration::from_secs(1))).await.unwrap();
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
    fx.clock.advance(Duration::from_secs(2));
    assert_eq!(fx.store.purge_expired().await.unwrap(), 3);
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
    assert_eq!(names(&list_all(&*fx.store, None, 10).await), ["purge:c", "purge:d"]);
    let spaces = fx.store.list_namespaces(NamespaceRequest::under(None)).await.unwrap();
    assert_eq!(spaces, [space]);
}

/// Bad namespaces and keys never get built; a value or filter nested too deep is
/// `NestingTooDeep` and the stored item is unchanged.
pub async fn invalid_input_writes_nothing(fx: MemoryFixture) {
    let long = "x".repeat(300);
    for bad in ["", "tab\there", "nul\0", long.as_str()] {
        assert!(matches!(Namespace::new(["users", bad]), Err(Error::InvalidNamespace { .. })), "{bad:?}");
        assert!(matches!(MemoryKey::parse(bad), Err(Error::InvalidMemoryKey { .. })), "{bad:?}");
        assert!(serde_json::from_value::<MemoryKey>(json!(bad)).is_err());
    }
    assert!(matches!(Namespace::new(Vec::<String>::new()), Err(Error::InvalidNamespace { .. })));
    assert!(matches!(Namespace::new(vec!["a"; 17]), Err(Error::InvalidNamespace { .. })));

    let (space, k) = (ns(&["deep"]), key("k"));
    let err = fx.store.put(&space, &k, nested(MAX_JSON_DEPTH - 1), None).await.unwrap_err();
    assert!(matches!(err, Error::NestingTooDeep { .. }), "{err:?}");
    assert_eq!(fx.store.get(&space, &k).await.unwrap(), None, "nothing written");
    assert!(list_all(&*fx.store, None, 10).await.is_empty());
    let kept = fx.store.put(&space, &k, json!({"ok": true}), None).await.unwrap();
    fx.clock.advance(Duration::from_secs(1));
    let err = fx.store.put(&space, &k, json!({"deep": nested(MAX_JSON_DEPTH)}), None).await.unwrap_err();
    assert!(matches!(err, Error::NestingTooDeep { .. }), "{err:?}");
    assert_eq!(fx.store.get(&space, &k).await.unwrap(), Some(kept), "the stored item is unchanged");
    let err = fx.store.search(SearchRequest::everywhere().with_filter(nested(MAX_JSON_DEPTH))).await.unwrap_err();
    assert!(matches!(err, Error::NestingTooDeep { .. }), "{err:?}");
}

/// A store with an embedder embeds each value at put and the query at search, and ranks by
/// cosine similarity: "pasta" finds the pizza note although no word is shared; filters and
/// prefixes still apply.
pub async fn semantic_search_ranks_by_cosine(fx: MemoryFixture) {
    let store = &fx.semantic;
    let alice = ns(&["users", "alice", "memories"]);
    let puts = [
        ("food", json!({"kind": "note", "text": "loves pizza with basil"})),
        ("sport", json!({"kind": "note", "text": "plays tennis every sunday"})),
        ("music", json!({"kind": "pref", "text": "jazz piano in the evening"})),
        ("mixed", json!({"kind": "note", "text": "tennis then sushi dinner"})),
    ];
    let before = fx.embedder.texts();
    for (raw, value) in puts {
        store.put(&alice, &key(raw), value, None).await.unwrap();
    }
    store.put(&ns(&["users", "bob"]), &key("food"), json!({"kind": "note", "text": "pasta"}), None).await.unwrap();
    assert_eq!(fx.embedder.texts() - before, 5, "one text embedded per put");

    let calls = fx.embedder.calls();
    let found = store.search(SearchRequest::under(ns(&["users", "alice"])).with_query("pasta")).await.unwrap();
    assert_eq!(fx.embedder.calls() - calls, 1, "the query is embedded once");
    assert_eq!(names(&found)[..2], ["users/alice/memories:food", "users/alice/memories:mixed"]);
    let scores: Vec<f64> = found.iter().map(|item| item.score.unwrap()).collect();
    assert!(scores.windows(2).all(|pair| pair[0] >= pair[1]), "{scores:?}");
    assert!(scores[0] > 0.99 && scores[1] > 0.5 && scores[1] < 0.9, "{scores:?}");
    assert_eq!(found.len(), 4, "every item with an embedding is ranked");

    let filtered = store
        .search(SearchRequest::everywhere().with_query("a football match").with_filter(json!({"kind": "note"})))
        .await
        .unwrap();
    assert_eq!(names(&filtered)[0], "users/alice/memories:sport");
    assert!(filtered.iter().all(|item| item.value["kind"] == "note"));
    let paged = store.search(SearchRequest::everywhere().with_query("pasta").with_page(1, 1)).await.unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(store.search(SearchRequest::everywhere().with_query("pasta")).await.unwrap()[1], paged[0]);
}

/// When the embedder fails, the put fails with its error and nothing is written; a search with
/// a query fails too.
pub async fn failed_embedding_writes_nothing(fx: MemoryFixture) {
    let (space, k) = (ns(&["embed"]), key("k"));
    let kept = fx.semantic.put(&space, &k, json!({"text": "pizza"}), None).await.unwrap();
    fx.embedder.set_failing(true);
    fx.clock.advance(Duration::from_secs(1));
    let err = fx.semantic.put(&space, &k, json!({"text": "tennis"}), None).await.unwrap_err();
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    let err = fx.semantic.put(&space, &key("new"), json!({"text": "jazz"}), None).await.unwrap_err();
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    let err = fx.semantic.search(SearchRequest::everywhere().with_query("pasta")).await.unwrap_err();
    assert!(matches!(err, Error::Model { .. }), "{err:?}");
    fx.embedder.set_failing(false);
    assert_eq!(fx.semantic.get(&space, &k).await.unwrap(), Some(kept));
    assert_eq!(fx.semantic.get(&space, &key("new")).await.unwrap(), None);
    let found = fx.semantic.search(SearchRequest::everywhere().with_query("pasta")).await.unwrap();
    assert_eq!(names(&found), ["embed:k"], "the old embedding is still the item's");
}

/// Concurrent puts of different items are all kept; concurrent puts of one item leave exactly
/// one of the values.
pub async fn concurrent_puts_keep_every_item(fx: MemoryFixture) {
    let space = ns(&["concurrent"]);
    let mut tasks = Vec::new();
    for i in 0..48 {
        let (store, space) = (Arc::clone(&fx.store), space.clone());
        tasks.push(tokio::spawn(async move {
            let raw = if i % 3 == 0 { "shared".to_owned() } else { format!("k{i:02}") };
            store.put(&space, &key(&raw), json!({"writer": i}), None).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let items = list_all(&*fx.store, Some(space), 7).await;
    assert_eq!(items.len(), 33, "32 distinct keys plus the shared one");
    let by_key: BTreeMap<String, Value> = items.into_iter().map(|item| (item.key.to_string(), item.value)).collect();
    let shared = by_key["shared"]["writer"].as_u64().unwrap();
    assert_eq!(shared % 3, 0, "one of the writers' values, whole");
    for i in (0..48).filter(|i| i % 3 != 0) {
        assert_eq!(by_key[&format!("k{i:02}")], json!({"writer": i}));
    }
}

#[cfg(test)]
mod completeness {
    /// Fails when a scenario of this module is missing from `memory_store_conformance!` (or
    /// the macro names one that is not a `pub async fn` here).
    #[test]
    fn the_macro_lists_every_scenario() {
        let mut listed = crate::__memory_scenarios!(names).to_vec();
        let mut defined = crate::testing::scenario_names(include_str!("testing.rs"));
        assert!(defined.len() > 10, "the parser found the scenarios: {defined:?}");
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(
            listed, defined,
            "memory_store_conformance! must list every scenario of lgadk_core::memory::testing"
        );
    }
}

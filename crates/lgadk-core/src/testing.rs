//! The conformance suite every session backend runs (feature `testing`; not semver-stable).
//!
//! Each scenario is an async function taking a fresh [`StoreFixture`]. A backend's test file
//! writes one fixture function and expands the whole suite with
//! [`session_store_conformance!`](crate::session_store_conformance), which turns every scenario
//! into its own named test. Backends never list scenarios by hand, so a new scenario reaches
//! every backend at once, and none can be skipped silently.
//!
//! In a backend crate's `tests/conformance.rs`:
//! `async fn fixture() -> Option<lgadk_core::testing::StoreFixture> { … }` then
//! `lgadk_core::session_store_conformance!(fixture);`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::json::MAX_JSON_DEPTH;

use crate::{
    Checkpointer, Clock, Error, Interaction, ManualClock, Message, Metadata, MetadataUpdate, NewCheckpoint, NewSession,
    OP_ID_WINDOW, OpId, Page, SessionId, SessionStore, Timeout, TurnCommit, TurnStore, UserId,
};

/// A fresh backend for one scenario.
pub struct StoreFixture {
    /// The store under test, empty.
    pub store: Arc<dyn SessionStore>,
    /// The same backend as a checkpointer.
    pub checkpointer: Arc<dyn Checkpointer>,
    /// The same backend as a turn store.
    pub turns: Arc<dyn TurnStore>,
    /// The store's clock: expiry is tested by advancing it, never by sleeping.
    pub clock: ManualClock,
    /// The store's metadata limit in bytes (keep it small, e.g. 1024, so tests stay fast).
    pub metadata_limit: usize,
    /// How many checkpoints per session the store keeps (e.g. 3).
    pub checkpoint_retention: usize,
    /// Whatever must live as long as the store (a server guard); dropped when the test ends.
    pub keep_alive: Box<dyn Any + Send + Sync>,
}

impl StoreFixture {
    /// A fixture on `store`, used as the session store, the checkpointer and the turn store,
    /// with the `clock` it was built with and its metadata limit and checkpoint retention.
    pub fn new<T: TurnStore>(
        store: Arc<T>,
        clock: ManualClock,
        metadata_limit: usize,
        checkpoint_retention: usize,
    ) -> Self {
        Self {
            store: Arc::<T>::clone(&store),
            checkpointer: Arc::<T>::clone(&store),
            turns: store,
            clock,
            metadata_limit,
            checkpoint_retention,
            keep_alive: Box::new(()),
        }
    }

    /// Keeps `guard` (a server) alive as long as the fixture.
    #[must_use]
    pub fn with_keep_alive(mut self, guard: impl Any + Send + Sync) -> Self {
        self.keep_alive = Box::new(guard);
        self
    }
}

impl std::fmt::Debug for StoreFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreFixture")
            .field("store", &self.store)
            .field("metadata_limit", &self.metadata_limit)
            .field("checkpoint_retention", &self.checkpoint_retention)
            .finish_non_exhaustive()
    }
}

/// Expands the whole conformance suite into one `#[tokio::test]` per scenario.
///
/// `$fixture` is an `async fn() -> Option<StoreFixture>`; `None` means the backend's service
/// is unavailable here, and the fixture itself must have said so loudly (and failed under CI).
/// The calling crate needs `tokio` (macros, multi-thread runtime) as a dev-dependency.
///
/// Every module-level `pub async fn` of this module is a scenario and must be in the macro's
/// list; a unit test compares the two, so a scenario cannot be left out.
#[macro_export]
macro_rules! session_store_conformance {
    ($fixture:path) => {
        $crate::__store_scenarios!(tests $fixture);
    };
}

/// The one list of scenarios, handed to `__conformance_scenarios!` with a mode: `tests
/// <fixture>` expands the tests, `names` the list of names (for the completeness check).
#[doc(hidden)]
#[macro_export]
macro_rules! __store_scenarios {
    ($($mode:tt)+) => {
        $crate::__conformance_scenarios! { $($mode)+;
            create_then_get_round_trips,
            create_accepts_caller_chosen_id,
            create_rejects_taken_id,
            invalid_ids_are_rejected_before_any_write,
            unknown_session_is_absent,
            ended_session_is_absent,
            expired_session_is_absent_and_never_resurrected,
            end_twice_returns_false,
            ended_id_can_be_created_again,
            track_interaction_adds_and_returns_totals,
            interactions_break_down_by_agent,
            metadata_merge_keeps_other_keys,
            metadata_replace_drops_other_keys,
            oversized_metadata_writes_nothing,
            metadata_nested_too_deep_writes_nothing,
            concurrent_interactions_are_all_counted,
            concurrent_metadata_merges_keep_every_key,
            user_sessions_are_listed_newest_first_in_pages,
            user_listing_excludes_ended_and_expired,
            new_sessions_do_not_shift_later_pages,
            writes_extend_the_sliding_timeout,
            reads_do_not_extend_the_timeout,
            never_timeout_outlives_any_idle_time,
            purge_expired_counts_and_cleans_user_index,
            checkpoint_put_then_latest,
            checkpoint_list_is_newest_first_and_retention_keeps_latest,
            checkpoint_stale_version_conflicts_and_writes_nothing,
            checkpoint_messages_append_in_order,
            checkpoint_nested_too_deep_writes_nothing,
            older_checkpoint_reads_log_up_to_its_length,
            checkpoint_on_dead_session_is_not_found,
            checkpoints_deleted_when_session_ends,
            checkpoints_gone_when_session_expires,
            checkpoint_delete_keeps_the_session,
            repeated_create_with_one_op_id_creates_once,
            repeated_interaction_with_one_op_id_counts_once,
            repeated_checkpoint_put_with_one_op_id_saves_once,
            turn_begin_reads_the_latest_state_only_when_the_cache_is_stale,
            turn_commit_saves_checkpoint_interaction_and_metadata,
            turn_commit_conflict_writes_nothing,
            turn_commit_over_the_metadata_limit_writes_nothing,
            turn_commit_nested_too_deep_writes_nothing,
            turn_commit_on_dead_session_is_not_found,
            repeated_turn_commit_with_one_op_id_applies_once,
            log_cut_drops_the_positions_before_it,
            log_cut_past_the_end_places_messages_at_the_cut,
            turn_commit_cuts_the_log_atomically_and_once,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_scenarios {
    (tests $fixture:path; $($name:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(fixture) = $fixture().await else { return };
            $crate::testing::$name(fixture).await
        }
    )+};
    (names; $($name:ident),+ $(,)?) => {
        [$(stringify!($name)),+]
    };
}

/// The names of the scenarios defined in a suite's source: every `pub async fn` at module
/// level (at the very start of a line; indented methods are not scenarios), in order.
/// Conformance macros compare their list with it in a unit test, so a scenario written but
/// left out of the macro fails that test.
pub fn scenario_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| line.strip_prefix("pub async fn "))
        .filter_map(|rest| rest.split(['(', '<']).next())
        .map(str::trim)
        .collect()
}

const TEN_SECONDS: Duration = Duration::from_secs(10);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn sid(raw: &str) -> SessionId {
    SessionId::parse(raw).unwrap()
}

fn meta(value: serde_json::Value) -> Metadata {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("metadata must be an object, got {other}"),
    }
}

fn expiring(user_id: Option<UserId>, timeout: Duration) -> NewSession {
    NewSession { user_id, timeout: Timeout::After(timeout), ..NewSession::default() }
}

async fn listed(store: &dyn SessionStore, user_id: &UserId) -> Vec<SessionId> {
    let mut all = Vec::new();
    let mut page = Page::first(2);
    loop {
        let got = store.list_user_sessions(user_id, page).await.unwrap();
        all.extend(got.ids);
        match got.next {
            Some(cursor) => page = Page::after(cursor, 2),
            None => return all,
        }
    }
}

async fn assert_absent(fx: &StoreFixture, id: &SessionId) {
    let store = &fx.store;
    assert_eq!(store.get(id).await.unwrap(), None, "get of {id}");
    assert!(!store.exists(id).await.unwrap(), "exists of {id}");
    let err = store.track_interaction(id, Interaction::tokens(1, 1)).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(ref got) if got == id), "track: {err:?}");
    let err = store.touch(id).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "touch: {err:?}");
    let err = store.update_metadata(id, MetadataUpdate::Merge(meta(json!({"k": 1})))).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "update_metadata: {err:?}");
    let err = fx.checkpointer.version(id).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "checkpoint version: {err:?}");
    // None of the failed writes brought it back.
    assert_eq!(store.get(id).await.unwrap(), None, "get of {id} after failed writes");
}

/// A created session reads back with everything it was created with.
pub async fn create_then_get_round_trips(fx: StoreFixture) {
    let new = NewSession {
        user_id: Some(user("alice")),
        metadata: meta(json!({"device": "laptop", "nested": {"a": [1, 2]}})),
        timeout: Timeout::After(Duration::from_secs(1800)),
        ..NewSession::default()
    };
    let created = fx.store.create(new).await.unwrap();
    assert_eq!(created.created_at.timestamp_millis(), fx.clock.now_ms());
    assert_eq!(created.last_active, created.created_at);
    assert_eq!(created.stats, crate::SessionStats::default());
    assert!(uuid::Uuid::parse_str(created.id.as_str()).is_ok(), "generated ids are UUIDs");
    let got = fx.store.get(&created.id).await.unwrap().expect("created session is readable");
    assert_eq!(got, created);
    assert_eq!(got.timeout, Some(Duration::from_secs(1800)));
    assert!(fx.store.exists(&created.id).await.unwrap());
}

/// A caller-chosen id is used as given.
pub async fn create_accepts_caller_chosen_id(fx: StoreFixture) {
    let id = sid("support:ticket-42.v1_a");
    let created = fx.store.create(NewSession::default().with_id(id.clone())).await.unwrap();
    assert_eq!(created.id, id);
    assert_eq!(fx.store.get(&id).await.unwrap().map(|s| s.id), Some(id));
}

/// A taken id is `AlreadyExists`, and the existing session is untouched.
pub async fn create_rejects_taken_id(fx: StoreFixture) {
    let id = sid("taken");
    let first =
        fx.store.create(NewSession::for_user(user("alice")).with_id(id.clone()).with_metadata(meta(json!({"v": 1}))));
    let first = first.await.unwrap();
    let err = fx
        .store
        .create(NewSession::for_user(user("bob")).with_id(id.clone()).with_metadata(meta(json!({"v": 2}))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(ref got) if *got == id), "{err:?}");
    assert_eq!(fx.store.get(&id).await.unwrap(), Some(first));
    assert!(listed(&*fx.store, &user("bob")).await.is_empty());
}

/// Ids that break the rules never become a `SessionId`, so nothing can be written with them.
pub async fn invalid_ids_are_rejected_before_any_write(fx: StoreFixture) {
    let long = "x".repeat(129);
    for bad in ["", long.as_str(), "has space", "{tag}", "a}", "star*", "new\nline", "ünï"] {
        assert!(matches!(SessionId::parse(bad), Err(Error::InvalidSessionId { .. })), "{bad:?}");
        assert!(matches!(UserId::parse(bad), Err(Error::InvalidUserId { .. })), "{bad:?}");
        assert!(serde_json::from_value::<SessionId>(json!(bad)).is_err(), "{bad:?} through serde");
    }
    assert!(SessionId::parse(&"x".repeat(128)).is_ok());
    assert!(listed(&*fx.store, &user("alice")).await.is_empty());
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
}

/// An id that was never created reads as absent and every write fails.
pub async fn unknown_session_is_absent(fx: StoreFixture) {
    assert_absent(&fx, &sid("never-created")).await;
    assert!(!fx.store.end(&sid("never-created")).await.unwrap());
}

/// An ended session is gone for reads and writes.
pub async fn ended_session_is_absent(fx: StoreFixture) {
    let id = fx.store.create(NewSession::for_user(user("alice"))).await.unwrap().id;
    assert!(fx.store.end(&id).await.unwrap());
    assert_absent(&fx, &id).await;
    assert!(listed(&*fx.store, &user("alice")).await.is_empty());
}

/// An expired session is gone, and a write after expiry does not bring it back.
pub async fn expired_session_is_absent_and_never_resurrected(fx: StoreFixture) {
    let id = fx.store.create(expiring(Some(user("alice")), TEN_SECONDS)).await.unwrap().id;
    fx.clock.advance(Duration::from_millis(10_001));
    assert_absent(&fx, &id).await;
    // Back in time would not revive it either: the failed writes stored nothing.
    assert!(listed(&*fx.store, &user("alice")).await.is_empty());
}

/// Ending twice: the second call reports that nothing was live.
pub async fn end_twice_returns_false(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    assert!(fx.store.end(&id).await.unwrap());
    assert!(!fx.store.end(&id).await.unwrap());
}

/// After ending, the same caller-chosen id starts a brand-new session.
pub async fn ended_id_can_be_created_again(fx: StoreFixture) {
    let id = sid("reused");
    fx.store.create(NewSession::default().with_id(id.clone()).with_metadata(meta(json!({"old": true})))).await.unwrap();
    fx.store.track_interaction(&id, Interaction::tokens(5, 5)).await.unwrap();
    assert!(fx.store.end(&id).await.unwrap());
    let again = fx.store.create(NewSession::default().with_id(id.clone())).await.unwrap();
    assert_eq!(again.stats, crate::SessionStats::default());
    assert!(again.metadata.is_empty());
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 0);
}

/// Interactions add up and `last_active` moves to the store's clock.
pub async fn track_interaction_adds_and_returns_totals(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let first = Interaction::tokens(10, 20).with_response_time(Duration::from_millis(150));
    let stats = fx.store.track_interaction(&id, first).await.unwrap();
    assert_eq!((stats.interactions, stats.total_tokens_in, stats.total_tokens_out), (1, 10, 20));
    fx.clock.advance(Duration::from_secs(3));
    let second = Interaction::tokens(1, 2).with_response_time(Duration::from_millis(250));
    let stats = fx.store.track_interaction(&id, second).await.unwrap();
    assert_eq!((stats.interactions, stats.total_tokens_in, stats.total_tokens_out), (2, 11, 22));
    assert_eq!(stats.total_response_time, Duration::from_millis(400));
    assert_eq!(stats.avg_response_time(), Duration::from_millis(200));
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(session.stats, stats);
    assert_eq!(session.last_active.timestamp_millis(), fx.clock.now_ms());
    assert_eq!(session.duration(), Duration::from_secs(3));
}

/// Merge overwrites and adds top-level keys and keeps the others.
pub async fn metadata_merge_keeps_other_keys(fx: StoreFixture) {
    let new = NewSession::default().with_metadata(meta(json!({"device": "laptop", "language": "en-US"})));
    let id = fx.store.create(new).await.unwrap().id;
    let merged = fx
        .store
        .update_metadata(&id, MetadataUpdate::Merge(meta(json!({"language": "en-GB", "plan": {"tier": "premium"}}))))
        .await
        .unwrap();
    let expected = meta(json!({"device": "laptop", "language": "en-GB", "plan": {"tier": "premium"}}));
    assert_eq!(merged, expected);
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().metadata, expected);
}

/// Replace drops every key the new map lacks.
pub async fn metadata_replace_drops_other_keys(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default().with_metadata(meta(json!({"a": 1, "b": 2})))).await.unwrap().id;
    let replaced = fx.store.update_metadata(&id, MetadataUpdate::Replace(meta(json!({"c": 3})))).await.unwrap();
    assert_eq!(replaced, meta(json!({"c": 3})));
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().metadata, meta(json!({"c": 3})));
    let emptied = fx.store.update_metadata(&id, MetadataUpdate::Replace(Metadata::new())).await.unwrap();
    assert!(emptied.is_empty());
    assert!(fx.store.get(&id).await.unwrap().unwrap().metadata.is_empty());
}

/// Metadata over the limit fails with `MetadataTooLarge` and changes nothing.
pub async fn oversized_metadata_writes_nothing(fx: StoreFixture) {
    let limit = fx.metadata_limit;
    let too_big = meta(json!({"blob": "x".repeat(limit)}));
    let err = fx.store.create(NewSession::for_user(user("alice")).with_metadata(too_big.clone())).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { limit: l, .. } if l == limit), "{err:?}");
    assert!(listed(&*fx.store, &user("alice")).await.is_empty(), "a failed create leaves no session");

    let original = meta(json!({"keep": "me", "half": "y".repeat(limit / 2)}));
    let id = fx.store.create(NewSession::default().with_metadata(original.clone())).await.unwrap().id;
    let before = fx.store.get(&id).await.unwrap().unwrap();
    // Each half fits alone; merged they do not.
    let second_half = meta(json!({"other": "z".repeat(limit / 2)}));
    assert!(crate::session::metadata_size(&second_half) <= limit);
    let err = fx.store.update_metadata(&id, MetadataUpdate::Merge(second_half)).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { size, .. } if size > limit), "{err:?}");
    let err = fx.store.update_metadata(&id, MetadataUpdate::Replace(too_big)).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { .. }), "{err:?}");
    let after = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(after, before, "metadata and last_active untouched by failed updates");

    // Exactly at the limit is allowed.
    let mut exact = meta(json!({"k": ""}));
    let pad = limit - crate::session::metadata_size(&exact);
    exact.insert("k".into(), json!("p".repeat(pad)));
    assert_eq!(crate::session::metadata_size(&exact), limit);
    fx.store.update_metadata(&id, MetadataUpdate::Replace(exact.clone())).await.unwrap();
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().metadata, exact);
}

/// `levels` arrays nested in one another around `null`.
fn nested(levels: usize) -> serde_json::Value {
    (0..levels).fold(serde_json::Value::Null, |inner, _| serde_json::Value::Array(vec![inner]))
}

fn is_too_deep(err: &Error) -> bool {
    matches!(err, Error::NestingTooDeep { limit: MAX_JSON_DEPTH, .. })
}

/// Metadata whose map nests `MAX_JSON_DEPTH` levels (the map is the first) fails with
/// `NestingTooDeep` on create, merge and replace and changes nothing; one level less is
/// stored and reads back.
pub async fn metadata_nested_too_deep_writes_nothing(fx: StoreFixture) {
    let deepest = meta(json!({"deep": nested(MAX_JSON_DEPTH - 2)}));
    let too_deep = meta(json!({"deep": nested(MAX_JSON_DEPTH - 1)}));

    let err = fx.store.create(NewSession::for_user(user("alice")).with_metadata(too_deep.clone())).await.unwrap_err();
    assert!(is_too_deep(&err), "{err:?}");
    assert!(listed(&*fx.store, &user("alice")).await.is_empty(), "a failed create leaves no session");

    let id = fx.store.create(NewSession::for_user(user("alice")).with_metadata(deepest.clone())).await.unwrap().id;
    let before = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(before.metadata, deepest, "the deepest storable metadata reads back");
    for update in [MetadataUpdate::Merge(too_deep.clone()), MetadataUpdate::Replace(too_deep.clone())] {
        let err = fx.store.update_metadata(&id, update).await.unwrap_err();
        assert!(is_too_deep(&err), "{err:?}");
    }
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap(), before, "failed updates change nothing");
    let merged = fx.store.update_metadata(&id, MetadataUpdate::Merge(meta(json!({"k": 1})))).await.unwrap();
    assert_eq!(merged.get("deep"), deepest.get("deep"), "the session still reads and merges");
}

/// 64 tasks × 100 interactions on one session: no increment is lost.
pub async fn concurrent_interactions_are_all_counted(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, id) = (Arc::clone(&fx.store), id.clone());
            tokio::spawn(async move {
                for _ in 0..100 {
                    let turn = Interaction::tokens(3, 5).with_response_time(Duration::from_millis(2));
                    store.track_interaction(&id, turn).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = fx.store.get(&id).await.unwrap().unwrap().stats;
    assert_eq!(stats.interactions, 6400);
    assert_eq!((stats.total_tokens_in, stats.total_tokens_out), (19_200, 32_000));
    assert_eq!(stats.total_response_time, Duration::from_millis(12_800));
}

/// 32 tasks merging distinct keys: every key is present afterwards.
pub async fn concurrent_metadata_merges_keep_every_key(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default().with_metadata(meta(json!({"base": 0})))).await.unwrap().id;
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let (store, id) = (Arc::clone(&fx.store), id.clone());
            tokio::spawn(async move {
                let update = MetadataUpdate::Merge(meta(json!({ format!("k{n}"): n })));
                store.update_metadata(&id, update).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let metadata = fx.store.get(&id).await.unwrap().unwrap().metadata;
    assert_eq!(metadata.len(), 33);
    for n in 0..32 {
        assert_eq!(metadata.get(&format!("k{n}")), Some(&json!(n)), "k{n}");
    }
}

/// A user's sessions come newest first, page by page, and only theirs.
pub async fn user_sessions_are_listed_newest_first_in_pages(fx: StoreFixture) {
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(fx.store.create(NewSession::for_user(user("alice"))).await.unwrap().id);
        fx.store.create(NewSession::for_user(user("bob"))).await.unwrap();
        fx.store.create(NewSession::default()).await.unwrap();
        fx.clock.advance(Duration::from_millis(5));
    }
    created.reverse();
    let first = fx.store.list_user_sessions(&user("alice"), Page::first(2)).await.unwrap();
    assert_eq!(first.ids, created[..2]);
    let cursor = first.next.expect("more pages");
    let again: crate::Cursor = cursor.to_string().parse().unwrap();
    let second = fx.store.list_user_sessions(&user("alice"), Page::after(again, 2)).await.unwrap();
    assert_eq!(second.ids, created[2..4]);
    let third = fx.store.list_user_sessions(&user("alice"), Page::after(second.next.unwrap(), 2)).await.unwrap();
    assert_eq!(third.ids, created[4..]);
    assert_eq!(third.next, None);
    let whole = fx.store.list_user_sessions(&user("alice"), Page::first(100)).await.unwrap();
    assert_eq!((whole.ids, whole.next), (created, None));
    assert!(listed(&*fx.store, &user("carol")).await.is_empty());
}

/// Ended and expired sessions drop out of their user's list.
pub async fn user_listing_excludes_ended_and_expired(fx: StoreFixture) {
    let alice = user("alice");
    let keep = fx.store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    fx.clock.advance(Duration::from_millis(1));
    let ended = fx.store.create(NewSession::for_user(alice.clone())).await.unwrap().id;
    fx.clock.advance(Duration::from_millis(1));
    let expires = fx.store.create(expiring(Some(alice.clone()), TEN_SECONDS)).await.unwrap().id;
    assert_eq!(listed(&*fx.store, &alice).await, [expires.clone(), ended.clone(), keep.clone()]);
    fx.store.end(&ended).await.unwrap();
    fx.clock.advance(Duration::from_secs(11));
    assert_eq!(listed(&*fx.store, &alice).await, [keep]);
}

/// A session created while a client pages through a list does not repeat earlier entries.
pub async fn new_sessions_do_not_shift_later_pages(fx: StoreFixture) {
    let alice = user("alice");
    let mut created = Vec::new();
    for _ in 0..4 {
        created.push(fx.store.create(NewSession::for_user(alice.clone())).await.unwrap().id);
        fx.clock.advance(Duration::from_millis(1));
    }
    created.reverse();
    let first = fx.store.list_user_sessions(&alice, Page::first(2)).await.unwrap();
    fx.store.create(NewSession::for_user(alice.clone())).await.unwrap();
    let second = fx.store.list_user_sessions(&alice, Page::after(first.next.unwrap(), 2)).await.unwrap();
    assert_eq!(second.ids, created[2..]);
}

/// `track_interaction`, `touch` and `update_metadata` each extend the sliding timeout.
pub async fn writes_extend_the_sliding_timeout(fx: StoreFixture) {
    let id = fx.store.create(expiring(None, TEN_SECONDS)).await.unwrap().id;
    fx.clock.advance(Duration::from_secs(8));
    fx.store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap();
    fx.clock.advance(Duration::from_secs(8));
    fx.store.touch(&id).await.unwrap();
    fx.clock.advance(Duration::from_secs(8));
    fx.store.update_metadata(&id, MetadataUpdate::Merge(meta(json!({"k": 1})))).await.unwrap();
    fx.clock.advance(Duration::from_secs(10));
    let session = fx.store.get(&id).await.unwrap().expect("alive at exactly the timeout");
    assert_eq!(session.last_active.timestamp_millis() + 10_000, fx.clock.now_ms());
    fx.clock.advance(Duration::from_millis(1));
    assert!(!fx.store.exists(&id).await.unwrap(), "expired one millisecond after the timeout");
}

/// `get`, `exists` and listing never extend the timeout.
pub async fn reads_do_not_extend_the_timeout(fx: StoreFixture) {
    let alice = user("alice");
    let id = fx.store.create(expiring(Some(alice.clone()), TEN_SECONDS)).await.unwrap().id;
    fx.clock.advance(Duration::from_secs(6));
    assert!(fx.store.get(&id).await.unwrap().is_some());
    assert!(fx.store.exists(&id).await.unwrap());
    assert_eq!(listed(&*fx.store, &alice).await, std::slice::from_ref(&id));
    fx.clock.advance(Duration::from_secs(5));
    assert!(!fx.store.exists(&id).await.unwrap());
}

/// A session created with `Timeout::Never` survives any idle time.
pub async fn never_timeout_outlives_any_idle_time(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default().with_timeout(Timeout::Never)).await.unwrap().id;
    fx.clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0);
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(session.timeout, None);
    assert_eq!(session.expires_at(), None);
}

/// Purge removes what expired, counts it once, cleans user lists and leaves the rest.
pub async fn purge_expired_counts_and_cleans_user_index(fx: StoreFixture) {
    let alice = user("alice");
    let mut doomed = Vec::new();
    for _ in 0..3 {
        doomed.push(fx.store.create(expiring(Some(alice.clone()), TEN_SECONDS)).await.unwrap().id);
    }
    let ended = fx.store.create(expiring(Some(alice.clone()), TEN_SECONDS)).await.unwrap().id;
    fx.store.end(&ended).await.unwrap();
    let forever = fx.store.create(NewSession::for_user(alice.clone()).with_timeout(Timeout::Never)).await.unwrap().id;
    let long = fx.store.create(expiring(Some(alice.clone()), Duration::from_secs(100))).await.unwrap().id;
    let kept_alive = fx.store.create(expiring(Some(alice.clone()), TEN_SECONDS)).await.unwrap().id;
    fx.checkpointer.put(&doomed[0], snapshot(1, vec![Message::user("hi")]), 0).await.unwrap();

    fx.clock.advance(Duration::from_secs(6));
    fx.store.touch(&kept_alive).await.unwrap();
    fx.clock.advance(Duration::from_secs(5));
    assert_eq!(fx.store.purge_expired().await.unwrap(), 3, "three expired; the ended one is not counted");
    assert_eq!(fx.store.purge_expired().await.unwrap(), 0, "nothing is counted twice");
    for id in &doomed {
        assert_eq!(fx.store.get(id).await.unwrap(), None);
    }
    assert!(fx.checkpointer.latest(&doomed[0]).await.unwrap().is_none(), "checkpoints purged with the session");
    let mut live = listed(&*fx.store, &alice).await;
    live.sort();
    let mut expected = vec![forever, long, kept_alive.clone()];
    expected.sort();
    assert_eq!(live, expected);
    fx.clock.advance(Duration::from_secs(6));
    assert_eq!(fx.store.purge_expired().await.unwrap(), 1, "the touched session expires later");
    assert_eq!(fx.store.get(&kept_alive).await.unwrap(), None);
}

fn snapshot(step: u64, messages: Vec<Message>) -> NewCheckpoint {
    NewCheckpoint {
        state: json!({"step": step, "note": "é\"quoted\""}),
        step,
        node: Some(format!("n{step}")),
        messages,
        op: None,
        log_start: 0,
    }
}

/// `put` returns version 1, and `latest` reads it back.
pub async fn checkpoint_put_then_latest(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 0);
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), None);
    let saved = fx.checkpointer.put(&id, snapshot(1, vec![Message::user("hello")]), 0).await.unwrap();
    assert_eq!((saved.version, saved.step, saved.log_len), (1, 1, 1));
    assert_eq!(saved.node.as_deref(), Some("n1"));
    assert_eq!(saved.created_at.timestamp_millis(), fx.clock.now_ms());
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 1);
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(saved.clone()));
    assert_eq!(fx.checkpointer.checkpoint(&id, 1).await.unwrap(), Some(saved));
}

/// `list` is newest first, and only the latest N checkpoints are kept.
pub async fn checkpoint_list_is_newest_first_and_retention_keeps_latest(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let total = fx.checkpoint_retention as u64 + 2;
    for version in 1..=total {
        fx.checkpointer
            .put(&id, snapshot(version, vec![Message::user(format!("m{version}"))]), version - 1)
            .await
            .unwrap();
    }
    let all = fx.checkpointer.list(&id, 100).await.unwrap();
    let versions: Vec<u64> = all.iter().map(|cp| cp.version).collect();
    let expected: Vec<u64> = (3..=total).rev().collect();
    assert_eq!(versions, expected);
    assert_eq!(fx.checkpointer.list(&id, 1).await.unwrap().len(), 1);
    assert_eq!(fx.checkpointer.checkpoint(&id, 1).await.unwrap(), None, "trimmed by retention");
    let log = fx.checkpointer.messages(&id, 0..100).await.unwrap();
    assert_eq!(log.len() as u64, total, "checkpoint retention never cuts the log");
}

/// A stale `expected_version` is `Conflict`, and neither snapshot nor messages are written.
pub async fn checkpoint_stale_version_conflicts_and_writes_nothing(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let first = fx.checkpointer.put(&id, snapshot(1, vec![Message::user("one")]), 0).await.unwrap();
    let err = fx.checkpointer.put(&id, snapshot(2, vec![Message::user("lost")]), 0).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { expected: 0, actual: 1, .. }), "{err:?}");
    let err = fx.checkpointer.put(&id, snapshot(2, vec![Message::user("lost")]), 7).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { expected: 7, actual: 1, .. }), "{err:?}");
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(first));
    assert_eq!(fx.checkpointer.messages(&id, 0..10).await.unwrap(), [Message::user("one")]);
}

/// A checkpoint whose state or logged message nests as deep as serde_json refuses to read
/// fails with `NestingTooDeep` and writes nothing; the deepest storable ones read back.
pub async fn checkpoint_nested_too_deep_writes_nothing(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let with_args = |levels: usize| {
        let mut call = Message::assistant("");
        call.tool_calls.push(crate::ToolCall { id: "c1".into(), name: "f".into(), arguments: nested(levels) });
        call
    };
    // A store may wrap the state in one record of its own; a message's arguments sit three
    // levels deep in it.
    let deepest =
        NewCheckpoint { state: nested(MAX_JSON_DEPTH - 2), ..snapshot(1, vec![with_args(MAX_JSON_DEPTH - 4)]) };
    let saved = fx.checkpointer.put(&id, deepest.clone(), 0).await.unwrap();
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(saved.clone()));
    assert_eq!(saved.state, deepest.state);
    assert_eq!(fx.checkpointer.messages(&id, 0..10).await.unwrap(), deepest.messages);

    let deep_state = NewCheckpoint { state: nested(MAX_JSON_DEPTH - 1), ..snapshot(2, vec![Message::user("lost")]) };
    let deep_message = snapshot(2, vec![Message::user("lost"), with_args(MAX_JSON_DEPTH - 3)]);
    for checkpoint in [deep_state, deep_message] {
        let err = fx.checkpointer.put(&id, checkpoint, 1).await.unwrap_err();
        assert!(is_too_deep(&err), "{err:?}");
    }
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(saved), "nothing written");
    assert_eq!(fx.checkpointer.messages(&id, 0..10).await.unwrap(), deepest.messages);
}

/// Messages carried by successive `put`s read back in order.
pub async fn checkpoint_messages_append_in_order(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let mut call = Message::assistant("");
    call.tool_calls.push(crate::ToolCall { id: "c1".into(), name: "f".into(), arguments: json!({"x": 1}) });
    let turn1 = vec![Message::system("sys"), Message::user("hi"), call];
    let turn2 = vec![Message::tool("c1", "42"), Message::assistant("done ✓")];
    fx.checkpointer.put(&id, snapshot(1, turn1.clone()), 0).await.unwrap();
    let second = fx.checkpointer.put(&id, snapshot(2, turn2.clone()), 1).await.unwrap();
    assert_eq!(second.log_len, 5);
    let all: Vec<Message> = turn1.into_iter().chain(turn2).collect();
    assert_eq!(fx.checkpointer.messages(&id, 0..5).await.unwrap(), all);
    assert_eq!(fx.checkpointer.messages(&id, 0..50).await.unwrap(), all, "the range is clamped");
    assert_eq!(fx.checkpointer.messages(&id, 3..5).await.unwrap(), all[3..]);
    assert!(fx.checkpointer.messages(&id, 9..12).await.unwrap().is_empty());
    let third = fx.checkpointer.put(&id, snapshot(3, Vec::new()), 2).await.unwrap();
    assert_eq!(third.log_len, 5, "a checkpoint without new messages keeps the log length");
}

/// An older checkpoint covers only the log it saw.
pub async fn older_checkpoint_reads_log_up_to_its_length(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    fx.checkpointer.put(&id, snapshot(1, vec![Message::user("a"), Message::assistant("b")]), 0).await.unwrap();
    fx.checkpointer.put(&id, snapshot(2, vec![Message::user("c"), Message::assistant("d")]), 1).await.unwrap();
    let old = fx.checkpointer.checkpoint(&id, 1).await.unwrap().unwrap();
    assert_eq!(old.log_len, 2);
    assert_eq!(old.state, json!({"step": 1, "note": "é\"quoted\""}));
    let seen = fx.checkpointer.messages(&id, old.log_range()).await.unwrap();
    assert_eq!(seen, [Message::user("a"), Message::assistant("b")]);
}

/// Checkpoints of unknown, ended or expired sessions are not found and `put` fails.
pub async fn checkpoint_on_dead_session_is_not_found(fx: StoreFixture) {
    let unknown = sid("nobody");
    let err = fx.checkpointer.put(&unknown, snapshot(1, vec![Message::user("x")]), 0).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "{err:?}");
    assert_eq!(fx.checkpointer.latest(&unknown).await.unwrap(), None);
    assert!(fx.checkpointer.list(&unknown, 10).await.unwrap().is_empty());
    assert!(fx.checkpointer.messages(&unknown, 0..10).await.unwrap().is_empty());
    assert!(fx.store.get(&unknown).await.unwrap().is_none(), "put did not create a session");
}

/// Ending a session deletes its checkpoints and log.
pub async fn checkpoints_deleted_when_session_ends(fx: StoreFixture) {
    let id = sid("ends");
    fx.store.create(NewSession::default().with_id(id.clone())).await.unwrap();
    fx.checkpointer.put(&id, snapshot(1, vec![Message::user("x")]), 0).await.unwrap();
    fx.store.end(&id).await.unwrap();
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), None);
    assert!(fx.checkpointer.list(&id, 10).await.unwrap().is_empty());
    assert!(fx.checkpointer.messages(&id, 0..10).await.unwrap().is_empty());
    fx.store.create(NewSession::default().with_id(id.clone())).await.unwrap();
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 0, "a recreated session starts clean");
    assert!(fx.checkpointer.messages(&id, 0..10).await.unwrap().is_empty());
}

/// Expiry takes checkpoints with it, before and after a purge.
pub async fn checkpoints_gone_when_session_expires(fx: StoreFixture) {
    let id = fx.store.create(expiring(None, TEN_SECONDS)).await.unwrap().id;
    fx.checkpointer.put(&id, snapshot(1, vec![Message::user("x")]), 0).await.unwrap();
    fx.clock.advance(Duration::from_secs(11));
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), None);
    assert!(fx.checkpointer.messages(&id, 0..10).await.unwrap().is_empty());
    let err = fx.checkpointer.put(&id, snapshot(2, Vec::new()), 1).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "{err:?}");
    assert_eq!(fx.store.purge_expired().await.unwrap(), 1);
    assert!(fx.checkpointer.list(&id, 10).await.unwrap().is_empty());
}

/// `delete` clears checkpoints and log but keeps the session.
pub async fn checkpoint_delete_keeps_the_session(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    assert!(!fx.checkpointer.delete(&id).await.unwrap());
    fx.checkpointer.put(&id, snapshot(1, vec![Message::user("x")]), 0).await.unwrap();
    assert!(fx.checkpointer.delete(&id).await.unwrap());
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 0);
    assert!(fx.checkpointer.messages(&id, 0..10).await.unwrap().is_empty());
    assert!(fx.store.exists(&id).await.unwrap());
}

/// A creation repeated with the same op id returns the session it created instead of
/// `AlreadyExists`; another op id still conflicts, and the op id dies with its session.
pub async fn repeated_create_with_one_op_id_creates_once(fx: StoreFixture) {
    let op = OpId::new();
    let new = NewSession::for_user(user("alice")).with_id(sid("op-create")).with_op_id(op);
    let first = fx.store.create(new.clone()).await.unwrap();
    fx.clock.advance(Duration::from_millis(5));
    let again = fx.store.create(new.clone()).await.expect("a repeat with the same op id succeeds");
    assert_eq!((&again.id, &again.user_id, again.created_at), (&first.id, &first.user_id, first.created_at));
    let other = new.clone().with_op_id(OpId::new());
    assert!(matches!(fx.store.create(other).await, Err(Error::AlreadyExists(_))));
    assert_eq!(listed(&*fx.store, &user("alice")).await, [sid("op-create")], "indexed once");
    assert!(fx.store.end(&first.id).await.unwrap());
    let fresh = fx.store.create(new).await.expect("a new session after the end");
    assert_eq!(fresh.stats, crate::SessionStats::default());
}

fn share(agent: &str, tokens_in: u64, tokens_out: u64, ms: u64) -> crate::AgentShare {
    crate::AgentShare { agent: agent.to_owned(), tokens_in, tokens_out, time: Duration::from_millis(ms) }
}

/// An interaction's breakdown by agent adds up per agent — tracked alone, repeated with its op
/// id (counted once) or committed with a turn — and reads back with the session.
pub async fn interactions_break_down_by_agent(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let first = Interaction::tokens(4, 7)
        .with_op_id(OpId::new())
        .with_agents(vec![share("triage", 3, 5, 10), share("billing", 1, 2, 5)]);
    let stats = fx.store.track_interaction(&id, first.clone()).await.unwrap();
    let triage = crate::AgentStats { interactions: 1, tokens_in: 3, tokens_out: 5, time: Duration::from_millis(10) };
    assert_eq!(stats.agents.get("triage"), Some(&triage));
    assert_eq!(stats.agents.len(), 2);
    assert_eq!(fx.store.track_interaction(&id, first).await.unwrap(), stats, "a repeat counts once");
    fx.store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap();
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().stats.agents, stats.agents, "no breakdown, no change");

    let mut commit = turn(1, vec![Message::user("q"), Message::assistant("a")], 0);
    commit.interaction = commit.interaction.map(|i| i.with_agents(vec![share("billing", 6, 6, 20)]));
    let saved = fx.turns.commit_turn(&id, commit).await.unwrap().stats.expect("tracked");
    let billing = crate::AgentStats { interactions: 2, tokens_in: 7, tokens_out: 8, time: Duration::from_millis(25) };
    assert_eq!(saved.agents.get("billing"), Some(&billing));
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(session.stats.agents, saved.agents);
    assert_eq!((session.stats.interactions, session.stats.agents["triage"].interactions), (3, 1));
}

/// An interaction repeated with the same op id is counted once, also after up to
/// `OP_ID_WINDOW - 1` other writes; interactions without an op id always count.
pub async fn repeated_interaction_with_one_op_id_counts_once(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let first = Interaction::tokens(3, 5).with_op_id(OpId::new());
    let stats = fx.store.track_interaction(&id, first.clone()).await.unwrap();
    assert_eq!((stats.interactions, stats.total_tokens_in, stats.total_tokens_out), (1, 3, 5));
    let again = fx.store.track_interaction(&id, first.clone()).await.expect("a repeat succeeds");
    assert_eq!(again, stats, "the repeat changes nothing and returns the totals");
    for _ in 1..OP_ID_WINDOW {
        fx.store.track_interaction(&id, Interaction::tokens(1, 1).with_op_id(OpId::new())).await.unwrap();
    }
    let n = OP_ID_WINDOW as u64;
    let late = fx.store.track_interaction(&id, first).await.unwrap();
    assert_eq!(late.interactions, n, "still remembered after {} other writes", OP_ID_WINDOW - 1);
    fx.store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap();
    fx.store.track_interaction(&id, Interaction::tokens(1, 1)).await.unwrap();
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(session.stats.interactions, n + 2, "writes without an op id always count");
    assert_eq!(session.stats.total_tokens_in, 3 + (n - 1) + 2);
}

/// A checkpoint put repeated with the same op id saves once and returns the first save, even
/// after the version moved on; another op id with the stale version still conflicts.
pub async fn repeated_checkpoint_put_with_one_op_id_saves_once(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let cp = &fx.checkpointer;
    let op = OpId::new();
    let put = snapshot(1, vec![Message::user("q"), Message::assistant("a")]).with_op_id(op);
    let first = cp.put(&id, put.clone(), 0).await.unwrap();
    assert_eq!((first.version, first.log_len), (1, 2));
    let again = cp.put(&id, put.clone(), 0).await.expect("a repeat succeeds instead of conflicting");
    assert_eq!((again.version, again.log_len, again.step), (1, 2, 1));
    assert_eq!(cp.messages(&id, 0..10).await.unwrap().len(), 2, "messages appended once");
    let next = cp.put(&id, snapshot(2, vec![Message::user("q2")]).with_op_id(OpId::new()), 1).await.unwrap();
    assert_eq!((next.version, next.log_len), (2, 3));
    let late = cp.put(&id, put.clone(), 0).await.expect("still recognized after a later put");
    assert_eq!((late.version, late.log_len), (1, 2));
    assert_eq!(cp.version(&id).await.unwrap(), 2);
    assert_eq!(cp.messages(&id, 0..10).await.unwrap().len(), 3);
    let stale = cp.put(&id, put.with_op_id(OpId::new()), 0).await;
    assert!(matches!(stale, Err(Error::Conflict { expected: 0, actual: 2, .. })), "{stale:?}");
}

fn turn(step: u64, messages: Vec<Message>, expected_version: u64) -> TurnCommit {
    TurnCommit {
        checkpoint: snapshot(step, messages).with_op_id(OpId::new()),
        expected_version,
        interaction: Some(Interaction::tokens(step, 2 * step).with_op_id(OpId::new())),
        merge_metadata: None,
    }
}

/// `begin_turn` reads the session and its version, and the latest checkpoint with its whole
/// log only when the cached version is not the latest; absent sessions read as `None`.
pub async fn turn_begin_reads_the_latest_state_only_when_the_cache_is_stale(fx: StoreFixture) {
    assert_eq!(fx.turns.begin_turn(&sid("nobody"), None).await.unwrap(), None);
    let created = fx.store.create(NewSession::for_user(user("ann")).with_metadata(meta(json!({"a": 1})))).await;
    let id = created.unwrap().id;
    let start = fx.turns.begin_turn(&id, None).await.unwrap().expect("live");
    assert_eq!((start.version, start.latest), (0, None));
    assert_eq!(start.session.user_id, Some(user("ann")));
    assert_eq!(start.session.metadata, meta(json!({"a": 1})));
    let first = vec![Message::user("a"), Message::assistant("b")];
    fx.checkpointer.put(&id, snapshot(1, first.clone()), 0).await.unwrap();
    let second = fx.checkpointer.put(&id, snapshot(2, vec![Message::user("c")]), 1).await.unwrap();
    for cached in [None, Some(0), Some(1), Some(7)] {
        let start = fx.turns.begin_turn(&id, cached).await.unwrap().expect("live");
        assert_eq!(start.version, 2, "cached {cached:?}");
        let latest = start.latest.expect("a stale cache gets the latest checkpoint");
        assert_eq!(latest.checkpoint, second);
        assert_eq!(latest.messages, [first.clone(), vec![Message::user("c")]].concat());
    }
    let warm = fx.turns.begin_turn(&id, Some(2)).await.unwrap().expect("live");
    assert_eq!((warm.version, warm.latest), (2, None));
    assert_eq!(warm.session, fx.store.get(&id).await.unwrap().unwrap());
    fx.clock.advance(Duration::from_millis(3));
    let again = fx.turns.begin_turn(&id, Some(2)).await.unwrap().expect("live");
    assert_eq!(again.session.last_active, warm.session.last_active, "reads do not extend the timeout");
    assert!(fx.store.end(&id).await.unwrap());
    assert_eq!(fx.turns.begin_turn(&id, Some(2)).await.unwrap(), None);
}

/// One commit saves the checkpoint with its messages, counts the interaction and merges the
/// metadata, and bumps `last_active`.
pub async fn turn_commit_saves_checkpoint_interaction_and_metadata(fx: StoreFixture) {
    let new = NewSession::default().with_metadata(meta(json!({"keep": true, "plan": "free"})));
    let id = fx.store.create(new).await.unwrap().id;
    fx.clock.advance(Duration::from_millis(5));
    let mut commit = turn(1, vec![Message::user("q"), Message::assistant("a")], 0);
    commit.merge_metadata = Some(meta(json!({"plan": "pro", "n": 1})));
    let saved = fx.turns.commit_turn(&id, commit).await.unwrap();
    assert_eq!((saved.checkpoint.version, saved.checkpoint.log_len, saved.checkpoint.step), (1, 2, 1));
    assert_eq!(saved.checkpoint.created_at.timestamp_millis(), fx.clock.now_ms());
    let stats = saved.stats.expect("an interaction was tracked");
    assert_eq!((stats.interactions, stats.total_tokens_in, stats.total_tokens_out), (1, 1, 2));
    let merged = meta(json!({"keep": true, "plan": "pro", "n": 1}));
    assert_eq!(saved.metadata.as_ref(), Some(&merged));
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!((&session.stats, &session.metadata), (&stats, &merged));
    assert_eq!(session.last_active.timestamp_millis(), fx.clock.now_ms());
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(saved.checkpoint));
    assert_eq!(fx.checkpointer.messages(&id, 0..10).await.unwrap().len(), 2);

    let bare = TurnCommit { interaction: None, ..turn(2, vec![Message::user("r")], 1) };
    let saved = fx.turns.commit_turn(&id, bare).await.unwrap();
    assert_eq!((saved.checkpoint.version, saved.checkpoint.log_len), (2, 3));
    assert_eq!((saved.stats, saved.metadata), (None, None));
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().stats, stats, "no interaction, no count");
}

/// Reads back what a failed commit must not have changed.
async fn assert_untouched(fx: &StoreFixture, id: &SessionId, before: &crate::Session, version: u64, log: usize) {
    let now = fx.store.get(id).await.unwrap().unwrap();
    assert_eq!((&now.metadata, &now.stats, now.last_active), (&before.metadata, &before.stats, before.last_active));
    assert_eq!(fx.checkpointer.version(id).await.unwrap(), version);
    assert_eq!(fx.checkpointer.messages(id, 0..100).await.unwrap().len(), log);
}

/// A commit on a stale version is `Conflict` and writes nothing: no checkpoint, no messages,
/// no interaction, no metadata.
pub async fn turn_commit_conflict_writes_nothing(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    fx.checkpointer.put(&id, snapshot(1, vec![Message::user("theirs")]), 0).await.unwrap();
    let before = fx.store.get(&id).await.unwrap().unwrap();
    fx.clock.advance(Duration::from_millis(5));
    let mut commit = turn(1, vec![Message::user("mine")], 0);
    commit.merge_metadata = Some(meta(json!({"lost": 1})));
    let err = fx.turns.commit_turn(&id, commit).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { expected: 0, actual: 1, .. }), "{err:?}");
    assert_untouched(&fx, &id, &before, 1, 1).await;
}

/// A commit whose merged metadata would exceed the limit is `MetadataTooLarge` and writes
/// nothing, the checkpoint included.
pub async fn turn_commit_over_the_metadata_limit_writes_nothing(fx: StoreFixture) {
    let half = "x".repeat(fx.metadata_limit / 2 + 1);
    let id = fx.store.create(NewSession::default().with_metadata(meta(json!({"a": half})))).await.unwrap().id;
    let before = fx.store.get(&id).await.unwrap().unwrap();
    let mut commit = turn(1, vec![Message::user("q")], 0);
    commit.merge_metadata = Some(meta(json!({"b": half})));
    let err = fx.turns.commit_turn(&id, commit).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { .. }), "{err:?}");
    assert_untouched(&fx, &id, &before, 0, 0).await;
}

/// A commit whose checkpoint or metadata nests too deep is `NestingTooDeep` and writes nothing.
pub async fn turn_commit_nested_too_deep_writes_nothing(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let before = fx.store.get(&id).await.unwrap().unwrap();
    let mut deep_state = turn(1, vec![Message::user("q")], 0);
    deep_state.checkpoint.state = nested(MAX_JSON_DEPTH - 1);
    let mut deep_metadata = turn(1, vec![Message::user("q")], 0);
    deep_metadata.merge_metadata = Some(meta(json!({"deep": nested(MAX_JSON_DEPTH - 1)})));
    for commit in [deep_state, deep_metadata] {
        let err = fx.turns.commit_turn(&id, commit).await.unwrap_err();
        assert!(is_too_deep(&err), "{err:?}");
        assert_untouched(&fx, &id, &before, 0, 0).await;
    }
}

/// Commits to unknown, ended or expired sessions are `SessionNotFound` and create nothing.
pub async fn turn_commit_on_dead_session_is_not_found(fx: StoreFixture) {
    let err = fx.turns.commit_turn(&sid("nobody"), turn(1, Vec::new(), 0)).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "{err:?}");
    assert!(fx.store.get(&sid("nobody")).await.unwrap().is_none());
    let id = fx.store.create(expiring(None, TEN_SECONDS)).await.unwrap().id;
    fx.clock.advance(Duration::from_secs(11));
    let err = fx.turns.commit_turn(&id, turn(1, vec![Message::user("q")], 0)).await.unwrap_err();
    assert!(matches!(err, Error::SessionNotFound(_)), "{err:?}");
    assert!(fx.store.get(&id).await.unwrap().is_none(), "not resurrected");
}

/// A commit repeated with the same op ids applies once and answers with the first save,
/// even after another commit moved the version on.
pub async fn repeated_turn_commit_with_one_op_id_applies_once(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let mut commit = turn(1, vec![Message::user("q"), Message::assistant("a")], 0);
    commit.merge_metadata = Some(meta(json!({"k": "v"})));
    let first = fx.turns.commit_turn(&id, commit.clone()).await.unwrap();
    let again = fx.turns.commit_turn(&id, commit.clone()).await.expect("a repeat succeeds instead of conflicting");
    assert_eq!((again.checkpoint.version, again.checkpoint.log_len), (1, 2));
    assert_eq!(again.stats.map(|s| s.interactions), Some(1), "counted once");
    fx.turns.commit_turn(&id, turn(2, vec![Message::user("q2")], 1)).await.unwrap();
    let late = fx.turns.commit_turn(&id, commit).await.expect("still recognized after a later commit");
    assert_eq!((late.checkpoint.version, late.checkpoint.log_len), (1, 2));
    let session = fx.store.get(&id).await.unwrap().unwrap();
    assert_eq!(session.stats.interactions, 2);
    assert_eq!(session.metadata, meta(json!({"k": "v"})));
    assert_eq!(fx.checkpointer.version(&id).await.unwrap(), 2);
    assert_eq!(fx.checkpointer.messages(&id, 0..10).await.unwrap().len(), 3);
    assert_eq!(first.checkpoint.version, 1);
}

fn numbered(range: std::ops::Range<u64>) -> Vec<Message> {
    range
        .map(|i| if i % 2 == 0 { Message::user(format!("m{i}")) } else { Message::assistant(format!("m{i}")) })
        .collect()
}

/// A `put` with a log start drops the positions before it in the same write: positions stay
/// absolute, reads are clamped to what remains, an older checkpoint reads the rest of its
/// range, `begin_turn` reads only what remains, and the start never moves back.
pub async fn log_cut_drops_the_positions_before_it(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    let first = fx.checkpointer.put(&id, snapshot(1, numbered(0..4)), 0).await.unwrap();
    assert_eq!((first.log_start, first.log_len), (0, 4));
    let cut = fx.checkpointer.put(&id, snapshot(2, numbered(4..6)).with_log_start(3), 1).await.unwrap();
    assert_eq!((cut.version, cut.log_start, cut.log_len), (2, 3, 6));
    assert_eq!(cut.log_range(), 3..6);
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap(), Some(cut.clone()));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(3..6), "clamped to the start");
    assert_eq!(fx.checkpointer.messages(&id, 4..5).await.unwrap(), numbered(4..5), "positions stay absolute");
    assert!(fx.checkpointer.messages(&id, 0..3).await.unwrap().is_empty(), "dropped");
    let old = fx.checkpointer.checkpoint(&id, 1).await.unwrap().unwrap();
    assert_eq!(old.log_range(), 0..4, "an older checkpoint keeps the range it saw");
    assert_eq!(fx.checkpointer.messages(&id, old.log_range()).await.unwrap(), numbered(3..4), "and reads what remains");
    let start = fx.turns.begin_turn(&id, None).await.unwrap().unwrap().latest.unwrap();
    assert_eq!((start.checkpoint, start.messages), (cut, numbered(3..6)));

    // Back before the start, or at it: nothing more is dropped, the start stays.
    let kept = fx.checkpointer.put(&id, snapshot(3, numbered(6..7)).with_log_start(1), 2).await.unwrap();
    assert_eq!((kept.log_start, kept.log_len), (3, 7));
    let none = fx.checkpointer.put(&id, snapshot(4, Vec::new()), 3).await.unwrap();
    assert_eq!((none.log_start, none.log_len), (3, 7), "a put without a cut keeps the start");
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(3..7));
    // Up to the end: an empty log that still knows its length.
    let empty = fx.checkpointer.put(&id, snapshot(5, Vec::new()).with_log_start(7), 4).await.unwrap();
    assert_eq!((empty.log_start, empty.log_len), (7, 7));
    assert!(fx.checkpointer.messages(&id, 0..100).await.unwrap().is_empty());
    let start = fx.turns.begin_turn(&id, Some(1)).await.unwrap().unwrap().latest.unwrap();
    assert!(start.messages.is_empty());
    let next = fx.checkpointer.put(&id, snapshot(6, numbered(7..9)), 5).await.unwrap();
    assert_eq!((next.log_start, next.log_len), (7, 9));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(7..9));
}

/// A cut past the log's end (a turn that added more than it keeps): the positions in between
/// are never written and the messages go at the cut.
pub async fn log_cut_past_the_end_places_messages_at_the_cut(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    fx.checkpointer.put(&id, snapshot(1, numbered(0..3)), 0).await.unwrap();
    let saved = fx.checkpointer.put(&id, snapshot(2, numbered(5..7)).with_log_start(5), 1).await.unwrap();
    assert_eq!((saved.log_start, saved.log_len), (5, 7));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(5..7));
    assert_eq!(fx.checkpointer.messages(&id, 6..7).await.unwrap(), numbered(6..7));
    let more = fx.checkpointer.put(&id, snapshot(3, numbered(7..8)), 2).await.unwrap();
    assert_eq!((more.log_start, more.log_len), (5, 8));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(5..8));
}

/// A commit's cut is part of the commit: a commit that fails (a stale version) cuts nothing,
/// one that succeeds cuts with its checkpoint and interaction, and a repeat with the same op id
/// answers the first save and cuts nothing more.
pub async fn turn_commit_cuts_the_log_atomically_and_once(fx: StoreFixture) {
    let id = fx.store.create(NewSession::default()).await.unwrap().id;
    fx.turns.commit_turn(&id, turn(1, numbered(0..4), 0)).await.unwrap();
    let mut stale = turn(2, numbered(4..6), 0);
    stale.checkpoint.log_start = 4;
    let err = fx.turns.commit_turn(&id, stale).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(0..4), "nothing cut");
    assert_eq!(fx.checkpointer.latest(&id).await.unwrap().unwrap().log_start, 0);

    let mut commit = turn(2, numbered(4..6), 1);
    commit.checkpoint.log_start = 2;
    let saved = fx.turns.commit_turn(&id, commit.clone()).await.unwrap();
    assert_eq!((saved.checkpoint.version, saved.checkpoint.log_start, saved.checkpoint.log_len), (2, 2, 6));
    assert_eq!(saved.stats.map(|s| s.interactions), Some(2));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(2..6));
    let mut next = turn(3, numbered(6..7), 2);
    next.checkpoint.log_start = 6;
    fx.turns.commit_turn(&id, next).await.unwrap();
    let again = fx.turns.commit_turn(&id, commit).await.expect("a repeat answers the first save");
    assert_eq!((again.checkpoint.version, again.checkpoint.log_start, again.checkpoint.log_len), (2, 2, 6));
    assert_eq!(fx.checkpointer.messages(&id, 0..100).await.unwrap(), numbered(6..7), "nothing appended or cut again");
    assert_eq!(fx.store.get(&id).await.unwrap().unwrap().stats.interactions, 3);
    let start = fx.turns.begin_turn(&id, None).await.unwrap().unwrap().latest.unwrap();
    assert_eq!((start.checkpoint.log_range(), start.messages), (6..7, numbered(6..7)));
}

#[cfg(test)]
mod completeness {
    /// Fails when a scenario of this module is missing from `session_store_conformance!`
    /// (or the macro names one that is not a `pub async fn` here).
    #[test]
    fn the_macro_lists_every_scenario() {
        let mut listed = crate::__store_scenarios!(names).to_vec();
        let mut defined = super::scenario_names(include_str!("testing.rs"));
        assert!(defined.len() > 30, "the parser found the scenarios: {defined:?}");
        listed.sort_unstable();
        defined.sort_unstable();
        assert_eq!(listed, defined, "session_store_conformance! must list every scenario of lgadk_core::testing");
    }
}

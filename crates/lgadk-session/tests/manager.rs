//! `SessionManager` behaviour on top of the store contract: defaults, limits, analytics, reaper.
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lgadk_core::{
    Error, Interaction, ManualClock, Metadata, NewSession, OpId, Outcome, Page, SessionId, Timeout, UserId,
};
use lgadk_session::serde_json::{self, json};
use lgadk_session::{InMemoryStore, SessionManager, metadata};

fn meta(value: serde_json::Value) -> Metadata {
    serde_json::from_value(value).unwrap()
}

fn manager_with_clock() -> (SessionManager, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = InMemoryStore::builder().with_clock(clock.clone()).build();
    (SessionManager::builder(store).with_default_timeout(Some(Duration::from_secs(60))).build(), clock)
}

#[tokio::test]
async fn default_timeout_applies_to_sessions_created_without_one() {
    let (sessions, clock) = manager_with_clock();
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let session = sessions.get_session(&id).await.unwrap().unwrap();
    assert_eq!(session.timeout, Some(Duration::from_secs(60)));
    let forever = sessions.create_session_with(NewSession::default().with_timeout(Timeout::Never)).await.unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(!sessions.session_exists(&id).await.unwrap());
    assert!(sessions.session_exists(&forever.id).await.unwrap());
    assert_eq!(sessions.clear_expired_sessions().await.unwrap(), 1);
}

#[tokio::test]
async fn no_default_timeout_means_sessions_never_expire() {
    let store = InMemoryStore::new();
    let sessions = SessionManager::builder(store).with_default_timeout(None).build();
    let session = sessions.create_session_with(NewSession::default()).await.unwrap();
    assert_eq!(session.timeout, None);
}

#[tokio::test]
async fn summary_reports_the_seed_analytics() {
    let (sessions, clock) = manager_with_clock();
    let alice = UserId::parse("alice").unwrap();
    let id = sessions.create_session(&alice, metadata! {"device" => "laptop"}).await.unwrap();
    sessions.track_interaction(&id, 10, 30, Duration::from_millis(200)).await.unwrap();
    clock.advance(Duration::from_millis(1500));
    sessions.track_interaction(&id, 20, 50, Duration::from_millis(400)).await.unwrap();
    let summary = sessions.get_session_summary(&id).await.unwrap().unwrap();
    assert_eq!(summary.interactions, 2);
    assert_eq!((summary.total_tokens_in, summary.total_tokens_out), (30, 80));
    assert_eq!(summary.avg_response_time, Duration::from_millis(300));
    assert_eq!(summary.duration, Duration::from_millis(1500));
    assert_eq!(summary.user_id, Some(alice));
    assert_eq!(summary.metadata, meta(json!({"device": "laptop"})));
}

#[tokio::test]
async fn metadata_view_keeps_record_fields_out_of_the_users_map() {
    let (sessions, _) = manager_with_clock();
    let alice = UserId::parse("alice").unwrap();
    let id = sessions.create_session(Some(alice.clone()), meta(json!({"user_id": "spoofed"}))).await.unwrap();
    let view = sessions.get_session_metadata(&id).await.unwrap().unwrap();
    assert_eq!(view.user_id, Some(alice));
    assert_eq!(view.metadata, meta(json!({"user_id": "spoofed"})), "no key name is reserved");
    assert_eq!(view.get("user_id"), Some(&json!("spoofed")), "the view reads as the user's map");
    assert_eq!((view["user_id"].as_str(), view.len()), (Some("spoofed"), 1));
    assert_eq!(view.into_metadata(), metadata! {"user_id" => "spoofed"});
    let merged = sessions.update_session_metadata(&id, meta(json!({"plan": "premium"})), true).await.unwrap();
    assert_eq!(merged, meta(json!({"user_id": "spoofed", "plan": "premium"})));
    let replaced = sessions.update_session_metadata(&id, meta(json!({"only": 1})), false).await.unwrap();
    assert_eq!(replaced, meta(json!({"only": 1})));
}

/// One rule for absent sessions: every reader answers `None`/`false`/leaves it out, every
/// writer fails with `SessionNotFound` and does not bring it back.
async fn assert_absent(sessions: &SessionManager, id: &SessionId, user: &UserId, why: &str) {
    assert_eq!(sessions.get_session(id).await.unwrap(), None, "get_session: {why}");
    assert_eq!(sessions.get_session_metadata(id).await.unwrap(), None, "get_session_metadata: {why}");
    assert_eq!(sessions.get_session_summary(id).await.unwrap(), None, "summary: {why}");
    assert!(!sessions.session_exists(id).await.unwrap(), "session_exists: {why}");
    assert!(!sessions.get_user_sessions(user).await.unwrap().contains(id), "get_user_sessions: {why}");
    assert!(!sessions.user_sessions(user, Page::default()).await.unwrap().ids.contains(id), "user_sessions: {why}");

    let not_found = |result: Result<(), Error>, op: &str| match result {
        Err(Error::SessionNotFound(got)) => assert_eq!(&got, id, "{op}: {why}"),
        other => panic!("{op} on an absent session ({why}) gave {other:?}"),
    };
    not_found(sessions.track_interaction(id, 1, 1, Duration::ZERO).await.map(drop), "track_interaction");
    not_found(sessions.record_interaction(id, Interaction::tokens(1, 1)).await.map(drop), "record_interaction");
    not_found(sessions.update_session_metadata(id, metadata! {"a" => 1}, true).await.map(drop), "update (merge)");
    not_found(sessions.update_session_metadata(id, metadata! {"a" => 1}, false).await.map(drop), "update (replace)");
    not_found(sessions.update_session(id).await, "touch");
    assert_eq!(sessions.get_session(id).await.unwrap(), None, "a failed write brought it back: {why}");
    assert!(!sessions.end_session(id).await.unwrap(), "end_session: {why}");
}

#[tokio::test]
async fn absent_sessions_read_as_none_and_writes_to_them_fail() {
    let (sessions, clock) = manager_with_clock();
    let alice = UserId::parse("alice").unwrap();
    assert_absent(&sessions, &SessionId::parse("never-created").unwrap(), &alice, "unknown").await;

    let ended = sessions.create_session(&alice, metadata! {"k" => "v"}).await.unwrap();
    sessions.track_interaction(&ended, 1, 2, Duration::from_millis(5)).await.unwrap();
    assert!(sessions.end_session(&ended).await.unwrap());
    assert_absent(&sessions, &ended, &alice, "ended").await;

    let expired = sessions.create_session(&alice, metadata! {"k" => "v"}).await.unwrap();
    assert!(sessions.get_session_summary(&expired).await.unwrap().is_some());
    clock.advance(Duration::from_secs(61));
    assert_absent(&sessions, &expired, &alice, "expired").await;
}

#[tokio::test]
async fn id_arguments_take_ids_or_text_and_reject_bad_text() {
    let (sessions, _) = manager_with_clock();
    let alice = UserId::parse("alice").unwrap();
    let owned = String::from("alice");
    let ids = [
        sessions.create_session("alice", Metadata::new()).await.unwrap(),
        sessions.create_session(&owned, Metadata::new()).await.unwrap(),
        sessions.create_session(owned.clone(), Metadata::new()).await.unwrap(),
        sessions.create_session(&alice, Metadata::new()).await.unwrap(),
        sessions.create_session(alice.clone(), Metadata::new()).await.unwrap(),
        sessions.create_session(Some(alice.clone()), Metadata::new()).await.unwrap(),
    ];
    let anonymous = sessions.create_session(None, Metadata::new()).await.unwrap();
    assert_eq!(sessions.get_session(&anonymous).await.unwrap().unwrap().user_id, None);
    let mut listed = sessions.get_user_sessions("alice").await.unwrap();
    listed.sort();
    let mut expected = ids.to_vec();
    expected.sort();
    assert_eq!(listed, expected, "every spelling of the owner is the same user");
    assert_eq!(sessions.user_sessions(&owned, Page::first(2)).await.unwrap().ids.len(), 2);

    // A session id as text works everywhere a `&SessionId` does.
    let text = ids[0].to_string();
    sessions.track_interaction(text.as_str(), 3, 4, Duration::from_millis(1)).await.unwrap();
    sessions.update_session(&text).await.unwrap();
    sessions.update_session_metadata(text.clone(), metadata! {"plan" => "pro"}, true).await.unwrap();
    assert_eq!(sessions.get_session_metadata(text.as_str()).await.unwrap().unwrap().get("plan"), Some(&json!("pro")));
    assert_eq!(sessions.get_session_summary(&text).await.unwrap().unwrap().total_tokens_out, 4);
    assert!(sessions.session_exists(ids[0].clone()).await.unwrap());
    assert!(sessions.end_session(text).await.unwrap());

    // Malformed text is the call's error, of the right kind, before the store is asked.
    let bad_session =
        |result: Result<(), Error>| assert!(matches!(result, Err(Error::InvalidSessionId { .. })), "{result:?}");
    bad_session(sessions.get_session("a b").await.map(drop));
    bad_session(sessions.get_session_metadata("a b").await.map(drop));
    bad_session(sessions.get_session_summary("").await.map(drop));
    bad_session(sessions.session_exists("{x}").await.map(drop));
    bad_session(sessions.track_interaction("a b", 1, 1, Duration::ZERO).await.map(drop));
    bad_session(sessions.record_interaction("a b", Interaction::default()).await.map(drop));
    bad_session(sessions.update_session_metadata("a b", Metadata::new(), true).await.map(drop));
    bad_session(sessions.update_session("a b").await);
    bad_session(sessions.end_session("a*").await.map(drop));
    let bad_user =
        |result: Result<(), Error>| assert!(matches!(result, Err(Error::InvalidUserId { .. })), "{result:?}");
    bad_user(sessions.create_session("bob smith", Metadata::new()).await.map(drop));
    bad_user(sessions.get_user_sessions("bob smith").await.map(drop));
    bad_user(sessions.user_sessions("", Page::default()).await.map(drop));
    assert_eq!(sessions.clear_expired_sessions().await.unwrap(), 0);
}

#[tokio::test]
async fn manager_limit_rejects_oversized_metadata_before_the_store() {
    let store = InMemoryStore::new();
    let sessions = SessionManager::builder(store).with_metadata_limit(32).build();
    let big = meta(json!({"blob": "x".repeat(64)}));
    let err = sessions.create_session(None, big.clone()).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { limit: 32, .. }), "{err:?}");
    let id = sessions.create_session(None, meta(json!({"a": 1}))).await.unwrap();
    let err = sessions.update_session_metadata(&id, big, true).await.unwrap_err();
    assert!(matches!(err, Error::MetadataTooLarge { .. }), "{err:?}");
    assert_eq!(sessions.get_session(&id).await.unwrap().unwrap().metadata, meta(json!({"a": 1})));
}

#[tokio::test]
async fn user_sessions_list_every_page() {
    let (sessions, clock) = manager_with_clock();
    let alice = UserId::parse("alice").unwrap();
    let mut created = Vec::new();
    for _ in 0..1205 {
        created.push(sessions.create_session(Some(alice.clone()), Metadata::new()).await.unwrap());
        clock.advance(Duration::from_millis(1));
    }
    created.reverse();
    assert_eq!(sessions.get_user_sessions(&alice).await.unwrap(), created);
}

#[tokio::test(start_paused = true)]
async fn reaper_purges_until_its_handle_is_dropped() {
    let clock = ManualClock::new(0);
    let store = InMemoryStore::builder().with_clock(clock.clone()).build();
    let sessions = SessionManager::builder(store).with_default_timeout(Some(Duration::from_secs(1))).build();
    let reaper = sessions.spawn_reaper(Duration::from_secs(5)).unwrap();
    let first = sessions.create_session(None, Metadata::new()).await.unwrap();
    clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reaped = sessions.store().purge_expired().await.unwrap();
    assert_eq!(reaped, 0, "the reaper already purged {first}");

    drop(reaper);
    sessions.create_session(None, Metadata::new()).await.unwrap();
    clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sessions.clear_expired_sessions().await.unwrap(), 1, "a dropped reaper purges nothing");
}

#[test]
fn reaper_outside_a_runtime_is_a_typed_error() {
    let sessions = SessionManager::in_memory();
    assert!(matches!(sessions.spawn_reaper(Duration::from_secs(1)), Err(Error::NoRuntime { .. })));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    assert!(matches!(sessions.spawn_reaper(Duration::ZERO), Err(Error::InvalidConfig { .. })));
}

/// A store that applies writes but loses the answer of the first `lose` of them, as a server
/// that ran a command whose reply never arrived: the call fails with `Outcome::Unknown`.
#[derive(Debug)]
struct LosesAnswers {
    inner: InMemoryStore,
    lose: Arc<AtomicUsize>,
}

impl LosesAnswers {
    fn new(lose: usize) -> (Self, Arc<AtomicUsize>) {
        let lose = Arc::new(AtomicUsize::new(lose));
        (Self { inner: InMemoryStore::new(), lose: Arc::clone(&lose) }, lose)
    }

    fn answer<T>(&self, applied: lgadk_core::Result<T>) -> lgadk_core::Result<T> {
        let lost = self.lose.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        match applied {
            Ok(_) if lost => Err(Error::backend_unknown("lossy", "write", std::io::Error::other("reply lost"))),
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl lgadk_core::SessionStore for LosesAnswers {
    fn backend(&self) -> &'static str {
        "lossy"
    }
    async fn create(&self, new: NewSession) -> lgadk_core::Result<lgadk_core::Session> {
        self.answer(self.inner.create(new).await)
    }
    async fn get(&self, id: &SessionId) -> lgadk_core::Result<Option<lgadk_core::Session>> {
        self.inner.get(id).await
    }
    async fn track_interaction(
        &self,
        id: &SessionId,
        turn: Interaction,
    ) -> lgadk_core::Result<lgadk_core::SessionStats> {
        self.answer(self.inner.track_interaction(id, turn).await)
    }
    async fn touch(&self, id: &SessionId) -> lgadk_core::Result<()> {
        self.inner.touch(id).await
    }
    async fn update_metadata(
        &self,
        id: &SessionId,
        update: lgadk_core::MetadataUpdate,
    ) -> lgadk_core::Result<Metadata> {
        self.inner.update_metadata(id, update).await
    }
    async fn list_user_sessions(
        &self,
        user: &UserId,
        page: lgadk_core::Page,
    ) -> lgadk_core::Result<lgadk_core::SessionPage> {
        self.inner.list_user_sessions(user, page).await
    }
    async fn end(&self, id: &SessionId) -> lgadk_core::Result<bool> {
        self.inner.end(id).await
    }
    async fn purge_expired(&self) -> lgadk_core::Result<usize> {
        self.inner.purge_expired().await
    }
}

#[async_trait::async_trait]
impl lgadk_core::Checkpointer for LosesAnswers {
    async fn version(&self, id: &SessionId) -> lgadk_core::Result<u64> {
        self.inner.version(id).await
    }
    async fn put(
        &self,
        id: &SessionId,
        checkpoint: lgadk_core::NewCheckpoint,
        expected_version: u64,
    ) -> lgadk_core::Result<lgadk_core::Checkpoint> {
        self.inner.put(id, checkpoint, expected_version).await
    }
    async fn latest(&self, id: &SessionId) -> lgadk_core::Result<Option<lgadk_core::Checkpoint>> {
        self.inner.latest(id).await
    }
    async fn checkpoint(&self, id: &SessionId, version: u64) -> lgadk_core::Result<Option<lgadk_core::Checkpoint>> {
        self.inner.checkpoint(id, version).await
    }
    async fn list(&self, id: &SessionId, limit: usize) -> lgadk_core::Result<Vec<lgadk_core::Checkpoint>> {
        self.inner.list(id, limit).await
    }
    async fn messages(
        &self,
        id: &SessionId,
        range: std::ops::Range<u64>,
    ) -> lgadk_core::Result<Vec<lgadk_core::Message>> {
        self.inner.messages(id, range).await
    }
    async fn delete(&self, id: &SessionId) -> lgadk_core::Result<bool> {
        self.inner.delete(id).await
    }
}

/// An applied write whose answer was lost is repeated once with the same op id: the manager
/// returns its success and the store counted it once; a creation repeats into its session,
/// not `AlreadyExists`.
#[tokio::test]
async fn writes_with_unknown_outcome_are_repeated_once_with_their_op_id() {
    let (store, lose) = LosesAnswers::new(1);
    let sessions = SessionManager::new(store);
    let new = NewSession::default().with_id(SessionId::parse("lossy-1").unwrap());
    let created = sessions.create_session_with(new).await.expect("the repeat finds the session it created");
    lose.store(1, Ordering::SeqCst);
    let stats = sessions.track_interaction(&created.id, 3, 5, Duration::from_millis(10)).await.unwrap();
    assert_eq!((stats.interactions, stats.total_tokens_in), (1, 3), "applied once, though sent twice");
    assert_eq!(lose.load(Ordering::SeqCst), 0, "the answer was lost once");
}

/// With repeats turned off the unknown outcome reaches the caller, who may repeat the same
/// interaction (same op id) and still have it counted once.
#[tokio::test]
async fn without_repeats_the_caller_sees_the_unknown_outcome_and_may_repeat_it() {
    let (store, lose) = LosesAnswers::new(0);
    let sessions = SessionManager::builder(store).with_unknown_outcome_retries(0).build();
    let id = sessions.create_session(None, Metadata::new()).await.unwrap();
    let turn = Interaction::tokens(1, 1).with_op_id(OpId::new());
    lose.store(1, Ordering::SeqCst);
    let err = sessions.record_interaction(&id, turn.clone()).await.unwrap_err();
    assert_eq!(err.outcome(), Some(Outcome::Unknown));
    assert!(!err.is_retryable());
    let again = sessions.record_interaction(&id, turn).await.unwrap();
    assert_eq!(again.interactions, 1, "the caller's repeat is counted once");
}

impl lgadk_core::TurnStore for LosesAnswers {}

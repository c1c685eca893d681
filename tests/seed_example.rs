//! The seed example (`examples/enhanced_session_management.rs`) as a program people run: its
//! `--help`, the order of its transcript, and what a failed run leaves behind. The example's
//! own source is compiled into this test, so what is tested is exactly what `cargo run
//! --example` runs, with no second build and no subprocess.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a failure is a panic")]

#[path = "../examples/enhanced_session_management.rs"]
#[allow(dead_code, unreachable_pub, reason = "`main` is the binary's; the tests call `cli` and `scenario`")]
mod example;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use lgadk::SessionManager;
use lgadk::core::{ChatModel, ChatRequest, ChatResponse, ModelErrorKind, Result};
use lgadk_llm::{ModelRegistry, OfflineModel, OpenAiModel, RetryPolicy, ScriptedReply};

/// A transcript the example and a test model both write to, so their order can be checked.
#[derive(Debug, Clone, Default)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Transcript {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).unwrap()
    }
}

impl Write for Transcript {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const MODEL_CALLED: &str = "<model called>";

/// Writes a marker into the transcript when the model is asked, then answers offline.
#[derive(Debug)]
struct MarkingModel {
    inner: OfflineModel,
    transcript: Transcript,
}

#[async_trait]
impl ChatModel for MarkingModel {
    fn id(&self) -> &str {
        "marking"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        writeln!(self.transcript.clone(), "{MODEL_CALLED}").unwrap();
        self.inner.chat(request).await
    }
}

async fn cli(args: &[&str]) -> (ExitCode, String, String) {
    let (mut out, mut err) = (Transcript::default(), Transcript::default());
    let code = example::cli(args.iter().map(|arg| (*arg).to_owned()), &mut out, &mut err).await;
    (code, out.text(), err.text())
}

#[tokio::test]
async fn help_prints_providers_env_vars_and_backends_to_stdout_and_succeeds() {
    for flag in ["--help", "-h"] {
        let (code, out, err) = cli(&[flag]).await;
        assert_eq!(code, ExitCode::SUCCESS, "{flag}");
        assert!(err.is_empty(), "{flag} wrote to stderr: {err}");
        for provider in ModelRegistry::with_defaults().providers() {
            assert!(out.contains(&format!("{provider}/")) || out.contains(provider), "{provider} missing:\n{out}");
        }
        for needed in [
            "openai/<model>",
            "ollama/<model>",
            "offline",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "LGADK_REDIS_URL",
            "LGADK_DATABASE_URL",
            "--backend memory|redis|postgres",
            "--redis-url",
            "--database-url",
            "--model",
        ] {
            assert!(out.contains(needed), "--help does not mention {needed}:\n{out}");
        }
    }
    // `--help` wins wherever it stands, without running anything.
    let (code, out, _) = cli(&["--backend", "nowhere", "--help"]).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains("LGADK_REDIS_URL"));
}

#[tokio::test]
async fn bad_arguments_go_to_stderr_with_exit_code_2() {
    let (code, out, err) = cli(&["--frobnicate"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("unknown argument `--frobnicate`") && err.contains("--help"), "{err}");
    let (code, _, err) = cli(&["--model"]).await;
    assert_eq!(code, ExitCode::from(2));
    assert!(err.contains("--model needs a value"), "{err}");
    let (code, out, err) = cli(&["--backend", "sqlite"]).await;
    assert_eq!(code, ExitCode::FAILURE);
    assert!(out.is_empty() && err.contains("unknown backend `sqlite`"), "{out}{err}");
}

#[tokio::test]
async fn default_run_tells_the_whole_story_and_succeeds() {
    let (code, out, err) = cli(&[]).await;
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    assert!(err.is_empty(), "{err}");
    for line in [
        "  Alice: Hello! Can you tell me about machine learning?",
        "    - Interactions: 2",
        "\"subscription\":\"premium\"",
        "  Alice's session exists: false",
        "  Bob's session exists: false",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
}

#[tokio::test]
async fn each_users_line_is_printed_before_the_model_answers_it() {
    let transcript = Transcript::default();
    let model = MarkingModel { inner: OfflineModel::new(), transcript: transcript.clone() };
    example::scenario(Arc::new(model), SessionManager::in_memory(), &mut transcript.clone()).await.unwrap();

    let text = transcript.text();
    let lines: Vec<&str> = text.lines().collect();
    let said: Vec<usize> =
        (0..lines.len()).filter(|&i| lines[i].starts_with("  Alice: ") || lines[i].starts_with("  Bob: ")).collect();
    let called: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == MODEL_CALLED).collect();
    let answered: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("  Assistant: ")).collect();
    assert_eq!((said.len(), called.len(), answered.len()), (4, 4, 4), "{text}");
    for turn in 0..4 {
        assert!(said[turn] < called[turn], "turn {turn}: the user's line came after the model was asked:\n{text}");
        assert!(called[turn] < answered[turn], "turn {turn}:\n{text}");
    }
}

/// Runs the example's scenario with `model` on `sessions` and checks it failed and left no
/// session of its users behind.
async fn failed_run_leaves_nothing(model: Arc<dyn ChatModel>, sessions: SessionManager, ended: usize) {
    let mut out = Transcript::default();
    let err = example::scenario(model, sessions.clone(), &mut out).await.unwrap_err();
    assert!(matches!(err, lgadk::Error::Model { .. }), "{err:?}");
    for user in ["alice", "bob"] {
        assert_eq!(
            sessions.get_user_sessions(user).await.unwrap(),
            Vec::<lgadk::SessionId>::new(),
            "{user} has a session left"
        );
    }
    let text = out.text();
    assert_eq!(text.matches("  Ended session ").count(), ended, "{text}");
}

#[tokio::test]
async fn a_run_failing_on_an_unreachable_server_ends_the_session_it_created() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = OpenAiModel::builder("gpt-4o-mini")
        .with_base_url(format!("http://127.0.0.1:{port}/v1"))
        .with_api_key("test")
        .with_retry(RetryPolicy::none())
        .with_connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Alice's session is created before her first turn, which fails.
    failed_run_leaves_nothing(Arc::new(unreachable), SessionManager::in_memory(), 1).await;
}

#[tokio::test]
async fn a_run_failing_midway_ends_every_session_it_created() {
    // Alice's and Bob's first turns succeed (Bob's creates his session), Alice's second fails.
    let model = OfflineModel::scripted([
        ScriptedReply::text("one"),
        ScriptedReply::text("two"),
        ScriptedReply::failure(ModelErrorKind::ServerError, Some(503)),
    ]);
    failed_run_leaves_nothing(Arc::new(model), SessionManager::in_memory(), 2).await;
}

/// On Redis the sessions outlive the process: a failed run must not leave any there.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_failed_run_on_redis_leaves_no_session_behind() {
    let Some(server) = lgadk::session::testing::RedisServer::start() else { return };
    let model = OfflineModel::scripted([
        ScriptedReply::text("one"),
        ScriptedReply::text("two"),
        ScriptedReply::failure(ModelErrorKind::InvalidRequest, None),
    ]);
    let sessions = SessionManager::redis(&server.url()).await.unwrap();
    failed_run_leaves_nothing(Arc::new(model), sessions, 2).await;
    let fresh = SessionManager::redis(&server.url()).await.unwrap();
    assert!(fresh.get_user_sessions("alice").await.unwrap().is_empty());
    assert!(fresh.get_user_sessions("bob").await.unwrap().is_empty());
}

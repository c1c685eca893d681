//! LG-ADK's "enhanced session management" example, run for real: two users, two turns each,
//! session analytics, a metadata merge, and ending the sessions.
//!
//! ```text
//! cargo run --example enhanced_session_management                          # in memory, offline model
//! cargo run --example enhanced_session_management -- --help                # providers, env vars, backends
//! cargo run --example enhanced_session_management -- --model openai/gpt-4o-mini   # needs OPENAI_API_KEY
//! cargo run --example enhanced_session_management -- --model ollama/llama3
//! OPENAI_BASE_URL=http://localhost:8000/v1 cargo run --example enhanced_session_management -- --model openai/<served model>
//! cargo run --example enhanced_session_management -- --backend redis --redis-url redis://127.0.0.1:6390
//! cargo run --example enhanced_session_management --features postgres -- --backend postgres --database-url postgres://app@127.0.0.1:5433/app
//! RUST_LOG=lgadk=debug cargo run --example enhanced_session_management   # the spans, on stderr
//! ```
//!
//! If a turn fails (the model is unreachable, Redis goes away…), the sessions the run created
//! are ended before it exits with the error, so a failed run leaves nothing behind in Redis.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example prints its scenario")]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lgadk::core::{Agent, ChatModel, ChatRequest, ChatState, Error, Message, Result, RunContext, SessionId, UserId};
use lgadk::graph::{GraphBuilder, RunRequest};
use lgadk::{SessionManager, metadata, serde_json};

/// A simple agent that answers the user's queries with a model, keeping the conversation.
struct SimpleAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    system_prompt: String,
}

impl SimpleAgent {
    fn new(name: &str, model: Arc<dyn ChatModel>) -> Self {
        let system_prompt = "You are a helpful assistant that provides concise, accurate responses.".to_owned();
        Self { name: name.to_owned(), model, system_prompt }
    }
}

#[async_trait]
impl Agent<ChatState> for SimpleAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, state: &mut ChatState, ctx: &RunContext) -> Result<()> {
        state.messages.push(Message::user(state.input.clone()));
        let mut prompt = Vec::with_capacity(state.messages.len() + 1);
        prompt.push(Message::system(self.system_prompt.clone()));
        prompt.extend(state.messages.iter().cloned());
        let reply = self.model.chat(ChatRequest::new(prompt).with_temperature(0.7)).await?;
        // The usage the model reported; `run` tracks it on the session after the turn is saved.
        ctx.add_usage(reply.usage);
        state.scratchpad.clone_from(&reply.message.content);
        state.output.clone_from(&reply.message.content);
        state.messages.push(reply.message);
        Ok(())
    }
}

/// Writes one line of the transcript. A closed stdout (`| head`) must not abort the run
/// half-way: the sessions still get ended, so write errors are ignored.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

#[derive(Debug, PartialEq)]
struct Args {
    model: String,
    backend: String,
    redis_url: Option<String>,
    database_url: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Run(Args),
}

const USAGE: &str = "usage: enhanced_session_management [--model <provider/model>] [--backend memory|redis|postgres] [--redis-url <url>] [--database-url <url>]";

/// The `--help` text: options, the model providers `get_model` knows, the environment
/// variables and the session backends.
fn help() -> String {
    let providers = lgadk::llm::ModelRegistry::with_defaults().providers().join(", ");
    format!(
        "LG-ADK's enhanced session management example: two users talk to an assistant, with session
analytics, a metadata merge, and the sessions ended at the end (also when a turn fails).

{USAGE}

Options:
  --model <provider/model>  the model to answer with (default: offline)
  --backend memory|redis|postgres
                            where sessions live (default: memory)
  --redis-url <url>         the Redis server for --backend redis (default: $LGADK_REDIS_URL)
  --database-url <url>      the PostgreSQL database for --backend postgres
                            (default: $LGADK_DATABASE_URL)
  -h, --help                print this help

Model providers ({providers}):
  offline                   a deterministic model built in: no network, no key
  openai/<model>            OpenAI, e.g. openai/gpt-4o-mini; with OPENAI_BASE_URL set, any
                            OpenAI-compatible server (vLLM, LM Studio, LiteLLM, Ollama, ...)
  ollama/<model>            a local Ollama server, e.g. ollama/llama3 (no key)

Environment variables:
  OPENAI_API_KEY    the API key for openai/<model>; required for OpenAI's own endpoint
  OPENAI_BASE_URL   an OpenAI-compatible endpoint for openai/<model>,
                    e.g. http://localhost:8000/v1 (vLLM) or http://localhost:1234/v1 (LM Studio)
  OLLAMA_HOST       where ollama/<model> connects (default: http://localhost:11434)
  LGADK_REDIS_URL   the Redis URL for --backend redis when --redis-url is not given,
                    e.g. redis://127.0.0.1:6379/0
  LGADK_DATABASE_URL  the PostgreSQL URL for --backend postgres when --database-url is
                    not given, e.g. postgres://app@127.0.0.1:5432/app
  RUST_LOG          tracing filter for the spans on stderr, e.g. RUST_LOG=lgadk=debug

Session backends:
  memory   in this process; everything is gone when it exits
  redis    shared through Redis (lgadk built with the `redis` feature, a default one)
  postgres shared through PostgreSQL, tables in schema `lgadk` (lgadk built with the
           `postgres` feature)
"
    )
}

fn parse_args(args: impl IntoIterator<Item = String>) -> std::result::Result<Command, String> {
    let mut parsed =
        Args { model: "offline".to_owned(), backend: "memory".to_owned(), redis_url: None, database_url: None };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => parsed.model = value()?,
            "--backend" => parsed.backend = value()?,
            "--redis-url" => parsed.redis_url = Some(value()?),
            "--database-url" => parsed.database_url = Some(value()?),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Command::Run(parsed))
}

async fn session_manager(args: &Args) -> std::result::Result<SessionManager, String> {
    match args.backend.as_str() {
        "memory" => Ok(SessionManager::in_memory()),
        "redis" => redis_manager(args).await,
        "postgres" => postgres_manager(args).await,
        other => Err(format!("unknown backend `{other}`: use memory, redis or postgres")),
    }
}

#[cfg(feature = "redis")]
async fn redis_manager(args: &Args) -> std::result::Result<SessionManager, String> {
    let url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("LGADK_REDIS_URL").ok().filter(|url| !url.trim().is_empty()))
        .ok_or("--backend redis needs --redis-url <url> (or LGADK_REDIS_URL)")?;
    SessionManager::redis(&url).await.map_err(|err| format!("cannot use Redis at {url}: {}", chain(&err)))
}

#[cfg(not(feature = "redis"))]
async fn redis_manager(_: &Args) -> std::result::Result<SessionManager, String> {
    Err("this build has no Redis support: build lgadk with its `redis` feature".to_owned())
}

#[cfg(feature = "postgres")]
async fn postgres_manager(args: &Args) -> std::result::Result<SessionManager, String> {
    let url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("LGADK_DATABASE_URL").ok().filter(|url| !url.trim().is_empty()))
        .ok_or("--backend postgres needs --database-url <url> (or LGADK_DATABASE_URL)")?;
    // The URL may carry a password: it is not repeated in the error.
    SessionManager::postgres(&url).await.map_err(|err| format!("cannot use PostgreSQL: {}", chain(&err)))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_manager(_: &Args) -> std::result::Result<SessionManager, String> {
    Err("this build has no PostgreSQL support: build lgadk with its `postgres` feature".to_owned())
}

/// The error with its causes, `outer: inner: …`.
fn chain(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn secs(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

/// `RUST_LOG=lgadk=debug` prints the `session.*`, `graph.*` and `model.*` spans (one line when
/// each closes, with its timings) and their events on stderr; stdout keeps the transcript.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .try_init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    cli(std::env::args().skip(1), &mut std::io::stdout(), &mut std::io::stderr()).await
}

/// The whole program on explicit streams: `--help` goes to `out` with success, bad arguments
/// to `err` with exit code 2, a failed run to `err` with exit code 1.
pub(crate) async fn cli(
    args: impl IntoIterator<Item = String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> ExitCode {
    let args = match parse_args(args) {
        Ok(Command::Help) => {
            let _ = write!(out, "{}", help());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(args)) => args,
        Err(message) => {
            say!(
                err,
                "error: {message}\n{USAGE}\nRun with --help for the providers, environment variables and backends."
            );
            return ExitCode::from(2);
        }
    };
    match run(&args, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say!(err, "error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, out: &mut (dyn Write + Send)) -> std::result::Result<(), String> {
    let model = lgadk::get_model(&args.model).map_err(|err| format!("model `{}`: {}", args.model, chain(&err)))?;
    let session_manager = session_manager(args).await?;
    scenario(model, session_manager, out).await.map_err(|err| chain(&err))
}

/// The seed's conversation; if any step fails, the sessions it created are ended before the
/// error is returned.
pub(crate) async fn scenario(
    model: Arc<dyn ChatModel>,
    session_manager: SessionManager,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let mut created = Vec::new();
    let outcome = conversation(model, &session_manager, out, &mut created).await;
    if outcome.is_err() && !created.is_empty() {
        say!(out, "\n🧹 The run failed; ending the sessions it created:");
        for id in &created {
            match session_manager.end_session(id).await {
                Ok(true) => say!(out, "  Ended session {id}"),
                Ok(false) => say!(out, "  Session {id} was already gone"),
                Err(err) => say!(out, "  Could not end session {id}: {}", chain(&err)),
            }
        }
    }
    outcome
}

/// The session, or `SessionNotFound`: it was created by this run, so it should be live.
fn live<T>(found: Option<T>, id: &SessionId) -> Result<T> {
    found.ok_or_else(|| Error::SessionNotFound(id.clone()))
}

async fn conversation(
    model: Arc<dyn ChatModel>,
    session_manager: &SessionManager,
    out: &mut (dyn Write + Send),
    created: &mut Vec<SessionId>,
) -> Result<()> {
    let agent = SimpleAgent::new("assistant", model);
    let graph = GraphBuilder::new("conversational_assistant")
        .add_agent(agent)
        .configure_session_management(session_manager.clone())
        .build()?;

    say!(out, "Enhanced Session Management Example");
    say!(out, "-----------------------------------");

    // Interactions are not tracked by hand here (LG-ADK's example guessed tokens as length/4):
    // `run` tracks every turn itself, with the usage the model reported and the measured time.

    say!(out, "\n🧑‍💻 Alice starts a conversation:");
    let alice_metadata = metadata! {"device" => "laptop", "location" => "New York", "language" => "en-US"};
    let alice_session = session_manager.create_session("alice", alice_metadata).await?;
    created.push(alice_session.clone());
    say!(out, "  Session created for Alice: {alice_session}");

    let alice_message = "Hello! Can you tell me about machine learning?";
    say!(out, "  Alice: {alice_message}");
    let alice_response = graph.run(RunRequest::new(alice_message).with_session(alice_session.clone())).await?;
    say!(out, "  Assistant: {}", alice_response.output);
    say!(out, "  Response time: {}", secs(alice_response.response_time));

    say!(out, "\n🧑‍💻 Bob starts a conversation:");
    let bob_metadata = metadata! {"device" => "mobile", "location" => "London", "language" => "en-GB"};
    let bob_message = "Hi there! What's the weather like today?";
    say!(out, "  Bob: {bob_message}");
    // No session id: `run` creates Bob's session from his user id and metadata, once the
    // turn has succeeded (a failed first turn leaves no session behind).
    let bob_response =
        graph.run(RunRequest::new(bob_message).with_user(UserId::parse("bob")?).with_metadata(bob_metadata)).await?;
    let bob_session = bob_response.session_id.clone();
    created.push(bob_session.clone());
    say!(out, "  Assistant: {}", bob_response.output);
    say!(out, "  Response time: {}", secs(bob_response.response_time));
    say!(out, "  Session created for Bob: {bob_session}");

    say!(out, "\n🧑‍💻 Alice continues her conversation:");
    let alice_followup = "Can you explain neural networks specifically?";
    say!(out, "  Alice: {alice_followup}");
    let alice_response = graph.run(RunRequest::new(alice_followup).with_session(alice_session.clone())).await?;
    say!(out, "  Assistant: {}", alice_response.output);
    say!(out, "  Response time: {}", secs(alice_response.response_time));

    say!(out, "\n🧑‍💻 Bob continues his conversation:");
    let bob_followup = "And what about tomorrow's forecast?";
    say!(out, "  Bob: {bob_followup}");
    let bob_response = graph.run(RunRequest::new(bob_followup).with_session(bob_session.clone())).await?;
    say!(out, "  Assistant: {}", bob_response.output);
    say!(out, "  Response time: {}", secs(bob_response.response_time));

    say!(out, "\n📊 Session Analytics and Tracking:");
    let alice_sessions = session_manager.get_user_sessions("alice").await?;
    say!(out, "  Alice's active sessions: {}", alice_sessions.len());

    let summary = live(session_manager.get_session_summary(&alice_session).await?, &alice_session)?;
    say!(out, "  Alice's session statistics:");
    say!(out, "    - Interactions: {}", summary.interactions);
    say!(out, "    - Total tokens in: {}", summary.total_tokens_in);
    say!(out, "    - Total tokens out: {}", summary.total_tokens_out);
    say!(out, "    - Avg response time: {}", secs(summary.avg_response_time));
    say!(out, "    - Session duration: {}", secs(summary.duration));

    let update = metadata! {"subscription" => "premium", "last_topic" => "neural networks"};
    session_manager.update_session_metadata(&alice_session, update, true).await?;
    let alice_metadata = live(session_manager.get_session_metadata(&alice_session).await?, &alice_session)?;
    say!(out, "  Alice's updated metadata: {}", serde_json::Value::Object(alice_metadata.into_metadata()));

    say!(out, "\n🔚 Ending sessions:");
    session_manager.end_session(&alice_session).await?;
    say!(out, "  Ended Alice's session: {alice_session}");
    session_manager.end_session(&bob_session).await?;
    say!(out, "  Ended Bob's session: {bob_session}");
    say!(out, "  Alice's session exists: {}", session_manager.session_exists(&alice_session).await?);
    say!(out, "  Bob's session exists: {}", session_manager.session_exists(&bob_session).await?);
    Ok(())
}

//! LG-ADK's "enhanced session management" example, run for real: two users, two turns each,
//! session analytics, a metadata merge, and ending the sessions.
//!
//! ```text
//! cargo run --example enhanced_session_management                          # in memory, offline model
//! cargo run --example enhanced_session_management -- --model openai/gpt-4o-mini   # needs OPENAI_API_KEY
//! cargo run --example enhanced_session_management -- --model ollama/llama3
//! cargo run --example enhanced_session_management --features redis -- --backend redis --redis-url redis://127.0.0.1:6390
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example prints its scenario")]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lgadk::SessionManager;
use lgadk::core::{Agent, ChatModel, ChatRequest, ChatState, Message, Metadata, Result, RunContext, UserId};
use lgadk::graph::{GraphBuilder, RunRequest};

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

struct Args {
    model: String,
    backend: String,
    redis_url: Option<String>,
}

const USAGE: &str =
    "usage: enhanced_session_management [--model <registry name>] [--backend memory|redis] [--redis-url <url>]";

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args { model: "offline".to_owned(), backend: "memory".to_owned(), redis_url: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--model" => args.model = value()?,
            "--backend" => args.backend = value()?,
            "--redis-url" => args.redis_url = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(args)
}

async fn session_manager(args: &Args) -> std::result::Result<SessionManager, String> {
    match args.backend.as_str() {
        "memory" => Ok(SessionManager::in_memory()),
        "redis" => redis_manager(args).await,
        other => Err(format!("unknown backend `{other}`: use memory or redis")),
    }
}

#[cfg(feature = "redis")]
async fn redis_manager(args: &Args) -> std::result::Result<SessionManager, String> {
    let url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("LGADK_REDIS_URL").ok())
        .ok_or("--backend redis needs --redis-url <url> (or LGADK_REDIS_URL)")?;
    SessionManager::redis(&url).await.map_err(|err| format!("cannot use Redis at {url}: {err}"))
}

#[cfg(not(feature = "redis"))]
async fn redis_manager(_: &Args) -> std::result::Result<SessionManager, String> {
    Err("this build has no Redis support: run with `--features redis`".to_owned())
}

fn secs(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).into())).collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> std::result::Result<(), String> {
    let model = lgadk_llm::get_model(&args.model).map_err(|err| format!("model `{}`: {err}", args.model))?;
    let session_manager = session_manager(args).await?;
    scenario(model, session_manager).await.map_err(|err| {
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        message
    })
}

async fn scenario(model: Arc<dyn ChatModel>, session_manager: SessionManager) -> Result<()> {
    let agent = SimpleAgent::new("assistant", model);
    let graph = GraphBuilder::new("conversational_assistant")
        .add_agent(agent)
        .configure_session_management(session_manager.clone())
        .build()?;

    println!("Enhanced Session Management Example");
    println!("-----------------------------------");

    // Interactions are not tracked by hand here (LG-ADK's example guessed tokens as length/4):
    // `run` tracks every turn itself, with the usage the model reported and the measured time.

    println!("\n🧑‍💻 Alice starts a conversation:");
    let alice = UserId::parse("alice")?;
    let alice_metadata = metadata(&[("device", "laptop"), ("location", "New York"), ("language", "en-US")]);
    let alice_session = session_manager.create_session(Some(alice.clone()), alice_metadata).await?;
    println!("  Session created for Alice: {alice_session}");

    let alice_message = "Hello! Can you tell me about machine learning?";
    let alice_response = graph.run(RunRequest::new(alice_message).with_session(alice_session.clone())).await?;
    println!("  Alice: {alice_message}");
    println!("  Assistant: {}", alice_response.output);
    println!("  Response time: {}", secs(alice_response.response_time));

    println!("\n🧑‍💻 Bob starts a conversation:");
    let bob_metadata = metadata(&[("device", "mobile"), ("location", "London"), ("language", "en-GB")]);
    let bob_message = "Hi there! What's the weather like today?";
    // No session id: `run` creates Bob's session from his user id and metadata.
    let bob_response =
        graph.run(RunRequest::new(bob_message).with_user(UserId::parse("bob")?).with_metadata(bob_metadata)).await?;
    let bob_session = bob_response.session_id.clone();
    println!("  Session created for Bob: {bob_session}");
    println!("  Bob: {bob_message}");
    println!("  Assistant: {}", bob_response.output);
    println!("  Response time: {}", secs(bob_response.response_time));

    println!("\n🧑‍💻 Alice continues her conversation:");
    let alice_followup = "Can you explain neural networks specifically?";
    let alice_response = graph.run(RunRequest::new(alice_followup).with_session(alice_session.clone())).await?;
    println!("  Alice: {alice_followup}");
    println!("  Assistant: {}", alice_response.output);
    println!("  Response time: {}", secs(alice_response.response_time));

    println!("\n🧑‍💻 Bob continues his conversation:");
    let bob_followup = "And what about tomorrow's forecast?";
    let bob_response = graph.run(RunRequest::new(bob_followup).with_session(bob_session.clone())).await?;
    println!("  Bob: {bob_followup}");
    println!("  Assistant: {}", bob_response.output);
    println!("  Response time: {}", secs(bob_response.response_time));

    println!("\n📊 Session Analytics and Tracking:");
    let alice_sessions = session_manager.get_user_sessions(&alice).await?;
    println!("  Alice's active sessions: {}", alice_sessions.len());

    let summary = session_manager
        .summary(&alice_session)
        .await?
        .ok_or_else(|| lgadk::Error::SessionNotFound(alice_session.clone()))?;
    println!("  Alice's session statistics:");
    println!("    - Interactions: {}", summary.interactions);
    println!("    - Total tokens in: {}", summary.total_tokens_in);
    println!("    - Total tokens out: {}", summary.total_tokens_out);
    println!("    - Avg response time: {}", secs(summary.avg_response_time));
    println!("    - Session duration: {}", secs(summary.duration));

    let update = metadata(&[("subscription", "premium"), ("last_topic", "neural networks")]);
    session_manager.update_session_metadata(&alice_session, update, true).await?;
    let alice_metadata = session_manager
        .get_session_metadata(&alice_session)
        .await?
        .ok_or_else(|| lgadk::Error::SessionNotFound(alice_session.clone()))?;
    println!("  Alice's updated metadata: {}", serde_json::Value::Object(alice_metadata.metadata));

    println!("\n🔚 Ending sessions:");
    session_manager.end_session(&alice_session).await?;
    session_manager.end_session(&bob_session).await?;
    println!("  Ended Alice's session: {alice_session}");
    println!("  Ended Bob's session: {bob_session}");
    println!("  Alice's session exists: {}", session_manager.session_exists(&alice_session).await?);
    println!("  Bob's session exists: {}", session_manager.session_exists(&bob_session).await?);
    Ok(())
}

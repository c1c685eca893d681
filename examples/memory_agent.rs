//! An assistant with long-term memory: in one session the user tells it their travel
//! preferences and it remembers them; in a later session — a new conversation — it recalls
//! them to answer. Another user asking the same gets nothing of the first user's memories.
//!
//! ```text
//! cargo run --example memory_agent                                  # in memory, offline model
//! cargo run --example memory_agent -- --help
//! cargo run --example memory_agent -- --model openai/gpt-4o-mini --embedder openai/text-embedding-3-small
//! cargo run --example memory_agent -- --backend redis --redis-url redis://127.0.0.1:6390
//! RUST_LOG=lgadk=debug cargo run --example memory_agent             # memory.* and model.* spans
//! ```
//!
//! The memories live in a memory store (`InMemoryMemoryStore`, or `RedisMemoryStore` with
//! `--backend redis`, next to the sessions) that embeds each memory's text. The default
//! embedder is the offline lexical one, which ranks by shared words, not meaning; pass a model
//! with `--embedder` for semantic search. The offline model calls `remember` when a message
//! says "remember" or "keep in mind" and `recall` when it mentions preferences, so the example
//! runs with no key and no network.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example prints its scenario")]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use lgadk::core::memory::{EmbedFields, Embedder, ListRequest, MemoryStore, Namespace};
use lgadk::core::{ChatModel, ChatState, Result, Role, UserId};
use lgadk::graph::prebuilt::{MEMORY_TOOLS_PROMPT, MemoryTools, ToolLoop};
use lgadk::graph::{CompiledGraph, RunRequest};
use lgadk::session::InMemoryMemoryStore;
use lgadk::{SessionManager, metadata};
use support::{chain, init_tracing, run_cli, say};

#[allow(dead_code, reason = "sessions and memories share one Redis connection here, so `session_manager` is unused")]
mod support;

// ---------------------------------------------------------------------------------------------
// The command line.

#[derive(Debug, PartialEq)]
struct Args {
    model: String,
    embedder: String,
    backend: String,
    redis_url: Option<String>,
}

const USAGE: &str = "usage: memory_agent [--model <provider/model>] [--embedder <provider/model>] \
                     [--backend memory|redis] [--redis-url <url>]";

fn help() -> String {
    format!(
        "An assistant that remembers a user's preferences in one session and uses them in a later one.

{USAGE}

Options:
  --model <provider/model>     the chat model (default: offline; openai/<model> with OPENAI_API_KEY,
                               or any OpenAI-compatible server through OPENAI_BASE_URL)
  --embedder <provider/model>  what embeds memories for search (default: offline, lexical: shared
                               words, not meaning; openai/text-embedding-3-small, ollama/nomic-embed-text)
  --backend memory|redis       where sessions and memories live (default: memory)
  --redis-url <url>            the Redis server for --backend redis (default: $LGADK_REDIS_URL)
  -h, --help                   print this help
"
    )
}

fn parse_args(args: impl IntoIterator<Item = String>) -> std::result::Result<Option<Args>, String> {
    let mut parsed = Args {
        model: "offline".to_owned(),
        embedder: "offline".to_owned(),
        backend: "memory".to_owned(),
        redis_url: None,
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => parsed.model = value()?,
            "--embedder" => parsed.embedder = value()?,
            "--backend" => parsed.backend = value()?,
            "--redis-url" => parsed.redis_url = Some(value()?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    cli(std::env::args().skip(1), &mut std::io::stdout(), &mut std::io::stderr()).await
}

/// The whole program on explicit streams: `--help` to `out`, bad arguments to `err` with exit
/// code 2, a failed run to `err` with exit code 1.
pub(crate) async fn cli(
    args: impl IntoIterator<Item = String>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> ExitCode {
    run_cli(parse_args(args), USAGE, &help(), out, err, async |args: Args, out| {
        let model = lgadk::get_model(&args.model).map_err(|err| format!("model `{}`: {}", args.model, chain(&err)))?;
        let embedder = lgadk::llm::get_embedder(&args.embedder)
            .map_err(|err| format!("embedder `{}`: {}", args.embedder, chain(&err)))?;
        let (sessions, memory) = stores(&args.backend, args.redis_url, embedder).await?;
        scenario(model, sessions, memory, out).await.map_err(|err| chain(&err))
    })
    .await
}

/// The session manager and the memory store for `--backend memory|redis` (`redis_url`, else
/// `$LGADK_REDIS_URL`): on Redis both share one connection. Memories are embedded (their
/// `text`) with `embedder`.
pub(crate) async fn stores(
    backend: &str,
    redis_url: Option<String>,
    embedder: Arc<dyn Embedder>,
) -> std::result::Result<(SessionManager, Arc<dyn MemoryStore>), String> {
    let fields = EmbedFields::paths(["text"]);
    match backend {
        "memory" => {
            let memory = InMemoryMemoryStore::builder().with_embedder(embedder, fields).build();
            Ok((SessionManager::in_memory(), Arc::new(memory)))
        }
        "redis" => redis_stores(redis_url, embedder, fields).await,
        other => Err(format!("unknown backend `{other}`: use memory or redis")),
    }
}

#[cfg(feature = "redis")]
async fn redis_stores(
    redis_url: Option<String>,
    embedder: Arc<dyn Embedder>,
    fields: EmbedFields,
) -> std::result::Result<(SessionManager, Arc<dyn MemoryStore>), String> {
    let url = support::redis_url(redis_url)?;
    let store = lgadk::session::RedisStore::builder(url.as_str())
        .connect()
        .await
        .map_err(|err| format!("cannot use Redis at {url}: {}", chain(&err)))?;
    let memory = lgadk::session::RedisMemoryStore::on(&store).with_embedder(embedder, fields).build();
    Ok((SessionManager::new(store), Arc::new(memory)))
}

#[cfg(not(feature = "redis"))]
async fn redis_stores(
    _: Option<String>,
    _: Arc<dyn Embedder>,
    _: EmbedFields,
) -> std::result::Result<(SessionManager, Arc<dyn MemoryStore>), String> {
    Err("this build has no Redis support: build lgadk with its `redis` feature".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The scenario.

/// The assistant: a tool loop over `model` with the memory tools, saving sessions to
/// `sessions` and memories to `memory`.
pub(crate) fn assistant(
    model: Arc<dyn ChatModel>,
    sessions: &SessionManager,
    memory: Arc<dyn MemoryStore>,
) -> Result<CompiledGraph<ChatState>> {
    let graph = ToolLoop::new(model)
        .with_system_prompt(format!(
            "You are a travel assistant. Answer briefly, and use what you remember about the user. \
             {MEMORY_TOOLS_PROMPT}"
        ))
        .with_memory_tools(&MemoryTools::new())?
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()?;
    Ok(graph.with_memory(memory))
}

/// Where the memory tools keep `user`'s memories.
pub(crate) fn memories_of(user: &UserId) -> Result<Namespace> {
    Namespace::new(["users", user.as_str(), "memories"])
}

/// One session of `user`: each message a turn, each turn's tool results and answer printed;
/// the session is ended afterwards, also when a turn failed.
pub(crate) async fn session(
    graph: &CompiledGraph<ChatState>,
    user: &UserId,
    messages: &[&str],
    out: &mut (dyn Write + Send),
) -> Result<Vec<String>> {
    let sessions = graph.sessions();
    let id = sessions.create_session(user.clone(), metadata! {"channel" => "example"}).await?;
    say!(out, "\n— Session {id} ({user})");
    let mut answers = Vec::new();
    let mut outcome = Ok(());
    for message in messages {
        say!(out, "🧑 {user}: {message}");
        match graph.run(RunRequest::new(*message).with_session(id.clone())).await {
            Ok(response) => {
                let messages = &response.state.messages;
                let turn_start = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
                for result in messages.iter().skip(turn_start).filter(|m| m.role == Role::Tool) {
                    let call = messages
                        .iter()
                        .flat_map(|m| &m.tool_calls)
                        .find(|c| Some(&c.id) == result.tool_call_id.as_ref())
                        .map_or("tool", |c| c.name.as_str());
                    say!(out, "  🔧 {call} → {}", result.content.replace('\n', "\n      "));
                }
                say!(out, "  🤖 Assistant: {}", response.output);
                answers.push(response.output);
            }
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
    }
    sessions.end_session(&id).await?;
    outcome.map(|()| answers)
}

async fn scenario(
    model: Arc<dyn ChatModel>,
    sessions: SessionManager,
    memory: Arc<dyn MemoryStore>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let graph = assistant(model, &sessions, Arc::clone(&memory))?;
    let (maya, leo) = (UserId::parse("maya")?, UserId::parse("leo")?);
    say!(out, "Memory agent example");
    say!(out, "--------------------");
    let outcome = conversation(&graph, &memory, &maya, &leo, out).await;
    // The example cleans up after itself, also when a turn failed: the users' memories go.
    for user in [&maya, &leo] {
        let namespace = memories_of(user)?;
        let items = memory.list(ListRequest::under(namespace.clone())).await?.items;
        for item in items {
            memory.delete(&item.namespace, &item.key).await?;
        }
    }
    outcome
}

async fn conversation(
    graph: &CompiledGraph<ChatState>,
    memory: &Arc<dyn MemoryStore>,
    maya: &UserId,
    leo: &UserId,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let first = ["Hi! Remember that I prefer window seats on flights.", "Please keep in mind that I am vegetarian."];
    session(graph, maya, &first, out).await?;

    let items = memory.list(ListRequest::under(memories_of(maya)?)).await?.items;
    say!(out, "\n🧠 Remembered about {maya} ({} in {}):", items.len(), memories_of(maya)?);
    for item in &items {
        say!(out, "   {} = {}", item.key, item.value);
    }

    let question = "I'm booking a flight to Lisbon. What are my seat and meal preferences?";
    session(graph, maya, &[question], out).await?;
    session(graph, leo, &[question], out).await?;
    Ok(())
}

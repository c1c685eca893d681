//! A support desk of three agents: triage hands each conversation to billing or technical
//! support, and the next turn continues with the agent that holds it — also from another
//! process, since the active agent is stored with the session.
//!
//! ```text
//! cargo run --example multi_agent                                  # in memory, offline model
//! cargo run --example multi_agent -- --model openai/gpt-4o-mini    # needs OPENAI_API_KEY
//! cargo run --example multi_agent -- --backend redis --redis-url redis://127.0.0.1:6390
//! ```
//!
//! Offline, the handoffs follow their keywords ("invoice", "router", …) and each specialist
//! sees only the task it was handed, so the run needs no key and no network.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example prints its scenario")]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use lgadk::core::{ChatModel, ChatState, FunctionTool, HistoryView, Result, Role, SessionId, ToolContext, ToolSet};
use lgadk::graph::prebuilt::{Handoff, Team, ToolLoop};
use lgadk::graph::{CompiledGraph, RunRequest};
use lgadk::{SessionManager, metadata};
use support::{chain, init_tracing, run_cli, say, session_manager};

mod support;

const BILLING_WORDS: [&str; 5] = ["invoice", "charged", "refund", "payment", "bill"];
const TECHNICAL_WORDS: [&str; 5] = ["router", "connection", "wifi", "internet", "error"];

/// Arguments of the specialists' tools.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Question {
    /// The customer's question, in their words.
    question: String,
}

/// The invoices of the customer the session belongs to.
fn invoices(ctx: &ToolContext) -> std::result::Result<String, String> {
    match ctx.user_id().map(|u| u.as_str()) {
        Some("maya") => Ok("INV-1042 (November): charged twice, 2 × €39.00. A refund of €39.00 was issued on \
             28 November and reaches the card within 5 working days."
            .to_owned()),
        Some("leo") => Ok("INV-2001 (November): €24.00, paid on 3 November. Nothing is open.".to_owned()),
        Some(other) => Err(format!("no invoices on file for `{other}`")),
        None => Err("the session has no customer, so there are no invoices to look up".to_owned()),
    }
}

/// A diagnosis from the symptom.
fn diagnose(symptom: &str) -> String {
    let symptom = symptom.to_lowercase();
    if symptom.contains("651") {
        "Error 651 means the modem lost the line: check the grey DSL cable, then restart the modem.".to_owned()
    } else if symptom.contains("drop") {
        "Line test: 4 drops in the last 24 h, all at the router. Firmware 2.1.3 fixes this; it installs on restart."
            .to_owned()
    } else {
        "Line test: the line is stable; restart the router and try again.".to_owned()
    }
}

/// The support desk over `model`, saving to `sessions`.
pub(crate) fn desk(model: &Arc<dyn ChatModel>, sessions: &SessionManager) -> Result<CompiledGraph<ChatState>> {
    let agent = |name: &str, prompt: &str| {
        ToolLoop::new(Arc::clone(model)).with_name(name).with_system_prompt(prompt.to_owned())
    };
    let lookup = FunctionTool::new(
        "invoices",
        "The customer's invoices, payments and refunds.",
        |_: Question, ctx: ToolContext| async move { invoices(&ctx) },
    )
    .with_keywords(BILLING_WORDS);
    let line_test = FunctionTool::new(
        "diagnostics",
        "Tests the customer's line and router and explains what went wrong.",
        |args: Question, _ctx: ToolContext| async move { Ok::<_, String>(diagnose(&args.question)) },
    )
    .with_keywords(TECHNICAL_WORDS);
    let to_billing = Handoff::to("billing")
        .with_description("invoices, charges, refunds and payments")
        .with_keywords(BILLING_WORDS)
        .with_view(HistoryView::TaskOnly);
    let to_technical = Handoff::to("technical")
        .with_description("connection problems, routers and error codes")
        .with_keywords(TECHNICAL_WORDS)
        .with_view(HistoryView::TaskOnly);
    Team::new()
        .agent(agent("triage", "You are the support desk's triage. Hand each question to billing or technical."))
        .agent(
            agent("billing", "You are billing support. Use the invoices tool; hand technical questions over.")
                .with_tools(ToolSet::new().with(lookup)?),
        )
        .agent(
            agent("technical", "You are technical support. Use diagnostics; hand billing questions over.")
                .with_tools(ToolSet::new().with(line_test)?),
        )
        .handoff("triage", to_billing.clone())
        .handoff("triage", to_technical.clone())
        .handoff("billing", to_technical)
        .handoff("technical", to_billing)
        .graph::<ChatState>()?
        .with_sessions(sessions.clone())
        .compile()
}

/// One customer message: who answered, and who holds the conversation now.
async fn turn(
    graph: &CompiledGraph<ChatState>,
    id: &SessionId,
    customer: &str,
    message: &str,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say!(out, "\n🧑 {customer}: {message}");
    let reply = graph.run(RunRequest::new(message).with_session(id.clone())).await?;
    let messages = &reply.state.messages;
    let start = messages.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    for message in &messages[start..] {
        if let Some(tool) = message.name.as_deref().filter(|_| message.role == Role::Tool) {
            say!(out, "  🔧 {tool}: {}", message.content);
        }
    }
    let speaker = messages.last().and_then(|m| m.name.clone()).unwrap_or_default();
    say!(out, "  🤖 {speaker}: {}", reply.output);
    say!(out, "  (the conversation is with {})", reply.state.routing.active.as_deref().unwrap_or("triage"));
    Ok(())
}

pub(crate) async fn scenario(
    model: Arc<dyn ChatModel>,
    sessions: SessionManager,
    later: SessionManager,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let desk_now = desk(&model, &sessions)?;
    let maya = sessions.create_session("maya", metadata! {"plan" => "home"}).await?;
    let leo = sessions.create_session("leo", metadata! {"plan" => "office"}).await?;
    let outcome = async {
        say!(out, "Support desk: triage, billing and technical");
        say!(out, "-------------------------------------------");
        turn(&desk_now, &maya, "Maya", "I was charged twice on my last invoice", out).await?;
        turn(&desk_now, &leo, "Leo", "My internet shows error 651 since this morning", out).await?;

        // A graph built on another session manager, as another process would: it has nothing
        // cached, and the active agent comes from the session.
        say!(out, "\n🔁 Later, another process picks the conversations up:");
        let desk_later = desk(&model, &later)?;
        turn(&desk_later, &maya, "Maya", "Thanks. When will the refund arrive?", out).await?;
        turn(&desk_later, &maya, "Maya", "Also, my router keeps dropping the connection", out).await?;
        turn(&desk_later, &leo, "Leo", "Fixed, thank you!", out).await?;

        for (name, id) in [("Maya", &maya), ("Leo", &leo)] {
            if let Some(summary) = later.get_session_summary(id).await? {
                say!(
                    out,
                    "\n📊 {name}: {} turns, {} tokens in, {} tokens out",
                    summary.interactions,
                    summary.total_tokens_in,
                    summary.total_tokens_out
                );
                for (agent, stats) in &summary.agents {
                    say!(
                        out,
                        "   {agent}: {} {}, {} tokens in, {} tokens out, {:.1} ms",
                        stats.interactions,
                        if stats.interactions == 1 { "turn" } else { "turns" },
                        stats.tokens_in,
                        stats.tokens_out,
                        stats.time.as_secs_f64() * 1000.0
                    );
                }
            }
        }
        Ok(())
    }
    .await;
    for id in [&maya, &leo] {
        sessions.end_session(id).await?;
    }
    outcome
}

#[derive(Debug, PartialEq)]
struct Args {
    model: String,
    backend: String,
    redis_url: Option<String>,
}

const USAGE: &str = "usage: multi_agent [--model <provider/model>] [--backend memory|redis] [--redis-url <url>]";

fn parse_args(args: impl IntoIterator<Item = String>) -> std::result::Result<Option<Args>, String> {
    let mut parsed = Args { model: "offline".to_owned(), backend: "memory".to_owned(), redis_url: None };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => parsed.model = value()?,
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
    let help = format!("A support desk of three agents handing conversations to each other.\n\n{USAGE}\n");
    run_cli(parse_args(args), USAGE, &help, out, err, async |args: Args, out| {
        let model = lgadk::get_model(&args.model).map_err(|err| format!("model `{}`: {}", args.model, chain(&err)))?;
        let sessions = session_manager(&args.backend, args.redis_url.clone()).await?;
        // In memory "another process" can only share the store; on Redis it opens its own connection.
        let later = match args.backend.as_str() {
            "memory" => sessions.clone(),
            backend => session_manager(backend, args.redis_url.clone()).await?,
        };
        scenario(model, sessions, later, out).await.map_err(|err| chain(&err))
    })
    .await
}

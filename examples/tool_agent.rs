//! An agent with tools: a calculator that really computes, a lookup over a small built-in
//! table, and an action that needs a person's approval (it appends a note to a local outbox
//! file), shown once approved and once rejected.
//!
//! ```text
//! cargo run --example tool_agent                                   # in memory, offline model
//! cargo run --example tool_agent -- --help
//! cargo run --example tool_agent -- --model openai/gpt-4o-mini     # needs OPENAI_API_KEY
//! OPENAI_BASE_URL=http://localhost:8000/v1 cargo run --example tool_agent -- --model openai/<served model>
//! cargo run --example tool_agent -- --backend redis --redis-url redis://127.0.0.1:6390
//! RUST_LOG=lgadk=info cargo run --example tool_agent                # model.call and tool.call spans
//! ```
//!
//! The offline model calls a tool when its name or one of its keywords is in the user's
//! message, fills string arguments from the text after that word, and answers from the
//! results, so the example runs with no key and no network.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "an example prints its scenario")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use lgadk::core::{
    ApprovalDecisions, ApprovalRequest, ChatModel, ChatState, Error, FunctionTool, Result, SessionId, ToolContext,
    ToolSet,
};
use lgadk::graph::prebuilt::ToolLoop;
use lgadk::graph::{CompiledGraph, RunRequest, RunResponse};
use lgadk::{SessionManager, serde_json};
pub(crate) use support::session_manager;
use support::{chain, init_tracing, run_cli, say};

mod support;

// ---------------------------------------------------------------------------------------------
// The tools.

/// Arguments of the calculator.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Calculate {
    /// An arithmetic expression: numbers, + - * / ^ and parentheses, e.g. `(12 + 30) * 2 / 4`.
    expression: String,
}

/// Arguments of the lookup.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Lookup {
    /// A country to look up, e.g. `Japan`; text around the name is fine.
    query: String,
}

/// Arguments of the note action.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct SaveNote {
    /// The note's text.
    text: String,
}

/// Countries the lookup knows: name, capital, population in millions, currency.
const COUNTRIES: [(&str, &str, f64, &str); 6] = [
    ("France", "Paris", 68.4, "euro"),
    ("Japan", "Tokyo", 124.5, "yen"),
    ("Brazil", "Brasília", 203.1, "real"),
    ("Kenya", "Nairobi", 55.1, "shilling"),
    ("Canada", "Ottawa", 40.1, "Canadian dollar"),
    ("India", "New Delhi", 1428.6, "rupee"),
];

pub(crate) fn tools(outbox: PathBuf) -> Result<ToolSet> {
    let calculator = FunctionTool::new(
        "calculator",
        "Evaluates an arithmetic expression exactly as written and returns the number.",
        |args: Calculate, _ctx: ToolContext| async move { arithmetic::evaluate(&args.expression).map(arithmetic::show) },
    )
    .with_keywords(["calculate", "compute"]);

    let lookup = FunctionTool::new(
        "lookup",
        "Looks a country up in a small built-in table: capital, population and currency.",
        |args: Lookup, _ctx: ToolContext| async move {
            let query = args.query.to_lowercase();
            let found = COUNTRIES.iter().find(|(name, ..)| query.contains(&name.to_lowercase()));
            match found {
                Some((name, capital, millions, currency)) => Ok(serde_json::json!({
                    "country": name, "capital": capital, "population_millions": millions, "currency": currency
                })),
                None => {
                    let known: Vec<&str> = COUNTRIES.iter().map(|(name, ..)| *name).collect();
                    Err(format!("no country in `{}`; I know {}", args.query, known.join(", ")))
                }
            }
        },
    )
    .with_keywords(["look up", "capital"]);

    let save_note =
        FunctionTool::new(
            "save_note",
            "Saves a note for the user by appending it to their outbox. A person approves each note first.",
            move |args: SaveNote, ctx: ToolContext| {
                let outbox = outbox.clone();
                async move {
                    append_note(&outbox, &args.text, &ctx).map_err(|err| format!("could not save the note: {err}"))
                }
            },
        )
        .with_keywords(["note"])
        .requiring_approval();

    ToolSet::new().with(calculator)?.with(lookup)?.with(save_note)
}

fn append_note(outbox: &Path, text: &str, ctx: &ToolContext) -> std::io::Result<String> {
    if let Some(dir) = outbox.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(outbox)?;
    let session = ctx.session_id().map_or_else(|| "-".to_owned(), ToString::to_string);
    writeln!(file, "[{session}] {text}")?;
    Ok(format!("saved to {}", outbox.display()))
}

/// A small exact parser for `+ - * / ^`, unary minus and parentheses over `f64`.
mod arithmetic {
    /// Evaluates `expression`, or says where it stops making sense.
    pub(crate) fn evaluate(expression: &str) -> Result<f64, String> {
        let mut parser = Parser { chars: expression.chars().filter(|c| !c.is_whitespace()).collect(), at: 0 };
        let value = parser.sum()?;
        match parser.peek() {
            None if value.is_finite() => Ok(value),
            None => Err("the result is not a finite number".to_owned()),
            Some(c) => Err(format!("unexpected `{c}` in `{expression}`")),
        }
    }

    /// A whole number without its `.0`, anything else as it is.
    #[allow(clippy::cast_possible_truncation, reason = "only whole numbers well inside i64 are cast")]
    pub(crate) fn show(value: f64) -> String {
        if value.fract() == 0.0 && value.abs() < 1e15 { (value as i64).to_string() } else { value.to_string() }
    }

    struct Parser {
        chars: Vec<char>,
        at: usize,
    }

    impl Parser {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).copied()
        }

        fn eat(&mut self, c: char) -> bool {
            let found = self.peek() == Some(c);
            self.at += usize::from(found);
            found
        }

        fn sum(&mut self) -> Result<f64, String> {
            let mut value = self.product()?;
            loop {
                if self.eat('+') {
                    value += self.product()?;
                } else if self.eat('-') {
                    value -= self.product()?;
                } else {
                    return Ok(value);
                }
            }
        }

        fn product(&mut self) -> Result<f64, String> {
            let mut value = self.unary()?;
            loop {
                if self.eat('*') || self.eat('×') {
                    value *= self.unary()?;
                } else if self.eat('/') || self.eat('÷') {
                    let divisor = self.unary()?;
                    if divisor == 0.0 {
                        return Err("division by zero".to_owned());
                    }
                    value /= divisor;
                } else {
                    return Ok(value);
                }
            }
        }

        /// `-2^2` is `-(2^2)`, and `2^-1` is a half: the sign binds looser than `^` on its left.
        fn unary(&mut self) -> Result<f64, String> {
            if self.eat('-') { Ok(-self.unary()?) } else { self.power() }
        }

        /// Right-associative: `2^3^2` is `2^9`.
        fn power(&mut self) -> Result<f64, String> {
            let base = self.atom()?;
            if self.eat('^') { Ok(base.powf(self.unary()?)) } else { Ok(base) }
        }

        fn atom(&mut self) -> Result<f64, String> {
            if self.eat('(') {
                let value = self.sum()?;
                return if self.eat(')') { Ok(value) } else { Err("a `(` is never closed".to_owned()) };
            }
            let start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.') {
                self.at += 1;
            }
            let number: String = self.chars[start..self.at].iter().collect();
            match (number.parse::<f64>(), self.peek()) {
                (Ok(value), _) => Ok(value),
                (Err(_), Some(c)) if number.is_empty() => Err(format!("expected a number, found `{c}`")),
                (Err(_), None) if number.is_empty() => Err("the expression ends too early".to_owned()),
                (Err(_), _) => Err(format!("`{number}` is not a number")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The command line.

#[derive(Debug, PartialEq)]
struct Args {
    model: String,
    backend: String,
    redis_url: Option<String>,
    outbox: PathBuf,
}

const USAGE: &str =
    "usage: tool_agent [--model <provider/model>] [--backend memory|redis] [--redis-url <url>] [--outbox <file>]";

fn help() -> String {
    format!(
        "An agent with tools: a calculator, a country lookup and a note action that needs approval.

{USAGE}

Options:
  --model <provider/model>  the model (default: offline; openai/<model> with OPENAI_API_KEY,
                            or any OpenAI-compatible server through OPENAI_BASE_URL)
  --backend memory|redis    where the session lives (default: memory)
  --redis-url <url>         the Redis server for --backend redis (default: $LGADK_REDIS_URL)
  --outbox <file>           where approved notes are appended (default: target/tool_agent_outbox.txt)
  -h, --help                print this help
"
    )
}

fn parse_args(args: impl IntoIterator<Item = String>) -> std::result::Result<Option<Args>, String> {
    let mut parsed = Args {
        model: "offline".to_owned(),
        backend: "memory".to_owned(),
        redis_url: None,
        outbox: PathBuf::from("target/tool_agent_outbox.txt"),
    };
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => parsed.model = value()?,
            "--backend" => parsed.backend = value()?,
            "--redis-url" => parsed.redis_url = Some(value()?),
            "--outbox" => parsed.outbox = PathBuf::from(value()?),
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
        let sessions = session_manager(&args.backend, args.redis_url.clone()).await?;
        let tools = tools(args.outbox.clone()).map_err(|err| chain(&err))?;
        scenario(model, tools, sessions, &args.outbox, out).await.map_err(|err| chain(&err))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The scenario.

/// The agent: the tool loop over `model` with the three tools, saving to `sessions`.
pub(crate) fn agent(
    model: Arc<dyn ChatModel>,
    tools: ToolSet,
    sessions: &SessionManager,
) -> Result<CompiledGraph<ChatState>> {
    ToolLoop::new(model)
        .with_system_prompt(
            "You are a helpful assistant. Use the calculator for arithmetic, the lookup for facts about \
             countries, and save_note when the user asks you to note something. Answer briefly.",
        )
        .with_tools(tools)
        .graph::<ChatState>()
        .with_sessions(sessions.clone())
        .compile()
}

/// How the example's reviewer decides: approve every waiting call, or reject it with a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    Approve,
    Reject,
}

/// Runs a turn; while it stops for approvals, shows them and resumes with `review`'s decision
/// for every waiting call.
pub(crate) async fn turn(
    graph: &CompiledGraph<ChatState>,
    request: RunRequest,
    review: Review,
    out: &mut (dyn Write + Send),
) -> Result<RunResponse<ChatState>> {
    let mut result = graph.run(request).await;
    loop {
        let err = match result {
            Ok(response) => return Ok(response),
            Err(err) => err,
        };
        let (Some(approvals), Error::Interrupted { session_id: Some(id), .. }) =
            (ApprovalRequest::from_interrupt(&err), &err)
        else {
            return Err(err);
        };
        let mut decisions = ApprovalDecisions::new();
        for pending in &approvals.pending {
            say!(out, "  ⏸  {} wants to run {} {}", pending.call_id, pending.name, pending.arguments);
            decisions = match review {
                Review::Approve => {
                    say!(out, "  ✅ Reviewer approves {}", pending.call_id);
                    decisions.approve(pending.call_id.clone())
                }
                Review::Reject => {
                    say!(
                        out,
                        "  ❌ Reviewer rejects {}: not before the financial adviser has seen it",
                        pending.call_id
                    );
                    decisions.reject(pending.call_id.clone(), "not before the financial adviser has seen it")
                }
            };
        }
        result = graph.resume(id, decisions.into()).await;
    }
}

async fn scenario(
    model: Arc<dyn ChatModel>,
    tools: ToolSet,
    sessions: SessionManager,
    outbox: &Path,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let graph = agent(model, tools, &sessions)?;
    let id = sessions.create_session("dana", lgadk::metadata! {"channel" => "example"}).await?;
    let outcome = conversation(&graph, &id, outbox, out).await;
    // The example cleans up after itself, also when a turn failed.
    sessions.end_session(&id).await?;
    outcome
}

async fn conversation(
    graph: &CompiledGraph<ChatState>,
    id: &SessionId,
    outbox: &Path,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say!(out, "Tool agent example (session {id})");
    say!(out, "-------------------------------");
    let turns = [
        ("Calculate (12 + 30) * 2 / 4", Review::Approve),
        ("Look up the capital of Japan and calculate 2^10", Review::Approve),
        ("Save a note: call the plumber on Monday", Review::Approve),
        ("Save a note: sell all my shares", Review::Reject),
    ];
    for (message, review) in turns {
        say!(out, "\n🧑 Dana: {message}");
        let response = turn(graph, RunRequest::new(message).with_session(id.clone()), review, out).await?;
        let messages = &response.state.messages;
        let turn_start = messages.iter().rposition(|m| m.role == lgadk::core::Role::User).unwrap_or(0);
        for result in &messages[turn_start..] {
            if let Some(call_id) = &result.tool_call_id {
                say!(out, "  🔧 {call_id} → {}", result.content);
            }
        }
        say!(out, "  🤖 Assistant: {}", response.output);
    }

    let summary = graph.sessions().get_session_summary(id).await?.ok_or_else(|| Error::SessionNotFound(id.clone()))?;
    let state = graph.state(id).await?.unwrap_or_default();
    say!(
        out,
        "\n📊 {} interactions tracked (a resume after an approval is one), {} tokens in, {} tokens out, {} messages in the session's log",
        summary.interactions,
        summary.total_tokens_in,
        summary.total_tokens_out,
        state.messages.len()
    );
    match std::fs::read_to_string(outbox) {
        Ok(notes) => say!(out, "📬 Outbox {}:\n{}", outbox.display(), notes.trim_end()),
        Err(_) => say!(out, "📬 Outbox {} is empty", outbox.display()),
    }
    Ok(())
}

//! Session analytics without a graph: two users, several sessions, tracked interactions, merged
//! metadata, one session expiring under a short timeout, a summary per session, sessions ended.
//!
//! Runs on the in-memory store with no network: `cargo run --example session_analytics`
//! (`RUST_LOG=lgadk=debug` also prints the `session.*` spans on stderr).
#![allow(clippy::print_stdout, reason = "an example reports on the terminal")]

use std::time::Duration;

use lgadk::core::{NewSession, SessionId, Timeout, UserId};
use lgadk::session::SessionSummary;
use lgadk::{Error, Result, SessionManager, metadata, serde_json};

fn print_summary(label: &str, summary: &SessionSummary) {
    println!("  {label} ({})", summary.session_id);
    println!("    - Interactions: {}", summary.interactions);
    println!("    - Total tokens in: {}", summary.total_tokens_in);
    println!("    - Total tokens out: {}", summary.total_tokens_out);
    println!("    - Avg response time: {:.2}s", summary.avg_response_time.as_secs_f64());
    println!("    - Session duration: {:.2}s", summary.duration.as_secs_f64());
    println!("    - Metadata: {}", serde_json::Value::Object(summary.metadata.clone()));
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .try_init();
    let sessions = SessionManager::builder(lgadk::session::InMemoryStore::new())
        .with_default_timeout(Some(Duration::from_secs(30 * 60)))
        .build();
    let alice = UserId::parse("alice")?;
    let bob = UserId::parse("bob")?;

    println!("Session analytics");
    println!("-----------------");

    // Alice works on two devices; each device gets its own session.
    let laptop = sessions.create_session(&alice, metadata! {"device" => "laptop"}).await?;
    let phone = sessions.create_session(&alice, metadata! {"device" => "phone"}).await?;
    // Bob's support session has a caller-chosen id and a short idle timeout.
    let ticket = SessionId::parse("support:ticket-4711")?;
    let short = NewSession::for_user(bob.clone())
        .with_id(ticket.clone())
        .with_metadata(metadata! {"channel" => "chat"})
        .with_timeout(Timeout::After(Duration::from_millis(300)));
    sessions.create_session_with(short).await?;
    let bob_main = sessions.create_session(&bob, metadata! {"device" => "desktop"}).await?;
    let (alice_count, bob_count) =
        (sessions.get_user_sessions(&alice).await?.len(), sessions.get_user_sessions(&bob).await?.len());
    println!("\nCreated 4 sessions: alice has {alice_count}, bob has {bob_count}");

    // Each turn reports the tokens the model used and how long it took.
    for (id, tokens_in, tokens_out, millis) in [
        (&laptop, 120, 340, 850),
        (&laptop, 410, 290, 640),
        (&phone, 35, 80, 300),
        (&bob_main, 60, 150, 420),
        (&ticket, 22, 48, 210),
    ] {
        sessions.track_interaction(id, tokens_in, tokens_out, Duration::from_millis(millis)).await?;
    }

    sessions.update_session_metadata(&laptop, metadata! {"plan" => "premium", "topic" => "billing"}, true).await?;
    // Readers answer `None` for a session that is unknown, ended or expired.
    let view = sessions.get_session_metadata(&laptop).await?.ok_or_else(|| Error::SessionNotFound(laptop.clone()))?;
    println!("\nAlice's laptop metadata after a merge: plan {}, topic {}", view["plan"], view["topic"]);

    println!("\nSummaries:");
    for (label, id) in [("alice/laptop", &laptop), ("alice/phone", &phone), ("bob/desktop", &bob_main)] {
        match sessions.get_session_summary(id).await? {
            Some(summary) => print_summary(label, &summary),
            None => println!("  {label} ({id}) is gone"),
        }
    }

    println!("\nWaiting 400 ms: Bob's support session has a 300 ms idle timeout...");
    tokio::time::sleep(Duration::from_millis(400)).await;
    println!("  support session exists: {}", sessions.session_exists(&ticket).await?);
    println!("  expired sessions purged: {}", sessions.clear_expired_sessions().await?);
    println!("  bob's sessions now: {}", sessions.get_user_sessions(&bob).await?.len());

    println!("\nEnding sessions:");
    for id in [&laptop, &phone, &bob_main] {
        println!("  ended {id}: {}", sessions.end_session(id).await?);
    }
    println!("  alice's sessions: {}", sessions.get_user_sessions(&alice).await?.len());
    println!("  bob's sessions: {}", sessions.get_user_sessions(&bob).await?.len());
    Ok(())
}

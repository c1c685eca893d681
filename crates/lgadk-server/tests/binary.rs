//! The `lgadk-server` binary: it starts with no key and no services, serves, and stops on
//! SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_without_keys_or_services_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lgadk-server"))
        .args(["--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("LGADK_API_KEYS_FILE")
        .env_remove("LGADK_BACKEND")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let base = loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).expect("the server logs its address");
        log.push(line.clone());
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(log.iter().any(|l| l.contains("authentication is OFF")), "{log:?}");
    let client = common::client();
    let answer = client.post(format!("{base}/threads/search")).body("{}").send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let wait = client
        .post(format!("{base}/runs/wait"))
        .body(serde_json::json!({"assistant_id": "agent", "input": common::user_input("hi")}).to_string())
        .send()
        .await
        .unwrap();
    let values: serde_json::Value = serde_json::from_str(&wait.text().await.unwrap()).unwrap();
    assert!(values["messages"][1]["content"].as_str().unwrap().contains("offline model"));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = exited.expect("the server stops on SIGTERM");
    assert!(exited.success(), "{exited:?}");
}

#[test]
fn bad_arguments_exit_with_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_lgadk-server")).arg("--nope").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage: lgadk-server"));
    let output = Command::new(env!("CARGO_BIN_EXE_lgadk-server")).args(["--backend", "sqlite"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sqlite"));
}

//! [`Monitor`]: the commands a test server executes, as `MONITOR` reports them.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::redis_server::RedisServer;

/// One command a server executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredCommand {
    /// Whether a Lua script ran it (MONITOR's `[<db> lua]`), rather than a client.
    pub from_script: bool,
    /// The command name and its arguments, unescaped.
    pub args: Vec<String>,
}

impl MonitoredCommand {
    /// The command name in lower case (`""` for an empty line).
    pub fn name(&self) -> String {
        self.args.first().map(|name| name.to_lowercase()).unwrap_or_default()
    }

    /// For `EVAL` / `EVALSHA` (and their `_RO` forms): the keys the call declared.
    pub fn declared_keys(&self) -> Option<&[String]> {
        if !matches!(self.name().as_str(), "eval" | "evalsha" | "eval_ro" | "evalsha_ro") {
            return None;
        }
        let count: usize = self.args.get(2)?.parse().ok()?;
        self.args.get(3..3 + count)
    }
}

/// A script call and the commands the script ran.
#[derive(Debug, Clone)]
pub struct ScriptCall {
    /// The `EVAL` / `EVALSHA` command.
    pub call: MonitoredCommand,
    /// What the script ran, in order.
    pub commands: Vec<MonitoredCommand>,
}

/// Watches every command a [`RedisServer`] executes, through `MONITOR` on its own connection.
///
/// ```
/// # fn main() {
/// use lgadk_session::testing::{Monitor, RedisServer};
/// let Some(server) = RedisServer::start() else { return };
/// let mut monitor = Monitor::start(&server);
/// server.command(&["SET", "k", "v"]).unwrap();
/// let seen = monitor.commands_since_last(&server);
/// assert_eq!(seen.last().map(|c| c.args.clone()), Some(vec!["SET".to_owned(), "k".to_owned(), "v".to_owned()]));
/// # }
/// ```
#[derive(Debug)]
pub struct Monitor {
    lines: mpsc::Receiver<String>,
    markers: usize,
}

impl Monitor {
    /// Connects to `server` and sends `MONITOR`.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses.
    pub fn start(server: &RedisServer) -> Self {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, server.port())).expect("connect for MONITOR");
        stream.write_all(b"*1\r\n$7\r\nMONITOR\r\n").expect("send MONITOR");
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("read the MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR refused");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { lines, markers: 0 }
    }

    /// Every command executed since the previous call (or since `start`), in order, without
    /// the `ECHO` marker this method sends to find the end.
    ///
    /// # Panics
    /// When MONITOR stays quiet for 5 s.
    pub fn commands_since_last(&mut self, server: &RedisServer) -> Vec<MonitoredCommand> {
        self.markers += 1;
        let marker = format!("lgadk-monitor-marker-{}", self.markers);
        server.command(&["ECHO", &marker]).expect("ECHO the marker");
        let mut commands = Vec::new();
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(5)).expect("MONITOR went quiet");
            let Some(command) = parse_line(&line) else { continue };
            if command.name() == "echo" && command.args.get(1) == Some(&marker) {
                return commands;
            }
            commands.push(command);
        }
    }

    /// The names of the commands clients sent since the previous call (not those scripts ran),
    /// without the harness' own `INFO` and `PING`: what round-trip tests count.
    ///
    /// # Panics
    /// As [`commands_since_last`](Self::commands_since_last).
    pub fn client_commands_since_last(&mut self, server: &RedisServer) -> Vec<String> {
        self.commands_since_last(server)
            .into_iter()
            .filter(|command| !command.from_script)
            .map(|command| command.name())
            .filter(|name| !matches!(name.as_str(), "info" | "ping"))
            .collect()
    }

    /// Groups `commands` into script calls: each `EVAL` / `EVALSHA` with the script commands
    /// that follow it (MONITOR reports the call before what the script runs, and nothing else
    /// runs in between because scripts are atomic).
    pub fn script_calls(commands: &[MonitoredCommand]) -> Vec<ScriptCall> {
        let mut calls: Vec<ScriptCall> = Vec::new();
        for command in commands {
            if command.from_script {
                if let Some(call) = calls.last_mut() {
                    call.commands.push(command.clone());
                }
            } else if command.declared_keys().is_some() {
                calls.push(ScriptCall { call: command.clone(), commands: Vec::new() });
            }
        }
        calls
    }
}

/// `<time> [<db> <client>] "<arg>" "<arg>" …`, arguments escaped as by `sdscatrepr`.
fn parse_line(line: &str) -> Option<MonitoredCommand> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let from_script = line[open + 1..close].split_whitespace().nth(1) == Some("lua");
    let mut args = Vec::new();
    let mut bytes = line[close + 1..].bytes().peekable();
    loop {
        while bytes.next_if(|&b| b == b' ').is_some() {}
        match bytes.next() {
            None => break,
            Some(b'"') => {}
            Some(_) => return None,
        }
        let mut arg = Vec::new();
        loop {
            match bytes.next()? {
                b'"' => break,
                b'\\' => match bytes.next()? {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' => {
                        let hex = [bytes.next()?, bytes.next()?];
                        arg.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
                    }
                    other => arg.push(other),
                },
                other => arg.push(other),
            }
        }
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    Some(MonitoredCommand { from_script, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_parse() {
        let call = parse_line(r#"1.5 [0 127.0.0.1:1234] "evalsha" "abc" "2" "k{1}" "k\"2" "a\x01\\b""#).unwrap();
        assert!(!call.from_script);
        assert_eq!(call.args, ["evalsha", "abc", "2", "k{1}", "k\"2", "a\u{1}\\b"]);
        assert_eq!(call.declared_keys(), Some(&["k{1}".to_owned(), "k\"2".to_owned()][..]));
        let inner = parse_line(r#"1.6 [0 lua] "HMGET" "k{1}" "l""#).unwrap();
        assert!(inner.from_script);
        assert_eq!(inner.declared_keys(), None);
        let calls = Monitor::script_calls(&[call, inner.clone()]);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].commands, [inner]);
        assert_eq!(parse_line("OK"), None);
    }
}

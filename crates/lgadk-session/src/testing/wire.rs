//! [`WireCounter`]: a loopback proxy in front of PostgreSQL that counts what clients send.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

/// What clients sent through a [`WireCounter`], in frontend protocol messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounts {
    /// Round trips: `Sync` messages (the end of an extended-protocol batch, after which the
    /// client waits for `ReadyForQuery`) plus simple `Query` messages.
    pub round_trips: u64,
    /// Statements executed: `Execute` messages plus simple `Query` messages.
    pub statements: u64,
    /// Statements prepared (`Parse` messages).
    pub prepares: u64,
}

/// A TCP proxy on a free loopback port in front of a PostgreSQL server (or pooler) that
/// forwards every byte and counts the frontend messages clients send (see [`WireCounts`]).
///
/// Connect a store to [`url_for`](Self::url_for) the server's URL, then read
/// [`take`](Self::take) around the calls to measure. The count is what went over the wire,
/// so it cannot be flattered by the client library: a statement prepared before it is
/// executed shows as a second round trip.
#[derive(Debug)]
pub struct WireCounter {
    port: u16,
    upstream: u16,
    counts: Arc<Mutex<WireCounts>>,
    stop: Arc<AtomicBool>,
}

impl WireCounter {
    /// Starts the proxy in front of the server on loopback port `upstream`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        let port = listener.local_addr().expect("the proxy's address").port();
        let counts = Arc::new(Mutex::new(WireCounts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&counts), Arc::clone(&stop));
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let counts = Arc::clone(&shared);
                thread::spawn(move || relay(client, server, &counts));
            }
        });
        Self { port, upstream, counts, stop }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (a `postgres://…@127.0.0.1:<upstream>/…` URL) pointed at the proxy instead.
    pub fn url_for(&self, url: &str) -> String {
        url.replace(&format!(":{}/", self.upstream), &format!(":{}/", self.port))
    }

    /// The counts since the last `take` (or the start), and a fresh start.
    pub fn take(&self) -> WireCounts {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// Copies server → client on a thread and client → server here, counting the client's
/// messages.
fn relay(mut client: TcpStream, mut server: TcpStream, counts: &Mutex<WireCounts>) {
    // Small messages go out at once, as the client and server send them (no Nagle delay).
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else { return };
    let back = thread::spawn(move || {
        let _ = io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let _ = forward(&mut client, &mut server, counts);
    let _ = server.shutdown(Shutdown::Both);
    let _ = back.join();
}

fn forward(client: &mut TcpStream, server: &mut TcpStream, counts: &Mutex<WireCounts>) -> io::Result<()> {
    // Untyped messages first: SSL/GSS requests (answered by one byte from the server), then
    // the startup message.
    loop {
        let mut len = [0u8; 4];
        client.read_exact(&mut len)?;
        let body_len = (u32::from_be_bytes(len) as usize).saturating_sub(4);
        let mut body = vec![0u8; body_len];
        client.read_exact(&mut body)?;
        server.write_all(&len)?;
        server.write_all(&body)?;
        let code = body.get(..4).map(|code| u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        // 80877103: SSLRequest, 80877104: GSSENCRequest.
        if !matches!(code, Some(80_877_103 | 80_877_104)) {
            break;
        }
    }
    loop {
        let mut head = [0u8; 5];
        client.read_exact(&mut head)?;
        let body_len = (u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize).saturating_sub(4);
        let mut body = vec![0u8; body_len];
        client.read_exact(&mut body)?;
        {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            match head[0] {
                b'S' => counts.round_trips += 1,
                b'Q' => {
                    counts.round_trips += 1;
                    counts.statements += 1;
                }
                b'E' => counts.statements += 1,
                b'P' => counts.prepares += 1,
                _ => {}
            }
        }
        server.write_all(&head)?;
        server.write_all(&body)?;
    }
}

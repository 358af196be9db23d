//! Test helpers shared by the integration tests: a scriptable WebSocket
//! server standing in for the relay (plain or TLS), a test CA, and the real
//! agent binary as a child process.
#![allow(dead_code)] // each test file uses its own subset

pub mod relay;
mod test_ca;

pub use test_ca::TestCa;

use rustls::ServerConfig;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::{Message, WebSocket};

/// How the stand-in relay treats the next connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Upgrade and read frames.
    Accept,
    /// Answer the upgrade with `401 Unauthorized`.
    Reject401,
    /// Accept TCP, then close at once (a relay that refuses).
    HangUp,
    /// Upgrade, then never read or write (a relay that froze).
    Mute,
    /// Upgrade, read the first frame, then close with this code (a relay
    /// that refuses what the agent sent: 1009 for a frame too large).
    CloseAfterFrame(u16),
}

/// What the stand-in relay saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A TCP connection arrived (before any TLS or HTTP).
    Accepted,
    /// An upgrade request: its URI and `Authorization` header.
    Request {
        uri: String,
        authorization: Option<String>,
    },
    Text(String),
    Pong(Vec<u8>),
    /// A close frame's code.
    Close(Option<u16>),
    /// The connection ended (either side).
    Gone,
}

pub enum Order {
    Ping(Vec<u8>),
    Drop,
}

struct Shared {
    admission: Mutex<Admission>,
    orders: Mutex<VecDeque<Order>>,
    tls: Option<Arc<ServerConfig>>,
}

pub struct FakeRelay {
    pub port: u16,
    events: Receiver<(Instant, Event)>,
    shared: Arc<Shared>,
}

pub trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

impl FakeRelay {
    pub fn start(tls: Option<ServerConfig>) -> FakeRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            admission: Mutex::new(Admission::Accept),
            orders: Mutex::new(VecDeque::new()),
            tls: tls.map(Arc::new),
        });
        let (sender, events) = channel();
        let accept_shared = shared.clone();
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let shared = accept_shared.clone();
                let sender = sender.clone();
                thread::spawn(move || serve(tcp, &shared, &sender));
            }
        });
        FakeRelay {
            port,
            events,
            shared,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn admit(&self, admission: Admission) {
        *self.shared.admission.lock().unwrap() = admission;
    }

    pub fn order(&self, order: Order) {
        self.shared.orders.lock().unwrap().push_back(order);
    }

    /// The next event that `wanted` accepts, skipping others; panics after
    /// `timeout` naming what was awaited.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&Event) -> bool,
    ) -> (Instant, Event) {
        wait_for_event(&self.events, timeout, what, wanted)
    }

    /// The next text frame of the given `type`, parsed.
    pub fn wait_for_frame(&self, timeout: Duration, kind: &str) -> serde_json::Value {
        let (_, event) = self.wait_for(
            timeout,
            kind,
            |e| matches!(e, Event::Text(t) if frame_type(t) == kind),
        );
        let Event::Text(text) = event else {
            unreachable!()
        };
        serde_json::from_str(&text).unwrap()
    }

    /// Every event that arrives within `window`.
    pub fn collect(&self, window: Duration) -> Vec<(Instant, Event)> {
        let deadline = Instant::now() + window;
        let mut seen = Vec::new();
        while let Ok(event) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            seen.push(event);
        }
        seen
    }
}

fn wait_for_event(
    events: &Receiver<(Instant, Event)>,
    timeout: Duration,
    what: &str,
    wanted: impl Fn(&Event) -> bool,
) -> (Instant, Event) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok((at, event)) if wanted(&event) => return (at, event),
            Ok(_) => {}
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }
}

/// A relay that never finishes its handshake: it reads the upgrade request,
/// then answers one byte of a response every `pace`, forever. Each byte
/// keeps a per-read timeout from firing; only a deadline on the whole
/// connect step ends it. Reports `Accepted`, `Request` and `Gone` (the
/// agent closed the connection).
pub struct Trickler {
    pub port: u16,
    events: Receiver<(Instant, Event)>,
}

impl Trickler {
    pub fn start(pace: Duration) -> Trickler {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, events) = channel();
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let sender = sender.clone();
                thread::spawn(move || trickle(tcp, pace, &sender));
            }
        });
        Trickler { port, events }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&Event) -> bool,
    ) -> (Instant, Event) {
        wait_for_event(&self.events, timeout, what, wanted)
    }
}

fn trickle(mut tcp: TcpStream, pace: Duration, events: &Sender<(Instant, Event)>) {
    let send = |event| {
        let _ = events.send((Instant::now(), event));
    };
    send(Event::Accepted);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => {
                send(Event::Gone);
                return;
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.lines();
    let uri = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or_default()
        .to_owned();
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });
    send(Event::Request { uri, authorization });
    // A plausible start, then header lines without the blank line that
    // would end them.
    let status = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".iter();
    let headers = b"X-Trickle: slow\r\n".iter().cycle();
    tcp.set_read_timeout(Some(pace)).unwrap();
    for byte in status.chain(headers) {
        if tcp.write_all(&[*byte]).is_err() {
            break;
        }
        // Waiting by reading notices at once when the agent hangs up.
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    send(Event::Gone);
}

/// A loopback listener that nobody accepts from, its accept queue already
/// full: the kernel drops further SYNs, so a connect to it hangs (the
/// client retries its SYN) instead of being refused. Keep the returned
/// streams alive: they are what fills the queue.
pub fn unanswered_listener() -> (TcpListener, Vec<TcpStream>) {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket,
    };
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let listener = TcpListener::from(fd);
    let address = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match TcpStream::connect_timeout(&address, Duration::from_millis(300)) {
            Ok(tcp) => queued.push(tcp),
            Err(e) if e.kind() == ErrorKind::TimedOut => return (listener, queued),
            Err(e) => panic!("connect to the unanswered listener: {e}"),
        }
        assert!(queued.len() < 16, "the accept queue never filled up");
    }
}

/// Whether some socket on this host is stuck sending SYNs to `port` on
/// loopback (`SYN_SENT` in /proc/net/tcp).
pub fn syn_sent_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"02")
    })
}

fn frame_type(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn serve(tcp: TcpStream, shared: &Shared, events: &Sender<(Instant, Event)>) {
    let send = |event| {
        let _ = events.send((Instant::now(), event));
    };
    send(Event::Accepted);
    let admission = *shared.admission.lock().unwrap();
    if admission == Admission::HangUp {
        return;
    }
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let stream: Box<dyn Transport> = match &shared.tls {
        Some(config) => {
            let connection = rustls::ServerConnection::new(config.clone()).unwrap();
            Box::new(rustls::StreamOwned::new(
                connection,
                tcp.try_clone().unwrap(),
            ))
        }
        None => Box::new(tcp.try_clone().unwrap()),
    };
    // The error type is tungstenite's, sized as it chose.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        send(Event::Request {
            uri: request.uri().to_string(),
            authorization: request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned()),
        });
        if admission == Admission::Reject401 {
            let mut refusal = ErrorResponse::new(Some("invalid token".into()));
            *refusal.status_mut() = tungstenite::http::StatusCode::UNAUTHORIZED;
            return Err(refusal);
        }
        Ok(response)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
        send(Event::Gone);
        return;
    };
    if admission == Admission::Mute {
        thread::sleep(Duration::from_secs(120));
        return;
    }
    if let Admission::CloseAfterFrame(code) = admission {
        if let Ok(Message::Text(text)) = ws.read() {
            send(Event::Text(text.to_string()));
        }
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "refused".into(),
        };
        let _ = ws.close(Some(frame));
        // The agent answers the close; then the connection ends.
        while ws.read().is_ok() {}
        send(Event::Gone);
        return;
    }
    tcp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    read_frames(&mut ws, shared, &send);
    send(Event::Gone);
}

fn read_frames(ws: &mut WebSocket<Box<dyn Transport>>, shared: &Shared, send: &dyn Fn(Event)) {
    loop {
        if let Some(order) = shared.orders.lock().unwrap().pop_front() {
            match order {
                Order::Ping(payload) => ws.send(Message::Ping(payload.into())).unwrap(),
                Order::Drop => return,
            }
        }
        match ws.read() {
            Ok(Message::Text(text)) => send(Event::Text(text.to_string())),
            Ok(Message::Pong(payload)) => send(Event::Pong(payload.to_vec())),
            Ok(Message::Close(frame)) => send(Event::Close(frame.map(|f| f.code.into()))),
            Ok(_) => {}
            Err(e) if read_timed_out(&e) => {}
            Err(_) => return,
        }
    }
}

impl TestCa {
    pub fn server_config(&self) -> ServerConfig {
        vstats::tls::server_config(&self.cert_pem, &self.key_pem).unwrap()
    }
}

/// The agent under test; `VSTATS_AGENT_BIN` and `VSTATS_TEST_RUNNER` (e.g.
/// `qemu-arm-static`) run a cross-built one instead.
pub fn agent_command() -> Command {
    binary_command("VSTATS_AGENT_BIN", env!("CARGO_BIN_EXE_vstats-agent"))
}

/// The relay under test; `VSTATS_RELAY_BIN` as for the agent.
pub fn relay_command() -> Command {
    binary_command("VSTATS_RELAY_BIN", env!("CARGO_BIN_EXE_vstats-relay"))
}

fn binary_command(variable: &str, built: &str) -> Command {
    let binary = std::env::var(variable).unwrap_or_else(|_| built.to_owned());
    let mut command = match std::env::var("VSTATS_TEST_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut command = Command::new(runner);
            command.arg(binary);
            command
        }
        _ => Command::new(binary),
    };
    for (name, _) in std::env::vars() {
        if name.starts_with("VSTATS_") {
            command.env_remove(name);
        }
    }
    command
}

/// A running agent or relay; killed when dropped. Its stderr is kept for
/// asserts.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

/// The agent binary run with `args`.
pub struct Agent;

impl Agent {
    pub fn spawn(args: &[&str]) -> Process {
        let mut command = agent_command();
        command.args(args);
        Process::spawn(command)
    }
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Process { child, log }
    }

    /// Waits until the log holds `needle`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("no '{needle}' in the log within {timeout:?}:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for exit, at most `timeout`; panics if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "agent still running after {timeout:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A read on a socket with a read timeout found nothing yet.
pub fn read_timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e)
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// Lowercase hex SHA-256, as `sha256sum` prints it (release SHA256SUMS).
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

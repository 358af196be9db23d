//! `vstats-relay`: admits agents by token, keeps the registry, fans live
//! metrics out to dashboards. One thread, one epoll loop, no async runtime.
//!
//! The loop ([`Relay::run`]) reads top-down: wait for readiness, drive the
//! ready connections, push queued messages to dashboards, then the clock
//! work (pings, timeouts, registry changes).

pub mod cli;
pub mod config;
pub mod conn;
pub mod http;
pub mod hub;
pub mod outbox;
pub mod poller;
pub mod prometheus;
pub mod rate;
pub mod registry;

use config::Config;
use conn::{Body, Done, HeadPhase, Incoming, RespondPhase, Socket, Stream, Then, Turn, Written};
use http::{Head, Parsed, Route};
use hub::{ConnId, Hub};
use log::{debug, error, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use outbox::Outbox;
use poller::Poller;
use registry::{FileStamp, Registry};
use rustls::ServerConfig;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Utf8Bytes;
use tungstenite::protocol::frame::coding::CloseCode;

/// The relay pings every connection this often...
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and closes one silent for this long.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// A request head must arrive within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer has this long to answer our close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the registry file is checked for changes.
const REGISTRY_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Consecutive malformed frames that close an agent (1007).
const MALFORMED_LIMIT: u32 = 10;
/// The clock work runs at least this often.
const TICK: Duration = Duration::from_millis(500);
/// How long accepting stops after `accept` fails (out of file descriptors).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Event bytes a dashboard may have waiting beyond its snapshot (1013 past it).
const DASHBOARD_EVENT_ROOM: usize = 1 << 20;

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;

/// Why the relay could not start.
#[derive(Debug)]
pub enum RelayError {
    /// The state file is unreadable or corrupt.
    Registry(registry::RegistryError),
    /// The certificate or key could not be loaded.
    Tls(crate::tls::TlsError),
    /// Binding, epoll or signal set-up failed.
    Io(&'static str, io::Error),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::Registry(e) => write!(f, "{e}"),
            RelayError::Tls(e) => write!(f, "{e}"),
            RelayError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for RelayError {}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_out: u64,
    pub malformed: u64,
    pub conflated: u64,
    pub refused_connections: u64,
    /// Samples over an agent's rate limit.
    pub dropped_samples: u64,
    /// Connections closed (1002) for breaking the WebSocket protocol.
    pub protocol_errors: u64,
}

enum Phase {
    /// Only while a phase is being replaced by the next.
    Between,
    Head(HeadPhase),
    Respond(RespondPhase),
    Agent(AgentConn),
    Dashboard(DashboardConn),
}

struct Conn {
    phase: Phase,
    /// Head and response phases end by this time.
    deadline: Instant,
}

struct AgentConn {
    socket: Socket,
    server_id: String,
    malformed_in_a_row: u32,
    samples: rate::RateLimit,
}

struct DashboardConn {
    socket: Socket,
    outbox: Outbox,
    /// Already listed in `Relay::dirty`.
    dirty: bool,
}

pub struct Relay {
    config: Config,
    poller: Poller,
    listener: TcpListener,
    signals: SignalFd,
    tls: Option<Arc<ServerConfig>>,
    max_connections: usize,
    registry: Registry,
    registry_stamp: Option<FileStamp>,
    registry_checked: Instant,
    hub: Hub,
    conns: HashMap<ConnId, Conn>,
    next_id: ConnId,
    dashboards: Vec<ConnId>,
    dirty: Vec<ConnId>,
    counters: Counters,
    last_tick: Instant,
    malformed: Hush,
    accepting: Accepting,
    /// Connections whose last turn of reading ran out of budget: read
    /// again at the next turn of the loop, since no edge will come for
    /// what they still have waiting.
    unfinished: Vec<ConnId>,
}

/// A regular file in `dir`, and its length. A link may point within the
/// folder, not out of it; anything but a regular file (a FIFO would block
/// the loop on open and read) is refused.
fn open_dist_file(dir: &std::path::Path, name: &str) -> io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name).canonicalize()?;
    if !path.starts_with(dir.canonicalize()?) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a link out of --dist-dir",
        ));
    }
    // Not blocking: opening a FIFO for reading would wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, metadata.len()))
}

/// Logs about one kind of trouble at most once per [`LOG_TROUBLE_EVERY`],
/// so a peer cannot flood the log; the next line says how many it held back.
#[derive(Default)]
struct Hush {
    logged: Option<Instant>,
    held_back: u64,
}

/// At most one log line per this long about one kind of trouble.
const LOG_TROUBLE_EVERY: Duration = Duration::from_secs(10);

impl Hush {
    /// `Some(held back since the last line)` when a line may be logged now.
    fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|at| now.duration_since(at) < LOG_TROUBLE_EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// ` (N more since the last report)`, or nothing for none.
fn held_back(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(" ({count} more since the last report)")
    }
}

/// Whether the listener is watched. At the open-files limit `accept` fails
/// while connections wait in the backlog, and the level-triggered listener
/// stays readable: retrying at once would spin a core and flood the log.
#[derive(Default)]
struct Accepting {
    paused_until: Option<Instant>,
    failures: Hush,
}

impl Relay {
    /// Binds, loads the registry and the certificate: everything that can
    /// fail at start fails here, before the loop.
    pub fn bind(config: Config) -> Result<Relay, RelayError> {
        let max_connections = config
            .max_connections
            // Leave room for the listener, epoll, the signalfd, files and logs.
            .unwrap_or_else(|| {
                (raise_open_files_limit() as usize)
                    .saturating_sub(32)
                    .max(16)
            });
        let registry = Registry::load(&config.state).map_err(RelayError::Registry)?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(Arc::new(
                crate::tls::server_config(cert, key).map_err(RelayError::Tls)?,
            )),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen).map_err(|e| RelayError::Io("cannot listen", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| RelayError::Io("listener", e))?;
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(signal);
        }
        mask.thread_block()
            .map_err(|e| RelayError::Io("signals", e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| RelayError::Io("signals", e.into()))?;
        let poller = Poller::new(1024).map_err(|e| RelayError::Io("epoll", e))?;
        poller
            .add_readable(&listener, LISTENER)
            .map_err(|e| RelayError::Io("epoll", e))?;
        poller
            .add_readable(&signals, SIGNALS)
            .map_err(|e| RelayError::Io("epoll", e))?;
        let now = Instant::now();
        Ok(Relay {
            hub: Hub::new(&registry),
            registry_stamp: registry::file_stamp(&config.state),
            registry,
            registry_checked: now,
            config,
            poller,
            listener,
            signals,
            tls,
            max_connections,
            conns: HashMap::new(),
            next_id: SIGNALS + 1,
            dashboards: Vec::new(),
            dirty: Vec::new(),
            counters: Counters::default(),
            last_tick: now,
            malformed: Hush::default(),
            accepting: Accepting::default(),
            unfinished: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until SIGTERM or SIGINT, then closes every connection.
    pub fn run(mut self) -> Result<(), RelayError> {
        info!(
            "vstats-relay {} listening on {}{} with {} servers registered",
            crate::VERSION,
            self.local_addr()
                .map_err(|e| RelayError::Io("listener", e))?,
            if self.tls.is_some() { " (TLS)" } else { "" },
            self.hub.servers.len()
        );
        loop {
            let timeout = match self.accepting.paused_until {
                _ if !self.unfinished.is_empty() => Duration::ZERO,
                Some(until) => until.saturating_duration_since(Instant::now()).min(TICK),
                None => TICK,
            };
            let ready: Vec<u64> = self
                .poller
                .wait(timeout)
                .map_err(|e| RelayError::Io("epoll", e))?
                .collect();
            for key in ready {
                match key {
                    LISTENER => self.accept(),
                    SIGNALS => {
                        if self.handle_signals() {
                            self.shut_down();
                            return Ok(());
                        }
                    }
                    id => self.drive(id),
                }
            }
            // After the ready ones: each connection gets one turn a round.
            for id in std::mem::take(&mut self.unfinished) {
                self.drive(id);
            }
            if self
                .accepting
                .paused_until
                .is_some_and(|until| Instant::now() >= until)
            {
                self.resume_accepting();
            }
            self.pump_dashboards();
            if self.last_tick.elapsed() >= TICK {
                self.tick();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let tcp = match self.listener.accept() {
                Ok((tcp, _)) => tcp,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.pause_accepting(&e);
                    return;
                }
            };
            if tcp.set_nonblocking(true).is_err() {
                continue;
            }
            if self.conns.len() >= self.max_connections {
                self.counters.refused_connections += 1;
                debug!("refusing a connection: {} open", self.conns.len());
                // Best effort, never waiting: on a TLS port plain text
                // would be noise, so TLS clients just see the close.
                if self.tls.is_none() {
                    let _ = (&tcp).write(&http::text_response(503, "too many connections"));
                }
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => Stream::Plain(tcp),
                Some(config) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(tls) => Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))),
                    Err(e) => {
                        error!("tls: {e}");
                        continue;
                    }
                },
            };
            let id = self.next_id;
            self.next_id += 1;
            if let Err(e) = self.poller.add(stream.tcp(), id) {
                warn!("epoll: {e}");
                continue;
            }
            let conn = Conn {
                phase: Phase::Head(HeadPhase::new(stream)),
                deadline: Instant::now() + HEAD_TIMEOUT,
            };
            self.conns.insert(id, conn);
            // Edge-triggered: data that arrived before registration
            // produced no edge, so read now.
            self.drive(id);
        }
    }

    /// Stops watching the listener for [`ACCEPT_PAUSE`] after `accept`
    /// failed; connections wait in the kernel's backlog meanwhile.
    fn pause_accepting(&mut self, error: &io::Error) {
        let now = Instant::now();
        if let Err(e) = self.poller.set_readable(&self.listener, LISTENER, false) {
            warn!("epoll: {e}");
        }
        self.accepting.paused_until = Some(now + ACCEPT_PAUSE);
        if let Some(earlier) = self.accepting.failures.pass(now) {
            warn!(
                "accept: {error}; pausing new connections for {} ms{}",
                ACCEPT_PAUSE.as_millis(),
                held_back(earlier)
            );
        }
    }

    fn resume_accepting(&mut self) {
        self.accepting.paused_until = None;
        if let Err(e) = self.poller.set_readable(&self.listener, LISTENER, true) {
            warn!("epoll: {e}");
        }
        self.accept();
    }

    /// Whether a stop signal arrived; SIGHUP reloads.
    fn handle_signals(&mut self) -> bool {
        let mut stop = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => {
                    info!("SIGHUP: reloading the registry and the certificate");
                    self.reload_registry();
                    self.reload_certificate();
                }
                Ok(signal) => {
                    info!("{signal}: shutting down");
                    stop = true;
                }
                Err(_) => {}
            }
        }
        stop
    }

    /// Takes the connection out, advances it, puts it back unless done.
    fn drive(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return; // a stray event for a connection already gone
        };
        let result = self.advance(id, &mut conn);
        let socket = match &mut conn.phase {
            Phase::Agent(agent) => Some(&mut agent.socket),
            Phase::Dashboard(dashboard) => Some(&mut dashboard.socket),
            _ => None,
        };
        if let Some(socket) = socket
            && std::mem::take(&mut socket.protocol_fault)
        {
            self.counters.protocol_errors += 1;
        }
        match result {
            Ok(()) => {
                self.conns.insert(id, conn);
            }
            Err(Done) => self.forget(id, conn),
        }
    }

    fn advance(&mut self, id: ConnId, conn: &mut Conn) -> Result<(), Done> {
        loop {
            let next = match &mut conn.phase {
                Phase::Between => return Err(Done),
                Phase::Head(phase) => match phase.read()? {
                    None => return Ok(()),
                    Some((parsed, rest)) => {
                        let Phase::Head(phase) = std::mem::replace(&mut conn.phase, Phase::Between)
                        else {
                            unreachable!()
                        };
                        conn.deadline = Instant::now() + HEAD_TIMEOUT;
                        let (out, then) = self.answer(parsed, rest);
                        Phase::Respond(RespondPhase::new(phase.stream, out, then))
                    }
                },
                Phase::Respond(phase) => {
                    let (written, bytes) = phase.write()?;
                    if bytes > 0 {
                        // A download's deadline is for silence, not length.
                        conn.deadline = Instant::now() + HEAD_TIMEOUT;
                    }
                    match written {
                        Written::All => {}
                        Written::Blocked => return Ok(()),
                        Written::Yielded => {
                            self.unfinished.push(id);
                            return Ok(());
                        }
                    }
                    let Phase::Respond(phase) = std::mem::replace(&mut conn.phase, Phase::Between)
                    else {
                        unreachable!()
                    };
                    match phase.then {
                        // A file is sent by then: both end here.
                        Then::Close | Then::SendFile(_) => return Err(Done),
                        Then::Agent { server_id, rest } => {
                            self.admit_agent(id, server_id, Socket::new(phase.stream, rest))
                        }
                        Then::Dashboard { rest } => {
                            self.admit_dashboard(id, Socket::new(phase.stream, rest))
                        }
                    }
                }
                Phase::Agent(agent) => return self.read_agent(id, agent),
                Phase::Dashboard(dashboard) => {
                    if dashboard.socket.read(|_, _| {})? == Turn::Yielded {
                        self.unfinished.push(id);
                    }
                    if !dashboard.dirty {
                        dashboard.dirty = true;
                        self.dirty.push(id);
                    }
                    return Ok(());
                }
            };
            conn.phase = next;
        }
    }

    /// Decides what to answer a complete (or refused) head: the bytes to
    /// write, and what the connection becomes after them.
    fn answer(&mut self, parsed: Parsed, rest: Vec<u8>) -> (Vec<u8>, Then) {
        let head = match parsed {
            Parsed::Complete(head, _) => head,
            Parsed::Refuse(status) => {
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "bad request"
                };
                return (http::text_response(status, text), Then::Close);
            }
            Parsed::Partial => unreachable!("a partial head is not answered"),
        };
        let head_only = head.method == "HEAD";
        let out = match http::route(&head) {
            Route::Health => http::response(200, "text/plain", b"ok\n", head_only),
            Route::Servers if !self.viewer_allowed(&head) => {
                http::text_response(401, "viewer token required")
            }
            Route::Servers => {
                http::response(200, "application/json", &self.hub.servers_json(), head_only)
            }
            Route::Page => http::page_response(DASHBOARD_PAGE.as_bytes(), head_only),
            Route::Metrics => http::response(
                200,
                prometheus::CONTENT_TYPE,
                prometheus::render(&self.hub.servers, &self.counters, self.connections())
                    .as_bytes(),
                head_only,
            ),
            Route::Dist => return self.dist_file(&head.path, head_only),
            Route::NotFound => http::text_response(404, "not found"),
            Route::MethodNotAllowed => http::text_response(405, "method not allowed"),
            Route::AgentStream => return self.answer_agent(&head, rest),
            Route::DashboardStream => {
                if !head.origin_allowed(&self.config.allowed_origins) {
                    http::text_response(403, "origin not allowed")
                } else if !self.viewer_allowed(&head) {
                    http::text_response(401, "viewer token required")
                } else {
                    return match http::upgrade_response(&head) {
                        Ok(out) => (out, Then::Dashboard { rest }),
                        Err(out) => (out, Then::Close),
                    };
                }
            }
        };
        (out, Then::Close)
    }

    fn answer_agent(&mut self, head: &Head, rest: Vec<u8>) -> (Vec<u8>, Then) {
        let token = head.token();
        let known = |registry: &Registry| {
            let server = registry.authenticate(token.as_deref()?)?;
            Some(server.id.clone())
        };
        let mut server_id = known(&self.registry);
        // A server added a moment ago: its agent must not wait for the poll
        // (and back off 15-30 s after a 401). Only a changed file is
        // reloaded, so a stream of bad tokens costs a stat each.
        if server_id.is_none() && token.is_some() && self.registry_file_changed() {
            self.reload_registry();
            server_id = known(&self.registry);
        }
        let Some(server_id) = server_id else {
            // The token itself is never logged, nor the query holding it.
            info!("agent refused: unknown or missing token");
            return (http::text_response(401, "invalid token"), Then::Close);
        };
        match http::upgrade_response(head) {
            Ok(out) => (out, Then::Agent { server_id, rest }),
            Err(out) => (out, Then::Close),
        }
    }

    /// A release file from `--dist-dir`, sent a chunk at a time.
    fn dist_file(&self, path: &str, head_only: bool) -> (Vec<u8>, Then) {
        let not_found = || (http::text_response(404, "not found"), Then::Close);
        let (Some(dir), Some(name)) = (&self.config.dist_dir, http::dist_file(path)) else {
            return not_found();
        };
        match open_dist_file(dir, name) {
            Ok((file, len)) => {
                let content_type = if name.ends_with(".sh") || name == "SHA256SUMS" {
                    "text/plain; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                let head = http::response_head(200, content_type, len);
                if head_only {
                    (head, Then::Close)
                } else {
                    (head, Then::SendFile(Body::new(file, len)))
                }
            }
            Err(e) => {
                debug!("{}: {e}", dir.join(name).display());
                not_found()
            }
        }
    }

    fn connections(&self) -> prometheus::Connections {
        let mut count = prometheus::Connections::default();
        for conn in self.conns.values() {
            match conn.phase {
                Phase::Agent(_) => count.agents += 1,
                Phase::Dashboard(_) => count.dashboards += 1,
                _ => count.http += 1,
            }
        }
        count
    }

    fn viewer_allowed(&self, head: &Head) -> bool {
        match &self.config.viewer_token {
            None => true,
            Some(expected) => head.token().is_some_and(|token| {
                registry::constant_time_eq(token.as_bytes(), expected.as_bytes())
            }),
        }
    }

    fn admit_agent(&mut self, id: ConnId, server_id: String, socket: Socket) -> Phase {
        let Some(server) = self.hub.get_mut(&server_id) else {
            // Removed between the head and now.
            let mut socket = socket;
            socket.close(CloseCode::Policy, "server removed");
            return Phase::Agent(AgentConn {
                socket,
                server_id,
                malformed_in_a_row: 0,
                samples: rate::RateLimit::new(self.config.agent_max_rate, Instant::now()),
            });
        };
        let replaced = server.agent.replace(id);
        server.last_frame = Some(Instant::now());
        let came_online = !server.online;
        server.online = true;
        info!("agent for {} ({}) connected", server.name, server.id);
        if let Some(old) = replaced {
            // The device rebooted and came back before its old socket died.
            if let Some(Conn {
                phase: Phase::Agent(agent),
                ..
            }) = self.conns.get_mut(&old)
            {
                agent
                    .socket
                    .close(CloseCode::Normal, "replaced by a newer connection");
            }
        }
        if came_online {
            self.broadcast(hub::status(&server_id, true));
        }
        Phase::Agent(AgentConn {
            socket,
            server_id,
            malformed_in_a_row: 0,
            samples: rate::RateLimit::new(self.config.agent_max_rate, Instant::now()),
        })
    }

    fn admit_dashboard(&mut self, id: ConnId, socket: Socket) -> Phase {
        let snapshot = self.hub.snapshot();
        let snapshot_bytes: usize = snapshot.iter().map(|m| m.len()).sum();
        let mut outbox = Outbox::new(snapshot_bytes + DASHBOARD_EVENT_ROOM);
        for message in snapshot {
            // The limit was sized to hold the whole snapshot.
            let _ = outbox.push_event(message);
        }
        self.dashboards.push(id);
        self.dirty.push(id);
        debug!("dashboard connected ({} open)", self.dashboards.len());
        Phase::Dashboard(DashboardConn {
            socket,
            outbox,
            dirty: true,
        })
    }

    fn read_agent(&mut self, id: ConnId, agent: &mut AgentConn) -> Result<(), Done> {
        // At most one turn's frames (conn::TURN_FRAMES, TURN_BYTES).
        let mut frames = Vec::new();
        let mut unexpected = 0;
        let turn = agent.socket.read(|_, incoming| match incoming {
            Incoming::Text(text) => frames.push(text),
            Incoming::Unexpected => unexpected += 1,
        });
        // Frames that came with a close or the end of the stream count too:
        // they are an agent's last word (its final sample).
        match turn {
            Ok(Turn::Yielded) => self.unfinished.push(id),
            Ok(Turn::Drained) => {}
            Err(Done) if frames.is_empty() && unexpected == 0 => return Err(Done),
            Err(Done) => {}
        }
        let speaks_for_server = self
            .hub
            .get(&agent.server_id)
            .is_some_and(|server| server.agent == Some(id));
        if !speaks_for_server {
            // Replaced by a newer connection, or its server was removed:
            // what it still sends while closing is not the server's state.
            turn?;
            return agent.socket.flush();
        }
        let heard = agent.socket.last_heard;
        for _ in 0..unexpected {
            self.malformed(agent, "binary frame");
        }
        for text in frames {
            self.counters.frames_in += 1;
            self.agent_frame(agent, &text);
        }
        self.agent_heard(&agent.server_id, heard);
        if agent.malformed_in_a_row >= MALFORMED_LIMIT {
            agent
                .socket
                .close(CloseCode::Invalid, "repeated malformed frames");
        }
        turn?;
        agent.socket.flush()
    }

    /// Any frame (or pong) keeps the server online.
    fn agent_heard(&mut self, server_id: &str, at: Instant) {
        let Some(server) = self.hub.get_mut(server_id) else {
            return;
        };
        server.last_frame = Some(at);
        server.last_seen = Some(std::time::SystemTime::now());
        if !server.online && server.agent.is_some() {
            server.online = true;
            let message = hub::status(server_id, true);
            self.broadcast(message);
        }
    }

    fn agent_frame(&mut self, agent: &mut AgentConn, text: &str) {
        let raw = match crate::protocol::RawFrame::parse(text) {
            Ok(raw) => raw,
            Err(e) => return self.malformed(agent, &e.to_string()),
        };
        match raw.kind.as_ref() {
            "metrics" => {
                let sample = match raw.data.ok_or(()).map(hub::check_sample) {
                    Ok(Ok(sample)) => sample,
                    Ok(Err(e)) => return self.malformed(agent, &e.to_string()),
                    Err(()) => return self.malformed(agent, "metrics without data"),
                };
                agent.malformed_in_a_row = 0;
                if !agent.samples.allow(Instant::now()) {
                    self.counters.dropped_samples += 1;
                    return;
                }
                self.fan_out(&agent.server_id, sample);
            }
            // Heartbeats only keep the server online; unknown types are
            // ignored, as the protocol asks of every receiver.
            _ => agent.malformed_in_a_row = 0,
        }
    }

    fn malformed(&mut self, agent: &mut AgentConn, why: &str) {
        self.counters.malformed += 1;
        agent.malformed_in_a_row += 1;
        if let Some(earlier) = self.malformed.pass(Instant::now()) {
            warn!(
                "malformed frame from server {} dropped: {why}{}",
                agent.server_id,
                held_back(earlier)
            );
        }
    }

    /// Stores a server's sample and queues it to every dashboard.
    fn fan_out(&mut self, server_id: &str, sample: Box<RawValue>) {
        let Some(server) = self.hub.get_mut(server_id) else {
            return;
        };
        let message = hub::metrics(server_id, &sample);
        server.latest_message = Some(message.clone());
        server.latest_data = Some(sample);
        let slot = server.slot;
        for id in &self.dashboards {
            if let Some(Conn {
                phase: Phase::Dashboard(dashboard),
                ..
            }) = self.conns.get_mut(id)
            {
                if dashboard.outbox.push_metrics(slot, message.clone()) {
                    self.counters.conflated += 1;
                }
                if !dashboard.dirty {
                    dashboard.dirty = true;
                    self.dirty.push(*id);
                }
            }
        }
    }

    /// Queues an event to every dashboard; one that cannot take it is
    /// closed (1013) and gets a fresh snapshot when it reconnects.
    fn broadcast(&mut self, message: Utf8Bytes) {
        for id in &self.dashboards {
            if let Some(Conn {
                phase: Phase::Dashboard(dashboard),
                ..
            }) = self.conns.get_mut(id)
            {
                if dashboard.socket.closing.is_some() {
                    continue;
                }
                let mut queued = dashboard.outbox.push_event(message.clone());
                if queued.is_err() {
                    // A burst (a registry of thousands reloaded) can outgrow
                    // the room of a reader that keeps up: let its socket
                    // take what it can before calling it slow.
                    if let Ok((messages, bytes)) = dashboard.socket.pump(&mut dashboard.outbox) {
                        self.counters.frames_out += messages;
                        self.counters.bytes_out += bytes;
                    }
                    queued = dashboard.outbox.push_event(message.clone());
                }
                if queued.is_err() {
                    warn!("dashboard too slow to keep up: closing it (1013)");
                    dashboard
                        .socket
                        .close(CloseCode::Again, "too slow: reconnect for a fresh snapshot");
                }
                if !dashboard.dirty {
                    dashboard.dirty = true;
                    self.dirty.push(*id);
                }
            }
        }
    }

    /// Writes what the dirty dashboards have waiting.
    fn pump_dashboards(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(mut conn) = self.conns.remove(&id) else {
                continue;
            };
            let result = match &mut conn.phase {
                Phase::Dashboard(dashboard) => {
                    dashboard.dirty = false;
                    dashboard.socket.pump(&mut dashboard.outbox)
                }
                _ => Ok((0, 0)),
            };
            match result {
                Ok((messages, bytes)) => {
                    self.counters.frames_out += messages;
                    self.counters.bytes_out += bytes;
                    self.conns.insert(id, conn);
                }
                Err(Done) => self.forget(id, conn),
            }
        }
    }

    /// The clock work: deadlines, pings, silence, agent timeouts, registry.
    fn tick(&mut self) {
        let now = Instant::now();
        self.last_tick = now;
        let mut finished = Vec::new();
        for (id, conn) in &mut self.conns {
            let socket = match &mut conn.phase {
                Phase::Head(head) => {
                    if now >= conn.deadline {
                        // Best effort, never waiting; on TLS before the
                        // handshake ends, rustls only buffers it.
                        let _ = head
                            .stream
                            .write(&http::text_response(408, "request head too slow"));
                        let _ = head.stream.flush();
                        finished.push(*id);
                    }
                    continue;
                }
                Phase::Between | Phase::Respond(_) => {
                    if now >= conn.deadline {
                        finished.push(*id);
                    }
                    continue;
                }
                Phase::Agent(agent) => &mut agent.socket,
                Phase::Dashboard(dashboard) => &mut dashboard.socket,
            };
            let silent = now.duration_since(socket.last_heard) >= SILENCE_LIMIT;
            let close_expired = socket
                .closing
                .is_some_and(|at| now.duration_since(at) >= CLOSE_TIMEOUT);
            if silent || close_expired {
                finished.push(*id);
            } else if now.duration_since(socket.last_ping) >= PING_EVERY {
                socket.ping();
                if socket.flush().is_err() {
                    finished.push(*id);
                }
            }
        }
        for id in finished {
            if let Some(conn) = self.conns.remove(&id) {
                self.forget(id, conn);
            }
        }
        self.expire_agents(now);
        if now.duration_since(self.registry_checked) >= REGISTRY_CHECK_EVERY {
            self.registry_checked = now;
            if self.registry_file_changed() {
                self.reload_registry();
            }
        }
    }

    /// Servers whose agent is connected but silent past the agent timeout
    /// go offline (the socket stays: a frame brings them back).
    fn expire_agents(&mut self, now: Instant) {
        let timeout = self.config.agent_timeout;
        let mut gone_offline = Vec::new();
        for server in &mut self.hub.servers {
            let stale = server
                .last_frame
                .is_none_or(|at| now.duration_since(at) >= timeout);
            if server.online && stale {
                server.online = false;
                gone_offline.push(server.id.clone());
            }
        }
        for id in gone_offline {
            info!("server {id} offline: nothing heard for {timeout:?}");
            self.broadcast(hub::status(&id, false));
        }
    }

    /// Drops a connection and undoes what it stood for.
    fn forget(&mut self, id: ConnId, conn: Conn) {
        match conn.phase {
            Phase::Agent(agent) => {
                let Some(server) = self.hub.get_mut(&agent.server_id) else {
                    return;
                };
                // A replaced connection leaves its successor in charge.
                if server.agent != Some(id) {
                    return;
                }
                server.agent = None;
                info!("agent for {} ({}) disconnected", server.name, server.id);
                if server.online {
                    server.online = false;
                    let message = hub::status(&agent.server_id, false);
                    self.broadcast(message);
                }
            }
            Phase::Dashboard(_) => {
                self.dashboards.retain(|d| *d != id);
                debug!("dashboard disconnected ({} open)", self.dashboards.len());
            }
            Phase::Between | Phase::Head(_) | Phase::Respond(_) => {}
        }
    }

    /// Whether the state file is not the version last loaded (a stat).
    fn registry_file_changed(&self) -> bool {
        registry::file_stamp(&self.config.state) != self.registry_stamp
    }

    /// Re-reads the state file; a bad file keeps the registry we have, and
    /// so does a missing one: gone for a moment (an editor's save, a
    /// restore), not emptied. Its return is a change the poll picks up.
    fn reload_registry(&mut self) {
        self.registry_stamp = registry::file_stamp(&self.config.state);
        let registry = match Registry::load_if_present(&self.config.state) {
            Ok(Some(registry)) => registry,
            Ok(None) => {
                // Stamped as missing: one warning until the file is back.
                self.registry_stamp = None;
                warn!(
                    "{}: missing; keeping the registry loaded before until it is back",
                    self.config.state.display()
                );
                return;
            }
            Err(e) => {
                error!("{e}; keeping the registry loaded before");
                return;
            }
        };
        let changes = registry.changes_since(&self.registry);
        self.registry = registry;
        if changes.is_empty() {
            return;
        }
        let (added, removed) = self.hub.sync(&self.registry);
        for server in removed {
            info!("server {} ({}) removed", server.name, server.id);
            self.broadcast(hub::server_removed(&server.id));
            for id in &self.dashboards {
                if let Some(Conn {
                    phase: Phase::Dashboard(dashboard),
                    ..
                }) = self.conns.get_mut(id)
                {
                    dashboard.outbox.forget(server.slot);
                }
            }
            if let Some(agent) = server.agent {
                self.close_agent(agent, "server removed");
            }
        }
        for id in &changes.token_changed {
            // The agent loses its say at once, and dashboards hear it: its
            // close below no longer speaks for the server (see `forget`).
            let Some(server) = self.hub.get_mut(id) else {
                continue;
            };
            let Some(agent) = server.agent.take() else {
                continue;
            };
            let was_online = std::mem::replace(&mut server.online, false);
            info!(
                "token of {} ({}) rotated: closing its agent",
                server.name, server.id
            );
            self.close_agent(agent, "token rotated");
            if was_online {
                self.broadcast(hub::status(id, false));
            }
        }
        for id in added {
            if let Some(server) = self.hub.get(&id) {
                info!("server {} ({}) added", server.name, server.id);
                let message = hub::server_added(server);
                self.broadcast(message);
            }
        }
    }

    /// Closes an agent's socket with 1008 (policy: its token is no longer valid).
    fn close_agent(&mut self, id: ConnId, reason: &str) {
        if let Some(Conn {
            phase: Phase::Agent(agent),
            ..
        }) = self.conns.get_mut(&id)
        {
            agent.socket.close(CloseCode::Policy, reason);
        }
    }

    fn reload_certificate(&mut self) {
        let Some((cert, key)) = &self.config.tls else {
            return;
        };
        match crate::tls::server_config(cert, key) {
            Ok(config) => {
                self.tls = Some(Arc::new(config));
                info!("certificate reloaded; new connections use it");
            }
            Err(e) => error!("{e}; keeping the certificate loaded before"),
        }
    }

    /// Says goodbye (1001) to every WebSocket, waits briefly for the close
    /// frames to leave, then returns.
    fn shut_down(&mut self) {
        for conn in self.conns.values_mut() {
            match &mut conn.phase {
                Phase::Agent(agent) => agent.socket.close(CloseCode::Away, "relay shutting down"),
                Phase::Dashboard(dashboard) => dashboard
                    .socket
                    .close(CloseCode::Away, "relay shutting down"),
                _ => {}
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && !self.conns.is_empty() {
            let ready: Vec<u64> = match self.poller.wait(Duration::from_millis(100)) {
                Ok(ready) => ready.collect(),
                Err(_) => break,
            };
            for id in ready.into_iter().filter(|k| *k > SIGNALS) {
                if let Some(mut conn) = self.conns.remove(&id) {
                    let open = match &mut conn.phase {
                        Phase::Agent(agent) => agent.socket.read(|_, _| {}).is_ok(),
                        Phase::Dashboard(dashboard) => dashboard.socket.read(|_, _| {}).is_ok(),
                        _ => false,
                    };
                    if open {
                        self.conns.insert(id, conn);
                    }
                }
            }
        }
        info!("stopped");
    }
}

/// Raises the open-files soft limit to the hard limit; returns the limit
/// now in force. A process holding thousands of sockets needs it.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    }
}

/// The dashboard page: one self-contained file, nothing fetched elsewhere.
const DASHBOARD_PAGE: &str = include_str!("dashboard.html");

/// Starts a relay with this configuration and serves until stopped.
pub fn run(config: Config) -> Result<(), RelayError> {
    Relay::bind(config)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_is_logged_once_per_ten_seconds_with_what_was_held_back() {
        let start = Instant::now();
        let mut hush = Hush::default();
        assert_eq!(hush.pass(start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(hush.pass(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(hush.pass(start + Duration::from_secs(10)), Some(3));
        assert_eq!(hush.pass(start + Duration::from_secs(11)), None);
        assert_eq!(hush.pass(start + Duration::from_secs(30)), Some(1));
        assert_eq!(held_back(0), "");
        assert_eq!(held_back(3), " (3 more since the last report)");
    }
}

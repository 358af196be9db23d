//! The relay's core: every decision, no I/O, no clock.
//!
//! The event loop ([`super::Relay`]) reads sockets, files and signals and
//! tells the engine what happened, always with the time it happened; the
//! engine answers with [`Effect`]s for the loop to carry out. rustls'
//! unbuffered `Connection` and quinn-proto's `Connection` are the models:
//! the state machine never sees a socket or reads a clock, so it is tested
//! on a fake clock in microseconds (`engine_tests.rs`, through the
//! in-memory shell in `sim.rs`). [`Engine`] states the contract.

use super::alerts::{self, Alerts, Change, Saved};
use super::budget::{self, Budget};
use super::compat;
use super::config::{Config, HistoryDb};
use super::history::{self, Reading};
use super::http::{self, Head, Request, Route};
use super::hub::{self, Hub};
use super::hush::{Hush, LOG_TROUBLE_EVERY, held_back};
use super::lean::{PatchBase, PatchError};
use super::notice::{Deliveries, Event, Notice};
use super::outbox::Outbox;
use super::outbox::Slot;
use super::page::{DASHBOARD_PAGE, DASHBOARD_PAGE_GZIP};
use super::prometheus;
use super::rate::RateLimit;
use super::registry::{self, Refusal, Registry, RegistryError};
use super::rollup::{self, Answer, Ask, Job, Row, Source};
use super::shared::{
    ConnId, Counters, Fault, Inbound, MAX_FRAME, SocketEnd, StoreCounts, WallClock, unix_seconds,
};
use super::timers::{self, Due, Timers};
use crate::protocol::{MAX_SAMPLE_BYTES, MetricsPatch, SampleError, check_data, rfc3339};
use log::Level;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use tungstenite::Utf8Bytes;
use tungstenite::protocol::frame::coding::CloseCode;

/// The relay pings every WebSocket this often...
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// ...and drops one silent for this long.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// A request head must arrive within this time, and a response (or a
/// download) may not stall for longer.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer has this long to answer our close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A dashboard that takes no message for this long while messages wait is
/// not reading: closed (1013) rather than held until the silence limit.
pub const WRITE_STALL: Duration = Duration::from_secs(15);
/// How often the registry file is checked for changes.
pub const REGISTRY_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often history is saved, besides at shutdown: what a crash can lose.
pub const HISTORY_SAVE_EVERY: Duration = Duration::from_secs(300);
/// How often the minutes that ended are handed to the history database.
pub const MINUTE: Duration = Duration::from_secs(60);
/// Consecutive malformed frames that close an agent (1007).
pub const MALFORMED_LIMIT: u32 = 10;
/// Stale reminders the timers' heap may hold beyond twice the live ones.
pub const STALE_REMINDERS_SLACK: usize = 1024;
/// How long accepting stops after `accept` fails (out of file descriptors).
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Event bytes a dashboard may have waiting beyond its snapshot (1013 past it).
pub const DASHBOARD_EVENT_ROOM: usize = 1 << 20;
/// A response body larger than this (`/api/servers`, `/metrics` of a large
/// fleet) is built at most once per [`SHARED_BODY_FOR`] and its bytes shared
/// by every request in that time: a thousand slow readers cost one body,
/// not a thousand. Smaller ones are built fresh for each request.
pub const SHARE_BODIES_ABOVE: usize = 64 * 1024;
/// How long a shared body is served before it is built again.
pub const SHARED_BODY_FOR: Duration = Duration::from_secs(1);

/// What the event loop must do. Carried out in order.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Write this HTTP response, then tell [`Engine::handle_responded`].
    Respond {
        id: ConnId,
        /// Shared with other responses of the same body (see
        /// [`SHARE_BODIES_ABOVE`]).
        bytes: Rc<[u8]>,
        after: After,
    },
    /// Open this file of `--dist-dir` (a regular file inside `dir` only)
    /// and tell [`Engine::handle_file_opened`].
    OpenFile {
        id: ConnId,
        dir: PathBuf,
        name: String,
    },
    /// The response is written: the connection becomes a WebSocket that
    /// takes messages of up to `max_message` bytes.
    Upgrade {
        id: ConnId,
        max_message: usize,
    },
    /// Queue one text message on a WebSocket (the answer to a vStats
    /// agent's `auth`).
    Send {
        id: ConnId,
        text: &'static str,
    },
    /// From now on the WebSocket takes messages of up to `max_message`
    /// bytes (a vStats agent, once admitted).
    SetMessageLimit {
        id: ConnId,
        max_message: usize,
    },
    /// Queue a WebSocket close frame; the peer has [`CLOSE_TIMEOUT`] to answer.
    Close {
        id: ConnId,
        code: CloseCode,
        reason: &'static str,
    },
    Ping {
        id: ConnId,
    },
    /// A dashboard has messages waiting: move them from its outbox
    /// ([`Engine::dashboard_outbox`]) to the socket, then tell [`Engine::handle_pumped`].
    Wake {
        id: ConnId,
    },
    /// Drop the connection now, after writing `last_words` if the socket
    /// takes them at once. The engine has already forgotten it.
    Drop {
        id: ConnId,
        last_words: Option<Vec<u8>>,
    },
    Log {
        level: Level,
        text: String,
    },
    /// Stat the state file and, if it changed (or `force`), load it; tell
    /// [`Engine::handle_registry_read`].
    ReadRegistry {
        force: bool,
    },
    ReloadCertificate,
    /// Queue this notification for every `--notify-url`; never waits.
    Notify(Box<Notice>),
    /// Write the open alerts to the alerts file: beside the loop, unless
    /// `last` (at shutdown).
    SaveAlerts {
        bytes: Vec<u8>,
        last: bool,
    },
    /// Write this history file (see [`history::to_file`]) beside the state
    /// file, atomically; `last` at shutdown, when it must be done before
    /// the process exits.
    SaveHistory {
        bytes: Vec<u8>,
        last: bool,
    },
    /// Hand this to the history database's writer; never waits.
    Store(Job),
    /// Read the history database for a request (off the loop), and tell
    /// [`Engine::handle_history_answer`].
    QueryHistory(Box<Ask>),
    /// Stop watching the listener until [`Effect::ResumeAccepting`].
    PauseAccepting,
    ResumeAccepting,
}

/// What a connection becomes once its response is written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum After {
    Close,
    /// The opened file follows the head.
    SendFile,
    Agent,
    /// A vStats agent, which authenticates in its first frame.
    CompatAgent,
    Dashboard,
}

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timer {
    Head,
    Response,
    Silence,
    CloseAnswer,
    Stalled,
    /// A vStats agent sent no `auth` frame in [`compat::AUTH_TIMEOUT`].
    Auth,
}

/// Why a connection ended: the first cause wins, and is logged at the end
/// with the peer's address.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// An HTTP exchange ended after its response.
    Answered(u16),
    ClosedByPeer(Option<u16>),
    /// We sent a close frame with this code.
    CloseSent(u16, &'static str),
    Expired(Timer),
    Fault(Fault),
    Io(io::ErrorKind),
    ShuttingDown,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Answered(status) => write!(f, "answered {status}"),
            Cause::ClosedByPeer(Some(code)) => write!(f, "closed by the peer ({code})"),
            Cause::ClosedByPeer(None) => write!(f, "closed by the peer"),
            Cause::CloseSent(code, why) => write!(f, "closed by the relay ({code}: {why})"),
            Cause::Expired(Timer::Head) => write!(f, "request head not complete in time (408)"),
            Cause::Expired(Timer::Response) => write!(f, "response not taken in time"),
            Cause::Expired(Timer::Silence) => write!(f, "silent for {SILENCE_LIMIT:?}"),
            Cause::Expired(Timer::CloseAnswer) => {
                write!(f, "close not answered in {CLOSE_TIMEOUT:?}")
            }
            Cause::Expired(Timer::Stalled) => write!(f, "not reading for {WRITE_STALL:?}"),
            Cause::Expired(Timer::Auth) => {
                write!(f, "no auth frame in {:?}", compat::AUTH_TIMEOUT)
            }
            Cause::Fault(Fault::TooLarge) => write!(f, "frame too large (1009)"),
            Cause::Fault(Fault::NotUtf8) => write!(f, "text not UTF-8 (1007)"),
            Cause::Fault(Fault::Protocol(e)) => write!(f, "protocol violation (1002): {e}"),
            Cause::Io(kind) => write!(f, "I/O error: {kind}"),
            Cause::ShuttingDown => write!(f, "relay shutting down"),
        }
    }
}

/// The state file as the event loop found it.
#[derive(Debug)]
pub enum RegistryRead {
    Unchanged,
    /// Gone, perhaps for a moment (an editor's save, a restore).
    Missing,
    Failed(RegistryError),
    Loaded(Registry),
}

/// Whether a new connection is served.
#[derive(Debug, PartialEq)]
pub enum Admission {
    Admit,
    /// Over `--max-connections`: these bytes (503) if the socket takes them.
    Refuse(Vec<u8>),
}

/// The WebSocket timers of one connection.
#[derive(Debug)]
struct Link {
    last_heard: Instant,
    last_ping: Instant,
    /// When our close frame was queued.
    closing: Option<Instant>,
}

impl Link {
    fn new(now: Instant) -> Link {
        Link {
            last_heard: now,
            last_ping: now,
            closing: None,
        }
    }
}

#[derive(Debug)]
struct AgentConn {
    link: Link,
    /// Shared, not copied, with the handling of each frame.
    server_id: Rc<str>,
    malformed_in_a_row: u32,
    samples: RateLimit,
    /// What its next patch applies to.
    lean: PatchBase,
    /// A vStats agent's: its frames are theirs, mapped to our samples.
    compat: Option<Box<compat::RateBase>>,
}

/// A vStats agent's WebSocket before its `auth` frame is accepted.
#[derive(Debug)]
struct CompatWait {
    link: Link,
    /// An `auth` the registry did not accept, kept while the state file
    /// is checked for a server added a moment ago.
    pending: Option<Box<compat::Auth>>,
}

struct DashboardConn {
    link: Link,
    outbox: Outbox,
    /// A [`Effect::Wake`] is out and not yet answered by `pumped`.
    woken: bool,
    /// Since when messages have waited with none taken by the socket.
    stalled_since: Option<Instant>,
}

enum Phase {
    Head,
    /// An agent whose token is unknown, waiting for the state file to be
    /// checked for a server added a moment ago.
    AwaitingRegistry(Box<Head>),
    /// Waiting for `--dist-dir` to open a file.
    OpeningFile {
        head_only: bool,
    },
    Respond {
        status: u16,
        next: Next,
    },
    /// Waiting for the history database to answer a request.
    Querying {
        head_only: bool,
        csv: bool,
    },
    /// A vStats agent's WebSocket, until its `auth` frame is accepted
    /// (then [`Phase::Agent`]); `Conn::deadline` is the auth deadline.
    CompatAuth(Box<CompatWait>),
    Agent(AgentConn),
    Dashboard(Box<DashboardConn>),
}

/// What a connection becomes after its response.
#[derive(Debug)]
enum Next {
    Close,
    Agent(String),
    CompatAgent,
    Dashboard,
}

struct Conn {
    peer: SocketAddr,
    opened: Instant,
    phase: Phase,
    /// Head and response phases end by this time.
    deadline: Instant,
    cause: Option<Cause>,
    /// The time of its reminder in [`Engine::timers`], if it has one.
    reminder: Option<Instant>,
}

impl Conn {
    /// Whether it holds a place in [`Engine::unauthenticated`]: a vStats
    /// agent's socket from its upgrade until its `auth` is accepted.
    fn awaits_auth(&self) -> bool {
        matches!(
            self.phase,
            Phase::CompatAuth(_)
                | Phase::Respond {
                    next: Next::CompatAgent,
                    ..
                }
        )
    }

    fn link(&mut self) -> Option<&mut Link> {
        match &mut self.phase {
            Phase::Agent(agent) => Some(&mut agent.link),
            Phase::CompatAuth(wait) => Some(&mut wait.link),
            Phase::Dashboard(dashboard) => Some(&mut dashboard.link),
            _ => None,
        }
    }
}

/// A response body and when it was built.
type SharedBody = (Instant, Rc<[u8]>);

/// Every decision of the relay. The shell that drives it must keep this
/// contract:
///
/// - **Inputs** are the `handle_*` methods (and, before the loop starts,
///   `restore_history` then `restore_alerts`). Each is told what happened
///   and `now`, the monotonic time it happened; the engine reads no clock.
///   It gets wall-clock time (for timestamps, history steps, notices) from
///   the [`WallClock`] it was built with, at that `now`. `now` must never
///   go backwards from one input to the next.
/// - **After every input**, call [`Engine::poll_effects`] until it returns
///   nothing and carry the effects out in order. Some effects ask for an
///   answer, which is the next input: [`Effect::Respond`] is answered by
///   `handle_wrote` (bytes went out) and `handle_responded` (all of them),
///   [`Effect::OpenFile`] by `handle_file_opened`, [`Effect::ReadRegistry`]
///   by `handle_registry_read`, [`Effect::Wake`] by moving what
///   [`Engine::dashboard_outbox`] holds to the socket and calling
///   `handle_pumped`. Until then the connection waits in its phase.
/// - **Timers**: sleep no longer than [`Engine::poll_timeout`] says, and
///   call `handle_timeout` when it says zero. Calling it early is harmless
///   (it does only what is due); calling it late delays every deadline.
/// - **Connections** are numbered by the shell, never reusing a number.
///   One starts with `handle_accept` and ends with `handle_ended` (the
///   socket is gone) or with an [`Effect::Drop`] (the engine has
///   forgotten it: drop the socket, tell nothing). An input for a
///   connection the engine does not know is ignored.
/// - **Queries** (`poll_timeout`, `dashboard_outbox`, `config`, `servers`)
///   change no decision.
///
/// It holds every bound of the relay: connections, bytes a dashboard may
/// have waiting, samples an agent may send, sockets before auth. The
/// shell only bounds what it reads per turn (`conn.rs`).
pub struct Engine {
    config: Config,
    /// TLS ports get no plain-text refusal (it would be noise to a client).
    tls: bool,
    max_connections: usize,
    registry: Registry,
    /// When the state file is next checked, and history next saved: on
    /// a fixed schedule from the start, so that a chore done a little past
    /// its time does not push the next one a whole grid step later.
    registry_due: Instant,
    history_due: Instant,
    /// Whether there is a history database; when the minutes that ended
    /// are next handed to it (just after each minute of the wall clock),
    /// and those finished since the last batch.
    store: bool,
    minutes_due: Instant,
    minutes: Vec<Row>,
    hub: Hub,
    conns: HashMap<ConnId, Conn>,
    dashboards: Vec<ConnId>,
    counters: Counters,
    /// When each connection and server is next due to be looked at.
    timers: Timers,
    /// The origin of the grid the loop's timer wake-ups are put on.
    grid: Instant,
    paused_until: Option<Instant>,
    malformed: Hush,
    refusals: Hush,
    /// History requests the database could not answer.
    history_trouble: Hush,
    accept_failures: Hush,
    /// A shutdown was ordered: nothing new is admitted.
    stopping: bool,
    /// Large response bodies lately built, by route and HEAD-or-not.
    bodies: HashMap<(Route, bool), SharedBody>,
    effects: Vec<Effect>,
    alerts: Alerts,
    /// Sockets that have shown no credential yet (vStats agents before
    /// `auth`): a few per address, a fixed number in all.
    unauthenticated: Budget,
    /// The wall-clock time of an input, from its monotonic time.
    clock: Box<dyn WallClock>,
}

impl Engine {
    pub fn new(
        config: Config,
        tls: bool,
        max_connections: usize,
        registry: Registry,
        now: Instant,
        clock: Box<dyn WallClock>,
    ) -> Engine {
        // Just past the wall clock's next minute.
        let into_minute = clock
            .wall(now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(Duration::ZERO, |since| {
                Duration::from_nanos((since.as_nanos() % MINUTE.as_nanos()) as u64)
            });
        Engine {
            store: config.history_db != HistoryDb::Off,
            minutes_due: now + (MINUTE - into_minute) + Duration::from_millis(500),
            minutes: Vec::new(),
            hub: Hub::new(&registry),
            tls,
            max_connections,
            registry,
            registry_due: now + REGISTRY_CHECK_EVERY,
            history_due: now + HISTORY_SAVE_EVERY,
            conns: HashMap::new(),
            dashboards: Vec::new(),
            counters: Counters::default(),
            timers: Timers::default(),
            grid: now,
            paused_until: None,
            malformed: Hush::default(),
            refusals: Hush::default(),
            history_trouble: Hush::default(),
            accept_failures: Hush::default(),
            stopping: false,
            bodies: HashMap::new(),
            effects: Vec::new(),
            alerts: Alerts::new(config.alert_rules.clone(), config.notify_after),
            unauthenticated: Budget::default(),
            clock,
            config,
        }
    }

    /// What the notification threads delivered, as the shell counted it:
    /// shown on `/metrics`.
    pub fn handle_deliveries(&mut self, deliveries: Deliveries) {
        self.counters.notifications = deliveries;
    }

    /// What the history database's threads did, as the shell counted it:
    /// shown on `/metrics`.
    pub fn handle_store_counts(&mut self, counts: StoreCounts) {
        self.counters.store = counts;
    }

    /// The effects decided since the last call, in order.
    pub fn poll_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn servers(&self) -> usize {
        self.hub.servers.len()
    }

    /// How long the loop may sleep before [`Engine::handle_timeout`] is due (zero:
    /// it is due now): until the earliest deadline of any connection,
    /// server or periodic chore, put on the timer grid (see
    /// [`timers::round_up`]), or the end of an accept pause, which is
    /// exact. Never later than the next registry check.
    pub fn poll_timeout(&self, now: Instant) -> Duration {
        let chores = [
            self.timers.next(),
            Some(self.registry_due),
            Some(self.history_due),
            self.store.then_some(self.minutes_due),
            self.refusals.summary_at(),
            self.malformed.summary_at(),
            self.alerts.dirty.then_some(now),
        ];
        let earliest = chores.into_iter().flatten().min().unwrap_or(now);
        let on_grid = timers::round_up(earliest, self.grid);
        let next = self
            .paused_until
            .map_or(on_grid, |until| on_grid.min(until));
        next.saturating_duration_since(now)
    }

    /// The queue of a dashboard, for the loop to move to its socket; none
    /// once its close frame is queued, as nothing may follow that.
    pub fn dashboard_outbox(&mut self, id: ConnId) -> Option<&mut Outbox> {
        match &mut self.conns.get_mut(&id)?.phase {
            Phase::Dashboard(dashboard) if dashboard.link.closing.is_none() => {
                Some(&mut dashboard.outbox)
            }
            _ => None,
        }
    }

    /// The configuration the relay runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The wall-clock time at `now`, as the injected clock says.
    fn wall(&self, now: Instant) -> SystemTime {
        self.clock.wall(now)
    }

    fn log(&mut self, level: Level, text: String) {
        self.effects.push(Effect::Log { level, text });
    }

    /// Whether a line at `level` would be logged: a debug line per request
    /// is not worth formatting when no one reads it.
    fn logs(&self, level: Level) -> bool {
        level <= self.config.log_level
    }

    // ----- connections -------------------------------------------------

    pub fn handle_accept(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Admission {
        if self.conns.len() >= self.max_connections || self.stopping {
            self.counters.refused_connections += 1;
            self.refused(peer, "too many connections", now);
            return Admission::Refuse(if self.tls {
                Vec::new()
            } else {
                http::text_response(503, "too many connections")
            });
        }
        self.conns.insert(
            id,
            Conn {
                peer,
                opened: now,
                phase: Phase::Head,
                deadline: now + HEAD_TIMEOUT,
                cause: None,
                reminder: None,
            },
        );
        self.remind(id);
        Admission::Admit
    }

    /// One refusal logged per [`LOG_TROUBLE_EVERY`]; the rest are counted
    /// and summed up in the next line or by [`Engine::handle_timeout`].
    fn refused(&mut self, peer: SocketAddr, why: &str, now: Instant) {
        if let Some(earlier) = self.refusals.pass(now) {
            self.log(
                Level::Info,
                format!("refused {peer}: {why}{}", held_back(earlier)),
            );
        }
    }

    /// `accept` failed (out of file descriptors, most likely): the
    /// level-triggered listener would report the waiting connection again
    /// at once and spin a core.
    pub fn handle_accept_failure(&mut self, error: &io::Error, now: Instant) {
        self.paused_until = Some(now + ACCEPT_PAUSE);
        self.effects.push(Effect::PauseAccepting);
        if let Some(earlier) = self.accept_failures.pass(now) {
            self.log(
                Level::Warn,
                format!(
                    "accept: {error}; pausing new connections for {} ms{}",
                    ACCEPT_PAUSE.as_millis(),
                    held_back(earlier)
                ),
            );
        }
    }

    /// A whole request head (or one refused while parsing).
    pub fn handle_request(&mut self, id: ConnId, request: Request, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Head) {
            return;
        }
        conn.deadline = now + HEAD_TIMEOUT;
        let head = match request {
            Request::Refuse(status) => {
                let text = if status == 431 {
                    "request head too large"
                } else {
                    "bad request"
                };
                return self.respond(id, http::text_response(status, text), status, Next::Close);
            }
            Request::Complete(head) => head,
        };
        let head_only = head.method == "HEAD";
        let route = http::route(&head);
        let for_viewers = matches!(
            route,
            Route::Page | Route::Servers | Route::History | Route::Metrics | Route::DashboardStream
        );
        let (status, bytes) = match route {
            _ if for_viewers && !self.host_allowed(&head) => {
                let peer = conn_peer(&self.conns, id);
                self.refused(peer, "a Host that is not allowed (see --allowed-host)", now);
                let text = format!(
                    "host not allowed: without a viewer token, this relay serves IP addresses, \
                     localhost and the names given by --allowed-host; start it with \
                     --allowed-host {}",
                    // Echoed only when it is a name, not whatever was sent.
                    head.host
                        .as_deref()
                        .map(http::host_name)
                        .filter(|name| http::is_host_name(name))
                        .unwrap_or("NAME")
                );
                (403, http::text_response(403, &text).into())
            }
            Route::Servers | Route::History | Route::Metrics if !self.viewer_allowed(&head) => (
                401,
                http::text_response(401, "viewer token required").into(),
            ),
            Route::Health | Route::Servers | Route::Metrics => {
                (200, self.body(route, head_only, now))
            }
            Route::Page if head.accepts_gzip => (
                200,
                http::page_response(DASHBOARD_PAGE_GZIP, true, head_only).into(),
            ),
            Route::Page => (
                200,
                http::page_response(DASHBOARD_PAGE.as_bytes(), false, head_only).into(),
            ),
            Route::History => return self.history(id, &head, head_only, now),
            Route::Dist => return self.dist_file(id, &head.path, head_only),
            Route::NotFound => (404, http::text_response(404, "not found").into()),
            Route::MethodNotAllowed => (405, http::text_response(405, "method not allowed").into()),
            Route::AgentStream => return self.agent_request(id, head, false, now),
            // No credential yet: it comes in the first frame.
            Route::CompatAgentStream => return self.compat_request(id, &head, now),
            Route::DashboardStream => {
                if !head.origin_allowed(&self.config.allowed_origins) {
                    let peer = conn_peer(&self.conns, id);
                    self.refused(peer, "dashboard origin not allowed", now);
                    (403, http::text_response(403, "origin not allowed").into())
                } else if !self.viewer_allowed(&head) {
                    let peer = conn_peer(&self.conns, id);
                    self.refused(peer, "dashboard without the viewer token", now);
                    (
                        401,
                        http::text_response(401, "viewer token required").into(),
                    )
                } else {
                    return match http::upgrade_response(&head) {
                        Ok(bytes) => self.respond(id, bytes, 101, Next::Dashboard),
                        Err(bytes) => self.respond(id, bytes, 400, Next::Close),
                    };
                }
            }
        };
        self.respond(id, bytes, status, Next::Close);
    }

    /// A `200` response of one of the relay's own resources, shared with
    /// other requests if it is large (see [`SHARE_BODIES_ABOVE`]).
    fn body(&mut self, route: Route, head_only: bool, now: Instant) -> Rc<[u8]> {
        if let Some((built, bytes)) = self.bodies.get(&(route, head_only))
            && now.saturating_duration_since(*built) < SHARED_BODY_FOR
        {
            return bytes.clone();
        }
        let bytes: Rc<[u8]> = match route {
            Route::Servers => {
                http::response(200, "application/json", &self.hub.servers_json(), head_only)
            }
            Route::Metrics => {
                let text =
                    prometheus::render(&self.hub.servers, &self.counters, self.connections());
                http::response(200, prometheus::CONTENT_TYPE, text.as_bytes(), head_only)
            }
            _ => http::response(200, "text/plain", b"ok\n", head_only),
        }
        .into();
        self.bodies
            .retain(|_, (built, _)| now.saturating_duration_since(*built) < SHARED_BODY_FOR);
        if bytes.len() > SHARE_BODIES_ABOVE {
            self.bodies.insert((route, head_only), (now, bytes.clone()));
        }
        bytes
    }

    /// `GET /api/servers/{id}/history`: `range=1h|24h|7d|30d|1y` (1h if
    /// not given) or `from` (and `to`) in unix seconds, as `format=json`
    /// or `csv`. The last hour comes from memory, at once; longer spans
    /// from the database, read off the loop ([`Effect::QueryHistory`]).
    /// Without a database, the day's 5 min steps in memory are all there
    /// is beyond the hour.
    fn history(&mut self, id: ConnId, head: &Head, head_only: bool, now: Instant) {
        let unix_secs = unix_seconds(self.wall(now));
        let asked = rollup::Asked::from_query(|name| head.query_param(name));
        let reach = if self.store {
            self.config.history_keep.longest()
        } else {
            Duration::from_secs(rollup::DAY_SECS)
        };
        let query = match rollup::parse_query(asked.params(), unix_secs, reach) {
            Ok(query) => query,
            Err(why) => return self.respond(id, http::text_response(400, &why), 400, Next::Close),
        };
        let server = http::history_server(&head.path).and_then(|id| self.hub.get(id));
        let Some(server) = server else {
            let text = http::text_response(404, "no such server");
            return self.respond(id, text, 404, Next::Close);
        };
        let last_seen = server.presence.last_seen().map(rfc3339);
        let plan = rollup::plan(&query, unix_secs, &self.config.history_keep);
        let content_type = history_content_type(query.csv);
        let body = match plan.source {
            // As it always was: the hour's 10 s steps whole.
            _ if query.range == "1h" && !query.csv => history::to_json(
                &server.id,
                last_seen,
                server.history.as_deref(),
                history::HOUR,
                unix_secs,
            ),
            Source::Memory => {
                let points = rollup::memory_points(server.history.as_deref(), &plan);
                if query.csv {
                    rollup::to_csv(&points)
                } else {
                    rollup::to_json(&server.id, last_seen, query.range, &points)
                }
            }
            Source::Database(_) if !self.store && query.range == "24h" && !query.csv => {
                history::to_json(
                    &server.id,
                    last_seen,
                    server.history.as_deref(),
                    history::DAY,
                    unix_secs,
                )
            }
            Source::Database(_) if !self.store => {
                let text = http::text_response(
                    404,
                    "this relay keeps no history database (--history-db off): \
                     the last hour, and the last day as JSON, are all it has",
                );
                return self.respond(id, text, 404, Next::Close);
            }
            Source::Database(tier) => {
                let ask = Ask {
                    id,
                    server: server.id.clone(),
                    tier,
                    plan,
                    csv: query.csv,
                    range: query.range,
                    last_seen,
                };
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.phase = Phase::Querying {
                        head_only,
                        csv: query.csv,
                    };
                    self.effects.push(Effect::QueryHistory(Box::new(ask)));
                }
                return;
            }
        };
        let bytes = http::response(200, content_type, body.as_bytes(), head_only);
        self.respond(id, bytes, 200, Next::Close);
    }

    /// What the history database answered to [`Effect::QueryHistory`]:
    /// the body, or why it could not be read (`503`).
    pub fn handle_history_answer(&mut self, answer: Answer, now: Instant) {
        let Some(Conn {
            phase: Phase::Querying { head_only, csv },
            ..
        }) = self.conns.get(&answer.id)
        else {
            return;
        };
        let (head_only, csv) = (*head_only, *csv);
        let (status, bytes) = match answer.body {
            Ok(body) => {
                let content_type = history_content_type(csv);
                (
                    200,
                    http::response(200, content_type, body.as_bytes(), head_only),
                )
            }
            Err(why) => {
                if let Some(earlier) = self.history_trouble.pass(now) {
                    self.log(
                        Level::Warn,
                        format!("history request not answered: {why}{}", held_back(earlier)),
                    );
                }
                let text = format!("history unavailable: {why}");
                (503, http::text_response(503, &text))
            }
        };
        self.respond(answer.id, bytes, status, Next::Close);
    }

    fn respond(&mut self, id: ConnId, bytes: impl Into<Rc<[u8]>>, status: u16, next: Next) {
        let bytes = bytes.into();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let after = match next {
            Next::Close => After::Close,
            Next::Agent(_) => After::Agent,
            Next::CompatAgent => After::CompatAgent,
            Next::Dashboard => After::Dashboard,
        };
        conn.phase = Phase::Respond { status, next };
        self.effects.push(Effect::Respond { id, bytes, after });
    }

    /// An agent's upgrade: admitted by its token. An unknown token first
    /// has the state file checked (`rechecked` once that is done), so an
    /// agent of a server added a moment ago is not refused and left to
    /// back off for 15-30 s.
    fn agent_request(&mut self, id: ConnId, head: Box<Head>, rechecked: bool, now: Instant) {
        let token = head.token();
        let server_id = token
            .as_deref()
            .and_then(|token| self.registry.authenticate(token))
            .map(|server| server.id.clone());
        let Some(server_id) = server_id else {
            if token.is_some() && !rechecked {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.phase = Phase::AwaitingRegistry(head);
                    self.effects.push(Effect::ReadRegistry { force: false });
                }
                return;
            }
            // The token itself is never logged, nor the query holding it.
            let peer = conn_peer(&self.conns, id);
            self.refused(peer, "agent with an unknown or missing token", now);
            return self.respond(
                id,
                http::text_response(401, "invalid token"),
                401,
                Next::Close,
            );
        };
        match http::upgrade_response(&head) {
            Ok(bytes) => self.respond(id, bytes, 101, Next::Agent(server_id)),
            Err(bytes) => self.respond(id, bytes, 400, Next::Close),
        }
    }

    /// A vStats agent's upgrade, which carries no credential: it takes a
    /// place in the budget of unauthenticated sockets, or gets `503`.
    fn compat_request(&mut self, id: ConnId, head: &Head, now: Instant) {
        let bytes = match http::upgrade_response(head) {
            Ok(bytes) => bytes,
            Err(bytes) => return self.respond(id, bytes, 400, Next::Close),
        };
        let Some(peer) = self.conns.get(&id).map(|conn| conn.peer) else {
            return;
        };
        match self.unauthenticated.take(peer.ip()) {
            Ok(()) => self.respond(id, bytes, 101, Next::CompatAgent),
            Err(full) => {
                self.counters.refused_connections += 1;
                let why = match full {
                    budget::Full::Address => {
                        "vStats agent: too many awaiting auth from its address"
                    }
                    budget::Full::Total => "vStats agent: too many awaiting auth",
                };
                self.refused(peer, why, now);
                let text = http::text_response(503, "too many connections awaiting auth");
                self.respond(id, text, 503, Next::Close);
            }
        }
    }

    fn dist_file(&mut self, id: ConnId, path: &str, head_only: bool) {
        let (Some(dir), Some(name)) = (&self.config.dist_dir, http::dist_file(path)) else {
            return self.respond(id, http::text_response(404, "not found"), 404, Next::Close);
        };
        let (dir, name) = (dir.clone(), name.to_owned());
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.phase = Phase::OpeningFile { head_only };
            self.effects.push(Effect::OpenFile { id, dir, name });
        }
    }

    /// The file asked for by [`Effect::OpenFile`]: its name and length, or
    /// why it could not be opened.
    pub fn handle_file_opened(&mut self, id: ConnId, name: &str, opened: io::Result<u64>) {
        let Some(Conn {
            phase: Phase::OpeningFile { head_only },
            ..
        }) = self.conns.get(&id)
        else {
            return;
        };
        let head_only = *head_only;
        match opened {
            Ok(len) => {
                let content_type = if name.ends_with(".sh") || name == "SHA256SUMS" {
                    "text/plain; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                let bytes = http::response_head(200, content_type, len);
                if head_only {
                    self.respond(id, bytes, 200, Next::Close);
                } else if let Some(conn) = self.conns.get_mut(&id) {
                    conn.phase = Phase::Respond {
                        status: 200,
                        next: Next::Close,
                    };
                    self.effects.push(Effect::Respond {
                        id,
                        bytes: bytes.into(),
                        after: After::SendFile,
                    });
                }
            }
            Err(e) => {
                if self.logs(Level::Debug) {
                    self.log(Level::Debug, format!("--dist-dir {name}: {e}"));
                }
                self.respond(id, http::text_response(404, "not found"), 404, Next::Close);
            }
        }
    }

    /// Response bytes went out: a download's deadline is for silence, not
    /// for its length.
    pub fn handle_wrote(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.deadline = now + HEAD_TIMEOUT;
        }
    }

    /// The whole response is written.
    pub fn handle_responded(&mut self, id: ConnId, now: Instant) {
        self.next_phase(id, now);
        self.remind(id);
    }

    fn next_phase(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Phase::Respond { status, next } = std::mem::replace(&mut conn.phase, Phase::Head)
        else {
            return;
        };
        match next {
            Next::Close => self.finish(id, Cause::Answered(status), None, now),
            Next::Agent(server_id) => {
                self.effects.push(Effect::Upgrade {
                    id,
                    max_message: MAX_FRAME,
                });
                self.admit_agent(id, server_id, None, now);
            }
            Next::CompatAgent => {
                self.effects.push(Effect::Upgrade {
                    id,
                    max_message: compat::MAX_AUTH_MESSAGE,
                });
                conn.deadline = now + compat::AUTH_TIMEOUT;
                conn.phase = Phase::CompatAuth(Box::new(CompatWait {
                    link: Link::new(now),
                    pending: None,
                }));
            }
            Next::Dashboard => {
                self.effects.push(Effect::Upgrade {
                    id,
                    max_message: MAX_FRAME,
                });
                self.admit_dashboard(id, now);
            }
        }
    }

    /// An agent admitted for `server_id`, ours or (with its `compat`
    /// session) a vStats agent: the server's state is the same either way.
    fn admit_agent(
        &mut self,
        id: ConnId,
        server_id: String,
        compat: Option<Box<compat::RateBase>>,
        now: Instant,
    ) {
        let kind = if compat.is_some() {
            "vStats agent"
        } else {
            "agent"
        };
        let agent = AgentConn {
            link: Link::new(now),
            server_id: server_id.as_str().into(),
            malformed_in_a_row: 0,
            samples: RateLimit::new(self.config.agent_max_rate, now),
            lean: PatchBase::default(),
            compat,
        };
        let peer = conn_peer(&self.conns, id);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.phase = Phase::Agent(agent);
        }
        let wall = self.wall(now);
        let Some(server) = self.hub.get_mut(&server_id) else {
            // Removed between the head and now.
            return self.close(id, CloseCode::Policy, "server removed", now);
        };
        let admitted = server.presence.admitted(id, now, wall);
        server.connections += 1;
        server.rollup.reconnected();
        // Seen at once: a connection shorter than a tick still counts, and
        // a return closes an offline notified before.
        let change = self.alerts.presence(&mut server.watch, true, now);
        let text = format!(
            "{kind} for {} ({}) connected from {peer}",
            server.name, server.id
        );
        self.log(Level::Info, text);
        if let Some(old) = admitted.replaced {
            // The device rebooted and came back before its old socket died.
            self.close(
                old,
                CloseCode::Normal,
                "replaced by a newer connection",
                now,
            );
        }
        if admitted.came_online {
            self.broadcast(hub::status(&server_id, true, wall));
        }
        if let Some(change) = change {
            self.alert(&server_id, &change, now);
        }
        if let Some(server) = self.hub.get(&server_id) {
            self.remind_server(server.slot);
        }
    }

    fn admit_dashboard(&mut self, id: ConnId, now: Instant) {
        let snapshot = self.hub.snapshot(self.wall(now));
        let snapshot_bytes: usize = snapshot.iter().map(|m| m.len()).sum();
        let mut outbox = Outbox::new(snapshot_bytes + DASHBOARD_EVENT_ROOM);
        for message in snapshot {
            outbox.push_event(message);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.phase = Phase::Dashboard(Box::new(DashboardConn {
            link: Link::new(now),
            outbox,
            woken: true,
            stalled_since: None,
        }));
        let peer = conn.peer;
        self.dashboards.push(id);
        self.effects.push(Effect::Wake { id });
        let open = self.dashboards.len();
        self.log(
            Level::Info,
            format!("dashboard connected from {peer} ({open} open)"),
        );
    }

    /// Queues a close frame (once) and records why.
    fn close(&mut self, id: ConnId, code: CloseCode, reason: &'static str, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let first = match conn.link() {
            Some(link) if link.closing.is_none() => {
                link.closing = Some(now);
                true
            }
            _ => false,
        };
        if first {
            conn.cause
                .get_or_insert(Cause::CloseSent(u16::from(code), reason));
            self.effects.push(Effect::Close { id, code, reason });
            // The close answer is due sooner than anything before it.
            self.remind(id);
        }
    }

    // ----- WebSocket frames ----------------------------------------------

    /// A frame read from a WebSocket. Returns the bytes of work it cost
    /// beyond reading it (a sample rebuilt from a patch, or mapped from a
    /// vStats agent's frame), which count against the connection's turn
    /// as the bytes read do: a 40-byte patch that rebuilds a 60 KiB sample
    /// must not cost the loop 64 times that per turn for the price of one.
    pub fn handle_frame(&mut self, id: ConnId, frame: Inbound, now: Instant) -> usize {
        let Some(conn) = self.conns.get_mut(&id) else {
            return 0;
        };
        if let Inbound::Close(code) = frame {
            conn.cause.get_or_insert(Cause::ClosedByPeer(code));
        }
        let Some(link) = conn.link() else {
            return 0;
        };
        link.last_heard = now;
        if link.closing.is_some() {
            // Our close frame is out: what the peer sends until it answers
            // is neither parsed nor counted (a peer closed for malformed
            // frames would otherwise go on costing the loop as much).
            return 0;
        }
        if let Phase::CompatAuth(wait) = &conn.phase {
            if wait.pending.is_some() {
                // One frame before the answer: their agent waits for it.
                if matches!(frame, Inbound::Text(_) | Inbound::Binary) {
                    let peer = conn.peer;
                    self.refused(peer, "vStats agent sent a second frame before auth", now);
                    self.close(id, CloseCode::Policy, "one frame before auth", now);
                }
                return 0;
            }
            self.compat_first_frame(id, frame, now);
            return 0;
        }
        let Phase::Agent(agent) = &mut conn.phase else {
            return 0; // dashboards have nothing to say
        };
        let server_id = agent.server_id.clone();
        if !self.agent_heard(id, &server_id, now) {
            // Replaced by a newer connection, or its server was removed:
            // what it still sends while closing is not the server's state.
            return 0;
        }
        match frame {
            Inbound::Text(text) => {
                self.counters.frames_in += 1;
                self.agent_text(id, &server_id, text, now)
            }
            Inbound::Binary => {
                self.malformed(id, &server_id, "binary frame", now);
                0
            }
            Inbound::Control | Inbound::Close(_) => 0,
        }
    }

    /// Any frame (or pong) from the connection in charge keeps the server
    /// online. Returns whether connection `id` is that connection.
    fn agent_heard(&mut self, id: ConnId, server_id: &str, now: Instant) -> bool {
        let wall = self.wall(now);
        let Some(server) = self.hub.get_mut(server_id) else {
            return false;
        };
        if !server.presence.speaks(id) {
            return false;
        }
        if server.presence.heard(now, wall) {
            self.broadcast(hub::status(server_id, true, wall));
            self.presence_changed(server_id, now);
        }
        true
    }

    fn agent(&mut self, id: ConnId) -> Option<&mut AgentConn> {
        match &mut self.conns.get_mut(&id)?.phase {
            Phase::Agent(agent) => Some(agent),
            _ => None,
        }
    }

    /// An agent's text frame; returns the bytes of sample it built.
    fn agent_text(&mut self, id: ConnId, server_id: &str, text: &str, now: Instant) -> usize {
        if self.agent(id).is_some_and(|agent| agent.compat.is_some()) {
            return self.compat_text(id, server_id, text, now);
        }
        let raw = match crate::protocol::RawFrame::parse(text) {
            Ok(raw) => raw,
            Err(e) => {
                self.malformed(id, server_id, &e.to_string(), now);
                return 0;
            }
        };
        match raw.kind.as_ref() {
            "metrics" => {
                let (sample, reading) = match raw.data.map(hub::check_sample) {
                    Some(Ok(checked)) => checked,
                    Some(Err(e)) => {
                        self.malformed(id, server_id, &e.to_string(), now);
                        return 0;
                    }
                    None => {
                        self.malformed(id, server_id, "metrics without data", now);
                        return 0;
                    }
                };
                let Some(agent) = self.agent(id) else {
                    return 0;
                };
                agent.malformed_in_a_row = 0;
                if !agent.samples.allow(now) {
                    // Kept as the base of the patches that may follow.
                    agent.lean.held(sample);
                    self.counters.dropped_samples += 1;
                    return 0;
                }
                agent.lean.forwarded();
                self.fan_out(server_id, sample, &reading, now);
                0
            }
            "patch" => match raw.data.map(check_patch) {
                Some(Ok(patch)) => self.patch(id, server_id, patch, now),
                Some(Err(e)) => {
                    self.malformed(id, server_id, &e.to_string(), now);
                    0
                }
                None => {
                    self.malformed(id, server_id, "patch without data", now);
                    0
                }
            },
            // Heartbeats only keep the server online; unknown types are
            // ignored, as the protocol asks of every receiver.
            _ => {
                if let Some(agent) = self.agent(id) {
                    agent.malformed_in_a_row = 0;
                }
                0
            }
        }
    }

    /// Applies a patch to the sample this connection's patches build, and
    /// forwards the result within the rate limit. The result is held to
    /// the sample limits as a whole sample is: one that would pass them is
    /// malformed and the server keeps its last good sample. The relay's
    /// view then differs from the agent's, which holds the patch applied,
    /// so patches are refused until a full sample brings the two together
    /// again (an agent that goes on patching is closed, 1007, and sends a
    /// full sample when it reconnects). Returns the bytes of sample built.
    fn patch(&mut self, id: ConnId, server_id: &str, patch: MetricsPatch, now: Instant) -> usize {
        let wall = self.wall(now);
        let Some(Conn {
            phase: Phase::Agent(agent),
            ..
        }) = self.conns.get_mut(&id)
        else {
            return 0;
        };
        let latest = self
            .hub
            .get(server_id)
            .and_then(|server| server.latest_data.as_deref());
        let (sample, parsed) = match agent.lean.apply(patch, latest, wall) {
            Ok(built) => built,
            Err(e) => {
                let cost = match e {
                    PatchError::NoBase => 0,
                    PatchError::Rebuilt(_) => MAX_SAMPLE_BYTES,
                };
                self.malformed(id, server_id, &e.to_string(), now);
                return cost;
            }
        };
        let built = sample.get().len();
        agent.malformed_in_a_row = 0;
        // Every patch is applied, or the next ones would not add up; only
        // the forwarding is limited.
        let reading = agent.samples.allow(now).then(|| Reading::of(parsed));
        match reading {
            Some(reading) => self.fan_out(server_id, sample, &reading, now),
            None => self.counters.dropped_samples += 1,
        }
        built
    }

    // ----- vStats agents ----------------------------------------------------

    /// A vStats agent's first frame, which must be its `auth`.
    fn compat_first_frame(&mut self, id: ConnId, frame: Inbound, now: Instant) {
        let auth = match frame {
            Inbound::Text(text) => compat::auth(text),
            Inbound::Binary => Err("vStats agent whose first frame is binary"),
            Inbound::Control | Inbound::Close(_) => return,
        };
        match auth {
            Ok(auth) => self.compat_auth(id, Box::new(auth), false, now),
            Err(why) => {
                let peer = conn_peer(&self.conns, id);
                self.refused(peer, why, now);
                self.close(id, CloseCode::Policy, "expected auth first", now);
            }
        }
    }

    /// Admits a vStats agent by its server id and token, or refuses it in
    /// vStats' words and closes it (1008). As for our agents, a refusal
    /// first has the state file checked (`rechecked` once that is done):
    /// an agent of a server added a moment ago is not left to back off.
    fn compat_auth(&mut self, id: ConnId, auth: Box<compat::Auth>, rechecked: bool, now: Instant) {
        let checked = self
            .registry
            .authenticate_server(&auth.server_id, &auth.token)
            .map(|server| server.id.clone());
        match checked {
            Ok(server_id) => {
                self.effects.push(Effect::Send {
                    id,
                    text: compat::AUTH_OK,
                });
                self.effects.push(Effect::SetMessageLimit {
                    id,
                    max_message: compat::MAX_MESSAGE,
                });
                self.leave_unauthenticated(id);
                self.admit_agent(id, server_id, Some(Box::default()), now);
            }
            Err(_) if !rechecked => {
                if let Some(Conn {
                    phase: Phase::CompatAuth(wait),
                    ..
                }) = self.conns.get_mut(&id)
                {
                    wait.pending = Some(auth);
                    self.effects.push(Effect::ReadRegistry { force: false });
                }
            }
            Err(refusal) => self.compat_refuse(id, refusal, now),
        }
    }

    /// Gives back the connection's place among the unauthenticated, if it
    /// holds one; its phase must change (or it be forgotten) right after.
    fn leave_unauthenticated(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get(&id)
            && conn.awaits_auth()
        {
            self.unauthenticated.give_back(conn.peer.ip());
        }
    }

    fn compat_refuse(&mut self, id: ConnId, refusal: Refusal, now: Instant) {
        // Neither the id nor the token offered is logged.
        let peer = conn_peer(&self.conns, id);
        self.refused(peer, refusal.describe(), now);
        self.effects.push(Effect::Send {
            id,
            text: refusal.answer(),
        });
        self.close(id, CloseCode::Policy, "authentication failed", now);
    }

    /// A frame of an admitted vStats agent: `metrics` becomes our sample
    /// and goes the way of our agents' samples; their aggregation and
    /// offline batches are counted and dropped, recognised by the start
    /// of the text without being parsed; other types are ignored.
    fn compat_text(&mut self, id: ConnId, server_id: &str, text: &str, now: Instant) -> usize {
        let Some(kind) = compat::kind(text) else {
            self.malformed(id, server_id, "not a vStats frame", now);
            return 0;
        };
        match kind.as_ref() {
            "metrics" => {
                let wall = self.wall(now);
                let Some(agent) = self.agent(id) else {
                    return 0;
                };
                let Some(session) = agent.compat.as_deref_mut() else {
                    return 0;
                };
                let checked = compat::sample(text, session, wall)
                    .and_then(|json| Ok(RawValue::from_string(json)?))
                    .and_then(|raw| hub::check_sample(&raw));
                let (sample, reading) = match checked {
                    Ok(checked) => checked,
                    Err(e) => {
                        self.malformed(id, server_id, &e.to_string(), now);
                        return 0;
                    }
                };
                let built = sample.get().len();
                let Some(agent) = self.agent(id) else {
                    return 0;
                };
                agent.malformed_in_a_row = 0;
                if !agent.samples.allow(now) {
                    self.counters.dropped_samples += 1;
                    return built;
                }
                self.fan_out(server_id, sample, &reading, now);
                built
            }
            ignored => {
                match ignored {
                    "aggregated_metrics" => self.counters.compat_ignored.aggregated_metrics += 1,
                    "batch_metrics" => self.counters.compat_ignored.batch_metrics += 1,
                    _ => {}
                }
                if let Some(agent) = self.agent(id) {
                    agent.malformed_in_a_row = 0;
                }
                0
            }
        }
    }

    fn malformed(&mut self, id: ConnId, server_id: &str, why: &str, now: Instant) {
        self.counters.malformed += 1;
        if let Some(earlier) = self.malformed.pass(now) {
            self.log(
                Level::Warn,
                format!(
                    "malformed frame from server {server_id} dropped: {why}{}",
                    held_back(earlier)
                ),
            );
        }
        let Some(agent) = self.agent(id) else { return };
        agent.malformed_in_a_row += 1;
        if agent.malformed_in_a_row >= MALFORMED_LIMIT {
            self.close(id, CloseCode::Invalid, "repeated malformed frames", now);
        }
    }

    /// Stores a server's sample, adds it to its history and queues it to
    /// every dashboard.
    fn fan_out(&mut self, server_id: &str, sample: Box<RawValue>, reading: &Reading, now: Instant) {
        let wall = self.wall(now);
        let Some(server) = self.hub.get_mut(server_id) else {
            return;
        };
        let unix_secs = unix_seconds(wall);
        let history = server.history.get_or_insert_default();
        if self.store {
            history.record_hour(unix_secs, reading);
            if let Some(step) = server.rollup.record(unix_secs, reading) {
                let server = server.id.clone();
                self.minutes.push(Row { server, step });
            }
        } else {
            history.record(unix_secs, reading);
        }
        let changes = self.alerts.reading(&mut server.watch, reading, now);
        let message = hub::metrics(server_id, &sample, wall);
        server.latest_message = Some(message.clone());
        server.latest_data = Some(sample);
        let slot = server.slot;
        let (effects, counters) = (&mut self.effects, &mut self.counters);
        each_dashboard(&self.dashboards, &mut self.conns, |id, dashboard| {
            if dashboard.outbox.push_metrics(slot, message.clone()) {
                counters.conflated += 1;
            }
            wake(effects, id, dashboard);
        });
        for change in changes {
            self.alert(server_id, &change, now);
        }
    }

    /// Logs a change and queues its notification.
    fn alert(&mut self, server_id: &str, change: &Change, now: Instant) {
        let wall = self.wall(now);
        let Some(server) = self.hub.get(server_id) else {
            return;
        };
        let notice = self
            .alerts
            .notice(change, (&server.id, &server.name, &server.location), wall);
        let level = match (notice.event, notice.resolved) {
            (Event::Online, _) | (_, true) => Level::Info,
            _ => Level::Warn,
        };
        self.log(level, format!("alert: {}", notice.message));
        self.effects.push(Effect::Notify(Box::new(notice)));
    }

    /// Queues an event to every dashboard. One whose queue outgrows its
    /// room is closed (1013) if its socket does not take the excess at
    /// once (see [`Engine::handle_pumped`]): a burst (a registry of thousands
    /// reloaded) can outgrow the room of a reader that keeps up.
    fn broadcast(&mut self, message: Utf8Bytes) {
        let effects = &mut self.effects;
        each_dashboard(&self.dashboards, &mut self.conns, |id, dashboard| {
            if dashboard.link.closing.is_none() {
                dashboard.outbox.push_event(message.clone());
                wake(effects, id, dashboard);
            }
        });
    }

    /// The loop moved what it could from a dashboard's outbox to its
    /// socket: `messages` and `bytes` went out, and `blocked` says the
    /// socket is full.
    pub fn handle_pumped(
        &mut self,
        id: ConnId,
        messages: u64,
        bytes: u64,
        blocked: bool,
        now: Instant,
    ) {
        self.counters.frames_out += messages;
        self.counters.bytes_out += bytes;
        let Some(Conn {
            phase: Phase::Dashboard(dashboard),
            ..
        }) = self.conns.get_mut(&id)
        else {
            return;
        };
        dashboard.woken = false;
        let waiting = blocked || !dashboard.outbox.is_empty();
        dashboard.outbox.wrote(!waiting);
        let stalled = messages == 0 && waiting;
        let stalled_now = stalled && dashboard.stalled_since.is_none();
        if stalled {
            dashboard.stalled_since.get_or_insert(now);
        } else {
            dashboard.stalled_since = None;
        }
        let over_limit = dashboard.outbox.over_limit() && dashboard.link.closing.is_none();
        if stalled_now {
            // A stall makes a deadline sooner than any it had; a pump that
            // changes nothing of it costs no timer work.
            self.remind(id);
        }
        if over_limit {
            self.counters.slow_dashboards += 1;
            let peer = conn_peer(&self.conns, id);
            self.log(
                Level::Warn,
                format!("dashboard {peer} too slow to keep up: closing it (1013)"),
            );
            self.close(
                id,
                CloseCode::Again,
                "too slow: reconnect for a fresh snapshot",
                now,
            );
        }
    }

    /// The peer broke the WebSocket protocol; the loop reads no more
    /// frames from it.
    pub fn handle_fault(&mut self, id: ConnId, fault: Fault, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // A vStats agent takes up to 1 MiB: past that, say what to change.
        let compat = match &conn.phase {
            Phase::Agent(agent) if agent.compat.is_some() => {
                Some(format!("server {}", agent.server_id))
            }
            _ => None,
        };
        let before_auth = matches!(conn.phase, Phase::CompatAuth(_));
        let (code, reason) = match (&fault, &compat) {
            (Fault::TooLarge, _) if before_auth => (CloseCode::Size, "more than 4 KiB before auth"),
            (Fault::TooLarge, Some(_)) => (CloseCode::Size, "message larger than 1 MiB"),
            (Fault::TooLarge, None) => (CloseCode::Size, "frame larger than 64 KiB"),
            (Fault::NotUtf8, _) => (CloseCode::Invalid, "text frame is not UTF-8"),
            (Fault::Protocol(_), _) => {
                self.counters.protocol_errors += 1;
                (CloseCode::Protocol, "protocol violation")
            }
        };
        let peer = conn.peer;
        let too_large = fault == Fault::TooLarge;
        conn.cause.get_or_insert(Cause::Fault(fault));
        if let (true, Some(server)) = (too_large, compat) {
            self.log(
                Level::Warn,
                format!(
                    "vStats agent from {peer} ({server}) sent a message over 1 MiB, most \
                     likely its aggregated_metrics, which grows with its local history: \
                     closing it (1009). The relay keeps its own history; turn the agent's \
                     local storage off: {}",
                    compat::STORAGE_OFF
                ),
            );
        }
        self.close(id, code, reason, now);
    }

    /// The socket is gone (or broke): the connection ends.
    pub fn handle_ended(&mut self, id: ConnId, end: SocketEnd, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.cause.get_or_insert(match end {
            SocketEnd::Closed => Cause::ClosedByPeer(None),
            SocketEnd::Io(kind) => Cause::Io(kind),
        });
        self.forget(id, now);
    }

    /// Drops a connection from the engine (the loop has dropped, or is
    /// told to drop, its socket) and undoes what it stood for.
    fn forget(&mut self, id: ConnId, now: Instant) {
        self.leave_unauthenticated(id);
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let cause = conn.cause.unwrap_or(Cause::Io(io::ErrorKind::Other));
        let peer = conn.peer;
        let lasted = Lasted(now.saturating_duration_since(conn.opened));
        match conn.phase {
            Phase::Agent(agent) => {
                let Some(server) = self.hub.get_mut(&agent.server_id) else {
                    return self.log(
                        Level::Info,
                        format!(
                            "agent from {peer} of a removed server ended after {lasted}: {cause}"
                        ),
                    );
                };
                let text = format!(
                    "agent for {} ({}) from {peer} disconnected after {lasted}: {cause}",
                    server.name, server.id
                );
                let went_offline = server.presence.lost(id);
                self.log(Level::Info, text);
                if went_offline {
                    let wall = self.wall(now);
                    self.broadcast(hub::status(&agent.server_id, false, wall));
                    self.presence_changed(&agent.server_id, now);
                }
            }
            Phase::Dashboard(_) => {
                self.dashboards.retain(|d| *d != id);
                let open = self.dashboards.len();
                self.log(
                    Level::Info,
                    format!("dashboard {peer} disconnected after {lasted}: {cause} ({open} open)"),
                );
            }
            _ if self.logs(Level::Debug) => {
                self.log(Level::Debug, format!("{peer} after {lasted}: {cause}"));
            }
            _ => {}
        }
    }

    /// Forgets a connection and tells the loop to drop its socket.
    fn finish(&mut self, id: ConnId, cause: Cause, last_words: Option<Vec<u8>>, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.cause.get_or_insert(cause);
        self.effects.push(Effect::Drop { id, last_words });
        self.forget(id, now);
    }

    // ----- the clock ------------------------------------------------------

    /// The clock work: the connections and servers whose reminders are
    /// due (deadlines, pings, silence, stalls, agent timeouts, offline
    /// notices), then the periodic chores (the registry poll, saves, log
    /// summaries) and accepting again after a pause. Safe to call at any
    /// time: only what is due by `now` is done.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
            self.effects.push(Effect::ResumeAccepting);
        }
        let (mut due_conns, mut due_servers) = (Vec::new(), Vec::new());
        for (at, due) in self.timers.take_due(now) {
            match due {
                Due::Conn(id) => {
                    // A reminder whose time is not the connection's
                    // current one was overtaken by an earlier one: stale.
                    if let Some(conn) = self.conns.get_mut(&id)
                        && conn.reminder == Some(at)
                    {
                        conn.reminder = None;
                        due_conns.push(id);
                    }
                }
                Due::Server(slot) => {
                    if let Some(server) = self.hub.by_slot_mut(slot)
                        && server.reminder == Some(at)
                    {
                        server.reminder = None;
                        due_servers.push(slot);
                    }
                }
            }
        }
        let mut expired = Vec::new();
        let mut pings = Vec::new();
        for &id in &due_conns {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let run_out = conn_timers(conn)
                .into_iter()
                .flatten()
                .find(|(at, _)| now >= *at);
            match run_out {
                Some((_, Check::Expire(timer))) => expired.push((id, timer)),
                Some((_, Check::Ping)) => {
                    if let Some(link) = conn.link() {
                        link.last_ping = now;
                    }
                    pings.push(id);
                }
                None => {}
            }
        }
        // In id order, so a run's effects do not depend on hashing.
        expired.sort_unstable_by_key(|(id, _)| *id);
        pings.sort_unstable();
        for (id, timeout) in expired {
            match timeout {
                Timer::Head => self.finish(
                    id,
                    Cause::Expired(timeout),
                    Some(http::text_response(408, "request head too slow")),
                    now,
                ),
                Timer::Stalled => {
                    // The close frame will not get through a full socket
                    // either; it is queued for the record and the socket
                    // dropped when the close timeout passes.
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.cause.get_or_insert(Cause::Expired(timeout));
                    }
                    self.counters.slow_dashboards += 1;
                    self.close(id, CloseCode::Again, "not reading", now);
                }
                Timer::Auth => {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.cause.get_or_insert(Cause::Expired(timeout));
                    }
                    let peer = conn_peer(&self.conns, id);
                    self.refused(peer, "vStats agent sent no auth frame in time", now);
                    self.close(id, CloseCode::Policy, "no auth within 10 s", now);
                }
                _ => self.finish(id, Cause::Expired(timeout), None, now),
            }
        }
        for id in pings {
            self.effects.push(Effect::Ping { id });
        }
        // Each looked at sets its next reminder (those dropped are gone).
        for id in due_conns {
            self.remind(id);
        }
        // In registry order, as a sweep of them all would go.
        due_servers.sort_unstable_by_key(|&slot| self.hub.index_of_slot(slot));
        self.expire_agents(&due_servers, now);
        self.watch_presence(&due_servers, now);
        for slot in due_servers {
            self.remind_server(slot);
        }
        let wall = self.wall(now);
        self.hub.drop_stale_sparklines(unix_seconds(wall));
        if let Some(held) = self.refusals.summary_due(now) {
            self.log(
                Level::Info,
                format!("{held} more connections refused in the last {LOG_TROUBLE_EVERY:?}"),
            );
        }
        if let Some(held) = self.malformed.summary_due(now) {
            self.log(
                Level::Warn,
                format!("{held} more malformed frames dropped in the last {LOG_TROUBLE_EVERY:?}"),
            );
        }
        if self.alerts.dirty {
            self.save_alerts(false, now);
        }
        if now >= self.history_due {
            self.history_due = next_period(self.history_due, HISTORY_SAVE_EVERY, now);
            self.save_history(false);
        }
        if self.store && now >= self.minutes_due {
            self.minutes_due = next_period(self.minutes_due, MINUTE, now);
            self.store_minutes(unix_seconds(wall), false);
        }
        if now >= self.registry_due {
            self.registry_due = next_period(self.registry_due, REGISTRY_CHECK_EVERY, now);
            self.effects.push(Effect::ReadRegistry { force: false });
        }
    }

    /// Servers whose agent is connected but silent past the agent timeout
    /// go offline (the socket stays: a frame brings them back).
    fn expire_agents(&mut self, slots: &[Slot], now: Instant) {
        let timeout = self.config.agent_timeout;
        let mut gone_offline = Vec::new();
        for &slot in slots {
            if let Some(server) = self.hub.by_slot_mut(slot)
                && server.presence.expired(now, timeout)
            {
                gone_offline.push(server.id.clone());
            }
        }
        let wall = self.wall(now);
        for id in gone_offline {
            self.log(
                Level::Info,
                format!("server {id} offline: nothing heard for {timeout:?}"),
            );
            self.broadcast(hub::status(&id, false, wall));
        }
    }

    /// Servers offline past `--notify-after`, and back after that: what
    /// alerts make of each server's presence now.
    fn watch_presence(&mut self, slots: &[Slot], now: Instant) {
        let mut changes = Vec::new();
        for &slot in slots {
            let Some(server) = self.hub.by_slot_mut(slot) else {
                continue;
            };
            let online = server.presence.online();
            if let Some(change) = self.alerts.presence(&mut server.watch, online, now) {
                changes.push((server.id.clone(), change));
            }
        }
        for (id, change) in changes {
            self.alert(&id, &change, now);
        }
    }

    /// A server's presence changed (an agent lost, heard again, its token
    /// revoked): alerts hear of it now, and its reminder follows.
    fn presence_changed(&mut self, server_id: &str, now: Instant) {
        let Some(slot) = self.hub.get(server_id).map(|server| server.slot) else {
            return;
        };
        self.watch_presence(&[slot], now);
        self.remind_server(slot);
    }

    /// Sets connection `id`'s reminder at the earliest of its deadlines,
    /// unless one as early is set already (a later deadline is found when
    /// the earlier reminder comes: see [`Timers`]).
    fn remind(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(at) = conn_deadline(conn) else {
            return;
        };
        if conn.reminder.is_none_or(|set| at < set) {
            conn.reminder = Some(at);
            self.timers.set(at, Due::Conn(id));
            self.drop_stale_reminders();
        }
    }

    /// Keeps the timers' heap within twice the live reminders (plus some
    /// slack, so that the sweep is rare): each is swept once it is
    /// stale, at a cost spread over the pushes that made it so.
    fn drop_stale_reminders(&mut self) {
        let live = self.conns.len() + self.hub.servers.len();
        if self.timers.len() <= 2 * live + STALE_REMINDERS_SLACK {
            return;
        }
        let (conns, hub) = (&self.conns, &self.hub);
        self.timers.retain(|at, due| match due {
            Due::Conn(id) => conns.get(&id).is_some_and(|c| c.reminder == Some(at)),
            Due::Server(slot) => hub.reminder_of(slot) == Some(at),
        });
    }

    /// The same for a server: its agent timeout while online, its offline
    /// notice while one is due.
    fn remind_server(&mut self, slot: Slot) {
        let timeout = self.config.agent_timeout;
        let Some(server) = self.hub.by_slot_mut(slot) else {
            return;
        };
        let deadlines = [server.presence.expires_at(timeout), server.watch.due()];
        let Some(at) = deadlines.into_iter().flatten().min() else {
            return;
        };
        if server.reminder.is_none_or(|set| at < set) {
            server.reminder = Some(at);
            self.timers.set(at, Due::Server(slot));
            self.drop_stale_reminders();
        }
    }

    fn save_alerts(&mut self, last: bool, now: Instant) {
        self.alerts.dirty = false;
        let watches = self
            .hub
            .servers
            .iter()
            .map(|server| (server.id.as_str(), &server.watch));
        let unix_secs = unix_seconds(self.clock.wall(now));
        let bytes = alerts::to_file(&self.alerts, watches, now, unix_secs);
        self.effects.push(Effect::SaveAlerts { bytes, last });
    }

    /// What the alerts file of a previous run holds (empty if none), once
    /// history is restored: a server with a history was seen before.
    /// The file's times are on the wall clock, read at `now`.
    pub fn restore_alerts(&mut self, saved: HashMap<String, Saved>, now: Instant) {
        let unix_secs = unix_seconds(self.wall(now));
        for server in &mut self.hub.servers {
            let seen = server.history.is_some();
            self.alerts.restore(
                &mut server.watch,
                seen,
                saved.get(&server.id),
                now,
                unix_secs,
            );
        }
        let slots: Vec<Slot> = self.hub.servers.iter().map(|server| server.slot).collect();
        for slot in slots {
            self.remind_server(slot);
        }
    }

    // ----- registry, signals ----------------------------------------------

    /// SIGHUP: the registry and the certificate are read again.
    pub fn handle_reload(&mut self) {
        self.log(
            Level::Info,
            "SIGHUP: reloading the registry and the certificate".into(),
        );
        self.effects.push(Effect::ReadRegistry { force: true });
        self.effects.push(Effect::ReloadCertificate);
    }

    /// The state file as read after [`Effect::ReadRegistry`]. A bad file
    /// keeps the registry we have, and so does a missing one: gone for a
    /// moment (an editor's save, a restore), not emptied.
    pub fn handle_registry_read(&mut self, read: RegistryRead, now: Instant) {
        match read {
            RegistryRead::Unchanged => {}
            RegistryRead::Missing => self.log(
                Level::Warn,
                format!(
                    "{}: missing; keeping the registry loaded before until it is back",
                    self.config.state.display()
                ),
            ),
            RegistryRead::Failed(e) => {
                self.log(
                    Level::Error,
                    format!("{e}; keeping the registry loaded before"),
                );
            }
            RegistryRead::Loaded(registry) => self.registry_changed(registry, now),
        }
        // Agents that waited for this read are answered now.
        let mut waiting: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, conn)| matches!(conn.phase, Phase::AwaitingRegistry(_)))
            .map(|(id, _)| *id)
            .collect();
        waiting.sort_unstable();
        for id in waiting {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if let Phase::AwaitingRegistry(head) = std::mem::replace(&mut conn.phase, Phase::Head) {
                self.agent_request(id, head, true, now);
            }
        }
        // And vStats agents whose auth waited for it.
        let mut waiting: Vec<(ConnId, Box<compat::Auth>)> = self
            .conns
            .iter_mut()
            .filter_map(|(id, conn)| match &mut conn.phase {
                Phase::CompatAuth(wait) => Some((*id, wait.pending.take()?)),
                _ => None,
            })
            .collect();
        waiting.sort_unstable_by_key(|(id, _)| *id);
        for (id, auth) in waiting {
            self.compat_auth(id, auth, true, now);
        }
    }

    fn registry_changed(&mut self, registry: Registry, now: Instant) {
        let changes = registry.changes_since(&self.registry);
        self.registry = registry;
        if changes.is_empty() {
            return;
        }
        let (added, removed) = self.hub.sync(&self.registry);
        let wall = self.wall(now);
        // What was open for them is closed without a word.
        self.alerts.dirty |= !removed.is_empty();
        for server in removed {
            self.log(
                Level::Info,
                format!("server {} ({}) removed", server.name, server.id),
            );
            self.broadcast(hub::server_removed(&server.id, wall));
            if self.store {
                self.effects
                    .push(Effect::Store(Job::Forget(server.id.clone())));
            }
            each_dashboard(&self.dashboards, &mut self.conns, |_, dashboard| {
                dashboard.outbox.forget(server.slot);
            });
            if let Some(agent) = server.presence.agent() {
                self.close(agent, CloseCode::Policy, "server removed", now);
            }
        }
        for id in &changes.token_changed {
            // The agent loses its say at once, and dashboards hear it: its
            // close below no longer speaks for the server (see `forget`).
            let Some(server) = self.hub.get_mut(id) else {
                continue;
            };
            let Some((agent, was_online)) = server.presence.revoked() else {
                continue;
            };
            let text = format!(
                "token of {} ({}) rotated: closing its agent",
                server.name, server.id
            );
            self.log(Level::Info, text);
            self.close(agent, CloseCode::Policy, "token rotated", now);
            if was_online {
                self.broadcast(hub::status(id, false, wall));
            }
            self.presence_changed(id, now);
        }
        for id in added {
            if let Some(server) = self.hub.get(&id) {
                let text = format!("server {} ({}) added", server.name, server.id);
                let message = hub::server_added(server, wall);
                self.log(Level::Info, text);
                self.broadcast(message);
            }
        }
    }

    /// SIGTERM or SIGINT: every WebSocket is told goodbye (1001), every
    /// other connection dropped, and nothing new admitted.
    pub fn handle_shutdown(&mut self, now: Instant) {
        self.stopping = true;
        self.save_history(true);
        if self.store {
            self.store_minutes(unix_seconds(self.wall(now)), true);
        }
        self.save_alerts(true, now);
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let websocket = self
                .conns
                .get_mut(&id)
                .is_some_and(|conn| conn.link().is_some());
            if websocket {
                self.close(id, CloseCode::Away, "relay shutting down", now);
            } else {
                self.finish(id, Cause::ShuttingDown, None, now);
            }
        }
    }

    /// Hands the minutes that ended before `unix_secs` (the minute in
    /// progress too, when `all`: at shutdown) to the database, in one batch.
    fn store_minutes(&mut self, unix_secs: u64, all: bool) {
        for server in &mut self.hub.servers {
            let step = if all {
                server.rollup.finish()
            } else {
                server.rollup.finish_before(unix_secs)
            };
            if let Some(step) = step {
                let server = server.id.clone();
                self.minutes.push(Row { server, step });
            }
        }
        if !self.minutes.is_empty() {
            let minutes = std::mem::take(&mut self.minutes);
            self.effects.push(Effect::Store(Job::Minutes(minutes)));
        }
    }

    fn save_history(&mut self, last: bool) {
        let servers = self.hub.servers.iter().filter_map(|server| {
            let history = server.history.as_deref()?;
            Some((server.id.as_str(), history))
        });
        let bytes = history::to_file(servers);
        self.effects.push(Effect::SaveHistory { bytes, last });
    }

    /// The history a previous run saved: kept for the servers still
    /// registered, dropped for the others, and without steps that are not
    /// in the past at `now` (the wall clock went back since it was saved).
    /// Returns how many were kept, and how many of those had steps from
    /// the future.
    pub fn restore_history(
        &mut self,
        saved: Vec<(String, history::History)>,
        now: Instant,
    ) -> (usize, usize) {
        let unix_secs = unix_seconds(self.wall(now));
        let (mut kept, mut from_the_future) = (0, 0);
        let mut import = Vec::new();
        for (id, mut history) in saved {
            if let Some(server) = self.hub.get_mut(&id) {
                from_the_future += usize::from(history.resume(unix_secs));
                if self.store {
                    // The database keeps the day from now on: what the file
                    // held of it is imported there (once), and dropped here.
                    import.push((id, Box::new(history.clone())));
                    history.drop_day();
                }
                server.history = Some(Box::new(history));
                kept += 1;
            }
        }
        if self.store {
            if !import.is_empty() {
                self.effects.push(Effect::Store(Job::Import(import)));
            }
            // An empty registry is more likely a new or mistaken --state
            // beside an old --history-db than a fleet all removed: nothing
            // is deleted for it.
            let registered: Vec<String> = self.hub.servers.iter().map(|s| s.id.clone()).collect();
            if !registered.is_empty() {
                self.effects.push(Effect::Store(Job::Keep(registered)));
            }
        }
        (kept, from_the_future)
    }

    fn connections(&self) -> prometheus::Connections {
        let mut count = prometheus::Connections::default();
        for conn in self.conns.values() {
            match conn.phase {
                Phase::Agent(_) | Phase::CompatAuth(_) => count.agents += 1,
                Phase::Dashboard(_) => count.dashboards += 1,
                _ => count.http += 1,
            }
        }
        count
    }

    /// DNS rebinding: without a viewer token, a page on another name that
    /// resolves to the relay could read the fleet (see
    /// [`Head::host_allowed`]). With one, the token guards what it reads.
    fn host_allowed(&self, head: &Head) -> bool {
        self.config.viewer_token.is_some() || head.host_allowed(&self.config.allowed_hosts)
    }

    fn viewer_allowed(&self, head: &Head) -> bool {
        match &self.config.viewer_token {
            None => true,
            Some(expected) => head.token().is_some_and(|token| {
                registry::constant_time_eq(token.as_bytes(), expected.as_bytes())
            }),
        }
    }
}

/// The `Content-Type` of a history answer.
fn history_content_type(csv: bool) -> &'static str {
    if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    }
}

/// A connection's age as a person reads it: `850ms`, `42s`, `3h12m5s`.
struct Lasted(Duration);

impl fmt::Display for Lasted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0 => write!(f, "{}ms", self.0.as_millis()),
            1..60 => write!(f, "{secs}s"),
            60..3600 => write!(f, "{}m{}s", secs / 60, secs % 60),
            _ => write!(f, "{}h{}m{}s", secs / 3600, secs / 60 % 60, secs % 60),
        }
    }
}

fn conn_peer(conns: &HashMap<ConnId, Conn>, id: ConnId) -> SocketAddr {
    conns
        .get(&id)
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |conn| conn.peer)
}

/// A patch's `data`, within the sample limits and of a patch's shape.
fn check_patch(data: &RawValue) -> Result<MetricsPatch, SampleError> {
    check_data(data.get())?;
    Ok(serde_json::from_str(data.get())?)
}

/// Calls `each` with every open dashboard, in the order they came.
fn each_dashboard(
    dashboards: &[ConnId],
    conns: &mut HashMap<ConnId, Conn>,
    mut each: impl FnMut(ConnId, &mut DashboardConn),
) {
    for &id in dashboards {
        if let Some(Conn {
            phase: Phase::Dashboard(dashboard),
            ..
        }) = conns.get_mut(&id)
        {
            each(id, dashboard.as_mut());
        }
    }
}

/// Asks the loop to pump a dashboard, once until it has.
fn wake(effects: &mut Vec<Effect>, id: ConnId, dashboard: &mut DashboardConn) {
    if !dashboard.woken {
        dashboard.woken = true;
        effects.push(Effect::Wake { id });
    }
}

/// The time a chore done for `due` is due next: a period later, or a
/// period from `now` if the loop fell that far behind (no burst of
/// catching up).
fn next_period(due: Instant, every: Duration, now: Instant) -> Instant {
    let next = due + every;
    if next <= now { now + every } else { next }
}

/// What a connection's timer does when it runs out.
#[derive(Debug, Clone, Copy)]
enum Check {
    Expire(Timer),
    Ping,
}

/// A connection's timers, in the order [`Engine::handle_timeout`] looks at
/// them: the first that has run out is what happens. The one place a
/// connection's deadlines are written: its reminder ([`conn_deadline`]) is
/// the earliest of them.
fn conn_timers(conn: &Conn) -> [Option<(Instant, Check)>; 4] {
    let link = |link: &Link| {
        let silence = (
            link.last_heard + SILENCE_LIMIT,
            Check::Expire(Timer::Silence),
        );
        let answer = link
            .closing
            .map(|at| (at + CLOSE_TIMEOUT, Check::Expire(Timer::CloseAnswer)));
        [Some(silence), answer]
    };
    match &conn.phase {
        Phase::Head | Phase::AwaitingRegistry(_) => [
            Some((conn.deadline, Check::Expire(Timer::Head))),
            None,
            None,
            None,
        ],
        Phase::OpeningFile { .. } | Phase::Respond { .. } | Phase::Querying { .. } => [
            Some((conn.deadline, Check::Expire(Timer::Response))),
            None,
            None,
            None,
        ],
        Phase::CompatAuth(wait) => {
            let [silence, answer] = link(&wait.link);
            let auth = (wait.link.closing.is_none())
                .then_some((conn.deadline, Check::Expire(Timer::Auth)));
            [silence, answer, auth, None]
        }
        Phase::Agent(agent) => {
            let [silence, answer] = link(&agent.link);
            let ping = (agent.link.last_ping + PING_EVERY, Check::Ping);
            [silence, answer, Some(ping), None]
        }
        Phase::Dashboard(dashboard) => {
            let [silence, answer] = link(&dashboard.link);
            let stalled = dashboard
                .stalled_since
                .filter(|_| dashboard.link.closing.is_none())
                .map(|at| (at + WRITE_STALL, Check::Expire(Timer::Stalled)));
            let ping = (dashboard.link.last_ping + PING_EVERY, Check::Ping);
            [silence, answer, stalled, Some(ping)]
        }
    }
}

/// The earliest time [`Engine::handle_timeout`] has something to do for
/// this connection.
fn conn_deadline(conn: &Conn) -> Option<Instant> {
    conn_timers(conn)
        .into_iter()
        .flatten()
        .map(|(at, _)| at)
        .min()
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

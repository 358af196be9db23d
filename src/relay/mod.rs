//! `vstats-relay`: admits agents by token, keeps the registry, fans live
//! metrics out to dashboards. One thread, one epoll loop, no async runtime.
//!
//! Two halves: [`engine`] makes every decision and does no I/O; this file
//! is the shell around it, which only makes syscalls. The loop
//! ([`Relay::run`]) reads top-down: wait for readiness, drive the ready
//! connections (telling the engine what they said), push queued messages
//! to dashboards, then the clock work; after each step it carries out the
//! engine's effects.

pub(crate) mod alerts;
pub(crate) mod budget;
pub(crate) mod cli;
pub(crate) mod compat;
pub(crate) mod config;
pub(crate) mod conn;
pub(crate) mod engine;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod hush;
pub(crate) mod lean;
pub(crate) mod notice;
pub(crate) mod notify;
pub(crate) mod outbox;
pub(crate) mod page;
pub(crate) mod poller;
pub(crate) mod presence;
pub(crate) mod prometheus;
pub(crate) mod rate;
pub(crate) mod registry;
pub(crate) mod rollup;
pub(crate) mod shared;
#[cfg(any(test, fuzzing, feature = "fuzzing"))]
pub(crate) mod sim;
pub(crate) mod store;
pub(crate) mod timers;

// What the binaries, examples and tests use. The modules are private: the
// rest is the relay's own business and may change without notice.
pub use cli::server_command;
pub use config::{Command, Config, ConfigError, HistoryDb, USAGE, parse as parse_command_line};
pub use history::to_file as history_to_file;
pub use history::{History, Reading, file_beside as history_file_beside};
pub use notify::test_command as notify_test_command;
pub use registry::{Registry, update as update_registry};
pub use rollup::Tier as HistoryTier;
pub use store::{MadeUpStep, file_beside as history_db_beside, fill as fill_history_db};

use conn::{Body, HeadPhase, RespondPhase, ServerStream, Socket, Stop, Turn, Written};
use engine::{Admission, After, Effect, Engine, RegistryRead};
use log::{debug, error, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use notify::Notifier;
use poller::Poller;
use registry::FileStamp;
use rollup::Answer;
use rustls::ServerConfig;
use shared::{ConnId, SocketEnd, WallClock};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use store::Store;

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
/// The history database's eventfd: answers are ready.
const STORE: u64 = 2;

/// How long a shutdown waits for close frames to be answered.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a stop waits for the history database's last writes.
const STORE_GRACE: Duration = Duration::from_secs(10);

/// Why the relay could not start, or stopped.
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

impl std::error::Error for RelayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RelayError::Registry(e) => Some(e),
            RelayError::Tls(e) => Some(e),
            RelayError::Io(_, e) => Some(e),
        }
    }
}

/// The wall clock the engine is handed: the system's, read when asked
/// (so a clock stepped by NTP after boot is followed at once).
struct SystemClock;

impl WallClock for SystemClock {
    fn wall(&self, _now: Instant) -> SystemTime {
        SystemTime::now()
    }
}

/// A connection's socket, in the phase its bytes are in.
enum Io {
    Head(HeadPhase),
    Respond(RespondPhase),
    WebSocket(Socket),
}

/// The shell: one thread, one epoll loop, and the engine it drives. It
/// owns every file descriptor (listener, signalfd, sockets, files being
/// sent) and the threads that write saves and deliver notifications; it
/// makes the syscalls the engine's effects ask for and decides nothing.
pub struct Relay {
    poller: Poller,
    listener: TcpListener,
    signals: SignalFd,
    tls: Option<Arc<ServerConfig>>,
    engine: Engine,
    registry_stamp: Option<FileStamp>,
    io: HashMap<ConnId, Io>,
    next_id: ConnId,
    /// Connections whose last turn ran out of budget (or that have bytes
    /// waiting that no edge will announce): driven again next round.
    unfinished: Vec<ConnId>,
    /// Dashboards with messages to move to their sockets.
    to_pump: Vec<ConnId>,
    /// Files opened for a response the engine has yet to decide.
    opened: HashMap<ConnId, Body>,
    history_path: PathBuf,
    /// The thread writing the last history save, so that writing many
    /// megabytes never holds up the loop.
    history_writer: Option<std::thread::JoinHandle<()>>,
    notifier: Option<Notifier>,
    alerts_path: PathBuf,
    /// The thread writing the alerts file, and what to write once it is
    /// done: a slow disk delays the file, never the loop.
    alerts_writer: Option<std::thread::JoinHandle<()>>,
    alerts_pending: Option<Vec<u8>>,
    /// The history database's threads, unless `--history-db off`.
    store: Option<Store>,
}

/// The open alerts a previous run saved, if any; an unreadable file is
/// warned about, and the relay starts as if none were open.
fn load_alerts(engine: &mut Engine, path: &Path) {
    let saved = match std::fs::read(path) {
        Ok(bytes) => alerts::from_file(&bytes).unwrap_or_else(|e| {
            warn!("alerts: {}: {e}; starting with none open", path.display());
            Default::default()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
        Err(e) => {
            warn!(
                "alerts: cannot read {}: {e}; starting with none open",
                path.display()
            );
            Default::default()
        }
    };
    if !saved.is_empty() {
        info!(
            "{} server(s) with alerts open, from {}",
            saved.len(),
            path.display()
        );
    }
    engine.restore_alerts(saved, Instant::now());
}

/// The history a previous run saved, if any. A missing file (a first
/// start, most likely) is said at info level; a corrupt or unreadable one is
/// warned about and skipped: history is worth less than starting.
fn load_history(engine: &mut Engine, path: &Path) {
    let saved = match std::fs::read(path) {
        Ok(bytes) => history::from_file(&bytes).unwrap_or_else(|e| {
            warn!("history: {}: {e}; starting without", path.display());
            Vec::new()
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            info!("no history in {} yet: starting without", path.display());
            Vec::new()
        }
        Err(e) => {
            warn!(
                "history: cannot read {}: {e}; starting without",
                path.display()
            );
            Vec::new()
        }
    };
    let saved_count = saved.len();
    // Called with nothing too: the database learns which servers remain.
    let (kept, from_the_future) = engine.restore_history(saved, Instant::now());
    if from_the_future > 0 {
        warn!(
            "history: {from_the_future} server(s) had steps later than the clock's time \
             (was the clock set back?): those steps are dropped"
        );
    }
    if saved_count > 0 {
        info!(
            "history of {kept} server(s) loaded from {}{}",
            path.display(),
            match saved_count - kept {
                0 => String::new(),
                gone => format!(" ({gone} no longer registered: dropped)"),
            }
        );
    }
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
        // std listens with a queue of 128: a burst of connections (a fleet
        // reconnecting after a restart, a crowd of scrapers) arriving while
        // the loop is busy for a few milliseconds would overflow it, and a
        // dropped SYN costs its client a whole second. The kernel caps this
        // at net.core.somaxconn, which -1 asks for (musl's SOMAXCONN, 128,
        // would change nothing).
        nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::MAXALLOWABLE)
            .map_err(|e| RelayError::Io("cannot listen", e.into()))?;
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
        let notifier = if config.notify.is_empty() {
            None
        } else {
            let tls = crate::tls::client_config(config.notify_ca_file.as_deref())
                .map_err(RelayError::Tls)?;
            Some((config.notify.clone(), Arc::new(tls)))
        };
        let store = match &config.history_db {
            HistoryDb::Off => None,
            HistoryDb::BesideState => Some(store::file_beside(&registry::resolve(&config.state))),
            HistoryDb::At(path) => Some(path.clone()),
        }
        .map(|path| {
            info!("history database: {}", path.display());
            Store::start(path, config.history_keep)
        })
        .transpose()
        .map_err(|e| RelayError::Io("history database", e))?;
        if let Some(store) = &store {
            poller
                .add_readable(store.ready_fd(), STORE)
                .map_err(|e| RelayError::Io("epoll", e))?;
        }
        let registry_stamp = registry::file_stamp(&config.state);
        let history_path = history::file_beside(&registry::resolve(&config.state));
        let alerts_path = alerts::file_beside(&registry::resolve(&config.state));
        let mut engine = Engine::new(
            config,
            tls.is_some(),
            max_connections,
            registry,
            Instant::now(),
            Box::new(SystemClock),
        );
        load_history(&mut engine, &history_path);
        load_alerts(&mut engine, &alerts_path);
        let notifier = notifier.map(|(targets, tls)| Notifier::start(targets, tls));
        let mut relay = Relay {
            store,
            notifier,
            alerts_path,
            alerts_writer: None,
            alerts_pending: None,
            registry_stamp,
            engine,
            history_path,
            history_writer: None,
            poller,
            listener,
            signals,
            tls,
            io: HashMap::new(),
            next_id: STORE + 1,
            unfinished: Vec::new(),
            to_pump: Vec::new(),
            opened: HashMap::new(),
        };
        // What restoring history hands the database: an import, the
        // servers to keep.
        relay.apply_effects();
        Ok(relay)
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
            self.engine.servers()
        );
        loop {
            let timeout = if self.unfinished.is_empty() {
                self.engine.poll_timeout(Instant::now())
            } else {
                Duration::ZERO
            };
            let mut ready: Vec<u64> = self
                .poller
                .wait(timeout)
                .map_err(|e| RelayError::Io("epoll", e))?
                .collect();
            for &key in &ready {
                match key {
                    LISTENER => self.accept(),
                    SIGNALS if self.handle_signals() => {
                        self.shut_down();
                        return Ok(());
                    }
                    STORE => self.history_answers(),
                    _ => {}
                }
            }
            ready.retain(|&key| key > STORE);
            let unfinished = std::mem::take(&mut self.unfinished);
            for id in one_turn_each(ready, unfinished) {
                self.drive(id);
            }
            self.pump_dashboards();
            let now = Instant::now();
            if self.engine.poll_timeout(now).is_zero() {
                self.engine.handle_timeout(now);
                self.apply_effects();
                self.write_alerts_pending(false);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (tcp, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.engine.handle_accept_failure(&e, Instant::now());
                    self.apply_effects();
                    return;
                }
            };
            if tcp.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            if let Admission::Refuse(last_words) =
                self.engine.handle_accept(id, peer, Instant::now())
            {
                // Best effort, never waiting.
                let _ = (&tcp).write(&last_words);
                self.apply_effects();
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => ServerStream::Plain(tcp),
                Some(config) => match rustls::ServerConnection::new(config.clone()) {
                    Ok(tls) => ServerStream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))),
                    Err(e) => {
                        error!("tls: {e}");
                        self.engine.handle_ended(
                            id,
                            SocketEnd::Io(io::ErrorKind::Other),
                            Instant::now(),
                        );
                        self.apply_effects();
                        continue;
                    }
                },
            };
            if let Err(e) = self.poller.add(stream.tcp(), id) {
                warn!("epoll: {e}");
                self.engine
                    .handle_ended(id, SocketEnd::Io(e.kind()), Instant::now());
                self.apply_effects();
                continue;
            }
            self.io.insert(id, Io::Head(HeadPhase::new(stream)));
            // Edge-triggered: data that arrived before registration
            // produced no edge, so read now.
            self.drive(id);
        }
    }

    /// Whether a stop signal arrived; SIGHUP reloads.
    fn handle_signals(&mut self) -> bool {
        let mut stop = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => {
                    self.engine.handle_reload();
                    self.apply_effects();
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

    /// One turn of a connection: reads (or writes a response) within its
    /// budget and tells the engine what happened.
    fn drive(&mut self, id: ConnId) {
        let Some(io) = self.io.get_mut(&id) else {
            return; // a stray event for a connection already gone
        };
        let now = Instant::now();
        match io {
            Io::Head(head) => match head.read() {
                Ok(None) => {}
                Ok(Some(request)) => {
                    // What the delivery threads counted, for a `/metrics`.
                    if let Some(notifier) = &self.notifier {
                        self.engine.handle_deliveries(notifier.deliveries());
                    }
                    if let Some(store) = &self.store {
                        self.engine.handle_store_counts(store.counts());
                    }
                    self.engine.handle_request(id, request, now)
                }
                Err(end) => self.end(id, end),
            },
            Io::Respond(respond) => match respond.write() {
                Ok((written, bytes)) => {
                    if bytes > 0 {
                        self.engine.handle_wrote(id, now);
                    }
                    match written {
                        Written::All => self.engine.handle_responded(id, now),
                        Written::Blocked => {}
                        Written::Yielded => self.unfinished.push(id),
                    }
                }
                Err(end) => self.end(id, end),
            },
            Io::WebSocket(socket) => {
                let engine = &mut self.engine;
                let read = socket.read(|frame| engine.handle_frame(id, frame, now));
                match read {
                    Ok(Turn::Drained) => {}
                    Ok(Turn::Yielded) => self.unfinished.push(id),
                    // What arrives next is discarded, in the turns to come.
                    Err(Stop::Fault(fault)) => {
                        self.engine.handle_fault(id, fault, now);
                        self.unfinished.push(id);
                    }
                    Err(Stop::Ended(end)) => {
                        self.end(id, end);
                        return self.apply_effects();
                    }
                }
                // Pongs go out; a writable edge lets a dashboard take more.
                self.to_pump.push(id);
            }
        }
        self.apply_effects();
    }

    /// The socket is finished: dropped here, forgotten by the engine.
    fn end(&mut self, id: ConnId, end: SocketEnd) {
        self.io.remove(&id);
        self.opened.remove(&id);
        self.engine.handle_ended(id, end, Instant::now());
    }

    /// Writes what dashboards (and agents owing a pong) have waiting.
    fn pump_dashboards(&mut self) {
        let mut ids = std::mem::take(&mut self.to_pump);
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(Io::WebSocket(socket)) = self.io.get_mut(&id) else {
                continue;
            };
            let now = Instant::now();
            let result = match self.engine.dashboard_outbox(id) {
                Some(outbox) => socket.pump(outbox).map(Some),
                None => socket.flush().map(|_| None),
            };
            match result {
                Ok(Some(pumped)) => {
                    self.engine.handle_pumped(
                        id,
                        pumped.messages,
                        pumped.bytes,
                        pumped.blocked,
                        now,
                    );
                }
                Ok(None) => {}
                Err(end) => self.end(id, end),
            }
            self.apply_effects();
        }
    }

    /// Carries out what the engine decided, and what that leads to.
    fn apply_effects(&mut self) {
        loop {
            let effects = self.engine.poll_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                self.apply(effect);
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Respond { id, bytes, after } => {
                let body = self.opened.remove(&id);
                if let Some(Io::Head(head)) = self.io.remove(&id) {
                    let body = if after == After::SendFile { body } else { None };
                    self.io
                        .insert(id, Io::Respond(RespondPhase::new(head, bytes, body)));
                    // Write now: the socket is most likely writable, and its
                    // edge may have come and gone.
                    self.unfinished.push(id);
                }
            }
            Effect::OpenFile { id, dir, name } => {
                let opened = open_dist_file(&dir, &name).map(|(file, len)| {
                    self.opened.insert(id, Body::new(file, len));
                    len
                });
                self.engine.handle_file_opened(id, &name, opened);
            }
            Effect::Upgrade { id, max_message } => {
                if let Some(Io::Respond(respond)) = self.io.remove(&id) {
                    let socket = respond.into_websocket(max_message);
                    self.io.insert(id, Io::WebSocket(socket));
                    // Frames may have come with the request head.
                    self.unfinished.push(id);
                }
            }
            Effect::Close { id, code, reason } => {
                if let Some(Io::WebSocket(socket)) = self.io.get_mut(&id)
                    && let Err(end) = socket.close(code, reason)
                {
                    self.end(id, end);
                }
            }
            Effect::SetMessageLimit { id, max_message } => {
                if let Some(Io::WebSocket(socket)) = self.io.get_mut(&id) {
                    socket.set_max_message(max_message);
                }
            }
            Effect::Send { id, text } => {
                if let Some(Io::WebSocket(socket)) = self.io.get_mut(&id)
                    && let Err(end) = socket.send(text)
                {
                    self.end(id, end);
                }
            }
            Effect::Ping { id } => {
                if let Some(Io::WebSocket(socket)) = self.io.get_mut(&id)
                    && let Err(end) = socket.ping()
                {
                    self.end(id, end);
                }
            }
            Effect::Wake { id } => self.to_pump.push(id),
            Effect::Drop { id, last_words } => {
                self.opened.remove(&id);
                if let (Some(Io::Head(mut head)), Some(bytes)) = (self.io.remove(&id), last_words) {
                    // Best effort, never waiting; on TLS before the
                    // handshake ends, rustls only buffers it.
                    let _ = head.stream.write(&bytes);
                    let _ = head.stream.flush();
                }
            }
            Effect::Log { level, text } => log::log!(level, "{text}"),
            Effect::ReadRegistry { force } => {
                let read = self.read_registry(force);
                self.engine.handle_registry_read(read, Instant::now());
            }
            Effect::ReloadCertificate => self.reload_certificate(),
            Effect::SaveHistory { bytes, last } => self.save_history(bytes, last),
            Effect::Store(job) => {
                if let Some(store) = &self.store {
                    store.send(job);
                }
            }
            Effect::QueryHistory(ask) => {
                let refused = match &self.store {
                    Some(store) => store.ask(*ask).err(),
                    None => Some(*ask),
                };
                if let Some(ask) = refused {
                    let answer = Answer {
                        id: ask.id,
                        body: Err("too many history requests waiting".into()),
                    };
                    self.engine.handle_history_answer(answer, Instant::now());
                }
            }
            Effect::Notify(notice) => {
                if let Some(notifier) = &self.notifier {
                    notifier.send(&notice);
                }
            }
            Effect::SaveAlerts { bytes, last } => {
                self.alerts_pending = Some(bytes);
                self.write_alerts_pending(last);
            }
            Effect::PauseAccepting => {
                if let Err(e) = self.poller.set_readable(&self.listener, LISTENER, false) {
                    warn!("epoll: {e}");
                }
            }
            Effect::ResumeAccepting => {
                if let Err(e) = self.poller.set_readable(&self.listener, LISTENER, true) {
                    warn!("epoll: {e}");
                }
                self.accept();
            }
        }
    }

    /// Hands the database's answers to the engine.
    fn history_answers(&mut self) {
        let Some(store) = &self.store else { return };
        for answer in store.answers() {
            self.engine.handle_history_answer(answer, Instant::now());
        }
        self.apply_effects();
    }

    /// The state file, if it is not the version last read (one stat when
    /// it is), or `force`d.
    fn read_registry(&mut self, force: bool) -> RegistryRead {
        let state = &self.engine.config().state;
        let stamp = registry::file_stamp(state);
        if !force && stamp == self.registry_stamp {
            return RegistryRead::Unchanged;
        }
        self.registry_stamp = stamp;
        match Registry::load_if_present(state) {
            Ok(Some(registry)) => RegistryRead::Loaded(registry),
            Ok(None) => {
                // Stamped as missing: one warning until the file is back.
                self.registry_stamp = None;
                RegistryRead::Missing
            }
            Err(e) => RegistryRead::Failed(e),
        }
    }

    /// On a thread, unless `last` (at shutdown): then here, after the
    /// thread of the previous save, if any, is done. A save due while the
    /// previous one is still being written is skipped.
    fn save_history(&mut self, bytes: Vec<u8>, last: bool) {
        if let Some(writer) = self
            .history_writer
            .take_if(|writer| last || writer.is_finished())
        {
            let _ = writer.join();
        }
        if self.history_writer.is_some() {
            return warn!("history: the previous save is still being written; skipped this one");
        }
        let path = self.history_path.clone();
        let write = move || match registry::write_atomically(&path, &bytes) {
            Ok(()) => debug!(
                "history saved to {} ({} bytes)",
                path.display(),
                bytes.len()
            ),
            Err(e) => warn!("history: cannot save {}: {e}", path.display()),
        };
        if last {
            write();
        } else {
            self.history_writer = Some(std::thread::spawn(write));
        }
    }

    /// Starts writing the newest alerts not yet written, unless the last
    /// write is still going (then the next tick tries again). The `last`
    /// one, at shutdown, waits for that write and is written here.
    fn write_alerts_pending(&mut self, last: bool) {
        if let Some(writer) = self
            .alerts_writer
            .take_if(|writer| last || writer.is_finished())
        {
            let _ = writer.join();
        }
        if self.alerts_writer.is_some() {
            return;
        }
        let Some(bytes) = self.alerts_pending.take() else {
            return;
        };
        let path = self.alerts_path.clone();
        let write = move || {
            if let Err(e) = registry::write_atomically(&path, &bytes) {
                warn!("alerts: cannot save {}: {e}", path.display());
            }
        };
        if last {
            write();
        } else {
            self.alerts_writer = Some(std::thread::spawn(write));
        }
    }

    fn reload_certificate(&mut self) {
        let Some((cert, key)) = &self.engine.config().tls else {
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
    /// frames to be answered, then returns.
    fn shut_down(&mut self) {
        self.engine.handle_shutdown(Instant::now());
        self.apply_effects();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && !self.io.is_empty() {
            let ready: Vec<u64> = match self.poller.wait(Duration::from_millis(100)) {
                Ok(ready) => ready.collect(),
                Err(_) => break,
            };
            for id in ready.into_iter().filter(|k| *k > STORE) {
                if let Some(Io::WebSocket(socket)) = self.io.get_mut(&id)
                    && let Err(Stop::Ended(end)) = socket.read(|_| 0)
                {
                    self.end(id, end);
                }
            }
            // Log lines only: nothing new is admitted or sent.
            for effect in self.engine.poll_effects() {
                if let Effect::Log { level, text } = effect {
                    log::log!(level, "{text}");
                }
            }
        }
        if let Some(notifier) = self.notifier.take() {
            notifier.finish(SHUTDOWN_GRACE);
        }
        if let Some(store) = self.store.take() {
            store.finish(STORE_GRACE);
        }
        info!("stopped");
    }
}

/// The connections to drive this round, each once, in the order given:
/// those the poller reported ready, then those left unfinished last round.
/// A connection can be both (its budget ran out and more data came), and
/// one that had two turns a round would push itself back twice, gaining a
/// turn every round: a flooding peer's share of the loop would grow
/// without bound.
fn one_turn_each(mut ready: Vec<ConnId>, unfinished: Vec<ConnId>) -> Vec<ConnId> {
    // The poller reports a socket once a wait: only the unfinished can
    // repeat (and mostly there are none).
    if unfinished.is_empty() {
        return ready;
    }
    let mut seen: std::collections::HashSet<ConnId> = ready.iter().copied().collect();
    for id in unfinished {
        if seen.insert(id) {
            ready.push(id);
        }
    }
    ready
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

/// Starts a relay with this configuration and serves until stopped.
pub fn run(config: Config) -> Result<(), RelayError> {
    Relay::bind(config)?.run()
}

#[cfg(test)]
mod tests {
    use super::one_turn_each;

    #[test]
    fn a_connection_both_ready_and_unfinished_gets_one_turn_a_round() {
        // Ready 7 and 9; 9 and 4 unfinished from the last round, 4 twice
        // (its budget ran out, then an effect asked for another turn).
        assert_eq!(one_turn_each(vec![7, 9], vec![9, 4, 4]), [7, 9, 4]);
        assert_eq!(one_turn_each(vec![7, 9], Vec::new()), [7, 9]);
        assert_eq!(one_turn_each(Vec::new(), vec![4, 4]), [4]);
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod layout_tests;

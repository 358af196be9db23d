//! The agent's connection to the relay: connect, stream, reconnect.
//!
//! With `--protocol vstats` the same loop reports to a vStats server: the
//! connect step ends with its `auth` exchange, samples go whole in its
//! field names ([`super::vstats_wire`]), and a WebSocket ping every 30 s,
//! as their agent sends, takes the place of our `heartbeat`.
//!
//! A single-threaded loop over one non-blocking socket and a signalfd:
//! every wait, connecting included, is a `poll` with a deadline (the connect
//! step's, the next sample, the heartbeat, the relay's silence limit) so a
//! SIGTERM is seen at once. The one exception to "no threads" is resolving
//! the relay's name: `getaddrinfo` cannot be polled, so a short-lived thread
//! does it while the loop keeps watching.

use super::backoff::Backoff;
use super::collect::{self, Collector};
use super::config::{Config, Endpoint, Protocol, RelayTarget};
use super::fit::{CAPS, Caps};
use super::lean::LeanWire;
#[cfg(feature = "vstats-compat")]
use super::vstats_wire::{self, FromServer};
use crate::protocol::{AgentMessage, Frame, Metrics, to_json};
use crate::tls::MaybeTls;
use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    self, AddressFamily, SockFlag, SockType, SockaddrStorage, getsockopt, socket, sockopt,
};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::http::{HeaderValue, header};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{HandshakeError, Message, WebSocket};

/// Send a heartbeat when nothing else went out for this long; to a vStats
/// server, a ping this often whatever else goes out, as their agent does.
pub const HEARTBEAT_AFTER: Duration = Duration::from_secs(30);
/// The relay pings every 30 s; this long without a byte means it is gone.
pub const RELAY_SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// One limit on the whole connect step (resolve, TCP, TLS, WebSocket
/// upgrade), so a relay that trickles its answer cannot stretch it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping agent waits for its close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every wait the session can give up on, named so the log says which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timeout {
    /// Resolving the relay's name.
    Resolve,
    /// The TCP connect.
    Connect,
    /// The TLS handshake of a `wss://` relay.
    TlsHandshake,
    /// The WebSocket upgrade: our request, the relay's response.
    Handshake,
    /// A vStats server's answer to our `auth` frame.
    Auth,
    /// An open connection heard nothing from the relay.
    RelaySilence,
}

/// Why a connection attempt failed, or why an open connection ended.
#[derive(Debug)]
pub enum ConnectError {
    /// The relay's name did not resolve.
    Resolve(io::Error),
    /// No address accepted a TCP connection (or the socket could not be
    /// set up).
    Connect(io::Error),
    /// The connect step ran out of time in the phase named; for an open
    /// connection, the relay fell silent ([`Timeout::RelaySilence`]).
    Timeout(Timeout),
    /// SIGTERM or SIGINT arrived during the connect step: not a fault, the
    /// agent exits.
    Stopped,
    /// The relay answered `401`: our token is unknown or revoked.
    TokenRejected,
    /// A vStats server answered our `auth` frame with an error; its message
    /// (`Invalid token`, `Server not found`).
    #[cfg(feature = "vstats-compat")]
    AuthRefused(String),
    /// A vStats server answered our `auth` frame with something that is not
    /// a frame of theirs.
    #[cfg(feature = "vstats-compat")]
    AuthGarbled,
    /// The relay's host name cannot be a TLS server name.
    ServerName(String),
    /// rustls refused to start a client connection with our configuration.
    Tls(rustls::Error),
    /// TLS or the WebSocket upgrade failed (bad certificate, not a relay, ...).
    Handshake(tungstenite::Error),
    /// The relay closed an open connection: not a fault as such.
    Closed,
    /// Reading or writing an open connection failed.
    Lost(tungstenite::Error),
    /// A frame could not be serialized (the protocol's types give serde
    /// no reason to fail; kept as an error rather than a panic).
    Encode(serde_json::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Resolve(e) => write!(f, "cannot resolve: {e}"),
            ConnectError::Connect(e) => write!(f, "cannot connect: {e}"),
            ConnectError::Timeout(which) => write!(f, "timed out: {which:?}"),
            ConnectError::Stopped => f.write_str("stopped by a signal"),
            ConnectError::TokenRejected => f.write_str("token rejected (HTTP 401)"),
            #[cfg(feature = "vstats-compat")]
            ConnectError::AuthRefused(message) => write!(f, "auth refused: {message:?}"),
            #[cfg(feature = "vstats-compat")]
            ConnectError::AuthGarbled => f.write_str("the answer to auth is not a vStats frame"),
            ConnectError::ServerName(host) => write!(f, "'{host}' is not a valid TLS name"),
            ConnectError::Tls(e) => write!(f, "handshake failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
            ConnectError::Closed => f.write_str("closed by the relay"),
            ConnectError::Lost(e) => write!(f, "{e}"),
            ConnectError::Encode(e) => write!(f, "cannot encode a frame: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Resolve(e) | ConnectError::Connect(e) => Some(e),
            ConnectError::Tls(e) => Some(e),
            ConnectError::Handshake(e) | ConnectError::Lost(e) => Some(e),
            ConnectError::Encode(e) => Some(e),
            ConnectError::Timeout(_)
            | ConnectError::Stopped
            | ConnectError::TokenRejected
            | ConnectError::ServerName(_)
            | ConnectError::Closed => None,
            #[cfg(feature = "vstats-compat")]
            ConnectError::AuthRefused(_) | ConnectError::AuthGarbled => None,
        }
    }
}

/// How a streaming connection ended.
enum End {
    /// SIGTERM or SIGINT: the close frame was sent, the agent exits.
    Stopped,
    /// The connection is gone; reconnect after a delay.
    Lost(ConnectError),
}

/// The socket under the agent's WebSocket.
pub type ClientStream = MaybeTls<ClientConnection>;

/// SIGTERM and SIGINT, blocked and delivered through a file descriptor so
/// the one `poll` of the loop sees them (no handler, no unsafe code).
pub struct Signals(SignalFd);

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals(fd))
    }

    /// A stop signal that arrived, if any; never blocks.
    fn take(&self) -> Option<i32> {
        match self.0.read_signal() {
            Ok(Some(info)) => Some(info.ssi_signo as i32),
            _ => None,
        }
    }

    /// Sleeps for `delay` unless a stop signal comes first (then `true`).
    pub fn sleep(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if self.take().is_some() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, poll_timeout(left));
        }
    }
}

fn poll_timeout(left: Duration) -> PollTimeout {
    // Round up: waking a millisecond early would spin until the deadline.
    let millis = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// Tungstenite sized for a process that sends one small frame a second:
/// its default 128 KiB read buffer alone would double the agent's RSS.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Streams to the relay until SIGTERM or SIGINT, reconnecting as needed.
pub fn run(
    config: &Config,
    relay: &RelayTarget,
    tls: Option<Arc<ClientConfig>>,
    signals: &Signals,
) {
    let mut collector = Collector::new(config.paths.clone(), config.counted_interfaces.clone());
    let mut next_sample = Instant::now() + config.interval;
    let mut backoff = Backoff::default();
    let mut rejected_before = false;
    // Lists are cut further only when a whole sample is too large; that
    // holds for the next connection too.
    let mut caps = CAPS;
    info!(
        "vstats-agent {} streaming to {} every {:?}{}",
        crate::VERSION,
        relay.endpoint,
        config.interval,
        match &relay.protocol {
            Protocol::Relay => String::new(),
            #[cfg(feature = "vstats-compat")]
            Protocol::Vstats { server_id } => format!(" as vStats server {server_id:?}"),
        }
    );
    loop {
        let delay = match connect(relay, tls.clone(), signals) {
            Ok(ws) => {
                info!("connected to {}", relay.endpoint);
                rejected_before = false;
                let now = Instant::now();
                let mut session = Session {
                    ws,
                    write_pending: false,
                    last_sent: now,
                    last_heard: now,
                    wire: Wire::new(relay, now, caps),
                    last_sample: None,
                    closed_with: None,
                };
                let end =
                    session.stream(&mut collector, &mut next_sample, config.interval, signals);
                caps = session.wire.caps().unwrap_or(caps);
                match end {
                    End::Stopped => return,
                    End::Lost(reason) => warn!("connection lost: {reason}"),
                }
                // A connection that worked starts the delays over, unless
                // the relay refused what this agent sent: that comes back
                // on every connect, and retrying each second would flood
                // both logs.
                match session
                    .closed_with
                    .filter(|code| refuses_what_was_sent(*code))
                {
                    Some(code) => warn!(
                        "the relay refused what this agent sent (close code {code}); \
                         backing off as after a failure"
                    ),
                    None => backoff.reset(),
                }
                backoff.after_failure(random())
            }
            Err(ConnectError::TokenRejected) => {
                if rejected_before {
                    debug!("token still rejected by {}", relay.endpoint);
                } else {
                    error!(
                        "token rejected by {}: check the token, or register this host with \
                         `vstats-relay server add`; retrying slowly",
                        relay.endpoint
                    );
                    rejected_before = true;
                }
                backoff.after_rejection(random())
            }
            #[cfg(feature = "vstats-compat")]
            Err(ConnectError::AuthRefused(message)) => {
                if rejected_before {
                    debug!("vStats still refuses auth: {message:?}");
                } else {
                    error!(
                        "{} refused auth: {message:?}: check --server-id and the token \
                         against the server's settings; retrying slowly",
                        relay.endpoint
                    );
                    rejected_before = true;
                }
                backoff.after_rejection(random())
            }
            Err(ConnectError::Stopped) => {
                info!("stopping");
                return;
            }
            Err(e) => {
                warn!("{}: {e}", relay.endpoint);
                backoff.after_failure(random())
            }
        };
        info!("reconnecting in {:.1} s", delay.as_secs_f64());
        if signals.sleep(delay) {
            info!("stopping");
            return;
        }
    }
}

fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness the jitter degrades to 0: still a valid delay.
    let _ = crate::tls::fill_random(&mut bytes);
    u64::from_ne_bytes(bytes)
}

/// The connect step: resolve, TCP, TLS, WebSocket upgrade, under one
/// deadline and watching for SIGTERM and SIGINT throughout. The socket it
/// returns is non-blocking.
pub fn connect(
    relay: &RelayTarget,
    tls: Option<Arc<ClientConfig>>,
    signals: &Signals,
) -> Result<WebSocket<ClientStream>, ConnectError> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let addresses = resolve(&relay.endpoint, deadline, signals)?;
    let tcp = connect_tcp(&addresses, deadline, signals)?;
    tcp.set_nodelay(true).map_err(ConnectError::Connect)?;
    #[cfg_attr(not(feature = "vstats-compat"), allow(unused_mut))]
    let mut ws = upgrade(relay, tcp, tls, deadline, signals)?;
    #[cfg(feature = "vstats-compat")]
    if let Protocol::Vstats { server_id } = &relay.protocol {
        authenticate(&mut ws, server_id, &relay.token, deadline, signals)?;
    }
    Ok(ws)
}

/// A vStats server's admission: our `auth` frame, then its answer, within
/// the connect step's deadline. Frames of other types before the answer
/// are skipped; their server sends none.
#[cfg(feature = "vstats-compat")]
fn authenticate(
    ws: &mut WebSocket<ClientStream>,
    server_id: &str,
    token: &str,
    deadline: Instant,
    signals: &Signals,
) -> Result<(), ConnectError> {
    let auth =
        vstats_wire::auth_frame(server_id, token, crate::VERSION).map_err(ConnectError::Encode)?;
    match ws.write(Message::text(auth)) {
        Ok(()) => {}
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(ConnectError::Lost(e)),
    }
    loop {
        let flushed = match ws.flush() {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => return Err(ConnectError::Lost(e)),
        };
        match ws.read() {
            Ok(Message::Text(text)) => match vstats_wire::parse_server_frame(&text) {
                Some(FromServer::AuthOk) => return Ok(()),
                Some(FromServer::AuthRefused(message)) => {
                    return Err(ConnectError::AuthRefused(message));
                }
                Some(_) => {}
                None => return Err(ConnectError::AuthGarbled),
            },
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                let events = if flushed {
                    PollFlags::POLLIN
                } else {
                    PollFlags::POLLIN | PollFlags::POLLOUT
                };
                let fd = ws.get_ref().tcp().as_fd();
                wait_for(fd, events, deadline, signals, Timeout::Auth)?;
            }
            Err(tungstenite::Error::ConnectionClosed) => return Err(ConnectError::Closed),
            Err(e) => return Err(ConnectError::Lost(e)),
        }
    }
}

/// The relay's addresses. `getaddrinfo` blocks and cannot be interrupted,
/// so a name is resolved on a short-lived thread while this one watches
/// the deadline and the signals; if the agent stops meanwhile, the process
/// exits and the thread ends with it. A literal address needs no thread.
fn resolve(
    endpoint: &Endpoint,
    deadline: Instant,
    signals: &Signals,
) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, endpoint.port)]);
    }
    let done = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(Arc::new)
        .map_err(|e| ConnectError::Resolve(e.into()))?;
    let finished = done.clone();
    let (host, port) = (endpoint.host.clone(), endpoint.port);
    let resolver = thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let addresses = (host.as_str(), port).to_socket_addrs().map(Vec::from_iter);
            // Only wakes the poll below; the addresses travel through join().
            let _ = finished.write(1);
            addresses
        })
        .map_err(ConnectError::Resolve)?;
    wait_for(
        done.as_fd(),
        PollFlags::POLLIN,
        deadline,
        signals,
        Timeout::Resolve,
    )?;
    // The thread's last act was the write: join() waits only for it to return.
    match resolver.join() {
        Ok(addresses) => addresses.map_err(ConnectError::Resolve),
        Err(_) => Err(ConnectError::Resolve(io::Error::other(
            "the resolver thread panicked",
        ))),
    }
}

/// A TCP connection to the first address that takes one, in the order the
/// resolver gave them.
fn connect_tcp(
    addresses: &[SocketAddr],
    deadline: Instant,
    signals: &Signals,
) -> Result<TcpStream, ConnectError> {
    let mut failure = ConnectError::Resolve(io::Error::new(
        io::ErrorKind::NotFound,
        "the name has no address",
    ));
    for (index, address) in addresses.iter().enumerate() {
        // An address that swallows SYNs (a broken IPv6 route, say) must not
        // use up the whole step: each gets an equal share of the time left.
        let untried = u32::try_from(addresses.len() - index).unwrap_or(u32::MAX);
        let share = deadline.saturating_duration_since(Instant::now()) / untried;
        match connect_to(*address, Instant::now() + share, signals) {
            Ok(tcp) => return Ok(tcp),
            Err(ConnectError::Stopped) => return Err(ConnectError::Stopped),
            Err(e) => {
                debug!("{address}: {e}");
                failure = e;
            }
        }
    }
    Err(failure)
}

/// One non-blocking connect: std has none (its `connect_timeout` blocks the
/// thread, deaf to signals), hence the socket calls.
fn connect_to(
    address: SocketAddr,
    deadline: Instant,
    signals: &Signals,
) -> Result<TcpStream, ConnectError> {
    let family = match address {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None)
        .map_err(|e| ConnectError::Connect(e.into()))?;
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(address)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) => {
            wait_for(
                fd.as_fd(),
                PollFlags::POLLOUT,
                deadline,
                signals,
                Timeout::Connect,
            )?;
            match getsockopt(&fd, sockopt::SocketError) {
                Ok(0) => {}
                Ok(errno) => {
                    return Err(ConnectError::Connect(io::Error::from_raw_os_error(errno)));
                }
                Err(e) => return Err(ConnectError::Connect(e.into())),
            }
        }
        Err(e) => return Err(ConnectError::Connect(e.into())),
    }
    Ok(TcpStream::from(fd))
}

/// TLS (for `wss://`) and the WebSocket upgrade on the non-blocking socket:
/// each time tungstenite's handshake meets WouldBlock it is resumed once
/// the socket is ready, until it completes, fails, or the step runs out.
fn upgrade(
    relay: &RelayTarget,
    tcp: TcpStream,
    tls: Option<Arc<ClientConfig>>,
    deadline: Instant,
    signals: &Signals,
) -> Result<WebSocket<ClientStream>, ConnectError> {
    let endpoint = &relay.endpoint;
    let stream = match tls {
        None => MaybeTls::Plain(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|_| ConnectError::ServerName(endpoint.host.clone()))?;
            // Fails only on a configuration rustls cannot use, never on input.
            let connection = ClientConnection::new(config, name).map_err(ConnectError::Tls)?;
            MaybeTls::Tls(Box::new(StreamOwned::new(connection, tcp)))
        }
    };
    let request = upgrade_request(relay)?;
    let mut attempt =
        tungstenite::client::client_with_config(request, stream, Some(websocket_config()));
    loop {
        match attempt {
            Ok((ws, _response)) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) => {
                let stream = mid.get_ref().get_ref();
                let (events, phase) = awaited(stream);
                wait_for(stream.tcp().as_fd(), events, deadline, signals, phase)?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(response)))
                if response.status() == 401 =>
            {
                return Err(ConnectError::TokenRejected);
            }
            Err(HandshakeError::Failure(e)) => return Err(ConnectError::Handshake(e)),
        }
    }
}

pub(crate) fn upgrade_request(relay: &RelayTarget) -> Result<Request, ConnectError> {
    let mut request = relay
        .request_url()
        .into_client_request()
        .map_err(ConnectError::Handshake)?;
    let headers = request.headers_mut();
    // A vStats server reads the token from the `auth` frame only.
    if relay.protocol == Protocol::Relay {
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", relay.token)) {
            // Keeps it out of a Debug print of the request.
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("vstats-agent/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(request)
}

/// What a handshake stopped at WouldBlock waits for, and the phase to
/// blame if the step runs out meanwhile.
fn awaited(stream: &ClientStream) -> (PollFlags, Timeout) {
    match stream {
        // The request, a few hundred bytes, goes into a fresh socket's send
        // buffer (kilobytes) in one write: only the response is awaited.
        MaybeTls::Plain(_) => (PollFlags::POLLIN, Timeout::Handshake),
        // rustls knows whether its records are stuck on the way out or it
        // needs the relay's next ones.
        MaybeTls::Tls(tls) => {
            let events = if tls.conn.wants_write() {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            let phase = if tls.conn.is_handshaking() {
                Timeout::TlsHandshake
            } else {
                Timeout::Handshake
            };
            (events, phase)
        }
    }
}

/// Waits until `fd` is ready for `events` (or has an error or a hang-up
/// to report, which the next read or write returns). A stop signal wins
/// over readiness, and the deadline is checked only after a last look.
fn wait_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Instant,
    signals: &Signals,
    phase: Timeout,
) -> Result<(), ConnectError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [
            PollFd::new(fd, events),
            PollFd::new(signals.0.as_fd(), PollFlags::POLLIN),
        ];
        // An error (EINTR) is no different from a spurious wake-up.
        let _ = poll(&mut fds, poll_timeout(left));
        let ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        if signals.take().is_some() {
            return Err(ConnectError::Stopped);
        }
        if ready {
            return Ok(());
        }
        if left.is_zero() {
            return Err(ConnectError::Timeout(phase));
        }
    }
}

/// What the agent sends, by the protocol of the server.
// One per connection, inside its Session: boxing the larger variant would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Wire {
    /// Our relay: a whole sample first, then patches against the relay's
    /// view of it; a `heartbeat` after 30 s of nothing else.
    Relay(LeanWire),
    /// A vStats server: every sample whole, in its field names; a ping
    /// every 30 s.
    #[cfg(feature = "vstats-compat")]
    Vstats {
        last_ping: Instant,
        /// A `command` frame was logged on this connection.
        command_seen: bool,
        /// An `error` frame was logged on this connection.
        error_seen: bool,
    },
}

impl Wire {
    /// The wire of a connection opened at `opened`;
    /// `caps`: what an earlier connection's samples were cut to.
    #[cfg_attr(not(feature = "vstats-compat"), allow(unused_variables))]
    fn new(relay: &RelayTarget, opened: Instant, caps: Caps) -> Wire {
        match relay.protocol {
            Protocol::Relay => Wire::Relay(LeanWire::new(relay.full_samples, caps)),
            #[cfg(feature = "vstats-compat")]
            Protocol::Vstats { .. } => Wire::Vstats {
                last_ping: opened,
                command_seen: false,
                error_seen: false,
            },
        }
    }

    /// The frame that carries `sample`, taken `elapsed_ms` after the one
    /// before.
    fn sample(&mut self, sample: Metrics, elapsed_ms: u64) -> serde_json::Result<String> {
        match self {
            Wire::Relay(lean) => lean.frame(sample, elapsed_ms, std::time::SystemTime::now()),
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats { .. } => {
                vstats_wire::metrics_frame(&sample, std::time::SystemTime::now(), crate::VERSION)
            }
        }
    }

    /// What samples are cut to, for the next connection to start from
    /// (`None`: this wire does not cut them).
    fn caps(&self) -> Option<Caps> {
        match self {
            Wire::Relay(lean) => Some(lean.caps()),
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats { .. } => None,
        }
    }

    /// A sample frame never left: a relay's next sample must go whole.
    fn forget(&mut self) {
        match self {
            Wire::Relay(lean) => lean.forget(),
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats { .. } => {}
        }
    }

    /// When the next keepalive is due, given when anything last went out.
    /// The relay needs one only when the connection is otherwise quiet; a
    /// vStats server never pings, so our ping every 30 s, however busy the
    /// connection, is what brings back a pong and shows that it lives.
    fn keepalive_due(&self, last_sent: Instant) -> Instant {
        match self {
            Wire::Relay(_) => last_sent + HEARTBEAT_AFTER,
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats { last_ping, .. } => *last_ping + HEARTBEAT_AFTER,
        }
    }

    /// The keepalive to send `now`.
    #[cfg_attr(not(feature = "vstats-compat"), allow(unused_variables))]
    fn keepalive(&mut self, now: Instant) -> Result<Message, ConnectError> {
        match self {
            Wire::Relay(_) => to_json(&Frame::at(
                AgentMessage::Heartbeat,
                std::time::SystemTime::now(),
            ))
            .map(Message::text)
            .map_err(ConnectError::Encode),
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats { last_ping, .. } => {
                *last_ping = now;
                Ok(Message::Ping(Default::default()))
            }
        }
    }

    /// A text frame from the server. The relay sends none an agent acts
    /// on; a vStats server's `config` (ping targets) and `command` (self
    /// update) are not for this agent, which never replaces itself.
    #[cfg_attr(not(feature = "vstats-compat"), allow(unused_variables))]
    fn heard(&mut self, text: &str) {
        match self {
            Wire::Relay(_) => {}
            #[cfg(feature = "vstats-compat")]
            Wire::Vstats {
                command_seen,
                error_seen,
                ..
            } => match vstats_wire::parse_server_frame(text) {
                Some(FromServer::Command) if !*command_seen => {
                    debug!("vStats sent a command; this agent does not update itself");
                    *command_seen = true;
                }
                Some(FromServer::Error(message)) if !*error_seen => {
                    warn!("vStats server error: {message:?}");
                    *error_seen = true;
                }
                _ => {}
            },
        }
    }
}

/// One open connection.
struct Session {
    ws: WebSocket<ClientStream>,
    /// A flush stopped at WouldBlock: wait for the socket to take more.
    write_pending: bool,
    last_sent: Instant,
    last_heard: Instant,
    wire: Wire,
    last_sample: Option<Instant>,
    /// The code of the relay's close frame, if it sent one.
    closed_with: Option<u16>,
}

/// Whether a relay's close code says it refused what the agent sent: a
/// protocol error (1002), text it could not take (1007: malformed frames),
/// a policy (1008: a token no longer valid) or a frame too large (1009).
pub fn refuses_what_was_sent(code: u16) -> bool {
    matches!(code, 1002 | 1007 | 1008 | 1009)
}

impl Session {
    /// The main loop: read, act on the clock, flush, wait.
    fn stream(
        &mut self,
        collector: &mut Collector,
        next_sample: &mut Instant,
        interval: Duration,
        signals: &Signals,
    ) -> End {
        loop {
            if let Err(reason) = self.read_incoming() {
                return End::Lost(reason);
            }
            let now = Instant::now();
            if now >= *next_sample {
                *next_sample = next_deadline(*next_sample, interval, now);
                let elapsed = self.last_sample.map_or(Duration::ZERO, |last| now - last);
                self.last_sample = Some(now);
                let elapsed_ms = collect::millis(elapsed);
                let sent = self
                    .wire
                    .sample(collector.sample(), elapsed_ms)
                    .map_err(ConnectError::Encode)
                    .and_then(|text| self.send(Message::text(text)));
                match sent {
                    Ok(true) => {}
                    // The relay never sees that patch: the next sample
                    // goes whole, or the two views would part.
                    Ok(false) => self.wire.forget(),
                    Err(reason) => return End::Lost(reason),
                }
            }
            if now >= self.wire.keepalive_due(self.last_sent) {
                if let Err(reason) = self.wire.keepalive(now).and_then(|frame| self.send(frame)) {
                    return End::Lost(reason);
                }
            }
            if now.duration_since(self.last_heard) >= RELAY_SILENCE_LIMIT {
                return End::Lost(ConnectError::Timeout(Timeout::RelaySilence));
            }
            if let Err(reason) = self.flush() {
                return End::Lost(reason);
            }
            let wake = (*next_sample)
                .min(self.wire.keepalive_due(self.last_sent))
                .min(self.last_heard + RELAY_SILENCE_LIMIT);
            if self.wait(signals, wake.saturating_duration_since(Instant::now())) {
                self.close();
                return End::Stopped;
            }
        }
    }

    /// Reads until WouldBlock. Pings are answered by tungstenite, which
    /// queues the pong for the next flush.
    fn read_incoming(&mut self) -> Result<(), ConnectError> {
        loop {
            match self.ws.read() {
                Ok(message) => {
                    self.last_heard = Instant::now();
                    match &message {
                        Message::Text(text) => self.wire.heard(text),
                        Message::Close(Some(frame)) => {
                            info!(
                                "relay closes the connection: {} {}",
                                frame.code, frame.reason
                            );
                            self.closed_with = Some(u16::from(frame.code));
                        }
                        _ => {}
                    }
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(tungstenite::Error::ConnectionClosed) => return Err(ConnectError::Closed),
                Err(e) => return Err(ConnectError::Lost(e)),
            }
        }
    }

    /// Queues one frame; `false` when it was dropped: a relay too slow to
    /// take it loses it rather than growing our memory, and the silence
    /// limit ends a dead one.
    fn send(&mut self, frame: Message) -> Result<bool, ConnectError> {
        match self.ws.write(frame) {
            Ok(()) => {
                self.last_sent = Instant::now();
                self.write_pending = true;
                Ok(true)
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                debug!("relay is not reading; frame dropped");
                Ok(false)
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.last_sent = Instant::now();
                self.write_pending = true;
                Ok(true)
            }
            Err(e) => Err(ConnectError::Lost(e)),
        }
    }

    /// Pushes queued bytes (frames, pongs) to the socket; WouldBlock leaves
    /// them queued and makes the next wait watch for writability.
    fn flush(&mut self) -> Result<(), ConnectError> {
        match self.ws.flush() {
            Ok(()) => {
                self.write_pending = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_pending = true;
                Ok(())
            }
            Err(tungstenite::Error::ConnectionClosed) => Err(ConnectError::Closed),
            Err(e) => Err(ConnectError::Lost(e)),
        }
    }

    /// Waits for the socket, a signal or the timeout; `true` on a stop signal.
    fn wait(&self, signals: &Signals, timeout: Duration) -> bool {
        let mut events = PollFlags::POLLIN;
        if self.write_pending {
            events |= PollFlags::POLLOUT;
        }
        let mut fds = [
            PollFd::new(self.ws.get_ref().tcp().as_fd(), events),
            PollFd::new(signals.0.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, poll_timeout(timeout));
        signals.take().is_some()
    }

    /// Says goodbye with 1001 (going away), waiting briefly for it to leave.
    fn close(&mut self) {
        info!("stopping: closing the connection");
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "agent stopping".into(),
        };
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut result = self.ws.close(Some(frame));
        while Instant::now() < deadline {
            match result {
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Sent; the relay's echo or the end of the stream follows.
                Ok(()) => {}
                Err(_) => return,
            }
            let mut fds = [PollFd::new(
                self.ws.get_ref().tcp().as_fd(),
                PollFlags::POLLIN | PollFlags::POLLOUT,
            )];
            let _ = poll(&mut fds, poll_timeout(Duration::from_millis(100)));
            result = self.ws.read().map(drop);
        }
    }
}

/// The sample after the one due at `due`: one interval later, so a slow
/// sample does not push the schedule back; after a stall longer than an
/// interval (suspend, a long connect) the schedule restarts from `now`.
pub fn next_deadline(due: Instant, interval: Duration, now: Instant) -> Instant {
    let next = due + interval;
    if next <= now { now + interval } else { next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_does_not_drift() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        // The sample due at 0 was taken 300 ms late: the next is still at 1 s.
        let next = next_deadline(start, second, start + Duration::from_millis(300));
        assert_eq!(next, start + second);
        // A stall of 3.5 s skips the missed samples instead of bursting them.
        let now = start + Duration::from_millis(3500);
        assert_eq!(next_deadline(start, second, now), now + second);
    }

    #[test]
    fn connection_ends_keep_their_wording_and_cause() {
        use std::error::Error as _;
        assert_eq!(ConnectError::Closed.to_string(), "closed by the relay");
        assert!(ConnectError::Closed.source().is_none());
        let silent = ConnectError::Timeout(Timeout::RelaySilence);
        assert_eq!(silent.to_string(), "timed out: RelaySilence");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let lost = ConnectError::Lost(tungstenite::Error::Io(reset));
        let source = lost.source().expect("tungstenite's error");
        assert!(source.is::<tungstenite::Error>(), "{source:?}");
        assert_eq!(lost.to_string(), source.to_string());
    }

    // A vStats server never pings: without our ping every 30 s, even
    // while samples flow, nothing would come back and the silence limit
    // would drop a healthy connection every 75 s.
    #[cfg(feature = "vstats-compat")]
    #[test]
    fn a_vstats_server_gets_a_ping_every_30_s_however_busy() {
        let opened = Instant::now();
        let just_now = opened + Duration::from_secs(29);
        let mut relay = Wire::Relay(LeanWire::default());
        assert_eq!(relay.keepalive_due(just_now), just_now + HEARTBEAT_AFTER);
        let Ok(Message::Text(heartbeat)) = relay.keepalive(just_now) else {
            panic!("the relay gets a heartbeat frame");
        };
        assert!(heartbeat.contains(r#""type":"heartbeat""#), "{heartbeat}");
        let mut vstats = Wire::Vstats {
            last_ping: opened,
            command_seen: false,
            error_seen: false,
        };
        let due = vstats.keepalive_due(just_now);
        assert_eq!(due, opened + HEARTBEAT_AFTER);
        assert!(matches!(vstats.keepalive(due), Ok(Message::Ping(payload)) if payload.is_empty()));
        assert_eq!(vstats.keepalive_due(due), due + HEARTBEAT_AFTER);
        assert!(HEARTBEAT_AFTER * 2 < RELAY_SILENCE_LIMIT);
    }

    #[cfg(feature = "vstats-compat")]
    #[test]
    fn vstats_config_and_command_frames_change_nothing() {
        let mut wire = Wire::Vstats {
            last_ping: Instant::now(),
            command_seen: false,
            error_seen: false,
        };
        wire.heard(r#"{"type":"config","ping_targets":[{"name":"a","host":"b"}]}"#);
        assert!(matches!(
            wire,
            Wire::Vstats {
                command_seen: false,
                error_seen: false,
                ..
            }
        ));
        for _ in 0..3 {
            wire.heard(r#"{"type":"command","command":"update","force":true}"#);
        }
        assert!(matches!(
            wire,
            Wire::Vstats {
                command_seen: true,
                ..
            }
        ));
    }

    #[test]
    fn only_a_close_for_what_the_agent_sent_keeps_the_backoff() {
        for code in [1002, 1007, 1008, 1009] {
            assert!(refuses_what_was_sent(code), "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 1012, 1013] {
            assert!(!refuses_what_was_sent(code), "{code}");
        }
    }

    #[test]
    fn poll_timeouts_round_up() {
        assert_eq!(i32::from(poll_timeout(Duration::from_micros(1))), 1);
        assert_eq!(i32::from(poll_timeout(Duration::ZERO)), 0);
        assert_eq!(
            i32::from(poll_timeout(Duration::from_secs(1 << 40))),
            i32::MAX
        );
    }
}

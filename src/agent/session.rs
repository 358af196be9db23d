//! The agent's connection to the relay: connect, stream, reconnect.
//!
//! Blocking set-up, then a single-threaded loop over one non-blocking socket
//! and a signalfd: nothing runs in the background, and every wait is a
//! `poll` with a deadline (the next sample, the heartbeat, the relay's
//! silence limit) so a SIGTERM is seen at once.

use super::backoff::Backoff;
use super::collect::Collector;
use super::config::{Config, Relay};
use crate::protocol::{AgentMessage, Frame};
use crate::tls::MaybeTls;
use log::{debug, error, info, warn};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::{HeaderValue, header};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{HandshakeError, Message, WebSocket};

/// Send a heartbeat when nothing else went out for this long.
pub const HEARTBEAT_AFTER: Duration = Duration::from_secs(30);
/// The relay pings every 30 s; this long without a byte means it is gone.
pub const RELAY_SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// Limit on the TCP connect and on the TLS + WebSocket handshake each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping agent waits for its close frame to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every wait the session can give up on, named so the log says which.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Timeout {
    Connect,
    Handshake,
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
    /// A phase took longer than its limit; for an open connection, the
    /// relay fell silent ([`Timeout::RelaySilence`]).
    Timeout(Timeout),
    /// The relay answered `401`: our token is unknown or revoked.
    TokenRejected,
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
            ConnectError::TokenRejected => f.write_str("token rejected (HTTP 401)"),
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
            | ConnectError::TokenRejected
            | ConnectError::ServerName(_)
            | ConnectError::Closed => None,
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
pub type Stream = MaybeTls<ClientConnection>;

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
pub fn run(config: &Config, relay: &Relay, tls: Option<Arc<ClientConfig>>, signals: &Signals) {
    let mut collector = Collector::new(config.paths.clone(), config.counted_interfaces.clone());
    let mut next_sample = Instant::now() + config.interval;
    let mut backoff = Backoff::default();
    let mut rejected_before = false;
    info!(
        "vstats-agent {} streaming to {} every {:?}",
        crate::VERSION,
        relay.endpoint,
        config.interval
    );
    loop {
        let delay = match connect(relay, tls.clone()) {
            Ok(ws) => {
                info!("connected to {}", relay.endpoint);
                backoff.reset();
                rejected_before = false;
                let mut session = Session {
                    ws,
                    write_pending: false,
                    last_sent: Instant::now(),
                    last_heard: Instant::now(),
                };
                match session.stream(&mut collector, &mut next_sample, config.interval, signals) {
                    End::Stopped => return,
                    End::Lost(reason) => warn!("connection lost: {reason}"),
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

/// TCP connect, TLS, WebSocket upgrade: blocking, each phase time-limited.
pub fn connect(
    relay: &Relay,
    tls: Option<Arc<ClientConfig>>,
) -> Result<WebSocket<Stream>, ConnectError> {
    let endpoint = &relay.endpoint;
    let addresses = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(ConnectError::Resolve)?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut tcp = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let tcp = tcp.ok_or_else(|| match last_error.kind() {
        io::ErrorKind::TimedOut => ConnectError::Timeout(Timeout::Connect),
        _ => ConnectError::Connect(last_error),
    })?;
    tcp.set_nodelay(true).map_err(ConnectError::Connect)?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(ConnectError::Connect)?;
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT))
        .map_err(ConnectError::Connect)?;

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

    let mut request = endpoint
        .url_with_token(&relay.token)
        .into_client_request()
        .map_err(ConnectError::Handshake)?;
    let headers = request.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", relay.token)) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("vstats-agent/", env!("CARGO_PKG_VERSION"))),
    );

    let (ws, _response) =
        tungstenite::client::client_with_config(request, stream, Some(websocket_config()))
            .map_err(|e| match e {
                // A read or write timeout surfaces as WouldBlock, i.e. Interrupted.
                HandshakeError::Interrupted(_) => ConnectError::Timeout(Timeout::Handshake),
                HandshakeError::Failure(tungstenite::Error::Http(response))
                    if response.status() == 401 =>
                {
                    ConnectError::TokenRejected
                }
                HandshakeError::Failure(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    ConnectError::Timeout(Timeout::Handshake)
                }
                HandshakeError::Failure(e) => ConnectError::Handshake(e),
            })?;
    let tcp = ws.get_ref().tcp();
    tcp.set_read_timeout(None).map_err(ConnectError::Connect)?;
    tcp.set_write_timeout(None).map_err(ConnectError::Connect)?;
    tcp.set_nonblocking(true).map_err(ConnectError::Connect)?;
    Ok(ws)
}

/// One open connection.
struct Session {
    ws: WebSocket<Stream>,
    /// A flush stopped at WouldBlock: wait for the socket to take more.
    write_pending: bool,
    last_sent: Instant,
    last_heard: Instant,
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
                let frame = Frame::now(AgentMessage::Metrics(Box::new(collector.sample())));
                if let Err(reason) = self.send(&frame) {
                    return End::Lost(reason);
                }
            }
            if now.duration_since(self.last_sent) >= HEARTBEAT_AFTER {
                if let Err(reason) = self.send(&Frame::now(AgentMessage::Heartbeat)) {
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
                .min(self.last_sent + HEARTBEAT_AFTER)
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
                    if let Message::Close(Some(frame)) = &message {
                        info!(
                            "relay closes the connection: {} {}",
                            frame.code, frame.reason
                        );
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

    /// Queues one frame. A relay too slow to take it loses this sample
    /// rather than growing our memory; the silence limit ends a dead one.
    fn send<M: serde::Serialize>(&mut self, frame: &Frame<M>) -> Result<(), ConnectError> {
        let text = serde_json::to_string(frame).map_err(ConnectError::Encode)?;
        match self.ws.write(Message::text(text)) {
            Ok(()) => {
                self.last_sent = Instant::now();
                self.write_pending = true;
                Ok(())
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                debug!("relay is not reading; sample dropped");
                Ok(())
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.last_sent = Instant::now();
                self.write_pending = true;
                Ok(())
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

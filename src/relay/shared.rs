//! What the shell, `conn` and the engine share: the words they speak to
//! each other in. Nothing here does I/O or reads a clock; every other
//! relay module may import it, and it imports none of them but the pure
//! `notice` (for the delivery counters' shape).

use super::notice::Deliveries;
use std::io;
use std::time::{Instant, SystemTime};

/// A connection, as the event loop numbers them (never reused).
pub type ConnId = u64;

/// Largest agent or dashboard frame accepted (larger: close 1009).
pub const MAX_FRAME: usize = 64 * 1024;

/// A frame (or control frame) read from a WebSocket.
#[derive(Debug)]
pub enum Inbound<'a> {
    Text(&'a str),
    Binary,
    /// Ping or pong: the peer is alive.
    Control,
    /// The peer's close frame, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the peer's bytes could not be read as WebSocket frames.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    TooLarge,
    NotUtf8,
    /// Unmasked frame, reserved bits, bad opcode ...
    Protocol(String),
}

/// How a socket ended, as the event loop saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SocketEnd {
    /// The close handshake finished, or the stream ended.
    Closed,
    Io(io::ErrorKind),
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
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
    /// Dashboards closed (1013) for not keeping up.
    pub slow_dashboards: u64,
    /// Frames of vStats agents read and dropped, by type.
    pub compat_ignored: CompatIgnored,
    /// Notification deliveries by result, as the shell last told the
    /// engine (the delivery threads count them).
    pub notifications: Deliveries,
    /// What the history database did, as the shell last told the engine
    /// (its threads count it).
    pub store: StoreCounts,
}

/// The history database's work, counted by its threads (`store.rs`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StoreCounts {
    pub rows_written: u64,
    /// Minutes dropped, oldest first, because the queue was full (the
    /// disk full or too slow for longer than the queue holds).
    pub rows_dropped: u64,
    /// Rows waiting in the queue now.
    pub rows_queued: u64,
    /// Batches that failed and wait to be tried again.
    pub write_errors: u64,
    pub queries: u64,
    /// The database file's size, as of the last write.
    pub bytes: u64,
}

/// vStats agents' frames that the relay reads and drops: their own
/// aggregation and their offline buffer, which our history replaces.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CompatIgnored {
    pub aggregated_metrics: u64,
    pub batch_metrics: u64,
}

/// Where the engine gets the wall-clock time of an input, given the
/// monotonic time the input came with. The shell's reads the system clock
/// (which may be stepped: NTP on a Pi without a battery); a test's derives
/// it from the fake monotonic clock, so one fake clock moves both, as
/// rustls' `TimeProvider` and quinn's `TimeSource` are injected.
pub trait WallClock {
    fn wall(&self, now: Instant) -> SystemTime;
}

/// Whole seconds since 1970 (0 before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

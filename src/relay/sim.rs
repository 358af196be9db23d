//! An in-memory shell for the engine: what the event loop does for it,
//! with no socket, no thread and no real clock. The engine's tests and the
//! fuzz harness (`crate::fuzzing`) both drive the engine through it, so an
//! input takes the same path every time it runs.
//!
//! Built for tests and fuzzing only (`cfg(test)`, cargo-fuzz's
//! `cfg(fuzzing)`, or the `fuzzing` feature that the integration tests
//! turn on): never part of a release binary.

use super::config::{self, Config};
use super::engine::{Admission, Engine};
use super::http::{Head, Request};
use super::registry::Registry;
use super::shared::{ConnId, WallClock};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use tungstenite::Utf8Bytes;

/// The wall-clock time a fake clock starts at: 2027-01-15 08:00:01 UTC,
/// one second into a step of every history tier, so that a test's
/// milliseconds do not cross a step unless it moves the clock on purpose.
pub fn wall_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001)
}

/// A wall clock that follows the fake monotonic one: [`wall_start`] at
/// `start`, and as much later as the monotonic time given is.
pub struct FakeClock {
    start: Instant,
}

impl FakeClock {
    pub fn new(start: Instant) -> FakeClock {
        FakeClock { start }
    }
}

impl WallClock for FakeClock {
    fn wall(&self, now: Instant) -> SystemTime {
        wall_start() + now.saturating_duration_since(self.start)
    }
}

/// The relay's configuration from these flags (no environment).
pub fn config(args: &[&str]) -> Config {
    let parsed = config::parse(args.iter().map(Into::into).collect(), |_| None);
    match parsed {
        Ok(config::Command::Serve(config)) => config,
        other => panic!("relay flags {args:?}: {other:?}"),
    }
}

/// An engine on a plain-text port whose clocks start at `start`.
pub fn engine(
    config: Config,
    registry: Registry,
    max_connections: usize,
    start: Instant,
) -> Engine {
    let clock = Box::new(FakeClock::new(start));
    Engine::new(config, false, max_connections, registry, start, clock)
}

/// Accepts connection `id` from `peer` and hands the engine its request
/// head, as the loop does once the head is read. Panics if the
/// connection is refused.
pub fn open(engine: &mut Engine, id: ConnId, peer: SocketAddr, head: Box<Head>, now: Instant) {
    assert_eq!(engine.handle_accept(id, peer, now), Admission::Admit);
    engine.handle_request(id, Request::Complete(head), now);
}

/// Takes every message waiting for dashboard `id`, as a reader that
/// keeps up would, and tells the engine they went out. Empty for a
/// connection with no outbox (not a dashboard, or closing).
pub fn drain(engine: &mut Engine, id: ConnId, now: Instant) -> Vec<Utf8Bytes> {
    let Some(outbox) = engine.dashboard_outbox(id) else {
        return Vec::new();
    };
    let messages: Vec<Utf8Bytes> = std::iter::from_fn(|| outbox.pop()).collect();
    let bytes = messages.iter().map(|m| m.len() as u64).sum();
    engine.handle_pumped(id, messages.len() as u64, bytes, false, now);
    messages
}

//! Whether a server is online, and which connection speaks for it.
//!
//! The rule lives here and nowhere else: a server is online when an agent
//! connection is in charge of it and was heard within the agent timeout.
//! The engine tells a server's [`Presence`] what happened (an agent
//! admitted, heard, lost, its token revoked, the timeout checked) and
//! learns whether that changed the server's status, which it then
//! broadcasts. The fields are private so that no other code can make
//! `online` disagree with `agent`.

use super::shared::ConnId;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Default)]
pub struct Presence {
    /// The agent connection in charge of the server.
    agent: Option<ConnId>,
    online: bool,
    /// When the agent in charge last sent any frame (for the timeout).
    last_frame: Option<Instant>,
    /// The same, on the wall clock, for `/api/servers` and `last_seen`.
    last_seen: Option<SystemTime>,
}

/// What admitting an agent changed.
#[derive(Debug, PartialEq)]
pub struct Admitted {
    /// The connection that spoke for the server until now: it must be
    /// closed (a device that rebooted and came back before its old socket
    /// died).
    pub replaced: Option<ConnId>,
    pub came_online: bool,
}

impl Presence {
    pub fn online(&self) -> bool {
        self.online
    }

    /// The agent connection in charge, if any.
    pub fn agent(&self) -> Option<ConnId> {
        self.agent
    }

    /// Whether `id` is the connection in charge: what any other sends
    /// (one replaced, or closing) is not the server's state.
    pub fn speaks(&self, id: ConnId) -> bool {
        self.agent == Some(id)
    }

    pub fn last_seen(&self) -> Option<SystemTime> {
        self.last_seen
    }

    /// An agent connection admitted for the server: in charge from now,
    /// and heard now.
    pub fn admitted(&mut self, id: ConnId, now: Instant, wall: SystemTime) -> Admitted {
        let replaced = self.agent.replace(id);
        self.last_frame = Some(now);
        self.last_seen = Some(wall);
        let came_online = !std::mem::replace(&mut self.online, true);
        Admitted {
            replaced: replaced.filter(|&old| old != id),
            came_online,
        }
    }

    /// A frame (or pong) from the connection in charge. Returns whether
    /// that brought the server back online (after the timeout took it
    /// offline with the socket still open).
    pub fn heard(&mut self, now: Instant, wall: SystemTime) -> bool {
        if self.agent.is_none() {
            return false;
        }
        self.last_frame = Some(now);
        self.last_seen = Some(wall);
        !std::mem::replace(&mut self.online, true)
    }

    /// Connection `id` ended. Returns whether the server went offline: only
    /// if it was in charge (a replaced one leaves its successor in charge).
    pub fn lost(&mut self, id: ConnId) -> bool {
        if self.agent != Some(id) {
            return false;
        }
        self.agent = None;
        std::mem::replace(&mut self.online, false)
    }

    /// The agent loses its say at once (its token was rotated): the
    /// connection to close, and whether the server was online.
    pub fn revoked(&mut self) -> Option<(ConnId, bool)> {
        let agent = self.agent.take()?;
        Some((agent, std::mem::replace(&mut self.online, false)))
    }

    /// Offline if nothing was heard for `timeout` (the socket stays: a
    /// frame brings it back). Returns whether it went offline now.
    pub fn expired(&mut self, now: Instant, timeout: Duration) -> bool {
        let stale = self
            .last_frame
            .is_none_or(|at| now.saturating_duration_since(at) >= timeout);
        let went_offline = self.online && stale;
        self.online &= !went_offline;
        went_offline
    }

    /// When [`Presence::expired`] would take the server offline, if it is
    /// online: the time its timer must be checked.
    pub fn expires_at(&self, timeout: Duration) -> Option<Instant> {
        match self.last_frame {
            Some(at) if self.online => Some(at + timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn clock() -> (Instant, SystemTime) {
        (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
    }

    #[test]
    fn an_admitted_agent_is_in_charge_and_online() {
        let (t0, wall) = clock();
        let mut presence = Presence::default();
        assert!(!presence.online());
        let admitted = presence.admitted(7, t0, wall);
        assert_eq!(
            admitted,
            Admitted {
                replaced: None,
                came_online: true
            }
        );
        assert!(presence.online() && presence.speaks(7));
        assert_eq!(presence.last_seen(), Some(wall));
    }

    #[test]
    fn a_newer_connection_replaces_the_old_which_then_changes_nothing() {
        let (t0, wall) = clock();
        let mut presence = Presence::default();
        presence.admitted(7, t0, wall);
        let admitted = presence.admitted(8, t0, wall);
        assert_eq!(admitted.replaced, Some(7));
        assert!(!admitted.came_online);
        // The old socket's end leaves the new one in charge.
        assert!(!presence.lost(7));
        assert!(presence.online() && presence.speaks(8));
        assert!(presence.lost(8));
        assert!(!presence.online() && presence.agent().is_none());
    }

    #[test]
    fn silence_past_the_timeout_goes_offline_and_a_frame_comes_back() {
        let (t0, wall) = clock();
        let mut presence = Presence::default();
        presence.admitted(7, t0, wall);
        assert_eq!(presence.expires_at(TIMEOUT), Some(t0 + TIMEOUT));
        assert!(!presence.expired(t0 + TIMEOUT - Duration::from_millis(1), TIMEOUT));
        assert!(presence.expired(t0 + TIMEOUT, TIMEOUT));
        // Once: the next check changes nothing.
        assert!(!presence.expired(t0 + TIMEOUT * 2, TIMEOUT));
        assert_eq!(presence.expires_at(TIMEOUT), None);
        let later = wall + Duration::from_secs(40);
        assert!(presence.heard(t0 + Duration::from_secs(40), later));
        assert!(presence.online() && presence.speaks(7));
        assert_eq!(presence.last_seen(), Some(later));
    }

    #[test]
    fn without_an_agent_in_charge_nothing_brings_a_server_online() {
        let (t0, wall) = clock();
        let mut presence = Presence::default();
        assert!(!presence.heard(t0, wall));
        presence.admitted(7, t0, wall);
        assert_eq!(presence.revoked(), Some((7, true)));
        assert!(!presence.heard(t0, wall));
        assert!(!presence.online() && presence.agent().is_none());
        assert_eq!(presence.revoked(), None);
        assert!(!presence.lost(7));
    }
}

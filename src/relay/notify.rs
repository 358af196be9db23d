//! Notifications: webhooks POSTed when a server goes offline, comes back,
//! or holds a threshold (see [`super::alerts`], which decides when).
//!
//! Delivery runs on threads of its own, one per URL, each with a bounded
//! queue, so a webhook that is slow, unreachable or never answers costs the
//! event loop one mutex push and nothing more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// What happened, as the `event` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Offline,
    Online,
    Threshold,
    /// `vstats-relay notify test`.
    Test,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Offline => "offline",
            Event::Online => "online",
            Event::Threshold => "threshold",
            Event::Test => "test",
        }
    }
}

/// One notification, before it is shaped into a body for a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: Event,
    pub server_id: String,
    pub server_name: String,
    pub server_location: String,
    pub at: SystemTime,
    /// A sentence for people.
    pub message: String,
    /// Threshold events: the rule as written (`disk>=90 for 5m`), the value
    /// that crossed it, and whether it stopped holding.
    pub rule: Option<String>,
    pub value: Option<f64>,
    pub resolved: bool,
}

/// Deliveries by outcome, for `vstats_relay_notifications_total{result}`;
/// shared by the delivery threads and the loop that renders `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    pub sent: AtomicU64,
    /// Refused for good (a 4xx), or still failing after the retries.
    pub failed: AtomicU64,
    /// Pushed out of a full queue, oldest first.
    pub dropped: AtomicU64,
}

/// The counts of [`NotifyCounters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deliveries {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
}

impl NotifyCounters {
    pub fn snapshot(&self) -> Deliveries {
        Deliveries {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

//! What waits to be sent to one dashboard.
//!
//! Events (`hello`, `status`, `server_added`, `server_removed`) are kept in
//! order and never dropped; past a byte limit ([`Outbox::over_limit`]) the
//! dashboard is too slow and is closed (1013). For a dashboard whose socket
//! took everything at the last write ([`Outbox::wrote`]), `metrics`
//! samples queue whole, each in turn: two samples of one server read in the
//! same turn of the loop (after a stall, or coalesced by TCP) both reach a
//! reader that keeps up. Otherwise a sample for a server that already has
//! one waiting replaces it in place: a slow reader gets the newest sample
//! of each server at the position of the first one it missed, so memory
//! per dashboard is bounded by the number of servers (plus what one turn
//! read while it kept up), and the bytes themselves are shared with every
//! other dashboard.

use std::collections::{HashMap, VecDeque};
use tungstenite::Utf8Bytes;

/// The server a sample belongs to, as the relay numbers them.
pub type Slot = u32;

enum Entry {
    Event(Utf8Bytes),
    /// A sample queued whole, for a reader that kept up: never replaced.
    Sample(Utf8Bytes),
    /// The sample waiting in `samples` for this server, if any.
    Metrics(Slot),
}

pub struct Outbox {
    queue: VecDeque<Entry>,
    samples: HashMap<Slot, Utf8Bytes>,
    event_bytes: usize,
    event_limit: usize,
    /// The socket took everything at the last write: samples queue whole.
    /// A new dashboard has not shown that yet.
    keeping_up: bool,
}

impl Outbox {
    pub fn new(event_limit: usize) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            samples: HashMap::new(),
            event_bytes: 0,
            event_limit,
            keeping_up: false,
        }
    }

    /// After a write to the socket: `took_everything` when nothing is left
    /// waiting here or held by the socket. Until the next write, samples
    /// queue whole if so, and replace the one waiting otherwise.
    pub fn wrote(&mut self, took_everything: bool) {
        self.keeping_up = took_everything;
    }

    /// Queues an event. It is taken even past the limit: whether the
    /// socket drains it at once decides if the reader is too slow.
    pub fn push_event(&mut self, message: Utf8Bytes) {
        self.event_bytes += message.len();
        self.queue.push_back(Entry::Event(message));
    }

    /// The events waiting exceed the limit.
    pub fn over_limit(&self) -> bool {
        self.event_bytes > self.event_limit
    }

    /// Queues a sample; `true` when it replaced one not yet sent.
    pub fn push_metrics(&mut self, slot: Slot, message: Utf8Bytes) -> bool {
        if self.keeping_up {
            self.queue.push_back(Entry::Sample(message));
            return false;
        }
        match self.samples.insert(slot, message) {
            Some(_) => true,
            None => {
                self.queue.push_back(Entry::Metrics(slot));
                false
            }
        }
    }

    /// Drops the waiting sample of a server that went away.
    pub fn forget(&mut self, slot: Slot) {
        // Its queue entry stays and is skipped when reached.
        self.samples.remove(&slot);
    }

    pub fn pop(&mut self) -> Option<Utf8Bytes> {
        while let Some(entry) = self.queue.pop_front() {
            match entry {
                Entry::Event(message) => {
                    self.event_bytes -= message.len();
                    return Some(message);
                }
                Entry::Sample(message) => return Some(message),
                Entry::Metrics(slot) => {
                    if let Some(message) = self.samples.remove(&slot) {
                        return Some(message);
                    }
                }
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.pop())
            .map(|m| m.to_string())
            .collect()
    }

    #[test]
    fn events_keep_their_order_and_samples_conflate_in_place() {
        let mut outbox = Outbox::new(1024);
        outbox.push_event("hello".into());
        assert!(!outbox.push_metrics(1, "a1".into()));
        outbox.push_event("status".into());
        assert!(!outbox.push_metrics(2, "b1".into()));
        assert!(outbox.push_metrics(1, "a2".into()));
        assert!(outbox.push_metrics(1, "a3".into()));
        assert_eq!(drain(&mut outbox), ["hello", "a3", "status", "b1"]);
        assert!(outbox.is_empty());
        // Once sent, a new sample queues again.
        assert!(!outbox.push_metrics(1, "a4".into()));
        assert_eq!(drain(&mut outbox), ["a4"]);
    }

    #[test]
    fn samples_queue_whole_for_a_reader_that_took_everything() {
        let mut outbox = Outbox::new(1024);
        outbox.wrote(true);
        assert!(!outbox.push_metrics(1, "a1".into()));
        assert!(!outbox.push_metrics(1, "a2".into()));
        outbox.wrote(false);
        // Behind now: the next sample replaces only one waiting in place.
        assert!(!outbox.push_metrics(1, "a3".into()));
        assert!(outbox.push_metrics(1, "a4".into()));
        assert_eq!(drain(&mut outbox), ["a1", "a2", "a4"]);
    }

    #[test]
    fn events_past_the_limit_overflow_until_sent() {
        let mut outbox = Outbox::new(10);
        outbox.push_event("12345".into());
        outbox.push_event("12345".into());
        assert!(!outbox.over_limit());
        outbox.push_event("1".into());
        assert!(outbox.over_limit());
        outbox.pop();
        assert!(!outbox.over_limit());
    }

    #[test]
    fn samples_do_not_grow_memory_of_a_reader_that_never_reads() {
        let mut outbox = Outbox::new(1024);
        for round in 0..1000 {
            for slot in 0..10 {
                outbox.push_metrics(slot, format!("{slot}:{round}").into());
            }
        }
        assert_eq!(outbox.queue.len(), 10);
        assert_eq!(drain(&mut outbox)[3], "3:999");
    }

    #[test]
    fn a_forgotten_server_sends_nothing_and_may_come_back() {
        let mut outbox = Outbox::new(1024);
        outbox.push_metrics(7, "old".into());
        outbox.forget(7);
        outbox.push_event("removed".into());
        assert_eq!(drain(&mut outbox), ["removed"]);
        outbox.push_metrics(7, "x".into());
        outbox.forget(7);
        outbox.push_metrics(7, "new".into());
        assert_eq!(drain(&mut outbox), ["new"]);
    }
}

//! The engine's reminders: when to look at a connection or a server next.
//!
//! Each connection and server keeps its own deadlines (its silence limit,
//! its next ping, its agent timeout...). Rather than sweeping all of them
//! on a fixed tick, the engine keeps one reminder per connection or
//! server, at the earliest of its deadlines, in a heap. Reminders are
//! lazy: a deadline that moves later (a frame heard, a pong) leaves its
//! reminder where it was, and when that comes the owner looks, finds
//! nothing due, and sets the next one. Only a deadline that moves earlier
//! (a close frame queued, a dashboard stalled) needs a new reminder.
//!
//! [`round_up`] puts the loop's wake-ups on a grid, so that thousands of
//! connections' timers spread over a second cost one wake-up, not one
//! each: a timer fires up to a second late, never early.

use super::outbox::Slot;
use super::shared::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a reminder is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// A connection: its head, response, silence, close, stall, ping or
    /// auth deadline.
    Conn(ConnId),
    /// A server, by its slot: its agent timeout or its offline notice.
    Server(Slot),
}

/// Reminders in the order they come due.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Due)>>,
}

impl Timers {
    pub fn set(&mut self, at: Instant, due: Due) {
        self.heap.push(Reverse((at, due)));
    }

    /// The earliest reminder, which may be stale.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// How many reminders are kept, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the reminders `live` says are stale: a connection gone, or
    /// one whose reminder was moved earlier. Otherwise they would stay
    /// until their time, and a peer opening and closing connections fast
    /// would fill the heap with ten seconds' worth of them.
    pub fn retain(&mut self, mut live: impl FnMut(Instant, Due) -> bool) {
        self.heap.retain(|Reverse((at, due))| live(*at, *due));
    }

    /// Takes the reminders due by `now`, earliest first, each with the
    /// time it was set for (for its owner to tell a stale one).
    pub fn take_due(&mut self, now: Instant) -> Vec<(Instant, Due)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek()
            && *at <= now
        {
            if let Some(Reverse(reminder)) = self.heap.pop() {
                due.push(reminder);
            }
        }
        due
    }
}

/// `at`, moved later to the next point of the grid that starts at
/// `origin` and has a point every second (counted without 128-bit
/// division, which costs a 32-bit target code of its own).
pub fn round_up(at: Instant, origin: Instant) -> Instant {
    let Some(since) = at.checked_duration_since(origin) else {
        return at;
    };
    let seconds = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    origin + Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminders_come_out_in_time_order_and_only_once_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(t0 + Duration::from_secs(30), Due::Conn(7));
        timers.set(t0 + Duration::from_secs(5), Due::Server(2));
        timers.set(t0 + Duration::from_secs(10), Due::Conn(3));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(timers.take_due(t0 + Duration::from_secs(4)), []);
        assert_eq!(
            timers.take_due(t0 + Duration::from_secs(10)),
            [
                (t0 + Duration::from_secs(5), Due::Server(2)),
                (t0 + Duration::from_secs(10), Due::Conn(3))
            ]
        );
        assert_eq!(timers.take_due(t0 + Duration::from_secs(60)).len(), 1);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn wake_ups_are_rounded_up_to_the_grid_never_down() {
        let t0 = Instant::now();
        let ms = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(round_up(ms(0), t0), ms(0));
        assert_eq!(round_up(ms(1), t0), ms(1000));
        assert_eq!(round_up(ms(1000), t0), ms(1000));
        assert_eq!(round_up(ms(29_999), t0), ms(30_000));
        // Before the grid's origin: as it is.
        let before = t0.checked_sub(Duration::from_millis(5));
        if let Some(before) = before {
            assert_eq!(round_up(before, t0), before);
        }
    }
}

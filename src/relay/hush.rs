//! At most one log line per period about one kind of trouble, so that a
//! peer (or a dead webhook) cannot flood the log: the next line says how
//! many it stands for. The engine and the notification threads both use
//! it; it takes the time as an argument and reads no clock.

use std::time::{Duration, Instant};

/// At most one log line per this long about one kind of trouble.
pub const LOG_TROUBLE_EVERY: Duration = Duration::from_secs(10);

/// The state of one kind of trouble: when its last line was logged and
/// how many were held back since.
#[derive(Default, Debug)]
pub struct Hush {
    logged: Option<Instant>,
    held_back: u64,
}

impl Hush {
    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn pass(&mut self, now: Instant) -> Option<u64> {
        if self
            .logged
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_TROUBLE_EVERY)
        {
            self.held_back += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }

    /// Lines held back, once the quiet spell after the last line is over:
    /// the summary a flood of trouble ends with.
    pub fn summary_due(&mut self, now: Instant) -> Option<u64> {
        let over = self
            .logged
            .is_some_and(|at| now.saturating_duration_since(at) >= LOG_TROUBLE_EVERY);
        if over && self.held_back > 0 {
            self.logged = Some(now);
            return Some(std::mem::take(&mut self.held_back));
        }
        None
    }

    /// When [`Hush::summary_due`] will have a summary to give, if lines
    /// are held back: the caller's timer.
    pub fn summary_at(&self) -> Option<Instant> {
        match self.logged {
            Some(at) if self.held_back > 0 => Some(at + LOG_TROUBLE_EVERY),
            _ => None,
        }
    }
}

/// ` (N more since the last report)`, or nothing for none.
pub fn held_back(count: u64) -> String {
    if count == 0 {
        String::new()
    } else {
        format!(" ({count} more since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_is_logged_once_per_ten_seconds_with_what_was_held_back() {
        let start = Instant::now();
        let mut hush = Hush::default();
        assert_eq!(hush.pass(start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(hush.pass(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(hush.summary_due(start + Duration::from_millis(9_999)), None);
        assert_eq!(hush.pass(start + Duration::from_secs(10)), Some(3));
        assert_eq!(hush.pass(start + Duration::from_secs(11)), None);
        assert_eq!(hush.summary_due(start + Duration::from_secs(20)), Some(1));
        assert_eq!(hush.summary_due(start + Duration::from_secs(40)), None);
        assert_eq!(hush.pass(start + Duration::from_secs(40)), Some(0));
        assert_eq!(held_back(0), "");
        assert_eq!(held_back(3), " (3 more since the last report)");
    }

    #[test]
    fn a_summary_is_due_ten_seconds_after_the_last_line_if_any_was_held_back() {
        let start = Instant::now();
        let mut hush = Hush::default();
        assert_eq!(hush.pass(start), Some(0));
        assert_eq!(hush.summary_at(), None);
        assert_eq!(hush.pass(start + Duration::from_secs(1)), None);
        assert_eq!(hush.summary_at(), Some(start + LOG_TROUBLE_EVERY));
    }
}

//! How many samples one agent may send: a token bucket, decided from the
//! clock it is handed, so it is tested without waiting.
//!
//! Our agent samples at most 10 times a second (`--interval 0.1`); the
//! relay's default of 20 a second (`--agent-max-rate`) leaves room for that
//! and for a burst after a stall, and stops a buggy or hostile agent from
//! making every dashboard redraw thousands of times a second. Samples over
//! it are dropped and counted.

use std::time::Instant;

#[derive(Debug)]
pub struct RateLimit {
    /// Samples a second on average; also how many may come at once after
    /// a quiet spell.
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimit {
    /// A full bucket for `rate` samples a second.
    pub fn new(rate: f64, now: Instant) -> RateLimit {
        RateLimit {
            rate,
            tokens: rate,
            refilled: now,
        }
    }

    /// Whether a sample arriving at `now` may pass; takes its token if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        // A clock that seems to go back (out-of-order `now`) adds nothing.
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn passed(limit: &mut RateLimit, start: Instant, every: Duration, count: u32) -> u32 {
        (0..count)
            .filter(|i| limit.allow(start + every * *i))
            .count() as u32
    }

    #[test]
    fn an_agent_at_ten_samples_a_second_is_never_limited() {
        let start = Instant::now();
        let mut limit = RateLimit::new(20.0, start);
        assert_eq!(
            passed(&mut limit, start, Duration::from_millis(100), 600),
            600
        );
    }

    #[test]
    fn a_flood_passes_the_burst_then_twenty_a_second() {
        let start = Instant::now();
        let mut limit = RateLimit::new(20.0, start);
        // 10,000 samples a second for 3 s.
        let passed = passed(&mut limit, start, Duration::from_micros(100), 30_000);
        assert!((79..=81).contains(&passed), "{passed}");
    }

    #[test]
    fn a_quiet_spell_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut limit = RateLimit::new(20.0, start);
        assert_eq!(passed(&mut limit, start, Duration::ZERO, 100), 20);
        let later = start + Duration::from_secs(60);
        assert_eq!(passed(&mut limit, later, Duration::ZERO, 100), 20);
    }

    #[test]
    fn a_clock_going_back_adds_no_tokens() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut limit = RateLimit::new(20.0, start);
        assert_eq!(passed(&mut limit, start, Duration::ZERO, 20), 20);
        let earlier = start - Duration::from_secs(5);
        assert!(!limit.allow(earlier));
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(50)));
    }
}

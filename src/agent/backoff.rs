//! Reconnect delays: exponential from 1 s doubling to 30 s, with full jitter
//! so a fleet does not reconnect in lockstep after a relay restart.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(1);
pub const LONGEST: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// A connection worked: the next failure starts over at 1 s.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt after an ordinary failure: uniform
    /// in `[0, ceiling]` ("full jitter"), the ceiling doubling per failure.
    /// `random` is any uniformly random `u64`; passing it in keeps this pure.
    pub fn after_failure(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        jitter(Duration::ZERO, ceiling, random)
    }

    /// The delay after the relay refused our token: that will not fix itself
    /// in a second, so wait between half and all of the longest delay.
    pub fn after_rejection(&mut self, random: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(LONGEST / 2, LONGEST, random)
    }

    fn ceiling(&self) -> Duration {
        FIRST
            .saturating_mul(1u32 << self.failures.min(5))
            .min(LONGEST)
    }
}

fn jitter(low: Duration, high: Duration, random: u64) -> Duration {
    let span = (high - low).as_millis() as u64;
    low + Duration::from_millis(random % (span + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_to_thirty_seconds() {
        let mut backoff = Backoff::default();
        let mut ceilings = Vec::new();
        for random in [u64::MAX, 0, 999, 12_345, 7, 1, 29_999, 30_000] {
            let ceiling = backoff.ceiling();
            assert!(backoff.after_failure(random) <= ceiling);
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.after_failure(7);
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), FIRST);
    }

    #[test]
    fn rejection_waits_long() {
        let mut backoff = Backoff::default();
        for random in [0, 1, 15_000, u64::MAX] {
            let delay = backoff.after_rejection(random);
            assert!((LONGEST / 2..=LONGEST).contains(&delay), "{delay:?}");
        }
    }
}

//! The one backoff policy: a first delay doubling per attempt up to a cap, optionally scaled by
//! jitter. SSH reconnects, engine-event resubscription, restarts of crashed containers and polls
//! for a container's readiness all use it, each with its own bounds. Pure: the caller supplies
//! the attempt number and the jitter sample.

use std::time::Duration;

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delay after the first attempt.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// Polls for a container to run or turn healthy: fast at first (most start within a second),
/// then twice a second.
pub const READY_POLL: Policy = Policy::new(Duration::from_millis(50), Duration::from_millis(500));

impl Policy {
    /// Bounds `initial` doubling to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Policy {
        Policy { initial, max }
    }

    /// The delay after `attempt` consecutive attempts (1 for the first): `initial × 2^(attempt−1)`,
    /// at most `max`; zero for attempt 0.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let shift = (attempt - 1).min(31);
        self.initial
            .checked_mul(1u32 << shift)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// [`Policy::delay`] scaled into [½, 1] of itself by `jitter` ∈ [0, 1], so that nodes that
    /// failed together do not retry in lockstep.
    pub fn jittered(&self, attempt: u32, jitter: f64) -> Duration {
        self.delay(attempt)
            .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// The delays of attempts 1, 2, 3, … (without jitter), for poll loops.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        (1u32..).map(move |a| self.delay(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_and_stop_at_the_cap() {
        let p = Policy::new(Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(p.delay(0), Duration::ZERO);
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(4), Duration::from_secs(4));
        assert_eq!(p.delay(8), Duration::from_secs(60));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
        let polls: Vec<u64> = READY_POLL
            .delays()
            .take(6)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(polls, [50, 100, 200, 400, 500, 500]);
    }

    #[test]
    fn jitter_keeps_a_delay_between_half_and_all_of_itself() {
        let p = Policy::new(Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(p.jittered(3, 0.0), Duration::from_secs(1));
        assert_eq!(p.jittered(3, 0.5), Duration::from_millis(1500));
        assert_eq!(p.jittered(3, 1.0), Duration::from_secs(2));
        assert_eq!(p.jittered(20, 0.0), Duration::from_secs(30));
        assert_eq!(p.jittered(3, 7.0), Duration::from_secs(2));
    }
}

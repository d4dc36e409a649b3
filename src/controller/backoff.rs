//! Per-container restart backoff (pure): the first restart of a container is immediate, each
//! further one waits twice as long as the one before — 1 s, 2 s, 4 s … up to 5 min — and a
//! container left alone for [`RESET_AFTER`] starts from scratch.
//!
//! Keys name a container *as desired*: node, container name and spec hash. A new spec (the
//! operator fixed the image) or a new node (the plug moved) is a new key, so a fix is never held
//! back by the failures of what it replaces. Time is passed in (milliseconds); nothing here reads
//! a clock.

use std::collections::BTreeMap;
use std::time::Duration;

/// Wait before the second restart: the first is immediate (a killed container should run again
/// within a second), the second one waits this long.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two restarts: a container that keeps failing is retried every five
/// minutes, which costs nothing and catches a fixed dependency without an operator.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container not restarted for this long has stayed up: its next failure starts the backoff
/// again. Twice [`MAX_BACKOFF`], as Kubernetes does: a restart only happens when the container
/// is down, and its backoff ends at most [`MAX_BACKOFF`] after the previous restart, so a gap
/// this long means it ran for at least [`MAX_BACKOFF`] before failing again.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// The key of one desired container: `node/name@spec-hash`.
pub fn key(node: &str, container: &str, spec_hash: Option<&str>) -> String {
    format!("{node}/{container}@{}", spec_hash.unwrap_or("-"))
}

/// The wait after the `restarts`-th restart in a row: 0 after none, then 1 s doubling to 5 min.
pub fn delay(restarts: u32) -> Duration {
    crate::backoff::Policy::new(INITIAL_BACKOFF, MAX_BACKOFF).delay(restarts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Restarts in a row (since the last reset).
    restarts: u32,
    /// When the last one was made (ms).
    last_ms: i64,
}

/// What the table says about one restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Inside its backoff window: not before this time (ms).
    HeldUntil(i64),
}

/// Restart history per container key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    entries: BTreeMap<String, Entry>,
}

impl Backoff {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `key` may be restarted at `now`.
    pub fn check(&self, key: &str, now: i64) -> Verdict {
        match self.entries.get(key) {
            Some(e) if now - e.last_ms < RESET_AFTER.as_millis() as i64 => {
                let until = e.last_ms + delay(e.restarts).as_millis() as i64;
                if now < until {
                    Verdict::HeldUntil(until)
                } else {
                    Verdict::Allowed
                }
            }
            _ => Verdict::Allowed,
        }
    }

    /// Records a restart of `key` at `now`; returns how many restarts in a row it makes.
    pub fn record(&mut self, key: &str, now: i64) -> u32 {
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            restarts: 0,
            last_ms: now,
        });
        if now - e.last_ms >= RESET_AFTER.as_millis() as i64 {
            e.restarts = 0;
        }
        e.restarts = e.restarts.saturating_add(1);
        e.last_ms = now;
        e.restarts
    }

    /// Forgets entries whose containers stayed up for [`RESET_AFTER`] (bounds the table).
    pub fn forget_stale(&mut self, now: i64) {
        self.entries
            .retain(|_, e| now - e.last_ms < RESET_AFTER.as_millis() as i64);
    }

    /// Restarts in a row recorded for `key`.
    pub fn restarts(&self, key: &str) -> u32 {
        self.entries.get(key).map_or(0, |e| e.restarts)
    }

    /// Number of containers with a history.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no container has a history.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_doubles_from_one_second_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_restart_inside_the_window_is_held_until_it_ends() {
        let mut b = Backoff::new();
        let k = key("node1", "web-0", Some("abc"));
        assert_eq!(b.check(&k, 0), Verdict::Allowed);
        assert_eq!(b.record(&k, 0), 1);
        assert_eq!(b.check(&k, 500), Verdict::HeldUntil(1_000));
        assert_eq!(b.check(&k, 1_000), Verdict::Allowed);
        assert_eq!(b.record(&k, 1_000), 2);
        assert_eq!(b.check(&k, 2_999), Verdict::HeldUntil(3_000));
    }

    #[test]
    fn a_container_left_alone_long_enough_starts_from_scratch() {
        let mut b = Backoff::new();
        let k = key("node1", "web-0", None);
        let mut t = 0;
        for _ in 0..9 {
            b.record(&k, t);
            t += delay(b.restarts(&k)).as_millis() as i64;
        }
        assert_eq!(b.restarts(&k), 9);
        let later = t + RESET_AFTER.as_millis() as i64;
        assert_eq!(b.check(&k, later), Verdict::Allowed);
        assert_eq!(b.record(&k, later), 1, "the count starts again");
        b.forget_stale(later + RESET_AFTER.as_millis() as i64);
        assert!(b.is_empty());
    }

    #[test]
    fn a_new_spec_or_node_is_a_new_key() {
        let mut b = Backoff::new();
        b.record(&key("node1", "p", Some("h1")), 0);
        assert_eq!(b.check(&key("node1", "p", Some("h2")), 1), Verdict::Allowed);
        assert_eq!(b.check(&key("node2", "p", Some("h1")), 1), Verdict::Allowed);
    }
}

//! Node readiness as the controller tracks it (pure state machine, persisted by the caller in
//! the node's `not_ready_since_ms` / `reason` conditions after every transition).
//!
//! ```text
//!   Ready ──unreachable──► Unreachable ──for nodeLostAfter──► NotReady (its work moves)
//!     ▲                        │                                 │
//!     └────────answers─────────┘                              answers
//!     ▲                                                          ▼
//!     └──── a clean pass removed its stale copies ──────── Returning (no new work)
//! ```
//!
//! Unreachable is not absent: until `nodeLostAfter` has passed, what runs there stays where it
//! is. A returning node keeps what it runs, but takes no new work until one pass has removed the
//! stale copies of the plugs and replicas that were placed elsewhere meanwhile.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::store::NodeCondition;

/// Readiness of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Readiness {
    /// Answers; takes work.
    Ready,
    /// Does not answer, for less than `nodeLostAfter`: keeps its work, takes none.
    Unreachable {
        /// Since when (ms).
        since_ms: i64,
        /// Last error.
        error: String,
    },
    /// Has not answered for `nodeLostAfter`: its plugs and movable replicas are placed again
    /// elsewhere.
    NotReady {
        /// Unreachable since (ms).
        since_ms: i64,
        /// Last error.
        error: String,
    },
    /// Answers again after being NotReady: its stale copies are removed before it takes work.
    Returning {
        /// Unreachable since (ms), until the node is Ready again.
        since_ms: i64,
    },
}

impl Readiness {
    /// Whether the scheduler may give it new work.
    pub fn can_take_work(&self) -> bool {
        matches!(self, Readiness::Ready)
    }

    /// Whether its work is (or was) placed elsewhere: the planner gets it in `lost`.
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            Readiness::NotReady { .. } | Readiness::Returning { .. }
        )
    }

    /// Short name: `ready`, `unreachable`, `not-ready`, `returning`.
    pub fn name(&self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Unreachable { .. } => "unreachable",
            Readiness::NotReady { .. } => "not-ready",
            Readiness::Returning { .. } => "returning",
        }
    }

    /// The state at `now` without a new observation: an unreachable node whose time is up is
    /// NotReady.
    pub fn at(&self, now: i64, lost_after: Duration) -> Readiness {
        match self {
            Readiness::Unreachable { since_ms, error }
                if now - since_ms >= lost_after.as_millis() as i64 =>
            {
                Readiness::NotReady {
                    since_ms: *since_ms,
                    error: error.clone(),
                }
            }
            other => other.clone(),
        }
    }

    /// After an observation: `error` is `None` when the node answered.
    pub fn on_observed(&self, error: Option<&str>, now: i64, lost_after: Duration) -> Readiness {
        let current = self.at(now, lost_after);
        match (current, error) {
            (Readiness::Ready, Some(e)) => Readiness::Unreachable {
                since_ms: now,
                error: e.to_string(),
            }
            .at(now, lost_after),
            (Readiness::Unreachable { since_ms, .. }, Some(e)) => Readiness::Unreachable {
                since_ms,
                error: e.to_string(),
            },
            (Readiness::NotReady { since_ms, .. } | Readiness::Returning { since_ms }, Some(e)) => {
                Readiness::NotReady {
                    since_ms,
                    error: e.to_string(),
                }
            }
            (Readiness::Ready | Readiness::Unreachable { .. }, None) => Readiness::Ready,
            (Readiness::NotReady { since_ms, .. } | Readiness::Returning { since_ms }, None) => {
                Readiness::Returning { since_ms }
            }
        }
    }

    /// After a pass that ran every step planned on a returning node without a failure: its stale
    /// copies are gone, it is Ready.
    pub fn on_clean_pass(&self) -> Readiness {
        match self {
            Readiness::Returning { .. } => Readiness::Ready,
            other => other.clone(),
        }
    }

    /// The state recorded in the store (a controller restarting picks up where the last one
    /// left): a node recorded unreachable for `nodeLostAfter` may have lost its work, so when it
    /// answers it is Returning, never Ready at once.
    pub fn from_condition(c: &NodeCondition, now: i64, lost_after: Duration) -> Readiness {
        match c.not_ready_since_ms {
            None => Readiness::Ready,
            Some(since_ms) => Readiness::Unreachable {
                since_ms,
                error: c.reason.clone().unwrap_or_else(|| "unreachable".into()),
            }
            .at(now, lost_after),
        }
    }

    /// What to record in the node's condition.
    pub fn apply_to(&self, c: &mut NodeCondition) {
        match self {
            Readiness::Ready => {
                c.not_ready_since_ms = None;
                c.reason = None;
            }
            Readiness::Unreachable { since_ms, error } => {
                c.not_ready_since_ms = Some(*since_ms);
                c.reason = Some(format!("unreachable: {error}"));
            }
            Readiness::NotReady { since_ms, error } => {
                c.not_ready_since_ms = Some(*since_ms);
                c.reason = Some(format!("not ready: {error}"));
            }
            Readiness::Returning { since_ms } => {
                c.not_ready_since_ms = Some(*since_ms);
                c.reason = Some("returning: removing stale copies".into());
            }
        }
    }

    /// When this state changes by time alone (an unreachable node turning NotReady), in ms.
    pub fn deadline(&self, lost_after: Duration) -> Option<i64> {
        match self {
            Readiness::Unreachable { since_ms, .. } => {
                Some(since_ms + lost_after.as_millis() as i64)
            }
            _ => None,
        }
    }
}

/// Readiness of every node.
pub type Tracker = BTreeMap<String, Readiness>;

#[cfg(test)]
mod tests {
    use super::*;

    const LOST: Duration = Duration::from_secs(60);

    #[test]
    fn unreachable_becomes_not_ready_only_after_node_lost_after() {
        let r = Readiness::Ready.on_observed(Some("refused"), 1_000, LOST);
        assert_eq!(r.name(), "unreachable");
        assert!(!r.is_lost());
        assert_eq!(r.deadline(LOST), Some(61_000));
        let r = r.on_observed(Some("refused"), 60_999, LOST);
        assert_eq!(r.name(), "unreachable");
        let r = r.on_observed(Some("refused"), 61_000, LOST);
        assert_eq!(r.name(), "not-ready");
        assert!(r.is_lost());
        // Time alone makes it NotReady too (the pass is planned with it lost).
        let u = Readiness::Unreachable {
            since_ms: 0,
            error: "x".into(),
        };
        assert!(u.at(60_000, LOST).is_lost());
    }

    #[test]
    fn a_node_back_before_node_lost_after_is_ready_at_once() {
        let r = Readiness::Ready.on_observed(Some("refused"), 0, LOST);
        assert_eq!(r.on_observed(None, 30_000, LOST), Readiness::Ready);
    }

    #[test]
    fn a_lost_node_returns_and_is_ready_only_after_a_clean_pass() {
        let r = Readiness::NotReady {
            since_ms: 0,
            error: "x".into(),
        };
        let back = r.on_observed(None, 100_000, LOST);
        assert_eq!(back, Readiness::Returning { since_ms: 0 });
        assert!(!back.can_take_work());
        assert!(back.is_lost(), "kept out of scheduling for the first pass");
        // Gone again before it was clean: NotReady, same since.
        assert_eq!(
            back.on_observed(Some("y"), 100_500, LOST).name(),
            "not-ready"
        );
        assert_eq!(back.on_clean_pass(), Readiness::Ready);
    }

    #[test]
    fn recorded_conditions_resume_where_the_last_controller_left() {
        let mut c = NodeCondition::default();
        Readiness::Unreachable {
            since_ms: 5,
            error: "timeout".into(),
        }
        .apply_to(&mut c);
        assert_eq!(c.not_ready_since_ms, Some(5));
        let r = Readiness::from_condition(&c, 100_000, LOST);
        assert_eq!(r.name(), "not-ready");
        assert_eq!(r.on_observed(None, 100_001, LOST).name(), "returning");
        assert_eq!(
            Readiness::from_condition(&NodeCondition::default(), 0, LOST),
            Readiness::Ready
        );
        Readiness::Ready.apply_to(&mut c);
        assert_eq!(c, NodeCondition::default());
    }
}

//! Whether a node takes new work, as the operator and drains set it (pure): one enum and its
//! guarded transitions. The only place the precedence of the stored flags is decided.
//!
//! ```text
//!   Schedulable ──Cordon──► Cordoned ──StartDrain──► Draining ──FinishDrain──► Drained
//!        │                                              ▲                          │
//!        └────────────────── StartDrain ────────────────┴─────── StartDrain ───────┘
//!   Uncordon, from any condition ──► Schedulable
//! ```
//!
//! Cordoning a node that already takes no new work changes nothing; starting a drain again is
//! allowed (a drain re-run continues, a drained node can be drained again); finishing a drain
//! is refused unless one is under way: a node uncordoned while its drain ran stays
//! schedulable.
//!
//! Reachability is another axis ([`crate::controller::nodes::Readiness`]); the scheduler asks
//! both.
//!
//! The state store and the API keep the historical shape, three flags (`cordoned`, `draining`,
//! `drained`); [`Schedule::from_flags`] and [`Schedule::flags`] convert, so nothing outside
//! changes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's scheduling condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Takes new work.
    #[default]
    Schedulable,
    /// Takes no new work; what runs there stays.
    Cordoned,
    /// A drain is moving its work away; takes no new work.
    Draining,
    /// A drain finished; takes nothing until uncordoned.
    Drained,
}

/// A change of [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transition {
    /// `fleetctl cordon`: no new work.
    Cordon,
    /// `fleetctl uncordon`: takes work again, whatever it was (cancels a drain).
    Uncordon,
    /// A drain begins (or is run again).
    StartDrain,
    /// A drain found nothing movable left.
    FinishDrain,
}

impl Transition {
    /// The verb, as the event log and messages say it.
    pub fn verb(self) -> &'static str {
        match self {
            Transition::Cordon => "cordon",
            Transition::Uncordon => "uncordon",
            Transition::StartDrain => "start a drain",
            Transition::FinishDrain => "finish a drain",
        }
    }
}

/// A transition its guard refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} on a node that is {}", transition.verb(), from.word())]
pub struct Refused {
    /// The condition it was asked of.
    pub from: Schedule,
    /// What was asked.
    pub transition: Transition,
}

impl Schedule {
    /// The condition the stored flags mean. Drained wins over draining, draining over cordoned
    /// (drained and draining imply cordoned, whatever the flag says).
    pub fn from_flags(cordoned: bool, draining: bool, drained: bool) -> Schedule {
        if drained {
            Schedule::Drained
        } else if draining {
            Schedule::Draining
        } else if cordoned {
            Schedule::Cordoned
        } else {
            Schedule::Schedulable
        }
    }

    /// The stored flags `(cordoned, draining, drained)`: every condition but `Schedulable` is
    /// cordoned. `from_flags(flags(s)) == s` for every `s`.
    pub fn flags(self) -> (bool, bool, bool) {
        match self {
            Schedule::Schedulable => (false, false, false),
            Schedule::Cordoned => (true, false, false),
            Schedule::Draining => (true, true, false),
            Schedule::Drained => (true, false, true),
        }
    }

    /// Whether the scheduler may give the node new work.
    pub fn takes_new_work(self) -> bool {
        self == Schedule::Schedulable
    }

    /// Whether what runs there should move away (a drain is under way or done).
    pub fn must_vacate(self) -> bool {
        matches!(self, Schedule::Draining | Schedule::Drained)
    }

    /// `schedulable`, `cordoned`, `draining`, `drained`: the scheduler's rejection reason and
    /// `get nodes`' status suffix.
    pub fn word(self) -> &'static str {
        match self {
            Schedule::Schedulable => "schedulable",
            Schedule::Cordoned => "cordoned",
            Schedule::Draining => "draining",
            Schedule::Drained => "drained",
        }
    }

    /// The condition after `t`.
    ///
    /// # Errors
    /// [`Refused`] for finishing a drain that is not under way (the node was uncordoned while
    /// it ran). Every other transition is allowed from every condition; some change nothing
    /// (cordoning a draining node).
    pub fn apply(self, t: Transition) -> Result<Schedule, Refused> {
        use Schedule::*;
        match (self, t) {
            (Schedulable, Transition::Cordon) => Ok(Cordoned),
            (s, Transition::Cordon) => Ok(s),
            (_, Transition::Uncordon) => Ok(Schedulable),
            (_, Transition::StartDrain) => Ok(Draining),
            (Draining | Drained, Transition::FinishDrain) => Ok(Drained),
            (from @ (Schedulable | Cordoned), Transition::FinishDrain) => Err(Refused {
                from,
                transition: t,
            }),
        }
    }
}

impl Schedule {
    /// The condition a [`Schedule::word`] names.
    pub fn from_word(word: &str) -> Option<Schedule> {
        [
            Schedule::Schedulable,
            Schedule::Cordoned,
            Schedule::Draining,
            Schedule::Drained,
        ]
        .into_iter()
        .find(|s| s.word() == word)
    }
}

/// A node's scheduling condition as the nodes record it ([`crate::records`]): seen by every
/// machine, whatever its state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// The condition.
    pub schedule: Schedule,
    /// When it was set (ms since the epoch).
    pub since_ms: i64,
    /// Who set it.
    pub by: String,
}

/// What the state and the nodes say about nodes' conditions, reconciled: for each node the
/// newer of the state's last change of its schedule (`changed_ms`) and the nodes' mark wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Nodes whose mark is newer and differs: the state should take `(schedule, since_ms)`.
    pub learn: Vec<(String, Mark)>,
    /// Nodes whose state's schedule is newer than any mark (or has none): the nodes should be
    /// told.
    pub publish: Vec<(String, Mark)>,
}

/// Pure: compares the state's schedules (`schedules`, with when each last changed in
/// `changed_ms`; 0 = never changed here) with the nodes' `marks`. A schedule never changed
/// here and never marked is nobody's business.
pub fn reconcile_marks(
    schedules: &std::collections::BTreeMap<String, Schedule>,
    changed_ms: &std::collections::BTreeMap<String, i64>,
    marks: &std::collections::BTreeMap<String, Mark>,
    actor: &str,
) -> Reconciled {
    let mut out = Reconciled::default();
    let nodes: std::collections::BTreeSet<&String> = schedules.keys().chain(marks.keys()).collect();
    for node in nodes {
        let ours = schedules.get(node).copied().unwrap_or_default();
        let at = changed_ms.get(node).copied().unwrap_or(0);
        match marks.get(node) {
            Some(m) if m.since_ms > at && m.schedule != ours => {
                out.learn.push((node.clone(), m.clone()));
            }
            // The same instant, two conditions (two machines, one millisecond): every machine
            // settles on the same one, the later word.
            Some(m) if m.since_ms == at && m.schedule != ours => {
                if m.schedule.word() > ours.word() {
                    out.learn.push((node.clone(), m.clone()));
                } else {
                    out.publish.push((
                        node.clone(),
                        Mark {
                            schedule: ours,
                            since_ms: at,
                            by: actor.to_string(),
                        },
                    ));
                }
            }
            Some(m) if m.since_ms >= at => {}
            _ if at > 0 => out.publish.push((
                node.clone(),
                Mark {
                    schedule: ours,
                    since_ms: at,
                    by: actor.to_string(),
                },
            )),
            _ => {}
        }
    }
    out
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Schedule; 4] = [
        Schedule::Schedulable,
        Schedule::Cordoned,
        Schedule::Draining,
        Schedule::Drained,
    ];

    #[test]
    fn flags_round_trip_and_any_stored_combination_has_one_meaning() {
        for s in ALL {
            let (c, d, x) = s.flags();
            assert_eq!(Schedule::from_flags(c, d, x), s);
        }
        for bits in 0..8u8 {
            let s = Schedule::from_flags(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            assert_eq!(s.takes_new_work(), bits == 0, "{bits:03b} → {s}");
        }
        assert_eq!(
            Schedule::from_flags(true, true, true),
            Schedule::Drained,
            "drained wins"
        );
        assert_eq!(
            Schedule::from_flags(false, true, false),
            Schedule::Draining,
            "draining implies cordoned"
        );
    }

    #[test]
    fn a_drain_runs_from_any_condition_and_uncordon_ends_anything() {
        for s in ALL {
            assert_eq!(s.apply(Transition::StartDrain), Ok(Schedule::Draining));
            assert_eq!(s.apply(Transition::Uncordon), Ok(Schedule::Schedulable));
        }
        let s = Schedule::Schedulable
            .apply(Transition::Cordon)
            .and_then(|s| s.apply(Transition::StartDrain))
            .and_then(|s| s.apply(Transition::FinishDrain));
        assert_eq!(s, Ok(Schedule::Drained));
        assert!(Schedule::Drained.must_vacate() && Schedule::Draining.must_vacate());
        assert!(!Schedule::Cordoned.must_vacate());
    }

    #[test]
    fn cordon_never_loosens_a_condition() {
        assert_eq!(
            Schedule::Schedulable.apply(Transition::Cordon),
            Ok(Schedule::Cordoned)
        );
        for s in [Schedule::Cordoned, Schedule::Draining, Schedule::Drained] {
            assert_eq!(s.apply(Transition::Cordon), Ok(s));
        }
    }

    #[test]
    fn finishing_a_drain_that_is_not_under_way_is_refused() {
        for from in [Schedule::Schedulable, Schedule::Cordoned] {
            let e = from.apply(Transition::FinishDrain).unwrap_err();
            assert_eq!(
                e,
                Refused {
                    from,
                    transition: Transition::FinishDrain
                }
            );
        }
        assert_eq!(
            Schedule::Schedulable
                .apply(Transition::FinishDrain)
                .unwrap_err()
                .to_string(),
            "cannot finish a drain on a node that is schedulable"
        );
        assert_eq!(
            Schedule::Drained.apply(Transition::FinishDrain),
            Ok(Schedule::Drained)
        );
    }

    fn mark(schedule: Schedule, since_ms: i64) -> Mark {
        Mark {
            schedule,
            since_ms,
            by: "x".into(),
        }
    }

    #[test]
    fn the_newer_of_the_state_and_the_nodes_wins() {
        use std::collections::BTreeMap;
        let schedules = BTreeMap::from([
            ("a".to_string(), Schedule::Schedulable),
            ("b".to_string(), Schedule::Cordoned),
            ("c".to_string(), Schedule::Drained),
            ("d".to_string(), Schedule::Schedulable),
        ]);
        let changed = BTreeMap::from([
            ("a".to_string(), 0),
            ("b".to_string(), 50),
            ("c".to_string(), 70),
            ("d".to_string(), 0),
        ]);
        let marks = BTreeMap::from([
            // Cordoned elsewhere, later than anything here: learned.
            ("a".to_string(), mark(Schedule::Cordoned, 10)),
            // Uncordoned here after the mark: published.
            ("b".to_string(), mark(Schedule::Schedulable, 40)),
            // Same change seen both ways: nothing.
            ("c".to_string(), mark(Schedule::Drained, 70)),
            // Cordoned elsewhere while the state never changed it: learned.
            ("e".to_string(), mark(Schedule::Cordoned, 5)),
        ]);
        let r = reconcile_marks(&schedules, &changed, &marks, "me");
        assert_eq!(
            r.learn,
            [
                ("a".to_string(), mark(Schedule::Cordoned, 10)),
                ("e".to_string(), mark(Schedule::Cordoned, 5)),
            ]
        );
        assert_eq!(r.publish.len(), 1);
        assert_eq!(r.publish[0].0, "b");
        assert_eq!(r.publish[0].1.schedule, Schedule::Cordoned);
        assert_eq!(r.publish[0].1.since_ms, 50);
        // d: never changed here, never marked: nothing either way.
        for s in ALL {
            assert_eq!(Schedule::from_word(s.word()), Some(s));
        }
    }

    /// Review finding: two machines setting different conditions in the same millisecond must
    /// settle on one (the later word), not disagree for ever.
    #[test]
    fn the_same_instant_settles_on_the_later_word_everywhere() {
        use std::collections::BTreeMap;
        let at = BTreeMap::from([("n".to_string(), 7)]);
        let cordoned = BTreeMap::from([("n".to_string(), Schedule::Cordoned)]);
        let schedulable = BTreeMap::from([("n".to_string(), Schedule::Schedulable)]);
        // "schedulable" > "cordoned": the machine that holds cordoned learns, the other
        // publishes.
        let here = reconcile_marks(
            &cordoned,
            &at,
            &BTreeMap::from([("n".to_string(), mark(Schedule::Schedulable, 7))]),
            "me",
        );
        assert_eq!(here.learn.len(), 1);
        assert!(here.publish.is_empty());
        let there = reconcile_marks(
            &schedulable,
            &at,
            &BTreeMap::from([("n".to_string(), mark(Schedule::Cordoned, 7))]),
            "me",
        );
        assert!(there.learn.is_empty());
        assert_eq!(there.publish.len(), 1);
    }
}

//! Self-healing on top of the planner's plan (pure): what the controller adds to and holds back
//! from a plan before it runs.
//!
//! - The planner already starts exited containers that should run and recreates missing ones.
//!   The controller adds a restart (stop, then start) of every *running but unhealthy* container
//!   the plan otherwise leaves alone.
//! - Every step that (re)starts a container — create, start, replace, the restarts above — goes
//!   through the per-container [`Backoff`]: inside its window the step is held back (and the pass
//!   requeued for when the window ends); otherwise it runs and counts as a restart.
//! - A restart waits until the container runs, not until it is healthy: health is watched
//!   through the engine's events, and a container that turns unhealthy again is restarted again,
//!   with backoff. (Creates and replacements keep their health gate: an old copy is only removed
//!   once its replacement is healthy.)

use std::collections::BTreeMap;

use crate::container::{Health, RunState, labels};
use crate::observe::{Observed, ObservedFleet};
use crate::plan::{Action, Object, Plan, Step, StepGroup};

use super::backoff::{self, Backoff, Verdict};

/// A step held back by the backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Node.
    pub node: String,
    /// Container.
    pub container: String,
    /// Not before (ms).
    pub until_ms: i64,
}

/// What the backoff held back, and when to retry what it let through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holds {
    /// Steps held back by the backoff.
    pub held: Vec<Held>,
    /// For every restart let through: (node, container) → when the next one is allowed (ms),
    /// should this one fail.
    pub retry_at: BTreeMap<(String, String), i64>,
}

/// The plan to run, and what was held back.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjusted {
    /// The plan to execute.
    pub plan: Plan,
    /// What the backoff decided.
    pub holds: Holds,
}

fn object_of(o: &Observed) -> Object {
    let r = &o.record;
    match (r.label(labels::KIND), r.label(labels::PLUG)) {
        (Some("plug"), Some(id)) => Object::Plug { id: id.to_string() },
        _ => match (
            r.label(labels::SERVICE),
            r.label(labels::REPLICA).and_then(|x| x.parse().ok()),
        ) {
            (Some(name), Some(replica)) => Object::Service {
                name: name.to_string(),
                replica,
            },
            _ => Object::Stray,
        },
    }
}

/// The backoff key of a step that (re)starts a container, `None` for other steps.
fn restart_key(observed: &ObservedFleet, step: &Step) -> Option<String> {
    let hash = match &step.action {
        Action::Create { spec } | Action::Replace { spec, .. } => {
            spec.labels.get(labels::SPEC_HASH).cloned()
        }
        Action::Start { id, .. } => observed
            .containers(&step.node)
            .iter()
            .find(|o| &o.record.id == id)
            .and_then(|o| o.record.label(labels::SPEC_HASH).map(str::to_string)),
        Action::Stop { .. } | Action::Update { .. } | Action::Remove { .. } => return None,
    };
    Some(backoff::key(&step.node, &step.container, hash.as_deref()))
}

/// Whether `step` starts a container the engine is restarting itself (state `restarting`).
fn engine_restarting(observed: &ObservedFleet, step: &Step) -> bool {
    let Action::Start { id, .. } = &step.action else {
        return false;
    };
    observed
        .containers(&step.node)
        .iter()
        .any(|o| &o.record.id == id && o.record.state == RunState::Restarting)
}

/// Adds restarts of unhealthy containers, makes restarts wait for running only, and applies
/// the backoff (recording every restart let through at `now`).
pub fn adjust(observed: &ObservedFleet, mut plan: Plan, table: &mut Backoff, now: i64) -> Adjusted {
    // Running, unhealthy, otherwise as desired: restart in place.
    let mut unhealthy = Vec::new();
    plan.unchanged.retain(|(node, name)| {
        let sick = observed.containers(node).iter().find(|o| {
            &o.record.name == name
                && o.record.state == RunState::Running
                && o.record.health == Some(Health::Unhealthy)
        });
        match sick {
            Some(o) => {
                unhealthy.push((node.clone(), o.clone()));
                false
            }
            None => true,
        }
    });
    for (node, o) in unhealthy {
        let grace_secs = o
            .details
            .as_ref()
            .and_then(|d| d.spec.stop_grace_period)
            .map_or(10, |g| g.as_secs());
        let object = object_of(&o);
        let group = StepGroup::Restart(o.record.name.clone());
        let step = |action, reason: &str| Step {
            node: node.clone(),
            container: o.record.name.clone(),
            object: object.clone(),
            action,
            reason: reason.to_string(),
            group: group.clone(),
        };
        plan.steps.push(step(
            Action::Stop {
                id: o.record.id.clone(),
                grace_secs,
            },
            "unhealthy: restart",
        ));
        plan.steps.push(step(
            Action::Start {
                id: o.record.id.clone(),
                healthcheck: false,
            },
            "unhealthy: restart",
        ));
    }

    // Backoff: decide per restart step; a held restart of an unhealthy container holds its stop.
    let mut held = Vec::new();
    let mut retry_at = BTreeMap::new();
    let mut held_groups = Vec::new();
    let mut keep = Vec::with_capacity(plan.steps.len());
    for mut step in std::mem::take(&mut plan.steps) {
        if engine_restarting(observed, &step) {
            // The engine's restart policy is bringing it back (with its own backoff): a start
            // now would only wait for that, holding the pass.
            continue;
        }
        if let Some(key) = restart_key(observed, &step) {
            match table.check(&key, now) {
                Verdict::HeldUntil(until_ms) => {
                    held.push(Held {
                        node: step.node.clone(),
                        container: step.container.clone(),
                        until_ms,
                    });
                    held_groups.push(step.group.clone());
                    continue;
                }
                Verdict::Allowed => {
                    let n = table.record(&key, now);
                    retry_at.insert(
                        (step.node.clone(), step.container.clone()),
                        now + backoff::delay(n).as_millis() as i64,
                    );
                    if n > 1 {
                        step.reason = format!("{} (restart {n} in a row)", step.reason);
                    }
                }
            }
        }
        if let Action::Start { healthcheck, .. } = &mut step.action {
            *healthcheck = false;
        }
        keep.push(step);
    }
    keep.retain(|s| !(matches!(s.group, StepGroup::Restart(_)) && held_groups.contains(&s.group)));
    plan.steps = keep;
    Adjusted {
        plan,
        holds: Holds { held, retry_at },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::container::ContainerRecord;
    use crate::observe::NodeObservation;

    fn observed(state: RunState, health: Option<Health>) -> ObservedFleet {
        let labels = BTreeMap::from([
            (labels::KIND.to_string(), "service".to_string()),
            (labels::SERVICE.to_string(), "web".to_string()),
            (labels::REPLICA.to_string(), "0".to_string()),
            (labels::SPEC_HASH.to_string(), "h".to_string()),
        ]);
        let record = ContainerRecord {
            networks: Vec::new(),
            id: "id1".into(),
            name: "f-web-0".into(),
            image: "web:1".into(),
            labels,
            state,
            health,
            created: 0,
            host_ports: vec![],
        };
        ObservedFleet {
            networks_observed: false,
            swarm: Default::default(),
            engines: Default::default(),
            nodes: BTreeMap::from([(
                "node1".to_string(),
                NodeObservation::Reachable {
                    networks: Vec::new(),
                    containers: vec![Observed {
                        record,
                        details: None,
                        memory_used: None,
                    }],
                    foreign_ports: BTreeSet::new(),
                    foreign_containers: 0,
                    engine: None,
                    measured_memory: None,
                },
            )]),
            tombstones: BTreeMap::new(),
            marks: BTreeMap::new(),
        }
    }

    fn start_plan() -> Plan {
        Plan {
            steps: vec![Step {
                node: "node1".into(),
                container: "f-web-0".into(),
                object: Object::Service {
                    name: "web".into(),
                    replica: 0,
                },
                action: Action::Start {
                    id: "id1".into(),
                    healthcheck: true,
                },
                reason: "exited container, should run".into(),
                group: StepGroup::Replica("web".into(), 0),
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn an_unhealthy_running_container_is_stopped_then_started() {
        let obs = observed(RunState::Running, Some(Health::Unhealthy));
        let plan = Plan {
            unchanged: vec![("node1".into(), "f-web-0".into())],
            ..Plan::default()
        };
        let a = adjust(&obs, plan, &mut Backoff::new(), 0);
        let verbs: Vec<&str> = a
            .plan
            .steps
            .iter()
            .map(|s| s.action.verb("node1"))
            .collect();
        assert_eq!(verbs, ["stop", "start"]);
        assert!(a.plan.unchanged.is_empty());
        assert_eq!(a.plan.steps[0].group, a.plan.steps[1].group);
        // Healthy or starting containers are left alone.
        for h in [Some(Health::Healthy), Some(Health::Starting), None] {
            let plan = Plan {
                unchanged: vec![("node1".into(), "f-web-0".into())],
                ..Plan::default()
            };
            let a = adjust(
                &observed(RunState::Running, h),
                plan,
                &mut Backoff::new(),
                0,
            );
            assert!(a.plan.steps.is_empty());
        }
    }

    #[test]
    fn restarts_inside_the_backoff_window_are_held_and_the_rest_run() {
        let obs = observed(RunState::Exited, None);
        let mut table = Backoff::new();
        let first = adjust(&obs, start_plan(), &mut table, 0);
        assert_eq!(first.plan.steps.len(), 1);
        assert_eq!(
            first.plan.steps[0].action,
            Action::Start {
                id: "id1".into(),
                healthcheck: false
            },
            "a restart waits for running only"
        );
        let second = adjust(&obs, start_plan(), &mut table, 400);
        assert!(second.plan.steps.is_empty());
        assert_eq!(second.holds.held[0].until_ms, 1_000);
        let third = adjust(&obs, start_plan(), &mut table, 1_000);
        assert_eq!(third.plan.steps.len(), 1);
        assert!(third.plan.steps[0].reason.ends_with("(restart 2 in a row)"));
    }

    #[test]
    fn a_container_the_engine_is_restarting_is_left_to_the_engine() {
        let obs = observed(RunState::Restarting, None);
        let mut table = Backoff::new();
        let a = adjust(&obs, start_plan(), &mut table, 0);
        assert!(a.plan.steps.is_empty());
        assert!(a.holds.held.is_empty());
        assert!(table.is_empty(), "not counted as a restart");
    }

    #[test]
    fn a_held_unhealthy_restart_does_not_stop_the_container() {
        let obs = observed(RunState::Running, Some(Health::Unhealthy));
        let plan = || Plan {
            unchanged: vec![("node1".into(), "f-web-0".into())],
            ..Plan::default()
        };
        let mut table = Backoff::new();
        adjust(&obs, plan(), &mut table, 0);
        let a = adjust(&obs, plan(), &mut table, 10);
        assert!(a.plan.steps.is_empty(), "{:?}", a.plan.steps);
        assert_eq!(a.holds.held.len(), 1);
    }
}

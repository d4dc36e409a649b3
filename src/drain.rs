//! Drain: `fleetctl drain node2` is the normal pipeline with one more input, not a second code
//! path. The node is marked cordoned + draining in the state store; from then on the scheduler
//! rejects it, so the planner turns every plug and replica on it into a start-first move (the
//! replacement runs, and is healthy when it has a healthcheck, before the original stops).
//! What fits nowhere else stays where it is; replicas whose placement allows only this node are
//! listed and left running unless `--force`. When nothing movable is left, the node is `drained`.
//!
//! [`classify`] (pure) says what is on the node and why it stays or moves; [`drain`] runs passes
//! until done, stuck, or out of time. Re-running continues where it stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::condition::{Schedule, Transition};
use crate::container::labels;
use crate::execute::Progress;
use crate::manifest::DesiredFleet;
use crate::observe::ObservedFleet;
use crate::plan::{Object, Plan};
use crate::reconcile::{PassContext, pass};
use crate::store::{StoreError, now_ms};

/// What a drain does with a container on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fate {
    /// Its placement allows only this node: it stays unless `--force`.
    Pinned,
    /// No other node can take it now (the reason says why): it stays until there is room.
    Stuck,
    /// It moves (start-first) to another node.
    Moving,
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fate::Pinned => "pinned",
            Fate::Stuck => "stuck",
            Fate::Moving => "moving",
        })
    }
}

/// One fleet container on the draining node, and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resident {
    /// Container name.
    pub container: String,
    /// `service NAME replica N` or `plug ID`.
    pub object: String,
    /// What happens to it.
    pub fate: Fate,
    /// Why (the scheduler's per-node diagnosis for stuck ones).
    pub why: String,
}

/// What is left on a node, from an observation and a plan made while it drains.
pub fn classify(
    fleet: &DesiredFleet,
    node: &str,
    observed: &ObservedFleet,
    plan: &Plan,
) -> Vec<Resident> {
    let mut out = Vec::new();
    for o in observed.containers(node) {
        let r = &o.record;
        let (object, pinned) = match r.label(labels::KIND) {
            Some("service") => {
                let svc = r.label(labels::SERVICE).unwrap_or("?");
                let pinned = fleet.services.get(svc).is_some_and(|s| {
                    fleet
                        .nodes
                        .values()
                        .filter(|n| s.placement.allows(n))
                        .map(|n| n.name.as_str())
                        .eq([node])
                });
                (
                    format!(
                        "service {svc} replica {}",
                        r.label(labels::REPLICA).unwrap_or("?")
                    ),
                    pinned,
                )
            }
            Some("plug") => (
                format!("plug {}", r.label(labels::PLUG).unwrap_or("?")),
                false,
            ),
            _ => ("container".to_string(), false),
        };
        let stuck = plan.stuck.iter().find(|s| {
            s.node == node
                && match &s.object {
                    Object::Service { name, replica } => {
                        r.label(labels::SERVICE) == Some(name.as_str())
                            && r.label(labels::REPLICA) == Some(replica.to_string().as_str())
                    }
                    Object::Plug { id } => r.label(labels::PLUG) == Some(id.as_str()),
                    Object::Stray => false,
                }
        });
        let (fate, why) = if pinned {
            (
                Fate::Pinned,
                format!("its placement allows only {node}; --force stops it"),
            )
        } else if let Some(s) = stuck {
            (Fate::Stuck, s.diagnosis.to_string())
        } else {
            (Fate::Moving, String::new())
        };
        out.push(Resident {
            container: r.name.clone(),
            object,
            fate,
            why,
        });
    }
    out
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainStatus {
    /// Nothing movable is left; the node is `drained`.
    Drained,
    /// Something could not move (no room elsewhere, or a node unreachable); re-run to continue.
    Stuck,
    /// Out of time; re-run to continue.
    TimedOut,
    /// The node was uncordoned while the drain ran: it stays schedulable (what was moved
    /// stays moved).
    Uncordoned,
}

/// The outcome of a drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainReport {
    /// Node.
    pub node: String,
    /// How it ended.
    pub status: DrainStatus,
    /// Containers moved off the node: (container, from, to, reason).
    pub moved: Vec<MovedView>,
    /// What is left on the node, and why.
    pub left: Vec<Resident>,
    /// Failed steps.
    pub errors: Vec<String>,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// One move.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MovedView {
    /// New container.
    pub container: String,
    /// What.
    pub object: Object,
    /// New node.
    pub to: String,
    /// Seconds the move took (replacement up, original gone).
    pub seconds: f64,
}

/// Drains `node` through the reconcile pipeline. `cx.evict` must hold `node` when forced.
///
/// # Errors
/// Store failures.
pub async fn drain(
    cx: &PassContext<'_>,
    node: &str,
    timeout: Duration,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<DrainReport, StoreError> {
    let started = Instant::now();
    let who = cx.exec.actor.clone();
    // A condition set through another state file is learned first: the drain is the newest
    // word on this node's schedule, stamped after it.
    let seen = crate::reconcile::observe_for(cx).await;
    cx.store.learn_marks(&seen.marks, &who, now_ms())?;
    let (before, _) = cx
        .store
        .transition_node(node, now_ms(), Transition::StartDrain)?;
    if before.schedule() != Schedule::Draining {
        cx.store.record_event(
            now_ms(),
            &who,
            "drain",
            Some(node),
            None,
            "draining started",
        )?;
    }
    let mut moved = Vec::new();
    let mut errors = Vec::new();
    let deadline = started + timeout;
    loop {
        let report = pass(cx, progress).await?;
        for o in report.exec.outcomes.iter().filter(|o| o.ok) {
            let step = &report.plan.steps[o.index];
            if let crate::plan::Action::Replace { old_node, .. } = &step.action
                && old_node == node
            {
                moved.push(MovedView {
                    container: step.container.clone(),
                    object: step.object.clone(),
                    to: step.node.clone(),
                    seconds: o.elapsed_ms as f64 / 1000.0,
                });
            }
        }
        errors.extend(
            report
                .exec
                .outcomes
                .iter()
                .filter(|o| !o.ok && !o.skipped)
                .filter_map(|o| o.error.clone()),
        );
        // What is left, seen fresh after the pass.
        let (observed, plan) = crate::reconcile::plan_only(cx).await?;
        if !observed.is_reachable(node) {
            errors.push(format!(
                "node {node} is unreachable; drain cannot finish until it is back"
            ));
            return Ok(finish(
                node,
                DrainStatus::Stuck,
                moved,
                Vec::new(),
                errors,
                started,
            ));
        }
        let left = classify(cx.fleet, node, &observed, &plan);
        let movable_left = left
            .iter()
            .any(|r| r.fate != Fate::Pinned || cx.evict.contains(node));
        if !movable_left {
            // Refused when the node was uncordoned while the drain ran: it stays schedulable,
            // and the drain ends saying so (with what it moved) instead of marking it drained.
            let now = now_ms();
            match cx.store.transition_node(node, now, Transition::FinishDrain) {
                Ok(_) => {
                    // Every machine sees it drained, not only this state file.
                    let mark = crate::condition::Mark {
                        schedule: crate::condition::Schedule::Drained,
                        since_ms: cx.store.schedule_times()?.get(node).copied().unwrap_or(now),
                        by: cx.exec.actor.clone(),
                    };
                    crate::reconcile::publish_mark(cx.runtimes, &cx.fleet.fleet.name, node, &mark)
                        .await;
                }
                Err(StoreError::Condition { source, .. }) => {
                    errors.push(format!("node {node}: {source}"));
                    return Ok(finish(
                        node,
                        DrainStatus::Uncordoned,
                        moved,
                        left,
                        errors,
                        started,
                    ));
                }
                Err(e) => return Err(e),
            }
            cx.store.record_event(
                now_ms(),
                &who,
                "drained",
                Some(node),
                None,
                &format!("{} moved, {} pinned left", moved.len(), left.len()),
            )?;
            return Ok(finish(
                node,
                DrainStatus::Drained,
                moved,
                left,
                errors,
                started,
            ));
        }
        let progressing = report.exec.outcomes.iter().any(|o| o.ok);
        let only_stuck = left.iter().all(|r| r.fate != Fate::Moving);
        if only_stuck || !progressing && !report.plan.steps.is_empty() {
            return Ok(finish(
                node,
                DrainStatus::Stuck,
                moved,
                left,
                errors,
                started,
            ));
        }
        if Instant::now() >= deadline {
            return Ok(finish(
                node,
                DrainStatus::TimedOut,
                moved,
                left,
                errors,
                started,
            ));
        }
        if report.plan.steps.is_empty() {
            // Nothing planned yet something movable is left: give the engine a moment (a
            // container being removed) and look again.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn finish(
    node: &str,
    status: DrainStatus,
    moved: Vec<MovedView>,
    left: Vec<Resident>,
    errors: Vec<String>,
    started: Instant,
) -> DrainReport {
    DrainReport {
        node: node.to_string(),
        status,
        moved,
        left,
        errors: errors
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

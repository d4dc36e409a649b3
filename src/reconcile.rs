//! One reconcile pass, shared by `apply` and the controller: observe every node, read the
//! recorded state, plan (pure), record plug moves, execute, then record what the pass settled
//! (plug states, freed port leases, where replicas run).
//!
//! The pass never learns why it ran: it reads the full desired and observed state every time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::execute::{ExecOptions, ExecReport, Progress, Runtimes, execute};
use crate::manifest::DesiredFleet;
use crate::observe::{ObserveOptions, ObservedFleet, observe};
use crate::plan::{Action, Plan, Snapshot, plan};
use crate::store::{Store, StoreError};

/// What one pass saw, decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// The observation the plan was made from.
    #[serde(skip)]
    pub observed: ObservedFleet,
    /// The plan.
    pub plan: Plan,
    /// Execution outcomes (empty for a dry run).
    pub exec: ExecReport,
}

/// Inputs of a pass besides the desired fleet.
pub struct PassContext<'a> {
    /// Desired state.
    pub fleet: &'a DesiredFleet,
    /// One runtime per node.
    pub runtimes: &'a Runtimes,
    /// State store.
    pub store: &'a Store,
    /// Nodes considered lost (NotReady past `nodeLostAfter`).
    pub lost: BTreeSet<String>,
    /// Nodes force-drained (see [`Snapshot::evict`]).
    pub evict: BTreeSet<String>,
    /// Measure memory use (needed for the measured-memory filter of plug placement).
    pub measure_memory: bool,
    /// Execution options.
    pub exec: ExecOptions,
}

/// Observe with what the plan needs: engine facts for nodes whose capacity is not declared.
pub async fn observe_for(cx: &PassContext<'_>) -> ObservedFleet {
    let options = ObserveOptions {
        engine_info: cx
            .fleet
            .nodes
            .values()
            .filter(|n| n.capacity_memory.is_none())
            .map(|n| n.name.clone())
            .collect(),
        measure_memory: cx.measure_memory,
    };
    let runtimes: Vec<_> = cx.runtimes.values().cloned().collect();
    observe(&cx.fleet.fleet.name, &runtimes, &options).await
}

/// Computes the plan for the current state without changing anything.
///
/// # Errors
/// Store failures.
pub async fn plan_only(cx: &PassContext<'_>) -> Result<(ObservedFleet, Plan), StoreError> {
    let observed = observe_for(cx).await;
    let p = plan_from(cx, &observed)?;
    Ok((observed, p))
}

fn plan_from(cx: &PassContext<'_>, observed: &ObservedFleet) -> Result<Plan, StoreError> {
    // State is read after observation: a plug row is always written before its container, so
    // any plug container observed has its row visible here.
    let conditions = cx.store.node_conditions()?;
    let plugs = cx.store.plugs()?;
    let leases = cx.store.port_leases()?;
    let last_known = cx.store.replica_nodes()?;
    Ok(plan(&Snapshot {
        fleet: cx.fleet,
        observed,
        conditions: &conditions,
        plugs: &plugs,
        port_leases: &leases,
        last_known: &last_known,
        lost: &cx.lost,
        evict: &cx.evict,
    }))
}

/// Runs one pass.
///
/// # Errors
/// Store failures (the fleet may have been partly changed; the next pass continues).
pub async fn pass(
    cx: &PassContext<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<PassReport, StoreError> {
    let observed = observe_for(cx).await;
    let p = plan_from(cx, &observed)?;
    for m in &p.plug_moves {
        cx.store.move_plug(&m.id, &m.to, m.port)?;
    }
    let exec = execute(&p, cx.runtimes, Some(cx.store), &cx.exec, progress).await;
    settle(cx, &observed, &p, &exec)?;
    Ok(PassReport {
        observed,
        plan: p,
        exec,
    })
}

/// Records what the pass settled: where replicas run, and port leases no container holds.
fn settle(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    p: &Plan,
    exec: &ExecReport,
) -> Result<(), StoreError> {
    let failed_groups: BTreeSet<&str> = exec
        .outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| p.steps[o.index].group.as_str())
        .collect();
    // Replica placement: the plan's, except where a service's steps failed (then the old
    // record stands until a pass succeeds).
    let old = cx.store.replica_nodes()?;
    let mut nodes: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (key, node) in &p.replica_nodes {
        let group = format!("service/{}", key.0);
        let value = if failed_groups.contains(group.as_str()) {
            old.get(key).cloned().unwrap_or_else(|| node.clone())
        } else {
            node.clone()
        };
        nodes.insert(key.clone(), value);
    }
    cx.store.set_replica_nodes(&nodes)?;

    // Port leases of plugs on nodes where they no longer run.
    let plugs = cx.store.plugs()?;
    let removed_ok: BTreeSet<(&str, &str)> = exec
        .outcomes
        .iter()
        .filter(|o| o.ok)
        .filter_map(|o| {
            let step = &p.steps[o.index];
            match &step.action {
                Action::Remove { .. } => Some((step.node.as_str(), step.container.as_str())),
                Action::Replace {
                    old_node, old_name, ..
                } => Some((old_node.as_str(), old_name.as_str())),
                _ => None,
            }
        })
        .collect();
    for (node, port, plug) in cx.store.port_leases()? {
        let current = plugs.iter().find(|r| r.id == plug);
        if current.is_some_and(|r| r.node == node && r.host_port == port) {
            continue;
        }
        if !observed.is_reachable(&node) {
            continue; // a copy may still run there
        }
        let copy_left = observed.containers(&node).iter().any(|o| {
            o.record.label(crate::container::labels::PLUG) == Some(plug.as_str())
                && !removed_ok.contains(&(node.as_str(), o.record.name.as_str()))
        });
        if !copy_left {
            cx.store.release_port(&node, port, &plug)?;
        }
    }
    Ok(())
}

//! `fleetctl cordon NODE` / `uncordon NODE`: node conditions in the state store. Idempotent.
//! A running controller reads conditions on every reconcile, so no hand-off is needed.

use std::path::Path;

use anyhow::bail;

use super::GlobalOpts;
use super::common::{emit, open_store, resolve_manifests};
use crate::condition::Transition;
use crate::store::now_ms;

/// Marks `node` cordoned (`cordon = true`) or clears cordoned/draining/drained.
///
/// # Errors
/// Unknown node, store failures.
pub fn run(
    node: &str,
    file: Option<&Path>,
    cordon: bool,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(file, global)?;
    if !loaded.fleet.nodes.contains_key(node) {
        let known: Vec<&str> = loaded.fleet.nodes.keys().map(String::as_str).collect();
        bail!(
            "node {node:?} is not in the manifests (nodes: {})",
            known.join(", ")
        );
    }
    let store = open_store(global, &loaded.fleet.fleet.name)?;
    let transition = if cordon {
        Transition::Cordon
    } else {
        Transition::Uncordon
    };
    let who = super::common::holder(if cordon { "cordon" } else { "uncordon" });
    // The nodes record conditions set through other state files: learn them first (an
    // uncordon must undo a cordon made elsewhere), and record the change there after.
    let rt = super::common::runtime()?;
    let runtimes = super::common::connect_all(&loaded.fleet);
    let fleet_name = loaded.fleet.fleet.name.clone();
    let all: Vec<_> = runtimes.values().cloned().collect();
    let (before, after) = rt.block_on(async {
        let observed = crate::observe::observe(&fleet_name, &all, &Default::default()).await;
        crate::reconcile::sync_conditions_with(&store, &runtimes, &fleet_name, &who, &observed)
            .await?;
        let now = now_ms();
        let (before, after) = store.transition_node(node, now, transition)?;
        // Recorded on the nodes even when it changed nothing here: it is the newest word.
        if let Some(at) = store.schedule_times()?.get(node).copied() {
            let mark = crate::condition::Mark {
                schedule: after.schedule(),
                since_ms: at,
                by: who.clone(),
            };
            crate::reconcile::publish_mark(&runtimes, &fleet_name, node, &mark).await;
        }
        Ok::<_, anyhow::Error>((before, after))
    })?;
    let text = if before == after {
        if cordon {
            format!("node {node} already cordoned\n")
        } else {
            format!("node {node} already schedulable\n")
        }
    } else {
        let action = if cordon { "cordon" } else { "uncordon" };
        store.record_event(
            now_ms(),
            &who,
            action,
            Some(node),
            None,
            &format!("{action}ed"),
        )?;
        if cordon {
            format!(
                "node {node} cordoned: it takes no new work; what runs there stays (undo: fleetctl uncordon {node})\n"
            )
        } else {
            format!("node {node} uncordoned: it takes work again\n")
        }
    };
    emit(&text)?;
    Ok(0)
}

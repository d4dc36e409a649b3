//! Host ports handed over between steps on one node: who holds a port now, and the ordering
//! that lets the step needing it run after the step that frees it.

use super::{Action, Snapshot, Step};
use crate::container::{ContainerSpec, RunState};
use crate::observe::Observed;

/// A container that must bind a host port which another step on the same node frees (a removal,
/// or a replacement whose old container holds it — a port handed from one service to another in
/// one change) would fail to start while both run: it is moved right after that step, into its
/// group (a group runs in order).
pub(super) fn order_port_handovers(steps: &mut Vec<Step>, s: &Snapshot) {
    let held = |node: &str, name: &str| -> Vec<u16> {
        s.observed
            .containers(node)
            .iter()
            .find(|o| o.record.name == name)
            .map(|o| bound_ports(o).to_vec())
            .unwrap_or_default()
    };
    let needs = |st: &Step| -> Vec<u16> {
        match &st.action {
            Action::Create { spec } | Action::Replace { spec, .. } => {
                spec.ports.iter().map(|p| p.host_port).collect()
            }
            Action::Start { .. } => s
                .observed
                .containers(&st.node)
                .iter()
                .find(|o| o.record.name == st.container)
                .and_then(|o| o.details.as_ref())
                .map(|d| d.spec.ports.iter().map(|p| p.host_port).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    };
    // What each step frees, and where: the ports its removed container holds on its node (for
    // a move, the node it leaves).
    let frees = |st: &Step| -> (String, Vec<u16>) {
        match &st.action {
            Action::Remove { .. } => (st.node.clone(), held(&st.node, &st.container)),
            Action::Replace {
                old_node, old_name, ..
            } => (old_node.clone(), held(old_node, old_name)),
            _ => (String::new(), Vec::new()),
        }
    };
    let needers: Vec<(String, String)> = steps
        .iter()
        .filter(|st| !needs(st).is_empty())
        .map(|st| (st.node.clone(), st.container.clone()))
        .collect();
    for (node, name) in needers {
        let Some(j) = steps
            .iter()
            .position(|st| st.node == node && st.container == name)
        else {
            continue;
        };
        let wanted = needs(&steps[j]);
        let Some(f) = steps.iter().position(|st| {
            let (at, ports) = frees(st);
            at == node
                && st.container != name
                && st.group != steps[j].group
                && ports.iter().any(|p| wanted.contains(p))
        }) else {
            continue;
        };
        let mut moved = steps.remove(j);
        let f = if j < f { f - 1 } else { f };
        moved.group = steps[f].group.clone();
        moved.reason = format!(
            "{}; after {}, which frees its host port",
            moved.reason, steps[f].container
        );
        steps.insert(f + 1, moved);
    }
}

/// Host ports of `spec` that `o` holds now (it runs and publishes them).
pub(super) fn held_ports(o: &Observed, spec: &ContainerSpec) -> Vec<u16> {
    let mut held: Vec<u16> = spec
        .ports
        .iter()
        .map(|p| p.host_port)
        .filter(|p| bound_ports(o).contains(p))
        .collect();
    held.sort_unstable();
    held.dedup();
    held
}

/// Host ports `o` binds now: those it publishes while it runs.
fn bound_ports(o: &Observed) -> &[u16] {
    if o.record.state == RunState::Running {
        &o.record.host_ports
    } else {
        &[]
    }
}

pub(super) fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

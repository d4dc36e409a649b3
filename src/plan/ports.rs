//! Host ports handed over between steps on one node: who holds a port now, and the ordering
//! that lets the step needing it run after the step that frees it.

use super::{Action, Snapshot, Step};
use crate::container::{ContainerSpec, RunState};
use crate::observe::Observed;

/// A container that must bind a host port which another step on the same node frees (a removal,
/// or a replacement whose old container holds it — a port handed from one service to another in
/// one change) would fail to start while both run: it is moved right after that step, into its
/// group (a group runs in order). Then [`break_swaps`] orders what moving alone cannot.
pub(super) fn order_port_handovers(steps: &mut Vec<Step>, s: &Snapshot) {
    let ports = Ports { s };
    // Moving a step can leave behind one that was moved after it earlier (a port handed along
    // a chain: a takes b's, b takes c's): rounds repeat until nothing moves. A step already
    // after its freer in one group stays put; the bound only guards against a cycle of moves.
    for _ in 0..=steps.len() {
        if !move_needers(steps, &ports) {
            break;
        }
    }
    break_swaps(steps, &ports);
}

/// One round: each step that needs a port a step of another group frees on its node is moved
/// right after that step, into its group. Returns whether anything moved.
fn move_needers(steps: &mut Vec<Step>, ports: &Ports) -> bool {
    let mut moved_any = false;
    let needers: Vec<(String, String)> = steps
        .iter()
        .filter(|st| !ports.needs(st).is_empty())
        .map(|st| (st.node.clone(), st.container.clone()))
        .collect();
    for (node, name) in needers {
        let Some(j) = steps
            .iter()
            .position(|st| st.node == node && st.container == name)
        else {
            continue;
        };
        let wanted = ports.needs(&steps[j]);
        let Some(f) = steps.iter().position(|st| {
            let (at, freed) = ports.frees(st);
            at == node
                && st.container != name
                && st.group != steps[j].group
                && freed.iter().any(|p| wanted.contains(p))
        }) else {
            continue;
        };
        let mut moved = steps.remove(j);
        let f = if j < f { f - 1 } else { f };
        moved.group = steps[f].group.clone();
        let after = format!("; after {}, which frees its host port", steps[f].container);
        if !moved.reason.ends_with(&after) {
            moved.reason.push_str(&after);
        }
        steps.insert(f + 1, moved);
        moved_any = true;
    }
    moved_any
}

/// A step that needs a host port a later step of its own group frees cannot run first whatever
/// the order when that later step needs a port it holds — two services on one node swapping
/// host ports. The needer is split: its old container is removed where the step stood, and its
/// new one is created right after the step that frees its port. A needer that replaces nothing
/// on its node (a create, a start, a move here) is moved after that step instead.
fn break_swaps(steps: &mut Vec<Step>, ports: &Ports) {
    // Each round removes one such pair; the bound only guards against a cycle of moves.
    for _ in 0..steps.len() {
        let Some((j, k)) = (0..steps.len()).find_map(|j| {
            let wanted = ports.needs(&steps[j]);
            (j + 1..steps.len())
                .find(|&k| {
                    let (at, freed) = ports.frees(&steps[k]);
                    at == steps[j].node
                        && steps[k].group == steps[j].group
                        && freed.iter().any(|p| wanted.contains(p))
                })
                .map(|k| (j, k))
        }) else {
            return;
        };
        let needer = steps[j].clone();
        let after = steps[k].container.clone();
        match &needer.action {
            Action::Replace {
                old_node,
                old_id,
                old_name,
                old_grace_secs,
                spec,
                ..
            } if *old_node == needer.node => {
                steps[j] = Step {
                    container: old_name.clone(),
                    action: Action::Remove {
                        id: old_id.clone(),
                        grace_secs: *old_grace_secs,
                    },
                    reason: format!(
                        "{}; the old container goes first, as {after} needs its host port",
                        needer.reason
                    ),
                    ..needer.clone()
                };
                let create = Step {
                    action: Action::Create { spec: spec.clone() },
                    reason: format!(
                        "{}; after {after}, which frees its host port",
                        needer.reason
                    ),
                    ..needer
                };
                steps.insert(k + 1, create);
            }
            _ => {
                let mut moved = steps.remove(j);
                moved.reason =
                    format!("{}; after {after}, which frees its host port", moved.reason);
                // k shifted down by one with the removal: insert right after it.
                steps.insert(k, moved);
            }
        }
    }
}

/// Who holds, needs and frees which host ports, from the observation.
struct Ports<'a, 'b> {
    s: &'b Snapshot<'a>,
}

impl Ports<'_, '_> {
    /// Host ports the container `name` binds on `node` now.
    fn held(&self, node: &str, name: &str) -> Vec<u16> {
        self.s
            .observed
            .containers(node)
            .iter()
            .find(|o| o.record.name == name)
            .map(|o| bound_ports(o).to_vec())
            .unwrap_or_default()
    }

    /// Host ports the container a step starts must bind, on the step's node.
    fn needs(&self, st: &Step) -> Vec<u16> {
        match &st.action {
            Action::Create { spec } | Action::Replace { spec, .. } => {
                spec.ports.iter().map(|p| p.host_port).collect()
            }
            Action::Start { .. } => self
                .s
                .observed
                .containers(&st.node)
                .iter()
                .find(|o| o.record.name == st.container)
                .and_then(|o| o.details.as_ref())
                .map(|d| d.spec.ports.iter().map(|p| p.host_port).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// What a step frees, and where: the ports its removed container holds on its node (for a
    /// move, the node it leaves).
    fn frees(&self, st: &Step) -> (String, Vec<u16>) {
        match &st.action {
            Action::Remove { .. } => (st.node.clone(), self.held(&st.node, &st.container)),
            Action::Replace {
                old_node, old_name, ..
            } => (old_node.clone(), self.held(old_node, old_name)),
            _ => (String::new(), Vec::new()),
        }
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

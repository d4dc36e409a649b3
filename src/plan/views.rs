//! Per node: the scheduler's view of every node (availability, condition, committed memory,
//! ports held), and the service placement made over those views.

use std::collections::{BTreeMap, BTreeSet};

use super::{Identity, Snapshot, identity};
use crate::observe::NodeObservation;
use crate::schedule::{self, Availability, NodeView};

/// Builds the scheduler's node views from the snapshot (before services are placed).
pub fn node_views(s: &Snapshot) -> Vec<NodeView> {
    s.fleet
        .nodes
        .values()
        .map(|spec| {
            let obs = s.observed.nodes.get(&spec.name);
            let availability = match obs {
                Some(NodeObservation::Reachable { .. }) => Availability::Ready,
                Some(NodeObservation::Unreachable { error, .. }) if s.lost.contains(&spec.name) => {
                    Availability::Lost(error.clone())
                }
                Some(NodeObservation::Unreachable { error, .. }) => {
                    Availability::Unreachable(error.clone())
                }
                None => Availability::Unreachable("not observed".into()),
            };
            let (engine_memory, measured, foreign_ports) = match obs {
                Some(NodeObservation::Reachable {
                    engine,
                    measured_memory,
                    foreign_ports,
                    ..
                }) => (
                    engine.as_ref().map(|e| e.memory),
                    *measured_memory,
                    foreign_ports.clone(),
                ),
                _ => (None, None, BTreeSet::new()),
            };
            let mut condition = s.conditions.get(&spec.name).cloned().unwrap_or_default();
            if availability == Availability::Ready && s.lost.contains(&spec.name) {
                // Back after being lost: no new work before its stale copies are gone.
                if condition.schedule().takes_new_work() {
                    condition.set_schedule(crate::condition::Schedule::Cordoned);
                }
            }
            let mut v = NodeView::empty(spec, availability, condition, engine_memory);
            v.measured_memory = measured;
            v.used_ports = foreign_ports;
            for (node, port, _) in s.port_leases {
                if *node == spec.name {
                    v.used_ports.insert(*port);
                }
            }
            for p in s
                .plugs
                .iter()
                .filter(|p| p.node == spec.name && p.state.wants_running())
            {
                if let Some(class) = s.fleet.plug_classes.get(&p.class) {
                    v.plugs += 1;
                    v.committed_memory += class.resources.memory.0;
                }
            }
            v
        })
        .collect()
}

/// The scheduler's node views with every service replica placed (kept where it runs, new ones
/// placed), plus that placement. Plug placement decisions use these views, so they see the same
/// committed memory and ports as the planner.
pub fn scheduling_views(s: &Snapshot) -> (Vec<NodeView>, schedule::ServicePlacement) {
    // Where replicas are now: observed on reachable nodes, last known on unreachable ones.
    let mut current: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (key, node) in s.last_known {
        if !s.observed.is_reachable(node) {
            current.insert(key.clone(), node.clone());
        }
    }
    // A replica observed on several nodes (a lost node back with its stale copy, an interrupted
    // move) is where it was last placed, else on a node that is not lost: the other copies are
    // the extra ones.
    let mut observed_on: BTreeMap<(String, u32), Vec<&String>> = BTreeMap::new();
    for (node, _) in s
        .observed
        .nodes
        .iter()
        .filter(|(n, _)| s.observed.is_reachable(n))
    {
        for o in s.observed.containers(node) {
            if let Some(Identity::Service(svc, r)) = identity(o) {
                observed_on.entry((svc, r)).or_default().push(node);
            }
        }
    }
    for (key, nodes) in observed_on {
        let last = s.last_known.get(&key);
        let node = nodes
            .iter()
            .find(|n| Some(**n) == last)
            .or_else(|| nodes.iter().find(|n| !s.lost.contains(**n)))
            .unwrap_or(&nodes[0]);
        current.entry(key).or_insert_with(|| (*node).clone());
    }
    let mut views = node_views(s);
    let placement = schedule::place_services(s.fleet, &mut views, &current, s.evict);
    (views, placement)
}

//! Adoption (pure): plug containers of this fleet that the state store does not know — it was
//! started fresh (another working directory, a CI runner, a teammate's machine, a lost disk) —
//! are rebuilt into records from their labels and the engine's view instead of being taken for
//! deleted. A plug is removed only when the store recorded its deletion (a tombstone).

use std::collections::{BTreeMap, BTreeSet};

use crate::container::{RunState, labels};
use crate::manifest::DesiredFleet;
use crate::observe::{Observed, ObservedFleet};
use crate::store::{PlugRecord, PlugState};

/// What an observation holds that the store does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Plug records rebuilt from running or stopped containers, one per plug id.
    pub plugs: Vec<PlugRecord>,
    /// Plug containers that cannot be adopted, with why (no class in the manifests, no host
    /// port): left alone, never removed as deleted.
    pub skipped: Vec<(String, String)>,
}

impl Found {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.plugs.is_empty() && self.skipped.is_empty()
    }

    /// Whether the container named `name` is one this adoption keeps (adopted or skipped), so
    /// the planner must not remove it as a deleted plug's.
    pub fn keeps(&self, plug_id: &str) -> bool {
        self.plugs.iter().any(|p| p.id == plug_id)
            || self.skipped.iter().any(|(id, _)| id == plug_id)
    }
}

/// The plug containers of `fleet` seen in `observed` whose plug id is neither in `known` nor
/// in `tombstones`: each becomes a record on the node where it runs (a running copy wins over a
/// stopped one, then the first node by name), with its class, owner and host port from the
/// container, state running or stopped as the engine says, and `now` as its activity (the
/// real last activity is not on the node). A container whose class is not in the manifests, or
/// whose host port cannot be read, is skipped with the reason.
pub fn unknown_plugs(
    fleet: &DesiredFleet,
    observed: &ObservedFleet,
    known: &BTreeSet<&str>,
    tombstones: &BTreeSet<String>,
    now: i64,
) -> Found {
    // plug id → candidate copies (node, container)
    let mut copies: BTreeMap<&str, Vec<(&str, &Observed)>> = BTreeMap::new();
    for node in observed.nodes.keys() {
        if !observed.is_reachable(node) {
            continue;
        }
        for o in observed.containers(node) {
            let r = &o.record;
            if r.label(labels::FLEET) != Some(fleet.fleet.name.as_str())
                || r.label(labels::KIND) != Some("plug")
            {
                continue;
            }
            let Some(id) = r.label(labels::PLUG) else {
                continue;
            };
            if known.contains(id) || tombstones.contains(id) {
                continue;
            }
            copies.entry(id).or_default().push((node.as_str(), o));
        }
    }
    let mut found = Found::default();
    for (id, mut list) in copies {
        // Running first, then by node name (the map iterates nodes in order already).
        list.sort_by_key(|(_, o)| o.record.state != RunState::Running);
        let (node, o) = list[0];
        let r = &o.record;
        let class = r.label(labels::PLUG_CLASS).unwrap_or_default();
        let Some(spec) = fleet.plug_classes.get(class) else {
            found.skipped.push((
                id.to_string(),
                format!("plug class {class:?} is not in the manifests"),
            ));
            continue;
        };
        // The listing has ports only for running containers; inspect has the configured ones.
        let port = o
            .details
            .as_ref()
            .and_then(|d| {
                d.spec
                    .ports
                    .iter()
                    .find(|p| p.container_port == spec.port)
                    .map(|p| p.host_port)
            })
            .or_else(|| r.host_ports.first().copied());
        let Some(host_port) = port else {
            found
                .skipped
                .push((id.to_string(), "its host port cannot be read".into()));
            continue;
        };
        found.plugs.push(PlugRecord {
            id: id.to_string(),
            class: class.to_string(),
            owner: r.label(labels::OWNER).unwrap_or_default().to_string(),
            node: node.to_string(),
            host_port,
            state: if r.state == RunState::Running {
                PlugState::Running
            } else {
                PlugState::Stopped
            },
            created_ms: now,
            last_activity_ms: now,
            message: None,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{ContainerDetails, ContainerRecord};
    use crate::observe::NodeObservation;

    const FLEET: &str = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: aims}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec: {capacity: {cpus: 2, memory: 4GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2}
spec: {capacity: {cpus: 2, memory: 4GiB}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: agent:1, resources: {memory: 64MiB}, port: 8080, hostPorts: 51000-51099}
";

    fn fleet() -> DesiredFleet {
        crate::manifest::parse(&[crate::manifest::Source {
            name: "f.yaml".into(),
            text: FLEET.into(),
        }])
        .unwrap()
        .fleet
    }

    fn plug(id: &str, class: &str, state: RunState, port: u16) -> Observed {
        let labels: BTreeMap<String, String> = [
            (labels::FLEET, "aims"),
            (labels::KIND, "plug"),
            (labels::PLUG, id),
            (labels::PLUG_CLASS, class),
            (labels::OWNER, "ada"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let record = ContainerRecord {
            id: format!("c-{id}"),
            name: format!("aims-plug-{id}"),
            image: "agent:1".into(),
            labels,
            state,
            health: None,
            created: 0,
            // The engine lists ports of running containers only.
            host_ports: if state == RunState::Running {
                vec![port]
            } else {
                vec![]
            },
            networks: Vec::new(),
        };
        let fleet = fleet();
        let spec = crate::desired::plug_container(
            &fleet,
            &fleet.plug_classes["agent"],
            &crate::desired::PlugIdentity {
                id,
                owner: "ada",
                node: "node1",
                host_port: port,
            },
        );
        Observed {
            details: Some(ContainerDetails {
                record: record.clone(),
                spec,
                restart_count: 0,
                exit_code: 0,
                oom_killed: false,
                started_at: None,
                finished_at: None,
            }),
            record,
            memory_used: None,
        }
    }

    fn observed(nodes: Vec<(&str, Vec<Observed>)>) -> ObservedFleet {
        let mut o = ObservedFleet::default();
        for (n, containers) in nodes {
            o.nodes.insert(
                n.to_string(),
                NodeObservation::Reachable {
                    containers,
                    foreign_ports: Default::default(),
                    foreign_containers: 0,
                    engine: None,
                    measured_memory: None,
                },
            );
        }
        o
    }

    #[test]
    fn unknown_plugs_are_rebuilt_from_labels_and_ports_and_known_or_deleted_ones_are_not() {
        let fleet = fleet();
        let seen = observed(vec![
            (
                "node1",
                vec![
                    plug("a1", "agent", RunState::Running, 51000),
                    plug("k1", "agent", RunState::Running, 51001),
                ],
            ),
            (
                "node2",
                vec![
                    plug("s1", "agent", RunState::Exited, 51007),
                    plug("d1", "agent", RunState::Running, 51002),
                    plug("x1", "gone", RunState::Running, 51003),
                ],
            ),
        ]);
        let known = BTreeSet::from(["k1"]);
        let tombstones = BTreeSet::from(["d1".to_string()]);
        let found = unknown_plugs(&fleet, &seen, &known, &tombstones, 42);
        let got: Vec<(&str, &str, u16, PlugState, &str)> = found
            .plugs
            .iter()
            .map(|p| {
                (
                    p.id.as_str(),
                    p.node.as_str(),
                    p.host_port,
                    p.state,
                    p.owner.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a1", "node1", 51000, PlugState::Running, "ada"),
                ("s1", "node2", 51007, PlugState::Stopped, "ada"),
            ]
        );
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].0, "x1");
        assert!(found.keeps("x1") && found.keeps("a1") && !found.keeps("d1"));
    }

    #[test]
    fn of_two_copies_of_an_unknown_plug_the_running_one_is_adopted() {
        let fleet = fleet();
        let seen = observed(vec![
            ("node1", vec![plug("m1", "agent", RunState::Exited, 51000)]),
            ("node2", vec![plug("m1", "agent", RunState::Running, 51004)]),
        ]);
        let found = unknown_plugs(&fleet, &seen, &BTreeSet::new(), &BTreeSet::new(), 0);
        assert_eq!(found.plugs.len(), 1);
        assert_eq!(
            (found.plugs[0].node.as_str(), found.plugs[0].host_port),
            ("node2", 51004)
        );
    }
}

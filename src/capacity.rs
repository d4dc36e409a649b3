//! Capacity arithmetic and the capacity report (pure).
//!
//! Per node: allocatable memory and CPU (capacity − reserved), the limits and reservations of
//! what is placed there, headroom, and how many more plug instances of each class fit. The free
//! plug slots are not computed here: they are counted on the scheduler's own node views with its
//! own filters ([`crate::schedule::plug_room`]), so a cordoned, draining or NotReady node shows
//! none, and every limit is the scheduler's reason. This is the table the operators'
//! hand-written capacity plans compute.
//!
//! Inputs are values: the desired fleet, and optionally what was observed on the nodes. With
//! manifests alone, a service counts as placed on a node only where its placement forces it
//! there; the rest is reported as unplaced, with why.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::container::labels;
use crate::disk::{DiskStatus, NodeDisk};
use crate::manifest::validate::forced_replicas;
use crate::manifest::{Bytes, DesiredFleet, MilliCpus, Percent, PlugClassSpec};
use crate::observe::{NodeObservation as Seen, ObservedFleet};
use crate::schedule::{Availability, NodeView, PLUG_ROOM_BOUND, assign_replica, plug_room};
use crate::store::{NodeCondition, PlugRecord};

/// What was observed on one node (all optional: the report works from manifests alone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeObservation {
    /// CPUs the engine reports (used when the manifest leaves capacity.cpus out).
    pub engine_cpus: Option<MilliCpus>,
    /// Memory the engine reports (used when the manifest leaves capacity.memory out).
    pub engine_memory: Option<Bytes>,
    /// Replicas of each service actually running (or created) there.
    pub services: BTreeMap<String, u32>,
    /// Plug instances there, per class.
    pub plugs: BTreeMap<String, u32>,
    /// Measured memory use of the node's containers.
    pub measured_memory: Option<Bytes>,
}

/// A service's share of one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacedService {
    /// Service name.
    pub name: String,
    /// Replicas on this node.
    pub replicas: u32,
    /// Memory limit of all those replicas together.
    pub memory: Bytes,
    /// Memory reservation of all those replicas together.
    pub memory_reservation: Bytes,
    /// CPU ceiling of all those replicas together: their `cpus`, else the size of their `cpuset`
    /// (those with neither count 0).
    pub cpus: MilliCpus,
}

/// How many more instances of one plug class fit on a node, and what limits it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlugSlots {
    /// Plug class.
    pub class: String,
    /// More instances that fit.
    pub free: u32,
    /// What bounds `free`: the scheduler's reason for refusing one more (`8/8 plugs`,
    /// `memory 7.2GiB/6.8GiB allowed`, `cordoned`, `no free host port in 51000-51099`, ...).
    pub limited_by: String,
}

/// One node's row of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeCapacity {
    /// Node name.
    pub node: String,
    /// Its `tier` label (or empty).
    pub tier: String,
    /// Memory capacity (declared, else from the engine).
    pub capacity_memory: Option<Bytes>,
    /// CPU capacity (declared, else from the engine).
    pub capacity_cpus: Option<MilliCpus>,
    /// Reserved memory.
    pub reserved_memory: Bytes,
    /// Reserved CPUs.
    pub reserved_cpus: MilliCpus,
    /// Allocatable memory (capacity − reserved).
    pub allocatable_memory: Option<Bytes>,
    /// Allocatable CPUs.
    pub allocatable_cpus: Option<MilliCpus>,
    /// Services placed here.
    pub services: Vec<PlacedService>,
    /// Plug instances here.
    pub plugs: u32,
    /// Memory limits of those plugs.
    pub plug_memory: Bytes,
    /// Memory limits of everything placed here.
    pub memory_limits: Bytes,
    /// Memory reservations of everything placed here.
    pub memory_reservations: Bytes,
    /// CPU quotas of everything placed here.
    pub cpu_limits: MilliCpus,
    /// Allocatable memory minus limits (negative = overcommitted).
    pub headroom_memory: Option<i64>,
    /// Allocatable CPUs minus quotas, in thousandths (negative = overcommitted).
    pub headroom_millicpus: Option<i64>,
    /// Measured memory use, when observed.
    pub measured_memory: Option<Bytes>,
    /// Free plug slots per class.
    pub plug_slots: Vec<PlugSlots>,
    /// Declared `capacity.disk`.
    pub capacity_disk: Option<Bytes>,
    /// The node's disk as measured ([`CapacityReport::set_disks`]): live reports, nodes that
    /// answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStatus>,
}

/// A service (or part of one) that the manifests leave unplaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnplacedService {
    /// Service name.
    pub name: String,
    /// Replicas not placed on a particular node.
    pub replicas: u32,
    /// Memory limit per replica.
    pub memory: Bytes,
    /// Why: the nodes it may choose among.
    pub why: String,
}

/// Totals for one plug class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassCapacity {
    /// Class name.
    pub class: String,
    /// Policy governing it.
    pub policy: String,
    /// Memory limit per instance.
    pub memory: Bytes,
    /// Per-node cap (None = none).
    pub max_per_node: Option<u32>,
    /// Memory watermark.
    pub watermark: Percent,
    /// Instances running now.
    pub instances: u32,
    /// More instances that fit across the fleet (sum over nodes).
    pub free: u32,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityReport {
    /// Fleet name.
    pub fleet: String,
    /// Whether node data came from the engines (true) or from manifests only.
    pub observed: bool,
    /// Per node.
    pub nodes: Vec<NodeCapacity>,
    /// Services whose placement leaves a choice.
    pub unplaced: Vec<UnplacedService>,
    /// Per plug class.
    pub classes: Vec<ClassCapacity>,
    /// Nodes that could not be observed (live reports), with why; they are shown from
    /// manifests only.
    pub unreachable: BTreeMap<String, String>,
}

impl CapacityReport {
    /// Sets the disk of each node `measured` has an answer for ([`crate::disk::measure_all`]),
    /// judged against `watermark` (the fleet's `diskHighWatermark`); the other nodes keep none.
    pub fn set_disks(
        &mut self,
        measured: &BTreeMap<String, Result<NodeDisk, String>>,
        watermark: Option<Percent>,
    ) {
        for n in &mut self.nodes {
            n.disk = measured
                .get(&n.node)
                .map(|d| DiskStatus::from_measured(d, watermark));
        }
    }
}

/// Builds the report. `observed` maps node names to observations; nodes absent from it are
/// judged from manifests alone (services placed only where their placement forces them).
/// `views` are the scheduler's node views (see [`manifest_views`] when nothing was observed):
/// free plug slots are counted on them with the scheduler's own filters, so the report never
/// promises a slot `plug create` would refuse.
pub fn report(
    fleet: &DesiredFleet,
    observed: Option<&BTreeMap<String, NodeObservation>>,
    views: &[NodeView],
) -> CapacityReport {
    let empty = NodeObservation::default();
    let mut nodes = Vec::new();
    let mut placed_total: BTreeMap<&str, u32> = BTreeMap::new();

    // Placement of services: observed, else forced by the manifests.
    let mut per_node_services: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
    match observed {
        Some(obs) => {
            for (node, o) in obs {
                for (svc, n) in &o.services {
                    if let Some((name, _)) = fleet.services.get_key_value(svc) {
                        per_node_services
                            .entry(
                                fleet
                                    .nodes
                                    .get_key_value(node)
                                    .map_or("", |(k, _)| k.as_str()),
                            )
                            .or_default()
                            .insert(name.as_str(), *n);
                    }
                }
            }
        }
        None => {
            for svc in fleet.services.values() {
                for (node, n) in forced_replicas(svc, &fleet.nodes) {
                    per_node_services
                        .entry(node)
                        .or_default()
                        .insert(svc.name.as_str(), n);
                }
            }
        }
    }

    for node in fleet.nodes.values() {
        let o = observed.and_then(|m| m.get(&node.name)).unwrap_or(&empty);
        let capacity_memory = node.capacity_memory.or(o.engine_memory);
        let capacity_cpus = node.capacity_cpus.or(o.engine_cpus);
        let allocatable_memory = node.allocatable_memory_or(o.engine_memory);
        let allocatable_cpus = node.allocatable_cpus_or(o.engine_cpus);

        let mut services = Vec::new();
        for (name, n) in per_node_services
            .get(node.name.as_str())
            .into_iter()
            .flatten()
        {
            let svc = &fleet.services[*name];
            *placed_total.entry(name).or_default() += n;
            services.push(PlacedService {
                name: name.to_string(),
                replicas: *n,
                memory: Bytes(svc.resources.memory.0 * u64::from(*n)),
                memory_reservation: Bytes(
                    svc.resources.memory_reservation.map_or(0, |b| b.0) * u64::from(*n),
                ),
                cpus: MilliCpus(svc.resources.cpu_ceiling().map_or(0, |c| c.0) * u64::from(*n)),
            });
        }
        let plugs: u32 = o.plugs.values().sum();
        let plug_memory: u64 = o
            .plugs
            .iter()
            .filter_map(|(c, n)| {
                fleet
                    .plug_classes
                    .get(c)
                    .map(|c| c.resources.memory.0 * u64::from(*n))
            })
            .sum();
        let plug_reservations: u64 = o
            .plugs
            .iter()
            .filter_map(|(c, n)| {
                fleet
                    .plug_classes
                    .get(c)
                    .map(|c| c.resources.memory_reservation.map_or(0, |b| b.0) * u64::from(*n))
            })
            .sum();
        let plug_cpus: u64 = o
            .plugs
            .iter()
            .filter_map(|(c, n)| {
                fleet
                    .plug_classes
                    .get(c)
                    .map(|c| c.resources.cpus.map_or(0, |x| x.0) * u64::from(*n))
            })
            .sum();
        let memory_limits = Bytes(services.iter().map(|s| s.memory.0).sum::<u64>() + plug_memory);
        let memory_reservations =
            Bytes(services.iter().map(|s| s.memory_reservation.0).sum::<u64>() + plug_reservations);
        let cpu_limits = MilliCpus(services.iter().map(|s| s.cpus.0).sum::<u64>() + plug_cpus);

        let view = views.iter().find(|v| v.name == node.name);
        let plug_slots = fleet
            .plug_classes
            .values()
            .map(|class| slots_for(view, fleet, class))
            .collect();

        nodes.push(NodeCapacity {
            node: node.name.clone(),
            tier: node.labels.get("tier").cloned().unwrap_or_default(),
            capacity_memory,
            capacity_cpus,
            reserved_memory: node.reserved_memory,
            reserved_cpus: node.reserved_cpus,
            allocatable_memory,
            allocatable_cpus,
            services,
            plugs,
            plug_memory: Bytes(plug_memory),
            memory_limits,
            memory_reservations,
            cpu_limits,
            headroom_memory: allocatable_memory.map(|a| a.0 as i64 - memory_limits.0 as i64),
            headroom_millicpus: allocatable_cpus.map(|a| a.0 as i64 - cpu_limits.0 as i64),
            measured_memory: o.measured_memory,
            plug_slots,
            capacity_disk: node.capacity_disk,
            disk: None,
        });
    }

    let unplaced = fleet
        .services
        .values()
        .filter_map(|svc| {
            let placed = placed_total.get(svc.name.as_str()).copied().unwrap_or(0);
            let left = svc.replicas.saturating_sub(placed);
            (left > 0).then(|| {
                let allowed: Vec<&str> =
                    fleet.allowed_nodes(svc).map(|n| n.name.as_str()).collect();
                let why = if observed.is_some() {
                    "not running on any node".to_string()
                } else if allowed.is_empty() {
                    "no node is allowed".to_string()
                } else {
                    format!(
                        "may run on {} (placement leaves a choice)",
                        allowed.join(", ")
                    )
                };
                UnplacedService {
                    name: svc.name.clone(),
                    replicas: left,
                    memory: svc.resources.memory,
                    why,
                }
            })
        })
        .collect();

    let classes = fleet
        .plug_classes
        .values()
        .map(|class| {
            let policy = fleet.policy_for(class);
            ClassCapacity {
                class: class.name.clone(),
                policy: class.policy.clone().unwrap_or_else(|| "(none)".to_string()),
                memory: class.resources.memory,
                max_per_node: policy.max_plugs_per_node,
                watermark: policy.memory_high_watermark,
                instances: observed
                    .map(|m| {
                        m.values()
                            .map(|o| o.plugs.get(&class.name).copied().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0),
                free: nodes
                    .iter()
                    .flat_map(|n| n.plug_slots.iter())
                    .filter(|s| s.class == class.name)
                    .map(|s| s.free)
                    .sum(),
            }
        })
        .collect();

    CapacityReport {
        fleet: fleet.fleet.name.clone(),
        observed: observed.is_some(),
        nodes,
        unplaced,
        classes,
        unreachable: BTreeMap::new(),
    }
}

/// The report of a fleet as observed, with free plug slots counted on the scheduler's views
/// built as `plug create` builds them (state read after the observation). Plugs running that
/// the store does not know count as what they are (they will be adopted), not as free room.
///
/// # Errors
/// Store failures.
pub fn live(
    fleet: &DesiredFleet,
    store: &crate::store::Store,
    observed: &ObservedFleet,
) -> Result<CapacityReport, crate::store::StoreError> {
    let mut plugs = store.plugs()?;
    let mut leases = store.port_leases()?;
    let (conditions, _) = store.conditions_with_marks(&observed.marks, "capacity")?;
    let last_known = store.replica_nodes()?;
    let known: std::collections::BTreeSet<&str> = plugs.iter().map(|p| p.id.as_str()).collect();
    let found = crate::adopt::unknown_plugs(
        fleet,
        observed,
        &known,
        &observed.tombstoned(store, crate::store::now_ms())?,
        crate::store::now_ms(),
    );
    plugs.extend(found.plugs.iter().cloned());
    leases.extend(
        found
            .plugs
            .iter()
            .map(|p| (p.node.clone(), p.host_port, p.id.clone())),
    );
    let (views, _) = crate::plan::scheduling_views(&crate::plan::Snapshot {
        fleet,
        observed,
        conditions: &conditions,
        plugs: &plugs,
        port_leases: &leases,
        last_known: &last_known,
        lost: &std::collections::BTreeSet::new(),
        evict: &std::collections::BTreeSet::new(),
    });
    Ok(observed_report(fleet, observed, &plugs, &views))
}

/// The report from one observation of the fleet (the one the scheduler's `views` were built
/// from): replicas where their containers are, plugs as recorded (those meant to run), engine
/// facts and measured memory as observed. Unreachable nodes are listed as such and shown from
/// the manifests.
pub fn observed_report(
    fleet: &DesiredFleet,
    observed: &ObservedFleet,
    plugs: &[PlugRecord],
    views: &[NodeView],
) -> CapacityReport {
    let mut obs = BTreeMap::new();
    let mut unreachable = BTreeMap::new();
    for (node, seen) in &observed.nodes {
        let mut o = NodeObservation::default();
        for p in plugs
            .iter()
            .filter(|p| &p.node == node && p.state.wants_running())
        {
            *o.plugs.entry(p.class.clone()).or_default() += 1;
        }
        match seen {
            Seen::Reachable {
                containers,
                engine,
                measured_memory,
                ..
            } => {
                for c in containers {
                    if c.kind() == Some("service")
                        && let Some(svc) = c.record.label(labels::SERVICE)
                    {
                        *o.services.entry(svc.to_string()).or_default() += 1;
                    }
                }
                o.engine_memory = engine.as_ref().map(|e| Bytes(e.memory));
                o.engine_cpus = engine.as_ref().map(|e| MilliCpus(e.cpus * 1000));
                o.measured_memory = measured_memory.map(Bytes);
            }
            Seen::Unreachable { error, .. } => {
                unreachable.insert(node.clone(), error.clone());
            }
        }
        obs.insert(node.clone(), o);
    }
    let mut r = report(fleet, Some(&obs), views);
    r.unreachable = unreachable;
    r
}

/// The scheduler's node views as the manifests alone give them (no node contacted): every node
/// taken as Ready, with its recorded `conditions`, the memory and host ports of the service
/// replicas its placement forces there, and nothing else.
pub fn manifest_views(
    fleet: &DesiredFleet,
    conditions: &BTreeMap<String, NodeCondition>,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = fleet
        .nodes
        .values()
        .map(|n| {
            let condition = conditions.get(&n.name).cloned().unwrap_or_default();
            NodeView::empty(n, Availability::Ready, condition, None)
        })
        .collect();
    for svc in fleet.services.values() {
        for (node, n) in forced_replicas(svc, &fleet.nodes) {
            if let Some(v) = views.iter_mut().find(|v| v.name == node) {
                for _ in 0..n {
                    assign_replica(v, svc);
                }
            }
        }
    }
    views
}

/// The free plug slots of `class` on the node `view` shows: what the scheduler's own filters let
/// it place there, one plug after another, and the scheduler's reason for refusing the next.
fn slots_for(view: Option<&NodeView>, fleet: &DesiredFleet, class: &PlugClassSpec) -> PlugSlots {
    let (free, limited_by) = match view {
        None => (0, "not seen by the scheduler".to_string()),
        Some(v) => {
            let room = plug_room(v, class, &fleet.policy_for(class), PLUG_ROOM_BOUND);
            let why = room
                .limit
                .map_or_else(|| format!("counted up to {PLUG_ROOM_BOUND}"), |r| r.reason);
            (room.free, why)
        }
    };
    PlugSlots {
        class: class.name.clone(),
        free,
        limited_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Source, parse};

    fn fleet(text: &str) -> DesiredFleet {
        parse(&[Source {
            name: "t.yaml".into(),
            text: text.into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
    }

    const SEED_LIKE: &str = r#"
apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 8GiB}, reserved: {memory: 512MiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {capacity: {cpus: 2, memory: 4GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  placement: {nodes: [node1]}
  resources: {memory: 3GiB, cpus: 1}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: worker}
spec:
  image: worker:1
  resources: {memory: 1GiB}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec:
  image: plug:1
  resources: {memory: 512MiB}
  port: 8080
  hostPorts: 51000-51999
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec:
  maxPlugsPerNode: 8
  memoryHighWatermark: 85%
  tiers: [{nodeSelector: {tier: primary}}, {nodeSelector: {tier: secondary}}]
"#;

    fn offline(f: &DesiredFleet) -> CapacityReport {
        report(f, None, &manifest_views(f, &BTreeMap::new()))
    }

    #[test]
    fn pinned_services_count_and_free_ones_are_unplaced() {
        let r = offline(&fleet(SEED_LIKE));
        let n1 = &r.nodes[0];
        assert_eq!(n1.allocatable_memory, Some(Bytes(7680 << 20)));
        assert_eq!(n1.memory_limits, Bytes(3 << 30));
        assert_eq!(n1.headroom_memory, Some((7680 - 3072) << 20));
        assert_eq!(n1.headroom_millicpus, Some(3000));
        assert_eq!(r.unplaced.len(), 1);
        assert_eq!(r.unplaced[0].name, "worker");
        assert!(
            r.unplaced[0].why.contains("node1, node2"),
            "{}",
            r.unplaced[0].why
        );
    }

    #[test]
    fn plug_slots_take_the_tightest_bound() {
        let r = offline(&fleet(SEED_LIKE));
        // node1: 85% of 7.5GiB = 6.375GiB; minus 3GiB limits = 3.375GiB → 6 plugs of 512MiB
        // (cap 8 is looser).
        assert_eq!(r.nodes[0].plug_slots[0].free, 6);
        assert!(r.nodes[0].plug_slots[0].limited_by.starts_with("memory"));
        // node2: 85% of 4GiB = 3.4GiB → 6 plugs.
        assert_eq!(r.nodes[1].plug_slots[0].free, 6);
        assert_eq!(r.classes[0].free, 12);
    }

    #[test]
    fn observed_plugs_count_against_cap_and_memory() {
        let f = fleet(SEED_LIKE);
        let mut obs = BTreeMap::new();
        obs.insert(
            "node2".to_string(),
            NodeObservation {
                plugs: BTreeMap::from([("agent".to_string(), 5)]),
                measured_memory: Some(Bytes(1 << 30)),
                ..Default::default()
            },
        );
        let mut views = manifest_views(&f, &BTreeMap::new());
        views[1].plugs = 5;
        views[1].committed_memory = (5 * 512) << 20;
        views[1].measured_memory = Some(1 << 30);
        let r = report(&f, Some(&obs), &views);
        let n2 = &r.nodes[1];
        assert_eq!(n2.plugs, 5);
        assert_eq!(n2.plug_memory, Bytes((5 * 512) << 20));
        assert_eq!(n2.plug_slots[0].free, 1); // 3.4GiB allowed − 2.5GiB = 0.9GiB → 1
        obs.get_mut("node2").unwrap().measured_memory = Some(Bytes(4 << 30));
        views[1].measured_memory = Some(4 << 30);
        let r = report(&f, Some(&obs), &views);
        assert_eq!(r.nodes[1].plug_slots[0].free, 0);
        assert!(r.nodes[1].plug_slots[0].limited_by.starts_with("measured"));
    }

    #[test]
    fn nodes_the_scheduler_refuses_have_no_slots_and_say_why() {
        let f = fleet(SEED_LIKE);
        let mut conditions = BTreeMap::new();
        conditions.insert(
            "node2".to_string(),
            NodeCondition::with_schedule(crate::condition::Schedule::Cordoned),
        );
        let r = report(&f, None, &manifest_views(&f, &conditions));
        assert_eq!(r.nodes[1].plug_slots[0].free, 0);
        assert_eq!(r.nodes[1].plug_slots[0].limited_by, "cordoned");
        assert_eq!(r.classes[0].free, 6, "node1's slots only");

        conditions.insert(
            "node1".to_string(),
            NodeCondition::with_schedule(crate::condition::Schedule::Draining),
        );
        let mut views = manifest_views(&f, &conditions);
        views[1].condition = NodeCondition::default();
        views[1].availability = Availability::Lost("ssh: connection refused".into());
        let r = report(&f, None, &views);
        assert_eq!(r.nodes[0].plug_slots[0].limited_by, "draining");
        assert_eq!(
            r.nodes[1].plug_slots[0].limited_by,
            "not ready (ssh: connection refused)"
        );
        assert_eq!(r.classes[0].free, 0);
    }

    #[test]
    fn the_slot_limit_is_the_schedulers_reason() {
        let mut f = fleet(SEED_LIKE);
        f.plug_classes.get_mut("agent").unwrap().resources.memory = Bytes(64 << 20);
        let r = offline(&f);
        // 8 plugs of 64MiB fit in memory on both nodes: the per-node cap stops them.
        assert_eq!(r.nodes[0].plug_slots[0].free, 8);
        assert_eq!(r.nodes[0].plug_slots[0].limited_by, "8/8 plugs");
        f.policies.clear();
        let r = offline(&f);
        assert!(
            r.nodes[0].plug_slots[0].limited_by.starts_with("memory"),
            "{:?}",
            r.nodes[0].plug_slots[0]
        );
    }
}

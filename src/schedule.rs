//! Placement (pure): ordered, named filters, then scoring, tiers in order. Every rejection
//! carries a reason, and the reasons add up to a per-node [`Diagnosis`]
//! ("node1: 8/8 plugs; node2: memory 3.9GiB/3.8GiB allowed; node3: cordoned").
//!
//! The same node view and filters serve plug instances ([`place_plug`]) and service replicas
//! ([`place_services`]). Everything here works on values passed in: no clock, no I/O, no
//! randomness; ties break by node name, so equal inputs give equal placements.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::manifest::validate::effective_max_per_node;
use crate::manifest::{
    Bytes, DesiredFleet, NodeSpec, Percent, PlugClassSpec, PolicySpec, ServiceSpec, Spread, Tier,
};
use crate::store::NodeCondition;

/// Whether a node can be worked with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum Availability {
    /// Reachable.
    Ready,
    /// Unreachable for now: what it runs is kept (unreachable is not absent), it takes no new
    /// work.
    Unreachable(String),
    /// NotReady: unreachable longer than `nodeLostAfter`; its work is placed elsewhere.
    Lost(String),
}

/// What the scheduler knows about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Reachability.
    pub availability: Availability,
    /// Cordon / drain conditions.
    pub condition: NodeCondition,
    /// Allocatable memory (declared capacity, else the engine's, minus reserved); `None` when
    /// unknown (nothing is placed on a node of unknown size).
    pub allocatable_memory: Option<u64>,
    /// Memory limits of every fleet container assigned to it.
    pub committed_memory: u64,
    /// Measured memory use, when known.
    pub measured_memory: Option<u64>,
    /// Plug instances assigned to it (all classes).
    pub plugs: u32,
    /// Host ports taken on it: by any container, and by plug port leases.
    pub used_ports: BTreeSet<u16>,
    /// Replicas of each service assigned to it.
    pub replicas: BTreeMap<String, u32>,
}

impl NodeView {
    /// A view of `spec` with nothing on it.
    pub fn empty(
        spec: &NodeSpec,
        availability: Availability,
        condition: NodeCondition,
        engine_memory: Option<u64>,
    ) -> Self {
        NodeView {
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            availability,
            condition,
            allocatable_memory: spec
                .allocatable_memory_or(engine_memory.map(Bytes))
                .map(|b| b.0),
            committed_memory: 0,
            measured_memory: None,
            plugs: 0,
            used_ports: BTreeSet::new(),
            replicas: BTreeMap::new(),
        }
    }

    fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.has_label(k, v))
    }

    /// `labels.get(k) == Some(v)` (keys are unique), by a scan with an inlined comparison: a
    /// placement asks this of every node, and a map lookup calls `memcmp` per key.
    fn has_label(&self, k: &str, v: &str) -> bool {
        self.labels
            .iter()
            .any(|(lk, lv)| same(lk, k) && same(lv, v))
    }

    /// Share of allocatable memory committed, in millionths (for scoring).
    fn load(&self) -> u64 {
        match self.allocatable_memory {
            // In 64 bits when the product fits (below 18 TB committed): the same quotient
            // without a 128-bit division.
            Some(a) if a > 0 => match self.committed_memory.checked_mul(1_000_000) {
                Some(product) => product / a,
                None => (u128::from(self.committed_memory) * 1_000_000 / u128::from(a)) as u64,
            },
            _ => u64::MAX,
        }
    }
}

/// String equality without a library call (short strings: label keys and values).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// Why a node was rejected: the named filter and its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// Node.
    pub node: String,
    /// Filter name, e.g. `max-plugs`, `memory-limits`.
    pub filter: &'static str,
    /// Explanation, e.g. `8/8 plugs`.
    pub reason: String,
}

/// Why nothing fits: one rejection per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Diagnosis {
    /// Per node, in node order.
    pub rejections: Vec<Rejection>,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rejections.is_empty() {
            return write!(f, "no nodes");
        }
        let parts: Vec<String> = self
            .rejections
            .iter()
            .map(|r| format!("{}: {}", r.node, r.reason))
            .collect();
        write!(f, "{}", parts.join("; "))
    }
}

/// Filter names (stable: they appear in JSON output and metrics).
pub mod filters {
    /// The node is reachable.
    pub const READY: &str = "node-ready";
    /// Not cordoned, draining or drained.
    pub const SCHEDULABLE: &str = "schedulable";
    /// Allowed by the service's placement.
    pub const PLACEMENT: &str = "placement";
    /// Per-node replica cap of a service.
    pub const MAX_PER_NODE: &str = "max-per-node";
    /// Per-node plug cap of a policy.
    pub const MAX_PLUGS: &str = "max-plugs";
    /// Memory limits under the watermark of allocatable memory.
    pub const MEMORY_LIMITS: &str = "memory-limits";
    /// Measured memory under the watermark.
    pub const MEASURED_MEMORY: &str = "measured-memory";
    /// A free host port.
    pub const HOST_PORT: &str = "host-port";
    /// In a tier of the plug's placement policy.
    pub const TIER: &str = "tier";
    /// Not hot: CPU above the policy's `cpuHighWatermark` for its `for` (plugs only).
    pub const CPU_HOT: &str = "cpu-hot";
}

fn reject(node: &NodeView, filter: &'static str, reason: String) -> Rejection {
    Rejection {
        node: node.name.clone(),
        filter,
        reason,
    }
}

/// Cheap filters first: readiness and conditions, which need no arithmetic.
fn check_available(node: &NodeView) -> Result<(), Rejection> {
    match &node.availability {
        Availability::Ready => {}
        Availability::Unreachable(why) => {
            return Err(reject(node, filters::READY, format!("unreachable ({why})")));
        }
        Availability::Lost(why) => {
            return Err(reject(node, filters::READY, format!("not ready ({why})")));
        }
    }
    let schedule = node.condition.schedule();
    if schedule.takes_new_work() {
        Ok(())
    } else {
        Err(reject(
            node,
            filters::SCHEDULABLE,
            schedule.word().to_string(),
        ))
    }
}

/// Memory: the limits of everything assigned plus `extra` must fit under `watermark` of
/// allocatable memory; and measured use, when known, must be under it too.
fn check_memory(node: &NodeView, extra: u64, watermark: Percent) -> Result<(), Rejection> {
    let Some(alloc) = node.allocatable_memory else {
        return Err(reject(
            node,
            filters::MEMORY_LIMITS,
            "memory capacity unknown".into(),
        ));
    };
    let allowed = watermark.of(alloc);
    let after = node.committed_memory.saturating_add(extra);
    if after > allowed {
        return Err(reject(
            node,
            filters::MEMORY_LIMITS,
            format!("memory {}/{} allowed", Bytes(after), Bytes(allowed)),
        ));
    }
    if let Some(m) = node.measured_memory
        && m >= allowed
    {
        return Err(reject(
            node,
            filters::MEASURED_MEMORY,
            format!(
                "measured memory {} above {} allowed",
                Bytes(m),
                Bytes(allowed)
            ),
        ));
    }
    Ok(())
}

/// The port a plug gets on `node`: `preferred` when it is in the range and free, else the lowest
/// free port of the range; 0 (no port) for a class without host ports.
fn free_port(node: &NodeView, class: &PlugClassSpec, preferred: Option<u16>) -> Option<u16> {
    let Some(range) = class.host_ports else {
        return Some(0);
    };
    if let Some(p) = preferred
        && range.contains(p)
        && !node.used_ports.contains(&p)
    {
        return Some(p);
    }
    // Walk the used ports inside the range in order; the first gap is the answer.
    let mut candidate = range.start;
    for &used in node.used_ports.range(range.start..=range.end) {
        if used > candidate {
            break;
        }
        if used == candidate {
            if candidate == range.end {
                return None;
            }
            candidate += 1;
        }
    }
    Some(candidate)
}

/// Whether `node` belongs to a policy tier.
fn in_tier(tier: &Tier, node: &NodeView) -> bool {
    tier.nodes.as_ref().is_none_or(|n| n.contains(&node.name)) && node.matches(&tier.node_selector)
}

/// [`in_tier`] with the tier's selector as pairs, made once for a walk over every node.
fn in_tier_with(tier: &Tier, selector: &[(&str, &str)], node: &NodeView) -> bool {
    tier.nodes.as_ref().is_none_or(|n| n.contains(&node.name))
        && selector.iter().all(|(k, v)| node.has_label(k, v))
}

/// Runs the plug filters on one node; on success returns the host port it would get.
pub fn plug_fits(
    node: &NodeView,
    class: &PlugClassSpec,
    policy: &PolicySpec,
    preferred_port: Option<u16>,
) -> Result<u16, Rejection> {
    let full = plug_filters(node, class, policy, preferred_port);
    debug_assert_eq!(
        plug_port(node, class, policy, preferred_port),
        full.as_ref().ok().copied(),
        "plug_port and plug_filters disagree on {}",
        node.name
    );
    full
}

/// [`plug_fits`] without the reasons: the port the plug would get on `node`, or `None` where a
/// filter refuses. It allocates nothing, so a placement over many nodes only words the
/// rejections when nothing fits (debug builds check it agrees with [`plug_filters`]).
fn plug_port(
    node: &NodeView,
    class: &PlugClassSpec,
    policy: &PolicySpec,
    preferred_port: Option<u16>,
) -> Option<u16> {
    if !matches!(node.availability, Availability::Ready)
        || !node.condition.schedule().takes_new_work()
        || node.condition.hot.is_some()
        || policy
            .max_plugs_per_node
            .is_some_and(|cap| node.plugs >= cap)
    {
        return None;
    }
    let alloc = node.allocatable_memory?;
    let allowed = policy.memory_high_watermark.of(alloc);
    if node
        .committed_memory
        .saturating_add(class.resources.memory.0)
        > allowed
        || node.measured_memory.is_some_and(|m| m >= allowed)
    {
        return None;
    }
    free_port(node, class, preferred_port)
}

/// The plug filters on one node, in order, with the reason of the first that refuses.
fn plug_filters(
    node: &NodeView,
    class: &PlugClassSpec,
    policy: &PolicySpec,
    preferred_port: Option<u16>,
) -> Result<u16, Rejection> {
    check_available(node)?;
    if let Some(why) = &node.condition.hot {
        return Err(reject(node, filters::CPU_HOT, format!("hot: {why}")));
    }
    if let Some(cap) = policy.max_plugs_per_node
        && node.plugs >= cap
    {
        return Err(reject(
            node,
            filters::MAX_PLUGS,
            format!("{}/{cap} plugs", node.plugs),
        ));
    }
    check_memory(node, class.resources.memory.0, policy.memory_high_watermark)?;
    free_port(node, class, preferred_port).ok_or_else(|| {
        reject(
            node,
            filters::HOST_PORT,
            format!(
                "no free host port in {}",
                class.host_ports.map(|r| r.to_string()).unwrap_or_default()
            ),
        )
    })
}

/// Where a plug goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlugPlacement {
    /// Node.
    pub node: String,
    /// Host port on it.
    pub host_port: u16,
    /// Index of the policy tier the node was found in.
    pub tier: usize,
}

/// Picks the node for one new plug of `class`: tiers in order; within the first tier that has a
/// node passing every filter, the best by `spread` (pack: most loaded first; spread: least
/// loaded first; ties by name). `preferred_port` is kept when free on the chosen node (plugs keep
/// their port when they move).
///
/// # Errors
/// A [`Diagnosis`] with one rejection per node (nodes outside every tier say so).
pub fn place_plug(
    nodes: &[NodeView],
    class: &PlugClassSpec,
    policy: &PolicySpec,
    preferred_port: Option<u16>,
) -> Result<PlugPlacement, Diagnosis> {
    // The filters without their reasons first: they are worded only when nothing fits.
    for (tier_index, tier) in policy.tiers.iter().enumerate() {
        // (node, port, node's load)
        let mut best: Option<(&NodeView, u16, u64)> = None;
        let selector: Vec<(&str, &str)> = tier
            .node_selector
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for node in nodes {
            if !in_tier_with(tier, &selector, node) {
                continue;
            }
            let Some(port) = plug_port(node, class, policy, preferred_port) else {
                continue;
            };
            let load = node.load();
            let better = match best {
                None => true,
                Some((b, _, b_load)) => match policy.spread {
                    Spread::Pack => (load, node.plugs) > (b_load, b.plugs),
                    Spread::Spread => (load, node.plugs) < (b_load, b.plugs),
                },
            };
            if better {
                best = Some((node, port, load));
            }
        }
        if let Some((node, port, _)) = best {
            return Ok(PlugPlacement {
                node: node.name.clone(),
                host_port: port,
                tier: tier_index,
            });
        }
    }
    // Nothing fits: each node's rejection, from the first tier it is in.
    let mut rejections: BTreeMap<&str, Rejection> = BTreeMap::new();
    for tier in &policy.tiers {
        for node in nodes {
            if !in_tier(tier, node) {
                continue;
            }
            if let Err(r) = plug_filters(node, class, policy, preferred_port) {
                rejections.entry(node.name.as_str()).or_insert(r);
            }
        }
    }
    for node in nodes {
        rejections.entry(node.name.as_str()).or_insert_with(|| {
            reject(
                node,
                filters::TIER,
                format!("in no tier of policy {}", policy.name),
            )
        });
    }
    Err(Diagnosis {
        rejections: nodes
            .iter()
            .filter_map(|n| rejections.remove(n.name.as_str()))
            .collect(),
    })
}

/// Where a stopped or evicted plug starts again (activity on it): on its own node, keeping its
/// port when free, if that node passes every filter; else wherever [`place_plug`] puts a new
/// plug, keeping the port when free there. `nodes` must not count the plug itself (a stopped
/// plug holds no slot) nor its own port lease on `own_node`.
///
/// # Errors
/// A [`Diagnosis`] when no node can take it (its own node's rejection included).
pub fn place_restart(
    nodes: &[NodeView],
    own_node: &str,
    own_port: u16,
    class: &PlugClassSpec,
    policy: &PolicySpec,
) -> Result<PlugPlacement, Diagnosis> {
    if let Some(own) = nodes.iter().find(|n| n.name == own_node)
        && let Some(tier) = policy.tiers.iter().position(|t| in_tier(t, own))
        && let Ok(port) = plug_fits(own, class, policy, Some(own_port))
    {
        return Ok(PlugPlacement {
            node: own.name.clone(),
            host_port: port,
            tier,
        });
    }
    place_plug(nodes, class, policy, Some(own_port))
}

/// Where [`plug_room`] stops counting: far beyond any real node (a plug takes at least a
/// few MiB and a host port), so reaching it means the policy and class set no practical bound,
/// while the count stays cheap (each step is one filter run).
pub const PLUG_ROOM_BOUND: u32 = 10_000;

/// How many more plugs of one class one node takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlugRoom {
    /// Plugs the scheduler would place there, one after another.
    pub free: u32,
    /// The refusal that stops the next one; `None` when counting stopped at the bound.
    pub limit: Option<Rejection>,
}

/// How many more plugs of `class` the scheduler would place on `node`: plugs are placed there
/// one after another, each through the same filters as [`place_plug`] (tier, readiness,
/// conditions, per-node cap, memory, host port) and recorded as [`assign_plug`] records it,
/// until a filter refuses; that refusal is the limit. Counting stops at `bound`.
///
/// # Guarantees
/// With nothing else changing, `free` consecutive placements on this node succeed and the next
/// is refused for `limit`. Tier order is not considered: a node of a later tier takes plugs only
/// once the earlier tiers are full.
pub fn plug_room(
    node: &NodeView,
    class: &PlugClassSpec,
    policy: &PolicySpec,
    bound: u32,
) -> PlugRoom {
    if !policy.tiers.iter().any(|t| in_tier(t, node)) {
        return PlugRoom {
            free: 0,
            limit: Some(reject(
                node,
                filters::TIER,
                format!("in no tier of policy {}", policy.name),
            )),
        };
    }
    let mut view = node.clone();
    let mut free = 0;
    while free < bound {
        match plug_fits(&view, class, policy, None) {
            Ok(port) => {
                assign_plug(&mut view, class, port);
                free += 1;
            }
            Err(r) => {
                return PlugRoom {
                    free,
                    limit: Some(r),
                };
            }
        }
    }
    PlugRoom { free, limit: None }
}

/// Records a plug of `class` on `node` in the views (after a placement).
pub fn assign_plug(node: &mut NodeView, class: &PlugClassSpec, port: u16) {
    node.plugs += 1;
    node.committed_memory += class.resources.memory.0;
    node.used_ports.insert(port);
}

/// Runs the service filters on one node for one more replica of `svc`.
pub fn replica_fits(node: &NodeView, spec: &NodeSpec, svc: &ServiceSpec) -> Result<(), Rejection> {
    check_available(node)?;
    if !svc.placement.allows(spec) {
        return Err(reject(
            node,
            filters::PLACEMENT,
            "not allowed by placement".into(),
        ));
    }
    let here = node.replicas.get(&svc.name).copied().unwrap_or(0);
    if let Some(max) = effective_max_per_node(svc.placement.max_per_node, !svc.ports.is_empty())
        && here >= max
    {
        return Err(reject(
            node,
            filters::MAX_PER_NODE,
            format!("{here}/{max} replicas of {}", svc.name),
        ));
    }
    check_memory(node, svc.resources.memory.0, Percent::FULL)?;
    if let Some(p) = svc
        .ports
        .iter()
        .find(|p| node.used_ports.contains(&p.host_port))
    {
        return Err(reject(
            node,
            filters::HOST_PORT,
            format!("host port {} in use", p.host_port),
        ));
    }
    Ok(())
}

/// Whether one more replica of `svc` can stay on `node` (where it runs) without passing its
/// per-node cap or binding a host port already taken there.
fn room_to_stay(node: &NodeView, svc: &ServiceSpec) -> bool {
    let here = node.replicas.get(&svc.name).copied().unwrap_or(0);
    effective_max_per_node(svc.placement.max_per_node, !svc.ports.is_empty())
        .is_none_or(|max| here < max)
        && !svc
            .ports
            .iter()
            .any(|p| node.used_ports.contains(&p.host_port))
}

/// Records one replica of `svc` on `node` in the views (after a placement).
pub fn assign_replica(node: &mut NodeView, svc: &ServiceSpec) {
    *node.replicas.entry(svc.name.clone()).or_default() += 1;
    node.committed_memory += svc.resources.memory.0;
    node.used_ports
        .extend(svc.ports.iter().map(|p| p.host_port));
}

/// Where every replica of every service goes.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ServicePlacement {
    /// (service, replica) → node.
    pub assigned: BTreeMap<(String, u32), String>,
    /// Replicas that fit nowhere, with why.
    pub unplaced: Vec<(String, u32, Diagnosis)>,
    /// Replicas that should leave their node (draining, drained, lost) but fit nowhere else:
    /// they stay where they are (also listed in `assigned`), so nothing is stopped without a
    /// replacement. (service, replica, node, why).
    pub stuck: Vec<(String, u32, String, Diagnosis)>,
}

/// Places every replica of every service. A replica keeps its current node (`current`) while its
/// placement still allows it and the node is not draining, drained or lost — cordoned and
/// unreachable nodes keep what they run. Kept replicas are accounted first, then the others are
/// placed service by service (name order), each on the allowed node with the fewest replicas of
/// that service, then the least committed memory, then by name. A replica that must leave its
/// node but fits nowhere else stays there (`stuck`) — unless its node is in `evict` (a forced
/// drain) and its placement allows no other node, then it is dropped.
///
/// `views` are the nodes with plugs and foreign ports already accounted; on return they also
/// hold the services' replicas.
pub fn place_services(
    fleet: &DesiredFleet,
    views: &mut [NodeView],
    current: &BTreeMap<(String, u32), String>,
    evict: &BTreeSet<String>,
) -> ServicePlacement {
    let mut out = ServicePlacement::default();
    let index: BTreeMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    // Host ports of replicas that can run on one node only: nothing else keeps or takes them
    // there, so a pinned replica is never blocked by one that could go elsewhere.
    let allowed_count = |svc: &ServiceSpec| {
        fleet
            .nodes
            .values()
            .filter(|n| svc.placement.allows(n))
            .count()
    };
    let mut reserved: BTreeMap<(String, u16), &str> = BTreeMap::new();
    for svc in fleet.services.values().filter(|s| s.replicas > 0) {
        if allowed_count(svc) == 1
            && let Some(node) = fleet.nodes.values().find(|n| svc.placement.allows(n))
        {
            for p in &svc.ports {
                reserved
                    .entry((node.name.clone(), p.host_port))
                    .or_insert(svc.name.as_str());
            }
        }
    }
    let reserved_for_other = |node: &str, svc: &ServiceSpec| {
        svc.ports.iter().any(|p| {
            reserved
                .get(&(node.to_string(), p.host_port))
                .is_some_and(|owner| *owner != svc.name)
        })
    };
    let mut todo = Vec::new();
    for svc in fleet.services.values() {
        let mut kept_per_node: BTreeMap<String, u32> = BTreeMap::new();
        for replica in 0..svc.replicas {
            let key = (svc.name.clone(), replica);
            let keep = current.get(&key).and_then(|node| {
                let i = *index.get(node)?;
                let v = &views[i];
                let spec = fleet.nodes.get(node)?;
                let movable_away = v.condition.schedule().must_vacate()
                    || matches!(v.availability, Availability::Lost(_));
                let cap = effective_max_per_node(svc.placement.max_per_node, !svc.ports.is_empty());
                let under_cap =
                    cap.is_none_or(|m| kept_per_node.get(node).copied().unwrap_or(0) < m);
                // A host port another replica kept here (or anything else) holds: it must move.
                let ports_free = !svc
                    .ports
                    .iter()
                    .any(|p| v.used_ports.contains(&p.host_port))
                    && !reserved_for_other(node, svc);
                (svc.placement.allows(spec) && !movable_away && under_cap && ports_free)
                    .then_some(i)
            });
            match keep {
                Some(i) => {
                    let name = views[i].name.clone();
                    *kept_per_node.entry(name.clone()).or_default() += 1;
                    assign_replica(&mut views[i], svc);
                    out.assigned.insert(key, name);
                }
                None => todo.push((svc, replica)),
            }
        }
    }
    // The most constrained first: a replica with fewer allowed nodes chooses before one that
    // could go anywhere. (Each service's count once: it walks every node.)
    let allowed: BTreeMap<&str, usize> = fleet
        .services
        .values()
        .map(|s| (s.name.as_str(), allowed_count(s)))
        .collect();
    todo.sort_by_cached_key(|(svc, replica)| {
        (allowed[svc.name.as_str()], svc.name.clone(), *replica)
    });
    // Each view's node spec, looked up once.
    let specs: Vec<Option<&NodeSpec>> = views.iter().map(|v| fleet.nodes.get(&v.name)).collect();
    for (svc, replica) in todo {
        let mut best: Option<usize> = None;
        let mut rejections = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let Some(spec) = specs[i] else {
                continue;
            };
            let fits = replica_fits(v, spec, svc).and_then(|()| {
                if reserved_for_other(&v.name, svc) {
                    Err(reject(
                        v,
                        filters::HOST_PORT,
                        "host port kept for a service pinned here".into(),
                    ))
                } else {
                    Ok(())
                }
            });
            match fits {
                Ok(()) => {
                    let key =
                        |n: &NodeView| (n.replicas.get(&svc.name).copied().unwrap_or(0), n.load());
                    if best.is_none_or(|b| key(v) < key(&views[b])) {
                        best = Some(i);
                    }
                }
                Err(r) => rejections.push(r),
            }
        }
        let key = (svc.name.clone(), replica);
        let pinned_to = |node: &str| {
            fleet
                .nodes
                .values()
                .filter(|n| svc.placement.allows(n))
                .map(|n| n.name.as_str())
                .eq([node])
        };
        // It stays where it runs only where its placement still allows it (the operator moved
        // it otherwise), its host ports are not kept for another service, and staying neither
        // passes its per-node cap nor binds a host port taken there (what has to leave for its
        // cap or ports has nowhere to stay: it is unplaced).
        let stay = current
            .get(&key)
            .filter(|n| !(evict.contains(*n) && pinned_to(n)))
            .filter(|n| {
                fleet
                    .nodes
                    .get(*n)
                    .is_some_and(|spec| svc.placement.allows(spec))
            })
            .filter(|n| !reserved_for_other(n, svc))
            .and_then(|n| views.iter().position(|v| &v.name == n))
            .filter(|i| room_to_stay(&views[*i], svc));
        match (best, stay) {
            (Some(i), _) => {
                assign_replica(&mut views[i], svc);
                out.assigned.insert(key, views[i].name.clone());
            }
            (None, Some(i)) => {
                // Nowhere to go: it stays, so it is never stopped without a replacement.
                assign_replica(&mut views[i], svc);
                out.stuck.push((
                    svc.name.clone(),
                    replica,
                    views[i].name.clone(),
                    Diagnosis { rejections },
                ));
                out.assigned.insert(key, views[i].name.clone());
            }
            (None, None) => {
                out.unplaced
                    .push((svc.name.clone(), replica, Diagnosis { rejections }))
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Schedule;
    use crate::manifest::{Source, parse};

    pub(crate) fn fleet(cap: u32, spread: &str) -> DesiredFleet {
        parse(&[Source {
            name: "t.yaml".into(),
            text: format!(
                "apiVersion: fleet/v1
kind: Node
metadata: {{name: node1, labels: {{tier: primary}}}}
spec: {{capacity: {{memory: 8GiB}}}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node2, labels: {{tier: secondary}}}}
spec: {{capacity: {{memory: 4GiB}}}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node3, labels: {{tier: secondary}}}}
spec: {{capacity: {{memory: 4GiB}}}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: p, resources: {{memory: 256MiB}}, port: 8080, hostPorts: 51000-51099}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: {cap}
  memoryHighWatermark: 85%
  spread: {spread}
  tiers: [{{nodeSelector: {{tier: primary}}}}, {{nodeSelector: {{tier: secondary}}}}]
"
            ),
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
    }

    pub(crate) fn views(f: &DesiredFleet) -> Vec<NodeView> {
        f.nodes
            .values()
            .map(|n| NodeView::empty(n, Availability::Ready, NodeCondition::default(), None))
            .collect()
    }

    fn place_n(f: &DesiredFleet, v: &mut [NodeView], n: usize) -> Vec<PlugPlacement> {
        let class = &f.plug_classes["agent"];
        let policy = f.policy_for(class);
        (0..n)
            .map(|_| {
                let p = place_plug(v, class, &policy, None).unwrap_or_else(|d| panic!("{d}"));
                let i = v.iter().position(|x| x.name == p.node).unwrap();
                assign_plug(&mut v[i], class, p.host_port);
                p
            })
            .collect()
    }

    #[test]
    fn primary_fills_to_its_cap_then_plugs_spill_to_secondaries() {
        let f = fleet(5, "pack");
        let mut v = views(&f);
        let placed = place_n(&f, &mut v, 12);
        let on = |n: &str| placed.iter().filter(|p| p.node == n).count();
        assert_eq!(on("node1"), 5);
        // pack: fill one secondary before the other.
        assert_eq!(on("node2"), 5);
        assert_eq!(on("node3"), 2);
        assert!(placed[..5].iter().all(|p| p.tier == 0));
        let ports: Vec<u16> = placed
            .iter()
            .filter(|p| p.node == "node1")
            .map(|p| p.host_port)
            .collect();
        assert_eq!(ports, vec![51000, 51001, 51002, 51003, 51004]);
    }

    #[test]
    fn a_restarted_plug_stays_on_its_node_when_it_fits_and_moves_when_it_does_not() {
        let f = fleet(2, "pack");
        let class = &f.plug_classes["agent"];
        let policy = f.policy_for(class);
        let mut v = views(&f);
        // A secondary with room: it stays there (no move back to the primary), port kept.
        let p = place_restart(&v, "node3", 51007, class, &policy).unwrap();
        assert_eq!((p.node.as_str(), p.host_port, p.tier), ("node3", 51007, 1));
        // Its node full while it was stopped: it goes where a new plug would, port kept.
        assign_plug(&mut v[2], class, 51000);
        assign_plug(&mut v[2], class, 51001);
        let p = place_restart(&v, "node3", 51007, class, &policy).unwrap();
        assert_eq!((p.node.as_str(), p.host_port), ("node1", 51007));
        // Its node above the watermark by measurement: likewise.
        let mut v = views(&f);
        v[0].measured_memory = Some(8 << 30);
        let p = place_restart(&v, "node1", 51000, class, &policy).unwrap();
        assert_eq!(p.node, "node2");
        // Nowhere: the diagnosis names its own node too.
        for n in &mut v {
            n.condition.set_schedule(Schedule::Cordoned);
        }
        let d = place_restart(&v, "node1", 51000, class, &policy).unwrap_err();
        assert_eq!(d.rejections.len(), 3);
        assert_eq!(d.rejections[0].node, "node1");
    }

    #[test]
    fn spread_balances_within_a_tier() {
        let f = fleet(5, "spread");
        let mut v = views(&f);
        let placed = place_n(&f, &mut v, 12);
        let on = |n: &str| placed.iter().filter(|p| p.node == n).count();
        assert_eq!((on("node1"), on("node2"), on("node3")), (5, 4, 3));
    }

    #[test]
    fn a_full_fleet_explains_itself_per_node() {
        let f = fleet(2, "pack");
        let mut v = views(&f);
        v[2].condition.set_schedule(Schedule::Cordoned);
        place_n(&f, &mut v, 4);
        let class = &f.plug_classes["agent"];
        let d = place_plug(&v, class, &f.policy_for(class), None).unwrap_err();
        assert_eq!(
            d.to_string(),
            "node1: 2/2 plugs; node2: 2/2 plugs; node3: cordoned"
        );
    }

    #[test]
    fn memory_watermark_and_measured_memory_reject() {
        let f = fleet(100, "pack");
        let mut v = views(&f);
        v[0].committed_memory = 7 << 30; // 7GiB of 8GiB: above 85% with one more plug
        v[1].measured_memory = Some(4 << 30);
        v[2].availability = Availability::Lost("ssh: connection refused".into());
        let class = &f.plug_classes["agent"];
        let d = place_plug(&v, class, &f.policy_for(class), None).unwrap_err();
        assert_eq!(
            d.to_string(),
            "node1: memory 7.2GiB/6.8GiB allowed; node2: measured memory 4GiB above 3.4GiB allowed; node3: not ready (ssh: connection refused)"
        );
    }

    #[test]
    fn a_preferred_port_is_kept_when_free() {
        let f = fleet(5, "pack");
        let mut v = views(&f);
        let class = &f.plug_classes["agent"];
        let policy = f.policy_for(class);
        assert_eq!(
            place_plug(&v, class, &policy, Some(51042))
                .unwrap()
                .host_port,
            51042
        );
        v[0].used_ports.insert(51042);
        assert_eq!(
            place_plug(&v, class, &policy, Some(51042))
                .unwrap()
                .host_port,
            51000
        );
    }

    #[test]
    fn an_exhausted_port_range_is_a_clear_rejection() {
        let f = fleet(1000, "pack");
        let mut v = views(&f);
        for view in &mut v {
            view.used_ports.extend(51000..=51099);
        }
        let class = &f.plug_classes["agent"];
        let d = place_plug(&v, class, &f.policy_for(class), None).unwrap_err();
        assert!(
            d.to_string()
                .contains("node1: no free host port in 51000-51099"),
            "{d}"
        );
    }

    #[test]
    fn plug_room_counts_what_consecutive_placements_would_take() {
        let f = fleet(3, "pack");
        let class = &f.plug_classes["agent"];
        let policy = f.policy_for(class);
        let mut v = views(&f);
        let room = plug_room(&v[1], class, &policy, PLUG_ROOM_BOUND);
        assert_eq!(room.free, 3);
        assert_eq!(room.limit.unwrap().reason, "3/3 plugs");
        // The same number of placements on that node alone succeed, and the next is refused.
        let mut only = vec![v[1].clone()];
        assert_eq!(place_n(&f, &mut only, 3).len(), 3);
        assert!(place_plug(&only, class, &policy, None).is_err());
        v[1].condition.set_schedule(Schedule::Cordoned);
        let room = plug_room(&v[1], class, &policy, PLUG_ROOM_BOUND);
        assert_eq!(
            (room.free, room.limit.unwrap().reason.as_str()),
            (0, "cordoned")
        );
        assert_eq!(plug_room(&v[2], class, &policy, 2).free, 2);
        assert_eq!(plug_room(&v[2], class, &policy, 2).limit, None);
    }

    #[test]
    fn a_hot_node_takes_no_plug_and_the_diagnosis_says_why() {
        let f = fleet(2, "pack");
        let class = &f.plug_classes["agent"];
        let policy = f.policy_for(class);
        let mut v = views(&f);
        let first = place_plug(&v, class, &policy, None).unwrap().node;
        let i = v.iter().position(|n| n.name == first).unwrap();
        v[i].condition.hot = Some("cpu 92% > 80% for 10s".into());
        let other = place_plug(&v, class, &policy, None).unwrap().node;
        assert_ne!(other, first);
        for n in &mut v {
            n.condition.hot = Some("cpu 92% > 80% for 10s".into());
        }
        let d = place_plug(&v, class, &policy, None).unwrap_err();
        assert_eq!(d.rejections[0].filter, filters::CPU_HOT);
        assert!(d.to_string().contains("hot: cpu 92% > 80% for 10s"), "{d}");
    }
}

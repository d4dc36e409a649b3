//! The planner (pure): desired fleet + observed nodes + recorded state → a [`Plan`] of steps,
//! each with its node, container, action and a human reason ("memory 256MiB → 512MiB, in
//! place", "image web:1 → web:2, recreate"). A plan is data: `plan` prints it, `apply` executes
//! it, and the two cannot disagree.
//!
//! # Guarantees
//! - Observed equal to desired ⇒ no steps.
//! - Nothing is planned on an unreachable node, and nothing that lives on one is re-placed
//!   until the node is lost (unreachable is not absent).
//! - Containers without this fleet's labels never appear (observation filters them out).
//! - Steps of one group (one service, one plug, one stray container) run in order; groups are
//!   independent.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::container::{ContainerSpec, Resources, RestartPolicy, RunState, labels};
use crate::desired::{PlugIdentity, plug_container, service_container};
use crate::manifest::{Bytes, DesiredFleet, MilliCpus, UpdateOrder};
use crate::observe::{NodeObservation, Observed, ObservedFleet};
use crate::schedule::{self, Availability, Diagnosis, NodeView};
use crate::store::{NodeCondition, PlugRecord};
use crate::transport::ContainerUpdate;

/// Everything a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Desired state.
    pub fleet: &'a DesiredFleet,
    /// Observed state (read before `plugs`, so a plug being created is never taken for an
    /// orphan).
    pub observed: &'a ObservedFleet,
    /// Node conditions.
    pub conditions: &'a BTreeMap<String, NodeCondition>,
    /// Plug instances.
    pub plugs: &'a [PlugRecord],
    /// Port leases (node, port, plug), including a moving plug's old lease.
    pub port_leases: &'a [(String, u16, String)],
    /// Where replicas were last known to run (for unreachable nodes).
    pub last_known: &'a BTreeMap<(String, u32), String>,
    /// Nodes unreachable longer than `nodeLostAfter` (NotReady): their work moves. A node in
    /// this set that answers again is back but not Ready yet: it keeps what it runs, its stale
    /// copies are removed, and it takes no new work (its view is cordoned) until the controller
    /// takes it out of the set.
    pub lost: &'a BTreeSet<String>,
    /// Nodes being force-drained: service replicas whose placement allows only that node are
    /// removed instead of kept (plugs are never removed for want of room).
    pub evict: &'a BTreeSet<String>,
}

/// What a step is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Object {
    /// Replica `replica` of service `name`.
    Service {
        /// Service name.
        name: String,
        /// Replica index.
        replica: u32,
    },
    /// Plug instance `id`.
    Plug {
        /// Plug id.
        id: String,
    },
    /// A container of this fleet that nothing desired claims.
    Stray,
}

impl Object {
    fn group(&self, container: &str) -> String {
        match self {
            Object::Service { name, .. } => format!("service/{name}"),
            Object::Plug { id } => format!("plug/{id}"),
            Object::Stray => format!("stray/{container}"),
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Create and start a container, then wait until it runs (and is healthy).
    Create {
        /// What to create.
        spec: Box<ContainerSpec>,
    },
    /// Start an existing container, then wait.
    Start {
        /// Container id.
        id: String,
        /// Whether it has a healthcheck to wait for.
        healthcheck: bool,
    },
    /// Stop a container (it stays, stopped).
    Stop {
        /// Container id.
        id: String,
        /// Grace period in seconds.
        grace_secs: u64,
    },
    /// Change limits / restart policy in place (same container, no restart).
    Update {
        /// Container id.
        id: String,
        /// New values.
        resources: Resources,
        /// New restart policy.
        restart: RestartPolicy,
    },
    /// Replace a container by a new one (same node or another), in the given order.
    Replace {
        /// Node of the old container.
        old_node: String,
        /// Id of the old container.
        old_id: String,
        /// Name of the old container.
        old_name: String,
        /// Grace period of the old container in seconds.
        old_grace_secs: u64,
        /// The new container.
        spec: Box<ContainerSpec>,
        /// start-first or stop-first.
        order: UpdateOrder,
    },
    /// Stop and remove a container.
    Remove {
        /// Container id.
        id: String,
        /// Grace period in seconds.
        grace_secs: u64,
    },
}

impl Action {
    /// Short verb: create, start, stop, update, recreate, move, remove.
    pub fn verb(&self, node: &str) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Start { .. } => "start",
            Action::Stop { .. } => "stop",
            Action::Update { .. } => "update",
            Action::Replace { old_node, .. } if old_node != node => "move",
            Action::Replace { .. } => "recreate",
            Action::Remove { .. } => "remove",
        }
    }

    /// Whether this changes an in-place field only.
    pub fn as_update(&self) -> Option<ContainerUpdate> {
        match self {
            Action::Update {
                resources, restart, ..
            } => Some(ContainerUpdate {
                resources: resources.clone(),
                restart: *restart,
            }),
            _ => None,
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Node the step acts on (for moves: the new node).
    pub node: String,
    /// Container name (for creates: the new name).
    pub container: String,
    /// What it is about.
    pub object: Object,
    /// What to do.
    #[serde(flatten)]
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// Steps of one group run in order.
    pub group: String,
}

/// A plug whose node changes (its node is lost or draining): recorded before its new container
/// is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlugMove {
    /// Plug id.
    pub id: String,
    /// Old node.
    pub from: String,
    /// Old port.
    pub from_port: u16,
    /// New node.
    pub to: String,
    /// New port.
    pub port: u16,
}

/// Something that could not be placed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unplaced {
    /// What.
    pub object: Object,
    /// Why, per node.
    pub diagnosis: Diagnosis,
}

/// Something that should move but stays, because nothing else can take it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stuck {
    /// What.
    pub object: Object,
    /// Where it stays.
    pub node: String,
    /// Why no other node can take it, per node.
    pub diagnosis: Diagnosis,
}

/// A computed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Plan {
    /// Steps, grouped.
    pub steps: Vec<Step>,
    /// Containers already as desired: (node, container).
    pub unchanged: Vec<(String, String)>,
    /// Replicas and plugs that fit nowhere.
    pub unplaced: Vec<Unplaced>,
    /// Replicas and plugs that should leave their node but fit nowhere else: they stay.
    pub stuck: Vec<Stuck>,
    /// Nodes that could not be observed, with why.
    pub unreachable: BTreeMap<String, String>,
    /// Plugs that move to another node.
    pub plug_moves: Vec<PlugMove>,
    /// Where every replica is placed (to be recorded as last known).
    pub replica_nodes: BTreeMap<(String, u32), String>,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.steps.is_empty() || !self.plug_moves.is_empty()
    }

    /// Whether the fleet would be fully converged after the steps (everything placed, every
    /// node reachable).
    pub fn is_complete(&self) -> bool {
        self.unplaced.is_empty() && self.unreachable.is_empty()
    }
}

/// Identity of a fleet container, from its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Identity {
    Service(String, u32),
    Plug(String),
}

fn identity(o: &Observed) -> Option<Identity> {
    let r = &o.record;
    match r.label(labels::KIND)? {
        "service" => Some(Identity::Service(
            r.label(labels::SERVICE)?.to_string(),
            r.label(labels::REPLICA)?.parse().ok()?,
        )),
        "plug" => Some(Identity::Plug(r.label(labels::PLUG)?.to_string())),
        _ => None,
    }
}

fn grace_secs(o: &Observed) -> u64 {
    o.details
        .as_ref()
        .and_then(|d| d.spec.stop_grace_period)
        .map_or(10, |g| g.as_secs())
}

fn grace_of(spec: &ContainerSpec) -> u64 {
    spec.stop_grace_period.map_or(10, |g| g.as_secs())
}

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
                condition.cordoned = true;
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
    for (node, _) in s
        .observed
        .nodes
        .iter()
        .filter(|(n, _)| s.observed.is_reachable(n))
    {
        for o in s.observed.containers(node) {
            if let Some(Identity::Service(svc, r)) = identity(o) {
                current.entry((svc, r)).or_insert_with(|| node.clone());
            }
        }
    }
    let mut views = node_views(s);
    let placement = schedule::place_services(s.fleet, &mut views, &current, s.evict);
    (views, placement)
}

/// Computes the plan.
pub fn plan(s: &Snapshot) -> Plan {
    let mut out = Plan::default();
    for (node, obs) in &s.observed.nodes {
        if let NodeObservation::Unreachable { error, .. } = obs {
            out.unreachable.insert(node.clone(), error.clone());
        }
    }

    let (mut views, placement) = scheduling_views(s);
    out.replica_nodes = placement.assigned.clone();
    for (svc, replica, node, diagnosis) in &placement.stuck {
        out.stuck.push(Stuck {
            object: Object::Service {
                name: svc.clone(),
                replica: *replica,
            },
            node: node.clone(),
            diagnosis: diagnosis.clone(),
        });
    }
    for (svc, replica, diagnosis) in &placement.unplaced {
        out.unplaced.push(Unplaced {
            object: Object::Service {
                name: svc.clone(),
                replica: *replica,
            },
            diagnosis: diagnosis.clone(),
        });
    }

    // Desired containers: (identity, node, spec, should run).
    let mut desired: Vec<(Identity, Object, String, ContainerSpec, bool)> = Vec::new();
    for ((svc, replica), node) in &placement.assigned {
        let spec = service_container(s.fleet, &s.fleet.services[svc], *replica, node);
        desired.push((
            Identity::Service(svc.clone(), *replica),
            Object::Service {
                name: svc.clone(),
                replica: *replica,
            },
            node.clone(),
            spec,
            true,
        ));
    }
    for p in s.plugs {
        let Some(class) = s.fleet.plug_classes.get(&p.class) else {
            // Its class left the manifests: its container is a stray and goes.
            continue;
        };
        let mut node = p.node.clone();
        let mut port = p.host_port;
        let view = views.iter().find(|v| v.name == p.node);
        let must_move = view.is_none_or(|v| {
            v.condition.draining
                || v.condition.drained
                || matches!(v.availability, Availability::Lost(_))
        });
        if must_move && p.state.wants_running() {
            let policy = s.fleet.policy_for(class);
            match schedule::place_plug(&views, class, &policy, Some(p.host_port)) {
                Ok(placed) => {
                    let i = views
                        .iter()
                        .position(|v| v.name == placed.node)
                        .expect("placed on a view");
                    schedule::assign_plug(&mut views[i], class, placed.host_port);
                    out.plug_moves.push(PlugMove {
                        id: p.id.clone(),
                        from: p.node.clone(),
                        from_port: p.host_port,
                        to: placed.node.clone(),
                        port: placed.host_port,
                    });
                    node = placed.node;
                    port = placed.host_port;
                }
                Err(diagnosis) => {
                    out.stuck.push(Stuck {
                        object: Object::Plug { id: p.id.clone() },
                        node: p.node.clone(),
                        diagnosis,
                    });
                }
            }
        }
        let spec = plug_container(
            s.fleet,
            class,
            &PlugIdentity {
                id: &p.id,
                owner: &p.owner,
                node: &node,
                host_port: port,
            },
        );
        desired.push((
            Identity::Plug(p.id.clone()),
            Object::Plug { id: p.id.clone() },
            node,
            spec,
            p.state.wants_running(),
        ));
    }

    // Observed containers by identity, across reachable nodes.
    let mut by_identity: BTreeMap<Identity, Vec<(&str, &Observed)>> = BTreeMap::new();
    let mut strays: Vec<(&str, &Observed)> = Vec::new();
    for (node, _) in s
        .observed
        .nodes
        .iter()
        .filter(|(n, _)| s.observed.is_reachable(n))
    {
        for o in s.observed.containers(node) {
            match identity(o) {
                Some(id) => by_identity.entry(id).or_default().push((node.as_str(), o)),
                None => strays.push((node.as_str(), o)),
            }
        }
    }

    let desired_ids: BTreeSet<&Identity> = desired.iter().map(|d| &d.0).collect();
    for (id, list) in &by_identity {
        if !desired_ids.contains(id) {
            strays.extend(list.iter().copied());
        }
    }

    for (id, object, node, spec, run) in &desired {
        if !s.observed.is_reachable(node) {
            continue; // nothing can be done there now
        }
        let group = object.group(&spec.name);
        let copies = by_identity.get(id).cloned().unwrap_or_default();
        let hash = spec.labels.get(labels::SPEC_HASH);
        let mut local: Vec<Step> = Vec::new();
        let mut step = |node: &str, container: &str, action: Action, reason: String| {
            local.push(Step {
                node: node.to_string(),
                container: container.to_string(),
                object: object.clone(),
                action,
                reason,
                group: group.clone(),
            });
        };
        // The copy to keep: on the right node with the right hash, running ones first.
        let keep = copies
            .iter()
            .filter(|(n, o)| {
                *n == node.as_str() && o.record.label(labels::SPEC_HASH) == hash.map(String::as_str)
            })
            .max_by_key(|(_, o)| (o.record.state == RunState::Running, o.record.created));
        let mut replaced: Option<&str> = None;
        match keep {
            Some((_, o)) => {
                let observed = o
                    .details
                    .as_ref()
                    .map(|d| (&d.spec.resources, d.spec.restart));
                let mut recreated = false;
                if let Some((res, restart)) = observed {
                    let changes = in_place_changes(res, restart, &spec.resources, spec.restart);
                    if !changes.is_empty() && removes_a_limit(res, &spec.resources) {
                        // The engine reads 0 as "unchanged", so a limit cannot be removed in
                        // place. Same spec hash, same name: the old container goes first.
                        step(
                            node,
                            &spec.name,
                            Action::Replace {
                                old_node: node.clone(),
                                old_id: o.record.id.clone(),
                                old_name: o.record.name.clone(),
                                old_grace_secs: grace_secs(o),
                                spec: Box::new(spec.clone()),
                                order: UpdateOrder::StopFirst,
                            },
                            format!(
                                "{}, recreate (stop-first: the engine cannot remove a limit in place)",
                                changes.join(", ")
                            ),
                        );
                        recreated = true;
                    } else if !changes.is_empty() {
                        step(
                            node,
                            &o.record.name,
                            Action::Update {
                                id: o.record.id.clone(),
                                resources: spec.resources.clone(),
                                restart: spec.restart,
                            },
                            format!("{}, in place", changes.join(", ")),
                        );
                    }
                }
                let running = o.record.state == RunState::Running;
                let mut unchanged = false;
                if recreated {
                    // The replacement starts it.
                } else if *run && !running {
                    step(
                        node,
                        &o.record.name,
                        Action::Start {
                            id: o.record.id.clone(),
                            healthcheck: spec.healthcheck.is_some(),
                        },
                        format!("{} container, should run", state_word(o.record.state)),
                    );
                } else if !*run && running {
                    step(
                        node,
                        &o.record.name,
                        Action::Stop {
                            id: o.record.id.clone(),
                            grace_secs: grace_of(spec),
                        },
                        "plug is stopped".into(),
                    );
                } else {
                    unchanged = true;
                }
                if unchanged
                    && observed.is_some_and(|(res, restart)| {
                        in_place_changes(res, restart, &spec.resources, spec.restart).is_empty()
                    })
                {
                    out.unchanged.push((node.clone(), o.record.name.clone()));
                }
                replaced = Some(o.record.id.as_str());
            }
            None => {
                // An old copy to replace: on this node first (stop-first may need its ports),
                // else on another node (a move; always start-first).
                let old = copies
                    .iter()
                    .filter(|(n, _)| *n == node.as_str())
                    .chain(copies.iter().filter(|(n, _)| *n != node.as_str()))
                    .next();
                match old {
                    Some((old_node, o)) => {
                        let same_node = *old_node == node.as_str();
                        let mut order = match (id, same_node) {
                            (_, false) => UpdateOrder::StartFirst,
                            (Identity::Service(svc, _), true) => s.fleet.services[svc].update_order,
                            // A plug keeps its host port: the old one must let go of it first.
                            (Identity::Plug(_), true) => UpdateOrder::StopFirst,
                        };
                        // Start-first cannot bind a host port the old container holds on the
                        // same node: such a recreate is stop-first, and says why.
                        let held = if same_node {
                            held_ports(o, spec)
                        } else {
                            Vec::new()
                        };
                        let order_note = if order == UpdateOrder::StartFirst && !held.is_empty() {
                            order = UpdateOrder::StopFirst;
                            format!(
                                "stop-first: the old container holds host port {}",
                                join_ports(&held)
                            )
                        } else {
                            order.as_str().to_string()
                        };
                        let reason = if same_node {
                            format!("{}, recreate ({order_note})", recreate_reason(spec, o))
                        } else {
                            format!("from {old_node}: {}", move_reason(s, old_node))
                        };
                        step(
                            node,
                            &spec.name,
                            Action::Replace {
                                old_node: old_node.to_string(),
                                old_id: o.record.id.clone(),
                                old_name: o.record.name.clone(),
                                old_grace_secs: grace_secs(o),
                                spec: Box::new(spec.clone()),
                                order,
                            },
                            reason,
                        );
                        replaced = Some(o.record.id.as_str());
                    }
                    None => {
                        let reason = match object {
                            Object::Service { name, replica } => {
                                format!("replica {replica} of {name} is missing")
                            }
                            Object::Plug { .. } => "plug container is missing".into(),
                            Object::Stray => unreachable!("strays are never desired"),
                        };
                        if *run {
                            step(
                                node,
                                &spec.name,
                                Action::Create {
                                    spec: Box::new(spec.clone()),
                                },
                                reason,
                            );
                        }
                    }
                }
            }
        }
        // Every other copy of the same object goes, after the kept or new one is up — except a
        // running copy on the same node that holds host ports the kept one must bind to start:
        // that one goes first (else the start fails on every pass, e.g. after an interrupted
        // start-first recreate).
        let starts_kept = local
            .iter()
            .position(|st| matches!(st.action, Action::Start { .. }));
        for (n, o) in &copies {
            if Some(o.record.id.as_str()) == replaced {
                continue;
            }
            if !s.observed.is_reachable(n) {
                continue;
            }
            let blocking =
                starts_kept.is_some() && *n == node.as_str() && !held_ports(o, spec).is_empty();
            let reason = if blocking {
                format!(
                    "extra copy of {}, removed first: it holds host port {}",
                    describe(object),
                    join_ports(&held_ports(o, spec))
                )
            } else {
                format!("extra copy of {}", describe(object))
            };
            let removal = Step {
                node: n.to_string(),
                container: o.record.name.clone(),
                object: object.clone(),
                action: Action::Remove {
                    id: o.record.id.clone(),
                    grace_secs: grace_secs(o),
                },
                reason,
                group: group.clone(),
            };
            match starts_kept {
                Some(i) if blocking => local.insert(i, removal),
                _ => local.push(removal),
            }
        }
        // A service's replacements roll one replica at a time (one group per service); steps
        // that replace nothing (creates, updates, starts) run in parallel, one group per replica.
        if !local
            .iter()
            .any(|st| matches!(st.action, Action::Replace { .. }))
            && let Object::Service { name, replica } = object
        {
            for st in &mut local {
                st.group = format!("service/{name}/{replica}");
            }
        }
        out.steps.extend(local);
    }

    for (node, o) in strays {
        let reason = stray_reason(s, o);
        out.steps.push(Step {
            node: node.to_string(),
            container: o.record.name.clone(),
            object: Object::Stray,
            action: Action::Remove {
                id: o.record.id.clone(),
                grace_secs: grace_secs(o),
            },
            reason,
            group: Object::Stray.group(&o.record.name),
        });
    }
    order_port_handovers(&mut out.steps, s);
    out
}

/// A container that must bind a host port which another step on the same node frees (a removal,
/// or a replacement whose old container holds it — a port handed from one service to another in
/// one change) would fail to start while both run: it is moved right after that step, into its
/// group (a group runs in order).
fn order_port_handovers(steps: &mut Vec<Step>, s: &Snapshot) {
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
fn held_ports(o: &Observed, spec: &ContainerSpec) -> Vec<u16> {
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

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(object: &Object) -> String {
    match object {
        Object::Service { name, replica } => format!("{name} replica {replica}"),
        Object::Plug { id } => format!("plug {id}"),
        Object::Stray => "stray".into(),
    }
}

fn state_word(state: RunState) -> &'static str {
    match state {
        RunState::Created => "created, never started",
        RunState::Exited => "exited",
        RunState::Dead => "dead",
        RunState::Paused => "paused",
        RunState::Restarting => "restarting",
        RunState::Removing => "removing",
        RunState::Running => "running",
    }
}

fn move_reason(s: &Snapshot, old_node: &str) -> String {
    let c = s.conditions.get(old_node).cloned().unwrap_or_default();
    if c.draining || c.drained {
        format!("{old_node} is draining")
    } else if s.lost.contains(old_node) {
        format!("{old_node} is not ready")
    } else {
        "placement changed".into()
    }
}

fn stray_reason(s: &Snapshot, o: &Observed) -> String {
    let r = &o.record;
    match r.label(labels::KIND) {
        Some("service") => match r.label(labels::SERVICE) {
            Some(svc) if s.fleet.services.contains_key(svc) => {
                let n = s.fleet.services[svc].replicas;
                let replica = r.label(labels::REPLICA).unwrap_or("?");
                let node = r.label(labels::NODE).unwrap_or("?");
                match replica.parse::<u32>() {
                    Ok(i) if i < n && s.evict.contains(node) => format!(
                        "replica {replica} evicted from {node} (drain --force): no other node may run it"
                    ),
                    Ok(i) if i < n => format!("replica {replica} may not run on {node} any more"),
                    _ => format!("replica {replica} is beyond replicas: {n}"),
                }
            }
            Some(svc) => format!("service {svc} is not in the manifests"),
            None => "service container without a service label".into(),
        },
        Some("plug") => match r.label(labels::PLUG) {
            Some(id) => match s.plugs.iter().find(|p| p.id == id) {
                Some(p) if !s.fleet.plug_classes.contains_key(&p.class) => {
                    format!("plug class {} is not in the manifests", p.class)
                }
                Some(p) => format!("stale copy: plug {id} lives on {}", p.node),
                None => format!("plug {id} was deleted"),
            },
            None => "plug container without a plug label".into(),
        },
        _ => "unknown kind".into(),
    }
}

/// Whether going from `have` to `want` drops a limit the engine applies now (memory
/// reservation, CPU quota, CPU shares, cpuset): the engine's update call cannot do that.
pub fn removes_a_limit(have: &Resources, want: &Resources) -> bool {
    let set = |v: Option<u64>| v.is_some_and(|x| x != 0);
    (set(have.memory_reservation) && !set(want.memory_reservation))
        || (set(have.nano_cpus) && !set(want.nano_cpus))
        || (set(have.cpu_shares) && !set(want.cpu_shares))
        || (have.cpuset.as_ref().is_some_and(|c| !c.is_empty())
            && want.cpuset.as_ref().is_none_or(|c| c.is_empty()))
}

/// In-place changes between observed and desired limits, in words.
pub fn in_place_changes(
    have: &Resources,
    have_restart: RestartPolicy,
    want: &Resources,
    want_restart: RestartPolicy,
) -> Vec<String> {
    let mut out = Vec::new();
    let nz = |v: Option<u64>| v.filter(|x| *x != 0);
    let bytes = |v: Option<u64>| nz(v).map_or("none".to_string(), |b| Bytes(b).to_string());
    if have.memory != want.memory {
        out.push(format!(
            "memory {} → {}",
            bytes(Some(have.memory)),
            bytes(Some(want.memory))
        ));
    }
    if nz(have.memory_reservation) != nz(want.memory_reservation) {
        out.push(format!(
            "memoryReservation {} → {}",
            bytes(have.memory_reservation),
            bytes(want.memory_reservation)
        ));
    }
    let cpus =
        |v: Option<u64>| nz(v).map_or("none".to_string(), |n| MilliCpus(n / 1_000_000).to_string());
    if nz(have.nano_cpus) != nz(want.nano_cpus) {
        out.push(format!(
            "cpus {} → {}",
            cpus(have.nano_cpus),
            cpus(want.nano_cpus)
        ));
    }
    if nz(have.cpu_shares) != nz(want.cpu_shares) {
        let s = |v: Option<u64>| nz(v).map_or("default".to_string(), |n| n.to_string());
        out.push(format!(
            "cpuShares {} → {}",
            s(have.cpu_shares),
            s(want.cpu_shares)
        ));
    }
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if set(&have.cpuset) != set(&want.cpuset) {
        let s = |v: &Option<String>| set(v).unwrap_or_else(|| "all".into());
        out.push(format!("cpuset {} → {}", s(&have.cpuset), s(&want.cpuset)));
    }
    if have_restart != want_restart {
        out.push(format!(
            "restart {} → {}",
            have_restart.as_str(),
            want_restart.as_str()
        ));
    }
    out
}

/// What differs between the observed container and the desired spec (hash-covered fields).
fn recreate_reason(want: &ContainerSpec, o: &Observed) -> String {
    let Some(d) = &o.details else {
        return "spec changed".into();
    };
    let have = &d.spec;
    let mut out = Vec::new();
    if have.image != want.image {
        out.push(format!("image {} → {}", have.image, want.image));
    }
    if let Some(cmd) = &want.command
        && have.command.as_ref() != Some(cmd)
    {
        out.push("command changed".into());
    }
    let env: Vec<&str> = want
        .env
        .iter()
        .filter(|(k, v)| have.env.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if !env.is_empty() {
        out.push(format!("env {} changed", env.join(", ")));
    }
    let mut hp: Vec<_> = have.ports.clone();
    let mut wp: Vec<_> = want.ports.clone();
    hp.sort();
    wp.sort();
    if hp != wp {
        out.push("ports changed".into());
    }
    if have.volumes.iter().collect::<BTreeSet<_>>() != want.volumes.iter().collect::<BTreeSet<_>>()
    {
        out.push("volumes changed".into());
    }
    if want.healthcheck.is_some() && have.healthcheck != want.healthcheck {
        out.push("healthcheck changed".into());
    }
    if have.labels.get(labels::NODE) != want.labels.get(labels::NODE) {
        out.push("node label changed".into());
    }
    if out.is_empty() {
        let old = o.record.label(labels::SPEC_HASH).unwrap_or("none");
        let new = want
            .labels
            .get(labels::SPEC_HASH)
            .map_or("none", String::as_str);
        out.push(format!("spec changed (hash {old} → {new})"));
    }
    out.join(", ")
}

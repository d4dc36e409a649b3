//! The planner (pure): desired fleet + observed nodes + recorded state → a [`Plan`] of steps,
//! each with its node, container, action and a human reason ("memory 256MiB → 512MiB, in
//! place", "image web:1 → web:2, recreate"). A plan is data: `plan` prints it, `apply` executes
//! it, and the two cannot disagree.
//!
//! # Guarantees
//! - Observed equal to desired ⇒ no steps.
//! - Nothing is planned on an unreachable node, and nothing that lives on one is re-placed
//!   until the node is lost (unreachable is not absent) — unless its placement no longer allows
//!   that node: the operator moved it, so it is placed anew while the old copy, out of reach,
//!   stays until the node answers.
//! - A replica seen on several nodes is where it was last placed (else on a node not lost);
//!   its other copies are removed, after the kept one is up.
//! - A container that must bind a host port another step on its node frees runs after that
//!   step, in its group.
//! - No replica is placed past its per-node cap or on a host port taken on that node, not even
//!   to keep one that has nowhere else to go.
//! - Containers without this fleet's labels never appear (observation filters them out).
//! - Steps of one group (one service, one plug, one stray container) run in order; groups are
//!   independent.
//!
//! # Layout
//! [`plan`] is a pipeline over the snapshot, one seam per module:
//! - `views`: per node, the scheduler's view (availability, condition, what it holds) and the
//!   service placement over those views;
//! - `wanted`: per object, the container that should run where (plugs leaving a draining or
//!   lost node are placed anew here);
//! - `strays`: observed containers sorted by object, and removal of those nothing wants;
//! - `object`: per wanted object, the steps from its observed copies to it (keep, update,
//!   start, stop, recreate, move, create, remove extra copies);
//! - `ports`: host ports handed from one step to another on a node, and their ordering;
//! - `reasons`: every reason in words, and which limit changes the engine makes in place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::container::{ContainerSpec, Resources, RestartPolicy, labels};
use crate::manifest::{DesiredFleet, UpdateOrder};
use crate::observe::{NodeObservation, Observed, ObservedFleet};
use crate::schedule::{Diagnosis, ServicePlacement};
use crate::store::{NodeCondition, PlugRecord};
use crate::transport::ContainerUpdate;

mod object;
mod ports;
mod reasons;
mod strays;
#[cfg(test)]
mod tests;
mod views;
mod wanted;

pub use reasons::{in_place_changes, removes_a_limit};
pub use views::{node_views, scheduling_views};

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
    fn group(&self, container: &str) -> StepGroup {
        match self {
            Object::Service { name, .. } => StepGroup::Service(name.clone()),
            Object::Plug { id } => StepGroup::Plug(id.clone()),
            Object::Stray => StepGroup::Stray(container.to_string()),
        }
    }
}

impl fmt::Display for Object {
    /// `service web replica 0`, `plug ab12cd`, `stray container`: how messages name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Service { name, replica } => write!(f, "service {name} replica {replica}"),
            Object::Plug { id } => write!(f, "plug {id}"),
            Object::Stray => f.write_str("stray container"),
        }
    }
}

/// Which steps run in order: steps of one group run one after another; groups run in
/// parallel. Shown (and serialised) as `service/NAME`, `service/NAME/REPLICA`, `plug/ID`,
/// `stray/CONTAINER`, `restart/CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepGroup {
    /// A service's replacements, rolled one replica at a time.
    Service(String),
    /// One replica's steps when its service replaces nothing (they run beside other replicas').
    Replica(String, u32),
    /// One plug's steps.
    Plug(String),
    /// The removal of one stray container.
    Stray(String),
    /// The controller's restart of one unhealthy container (stop, then start).
    Restart(String),
}

impl fmt::Display for StepGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepGroup::Service(name) => write!(f, "service/{name}"),
            StepGroup::Replica(name, replica) => write!(f, "service/{name}/{replica}"),
            StepGroup::Plug(id) => write!(f, "plug/{id}"),
            StepGroup::Stray(c) => write!(f, "stray/{c}"),
            StepGroup::Restart(c) => write!(f, "restart/{c}"),
        }
    }
}

impl Serialize for StepGroup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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
    pub group: StepGroup,
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
    /// Plugs found on the nodes that the state store did not know, adopted (recorded) instead
    /// of removed: (id, node). Set by the reconcile, not by [`plan`].
    pub adopted: Vec<(String, String)>,
    /// Plug containers found that cannot be adopted, with why: left alone. Set by the
    /// reconcile.
    pub unadoptable: Vec<(String, String)>,
    /// The fleet's network: swarm and network steps (run before the container steps) and
    /// problems. Set by the reconcile when the observation included networks.
    pub network: crate::network::NetworkPlan,
    /// The digest each image runs as, and how it was found. Set by the reconcile.
    pub images: crate::images::ImagePins,
    /// Said with the plan, acted on by nothing and keeping nothing from converging (a node
    /// whose engine is not the one declared). Set by the reconcile.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        !self.steps.is_empty() || !self.plug_moves.is_empty() || !self.network.steps.is_empty()
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

/// Computes the plan.
pub fn plan(s: &Snapshot) -> Plan {
    let mut out = Plan::default();
    for (node, obs) in &s.observed.nodes {
        if let NodeObservation::Unreachable { error, .. } = obs {
            out.unreachable.insert(node.clone(), error.clone());
        }
    }

    let (mut views, placement) = scheduling_views(s);
    record_placement(&placement, &mut out);
    let mut wanted = wanted::replicas(s, &placement);
    wanted.extend(wanted::plugs(s, &mut views, &mut out));

    let sorted = strays::sort(s, &wanted);
    for w in &wanted {
        if !s.observed.is_reachable(&w.node) {
            continue; // nothing can be done there now
        }
        let copies = sorted
            .copies
            .get(&w.identity)
            .map_or(&[][..], Vec::as_slice);
        let steps = object::steps(s, w, copies);
        out.unchanged.extend(steps.unchanged);
        out.steps.extend(steps.steps);
    }
    out.steps.extend(strays::removals(s, &sorted.strays));
    ports::order_port_handovers(&mut out.steps, s);
    out
}

/// Records the service placement in the plan: where every replica goes, and the replicas that
/// fit nowhere or must stay where they are.
fn record_placement(placement: &ServicePlacement, out: &mut Plan) {
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
}

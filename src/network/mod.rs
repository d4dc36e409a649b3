//! The fleet's network (SPEC §10): a user-defined bridge per node, or one Swarm attachable
//! overlay across the nodes, which fleetctl forms and keeps in line with the manifests through
//! the engines' own API. It never creates Swarm services: Swarm is used for its overlay only.
//!
//! [`plan`] is pure: from one observation (each node's swarm view and fleet networks, and one
//! manager's member list) it decides the steps — init, join, promote, demote, remove a member,
//! create or remove a network — and the problems to report (no reachable manager, a node in
//! another swarm, a failed join, settings that differ from the manifests). [`exec`] carries the
//! steps out. A fleet whose network is as declared plans nothing, so a no-op apply stays
//! read-only.

pub mod exec;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::container::{
    EngineKind, NetworkDriver, NetworkRecord, NetworkSpec, SwarmInfo, SwarmMember, SwarmRole,
    SwarmState, labels,
};
use crate::manifest::DesiredFleet;
use crate::observe::{NodeObservation, ObservedFleet};

/// The port managers listen on for joins and Raft.
pub const SWARM_PORT: u16 = 2377;

/// Managers a swarm of `nodes` nodes keeps: 1 for 1–2 nodes, 3 for 3–6, 5 beyond. An odd
/// number, so a majority survives the loss of (n−1)/2 of them; never more than there are nodes.
pub fn managers_wanted(nodes: usize) -> usize {
    let want = match nodes {
        0..=2 => 1,
        3..=6 => 3,
        _ => 5,
    };
    want.min(nodes)
}

/// One change to the fleet's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum NetStep {
    /// Start a new swarm on `node`, advertising `addr`, labelled as the fleet's.
    SwarmInit {
        /// Node.
        node: String,
        /// Address it advertises.
        addr: String,
        /// The swarm's labels: `fleet.managed-by=fleetctl`, `fleet.fleet=<fleet>`.
        labels: BTreeMap<String, String>,
    },
    /// Join `node` to the swarm through the manager `via` (reached at `remote`).
    SwarmJoin {
        /// Node.
        node: String,
        /// Address it advertises.
        addr: String,
        /// Manager node whose join token is used.
        via: String,
        /// Manager address, `ip:2377`.
        remote: String,
        /// Join as a manager.
        manager: bool,
    },
    /// Make `node` leave its swarm (its membership failed, or it is in none the fleet knows).
    SwarmLeave {
        /// Node.
        node: String,
    },
    /// Change a member's role, through manager `via`.
    SetRole {
        /// Manager node that carries the change.
        via: String,
        /// The node it concerns (its name, or its address when it is not in the manifests).
        node: String,
        /// Swarm node id.
        id: String,
        /// Object version.
        version: u64,
        /// New role.
        role: SwarmRole,
    },
    /// Remove a member that left the manifests, through manager `via`.
    RemoveMember {
        /// Manager node that carries the change.
        via: String,
        /// The member (its address or host name).
        node: String,
        /// Swarm node id.
        id: String,
    },
    /// Create the fleet's network on `node`.
    CreateNetwork {
        /// Node.
        node: String,
        /// What to create.
        spec: NetworkSpec,
    },
    /// Remove a network of this fleet that is no longer its network (the mode changed) and that
    /// no container of the fleet uses any more.
    RemoveNetwork {
        /// Node.
        node: String,
        /// Network name.
        name: String,
        /// Network id.
        id: String,
    },
}

impl NetStep {
    /// The node the step runs on.
    pub fn node(&self) -> &str {
        match self {
            NetStep::SwarmInit { node, .. }
            | NetStep::SwarmJoin { node, .. }
            | NetStep::SwarmLeave { node }
            | NetStep::CreateNetwork { node, .. }
            | NetStep::RemoveNetwork { node, .. } => node,
            NetStep::SetRole { via, .. } | NetStep::RemoveMember { via, .. } => via,
        }
    }

    /// One line for the plan: what and why.
    pub fn describe(&self) -> String {
        match self {
            NetStep::SwarmInit { node, addr, .. } => {
                format!(
                    "swarm init on {node} (advertise {addr}): the fleet's overlay needs a swarm"
                )
            }
            NetStep::SwarmJoin {
                node,
                addr,
                via,
                manager,
                ..
            } => format!(
                "swarm join {node} (advertise {addr}) as {} through {via}",
                if *manager { "manager" } else { "worker" }
            ),
            NetStep::SwarmLeave { node } => {
                format!("swarm leave on {node}: its membership is stale or failed; it joins again")
            }
            NetStep::SetRole { node, role, .. } => match role {
                SwarmRole::Manager => format!("promote {node} to swarm manager"),
                SwarmRole::Worker => format!("demote {node} to swarm worker"),
            },
            NetStep::RemoveMember { node, .. } => {
                format!("remove {node} from the swarm: it is not in the manifests")
            }
            NetStep::CreateNetwork { node, spec } => format!(
                "create network {} ({}) on {node}",
                spec.name,
                spec.driver.as_str()
            ),
            NetStep::RemoveNetwork { node, name, .. } => {
                format!("remove network {name} on {node}: the fleet's network is now another")
            }
        }
    }
}

/// Something about the network that fleetctl reports and does not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum NetProblem {
    /// Nodes are in the swarm but no manager answers: quorum (or the only manager) is lost.
    NoManager {
        /// Members that answered (their containers keep running).
        members: Vec<String>,
        /// Nodes that were managers as far as the members know, or that did not answer.
        unreachable: Vec<String>,
    },
    /// A node is in a swarm that is not the fleet's: fleetctl does not move it.
    ForeignSwarm {
        /// Node.
        node: String,
    },
    /// A node's membership is pending, failed or locked.
    Membership {
        /// Node.
        node: String,
        /// State.
        state: SwarmState,
        /// The engine's words.
        error: Option<String>,
    },
    /// A node has no address the others can reach (overlay).
    NoAddress {
        /// Node.
        node: String,
    },
    /// A network of the fleet's name exists and is not fleetctl's.
    Foreign {
        /// Node.
        node: String,
        /// Network name.
        name: String,
    },
    /// A container that needs the fleet's network is not created or replaced on a node where
    /// the network cannot be joined now: the old copy keeps running.
    Held {
        /// Node.
        node: String,
        /// Container.
        container: String,
        /// Why the network cannot be joined there.
        why: String,
    },
    /// The fleet's network exists with other settings than the manifests': the engine cannot
    /// change a network in place.
    Differs {
        /// Node.
        node: String,
        /// Network name.
        name: String,
        /// What differs, e.g. `subnet 10.0.1.0/24 → 10.240.0.0/16`.
        what: String,
    },
    /// A node of an overlay fleet whose engine cannot join a swarm (Podman): it is never a
    /// swarm member; the fleet's network there is a bridge of its own (the name a bridge fleet
    /// gives it), which its containers attach to. A notice: it keeps nothing from converging.
    OwnBridge {
        /// Node.
        node: String,
        /// Its engine, as it answered.
        engine: EngineKind,
        /// The engine's version, when it was read.
        version: Option<String>,
        /// The bridge network's name on that node.
        name: String,
    },
}

impl NetProblem {
    /// Whether this is said only: the fleet converges with it (settings that differ, a node on
    /// a bridge of its own).
    pub fn is_notice(&self) -> bool {
        matches!(
            self,
            NetProblem::Differs { .. } | NetProblem::OwnBridge { .. }
        )
    }
}

impl std::fmt::Display for NetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetProblem::NoManager {
                members,
                unreachable,
            } if members.is_empty() => write!(
                f,
                "the fleet's swarm is not formed while {} does not answer (a node that does not answer may already hold it; a second swarm is never started beside it)",
                unreachable.join(", ")
            ),
            NetProblem::NoManager {
                members,
                unreachable,
            } => write!(
                f,
                "swarm quorum lost: no manager answers (unreachable: {}); containers keep running and names resolve for what is attached, but nothing new joins the overlay and {} cannot attach until a manager is back",
                if unreachable.is_empty() {
                    "unknown".to_string()
                } else {
                    unreachable.join(", ")
                },
                if members.is_empty() {
                    "the nodes".to_string()
                } else {
                    members.join(", ")
                }
            ),
            NetProblem::ForeignSwarm { node } => write!(
                f,
                "node {node} is in another swarm than the fleet's; fleetctl leaves it alone (run `docker swarm leave` there to let the fleet take it)"
            ),
            NetProblem::Membership { node, state, error } => write!(
                f,
                "node {node}: swarm membership {}{}",
                state.as_str(),
                error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
            NetProblem::NoAddress { node } => write!(
                f,
                "node {node} has no address the other nodes can reach: set spec.address"
            ),
            NetProblem::Foreign { node, name } => write!(
                f,
                "node {node}: a network named {name} exists and is not fleetctl's; rename or remove it"
            ),
            NetProblem::Held {
                node,
                container,
                why,
            } => write!(
                f,
                "node {node}: {container} not created or replaced: the fleet's network cannot be joined there ({why}); what runs keeps running"
            ),
            NetProblem::Differs { node, name, what } => write!(
                f,
                "node {node}: network {name} differs from the manifests ({what}); the engine cannot change a network in place: remove it once its containers are gone, and apply"
            ),
            NetProblem::OwnBridge {
                node,
                engine,
                version,
                name,
            } => write!(
                f,
                "node {node} runs {engine}{}, which cannot join the swarm: its containers are on a bridge network of their own, {name} (names resolve on {node} only; other nodes' services through published ports, outside the overlay and its encryption)",
                version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// The swarm as one observation shows it, per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SwarmView {
    /// Per manifest node that answered: state, manager, error.
    pub nodes: BTreeMap<String, SwarmInfo>,
    /// Members as one manager lists them, with the node each is (when in the manifests).
    pub members: Vec<(Option<String>, SwarmMember)>,
    /// The manager that listed them.
    pub listed_by: Option<String>,
    /// The swarm's labels, as that manager reports them (`None`: could not be read).
    pub labels: Option<BTreeMap<String, String>>,
}

/// What to do about the fleet's network, and what to report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct NetworkPlan {
    /// The network's name and driver.
    pub network: Option<(String, NetworkDriver)>,
    /// Steps in order (swarm first, then networks).
    pub steps: Vec<NetStep>,
    /// Problems reported, not acted on.
    pub problems: Vec<NetProblem>,
}

/// Nodes where the fleet's network cannot be joined now, with why: from the plan's problems,
/// and from the network steps that failed (`outcomes`, in step order, when they ran).
pub fn unusable_nodes(
    fleet: &DesiredFleet,
    plan: &NetworkPlan,
    outcomes: &[exec::NetOutcome],
) -> BTreeMap<String, String> {
    let overlay = fleet.network_driver() == NetworkDriver::Overlay;
    let mut out = BTreeMap::new();
    // Nodes on a bridge of their own: what concerns the swarm or the overlay is not theirs.
    let bridged: BTreeSet<&str> = plan
        .problems
        .iter()
        .filter_map(|p| match p {
            NetProblem::OwnBridge { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    let all = |out: &mut BTreeMap<String, String>, why: &str| {
        for n in fleet.nodes.keys() {
            if !bridged.contains(n.as_str()) {
                out.entry(n.clone()).or_insert_with(|| why.to_string());
            }
        }
    };
    for p in &plan.problems {
        match p {
            NetProblem::NoManager { .. } => all(&mut out, "no swarm manager answers"),
            NetProblem::ForeignSwarm { node } => {
                out.insert(node.clone(), "the node is in another swarm".into());
            }
            NetProblem::Membership { node, state, .. } => {
                out.insert(node.clone(), format!("swarm membership {}", state.as_str()));
            }
            NetProblem::NoAddress { node } => {
                out.insert(node.clone(), "the node has no address".into());
            }
            NetProblem::Foreign { node, name } if overlay && !bridged.contains(node.as_str()) => {
                all(
                    &mut out,
                    &format!("a network named {name} on {node} is not fleetctl's"),
                )
            }
            NetProblem::Foreign { node, name } => {
                out.insert(
                    node.clone(),
                    format!("a network named {name} is not fleetctl's"),
                );
            }
            NetProblem::Held { .. } | NetProblem::Differs { .. } | NetProblem::OwnBridge { .. } => {
            }
        }
    }
    for (step, o) in plan.steps.iter().zip(outcomes) {
        if o.ok {
            continue;
        }
        let why = o.error.clone().unwrap_or_default();
        match step {
            NetStep::SwarmInit { .. } => all(&mut out, &why),
            NetStep::CreateNetwork { spec, .. } if spec.driver == NetworkDriver::Overlay => {
                all(&mut out, &why)
            }
            NetStep::SwarmJoin { node, .. }
            | NetStep::SwarmLeave { node }
            | NetStep::CreateNetwork { node, .. } => {
                out.entry(node.clone()).or_insert(why);
            }
            NetStep::SetRole { .. }
            | NetStep::RemoveMember { .. }
            | NetStep::RemoveNetwork { .. } => {}
        }
    }
    out
}

/// The spec of the fleet's network.
pub fn network_spec(fleet: &DesiredFleet) -> NetworkSpec {
    network_spec_with(fleet, fleet.network_driver())
}

/// The spec of the fleet's network on a node whose engine is `engine` (an overlay fleet's
/// Podman node: its own bridge; see [`DesiredFleet::network_driver_on`]).
pub fn network_spec_on(fleet: &DesiredFleet, engine: EngineKind) -> NetworkSpec {
    network_spec_with(fleet, fleet.network_driver_on(engine))
}

/// The spec of the fleet's network with `driver`: on a node whose engine cannot join the swarm
/// of an overlay fleet, the bridge it gets instead (named as a bridge fleet's, same settings).
fn network_spec_with(fleet: &DesiredFleet, driver: NetworkDriver) -> NetworkSpec {
    let s = &fleet.fleet.network;
    NetworkSpec {
        name: crate::manifest::network_name(&fleet.fleet.name, driver),
        driver,
        labels: BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::FLEET.to_string(), fleet.fleet.name.clone()),
        ]),
        subnet: s.subnet.clone(),
        mtu: s.mtu,
        encrypted: s.encrypted && driver == NetworkDriver::Overlay,
    }
}

/// What differs between a network as it exists and its spec (subnet, MTU, encryption, driver).
fn differences(have: &NetworkRecord, want: &NetworkSpec) -> Vec<String> {
    let mut out = Vec::new();
    if have.driver != want.driver.as_str() {
        out.push(format!("driver {} → {}", have.driver, want.driver.as_str()));
    }
    if let Some(s) = &want.subnet
        && have.subnet.as_ref() != Some(s)
    {
        out.push(format!(
            "subnet {} → {s}",
            have.subnet.as_deref().unwrap_or("none")
        ));
    }
    let mtu = have
        .options
        .get("com.docker.network.driver.mtu")
        .and_then(|m| m.parse::<u32>().ok());
    if want.mtu.is_some() && mtu != want.mtu {
        out.push(format!(
            "mtu {} → {}",
            mtu.map_or("default".into(), |m| m.to_string()),
            want.mtu.map_or("default".into(), |m| m.to_string())
        ));
    }
    let encrypted = have.options.contains_key("encrypted");
    if encrypted != want.encrypted {
        out.push(format!("encrypted {encrypted} → {}", want.encrypted));
    }
    out
}

/// The engine of `node`: as it answered, else as the manifests declare it.
pub fn engine_of(fleet: &DesiredFleet, observed: &ObservedFleet, node: &str) -> EngineKind {
    observed
        .engines
        .get(node)
        .copied()
        .or_else(|| fleet.nodes.get(node).map(|n| n.engine))
        .unwrap_or_default()
}

/// Nodes whose engine answers as another than the manifests declare (`spec.docker.engine`), one
/// warning line each: fleetctl plans by the engine found. Pure: from the observation's engines.
pub fn engine_warnings(fleet: &DesiredFleet, observed: &ObservedFleet) -> Vec<String> {
    fleet
        .nodes
        .values()
        .filter_map(|n| {
            let found = *observed.engines.get(&n.name)?;
            if found == n.engine {
                return None;
            }
            let version = match observed.nodes.get(&n.name) {
                Some(NodeObservation::Reachable {
                    engine: Some(e), ..
                }) => format!(" {}", e.version),
                _ => String::new(),
            };
            Some(format!(
                "node {} is declared {} (spec.docker.engine) but its engine answers as {found}{version}: fleetctl plans by the engine found",
                n.name, n.engine
            ))
        })
        .collect()
}

/// Nodes of an overlay fleet whose engine (as [`engine_of`] tells) cannot join a swarm: they
/// take no part in it and get a bridge of their own. Empty for a bridge fleet.
pub fn swarmless_nodes(fleet: &DesiredFleet, observed: &ObservedFleet) -> BTreeSet<String> {
    if fleet.network_driver() != NetworkDriver::Overlay {
        return BTreeSet::new();
    }
    fleet
        .nodes
        .keys()
        .filter(|n| !engine_of(fleet, observed, n).joins_swarm())
        .cloned()
        .collect()
}

fn networks_of<'a>(observed: &'a ObservedFleet, node: &str) -> Option<&'a [NetworkRecord]> {
    match observed.nodes.get(node) {
        Some(NodeObservation::Reachable { networks, .. }) => Some(networks),
        _ => None,
    }
}

/// The network steps and problems of one observation. `lost` are the nodes past
/// `nodeLostAfter`: a manager among them is replaced by a ready worker (promoted first, so the
/// quorum never shrinks below a majority), then demoted.
pub fn plan(
    fleet: &DesiredFleet,
    observed: &ObservedFleet,
    lost: &BTreeSet<String>,
) -> NetworkPlan {
    let spec = network_spec(fleet);
    let mut out = NetworkPlan {
        network: Some((spec.name.clone(), spec.driver)),
        ..NetworkPlan::default()
    };
    let reachable: Vec<&str> = fleet
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|n| observed.is_reachable(n))
        .collect();
    let mut create_on: Vec<(String, NetworkSpec)> = Vec::new();
    // Overlay: nodes whose engine cannot join the swarm get a bridge of their own.
    let swarmless = swarmless_nodes(fleet, observed);
    let bridge = network_spec_with(fleet, NetworkDriver::Bridge);
    match spec.driver {
        NetworkDriver::Bridge => {
            create_on.extend(reachable.iter().map(|n| (n.to_string(), spec.clone())));
        }
        NetworkDriver::Overlay => {
            if let Some(m) = plan_swarm(fleet, &observed.swarm, lost, &swarmless, &mut out) {
                create_on.push((m, spec.clone()));
            }
            for node in reachable.iter().filter(|n| swarmless.contains(**n)) {
                let version = match observed.nodes.get(*node) {
                    Some(NodeObservation::Reachable {
                        engine: Some(e), ..
                    }) => Some(e.version.clone()),
                    _ => None,
                };
                out.problems.push(NetProblem::OwnBridge {
                    node: node.to_string(),
                    engine: engine_of(fleet, observed, node),
                    version,
                    name: bridge.name.clone(),
                });
                create_on.push((node.to_string(), bridge.clone()));
            }
        }
    }
    for (node, spec) in create_on {
        let nets = networks_of(observed, &node).unwrap_or(&[]);
        match nets.iter().find(|n| n.name == spec.name) {
            None => out.steps.push(NetStep::CreateNetwork {
                node: node.clone(),
                spec: spec.clone(),
            }),
            Some(n) if n.label(labels::FLEET) != Some(fleet.fleet.name.as_str()) => {
                out.problems.push(NetProblem::Foreign {
                    node: node.clone(),
                    name: spec.name.clone(),
                })
            }
            Some(n) => {
                let what = differences(n, &spec);
                if !what.is_empty() {
                    out.problems.push(NetProblem::Differs {
                        node: node.clone(),
                        name: spec.name.clone(),
                        what: what.join(", "),
                    });
                }
            }
        }
    }
    // The fleet's networks under another name (the mode changed), unused by its containers.
    let in_use: BTreeSet<&str> = observed
        .nodes
        .keys()
        .flat_map(|n| observed.containers(n))
        .flat_map(|o| o.record.networks.iter().map(String::as_str))
        .collect();
    let fleet_unreachable = reachable.len() < fleet.nodes.len();
    for node in &reachable {
        for n in networks_of(observed, node).unwrap_or(&[]) {
            let ours = n.label(labels::MANAGED_BY) == Some(labels::MANAGER)
                && n.label(labels::FLEET) == Some(fleet.fleet.name.as_str());
            // A swarm-wide network is only judged unused when every node answered.
            let unused =
                !in_use.contains(n.name.as_str()) && (n.scope != "swarm" || !fleet_unreachable);
            let wanted = if swarmless.contains(*node) {
                &bridge.name
            } else {
                &spec.name
            };
            if ours && n.name != *wanted && unused {
                out.steps.push(NetStep::RemoveNetwork {
                    node: node.to_string(),
                    name: n.name.clone(),
                    id: n.id.clone(),
                });
            }
        }
    }
    // One removal of a swarm-wide network is enough: keep the first per id.
    let mut seen = BTreeSet::new();
    out.steps.retain(|s| match s {
        NetStep::RemoveNetwork { id, .. } => seen.insert(id.clone()),
        _ => true,
    });
    out
}

/// The swarm steps; returns the manager node on which the overlay is created (or checked).
/// `swarmless`: nodes whose engine cannot join a swarm, left out of it altogether (never
/// joined, never a manager, never waited for).
fn plan_swarm(
    fleet: &DesiredFleet,
    view: &SwarmView,
    lost: &BTreeSet<String>,
    swarmless: &BTreeSet<String>,
    out: &mut NetworkPlan,
) -> Option<String> {
    let addr_of = |node: &str| -> Option<String> {
        fleet
            .nodes
            .get(node)
            .and_then(|n| n.peer_address())
            .map(str::to_string)
    };
    // Nodes that answered, in name order.
    let infos: Vec<(&str, &SwarmInfo)> = fleet
        .nodes
        .keys()
        .filter(|n| !swarmless.contains(*n))
        .filter_map(|n| view.nodes.get(n).map(|i| (n.as_str(), i)))
        .collect();
    for (node, info) in &infos {
        if addr_of(node).is_none() {
            out.problems.push(NetProblem::NoAddress {
                node: node.to_string(),
            });
        }
        if matches!(
            info.state,
            SwarmState::Pending | SwarmState::Error | SwarmState::Locked
        ) {
            out.problems.push(NetProblem::Membership {
                node: node.to_string(),
                state: info.state,
                error: info.error.clone(),
            });
        }
    }
    let manager = infos
        .iter()
        .find(|(n, i)| {
            i.state == SwarmState::Active && i.manager && view.listed_by.as_deref() == Some(*n)
        })
        .or_else(|| {
            infos
                .iter()
                .find(|(_, i)| i.state == SwarmState::Active && i.manager)
        })
        .map(|(n, i)| (n.to_string(), (*i).clone()));
    let inactive: Vec<&str> = infos
        .iter()
        .filter(|(n, i)| i.state == SwarmState::Inactive && addr_of(n).is_some())
        .map(|(n, _)| *n)
        .collect();
    let wanted = managers_wanted(fleet.nodes.len() - swarmless.len());
    let Some((via, via_info)) = manager else {
        // Any membership at all (active, locked, pending, failed) means a swarm exists.
        let members: Vec<String> = infos
            .iter()
            .filter(|(_, i)| i.state != SwarmState::Inactive)
            .map(|(n, _)| n.to_string())
            .collect();
        let silent: Vec<String> = fleet
            .nodes
            .keys()
            .filter(|n| {
                !view.nodes.contains_key(*n) && !lost.contains(*n) && !swarmless.contains(*n)
            })
            .cloned()
            .collect();
        if members.is_empty() && !silent.is_empty() {
            // A node that does not answer may be the manager of the fleet's swarm: starting one
            // now could put a second swarm beside it.
            out.problems.push(NetProblem::NoManager {
                members,
                unreachable: silent,
            });
            return None;
        }
        if !members.is_empty() {
            // In a swarm, but no manager answers: never start a second swarm beside it.
            let unreachable = fleet
                .nodes
                .keys()
                .filter(|n| !view.nodes.contains_key(*n) && !swarmless.contains(*n))
                .cloned()
                .collect();
            out.problems.push(NetProblem::NoManager {
                members,
                unreachable,
            });
            return None;
        }
        // Nobody is in a swarm: start one on the first node that answered, join the others.
        let first = inactive.first()?.to_string();
        let addr = addr_of(&first)?;
        out.steps.push(NetStep::SwarmInit {
            node: first.clone(),
            addr: addr.clone(),
            labels: BTreeMap::from([
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                (labels::FLEET.to_string(), fleet.fleet.name.clone()),
            ]),
        });
        for (i, node) in inactive.iter().enumerate().skip(1) {
            out.steps.push(NetStep::SwarmJoin {
                node: node.to_string(),
                addr: addr_of(node).unwrap_or_default(),
                via: first.clone(),
                remote: host_port(&addr),
                manager: i < wanted,
            });
        }
        return Some(first);
    };
    if view.listed_by.is_none() {
        // Managers answer as engines, but none could list the swarm: no leader, the quorum is
        // lost. Nothing is planned against a swarm whose members cannot be seen.
        out.problems.push(NetProblem::NoManager {
            members: infos
                .iter()
                .filter(|(_, i)| i.state == SwarmState::Active)
                .map(|(n, _)| n.to_string())
                .collect(),
            unreachable: infos
                .iter()
                .filter(|(_, i)| i.state == SwarmState::Active && i.manager)
                .map(|(n, _)| format!("{n} (no leader)"))
                .collect(),
        });
        return None;
    }
    let remote = if via_info.node_addr.is_empty() {
        host_port(&addr_of(&via).unwrap_or_default())
    } else {
        host_port(&via_info.node_addr)
    };
    // Members, with the manifest node each one is.
    let members = &view.members;
    // Whose swarm this is: labelled as this fleet's at init; one without a fleet label is
    // taken as the fleet's only when every member is a node of the manifests. Another swarm is
    // never joined, shaped or pruned: its nodes are reported.
    let fleet_label = view
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::FLEET).cloned());
    let all_known = !members.is_empty() && members.iter().all(|(n, _)| n.is_some());
    // The fleet that made it shapes its membership (removes and demotes what left its
    // manifests); any fleet of fleetctl's may use it (join its nodes, promote, attach), as fleets
    // that share nodes share the nodes' one swarm.
    let owner = match &fleet_label {
        Some(f) => *f == fleet.fleet.name,
        None => all_known,
    };
    let by_fleetctl = view
        .labels
        .as_ref()
        .is_some_and(|l| l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER));
    if !(owner || by_fleetctl) {
        for (node, info) in &infos {
            if info.state != SwarmState::Inactive {
                out.problems.push(NetProblem::ForeignSwarm {
                    node: node.to_string(),
                });
            }
        }
        return None;
    }
    let known_ids: BTreeSet<&str> = members.iter().map(|(_, m)| m.id.as_str()).collect();
    // Managers' addresses (without port), to tell a node this swarm removed from a node of
    // another swarm.
    let host = |a: &str| {
        a.rsplit_once(':')
            .map_or(a, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']')
            .to_string()
    };
    let manager_hosts: BTreeSet<String> = members
        .iter()
        .filter(|(_, m)| m.role == SwarmRole::Manager)
        .map(|(_, m)| m.addr.clone())
        .chain(std::iter::once(host(&remote)))
        .collect();
    let mut rejoin: Vec<&str> = Vec::new();
    for (node, info) in &infos {
        // A failed membership in this swarm (it knows the fleet's managers), as a worker: it
        // leaves, and joins again. A manager's, or another swarm's, is only reported.
        if info.state == SwarmState::Error
            && !info.manager
            && addr_of(node).is_some()
            && info
                .remote_managers
                .iter()
                .any(|r| manager_hosts.contains(&host(r)))
        {
            out.steps.push(NetStep::SwarmLeave {
                node: node.to_string(),
            });
            rejoin.push(node);
            continue;
        }
        if info.state == SwarmState::Active
            && !known_ids.is_empty()
            && !known_ids.contains(info.node_id.as_str())
        {
            let ours = info
                .remote_managers
                .iter()
                .any(|r| manager_hosts.contains(&host(r)));
            if ours && addr_of(node).is_some() {
                // Removed from this swarm (it left the manifests once) but still believes it is
                // a member: it leaves, and joins again.
                out.steps.push(NetStep::SwarmLeave {
                    node: node.to_string(),
                });
                rejoin.push(node);
            } else {
                out.problems.push(NetProblem::ForeignSwarm {
                    node: node.to_string(),
                });
            }
        }
    }
    // Managers that count: in the manifests, ready, not lost.
    let good_manager = |(n, m): &(Option<String>, SwarmMember)| {
        m.role == SwarmRole::Manager && m.ready && n.as_ref().is_some_and(|n| !lost.contains(n))
    };
    let mut managers = members.iter().filter(|m| good_manager(m)).count();
    // Joins: as managers while short of the wanted count.
    for node in inactive.iter().chain(&rejoin) {
        let as_manager = managers < wanted;
        if as_manager {
            managers += 1;
        }
        out.steps.push(NetStep::SwarmJoin {
            node: node.to_string(),
            addr: addr_of(node).unwrap_or_default(),
            via: via.clone(),
            remote: remote.clone(),
            manager: as_manager,
        });
    }
    // Promote ready workers of the manifests while short.
    for (n, m) in members {
        if managers >= wanted {
            break;
        }
        if let Some(n) = n
            && m.role == SwarmRole::Worker
            && m.ready
            && !lost.contains(n)
        {
            out.steps.push(NetStep::SetRole {
                via: via.clone(),
                node: n.clone(),
                id: m.id.clone(),
                version: m.version,
                role: SwarmRole::Manager,
            });
            managers += 1;
        }
    }
    // Demote managers that are lost or left the manifests, once others carry the quorum; then
    // remove members that left the manifests.
    for (n, m) in members {
        // Not in these manifests: another fleet's node, unless this fleet made the swarm.
        let gone = n.is_none() && owner;
        let is_lost = n.as_ref().is_some_and(|n| lost.contains(n));
        if m.role == SwarmRole::Manager
            && (gone || is_lost)
            && managers >= 1
            && n.as_deref() != Some(via.as_str())
        {
            out.steps.push(NetStep::SetRole {
                via: via.clone(),
                node: n.clone().unwrap_or_else(|| member_label(m)),
                id: m.id.clone(),
                version: m.version,
                role: SwarmRole::Worker,
            });
        }
        if gone {
            out.steps.push(NetStep::RemoveMember {
                via: via.clone(),
                node: member_label(m),
                id: m.id.clone(),
            });
        }
    }
    // More managers than wanted (the fleet shrank): demote the last ones by name, never `via`
    // (only in the fleet's own swarm: another fleet on these nodes may want them).
    let mut extra = if owner {
        members
            .iter()
            .filter(|m| good_manager(m))
            .count()
            .saturating_sub(wanted)
    } else {
        0
    };
    for (n, m) in members.iter().rev() {
        if extra == 0 {
            break;
        }
        if good_manager(&(n.clone(), m.clone())) && n.as_deref() != Some(via.as_str()) && !m.leader
        {
            out.steps.push(NetStep::SetRole {
                via: via.clone(),
                node: n.clone().unwrap_or_default(),
                id: m.id.clone(),
                version: m.version,
                role: SwarmRole::Worker,
            });
            extra -= 1;
        }
    }
    Some(via)
}

/// `addr:2377`, bracketed for an IPv6 address.
fn host_port(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{SWARM_PORT}")
    } else {
        format!("{addr}:{SWARM_PORT}")
    }
}

fn member_label(m: &SwarmMember) -> String {
    if m.addr.is_empty() {
        m.hostname.clone()
    } else {
        m.addr.clone()
    }
}

/// Matches a manager's member list to the manifest nodes: by the node id a node reports of
/// itself, else by the address it advertises.
pub fn name_members(
    fleet: &DesiredFleet,
    infos: &BTreeMap<String, SwarmInfo>,
    members: Vec<SwarmMember>,
) -> Vec<(Option<String>, SwarmMember)> {
    members
        .into_iter()
        .map(|m| {
            let by_id = infos
                .iter()
                .find(|(_, i)| !i.node_id.is_empty() && i.node_id == m.id)
                .map(|(n, _)| n.clone());
            let by_addr = || {
                fleet
                    .nodes
                    .values()
                    .find(|n| n.peer_address() == Some(m.addr.as_str()))
                    .map(|n| n.name.clone())
            };
            (by_id.or_else(by_addr), m)
        })
        .collect()
}

#[cfg(test)]
mod tests;

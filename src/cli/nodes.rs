//! `fleetctl get nodes`, `fleetctl describe node NAME` and `fleetctl trust NODE`.
//!
//! `get` / `describe` observe the nodes through the one observation path every other command
//! uses ([`crate::observe::observe`]: concurrent, bounded, a node that fails costs at most the
//! connect timeout and never holds up the others), asking for engine facts and measured memory,
//! and report per node: Ready / NotReady with the cause, engine and API version, capacity as
//! declared and as the engine reports it, and what the fleet's containers use.
//!
//! "Memory used" is the sum of the working sets (usage minus inactive file cache, one-shot stats)
//! of this fleet's *running* containers on the node, not the host's memory use. "CPU limits" is
//! the sum of the CPU quotas (`resources.cpus`) of those containers. Fleet containers are those
//! labelled `fleet.managed-by=fleetctl` and `fleet.fleet=<fleet name>`.
//!
//! Measuring memory costs up to about a second on Docker 20.10 (see
//! [`crate::observe::STATS_CONCURRENCY`]).
//!
//! "Disk" is the node's, not the fleet's: the engine's data root filesystem and what the engine
//! stores there ([`crate::disk::measure_all`], one more call set per reachable node after the
//! observation, concurrent across nodes), judged against the fleet's `diskHighWatermark`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;

use super::common::{
    emit, open_store_readonly, print_json, print_yaml, resolve_manifests, runtime,
};
use super::{GlobalOpts, Output};
use crate::container::{EngineInfo, EngineKind, Health, RunState};
pub use crate::disk::DiskStatus;
use crate::manifest::{Bytes, DesiredFleet, MilliCpus, NodeSpec};
use crate::observe::{NodeObservation, ObserveOptions, Observed, observe};
use crate::transport::hostkey::{self, HostKeyPolicy, Verdict};
use crate::transport::{self, Endpoint};

/// One node as `get nodes` / `describe node` report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// `user@host:port`, or `local:<socket>`.
    pub address: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it answered.
    pub status: Status,
    /// Why the node is NotReady.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Conditions (`cordoned`, `draining`, `drained`) as the state and the nodes record them:
    /// set through any state file.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub conditions: Vec<String>,
    /// Which engine answers (`docker`, `podman`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_kind: Option<EngineKind>,
    /// Engine version (e.g. `20.10.24`; Podman's own, e.g. `4.3.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Negotiated Docker API version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// CPUs and memory: declared, read from the engine, reserved, allocatable.
    pub capacity: Capacity,
    /// What this fleet's containers on the node use.
    pub usage: Usage,
    /// This fleet's containers (describe only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerRow>,
    /// The fleet's network on this node (SPEC §10), when the node answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NodeNetwork>,
    /// The node's disk, when the node answered (with `error` when it was not fully measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStatus>,
    /// Why it is hot (above `cpuHighWatermark`: no new plug), as the controller recorded it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hot: Option<String>,
    /// CPU as the controller last sampled it (under `cpuHighWatermark`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub load: Option<crate::load::MeasuredLoad>,
}

/// The fleet's network as one node has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeNetwork {
    /// Network name.
    pub name: String,
    /// `bridge` or `overlay`.
    pub driver: String,
    /// Whether the node lists it (a swarm worker lists an overlay only while a container of
    /// its uses it).
    pub present: bool,
    /// Swarm membership (overlay): `active`, `inactive`, `pending`, `error`, `locked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm: Option<String>,
    /// `manager` or `worker` (an active member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What is wrong, as apply reports it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl NodeNetwork {
    /// One word for the table: `aims/manager`, `aims-bridge`, `aims/inactive`, `missing`.
    fn short(&self) -> String {
        let mut out = if self.present || self.driver == "overlay" {
            self.name.clone()
        } else {
            format!("{} (missing)", self.name)
        };
        match (&self.swarm, &self.role) {
            (_, Some(r)) => out.push_str(&format!("/{r}")),
            (Some(st), None) => out.push_str(&format!("/{st}")),
            _ => {}
        }
        if !self.problems.is_empty() {
            out.push('!');
        }
        out
    }
}

impl NodeStatus {
    /// Whether the node answered.
    pub fn is_ready(&self) -> bool {
        self.status == Status::Ready
    }
}

/// Whether a node answered `get nodes` (serialised `Ready` / `NotReady`, as kubectl says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Its engine answered.
    Ready,
    /// It could not be reached, or its engine did not answer (the cause is beside it).
    NotReady,
}

impl Status {
    /// `Ready` / `NotReady`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "Ready",
            Status::NotReady => "NotReady",
        }
    }
}

/// CPUs (in millicpus) and memory (in bytes).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Capacity {
    /// `capacity.cpus` of the manifest.
    pub declared_millicpus: Option<u64>,
    /// CPUs the engine sees.
    pub engine_millicpus: Option<u64>,
    /// `capacity.memory` of the manifest.
    pub declared_memory: Option<u64>,
    /// Memory the engine sees.
    pub engine_memory: Option<u64>,
    /// `reserved.cpus`.
    pub reserved_millicpus: u64,
    /// `reserved.memory`.
    pub reserved_memory: u64,
    /// (declared, else engine) − reserved.
    pub allocatable_millicpus: Option<u64>,
    /// (declared, else engine) − reserved.
    pub allocatable_memory: Option<u64>,
}

/// Use by this fleet's containers.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub struct Usage {
    /// Fleet containers in any state.
    pub containers: usize,
    /// Of which running.
    pub running: usize,
    /// Sum of the working sets of the running ones (bytes); `None` when not measured.
    pub memory_used: Option<u64>,
    /// Sum of the memory limits of the running ones (bytes).
    pub memory_limits: u64,
    /// Sum of the CPU quotas of the running ones (millicpus).
    pub cpu_limits_millicpus: u64,
}

/// One fleet container on a node.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct ContainerRow {
    /// Container name.
    pub name: String,
    /// Short id.
    pub id: String,
    /// Run state.
    pub state: RunState,
    /// Health, when it has a healthcheck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Memory limit (bytes).
    pub memory_limit: Option<u64>,
    /// CPU quota (millicpus).
    pub cpu_limit_millicpus: Option<u64>,
    /// Working set (bytes), running containers only.
    pub memory_used: Option<u64>,
}

/// What one node answered.
#[derive(Debug, Clone)]
pub struct Observation {
    /// `engine_info`.
    pub info: EngineInfo,
    /// The fleet's containers with their limits (inspect) and memory use (stats).
    pub containers: Vec<ContainerRow>,
}

impl Observation {
    /// What `get nodes` reads of one node's observation; `Err` is why it is NotReady.
    pub fn from_observed(observed: &NodeObservation) -> Result<Observation, String> {
        match observed {
            NodeObservation::Unreachable { error, .. } => Err(error.clone()),
            NodeObservation::Reachable { engine: None, .. } => {
                Err("engine facts were not read".into())
            }
            NodeObservation::Reachable {
                engine: Some(info),
                containers,
                ..
            } => Ok(Observation {
                info: info.clone(),
                containers: containers.iter().map(ContainerRow::from_observed).collect(),
            }),
        }
    }
}

impl ContainerRow {
    /// The row of one observed container: limits from inspect, working set when measured.
    pub fn from_observed(o: &Observed) -> ContainerRow {
        let limits = o.details.as_ref().map(|d| &d.spec.resources);
        ContainerRow {
            name: o.record.name.clone(),
            id: o.record.id.chars().take(12).collect(),
            state: o.record.state,
            health: o.record.health,
            memory_limit: limits.map(|l| l.memory).filter(|m| *m > 0),
            cpu_limit_millicpus: limits.and_then(|l| l.nano_cpus).map(|n| n / 1_000_000),
            memory_used: o.memory_used,
        }
    }
}

/// The status line of a node from its manifest and what it answered, or why it did not (pure).
pub fn node_status(spec: &NodeSpec, observed: Result<Observation, &str>) -> NodeStatus {
    let ep = Endpoint::from_node(spec);
    let address = match &ep.ssh {
        Some(s) => format!("{}@{}:{}", s.user, s.host, s.port),
        None => format!("local:{}", ep.docker_socket),
    };
    let (info, containers, cause) = match observed {
        Ok(o) => (Some(o.info), o.containers, None),
        Err(cause) => (None, Vec::new(), Some(cause.to_string())),
    };
    let engine_millicpus = info.as_ref().map(|i| i.cpus * 1000);
    let engine_memory = info.as_ref().map(|i| i.memory);
    let declared_millicpus = spec.capacity_cpus.map(|c| c.0);
    let declared_memory = spec.capacity_memory.map(|b| b.0);
    let capacity = Capacity {
        declared_millicpus,
        engine_millicpus,
        declared_memory,
        engine_memory,
        reserved_millicpus: spec.reserved_cpus.0,
        reserved_memory: spec.reserved_memory.0,
        allocatable_millicpus: spec
            .allocatable_cpus_or(engine_millicpus.map(MilliCpus))
            .map(|c| c.0),
        allocatable_memory: spec
            .allocatable_memory_or(engine_memory.map(Bytes))
            .map(|b| b.0),
    };
    let running: Vec<&ContainerRow> = containers
        .iter()
        .filter(|c| c.state == RunState::Running)
        .collect();
    let usage = Usage {
        containers: containers.len(),
        running: running.len(),
        memory_used: info
            .as_ref()
            .map(|_| running.iter().filter_map(|c| c.memory_used).sum::<u64>()),
        memory_limits: running.iter().filter_map(|c| c.memory_limit).sum(),
        cpu_limits_millicpus: running.iter().filter_map(|c| c.cpu_limit_millicpus).sum(),
    };
    NodeStatus {
        network: None,
        disk: None,
        hot: None,
        load: None,
        name: spec.name.clone(),
        address,
        labels: spec.labels.clone(),
        status: if info.is_some() {
            Status::Ready
        } else {
            Status::NotReady
        },
        cause,
        conditions: Vec::new(),
        engine_kind: info.as_ref().map(|i| i.kind),
        engine: info.as_ref().map(|i| i.version.clone()),
        api_version: info.as_ref().map(|i| i.api_version.clone()),
        capacity,
        usage,
        containers,
    }
}

/// Observes the nodes `specs` of `fleet` (engine facts and measured memory), then measures the
/// disk of those that answered, in the order given. A node whose connection cannot even be set
/// up is NotReady with that cause.
/// Each node's status, and the node conditions the nodes record (set through any state file).
fn observe_nodes(
    fleet: &DesiredFleet,
    specs: &[&NodeSpec],
) -> anyhow::Result<(Vec<NodeStatus>, BTreeMap<String, crate::condition::Mark>)> {
    let mut setup_failed = BTreeMap::new();
    let mut runtimes = Vec::new();
    for spec in specs {
        match transport::connect(&Endpoint::from_node(spec)) {
            Ok(rt) => runtimes.push(rt),
            Err(e) => {
                setup_failed.insert(spec.name.clone(), e.to_string());
            }
        }
    }
    let by_name: crate::execute::Runtimes = runtimes
        .iter()
        .map(|r| (r.node().to_string(), r.clone()))
        .collect();
    let (observed, mut disks) = runtime()?.block_on(async {
        let mut o = observe(
            &fleet.fleet.name,
            &runtimes,
            &ObserveOptions::everything(fleet),
        )
        .await;
        crate::network::exec::observe_members(fleet, &by_name, &mut o).await;
        let disks = crate::disk::measure_all(fleet, &by_name, &o).await;
        (o, disks)
    });
    let net_plan = crate::network::plan(fleet, &observed, &Default::default());
    let mut statuses: Vec<NodeStatus> = specs
        .iter()
        .map(|spec| {
            let seen = match (setup_failed.get(&spec.name), observed.nodes.get(&spec.name)) {
                (Some(cause), _) => Err(cause.clone()),
                (None, Some(o)) => Observation::from_observed(o),
                (None, None) => Err("not observed".to_string()),
            };
            match seen {
                Ok(o) => node_status(spec, Ok(o)),
                Err(cause) => node_status(spec, Err(&cause)),
            }
        })
        .collect();
    let watermark = fleet.fleet.disk_high_watermark;
    for st in &mut statuses {
        st.network = node_network(fleet, &observed, &net_plan, &st.name);
        st.disk = disks
            .remove(&st.name)
            .filter(|_| st.is_ready())
            .map(|d| DiskStatus::from_measured(&d, watermark));
    }
    Ok((statuses, observed.marks))
}

/// The fleet's network on `node`: present or not, swarm membership, and the problems the
/// network plan names for it (a lost quorum concerns every node).
fn node_network(
    fleet: &DesiredFleet,
    observed: &crate::observe::ObservedFleet,
    plan: &crate::network::NetworkPlan,
    node: &str,
) -> Option<NodeNetwork> {
    use crate::network::NetProblem;
    let Some(crate::observe::NodeObservation::Reachable { networks, .. }) =
        observed.nodes.get(node)
    else {
        return None;
    };
    let engine = crate::network::engine_of(fleet, observed, node);
    let name = fleet.network_name_on(engine);
    let driver = fleet.network_driver_on(engine);
    let overlay = driver == crate::container::NetworkDriver::Overlay;
    let info = observed.swarm.nodes.get(node).filter(|_| overlay);
    let problems = plan
        .problems
        .iter()
        .filter(|p| match p {
            NetProblem::NoManager { .. } => true,
            NetProblem::ForeignSwarm { node: n }
            | NetProblem::Membership { node: n, .. }
            | NetProblem::NoAddress { node: n }
            | NetProblem::Foreign { node: n, .. }
            | NetProblem::Held { node: n, .. }
            | NetProblem::Differs { node: n, .. }
            | NetProblem::OwnBridge { node: n, .. } => n == node,
        })
        .map(ToString::to_string)
        .collect();
    Some(NodeNetwork {
        present: networks.iter().any(|n| n.name == name),
        name,
        driver: driver.as_str().to_string(),
        swarm: info.map(|i| i.state.as_str().to_string()),
        role: info
            .filter(|i| i.state == crate::container::SwarmState::Active)
            .map(|i| if i.manager { "manager" } else { "worker" }.to_string()),
        problems,
    })
}

/// `fleetctl get nodes`.
///
/// # Errors
/// Invalid manifests, or no manifests given. Unreachable nodes are not errors: they are listed
/// as NotReady with their cause (exit code 0).
pub fn get(path: Option<&Path>, output: Output, global: &GlobalOpts) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = loaded.fleet.fleet.name.clone();
    let nodes: Vec<&NodeSpec> = loaded.fleet.nodes.values().collect();
    let (mut statuses, marks) = observe_nodes(&loaded.fleet, &nodes)?;
    let store = open_store_readonly(global, &fleet)?;
    let (conditions, _) = store.conditions_with_marks(&marks, "get nodes")?;
    let load = store.load_snapshot()?.unwrap_or_default();
    for s in &mut statuses {
        s.containers.clear();
        s.conditions = condition_words(conditions.get(&s.name));
        s.hot = conditions.get(&s.name).and_then(|c| c.hot.clone());
        s.load = load.nodes.get(&s.name).cloned();
    }
    match output {
        Output::Json => print_json(&statuses)?,
        Output::Yaml => print_yaml(&statuses)?,
        Output::Table | Output::Wide => emit(&render_table(&statuses, output == Output::Wide))?,
    }
    Ok(0)
}

/// `fleetctl describe node NAME`.
///
/// # Errors
/// Invalid manifests, or no node of that name. An unreachable node is described (NotReady with
/// its cause), with exit code 1.
pub fn describe(
    name: &str,
    path: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = loaded.fleet.fleet.name.clone();
    let Some(spec) = loaded.fleet.nodes.get(name) else {
        bail!(
            "no node {name:?} in the manifests (nodes: {})",
            loaded
                .fleet
                .nodes
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let (mut statuses, marks) = observe_nodes(&loaded.fleet, &[spec])?;
    let mut status = statuses.remove(0);
    let store = open_store_readonly(global, &fleet)?;
    let (conditions, _) = store.conditions_with_marks(&marks, "describe node")?;
    status.conditions = condition_words(conditions.get(name));
    status.hot = conditions.get(name).and_then(|c| c.hot.clone());
    status.load = store
        .load_snapshot()?
        .and_then(|l| l.nodes.get(name).cloned());
    match output {
        Output::Json => print_json(&status)?,
        Output::Yaml => print_yaml(&status)?,
        Output::Table | Output::Wide => emit(&render_describe(&status, &fleet))?,
    }
    Ok(if status.is_ready() { 0 } else { 1 })
}

/// The recorded conditions of a node, as words (drained implies cordoned, said once).
fn condition_words(c: Option<&crate::store::NodeCondition>) -> Vec<String> {
    let mut words = match c.map(crate::store::NodeCondition::schedule) {
        Some(s) if !s.takes_new_work() => vec![s.word().to_string()],
        _ => Vec::new(),
    };
    if c.is_some_and(|c| c.hot.is_some()) {
        words.push("hot".to_string());
    }
    words
}

/// `Ready`, or `Ready,drained` (kubectl's `Ready,SchedulingDisabled`).
fn status_text(s: &NodeStatus) -> String {
    std::iter::once(s.status.as_str().to_string())
        .chain(s.conditions.iter().cloned())
        .collect::<Vec<_>>()
        .join(",")
}

fn bytes(b: Option<u64>) -> String {
    b.map(|b| Bytes(b).to_string())
        .unwrap_or_else(|| "-".into())
}

fn cpus(m: Option<u64>) -> String {
    m.map(|m| MilliCpus(m).to_string())
        .unwrap_or_else(|| "-".into())
}

fn or_dash(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".into())
}

/// What fleetctl does differently on a Podman node (docs/transport.md, "Engines").
const PODMAN_FALLBACKS: &str = "podman: no in-place update → limit changes recreate the \
    container; no swarm overlay → a bridge network on this node; health probes run by fleetctl \
    when it reads a container (no systemd timers)";

/// The ENGINE cell: kind and version (`docker 26.1.5`, `podman 4.3.1`).
fn engine_text(s: &NodeStatus) -> String {
    match (&s.engine, s.engine_kind) {
        (Some(v), Some(k)) => format!("{k} {v}"),
        (Some(v), None) => v.clone(),
        (None, _) => "-".into(),
    }
}

/// The engine's product name in prose.
fn engine_name(kind: Option<EngineKind>) -> &'static str {
    match kind {
        Some(EngineKind::Podman) => "Podman",
        Some(EngineKind::Docker) | None => "Docker",
    }
}

/// The `get nodes` table; NotReady causes are listed under it.
pub fn render_table(statuses: &[NodeStatus], wide: bool) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    let mut header = vec![
        "NAME",
        "STATUS",
        "ENGINE",
        "API",
        "CPUS",
        "MEMORY",
        // This fleet's containers only; `capacity` shows every container's (MEASURED).
        "FLEET MEM USED",
        "CPU LIMITS",
        "CONTAINERS",
        // The node's disk: the data root filesystem, against the fleet's diskHighWatermark.
        "DISK",
        "NETWORK",
    ];
    if wide {
        header.extend([
            "IMAGES",
            "ADDRESS",
            "ENGINE CPUS",
            "ENGINE MEMORY",
            "RESERVED",
            "LABELS",
        ]);
    }
    t.set_header(header);
    for s in statuses {
        let c = &s.capacity;
        let cap_cpus = c.declared_millicpus.or(c.engine_millicpus);
        let cap_mem = c.declared_memory.or(c.engine_memory);
        let mut row = vec![
            s.name.clone(),
            status_text(s),
            engine_text(s),
            or_dash(&s.api_version),
            cpus(cap_cpus),
            bytes(cap_mem),
            bytes(s.usage.memory_used),
            if s.is_ready() {
                format!(
                    "{}/{}",
                    MilliCpus(s.usage.cpu_limits_millicpus),
                    cpus(c.allocatable_millicpus)
                )
            } else {
                "-".into()
            },
            if s.is_ready() {
                format!("{} ({} running)", s.usage.containers, s.usage.running)
            } else {
                "-".into()
            },
            s.disk.as_ref().map_or("-".into(), DiskStatus::text),
            s.network.as_ref().map_or("-".into(), NodeNetwork::short),
        ];
        if wide {
            row.extend([
                s.disk.as_ref().map_or("-".into(), DiskStatus::images_text),
                s.address.clone(),
                cpus(c.engine_millicpus),
                bytes(c.engine_memory),
                format!(
                    "{} cpu, {}",
                    MilliCpus(c.reserved_millicpus),
                    Bytes(c.reserved_memory)
                ),
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        t.add_row(row);
    }
    let mut out = super::capacity::table_text(&t);
    for s in statuses {
        if let Some(cause) = &s.cause {
            out.push_str(&format!("{}: NotReady: {cause}\n", s.name));
        }
    }
    for note in statuses
        .iter()
        .filter_map(|s| s.disk.as_ref()?.unknown_note(&s.name))
    {
        out.push_str(&note);
        out.push('\n');
    }
    // Each network problem once (a lost quorum concerns every node).
    let mut said = Vec::new();
    for p in statuses
        .iter()
        .flat_map(|s| s.network.iter().flat_map(|n| &n.problems))
    {
        if !said.contains(&p) {
            out.push_str(&format!("network: {p}\n"));
            said.push(p);
        }
    }
    out
}

/// The `describe node` text.
pub fn render_describe(s: &NodeStatus, fleet: &str) -> String {
    let c = &s.capacity;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15}{v}\n"));
    line("Name:", s.name.clone());
    line("Address:", s.address.clone());
    line(
        "Labels:",
        if s.labels.is_empty() {
            "<none>".into()
        } else {
            s.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    line("Status:", status_text(s));
    if let Some(cause) = &s.cause {
        line("Cause:", cause.clone());
    }
    line(
        "Engine:",
        match (&s.engine, &s.api_version) {
            (Some(e), Some(a)) => format!("{} {e} (API {a})", engine_name(s.engine_kind)),
            _ => "-".into(),
        },
    );
    if s.engine_kind == Some(EngineKind::Podman) {
        line("Fallbacks:", PODMAN_FALLBACKS.into());
    }
    if let Some(n) = &s.network {
        let mut v = format!(
            "{} ({}), {}",
            n.name,
            n.driver,
            if n.present {
                "on the node"
            } else {
                "not on the node"
            }
        );
        if let Some(st) = &n.swarm {
            v.push_str(&format!("; swarm {st}"));
        }
        if let Some(r) = &n.role {
            v.push_str(&format!(" as {r}"));
        }
        line("Network:", v);
        for p in &n.problems {
            line("", format!("! {p}"));
        }
    }
    line(
        "CPUs:",
        format!(
            "declared {}, engine {}, reserved {}, allocatable {}",
            cpus(c.declared_millicpus),
            cpus(c.engine_millicpus),
            MilliCpus(c.reserved_millicpus),
            cpus(c.allocatable_millicpus)
        ),
    );
    line(
        "Memory:",
        format!(
            "declared {}, engine {}, reserved {}, allocatable {}",
            bytes(c.declared_memory),
            bytes(c.engine_memory),
            Bytes(c.reserved_memory),
            bytes(c.allocatable_memory)
        ),
    );
    if s.is_ready() {
        line(
            "Fleet use:",
            format!(
                "{} containers of fleet {fleet} ({} running): memory used {} (working set), \
                 limits {} memory, {} CPUs",
                s.usage.containers,
                s.usage.running,
                bytes(s.usage.memory_used),
                Bytes(s.usage.memory_limits),
                MilliCpus(s.usage.cpu_limits_millicpus)
            ),
        );
    }
    if let Some(l) = &s.load {
        line("Load:", l.text());
    }
    if let Some(h) = &s.hot {
        line("Hot:", format!("{h}: takes no new plug until it cools"));
    }
    if let Some(d) = &s.disk {
        line("Disk:", disk_text(d));
        if d.images.is_some() {
            line("", disk_store_text(d));
        }
    }
    if !s.containers.is_empty() {
        out.push_str("Containers:\n");
        let mut t = Table::new();
        t.load_style(NOTHING);
        t.set_header(vec![
            "  NAME",
            "ID",
            "STATE",
            "HEALTH",
            "MEM USED",
            "MEM LIMIT",
            "CPUS",
        ]);
        for r in &s.containers {
            t.add_row(vec![
                format!("  {}", r.name),
                r.id.clone(),
                format!("{:?}", r.state).to_lowercase(),
                r.health
                    .map(|h| format!("{h:?}").to_lowercase())
                    .unwrap_or_else(|| "-".into()),
                bytes(r.memory_used),
                bytes(r.memory_limit),
                cpus(r.cpu_limit_millicpus),
            ]);
        }
        out.push_str(&super::capacity::table_text(&t));
    }
    out
}

/// The `Disk:` line of `describe node`: `41.3% of 30GiB used on /var/lib/docker (watermark
/// 80%)`, `above the watermark` when it is, of what (the declared capacity when `df` did not
/// answer), and why it is not known.
fn disk_text(d: &DiskStatus) -> String {
    let mut out = match (d.used_text(), d.size_bytes, &d.data_root) {
        (Some(used), Some(size), root) => {
            let of = if d.declared {
                format!("{} (the declared capacity.disk)", Bytes(size))
            } else {
                Bytes(size).to_string()
            };
            let on = root.as_deref().unwrap_or("the engine's data root");
            format!("{used} of {of} used on {on}")
        }
        (_, _, Some(root)) => format!("unknown on {root}"),
        (_, _, None) => "unknown".to_string(),
    };
    if let Some(w) = d.watermark_text() {
        if d.above_watermark() {
            out.push_str(&format!(", above the watermark {w}"));
        } else {
            out.push_str(&format!(" (watermark {w})"));
        }
    }
    if let Some(e) = &d.error {
        out.push_str(&format!("; {e}"));
    }
    out
}

/// The line under `Disk:` in `describe node`: what the engine stores on the data root.
fn disk_store_text(d: &DiskStatus) -> String {
    let b = |v: Option<u64>| Bytes(v.unwrap_or(0)).to_string();
    format!(
        "images {} ({} images, {} unused), containers {}, volumes {}, build cache {}",
        b(d.images_bytes),
        d.images.unwrap_or(0),
        d.unused_images.unwrap_or(0),
        b(d.containers_bytes),
        b(d.volumes_bytes),
        b(d.build_cache_bytes)
    )
}

/// `fleetctl trust NODE`: show the node's host key and record it as trusted.
///
/// With a pinned `hostKey`, nothing is written: the operator is told the exact line to pin.
/// Otherwise, after confirmation on the terminal (or `--yes`), the key is appended to the node's
/// known_hosts file. A key that *changed* is never recorded over the old one: the operator must
/// remove the old line first.
///
/// # Errors
/// Invalid manifests, unknown node, node without SSH, node unreachable, no terminal to confirm
/// on without `--yes`, or the known_hosts file cannot be written.
pub fn trust(
    node: &str,
    path: Option<&Path>,
    yes: bool,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let Some(spec) = loaded.fleet.nodes.get(node) else {
        bail!("no node {node:?} in the manifests");
    };
    let ep = Endpoint::from_node(spec);
    let Some(ssh) = ep.ssh.clone() else {
        bail!("node {node} is reached through a local socket; it has no SSH host key to trust");
    };
    let rt = runtime()?;
    let presented = rt
        .block_on(transport::ssh::fetch_host_key(&ssh))
        .map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    if presented.certificate {
        bail!(
            "node {node} ({}:{}) presents an SSH host certificate; fleetctl does not verify \
             certificates yet. Configure sshd to offer its plain host key.",
            ssh.host,
            ssh.port
        );
    }
    let fp = presented.fingerprint();
    let alg = presented.key.algorithm().as_str().to_string();
    println!(
        "node {node} ({}:{}) presents the {alg} host key {fp}",
        ssh.host, ssh.port
    );
    if let Some(pinned) = &ssh.host_key {
        let policy = HostKeyPolicy::new(Some(pinned), &ssh.known_hosts_file);
        if let Ok(HostKeyPolicy::Pinned(p)) = &policy
            && p.key_data() == presented.key.key_data()
        {
            println!("The manifest's hostKey already pins this key; nothing to do.");
            return Ok(0);
        }
        println!(
            "The manifest pins another key (hostKey), so fleetctl writes nothing. If {fp} is the \
             node's key (check it on the node with `ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub`), \
             set in the Node manifest of {node}:\n\n  spec:\n    ssh:\n      hostKey: \"{}\"\n",
            alg.trim_start_matches("ssh-"),
            hostkey::openssh_line(&presented.key)
        );
        return Ok(0);
    }
    let kh = &ssh.known_hosts_file;
    match hostkey::check_known_hosts_file(kh, &ssh.host, ssh.port, &presented.key) {
        Verdict::Trusted => {
            println!("Already trusted in {}.", kh.display());
            return Ok(0);
        }
        Verdict::Changed { line, .. } => {
            eprintln!(
                "WARNING: {}:{line} records a DIFFERENT key for this host. Someone may be \
                 intercepting the connection, or the host was reinstalled.\nIf you have verified \
                 {fp} on the node, remove the old entry first:\n  ssh-keygen -R '{}' -f {}\n\
                 then run `fleetctl trust {node}` again.",
                kh.display(),
                hostkey::host_field(&ssh.host, ssh.port),
                kh.display()
            );
            return Ok(1);
        }
        Verdict::Revoked { line, .. } => {
            eprintln!(
                "This key is marked @revoked in {}:{line}; refusing to trust it.",
                kh.display()
            );
            return Ok(1);
        }
        Verdict::Unknown { .. } | Verdict::PinnedMismatch { .. } | Verdict::Certificate => {}
    }
    if !yes
        && !confirm(&format!(
            "Trust this key and add it to {}? [y/N] ",
            kh.display()
        ))?
    {
        println!("Not trusted; nothing written.");
        return Ok(1);
    }
    hostkey::record_known_host(kh, &ssh.host, ssh.port, &presented.key)
        .with_context(|| format!("writing {}", kh.display()))?;
    println!(
        "Added {} {alg} {fp} to {}.",
        hostkey::host_field(&ssh.host, ssh.port),
        kh.display()
    );
    Ok(0)
}

/// Asks `question` on the terminal; only `y`/`yes` confirms.
fn confirm(question: &str) -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to confirm on: verify the fingerprint above, then re-run with --yes");
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Bytes, MilliCpus, SshSpec};
    use crate::transport::{ErrorKind, TransportError};

    fn spec() -> NodeSpec {
        NodeSpec {
            address: None,
            name: "node1".into(),
            labels: BTreeMap::from([("tier".into(), "primary".into())]),
            ssh: Some(SshSpec {
                host: "10.213.1.2".into(),
                port: 22,
                user: Some("root".into()),
                identity_file: None,
                host_key: None,
                known_hosts_file: None,
            }),
            docker_socket: "/var/run/docker.sock".into(),
            engine: Default::default(),
            capacity_cpus: Some(MilliCpus(2000)),
            capacity_memory: None,
            capacity_disk: None,
            reserved_cpus: MilliCpus(500),
            reserved_memory: Bytes(512 << 20),
        }
    }

    fn row(name: &str, state: RunState, mem: u64, used: Option<u64>) -> ContainerRow {
        ContainerRow {
            name: name.into(),
            id: "0123456789ab".into(),
            state,
            health: None,
            memory_limit: Some(mem),
            cpu_limit_millicpus: Some(500),
            memory_used: used,
        }
    }

    fn info() -> EngineInfo {
        EngineInfo {
            kind: Default::default(),
            swarm: Default::default(),
            version: "20.10.24".into(),
            api_version: "1.41".into(),
            cpus: 4,
            memory: 8 << 30,
            containers: 3,
            containers_running: 2,
            operating_system: "Debian".into(),
            docker_root_dir: "/var/lib/docker".into(),
        }
    }

    #[test]
    fn ready_node_sums_running_fleet_containers_and_prefers_declared_capacity() {
        let s = node_status(
            &spec(),
            Ok(Observation {
                info: info(),
                containers: vec![
                    row("a", RunState::Running, 256 << 20, Some(100 << 20)),
                    row("b", RunState::Running, 256 << 20, Some(20 << 20)),
                    row("c", RunState::Exited, 1 << 30, None),
                ],
            }),
        );
        assert!(s.is_ready());
        assert_eq!(s.address, "root@10.213.1.2:22");
        assert_eq!(
            s.capacity.allocatable_millicpus,
            Some(1500),
            "declared 2 - 0.5"
        );
        assert_eq!(
            s.capacity.allocatable_memory,
            Some((8 << 30) - (512 << 20)),
            "engine memory - reserved"
        );
        assert_eq!(s.usage.containers, 3);
        assert_eq!(s.usage.running, 2);
        assert_eq!(s.usage.memory_used, Some(120 << 20));
        assert_eq!(s.usage.memory_limits, 512 << 20);
        assert_eq!(s.usage.cpu_limits_millicpus, 1000);
        let table = render_table(&[s], false);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(
            lines[1].contains("Ready") && lines[1].contains("docker 20.10.24"),
            "{table}"
        );
        assert!(
            lines[1].contains("120MiB") && lines[1].contains("1/1.5"),
            "{table}"
        );
        assert!(lines[1].contains("3 (2 running)"), "{table}");
        assert!(
            lines[0].contains("DISK") && !lines[0].contains("IMAGES"),
            "{table}"
        );
    }

    const GIB: u64 = 1 << 30;

    fn node_disk(used: u64, size: u64) -> crate::disk::NodeDisk {
        use crate::container::{EngineDisk, Filesystem, ImageUsage};
        let image = |id: &str, containers| ImageUsage {
            id: id.into(),
            containers,
            ..ImageUsage::default()
        };
        crate::disk::NodeDisk {
            data_root: "/var/lib/docker".into(),
            filesystem: Some(Filesystem {
                size,
                used,
                available: size - used,
            }),
            filesystem_error: None,
            engine: EngineDisk {
                images: vec![image("a", 1), image("b", 0), image("c", 0), image("d", 0)],
                images_bytes: 1288 << 20,
                containers_bytes: 20 << 20,
                volumes_bytes: GIB,
                build_cache_bytes: 0,
            },
            declared: None,
        }
    }

    fn ready(name: &str) -> NodeStatus {
        let mut s = node_status(
            &spec(),
            Ok(Observation {
                info: info(),
                containers: Vec::new(),
            }),
        );
        s.name = name.into();
        s
    }

    #[test]
    fn the_engine_says_docker_or_podman_with_its_version_and_podmans_fallbacks() {
        let docker = ready("node1");
        let mut podman = ready("node2");
        podman.engine_kind = Some(EngineKind::Podman);
        podman.engine = Some("4.3.1".into());
        let mut down = node_status(&spec(), Err("node node3: ssh connect: refused"));
        down.name = "node3".into();
        let statuses = [docker, podman, down];
        let table = render_table(&statuses, false);
        let lines: Vec<&str> = table.lines().collect();
        let col = lines[0].find("ENGINE").unwrap();
        let cell = |l: &str| l[col..].split("  ").next().unwrap().trim().to_string();
        assert_eq!(cell(lines[1]), "docker 20.10.24", "{table}");
        assert_eq!(cell(lines[2]), "podman 4.3.1", "{table}");
        assert_eq!(cell(lines[3]), "-", "{table}");
        let json = serde_json::to_value(&statuses).unwrap();
        assert_eq!(json[0]["engine_kind"], "docker");
        assert_eq!(json[1]["engine_kind"], "podman");
        assert_eq!(json[1]["engine"], "4.3.1");
        assert!(json[2].get("engine_kind").is_none());
        let d = render_describe(&statuses[0], "aims");
        assert!(
            d.contains("Engine:        Docker 20.10.24 (API 1.41)\n"),
            "{d}"
        );
        assert!(!d.contains("Fallbacks:"), "{d}");
        let d = render_describe(&statuses[1], "aims");
        assert!(
            d.contains("Engine:        Podman 4.3.1 (API 1.41)\n"),
            "{d}"
        );
        let fallbacks = d
            .lines()
            .find(|l| l.starts_with("Fallbacks:"))
            .unwrap_or_else(|| panic!("{d}"));
        for said in [
            "recreate",
            "bridge network",
            "health probes run by fleetctl",
        ] {
            assert!(fallbacks.contains(said), "{fallbacks}");
        }
    }

    #[test]
    fn the_disk_column_shows_use_watermark_unknown_and_unreachable() {
        let w = Some(crate::manifest::Percent(8000));
        let mut low = ready("node1");
        low.disk = Some(DiskStatus::of(&node_disk(123 * GIB / 10, 30 * GIB), w));
        let mut high = ready("node2");
        high.disk = Some(DiskStatus::of(&node_disk(255 * GIB / 10, 30 * GIB), w));
        let mut unknown = ready("node3");
        let mut no_df = node_disk(0, 1);
        no_df.filesystem = None;
        no_df.filesystem_error = Some("this account may not run commands".into());
        unknown.disk = Some(DiskStatus::of(&no_df, w));
        let mut down = node_status(&spec(), Err("node node4: ssh connect: refused"));
        down.name = "node4".into();
        let statuses = [low, high, unknown, down];
        let table = render_table(&statuses, false);
        println!("{table}");
        let lines: Vec<&str> = table.lines().collect();
        let cell = |l: &str, col: usize| l[col..].split("  ").next().unwrap().trim().to_string();
        let col = lines[0].find("DISK").unwrap();
        assert_eq!(cell(lines[1], col), "41% of 30GiB", "{table}");
        assert_eq!(cell(lines[2], col), "85% of 30GiB (> 80%)", "{table}");
        assert_eq!(cell(lines[3], col), "?", "{table}");
        assert_eq!(cell(lines[4], col), "-", "{table}");
        assert!(
            table.contains(
                "node3: disk unknown: df /var/lib/docker: this account may not run commands\n"
            ),
            "{table}"
        );
        let wide = render_table(&statuses, true);
        println!("{wide}");
        let lines: Vec<&str> = wide.lines().collect();
        let col = lines[0].find("IMAGES").unwrap();
        assert_eq!(cell(lines[1], col), "1.3GiB (3 unused)", "{wide}");
        assert_eq!(cell(lines[4], col), "-", "{wide}");
        let json = serde_json::to_value(&statuses).unwrap();
        assert_eq!(json[1]["disk"]["used_percent"], 85.0);
        assert_eq!(json[1]["disk"]["watermark_percent"], 80.0);
        assert!(json[3].get("disk").is_none(), "unreachable: no disk");
    }

    #[test]
    fn describe_says_the_disk_what_the_engine_stores_and_why_it_is_unknown() {
        let w = Some(crate::manifest::Percent(8000));
        let mut s = ready("node1");
        s.disk = Some(DiskStatus::of(&node_disk(123 * GIB / 10, 30 * GIB), w));
        let d = render_describe(&s, "aims");
        println!("{d}");
        assert!(
            d.contains("Disk:          41% of 30GiB used on /var/lib/docker (watermark 80%)\n"),
            "{d}"
        );
        assert!(
            d.contains(
                "               images 1.3GiB (4 images, 3 unused), containers 20MiB, \
                 volumes 1GiB, build cache 0B\n"
            ),
            "{d}"
        );

        s.disk = Some(DiskStatus::of(&node_disk(255 * GIB / 10, 30 * GIB), w));
        let d = render_describe(&s, "aims");
        assert!(
            d.contains("85% of 30GiB used on /var/lib/docker, above the watermark 80%\n"),
            "{d}"
        );

        let mut no_df = node_disk(0, 1);
        no_df.filesystem = None;
        no_df.filesystem_error = Some("this account may not run commands".into());
        s.disk = Some(DiskStatus::of(&no_df, None));
        let d = render_describe(&s, "aims");
        println!("{d}");
        assert!(
            d.contains(
                "Disk:          unknown on /var/lib/docker; df /var/lib/docker: this account may \
                 not run commands\n"
            ),
            "{d}"
        );
        no_df.declared = Some(10 * GIB);
        s.disk = Some(DiskStatus::of(&no_df, w));
        let d = render_describe(&s, "aims");
        assert!(
            d.contains("Disk:          22.8% of 10GiB (the declared capacity.disk) used on /var/lib/docker (watermark 80%); df /var/lib/docker:"),
            "{d}"
        );

        s.disk = Some(DiskStatus::failed("system df: engine busy", w));
        let d = render_describe(&s, "aims");
        assert!(
            d.contains("Disk:          unknown (watermark 80%); system df: engine busy\n"),
            "{d}"
        );
        assert!(!d.contains("images"), "{d}");
    }

    #[test]
    fn unreachable_node_is_not_ready_with_its_cause_under_the_table() {
        let err = TransportError::new(
            "node1",
            "ssh connect",
            ErrorKind::Unreachable,
            "cannot reach 10.213.1.2:22: Connection refused",
        );
        let s = node_status(&spec(), Err(&err.to_string()));
        assert!(!s.is_ready());
        assert_eq!(s.usage.memory_used, None);
        let table = render_table(std::slice::from_ref(&s), true);
        assert!(table.contains("NotReady"), "{table}");
        assert!(
            table.contains("node1: NotReady: node node1: ssh connect: cannot reach"),
            "{table}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["status"], "NotReady");
        assert!(
            json["cause"]
                .as_str()
                .unwrap()
                .contains("Connection refused")
        );
        let d = render_describe(&s, "aims");
        assert!(
            d.contains("Cause:") && d.contains("Connection refused"),
            "{d}"
        );
    }

    /// `get nodes` reads the same observation as the scheduler: per-container limits from
    /// inspect, working sets from the one stats pass (which also measures foreign containers for
    /// the node total, but the fleet's use counts only the fleet's).
    #[tokio::test]
    async fn node_status_reads_the_shared_observation() {
        use crate::transport::NodeRuntime;
        use crate::transport::fake::FakeRuntime;
        use std::sync::Arc;

        let fleet = crate::manifest::parse(&[crate::manifest::Source {
            name: "t.yaml".into(),
            text: "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec: {capacity: {cpus: 2}, reserved: {memory: 512MiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: web:1, resources: {memory: 256MiB, cpus: 0.5}}
"
            .into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet;
        let fake = Arc::new(FakeRuntime::new("node1"));
        fake.create_network(&crate::network::network_spec(&fleet))
            .await
            .unwrap();
        let spec = crate::desired::service_container(&fleet, &fleet.services["web"], 0, "node1");
        let id = fake.create_container(&spec).await.unwrap();
        fake.start_container(&id).await.unwrap();
        fake.set_memory_usage(&id, 100 << 20);
        let foreign = fake.add_foreign("other", BTreeMap::new());
        fake.set_memory_usage(&foreign, 1 << 30);
        let rts: Vec<Arc<dyn NodeRuntime>> = vec![fake];
        let observed = observe("demo", &rts, &ObserveOptions::everything(&fleet)).await;
        let node = &observed.nodes["node1"];
        assert!(
            matches!(
                node,
                NodeObservation::Reachable {
                    measured_memory: Some(m),
                    ..
                } if *m == (100 << 20) + (1 << 30)
            ),
            "{node:?}"
        );
        let s = node_status(
            &fleet.nodes["node1"],
            Observation::from_observed(node)
                .as_ref()
                .map_err(String::as_str)
                .cloned(),
        );
        assert!(s.is_ready());
        assert_eq!(
            s.usage.memory_used,
            Some(100 << 20),
            "fleet containers only"
        );
        assert_eq!(s.usage.memory_limits, 256 << 20);
        assert_eq!(s.usage.cpu_limits_millicpus, 500);
        assert_eq!(s.capacity.allocatable_memory, Some((8 << 30) - (512 << 20)));
        assert_eq!(s.containers.len(), 1);
        assert_eq!(s.containers[0].memory_used, Some(100 << 20));
        assert_eq!(s.containers[0].id.len(), 12);
    }
}

//! Observed state: one snapshot of every node, taken concurrently through [`NodeRuntime`].
//!
//! Per node: one listing of all containers (this fleet's are split from the rest locally; the
//! rest only contribute the host ports they hold), then one inspect per container of this fleet
//! — resource limits and restart policy are not in the listing, and labels cannot say what an
//! in-place update changed, so inspect is the only honest source for them. A node that fails is
//! `Unreachable`, never empty: unreachable is not absent.
//!
//! This is the one observation path: apply, the controller, plug placement, `capacity`,
//! `get nodes` and `describe node` all read nodes through [`observe`], asking through
//! [`ObserveOptions`] for engine facts and measured memory when they need them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use crate::container::{
    ContainerDetails, ContainerRecord, EngineInfo, EngineKind, NetworkRecord, labels,
};
use crate::manifest::DesiredFleet;
use crate::transport::{ListFilter, NodeRuntime, TransportError};

/// Inspects in flight per node: enough to hide round trips, few enough not to crowd one engine.
pub const INSPECT_CONCURRENCY: usize = 8;
/// Stats calls in flight per node. Docker 20.10 answers a one-shot stats call at its next 1 s
/// collection tick; concurrent calls share that wait, so they are not batched small.
pub const STATS_CONCURRENCY: usize = 128;
/// Nodes observed at once: bounds the fan-out for large fleets (each node costs one SSH
/// connection and its calls); fleets up to this size are observed all at once.
pub const NODE_CONCURRENCY: usize = 32;

/// Runs `work` — one future per node, or per (node, something) — at most [`NODE_CONCURRENCY`]
/// at once, and answers their outputs in the order given. Every fan-out over the fleet's nodes
/// goes through it (or, for [`observe`], through the same bound): each node costs an SSH
/// connection and its channels, and a large fleet must not open them all at once.
pub async fn on_nodes<F: std::future::Future>(work: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    bounded(NODE_CONCURRENCY, work).await
}

/// [`on_nodes`] with a bound of `limit` (at least one) futures in flight.
pub async fn bounded<F: std::future::Future>(
    limit: usize,
    work: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let indexed: Vec<_> = work
        .into_iter()
        .enumerate()
        .map(|(i, f)| async move { (i, f.await) })
        .collect();
    let mut out: Vec<(usize, F::Output)> = futures_util::stream::iter(indexed)
        .buffer_unordered(limit.max(1))
        .collect()
        .await;
    out.sort_unstable_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, o)| o).collect()
}

/// One container of this fleet, as observed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observed {
    /// From the listing.
    pub record: ContainerRecord,
    /// From inspect (absent when the container vanished between list and inspect).
    pub details: Option<ContainerDetails>,
    /// Working set (usage minus inactive file cache), when memory was measured and it runs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memory_used: Option<u64>,
}

impl Observed {
    /// `fleet.kind`.
    pub fn kind(&self) -> Option<&str> {
        self.record.label(labels::KIND)
    }
}

/// What one node showed.
#[allow(
    clippy::large_enum_variant,
    reason = "one per node per pass: the engine facts (with swarm membership) are not worth an \
              indirection"
)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum NodeObservation {
    /// It answered.
    Reachable {
        /// This fleet's containers.
        containers: Vec<Observed>,
        /// Host ports held by containers that are not this fleet's.
        foreign_ports: BTreeSet<u16>,
        /// Count of containers that are not this fleet's.
        foreign_containers: usize,
        /// Engine facts, when asked for.
        engine: Option<EngineInfo>,
        /// Measured memory of every running container of the node (this fleet's and others'),
        /// when asked for.
        measured_memory: Option<u64>,
        /// The node's networks that are this fleet's or carry a name it uses, when asked for.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        networks: Vec<NetworkRecord>,
    },
    /// It did not.
    Unreachable {
        /// Why, as the transport said.
        error: String,
        /// Whether retrying cannot help (host key, auth, unsupported engine).
        permanent: bool,
    },
}

/// Every node's observation.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ObservedFleet {
    /// By node name.
    pub nodes: BTreeMap<String, NodeObservation>,
    /// Plugs of this fleet whose deletion a node records ([`crate::records`]), by plug id:
    /// deleted through some state file, maybe not this one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tombstones: BTreeMap<String, Tombstone>,
    /// Nodes' scheduling conditions as the nodes record them ([`crate::records`]), by the node
    /// they are about: the newest record seen on any node.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<String, crate::condition::Mark>,
    /// Whether networks (and, for an overlay, the swarm) were observed: only then does a plan
    /// judge the fleet's network.
    #[serde(skip)]
    pub networks_observed: bool,
    /// The swarm, when the fleet's network is an overlay.
    #[serde(skip)]
    pub swarm: crate::network::SwarmView,
    /// The engine of every node that answered (from the version negotiation: no extra call).
    #[serde(skip)]
    pub engines: BTreeMap<String, EngineKind>,
}

/// A plug deletion recorded on the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Tombstone {
    /// When (ms since the epoch; the earliest the nodes say).
    pub deleted_ms: i64,
    /// Where it is recorded: (node, record container id).
    pub records: Vec<(String, String)>,
}

impl ObservedFleet {
    /// Plugs a node says were deleted within [`crate::store::TOMBSTONE_KEEP_MS`] of `now`
    /// (through any state file).
    pub fn deleted_plugs(&self, now: i64) -> impl Iterator<Item = &str> {
        self.tombstones
            .iter()
            .filter(move |(_, t)| t.deleted_ms >= now - crate::store::TOMBSTONE_KEEP_MS)
            .map(|(id, _)| id.as_str())
    }

    /// Plugs whose deletion this state or the nodes record: never adopted.
    ///
    /// # Errors
    /// Store failures.
    pub fn tombstoned(
        &self,
        store: &crate::store::Store,
        now: i64,
    ) -> Result<BTreeSet<String>, crate::store::StoreError> {
        let mut all = store.tombstones()?;
        all.extend(self.deleted_plugs(now).map(str::to_string));
        Ok(all)
    }

    /// This fleet's containers on `node` (empty when unreachable).
    pub fn containers(&self, node: &str) -> &[Observed] {
        match self.nodes.get(node) {
            Some(NodeObservation::Reachable { containers, .. }) => containers,
            _ => &[],
        }
    }

    /// The engine of `node` as it answered (Docker when it did not answer or could not tell).
    pub fn engine_kind(&self, node: &str) -> EngineKind {
        self.engines.get(node).copied().unwrap_or_default()
    }

    /// Whether `node` answered.
    pub fn is_reachable(&self, node: &str) -> bool {
        matches!(
            self.nodes.get(node),
            Some(NodeObservation::Reachable { .. })
        )
    }
}

/// What to gather besides the containers.
#[derive(Debug, Clone, Default)]
pub struct ObserveOptions {
    /// Nodes whose engine facts are needed (capacity not declared, or `get nodes`).
    pub engine_info: BTreeSet<String>,
    /// Nodes whose engine facts are wanted only for their swarm membership (an overlay fleet):
    /// not asked of an engine that cannot join a swarm (Podman, whose `/info` takes ~0.15 s).
    pub swarm_info: BTreeSet<String>,
    /// Also measure memory use (one stats call per running container of the node, this
    /// fleet's and others').
    pub measure_memory: bool,
    /// Also list networks, keeping those of this fleet and those named in this list (one call
    /// per node).
    pub networks: Option<Vec<String>>,
}

impl ObserveOptions {
    /// What the scheduler needs: engine facts of the nodes whose manifest leaves
    /// `capacity.memory` out (allocatable memory comes from the engine there), and measured
    /// memory when asked (the measured-memory filter of plug placement).
    /// With an overlay network, engine facts of every node (their swarm membership); and the
    /// networks of every node.
    pub fn for_scheduling(fleet: &DesiredFleet, measure_memory: bool) -> Self {
        let overlay = fleet.network_driver() == crate::container::NetworkDriver::Overlay;
        ObserveOptions {
            engine_info: fleet
                .nodes
                .values()
                .filter(|n| n.capacity_memory.is_none())
                .map(|n| n.name.clone())
                .collect(),
            swarm_info: if overlay {
                fleet.nodes.keys().cloned().collect()
            } else {
                BTreeSet::new()
            },
            measure_memory,
            networks: Some(fleet_network_names(fleet)),
        }
    }

    /// Everything: engine facts of every node and measured memory (`get nodes`,
    /// `describe node`).
    pub fn everything(fleet: &DesiredFleet) -> Self {
        ObserveOptions {
            engine_info: fleet.nodes.keys().cloned().collect(),
            swarm_info: BTreeSet::new(),
            measure_memory: true,
            networks: Some(fleet_network_names(fleet)),
        }
    }
}

/// The names the fleet's network has in either mode.
fn fleet_network_names(fleet: &DesiredFleet) -> Vec<String> {
    use crate::container::NetworkDriver;
    [NetworkDriver::Bridge, NetworkDriver::Overlay]
        .into_iter()
        .map(|d| crate::manifest::network_name(&fleet.fleet.name, d))
        .collect()
}

/// Observes every node concurrently (at most [`NODE_CONCURRENCY`] at once).
pub async fn observe(
    fleet_name: &str,
    runtimes: &[Arc<dyn NodeRuntime>],
    options: &ObserveOptions,
) -> ObservedFleet {
    // The futures are made before they enter the stream: a stream that maps with a closure is
    // not general enough for the callers that spawn this future.
    let tasks: Vec<_> = runtimes
        .iter()
        .map(|rt| async move {
            let node = rt.node().to_string();
            let (obs, records) = match observe_node(fleet_name, rt.as_ref(), options).await {
                Ok(o) => o,
                Err(e) => (
                    NodeObservation::Unreachable {
                        permanent: !e.is_retryable(),
                        error: e.to_string(),
                    },
                    Records::default(),
                ),
            };
            (node, obs, records, rt.engine_kind())
        })
        .collect();
    let mut tasks = futures_util::stream::iter(tasks).buffer_unordered(NODE_CONCURRENCY);
    let mut out = ObservedFleet {
        networks_observed: options.networks.is_some(),
        ..ObservedFleet::default()
    };
    while let Some((node, obs, records, kind)) = tasks.next().await {
        if let NodeObservation::Reachable {
            engine: Some(e), ..
        } = &obs
        {
            out.swarm.nodes.insert(node.clone(), e.swarm.clone());
        }
        for (about, mark) in records.marks {
            if out
                .marks
                .get(&about)
                .is_none_or(|m| m.since_ms < mark.since_ms)
            {
                out.marks.insert(about, mark);
            }
        }
        for (plug, deleted_ms, id) in records.tombstones {
            let t = out.tombstones.entry(plug).or_insert(Tombstone {
                deleted_ms,
                records: Vec::new(),
            });
            t.deleted_ms = t.deleted_ms.min(deleted_ms);
            t.records.push((node.clone(), id));
        }
        if let (NodeObservation::Reachable { .. }, Some(kind)) = (&obs, kind) {
            out.engines.insert(node.clone(), kind);
        }
        out.nodes.insert(node, obs);
    }
    out
}

/// Whether a listed container belongs to `fleet`.
pub fn is_ours(record: &ContainerRecord, fleet: &str) -> bool {
    record.label(labels::MANAGED_BY) == Some(labels::MANAGER)
        && record.label(labels::FLEET) == Some(fleet)
}

async fn observe_node(
    fleet: &str,
    rt: &dyn NodeRuntime,
    options: &ObserveOptions,
) -> Result<(NodeObservation, Records), TransportError> {
    // The listing first: it connects, and then the engine is known.
    let all = rt.list_containers(&ListFilter::default()).await?;
    let swarm_capable = rt.engine_kind().is_none_or(|k| k.joins_swarm());
    let engine = if options.engine_info.contains(rt.node())
        || (swarm_capable && options.swarm_info.contains(rt.node()))
    {
        Some(rt.engine_info().await?)
    } else {
        None
    };
    let networks = match &options.networks {
        None => Vec::new(),
        Some(names) => {
            let mut nets: Vec<NetworkRecord> = rt
                .list_networks(&ListFilter::default())
                .await?
                .into_iter()
                .filter(|n| n.label(labels::FLEET) == Some(fleet) || names.contains(&n.name))
                .collect();
            // Which containers of the node (any, the fleet's or not) are on each: a listing
            // does not say, the container listing does (without addresses).
            for n in &mut nets {
                for c in all.iter().filter(|c| c.networks.contains(&n.name)) {
                    n.containers.entry(c.name.clone()).or_default();
                }
            }
            nets
        }
    };
    let (ours, foreign): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| is_ours(r, fleet));
    // fleetctl's own records (lease, tombstones, conditions) are neither the fleet's nor
    // foreign.
    let records = Records {
        tombstones: foreign
            .iter()
            .filter_map(|r| {
                crate::records::read_tombstone(r, fleet).map(|(plug, at)| (plug, at, r.id.clone()))
            })
            .collect(),
        marks: foreign
            .iter()
            .filter_map(|r| crate::records::read_mark(r, fleet))
            .collect(),
    };
    let foreign: Vec<_> = foreign
        .into_iter()
        .filter(|r| !crate::records::is_record(r))
        .collect();
    let foreign_ports = foreign
        .iter()
        .flat_map(|r| r.host_ports.iter().copied())
        .collect();
    let mut inspected: Vec<Observed> = futures_util::stream::iter(ours)
        .map(|record| async move {
            match rt.inspect_container(&record.id).await {
                Ok(details) => Ok(Some(Observed {
                    record: details.record.clone(),
                    details: Some(details),
                    memory_used: None,
                })),
                // Removed between the listing and now: it is gone.
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .filter_map(|r| async move { r.transpose() })
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    inspected.sort_by(|a, b| a.record.name.cmp(&b.record.name));
    let measured_memory = if options.measure_memory {
        // Everything running on the node counts, not only this fleet: a node is under pressure
        // whoever uses its memory (this fleet's containers never exceed their limits, so their
        // use alone could never pass a watermark their limits do not).
        let running: Vec<String> = inspected
            .iter()
            .map(|o| &o.record)
            .chain(foreign.iter())
            .filter(|r| r.state == crate::container::RunState::Running)
            .map(|r| r.id.clone())
            .collect();
        let usage = memory_in_use(rt, running).await;
        for o in &mut inspected {
            o.memory_used = usage.get(&o.record.id).copied();
        }
        Some(usage.values().sum())
    } else {
        None
    };
    Ok((
        NodeObservation::Reachable {
            containers: inspected,
            foreign_containers: foreign.len(),
            foreign_ports,
            engine,
            measured_memory,
            networks,
        },
        records,
    ))
}

/// The working set of each of `running` (container ids), read with one-shot stats, at most
/// [`STATS_CONCURRENCY`] at once. A container that cannot be read (gone meanwhile) is left out.
async fn memory_in_use(rt: &dyn NodeRuntime, running: Vec<String>) -> BTreeMap<String, u64> {
    futures_util::stream::iter(running)
        .map(|id| async move { (rt.container_memory_usage(&id).await, id) })
        .buffer_unordered(STATS_CONCURRENCY)
        .filter_map(|(used, id)| async move { used.ok().map(|u| (id, u)) })
        .collect()
        .await
}

/// Measures the memory in use on a node observed without it (`observation`, reachable): every
/// running container is read (the fleet's and others, as [`observe`] with `measure_memory`
/// does), the sum is its `measured_memory` and each of the fleet's containers gets its
/// `memory_used`. An unreachable observation is left as it is.
///
/// # Errors
/// The listing failed.
pub async fn measure_memory(
    rt: &dyn NodeRuntime,
    observation: &mut NodeObservation,
) -> Result<(), TransportError> {
    let NodeObservation::Reachable {
        containers,
        measured_memory,
        ..
    } = observation
    else {
        return Ok(());
    };
    let running: Vec<String> = rt
        .list_containers(&ListFilter::default())
        .await?
        .into_iter()
        .filter(|r| r.state == crate::container::RunState::Running && !crate::records::is_record(r))
        .map(|r| r.id)
        .collect();
    let usage = memory_in_use(rt, running).await;
    for o in containers.iter_mut() {
        o.memory_used = usage.get(&o.record.id).copied();
    }
    *measured_memory = Some(usage.values().sum());
    Ok(())
}

/// fleetctl's records one node holds about the fleet.
#[derive(Default)]
struct Records {
    /// (plug, deleted at, record id).
    tombstones: Vec<(String, i64, String)>,
    /// (node it is about, mark).
    marks: Vec<(String, crate::condition::Mark)>,
}

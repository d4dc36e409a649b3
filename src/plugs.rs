//! Plug instance operations: create (place, lease a port, record, create and start), delete,
//! touch. The placement decision is the pure scheduler's; it runs inside one state-store
//! transaction together with the plug row and its port lease, so concurrent creators never
//! overfill a node or lease a port twice. The row is written before any Docker call, so a crash
//! leaves a `pending` plug that the next reconcile finishes, never an orphan container.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tracing::Instrument;

use serde::{Deserialize, Serialize};

use crate::desired::{PlugIdentity, plug_container_name, plug_container_on};
use crate::execute::Runtimes;
use crate::manifest::DesiredFleet;
use crate::observe::{ObserveOptions, ObservedFleet, observe};
use crate::plan::{Snapshot, scheduling_views};
use crate::schedule::{Diagnosis, place_plug, place_restart};
use crate::store::{PlugRecord, PlugState, Store, StoreError, now_ms};
use crate::transport::TransportError;

/// How long a new plug may take to run (and turn healthy) before `plug create` gives up.
pub const PLUG_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Failures of plug operations.
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    /// No such class in the manifests.
    #[error("plug class {0:?} does not exist{1}")]
    NoClass(String, String),
    /// Nothing fits.
    #[error("no node can take a plug of class {class}: {diagnosis}")]
    Unschedulable {
        /// Class.
        class: String,
        /// Why, per node.
        diagnosis: Diagnosis,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A Docker call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The plug's image is not on its node and could not be made present.
    #[error(transparent)]
    Image(Box<crate::images::ImageError>),
    /// The container did not come up.
    #[error("plug {id} on node {node}: container did not become ready: {why}")]
    NotReady {
        /// Plug id.
        id: String,
        /// Node.
        node: String,
        /// What was seen.
        why: String,
    },
}

/// A created plug, as `plug create` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlugCreated {
    /// Plug id.
    pub id: String,
    /// Class.
    pub class: String,
    /// Owner.
    pub owner: String,
    /// Node.
    pub node: String,
    /// Address to reach it at (the node's SSH host, or `127.0.0.1` for a local node).
    pub host: String,
    /// Host port (0: the class publishes none).
    pub port: u16,
    /// Container name.
    pub container: String,
    /// Where the fleet's containers reach it by name: `plug-<id>:<class port>`.
    pub address: String,
}

/// A plug as shown to programs (the API, `-o json|yaml`): its record, plus where to reach it in
/// the same terms as [`PlugCreated`] (`host`, `port`, `container`), so a client reads every plug
/// response the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlugView {
    /// The record (`host_port` is the same as `port`).
    #[serde(flatten)]
    pub record: PlugRecord,
    /// Address to reach it at.
    pub host: String,
    /// Host port (0: the class publishes none).
    pub port: u16,
    /// Container name.
    pub container: String,
    /// Where the fleet's containers reach it by name: `plug-<id>:<class port>` (absent when
    /// its class left the manifests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl PlugView {
    /// The view of `record` in `fleet`.
    pub fn new(fleet: &DesiredFleet, record: PlugRecord) -> Self {
        PlugView {
            host: node_address(fleet, &record.node),
            port: record.host_port,
            container: plug_container_name(&fleet.fleet.name, &record.id),
            address: fleet
                .plug_classes
                .get(&record.class)
                .map(|c| network_address(&record.id, c.port)),
            record,
        }
    }
}

/// Where the fleet's containers reach plug `id` by name (SPEC §10): `plug-<id>:<port>`.
pub fn network_address(id: &str, port: u16) -> String {
    format!("{}:{port}", crate::desired::plug_dns_name(id))
}

/// A fresh plug id: 10 characters of `[a-z0-9]`, starting with a letter (so plug container
/// names never look like a service replica's).
pub fn new_plug_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n: u64 = rand::random();
    let mut id = String::with_capacity(10);
    id.push((b'a' + (n % 26) as u8) as char);
    n /= 26;
    for _ in 0..9 {
        id.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    id
}

/// The address clients use to reach a plug on `node`.
pub fn node_address(fleet: &DesiredFleet, node: &str) -> String {
    fleet
        .nodes
        .get(node)
        .and_then(|n| n.ssh.as_ref())
        .map_or("127.0.0.1".into(), |s| s.host.clone())
}

/// The engine of `rt`'s node: as its connection negotiated it, else as the manifests declare
/// it (what the planner's [`crate::network::engine_of`] says from an observation).
fn engine_on(
    fleet: &DesiredFleet,
    rt: &dyn crate::transport::NodeRuntime,
) -> crate::container::EngineKind {
    rt.engine_kind()
        .or_else(|| fleet.nodes.get(rt.node()).map(|n| n.engine))
        .unwrap_or_default()
}

/// Observes the fleet the way placement needs it: with measured memory where it can change a
/// decision (and the fleet's network, for [`ensure_network`]).
///
/// Memory is measured (one-shot stats of every running container: up to a second on Docker
/// 20.10, which answers at its next collection tick) only on nodes where the measurement could
/// reject a plug — see [`memory_could_matter`]. Elsewhere `measured_memory` stays `None`, which
/// placement reads as "nothing measured above the watermark", the decision a reading would
/// have led to.
pub async fn observe_for_placement(fleet: &DesiredFleet, runtimes: &Runtimes) -> ObservedFleet {
    observe_for_placement_with(fleet, runtimes, &BTreeMap::new()).await
}

/// [`observe_for_placement`], taking a node's memory from `known` (the controller's last
/// reading of it, made by its pressure watch every resync) instead of reading it again where a
/// reading is needed: the API's plug creates do not wait up to a second for stats.
pub async fn observe_for_placement_with(
    fleet: &DesiredFleet,
    runtimes: &Runtimes,
    known: &BTreeMap<String, u64>,
) -> ObservedFleet {
    let rts: Vec<_> = runtimes.values().cloned().collect();
    let mut observed = observe(
        &fleet.fleet.name,
        &rts,
        &ObserveOptions::for_scheduling(fleet, false),
    )
    .await;
    let measure: Vec<String> = observed
        .nodes
        .iter()
        .filter(|(node, obs)| memory_could_matter(fleet, node, obs))
        .map(|(node, _)| node.clone())
        .collect();
    let (from_known, measure): (Vec<String>, Vec<String>) =
        measure.into_iter().partition(|n| known.contains_key(n));
    for node in from_known {
        if let Some(crate::observe::NodeObservation::Reachable {
            measured_memory, ..
        }) = observed.nodes.get_mut(&node)
        {
            *measured_memory = known.get(&node).copied();
        }
    }
    let readings = measure.into_iter().filter_map(|node| {
        let rt = runtimes.get(&node)?.clone();
        let mut obs = observed.nodes.remove(&node)?;
        Some(async move {
            if let Err(e) = crate::observe::measure_memory(rt.as_ref(), &mut obs).await {
                obs = crate::observe::NodeObservation::Unreachable {
                    permanent: !e.is_retryable(),
                    error: e.to_string(),
                };
            }
            (node, obs)
        })
    });
    for (node, obs) in crate::observe::on_nodes(readings).await {
        observed.nodes.insert(node, obs);
    }
    crate::network::exec::observe_members(fleet, runtimes, &mut observed).await;
    observed
}

/// Observes the fleet the way placement needs it, with memory measured on every node (every
/// running container read): for the controller's pressure watch, which evicts on it and shows
/// it, off any request's path.
pub async fn observe_with_memory(fleet: &DesiredFleet, runtimes: &Runtimes) -> ObservedFleet {
    let rts: Vec<_> = runtimes.values().cloned().collect();
    let mut observed = observe(
        &fleet.fleet.name,
        &rts,
        &ObserveOptions::for_scheduling(fleet, true),
    )
    .await;
    crate::network::exec::observe_members(fleet, runtimes, &mut observed).await;
    observed
}

/// Whether measured memory on `node` could reject a plug, from what its observation (without
/// measurement) already shows. Placement rejects on measurement only when the measured use
/// reaches the policy's watermark of the node's allocatable memory. A container with a memory
/// limit never uses more than its limit, so when every running container on the node is one of
/// the fleet's, each with a limit, their limits' sum bounds the use: below the lowest watermark
/// of any policy, no reading can reject and none is made. Any other container on the node (of
/// another fleet or none: its limit is not read) or one without a limit means measuring. A node
/// whose allocatable memory is unknown is rejected by placement on that ground already.
pub fn memory_could_matter(
    fleet: &DesiredFleet,
    node: &str,
    obs: &crate::observe::NodeObservation,
) -> bool {
    let crate::observe::NodeObservation::Reachable {
        containers,
        foreign_containers,
        engine,
        ..
    } = obs
    else {
        return false;
    };
    let Some(spec) = fleet.nodes.get(node) else {
        return false;
    };
    let Some(allocatable) = spec
        .allocatable_memory_or(engine.as_ref().map(|e| crate::manifest::Bytes(e.memory)))
        .map(|b| b.0)
    else {
        return false;
    };
    if *foreign_containers > 0 {
        return true;
    }
    let mut bound: u64 = 0;
    for o in containers
        .iter()
        .filter(|o| o.record.state == crate::container::RunState::Running)
    {
        match o.details.as_ref().map(|d| d.spec.resources.memory) {
            Some(limit) if limit > 0 => bound = bound.saturating_add(limit),
            _ => return true,
        }
    }
    let lowest_watermark = fleet
        .plug_classes
        .values()
        .map(|c| fleet.policy_for(c).memory_high_watermark)
        .min()
        .unwrap_or(crate::manifest::Percent::FULL);
    bound >= lowest_watermark.of(allocatable)
}

/// Makes the fleet's network where `observed` shows it missing — the swarm formed (init, joins)
/// and the network created — so a plug created before any apply has a network to join. Nothing
/// is taken apart here (no leave, demotion or removal): that is apply's and the controller's
/// work, under the fleet lease.
pub async fn ensure_network(fleet: &DesiredFleet, runtimes: &Runtimes, observed: &ObservedFleet) {
    use crate::network::NetStep;
    let mut plan = crate::network::plan(fleet, observed, &Default::default());
    plan.steps.retain(|s| {
        matches!(
            s,
            NetStep::SwarmInit { .. } | NetStep::SwarmJoin { .. } | NetStep::CreateNetwork { .. }
        )
    });
    if plan.steps.is_empty() {
        return;
    }
    let opts = crate::execute::ExecOptions {
        actor: "plug".into(),
        ..Default::default()
    };
    for o in crate::network::exec::execute(&plan, runtimes, None, &opts).await {
        if let Some(e) = o.error {
            tracing::warn!(error = %e, "could not make the fleet's network");
        }
    }
}

/// Decides where a new plug goes and records it (`pending`, port leased) in one transaction.
///
/// # Errors
/// Unknown class, nothing fits (per-node diagnosis), store failures.
pub fn reserve_plug(
    fleet: &DesiredFleet,
    store: &Store,
    observed: &ObservedFleet,
    lost: &BTreeSet<String>,
    class: &str,
    owner: &str,
    now: i64,
) -> Result<PlugRecord, PlugError> {
    let Some(class_spec) = fleet.plug_classes.get(class) else {
        let known: Vec<&str> = fleet.plug_classes.keys().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "; the manifests define no plug class".to_string()
        } else {
            format!(" (defined: {})", known.join(", "))
        };
        return Err(PlugError::NoClass(class.to_string(), hint));
    };
    // Plugs running that this state does not know hold their ports and their places: adopt
    // them first, or the new plug could be given a port one of them binds.
    let known_plugs = store.plugs()?;
    let known: BTreeSet<&str> = known_plugs.iter().map(|p| p.id.as_str()).collect();
    let found = crate::adopt::unknown_plugs(
        fleet,
        observed,
        &known,
        &observed.tombstoned(store, now)?,
        now,
    );
    if !found.plugs.is_empty() {
        store.adopt_plugs(&found.plugs, "plug create", now)?;
    }
    // A node cordoned through another state file takes no new plug either.
    let (conditions, _) = store.conditions_with_marks(&observed.marks, "plug create")?;
    let last_known = store.replica_nodes()?;
    let policy = fleet.policy_for(class_spec);
    store.create_plug_with(|plugs, leases| {
        let snapshot = Snapshot {
            fleet,
            observed,
            conditions: &conditions,
            plugs,
            port_leases: leases,
            last_known: &last_known,
            lost,
            evict: &BTreeSet::new(),
        };
        let (views, _) = scheduling_views(&snapshot);
        let placed = place_plug(&views, class_spec, &policy, None).map_err(|diagnosis| {
            PlugError::Unschedulable {
                class: class.to_string(),
                diagnosis,
            }
        })?;
        Ok(PlugRecord {
            id: new_plug_id(),
            class: class.to_string(),
            owner: owner.to_string(),
            node: placed.node,
            host_port: placed.host_port,
            state: PlugState::Pending,
            created_ms: now,
            last_activity_ms: now,
            message: None,
        })
    })
}

/// Creates and starts the container of a reserved plug and waits until it runs (and is healthy
/// when its class has a healthcheck); marks it `running`. On failure the plug is deleted again
/// (its container removed, its port freed) so a failed request holds no slot.
///
/// # Errors
/// Docker failures or a container that does not become ready.
pub async fn start_reserved(
    fleet: &DesiredFleet,
    store: &Store,
    runtimes: &Runtimes,
    plug: &PlugRecord,
    ready_timeout: Duration,
) -> Result<PlugCreated, PlugError> {
    // The digests the fleet runs its images as (SPEC §11): a plug made between applies runs
    // the same image as the others.
    let fleet = &fleet.with_digests(&store.image_digests()?);
    let class = &fleet.plug_classes[&plug.class];
    let Some(rt) = runtimes.get(&plug.node) else {
        return Err(PlugError::NotReady {
            id: plug.id.clone(),
            node: plug.node.clone(),
            why: "node not connected".into(),
        });
    };
    let spec = plug_container_on(
        fleet,
        class,
        &PlugIdentity {
            id: &plug.id,
            owner: &plug.owner,
            node: &plug.node,
            host_port: plug.host_port,
        },
        engine_on(fleet, rt.as_ref()),
    );
    let result: Result<(), PlugError> = async {
        let id = create_started(rt.as_ref(), &spec, fleet, runtimes)
            .instrument(tracing::debug_span!("create_start", plug = %plug.id, node = %plug.node))
            .await?;
        wait_running(rt.as_ref(), &id, spec.healthcheck.is_some(), ready_timeout)
            .instrument(tracing::debug_span!("wait_ready", plug = %plug.id))
            .await
            .map_err(|why| PlugError::NotReady {
                id: plug.id.clone(),
                node: plug.node.clone(),
                why,
            })
    }
    .await;
    match result {
        Ok(()) => {
            store.set_plug_state(&plug.id, PlugState::Running, None)?;
            let _ = store.record_event(
                now_ms(),
                "plug",
                "create",
                Some(&plug.node),
                Some(&spec.name),
                &format!(
                    "plug {} of {} for {} on port {}",
                    plug.id, plug.class, plug.owner, plug.host_port
                ),
            );
            Ok(PlugCreated {
                id: plug.id.clone(),
                class: plug.class.clone(),
                owner: plug.owner.clone(),
                node: plug.node.clone(),
                host: node_address(fleet, &plug.node),
                port: plug.host_port,
                container: spec.name,
                address: network_address(&plug.id, class.port),
            })
        }
        Err(e) => {
            // Recorded as deleted on the nodes first: another state file that adopted the
            // container meanwhile must forget it, not start it again.
            record_deletion(fleet, runtimes, &plug.id, now_ms()).await;
            let _ = rt.remove_container(&spec.name).await;
            // Gone already (forgotten by a pass that saw the deletion just recorded): the
            // failure to report is still the start's.
            match store.delete_plug(&plug.id) {
                Ok(()) | Err(StoreError::NoPlug(_)) => {}
                Err(other) => return Err(other.into()),
            }
            Err(e)
        }
    }
}

/// Creates (pulling its image when missing) and starts a plug container; a container of that
/// name that already exists (an earlier, interrupted attempt) is adopted. Returns its id.
///
/// The image is made present with `fleet`'s credentials (`pull: fleet`: copied from another of
/// `runtimes` when its registry cannot serve it). The fleet's network missing on the node: a
/// bridge is made there and the create tried again; an overlay is the swarm's to make, so the
/// error says to apply first.
async fn create_started(
    rt: &dyn crate::transport::NodeRuntime,
    spec: &crate::container::ContainerSpec,
    fleet: &DesiredFleet,
    runtimes: &Runtimes,
) -> Result<String, PlugError> {
    // The network as this node has it (a Podman node of an overlay fleet: its own bridge).
    let network = &crate::network::network_spec_on(fleet, engine_on(fleet, rt));
    let auth = crate::images::fleet_auth(fleet);
    let peers: Vec<&dyn crate::transport::NodeRuntime> =
        runtimes.values().map(|r| r.as_ref()).collect();
    crate::images::make_present(
        rt,
        &spec.run_image(),
        spec.pull,
        auth.as_ref(),
        &peers,
        &|_| {},
    )
    .await
    .map_err(|e| PlugError::Image(Box::new(e)))?;
    let mut created = rt.create_container(spec).await;
    if let Err(e) = &created
        && e.is_not_found()
        && rt.inspect_network(&network.name).await?.is_none()
    {
        if network.driver != crate::container::NetworkDriver::Bridge {
            return Err(TransportError::new(
                rt.node(),
                "create container",
                crate::transport::ErrorKind::NotFound,
                format!(
                    "the fleet's network {} is not on this node: run `fleetctl apply` to form it",
                    network.name
                ),
            )
            .with_object(spec.name.clone())
            .into());
        }
        match rt.create_network(network).await {
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        created = rt.create_container(spec).await;
    }
    let id = match created {
        Ok(id) => id,
        Err(e) if e.is_conflict() => adopt_named(rt, spec).await?,
        Err(e) => return Err(e.into()),
    };
    // Secrets and configs are in place before its first start (SPEC §12).
    crate::secrets::deliver_or_remove(rt, &id, spec).await?;
    rt.start_container(&id).await?;
    Ok(id)
}

/// How many times [`adopt_named`] looks for a container whose name is taken.
const ADOPT_TRIES: u32 = 10;
/// Pause between two looks: an engine makes a container within milliseconds of reserving its
/// name.
const ADOPT_PAUSE: Duration = Duration::from_millis(50);

/// The id of the container named `spec.name` that a create found in the way (an earlier,
/// interrupted attempt, or a controller's pass creating the same plug now). The engine reserves
/// a name before the container can be inspected, so a name in use that inspect does not find
/// is a create half-way: it is looked for again (or created, if the name was freed meanwhile)
/// up to [`ADOPT_TRIES`] times, [`ADOPT_PAUSE`] apart.
async fn adopt_named(
    rt: &dyn crate::transport::NodeRuntime,
    spec: &crate::container::ContainerSpec,
) -> Result<String, PlugError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match rt.inspect_container(&spec.name).await {
            Ok(found) => return Ok(found.record.id),
            Err(gone) if gone.is_not_found() => match rt.create_container(spec).await {
                Ok(id) => return Ok(id),
                Err(e) if e.is_conflict() && tries < ADOPT_TRIES => {
                    tokio::time::sleep(ADOPT_PAUSE).await;
                }
                Err(e) => return Err(e.into()),
            },
            Err(other) => return Err(other.into()),
        }
    }
}

/// [`crate::execute::wait_ready`], its failure in words.
///
/// # Errors
/// What was seen (exited with its code, still starting or unhealthy at the timeout), or why
/// the container could not be inspected.
pub async fn wait_running(
    rt: &dyn crate::transport::NodeRuntime,
    id: &str,
    healthcheck: bool,
    timeout: Duration,
) -> Result<(), String> {
    crate::execute::wait_ready(rt, id, healthcheck, timeout)
        .await
        .map_err(|e| e.to_string())
}

/// Deletes a plug: removes its container on every reachable node that has one, then the row
/// and its port leases. A copy on an unreachable node is removed by the reconcile that next sees
/// the node (it is then a stray).
///
/// # Errors
/// Unknown plug, store failures, or a Docker failure other than "not found" / unreachable.
pub async fn delete(
    fleet: &DesiredFleet,
    store: &Store,
    runtimes: &Runtimes,
    id: &str,
) -> Result<Vec<String>, PlugError> {
    let plug = store.plug(id)?;
    let name = plug_container_name(&fleet.fleet.name, id);
    let mut notes = Vec::new();
    // The deletion is recorded on every node first, so that a state file that still knows the
    // plug (another machine's) forgets it instead of starting it again — even if this command
    // stops halfway.
    let deleted_ms = now_ms();
    record_deletion(fleet, runtimes, id, deleted_ms).await;
    let mut nodes: BTreeSet<String> = store
        .port_leases()?
        .into_iter()
        .filter(|(_, _, p)| p == id)
        .map(|(n, _, _)| n)
        .collect();
    nodes.insert(plug.node.clone());
    for node in nodes {
        let Some(rt) = runtimes.get(&node) else {
            continue;
        };
        let _ = rt.stop_container(&name, Duration::from_secs(10)).await;
        match rt.remove_container(&name).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_unreachable() => notes.push(format!(
                "node {node} is unreachable: its copy of {name} will be removed when it is back"
            )),
            Err(e) => return Err(e.into()),
        }
    }
    store.delete_plug(id)?;
    let _ = store.record_event(
        deleted_ms,
        "plug",
        "delete",
        Some(&plug.node),
        Some(&name),
        &format!("plug {id} deleted"),
    );
    Ok(notes)
}

/// Records on every node reached that plug `id` was deleted at `deleted_ms` (best effort: the
/// nodes missed learn nothing, the others suffice).
async fn record_deletion(fleet: &DesiredFleet, runtimes: &Runtimes, id: &str, deleted_ms: i64) {
    let writes = runtimes.values().map(|rt| async move {
        let r =
            crate::records::write_tombstone(rt.as_ref(), &fleet.fleet.name, id, deleted_ms).await;
        (rt.node().to_string(), r)
    });
    for (node, r) in crate::observe::on_nodes(writes).await {
        if let Err(e) = r {
            tracing::warn!(node = %node, error = %e, "could not record the plug's deletion on this node");
        }
    }
}

/// Records activity; a stopped or evicted plug is started again where there is room: on its own
/// node (keeping its port) when that node passes every placement filter, else on the node the
/// policy picks for a new plug (keeping its port when free there; its stopped container on the
/// old node is removed first, so no copy runs twice). The decision is the scheduler's
/// ([`place_restart`]) over a fresh observation with measured memory, made inside one store
/// transaction like [`reserve_plug`]: an evicted plug does not start again on the node whose
/// memory pressure stopped it, and a restart never overfills a node.
///
/// # Errors
/// Unknown plug; no node can take it (per-node diagnosis; the plug stays stopped); store or
/// Docker failures, or a container that does not become ready (the plug stays `pending` and the
/// next reconcile finishes it).
pub async fn touch(
    fleet: &DesiredFleet,
    store: &Store,
    runtimes: &Runtimes,
    lost: &BTreeSet<String>,
    id: &str,
    now: i64,
) -> Result<PlugRecord, PlugError> {
    store.touch_plug(id, now)?;
    let plug = store.plug(id)?;
    if !matches!(plug.state, PlugState::Stopped | PlugState::Evicted) {
        return Ok(plug);
    }
    let fleet = &fleet.with_digests(&store.image_digests()?);
    let Some(class) = fleet.plug_classes.get(&plug.class) else {
        return Err(PlugError::NoClass(
            plug.class.clone(),
            "; its plug cannot start again".into(),
        ));
    };
    let observed = observe_for_placement(fleet, runtimes).await;
    ensure_network(fleet, runtimes, &observed).await;
    let (conditions, _) = store.conditions_with_marks(&observed.marks, "plug touch")?;
    let last_known = store.replica_nodes()?;
    let policy = fleet.policy_for(class);
    let (before, after) = store.restart_plug_with(id, now, |me, plugs, leases| {
        // Its own lease on its own node does not block its own port.
        let leases: Vec<(String, u16, String)> = leases
            .iter()
            .filter(|(n, p, holder)| !(holder == id && *n == me.node && *p == me.host_port))
            .cloned()
            .collect();
        let snapshot = Snapshot {
            fleet,
            observed: &observed,
            conditions: &conditions,
            plugs,
            port_leases: &leases,
            last_known: &last_known,
            lost,
            evict: &BTreeSet::new(),
        };
        let (views, _) = scheduling_views(&snapshot);
        place_restart(&views, &me.node, me.host_port, class, &policy)
            .map(|p| (p.node, p.host_port))
            .map_err(|diagnosis| PlugError::Unschedulable {
                class: me.class.clone(),
                diagnosis,
            })
    })?;
    if before.state.wants_running() {
        return Ok(after); // started by a concurrent touch
    }
    let name = plug_container_name(&fleet.fleet.name, id);
    if before.node != after.node {
        // Its old copy is stopped; remove it before the new one starts.
        if let Some(rt) = runtimes.get(&before.node) {
            match rt.remove_container(&name).await {
                Ok(()) => store.release_port(&before.node, before.host_port, id)?,
                Err(e) if e.is_not_found() => {
                    store.release_port(&before.node, before.host_port, id)?;
                }
                // Left for the reconcile that next sees the node: the copy is then a stray.
                Err(_) => {}
            }
        }
        let _ = store.record_event(
            now,
            "plug",
            "move",
            Some(&after.node),
            Some(&name),
            &format!(
                "plug {id} started again on {}:{} (no room on {})",
                after.node, after.host_port, before.node
            ),
        );
    }
    let Some(rt) = runtimes.get(&after.node) else {
        return Ok(after); // not connected: the next reconcile starts it
    };
    match rt.start_container(&name).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {
            let spec = plug_container_on(
                fleet,
                class,
                &PlugIdentity {
                    id,
                    owner: &after.owner,
                    node: &after.node,
                    host_port: after.host_port,
                },
                engine_on(fleet, rt.as_ref()),
            );
            create_started(rt.as_ref(), &spec, fleet, runtimes).await?;
        }
        Err(e) => return Err(e.into()),
    }
    wait_running(
        rt.as_ref(),
        &name,
        class.healthcheck.is_some(),
        PLUG_READY_TIMEOUT,
    )
    .await
    .map_err(|why| PlugError::NotReady {
        id: id.to_string(),
        node: after.node.clone(),
        why,
    })?;
    store.set_plug_state(id, PlugState::Running, None)?;
    Ok(store.plug(id)?)
}

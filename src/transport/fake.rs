//! An in-memory [`NodeRuntime`] for controller-logic tests: it keeps containers and networks in
//! maps, records every call, can be made unreachable, and can be told to fail a chosen call.
//!
//! Swarm membership lives in a [`FakeSwarm`] shared by the fakes attached to it: init, join,
//! leave, members, roles and overlay networks then agree across those fake nodes, as they would
//! across real engines (see [`FakeSwarm`] for what is modelled).
//!
//! It is a test double for the *logic* above the transport; it never stands in for the
//! end-to-end tier, which runs against real engines over real sshd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{ContainerUpdate, ErrorKind, ListFilter, NodeRuntime, TransportError};
use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineDisk, EngineEvent, EngineInfo,
    Filesystem, Health, ImageUsage, JoinTokens, LocalImage, NetworkAttachment, NetworkDriver,
    NetworkRecord, NetworkSpec, PullProgress, RegistryAuth, RunState, SwarmInfo, SwarmMember,
    SwarmRole, SwarmState,
};

/// Orders calls across every fake in the process (for "this happened before that" checks).
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Container ids are unique across every fake of the process, as real engine ids are across
/// hosts: two nodes never report the same id (the planner tells copies apart by id).
static CONTAINER_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn new_container_id() -> String {
    let n = CONTAINER_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    format!("{n:064x}")
}

/// Network ids, swarm node ids, cluster ids and tokens: unique across the process.
static OTHER_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_other() -> u64 {
    OTHER_IDS.fetch_add(1, Ordering::Relaxed) + 1
}

/// The networks every engine has and nobody creates or removes.
const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// One recorded call: operation and the container name or id it concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Operation name, e.g. `create`, `start`, `list`.
    pub op: &'static str,
    /// Container name/id or image, empty for listings.
    pub object: String,
    /// Position among all fake calls of the process.
    pub seq: u64,
}

impl Call {
    /// Whether the call changes something on the node.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self.op,
            "create"
                | "start"
                | "stop"
                | "remove"
                | "update"
                | "pull"
                | "load"
                | "remove-image"
                | "create-network"
                | "remove-network"
                | "swarm-init"
                | "swarm-join"
                | "swarm-leave"
                | "swarm-update"
                | "swarm-remove"
        )
    }
}

#[derive(Debug, Clone)]
struct FakeContainer {
    spec: ContainerSpec,
    id: String,
    state: RunState,
    health: Option<Health>,
    created: i64,
    memory_usage: u64,
    /// CPU use, percent of one CPU, from now on (its counters grow by it between readings).
    cpu_percent: f64,
    /// Its CPU counter and the host's, ns, as of the last reading (and when that was).
    cpu_total_ns: u64,
    system_ns: u64,
    cpu_read_at: Option<tokio::time::Instant>,
    restart_count: u64,
    /// Files written through the archive API, by absolute path.
    files: BTreeMap<String, Vec<u8>>,
    /// IPv4 address (CIDR form) on its network, when that network has a subnet.
    address: String,
    /// Its log, oldest first (see [`FakeRuntime::write_log`]).
    log: Vec<super::LogLine>,
}

impl FakeContainer {
    fn new(spec: ContainerSpec, state: RunState, created: i64, address: String) -> Self {
        FakeContainer {
            spec,
            id: new_container_id(),
            state,
            health: None,
            created,
            memory_usage: 0,
            cpu_percent: 0.0,
            cpu_total_ns: 0,
            system_ns: 1,
            cpu_read_at: None,
            restart_count: 0,
            files: BTreeMap::new(),
            address,
            log: Vec::new(),
        }
    }

    /// The name of the network the container is attached to, as the engine lists it.
    fn network(&self) -> &str {
        match &self.spec.network {
            NetworkAttachment::Default => "bridge",
            other => other.name(),
        }
    }

    /// Whether the container holds an endpoint on its network: only while it runs, as on the
    /// engine (a stopped container does not keep its network from being removed).
    fn holds_endpoint(&self) -> bool {
        matches!(
            self.state,
            RunState::Running | RunState::Paused | RunState::Restarting
        )
    }
}

/// A network of a fake engine (local) or of a fake swarm (overlay).
#[derive(Debug, Clone)]
struct FakeNetwork {
    id: String,
    name: String,
    driver: String,
    labels: BTreeMap<String, String>,
    subnet: Option<String>,
    options: BTreeMap<String, String>,
    /// Addresses handed out so far.
    assigned: u32,
}

impl FakeNetwork {
    fn predefined(name: &str) -> Self {
        FakeNetwork {
            id: format!("{:064x}", next_other()),
            name: name.to_string(),
            driver: if name == "bridge" { "bridge" } else { name }.to_string(),
            labels: BTreeMap::new(),
            subnet: (name == "bridge").then(|| "172.17.0.0/16".to_string()),
            options: BTreeMap::new(),
            assigned: 0,
        }
    }

    fn from_spec(spec: &NetworkSpec) -> Self {
        let n = next_other();
        let mut options = BTreeMap::new();
        if let Some(mtu) = spec.mtu {
            options.insert("com.docker.network.driver.mtu".to_string(), mtu.to_string());
        }
        if spec.encrypted {
            options.insert("encrypted".to_string(), String::new());
        }
        FakeNetwork {
            id: format!("{n:064x}"),
            name: spec.name.clone(),
            driver: spec.driver.as_str().to_string(),
            labels: spec.labels.clone(),
            subnet: Some(spec.subnet.clone().unwrap_or_else(|| match spec.driver {
                NetworkDriver::Bridge => format!("172.{}.0.0/16", 18 + n % 200),
                NetworkDriver::Overlay => format!("10.{}.0.0/24", n % 250),
            })),
            options,
            assigned: 0,
        }
    }

    fn answers_to(&self, name_or_id: &str) -> bool {
        self.name == name_or_id || self.id == name_or_id
    }

    /// The next free address of its subnet (the first two are the network's and the gateway's),
    /// in CIDR form; empty without an IPv4 subnet.
    fn next_address(&mut self) -> String {
        let Some((base, prefix)) = self.subnet.as_deref().and_then(|s| s.split_once('/')) else {
            return String::new();
        };
        let Ok(base) = base.parse::<std::net::Ipv4Addr>() else {
            return String::new();
        };
        self.assigned += 1;
        let ip = std::net::Ipv4Addr::from(u32::from(base).wrapping_add(1 + self.assigned));
        format!("{ip}/{prefix}")
    }

    fn record(&self, scope: &str) -> NetworkRecord {
        NetworkRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: self.driver.clone(),
            scope: scope.to_string(),
            labels: self.labels.clone(),
            subnet: self.subnet.clone(),
            options: self.options.clone(),
            containers: BTreeMap::new(),
        }
    }
}

struct Inner {
    containers: BTreeMap<String, FakeContainer>, // by id
    /// Local networks (bridges and the predefined ones), by name.
    networks: BTreeMap<String, FakeNetwork>,
    /// The swarm fabric this engine is attached to (created on first use when none was given).
    swarm: Option<FakeSwarm>,
    images: Vec<String>,
    /// `repository@digest` of every image pulled by the fake, by the reference pulled.
    pulled: BTreeMap<String, String>,
    /// The registries this engine pulls from (none: every pull fails as not found).
    registry: Option<FakeRegistry>,
    calls: Vec<Call>,
    /// The data root's filesystem and the images `system df` lists (see
    /// [`FakeRuntime::set_disk`]); `None`: `df` fails as on a restricted SSH account.
    filesystem: Option<Filesystem>,
    disk_images: Vec<ImageUsage>,
    /// Refuse every archive put (see [`FakeRuntime::refuse_archives`]).
    refuse_archives: bool,
    /// Fail the call with this ordinal (1-based, counting mutating calls only).
    fail_at_mutation: Option<usize>,
    mutations: usize,
    clock: i64,
    /// What every exec prints and exits with (see [`FakeRuntime::set_exec`]).
    exec_script: FakeExec,
    /// Every exec run: container id, command, options.
    execs: Vec<(String, Vec<String>, super::ExecOptions)>,
    /// Exit code by exec id.
    exec_exits: BTreeMap<String, i64>,
    /// Every resize: exec id, columns, rows.
    resizes: Vec<(String, u16, u16)>,
    /// Names whose next inspects answer "no such container" although the name is taken, as an
    /// engine does while another create of that name is half-way (see
    /// [`FakeRuntime::reserve_name`]).
    reserved: BTreeMap<String, usize>,
    /// The engine it answers as (see [`FakeRuntime::set_engine_kind`]).
    engine_kind: crate::container::EngineKind,
    /// The health a started container with a healthcheck has (see
    /// [`FakeRuntime::set_health_on_start`]); healthy at once when `None`.
    health_on_start: Option<Health>,
    /// What each call waits before it acts (see [`FakeRuntime::set_latency`]); `None`: no wait.
    latency: Option<CallLatency>,
    /// Counts this engine's calls while they wait out their latency (see
    /// [`FakeRuntime::count_in_flight`]).
    in_flight: Option<InFlight>,
}

/// What one call of a fake engine costs in wall time, by kind, as a round trip to a real engine
/// over SSH does (see [`FakeRuntime::set_latency`]). `list` is the container listing, `inspect`
/// a container's inspect, `create` and `start` those of a container; `other` every other call
/// (networks, images, stop, remove, records, swarm, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallLatency {
    /// `list_containers`.
    pub list: Duration,
    /// `inspect_container`.
    pub inspect: Duration,
    /// `create_container`.
    pub create: Duration,
    /// `start_container`.
    pub start: Duration,
    /// Every other call.
    pub other: Duration,
}

impl CallLatency {
    /// The wait of a call recorded as `op` (see [`Call::op`]).
    pub fn of(&self, op: &str) -> Duration {
        match op {
            "list" => self.list,
            "inspect" => self.inspect,
            "create" => self.create,
            "start" => self.start,
            _ => self.other,
        }
    }
}

/// A gauge of fake calls in flight, shared by the fakes given it (see
/// [`FakeRuntime::count_in_flight`]): how many wait out their latency now, and the most that
/// ever did at once. Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct InFlight(
    Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
);

impl InFlight {
    /// A gauge at zero.
    pub fn new() -> Self {
        InFlight::default()
    }

    /// Calls in flight now.
    pub fn now(&self) -> usize {
        self.0.0.load(Ordering::SeqCst)
    }

    /// The most calls that were ever in flight at once.
    pub fn max(&self) -> usize {
        self.0.1.load(Ordering::SeqCst)
    }

    fn enter(&self) -> InFlightGuard {
        let now = self.0.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.1.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }
}

/// One call counted in flight until dropped.
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a fake exec prints and exits with.
#[derive(Debug, Clone, Default)]
pub struct FakeExec {
    /// Output chunks, in order.
    pub output: Vec<super::ExecOutput>,
    /// Exit code.
    pub exit_code: i64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            containers: BTreeMap::new(),
            networks: PREDEFINED_NETWORKS
                .iter()
                .map(|n| (n.to_string(), FakeNetwork::predefined(n)))
                .collect(),
            swarm: None,
            images: Vec::new(),
            pulled: BTreeMap::new(),
            registry: None,
            calls: Vec::new(),
            filesystem: None,
            disk_images: Vec::new(),
            refuse_archives: false,
            fail_at_mutation: None,
            mutations: 0,
            clock: 0,
            exec_script: FakeExec::default(),
            execs: Vec::new(),
            exec_exits: BTreeMap::new(),
            resizes: Vec::new(),
            reserved: BTreeMap::new(),
            engine_kind: Default::default(),
            health_on_start: None,
            latency: None,
            in_flight: None,
        }
    }
}

/// Registries as fake engines see them: which digest each tag names, which hosts want which
/// credentials, which cannot be reached. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeRegistry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    /// `host/repository:tag` (as written in manifests) → digest.
    tags: BTreeMap<String, String>,
    /// Host → (user, password) it accepts.
    logins: BTreeMap<String, (String, String)>,
    unreachable: BTreeSet<String>,
}

/// Why the fake registry refused.
struct Refusal(super::RegistryCause, String);

impl Refusal {
    fn into_error(self, node: &str, op: &'static str, image: &str) -> TransportError {
        TransportError::new(
            node,
            op,
            ErrorKind::Registry(self.0),
            format!("registry {}: {} (fake)", self.1, self.0),
        )
        .with_object(image)
    }
}

impl FakeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `image` (`repository:tag`) name `digest` (`sha256:…`), as a push does.
    pub fn push(&self, image: &str, digest: &str) {
        self.lock().tags.insert(image.into(), digest.into());
    }

    /// Makes `host` accept only `user` with `password`.
    pub fn require_login(&self, host: &str, user: &str, password: &str) {
        self.lock()
            .logins
            .insert(host.into(), (user.into(), password.into()));
    }

    /// Makes `host` unreachable (or reachable again).
    pub fn set_unreachable(&self, host: &str, unreachable: bool) {
        let mut inner = self.lock();
        if unreachable {
            inner.unreachable.insert(host.into());
        } else {
            inner.unreachable.remove(host);
        }
    }

    /// The digest `image` names now, as the registry answers a node sending `auth`.
    fn serve(
        registry: Option<&FakeRegistry>,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, Refusal> {
        use super::RegistryCause as C;
        let host = crate::registry::registry_host(image);
        let Some(registry) = registry else {
            return Err(Refusal(C::NotFound, host));
        };
        let inner = registry.lock();
        if inner.unreachable.contains(&host) {
            return Err(Refusal(C::Unreachable, host));
        }
        if let Some((user, password)) = inner.logins.get(&host)
            && !auth.is_some_and(|a| &a.username == user && &a.password == password)
        {
            return Err(Refusal(C::Unauthorized, host));
        }
        let found = match image.split_once('@') {
            Some((repo, digest)) => {
                let repo = super::docker::split_image_ref(repo).0;
                inner
                    .tags
                    .iter()
                    .any(|(t, d)| d == digest && super::docker::split_image_ref(t).0 == repo)
                    .then(|| digest.to_string())
            }
            None => {
                let (repo, tag) = super::docker::split_image_ref(image);
                inner.tags.get(&format!("{repo}:{tag}")).cloned()
            }
        };
        found.ok_or(Refusal(C::NotFound, host))
    }
}

/// What a fake export of `image` yields: a header naming it and a body of
/// [`FAKE_ARCHIVE_CHUNKS`] chunks, so a copy has several chunks and some bytes to count.
fn fake_archive(image: &str) -> impl Iterator<Item = super::Bytes> + use<> {
    let header = super::Bytes::from(format!("fake-image-archive {image}\n"));
    std::iter::once(header).chain(
        (0..FAKE_ARCHIVE_CHUNKS).map(|_| super::Bytes::from_static(&[0u8; FAKE_ARCHIVE_CHUNK])),
    )
}

/// Chunks of zeros after the header of a fake archive.
pub const FAKE_ARCHIVE_CHUNKS: usize = 4;
/// Size of each of them.
pub const FAKE_ARCHIVE_CHUNK: usize = 1024;

/// The image a fake archive names, when `body` is a whole one.
fn parse_fake_archive(body: &[u8]) -> Option<String> {
    let end = body.iter().position(|b| *b == b'\n')?;
    let image = std::str::from_utf8(&body[..end])
        .ok()?
        .strip_prefix("fake-image-archive ")?;
    let expected = end + 1 + FAKE_ARCHIVE_CHUNKS * FAKE_ARCHIVE_CHUNK;
    (body.len() == expected).then(|| image.to_string())
}

/// In-memory engine for one node. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeRuntime {
    node: String,
    inner: Arc<Mutex<Inner>>,
    /// Set by [`FakeRuntime::set_unreachable`]; shared with the node's [`FakeSwarm`], where a
    /// down node is a member that is neither ready nor reachable.
    down: Arc<AtomicBool>,
    events: broadcast::Sender<EngineEvent>,
    /// New log lines of a container (`Some`), or the end of its following streams (`None`:
    /// it stopped).
    log_lines: broadcast::Sender<(String, Option<super::LogLine>)>,
    info: EngineInfo,
}

impl FakeRuntime {
    /// An empty, reachable engine with 4 CPUs and 8 GiB of memory, where every image is
    /// present unless [`FakeRuntime::set_images`] says otherwise.
    pub fn new(node: impl Into<String>) -> Self {
        let (events, _) = broadcast::channel(1024);
        let (log_lines, _) = broadcast::channel(4096);
        FakeRuntime {
            node: node.into(),
            inner: Arc::new(Mutex::new(Inner::default())),
            down: Arc::new(AtomicBool::new(false)),
            events,
            log_lines,
            info: EngineInfo {
                kind: Default::default(),
                swarm: Default::default(),
                version: "20.10.24".into(),
                api_version: "1.41".into(),
                cpus: 4,
                memory: 8 << 30,
                containers: 0,
                containers_running: 0,
                operating_system: "fake".into(),
                docker_root_dir: "/var/lib/docker".into(),
            },
        }
    }

    /// A fake attached to `swarm` (see [`FakeRuntime::attach_swarm`]).
    pub fn with_swarm(node: impl Into<String>, swarm: &FakeSwarm) -> Self {
        let fake = FakeRuntime::new(node);
        fake.attach_swarm(swarm);
        fake
    }

    /// Attaches this node to `swarm`, the fabric its swarm calls act in: nodes attached to the
    /// same one can join each other's swarm. Attach before the first swarm call; node names must
    /// be unique within a fabric. A fake never attached gets a fabric of its own on first use
    /// (it can init a swarm of one; joins find no manager).
    pub fn attach_swarm(&self, swarm: &FakeSwarm) {
        swarm.register(self);
        self.lock().swarm = Some(swarm.clone());
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake runtime lock poisoned")
    }

    /// The node's swarm fabric. Lock order: a fabric before any engine's `Inner`, and several
    /// `Inner`s only while holding the fabric.
    fn fabric(&self) -> FakeSwarm {
        if let Some(s) = self.lock().swarm.clone() {
            return s;
        }
        let swarm = FakeSwarm::new();
        self.attach_swarm(&swarm);
        swarm
    }

    /// Makes every later call fail as unreachable (or reachable again). In a [`FakeSwarm`], an
    /// unreachable node is a member that is neither ready nor reachable.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.down.store(unreachable, Ordering::SeqCst);
    }

    /// Makes every later call wait `latency` (by kind of call, with `tokio::time::sleep`) before
    /// it acts, as a round trip to a real engine does — for benchmarks of the logic above the
    /// transport at fleet scale. `None` (the default) removes the wait: a call then completes
    /// without yielding, as it always did. The wait comes first: a call that fails (an
    /// unreachable node, an injected failure) fails after it.
    pub fn set_latency(&self, latency: Option<CallLatency>) {
        self.lock().latency = latency;
    }

    /// Counts this engine's calls in `gauge` while they wait out their latency (so only with
    /// [`FakeRuntime::set_latency`]); give several fakes the same gauge to count calls in
    /// flight across them.
    pub fn count_in_flight(&self, gauge: &InFlight) {
        self.lock().in_flight = Some(gauge.clone());
    }

    /// Makes the engine answer as `kind` (default Docker).
    pub fn set_engine_kind(&self, kind: crate::container::EngineKind) {
        self.lock().engine_kind = kind;
    }

    /// Restricts the images present on the node (default: every image is present).
    pub fn set_images(&self, images: &[&str]) {
        self.lock().images = images.iter().map(|s| s.to_string()).collect();
    }

    /// Sets the data root's filesystem and the images `system df` lists. Removing an image
    /// frees its unshared bytes from `filesystem.used`.
    pub fn set_disk(&self, filesystem: Option<Filesystem>, images: Vec<ImageUsage>) {
        let mut inner = self.lock();
        inner.filesystem = filesystem;
        inner.disk_images = images;
    }

    /// Makes every later archive put fail as the engine's refusal (or succeed again).
    pub fn refuse_archives(&self, refuse: bool) {
        self.lock().refuse_archives = refuse;
    }

    /// The images `system df` lists now (their `containers` counts unset).
    pub fn disk_images(&self) -> Vec<ImageUsage> {
        self.lock().disk_images.clone()
    }

    /// Pulls from `registry` from now on (its clones share its contents).
    pub fn set_registry(&self, registry: &FakeRegistry) {
        self.lock().registry = Some(registry.clone());
    }

    /// Makes the `n`-th mutating call from now (1-based) fail with an API error, as if the
    /// process died there.
    pub fn fail_at_mutation(&self, n: usize) {
        let mut inner = self.lock();
        inner.fail_at_mutation = Some(inner.mutations + n);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Mutating calls so far.
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(Call::is_mutating).collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Every container but fleetctl's own records (lease, tombstones: see [`Self::records`]),
    /// as a listing would show them.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.lock()
            .containers
            .values()
            .map(record)
            .filter(|r| !crate::records::is_record(r))
            .collect()
    }

    /// fleetctl's own records on this node ([`crate::records`]).
    pub fn records(&self) -> Vec<ContainerRecord> {
        self.lock()
            .containers
            .values()
            .map(record)
            .filter(crate::records::is_record)
            .collect()
    }

    /// The spec a container was created with.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().containers.get(id).map(|c| c.spec.clone())
    }

    /// Simulates a container dying (as `docker kill` would), emitting a `die` event.
    /// The next `inspects` inspects of container `name` answer "no such container" while a
    /// create of `name` still conflicts: an engine that has reserved the name for another,
    /// unfinished create.
    pub fn reserve_name(&self, name: &str, inspects: usize) {
        self.lock().reserved.insert(name.to_string(), inspects);
    }

    /// Kills container `id`.
    pub fn kill(&self, id: &str) {
        let event = {
            let mut inner = self.lock();
            let Some(c) = inner.containers.get_mut(id) else {
                return;
            };
            c.state = RunState::Exited;
            event_for(c, "die")
        };
        let _ = self.log_lines.send((id.to_string(), None));
        let _ = self.events.send(event);
    }

    /// Appends `text` to container `id`'s log on `stream`, timed now (and after its last line);
    /// returns the line's time (ns). Followers of its log get it at once.
    pub fn write_log(&self, id: &str, stream: super::LogStream, text: &str) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let last = self
            .lock()
            .containers
            .get(id)
            .and_then(|c| c.log.last().map(|l| l.time_ns));
        let time = last.map_or(now, |l| now.max(l + 1));
        self.write_log_at(id, stream, text, time);
        time
    }

    /// Appends `text` to container `id`'s log on `stream` at `time_ns` (a node's clock: lines
    /// of different nodes may be written in any order).
    pub fn write_log_at(&self, id: &str, stream: super::LogStream, text: &str, time_ns: i64) {
        let line = super::LogLine {
            time_ns,
            stream,
            text: text.to_string(),
        };
        let mut inner = self.lock();
        let Some(c) = inner.containers.get_mut(id) else {
            return;
        };
        c.log.push(line.clone());
        // Sent under the lock: a follower subscribing under it sees each line once.
        let _ = self.log_lines.send((id.to_string(), Some(line)));
    }

    /// Sets a container's health, emitting a `health_status` event.
    pub fn set_health(&self, id: &str, health: Health) {
        let event = {
            let mut inner = self.lock();
            let Some(c) = inner.containers.get_mut(id) else {
                return;
            };
            c.health = Some(health);
            let action = match health {
                Health::Healthy => "health_status: healthy",
                Health::Unhealthy => "health_status: unhealthy",
                Health::Starting => "health_status: starting",
            };
            event_for(c, action)
        };
        let _ = self.events.send(event);
    }

    /// Sets the measured memory use of a container.
    pub fn set_memory_usage(&self, id: &str, bytes: u64) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.memory_usage = bytes;
        }
    }

    /// Sets the CPU use (percent of one CPU) of a container from now on.
    pub fn set_cpu_percent(&self, id: &str, percent: f64) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.cpu_percent = percent;
        }
    }

    /// Adds a container that fleetctl did not create (no ownership labels unless given).
    pub fn add_foreign(&self, name: &str, labels: BTreeMap<String, String>) -> String {
        let mut inner = self.lock();
        let spec = ContainerSpec {
            secret_env: Default::default(),
            files: Vec::new(),
            knobs: Default::default(),
            pull: Default::default(),
            network: Default::default(),
            name: name.to_string(),
            image: "foreign:latest".into(),
            command: None,
            env: BTreeMap::new(),
            labels,
            ports: vec![],
            volumes: vec![],
            restart: Default::default(),
            resources: Default::default(),
            healthcheck: None,
            stop_grace_period: None,
        };
        let created = inner.clock;
        let address = inner
            .networks
            .get_mut("bridge")
            .map(FakeNetwork::next_address)
            .unwrap_or_default();
        let c = FakeContainer::new(spec, RunState::Running, created, address);
        let id = c.id.clone();
        inner.containers.insert(id.clone(), c);
        id
    }

    /// Removes a container behind fleetctl's back (as `docker rm -f` would).
    pub fn remove_by_hand(&self, id: &str) {
        let removed = self.lock().containers.remove(id);
        if let Some(c) = removed {
            let _ = self.log_lines.send((c.id.clone(), None));
            let _ = self.events.send(event_for(&c, "destroy"));
        }
    }

    /// Containers with a healthcheck started from now on have health `h` (e.g. `starting`, as
    /// an engine says until its first check a full interval later) until [`Self::set_health`].
    pub fn set_health_on_start(&self, h: Health) {
        self.lock().health_on_start = Some(h);
    }

    /// Makes every later exec print `script.output` and exit with `script.exit_code` (the
    /// command itself is not run).
    pub fn set_exec(&self, script: FakeExec) {
        self.lock().exec_script = script;
    }

    /// Every exec run so far: container id, command, options.
    pub fn execs(&self) -> Vec<(String, Vec<String>, super::ExecOptions)> {
        self.lock().execs.clone()
    }

    /// Every TTY resize so far: exec id, columns, rows.
    pub fn resizes(&self) -> Vec<(String, u16, u16)> {
        self.lock().resizes.clone()
    }

    /// Every call starts here: it waits out the call's latency (when one is set, see
    /// [`FakeRuntime::set_latency`]), then is recorded and may fail as the fake was told.
    async fn begin(&self, op: &'static str, object: &str) -> Result<(), TransportError> {
        let (pause, gauge) = {
            let inner = self.lock();
            (inner.latency.map(|l| l.of(op)), inner.in_flight.clone())
        };
        if let Some(pause) = pause {
            let _counted = gauge.as_ref().map(InFlight::enter);
            tokio::time::sleep(pause).await;
        }
        let mut inner = self.lock();
        inner.calls.push(Call {
            op,
            object: object.to_string(),
            seq: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        });
        if self.down.load(Ordering::SeqCst) {
            return Err(TransportError::new(
                &self.node,
                op,
                ErrorKind::Unreachable,
                "connection refused (fake)",
            ));
        }
        let call = inner.calls.last().expect("just pushed");
        if call.is_mutating() {
            inner.mutations += 1;
            if inner.fail_at_mutation == Some(inner.mutations) {
                inner.fail_at_mutation = None;
                return Err(TransportError::new(
                    &self.node,
                    op,
                    ErrorKind::Api { status: 500 },
                    "injected failure (fake)",
                )
                .with_object(object));
            }
        }
        inner.clock += 1;
        Ok(())
    }

    fn find<'a>(&self, inner: &'a mut Inner, id_or_name: &str) -> Option<&'a mut FakeContainer> {
        let key = inner
            .containers
            .values()
            .find(|c| c.id == id_or_name || c.spec.name == id_or_name)
            .map(|c| c.id.clone())?;
        inner.containers.get_mut(&key)
    }

    fn not_found(&self, op: &'static str, id: &str) -> TransportError {
        TransportError::new(&self.node, op, ErrorKind::NotFound, "no such container")
            .with_object(id)
    }

    fn network_not_found(&self, op: &'static str, object: &str, network: &str) -> TransportError {
        TransportError::new(
            &self.node,
            op,
            ErrorKind::NotFound,
            format!("network {network} not found"),
        )
        .with_object(object)
    }

    /// A refusal of the engine: status `status`, text `message`.
    fn refuse(
        &self,
        op: &'static str,
        object: Option<&str>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> TransportError {
        let e = TransportError::new(&self.node, op, kind, message);
        match object {
            Some(o) => e.with_object(o),
            None => e,
        }
    }

    /// The cluster this node manages and the fabric's engines, for the calls only a manager
    /// answers; the engine's 503 refusals otherwise (not in a swarm, a worker, no quorum).
    fn managed_cluster<'a>(
        &self,
        op: &'static str,
        object: Option<&str>,
        f: &'a mut Fabric,
    ) -> Result<(&'a mut Cluster, &'a BTreeMap<String, Engine>), TransportError> {
        let unavailable =
            |message: &str| self.refuse(op, object, ErrorKind::Api { status: 503 }, message);
        let Fabric {
            clusters,
            locals,
            engines,
        } = f;
        let Some(local) = locals.get(&self.node) else {
            return Err(unavailable(NOT_IN_A_SWARM));
        };
        let Some(cluster) = clusters.get_mut(&local.cluster) else {
            return Err(unavailable(NOT_IN_A_SWARM));
        };
        match cluster.members.get(&local.node_id) {
            None => return Err(unavailable(REMOVED_FROM_SWARM)),
            Some(m) if m.role != SwarmRole::Manager => return Err(unavailable(NOT_A_MANAGER)),
            Some(_) => {}
        }
        if cluster.refresh_leader(engines).is_none() {
            return Err(unavailable(NO_LEADER));
        }
        Ok((cluster, engines))
    }
}

/// The engine's refusal of a manager-only call on a node in no swarm.
const NOT_IN_A_SWARM: &str = "This node is not a swarm manager. Use \"docker swarm init\" or \
     \"docker swarm join\" to connect this node to swarm and try again.";
/// The engine's refusal of a manager-only call on a worker.
const NOT_A_MANAGER: &str = "This node is not a swarm manager. Worker nodes can't be used to \
     view or modify cluster state. Please run this command on a manager node or promote the \
     current node to a manager.";
/// The engine's refusal when too few managers are up.
const NO_LEADER: &str = "The swarm does not have a leader. It's possible that too few managers \
     are online. Make sure more than half of the managers are online.";
/// A node a manager removed while it thought itself a member.
const REMOVED_FROM_SWARM: &str =
    "this node was removed from the swarm: leave it (force) and join again (fake)";
/// The engine's refusal of init or join on a member.
const ALREADY_IN_A_SWARM: &str = "This node is already part of a swarm. Use \"docker swarm \
     leave\" to leave this swarm and join another one.";

/// The network named (or with id) `name` that a container on `node` can use: a local one, or an
/// overlay of the swarm `node` is an active member of.
fn usable_network<'a>(
    f: &'a mut Fabric,
    inner: &'a mut Inner,
    node: &str,
    name: &str,
) -> Option<&'a mut FakeNetwork> {
    if let Some(n) = inner.networks.values_mut().find(|n| n.answers_to(name)) {
        return Some(n);
    }
    let cluster = f.active_cluster_mut(node)?;
    cluster.networks.values_mut().find(|n| n.answers_to(name))
}

/// The overlays `node` sees: every one of its swarm on a manager; on a worker, those one of its
/// running containers is attached to (the engine instantiates an overlay on a worker only then).
fn visible_overlays(f: &Fabric, inner: &Inner, node: &str) -> Vec<FakeNetwork> {
    let Some((cluster, member)) = f.active_membership(node) else {
        return Vec::new();
    };
    cluster
        .networks
        .values()
        .filter(|n| {
            member.role == SwarmRole::Manager
                || inner
                    .containers
                    .values()
                    .any(|c| c.holds_endpoint() && c.network() == n.name)
        })
        .cloned()
        .collect()
}

/// `net` as an inspect shows it on this node: with the running containers attached here.
fn inspected(net: &FakeNetwork, scope: &str, inner: &Inner) -> NetworkRecord {
    let mut r = net.record(scope);
    r.containers = inner
        .containers
        .values()
        .filter(|c| c.holds_endpoint() && c.network() == net.name)
        .map(|c| (c.spec.name.clone(), c.address.clone()))
        .collect();
    r
}

/// A swarm fabric for fake nodes: the swarms that exist among the fakes attached to it
/// ([`FakeRuntime::attach_swarm`]) and each node's own view of its membership. Cheap to clone;
/// clones share state.
///
/// Modelled, as the engine does it: init (refused on a member: `Conflict`); join with a
/// manager's advertised address (`ip:port`, the manager up) and a token of its swarm (the
/// worker or the manager token; another is refused with 400); leave (a manager needs `force`;
/// on no swarm: `NotFound`); the calls only a manager answers (members, join tokens, roles,
/// remove, overlay create): refused with 503 on a worker, on a node in no swarm and when no more
/// than half of the managers are up; promote/demote against the member's version (a stale one:
/// `Conflict`), refused for the last manager and when the demotion would lose quorum; remove of
/// workers only (a manager must be demoted first); attachable overlays: created on a manager,
/// listed by every manager, by a worker only while one of its running containers is attached,
/// usable by containers on every member. A down node ([`FakeRuntime::set_unreachable`]) is
/// neither ready nor reachable, and leadership passes to a manager that is up. A member removed
/// while it still thinks itself one reports [`SwarmState::Error`] until it leaves. A node that
/// leaves stays in the member list, not ready, until removed.
///
/// Not modelled: a join that goes on in the background, autolock, certificates, services.
#[derive(Clone, Default)]
pub struct FakeSwarm {
    fabric: Arc<Mutex<Fabric>>,
}

impl FakeSwarm {
    /// An empty fabric: no swarm yet.
    pub fn new() -> Self {
        FakeSwarm::default()
    }

    fn lock(&self) -> MutexGuard<'_, Fabric> {
        self.fabric.lock().expect("fake swarm lock poisoned")
    }

    fn register(&self, fake: &FakeRuntime) {
        self.lock().engines.insert(
            fake.node.clone(),
            Engine {
                inner: Arc::downgrade(&fake.inner),
                down: fake.down.clone(),
            },
        );
    }
}

#[derive(Default)]
struct Fabric {
    /// Swarms by cluster id.
    clusters: BTreeMap<String, Cluster>,
    /// Each node's own view of its membership, by node name.
    locals: BTreeMap<String, Local>,
    /// The fakes attached, by node name.
    engines: BTreeMap<String, Engine>,
}

impl Fabric {
    /// The swarm `node` is an active member of, and its member entry.
    fn active_membership(&self, node: &str) -> Option<(&Cluster, &Member)> {
        let local = self.locals.get(node)?;
        let cluster = self.clusters.get(&local.cluster)?;
        let member = cluster.members.get(&local.node_id)?;
        Some((cluster, member))
    }

    fn active_cluster_mut(&mut self, node: &str) -> Option<&mut Cluster> {
        let local = self.locals.get(node)?;
        let cluster = self.clusters.get_mut(&local.cluster)?;
        cluster
            .members
            .contains_key(&local.node_id)
            .then_some(cluster)
    }

    /// What `GET /info` says of `node`'s membership.
    fn info(&self, node: &str) -> SwarmInfo {
        let Some(local) = self.locals.get(node) else {
            return SwarmInfo::default();
        };
        let Some((cluster, member)) = self.active_membership(node) else {
            return SwarmInfo {
                state: SwarmState::Error,
                node_id: local.node_id.clone(),
                error: Some(REMOVED_FROM_SWARM.to_string()),
                ..SwarmInfo::default()
            };
        };
        let manager = member.role == SwarmRole::Manager;
        let managers: Vec<&Member> = cluster
            .members
            .values()
            .filter(|m| m.role == SwarmRole::Manager)
            .collect();
        let mut remote_managers: Vec<String> = managers
            .iter()
            .filter(|m| !m.left)
            .map(|m| format!("{}:2377", m.addr))
            .collect();
        remote_managers.sort();
        SwarmInfo {
            state: SwarmState::Active,
            node_id: local.node_id.clone(),
            node_addr: member.addr.clone(),
            manager,
            cluster_id: manager.then(|| cluster.id.clone()),
            error: None,
            remote_managers,
            nodes: if manager {
                cluster.members.len() as u32
            } else {
                0
            },
            managers: if manager { managers.len() as u32 } else { 0 },
        }
    }
}

/// An attached fake, as the fabric sees it.
struct Engine {
    inner: Weak<Mutex<Inner>>,
    down: Arc<AtomicBool>,
}

fn is_up(engines: &BTreeMap<String, Engine>, m: &Member) -> bool {
    !m.left
        && engines
            .get(&m.node)
            .is_some_and(|e| !e.down.load(Ordering::SeqCst))
}

/// A node's own view: the swarm it believes it is in, and its id there.
struct Local {
    cluster: String,
    node_id: String,
}

struct Cluster {
    id: String,
    worker_token: String,
    manager_token: String,
    /// By swarm node id.
    members: BTreeMap<String, Member>,
    leader: Option<String>,
    /// Overlays, by name.
    networks: BTreeMap<String, FakeNetwork>,
    /// The swarm's labels (set at init).
    labels: BTreeMap<String, String>,
}

impl Cluster {
    fn managers(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members
            .iter()
            .filter(|(_, m)| m.role == SwarmRole::Manager)
    }

    /// The leader, electing one among the managers that are up when the last is not; `None`
    /// without a quorum (more than half of the managers up).
    fn refresh_leader(&mut self, engines: &BTreeMap<String, Engine>) -> Option<String> {
        let total = self.managers().count();
        let up: Vec<String> = self
            .managers()
            .filter(|(_, m)| is_up(engines, m))
            .map(|(id, _)| id.clone())
            .collect();
        if up.len() * 2 <= total {
            return None;
        }
        if let Some(l) = self.leader.as_ref().filter(|l| up.contains(l)) {
            return Some(l.clone());
        }
        self.leader = up.first().cloned();
        self.leader.clone()
    }
}

struct Member {
    /// The fake node's name (its host name).
    node: String,
    /// Advertised address.
    addr: String,
    role: SwarmRole,
    version: u64,
    /// Left the swarm (it stays listed, down, until removed).
    left: bool,
}

/// Every name a fake image answers to: its id, tags and digests.
fn fake_image_names(i: &ImageUsage) -> impl Iterator<Item = &str> {
    std::iter::once(i.id.as_str())
        .chain(i.tags.iter().map(String::as_str))
        .chain(i.digests.iter().map(String::as_str))
}

fn record(c: &FakeContainer) -> ContainerRecord {
    ContainerRecord {
        networks: vec![c.network().to_string()],
        id: c.id.clone(),
        name: c.spec.name.clone(),
        image: c.spec.image.clone(),
        labels: c.spec.labels.clone(),
        state: c.state,
        health: c.health,
        created: c.created,
        // As the engine lists them: published ports of a running container only.
        host_ports: if c.state == RunState::Running {
            c.spec.ports.iter().map(|p| p.host_port).collect()
        } else {
            Vec::new()
        },
    }
}

fn event_for(c: &FakeContainer, action: &str) -> EngineEvent {
    EngineEvent {
        container_id: c.id.clone(),
        action: action.to_string(),
        labels: c.spec.labels.clone(),
        time_nano: 0,
    }
}

fn matches(labels: &BTreeMap<String, String>, filter: &ListFilter) -> bool {
    filter.labels.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(f.as_str()),
    })
}

#[async_trait]
impl NodeRuntime for FakeRuntime {
    fn node(&self) -> &str {
        &self.node
    }

    fn engine_kind(&self) -> Option<crate::container::EngineKind> {
        Some(self.lock().engine_kind)
    }

    async fn engine_info(&self) -> Result<EngineInfo, TransportError> {
        self.begin("info", "").await?;
        let fabric = self.fabric();
        let swarm = fabric.lock().info(&self.node);
        let inner = self.lock();
        let mut info = self.info.clone();
        info.kind = inner.engine_kind;
        info.swarm = swarm;
        info.containers = inner.containers.len() as u64;
        info.containers_running = inner
            .containers
            .values()
            .filter(|c| c.state == RunState::Running)
            .count() as u64;
        Ok(info)
    }

    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerRecord>, TransportError> {
        self.begin("list", "").await?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| matches(&c.spec.labels, filter))
            .map(record)
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, TransportError> {
        self.begin("inspect", id).await?;
        let mut inner = self.lock();
        if let Some(n) = inner.reserved.get_mut(id)
            && *n > 0
        {
            *n -= 1;
            return Err(self.not_found("inspect container", id));
        }
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("inspect container", id))?;
        Ok(ContainerDetails {
            record: record(c),
            spec: c.spec.clone(),
            restart_count: c.restart_count,
            exit_code: 0,
            oom_killed: false,
            started_at: None,
            finished_at: None,
        })
    }

    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, TransportError> {
        self.begin("image", image).await?;
        let inner = self.lock();
        let pulled: Vec<String> = inner
            .pulled
            .iter()
            .filter(|(r, d)| *r == image || *d == image)
            .map(|(_, d)| d.clone())
            .collect();
        let present = inner.images.is_empty() || inner.images.iter().any(|i| i == image);
        Ok((present || !pulled.is_empty()).then(|| LocalImage {
            id: format!(
                "sha256:fake-{}",
                pulled.first().map_or(image, String::as_str)
            ),
            repo_digests: pulled,
        }))
    }

    async fn disk_usage(&self) -> Result<EngineDisk, TransportError> {
        self.begin("system-df", "").await?;
        let inner = self.lock();
        let images: Vec<ImageUsage> = inner
            .disk_images
            .iter()
            .map(|i| ImageUsage {
                containers: inner
                    .containers
                    .values()
                    .filter(|c| fake_image_names(i).any(|n| n == c.spec.run_image()))
                    .count() as u64,
                ..i.clone()
            })
            .collect();
        Ok(EngineDisk {
            images_bytes: images
                .iter()
                .map(|i| i.size.saturating_sub(i.shared_size))
                .sum(),
            images,
            ..EngineDisk::default()
        })
    }

    async fn filesystem(&self, path: &str) -> Result<Filesystem, TransportError> {
        self.begin("df", path).await?;
        self.lock().filesystem.ok_or_else(|| {
            TransportError::new(
                &self.node,
                "df",
                ErrorKind::Other,
                "this account may not run commands (fake)",
            )
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<(), TransportError> {
        self.begin("remove-image", reference).await?;
        let mut inner = self.lock();
        let Some(pos) = inner
            .disk_images
            .iter()
            .position(|i| fake_image_names(i).any(|n| n == reference))
        else {
            return Err(TransportError::new(
                &self.node,
                "remove image",
                ErrorKind::NotFound,
                format!("No such image: {reference}"),
            )
            .with_object(reference));
        };
        let image = inner.disk_images[pos].clone();
        let by_tag = image.tags.iter().any(|t| t == reference);
        let last_name = !by_tag || image.tags.len() == 1;
        let used = inner
            .containers
            .values()
            .any(|c| fake_image_names(&image).any(|n| n == c.spec.run_image()));
        if last_name && used {
            return Err(TransportError::new(
                &self.node,
                "remove image",
                ErrorKind::Conflict,
                format!("conflict: unable to remove {reference} (must force) - a container is using its referenced image"),
            )
            .with_object(reference));
        }
        if !by_tag && image.tags.len() > 1 {
            return Err(TransportError::new(
                &self.node,
                "remove image",
                ErrorKind::Conflict,
                format!("conflict: unable to delete {reference} (must be forced) - image is referenced in multiple repositories"),
            )
            .with_object(reference));
        }
        if last_name {
            inner.disk_images.remove(pos);
            let freed = image.size.saturating_sub(image.shared_size);
            if let Some(fs) = inner.filesystem.as_mut() {
                fs.used = fs.used.saturating_sub(freed);
                fs.available = fs.available.saturating_add(freed);
            }
        } else {
            inner.disk_images[pos].tags.retain(|t| t != reference);
        }
        Ok(())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), TransportError> {
        self.begin("pull", image).await?;
        let registry = self.lock().registry.clone();
        let digest = FakeRegistry::serve(registry.as_ref(), image, auth)
            .map_err(|e| e.into_error(&self.node, "pull image", image))?;
        progress(PullProgress {
            layers_done: 1,
            layers: 1,
            bytes_done: 1024,
            bytes: 1024,
        });
        let repo = super::docker::split_image_ref(image).0;
        let repo = repo.split('@').next().unwrap_or(&repo).to_string();
        let mut inner = self.lock();
        inner
            .pulled
            .insert(image.to_string(), format!("{repo}@{digest}"));
        Ok(())
    }

    async fn resolve_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransportError> {
        self.begin("resolve", image).await?;
        if self.lock().engine_kind == crate::container::EngineKind::Podman {
            // As the real one: Podman has no `/distribution` endpoint.
            return Err(TransportError::new(
                &self.node,
                "resolve image",
                ErrorKind::UnsupportedEngine,
                "podman cannot ask a registry for a digest (no /distribution endpoint)",
            )
            .with_object(image));
        }
        let registry = self.lock().registry.clone();
        FakeRegistry::serve(registry.as_ref(), image, auth)
            .map_err(|e| e.into_error(&self.node, "resolve image", image))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError> {
        self.begin("create", &spec.name).await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let mut inner = self.lock();
        if inner.containers.values().any(|c| c.spec.name == spec.name) {
            return Err(TransportError::new(
                &self.node,
                "create container",
                ErrorKind::Conflict,
                "name already in use",
            )
            .with_object(&spec.name));
        }
        let created = inner.clock;
        let c = FakeContainer::new(spec.clone(), RunState::Created, created, String::new());
        // As the engine: the network must exist here, or be an overlay of this node's swarm.
        let address = match usable_network(&mut f, &mut inner, &self.node, c.network()) {
            Some(n) => n.next_address(),
            None => {
                return Err(self.network_not_found("create container", &spec.name, c.network()));
            }
        };
        let c = FakeContainer { address, ..c };
        let id = c.id.clone();
        inner.containers.insert(id.clone(), c);
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), TransportError> {
        self.begin("start", id).await?;
        let fabric = self.fabric();
        let event = {
            let mut f = fabric.lock();
            let mut inner = self.lock();
            let key = self
                .find(&mut inner, id)
                .ok_or_else(|| self.not_found("start container", id))?
                .id
                .clone();
            // As the engine: a container whose network was removed does not start.
            let network = inner.containers[&key].network().to_string();
            if usable_network(&mut f, &mut inner, &self.node, &network).is_none() {
                return Err(self.network_not_found("start container", id, &network));
            }
            // As the engine: a host port another running container publishes cannot be bound.
            let wanted: Vec<u16> = inner.containers[&key]
                .spec
                .ports
                .iter()
                .map(|p| p.host_port)
                .collect();
            if let Some(port) = inner
                .containers
                .values()
                .filter(|o| o.id != key && o.state == RunState::Running)
                .flat_map(|o| o.spec.ports.iter().map(|p| p.host_port))
                .find(|p| wanted.contains(p))
            {
                return Err(TransportError::new(
                    &self.node,
                    "start",
                    ErrorKind::Api { status: 500 },
                    format!("Bind for 0.0.0.0:{port} failed: port is already allocated (fake)"),
                )
                .with_object(id));
            }
            let on_start = inner.health_on_start.unwrap_or(Health::Healthy);
            let c = inner.containers.get_mut(&key).expect("found above");
            c.state = RunState::Running;
            c.health = c.spec.healthcheck.as_ref().map(|_| on_start);
            event_for(c, "start")
        };
        let _ = self.events.send(event);
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<(), TransportError> {
        self.begin("stop", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("stop container", id))?;
        c.state = RunState::Exited;
        let _ = self.log_lines.send((c.id.clone(), None));
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), TransportError> {
        self.begin("remove", id).await?;
        let mut inner = self.lock();
        let key = self
            .find(&mut inner, id)
            .map(|c| c.id.clone())
            .ok_or_else(|| self.not_found("remove container", id))?;
        inner.containers.remove(&key);
        let _ = self.log_lines.send((key, None));
        Ok(())
    }

    async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<(), TransportError> {
        self.begin("update", id).await?;
        let mut inner = self.lock();
        if !inner.engine_kind.updates_in_place() {
            // Podman 4.3's compatible API has no `POST /containers/{id}/update`: 404.
            return Err(TransportError::new(
                &self.node,
                "update container",
                ErrorKind::NotFound,
                "Not Found (fake podman: no POST /containers/{id}/update)",
            )
            .with_object(id));
        }
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("update container", id))?;
        c.spec.resources = update.resources.clone();
        c.spec.restart = update.restart;
        Ok(())
    }

    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError> {
        self.begin("stats", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("container stats", id))?;
        Ok(c.memory_usage)
    }

    async fn import_image(&self, reference: &str, _rootfs: Vec<u8>) -> Result<(), TransportError> {
        self.begin("import", reference).await?;
        let mut inner = self.lock();
        // An empty image list means "every image is present": keep it that way.
        if !inner.images.is_empty() && !inner.images.iter().any(|i| i == reference) {
            inner.images.push(reference.to_string());
        }
        Ok(())
    }

    async fn export_image(&self, image: &str) -> Result<super::ImageArchive, TransportError> {
        self.begin("export", image).await?;
        if !self.image_present(image).await? {
            return Err(TransportError::new(
                &self.node,
                "export image",
                ErrorKind::NotFound,
                format!("reference does not exist: {image} (fake)"),
            )
            .with_object(image));
        }
        Ok(futures_util::stream::iter(fake_archive(image).map(Ok)).boxed())
    }

    async fn load_image(
        &self,
        mut archive: super::ImageArchive,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), TransportError> {
        self.begin("load", "").await?;
        let mut body = Vec::new();
        while let Some(chunk) = archive.next().await {
            body.extend_from_slice(&chunk?);
            progress(body.len() as u64);
        }
        let image = parse_fake_archive(&body).ok_or_else(|| {
            TransportError::new(
                &self.node,
                "load image",
                ErrorKind::Other,
                "not an image archive (fake)",
            )
        })?;
        let mut inner = self.lock();
        if let Some(call) = inner.calls.last_mut() {
            call.object = image.clone();
        }
        // An empty image list means "every image is present": keep it that way.
        if !inner.images.is_empty() && !inner.images.contains(&image) {
            inner.images.push(image);
        }
        Ok(())
    }

    async fn put_archive(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), TransportError> {
        self.begin("put-archive", id).await?;
        let files = crate::archive::files(&tar).map_err(|e| {
            TransportError::new(
                &self.node,
                "put archive",
                ErrorKind::Api { status: 400 },
                e.to_string(),
            )
            .with_object(id)
        })?;
        let mut inner = self.lock();
        if inner.refuse_archives {
            return Err(TransportError::new(
                &self.node,
                "put archive",
                ErrorKind::Api { status: 500 },
                "refused (fake)",
            )
            .with_object(id));
        }
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("put archive", id))?;
        for (path, content) in files {
            c.files
                .insert(format!("{}/{path}", dir.trim_end_matches('/')), content);
        }
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        opts: super::ExecOptions,
    ) -> Result<super::ExecSession, TransportError> {
        self.begin("exec", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("exec", id))?;
        if c.state != RunState::Running {
            return Err(TransportError::new(
                &self.node,
                "exec",
                ErrorKind::Conflict,
                format!("container {} is not running", c.id),
            )
            .with_object(id));
        }
        let cid = c.id.clone();
        let exec_id = format!("exec-{}", next_other());
        let script = inner.exec_script.clone();
        inner.execs.push((cid, cmd.to_vec(), opts));
        inner.exec_exits.insert(exec_id.clone(), script.exit_code);
        if let Some((w, h)) = opts.size {
            inner.resizes.push((exec_id.clone(), w, h));
        }
        let output = if opts.tty {
            // A TTY merges the streams.
            script
                .output
                .into_iter()
                .map(|o| match o {
                    super::ExecOutput::Stderr(b) => super::ExecOutput::Stdout(b),
                    o => o,
                })
                .collect()
        } else {
            script.output
        };
        Ok(super::ExecSession {
            id: exec_id,
            output: futures_util::stream::iter(output.into_iter().map(Ok)).boxed(),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), TransportError> {
        self.begin("exec-resize", exec_id).await?;
        self.lock()
            .resizes
            .push((exec_id.to_string(), width, height));
        Ok(())
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, TransportError> {
        self.begin("exec-inspect", exec_id).await?;
        let inner = self.lock();
        inner
            .exec_exits
            .get(exec_id)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                TransportError::new(
                    &self.node,
                    "exec inspect",
                    ErrorKind::NotFound,
                    "no such exec",
                )
                .with_object(exec_id)
            })
    }

    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, TransportError> {
        self.begin("get-archive", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("get archive", id))?;
        let content = c.files.get(path).ok_or_else(|| {
            TransportError::new(
                &self.node,
                "get archive",
                ErrorKind::NotFound,
                "no such file",
            )
            .with_object(id)
        })?;
        let name = path.rsplit('/').next().unwrap_or(path);
        Ok(crate::archive::one_file(name, content, 0o644))
    }

    async fn list_networks(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<NetworkRecord>, TransportError> {
        self.begin("networks", "").await?;
        let fabric = self.fabric();
        let f = fabric.lock();
        let inner = self.lock();
        let mut out: Vec<NetworkRecord> = inner
            .networks
            .values()
            .map(|n| n.record("local"))
            .chain(
                visible_overlays(&f, &inner, &self.node)
                    .iter()
                    .map(|n| n.record("swarm")),
            )
            .filter(|n| matches(&n.labels, filter))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkRecord>, TransportError> {
        self.begin("network", name).await?;
        let fabric = self.fabric();
        let f = fabric.lock();
        let inner = self.lock();
        if let Some(n) = inner.networks.values().find(|n| n.answers_to(name)) {
            return Ok(Some(inspected(n, "local", &inner)));
        }
        Ok(visible_overlays(&f, &inner, &self.node)
            .iter()
            .find(|n| n.answers_to(name))
            .map(|n| inspected(n, "swarm", &inner)))
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, TransportError> {
        const OP: &str = "create network";
        self.begin("create-network", &spec.name).await?;
        let name = Some(spec.name.as_str());
        // The engine also refuses `default` and `ingress` (names it reserves).
        if PREDEFINED_NETWORKS.contains(&spec.name.as_str())
            || ["default", "ingress"].contains(&spec.name.as_str())
        {
            return Err(self.refuse(
                OP,
                name,
                ErrorKind::Api { status: 403 },
                format!(
                    "{} is a pre-defined network and cannot be created",
                    spec.name
                ),
            ));
        }
        let exists = || {
            self.refuse(
                OP,
                name,
                ErrorKind::Conflict,
                format!("network with name {} already exists", spec.name),
            )
        };
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let network = FakeNetwork::from_spec(spec);
        let id = network.id.clone();
        match spec.driver {
            NetworkDriver::Bridge => {
                // A manager also refuses the name of one of its swarm's overlays.
                let in_swarm = f
                    .active_membership(&self.node)
                    .filter(|(_, m)| m.role == SwarmRole::Manager)
                    .is_some_and(|(c, _)| c.networks.contains_key(&spec.name));
                let mut inner = self.lock();
                if in_swarm || inner.networks.contains_key(&spec.name) {
                    return Err(exists());
                }
                inner.networks.insert(spec.name.clone(), network);
            }
            NetworkDriver::Overlay => {
                let local = self.lock().networks.contains_key(&spec.name);
                let (cluster, _) = self.managed_cluster(OP, name, &mut f)?;
                if local || cluster.networks.contains_key(&spec.name) {
                    return Err(exists());
                }
                cluster.networks.insert(spec.name.clone(), network);
            }
        }
        Ok(id)
    }

    async fn remove_network(&self, id: &str) -> Result<(), TransportError> {
        const OP: &str = "remove network";
        self.begin("remove-network", id).await?;
        if PREDEFINED_NETWORKS.contains(&id) {
            return Err(self.refuse(
                OP,
                Some(id),
                ErrorKind::Api { status: 403 },
                format!("{id} is a pre-defined network and cannot be removed"),
            ));
        }
        let in_use = |name: &str| {
            self.refuse(
                OP,
                Some(id),
                ErrorKind::Conflict,
                format!("error while removing network: network {name} has active endpoints"),
            )
        };
        let uses = |inner: &Inner, name: &str| {
            inner
                .containers
                .values()
                .any(|c| c.holds_endpoint() && c.network() == name)
        };
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let mut inner = self.lock();
        if let Some(n) = inner.networks.values().find(|n| n.answers_to(id)) {
            let name = n.name.clone();
            if uses(&inner, &name) {
                return Err(in_use(&name));
            }
            inner.networks.remove(&name);
            return Ok(());
        }
        let not_found = self.refuse(
            OP,
            Some(id),
            ErrorKind::NotFound,
            format!("network {id} not found"),
        );
        let Some((cluster, member)) = f.active_membership(&self.node) else {
            return Err(not_found);
        };
        let Some(name) = cluster
            .networks
            .values()
            .find(|n| n.answers_to(id))
            .map(|n| n.name.clone())
        else {
            return Err(not_found);
        };
        if member.role != SwarmRole::Manager {
            // A worker sees an overlay only while one of its containers uses it.
            return Err(if uses(&inner, &name) {
                in_use(&name)
            } else {
                not_found
            });
        }
        let nodes: BTreeSet<String> = cluster.members.values().map(|m| m.node.clone()).collect();
        let used_anywhere = uses(&inner, &name)
            || nodes.iter().filter(|n| **n != self.node).any(|n| {
                f.engines
                    .get(n)
                    .and_then(|e| e.inner.upgrade())
                    .is_some_and(|i| uses(&i.lock().expect("fake runtime lock poisoned"), &name))
            });
        drop(inner);
        let (cluster, _) = self.managed_cluster(OP, Some(id), &mut f)?;
        if used_anywhere {
            return Err(in_use(&name));
        }
        cluster.networks.remove(&name);
        Ok(())
    }

    async fn swarm_init(
        &self,
        advertise_addr: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, TransportError> {
        self.begin("swarm-init", advertise_addr).await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        if f.locals.contains_key(&self.node) {
            return Err(self.refuse(
                "swarm init",
                Some(advertise_addr),
                ErrorKind::Conflict,
                ALREADY_IN_A_SWARM,
            ));
        }
        let n = next_other();
        let cluster_id = format!("{n:025x}");
        let node_id = format!("{:025x}", next_other());
        let cluster = Cluster {
            id: cluster_id.clone(),
            worker_token: format!("SWMTKN-1-{n:050x}-worker{:017x}", next_other()),
            manager_token: format!("SWMTKN-1-{n:050x}-manager{:016x}", next_other()),
            members: BTreeMap::from([(
                node_id.clone(),
                Member {
                    node: self.node.clone(),
                    addr: advertise_addr.to_string(),
                    role: SwarmRole::Manager,
                    version: 1,
                    left: false,
                },
            )]),
            leader: Some(node_id.clone()),
            networks: BTreeMap::new(),
            labels: labels.clone(),
        };
        f.clusters.insert(cluster_id.clone(), cluster);
        f.locals.insert(
            self.node.clone(),
            Local {
                cluster: cluster_id,
                node_id: node_id.clone(),
            },
        );
        Ok(node_id)
    }

    async fn swarm_labels(&self) -> Result<BTreeMap<String, String>, TransportError> {
        self.begin("swarm-labels", "").await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let (cluster, _) = self.managed_cluster("swarm inspect", None, &mut f)?;
        Ok(cluster.labels.clone())
    }

    async fn swarm_join_tokens(&self) -> Result<JoinTokens, TransportError> {
        self.begin("swarm-tokens", "").await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let (cluster, _) = self.managed_cluster("swarm inspect", None, &mut f)?;
        Ok(JoinTokens {
            worker: cluster.worker_token.clone(),
            manager: cluster.manager_token.clone(),
        })
    }

    async fn swarm_join(
        &self,
        advertise_addr: &str,
        remote_addr: &str,
        token: &str,
    ) -> Result<(), TransportError> {
        const OP: &str = "swarm join";
        // The token is never recorded nor quoted in an error.
        self.begin("swarm-join", remote_addr).await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let remote = Some(remote_addr);
        if f.locals.contains_key(&self.node) {
            return Err(self.refuse(OP, remote, ErrorKind::Conflict, ALREADY_IN_A_SWARM));
        }
        let host = remote_addr.rsplit_once(':').map_or(remote_addr, |(h, _)| h);
        let Fabric {
            clusters,
            locals,
            engines,
        } = &mut *f;
        let Some(cluster) = clusters.values_mut().find(|c| {
            c.members
                .values()
                .any(|m| m.role == SwarmRole::Manager && m.addr == host && is_up(engines, m))
        }) else {
            return Err(self.refuse(
                OP,
                remote,
                ErrorKind::Api { status: 503 },
                format!(
                    "Timeout was reached before node joined: no swarm manager answers at \
                     {remote_addr} (fake)"
                ),
            ));
        };
        if cluster.refresh_leader(engines).is_none() {
            return Err(self.refuse(OP, remote, ErrorKind::Api { status: 503 }, NO_LEADER));
        }
        let role = if !token.is_empty() && token == cluster.worker_token {
            SwarmRole::Worker
        } else if !token.is_empty() && token == cluster.manager_token {
            SwarmRole::Manager
        } else {
            return Err(self.refuse(
                OP,
                remote,
                ErrorKind::Api { status: 400 },
                "A valid join token is necessary to join this cluster",
            ));
        };
        let node_id = format!("{:025x}", next_other());
        cluster.members.insert(
            node_id.clone(),
            Member {
                node: self.node.clone(),
                addr: advertise_addr.to_string(),
                role,
                version: 1,
                left: false,
            },
        );
        let cluster_id = cluster.id.clone();
        locals.insert(
            self.node.clone(),
            Local {
                cluster: cluster_id,
                node_id,
            },
        );
        Ok(())
    }

    async fn swarm_leave(&self, force: bool) -> Result<(), TransportError> {
        const OP: &str = "swarm leave";
        self.begin("swarm-leave", "").await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let Some(local) = f.locals.get(&self.node) else {
            return Err(self.refuse(
                OP,
                None,
                ErrorKind::NotFound,
                "This node is not part of a swarm",
            ));
        };
        let (cluster_id, node_id) = (local.cluster.clone(), local.node_id.clone());
        if let Some(member) = f
            .clusters
            .get_mut(&cluster_id)
            .and_then(|c| c.members.get_mut(&node_id))
        {
            if member.role == SwarmRole::Manager && !force {
                return Err(self.refuse(
                    OP,
                    None,
                    ErrorKind::Api { status: 503 },
                    "You are attempting to leave the swarm on a node that is participating as a \
                     manager. The only way to restore a swarm that has lost consensus is to \
                     reinitialize it with `--force-new-cluster`. Use `--force` to suppress this \
                     message.",
                ));
            }
            member.left = true;
        }
        f.locals.remove(&self.node);
        Ok(())
    }

    async fn swarm_members(&self) -> Result<Vec<SwarmMember>, TransportError> {
        self.begin("swarm-members", "").await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let (cluster, engines) = self.managed_cluster("list swarm nodes", None, &mut f)?;
        let leader = cluster.refresh_leader(engines);
        Ok(cluster
            .members
            .iter()
            .map(|(id, m)| {
                let up = is_up(engines, m);
                let manager = m.role == SwarmRole::Manager;
                SwarmMember {
                    id: id.clone(),
                    version: m.version,
                    hostname: m.node.clone(),
                    addr: m.addr.clone(),
                    role: m.role,
                    ready: up,
                    reachable: manager && up,
                    leader: leader.as_deref() == Some(id.as_str()),
                }
            })
            .collect())
    }

    async fn swarm_set_role(
        &self,
        id: &str,
        version: u64,
        role: SwarmRole,
    ) -> Result<(), TransportError> {
        const OP: &str = "update swarm node";
        self.begin("swarm-update", id).await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let (cluster, engines) = self.managed_cluster(OP, Some(id), &mut f)?;
        let Some(member) = cluster.members.get(id) else {
            return Err(self.refuse(
                OP,
                Some(id),
                ErrorKind::NotFound,
                format!("node {id} not found"),
            ));
        };
        if member.version != version {
            return Err(self.refuse(
                OP,
                Some(id),
                ErrorKind::Conflict,
                format!(
                    "the node changed since it was listed (version {version}, now {}): list the \
                     members again",
                    member.version
                ),
            ));
        }
        if member.role == SwarmRole::Manager && role == SwarmRole::Worker {
            let managers = cluster.managers().count();
            let up = cluster
                .managers()
                .filter(|(_, m)| is_up(engines, m))
                .count();
            let up_after = up - usize::from(is_up(engines, member));
            let refusal = if managers == 1 {
                Some("attempting to demote the last manager of the swarm")
            } else if up_after * 2 < managers {
                Some("can't remove member from the raft: this would result in a loss of quorum")
            } else {
                None
            };
            if let Some(why) = refusal {
                return Err(self.refuse(OP, Some(id), ErrorKind::Api { status: 400 }, why));
            }
        }
        let member = cluster.members.get_mut(id).expect("found above");
        member.role = role;
        member.version += 1;
        Ok(())
    }

    async fn swarm_remove_member(&self, id: &str) -> Result<(), TransportError> {
        const OP: &str = "remove swarm node";
        self.begin("swarm-remove", id).await?;
        let fabric = self.fabric();
        let mut f = fabric.lock();
        let (cluster, _) = self.managed_cluster(OP, Some(id), &mut f)?;
        match cluster.members.get(id) {
            None => Err(self.refuse(
                OP,
                Some(id),
                ErrorKind::NotFound,
                format!("node {id} not found"),
            )),
            Some(m) if m.role == SwarmRole::Manager => Err(self.refuse(
                OP,
                Some(id),
                ErrorKind::Api { status: 400 },
                format!(
                    "node {id} is a cluster manager and is a member of the raft cluster. It must \
                     be demoted to worker before removal"
                ),
            )),
            Some(_) => {
                cluster.members.remove(id);
                Ok(())
            }
        }
    }

    async fn usage(&self, id: &str) -> Result<super::Usage, TransportError> {
        self.begin("stats", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("container stats", id))?;
        // Counters as the engine keeps them, on one CPU: since the last reading the host spent
        // the (tokio) time elapsed, the container cpu_percent of it.
        let now = tokio::time::Instant::now();
        let elapsed = c.cpu_read_at.map_or(0, |t| {
            u64::try_from(now.duration_since(t).as_nanos()).unwrap_or(u64::MAX)
        });
        c.cpu_read_at = Some(now);
        c.system_ns += elapsed;
        c.cpu_total_ns += (elapsed as f64 * c.cpu_percent / 100.0) as u64;
        Ok(super::Usage {
            cpu_total_ns: c.cpu_total_ns,
            system_ns: c.system_ns,
            online_cpus: 1,
            memory: c.memory_usage,
        })
    }

    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        self.begin("events", "").await?;
        let filter = filter.clone();
        let rx = self.events.subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |e| std::future::ready(matches(&e.labels, &filter)))
        .map(Ok);
        Ok(stream.boxed())
    }

    async fn logs(
        &self,
        id: &str,
        opts: super::LogOptions,
    ) -> Result<super::LogLines, TransportError> {
        self.begin("logs", id).await?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("container logs", id))?;
        let since = opts.since_ns.unwrap_or(i64::MIN);
        let mut past: Vec<super::LogLine> = c
            .log
            .iter()
            .filter(|l| l.time_ns >= since)
            .cloned()
            .collect();
        if let Some(n) = opts.tail {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            past.drain(..past.len().saturating_sub(n));
        }
        let past = futures_util::stream::iter(past.into_iter().map(Ok));
        if !opts.follow || c.state != RunState::Running {
            return Ok(past.boxed());
        }
        // Subscribed under the lock: no line is both in `past` and sent, none in neither.
        let rx = self.log_lines.subscribe();
        let cid = c.id.clone();
        let new = futures_util::stream::unfold(rx, move |mut rx| {
            let cid = cid.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((id, Some(line))) if id == cid => return Some((Ok(line), rx)),
                        Ok((id, None)) if id == cid => return None,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(past.chain(new).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn net(name: &str, driver: NetworkDriver) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver,
            labels: labels(&[("fleet.managed-by", "fleetctl"), ("fleet.fleet", "aims")]),
            subnet: None,
            mtu: None,
            encrypted: false,
        }
    }

    fn container(name: &str, network: NetworkAttachment) -> ContainerSpec {
        ContainerSpec {
            secret_env: Default::default(),
            files: Vec::new(),
            knobs: Default::default(),
            pull: Default::default(),
            name: name.into(),
            image: "img:1".into(),
            command: None,
            env: BTreeMap::new(),
            labels: labels(&[("fleet.fleet", "aims")]),
            ports: vec![],
            volumes: vec![],
            restart: Default::default(),
            resources: Default::default(),
            healthcheck: None,
            stop_grace_period: None,
            network,
        }
    }

    fn on(network: &str, aliases: &[&str]) -> NetworkAttachment {
        NetworkAttachment::Fleet {
            network: network.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn fleet_filter() -> ListFilter {
        ListFilter {
            labels: vec!["fleet.fleet=aims".into()],
        }
    }

    #[tokio::test]
    async fn networks_belong_to_their_node_and_are_listed_by_label() {
        let n1 = FakeRuntime::new("n1");
        let n2 = FakeRuntime::new("n2");
        let spec = NetworkSpec {
            subnet: Some("10.10.0.0/24".into()),
            mtu: Some(1400),
            ..net("aims-net", NetworkDriver::Bridge)
        };
        let id = n1.create_network(&spec).await.unwrap();
        let listed = n1.list_networks(&fleet_filter()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id);
        assert_eq!(listed[0].driver, "bridge");
        assert_eq!(listed[0].scope, "local");
        assert_eq!(listed[0].subnet.as_deref(), Some("10.10.0.0/24"));
        assert_eq!(listed[0].options["com.docker.network.driver.mtu"], "1400");
        assert!(!listed[0].options.contains_key("encrypted"));
        let all: Vec<String> = n1
            .list_networks(&ListFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(all, ["aims-net", "bridge", "host", "none"]);
        assert!(n2.list_networks(&fleet_filter()).await.unwrap().is_empty());
        assert_eq!(n2.inspect_network("aims-net").await.unwrap(), None);
        assert_eq!(
            n1.inspect_network(&id).await.unwrap().unwrap().name,
            "aims-net",
            "by id too"
        );

        let e = n1.create_network(&spec).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert_eq!(e.object.as_deref(), Some("aims-net"));
        let e = n1.remove_network("nope").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(
            e.to_string(),
            "node n1: remove network nope: network nope not found"
        );
        let e = n1.remove_network("bridge").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 403 }, "{e}");
        n1.remove_network("aims-net").await.unwrap();
        assert_eq!(n1.inspect_network("aims-net").await.unwrap(), None);
        assert_eq!(
            n1.mutating_calls().iter().map(|c| c.op).collect::<Vec<_>>(),
            [
                "create-network",
                "create-network",
                "remove-network",
                "remove-network",
                "remove-network"
            ]
        );
    }

    #[tokio::test]
    async fn containers_join_networks_the_node_has() {
        let n1 = FakeRuntime::new("n1");
        let e = n1
            .create_container(&container("aims-web-0", on("aims-net", &["web"])))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert_eq!(
            e.to_string(),
            "node n1: create container aims-web-0: network aims-net not found"
        );
        assert!(n1.containers().is_empty());

        n1.create_network(&NetworkSpec {
            subnet: Some("10.10.0.0/24".into()),
            ..net("aims-net", NetworkDriver::Bridge)
        })
        .await
        .unwrap();
        let web = n1
            .create_container(&container("aims-web-0", on("aims-net", &["web"])))
            .await
            .unwrap();
        let old = n1
            .create_container(&container("aims-old-0", NetworkAttachment::Default))
            .await
            .unwrap();
        let host = n1
            .create_container(&container("aims-host-0", NetworkAttachment::Host))
            .await
            .unwrap();
        let records = n1.list_containers(&fleet_filter()).await.unwrap();
        let networks = |id: &str| {
            records
                .iter()
                .find(|r| r.id == id)
                .map(|r| r.networks.clone())
                .unwrap()
        };
        assert_eq!(networks(&web), ["aims-net"]);
        assert_eq!(networks(&old), ["bridge"]);
        assert_eq!(networks(&host), ["host"]);
        let d = n1.inspect_container(&web).await.unwrap();
        assert_eq!(d.spec.network, on("aims-net", &["web"]));
        assert_eq!(d.record.networks, ["aims-net"]);
        assert_eq!(
            n1.inspect_container(&old).await.unwrap().spec.network,
            NetworkAttachment::Default
        );

        // Only a running container holds an endpoint.
        let inspected = n1.inspect_network("aims-net").await.unwrap().unwrap();
        assert!(inspected.containers.is_empty());
        n1.start_container(&web).await.unwrap();
        let inspected = n1.inspect_network("aims-net").await.unwrap().unwrap();
        assert_eq!(
            inspected.containers,
            BTreeMap::from([("aims-web-0".to_string(), "10.10.0.2/24".to_string())])
        );
        assert!(
            n1.list_networks(&fleet_filter()).await.unwrap()[0]
                .containers
                .is_empty(),
            "a listing has no containers"
        );

        let e = n1.remove_network("aims-net").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        n1.stop_container(&web, Duration::ZERO).await.unwrap();
        n1.remove_network("aims-net").await.unwrap();
        // As the engine: the stopped container no longer starts.
        let e = n1.start_container(&web).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert!(e.message.contains("network aims-net not found"), "{e}");
    }

    /// Three fakes on one fabric: n1 inits, n2 joins as a worker, n3 as a manager.
    async fn three_node_swarm() -> (FakeSwarm, [FakeRuntime; 3], JoinTokens) {
        let swarm = FakeSwarm::new();
        let nodes = ["n1", "n2", "n3"].map(|n| FakeRuntime::with_swarm(n, &swarm));
        let [n1, n2, n3] = &nodes;
        n1.swarm_init("10.0.0.1", &BTreeMap::new()).await.unwrap();
        let tokens = n1.swarm_join_tokens().await.unwrap();
        n2.swarm_join("10.0.0.2", "10.0.0.1:2377", &tokens.worker)
            .await
            .unwrap();
        n3.swarm_join("10.0.0.3", "10.0.0.1:2377", &tokens.manager)
            .await
            .unwrap();
        (swarm, nodes, tokens)
    }

    fn member<'a>(members: &'a [SwarmMember], host: &str) -> &'a SwarmMember {
        members.iter().find(|m| m.hostname == host).unwrap()
    }

    #[tokio::test]
    async fn nodes_of_one_fabric_form_one_swarm() {
        let (_swarm, [n1, n2, n3], tokens) = three_node_swarm().await;
        let members = n1.swarm_members().await.unwrap();
        assert_eq!(members.len(), 3);
        let m1 = member(&members, "n1");
        assert_eq!(
            (m1.role, m1.addr.as_str(), m1.ready, m1.reachable, m1.leader),
            (SwarmRole::Manager, "10.0.0.1", true, true, true)
        );
        let m2 = member(&members, "n2");
        assert_eq!(
            (m2.role, m2.ready, m2.reachable, m2.leader),
            (SwarmRole::Worker, true, false, false)
        );
        assert_eq!(member(&members, "n3").role, SwarmRole::Manager);
        assert_eq!(
            n3.swarm_members().await.unwrap(),
            members,
            "any manager answers"
        );
        let e = n2.swarm_members().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 503 }, "{e}");
        assert!(e.message.contains("Worker nodes can't be used"), "{e}");
        assert!(n2.swarm_join_tokens().await.is_err());
        assert_eq!(n3.swarm_join_tokens().await.unwrap(), tokens);

        let i1 = n1.engine_info().await.unwrap().swarm;
        assert_eq!(i1.state, SwarmState::Active);
        assert!(i1.manager);
        assert_eq!(i1.node_id, m1.id);
        assert_eq!(i1.node_addr, "10.0.0.1");
        assert_eq!((i1.nodes, i1.managers), (3, 2));
        assert_eq!(i1.remote_managers, ["10.0.0.1:2377", "10.0.0.3:2377"]);
        let i2 = n2.engine_info().await.unwrap().swarm;
        assert_eq!(i2.state, SwarmState::Active);
        assert!(!i2.manager);
        assert_eq!((i2.nodes, i2.managers, i2.cluster_id), (0, 0, None));
        assert_eq!(
            n3.engine_info().await.unwrap().swarm.cluster_id,
            i1.cluster_id
        );

        let e = n2
            .swarm_init("10.0.0.2", &BTreeMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        let e = n2
            .swarm_join("10.0.0.2", "10.0.0.1:2377", &tokens.worker)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    }

    #[tokio::test]
    async fn a_join_needs_a_manager_up_and_a_token_of_its_swarm() {
        let (swarm, [n1, _, _], tokens) = three_node_swarm().await;
        let n4 = FakeRuntime::with_swarm("n4", &swarm);
        let wrong = "SWMTKN-1-0000000000000000000000000000000000000000000000000-nope";
        let e = n4
            .swarm_join("10.0.0.4", "10.0.0.1:2377", wrong)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 400 }, "{e}");
        assert!(!format!("{e} {e:?}").contains("SWMTKN"), "{e:?}");
        assert!(
            n4.calls().iter().all(|c| !c.object.contains("SWMTKN")),
            "the token is not recorded"
        );
        assert_eq!(n4.calls()[0].object, "10.0.0.1:2377");
        let e = n4
            .swarm_join("10.0.0.4", "10.0.0.9:2377", &tokens.worker)
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Api { status: 503 },
            "no manager there: {e}"
        );
        n1.set_unreachable(true);
        assert!(
            n4.swarm_join("10.0.0.4", "10.0.0.1:2377", &tokens.worker)
                .await
                .is_err(),
            "the manager is down"
        );
        let e = n4
            .swarm_join("10.0.0.4", "10.0.0.3:2377", &tokens.worker)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("does not have a leader"),
            "one of two managers up is no quorum: {e}"
        );
        n1.set_unreachable(false);
        n4.swarm_join("10.0.0.4", "10.0.0.3:2377", &tokens.worker)
            .await
            .unwrap();
        assert_eq!(
            n4.engine_info().await.unwrap().swarm.state,
            SwarmState::Active
        );
        // A fake on another fabric, or on none, finds no manager.
        let alone = FakeRuntime::new("alone");
        assert!(
            alone
                .swarm_join("10.0.0.5", "10.0.0.3:2377", &tokens.worker)
                .await
                .is_err()
        );
        let id = alone
            .swarm_init("10.0.0.5", &BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(alone.swarm_members().await.unwrap()[0].id, id);
    }

    #[tokio::test]
    async fn down_nodes_are_not_ready_and_leadership_needs_a_quorum() {
        let (_swarm, [n1, n2, n3], _) = three_node_swarm().await;
        n2.set_unreachable(true);
        let members = n1.swarm_members().await.unwrap();
        let m2 = member(&members, "n2");
        assert!(!m2.ready && !m2.reachable);
        n2.set_unreachable(false);
        assert!(member(&n1.swarm_members().await.unwrap(), "n2").ready);

        // Two managers: one down leaves no quorum.
        n1.set_unreachable(true);
        let e = n3.swarm_members().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 503 }, "{e}");
        assert!(e.message.contains("does not have a leader"), "{e}");
        n1.set_unreachable(false);
        // Promote n2: three managers, the leader down, another leads.
        let v = member(&n1.swarm_members().await.unwrap(), "n2").version;
        let n2_id = member(&n1.swarm_members().await.unwrap(), "n2").id.clone();
        n1.swarm_set_role(&n2_id, v, SwarmRole::Manager)
            .await
            .unwrap();
        n1.set_unreachable(true);
        let members = n3.swarm_members().await.unwrap();
        let m1 = member(&members, "n1");
        assert!(!m1.ready && !m1.reachable && !m1.leader);
        assert_eq!(members.iter().filter(|m| m.leader).count(), 1);
        assert!(members.iter().any(|m| m.leader && m.hostname != "n1"));
    }

    #[tokio::test]
    async fn roles_change_against_the_member_version() {
        let (_swarm, [n1, n2, n3], _) = three_node_swarm().await;
        let m2 = member(&n1.swarm_members().await.unwrap(), "n2").clone();
        let e = n1
            .swarm_set_role(&m2.id, m2.version + 1, SwarmRole::Manager)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "stale version: {e}");
        n1.swarm_set_role(&m2.id, m2.version, SwarmRole::Manager)
            .await
            .unwrap();
        let after = member(&n1.swarm_members().await.unwrap(), "n2").clone();
        assert_eq!(after.role, SwarmRole::Manager);
        assert!(after.version > m2.version);
        let info = n2.engine_info().await.unwrap().swarm;
        assert!(info.manager);
        assert_eq!(info.managers, 3);
        assert!(n2.swarm_members().await.is_ok(), "now a manager");
        let e = n1
            .swarm_set_role("nope", 1, SwarmRole::Worker)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert!(
            n2.swarm_set_role(&m2.id, m2.version, SwarmRole::Worker)
                .await
                .is_err()
        );

        // Demote down to the last manager: refused there.
        for host in ["n2", "n3"] {
            let m = member(&n1.swarm_members().await.unwrap(), host).clone();
            n1.swarm_set_role(&m.id, m.version, SwarmRole::Worker)
                .await
                .unwrap();
        }
        let m1 = member(&n1.swarm_members().await.unwrap(), "n1").clone();
        let e = n1
            .swarm_set_role(&m1.id, m1.version, SwarmRole::Worker)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 400 }, "{e}");
        assert!(n3.swarm_members().await.is_err(), "n3 is a worker again");
    }

    #[tokio::test]
    async fn leaving_and_removing_members() {
        let (_swarm, [n1, n2, n3], tokens) = three_node_swarm().await;
        let e = n3.swarm_leave(false).await.unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Api { status: 503 },
            "a manager needs force: {e}"
        );
        let m3 = member(&n1.swarm_members().await.unwrap(), "n3").clone();
        let e = n1.swarm_remove_member(&m3.id).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 400 }, "demote first: {e}");

        n2.swarm_leave(false).await.unwrap();
        assert_eq!(
            n2.engine_info().await.unwrap().swarm,
            SwarmInfo::default(),
            "inactive"
        );
        let e = n2.swarm_leave(false).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        let members = n1.swarm_members().await.unwrap();
        let gone = member(&members, "n2").clone();
        assert!(!gone.ready, "listed, down, until removed");
        n1.swarm_remove_member(&gone.id).await.unwrap();
        assert_eq!(n1.swarm_members().await.unwrap().len(), 2);
        let e = n1.swarm_remove_member(&gone.id).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

        // It joins again, under a new id.
        n2.swarm_join("10.0.0.2", "10.0.0.1:2377", &tokens.worker)
            .await
            .unwrap();
        let again = member(&n1.swarm_members().await.unwrap(), "n2").clone();
        assert_ne!(again.id, gone.id);
        // Removed while it still thinks itself a member: an error state until it leaves.
        n1.swarm_remove_member(&again.id).await.unwrap();
        let info = n2.engine_info().await.unwrap().swarm;
        assert_eq!(info.state, SwarmState::Error);
        assert!(info.error.is_some());
        assert!(n2.swarm_init("10.0.0.2", &BTreeMap::new()).await.is_err());
        n2.swarm_leave(true).await.unwrap();
        assert_eq!(
            n2.engine_info().await.unwrap().swarm.state,
            SwarmState::Inactive
        );
    }

    #[tokio::test]
    async fn overlays_are_made_on_a_manager_and_shared_by_the_swarm() {
        let (swarm, [n1, n2, n3], _) = three_node_swarm().await;
        let outsider = FakeRuntime::with_swarm("n4", &swarm);
        let spec = NetworkSpec {
            encrypted: true,
            ..net("aims-overlay", NetworkDriver::Overlay)
        };
        let e = n2.create_network(&spec).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 503 }, "a worker: {e}");
        let e = outsider.create_network(&spec).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 503 }, "no swarm: {e}");
        let id = n1.create_network(&spec).await.unwrap();
        assert_eq!(
            n3.create_network(&spec).await.unwrap_err().kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            n1.create_network(&net("aims-overlay", NetworkDriver::Bridge))
                .await
                .unwrap_err()
                .kind,
            ErrorKind::Conflict,
            "a manager refuses a bridge named like an overlay"
        );
        for manager in [&n1, &n3] {
            let listed = manager.list_networks(&fleet_filter()).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].id, id);
            assert_eq!(listed[0].scope, "swarm");
            assert_eq!(listed[0].driver, "overlay");
            assert_eq!(listed[0].options["encrypted"], "");
        }
        // A worker sees the overlay only while one of its containers is attached to it.
        assert!(n2.list_networks(&fleet_filter()).await.unwrap().is_empty());
        assert_eq!(n2.inspect_network("aims-overlay").await.unwrap(), None);
        let c = n2
            .create_container(&container("aims-web-0", on("aims-overlay", &["web"])))
            .await
            .unwrap();
        n2.start_container(&c).await.unwrap();
        assert_eq!(n2.list_networks(&fleet_filter()).await.unwrap().len(), 1);
        let seen = n2.inspect_network("aims-overlay").await.unwrap().unwrap();
        assert_eq!(seen.containers.keys().collect::<Vec<_>>(), ["aims-web-0"]);
        assert!(
            n1.inspect_network("aims-overlay")
                .await
                .unwrap()
                .unwrap()
                .containers
                .is_empty(),
            "an inspect shows the containers on its own node"
        );
        // A node outside the swarm cannot use it.
        let e = outsider
            .create_container(&container("aims-web-1", on("aims-overlay", &[])))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

        let e = n1.remove_network("aims-overlay").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "in use on n2: {e}");
        let e = n2.remove_network("aims-overlay").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        n2.remove_container(&c).await.unwrap();
        assert_eq!(
            n2.remove_network("aims-overlay").await.unwrap_err().kind,
            ErrorKind::NotFound,
            "a worker no longer sees it"
        );
        n3.remove_network(&id).await.unwrap();
        assert!(n1.list_networks(&fleet_filter()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn swarm_and_network_calls_are_mutations_that_can_fail() {
        let n1 = FakeRuntime::new("n1");
        n1.fail_at_mutation(1);
        let e = n1
            .create_network(&net("aims-net", NetworkDriver::Bridge))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Api { status: 500 }, "{e}");
        n1.create_network(&net("aims-net", NetworkDriver::Bridge))
            .await
            .unwrap();
        n1.swarm_init("10.0.0.1", &BTreeMap::new()).await.unwrap();
        n1.list_networks(&ListFilter::default()).await.unwrap();
        n1.swarm_members().await.unwrap();
        assert_eq!(
            n1.mutating_calls().iter().map(|c| c.op).collect::<Vec<_>>(),
            ["create-network", "create-network", "swarm-init"]
        );
        n1.set_unreachable(true);
        let e = n1.swarm_members().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unreachable);
    }
}

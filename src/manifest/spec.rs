//! Resolved manifest types: validated, defaulted and cross-checked. Everything downstream
//! (capacity, scheduler, planner, controller) works on these.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::quantity::{Bytes, MilliCpus, Percent};
use crate::container::{EngineKind, HealthcheckSpec, NetworkDriver, PortMapping, RestartPolicy};

/// Labels: sorted name → value.
pub type Labels = BTreeMap<String, String>;

/// The whole desired state of a fleet, as the manifests declare it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredFleet {
    /// The fleet's own settings.
    pub fleet: FleetSpec,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeSpec>,
    /// Services by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Plug classes by name.
    pub plug_classes: BTreeMap<String, PlugClassSpec>,
    /// Placement policies by name.
    pub policies: BTreeMap<String, PolicySpec>,
    /// Secrets by name (SPEC §12): where each value is read, never the value.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// The registry digest (`sha256:…`) each image tag runs as in this pass (SPEC §11): filled
    /// from the state store and the registries before planning, never from manifests. An image
    /// not in it runs by its tag.
    #[serde(skip)]
    pub image_digests: BTreeMap<String, String>,
    /// The values of the secrets the services and plug classes use, read on this machine for
    /// this pass ([`crate::secrets::attach`]); never from manifests, never serialized.
    #[serde(skip)]
    pub secret_values: crate::secrets::SecretValues,
}

impl DesiredFleet {
    /// What every service and plug class gets from secrets and config files.
    pub fn file_specs(&self) -> impl Iterator<Item = &FileSpecs> {
        self.services
            .values()
            .map(|s| &s.files)
            .chain(self.plug_classes.values().map(|c| &c.files))
    }

    /// This fleet with its images pinned to `digests` (empty digests are left out).
    pub fn with_digests(&self, digests: &BTreeMap<String, String>) -> DesiredFleet {
        DesiredFleet {
            image_digests: digests
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(i, d)| (i.clone(), d.clone()))
                .collect(),
            ..self.clone()
        }
    }

    /// Every image the manifests name, with the policy that decides how it is pinned when
    /// several services and plug classes share it: `fleet` when any user copies it between
    /// engines (a copy carries no registry digest), else `always` when any user asks for it,
    /// else `missing`, and `never` only when every user says `never`.
    pub fn images(&self) -> BTreeMap<&str, PullPolicy> {
        let rank = |p: PullPolicy| match p {
            PullPolicy::Never => 0,
            PullPolicy::Missing => 1,
            PullPolicy::Always => 2,
            PullPolicy::Fleet => 3,
        };
        let mut out: BTreeMap<&str, PullPolicy> = BTreeMap::new();
        let users = self
            .services
            .values()
            .map(|s| (s.image.as_str(), s.pull))
            .chain(
                self.plug_classes
                    .values()
                    .map(|c| (c.image.as_str(), c.pull)),
            );
        for (image, pull) in users {
            let e = out.entry(image).or_insert(pull);
            if rank(pull) > rank(*e) {
                *e = pull;
            }
        }
        out
    }
}

/// Kind `Fleet`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSpec {
    /// Fleet name: scopes ownership labels (`fleet.fleet`).
    pub name: String,
    /// Period of the full reconcile in `run`.
    pub resync: Duration,
    /// Unreachable this long ⇒ NotReady, plugs re-placed.
    pub node_lost_after: Duration,
    /// Controller API address.
    pub api_listen: SocketAddr,
    /// Bearer token file of the API.
    pub api_token_file: Option<PathBuf>,
    /// The fleet's network.
    pub network: NetworkSettings,
    /// Credentials for private registries, by host (no two alike). Only where to find each
    /// password is kept here; [`crate::registry::Credentials`] reads it when it is needed.
    #[serde(default)]
    pub registries: Vec<RegistrySpec>,
    /// Disk use of a node (its engine's data root filesystem) above which the controller prunes
    /// images nothing uses or keeps; `None`: never.
    #[serde(default)]
    pub disk_high_watermark: Option<Percent>,
    /// How long the event log keeps an event.
    #[serde(default = "default_event_retention")]
    pub event_retention: Duration,
}

fn default_event_retention() -> Duration {
    DEFAULT_EVENT_RETENTION
}

/// One entry of `Fleet.spec.registries`: the user and where its password is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySpec {
    /// Registry host as image references name it (`ghcr.io`, `10.0.0.5:5000`, `docker.io`):
    /// no scheme, no path.
    pub host: String,
    /// User name sent to the registry.
    pub username: String,
    /// Where the password is read from (never the password itself).
    pub password: PasswordSource,
}

/// Where a registry password comes from. Read on the operator's machine when credentials are
/// loaded (an apply, the controller), never while validating: the file may exist only there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordSource {
    /// `passwordFile`: one trailing newline is not part of the password. A relative path in a
    /// manifest is resolved against the manifest file's directory; a leading `~/` is kept and
    /// expanded to `$HOME` when the file is read.
    File(PathBuf),
    /// `passwordEnv`: the name of an environment variable of the process that loads
    /// credentials.
    Env(String),
}

/// `pull` of a Service or PlugClass: when a node fetches the image (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull when the node lacks the image (default); an image the node has is used as it is.
    #[default]
    Missing,
    /// Resolve the tag and pull on every apply that touches the service or class, so a moved
    /// tag is followed.
    Always,
    /// Never pull: only what the node already has; a node without the image is an error
    /// naming the node and the image.
    Never,
    /// As `missing`, and when the registry cannot serve a node, copy the image to it from
    /// another node or from the operator's engine (`fleetctl image push`).
    Fleet,
}

impl PullPolicy {
    /// Every policy, in the order the manifests document them.
    pub const ALL: [PullPolicy; 4] = [
        PullPolicy::Missing,
        PullPolicy::Always,
        PullPolicy::Never,
        PullPolicy::Fleet,
    ];

    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
            PullPolicy::Fleet => "fleet",
        }
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// `Fleet.spec.network.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Bridge on a one-node fleet, overlay on 2+ nodes.
    #[default]
    Auto,
    /// One user-defined bridge per node.
    Bridge,
    /// One Swarm attachable overlay across the nodes.
    Overlay,
}

impl NetworkMode {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Auto => "auto",
            NetworkMode::Bridge => "bridge",
            NetworkMode::Overlay => "overlay",
        }
    }
}

/// `Fleet.spec.network`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkSettings {
    /// Mode as declared.
    pub mode: NetworkMode,
    /// IPv4 subnet (CIDR); `None` = the engine's choice.
    pub subnet: Option<String>,
    /// IPsec on the overlay.
    pub encrypted: bool,
    /// MTU; `None` = the engine's.
    pub mtu: Option<u32>,
}

impl NetworkSettings {
    /// The driver this fleet's network uses over `nodes`. `auto`: an overlay from two nodes on,
    /// when every node has an address the others can reach (`address` or `ssh.host`); nodes
    /// reached through a local socket without `address` (one machine, as in development) get a
    /// bridge each.
    pub fn driver(&self, nodes: &BTreeMap<String, NodeSpec>) -> NetworkDriver {
        match self.mode {
            NetworkMode::Bridge => NetworkDriver::Bridge,
            NetworkMode::Overlay => NetworkDriver::Overlay,
            NetworkMode::Auto
                if nodes.len() >= 2 && nodes.values().all(|n| n.peer_address().is_some()) =>
            {
                NetworkDriver::Overlay
            }
            NetworkMode::Auto => NetworkDriver::Bridge,
        }
    }
}

/// The engine-side name of fleet `fleet`'s network with `driver`: `<fleet>` for the overlay,
/// `<fleet>-bridge` for the per-node bridge. Two names, so a fleet that grows from one node to
/// two moves its containers from one network to the other without two networks of one name on
/// a node (which the engine would refuse to attach by name).
///
/// A fleet named like one of the engine's predefined networks (`default` — the name of a fleet
/// without a Fleet document —, `bridge`, `host`, `none`, `ingress`) gets `<fleet>-overlay`: the
/// engine refuses to create a network of those names.
pub fn network_name(fleet: &str, driver: NetworkDriver) -> String {
    const PREDEFINED: [&str; 5] = ["default", "bridge", "host", "none", "ingress"];
    match driver {
        NetworkDriver::Overlay if PREDEFINED.contains(&fleet) => format!("{fleet}-overlay"),
        NetworkDriver::Overlay => fleet.to_string(),
        NetworkDriver::Bridge => format!("{fleet}-bridge"),
    }
}

/// `Service.spec.network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceNetwork {
    /// The fleet's network (default).
    #[default]
    Fleet,
    /// The node's network stack.
    Host,
    /// No network.
    None,
}

/// Default fleet name when no `Fleet` document exists.
pub const DEFAULT_FLEET_NAME: &str = "default";
/// Default `resync`.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// Default `eventRetention`: 90 days.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default `nodeLostAfter`.
pub const DEFAULT_NODE_LOST_AFTER: Duration = Duration::from_secs(60);
/// Default `api.listen`: loopback only.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7411";
/// Default Docker socket path on a node.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            name: DEFAULT_FLEET_NAME.to_string(),
            resync: DEFAULT_RESYNC,
            node_lost_after: DEFAULT_NODE_LOST_AFTER,
            api_listen: DEFAULT_API_LISTEN.parse().expect("valid default address"),
            api_token_file: None,
            network: NetworkSettings::default(),
            registries: Vec::new(),
            disk_high_watermark: None,
            event_retention: DEFAULT_EVENT_RETENTION,
        }
    }
}

/// Kind `Node`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Labels, matched by selectors.
    pub labels: Labels,
    /// SSH settings; `None` = local socket.
    pub ssh: Option<SshSpec>,
    /// Docker socket path on the node.
    pub docker_socket: String,
    /// The engine the manifests declare behind the socket (`spec.docker.engine`, default
    /// Docker). What the node answers with is what counts once it answers; this is what is
    /// assumed until then (and compared with it: a difference is a warning).
    #[serde(default)]
    pub engine: EngineKind,
    /// Declared CPUs; `None` = read from the engine.
    pub capacity_cpus: Option<MilliCpus>,
    /// Declared memory; `None` = read from the engine.
    pub capacity_memory: Option<Bytes>,
    /// Declared disk.
    pub capacity_disk: Option<Bytes>,
    /// CPUs kept for the OS.
    pub reserved_cpus: MilliCpus,
    /// Memory kept for the OS.
    pub reserved_memory: Bytes,
    /// Where the other nodes reach this one (an IP address); `None` = `ssh.host`.
    pub address: Option<String>,
}

impl NodeSpec {
    /// Allocatable memory (capacity − reserved) when the capacity is declared.
    pub fn allocatable_memory(&self) -> Option<Bytes> {
        self.capacity_memory
            .map(|c| Bytes(c.0.saturating_sub(self.reserved_memory.0)))
    }

    /// Allocatable CPUs (capacity − reserved) when the capacity is declared.
    pub fn allocatable_cpus(&self) -> Option<MilliCpus> {
        self.capacity_cpus
            .map(|c| MilliCpus(c.0.saturating_sub(self.reserved_cpus.0)))
    }

    /// Allocatable memory: the declared capacity, else `engine` (what the engine reports),
    /// minus reserved; `None` when neither is known. The one formula of the scheduler,
    /// `capacity`, `get nodes` and the API.
    pub fn allocatable_memory_or(&self, engine: Option<Bytes>) -> Option<Bytes> {
        self.capacity_memory
            .or(engine)
            .map(|c| Bytes(c.0.saturating_sub(self.reserved_memory.0)))
    }

    /// Allocatable CPUs: the declared capacity, else `engine`, minus reserved.
    pub fn allocatable_cpus_or(&self, engine: Option<MilliCpus>) -> Option<MilliCpus> {
        self.capacity_cpus
            .or(engine)
            .map(|c| MilliCpus(c.0.saturating_sub(self.reserved_cpus.0)))
    }

    /// The address the other nodes reach this one at: `address`, else `ssh.host`; `None` for a
    /// node reached through a local socket without an `address`.
    pub fn peer_address(&self) -> Option<&str> {
        self.address
            .as_deref()
            .or(self.ssh.as_ref().map(|s| s.host.as_str()))
    }

    /// Whether every `key: value` of `selector` is among the node's labels.
    pub fn matches(&self, selector: &Labels) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|x| x == v))
    }
}

/// `spec.ssh` of a node, as written (paths not yet expanded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SshSpec {
    /// Address or host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user; `None` = the current user.
    pub user: Option<String>,
    /// Private key file; `None` = agent, then ~/.ssh/id_ed25519.
    pub identity_file: Option<String>,
    /// Pinned host key.
    pub host_key: Option<String>,
    /// known_hosts file; `None` = ~/.ssh/known_hosts.
    pub known_hosts_file: Option<String>,
}

/// Where a service's replicas may run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Placement {
    /// Allowed nodes by name; `None` = any.
    pub nodes: Option<BTreeSet<String>>,
    /// Labels a node must have.
    pub node_selector: Labels,
    /// Cap of replicas per node.
    pub max_per_node: Option<u32>,
}

impl Placement {
    /// Whether `node` is allowed by both the node list and the selector.
    pub fn allows(&self, node: &NodeSpec) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.contains(&node.name))
            && node.matches(&self.node_selector)
    }
}

/// Resource limits as declared (typed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceSpec {
    /// Hard memory limit.
    pub memory: Bytes,
    /// Soft limit.
    pub memory_reservation: Option<Bytes>,
    /// CPU quota.
    pub cpus: Option<MilliCpus>,
    /// CPU weight.
    pub cpu_shares: Option<u64>,
    /// Allowed CPUs.
    pub cpuset: Option<String>,
}

impl ResourceSpec {
    /// The most CPU time a container can use: `cpus` when set, else the number of CPUs in
    /// `cpuset` (a container pinned to two cores uses at most two), else `None` (unbounded).
    pub fn cpu_ceiling(&self) -> Option<MilliCpus> {
        self.cpus.or_else(|| {
            let set = self.cpuset.as_deref()?;
            let mut n = 0u64;
            for part in set.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            Some(MilliCpus(n * 1000))
        })
    }

    /// The engine-level resources.
    pub fn to_container(&self) -> crate::container::Resources {
        crate::container::Resources {
            memory: self.memory.0,
            memory_reservation: self.memory_reservation.map(|b| b.0),
            nano_cpus: self.cpus.map(MilliCpus::nanos),
            cpu_shares: self.cpu_shares,
            cpuset: self.cpuset.clone(),
        }
    }
}

/// How a service's containers are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Start the new container, then stop the old one.
    StartFirst,
    /// Stop the old container, then start the new one.
    StopFirst,
}

impl UpdateOrder {
    /// As written in manifests: `start-first` / `stop-first`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StartFirst => "start-first",
            UpdateOrder::StopFirst => "stop-first",
        }
    }
}

/// Kind `Service`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Labels (metadata).
    pub labels: Labels,
    /// Image reference.
    pub image: String,
    /// When nodes pull the image.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Number of replicas.
    pub replicas: u32,
    /// Where they may run.
    pub placement: Placement,
    /// Limits.
    pub resources: ResourceSpec,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Environment.
    pub env: Labels,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Volumes and binds.
    pub volumes: Vec<String>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Healthcheck.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Replacement order.
    pub update_order: UpdateOrder,
    /// Stop grace period.
    pub stop_grace_period: Option<Duration>,
    /// Which network its containers join.
    #[serde(default)]
    pub network: ServiceNetwork,
    /// Extra DNS names on the fleet's network (the service name always resolves).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Secrets and config files its containers get (SPEC §12).
    #[serde(default)]
    pub files: FileSpecs,
    /// Log rotation, ulimits, sysctls, user, working directory, read-only root,
    /// capabilities and stop signal (SPEC §13).
    #[serde(default, skip_serializing_if = "crate::container::Knobs::is_empty")]
    pub knobs: crate::container::Knobs,
    /// Replica count driven by load (SPEC §14); `replicas` is then the starting count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleSpec>,
}

/// `Service.spec.autoscale`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoscaleSpec {
    /// Fewest replicas (≥ 1).
    pub min: u32,
    /// Most replicas (≥ min).
    pub max: u32,
    /// CPU rule: share of the replicas' CPU limit (of one CPU without one).
    pub cpu: Option<LoadRule>,
    /// Memory rule: share of the replicas' memory limit.
    pub memory: Option<LoadRule>,
    /// No scale within this long of the previous one.
    pub cooldown: Duration,
}

impl AutoscaleSpec {
    /// Default `cooldown`.
    pub const COOLDOWN: Duration = Duration::from_secs(180);

    /// The longest time any rule looks back: how much history a window must keep.
    pub fn longest_window(&self) -> Duration {
        [&self.cpu, &self.memory]
            .into_iter()
            .flatten()
            .map(|r| r.for_.max(r.below_for))
            .max()
            .unwrap_or_default()
    }
}

/// One autoscale rule, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRule {
    /// Add a replica when the mean use stays above this for `for_`.
    pub above: Percent,
    /// How long `above` must hold.
    #[serde(rename = "for")]
    pub for_: Duration,
    /// Remove a replica when the mean use stays below this for `below_for` (every rule
    /// agreeing); `None`: this rule agrees when its use stayed at or under `above`.
    pub below: Option<Percent>,
    /// How long `below` must hold.
    pub below_for: Duration,
}

impl LoadRule {
    /// Default `for`.
    pub const FOR: Duration = Duration::from_secs(300);
    /// Default `belowFor`.
    pub const BELOW_FOR: Duration = Duration::from_secs(900);
}

/// `PlacementPolicy.spec.cpuHighWatermark`, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotRule {
    /// Share of the node's CPUs in use above which it becomes hot.
    pub above: Percent,
    /// How long it must stay above to become hot, and below to cool.
    #[serde(rename = "for")]
    pub for_: Duration,
}

/// Kind `Secret`: where its value is read, on the machine that runs fleetctl (the CLI's or
/// the controller's). The value itself is never in a manifest, a spec or the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    /// Secret name (as `{secret: NAME}` and `secrets[].name` refer to it).
    pub name: String,
    /// Where the value comes from.
    pub source: SecretSource,
}

/// Where a secret's value is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretSource {
    /// `file`: the file's bytes (one trailing newline is not part of the value). A relative
    /// path is resolved against the directory of the manifest file that names it; a leading
    /// `~/` is kept and expanded to `$HOME` when read.
    File(PathBuf),
    /// `env`: an environment variable of the process that reads it.
    Env(String),
    /// `command`: the standard output of a program run without a shell (one trailing newline
    /// is not part of the value); a non-zero exit is an error naming the secret and the status.
    Command(Vec<String>),
}

/// What a service's or plug class's containers get from secrets and config files.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FileSpecs {
    /// Environment variables whose value is a secret: variable → secret name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Secrets placed as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretMount>,
    /// Config files placed as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ConfigMount>,
}

impl FileSpecs {
    /// Whether there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.secret_env.is_empty() && self.secrets.is_empty() && self.configs.is_empty()
    }

    /// Every secret these refer to (from the environment or as files), each once, sorted.
    pub fn secret_names(&self) -> BTreeSet<&str> {
        self.secret_env
            .values()
            .map(String::as_str)
            .chain(self.secrets.iter().map(|s| s.name.as_str()))
            .collect()
    }
}

/// One `secrets:` entry: the secret `name` as a file at `target` in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    /// Secret name.
    pub name: String,
    /// Absolute path in the container (default `/run/secrets/<name>`).
    pub target: String,
    /// File mode (default `0400`).
    pub mode: u32,
    /// Owner (default 0).
    pub uid: u32,
    /// Group (default 0).
    pub gid: u32,
}

/// One `configs:` entry: a file of the manifest directory at `target` in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMount {
    /// The source as the manifest writes it (`./conf/nginx.conf`): how plans and events name it.
    pub name: String,
    /// The file read: the source resolved against the manifest file's directory.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    /// File mode (default `0444`).
    pub mode: u32,
    /// Owner (default 0).
    pub uid: u32,
    /// Group (default 0).
    pub gid: u32,
    /// The file's content, read when the manifests are loaded (a file that cannot be read is a
    /// validation error). Not serialized: outputs show `sha256`.
    #[serde(skip)]
    pub content: Vec<u8>,
    /// SHA-256 of `content`, hex.
    pub sha256: String,
}

/// An inclusive host port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Whether `port` is inside.
    pub fn contains(self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Kind `PlugClass`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlugClassSpec {
    /// Class name.
    pub name: String,
    /// Labels (metadata).
    pub labels: Labels,
    /// Image reference.
    pub image: String,
    /// When nodes pull the image.
    #[serde(default)]
    pub pull: PullPolicy,
    /// Limits of each instance.
    pub resources: ResourceSpec,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Container port.
    pub port: u16,
    /// Host port range leased from; `None`: plugs publish no port and are reached on the
    /// fleet's network only, at `plug-<id>:<port>`.
    pub host_ports: Option<PortRange>,
    /// Environment.
    pub env: Labels,
    /// Healthcheck.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Idle instances are stopped after this; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Policy name; `None` = no policy (no cap beyond capacity, one tier).
    pub policy: Option<String>,
    /// Secrets and config files its instances get (SPEC §12).
    #[serde(default)]
    pub files: FileSpecs,
    /// Log rotation, ulimits, sysctls, user, working directory, read-only root,
    /// capabilities and stop signal (SPEC §13).
    #[serde(default, skip_serializing_if = "crate::container::Knobs::is_empty")]
    pub knobs: crate::container::Knobs,
}

/// `pack` or `spread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Fill the fullest node that fits first.
    #[default]
    Pack,
    /// Least loaded node first.
    Spread,
}

/// One tier of a placement policy: nodes matching both the list (when given) and the selector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tier {
    /// Node names; `None` = any.
    pub nodes: Option<BTreeSet<String>>,
    /// Labels a node must have.
    pub node_selector: Labels,
}

impl Tier {
    /// Whether `node` belongs to this tier.
    pub fn contains(&self, node: &NodeSpec) -> bool {
        self.nodes.as_ref().is_none_or(|n| n.contains(&node.name))
            && node.matches(&self.node_selector)
    }
}

/// Kind `PlacementPolicy`, with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySpec {
    /// Policy name.
    pub name: String,
    /// Per-node cap over all plugs; `None` = no cap beyond capacity.
    pub max_plugs_per_node: Option<u32>,
    /// Watermark of allocatable memory.
    pub memory_high_watermark: Percent,
    /// Tiers in order (at least one).
    pub tiers: Vec<Tier>,
    /// Scoring within a tier.
    pub spread: Spread,
    /// Evict idle plugs under memory pressure.
    pub evict_idle_on_pressure: bool,
    /// When a node is too hot for new plugs (SPEC §14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_high_watermark: Option<HotRule>,
}

impl PolicySpec {
    /// The policy a plug class without one gets when no `default` policy exists: no cap beyond
    /// capacity, full memory, one tier of every node.
    pub fn implicit() -> Self {
        PolicySpec {
            name: "default".to_string(),
            max_plugs_per_node: None,
            memory_high_watermark: Percent::FULL,
            tiers: vec![Tier::default()],
            spread: Spread::Pack,
            evict_idle_on_pressure: false,
            cpu_high_watermark: None,
        }
    }
}

impl DesiredFleet {
    /// The policy that governs `class`: its named policy, else the implicit one.
    pub fn policy_for(&self, class: &PlugClassSpec) -> PolicySpec {
        class
            .policy
            .as_ref()
            .and_then(|p| self.policies.get(p))
            .cloned()
            .unwrap_or_else(PolicySpec::implicit)
    }

    /// The driver of this fleet's network (SPEC §10: `auto` is overlay from two nodes).
    /// See [`NetworkSettings::driver`].
    pub fn network_driver(&self) -> NetworkDriver {
        self.fleet.network.driver(&self.nodes)
    }

    /// The engine-side name of this fleet's network.
    pub fn network_name(&self) -> String {
        network_name(&self.fleet.name, self.network_driver())
    }

    /// The driver of this fleet's network on a node whose engine is `engine`: the fleet's,
    /// except where the fleet's is an overlay and the engine cannot join a swarm (Podman): a
    /// bridge of that node's own.
    pub fn network_driver_on(&self, engine: EngineKind) -> NetworkDriver {
        match self.network_driver() {
            NetworkDriver::Overlay if !engine.joins_swarm() => NetworkDriver::Bridge,
            d => d,
        }
    }

    /// The engine-side name of this fleet's network on a node whose engine is `engine` (see
    /// [`DesiredFleet::network_driver_on`]).
    pub fn network_name_on(&self, engine: EngineKind) -> String {
        network_name(&self.fleet.name, self.network_driver_on(engine))
    }

    /// Nodes a service may run on, in name order.
    pub fn allowed_nodes<'a>(
        &'a self,
        service: &'a ServiceSpec,
    ) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.nodes.values().filter(|n| service.placement.allows(n))
    }
}

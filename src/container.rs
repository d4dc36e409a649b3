//! The container model fleetctl speaks, independent of any Docker client library.
//!
//! [`ContainerSpec`] is what fleetctl wants to exist on a node; [`ContainerRecord`] is what a
//! node reported. Both are plain values: the planner (pure) compares them, and `transport`
//! translates them to and from Docker Engine API calls. Nothing here does I/O.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Label keys of SPEC §3. Every container fleetctl creates carries them; anything without
/// `fleet.managed-by=fleetctl` and this fleet's `fleet.fleet` is never touched.
pub mod labels {
    /// Always `fleetctl`.
    pub const MANAGED_BY: &str = "fleet.managed-by";
    /// The value of [`MANAGED_BY`].
    pub const MANAGER: &str = "fleetctl";
    /// Fleet name.
    pub const FLEET: &str = "fleet.fleet";
    /// Node name the container was placed on.
    pub const NODE: &str = "fleet.node";
    /// `service` or `plug`.
    pub const KIND: &str = "fleet.kind";
    /// Service name (services only).
    pub const SERVICE: &str = "fleet.service";
    /// Replica index of a service container (fleetctl's own addition; services only).
    pub const REPLICA: &str = "fleet.replica";
    /// Plug id (plugs only).
    pub const PLUG: &str = "fleet.plug";
    /// Plug class (plugs only).
    pub const PLUG_CLASS: &str = "fleet.plug-class";
    /// Plug owner (plugs only).
    pub const OWNER: &str = "fleet.owner";
    /// Hash of the canonical container spec without the in-place-updatable fields.
    pub const SPEC_HASH: &str = "fleet.spec-hash";
    /// `TAG@DIGEST`: the image tag of the manifests and the registry digest it was pinned to
    /// (SPEC §11); absent when the container runs by tag.
    pub const IMAGE_PIN: &str = "fleet.image-pin";
    /// The keyed digests of the secrets a container gets (SPEC §12): `name=digest,…`. In the
    /// spec hash, so a changed secret replaces exactly the containers that use it; keyed, so
    /// a short password cannot be guessed from it.
    pub const SECRETS: &str = "fleet.secrets";
    /// The digests of the config files a container gets: `source=sha256,…`.
    pub const CONFIGS: &str = "fleet.configs";
    /// Which environment variables hold which secret: `VAR=secret,…`. An inspect's values of
    /// these variables are dropped when read back.
    pub const SECRET_ENV: &str = "fleet.secret-env";
}

/// Docker restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (`no`).
    #[default]
    No,
    /// Always restart (`always`).
    Always,
    /// Restart unless stopped by the operator (`unless-stopped`).
    UnlessStopped,
    /// Restart when the process exits non-zero (`on-failure`).
    OnFailure,
}

impl RestartPolicy {
    /// The manifest / Docker spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }

    /// Parses the manifest / Docker spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure,
            _ => return None,
        })
    }
}

/// Resource limits of one container: exactly the fields the engine can change in place
/// (SPEC §3), so they are excluded from the spec hash and compared field by field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Resources {
    /// Hard memory limit in bytes (`HostConfig.Memory`).
    pub memory: u64,
    /// Soft limit in bytes (`HostConfig.MemoryReservation`).
    pub memory_reservation: Option<u64>,
    /// CPU quota in billionths of a CPU (`HostConfig.NanoCpus`).
    pub nano_cpus: Option<u64>,
    /// Relative CPU weight (`HostConfig.CpuShares`).
    pub cpu_shares: Option<u64>,
    /// Allowed CPUs, e.g. `2-3` (`HostConfig.CpusetCpus`).
    pub cpuset: Option<String>,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port: `[host_ip:]host_port:container_port[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// Address on the node to bind; `None` binds every address.
    pub host_ip: Option<String>,
    /// Port on the node.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
}

/// A Docker healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthcheckSpec {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Option<Duration>,
    /// Time one check may take.
    pub timeout: Option<Duration>,
    /// Consecutive failures before the container is unhealthy.
    pub retries: Option<u32>,
    /// Grace period after start during which failures do not count.
    pub start_period: Option<Duration>,
}

/// Everything fleetctl asks the engine to create, in engine-neutral terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name (deterministic: see `plan::names`).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Command (`Cmd`); `None` keeps the image's default.
    pub command: Option<Vec<String>>,
    /// Environment, sorted by key.
    pub env: BTreeMap<String, String>,
    /// Labels, including the ownership labels of SPEC §3.
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Binds and named volumes, Docker's `src:dst[:mode]` form.
    pub volumes: Vec<String>,
    /// Restart policy (updatable in place).
    pub restart: RestartPolicy,
    /// Resource limits (updatable in place).
    pub resources: Resources,
    /// Healthcheck, when declared.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Time between SIGTERM and SIGKILL on stop.
    pub stop_grace_period: Option<Duration>,
    /// Which network the container joins, and the names it answers to there (SPEC §10).
    #[serde(default)]
    pub network: NetworkAttachment,
    /// When the node gets the image from its registry. Not part of the spec hash: a new
    /// policy changes how later containers get their image, not the running ones.
    #[serde(default)]
    pub pull: crate::manifest::PullPolicy,
    /// Environment variables whose value is a secret (SPEC §12), apart from `env` so that
    /// nothing that shows a spec shows them. In the spec hash through the
    /// [`labels::SECRETS`] and [`labels::SECRET_ENV`] labels (keyed digests), never by value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// Files placed into the container before it starts (secrets and config files), through
    /// the engine's archive API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ContainerFile>,
    /// Per-container engine settings (log rotation, ulimits, sysctls, user, working directory,
    /// read-only root, capabilities, stop signal). In the spec hash when any is set: the
    /// engine cannot change them in place.
    #[serde(default, skip_serializing_if = "Knobs::is_empty")]
    pub knobs: Knobs,
}

/// One ulimit: soft and hard limits (`-1` is unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Per-container engine settings of SPEC §13, none of which the engine can change in place.
/// Every field is left out of serializations when unset, so a spec that sets none hashes as
/// one made before they existed, and setting one does not change how the others hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Knobs {
    /// json-file driver: largest log file in bytes before it is rotated (`max-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<u64>,
    /// json-file driver: log files kept (`max-file`); needs `log_max_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_files: Option<u32>,
    /// Ulimits by name (`nofile`, `nproc`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Namespaced sysctls.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// `uid[:gid]` or a user name; `None` keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory; `None` keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Read-only root filesystem.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Capabilities added, `CAP_`-prefixed, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped, `CAP_`-prefixed (or `ALL`), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Signal that stops the container (`SIGTERM`, ...); `None` keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

impl Knobs {
    /// Whether nothing is set (the engine's defaults everywhere).
    pub fn is_empty(&self) -> bool {
        *self == Knobs::default()
    }
}

/// A secret's value, held in memory only for the call that needs it. `Debug` and
/// serialization show nothing of it; equality compares the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(std::sync::Arc<Vec<u8>>);

impl SecretValue {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(std::sync::Arc::new(bytes))
    }

    /// The bytes, for the engine call that delivers them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// An environment variable's secret: its name, and its value for the create call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Secret name: how outputs show it (`<secret NAME>`).
    pub secret: String,
    /// The value; empty in a spec read back from a node or a store.
    #[serde(skip)]
    pub value: SecretValue,
}

/// Where a [`ContainerFile`] comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSource {
    /// A secret, by name.
    Secret(String),
    /// A config file, by its source as the manifest writes it.
    Config(String),
}

impl std::fmt::Display for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileSource::Secret(n) => write!(f, "secret {n}"),
            FileSource::Config(n) => write!(f, "config {n}"),
        }
    }
}

/// A file placed into a container before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerFile {
    /// Absolute path in the container.
    pub target: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// What it holds.
    pub source: FileSource,
    /// Digest of the content: a keyed digest for a secret, SHA-256 for a config (hex, short).
    pub digest: String,
    /// The content; empty in a spec read back from a node or a store.
    #[serde(skip)]
    pub content: SecretValue,
}

impl ContainerSpec {
    /// The image reference the engine runs: `repository@digest` when the tag was pinned to a
    /// digest ([`labels::IMAGE_PIN`]), else the image as the manifest names it.
    pub fn run_image(&self) -> String {
        match self.pinned_digest() {
            Some(digest) => pinned(&self.image, digest),
            None => self.image.clone(),
        }
    }

    /// The digest this spec's image is pinned to, if any.
    pub fn pinned_digest(&self) -> Option<&str> {
        pin_digest(self.labels.get(labels::IMAGE_PIN)?, &self.image)
    }
}

/// The digest of a [`labels::IMAGE_PIN`] value when it pins `image` (the tag it was made
/// for); `None` for another tag.
pub fn pin_digest<'a>(pin: &'a str, image: &str) -> Option<&'a str> {
    pin.strip_prefix(image)?.strip_prefix('@')
}

/// `image` (`repository[:tag]`) pinned to `digest`: `repository@digest`.
pub fn pinned(image: &str, digest: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last_slash = repo.rfind('/').map_or(0, |i| i + 1);
    let repo = match repo[last_slash..].rfind(':') {
        Some(i) => &repo[..last_slash + i],
        None => repo,
    };
    format!("{repo}@{digest}")
}

/// How a container is attached to a network (SPEC §10). Part of the spec hash: a container on
/// another network than its spec names is replaced, which is how containers made before fleet
/// networks existed move onto them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkAttachment {
    /// The engine's default bridge (no name resolution between containers): what containers
    /// made before fleet networks existed use, and what an inspect reports for them.
    #[default]
    Default,
    /// The node's network stack (`network: host`).
    Host,
    /// No network at all (`network: none`).
    None,
    /// The fleet's network (`network: fleet`).
    Fleet {
        /// Network name on the engine.
        network: String,
        /// DNS names the container answers to on it: the service name and its aliases, or
        /// `plug-<id>`.
        aliases: Vec<String>,
    },
}

impl NetworkAttachment {
    /// The network's name as `docker inspect` shows it: `default`, `host`, `none` or the
    /// fleet network's name.
    pub fn name(&self) -> &str {
        match self {
            NetworkAttachment::Default => "default",
            NetworkAttachment::Host => "host",
            NetworkAttachment::None => "none",
            NetworkAttachment::Fleet { network, .. } => network,
        }
    }
}

/// The engine's network drivers fleetctl creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    /// A user-defined bridge on one node: names resolve on that node.
    Bridge,
    /// A Swarm attachable overlay: one network across the swarm's nodes.
    Overlay,
}

impl NetworkDriver {
    /// The engine's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Bridge => "bridge",
            NetworkDriver::Overlay => "overlay",
        }
    }
}

/// A network fleetctl asks an engine to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Network name.
    pub name: String,
    /// Driver (overlay networks are always created attachable).
    pub driver: NetworkDriver,
    /// Labels, including `fleet.managed-by` and `fleet.fleet`.
    pub labels: BTreeMap<String, String>,
    /// IPv4 subnet in CIDR form; `None` lets the engine choose.
    pub subnet: Option<String>,
    /// MTU (`com.docker.network.driver.mtu`); `None` = the engine's.
    pub mtu: Option<u32>,
    /// IPsec between nodes (overlay only). Sent as the `encrypted` option only when true: the
    /// engine turns encryption on when the option is present, whatever its value.
    pub encrypted: bool,
}

/// A network as an engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkRecord {
    /// Network id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver as the engine spells it (`bridge`, `overlay`, ...).
    pub driver: String,
    /// `local` or `swarm`.
    pub scope: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// First IPv4 subnet of its IPAM configuration.
    pub subnet: Option<String>,
    /// Driver options (`encrypted`, `com.docker.network.driver.mtu`, ...).
    pub options: BTreeMap<String, String>,
    /// Containers attached on this node (name → IPv4 address in CIDR form), filled by
    /// [`crate::transport::NodeRuntime::inspect_network`]; an observation fills the names from
    /// the container listing, without addresses (empty strings).
    pub containers: BTreeMap<String, String>,
}

impl NetworkRecord {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A node's own view of its swarm membership (`Swarm.LocalNodeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SwarmState {
    /// Not in a swarm.
    #[default]
    Inactive,
    /// Joining.
    Pending,
    /// A member.
    Active,
    /// Membership failed (see [`SwarmInfo::error`]).
    Error,
    /// The swarm is locked (autolock) and must be unlocked by hand.
    Locked,
}

impl SwarmState {
    /// Parses Docker's `LocalNodeState`; unknown values are `Error`.
    pub fn parse(s: &str) -> Self {
        match s {
            "" | "inactive" => SwarmState::Inactive,
            "pending" => SwarmState::Pending,
            "active" => SwarmState::Active,
            "locked" => SwarmState::Locked,
            _ => SwarmState::Error,
        }
    }

    /// Lower-case word for output.
    pub fn as_str(self) -> &'static str {
        match self {
            SwarmState::Inactive => "inactive",
            SwarmState::Pending => "pending",
            SwarmState::Active => "active",
            SwarmState::Error => "error",
            SwarmState::Locked => "locked",
        }
    }
}

/// What `GET /info` says about the node's swarm membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SwarmInfo {
    /// Membership state.
    pub state: SwarmState,
    /// This node's swarm node id (empty when inactive).
    pub node_id: String,
    /// The address this node advertises to the swarm.
    pub node_addr: String,
    /// Whether this node is a manager that can act on the cluster (`ControlAvailable`).
    pub manager: bool,
    /// Cluster id, when a manager reports it.
    pub cluster_id: Option<String>,
    /// The engine's error text for a failed membership.
    pub error: Option<String>,
    /// Managers this node knows (`host:port`).
    pub remote_managers: Vec<String>,
    /// Nodes in the swarm (as a manager reports it; 0 otherwise).
    pub nodes: u32,
    /// Managers in the swarm (as a manager reports it; 0 otherwise).
    pub managers: u32,
}

/// A swarm node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    /// Takes part in the Raft quorum.
    Manager,
    /// Runs containers only.
    Worker,
}

/// One node of the swarm, as a manager lists it (`GET /nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmMember {
    /// Swarm node id.
    pub id: String,
    /// Object version (needed to update it).
    pub version: u64,
    /// The engine's host name.
    pub hostname: String,
    /// Address the node is reached at (`Status.Addr`).
    pub addr: String,
    /// Role.
    pub role: SwarmRole,
    /// `Status.State == ready`.
    pub ready: bool,
    /// For a manager: whether the others reach it (`ManagerStatus.Reachability == reachable`).
    pub reachable: bool,
    /// For a manager: whether it leads the Raft group.
    pub leader: bool,
}

/// Tokens a manager hands out to join its swarm. Secrets: `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokens {
    /// Joins as a worker.
    pub worker: String,
    /// Joins as a manager.
    pub manager: String,
}

/// Credentials for one registry, sent with a pull or a digest lookup as `X-Registry-Auth` and
/// nowhere else: never stored, never printed. `Debug` shows the server and user only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry as the engine names it (`registry.example.com`, `10.0.0.5:5000`,
    /// `https://index.docker.io/v1/` for Docker Hub).
    pub server: String,
    /// User name (empty with an identity token).
    pub username: String,
    /// Password or access token.
    pub password: String,
    /// An OAuth identity (refresh) token from a credential helper, sent instead of a password.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// An image as one node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalImage {
    /// The engine's image id (`sha256:…` of its config).
    pub id: String,
    /// `repository@sha256:…` for every registry manifest it was pulled or pushed as.
    pub repo_digests: Vec<String>,
}

/// A filesystem's size and use, as `df` reports it (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Filesystem {
    /// Size.
    pub size: u64,
    /// Used.
    pub used: u64,
    /// Available to unprivileged users (below `size - used` by the reserved blocks).
    pub available: u64,
}

impl Filesystem {
    /// Share in use as `df` computes it: `used / (used + available)`, in hundredths of a percent,
    /// rounded up (so a watermark is passed as soon as `df` would show it passed).
    pub fn used_hundredths(&self) -> u32 {
        let total = u128::from(self.used) + u128::from(self.available);
        if total == 0 {
            return 0;
        }
        (u128::from(self.used) * 10_000).div_ceil(total).min(10_000) as u32
    }
}

/// One image as the engine's `system df` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageUsage {
    /// The engine's image id (`sha256:…`).
    pub id: String,
    /// `repository:tag` names (none for an untagged image).
    pub tags: Vec<String>,
    /// `repository@sha256:…` names.
    pub digests: Vec<String>,
    /// Size including layers shared with other images, bytes.
    pub size: u64,
    /// Bytes shared with other images (removing this image alone does not free them); 0 when the
    /// engine does not say.
    pub shared_size: u64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Containers (any state, any owner) created from it.
    pub containers: u64,
}

/// What the engine's data root holds, by kind (`GET /system/df`), bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EngineDisk {
    /// Every top-level image.
    pub images: Vec<ImageUsage>,
    /// Image layers, counted once (`LayersSize`).
    pub images_bytes: u64,
    /// Containers' writable layers.
    pub containers_bytes: u64,
    /// Local volumes.
    pub volumes_bytes: u64,
    /// Build cache.
    pub build_cache_bytes: u64,
}

impl EngineDisk {
    /// Everything the engine stores.
    pub fn total(&self) -> u64 {
        self.images_bytes
            .saturating_add(self.containers_bytes)
            .saturating_add(self.volumes_bytes)
            .saturating_add(self.build_cache_bytes)
    }
}

/// How far one pull on one node has come: layers and bytes, as the engine reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layers downloaded and extracted, or already present.
    pub layers_done: usize,
    /// Layers the image has, as far as the engine has said so far.
    pub layers: usize,
    /// Bytes downloaded.
    pub bytes_done: u64,
    /// Bytes to download, as far as known.
    pub bytes: u64,
}

/// Run state of a container as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running (possibly unhealthy).
    Running,
    /// Paused.
    Paused,
    /// Restarting (the engine's restart policy is acting).
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (removal failed).
    Dead,
}

impl RunState {
    /// Parses Docker's `State` string; unknown states map to `Dead`, which makes the planner
    /// replace the container rather than trust it.
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => RunState::Created,
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "restarting" => RunState::Restarting,
            "removing" => RunState::Removing,
            "exited" => RunState::Exited,
            _ => RunState::Dead,
        }
    }
}

/// Health of a container that has a healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Within the start period or before the first check.
    Starting,
    /// Last checks passed.
    Healthy,
    /// Failed `retries` times in a row.
    Unhealthy,
}

/// A container as a node reported it in a listing (one `GET /containers/json?all=1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Full container id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image reference as created.
    pub image: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// Run state.
    pub state: RunState,
    /// Health when the container has a healthcheck (from the status text on API < 1.52).
    pub health: Option<Health>,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Host ports it publishes (any protocol), for the free-port check of placement.
    pub host_ports: Vec<u16>,
    /// Names of the networks it is attached to (`NetworkSettings.Networks`), sorted.
    #[serde(default)]
    pub networks: Vec<String>,
}

impl ContainerRecord {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// Details that only an inspect returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDetails {
    /// The listing fields.
    pub record: ContainerRecord,
    /// The container's configuration as the engine holds it, in fleetctl's terms. Note that
    /// the engine merges image defaults in: `env` holds the image's variables too, and
    /// `command` is the image's when none was given. `resources` and `restart` are what the
    /// engine applies now (after any in-place update), which labels cannot tell.
    pub spec: ContainerSpec,
    /// How often the engine restarted it.
    pub restart_count: u64,
    /// Last exit code (meaningful when exited).
    pub exit_code: i64,
    /// Whether the kernel OOM-killed it last time.
    pub oom_killed: bool,
    /// RFC 3339 start time, as the engine reports it.
    pub started_at: Option<String>,
    /// RFC 3339 finish time, as the engine reports it.
    pub finished_at: Option<String>,
}

/// What the engine says about itself (`GET /info` and `GET /version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Which engine answers: Docker Engine or Podman's Docker-compatible service.
    #[serde(default)]
    pub kind: EngineKind,
    /// Engine version, e.g. `20.10.24` (Podman: its own version, e.g. `4.3.1`).
    pub version: String,
    /// Negotiated API version, e.g. `1.41`.
    pub api_version: String,
    /// CPUs the engine sees.
    pub cpus: u64,
    /// Memory the engine sees, in bytes.
    pub memory: u64,
    /// Containers in any state.
    pub containers: u64,
    /// Containers running.
    pub containers_running: u64,
    /// Operating system the engine reports.
    pub operating_system: String,
    /// Swarm membership.
    #[serde(default)]
    pub swarm: SwarmInfo,
    /// The engine's data root (`DockerRootDir`, e.g. `/var/lib/docker`): images and container
    /// layers live on its filesystem. Empty when the engine does not say.
    #[serde(default)]
    pub docker_root_dir: String,
}

/// The engine behind a node's Docker API socket. Podman serves the same API with
/// differences fleetctl works around (docs/transport.md, "Engines"): no in-place update (a
/// limit change recreates the container), no swarm (its containers get a bridge network of the
/// fleet's name on that node), health probes run by systemd timers that may be missing (fleetctl
/// runs a due probe itself when it reads the container).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Docker Engine (dockerd).
    #[default]
    Docker,
    /// Podman (`podman system service`).
    Podman,
}

impl EngineKind {
    /// `docker` or `podman`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
        }
    }

    /// Whether the engine changes a container's limits and restart policy in place
    /// (`POST /containers/{id}/update`); without it a change is a recreate.
    pub fn updates_in_place(self) -> bool {
        self == EngineKind::Docker
    }

    /// Whether the engine can join a swarm and attach containers to an overlay network.
    pub fn joins_swarm(self) -> bool {
        self == EngineKind::Docker
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container event from the engine's event stream: a hint that something changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineEvent {
    /// Container id.
    pub container_id: String,
    /// `die`, `oom`, `start`, `destroy`, `health_status: unhealthy`, ...
    pub action: String,
    /// The container's labels (actor attributes).
    pub labels: BTreeMap<String, String>,
    /// Event time, nanoseconds since the epoch.
    pub time_nano: i64,
}

impl std::fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokens(<redacted>)")
    }
}

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
    /// Engine version, e.g. `20.10.24`.
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

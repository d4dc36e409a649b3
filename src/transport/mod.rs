//! I/O boundary #1: every conversation with a node's Docker Engine.
//!
//! fleetctl reaches each node over **one SSH connection** (russh), opening one
//! `direct-streamlocal@openssh.com` channel per HTTP connection to the node's Docker socket, with
//! bollard on top; or the local Unix socket for a node without `ssh`. Nothing outside this module
//! imports bollard or russh: the rest of fleetctl talks to a node through [`NodeRuntime`], in the
//! engine-neutral terms of [`crate::container`]. [`fake::FakeRuntime`] implements the same trait
//! in memory for controller-logic tests.

pub mod connector;
pub mod docker;
pub mod error;
pub mod failed;
pub mod fake;
pub mod hostkey;
pub mod logs;
pub mod ssh;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
pub use hyper::body::Bytes;

use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineDisk, EngineEvent, EngineInfo,
    Filesystem, JoinTokens, LocalImage, NetworkRecord, NetworkSpec, PullProgress, RegistryAuth,
    Resources, RestartPolicy, SwarmMember, SwarmRole,
};
pub use docker::{ApiVersion, DockerRuntime};
pub use error::{ErrorKind, RegistryCause, TransportError};
pub use logs::{LogLine, LogLines, LogOptions, LogStream};
pub use ssh::{ConnState, SshSession};

use crate::manifest::NodeSpec;

/// An image archive in the format of `docker save` (a tar of the image's config, layers and
/// tags), as a stream of chunks: [`NodeRuntime::export_image`] yields one,
/// [`NodeRuntime::load_image`] takes one. It is never held whole in memory.
pub type ImageArchive = BoxStream<'static, Result<Bytes, TransportError>>;

/// How to reach one node: the transport-level view of a `Node` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Node name (for errors and logs).
    pub node: String,
    /// SSH settings; `None` means the Docker socket is local to this machine.
    pub ssh: Option<SshEndpoint>,
    /// Path of the Docker socket on the node.
    pub docker_socket: String,
}

impl Endpoint {
    /// The endpoint of a `Node` manifest, with every default resolved: user (`$USER`, else
    /// `root`), known_hosts (`~/.ssh/known_hosts`), and `~` expanded in `identityFile`,
    /// `knownHostsFile` and (for a local node) the socket path.
    pub fn from_node(node: &NodeSpec) -> Endpoint {
        let ssh = node.ssh.as_ref().map(|s| SshEndpoint {
            host: s.host.clone(),
            port: s.port,
            user: s.user.clone().unwrap_or_else(current_user),
            identity_file: s.identity_file.as_deref().map(ssh::expand_tilde),
            host_key: s.host_key.clone(),
            known_hosts_file: s
                .known_hosts_file
                .as_deref()
                .map(ssh::expand_tilde)
                .unwrap_or_else(|| ssh::home_dir().join(".ssh").join("known_hosts")),
        });
        let docker_socket = if ssh.is_some() {
            node.docker_socket.clone()
        } else {
            ssh::expand_tilde(&node.docker_socket)
                .to_string_lossy()
                .into_owned()
        };
        Endpoint {
            node: node.name.clone(),
            ssh,
            docker_socket,
        }
    }
}

/// The login user when a node does not name one: `$USER`, else `root`.
pub fn current_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

/// SSH settings of a node, with every default already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshEndpoint {
    /// Address or host name.
    pub host: String,
    /// Port (22 unless declared).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key; `None` means ssh-agent, then `~/.ssh/id_ed25519`.
    pub identity_file: Option<PathBuf>,
    /// Pinned host key (`ssh-ed25519 AAAA...`); when set, known_hosts is not consulted.
    pub host_key: Option<String>,
    /// known_hosts file consulted when no key is pinned.
    pub known_hosts_file: PathBuf,
}

/// Which containers a listing returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListFilter {
    /// Only containers carrying every one of these `key=value` (or bare `key`) labels.
    pub labels: Vec<String>,
}

/// The in-place update the engine can make to a running container (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUpdate {
    /// New limits (all fields sent).
    pub resources: Resources,
    /// New restart policy.
    pub restart: RestartPolicy,
}

/// How [`NodeRuntime::exec`] runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecOptions {
    /// Allocate a TTY: output comes as one stream (no stdout/stderr split) and the window size
    /// can be set with [`NodeRuntime::exec_resize`].
    pub tty: bool,
    /// Attach the command's stdin to [`ExecSession::input`].
    pub stdin: bool,
    /// The initial window size (columns, rows) of the TTY.
    pub size: Option<(u16, u16)>,
}

/// One chunk of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Standard output (everything, under a TTY).
    Stdout(Bytes),
    /// Standard error (never under a TTY).
    Stderr(Bytes),
}

/// A command started in a container by [`NodeRuntime::exec`].
pub struct ExecSession {
    /// The engine's id of the exec instance: for [`NodeRuntime::exec_resize`] and
    /// [`NodeRuntime::exec_exit_code`].
    pub id: String,
    /// The command's output, until it exits (or the connection drops).
    pub output: BoxStream<'static, Result<ExecOutput, TransportError>>,
    /// The command's stdin (a sink when not attached). Shutting it down closes the stdin.
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One node's Docker Engine, as fleetctl needs it. Implementations: the SSH/bollard runtime and
/// [`fake::FakeRuntime`].
///
/// # Contract
/// - Every error names the node, the operation and (where there is one) the container.
/// - `create_container` with a name that exists fails with [`ErrorKind::Conflict`]; callers treat
///   it as "already there, re-observe", which makes creation idempotent.
/// - `stop_container` and `remove_container` of a container that is gone fail with
///   [`ErrorKind::NotFound`]; callers treat that as done.
/// - Listing is read-only; none of the read methods changes anything on the node.
#[async_trait]
pub trait NodeRuntime: Send + Sync {
    /// Name of the node this runtime reaches.
    fn node(&self) -> &str;
    /// The connection state of the node's SSH connection, when it has one: a controller watches
    /// it to resubscribe [`NodeRuntime::events`] after a reconnect. `None` (the default) for
    /// runtimes without a connection of their own (local socket, fakes).
    fn connection_state(&self) -> Option<tokio::sync::watch::Receiver<ConnState>> {
        None
    }
    /// The engine behind the node's socket, once a call has connected (`None` before; runtimes
    /// that cannot tell say Docker). Free: read from the version negotiation.
    fn engine_kind(&self) -> Option<crate::container::EngineKind> {
        Some(crate::container::EngineKind::Docker)
    }
    /// Engine version, negotiated API version, CPUs and memory.
    async fn engine_info(&self) -> Result<EngineInfo, TransportError>;
    /// Containers in any state matching `filter`.
    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerRecord>, TransportError>;
    /// Full details of one container.
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, TransportError>;
    /// `image` (a tag, an id or `repository@digest`) as the node holds it; `None` when absent.
    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, TransportError>;
    /// Whether `image` is present on the node.
    async fn image_present(&self, image: &str) -> Result<bool, TransportError> {
        Ok(self.local_image(image).await?.is_some())
    }
    /// Pulls `image` (a tag or `repository@digest`) from its registry, sending `auth` as
    /// `X-Registry-Auth` when given, and reporting progress to `progress` as the engine tells
    /// it. A registry's refusal is [`ErrorKind::Registry`] naming the cause and the registry.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), TransportError>;
    /// The digest (`sha256:…`) the registry serves for `image` now: the engine's distribution
    /// inspect, with `auth`. Nothing is downloaded. Errors as [`NodeRuntime::pull_image`].
    async fn resolve_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransportError>;
    /// Creates (does not start) a container; returns its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError>;
    /// Starts a container; starting a running one succeeds.
    async fn start_container(&self, id: &str) -> Result<(), TransportError>;
    /// Stops a container, waiting up to `grace` before the engine kills it.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), TransportError>;
    /// Removes a container, killing it if it runs.
    async fn remove_container(&self, id: &str) -> Result<(), TransportError>;
    /// Changes limits and restart policy of a container in place, without restarting it.
    async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<(), TransportError>;
    /// Current memory use of a running container in bytes (working set: usage minus inactive
    /// file cache), from a one-shot stats call.
    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError>;
    /// Imports `rootfs` (a tar archive) as the image `reference` (`repo:tag`), as
    /// `docker import` does: an image without layers from a registry, made on the node.
    async fn import_image(&self, reference: &str, rootfs: Vec<u8>) -> Result<(), TransportError>;
    /// Streams `image` (a tag, an id or `repository@digest`) out of the node as a `docker save`
    /// archive (`GET /images/{name}/get`). The archive carries the tag it was asked by; one
    /// asked by id or digest carries none.
    ///
    /// # Errors
    /// Before the stream: the node lacks the image ([`ErrorKind::NotFound`]), or the engine
    /// cannot be reached. In the stream: the connection failed or stalled mid-way; the stream
    /// then ends.
    async fn export_image(&self, image: &str) -> Result<ImageArchive, TransportError>;
    /// Loads a `docker save` archive into the node (`POST /images/load`), streaming `archive`
    /// as the request body; `progress` hears the bytes sent so far, a few times a second.
    /// Returns once the engine has loaded it (its tags then name it on the node).
    ///
    /// # Errors
    /// The engine refused the archive (its `errorDetail`, e.g. a truncated tar), `archive`
    /// itself failed (the error is the body's, as the engine never saw a whole archive), the
    /// node could not be reached, or the transfer outlived its deadline.
    async fn load_image(
        &self,
        archive: ImageArchive,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), TransportError>;
    /// What the engine stores, by kind, with every top-level image (`GET /system/df`). The
    /// engine walks its data root for this: seconds on a large node, so it is asked beside the
    /// reconcile, never on its path.
    async fn disk_usage(&self) -> Result<EngineDisk, TransportError>;
    /// Size and use of the filesystem holding `path` on the node: `df -Pk` in an SSH session
    /// (the one place fleetctl runs a command on a node), or this machine's for a node reached
    /// through a local socket.
    ///
    /// # Errors
    /// The node's SSH account may not run commands (a restricted key) or `df` failed: the
    /// message says so; the node is reachable all the same.
    async fn filesystem(&self, path: &str) -> Result<Filesystem, TransportError>;
    /// Removes the image name `reference`, never forcing: a `repository:tag` is untagged and
    /// the image goes with its last name; an id removes an image that has no other name. The
    /// engine refuses ([`ErrorKind::Conflict`]) an image that any container uses.
    async fn remove_image(&self, reference: &str) -> Result<(), TransportError>;
    /// Extracts `tar` into container `id` under the directory `dir` (the engine's archive API;
    /// works on a container that never started, and needs nothing on the node's disk).
    async fn put_archive(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), TransportError>;
    /// A tar archive of `path` in container `id` (a file: one entry named after it).
    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, TransportError>;
    /// Networks carrying every label of `filter` (none: all), without their containers.
    async fn list_networks(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<NetworkRecord>, TransportError>;
    /// One network by name or id with the containers attached on this node; `Ok(None)` when the
    /// node does not know it (a worker sees an overlay only while a container of its uses it).
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkRecord>, TransportError>;
    /// Creates a network (overlay: attachable, on a manager); returns its id. A name that exists
    /// fails with [`ErrorKind::Conflict`].
    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, TransportError>;
    /// Removes a network by id or name; one that is gone fails with [`ErrorKind::NotFound`].
    async fn remove_network(&self, id: &str) -> Result<(), TransportError>;
    /// Makes this engine the first manager of a new swarm advertising `advertise_addr` (an IP
    /// address), the swarm labelled `labels` (whose swarm it is); returns its swarm node id.
    async fn swarm_init(
        &self,
        advertise_addr: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, TransportError>;
    /// The labels of this engine's swarm (a manager only).
    async fn swarm_labels(&self) -> Result<BTreeMap<String, String>, TransportError>;
    /// The join tokens of this engine's swarm (a manager only). They are secrets: never logged.
    async fn swarm_join_tokens(&self) -> Result<JoinTokens, TransportError>;
    /// Joins the swarm of the manager at `remote_addr` (`ip:2377`) with `token`, advertising
    /// `advertise_addr`.
    async fn swarm_join(
        &self,
        advertise_addr: &str,
        remote_addr: &str,
        token: &str,
    ) -> Result<(), TransportError>;
    /// Leaves the swarm (`force`: even as the last manager or without quorum).
    async fn swarm_leave(&self, force: bool) -> Result<(), TransportError>;
    /// The swarm's nodes (a manager only).
    async fn swarm_members(&self) -> Result<Vec<SwarmMember>, TransportError>;
    /// Promotes or demotes member `id` (a manager only; `version` from [`SwarmMember::version`]).
    async fn swarm_set_role(
        &self,
        id: &str,
        version: u64,
        role: SwarmRole,
    ) -> Result<(), TransportError>;
    /// Removes member `id` from the swarm's node list (a manager only; forced: the node may be
    /// gone for good).
    async fn swarm_remove_member(&self, id: &str) -> Result<(), TransportError>;
    /// Runs `cmd` in the running container `id` through the engine's exec API, attached to its
    /// output (and stdin when `opts.stdin`). The command's exit code is
    /// [`NodeRuntime::exec_exit_code`] once `output` has ended.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        opts: ExecOptions,
    ) -> Result<ExecSession, TransportError>;
    /// Sets the window size (columns, rows) of the TTY of exec instance `exec_id`.
    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), TransportError>;
    /// The exit code of exec instance `exec_id`; `None` while it runs. A command the engine
    /// could not run reports 126 (not executable) or 127 (not found), as `docker exec` does.
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, TransportError>;
    /// One reading of a running container's use (a one-shot stats call: the engine answers at
    /// once). CPU comes as counters; [`Usage::cpu_percent_since`] turns two readings into a
    /// share.
    async fn usage(&self, id: &str) -> Result<Usage, TransportError>;
    /// Container events (die, oom, start, destroy, health_status) for containers carrying every
    /// label of `filter`, from now on. The stream ends when the connection drops; the caller
    /// resubscribes (and resyncs, since events may have been missed).
    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError>;
    /// The log of container `id` (any state) as whole lines, oldest first, each with the
    /// engine's timestamp (always asked for: callers merge by it) and its stream; under a TTY
    /// every line is [`LogStream::Stdout`]. With `opts.follow` the stream goes on with new
    /// lines until the container stops (a stopped container's stream ends after its last
    /// line), the caller drops it, or the connection drops.
    ///
    /// # Errors
    /// Before the stream: the node cannot be reached. In the stream (then it ends): the
    /// container is gone ([`ErrorKind::NotFound`]), the connection broke.
    async fn logs(&self, id: &str, opts: LogOptions) -> Result<LogLines, TransportError>;
}

/// One reading of a running container's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time the container has used, ns (cumulative).
    pub cpu_total_ns: u64,
    /// CPU time the host has spent, all CPUs, ns (cumulative; the engine's `system_cpu_usage`).
    pub system_ns: u64,
    /// CPUs online.
    pub online_cpus: u32,
    /// Memory working set (usage minus inactive file cache), bytes.
    pub memory: u64,
}

impl Usage {
    /// The container's CPU between `earlier` and this reading, percent of one CPU, as `docker
    /// stats` computes it (250 is two and a half CPUs busy); `None` when the host's counter
    /// did not move (same reading, or a counter reset).
    pub fn cpu_percent_since(&self, earlier: &Usage) -> Option<f64> {
        let system = self
            .system_ns
            .checked_sub(earlier.system_ns)
            .filter(|d| *d > 0)?;
        let cpu = self.cpu_total_ns.saturating_sub(earlier.cpu_total_ns);
        Some(cpu as f64 / system as f64 * f64::from(self.online_cpus.max(1)) * 100.0)
    }
}

/// The connect timeout for one SSH connection attempt: a VPS that does not answer a TCP
/// handshake and key exchange within this is treated as unreachable for this pass.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A runtime for `endpoint`: over SSH when it has `ssh`, else through the local socket.
///
/// Nothing is dialled here: the first call connects (and negotiates the API version), so a fleet
/// can be "connected" without waiting for its slowest node. Host-key, auth and unsupported-engine
/// failures surface on that first call, as errors naming the node.
///
/// # Errors
/// Invalid SSH settings (an unparseable pinned `hostKey`).
pub fn connect(endpoint: &Endpoint) -> Result<Arc<dyn NodeRuntime>, TransportError> {
    Ok(connect_docker(endpoint)?)
}

/// [`connect`], keeping the concrete type: for callers (and tests) that need the SSH session's
/// counters and state.
///
/// # Errors
/// As [`connect`].
pub fn connect_docker(endpoint: &Endpoint) -> Result<Arc<DockerRuntime>, TransportError> {
    match &endpoint.ssh {
        Some(ssh_ep) => {
            let session = SshSession::new(&endpoint.node, ssh_ep.clone())
                .map_err(|e| e.to_transport(&endpoint.node, "ssh connect"))?;
            Ok(Arc::new(DockerRuntime::over_ssh(
                &endpoint.node,
                session,
                &endpoint.docker_socket,
            )))
        }
        None => Ok(Arc::new(DockerRuntime::local(
            &endpoint.node,
            &endpoint.docker_socket,
        ))),
    }
}

//! [`DockerRuntime`]: the [`NodeRuntime`] of a real node, with bollard 0.21.1 over the SSH
//! connector (or a local Unix socket).
//!
//! Every bollard call lives in this file. The mapping between fleetctl's engine-neutral model
//! ([`crate::container`]) and the Docker Engine API is done by pure functions
//! ([`create_body`], [`update_body`], [`record_from_summary`], [`health_from_status`], ...) that
//! are unit-tested without an engine.
//!
//! # Connection and API version
//! The first call connects (SSH: host-key check, authentication) and negotiates the API version
//! (`GET /version`, unversioned). Engines below API 1.41 (Docker 20.10) are refused with
//! [`ErrorKind::UnsupportedEngine`]. From then on every request path carries `/v{negotiated}`
//! (bollard 0.21.1 would send none), so responses have the shape of the negotiated version.
//!
//! # Deadlines
//! bollard's own timeout covers only request + response headers; every call here is wrapped in
//! a `tokio::time::timeout` of its own ([`CALL_TIMEOUT`], stop: grace + [`CALL_TIMEOUT`],
//! [`PULL_TIMEOUT`]). The SSH connect has [`super::CONNECT_TIMEOUT`] on top.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, ContainerSummary,
    ContainerUpdateBody, EventMessage, HealthConfig, HealthStatusEnum, HostConfig, PortBinding,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::{OnceCell, watch};

use super::connector::{self, SshConnector, UnixConnector};
use super::ssh::{ConnState, SshError, SshSession};
use super::{ContainerUpdate, ErrorKind, ListFilter, NodeRuntime, TransportError};
use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineEvent, EngineInfo, Health, PortMapping,
    Protocol, Resources, RestartPolicy, RunState,
};

/// Deadline of one ordinary Docker call (list, inspect, create, start, update, stats, info):
/// on a healthy node these take milliseconds; a node that needs longer is treated as failing
/// for this pass rather than stalling the reconcile.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of an image pull: large images over a slow registry link take minutes.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// The oldest Docker Engine API fleetctl speaks: Docker 20.10.
pub const MIN_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 41,
};
/// From this API version the container list carries health (`Health` in the summary); below
/// it, health is read from the status text.
pub const LIST_HEALTH_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 52,
};
/// Container events that can change what fleetctl should do (SPEC §6).
pub const WATCHED_EVENTS: [&str; 5] = ["die", "oom", "start", "destroy", "health_status"];

/// A Docker Engine API version, e.g. 1.41.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major (always 1 so far).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl ApiVersion {
    /// Parses `1.41`.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once('.')?;
        Some(ApiVersion {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The negotiated client: requests pinned to `version`.
struct Api {
    docker: Docker,
    version: ApiVersion,
}

/// A node's Docker Engine over SSH (or a local socket). Cheap to share: hold it in an `Arc`.
///
/// All calls to one node share one SSH connection ([`SshSession`]) and a pool of up to
/// [`connector::POOL_MAX_IDLE_PER_HOST`] idle channels.
pub struct DockerRuntime {
    node: String,
    ssh: Option<Arc<SshSession>>,
    /// Unnegotiated client; `api` is derived from it on first use.
    base: Docker,
    api: OnceCell<Api>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("node", &self.node)
            .field("ssh", &self.ssh)
            .field("api", &self.api_version())
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// A runtime for `node` reaching the Docker socket `socket` (a path on the node) through
    /// `session`. Connects on first use.
    pub fn over_ssh(node: &str, session: Arc<SshSession>, socket: &str) -> Self {
        let base = connector::docker_client(SshConnector::new(session.clone(), socket));
        DockerRuntime {
            node: node.to_string(),
            ssh: Some(session),
            base,
            api: OnceCell::new(),
        }
    }

    /// A runtime for `node` whose Docker socket is `socket` on this machine.
    pub fn local(node: &str, socket: &str) -> Self {
        DockerRuntime {
            node: node.to_string(),
            ssh: None,
            base: connector::docker_client(UnixConnector::new(socket)),
            api: OnceCell::new(),
        }
    }

    /// The node's SSH session (`None` for a local socket): connection state and counters.
    pub fn ssh_session(&self) -> Option<&Arc<SshSession>> {
        self.ssh.as_ref()
    }

    /// The negotiated API version, once a call has connected.
    pub fn api_version(&self) -> Option<ApiVersion> {
        self.api.get().map(|a| a.version)
    }

    /// Connects now (SSH, host key, auth) and negotiates the API version; later calls reuse both.
    ///
    /// # Errors
    /// Host key refused, authentication failed, node or engine unreachable, or an engine older
    /// than [`MIN_API_VERSION`].
    pub async fn connect(&self) -> Result<ApiVersion, TransportError> {
        Ok(self.api().await?.version)
    }

    /// The negotiated client, connecting and negotiating first when needed.
    async fn api(&self) -> Result<&Api, TransportError> {
        if let Some(ssh) = &self.ssh {
            // Surfaces host-key and auth failures as such (op `ssh connect`), before any channel
            // is opened; cheap when connected (a lock and a flag).
            ssh.handle()
                .await
                .map_err(|e| e.to_transport(&self.node, "ssh connect"))?;
        }
        self.api.get_or_try_init(|| self.negotiate()).await
    }

    async fn negotiate(&self) -> Result<Api, TransportError> {
        const OP: &str = "negotiate API version";
        let docker = tokio::time::timeout(CALL_TIMEOUT, self.base.clone().negotiate_version())
            .await
            .map_err(|_| timeout_error(&self.node, OP, None, CALL_TIMEOUT))?
            .map_err(|e| map_error(&self.node, OP, None, e))?;
        let v = docker.client_version();
        let version = ApiVersion {
            major: u32::try_from(v.major_version).unwrap_or(u32::MAX),
            minor: u32::try_from(v.minor_version).unwrap_or(u32::MAX),
        };
        if version < MIN_API_VERSION {
            return Err(TransportError::new(
                &self.node,
                OP,
                ErrorKind::UnsupportedEngine,
                format!(
                    "the engine speaks Docker API {version}; fleetctl needs {MIN_API_VERSION} or \
                     newer (Docker Engine 20.10+): upgrade Docker on the node"
                ),
            ));
        }
        let pinned = version.to_string();
        let docker =
            docker.with_request_modifier(move |req| connector::pin_api_version(req, &pinned));
        tracing::debug!(node = %self.node, api = %version, "negotiated Docker API version");
        Ok(Api { docker, version })
    }

    /// Runs one bollard call with a deadline and maps its error.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        object: Option<&str>,
        limit: Duration,
        f: F,
    ) -> Result<T, TransportError>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: std::future::Future<Output = Result<T, bollard::errors::Error>>,
    {
        let api = self.api().await.map_err(|e| match object {
            Some(o) if e.object.is_none() => e.with_object(o),
            _ => e,
        })?;
        match tokio::time::timeout(limit, f(api.docker.clone())).await {
            Err(_) => Err(timeout_error(&self.node, op, object, limit)),
            Ok(Err(e)) => Err(map_error(&self.node, op, object, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    fn list_health_from_summary(&self) -> bool {
        self.api_version()
            .is_some_and(|v| v >= LIST_HEALTH_API_VERSION)
    }
}

#[async_trait]
impl NodeRuntime for DockerRuntime {
    fn node(&self) -> &str {
        &self.node
    }

    fn connection_state(&self) -> Option<watch::Receiver<ConnState>> {
        self.ssh.as_ref().map(|s| s.state())
    }

    async fn engine_info(&self) -> Result<EngineInfo, TransportError> {
        let info = self
            .call("engine info", None, CALL_TIMEOUT, |d| async move {
                d.info().await
            })
            .await?;
        let api = self
            .api_version()
            .map(|v| v.to_string())
            .unwrap_or_default();
        Ok(EngineInfo {
            swarm: Default::default(),
            version: info.server_version.unwrap_or_default(),
            api_version: api,
            cpus: info.ncpu.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            memory: info
                .mem_total
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            containers: info
                .containers
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            containers_running: info
                .containers_running
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            operating_system: info.operating_system.unwrap_or_default(),
        })
    }

    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerRecord>, TransportError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !filter.labels.is_empty() {
            filters.insert("label".into(), filter.labels.clone());
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .call("list containers", None, CALL_TIMEOUT, |d| async move {
                d.list_containers(Some(options)).await
            })
            .await?;
        let from_summary = self.list_health_from_summary();
        Ok(summaries
            .iter()
            .map(|s| record_from_summary(s, from_summary))
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, TransportError> {
        let id_owned = id.to_string();
        let r = self
            .call(
                "inspect container",
                Some(id),
                CALL_TIMEOUT,
                |d| async move { d.inspect_container(&id_owned, None).await },
            )
            .await?;
        Ok(details_from_inspect(&r))
    }

    async fn image_present(&self, image: &str) -> Result<bool, TransportError> {
        let name = image.to_string();
        match self
            .call("inspect image", Some(image), CALL_TIMEOUT, |d| async move {
                d.inspect_image(&name).await
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(&self, image: &str) -> Result<(), TransportError> {
        let (repo, tag) = split_image_ref(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(&repo)
            .tag(&tag)
            .build();
        self.call("pull image", Some(image), PULL_TIMEOUT, |d| async move {
            let mut progress = d.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                item?;
            }
            Ok(())
        })
        .await
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError> {
        let body = create_body(spec);
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let r = self
            .call(
                "create container",
                Some(&spec.name),
                CALL_TIMEOUT,
                |d| async move { d.create_container(Some(options), body).await },
            )
            .await?;
        for w in &r.warnings {
            tracing::warn!(node = %self.node, container = %spec.name, warning = %w, "engine warning on create");
        }
        Ok(r.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), TransportError> {
        let name = id.to_string();
        self.call("start container", Some(id), CALL_TIMEOUT, |d| async move {
            d.start_container(&name, None).await
        })
        .await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), TransportError> {
        let name = id.to_string();
        let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        self.call(
            "stop container",
            Some(id),
            grace + CALL_TIMEOUT,
            |d| async move { d.stop_container(&name, Some(options)).await },
        )
        .await
    }

    async fn remove_container(&self, id: &str) -> Result<(), TransportError> {
        let name = id.to_string();
        // Anonymous volumes are kept (v=false): fleetctl never deletes data on its own.
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        self.call("remove container", Some(id), CALL_TIMEOUT, |d| async move {
            d.remove_container(&name, Some(options)).await
        })
        .await
    }

    async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<(), TransportError> {
        let name = id.to_string();
        let body = update_body(update);
        self.call("update container", Some(id), CALL_TIMEOUT, |d| async move {
            d.update_container(&name, body).await
        })
        .await
    }

    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError> {
        let name = id.to_string();
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .call("container stats", Some(id), CALL_TIMEOUT, |d| async move {
                let mut s = d.stats(&name, Some(options));
                match s.next().await {
                    Some(r) => r.map(Some),
                    None => Ok(None),
                }
            })
            .await?;
        Ok(stats.as_ref().map(memory_working_set).unwrap_or(0))
    }

    async fn import_image(&self, reference: &str, rootfs: Vec<u8>) -> Result<(), TransportError> {
        let (repo, tag) = split_image_ref(reference);
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(&repo)
            .tag(&tag)
            .build();
        self.call(
            "import image",
            Some(reference),
            CALL_TIMEOUT,
            |d| async move {
                let body = bollard::body_full(hyper::body::Bytes::from(rootfs));
                let mut progress = d.create_image(Some(options), Some(body), None);
                while let Some(item) = progress.next().await {
                    item?;
                }
                Ok(())
            },
        )
        .await
    }

    async fn put_archive(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), TransportError> {
        let name = id.to_string();
        let options = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.call("put archive", Some(id), CALL_TIMEOUT, |d| async move {
            let body = bollard::body_full(hyper::body::Bytes::from(tar));
            d.upload_to_container(&name, Some(options), body).await
        })
        .await
    }

    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, TransportError> {
        let name = id.to_string();
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        self.call("get archive", Some(id), CALL_TIMEOUT, |d| async move {
            let mut out = Vec::new();
            let mut chunks = d.download_from_container(&name, Some(options));
            while let Some(chunk) = chunks.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        })
        .await
    }

    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        const OP: &str = "container events";
        let api = self.api().await?;
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            WATCHED_EVENTS.iter().map(|s| s.to_string()).collect(),
        );
        if !filter.labels.is_empty() {
            filters.insert("label".into(), filter.labels.clone());
        }
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let docker = api.docker.clone();
        let node = self.node.clone();
        // Drive the request from a task so the subscription starts now, not on the caller's
        // first poll; the task ends when the caller drops the stream or the connection drops.
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut events = docker.events(Some(options));
            loop {
                let item = tokio::select! {
                    _ = tx.closed() => return,
                    item = events.next() => item,
                };
                let Some(item) = item else { return };
                let mapped = match item {
                    Ok(m) => match event_from_message(&m) {
                        Some(e) => Ok(e),
                        None => continue,
                    },
                    Err(e) => Err(map_error(&node, OP, None, e)),
                };
                let failed = mapped.is_err();
                if tx.send(mapped).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }
}

fn timeout_error(
    node: &str,
    op: &'static str,
    object: Option<&str>,
    limit: Duration,
) -> TransportError {
    let e = TransportError::new(
        node,
        op,
        ErrorKind::Timeout,
        format!("no answer from the engine within {}s", limit.as_secs()),
    );
    match object {
        Some(o) => e.with_object(o),
        None => e,
    }
}

/// Maps a bollard error to a [`TransportError`]: 404 → NotFound, 409 → Conflict, other
/// statuses → Api, connection and channel failures → Unreachable (or the SSH failure's own
/// kind: HostKey, Auth, Timeout), bollard's header timeout → Timeout.
pub fn map_error(
    node: &str,
    op: &'static str,
    object: Option<&str>,
    err: bollard::errors::Error,
) -> TransportError {
    use bollard::errors::Error as B;
    let (kind, message) = match &err {
        B::DockerResponseServerError {
            status_code,
            message,
        } => (
            match status_code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                s => ErrorKind::Api { status: *s },
            },
            message.clone(),
        ),
        B::RequestTimeoutError => (
            ErrorKind::Timeout,
            format!(
                "no response headers from the engine within {}s",
                connector::BOLLARD_TIMEOUT_SECS
            ),
        ),
        B::HyperLegacyError { err: inner } => {
            if let Some(ssh) = find_in_chain::<SshError>(inner) {
                return ssh.to_transport(node, op).with_object_opt(object);
            }
            if let Some(local) = find_in_chain::<connector::LocalSocketError>(inner) {
                (ErrorKind::Unreachable, local.to_string())
            } else {
                (
                    ErrorKind::Unreachable,
                    format!(
                        "connection to the Docker socket failed: {}",
                        chain_text(inner)
                    ),
                )
            }
        }
        B::HyperResponseError { .. } | B::IOError { .. } => (
            ErrorKind::Unreachable,
            format!(
                "connection to the Docker socket failed: {}",
                chain_text(&err)
            ),
        ),
        B::DockerStreamError { error } => (ErrorKind::Other, error.clone()),
        _ => (ErrorKind::Other, chain_text(&err)),
    };
    TransportError::new(node, op, kind, message)
        .with_object_opt(object)
        .with_source(err)
}

trait WithObjectOpt {
    fn with_object_opt(self, object: Option<&str>) -> Self;
}

impl WithObjectOpt for TransportError {
    fn with_object_opt(self, object: Option<&str>) -> Self {
        match object {
            Some(o) => self.with_object(o),
            None => self,
        }
    }
}

/// The first error of type `T` in `err`'s source chain (including `err`).
fn find_in_chain<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `err: cause: cause`, each distinct message once.
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The create body for `spec` (the name goes in the query).
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let r = &spec.resources;
    let host_config = HostConfig {
        memory: nonzero_i64(r.memory),
        memory_reservation: r.memory_reservation.and_then(nonzero_i64),
        nano_cpus: r.nano_cpus.and_then(nonzero_i64),
        cpu_shares: r.cpu_shares.and_then(nonzero_i64),
        cpuset_cpus: r.cpuset.clone().filter(|c| !c.is_empty()),
        restart_policy: Some(restart_policy(spec.restart)),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: (!spec.env.is_empty())
            .then(|| spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: h.interval.map(duration_ns),
            timeout: h.timeout.map(duration_ns),
            retries: h.retries.map(i64::from),
            start_period: h.start_period.map(duration_ns),
            start_interval: None, // API ≥ 1.44 only
        }),
        stop_timeout: spec.stop_grace_period.map(|d| {
            i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX)
        }),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The update body for an in-place change.
///
/// When a memory limit is set, `MemorySwap` is sent as twice the limit — what the engine itself
/// picks at create time when swap is not specified. Without it the engine refuses to raise the
/// limit above the swap limit it derived at create time ("Memory limit should be smaller than
/// already set memoryswap limit"). On kernels without swap accounting the engine ignores it.
///
/// # Caveats
/// The engine treats 0 / empty as "leave unchanged": a limit that is *removed* from the manifest
/// (reservation, CPUs, shares, cpuset) cannot be cleared in place; the planner must recreate.
pub fn update_body(update: &ContainerUpdate) -> ContainerUpdateBody {
    let r = &update.resources;
    let memory = nonzero_i64(r.memory);
    ContainerUpdateBody {
        memory,
        memory_swap: memory.map(|m| m.saturating_mul(2)),
        memory_reservation: r.memory_reservation.and_then(nonzero_i64),
        nano_cpus: r.nano_cpus.and_then(nonzero_i64),
        cpu_shares: r.cpu_shares.and_then(nonzero_i64),
        cpuset_cpus: r.cpuset.clone().filter(|c| !c.is_empty()),
        restart_policy: Some(restart_policy(update.restart)),
        ..Default::default()
    }
}

fn nonzero_i64(v: u64) -> Option<i64> {
    (v != 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn restart_policy(p: RestartPolicy) -> DockerRestartPolicy {
    DockerRestartPolicy {
        name: Some(match p {
            RestartPolicy::No => RestartPolicyNameEnum::NO,
            RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
            RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
            RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        }),
        maximum_retry_count: None,
    }
}

fn restart_from_docker(p: Option<&DockerRestartPolicy>) -> RestartPolicy {
    match p.and_then(|p| p.name) {
        Some(RestartPolicyNameEnum::ALWAYS) => RestartPolicy::Always,
        Some(RestartPolicyNameEnum::UNLESS_STOPPED) => RestartPolicy::UnlessStopped,
        Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure,
        _ => RestartPolicy::No,
    }
}

/// Health from a list entry's status text, for engines whose list has no `Health` (API < 1.52):
/// `Up 5 seconds (healthy)`, `Up 2 minutes (unhealthy)`, `Up 1 second (health: starting)`.
pub fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

fn health_from_enum(s: Option<HealthStatusEnum>) -> Option<Health> {
    match s? {
        HealthStatusEnum::STARTING => Some(Health::Starting),
        HealthStatusEnum::HEALTHY => Some(Health::Healthy),
        HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    }
}

/// A listing entry as a [`ContainerRecord`]. `health_in_summary`: the engine's API (≥ 1.52)
/// reports health in the list; otherwise it is parsed from the status text.
pub fn record_from_summary(s: &ContainerSummary, health_in_summary: bool) -> ContainerRecord {
    let name = s
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    let health = if health_in_summary {
        s.health
            .as_ref()
            .and_then(|h| match h.status? {
                bollard::models::ContainerSummaryHealthStatusEnum::STARTING => {
                    Some(Health::Starting)
                }
                bollard::models::ContainerSummaryHealthStatusEnum::HEALTHY => Some(Health::Healthy),
                bollard::models::ContainerSummaryHealthStatusEnum::UNHEALTHY => {
                    Some(Health::Unhealthy)
                }
                _ => None,
            })
            .or_else(|| s.status.as_deref().and_then(health_from_status))
    } else {
        s.status.as_deref().and_then(health_from_status)
    };
    ContainerRecord {
        networks: Vec::new(),
        id: s.id.clone().unwrap_or_default(),
        name,
        image: s.image.clone().unwrap_or_default(),
        labels: s
            .labels
            .as_ref()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        state: s
            .state
            .map(|st| RunState::parse(st.as_ref()))
            .unwrap_or(RunState::Dead),
        health,
        created: s.created.unwrap_or(0),
        host_ports: {
            let mut ports: Vec<u16> = s
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.public_port)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            ports
        },
    }
}

/// An inspect answer as [`ContainerDetails`].
pub fn details_from_inspect(r: &ContainerInspectResponse) -> ContainerDetails {
    let config = r.config.as_ref();
    let state = r.state.as_ref();
    let hc = r.host_config.as_ref();
    let created = r
        .created
        .as_deref()
        .and_then(|c| humantime::parse_rfc3339_weak(c).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let non_empty = |s: &Option<String>| {
        s.clone()
            .filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"))
    };
    ContainerDetails {
        record: ContainerRecord {
            networks: Vec::new(),
            id: r.id.clone().unwrap_or_default(),
            name: r
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
            labels: config
                .and_then(|c| c.labels.as_ref())
                .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            state: state
                .and_then(|s| s.status)
                .map(|s| RunState::parse(s.as_ref()))
                .unwrap_or(RunState::Dead),
            health: state
                .and_then(|s| s.health.as_ref())
                .and_then(|h| health_from_enum(h.status)),
            created,
            host_ports: {
                let mut ports: Vec<u16> = spec_ports(hc).iter().map(|p| p.host_port).collect();
                ports.sort_unstable();
                ports.dedup();
                ports
            },
        },
        spec: spec_from_inspect(r),
        restart_count: r
            .restart_count
            .and_then(|c| u64::try_from(c).ok())
            .unwrap_or(0),
        exit_code: state.and_then(|s| s.exit_code).unwrap_or(0),
        oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        started_at: state.and_then(|s| non_empty(&s.started_at)),
        finished_at: state.and_then(|s| non_empty(&s.finished_at)),
    }
}

/// Published ports of a host config, in fleetctl's terms.
fn spec_ports(hc: Option<&HostConfig>) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for (key, bindings) in hc
        .and_then(|h| h.port_bindings.as_ref())
        .into_iter()
        .flatten()
    {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        let protocol = if proto == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        for b in bindings.iter().flatten() {
            let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok()) else {
                continue;
            };
            out.push(PortMapping {
                host_ip: b.host_ip.clone().filter(|ip| !ip.is_empty()),
                host_port,
                container_port,
                protocol,
            });
        }
    }
    out.sort();
    out
}

/// The container's configuration as the engine holds it (see [`ContainerDetails::spec`]).
pub fn spec_from_inspect(r: &ContainerInspectResponse) -> ContainerSpec {
    let config = r.config.as_ref();
    let hc = r.host_config.as_ref();
    let nanos = |v: Option<i64>| v.filter(|n| *n > 0).map(|n| Duration::from_nanos(n as u64));
    ContainerSpec {
        network: Default::default(),
        name: r
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        command: config.and_then(|c| c.cmd.clone()),
        env: config
            .and_then(|c| c.env.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        labels: config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        ports: spec_ports(hc),
        volumes: hc.and_then(|h| h.binds.clone()).unwrap_or_default(),
        restart: restart_from_docker(hc.and_then(|h| h.restart_policy.as_ref())),
        resources: Resources {
            memory: hc
                .and_then(|h| h.memory)
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
            memory_reservation: hc
                .and_then(|h| h.memory_reservation)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m != 0),
            nano_cpus: hc
                .and_then(|h| h.nano_cpus)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m != 0),
            cpu_shares: hc
                .and_then(|h| h.cpu_shares)
                .and_then(|m| u64::try_from(m).ok())
                .filter(|m| *m != 0),
            cpuset: hc
                .and_then(|h| h.cpuset_cpus.clone())
                .filter(|c| !c.is_empty()),
        },
        healthcheck: config.and_then(|c| c.healthcheck.as_ref()).and_then(|h| {
            let test = h.test.clone().filter(|t| !t.is_empty())?;
            Some(crate::container::HealthcheckSpec {
                test,
                interval: nanos(h.interval),
                timeout: nanos(h.timeout),
                retries: h
                    .retries
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|r| *r > 0),
                start_period: nanos(h.start_period),
            })
        }),
        stop_grace_period: config
            .and_then(|c| c.stop_timeout)
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_secs),
    }
}

/// Memory working set of a stats sample: usage minus inactive file cache (cgroup v2
/// `inactive_file`, v1 `total_inactive_file`), as `docker stats` computes it.
pub fn memory_working_set(stats: &ContainerStatsResponse) -> u64 {
    let Some(m) = stats.memory_stats.as_ref() else {
        return 0;
    };
    let usage = m.usage.unwrap_or(0);
    let inactive = m
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// A Docker event as an [`EngineEvent`]; `None` for events without a container id.
pub fn event_from_message(m: &EventMessage) -> Option<EngineEvent> {
    let actor = m.actor.as_ref()?;
    let id = actor.id.clone().filter(|i| !i.is_empty())?;
    Some(EngineEvent {
        container_id: id,
        action: m.action.clone().unwrap_or_default(),
        labels: actor
            .attributes
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_else(BTreeMap::new),
        time_nano: m
            .time_nano
            .or_else(|| m.time.map(|t| t.saturating_mul(1_000_000_000)))
            .unwrap_or(0),
    })
}

/// Splits an image reference into repository and tag for a pull: `busybox` → (`busybox`,
/// `latest`), `reg:5000/a/b:1.2` → (`reg:5000/a/b`, `1.2`), `a@sha256:…` → (`a@sha256:…`, ``).
/// (An empty tag with an untagged name would make the engine pull every tag.)
pub fn split_image_ref(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{HealthcheckSpec, PortMapping, Protocol};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "aims-web-0".into(),
            image: "fleet-test/busybox:1".into(),
            command: Some(vec!["httpd".into(), "-f".into()]),
            env: BTreeMap::from([("B".into(), "2".into()), ("A".into(), "x=y".into())]),
            labels: BTreeMap::from([("fleet.managed-by".into(), "fleetctl".into())]),
            ports: vec![
                PortMapping {
                    host_ip: None,
                    host_port: 3001,
                    container_port: 3001,
                    protocol: Protocol::Tcp,
                },
                PortMapping {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: 9090,
                    container_port: 9090,
                    protocol: Protocol::Udp,
                },
                PortMapping {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: 3002,
                    container_port: 3001,
                    protocol: Protocol::Tcp,
                },
            ],
            volumes: vec!["data:/data".into(), "/srv/conf:/conf:ro".into()],
            restart: RestartPolicy::UnlessStopped,
            resources: Resources {
                memory: 256 << 20,
                memory_reservation: Some(128 << 20),
                nano_cpus: Some(500_000_000),
                cpu_shares: Some(512),
                cpuset: Some("2-3".into()),
            },
            healthcheck: Some(HealthcheckSpec {
                test: vec![
                    "CMD".into(),
                    "wget".into(),
                    "-qO-".into(),
                    "http://127.0.0.1/".into(),
                ],
                interval: Some(Duration::from_secs(10)),
                timeout: Some(Duration::from_secs(2)),
                retries: Some(3),
                start_period: Some(Duration::from_millis(1500)),
            }),
            stop_grace_period: Some(Duration::from_millis(10_500)),
        }
    }

    #[test]
    fn create_body_maps_every_field_of_the_spec() {
        let b = create_body(&spec());
        assert_eq!(b.image.as_deref(), Some("fleet-test/busybox:1"));
        assert_eq!(b.cmd, Some(vec!["httpd".to_string(), "-f".to_string()]));
        assert_eq!(b.env, Some(vec!["A=x=y".to_string(), "B=2".to_string()]));
        assert_eq!(b.labels.unwrap()["fleet.managed-by"], "fleetctl");
        assert_eq!(
            b.exposed_ports,
            Some(vec!["3001/tcp".to_string(), "9090/udp".to_string()])
        );
        assert_eq!(b.stop_timeout, Some(11));
        let h = b.healthcheck.unwrap();
        assert_eq!(h.interval, Some(10_000_000_000));
        assert_eq!(h.timeout, Some(2_000_000_000));
        assert_eq!(h.start_period, Some(1_500_000_000));
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.start_interval, None);
        let hc = b.host_config.unwrap();
        assert_eq!(hc.memory, Some(256 << 20));
        assert_eq!(hc.memory_reservation, Some(128 << 20));
        assert_eq!(
            hc.memory_swap, None,
            "create leaves swap to the engine default"
        );
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.cpu_shares, Some(512));
        assert_eq!(hc.cpuset_cpus.as_deref(), Some("2-3"));
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(
            hc.binds,
            Some(vec![
                "data:/data".to_string(),
                "/srv/conf:/conf:ro".to_string()
            ])
        );
        let pb = hc.port_bindings.unwrap();
        let tcp = pb["3001/tcp"].as_ref().unwrap();
        assert_eq!(tcp.len(), 2);
        assert_eq!(tcp[0].host_ip, None);
        assert_eq!(tcp[0].host_port.as_deref(), Some("3001"));
        assert_eq!(tcp[1].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(tcp[1].host_port.as_deref(), Some("3002"));
        let udp = pb["9090/udp"].as_ref().unwrap();
        assert_eq!(udp[0].host_port.as_deref(), Some("9090"));
    }

    #[test]
    fn create_body_omits_what_the_spec_leaves_unset() {
        let s = ContainerSpec {
            command: None,
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            healthcheck: None,
            stop_grace_period: None,
            resources: Resources {
                memory: 64 << 20,
                ..Default::default()
            },
            restart: RestartPolicy::No,
            ..spec()
        };
        let b = create_body(&s);
        assert_eq!(b.cmd, None);
        assert_eq!(b.env, None);
        assert_eq!(b.exposed_ports, None);
        assert_eq!(b.healthcheck, None);
        assert_eq!(b.stop_timeout, None);
        let hc = b.host_config.unwrap();
        assert_eq!(hc.port_bindings, None);
        assert_eq!(hc.binds, None);
        assert_eq!(hc.nano_cpus, None);
        assert_eq!(hc.cpuset_cpus, None);
        assert_eq!(
            hc.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        // The JSON the engine sees: exposed ports in the `{"80/tcp":{}}` form when present.
        let json = serde_json::to_value(create_body(&spec())).unwrap();
        assert_eq!(json["ExposedPorts"]["3001/tcp"], serde_json::json!({}));
        assert_eq!(
            json["HostConfig"]["RestartPolicy"]["Name"],
            "unless-stopped"
        );
    }

    #[test]
    fn what_create_sends_inspect_reads_back_as_the_same_spec() {
        let mut s = spec();
        s.stop_grace_period = Some(Duration::from_secs(10)); // the engine keeps whole seconds
        let b = create_body(&s);
        let inspected = ContainerInspectResponse {
            name: Some(format!("/{}", s.name)),
            config: Some(bollard::models::ContainerConfig {
                image: b.image.clone(),
                cmd: b.cmd.clone(),
                env: b.env.clone(),
                labels: b.labels.clone(),
                exposed_ports: b.exposed_ports.clone(),
                healthcheck: b.healthcheck.clone(),
                stop_timeout: b.stop_timeout,
                ..Default::default()
            }),
            host_config: b.host_config.clone(),
            ..Default::default()
        };
        let mut expected = s.clone();
        expected.ports.sort();
        assert_eq!(spec_from_inspect(&inspected), expected);
    }

    #[test]
    fn update_body_sends_limits_restart_policy_and_double_swap() {
        let u = ContainerUpdate {
            resources: spec().resources,
            restart: RestartPolicy::Always,
        };
        let b = update_body(&u);
        assert_eq!(b.memory, Some(256 << 20));
        assert_eq!(b.memory_swap, Some(512 << 20));
        assert_eq!(b.memory_reservation, Some(128 << 20));
        assert_eq!(b.nano_cpus, Some(500_000_000));
        assert_eq!(b.cpu_shares, Some(512));
        assert_eq!(b.cpuset_cpus.as_deref(), Some("2-3"));
        assert_eq!(
            b.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
    }

    #[test]
    fn health_is_parsed_from_the_status_text() {
        assert_eq!(
            health_from_status("Up 5 seconds (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 2 minutes (unhealthy)"),
            Some(Health::Unhealthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health_from_status("Up 3 hours"), None);
        assert_eq!(health_from_status("Exited (0) 2 minutes ago"), None);
        assert_eq!(health_from_status("Up 3 hours (Paused)"), None);
    }

    #[test]
    fn summary_maps_to_record_with_health_from_status_below_api_1_52() {
        let s = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/aims-web-0".into()]),
            image: Some("fleet-test/busybox:1".into()),
            labels: Some(HashMap::from([("fleet.fleet".into(), "aims".into())])),
            state: Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
            status: Some("Up 5 seconds (unhealthy)".into()),
            created: Some(1_700_000_000),
            ..Default::default()
        };
        let r = record_from_summary(&s, false);
        assert_eq!(r.id, "abc");
        assert_eq!(r.name, "aims-web-0");
        assert_eq!(r.state, RunState::Running);
        assert_eq!(r.health, Some(Health::Unhealthy));
        assert_eq!(r.label("fleet.fleet"), Some("aims"));
        assert_eq!(r.created, 1_700_000_000);
        // With API ≥ 1.52 the summary's Health wins.
        let s2 = ContainerSummary {
            health: Some(bollard::models::ContainerSummaryHealth {
                status: Some(bollard::models::ContainerSummaryHealthStatusEnum::HEALTHY),
                failing_streak: None,
            }),
            ..s
        };
        assert_eq!(record_from_summary(&s2, true).health, Some(Health::Healthy));
    }

    #[test]
    fn working_set_subtracts_inactive_file_on_cgroup_v1_and_v2() {
        let mk = |key: &str| ContainerStatsResponse {
            memory_stats: Some(bollard::models::ContainerMemoryStats {
                usage: Some(100 << 20),
                stats: Some(HashMap::from([(key.to_string(), 30u64 << 20)])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(memory_working_set(&mk("inactive_file")), 70 << 20);
        assert_eq!(memory_working_set(&mk("total_inactive_file")), 70 << 20);
        assert_eq!(memory_working_set(&mk("other")), 100 << 20);
        assert_eq!(memory_working_set(&ContainerStatsResponse::default()), 0);
    }

    #[test]
    fn image_refs_split_into_repo_and_tag() {
        assert_eq!(
            split_image_ref("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_image_ref("ghcr.io/aims/gw:1.4.2"),
            ("ghcr.io/aims/gw".into(), "1.4.2".into())
        );
        assert_eq!(
            split_image_ref("reg:5000/a/b"),
            ("reg:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_image_ref("a/b@sha256:abcd"),
            ("a/b@sha256:abcd".into(), String::new())
        );
    }

    #[test]
    fn errors_map_by_status() {
        let e = |code| {
            map_error(
                "node1",
                "start container",
                Some("web"),
                bollard::errors::Error::DockerResponseServerError {
                    status_code: code,
                    message: "boom".into(),
                },
            )
        };
        assert_eq!(e(404).kind, ErrorKind::NotFound);
        assert_eq!(e(409).kind, ErrorKind::Conflict);
        assert_eq!(e(500).kind, ErrorKind::Api { status: 500 });
        assert_eq!(e(404).to_string(), "node node1: start container web: boom");
        let t = map_error(
            "node1",
            "list containers",
            None,
            bollard::errors::Error::RequestTimeoutError,
        );
        assert_eq!(t.kind, ErrorKind::Timeout);
    }

    #[test]
    fn events_map_actor_and_time() {
        let m = EventMessage {
            action: Some("health_status: unhealthy".into()),
            actor: Some(bollard::models::EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([("fleet.fleet".into(), "aims".into())])),
            }),
            time: Some(2),
            time_nano: None,
            ..Default::default()
        };
        let e = event_from_message(&m).unwrap();
        assert_eq!(e.container_id, "abc");
        assert_eq!(e.action, "health_status: unhealthy");
        assert_eq!(e.time_nano, 2_000_000_000);
        assert_eq!(e.labels["fleet.fleet"], "aims");
        assert!(event_from_message(&EventMessage::default()).is_none());
    }

    #[test]
    fn api_versions_parse_and_order() {
        assert_eq!(ApiVersion::parse("1.41"), Some(MIN_API_VERSION));
        assert!(ApiVersion::parse("1.40").unwrap() < MIN_API_VERSION);
        assert!(ApiVersion::parse("1.100").unwrap() > LIST_HEALTH_API_VERSION);
        assert_eq!(ApiVersion::parse("x"), None);
        assert_eq!(MIN_API_VERSION.to_string(), "1.41");
    }
}

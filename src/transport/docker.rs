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
//! (`GET /_ping`, unversioned: its headers say the API version and the engine). Engines below
//! API 1.41 (Docker 20.10) are refused with [`ErrorKind::UnsupportedEngine`]. From then on
//! every request path carries `/v{negotiated}` (bollard 0.21.1 would send none), so responses
//! have the shape of the negotiated version.
//!
//! # Deadlines
//! bollard's own timeout covers only request + response headers; every call here is wrapped in
//! a `tokio::time::timeout` of its own ([`CALL_TIMEOUT`], stop: grace + [`CALL_TIMEOUT`],
//! [`PULL_TIMEOUT`], swarm init, join and leave: [`SWARM_TIMEOUT`]). The SSH connect has
//! [`super::CONNECT_TIMEOUT`] on top.
//!
//! # Requests bollard does not make
//! Three requests go around bollard, over the same pooled connections
//! ([`connector::RawSender`]), with the same deadline and error mapping: network create (below
//! API 1.44 it needs `CheckDuplicate`, which bollard's models lack), swarm join and swarm
//! inspect. bollard logs request bodies and decoded answers at debug level, and those two carry
//! join tokens. A join token appears in no error either: the engine's words are redacted
//! ([`redact_join_token`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStatsResponse, ContainerSummary,
    ContainerUpdateBody, EndpointSettings, EventMessage, HealthConfig, HealthStatusEnum,
    HostConfig, Ipam, IpamConfig, Network, NetworkCreateRequest, NetworkInspect, NetworkingConfig,
    Node, NodeSpecRoleEnum, NodeState, PortBinding, Reachability,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum, SwarmInitRequest,
    SwarmJoinRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DeleteNodeOptionsBuilder,
    DownloadFromContainerOptionsBuilder, EventsOptionsBuilder, LeaveSwarmOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder, UpdateNodeOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::{OnceCell, watch};

use super::connector::{self, SshConnector, UnixConnector};
use super::ssh::{ConnState, SshError, SshSession};
use super::{ContainerUpdate, ErrorKind, ListFilter, NodeRuntime, RegistryCause, TransportError};
use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineDisk, EngineEvent, EngineInfo,
    EngineKind, Filesystem, Health, ImageUsage, JoinTokens, Knobs, LocalImage, NetworkAttachment,
    NetworkDriver, NetworkRecord, NetworkSpec, PortMapping, Protocol, PullProgress, RegistryAuth,
    Resources, RestartPolicy, RunState, SwarmInfo, SwarmMember, SwarmRole, SwarmState, Ulimit,
};

/// Deadline of one ordinary Docker call (list, inspect, create, start, update, stats, info):
/// on a healthy node these take milliseconds; a node that needs longer is treated as failing
/// for this pass rather than stalling the reconcile.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of an image pull: large images over a slow registry link take minutes.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of one image transfer (`export_image` to its last chunk, `load_image` to the
/// engine's answer). Unlike a pull, a copy goes through the operator's machine, whose uplink
/// may be slow: a 1 GB image at 1 MB/s takes about 17 minutes.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long an export may go without a chunk before it counts as stalled: the engine streams
/// a save as it reads the layers, so a silent minute means a dead connection or engine.
pub const TRANSFER_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `load_image` reports the bytes sent.
pub const TRANSFER_PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Deadline of swarm init, join and leave. The engine answers them only once the node's swarm
/// components have started (or stopped): it waits up to 20 s itself for a join to complete
/// (then answers that the join goes on in the background), and init and leave take 10–30 s on a
/// slow VPS. [`CALL_TIMEOUT`] would cut them off while they still succeed.
pub const SWARM_TIMEOUT: Duration = Duration::from_secs(60);
/// The address the engine listens on for swarm traffic (`ListenAddr` of init and join): the
/// address it advertises (the node's private address), on the standard swarm port — never every
/// interface, which would put the managers' port on a VPS's public address too.
pub fn swarm_listen_addr(advertise_addr: &str) -> String {
    if advertise_addr.contains(':') {
        format!("[{advertise_addr}]:2377")
    } else {
        format!("{advertise_addr}:2377")
    }
}
/// From this API version the engine always refuses a network name that exists; below it, only
/// when the create asks with `CheckDuplicate` (a field bollard's models no longer have).
pub const ALWAYS_CHECK_DUPLICATE_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 44,
};
/// From this API version a healthcheck has `StartInterval`: the time between probes during the
/// start period (below it the engine rejects nothing but ignores the field; fleetctl leaves it
/// out).
pub const START_INTERVAL_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 44,
};
/// The `StartInterval` fleetctl sends (API ≥ 1.44) when a healthcheck has a start period: the
/// first probe runs about a second after start instead of a whole interval later.
pub const HEALTH_START_INTERVAL: Duration = Duration::from_secs(1);
/// What stands in for a swarm join token in every error message.
pub const JOIN_TOKEN_REDACTED: &str = "<join token>";
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
/// From this API version `system df` lists the objects it counted only when asked `verbose`.
pub const DF_VERBOSE_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 52,
};
/// Deadline of `system df`: the engine walks every container's writable layer for it, which
/// takes seconds on a busy node.
pub const DF_TIMEOUT: Duration = Duration::from_secs(120);
/// From this API version an exec's create carries the TTY's initial size (`ConsoleSize`).
pub const EXEC_CONSOLE_SIZE_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 42,
};
/// Container events that can change what fleetctl should do (SPEC §6).
pub const WATCHED_EVENTS: [&str; 5] = ["die", "oom", "start", "destroy", "health_status"];

/// The container events to subscribe to on `engine`: [`WATCHED_EVENTS`]; Podman 4.3 filters on
/// its own words (`died` where Docker says `die`, `remove` for `destroy`; it reports them as
/// Docker's), so those are asked of it too.
pub fn watched_events(engine: EngineKind) -> Vec<String> {
    let mut out: Vec<String> = WATCHED_EVENTS.iter().map(|s| s.to_string()).collect();
    if engine == EngineKind::Podman {
        // Podman 4.3 matches an `event` filter against its own words: `died`, `remove`.
        out.push("died".into());
        out.push("remove".into());
    }
    out
}

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
    engine: EngineIdentity,
}

/// What `GET /_ping` (or `GET /version`) says about the engine behind a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineIdentity {
    /// Docker Engine or Podman.
    pub kind: EngineKind,
    /// The engine's own version (`26.1.5`, Podman's `4.3.1`).
    pub version: String,
    /// The highest API version it speaks.
    pub api: ApiVersion,
}

/// Reads the headers of `GET /_ping`: `Api-Version`, and the engine from `Server`
/// (`Docker/26.1.5 (linux)`, `Libpod/4.3.1 (linux)`) or Podman's `Libpod-Api-Version`. `None`
/// when they carry no parsable API version.
pub fn engine_identity_from_ping(headers: &http::HeaderMap) -> Option<EngineIdentity> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let api = ApiVersion::parse(get("api-version")?)?;
    let server = get("server").unwrap_or("");
    let (product, version) = server
        .split_whitespace()
        .next()
        .and_then(|p| p.split_once('/'))
        .unwrap_or(("", ""));
    let libpod = get("libpod-api-version");
    let podman = libpod.is_some() || product.eq_ignore_ascii_case("libpod");
    Some(EngineIdentity {
        kind: if podman {
            EngineKind::Podman
        } else {
            EngineKind::Docker
        },
        version: match (version, libpod) {
            ("", Some(l)) => l.to_string(),
            (v, _) => v.to_string(),
        },
        api,
    })
}

/// Reads the answer of `GET /version` (unversioned): the engine's API version, and whether it
/// is Podman (a component named `Podman Engine`; Podman's compatible API otherwise answers as
/// Docker does).
///
/// # Errors
/// The body is not JSON or carries no parsable `ApiVersion`.
pub fn engine_identity(body: &[u8]) -> Result<EngineIdentity, String> {
    #[derive(serde::Deserialize)]
    struct Component {
        #[serde(rename = "Name", default)]
        name: String,
        #[serde(rename = "Version", default)]
        version: String,
    }
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "ApiVersion", default)]
        api_version: String,
        #[serde(rename = "Version", default)]
        version: String,
        #[serde(rename = "Components", default)]
        components: Option<Vec<Component>>,
    }
    let v: Version = serde_json::from_slice(body)
        .map_err(|e| format!("the engine's /version answer is not what Docker sends: {e}"))?;
    let api = ApiVersion::parse(&v.api_version).ok_or_else(|| {
        format!(
            "the engine's /version answer has no API version (ApiVersion {:?})",
            v.api_version
        )
    })?;
    let podman = v
        .components
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name.eq_ignore_ascii_case("Podman Engine"));
    Ok(match podman {
        Some(c) => EngineIdentity {
            kind: EngineKind::Podman,
            version: if c.version.is_empty() {
                v.version
            } else {
                c.version
            },
            api,
        },
        None => EngineIdentity {
            kind: EngineKind::Docker,
            version: v.version,
            api,
        },
    })
}

/// A node's Docker Engine over SSH (or a local socket). Cheap to share: hold it in an `Arc`.
///
/// All calls to one node share one SSH connection ([`SshSession`]) and a pool of up to
/// [`connector::POOL_MAX_IDLE_PER_HOST`] idle channels.
pub struct DockerRuntime {
    node: String,
    ssh: Option<Arc<SshSession>>,
    /// The negotiated client, made on first use over `raw`'s connections.
    api: OnceCell<Api>,
    /// Requests bollard cannot make or must not log, over the same connections.
    raw: connector::RawSender,
    /// Podman: when fleetctl last ran a health probe of a container, by container id (see
    /// [`podman_probe_due`]).
    probes: std::sync::Mutex<HashMap<String, std::time::Instant>>,
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
    /// One stats reading of container `id`, at once (`one-shot`: no second sample waited
    /// for); `None` when the engine sent nothing.
    async fn one_shot_stats(
        &self,
        id: &str,
    ) -> Result<Option<ContainerStatsResponse>, TransportError> {
        let name = id.to_string();
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        self.call("container stats", Some(id), CALL_TIMEOUT, |d| async move {
            let mut s = d.stats(&name, Some(options));
            match s.next().await {
                Some(r) => r.map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    /// A runtime for `node` reaching the Docker socket `socket` (a path on the node) through
    /// `session`. Connects on first use.
    pub fn over_ssh(node: &str, session: Arc<SshSession>, socket: &str) -> Self {
        let (_, raw) = connector::clients(SshConnector::new(session.clone(), socket));
        DockerRuntime {
            node: node.to_string(),
            ssh: Some(session),
            api: OnceCell::new(),
            raw,
            probes: Default::default(),
        }
    }

    /// A runtime for `node` whose Docker socket is `socket` on this machine.
    pub fn local(node: &str, socket: &str) -> Self {
        let (_, raw) = connector::clients(UnixConnector::new(socket));
        DockerRuntime {
            node: node.to_string(),
            ssh: None,
            api: OnceCell::new(),
            raw,
            probes: Default::default(),
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
        self.api
            .get_or_try_init(|| {
                let span = tracing::debug_span!("negotiate", node = %self.node);
                tracing::Instrument::instrument(self.negotiate(), span)
            })
            .await
    }

    /// `GET PATH` without a version, before negotiation: the answer's headers and body.
    async fn unversioned_get(
        &self,
        op: &'static str,
        path: &str,
    ) -> Result<(http::HeaderMap, Vec<u8>), TransportError> {
        let raw = self.raw.clone();
        let uri = format!("{}{path}", connector::CLIENT_ADDR);
        tokio::time::timeout(CALL_TIMEOUT, async move {
            let req = http::Request::builder()
                .method(http::Method::GET)
                .uri(uri)
                .body(bollard::body_full(hyper::body::Bytes::new()))?;
            let resp = raw(req).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = read_body(resp.into_body()).await?;
            if status.is_success() {
                Ok((headers, bytes))
            } else {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: status.as_u16(),
                    message: engine_error_message(&bytes),
                })
            }
        })
        .await
        .map_err(|_| timeout_error(&self.node, op, None, CALL_TIMEOUT))?
        .map_err(|e| map_error(&self.node, op, None, e))
    }

    async fn negotiate(&self) -> Result<Api, TransportError> {
        const OP: &str = "negotiate API version";
        // One unversioned `GET /_ping`: its headers say the API version and which engine answers
        // (Podman's `/version` takes ~0.4 s: it runs its helpers for their versions). An engine
        // whose ping says no API version is asked `GET /version`.
        let ping = match self.unversioned_get(OP, "/_ping").await {
            Ok((headers, _)) => engine_identity_from_ping(&headers),
            // An engine answering the ping with an error: asked for its version instead.
            Err(e) if matches!(e.kind, ErrorKind::Api { .. } | ErrorKind::NotFound) => None,
            Err(e) => return Err(e),
        };
        let engine = match ping {
            Some(engine) => engine,
            None => {
                let (_, body) = self.unversioned_get(OP, "/version").await?;
                engine_identity(&body).map_err(|e| {
                    TransportError::new(&self.node, OP, ErrorKind::UnsupportedEngine, e)
                })?
            }
        };
        let ours = bollard::API_DEFAULT_VERSION;
        let version = engine.api.min(ApiVersion {
            major: u32::try_from(ours.major_version).unwrap_or(u32::MAX),
            minor: u32::try_from(ours.minor_version).unwrap_or(u32::MAX),
        });
        let docker = connector::docker_over(
            self.raw.clone(),
            &bollard::ClientVersion {
                major_version: version.major as usize,
                minor_version: version.minor as usize,
            },
        );
        if version < MIN_API_VERSION {
            return Err(TransportError::new(
                &self.node,
                OP,
                ErrorKind::UnsupportedEngine,
                match engine.kind {
                    EngineKind::Docker => format!(
                        "the engine speaks Docker API {version}; fleetctl needs \
                         {MIN_API_VERSION} or newer (Docker Engine 20.10+): upgrade Docker on \
                         the node"
                    ),
                    EngineKind::Podman => format!(
                        "podman {} speaks Docker API {version}; fleetctl needs \
                         {MIN_API_VERSION} or newer (Podman 4.0+): upgrade Podman on the node",
                        engine.version
                    ),
                },
            ));
        }
        let pinned = version.to_string();
        let docker =
            docker.with_request_modifier(move |req| connector::pin_api_version(req, &pinned));
        tracing::debug!(node = %self.node, api = %version, engine = %engine.kind,
            engine_version = %engine.version, "negotiated Docker API version");
        Ok(Api {
            docker,
            version,
            engine,
        })
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
        // One span per engine call: at -vv its close line gives the call's time (`time.busy`
        // is CPU here, `time.idle` the wait for the node).
        let span = tracing::debug_span!("docker", node = %self.node, op, object);
        let call = tracing::Instrument::instrument(f(api.docker.clone()), span);
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err(timeout_error(&self.node, op, object, limit)),
            Ok(Err(e)) => Err(map_error(&self.node, op, object, e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Sends `method path` (unversioned; the negotiated version is added) with an optional JSON
    /// `body` through the [`connector::RawSender`], with the deadline and error mapping of
    /// [`Self::call`]; returns the response body. Neither body is logged.
    async fn raw(
        &self,
        op: &'static str,
        object: Option<&str>,
        limit: Duration,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, TransportError> {
        let raw = self.raw.clone();
        let path = path.to_string();
        self.call(op, object, limit, |d| async move {
            let v = d.client_version();
            let version = format!("{}.{}", v.major_version, v.minor_version);
            let req = raw_request(method, &path, &version, body)?;
            let resp = raw(req).await?;
            let status = resp.status();
            let bytes = read_body(resp.into_body()).await?;
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: status.as_u16(),
                    message: engine_error_message(&bytes),
                })
            }
        })
        .await
    }

    /// The negotiated client (connecting first when needed); an error names `object`.
    async fn negotiated(&self, object: &str) -> Result<&Api, TransportError> {
        self.api().await.map_err(|e| match e.object {
            None => e.with_object(object),
            Some(_) => e,
        })
    }

    /// `GET /containers/{id}/json`, as the engine answers it.
    async fn inspect_raw(&self, id: &str) -> Result<ContainerInspectResponse, TransportError> {
        let id_owned = id.to_string();
        self.call(
            "inspect container",
            Some(id),
            CALL_TIMEOUT,
            |d| async move { d.inspect_container(&id_owned, None).await },
        )
        .await
    }

    /// Podman without systemd runs no health probes (they are systemd timers): a container's
    /// health stays `starting`. When one is due ([`podman_probe_due`]), fleetctl runs it once
    /// with libpod's `GET /v4.0.0/libpod/containers/{id}/healthcheck` (which records the result
    /// as the timer would). Returns whether a probe ran, so the caller reads the container
    /// again. A failed probe is only logged: the container's health is what it was.
    async fn podman_probe(&self, r: &ContainerInspectResponse) -> bool {
        let Some(id) = r.id.as_deref().filter(|i| !i.is_empty()) else {
            return false;
        };
        let now = std::time::Instant::now();
        {
            let mut probes = self.probes.lock().expect("probe times lock poisoned");
            let since = probes.get(id).map(|t| now.duration_since(*t));
            if !podman_probe_due(&probe_facts(r, std::time::SystemTime::now(), since)) {
                return false;
            }
            probes.insert(id.to_string(), now);
            if probes.len() > PROBE_MEMORY {
                probes.retain(|_, t| now.duration_since(*t) < PROBE_FORGET_AFTER);
            }
        }
        let limit = r
            .config
            .as_ref()
            .and_then(|c| c.healthcheck.as_ref())
            .and_then(|h| h.timeout)
            .and_then(|ns| u64::try_from(ns).ok())
            .filter(|ns| *ns > 0)
            .map_or(DEFAULT_HEALTH_INTERVAL, Duration::from_nanos)
            .min(CALL_TIMEOUT)
            + Duration::from_secs(5);
        let path = format!("/v4.0.0/libpod/containers/{id}/healthcheck");
        match self
            .raw(
                "podman healthcheck",
                Some(id),
                limit,
                http::Method::GET,
                &path,
                None,
            )
            .await
        {
            Ok(_) => {
                tracing::debug!(node = %self.node, container = %id, "ran a due podman health probe");
                true
            }
            Err(e) => {
                tracing::debug!(node = %self.node, container = %id, error = %e,
                    "podman health probe failed");
                false
            }
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

    fn engine_kind(&self) -> Option<EngineKind> {
        self.api.get().map(|a| a.engine.kind)
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
            kind: self.engine_kind().unwrap_or_default(),
            swarm: swarm_info_from(info.swarm.as_ref()),
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
            docker_root_dir: info.docker_root_dir.unwrap_or_default(),
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
        let r = self.inspect_raw(id).await?;
        if self.engine_kind() == Some(EngineKind::Podman) && self.podman_probe(&r).await {
            // The probe's result is in the container's health now.
            return Ok(details_from_inspect(&self.inspect_raw(id).await?));
        }
        Ok(details_from_inspect(&r))
    }

    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, TransportError> {
        let name = image.to_string();
        match self
            .call("inspect image", Some(image), CALL_TIMEOUT, |d| async move {
                d.inspect_image(&name).await
            })
            .await
        {
            Ok(i) => Ok(Some(LocalImage {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), TransportError> {
        let (repo, tag) = split_image_ref(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(&repo)
            .tag(&tag)
            .build();
        let credentials = auth.map(docker_credentials);
        self.call("pull image", Some(image), PULL_TIMEOUT, |d| async move {
            let mut layers = PullLayers::default();
            let mut stream = d.create_image(Some(options), None, credentials);
            while let Some(item) = stream.next().await {
                let info = item?;
                if let Some(detail) = info.error_detail {
                    return Err(bollard::errors::Error::DockerStreamError {
                        error: detail.message.unwrap_or_default(),
                    });
                }
                if layers.note(&info) {
                    progress(layers.progress());
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| registry_error(e, image))
    }

    async fn resolve_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransportError> {
        let kind = self.negotiated(image).await?.engine.kind;
        if kind == EngineKind::Podman {
            // Podman has no `/distribution` endpoint (it answers 404, which would read as the
            // registry's "no such image"): the lookup asks another node.
            return Err(TransportError::new(
                &self.node,
                "resolve image",
                ErrorKind::UnsupportedEngine,
                "podman cannot ask a registry for a digest (no /distribution endpoint)",
            )
            .with_object(image));
        }
        let name = image.to_string();
        let credentials = auth.map(docker_credentials);
        let inspect = self
            .call("resolve image", Some(image), CALL_TIMEOUT, |d| async move {
                d.inspect_registry_image(&name, credentials).await
            })
            .await
            .map_err(|e| registry_error(e, image))?;
        inspect.descriptor.digest.ok_or_else(|| {
            TransportError::new(
                &self.node,
                "resolve image",
                ErrorKind::Other,
                "the engine named no digest",
            )
            .with_object(image)
        })
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError> {
        let body = create_body(spec, self.negotiated(&spec.name).await?.version);
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
        let kind = self.negotiated(id).await?.engine.kind;
        if !kind.updates_in_place() {
            // Podman answers 404: the planner recreates instead. Refused here too, for a plan
            // made before the engine was known.
            return Err(TransportError::new(
                &self.node,
                "update container",
                ErrorKind::UnsupportedEngine,
                format!("{kind} has no in-place update; fleetctl recreates instead"),
            )
            .with_object(id));
        }
        let name = id.to_string();
        let body = update_body(update);
        self.call("update container", Some(id), CALL_TIMEOUT, |d| async move {
            d.update_container(&name, body).await
        })
        .await
    }

    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError> {
        let stats = self.one_shot_stats(id).await?;
        Ok(stats.as_ref().map(memory_working_set).unwrap_or(0))
    }

    async fn disk_usage(&self) -> Result<EngineDisk, TransportError> {
        // bollard's model is the API 1.52 shape; an older engine answers in its own, so the
        // answer is read here for both.
        let path = if self
            .api_version()
            .is_some_and(|v| v >= DF_VERBOSE_API_VERSION)
        {
            "/system/df?verbose=1"
        } else {
            "/system/df"
        };
        let body = self
            .raw("system df", None, DF_TIMEOUT, http::Method::GET, path, None)
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            TransportError::new(
                &self.node,
                "system df",
                ErrorKind::Other,
                format!("malformed answer: {e}"),
            )
        })?;
        Ok(disk_from_df(&value))
    }

    async fn filesystem(&self, path: &str) -> Result<Filesystem, TransportError> {
        let command = format!("df -Pk -- {}", shell_quote(path));
        let (status, out, stderr) = match &self.ssh {
            Some(ssh) => ssh
                .run(&command, CALL_TIMEOUT)
                .await
                .map_err(|e| e.to_transport(&self.node, "df").with_object(path))?,
            None => {
                let run = tokio::process::Command::new("df")
                    .args(["-Pk", "--", path])
                    .stdin(std::process::Stdio::null())
                    .output();
                let out = tokio::time::timeout(CALL_TIMEOUT, run)
                    .await
                    .map_err(|_| timeout_error(&self.node, "df", Some(path), CALL_TIMEOUT))?
                    .map_err(|e| {
                        TransportError::new(&self.node, "df", ErrorKind::Other, e.to_string())
                            .with_object(path)
                    })?;
                (
                    out.status.code().and_then(|c| u32::try_from(c).ok()),
                    out.stdout,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                )
            }
        };
        if status != Some(0) {
            return Err(TransportError::new(
                &self.node,
                "df",
                ErrorKind::Other,
                match (status, stderr.is_empty()) {
                    (Some(s), true) => format!("df exited with status {s}"),
                    (Some(s), false) => format!("df exited with status {s}: {stderr}"),
                    (None, _) => "df ended without an exit status".to_string(),
                },
            )
            .with_object(path));
        }
        parse_df(&String::from_utf8_lossy(&out)).ok_or_else(|| {
            TransportError::new(
                &self.node,
                "df",
                ErrorKind::Other,
                "unexpected output of df -Pk".to_string(),
            )
            .with_object(path)
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<(), TransportError> {
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        let name = reference.to_string();
        self.call(
            "remove image",
            Some(reference),
            CALL_TIMEOUT,
            |d| async move { d.remove_image(&name, Some(options), None).await },
        )
        .await
        .map(|_| ())
    }

    async fn import_image(&self, reference: &str, rootfs: Vec<u8>) -> Result<(), TransportError> {
        // The whole reference as `repo` (the API lets it carry the tag): Podman ignores a
        // separate `tag` on an import and would name the image `repo:latest`.
        let options = CreateImageOptionsBuilder::new()
            .from_src("-")
            .repo(reference)
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

    async fn export_image(&self, image: &str) -> Result<super::ImageArchive, TransportError> {
        const OP: &str = "export image";
        // Around bollard, with the transfer's deadline from the start: the engine may answer
        // only once it has gathered the layers (the classic store writes them to a temporary
        // directory first), which for a large image outlasts both [`CALL_TIMEOUT`] and
        // bollard's own deadline for the response headers.
        let deadline = tokio::time::Instant::now() + TRANSFER_TIMEOUT;
        let path = format!("/images/{image}/get");
        let raw = self.raw.clone();
        let body = self
            .call(OP, Some(image), TRANSFER_TIMEOUT, |d| async move {
                let req = raw_request_with(
                    http::Method::GET,
                    &path,
                    &version_of(&d),
                    "application/json",
                    bollard::body_full(hyper::body::Bytes::new()),
                )?;
                let resp = raw(req).await?;
                if resp.status().is_success() {
                    Ok(resp.into_body())
                } else {
                    let status = resp.status().as_u16();
                    let bytes = read_body(resp.into_body()).await?;
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: status,
                        message: engine_error_message(&bytes),
                    })
                }
            })
            .await?;
        let node = self.node.clone();
        let object = image.to_string();
        Ok(futures_util::stream::unfold(Some(body), move |body| {
            let node = node.clone();
            let object = object.clone();
            async move {
                use hyper::body::Body;
                let mut body = body?;
                loop {
                    let stall = tokio::time::Instant::now() + TRANSFER_STALL_TIMEOUT;
                    let next =
                        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
                    let frame = match tokio::time::timeout_at(deadline.min(stall), next).await {
                        Err(_) => {
                            let limit = if stall < deadline {
                                TRANSFER_STALL_TIMEOUT
                            } else {
                                TRANSFER_TIMEOUT
                            };
                            return Some((
                                Err(timeout_error(&node, OP, Some(&object), limit)),
                                None,
                            ));
                        }
                        Ok(None) => return None,
                        Ok(Some(Err(e))) => {
                            let e = map_error(&node, OP, Some(&object), e.into());
                            return Some((Err(e), None));
                        }
                        Ok(Some(Ok(frame))) => frame,
                    };
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Some((Ok(data), Some(body)));
                    }
                }
            }
        })
        .boxed())
    }

    async fn load_image(
        &self,
        archive: super::ImageArchive,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), TransportError> {
        const OP: &str = "load image";
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        // The archive's own failure is kept aside: hyper reports it only as "error from user's
        // body stream", and the cause is the source's, not this node's.
        let failed: Arc<std::sync::Mutex<Option<TransportError>>> = Arc::default();
        let failure = failed.clone();
        let body = archive.map(move |chunk| match chunk {
            Ok(bytes) => {
                counter.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(bytes)
            }
            Err(e) => {
                let text = e.to_string();
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Err(std::io::Error::other(text))
            }
        });
        let raw = self.raw.clone();
        // Around bollard: its deadline (request + response headers) would cut a long upload,
        // since the engine answers only once it has the whole archive.
        let work = self.call(OP, None, TRANSFER_TIMEOUT, |d| async move {
            let req = raw_request_with(
                http::Method::POST,
                "/images/load?quiet=1",
                &version_of(&d),
                "application/x-tar",
                bollard::body_try_stream(body),
            )?;
            let resp = raw(req).await?;
            let status = resp.status();
            // The answer is a few JSON messages ("Loaded image: …"), never the archive.
            let bytes = read_body(resp.into_body()).await?;
            if !status.is_success() {
                return Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: status.as_u16(),
                    message: engine_error_message(&bytes),
                });
            }
            match load_stream_error(&bytes) {
                Some(error) => Err(bollard::errors::Error::DockerStreamError { error }),
                None => Ok(()),
            }
        });
        let mut work = std::pin::pin!(work);
        let mut tick = tokio::time::interval(TRANSFER_PROGRESS_INTERVAL);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => progress(sent.load(std::sync::atomic::Ordering::Relaxed)),
            }
        };
        progress(sent.load(std::sync::atomic::Ordering::Relaxed));
        let source_failure = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (result, source_failure) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(source)) => Err(source),
            (Err(e), None) => Err(e),
        }
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

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        opts: super::ExecOptions,
    ) -> Result<super::ExecSession, TransportError> {
        let name = id.to_string();
        // The initial size rides on the create from API 1.42 (Docker 23); older engines get it
        // from the resize the caller sends once the command runs.
        let console_size = opts
            .size
            .filter(|_| {
                opts.tty
                    && self
                        .api_version()
                        .is_some_and(|v| v >= EXEC_CONSOLE_SIZE_API_VERSION)
            })
            .map(|(w, h)| vec![usize::from(h), usize::from(w)]);
        let config = bollard::models::ExecConfig {
            attach_stdin: Some(opts.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(opts.tty),
            console_size,
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let created = self
            .call("exec create", Some(id), CALL_TIMEOUT, |d| async move {
                d.create_exec(&name, config).await
            })
            .await?;
        let exec_id = created.id;
        let start = bollard::exec::StartExecOptions {
            detach: false,
            tty: opts.tty,
            output_capacity: Some(64 * 1024),
        };
        let eid = exec_id.clone();
        let started = self
            .call("exec start", Some(id), CALL_TIMEOUT, |d| async move {
                d.start_exec(&eid, Some(start)).await
            })
            .await?;
        let bollard::exec::StartExecResults::Attached { output, input } = started else {
            return Err(TransportError::new(
                &self.node,
                "exec start",
                ErrorKind::Api { status: 500 },
                "the engine started the command detached",
            )
            .with_object(id));
        };
        let node = self.node.clone();
        let object = id.to_string();
        let output = output
            .filter_map(move |item| {
                let mapped = match item {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        Some(Ok(super::ExecOutput::Stderr(message)))
                    }
                    Ok(
                        bollard::container::LogOutput::StdOut { message }
                        | bollard::container::LogOutput::Console { message },
                    ) => Some(Ok(super::ExecOutput::Stdout(message))),
                    Ok(bollard::container::LogOutput::StdIn { .. }) => None,
                    Err(e) => Some(Err(map_error(&node, "exec output", Some(&object), e))),
                };
                std::future::ready(mapped)
            })
            .boxed();
        Ok(super::ExecSession {
            id: exec_id,
            output,
            input,
        })
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), TransportError> {
        let eid = exec_id.to_string();
        let options = bollard::query_parameters::ResizeExecOptionsBuilder::new()
            .w(i32::from(width))
            .h(i32::from(height))
            .build();
        self.call("exec resize", Some(exec_id), CALL_TIMEOUT, |d| async move {
            d.resize_exec(&eid, options).await
        })
        .await
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, TransportError> {
        let eid = exec_id.to_string();
        let inspected = self
            .call(
                "exec inspect",
                Some(exec_id),
                CALL_TIMEOUT,
                |d| async move { d.inspect_exec(&eid).await },
            )
            .await?;
        if inspected.running == Some(true) {
            return Ok(None);
        }
        Ok(inspected.exit_code)
    }

    async fn list_networks(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<NetworkRecord>, TransportError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !filter.labels.is_empty() {
            filters.insert("label".into(), filter.labels.clone());
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .call("list networks", None, CALL_TIMEOUT, |d| async move {
                d.list_networks(Some(options)).await
            })
            .await?;
        Ok(networks.iter().map(network_from_summary).collect())
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkRecord>, TransportError> {
        let owned = name.to_string();
        match self
            .call(
                "inspect network",
                Some(name),
                CALL_TIMEOUT,
                |d| async move { d.inspect_network(&owned, None).await },
            )
            .await
        {
            Ok(n) => {
                let record = network_from_inspect(&n);
                Ok(network_answers_to(&record, name).then_some(record))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, TransportError> {
        const OP: &str = "create network";
        // The API version is known only once connected: connect first (cheap when connected).
        let api = self.api().await.map_err(|e| match e.object {
            None => e.with_object(&spec.name),
            Some(_) => e,
        })?;
        let body = network_create_body(spec, api.version < ALWAYS_CHECK_DUPLICATE_API_VERSION);
        let answer = self
            .raw(
                OP,
                Some(&spec.name),
                CALL_TIMEOUT,
                http::Method::POST,
                "/networks/create",
                Some(body),
            )
            .await?;
        let created: NetworkCreated = serde_json::from_slice(&answer).map_err(|e| {
            TransportError::new(
                &self.node,
                OP,
                ErrorKind::Other,
                format!("malformed answer from the engine: {e}"),
            )
            .with_object(&spec.name)
        })?;
        if let Some(w) = created.warning.as_deref().filter(|w| !w.is_empty()) {
            tracing::warn!(node = %self.node, network = %spec.name, warning = %w, "engine warning on network create");
        }
        Ok(created.id)
    }

    async fn remove_network(&self, id: &str) -> Result<(), TransportError> {
        let owned = id.to_string();
        self.call("remove network", Some(id), CALL_TIMEOUT, |d| async move {
            d.remove_network(&owned).await
        })
        .await
        .map_err(network_in_use_is_conflict)
    }

    async fn swarm_init(
        &self,
        advertise_addr: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, TransportError> {
        let request = SwarmInitRequest {
            listen_addr: Some(swarm_listen_addr(advertise_addr)),
            advertise_addr: Some(advertise_addr.to_string()),
            spec: Some(bollard::models::SwarmSpec {
                labels: Some(labels.clone().into_iter().collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.call(
            "swarm init",
            Some(advertise_addr),
            SWARM_TIMEOUT,
            |d| async move { d.init_swarm(request).await },
        )
        .await
        .map_err(swarm_refusal)
    }

    async fn swarm_labels(&self) -> Result<BTreeMap<String, String>, TransportError> {
        const OP: &str = "swarm inspect";
        // Raw, as for the tokens: the same answer holds them.
        let answer = self
            .raw(OP, None, CALL_TIMEOUT, http::Method::GET, "/swarm", None)
            .await?;
        swarm_labels_from(&answer).map_err(|why| {
            TransportError::new(
                &self.node,
                OP,
                ErrorKind::Other,
                format!("malformed answer from the engine: {why}"),
            )
        })
    }

    async fn swarm_join_tokens(&self) -> Result<JoinTokens, TransportError> {
        const OP: &str = "swarm inspect";
        // Not bollard's `inspect_swarm`: bollard logs every decoded answer at debug level, and
        // this one holds the join tokens.
        let answer = self
            .raw(OP, None, CALL_TIMEOUT, http::Method::GET, "/swarm", None)
            .await?;
        join_tokens_from(&answer).map_err(|why| {
            TransportError::new(
                &self.node,
                OP,
                ErrorKind::Other,
                format!("malformed answer from the engine: {why}"),
            )
        })
    }

    async fn swarm_join(
        &self,
        advertise_addr: &str,
        remote_addr: &str,
        token: &str,
    ) -> Result<(), TransportError> {
        // Not bollard's `join_swarm`: bollard logs every request body at debug level, and this
        // one holds the token. Whatever the engine says back is redacted too.
        let body = swarm_join_body(advertise_addr, remote_addr, token);
        self.raw(
            "swarm join",
            Some(remote_addr),
            SWARM_TIMEOUT,
            http::Method::POST,
            "/swarm/join",
            Some(body),
        )
        .await
        .map(|_| ())
        .map_err(|e| redact_join_token(swarm_refusal(e), token))
    }

    async fn swarm_leave(&self, force: bool) -> Result<(), TransportError> {
        let options = LeaveSwarmOptionsBuilder::new().force(force).build();
        self.call("swarm leave", None, SWARM_TIMEOUT, |d| async move {
            d.leave_swarm(Some(options)).await
        })
        .await
        .map_err(swarm_refusal)
    }

    async fn swarm_members(&self) -> Result<Vec<SwarmMember>, TransportError> {
        let nodes = self
            .call("list swarm nodes", None, CALL_TIMEOUT, |d| async move {
                d.list_nodes(None).await
            })
            .await?;
        Ok(nodes.iter().map(member_from_node).collect())
    }

    async fn swarm_set_role(
        &self,
        id: &str,
        version: u64,
        role: SwarmRole,
    ) -> Result<(), TransportError> {
        const OP: &str = "update swarm node";
        // The update replaces the whole spec: start from the node's own, so that availability
        // (a drained node stays drained), labels and name survive the role change.
        let owned = id.to_string();
        let node = self
            .call(
                "inspect swarm node",
                Some(id),
                CALL_TIMEOUT,
                |d| async move { d.inspect_node(&owned).await },
            )
            .await?;
        let current = node.version.as_ref().and_then(|v| v.index).unwrap_or(0);
        if current != version {
            return Err(TransportError::new(
                &self.node,
                OP,
                ErrorKind::Conflict,
                format!(
                    "the node changed since it was listed (version {version}, now {current}): \
                     list the members again"
                ),
            )
            .with_object(id));
        }
        let spec = node_spec_with_role(node.spec.clone().unwrap_or_default(), role);
        let options = UpdateNodeOptionsBuilder::new()
            .version(i64::try_from(version).unwrap_or(i64::MAX))
            .build();
        let owned = id.to_string();
        self.call(OP, Some(id), CALL_TIMEOUT, |d| async move {
            d.update_node(&owned, spec, options).await
        })
        .await
    }

    async fn swarm_remove_member(&self, id: &str) -> Result<(), TransportError> {
        let owned = id.to_string();
        let options = DeleteNodeOptionsBuilder::new().force(true).build();
        self.call(
            "remove swarm node",
            Some(id),
            CALL_TIMEOUT,
            |d| async move { d.delete_node(&owned, Some(options)).await },
        )
        .await
    }

    async fn usage(&self, id: &str) -> Result<super::Usage, TransportError> {
        let stats = self.one_shot_stats(id).await?;
        stats.as_ref().and_then(usage_of).ok_or_else(|| {
            TransportError::new(
                &self.node,
                "container stats",
                ErrorKind::Other,
                format!("container {id}: the engine sent no CPU figures"),
            )
        })
    }

    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        const OP: &str = "container events";
        let api = self.api().await?;
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), watched_events(api.engine.kind));
        if !filter.labels.is_empty() {
            filters.insert("label".into(), filter.labels.clone());
        }
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let docker = api.docker.clone();
        let wanted = filter.labels.clone();
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
                        Some(e) if has_labels(&e, &wanted) => Ok(e),
                        _ => continue,
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

    async fn logs(
        &self,
        id: &str,
        opts: super::LogOptions,
    ) -> Result<super::LogLines, TransportError> {
        let api = self.api().await.map_err(|e| e.with_object(id))?;
        let mut builder = LogsOptionsBuilder::new()
            .follow(opts.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(true);
        if let Some(since) = opts.since_ns {
            // The engine takes whole seconds here: ask from the second before, and drop the
            // lines before `since` below.
            let secs = since.div_euclid(1_000_000_000);
            builder = builder.since(i32::try_from(secs.max(0)).unwrap_or(i32::MAX));
        }
        if let Some(n) = opts.tail {
            builder = builder.tail(&n.to_string());
        }
        let frames = api.docker.logs(id, Some(builder.build()));
        Ok(log_lines(
            frames.boxed(),
            &self.node,
            id,
            opts.since_ns.unwrap_or(i64::MIN),
        ))
    }
}

/// The lines of a container's log from the engine's decoded answer (`frames`): assembled by
/// [`super::logs::LineAssembler`] (a last line without its newline comes out at the end), the
/// lines before `since_ns` dropped (the engine's `since` is whole seconds), an error mapped
/// with `node` and `container` and ending the stream.
pub fn log_lines(
    frames: BoxStream<'static, Result<bollard::container::LogOutput, bollard::errors::Error>>,
    node: &str,
    container: &str,
    since_ns: i64,
) -> super::LogLines {
    use super::logs::{Chunk, LineAssembler};
    use bollard::container::LogOutput;
    const OP: &str = "container logs";
    let (node, object) = (node.to_string(), container.to_string());
    // (frames, assembler, lines ready, ended)
    let state = (
        frames,
        LineAssembler::new(),
        std::collections::VecDeque::new(),
        false,
    );
    futures_util::stream::unfold(state, move |(mut frames, mut asm, mut ready, mut ended)| {
        let (node, object) = (node.clone(), object.clone());
        async move {
            loop {
                if let Some(line) = ready.pop_front() {
                    return Some((Ok(line), (frames, asm, ready, ended)));
                }
                if ended {
                    return None;
                }
                let chunk = match frames.next().await {
                    None => {
                        ended = true;
                        ready.extend(asm.finish());
                        continue;
                    }
                    Some(Err(e)) => {
                        ended = true;
                        let e = map_error(&node, OP, Some(&object), e);
                        return Some((Err(e), (frames, asm, ready, ended)));
                    }
                    Some(Ok(LogOutput::StdOut { message })) => {
                        Chunk::Frame(super::LogStream::Stdout, message.to_vec())
                    }
                    Some(Ok(LogOutput::StdErr { message })) => {
                        Chunk::Frame(super::LogStream::Stderr, message.to_vec())
                    }
                    Some(Ok(LogOutput::Console { message })) => Chunk::Raw(message.to_vec()),
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                };
                ready.extend(asm.push(chunk));
            }
        }
    })
    .filter(move |l| std::future::ready(l.as_ref().map_or(true, |l| l.time_ns >= since_ns)))
    .boxed()
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

/// The kind of an engine's error answer. Docker says 404 and 409; Podman's compatible API answers
/// 500 to a create whose name is in use or whose network is missing, with the words.
pub fn status_kind(status: u16, message: &str) -> ErrorKind {
    match status {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        500 if message.contains("is already in use") => ErrorKind::Conflict,
        500 if message.contains("network not found") || message.contains("no such network") => {
            ErrorKind::NotFound
        }
        s => ErrorKind::Api { status: s },
    }
}

/// Maps a bollard error to a [`TransportError`]: 404 → NotFound, 409 → Conflict (and
/// Podman's 500s that mean them, [`status_kind`]), other statuses → Api, connection and channel
/// failures → Unreachable (or the SSH failure's own kind: HostKey, Auth, Timeout), bollard's
/// header timeout → Timeout.
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
        } => (status_kind(*status_code, message), message.clone()),
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

/// The create body for `spec` (the name goes in the query) at the negotiated API `api`.
///
/// The same body for every version from 1.41 (Docker 20.10, Podman 4.3) to 1.45 (Docker 26.1)
/// but one field, checked against the API's changes in between:
/// - 1.44 adds `HealthConfig.StartInterval`: sent from 1.44 when the healthcheck has a start
///   period (`start_interval`); older engines never see it.
/// - 1.44 deprecates the container-level `MacAddress` for the endpoint's: fleetctl sends
///   neither.
/// - 1.44 accepts several `EndpointsConfig` entries at create (below it one, the others by
///   `network connect`): fleetctl attaches at most one network, named by `NetworkMode`.
/// - 1.42 (bind `CreateMountpoint`, `KernelMemory` dropped), 1.43 (`HostConfig.Annotations`)
///   and 1.45 (volume `Subpath`) touch fields fleetctl does not send.
pub fn create_body(spec: &ContainerSpec, api: ApiVersion) -> ContainerCreateBody {
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
    let (network_mode, networking_config) = network_config(&spec.network);
    let host_config = HostConfig {
        network_mode,
        memory: nonzero_i64(r.memory),
        memory_reservation: r.memory_reservation.and_then(nonzero_i64),
        nano_cpus: r.nano_cpus.and_then(nonzero_i64),
        cpu_shares: r.cpu_shares.and_then(nonzero_i64),
        cpuset_cpus: r.cpuset.clone().filter(|c| !c.is_empty()),
        restart_policy: Some(restart_policy(spec.restart)),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
        log_config: log_config(&spec.knobs),
        ulimits: (!spec.knobs.ulimits.is_empty()).then(|| {
            spec.knobs
                .ulimits
                .iter()
                .map(|(name, u)| bollard::models::ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        sysctls: (!spec.knobs.sysctls.is_empty()).then(|| {
            spec.knobs
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        cap_add: (!spec.knobs.cap_add.is_empty()).then(|| spec.knobs.cap_add.clone()),
        cap_drop: (!spec.knobs.cap_drop.is_empty()).then(|| spec.knobs.cap_drop.clone()),
        readonly_rootfs: spec.knobs.read_only.then_some(true),
        ..Default::default()
    };
    ContainerCreateBody {
        user: spec.knobs.user.clone(),
        working_dir: spec.knobs.working_dir.clone(),
        stop_signal: spec.knobs.stop_signal.clone(),
        image: Some(spec.run_image()),
        cmd: spec.command.clone(),
        // Secret variables only here, in the engine's create body (SPEC §12); validation made
        // sure a secret used as a variable is text.
        env: (!spec.env.is_empty() || !spec.secret_env.is_empty()).then(|| {
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(
                    spec.secret_env
                        .iter()
                        .map(|(k, s)| format!("{k}={}", String::from_utf8_lossy(s.value.expose()))),
                )
                .collect()
        }),
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
            start_interval: start_interval(h, api).map(duration_ns),
        }),
        stop_timeout: spec.stop_grace_period.map(|d| {
            i64::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(i64::MAX)
        }),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

/// `HealthConfig.StartInterval` for `h` at API `api`: with a start period and API ≥ 1.44,
/// [`HEALTH_START_INTERVAL`] (or the interval when shorter), so the first probe runs early;
/// otherwise none (older engines, and Podman, which answers as 1.41, do not know the field).
/// Inspect does not read it back into the spec: it never shows as drift.
fn start_interval(h: &crate::container::HealthcheckSpec, api: ApiVersion) -> Option<Duration> {
    let disabled = h.test.first().is_some_and(|t| t == "NONE");
    if api < START_INTERVAL_API_VERSION || disabled || h.start_period.is_none_or(|p| p.is_zero()) {
        return None;
    }
    Some(
        h.interval
            .filter(|i| !i.is_zero())
            .map_or(HEALTH_START_INTERVAL, |i| i.min(HEALTH_START_INTERVAL)),
    )
}

/// `HostConfig.LogConfig` for the json-file rotation of `knobs`; `None` (the engine's logging)
/// when no rotation is asked for. The size goes as a plain byte count, which the driver reads
/// as such.
fn log_config(knobs: &Knobs) -> Option<bollard::models::HostConfigLogConfig> {
    let size = knobs.log_max_size?;
    let mut config = HashMap::from([("max-size".to_string(), size.to_string())]);
    if let Some(files) = knobs.log_max_files {
        config.insert("max-file".to_string(), files.to_string());
    }
    Some(bollard::models::HostConfigLogConfig {
        typ: Some("json-file".to_string()),
        config: Some(config),
    })
}

/// A `max-size` as the engine holds it: a byte count, or a number with a binary unit (`k`,
/// `m`, `g`, optionally followed by `b`), as `docker run --log-opt` may have written it.
fn log_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.strip_suffix('b').unwrap_or(&lower);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// The knobs of an inspected container. The user, working directory and stop signal are what
/// the engine reports, which is the image's when the container was created without them.
fn knobs_from_inspect(r: &ContainerInspectResponse) -> Knobs {
    let config = r.config.as_ref();
    let hc = r.host_config.as_ref();
    let mut knobs = Knobs::default();
    if let Some(log) = hc.and_then(|h| h.log_config.as_ref())
        && log.typ.as_deref() == Some("json-file")
        && let Some(opts) = &log.config
    {
        knobs.log_max_size = opts.get("max-size").and_then(|s| log_size(s));
        knobs.log_max_files = opts.get("max-file").and_then(|s| s.trim().parse().ok());
    }
    knobs.ulimits = hc
        .and_then(|h| h.ulimits.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|u| {
            Some((
                u.name.clone()?,
                Ulimit {
                    soft: u.soft.unwrap_or(0),
                    hard: u.hard.unwrap_or(0),
                },
            ))
        })
        .collect();
    knobs.sysctls = hc
        .and_then(|h| h.sysctls.as_ref())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let caps = |v: Option<&Vec<String>>| {
        let mut out: Vec<String> = v.into_iter().flatten().cloned().collect();
        out.sort();
        out.dedup();
        out
    };
    knobs.cap_add = caps(hc.and_then(|h| h.cap_add.as_ref()));
    knobs.cap_drop = caps(hc.and_then(|h| h.cap_drop.as_ref()));
    knobs.read_only = hc.and_then(|h| h.readonly_rootfs).unwrap_or(false);
    let set = |v: Option<&String>| v.filter(|s| !s.is_empty()).cloned();
    knobs.user = set(config.and_then(|c| c.user.as_ref()));
    knobs.working_dir = set(config.and_then(|c| c.working_dir.as_ref()));
    knobs.stop_signal = set(config.and_then(|c| c.stop_signal.as_ref()));
    knobs
}

/// `HostConfig.NetworkMode` and `NetworkingConfig` for an attachment: nothing for the engine's
/// default bridge; `host` / `none`; a fleet network by name, with the container's aliases on it.
fn network_config(network: &NetworkAttachment) -> (Option<String>, Option<NetworkingConfig>) {
    match network {
        NetworkAttachment::Default => (None, None),
        NetworkAttachment::Host => (Some("host".to_string()), None),
        NetworkAttachment::None => (Some("none".to_string()), None),
        NetworkAttachment::Fleet { network, aliases } => (
            Some(network.clone()),
            Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        aliases: (!aliases.is_empty()).then(|| aliases.clone()),
                        ..Default::default()
                    },
                )])),
            }),
        ),
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
        networks: network_names(
            s.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref()),
        ),
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

/// Docker's healthcheck interval (and timeout) when a container sets none.
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// Containers whose last probe time is kept before old ones are forgotten.
const PROBE_MEMORY: usize = 512;
/// A probe time older than this is forgotten once [`PROBE_MEMORY`] is exceeded.
const PROBE_FORGET_AFTER: Duration = Duration::from_secs(3600);

/// What [`podman_probe_due`] decides on, read from one inspect answer ([`probe_facts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeFacts {
    /// The container runs.
    pub running: bool,
    /// Its health as the engine reports it (`None`: no healthcheck).
    pub health: Option<Health>,
    /// Its healthcheck interval (30 s when unset).
    pub interval: Duration,
    /// Age of its newest health log entry (`None`: no entry, or none with a readable time).
    pub newest_log_age: Option<Duration>,
    /// Time since fleetctl last ran a probe of it (`None`: never, in this process).
    pub since_last_probe: Option<Duration>,
}

/// Whether fleetctl should run a Podman container's health probe itself: it runs with a
/// healthcheck whose health is still `starting` (the systemd timer that should probe it is
/// missing, or has not run yet), and no probe of fleetctl's ran within [`PODMAN_PROBE_PACE`]
/// (or the interval, when shorter). A container already judged (healthy or unhealthy) is never
/// probed: reading it — a `plan`, a no-op `apply`, `get` — changes nothing on the node. Never
/// true for a stopped container or one without a healthcheck.
pub fn podman_probe_due(f: &ProbeFacts) -> bool {
    if !f.running || f.health.is_none() {
        return false;
    }
    if f.since_last_probe
        .is_some_and(|d| d < f.interval.min(PODMAN_PROBE_PACE))
    {
        return false;
    }
    f.health == Some(Health::Starting)
}

/// The least time between two probes fleetctl runs of one starting Podman container: a
/// starting app is asked about once a second, not once per (often 30 s) interval.
pub const PODMAN_PROBE_PACE: Duration = Duration::from_secs(1);

/// The facts [`podman_probe_due`] needs, from an inspect answer read at `now`.
pub fn probe_facts(
    r: &ContainerInspectResponse,
    now: std::time::SystemTime,
    since_last_probe: Option<Duration>,
) -> ProbeFacts {
    let state = r.state.as_ref();
    let health = state.and_then(|s| s.health.as_ref());
    let interval = r
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.interval)
        .and_then(|ns| u64::try_from(ns).ok())
        .filter(|ns| *ns > 0)
        .map_or(DEFAULT_HEALTH_INTERVAL, Duration::from_nanos);
    let newest = health
        .and_then(|h| h.log.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| e.end.as_deref().or(e.start.as_deref()))
        .filter_map(parse_timestamp)
        .max();
    ProbeFacts {
        running: state
            .and_then(|s| s.status)
            .map(|s| RunState::parse(s.as_ref()))
            == Some(RunState::Running),
        health: health.and_then(|h| health_from_enum(h.status)),
        interval,
        newest_log_age: newest.map(|t| now.duration_since(t).unwrap_or_default()),
        since_last_probe,
    }
}

/// An RFC 3339 time as engines write it: `Z` or a numeric offset (Podman writes the node's
/// local time, e.g. `2026-12-04T10:00:00.123456789+01:00`), with or without fractions.
fn parse_timestamp(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim();
    // A trailing `±HH:MM` (humantime would read the time as UTC and drop the offset).
    let b = s.as_bytes();
    let n = b.len();
    let offset = (n > 19 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':').then(|| {
        let (h, m) = (&s[n - 5..n - 3], &s[n - 2..]);
        Some((
            b[n - 6] == b'-',
            h.parse::<u64>().ok()? * 3600 + m.parse::<u64>().ok()? * 60,
        ))
    });
    match offset {
        None => humantime::parse_rfc3339_weak(s).ok(),
        Some(None) => None,
        Some(Some((west, secs))) => {
            let local = humantime::parse_rfc3339_weak(&s[..n - 6]).ok()?;
            // Local time minus its offset is UTC.
            let secs = Duration::from_secs(secs);
            if west {
                local.checked_add(secs)
            } else {
                local.checked_sub(secs)
            }
        }
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
            networks: network_names(
                r.network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref()),
            ),
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
    let name = r
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    ContainerSpec {
        secret_env: Default::default(),
        files: Vec::new(),
        knobs: knobs_from_inspect(r),
        pull: Default::default(),
        network: network_attachment(
            hc.and_then(|h| h.network_mode.as_deref()),
            r.network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref()),
            r.id.as_deref().unwrap_or_default(),
            &name,
            config.and_then(|c| c.hostname.as_deref()),
        ),
        name,
        image: config.and_then(|c| c.image.clone()).unwrap_or_default(),
        command: config.and_then(|c| c.cmd.clone()),
        // The values of secret variables are left on the node: nothing that reads a spec back
        // (plans, outputs, logs) holds them. The label says which variables they are.
        env: {
            let secret_vars = config
                .and_then(|c| c.labels.as_ref())
                .and_then(|l| l.get(crate::container::labels::SECRET_ENV))
                .map(|v| {
                    crate::secrets::parse_label(v)
                        .into_keys()
                        .map(str::to_string)
                        .collect::<std::collections::BTreeSet<_>>()
                })
                .unwrap_or_default();
            config
                .and_then(|c| c.env.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .filter(|(k, _)| !secret_vars.contains(k))
                .collect()
        },
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

/// A stats reading as [`Usage`](super::Usage): the container's and the host's CPU counters,
/// the CPUs online and the memory working set; `None` without CPU figures (a container that
/// is not running).
pub fn usage_of(s: &ContainerStatsResponse) -> Option<super::Usage> {
    let cpu = s.cpu_stats.as_ref()?;
    let total = cpu.cpu_usage.as_ref()?.total_usage?;
    let system = cpu.system_cpu_usage.filter(|v| *v > 0)?;
    let online = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map(|p| p.len() as u32)
        })
        .unwrap_or(1);
    Some(super::Usage {
        cpu_total_ns: total,
        system_ns: system,
        online_cpus: online,
        memory: memory_working_set(s),
    })
}

/// Whether `e` carries every `key=value` (or `key`) of `labels`. The engine filtered already,
/// but Podman ORs several label filters where Docker ANDs them: checked again here.
pub fn has_labels(e: &EngineEvent, labels: &[String]) -> bool {
    labels.iter().all(|l| match l.split_once('=') {
        Some((k, v)) => e.labels.get(k).is_some_and(|have| have == v),
        None => e.labels.contains_key(l.as_str()),
    })
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

/// Credentials as bollard sends them (`X-Registry-Auth`).
fn docker_credentials(auth: &RegistryAuth) -> bollard::auth::DockerCredentials {
    bollard::auth::DockerCredentials {
        username: (!auth.username.is_empty()).then(|| auth.username.clone()),
        password: (!auth.password.is_empty()).then(|| auth.password.clone()),
        serveraddress: Some(auth.server.clone()),
        identitytoken: auth.identity_token.clone(),
        ..Default::default()
    }
}

/// Why a registry refused, from the engine's status and words (the engine reports a
/// registry's answer as text; its status is 404 for a missing manifest, 401 or 500 otherwise).
pub fn registry_cause(status: Option<u16>, message: &str) -> RegistryCause {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&[
        "dial tcp",
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "tls:",
        "x509:",
        "certificate signed by unknown authority",
        "http response to https client",
        "context deadline exceeded",
        "connection reset by peer",
    ]) {
        RegistryCause::Unreachable
    } else if status == Some(401)
        || status == Some(403)
        || any(&[
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "incorrect username or password",
            "access denied",
            "denied:",
        ])
    {
        RegistryCause::Unauthorized
    } else if status == Some(404)
        || any(&[
            "manifest unknown",
            "not found",
            "does not exist",
            "name unknown",
        ])
    {
        RegistryCause::NotFound
    } else {
        RegistryCause::Refused
    }
}

/// Turns an engine's refusal of a pull or digest lookup of `image` into a registry error
/// naming the cause and the registry; the node's own failures (unreachable, timeout) stay.
fn registry_error(e: TransportError, image: &str) -> TransportError {
    let status = match e.kind {
        ErrorKind::NotFound => Some(404),
        ErrorKind::Api { status } => Some(status),
        ErrorKind::Other => None,
        _ => return e,
    };
    let cause = registry_cause(status, &e.message);
    if cause == RegistryCause::Refused {
        // Not in a registry's words: the node's own failure (disk full, a layer that does not
        // register), said as the engine said it.
        return e;
    }
    TransportError {
        message: format!(
            "registry {}: {cause}: {}",
            crate::registry::registry_host(image),
            e.message
        ),
        kind: ErrorKind::Registry(cause),
        ..e
    }
}

/// What the engine has said so far about the layers of one pull.
#[derive(Default)]
struct PullLayers {
    /// Per layer id: (bytes done, bytes total, finished).
    layers: BTreeMap<String, (u64, u64, bool)>,
}

impl PullLayers {
    /// Takes one progress message; whether anything changed.
    fn note(&mut self, info: &bollard::models::CreateImageInfo) -> bool {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return false;
        };
        // Messages about the tag or digest as a whole carry its name, not a layer id.
        if id.contains(':') || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
        let entry = self.layers.entry(id.clone()).or_default();
        match status.as_str() {
            "Pull complete" | "Already exists" => entry.2 = true,
            "Downloading" => {
                if let Some(d) = &info.progress_detail {
                    entry.0 = d.current.unwrap_or(0).max(0) as u64;
                    entry.1 = d.total.unwrap_or(0).max(0) as u64;
                }
            }
            "Download complete" => entry.0 = entry.1,
            _ => {}
        }
        true
    }

    fn progress(&self) -> PullProgress {
        PullProgress {
            layers_done: self.layers.values().filter(|l| l.2).count(),
            layers: self.layers.len(),
            bytes_done: self.layers.values().map(|l| l.0).sum(),
            bytes: self.layers.values().map(|l| l.1).sum(),
        }
    }
}

/// Names of the networks of a container's `NetworkSettings.Networks`, sorted.
fn network_names(networks: Option<&HashMap<String, EndpointSettings>>) -> Vec<String> {
    let mut names: Vec<String> = networks
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names
}

/// A container's [`NetworkAttachment`] from its inspect: `HostConfig.NetworkMode` says which
/// network; for a user network, the aliases are that endpoint's, less the names the engine
/// gives every container by itself. Below API 1.45 the engine adds the 12-hex short id to
/// `Aliases`; from API 1.44 `DNSNames` lists every name the container resolves as: its name,
/// the aliases, the short id and its host name (by default the short id too).
///
/// A user alias that happens to equal the container's name or host name is kept when
/// `Aliases` has it (API < 1.45 and ≥ 1.45 both keep user aliases there).
pub fn network_attachment(
    network_mode: Option<&str>,
    networks: Option<&HashMap<String, EndpointSettings>>,
    container_id: &str,
    container_name: &str,
    hostname: Option<&str>,
) -> NetworkAttachment {
    match network_mode.unwrap_or_default() {
        "" | "default" | "bridge" => NetworkAttachment::Default,
        "host" => NetworkAttachment::Host,
        "none" => NetworkAttachment::None,
        network => {
            let short_id = container_id.get(..12).unwrap_or(container_id);
            let endpoint = networks.and_then(|n| n.get(network));
            let mut aliases: Vec<String> = endpoint
                .and_then(|e| e.aliases.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.as_str() != short_id)
                .cloned()
                .collect();
            aliases.extend(
                endpoint
                    .and_then(|e| e.dns_names.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|a| {
                        a.as_str() != short_id
                            && a.as_str() != container_name
                            && Some(a.as_str()) != hostname
                    })
                    .cloned(),
            );
            aliases.retain(|a| !a.is_empty());
            aliases.sort();
            aliases.dedup();
            NetworkAttachment::Fleet {
                network: network.to_string(),
                aliases,
            }
        }
    }
}

/// The swarm section of `GET /info`.
pub fn swarm_info_from(s: Option<&bollard::models::SwarmInfo>) -> SwarmInfo {
    let Some(s) = s else {
        return SwarmInfo::default();
    };
    let count = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let mut remote_managers: Vec<String> = s
        .remote_managers
        .iter()
        .flatten()
        .filter_map(|p| p.addr.clone())
        .filter(|a| !a.is_empty())
        .collect();
    remote_managers.sort();
    SwarmInfo {
        state: SwarmState::parse(
            &s.local_node_state
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
        node_id: s.node_id.clone().unwrap_or_default(),
        node_addr: s.node_addr.clone().unwrap_or_default(),
        manager: s.control_available.unwrap_or(false),
        cluster_id: s
            .cluster
            .as_ref()
            .and_then(|c| c.id.clone())
            .filter(|i| !i.is_empty()),
        error: s.error.clone().filter(|e| !e.is_empty()),
        remote_managers,
        nodes: count(s.nodes),
        managers: count(s.managers),
    }
}

/// A network from a listing (no containers).
pub fn network_from_summary(n: &Network) -> NetworkRecord {
    network_record(
        n.id.as_deref(),
        n.name.as_deref(),
        n.driver.as_deref(),
        n.scope.as_deref(),
        n.labels.as_ref(),
        n.ipam.as_ref(),
        n.options.as_ref(),
    )
}

/// A network from an inspect, with the containers attached on this node (name → IPv4 address).
/// The load-balancer endpoint the engine keeps on an overlay (`lb-<network>`) is no container
/// and is left out.
pub fn network_from_inspect(n: &NetworkInspect) -> NetworkRecord {
    let mut record = network_record(
        n.id.as_deref(),
        n.name.as_deref(),
        n.driver.as_deref(),
        n.scope.as_deref(),
        n.labels.as_ref(),
        n.ipam.as_ref(),
        n.options.as_ref(),
    );
    record.containers = n
        .containers
        .iter()
        .flatten()
        .filter(|(key, _)| !key.starts_with("lb-"))
        .filter_map(|(_, e)| {
            let name = e.name.clone().filter(|n| !n.is_empty())?;
            Some((name, e.ipv4_address.clone().unwrap_or_default()))
        })
        .collect();
    record
}

fn network_record(
    id: Option<&str>,
    name: Option<&str>,
    driver: Option<&str>,
    scope: Option<&str>,
    labels: Option<&HashMap<String, String>>,
    ipam: Option<&Ipam>,
    options: Option<&HashMap<String, String>>,
) -> NetworkRecord {
    let sorted = |m: Option<&HashMap<String, String>>| {
        m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    NetworkRecord {
        id: id.unwrap_or_default().to_string(),
        name: name.unwrap_or_default().to_string(),
        driver: driver.unwrap_or_default().to_string(),
        scope: scope.unwrap_or_default().to_string(),
        labels: sorted(labels),
        subnet: ipam
            .and_then(|i| i.config.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.subnet.clone())
            .find(|s| !s.contains(':')),
        options: sorted(options),
        containers: BTreeMap::new(),
    }
}

/// Whether the network the engine returned for `GET /networks/{query}` is the one asked for.
/// The engine falls back to an id *prefix* when no network has the name: asking for a missing
/// network `cafe` would return another whose id starts with `cafe`. A prefix counts only when
/// it is at least a short id (12 characters).
pub fn network_answers_to(record: &NetworkRecord, query: &str) -> bool {
    record.name == query
        || record.id == query
        || (query.len() >= 12 && record.id.starts_with(query))
}

/// The JSON body of `POST /networks/create` for `spec`. `check_duplicate` (engines below API
/// 1.44) adds `CheckDuplicate: true`, without which those engines create a second network of
/// the same name; later engines always refuse and ignore the field.
///
/// Overlays are attachable (standalone containers join them). `encrypted` is an option the
/// engine acts on when it is present, whatever its value: it is sent only for `encrypted`.
pub fn network_create_body(spec: &NetworkSpec, check_duplicate: bool) -> Vec<u8> {
    let mut options: HashMap<String, String> = HashMap::new();
    if let Some(mtu) = spec.mtu {
        options.insert("com.docker.network.driver.mtu".into(), mtu.to_string());
    }
    if spec.encrypted {
        options.insert("encrypted".into(), String::new());
    }
    let request = NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some(spec.driver.as_str().to_string()),
        attachable: (spec.driver == NetworkDriver::Overlay).then_some(true),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        ipam: spec.subnet.as_ref().map(|subnet| Ipam {
            driver: Some("default".into()),
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.clone()),
                ..Default::default()
            }]),
            options: None,
        }),
        options: (!options.is_empty()).then_some(options),
        ..Default::default()
    };
    let mut json = serde_json::to_value(&request).expect("a network create request serializes");
    if check_duplicate && let Some(o) = json.as_object_mut() {
        o.insert("CheckDuplicate".into(), serde_json::Value::Bool(true));
    }
    serde_json::to_vec(&json).expect("JSON serializes")
}

/// The answer of a network create (`Warning` is absent on some engines).
#[derive(serde::Deserialize)]
struct NetworkCreated {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Warning", default)]
    warning: Option<String>,
}

/// A network that still has endpoints cannot be removed: the engine says so with 403 (a local
/// network: "has active endpoints") or a 4xx/5xx from the swarm (an overlay: "is in use").
/// Either is the busy object [`ErrorKind::Conflict`] stands for.
pub fn network_in_use_is_conflict(mut e: TransportError) -> TransportError {
    if matches!(e.kind, ErrorKind::Api { .. })
        && (e.message.contains("active endpoints") || e.message.contains("in use"))
    {
        e.kind = ErrorKind::Conflict;
    }
    e
}

/// The engine refuses swarm calls that do not fit the node's membership with 503; two of them
/// are answers rather than faults: init or join on a node already in a swarm
/// ([`ErrorKind::Conflict`]), leave on a node in none ([`ErrorKind::NotFound`]).
pub fn swarm_refusal(mut e: TransportError) -> TransportError {
    if e.kind == (ErrorKind::Api { status: 503 }) {
        if e.message.contains("already part of a swarm") {
            e.kind = ErrorKind::Conflict;
        } else if e.message.contains("not part of a swarm") {
            e.kind = ErrorKind::NotFound;
        }
    }
    e
}

/// The JSON body of `POST /swarm/join`. Holds the token: never log it.
fn swarm_join_body(advertise_addr: &str, remote_addr: &str, token: &str) -> Vec<u8> {
    serde_json::to_vec(&SwarmJoinRequest {
        listen_addr: Some(swarm_listen_addr(advertise_addr)),
        advertise_addr: Some(advertise_addr.to_string()),
        remote_addrs: Some(vec![remote_addr.to_string()]),
        join_token: Some(token.to_string()),
        ..Default::default()
    })
    .expect("a swarm join request serializes")
}

/// The join tokens of a `GET /swarm` answer. The error says what is wrong without quoting it.
/// The swarm's `Spec.Labels` from a `GET /swarm` answer (nothing else of it is kept).
fn swarm_labels_from(answer: &[u8]) -> Result<BTreeMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(rename = "Labels", default)]
        labels: Option<BTreeMap<String, String>>,
    }
    #[derive(serde::Deserialize)]
    struct Swarm {
        #[serde(rename = "Spec", default)]
        spec: Option<Spec>,
    }
    let swarm: Swarm = serde_json::from_slice(answer).map_err(|e| e.to_string())?;
    Ok(swarm.spec.and_then(|s| s.labels).unwrap_or_default())
}

fn join_tokens_from(answer: &[u8]) -> Result<JoinTokens, String> {
    #[derive(serde::Deserialize)]
    struct Swarm {
        #[serde(rename = "JoinTokens")]
        join_tokens: Option<bollard::models::JoinTokens>,
    }
    let swarm: Swarm = serde_json::from_slice(answer).map_err(|e| e.to_string())?;
    let tokens = swarm
        .join_tokens
        .ok_or_else(|| "no JoinTokens in the swarm inspect".to_string())?;
    match (tokens.worker, tokens.manager) {
        (Some(worker), Some(manager)) if !worker.is_empty() && !manager.is_empty() => {
            Ok(JoinTokens { worker, manager })
        }
        _ => Err("the swarm inspect lacks a join token".to_string()),
    }
}

/// `text` with `token`, and anything that looks like a swarm token (`SWMTKN-…`, in case the
/// engine quotes a part or another one), replaced by [`JOIN_TOKEN_REDACTED`].
pub fn redact_token_text(text: &str, token: &str) -> String {
    let text = if token.is_empty() {
        text.to_string()
    } else {
        text.replace(token, JOIN_TOKEN_REDACTED)
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("SWMTKN-") {
        out.push_str(&rest[..at]);
        out.push_str(JOIN_TOKEN_REDACTED);
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A join failure with the token redacted from its message and cause; the cause is kept as
/// redacted text only (the original error's `Debug` would show the engine's words as they were).
pub fn redact_join_token(e: TransportError, token: &str) -> TransportError {
    let cause = e.cause().map(|c| redact_token_text(&chain_text(c), token));
    let mut redacted = TransportError::new(
        e.node.clone(),
        e.op,
        e.kind.clone(),
        redact_token_text(&e.message, token),
    );
    if let Some(object) = &e.object {
        redacted = redacted.with_object(redact_token_text(object, token));
    }
    match cause {
        Some(c) => redacted.with_source(c),
        None => redacted,
    }
}

/// One node of `GET /nodes` as a [`SwarmMember`]. Its address is `Status.Addr`; some engines
/// report `0.0.0.0` there for a manager, whose `ManagerStatus.Addr` (`ip:port`) then gives it.
pub fn member_from_node(n: &Node) -> SwarmMember {
    let status = n.status.as_ref();
    let manager = n.manager_status.as_ref();
    let mut addr = status.and_then(|s| s.addr.clone()).unwrap_or_default();
    if (addr.is_empty() || addr == "0.0.0.0")
        && let Some(a) = manager.and_then(|m| m.addr.as_deref())
    {
        let host = a.rsplit_once(':').map_or(a, |(h, _)| h);
        if !host.is_empty() {
            addr = host.to_string();
        }
    }
    SwarmMember {
        id: n.id.clone().unwrap_or_default(),
        version: n.version.as_ref().and_then(|v| v.index).unwrap_or(0),
        hostname: n
            .description
            .as_ref()
            .and_then(|d| d.hostname.clone())
            .unwrap_or_default(),
        addr,
        role: match n.spec.as_ref().and_then(|s| s.role) {
            Some(NodeSpecRoleEnum::MANAGER) => SwarmRole::Manager,
            _ => SwarmRole::Worker,
        },
        ready: status.and_then(|s| s.state) == Some(NodeState::READY),
        reachable: manager.and_then(|m| m.reachability) == Some(Reachability::REACHABLE),
        leader: manager.and_then(|m| m.leader).unwrap_or(false),
    }
}

/// `spec` (a node's current spec) with its role set to `role`; everything else as it was.
pub fn node_spec_with_role(
    mut spec: bollard::models::NodeSpec,
    role: SwarmRole,
) -> bollard::models::NodeSpec {
    spec.role = Some(match role {
        SwarmRole::Manager => NodeSpecRoleEnum::MANAGER,
        SwarmRole::Worker => NodeSpecRoleEnum::WORKER,
    });
    spec
}

/// A request for the [`connector::RawSender`]: `method` on `path` at API `version`, with the
/// JSON `body` (or none).
fn raw_request(
    method: http::Method,
    path: &str,
    version: &str,
    body: Option<Vec<u8>>,
) -> Result<bollard::BollardRequest, bollard::errors::Error> {
    let uri = format!(
        "{}{}",
        connector::CLIENT_ADDR,
        connector::versioned_path(path, version)
    );
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bollard::body_full(hyper::body::Bytes::from(
            body.unwrap_or_default(),
        )))?)
}

/// The API version `d` speaks (negotiated), as a path part wants it.
fn version_of(d: &Docker) -> String {
    let v = d.client_version();
    format!("{}.{}", v.major_version, v.minor_version)
}

/// A request for the [`connector::RawSender`]: `method` on `path` at API `version`, with
/// `body` of `content_type`.
fn raw_request_with<B>(
    method: http::Method,
    path: &str,
    version: &str,
    content_type: &str,
    body: B,
) -> Result<http::Request<B>, bollard::errors::Error> {
    let uri = format!(
        "{}{}",
        connector::CLIENT_ADDR,
        connector::versioned_path(path, version)
    );
    Ok(http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)?)
}

/// The first error of an image load's answer: JSON messages, one per line, where a failure is
/// `{"errorDetail":{"message":…},"error":…}` (the engine answers 200 before it knows).
pub fn load_stream_error(answer: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Detail {
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(rename = "errorDetail")]
        error_detail: Option<Detail>,
        error: Option<String>,
    }
    serde_json::Deserializer::from_slice(answer)
        .into_iter::<Message>()
        .filter_map(Result::ok)
        .find_map(|m| {
            let detail = m.error_detail.map(|d| d.message.unwrap_or_default());
            match (detail, m.error) {
                (Some(d), _) if !d.is_empty() => Some(d),
                (_, Some(e)) => Some(e),
                (Some(d), None) => Some(d),
                (None, None) => None,
            }
        })
}

/// The whole body of a response.
/// The engine's `system df` answer as fleetctl's model, from either shape: up to API 1.51
/// (`LayersSize`, `Images`, `Containers`, `Volumes`, `BuildCache`) or from 1.52
/// (`ImageUsage`, `ContainerUsage`, … with `Items` when asked `verbose`). An image's
/// `containers` is the larger of the engine's count and the containers listed with its id.
pub fn disk_from_df(v: &serde_json::Value) -> EngineDisk {
    let int = |v: &serde_json::Value| v.as_i64().map_or(0, |n| u64::try_from(n).unwrap_or(0));
    let items = |old: &str, new: &str| -> Vec<serde_json::Value> {
        v.get(old)
            .or_else(|| v.get(new).and_then(|u| u.get("Items")))
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str())
                    .filter(|s| !s.is_empty() && !s.starts_with("<none>"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = items("Containers", "ContainerUsage");
    // An engine that lists bare tags (`7`, `latest`) instead of `repository:tag` does not say
    // which image a manifest names: such images are left out, so nothing prunes them.
    let full_names = |i: &serde_json::Value| {
        i["RepoTags"].as_array().is_none_or(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str())
                .all(|t| t.contains(':'))
        }) && i["Id"].as_str().is_some_and(|id| id.starts_with("sha256:"))
    };
    let images: Vec<ImageUsage> = items("Images", "ImageUsage")
        .iter()
        .filter(|i| full_names(i))
        .map(|i| {
            let id = i["Id"].as_str().unwrap_or_default().to_string();
            let listed = containers
                .iter()
                .filter(|c| c["ImageID"].as_str() == Some(id.as_str()))
                .count() as u64;
            ImageUsage {
                tags: strings(&i["RepoTags"]),
                digests: strings(&i["RepoDigests"]),
                size: int(&i["Size"]),
                shared_size: int(&i["SharedSize"]),
                created: i["Created"].as_i64().unwrap_or(0),
                containers: int(&i["Containers"]).max(listed),
                id,
            }
        })
        .collect();
    let total = |new: &str| v.get(new).map(|u| int(&u["TotalSize"]));
    let sum = |list: &[serde_json::Value], field: &dyn Fn(&serde_json::Value) -> u64| -> u64 {
        list.iter().map(field).sum()
    };
    EngineDisk {
        images_bytes: v
            .get("LayersSize")
            .map(int)
            .or_else(|| total("ImageUsage"))
            .unwrap_or_else(|| images.iter().map(|i| i.size).sum()),
        containers_bytes: total("ContainerUsage")
            .unwrap_or_else(|| sum(&containers, &|c| int(&c["SizeRw"]))),
        volumes_bytes: total("VolumeUsage").unwrap_or_else(|| {
            sum(&items("Volumes", "VolumeUsage"), &|vol| {
                int(&vol["UsageData"]["Size"])
            })
        }),
        build_cache_bytes: total("BuildCacheUsage").unwrap_or_else(|| {
            sum(&items("BuildCache", "BuildCacheUsage"), &|b| {
                if b["Shared"].as_bool() == Some(true) {
                    0
                } else {
                    int(&b["Size"])
                }
            })
        }),
        images,
    }
}

/// The filesystem line of `df -Pk` (POSIX format, 1024-byte blocks): size, used, available.
/// `None` when the output has no such line.
pub fn parse_df(out: &str) -> Option<Filesystem> {
    let line = out.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // Filesystem, blocks, used, available, capacity, mount point (which may hold spaces).
    let kib = |i: usize| fields.get(i)?.parse::<u64>().ok()?.checked_mul(1024);
    Some(Filesystem {
        size: kib(1)?,
        used: kib(2)?,
        available: kib(3)?,
    })
}

/// `s` as one word for a POSIX shell: single-quoted, with each `'` closed, escaped and
/// reopened.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, bollard::errors::Error> {
    use hyper::body::Body;
    let mut out = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The engine's error text: the `message` of its JSON error body, else the body as text.
fn engine_error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{HealthcheckSpec, PortMapping, Protocol};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            secret_env: Default::default(),
            files: Vec::new(),
            knobs: Default::default(),
            pull: Default::default(),
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
            network: NetworkAttachment::Fleet {
                network: "aims-net".into(),
                aliases: vec!["web".into(), "www".into()],
            },
        }
    }

    #[test]
    fn create_body_maps_every_field_of_the_spec() {
        let b = create_body(&spec(), MIN_API_VERSION);
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
        assert_eq!(hc.network_mode.as_deref(), Some("aims-net"));
        let endpoints = b.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints["aims-net"].aliases,
            Some(vec!["web".to_string(), "www".to_string()])
        );
        let json = serde_json::to_value(create_body(&spec(), MIN_API_VERSION)).unwrap();
        assert_eq!(json["HostConfig"]["NetworkMode"], "aims-net");
        assert_eq!(
            json["NetworkingConfig"]["EndpointsConfig"]["aims-net"]["Aliases"],
            serde_json::json!(["web", "www"])
        );
    }

    #[test]
    fn create_body_adds_a_start_interval_from_api_1_44_and_nothing_else_changes() {
        let v = |s: &str| ApiVersion::parse(s).unwrap();
        let old = serde_json::to_value(create_body(&spec(), v("1.41"))).unwrap();
        assert!(old["Healthcheck"].get("StartInterval").is_none(), "{old}");
        for api in ["1.43", "1.41"] {
            assert_eq!(
                serde_json::to_value(create_body(&spec(), v(api))).unwrap(),
                old
            );
        }
        let new = serde_json::to_value(create_body(&spec(), v("1.45"))).unwrap();
        assert_eq!(new["Healthcheck"]["StartInterval"], 1_000_000_000_i64);
        let mut without = new.clone();
        without["Healthcheck"]
            .as_object_mut()
            .unwrap()
            .remove("StartInterval");
        assert_eq!(without, old, "every other field as for 1.41");
        assert!(new.get("MacAddress").is_none());
        // The interval when shorter; none without a start period (or with the check disabled).
        let with = |hc: crate::container::HealthcheckSpec| ContainerSpec {
            healthcheck: Some(hc),
            ..spec()
        };
        let hc = spec().healthcheck.unwrap();
        let short = with(crate::container::HealthcheckSpec {
            interval: Some(Duration::from_millis(500)),
            ..hc.clone()
        });
        let b = create_body(&short, v("1.44"));
        assert_eq!(b.healthcheck.unwrap().start_interval, Some(500_000_000));
        let no_period = with(crate::container::HealthcheckSpec {
            start_period: None,
            ..hc.clone()
        });
        let b = create_body(&no_period, v("1.45"));
        assert_eq!(b.healthcheck.unwrap().start_interval, None);
        let disabled = with(crate::container::HealthcheckSpec {
            test: vec!["NONE".into()],
            ..hc
        });
        let b = create_body(&disabled, v("1.45"));
        assert_eq!(b.healthcheck.unwrap().start_interval, None);
    }

    #[test]
    fn create_body_attaches_default_host_and_none_without_endpoint_config() {
        let with = |network| create_body(&ContainerSpec { network, ..spec() }, MIN_API_VERSION);
        let b = with(NetworkAttachment::Default);
        assert_eq!(b.host_config.unwrap().network_mode, None, "engine default");
        assert_eq!(b.networking_config, None);
        let json = serde_json::to_value(with(NetworkAttachment::Default)).unwrap();
        assert!(json["HostConfig"].get("NetworkMode").is_none());
        assert!(json.get("NetworkingConfig").is_none());
        let b = with(NetworkAttachment::Host);
        assert_eq!(b.host_config.unwrap().network_mode.as_deref(), Some("host"));
        assert_eq!(b.networking_config, None);
        let b = with(NetworkAttachment::None);
        assert_eq!(b.host_config.unwrap().network_mode.as_deref(), Some("none"));
        assert_eq!(b.networking_config, None);
        // A fleet network without aliases: the endpoint is named, with no Aliases.
        let b = with(NetworkAttachment::Fleet {
            network: "n".into(),
            aliases: vec![],
        });
        let endpoints = b.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints["n"].aliases, None);
    }

    #[test]
    fn create_body_omits_what_the_spec_leaves_unset() {
        let s = ContainerSpec {
            secret_env: Default::default(),
            files: Vec::new(),
            knobs: Default::default(),
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
        let b = create_body(&s, MIN_API_VERSION);
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
        let json = serde_json::to_value(create_body(&spec(), MIN_API_VERSION)).unwrap();
        assert_eq!(json["ExposedPorts"]["3001/tcp"], serde_json::json!({}));
        assert_eq!(
            json["HostConfig"]["RestartPolicy"]["Name"],
            "unless-stopped"
        );
    }

    fn knobs() -> Knobs {
        Knobs {
            log_max_size: Some(10 << 20),
            log_max_files: Some(14),
            ulimits: BTreeMap::from([
                (
                    "nofile".to_string(),
                    Ulimit {
                        soft: 65536,
                        hard: 65536,
                    },
                ),
                ("memlock".to_string(), Ulimit { soft: -1, hard: -1 }),
            ]),
            sysctls: BTreeMap::from([("net.core.somaxconn".to_string(), "4096".to_string())]),
            user: Some("1000:1000".into()),
            working_dir: Some("/srv/app".into()),
            read_only: true,
            cap_add: vec!["CAP_NET_ADMIN".into()],
            cap_drop: vec!["ALL".into()],
            stop_signal: Some("SIGQUIT".into()),
        }
    }

    #[test]
    fn create_body_sends_the_knobs_and_nothing_when_none_is_set() {
        let plain = create_body(&spec(), MIN_API_VERSION);
        let hc = plain.host_config.as_ref().unwrap();
        assert_eq!(hc.log_config, None, "the engine's logging by default");
        assert_eq!(hc.ulimits, None);
        assert_eq!(hc.sysctls, None);
        assert_eq!((&hc.cap_add, &hc.cap_drop), (&None, &None));
        assert_eq!(hc.readonly_rootfs, None);
        assert_eq!((&plain.user, &plain.working_dir), (&None, &None));
        assert_eq!(plain.stop_signal, None);

        let b = create_body(
            &ContainerSpec {
                knobs: knobs(),
                ..spec()
            },
            MIN_API_VERSION,
        );
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.working_dir.as_deref(), Some("/srv/app"));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGQUIT"));
        let hc = b.host_config.unwrap();
        let log = hc.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let opts = log.config.unwrap();
        assert_eq!(opts["max-size"], "10485760");
        assert_eq!(opts["max-file"], "14");
        let mut ulimits = hc.ulimits.unwrap();
        ulimits.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            ulimits,
            vec![
                bollard::models::ResourcesUlimits {
                    name: Some("memlock".into()),
                    soft: Some(-1),
                    hard: Some(-1),
                },
                bollard::models::ResourcesUlimits {
                    name: Some("nofile".into()),
                    soft: Some(65536),
                    hard: Some(65536),
                },
            ]
        );
        assert_eq!(hc.sysctls.unwrap()["net.core.somaxconn"], "4096");
        assert_eq!(hc.cap_add, Some(vec!["CAP_NET_ADMIN".to_string()]));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
    }

    #[test]
    fn log_sizes_written_by_hand_read_back_in_bytes() {
        assert_eq!(log_size("10485760"), Some(10 << 20));
        assert_eq!(log_size("10m"), Some(10 << 20));
        assert_eq!(log_size("512k"), Some(512 << 10));
        assert_eq!(log_size("1g"), Some(1 << 30));
        assert_eq!(log_size("lots"), None);
    }

    #[test]
    fn what_create_sends_inspect_reads_back_as_the_same_spec() {
        // Docker 20.10 (1.41) and Docker 26 (1.45, with StartInterval): no drift on either.
        for api in [MIN_API_VERSION, ApiVersion::parse("1.45").unwrap()] {
            create_reads_back_as_sent(api);
        }
    }

    fn create_reads_back_as_sent(api: ApiVersion) {
        let mut s = spec();
        s.stop_grace_period = Some(Duration::from_secs(10)); // the engine keeps whole seconds
        s.knobs = knobs();
        let b = create_body(&s, api);
        assert_eq!(
            b.healthcheck.as_ref().unwrap().start_interval.is_some(),
            api >= START_INTERVAL_API_VERSION
        );
        let id = "0123456789abcdef".repeat(4);
        // What an engine of API 1.44 reports once the container runs: the short id added to
        // Aliases, and every name in DNSNames.
        let mut endpoints = b
            .networking_config
            .clone()
            .unwrap()
            .endpoints_config
            .unwrap();
        let ep = endpoints.get_mut("aims-net").unwrap();
        ep.aliases.as_mut().unwrap().push(id[..12].to_string());
        ep.dns_names = Some(vec![
            s.name.clone(),
            "web".into(),
            "www".into(),
            id[..12].to_string(),
        ]);
        let inspected = ContainerInspectResponse {
            id: Some(id.clone()),
            name: Some(format!("/{}", s.name)),
            network_settings: Some(bollard::models::NetworkSettings {
                networks: Some(endpoints),
                ..Default::default()
            }),
            config: Some(bollard::models::ContainerConfig {
                hostname: Some(id[..12].to_string()),
                image: b.image.clone(),
                cmd: b.cmd.clone(),
                env: b.env.clone(),
                labels: b.labels.clone(),
                exposed_ports: b.exposed_ports.clone(),
                healthcheck: b.healthcheck.clone(),
                stop_timeout: b.stop_timeout,
                user: b.user.clone(),
                working_dir: b.working_dir.clone(),
                stop_signal: b.stop_signal.clone(),
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
    fn usage_is_cpu_time_over_host_time_times_the_cpus_as_docker_stats_shows_it() {
        // Two one-shot readings as API 1.41 sends them: 0.5 s of container CPU over 2 s of
        // host CPU time (both CPUs, 1 s of wall time) → half a CPU busy on a 2-CPU host: 50%.
        let reading = |total: u64, system: u64| -> ContainerStatsResponse {
            serde_json::from_value(serde_json::json!({
                "cpu_stats": {"cpu_usage": {"total_usage": total},
                              "system_cpu_usage": system, "online_cpus": 2},
                "precpu_stats": {"cpu_usage": {"total_usage": 0u64}},
                "memory_stats": {"usage": 50u64 << 20, "stats": {"inactive_file": 10u64 << 20}}
            }))
            .unwrap()
        };
        let a = usage_of(&reading(1_000_000_000, 10_000_000_000)).unwrap();
        let b = usage_of(&reading(1_500_000_000, 12_000_000_000)).unwrap();
        let pct = b.cpu_percent_since(&a).unwrap();
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
        assert_eq!(b.memory, 40 << 20);
        // The same reading twice: no time passed on the host, no share.
        assert_eq!(b.cpu_percent_since(&b), None);
        // A stopped container's answer has no CPU figures.
        assert_eq!(usage_of(&ContainerStatsResponse::default()), None);
    }

    #[test]
    fn a_load_answer_fails_on_its_error_detail_only() {
        assert_eq!(
            load_stream_error(b"{\"stream\":\"Loaded image: e2e/push:1\\n\"}\n"),
            None
        );
        assert_eq!(
            load_stream_error(
                b"{\"stream\":\"x\"}\r\n{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\r\n"
            ),
            Some("unexpected EOF".to_string())
        );
        assert_eq!(
            load_stream_error(b"{\"error\":\"invalid tar header\"}"),
            Some("invalid tar header".to_string())
        );
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

    #[tokio::test]
    async fn log_frames_become_lines_after_since_and_a_404_names_node_and_container() {
        use bollard::container::LogOutput;
        let frame = |s: &str| {
            Ok(LogOutput::StdOut {
                message: s.as_bytes().to_vec().into(),
            })
        };
        let frames = futures_util::stream::iter(vec![
            frame("2026-12-04T20:31:00.000000001Z early\n"),
            frame("2026-12-04T20:31:00.500000000Z kept\n"),
            Ok(LogOutput::StdErr {
                message: b"2026-12-04T20:31:01.000000000Z err\n".to_vec().into(),
            }),
            frame("2026-12-04T20:31:02.000000000Z no newline"),
        ])
        .boxed();
        let since = crate::transport::logs::parse_rfc3339_ns("2026-12-04T20:31:00.5Z").unwrap();
        let lines: Vec<_> = log_lines(frames, "node1", "c1", since)
            .map(Result::unwrap)
            .collect()
            .await;
        let texts: Vec<(&str, super::super::LogStream)> =
            lines.iter().map(|l| (l.text.as_str(), l.stream)).collect();
        assert_eq!(
            texts,
            [
                ("kept", super::super::LogStream::Stdout),
                ("err", super::super::LogStream::Stderr),
                ("no newline", super::super::LogStream::Stdout)
            ]
        );
        let frames = futures_util::stream::iter(vec![Err(
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "No such container: c1".into(),
            },
        )])
        .boxed();
        let out: Vec<_> = log_lines(frames, "node1", "c1", i64::MIN).collect().await;
        assert_eq!(out.len(), 1);
        let e = out.into_iter().next().unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.node, "node1");
        assert_eq!(e.object.as_deref(), Some("c1"));
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

    fn podman_inspect(health: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(serde_json::json!({
            "Id": "abc",
            "Name": "web",
            "State": {"Status": "running", "Running": true, "Health": health},
            "Config": {"Image": "web:1", "Healthcheck": {
                "Test": ["CMD-SHELL", "true"], "Interval": 10_000_000_000_i64,
                "Timeout": 2_000_000_000_i64}}
        }))
        .unwrap()
    }

    #[test]
    fn a_podman_probe_is_due_when_health_is_stuck_and_at_most_once_per_interval() {
        let i = Duration::from_secs(10);
        let facts = |health, log_age, since| ProbeFacts {
            running: true,
            health,
            interval: i,
            newest_log_age: log_age,
            since_last_probe: since,
        };
        // Starting forever (no systemd timer): due, then not again within the interval.
        assert!(podman_probe_due(&facts(Some(Health::Starting), None, None)));
        // Paced: once a second while starting (the interval when shorter), not once per
        // 10 s interval.
        assert!(!podman_probe_due(&facts(
            Some(Health::Starting),
            None,
            Some(Duration::from_millis(400))
        )));
        assert!(podman_probe_due(&facts(
            Some(Health::Starting),
            Some(Duration::from_secs(3)),
            Some(Duration::from_millis(1100))
        )));
        // Judged already: reading it never probes (a plan or a no-op apply changes nothing),
        // however old its log.
        for h in [Health::Healthy, Health::Unhealthy] {
            for age in [
                None,
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(25)),
            ] {
                assert!(
                    !podman_probe_due(&facts(Some(h), age, None)),
                    "{h:?} {age:?}"
                );
            }
        }
        // No healthcheck, or not running: never.
        assert!(!podman_probe_due(&facts(None, None, None)));
        assert!(!podman_probe_due(&ProbeFacts {
            running: false,
            ..facts(Some(Health::Starting), None, None)
        }));
    }

    #[test]
    fn probe_facts_are_read_from_podmans_inspect_answer() {
        let now = humantime::parse_rfc3339("2026-12-04T10:00:30Z").unwrap();
        let r = podman_inspect(
            serde_json::json!({"Status": "starting", "FailingStreak": 0, "Log": null}),
        );
        let f = probe_facts(&r, now, None);
        assert_eq!(
            f,
            ProbeFacts {
                running: true,
                health: Some(Health::Starting),
                interval: Duration::from_secs(10),
                newest_log_age: None,
                since_last_probe: None,
            }
        );
        // Podman writes the node's local time with its offset; the newest entry counts.
        let r = podman_inspect(
            serde_json::json!({"Status": "healthy", "FailingStreak": 0, "Log": [
                {"Start": "2026-12-04T10:59:00.1+01:00", "End": "2026-12-04T10:59:01.123456789+01:00",
                 "ExitCode": 0, "Output": ""},
                {"Start": "2026-12-04T11:00:20.5+01:00", "End": "2026-12-04T11:00:21.000000001+01:00",
                 "ExitCode": 0, "Output": ""}
            ]}),
        );
        let f = probe_facts(&r, now, Some(Duration::from_secs(1)));
        assert_eq!(f.health, Some(Health::Healthy));
        assert_eq!(f.newest_log_age.map(|d| d.as_secs()), Some(8));
        assert!(!podman_probe_due(&f));
        // Unset interval: Docker's default.
        let mut r = r;
        r.config
            .as_mut()
            .unwrap()
            .healthcheck
            .as_mut()
            .unwrap()
            .interval = None;
        assert_eq!(probe_facts(&r, now, None).interval, DEFAULT_HEALTH_INTERVAL);
        assert_eq!(
            parse_timestamp("2026-12-04T10:00:00Z"),
            parse_timestamp("2026-12-04T05:00:00-05:00")
        );
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    /// A runtime whose negotiation already happened (as `kind` at API `api`), over a socket
    /// where nothing listens: a call that reaches the wire fails as unreachable.
    fn negotiated(kind: EngineKind, api: &str) -> DockerRuntime {
        let rt = DockerRuntime::local("n1", "/nonexistent/fleetctl-test.sock");
        let version = ApiVersion::parse(api).unwrap();
        let docker = connector::docker_over(
            rt.raw.clone(),
            &bollard::ClientVersion {
                major_version: version.major as usize,
                minor_version: version.minor as usize,
            },
        );
        rt.api
            .set(Api {
                docker,
                version,
                engine: EngineIdentity {
                    kind,
                    version: "4.3.1".into(),
                    api: version,
                },
            })
            .unwrap_or_else(|_| panic!("set once"));
        rt
    }

    #[tokio::test]
    async fn an_in_place_update_on_podman_is_refused_before_anything_is_sent() {
        let update = ContainerUpdate {
            resources: Default::default(),
            restart: Default::default(),
        };
        let rt = negotiated(EngineKind::Podman, "1.41");
        let e = rt.update_container("abc", &update).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedEngine, "{e}");
        assert_eq!(e.object.as_deref(), Some("abc"));
        assert!(
            e.to_string()
                .contains("podman has no in-place update; fleetctl recreates instead"),
            "{e}"
        );
        // Docker sends it (and here finds nothing listening).
        let rt = negotiated(EngineKind::Docker, "1.41");
        let e = rt.update_container("abc", &update).await.unwrap_err();
        assert_ne!(e.kind, ErrorKind::UnsupportedEngine, "{e}");
    }

    #[test]
    fn podman_500s_for_a_name_in_use_or_a_missing_network_are_a_conflict_and_not_found() {
        // Podman 4.3's words, as it answers a create.
        let taken = "container create: creating container storage: the container name \"dup1\" is already in use by 335cdb. You have to remove that container to be able to reuse that name: that name is already in use";
        assert_eq!(status_kind(500, taken), ErrorKind::Conflict);
        let nonet =
            "container create: unable to find network with name or ID nonet: network not found";
        assert_eq!(status_kind(500, nonet), ErrorKind::NotFound);
        assert_eq!(status_kind(500, "boom"), ErrorKind::Api { status: 500 });
        assert_eq!(status_kind(404, ""), ErrorKind::NotFound);
        assert_eq!(status_kind(409, ""), ErrorKind::Conflict);
    }

    #[test]
    fn events_keep_only_those_with_every_label_asked() {
        let e = EngineEvent {
            container_id: "c".into(),
            action: "die".into(),
            labels: BTreeMap::from([
                ("fleet.managed-by".to_string(), "fleetctl".to_string()),
                ("fleet.fleet".to_string(), "other".to_string()),
            ]),
            time_nano: 0,
        };
        let ours = [
            "fleet.managed-by=fleetctl".to_string(),
            "fleet.fleet=prod".to_string(),
        ];
        assert!(
            !has_labels(&e, &ours),
            "Podman ORs label filters: another fleet's event"
        );
        assert!(has_labels(&e, &ours[..1]));
        assert!(has_labels(&e, &["fleet.fleet".to_string()]));
        assert!(has_labels(&e, &[]));
    }

    #[test]
    fn podman_is_also_asked_for_its_remove_events() {
        assert!(!watched_events(EngineKind::Docker).contains(&"remove".to_string()));
        assert!(watched_events(EngineKind::Podman).contains(&"remove".to_string()));
        assert!(watched_events(EngineKind::Podman).contains(&"destroy".to_string()));
        assert!(watched_events(EngineKind::Podman).contains(&"died".to_string()));
    }

    #[test]
    fn the_ping_headers_say_which_engine_and_api() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        // As Docker 20.10, Docker 26.1 and Podman 4.3 answer here.
        let d20 = headers(&[
            ("Api-Version", "1.41"),
            ("Server", "Docker/20.10.24+dfsg1 (linux)"),
        ]);
        let id = engine_identity_from_ping(&d20).unwrap();
        assert_eq!(
            (id.kind, id.version.as_str(), id.api),
            (EngineKind::Docker, "20.10.24+dfsg1", MIN_API_VERSION)
        );
        let d26 = headers(&[
            ("Api-Version", "1.45"),
            ("Server", "Docker/26.1.5+dfsg1 (linux)"),
        ]);
        assert_eq!(
            engine_identity_from_ping(&d26).unwrap().api,
            ApiVersion::parse("1.45").unwrap()
        );
        let podman = headers(&[
            ("Api-Version", "1.41"),
            ("Libpod-Api-Version", "4.3.1"),
            ("Server", "Libpod/4.3.1 (linux)"),
        ]);
        let id = engine_identity_from_ping(&podman).unwrap();
        assert_eq!(
            (id.kind, id.version.as_str()),
            (EngineKind::Podman, "4.3.1")
        );
        let bare_podman = headers(&[("Api-Version", "1.41"), ("Libpod-Api-Version", "4.3.1")]);
        let id = engine_identity_from_ping(&bare_podman).unwrap();
        assert_eq!(
            (id.kind, id.version.as_str()),
            (EngineKind::Podman, "4.3.1")
        );
        // No API version: the caller asks /version.
        assert_eq!(
            engine_identity_from_ping(&headers(&[("Server", "Docker/1")])),
            None
        );
    }

    #[test]
    fn the_version_answer_says_which_engine_and_api() {
        let docker = br#"{"Version":"26.1.5+dfsg1","ApiVersion":"1.45","MinAPIVersion":"1.24",
            "Components":[{"Name":"Engine","Version":"26.1.5+dfsg1"},{"Name":"containerd","Version":"1.6.20"}]}"#;
        let id = engine_identity(docker).unwrap();
        assert_eq!(id.kind, EngineKind::Docker);
        assert_eq!(id.version, "26.1.5+dfsg1");
        assert_eq!(id.api, ApiVersion::parse("1.45").unwrap());
        // Podman 4.3's compatible service, as it answers on Debian 12.
        let podman = br#"{"Platform":{"Name":"linux/amd64/debian-12"},"Components":[{"Name":"Podman Engine","Version":"4.3.1","Details":{"APIVersion":"4.3.1","MinAPIVersion":"4.0.0"}},{"Name":"Conmon","Version":"conmon version 2.1.6"}],"Version":"4.3.1","ApiVersion":"1.41","MinAPIVersion":"1.24"}"#;
        let id = engine_identity(podman).unwrap();
        assert_eq!(id.kind, EngineKind::Podman);
        assert_eq!(id.version, "4.3.1");
        assert_eq!(id.api, MIN_API_VERSION);
        // Old engines send no components at all.
        let old = br#"{"Version":"19.03.1","ApiVersion":"1.40"}"#;
        assert_eq!(engine_identity(old).unwrap().kind, EngineKind::Docker);
        assert!(engine_identity(b"{}").unwrap_err().contains("API version"));
        assert!(engine_identity(b"<html>").is_err());
    }

    #[test]
    fn api_versions_parse_and_order() {
        assert_eq!(ApiVersion::parse("1.41"), Some(MIN_API_VERSION));
        assert!(ApiVersion::parse("1.40").unwrap() < MIN_API_VERSION);
        assert!(ApiVersion::parse("1.100").unwrap() > LIST_HEALTH_API_VERSION);
        assert_eq!(ApiVersion::parse("x"), None);
        assert_eq!(MIN_API_VERSION.to_string(), "1.41");
    }

    fn endpoint(aliases: &[&str], dns_names: Option<&[&str]>) -> EndpointSettings {
        EndpointSettings {
            aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
            dns_names: dns_names.map(|d| d.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn network_mode_maps_to_the_attachment() {
        let none = None::<&HashMap<String, EndpointSettings>>;
        for mode in [None, Some(""), Some("default"), Some("bridge")] {
            assert_eq!(
                network_attachment(mode, none, "id", "c", None),
                NetworkAttachment::Default,
                "{mode:?}"
            );
        }
        assert_eq!(
            network_attachment(Some("host"), none, "id", "c", None),
            NetworkAttachment::Host
        );
        assert_eq!(
            network_attachment(Some("none"), none, "id", "c", None),
            NetworkAttachment::None
        );
        // A user network whose endpoint the inspect does not show: no aliases.
        assert_eq!(
            network_attachment(Some("aims-net"), none, "id", "c", None),
            NetworkAttachment::Fleet {
                network: "aims-net".into(),
                aliases: vec![],
            }
        );
    }

    #[test]
    fn aliases_leave_out_the_names_the_engine_adds() {
        let id = "4f2a9c3b1d7e".to_string() + &"0".repeat(52);
        let fleet = |aliases: &[&str]| NetworkAttachment::Fleet {
            network: "aims-net".into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        };
        // API < 1.44: the short id in Aliases (unsorted as the engine keeps them).
        let old = HashMap::from([(
            "aims-net".to_string(),
            endpoint(&["www", "web", "4f2a9c3b1d7e"], None),
        )]);
        assert_eq!(
            network_attachment(Some("aims-net"), Some(&old), &id, "aims-web-0", None),
            fleet(&["web", "www"])
        );
        // API 1.45+: Aliases as sent, DNSNames with the name, short id and host name.
        let new = HashMap::from([(
            "aims-net".to_string(),
            endpoint(
                &["web"],
                Some(&["aims-web-0", "web", "4f2a9c3b1d7e", "box1"]),
            ),
        )]);
        assert_eq!(
            network_attachment(
                Some("aims-net"),
                Some(&new),
                &id,
                "aims-web-0",
                Some("box1")
            ),
            fleet(&["web"])
        );
        // DNSNames alone still gives the aliases.
        let dns_only = HashMap::from([(
            "aims-net".to_string(),
            EndpointSettings {
                dns_names: Some(vec![
                    "aims-web-0".into(),
                    "web".into(),
                    "4f2a9c3b1d7e".into(),
                ]),
                ..Default::default()
            },
        )]);
        assert_eq!(
            network_attachment(
                Some("aims-net"),
                Some(&dns_only),
                &id,
                "aims-web-0",
                Some("4f2a9c3b1d7e")
            ),
            fleet(&["web"])
        );
        // An alias the user asked for that equals the container's name is kept (it is in
        // Aliases), and the other network's endpoint is not read.
        let named = HashMap::from([
            (
                "aims-net".to_string(),
                endpoint(&["aims-web-0"], Some(&["aims-web-0", "4f2a9c3b1d7e"])),
            ),
            ("other".to_string(), endpoint(&["x"], None)),
        ]);
        assert_eq!(
            network_attachment(Some("aims-net"), Some(&named), &id, "aims-web-0", None),
            fleet(&["aims-web-0"])
        );
    }

    #[test]
    fn records_list_their_networks_sorted() {
        let networks = HashMap::from([
            ("zeta".to_string(), EndpointSettings::default()),
            ("aims-net".to_string(), EndpointSettings::default()),
        ]);
        let s = ContainerSummary {
            network_settings: Some(bollard::models::ContainerSummaryNetworkSettings {
                networks: Some(networks.clone()),
            }),
            ..Default::default()
        };
        assert_eq!(
            record_from_summary(&s, false).networks,
            ["aims-net", "zeta"]
        );
        assert!(
            record_from_summary(&ContainerSummary::default(), false)
                .networks
                .is_empty()
        );
        let r = ContainerInspectResponse {
            network_settings: Some(bollard::models::NetworkSettings {
                networks: Some(networks),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            details_from_inspect(&r).record.networks,
            ["aims-net", "zeta"]
        );
    }

    #[test]
    fn swarm_section_of_info_maps_to_swarm_info() {
        use bollard::models::{ClusterInfo, LocalNodeState, PeerNode};
        assert_eq!(swarm_info_from(None), SwarmInfo::default());
        let s = bollard::models::SwarmInfo {
            node_id: Some("n1".into()),
            node_addr: Some("10.0.0.1".into()),
            local_node_state: Some(LocalNodeState::ACTIVE),
            control_available: Some(true),
            error: Some(String::new()),
            remote_managers: Some(vec![
                PeerNode {
                    node_id: Some("n2".into()),
                    addr: Some("10.0.0.2:2377".into()),
                },
                PeerNode {
                    node_id: Some("n1".into()),
                    addr: Some("10.0.0.1:2377".into()),
                },
            ]),
            nodes: Some(3),
            managers: Some(2),
            cluster: Some(ClusterInfo {
                id: Some("c1".into()),
                ..Default::default()
            }),
        };
        assert_eq!(
            swarm_info_from(Some(&s)),
            SwarmInfo {
                state: SwarmState::Active,
                node_id: "n1".into(),
                node_addr: "10.0.0.1".into(),
                manager: true,
                cluster_id: Some("c1".into()),
                error: None,
                remote_managers: vec!["10.0.0.1:2377".into(), "10.0.0.2:2377".into()],
                nodes: 3,
                managers: 2,
            }
        );
        // A worker: no control, no cluster, counts 0; an error is kept.
        let w = bollard::models::SwarmInfo {
            local_node_state: Some(LocalNodeState::ERROR),
            error: Some("rpc error: certificate expired".into()),
            ..Default::default()
        };
        let info = swarm_info_from(Some(&w));
        assert_eq!(info.state, SwarmState::Error);
        assert_eq!(
            info.error.as_deref(),
            Some("rpc error: certificate expired")
        );
        assert!(!info.manager);
        assert_eq!(info.cluster_id, None);
        assert_eq!((info.nodes, info.managers), (0, 0));
        let inactive = bollard::models::SwarmInfo {
            local_node_state: Some(LocalNodeState::INACTIVE),
            ..Default::default()
        };
        assert_eq!(swarm_info_from(Some(&inactive)), SwarmInfo::default());
    }

    fn network_spec(driver: NetworkDriver) -> NetworkSpec {
        NetworkSpec {
            name: "aims-net".into(),
            driver,
            labels: BTreeMap::from([("fleet.fleet".into(), "aims".into())]),
            subnet: None,
            mtu: None,
            encrypted: false,
        }
    }

    #[test]
    fn network_create_body_sends_what_the_spec_says_and_no_more() {
        let json = |spec: &NetworkSpec, check: bool| -> serde_json::Value {
            serde_json::from_slice(&network_create_body(spec, check)).unwrap()
        };
        let bridge = json(&network_spec(NetworkDriver::Bridge), false);
        assert_eq!(bridge["Name"], "aims-net");
        assert_eq!(bridge["Driver"], "bridge");
        assert_eq!(bridge["Labels"]["fleet.fleet"], "aims");
        for absent in ["Attachable", "IPAM", "Options", "CheckDuplicate"] {
            assert!(bridge.get(absent).is_none(), "{absent}: {bridge}");
        }
        // Engines below API 1.44 are asked to refuse a duplicate name.
        let old = json(&network_spec(NetworkDriver::Bridge), true);
        assert_eq!(old["CheckDuplicate"], true);

        let overlay = NetworkSpec {
            subnet: Some("10.42.0.0/24".into()),
            mtu: Some(1400),
            ..network_spec(NetworkDriver::Overlay)
        };
        let o = json(&overlay, false);
        assert_eq!(o["Driver"], "overlay");
        assert_eq!(o["Attachable"], true);
        assert_eq!(o["IPAM"]["Config"][0]["Subnet"], "10.42.0.0/24");
        assert_eq!(o["Options"]["com.docker.network.driver.mtu"], "1400");
        // Not encrypted: the key is absent (present with any value, the engine encrypts).
        assert!(o["Options"].get("encrypted").is_none(), "{o}");
        let encrypted = json(
            &NetworkSpec {
                encrypted: true,
                ..network_spec(NetworkDriver::Overlay)
            },
            false,
        );
        assert_eq!(encrypted["Options"]["encrypted"], "");
        assert_eq!(
            encrypted["Options"].as_object().unwrap().len(),
            1,
            "{encrypted}"
        );
    }

    #[test]
    fn networks_map_from_list_and_inspect() {
        use bollard::models::EndpointResource;
        let ipam = Ipam {
            config: Some(vec![
                IpamConfig {
                    subnet: Some("fd00::/64".into()),
                    ..Default::default()
                },
                IpamConfig {
                    subnet: Some("10.0.9.0/24".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let inspect = NetworkInspect {
            id: Some("abc123".into()),
            name: Some("aims-net".into()),
            driver: Some("overlay".into()),
            scope: Some("swarm".into()),
            labels: Some(HashMap::from([("fleet.fleet".into(), "aims".into())])),
            options: Some(HashMap::from([
                ("encrypted".into(), String::new()),
                ("com.docker.network.driver.mtu".into(), "1400".into()),
            ])),
            ipam: Some(ipam.clone()),
            containers: Some(HashMap::from([
                (
                    "c1".into(),
                    EndpointResource {
                        name: Some("aims-web-0".into()),
                        ipv4_address: Some("10.0.9.3/24".into()),
                        ..Default::default()
                    },
                ),
                (
                    "lb-aims-net".into(),
                    EndpointResource {
                        name: Some("aims-net-endpoint".into()),
                        ipv4_address: Some("10.0.9.2/24".into()),
                        ..Default::default()
                    },
                ),
            ])),
            ..Default::default()
        };
        let r = network_from_inspect(&inspect);
        assert_eq!(r.id, "abc123");
        assert_eq!(r.name, "aims-net");
        assert_eq!(r.driver, "overlay");
        assert_eq!(r.scope, "swarm");
        assert_eq!(r.label("fleet.fleet"), Some("aims"));
        assert_eq!(
            r.subnet.as_deref(),
            Some("10.0.9.0/24"),
            "first IPv4 subnet"
        );
        assert_eq!(r.options["encrypted"], "");
        assert_eq!(
            r.containers,
            BTreeMap::from([("aims-web-0".to_string(), "10.0.9.3/24".to_string())])
        );
        let listed = network_from_summary(&Network {
            id: Some("abc123".into()),
            name: Some("aims-net".into()),
            ipam: Some(ipam),
            ..Default::default()
        });
        assert_eq!(listed.subnet.as_deref(), Some("10.0.9.0/24"));
        assert!(listed.containers.is_empty());
    }

    #[test]
    fn an_inspect_answered_by_id_prefix_is_not_the_network_asked_for() {
        let r = NetworkRecord {
            id: "cafe0123456789abcdef".into(),
            name: "other".into(),
            ..Default::default()
        };
        assert!(
            !network_answers_to(&r, "cafe"),
            "a name that is an id prefix"
        );
        assert!(network_answers_to(&r, "other"));
        assert!(network_answers_to(&r, "cafe0123456789abcdef"));
        assert!(network_answers_to(&r, "cafe01234567"), "a short id");
    }

    fn api_error(op: &'static str, status: u16, message: &str) -> TransportError {
        map_error(
            "node1",
            op,
            Some("x"),
            bollard::errors::Error::DockerResponseServerError {
                status_code: status,
                message: message.into(),
            },
        )
    }

    #[test]
    fn engine_refusals_become_answers() {
        let e = network_in_use_is_conflict(api_error(
            "remove network",
            403,
            "error while removing network: network aims-net id 3f2a has active endpoints",
        ));
        assert_eq!(e.kind, ErrorKind::Conflict);
        let e = network_in_use_is_conflict(api_error(
            "remove network",
            500,
            "rpc error: code = FailedPrecondition desc = network 3f2a is in use by task x",
        ));
        assert_eq!(e.kind, ErrorKind::Conflict);
        let e = network_in_use_is_conflict(api_error("remove network", 404, "not found"));
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = network_in_use_is_conflict(api_error("remove network", 500, "boom"));
        assert_eq!(e.kind, ErrorKind::Api { status: 500 });

        let e = swarm_refusal(api_error(
            "swarm init",
            503,
            "This node is already part of a swarm. Use \"docker swarm leave\" to leave this \
             swarm and join another one.",
        ));
        assert_eq!(e.kind, ErrorKind::Conflict);
        let e = swarm_refusal(api_error(
            "swarm leave",
            503,
            "This node is not part of a swarm",
        ));
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e = swarm_refusal(api_error(
            "swarm leave",
            503,
            "You are attempting to leave the swarm on a node that is participating as a manager.",
        ));
        assert_eq!(e.kind, ErrorKind::Api { status: 503 });
    }

    #[test]
    fn a_join_token_never_shows_in_a_join_error() {
        let token =
            "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";
        let echoed = api_error(
            "swarm join",
            400,
            &format!("invalid join token {token}: rpc error: code = InvalidArgument"),
        );
        let e = redact_join_token(swarm_refusal(echoed), token);
        assert_eq!(e.kind, ErrorKind::Api { status: 400 });
        assert_eq!(e.op, "swarm join");
        let shown = [
            e.to_string(),
            format!("{e:?}"),
            format!("{:#}", anyhow::Error::from(e)),
        ];
        for text in &shown {
            assert!(!text.contains(token), "{text}");
            assert!(!text.contains("1awxwuwd3z9j1z3puu7rcgdbx"), "{text}");
        }
        assert!(
            shown[0].contains("invalid join token <join token>"),
            "{}",
            shown[0]
        );
        // A token the engine quotes in part, or another one, is redacted too; no token, nothing.
        assert_eq!(
            redact_token_text("bad token SWMTKN-1-abc-def, try again", token),
            "bad token <join token>, try again"
        );
        assert_eq!(redact_token_text("no secret here", ""), "no secret here");
        assert_eq!(
            redact_token_text(&format!("'{token}'"), token),
            "'<join token>'"
        );
    }

    #[test]
    fn join_body_carries_the_token_and_the_addresses() {
        let body: serde_json::Value =
            serde_json::from_slice(&swarm_join_body("10.0.0.2", "10.0.0.1:2377", "SWMTKN-1-x"))
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "ListenAddr": "10.0.0.2:2377",
                "AdvertiseAddr": "10.0.0.2",
                "RemoteAddrs": ["10.0.0.1:2377"],
                "JoinToken": "SWMTKN-1-x",
            })
        );
    }

    #[test]
    fn join_tokens_are_read_from_the_swarm_inspect() {
        let answer = br#"{"ID":"c1","Version":{"Index":10},"Spec":{"Name":"default"},
            "JoinTokens":{"Worker":"SWMTKN-1-w","Manager":"SWMTKN-1-m"}}"#;
        let t = join_tokens_from(answer).unwrap();
        assert_eq!(t.worker, "SWMTKN-1-w");
        assert_eq!(t.manager, "SWMTKN-1-m");
        assert_eq!(format!("{t:?}"), "JoinTokens(<redacted>)");
        let e = join_tokens_from(br#"{"JoinTokens":{"Worker":"SWMTKN-1-w"}}"#).unwrap_err();
        assert!(!e.contains("SWMTKN"), "{e}");
        assert!(join_tokens_from(b"{}").is_err());
        assert!(join_tokens_from(b"not json").is_err());
    }

    #[test]
    fn nodes_map_to_members() {
        use bollard::models::{ManagerStatus, NodeDescription, NodeStatus, ObjectVersion};
        let node = Node {
            id: Some("m1".into()),
            version: Some(ObjectVersion { index: Some(42) }),
            spec: Some(bollard::models::NodeSpec {
                role: Some(NodeSpecRoleEnum::MANAGER),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some("vps-1".into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::READY),
                addr: Some("0.0.0.0".into()),
                ..Default::default()
            }),
            manager_status: Some(ManagerStatus {
                leader: Some(true),
                reachability: Some(Reachability::REACHABLE),
                addr: Some("10.0.0.1:2377".into()),
            }),
            ..Default::default()
        };
        assert_eq!(
            member_from_node(&node),
            SwarmMember {
                id: "m1".into(),
                version: 42,
                hostname: "vps-1".into(),
                addr: "10.0.0.1".into(),
                role: SwarmRole::Manager,
                ready: true,
                reachable: true,
                leader: true,
            }
        );
        let worker = Node {
            id: Some("w1".into()),
            spec: Some(bollard::models::NodeSpec {
                role: Some(NodeSpecRoleEnum::WORKER),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(NodeState::DOWN),
                addr: Some("10.0.0.3".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let w = member_from_node(&worker);
        assert_eq!(w.role, SwarmRole::Worker);
        assert_eq!(w.addr, "10.0.0.3");
        assert!(!w.ready && !w.reachable && !w.leader);
    }

    #[test]
    fn a_role_change_keeps_the_rest_of_the_node_spec() {
        use bollard::models::NodeSpecAvailabilityEnum;
        let current = bollard::models::NodeSpec {
            name: Some("edge".into()),
            labels: Some(HashMap::from([("zone".into(), "a".into())])),
            role: Some(NodeSpecRoleEnum::WORKER),
            availability: Some(NodeSpecAvailabilityEnum::DRAIN),
        };
        let promoted = node_spec_with_role(current.clone(), SwarmRole::Manager);
        assert_eq!(promoted.role, Some(NodeSpecRoleEnum::MANAGER));
        assert_eq!(promoted.availability, Some(NodeSpecAvailabilityEnum::DRAIN));
        assert_eq!(promoted.labels, current.labels);
        assert_eq!(promoted.name, current.name);
        assert_eq!(
            node_spec_with_role(promoted, SwarmRole::Worker).role,
            Some(NodeSpecRoleEnum::WORKER)
        );
    }

    #[test]
    fn raw_requests_are_versioned_json() {
        let req = raw_request(
            http::Method::POST,
            "/swarm/join",
            "1.41",
            Some(b"{}".to_vec()),
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "http://docker.localhost/v1.41/swarm/join"
        );
        assert_eq!(
            req.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        assert_eq!(
            engine_error_message(br#"{"message":"network x not found"}"#),
            "network x not found"
        );
        assert_eq!(engine_error_message(b"plain text\n"), "plain text");
    }

    #[test]
    fn system_df_is_read_in_the_shape_of_api_1_41() {
        let v = serde_json::json!({
            "LayersSize": 1_000_000,
            "Images": [
                {"Id": "sha256:aaa", "RepoTags": ["app:1", "app:latest"], "RepoDigests": ["reg/app@sha256:d1"],
                 "Created": 100, "Size": 700_000, "SharedSize": 200_000, "Containers": 0},
                {"Id": "sha256:bbb", "RepoTags": ["<none>:<none>"], "RepoDigests": ["<none>@<none>"],
                 "Created": 50, "Size": 300_000, "SharedSize": -1, "Containers": -1}
            ],
            "Containers": [
                {"Id": "c1", "ImageID": "sha256:bbb", "SizeRw": 4_096},
                {"Id": "c2", "ImageID": "sha256:bbb", "SizeRw": 1_024}
            ],
            "Volumes": [{"Name": "v", "UsageData": {"Size": 10, "RefCount": 1}}],
            "BuildCache": [{"ID": "x", "Size": 7, "Shared": false}, {"ID": "y", "Size": 9, "Shared": true}]
        });
        let d = disk_from_df(&v);
        assert_eq!(d.images_bytes, 1_000_000);
        assert_eq!(d.containers_bytes, 5_120);
        assert_eq!(d.volumes_bytes, 10);
        assert_eq!(d.build_cache_bytes, 7);
        assert_eq!(d.images[0].tags, ["app:1", "app:latest"]);
        assert_eq!(d.images[0].digests, ["reg/app@sha256:d1"]);
        assert_eq!(
            (d.images[0].shared_size, d.images[0].containers),
            (200_000, 0)
        );
        // Untagged: no names; its users counted from the container list.
        assert!(d.images[1].tags.is_empty() && d.images[1].digests.is_empty());
        assert_eq!((d.images[1].shared_size, d.images[1].containers), (0, 2));
    }

    #[test]
    fn system_df_is_read_in_the_shape_of_api_1_52() {
        let v = serde_json::json!({
            "ImageUsage": {"TotalSize": 900, "Items": [
                {"Id": "sha256:aaa", "RepoTags": ["app:1"], "RepoDigests": [], "Created": 1, "Size": 900, "SharedSize": 0, "Containers": 1}
            ]},
            "ContainerUsage": {"TotalSize": 30},
            "VolumeUsage": {"TotalSize": 20},
            "BuildCacheUsage": {"TotalSize": 10}
        });
        let d = disk_from_df(&v);
        assert_eq!(
            (
                d.images_bytes,
                d.containers_bytes,
                d.volumes_bytes,
                d.build_cache_bytes
            ),
            (900, 30, 20, 10)
        );
        assert_eq!(d.images[0].containers, 1);
        assert_eq!(d.total(), 960);
    }

    #[test]
    fn images_listed_without_their_repository_are_left_out() {
        // Podman's compat answer: bare tags, ids without their algorithm.
        let v = serde_json::json!({
            "LayersSize": 10,
            "Images": [
                {"Id": "abc", "RepoTags": ["latest"], "Created": 1, "Size": 5, "SharedSize": 0, "Containers": 0},
                {"Id": "sha256:def", "RepoTags": ["7"], "Created": 1, "Size": 5, "SharedSize": 0, "Containers": 0},
                {"Id": "sha256:fed", "RepoTags": ["app:1"], "Created": 1, "Size": 5, "SharedSize": 0, "Containers": 0}
            ]
        });
        let d = disk_from_df(&v);
        assert_eq!(d.images.len(), 1);
        assert_eq!(d.images[0].tags, ["app:1"]);
    }

    #[test]
    fn df_output_is_read_in_posix_format_and_paths_are_quoted_for_the_shell() {
        let out = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                   /dev/vda1         20480000 16384000   3072000      85% /var/lib/my docker\n";
        let fs = parse_df(out).unwrap();
        assert_eq!(
            (fs.size, fs.used, fs.available),
            (20_480_000 * 1024, 16_384_000 * 1024, 3_072_000 * 1024)
        );
        assert_eq!(fs.used_hundredths(), 8422);
        assert_eq!(parse_df("df: /nope: No such file or directory\n"), None);
        assert_eq!(shell_quote("/var/lib/it's"), r"'/var/lib/it'\''s'");
    }
}

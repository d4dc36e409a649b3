//! An in-memory [`NodeRuntime`] for controller-logic tests: it keeps containers in a map,
//! records every call, can be made unreachable, and can be told to fail a chosen call.
//!
//! It is a test double for the *logic* above the transport; it never stands in for the
//! end-to-end tier, which runs against real engines over real sshd.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{ContainerUpdate, ErrorKind, ListFilter, NodeRuntime, TransportError};
use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineEvent, EngineInfo, Health, RunState,
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
            "create" | "start" | "stop" | "remove" | "update" | "pull"
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
    restart_count: u64,
    /// Files written through the archive API, by absolute path.
    files: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, FakeContainer>, // by id
    images: Vec<String>,
    calls: Vec<Call>,
    unreachable: bool,
    /// Fail the call with this ordinal (1-based, counting mutating calls only).
    fail_at_mutation: Option<usize>,
    mutations: usize,
    clock: i64,
}

/// In-memory engine for one node. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeRuntime {
    node: String,
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<EngineEvent>,
    info: EngineInfo,
}

impl FakeRuntime {
    /// An empty, reachable engine with 4 CPUs and 8 GiB of memory, where every image is
    /// present unless [`FakeRuntime::set_images`] says otherwise.
    pub fn new(node: impl Into<String>) -> Self {
        let (events, _) = broadcast::channel(1024);
        FakeRuntime {
            node: node.into(),
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
            info: EngineInfo {
                swarm: Default::default(),
                version: "20.10.24".into(),
                api_version: "1.41".into(),
                cpus: 4,
                memory: 8 << 30,
                containers: 0,
                containers_running: 0,
                operating_system: "fake".into(),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake runtime lock poisoned")
    }

    /// Makes every later call fail as unreachable (or reachable again).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// Restricts the images present on the node (default: every image is present).
    pub fn set_images(&self, images: &[&str]) {
        self.lock().images = images.iter().map(|s| s.to_string()).collect();
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
    pub fn kill(&self, id: &str) {
        let event = {
            let mut inner = self.lock();
            let Some(c) = inner.containers.get_mut(id) else {
                return;
            };
            c.state = RunState::Exited;
            event_for(c, "die")
        };
        let _ = self.events.send(event);
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

    /// Adds a container that fleetctl did not create (no ownership labels unless given).
    pub fn add_foreign(&self, name: &str, labels: BTreeMap<String, String>) -> String {
        let mut inner = self.lock();
        let id = new_container_id();
        let spec = ContainerSpec {
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
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                spec,
                id: id.clone(),
                state: RunState::Running,
                health: None,
                created,
                memory_usage: 0,
                restart_count: 0,
                files: BTreeMap::new(),
            },
        );
        id
    }

    /// Removes a container behind fleetctl's back (as `docker rm -f` would).
    pub fn remove_by_hand(&self, id: &str) {
        let removed = self.lock().containers.remove(id);
        if let Some(c) = removed {
            let _ = self.events.send(event_for(&c, "destroy"));
        }
    }

    fn begin(&self, op: &'static str, object: &str) -> Result<(), TransportError> {
        let mut inner = self.lock();
        inner.calls.push(Call {
            op,
            object: object.to_string(),
            seq: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        });
        if inner.unreachable {
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
}

fn record(c: &FakeContainer) -> ContainerRecord {
    ContainerRecord {
        networks: Vec::new(),
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

    async fn engine_info(&self) -> Result<EngineInfo, TransportError> {
        self.begin("info", "")?;
        let inner = self.lock();
        let mut info = self.info.clone();
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
        self.begin("list", "")?;
        Ok(self
            .lock()
            .containers
            .values()
            .filter(|c| matches(&c.spec.labels, filter))
            .map(record)
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, TransportError> {
        self.begin("inspect", id)?;
        let mut inner = self.lock();
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

    async fn image_present(&self, image: &str) -> Result<bool, TransportError> {
        self.begin("image", image)?;
        let inner = self.lock();
        Ok(inner.images.is_empty() || inner.images.iter().any(|i| i == image))
    }

    async fn pull_image(&self, image: &str) -> Result<(), TransportError> {
        self.begin("pull", image)?;
        Err(TransportError::new(
            &self.node,
            "pull image",
            ErrorKind::Api { status: 404 },
            "no registry in the fake runtime",
        )
        .with_object(image))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError> {
        self.begin("create", &spec.name)?;
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
        let id = new_container_id();
        let created = inner.clock;
        inner.containers.insert(
            id.clone(),
            FakeContainer {
                spec: spec.clone(),
                id: id.clone(),
                state: RunState::Created,
                health: None,
                created,
                memory_usage: 0,
                restart_count: 0,
                files: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), TransportError> {
        self.begin("start", id)?;
        let event = {
            let mut inner = self.lock();
            let key = self
                .find(&mut inner, id)
                .ok_or_else(|| self.not_found("start container", id))?
                .id
                .clone();
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
            let c = inner.containers.get_mut(&key).expect("found above");
            c.state = RunState::Running;
            c.health = c.spec.healthcheck.as_ref().map(|_| Health::Healthy);
            event_for(c, "start")
        };
        let _ = self.events.send(event);
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace: Duration) -> Result<(), TransportError> {
        self.begin("stop", id)?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("stop container", id))?;
        c.state = RunState::Exited;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), TransportError> {
        self.begin("remove", id)?;
        let mut inner = self.lock();
        let key = self
            .find(&mut inner, id)
            .map(|c| c.id.clone())
            .ok_or_else(|| self.not_found("remove container", id))?;
        inner.containers.remove(&key);
        Ok(())
    }

    async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<(), TransportError> {
        self.begin("update", id)?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("update container", id))?;
        c.spec.resources = update.resources.clone();
        c.spec.restart = update.restart;
        Ok(())
    }

    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError> {
        self.begin("stats", id)?;
        let mut inner = self.lock();
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("container stats", id))?;
        Ok(c.memory_usage)
    }

    async fn import_image(&self, reference: &str, _rootfs: Vec<u8>) -> Result<(), TransportError> {
        self.begin("import", reference)?;
        let mut inner = self.lock();
        // An empty image list means "every image is present": keep it that way.
        if !inner.images.is_empty() && !inner.images.iter().any(|i| i == reference) {
            inner.images.push(reference.to_string());
        }
        Ok(())
    }

    async fn put_archive(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), TransportError> {
        self.begin("put-archive", id)?;
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
        let c = self
            .find(&mut inner, id)
            .ok_or_else(|| self.not_found("put archive", id))?;
        for (path, content) in files {
            c.files
                .insert(format!("{}/{path}", dir.trim_end_matches('/')), content);
        }
        Ok(())
    }

    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, TransportError> {
        self.begin("get-archive", id)?;
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

    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        self.begin("events", "")?;
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
}

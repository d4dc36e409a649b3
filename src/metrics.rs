//! The controller's metrics (prometheus-client, no global registry), served at `GET /metrics`
//! in the OpenMetrics text format, and [`MeteredRuntime`], the [`NodeRuntime`] decorator that
//! times every Docker call.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `fleetctl_reconciles_total` | counter | |
//! | `fleetctl_reconcile_errors_total` | counter | |
//! | `fleetctl_reconcile_duration_seconds` | histogram | |
//! | `fleetctl_step_failures_total` | counter | `node` |
//! | `fleetctl_restarts_total` | counter | `node` (self-healing restarts made) |
//! | `fleetctl_restarts_held_total` | counter | `node` (restarts held back by the backoff) |
//! | `fleetctl_node_ready` | gauge | `node` (1 Ready, 0 otherwise) |
//! | `fleetctl_plugs` | gauge | `node`, `state` |
//! | `fleetctl_node_disk_used_ratio` | gauge | `node` (data root filesystem, 0–1, as last measured) |
//! | `fleetctl_node_disk_size_bytes` | gauge | `node` |
//! | `fleetctl_images_pruned_total` | counter | `node` (images removed above `diskHighWatermark`) |
//! | `fleetctl_image_prune_reclaimed_bytes_total` | counter | `node` (their unshared bytes) |
//! | `fleetctl_docker_call_duration_seconds` | histogram | `node`, `op` |
//! | `fleetctl_docker_call_errors_total` | counter | `node`, `op` |

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::container::{
    ContainerDetails, ContainerRecord, ContainerSpec, EngineEvent, EngineInfo, JoinTokens,
    LocalImage, NetworkRecord, NetworkSpec, PullProgress, RegistryAuth, SwarmMember, SwarmRole,
};
use crate::transport::{ConnState, ContainerUpdate, ListFilter, NodeRuntime, TransportError};

/// Label set: name/value pairs.
pub type Labels = Vec<(String, String)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn docker_buckets() -> Histogram {
    // 0.25 ms .. ~8 s: a pooled call over SSH takes about half a millisecond, a start or a
    // stop with its grace period seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric of one controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that ended in an error (store failures).
    pub reconcile_errors: Counter,
    /// Duration of each reconcile.
    pub reconcile_duration: Histogram,
    /// Failed steps per node.
    pub step_failures: Family<Labels, Counter>,
    /// Self-healing restarts made per node.
    pub restarts: Family<Labels, Counter>,
    /// Restarts held back by the backoff per node.
    pub restarts_held: Family<Labels, Counter>,
    /// 1 when the node is Ready.
    pub node_ready: Family<Labels, Gauge>,
    /// Plugs per node and state: set from the state store when scraped
    /// ([`Metrics::encode_with_plugs`]), never between scrapes.
    pub plugs: Family<Labels, Gauge>,
    /// Held while the plug gauge is rebuilt and the text encoded, so two scrapes never see
    /// each other's half-filled gauge.
    scrape: std::sync::Mutex<()>,
    /// Share of each node's data root filesystem in use (0–1).
    pub node_disk_used: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Size of each node's data root filesystem.
    pub node_disk_size: Family<Labels, Gauge>,
    /// Images removed above the disk watermark, per node.
    pub images_pruned: Family<Labels, Counter>,
    /// Bytes those removals freed (their unshared size), per node.
    pub image_bytes_reclaimed: Family<Labels, Counter>,
    /// Mean CPU of each autoscaled service's replicas, percent of their limit (last sample).
    pub service_cpu: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Mean memory of each autoscaled service's replicas, percent of their limit.
    pub service_memory: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// CPU of each node, percent of its CPUs (last sample; sampled under cpuHighWatermark).
    pub node_cpu: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Replica count changes made by the autoscaler, per service and direction.
    pub scales: Family<Labels, Counter>,
    /// 1 while a node is hot (takes no new plug).
    pub node_hot: Family<Labels, Gauge>,
    /// Docker call latency per node and operation.
    pub docker_calls: HistogramFamily,
    /// Failed Docker calls per node and operation.
    pub docker_errors: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            step_failures: Family::default(),
            restarts: Family::default(),
            restarts_held: Family::default(),
            node_ready: Family::default(),
            plugs: Family::default(),
            node_disk_used: Family::default(),
            node_disk_size: Family::default(),
            images_pruned: Family::default(),
            image_bytes_reclaimed: Family::default(),
            docker_calls: Family::new_with_constructor(docker_buckets as fn() -> Histogram),
            docker_errors: Family::default(),
            service_cpu: Family::default(),
            service_memory: Family::default(),
            node_cpu: Family::default(),
            scales: Family::default(),
            node_hot: Family::default(),
            scrape: std::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "fleetctl_reconciles",
            "Reconcile passes run",
            m.reconciles.clone(),
        );
        registry.register(
            "fleetctl_reconcile_errors",
            "Reconcile passes that failed (state store errors)",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "fleetctl_reconcile_duration_seconds",
            "Duration of one reconcile pass",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "fleetctl_step_failures",
            "Plan steps that failed",
            m.step_failures.clone(),
        );
        registry.register(
            "fleetctl_restarts",
            "Containers restarted by self-healing (start of an exited container, restart of an unhealthy one)",
            m.restarts.clone(),
        );
        registry.register(
            "fleetctl_restarts_held",
            "Restarts held back by the per-container backoff",
            m.restarts_held.clone(),
        );
        registry.register(
            "fleetctl_node_ready",
            "1 when the node is Ready, 0 when unreachable, not ready or returning",
            m.node_ready.clone(),
        );
        registry.register(
            "fleetctl_plugs",
            "Plug instances per node and state",
            m.plugs.clone(),
        );
        registry.register(
            "fleetctl_node_disk_used_ratio",
            "Share of the node's engine data root filesystem in use, as last measured",
            m.node_disk_used.clone(),
        );
        registry.register_with_unit(
            "fleetctl_node_disk_size",
            "Size of the node's engine data root filesystem",
            prometheus_client::registry::Unit::Bytes,
            m.node_disk_size.clone(),
        );
        registry.register(
            "fleetctl_images_pruned",
            "Images removed because the node's disk was above diskHighWatermark",
            m.images_pruned.clone(),
        );
        registry.register_with_unit(
            "fleetctl_image_prune_reclaimed",
            "Bytes freed by those removals (each image's unshared size)",
            prometheus_client::registry::Unit::Bytes,
            m.image_bytes_reclaimed.clone(),
        );
        registry.register(
            "fleetctl_service_cpu_percent",
            "Mean CPU of an autoscaled service's replicas, percent of their limit (of one CPU without one)",
            m.service_cpu.clone(),
        );
        registry.register(
            "fleetctl_service_memory_percent",
            "Mean memory of an autoscaled service's replicas, percent of their limit",
            m.service_memory.clone(),
        );
        registry.register(
            "fleetctl_node_cpu_percent",
            "CPU of a node's containers, percent of its CPUs",
            m.node_cpu.clone(),
        );
        registry.register(
            "fleetctl_autoscale",
            "Replica count changes made by the autoscaler",
            m.scales.clone(),
        );
        registry.register(
            "fleetctl_node_hot",
            "1 while a node is above cpuHighWatermark (takes no new plug)",
            m.node_hot.clone(),
        );
        registry.register(
            "fleetctl_docker_call_duration_seconds",
            "Latency of Docker Engine API calls per node and operation",
            m.docker_calls.clone(),
        );
        registry.register(
            "fleetctl_docker_call_errors",
            "Failed Docker Engine API calls per node and operation",
            m.docker_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics in the OpenMetrics text format, the plug gauge first set from `plugs` (the
    /// state store's records as read now): a plug created, moved or deleted is counted by the
    /// next scrape, whether or not a reconcile pass has run since.
    pub fn encode_with_plugs(&self, plugs: &[crate::store::PlugRecord]) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.plugs.clear();
        for p in plugs {
            self.plugs
                .get_or_create(&vec![
                    ("node".to_string(), p.node.clone()),
                    ("state".to_string(), p.state.as_str().to_string()),
                ])
                .inc();
        }
        self.encode()
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    fn docker_call(&self, node: &str, op: &str, elapsed: Duration, ok: bool) {
        let labels = vec![
            ("node".to_string(), node.to_string()),
            ("op".to_string(), op.to_string()),
        ];
        self.docker_calls
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.docker_errors.get_or_create(&labels).inc();
        }
    }
}

/// Labels of one node.
pub fn node_labels(node: &str) -> Labels {
    vec![("node".to_string(), node.to_string())]
}

/// A [`NodeRuntime`] that times every call of the one it wraps.
pub struct MeteredRuntime {
    inner: Arc<dyn NodeRuntime>,
    metrics: Arc<Metrics>,
}

impl MeteredRuntime {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn NodeRuntime>, metrics: Arc<Metrics>) -> Arc<dyn NodeRuntime> {
        Arc::new(MeteredRuntime { inner, metrics })
    }

    async fn timed<T>(
        &self,
        op: &str,
        f: impl Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        let started = Instant::now();
        let r = f.await;
        self.metrics
            .docker_call(self.inner.node(), op, started.elapsed(), r.is_ok());
        r
    }
}

#[async_trait]
impl NodeRuntime for MeteredRuntime {
    fn node(&self) -> &str {
        self.inner.node()
    }
    fn connection_state(&self) -> Option<tokio::sync::watch::Receiver<ConnState>> {
        self.inner.connection_state()
    }
    fn engine_kind(&self) -> Option<crate::container::EngineKind> {
        self.inner.engine_kind()
    }
    async fn engine_info(&self) -> Result<EngineInfo, TransportError> {
        self.timed("info", self.inner.engine_info()).await
    }
    async fn list_containers(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ContainerRecord>, TransportError> {
        self.timed("list", self.inner.list_containers(filter)).await
    }
    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, TransportError> {
        self.timed("inspect", self.inner.inspect_container(id))
            .await
    }
    async fn local_image(&self, image: &str) -> Result<Option<LocalImage>, TransportError> {
        self.timed("image", self.inner.local_image(image)).await
    }
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<(), TransportError> {
        self.timed("pull", self.inner.pull_image(image, auth, progress))
            .await
    }
    async fn resolve_digest(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, TransportError> {
        self.timed("resolve", self.inner.resolve_digest(image, auth))
            .await
    }
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, TransportError> {
        self.timed("create", self.inner.create_container(spec))
            .await
    }
    async fn start_container(&self, id: &str) -> Result<(), TransportError> {
        self.timed("start", self.inner.start_container(id)).await
    }
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), TransportError> {
        self.timed("stop", self.inner.stop_container(id, grace))
            .await
    }
    async fn remove_container(&self, id: &str) -> Result<(), TransportError> {
        self.timed("remove", self.inner.remove_container(id)).await
    }
    async fn import_image(&self, reference: &str, rootfs: Vec<u8>) -> Result<(), TransportError> {
        self.timed("import", self.inner.import_image(reference, rootfs))
            .await
    }
    async fn export_image(
        &self,
        image: &str,
    ) -> Result<crate::transport::ImageArchive, TransportError> {
        // Times the answer's start (the engine found the image and began the archive), not
        // the transfer: that is the load's.
        self.timed("export", self.inner.export_image(image)).await
    }
    async fn load_image(
        &self,
        archive: crate::transport::ImageArchive,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(), TransportError> {
        self.timed("load", self.inner.load_image(archive, progress))
            .await
    }
    async fn disk_usage(&self) -> Result<crate::container::EngineDisk, TransportError> {
        self.timed("system_df", self.inner.disk_usage()).await
    }
    async fn filesystem(&self, path: &str) -> Result<crate::container::Filesystem, TransportError> {
        self.timed("df", self.inner.filesystem(path)).await
    }
    async fn remove_image(&self, reference: &str) -> Result<(), TransportError> {
        self.timed("remove_image", self.inner.remove_image(reference))
            .await
    }
    async fn put_archive(&self, id: &str, dir: &str, tar: Vec<u8>) -> Result<(), TransportError> {
        self.timed("put_archive", self.inner.put_archive(id, dir, tar))
            .await
    }
    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, TransportError> {
        self.timed("get_archive", self.inner.get_archive(id, path))
            .await
    }
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        opts: crate::transport::ExecOptions,
    ) -> Result<crate::transport::ExecSession, TransportError> {
        self.timed("exec", self.inner.exec(id, cmd, opts)).await
    }
    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), TransportError> {
        self.timed(
            "exec_resize",
            self.inner.exec_resize(exec_id, width, height),
        )
        .await
    }
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, TransportError> {
        self.timed("exec_inspect", self.inner.exec_exit_code(exec_id))
            .await
    }
    async fn update_container(
        &self,
        id: &str,
        update: &ContainerUpdate,
    ) -> Result<(), TransportError> {
        self.timed("update", self.inner.update_container(id, update))
            .await
    }
    async fn container_memory_usage(&self, id: &str) -> Result<u64, TransportError> {
        self.timed("stats", self.inner.container_memory_usage(id))
            .await
    }
    async fn list_networks(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<NetworkRecord>, TransportError> {
        self.timed("networks", self.inner.list_networks(filter))
            .await
    }
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkRecord>, TransportError> {
        self.timed("network", self.inner.inspect_network(name))
            .await
    }
    async fn create_network(&self, spec: &NetworkSpec) -> Result<String, TransportError> {
        self.timed("create_network", self.inner.create_network(spec))
            .await
    }
    async fn remove_network(&self, id: &str) -> Result<(), TransportError> {
        self.timed("remove_network", self.inner.remove_network(id))
            .await
    }
    async fn swarm_init(
        &self,
        advertise_addr: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<String, TransportError> {
        self.timed("swarm_init", self.inner.swarm_init(advertise_addr, labels))
            .await
    }
    async fn swarm_labels(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, TransportError> {
        self.timed("swarm", self.inner.swarm_labels()).await
    }
    async fn swarm_join_tokens(&self) -> Result<JoinTokens, TransportError> {
        self.timed("swarm", self.inner.swarm_join_tokens()).await
    }
    async fn swarm_join(
        &self,
        advertise_addr: &str,
        remote_addr: &str,
        token: &str,
    ) -> Result<(), TransportError> {
        self.timed(
            "swarm_join",
            self.inner.swarm_join(advertise_addr, remote_addr, token),
        )
        .await
    }
    async fn swarm_leave(&self, force: bool) -> Result<(), TransportError> {
        self.timed("swarm_leave", self.inner.swarm_leave(force))
            .await
    }
    async fn swarm_members(&self) -> Result<Vec<SwarmMember>, TransportError> {
        self.timed("swarm_nodes", self.inner.swarm_members()).await
    }
    async fn swarm_set_role(
        &self,
        id: &str,
        version: u64,
        role: SwarmRole,
    ) -> Result<(), TransportError> {
        self.timed(
            "swarm_node_update",
            self.inner.swarm_set_role(id, version, role),
        )
        .await
    }
    async fn swarm_remove_member(&self, id: &str) -> Result<(), TransportError> {
        self.timed("swarm_node_remove", self.inner.swarm_remove_member(id))
            .await
    }
    async fn usage(&self, id: &str) -> Result<crate::transport::Usage, TransportError> {
        self.timed("usage", self.inner.usage(id)).await
    }

    async fn events(
        &self,
        filter: &ListFilter,
    ) -> Result<BoxStream<'static, Result<EngineEvent, TransportError>>, TransportError> {
        self.timed("events", self.inner.events(filter)).await
    }
    async fn logs(
        &self,
        id: &str,
        opts: crate::transport::LogOptions,
    ) -> Result<crate::transport::LogLines, TransportError> {
        self.timed("logs", self.inner.logs(id, opts)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.node_ready.get_or_create(&node_labels("node1")).set(1);
        m.docker_call("node1", "list", Duration::from_millis(1), false);
        let text = m.encode();
        assert!(text.contains("fleetctl_reconciles_total 1"), "{text}");
        assert!(
            text.contains("fleetctl_node_ready{node=\"node1\"} 1"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                name_labels
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic()),
                "{line}"
            );
        }
    }
}

//! Load, beside the loop (SPEC §14): while the manifests in force set `autoscale` on a service
//! or `cpuHighWatermark` on a placement policy, every [`Config::sample_every`](super::Config)
//! the sampler lists each node's running containers and takes one reading of each (a one-shot
//! stats call, a few at a time per node, over the node's connection); two readings of a
//! container give its CPU share between them. The readings become one sample per autoscaled
//! service and per node, pushed into their [`Window`]s; the pure decisions of
//! [`crate::load`] then say whether a service's replica count moves and whether a node turns
//! hot or cools. Each change is recorded in the state store (so it outlives the controller),
//! said as an event with the measurement that caused it, counted in the metrics, and followed
//! by a reconcile.
//!
//! Short calls rather than one long-lived stats stream per container: a hundred open streams
//! (an SSH channel and an HTTP connection each) cost the controller more memory than SPEC §9
//! allows, and the engine streams a reading a second where one every sample is enough.
//! Without such a setting nothing is read: a fleet that does not use them pays nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Controller, lock};
use crate::container::{ContainerRecord, RunState, labels};
use crate::load::{self, HotChange, Reading, Sample, Scale, ServiceLoad, Window};
use crate::manifest::DesiredFleet;
use crate::store::{HotRecord, ScaleRecord};
use crate::transport::{ListFilter, Usage};

/// Samples missing in a row before a window has a hole (nothing is sustained across it).
const GAP_PERIODS: u32 = 3;

/// Readings in flight at once per node.
const READS_PER_NODE: usize = 4;

/// (node, container id).
type Key = (String, String);

/// The sampler's memory between ticks.
#[derive(Default)]
pub(super) struct Sampling {
    /// The last reading of each running container (its CPU counters: the next reading's
    /// share is measured from them).
    prev: HashMap<Key, Usage>,
    /// CPU and memory windows of each autoscaled service.
    services: BTreeMap<String, (Window, Window)>,
    /// CPU window of each node (when a policy has `cpuHighWatermark`).
    nodes: BTreeMap<String, Window>,
    /// CPUs of each node: declared, else the engine's.
    cpus: BTreeMap<String, f64>,
    /// The load records were forgotten since the settings went away.
    cleared: bool,
}

impl Sampling {
    /// Forgets everything measured, and its gauges.
    fn stop_all(&mut self, metrics: &crate::metrics::Metrics) {
        self.prev.clear();
        for name in std::mem::take(&mut self.services).into_keys() {
            let labels = vec![("service".to_string(), name)];
            metrics.service_cpu.remove(&labels);
            metrics.service_memory.remove(&labels);
        }
        for node in std::mem::take(&mut self.nodes).into_keys() {
            metrics.node_cpu.remove(&vec![("node".to_string(), node)]);
        }
    }
}

/// Whether `fleet` asks for load measurements at all.
pub(super) fn wanted(fleet: &DesiredFleet) -> bool {
    fleet.services.values().any(|s| s.autoscale.is_some())
        || fleet
            .policies
            .values()
            .any(|p| p.cpu_high_watermark.is_some())
}

impl Controller {
    /// The lease token writes are fenced with (0 without a lease: tests).
    fn fence_token(&self) -> i64 {
        self.cfg.lease.as_ref().map_or(0, |l| l.token)
    }

    /// The sampler task: a tick every `sample_every` until the controller stops.
    pub(super) async fn watch_load(self: Arc<Self>) {
        let mut sampling = Sampling::default();
        // The hot marks outlive a restart (they are in the store): so does their gauge.
        if let Ok(hot) = self.store.hot_nodes() {
            for node in hot.keys() {
                self.metrics
                    .node_hot
                    .get_or_create(&vec![("node".to_string(), node.clone())])
                    .set(1);
            }
        }
        loop {
            tokio::select! {
                _ = self.tasks.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.sample_every) => {}
            }
            self.sample_tick(&mut sampling).await;
        }
    }

    /// One tick: follow the running containers, take the samples, decide and act.
    pub(super) async fn sample_tick(&self, sampling: &mut Sampling) {
        let loaded = self.desired();
        let fleet = &loaded.fleet;
        if !wanted(fleet) {
            sampling.stop_all(&self.metrics);
            // Marks and counts left by settings since removed must not outlive them: a node
            // marked hot would refuse plugs forever, an old count come back with autoscale.
            if !sampling.cleared {
                self.forget_load_state(self.now_ms());
                sampling.cleared = true;
            }
            return;
        }
        sampling.cleared = false;
        let runtimes = self.runtimes();
        let listed = crate::observe::on_nodes(runtimes.iter().map(|(n, rt)| async move {
            let all = rt.list_containers(&ListFilter::default()).await;
            (n.clone(), all)
        }))
        .await;
        let mut running: BTreeMap<String, Vec<ContainerRecord>> = BTreeMap::new();
        for (node, all) in listed {
            match all {
                Ok(all) => {
                    running.insert(
                        node,
                        all.into_iter()
                            .filter(|c| c.state == RunState::Running)
                            .collect(),
                    );
                }
                // An unreachable node gives no sample: its windows get a hole.
                Err(e) => tracing::debug!(node = %node, error = %e, "load: list failed"),
            }
        }
        let readings = self.read_usage(sampling, &running).await;
        for node in running.keys() {
            if !sampling.cpus.contains_key(node) {
                let declared = fleet
                    .nodes
                    .get(node)
                    .and_then(|n| n.capacity_cpus)
                    .map(|c| c.0 as f64 / 1000.0);
                let cpus = match declared {
                    Some(c) => Some(c),
                    None => match runtimes.get(node) {
                        Some(rt) => rt.engine_info().await.ok().map(|i| i.cpus as f64),
                        None => None,
                    },
                };
                if let Some(c) = cpus.filter(|c| *c > 0.0) {
                    sampling.cpus.insert(node.clone(), c);
                }
            }
        }
        let now = self.now_ms();
        self.take_samples(sampling, fleet, &running, &readings, now);
        if let Err(e) = self.store.record_load(&snapshot(sampling, fleet, now)) {
            tracing::debug!(error = %e, "load: could not record the measurements");
        }
        self.act_on_services(sampling, fleet, now);
        self.act_on_nodes(sampling, fleet, now);
    }

    /// One reading of every running container of the nodes that answered, a few at a time
    /// per node; returns each one's use since its previous reading (CPU absent for a container
    /// read for the first time). Forgets the counters of containers no longer running and of
    /// nodes no longer in the fleet; keeps those of a node that did not answer this time.
    async fn read_usage(
        &self,
        sampling: &mut Sampling,
        running: &BTreeMap<String, Vec<ContainerRecord>>,
    ) -> HashMap<Key, (Option<f64>, u64)> {
        let runtimes = self.runtimes();
        let mut per_node = Vec::new();
        for (node, cs) in running {
            let Some(rt) = runtimes.get(node).cloned() else {
                continue;
            };
            let ids: Vec<String> = cs.iter().map(|c| c.id.clone()).collect();
            let node = node.clone();
            per_node.push(async move {
                let got: Vec<(String, Result<Usage, _>)> =
                    futures_util::stream::iter(ids.into_iter().map(move |id| {
                        let rt = rt.clone();
                        async move {
                            let u = rt.usage(&id).await;
                            (id, u)
                        }
                    }))
                    .buffer_unordered(READS_PER_NODE)
                    .collect()
                    .await;
                got.into_iter()
                    .map(|(id, u)| (node.clone(), id, u))
                    .collect::<Vec<_>>()
            });
        }
        let reads = crate::observe::on_nodes(per_node).await;
        let mut out = HashMap::new();
        for (node, id, u) in reads.into_iter().flatten() {
            match u {
                Ok(u) => {
                    let key = (node, id);
                    let cpu = sampling.prev.get(&key).and_then(|p| u.cpu_percent_since(p));
                    out.insert(key.clone(), (cpu, u.memory));
                    sampling.prev.insert(key, u);
                }
                // Stopped between the listing and the reading, or the node went away.
                Err(e) => {
                    tracing::debug!(node = %node, container = %id, error = %e, "load: no reading")
                }
            }
        }
        sampling.prev.retain(|k, _| {
            out.contains_key(k) || (!running.contains_key(&k.0) && runtimes.contains_key(&k.0))
        });
        out
    }

    /// Turns the newest fresh readings into one sample per autoscaled service and per node.
    fn take_samples(
        &self,
        sampling: &mut Sampling,
        fleet: &DesiredFleet,
        running: &BTreeMap<String, Vec<ContainerRecord>>,
        readings: &HashMap<Key, (Option<f64>, u64)>,
        now: i64,
    ) {
        let period = self.cfg.sample_every;
        let max_gap = period * GAP_PERIODS;
        let fresh = |node: &str, id: &str| {
            readings
                .get(&(node.to_string(), id.to_string()))
                .and_then(|(cpu, memory)| {
                    cpu.map(|cpu_percent| Reading {
                        cpu_percent,
                        memory: *memory,
                    })
                })
        };
        let metrics = &self.metrics;
        sampling.services.retain(|name, _| {
            let keep = fleet
                .services
                .get(name)
                .is_some_and(|s| s.autoscale.is_some());
            if !keep {
                let labels = vec![("service".to_string(), name.clone())];
                metrics.service_cpu.remove(&labels);
                metrics.service_memory.remove(&labels);
            }
            keep
        });
        for (name, spec) in &fleet.services {
            let Some(a) = &spec.autoscale else { continue };
            let mine: Vec<Reading> = running
                .iter()
                .flat_map(|(n, cs)| cs.iter().map(move |c| (n, c)))
                .filter(|(_, c)| {
                    c.label(labels::FLEET) == Some(fleet.fleet.name.as_str())
                        && c.label(labels::SERVICE) == Some(name.as_str())
                })
                .filter_map(|(n, c)| fresh(n, &c.id))
                .collect();
            let keep = a.longest_window() + period;
            let (cpu_w, mem_w) = sampling
                .services
                .entry(name.clone())
                .or_insert_with(|| (Window::new(keep, max_gap), Window::new(keep, max_gap)));
            cpu_w.set_keep(keep);
            mem_w.set_keep(keep);
            if let Some((cpu, mem)) = load::service_sample(&spec.resources, &mine) {
                cpu_w.push(Sample {
                    at_ms: now,
                    used: cpu,
                });
                mem_w.push(Sample {
                    at_ms: now,
                    used: mem,
                });
                self.metrics
                    .service_cpu
                    .get_or_create(&vec![("service".to_string(), name.clone())])
                    .set(cpu);
                self.metrics
                    .service_memory
                    .get_or_create(&vec![("service".to_string(), name.clone())])
                    .set(mem);
            }
        }
        let hot_for = fleet
            .policies
            .values()
            .filter_map(|p| p.cpu_high_watermark.map(|h| h.for_))
            .max();
        let Some(hot_for) = hot_for else {
            for n in std::mem::take(&mut sampling.nodes).into_keys() {
                metrics.node_cpu.remove(&vec![("node".to_string(), n)]);
            }
            return;
        };
        sampling.nodes.retain(|n, _| {
            let keep = fleet.nodes.contains_key(n);
            if !keep {
                metrics
                    .node_cpu
                    .remove(&vec![("node".to_string(), n.clone())]);
            }
            keep
        });
        for (node, cs) in running {
            let Some(cpus) = sampling.cpus.get(node).copied() else {
                continue;
            };
            let all: Vec<Reading> = cs.iter().filter_map(|c| fresh(node, &c.id)).collect();
            // A node some of whose containers have no share yet (read once) gives none.
            if all.len() < cs.len() {
                continue;
            }
            let used = load::node_cpu(&all, cpus);
            let w = sampling
                .nodes
                .entry(node.clone())
                .or_insert_with(|| Window::new(hot_for + period, max_gap));
            w.set_keep(hot_for + period);
            w.push(Sample { at_ms: now, used });
            self.metrics
                .node_cpu
                .get_or_create(&vec![("node".to_string(), node.clone())])
                .set(used);
        }
    }

    /// Decides each autoscaled service's count and records a change.
    fn act_on_services(&self, sampling: &mut Sampling, fleet: &DesiredFleet, now: i64) {
        let records = match self.store.scale_records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "load: could not read the autoscale records");
                return;
            }
        };
        for name in records.keys() {
            if fleet
                .services
                .get(name)
                .is_none_or(|s| s.autoscale.is_none())
                && let Err(e) = self.store.record_scale(self.fence_token(), name, None)
            {
                tracing::warn!(service = %name, error = %e, "load: could not forget the autoscale record");
            }
        }
        let mut changed = Vec::new();
        let unplaced = lock(&self.state).unplaced.clone();
        for (name, spec) in &fleet.services {
            let Some(a) = &spec.autoscale else { continue };
            let record = records.get(name);
            // The count in force: the desired fleet's already carries the record, clamped.
            let current = spec.replicas;
            // A count the autoscaler raised past what placement can hold is given back (never
            // under min), saying why; its cooldown starts again, so a load that still asks for
            // more meets the same "no room" at most once per cooldown.
            if let (Some((n, diagnosis)), Some(_)) = (unplaced.get(name), record) {
                let to = current.saturating_sub(*n).max(a.min);
                if to < current {
                    let why = format!("no room for more: {diagnosis}");
                    let rec = ScaleRecord {
                        replicas: to,
                        at_ms: now,
                        why: why.clone(),
                    };
                    if let Err(e) = self
                        .store
                        .record_scale(self.fence_token(), name, Some(&rec))
                    {
                        tracing::warn!(service = %name, error = %e, "load: could not record the new count");
                        continue;
                    }
                    let message = format!("{name}: {current} → {to} replicas ({why})");
                    self.scaled(name, "no-room", &message, now);
                    if let Some((c, m)) = sampling.services.get_mut(name) {
                        c.clear();
                        m.clear();
                    }
                    changed.push(message);
                    continue;
                }
            }
            let Some((cpu_w, mem_w)) = sampling.services.get(name) else {
                continue;
            };
            let decision = load::decide(
                a,
                current,
                ServiceLoad {
                    cpu: a.cpu.as_ref().map(|_| cpu_w),
                    memory: a.memory.as_ref().map(|_| mem_w),
                },
                record.map(|r| r.at_ms),
                now,
            );
            let Scale::To { replicas, why } = decision else {
                continue;
            };
            let rec = ScaleRecord {
                replicas,
                at_ms: now,
                why: why.to_string(),
            };
            if let Err(e) = self
                .store
                .record_scale(self.fence_token(), name, Some(&rec))
            {
                tracing::warn!(service = %name, error = %e, "load: could not record the new count");
                continue;
            }
            let direction = if replicas > current { "up" } else { "down" };
            let message = format!("{name}: {current} → {replicas} replicas ({why})");
            self.scaled(name, direction, &message, now);
            if let Some((c, m)) = sampling.services.get_mut(name) {
                // What the old count used says little about the new one.
                c.clear();
                m.clear();
            }
            changed.push(message);
        }
        if !changed.is_empty() {
            self.refresh_scaled();
            self.trigger(super::Trigger::Operation(format!(
                "autoscale: {}",
                changed.join("; ")
            )));
        }
    }

    /// Forgets every autoscale count and cools every hot node (the settings are gone).
    fn forget_load_state(&self, now: i64) {
        match self.store.scale_records() {
            Ok(records) => {
                for name in records.keys() {
                    if let Err(e) = self.store.record_scale(self.fence_token(), name, None) {
                        tracing::warn!(service = %name, error = %e, "load: could not forget the autoscale record");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "load: could not read the autoscale records"),
        }
        match self.store.hot_nodes() {
            Ok(hot) => {
                for node in hot.keys() {
                    self.mark(node, None, "cpuHighWatermark removed", now);
                }
            }
            Err(e) => tracing::warn!(error = %e, "load: could not read the hot nodes"),
        }
    }

    /// Says a recorded scale: log, event `scale`, metric.
    fn scaled(&self, service: &str, direction: &str, message: &str, now: i64) {
        tracing::info!("autoscale: {message}");
        if let Err(e) =
            self.store
                .record_event(now, &self.cfg.actor, "scale", None, Some(service), message)
        {
            tracing::warn!(error = %e, "could not record event");
        }
        self.metrics
            .scales
            .get_or_create(&vec![
                ("service".to_string(), service.to_string()),
                ("direction".to_string(), direction.to_string()),
            ])
            .inc();
    }

    /// Decides each node's hot mark and records a change.
    fn act_on_nodes(&self, sampling: &mut Sampling, fleet: &DesiredFleet, now: i64) {
        // The strictest rule of any policy decides (the lowest watermark).
        let rule = fleet
            .policies
            .values()
            .filter_map(|p| p.cpu_high_watermark)
            .min_by_key(|h| h.above);
        let hot = match self.store.hot_nodes() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "load: could not read the hot nodes");
                return;
            }
        };
        let Some(rule) = rule else {
            for node in hot.keys() {
                self.mark(node, None, "cpuHighWatermark removed", now);
            }
            return;
        };
        for (node, w) in &sampling.nodes {
            match load::hot_change(&rule, hot.contains_key(node), w, now) {
                Some(HotChange::Hot { cause }) => {
                    let why = cause.to_string();
                    self.mark(
                        node,
                        Some(&HotRecord {
                            since_ms: now,
                            why: why.clone(),
                        }),
                        &why,
                        now,
                    );
                }
                Some(HotChange::Cool { cause }) => self.mark(node, None, &cause.to_string(), now),
                None => {}
            }
        }
        for node in hot.keys() {
            if !fleet.nodes.contains_key(node) {
                self.mark(node, None, "node removed from the manifests", now);
            }
        }
    }

    fn mark(&self, node: &str, record: Option<&HotRecord>, why: &str, now: i64) {
        if let Err(e) = self.store.set_hot(self.fence_token(), node, record) {
            tracing::warn!(node = %node, error = %e, "load: could not record the node's hot mark");
            return;
        }
        let (action, message) = match record {
            Some(_) => ("node-hot", format!("{why}: no new plug until it cools")),
            None => ("node-cool", format!("{why}: takes plugs again")),
        };
        tracing::info!(node = %node, "{message}");
        if let Err(e) =
            self.store
                .record_event(now, &self.cfg.actor, action, Some(node), None, &message)
        {
            tracing::warn!(error = %e, "could not record event");
        }
        self.metrics
            .node_hot
            .get_or_create(&vec![("node".to_string(), node.to_string())])
            .set(i64::from(record.is_some()));
    }

    /// Puts the recorded replica counts into the manifests in force.
    pub(super) fn refresh_scaled(&self) {
        // Cloned under the write lock: a set put in force meanwhile is the one updated.
        let mut desired = self.desired.write().unwrap_or_else(|p| p.into_inner());
        match self.store.scale_records() {
            Ok(records) => {
                let mut loaded = (**desired).clone();
                load::apply_scaled(&mut loaded.fleet, &records);
                *desired = Arc::new(loaded);
            }
            Err(e) => tracing::warn!(error = %e, "load: could not read the autoscale records"),
        }
    }
}

/// The last sample and window mean of every autoscaled service and sampled node.
fn snapshot(sampling: &Sampling, fleet: &DesiredFleet, now: i64) -> load::LoadSnapshot {
    let mut out = load::LoadSnapshot {
        at_ms: now,
        ..Default::default()
    };
    for (name, (cpu, mem)) in &sampling.services {
        let Some(a) = fleet.services.get(name).and_then(|s| s.autoscale.as_ref()) else {
            continue;
        };
        let (Some(c), Some(m)) = (cpu.latest(), mem.latest()) else {
            continue;
        };
        let window = a.longest_window();
        out.services.insert(
            name.clone(),
            load::MeasuredLoad {
                cpu: c.used,
                cpu_mean: cpu.mean(window, now).unwrap_or(c.used),
                memory: Some(m.used),
                memory_mean: mem.mean(window, now),
                window_s: window.as_secs(),
            },
        );
    }
    let window = fleet
        .policies
        .values()
        .filter_map(|p| p.cpu_high_watermark.map(|h| h.for_))
        .max()
        .unwrap_or_default();
    for (node, w) in &sampling.nodes {
        if let Some(c) = w.latest() {
            out.nodes.insert(
                node.clone(),
                load::MeasuredLoad {
                    cpu: c.used,
                    cpu_mean: w.mean(window, now).unwrap_or(c.used),
                    memory: None,
                    memory_mean: None,
                    window_s: window.as_secs(),
                },
            );
        }
    }
    out
}

/// How often the sampler takes a sample by default.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

//! The controller behind `fleetctl run PATH`: a loop that keeps the fleet converged.
//!
//! # Shape
//! Triggers — engine events of managed containers, manifest changes, SSH connection changes,
//! intents from CLI commands and API calls, and a timer — land in one coalescing queue
//! ([`triggers::Triggers`]). The loop takes everything pending and runs **one** reconcile of the
//! whole fleet ([`Controller::reconcile`]): the shared pass of `apply`
//! ([`crate::reconcile::pass_adjusted`]: observe every node, plan, execute, settle), with
//! the controller's own inputs around it:
//!
//! - before: plugs idle past their class's `idleTimeout` are stopped ([`evict::idle_stops`]);
//!   nodes unreachable for `nodeLostAfter` are passed as lost ([`nodes::Readiness`]);
//! - on the plan: restarts of unhealthy containers are added and restarts inside their
//!   per-container backoff held back ([`heal::adjust`], [`backoff::Backoff`]);
//! - after: node readiness moves on (and is persisted).
//!
//! Beside the loop, every `resync`, memory is measured on every node and the most idle plugs of
//! nodes above their watermark are evicted ([`evict::pressure_evictions`]); measuring costs a
//! stats call per container, so it never sits on the path of a restart. With
//! `diskHighWatermark` set, every `resync` beside the loop too, each node's disk is measured
//! and the images nothing uses or names are pruned from nodes above it ([`Controller::check_disk`]).
//!
//! The reconcile returns an [`Action`]: requeue after `min(resync, next backoff expiry, next
//! node-lost deadline, next idle timeout)`; errors go through [`error_policy`]. Neither sleeps.
//! Events are hints: every reconcile reads the full desired and observed state, and the
//! periodic resync is the backstop for anything missed.
//!
//! Everything that changes the fleet — reconciles, plug deletes and touches, drains — runs
//! under one work lock, so two of them never act at once within the controller; the fleet
//! lease keeps other processes out.

pub mod backoff;
pub mod evict;
pub mod heal;
pub mod intents;
pub mod nodes;
pub mod ops;
mod sampling;
pub mod triggers;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::container::{RunState, labels};
use crate::disk;
use crate::execute::{ExecOptions, Progress, Runtimes};
use crate::manifest::{self, Loaded, NodeSpec};
use crate::metrics::{MeteredRuntime, Metrics, node_labels};
use crate::observe::{NodeObservation, ObservedFleet};
use crate::plan::Action as StepAction;
use crate::reconcile::{PassContext, PassReport, pass_adjusted};
use crate::store::{PlugState, Store, StoreError};
use crate::transport::{Endpoint, NodeRuntime};

use self::evict::NodeMemory;
use self::nodes::{Readiness, Tracker};
use self::triggers::{Trigger, Triggers};

/// Requeue after a reconcile that failed (state store errors): soon, but not in a tight loop.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// How long a pass in flight may finish after SIGTERM/SIGINT before it is abandoned: every step
/// is idempotent, so an abandoned pass is finished by the next controller. Below systemd's and
/// the spec's 10 s so the lease is still released in time.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);
/// How often the store is checked for intents handed over by CLI commands.
pub const INTENT_POLL: Duration = Duration::from_millis(200);
/// Quiet time after a manifest file change before the directory is rescanned: editors write
/// in several steps.
pub const MANIFEST_DEBOUNCE: Duration = Duration::from_millis(400);

/// The controller's clock: wall time in production; in tests, wall time at start plus tokio's
/// (pausable) elapsed time, so backoff, resync and timeouts can be tested with paused time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// `SystemTime::now()`.
    System,
    /// `base_ms` plus the tokio time elapsed since `base`.
    Tokio {
        /// Milliseconds since the epoch at `base`.
        base_ms: i64,
        /// The tokio instant of `base_ms`.
        base: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's time, starting now.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            base_ms: crate::store::now_ms(),
            base: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => crate::store::now_ms(),
            Clock::Tokio { base_ms, base } => base_ms + base.elapsed().as_millis() as i64,
        }
    }
}

/// What a reconcile decided: when to look again at the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Run again after this long even if nothing triggers.
    pub requeue_after: Duration,
}

impl Action {
    /// Requeue after `d`.
    pub fn requeue(d: Duration) -> Action {
        Action { requeue_after: d }
    }
}

/// Failures of the controller as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another actor took the fleet lease: this controller must not act any more.
    #[error(
        "lease lost: another actor took the fleet lease; stopped without changing anything more"
    )]
    LeaseLost,
    /// The manifest directory cannot be watched.
    #[error("cannot watch the manifests at {path}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify_debouncer_full::notify::Error,
    },
}

/// Maps a reconcile error to what to do next: requeue soon (rule: never sleep in place).
pub fn error_policy(err: &StoreError) -> Action {
    tracing::warn!(error = %err, requeue_s = ERROR_REQUEUE.as_secs(), "reconcile failed");
    Action::requeue(ERROR_REQUEUE)
}

/// The fleet lease this controller holds.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Fencing token.
    pub token: i64,
    /// When it was taken (ms, wall time): intents submitted before are stale.
    pub acquired_ms: i64,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The manifests (file or directory), watched for changes.
    pub manifests: PathBuf,
    /// Who acts (lease holder, event log).
    pub actor: String,
    /// The fleet lease, renewed by the controller; `None` only in tests.
    pub lease: Option<LeaseConfig>,
    /// Execution options of every pass.
    pub exec: ExecOptions,
    /// Time source.
    pub clock: Clock,
    /// Watch the manifest directory (off in tests that swap manifests by hand).
    pub watch_manifests: bool,
    /// Check for intents from CLI commands (off in tests that do not need them).
    pub poll_intents: bool,
    /// How often load is sampled while the manifests set `autoscale` or `cpuHighWatermark`.
    pub sample_every: Duration,
}

impl Config {
    /// Defaults for `fleetctl run PATH` as `actor`.
    pub fn new(manifests: PathBuf, actor: &str) -> Config {
        Config {
            manifests,
            actor: actor.to_string(),
            lease: None,
            exec: ExecOptions {
                actor: actor.to_string(),
                ..ExecOptions::default()
            },
            clock: Clock::System,
            watch_manifests: true,
            poll_intents: true,
            sample_every: sampling::SAMPLE_EVERY,
        }
    }
}

/// Makes the runtime of a node (SSH in production, fakes in tests).
pub type Connector = Arc<dyn Fn(&NodeSpec) -> Arc<dyn NodeRuntime> + Send + Sync>;

/// What the loop remembers between reconciles.
#[derive(Default)]
struct LoopState {
    backoff: backoff::Backoff,
    readiness: Tracker,
    last_observed: ObservedFleet,
    /// Memory measured per node by the last pressure check.
    measured: BTreeMap<String, u64>,
    /// Nodes above `diskHighWatermark` with nothing left to prune, already reported: said once
    /// until the node falls back under the watermark.
    disk_full_said: BTreeSet<String>,
    /// (node, image id) the engine refused to remove: not tried again by this controller.
    prune_refused: BTreeSet<(String, String)>,
    /// Per service, the replicas the last pass could not place and why (the first one's
    /// per-node diagnosis): the autoscaler gives back a count placement cannot hold.
    unplaced: BTreeMap<String, (u32, String)>,
}

/// A running controller. Shared (`Arc`) between the loop, the API and the intent handlers.
pub struct Controller {
    cfg: Config,
    store: Arc<Store>,
    connect: Connector,
    metrics: Arc<Metrics>,
    triggers: Arc<Triggers>,
    desired: RwLock<Arc<Loaded>>,
    /// Hash of the last manifest set seen on disk (valid or not): only a change is acted on.
    seen_hash: Mutex<String>,
    /// What the set in force was last found to be (manifest hash, image digests, secret
    /// hashes), recorded as a revision or found to be the last one: a pass that finds nothing
    /// to do records a revision only when this changed.
    revision_key: Mutex<String>,
    /// A rollback in force (`fleetctl rollback` handed over): its manifest hash and the
    /// revision it applies again. The watched directory's set replaces it at the next change
    /// there, or at the next `fleetctl apply`.
    rollback: Mutex<Option<(String, i64)>>,
    runtimes: RwLock<Arc<Runtimes>>,
    watchers: Mutex<BTreeMap<String, (Endpoint, CancellationToken)>>,
    work: tokio::sync::Mutex<()>,
    state: Mutex<LoopState>,
    shutdown: CancellationToken,
    tasks: CancellationToken,
    lease_lost: AtomicBool,
    passes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    /// A controller for `loaded` (already validated) that stops when `shutdown` is cancelled.
    pub fn new(
        cfg: Config,
        store: Arc<Store>,
        loaded: Loaded,
        connect: Connector,
        shutdown: CancellationToken,
    ) -> Arc<Controller> {
        let hash = loaded.sources_hash();
        Arc::new(Controller {
            cfg,
            store,
            connect,
            metrics: Arc::new(Metrics::new()),
            triggers: Arc::new(Triggers::new()),
            desired: RwLock::new(Arc::new(loaded)),
            seen_hash: Mutex::new(hash),
            revision_key: Mutex::new(String::new()),
            rollback: Mutex::new(None),
            runtimes: RwLock::new(Arc::new(Runtimes::new())),
            watchers: Mutex::new(BTreeMap::new()),
            work: tokio::sync::Mutex::new(()),
            state: Mutex::new(LoopState::default()),
            tasks: shutdown.child_token(),
            shutdown,
            lease_lost: AtomicBool::new(false),
            passes: AtomicU64::new(0),
        })
    }

    /// The manifests in force (the last good set).
    pub fn desired(&self) -> Arc<Loaded> {
        self.desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `loaded` in force, with each autoscaled service's recorded count on it (SPEC §14:
    /// new manifests, a rollback or a secrets reload never undo a scale). The records are read
    /// under the same lock as the swap, so a scale recorded meanwhile is not lost.
    fn set_desired(&self, mut loaded: Loaded) {
        let mut desired = self.desired.write().unwrap_or_else(|p| p.into_inner());
        if loaded
            .fleet
            .services
            .values()
            .any(|s| s.autoscale.is_some())
        {
            match self.store.scale_records() {
                Ok(records) => crate::load::apply_scaled(&mut loaded.fleet, &records),
                Err(e) => tracing::warn!(error = %e, "could not read the autoscale records"),
            }
        }
        *desired = Arc::new(loaded);
    }

    /// The node runtimes in force.
    pub fn runtimes(&self) -> Arc<Runtimes> {
        self.runtimes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics as served on `/metrics`: the plug gauge read from the state store now.
    /// When the store cannot be read the plug gauge is left out (empty), and the error is
    /// logged once per scrape; every other metric is still served.
    pub fn metrics_text(&self) -> String {
        let plugs = self.store.plugs().unwrap_or_else(|e| {
            tracing::warn!("metrics: reading the plugs for fleetctl_plugs: {e}");
            Vec::new()
        });
        self.metrics.encode_with_plugs(&plugs)
    }

    /// Milliseconds since the epoch, by the controller's clock.
    pub fn now_ms(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    /// Asks for a reconcile.
    pub fn trigger(&self, t: Trigger) {
        self.triggers.push(t);
    }

    /// Reconcile passes run so far.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Nodes whose work is placed elsewhere (NotReady) or that are back but not Ready yet.
    pub fn lost_nodes(&self) -> BTreeSet<String> {
        let now = self.now_ms();
        let lost_after = self.desired().fleet.fleet.node_lost_after;
        lock(&self.state)
            .readiness
            .iter()
            .filter(|(_, r)| r.at(now, lost_after).is_lost())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Readiness of every node, as of now.
    pub fn readiness(&self) -> Tracker {
        let now = self.now_ms();
        let lost_after = self.desired().fleet.fleet.node_lost_after;
        lock(&self.state)
            .readiness
            .iter()
            .map(|(n, r)| (n.clone(), r.at(now, lost_after)))
            .collect()
    }

    /// The observation of the last reconcile.
    pub fn last_observed(&self) -> ObservedFleet {
        lock(&self.state).last_observed.clone()
    }

    /// Memory use per node, as the last pressure check measured it (bytes).
    pub fn measured_memory(&self) -> BTreeMap<String, u64> {
        lock(&self.state).measured.clone()
    }

    /// Runs until the shutdown token is cancelled (SIGTERM/SIGINT) or the lease is lost: the
    /// loop, the lease renewal, the manifest watcher, one event follower per node and the intent
    /// poller. Returns after the pass in flight finished (or [`SHUTDOWN_GRACE`] passed); the
    /// caller then releases the lease.
    ///
    /// # Errors
    /// [`ControllerError::LeaseLost`] when another actor took the lease; the manifest directory
    /// cannot be watched; the store cannot be read at start.
    pub async fn run(self: &Arc<Self>) -> Result<(), ControllerError> {
        self.init_readiness()?;
        self.sync_runtimes();
        if self.cfg.watch_manifests {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let debouncer = watch::watch_manifests(&self.cfg.manifests, MANIFEST_DEBOUNCE, tx)
                .map_err(|source| ControllerError::Watch {
                    path: self.cfg.manifests.clone(),
                    source,
                })?;
            tokio::spawn(self.clone().follow_manifests(rx, debouncer));
        }
        if self.cfg.poll_intents {
            tokio::spawn(self.clone().poll_intents());
        }
        tokio::spawn(self.clone().watch_pressure());
        tokio::spawn(self.clone().watch_disk());
        tokio::spawn(self.clone().watch_load());
        let result = self.run_loop().await;
        self.tasks.cancel();
        let fenced = self
            .cfg
            .exec
            .fence
            .as_ref()
            .is_some_and(|f| f.check().is_err());
        if fenced || self.lease_lost.load(Ordering::Relaxed) {
            return Err(ControllerError::LeaseLost);
        }
        result
    }

    async fn run_loop(self: &Arc<Self>) -> Result<(), ControllerError> {
        self.triggers.push(Trigger::Start);
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = self.triggers.wait() => {}
                _ = tokio::time::sleep_until(next) => self.triggers.push(Trigger::Timer),
            }
            let Some(why) = self.triggers.take() else {
                continue;
            };
            let why_line = why.to_string();
            if why.has(&Trigger::Timer) {
                // The backstop for a missed file event (network filesystems, overflow).
                self.reload_manifests();
            }
            let guard = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                g = self.work.lock() => g,
            };
            let grace = async {
                self.shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            };
            let action = tokio::select! {
                r = self.reconcile(&why_line) => match r {
                    Ok(a) => a,
                    Err(e) => {
                        self.metrics.reconcile_errors.inc();
                        error_policy(&e)
                    }
                },
                _ = grace => {
                    tracing::warn!("shutdown: the pass in flight did not finish within {}s; abandoning it (the next controller finishes it)", SHUTDOWN_GRACE.as_secs());
                    break;
                }
            };
            drop(guard);
            next = tokio::time::Instant::now() + action.requeue_after;
        }
        Ok(())
    }

    fn init_readiness(&self) -> Result<(), StoreError> {
        let conditions = self.store.node_conditions()?;
        let now = self.now_ms();
        let lost_after = self.desired().fleet.fleet.node_lost_after;
        let mut st = lock(&self.state);
        for name in self.desired().fleet.nodes.keys() {
            let r = conditions.get(name).map_or(Readiness::Ready, |c| {
                Readiness::from_condition(c, now, lost_after)
            });
            st.readiness.insert(name.clone(), r);
        }
        Ok(())
    }

    /// Makes the runtimes (and event followers) match the nodes of the manifests in force: new
    /// or changed nodes get a new runtime, removed ones lose theirs.
    fn sync_runtimes(&self) {
        let loaded = self.desired();
        let fleet = &loaded.fleet;
        let mut watchers = lock(&self.watchers);
        let mut rts: Runtimes = (*self.runtimes()).clone();
        let filter = watch::fleet_events_filter(&fleet.fleet.name);
        for (name, spec) in &fleet.nodes {
            let ep = Endpoint::from_node(spec);
            if watchers.get(name).is_some_and(|(e, _)| *e == ep) {
                continue;
            }
            if let Some((_, tok)) = watchers.remove(name) {
                tok.cancel();
            }
            let rt = MeteredRuntime::wrap((self.connect)(spec), self.metrics.clone());
            rts.insert(name.clone(), rt.clone());
            let tok = self.tasks.child_token();
            tokio::spawn(watch::node_events(
                rt,
                filter.clone(),
                self.triggers.clone(),
                tok.clone(),
            ));
            watchers.insert(name.clone(), (ep, tok));
        }
        watchers.retain(|name, (_, tok)| {
            let keep = fleet.nodes.contains_key(name);
            if !keep {
                tok.cancel();
            }
            keep
        });
        rts.retain(|name, _| fleet.nodes.contains_key(name));
        let mut st = lock(&self.state);
        st.readiness
            .retain(|name, _| fleet.nodes.contains_key(name));
        for name in fleet.nodes.keys() {
            st.readiness.entry(name.clone()).or_insert(Readiness::Ready);
        }
        drop(st);
        *self.runtimes.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rts);
    }

    async fn follow_manifests(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<()>,
        debouncer: impl Send + 'static,
    ) {
        let _keep = debouncer; // the watch lives as long as this task
        loop {
            tokio::select! {
                _ = self.tasks.cancelled() => return,
                got = rx.recv() => if got.is_none() { return },
            }
            while rx.try_recv().is_ok() {}
            self.reload_manifests();
        }
    }

    /// Rescans the manifests; acts only when their hash changed (the manifest files and the
    /// config files they name: an edited config file is a change too). A valid new set
    /// replaces the one in force (recorded as applied) and triggers a reconcile; an invalid one
    /// is logged — every diagnostic with its location — and the last good set stays in force.
    ///
    /// Returns whether a new set is now in force.
    pub fn reload_manifests(&self) -> bool {
        let read = manifest::read_path(&self.cfg.manifests);
        // Parsed every time: the config files are read by validation, so only the parsed set
        // knows whether one of them changed.
        let parsed = read.clone().and_then(|sources| manifest::parse(&sources));
        let hash = match (&read, &parsed) {
            (Ok(_), Ok(loaded)) => loaded.sources_hash(),
            // The diagnostics too: fixing a config file the manifests name changes them.
            (Ok(sources), Err(e)) => format!(
                "invalid: {} {}",
                manifest::sources_hash(sources),
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(e.to_string()))
            ),
            (Err(e), _) => format!("unreadable: {e}"),
        };
        {
            let mut seen = lock(&self.seen_hash);
            if *seen == hash {
                return false;
            }
            *seen = hash.clone();
        }
        let current = self.desired();
        let mut loaded = match parsed {
            Ok(l) => l,
            Err(errors) => {
                for d in &errors.diagnostics {
                    let location = format!("{}:{}:{}", d.file, d.line, d.column);
                    if d.is_error() {
                        tracing::error!(location = %location, field = %d.path, "{d}");
                    } else {
                        tracing::warn!(location = %location, field = %d.path, "{d}");
                    }
                }
                tracing::error!(
                    errors = errors.diagnostics.iter().filter(|d| d.is_error()).count(),
                    in_force = %&current.sources_hash()[..12],
                    "manifests invalid; nothing changed, the last good manifests stay in force"
                );
                return false;
            }
        };
        if loaded.fleet.fleet.name != current.fleet.fleet.name {
            tracing::error!(
                from = %current.fleet.fleet.name,
                to = %loaded.fleet.fleet.name,
                "the manifests now name another fleet; ignored (restart the controller with the other fleet's state)"
            );
            return false;
        }
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        match self.read_secrets(&loaded.fleet, &current.fleet.secret_values) {
            Ok(values) => loaded.fleet.secret_values = values,
            Err(text) => {
                tracing::error!(
                    in_force = %&current.sources_hash()[..12],
                    "{text}; nothing changed, the last good manifests stay in force"
                );
                // Not seen: the next rescan (a secret file put back) tries this set again.
                *lock(&self.seen_hash) = current.sources_hash();
                return false;
            }
        }
        if loaded.fleet.fleet.api_listen != current.fleet.fleet.api_listen
            || loaded.fleet.fleet.api_token_file != current.fleet.fleet.api_token_file
        {
            tracing::warn!("api settings changed; they take effect when the controller restarts");
        }
        if let Some(lease) = &self.cfg.lease {
            match self.store.record_applied(
                lease.token,
                &self.cfg.actor,
                &hash,
                &loaded.sources,
                crate::store::now_ms(),
            ) {
                Ok(()) => {}
                Err(StoreError::Fenced { .. }) => {
                    tracing::error!("the fleet lease was taken by another actor; stopping");
                    self.lease_lost.store(true, Ordering::Relaxed);
                    self.shutdown.cancel();
                    return false;
                }
                Err(e) => tracing::warn!(error = %e, "could not record the applied manifests"),
            }
        }
        tracing::info!(hash = %&hash[..12], files = loaded.sources.len(), "new manifests in force");
        self.set_desired(loaded);
        self.sync_runtimes();
        self.triggers.push(Trigger::Manifests);
        true
    }

    /// Every `resync`: delete the events older than `eventRetention` from the event log, then
    /// measure every node's memory (one stats call per running container) and evict the most
    /// idle plugs of nodes above their watermark. Runs beside the loop, not under the work
    /// lock — it only changes the store; the reconcile it triggers stops the containers.
    async fn watch_pressure(self: Arc<Self>) {
        loop {
            let period = self.desired().fleet.fleet.resync;
            tokio::select! {
                _ = self.tasks.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let loaded = self.desired();
            let retention = loaded.fleet.fleet.event_retention;
            let before = self
                .now_ms()
                .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
            match self.store.prune_events(before) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(deleted = n, "event log: events past eventRetention deleted")
                }
                Err(e) => tracing::warn!(error = %e, "could not prune the event log"),
            }
            let runtimes = self.runtimes();
            let observed = crate::plugs::observe_with_memory(&loaded.fleet, &runtimes).await;
            {
                let mut st = lock(&self.state);
                st.measured = observed
                    .nodes
                    .iter()
                    .filter_map(|(n, o)| match o {
                        NodeObservation::Reachable {
                            measured_memory: Some(m),
                            ..
                        } => Some((n.clone(), *m)),
                        _ => None,
                    })
                    .collect();
            }
            match self
                .relieve_pressure(&loaded, &runtimes, &observed, self.now_ms())
                .await
            {
                Ok(0) => {}
                Ok(n) => self.trigger(Trigger::Operation(format!(
                    "memory pressure: {n} plug(s) evicted"
                ))),
                Err(e) => tracing::warn!(error = %e, "memory pressure check failed"),
            }
        }
    }

    /// Reads the secrets `fleet` uses (SPEC §12). A source that cannot be read now keeps the
    /// value `last` has for it (reported: a warning and a `secret-unreadable` event naming the
    /// secret and why); a secret with no last value makes the whole set unusable.
    ///
    /// # Errors
    /// Why, in words (each secret once, never a value).
    fn read_secrets(
        &self,
        fleet: &crate::manifest::DesiredFleet,
        last: &crate::secrets::SecretValues,
    ) -> Result<crate::secrets::SecretValues, String> {
        let key = self.store.secret_key().map_err(|e| e.to_string())?;
        let (values, errors) = crate::secrets::read_used(fleet, &key);
        let mut kept = Vec::new();
        let mut missing = Vec::new();
        for e in &errors {
            match e.secret().filter(|s| last.get(s).is_some()) {
                Some(s) => {
                    tracing::warn!(secret = s, "{e}; the last good value stays in use");
                    if let Err(err) = self.store.record_event(
                        self.now_ms(),
                        &self.cfg.actor,
                        "secret-unreadable",
                        None,
                        Some(s),
                        &format!("{e}; the last good value stays in use"),
                    ) {
                        tracing::warn!(error = %err, "could not record event");
                    }
                    kept.push(s);
                }
                None => missing.push(e.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(missing.join("; "));
        }
        Ok(values.with_kept(last, &kept))
    }

    /// Reads the secrets of the manifests in force again (`SIGHUP`): a value that changed
    /// replaces the containers that use it, through the next reconcile. Returns whether any
    /// changed.
    pub fn reload_secrets(&self) -> bool {
        let current = self.desired();
        match self.read_secrets(&current.fleet, &current.fleet.secret_values) {
            Ok(values) if values != current.fleet.secret_values => {
                let mut next = (*current).clone();
                next.fleet.secret_values = values;
                self.set_desired(next);
                tracing::info!("secrets read again: some changed");
                self.triggers.push(Trigger::Manifests);
                true
            }
            Ok(_) => {
                tracing::info!("secrets read again: none changed");
                false
            }
            Err(text) => {
                tracing::error!("{text}; the secrets in use stay");
                false
            }
        }
    }

    /// Every `resync` while `diskHighWatermark` is set (from the start): measure every node's
    /// disk and prune the nodes above it ([`Self::check_disk`]). Beside the loop, like the
    /// memory check: `system df` walks the engine's data root, which never sits on the path
    /// of a restart.
    async fn watch_disk(self: Arc<Self>) {
        loop {
            if self.desired().fleet.fleet.disk_high_watermark.is_some() {
                self.check_disk().await;
            }
            let period = self.desired().fleet.fleet.resync;
            tokio::select! {
                _ = self.tasks.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// Measures every node's disk ([`disk::measure`]) and, on each node above the watermark,
    /// removes the images [`disk::prune_plan`] names: none that a container uses or the
    /// applied manifests name (with the digests the fleet runs). Removals run under the work
    /// lock, so no pass pulls or creates meanwhile; each node's are one event (`prune-images`)
    /// and count in the metrics. A node above the watermark with nothing to remove is reported
    /// once (`disk-high`) until it falls back under.
    pub async fn check_disk(&self) {
        let loaded = self.desired();
        let fleet = &loaded.fleet;
        let Some(watermark) = fleet.fleet.disk_high_watermark else {
            return;
        };
        let runtimes = self.runtimes();
        // First the cheap part on every node at once: the filesystem (`df`). `system df` walks
        // the data root, so it is asked only of a node that may be above the watermark.
        let checks = fleet.nodes.iter().filter_map(|(name, spec)| {
            let rt = runtimes.get(name)?.clone();
            let declared = spec.capacity_disk.map(|b| b.0);
            Some(async move {
                let d = disk::measure_filesystem(rt.as_ref(), declared).await;
                (name.clone(), rt, declared, d)
            })
        });
        for (node, rt, declared, measured) in crate::observe::on_nodes(checks).await {
            let d = match measured {
                Ok(d) => d,
                Err(e) => {
                    tracing::debug!(node = %node, error = %e, "disk not measured");
                    continue;
                }
            };
            if let Some(e) = &d.filesystem_error {
                tracing::debug!(node = %node, error = %e, "data root filesystem not measured");
            }
            if let Some(used) = d.used_hundredths() {
                self.disk_metrics(&node, &d);
                if used <= watermark.0 {
                    lock(&self.state).disk_full_said.remove(&node);
                    continue;
                }
            } else if declared.is_none() {
                continue; // unknown: nothing is pruned
            }
            self.prune_node(&node, rt.as_ref(), declared).await;
        }
    }

    /// Measures `node` fully and removes what [`disk::prune_plan`] names, all under the work
    /// lock and against the manifests in force then: no pass pulls or creates meanwhile, and
    /// an image the manifests have just come to name is kept. Stops at the first error other
    /// than the engine's refusal; an image the engine refused is not tried again (nor said
    /// again) by this controller.
    async fn prune_node(&self, node: &str, rt: &dyn NodeRuntime, declared: Option<u64>) {
        let _work = self.work.lock().await;
        if let Some(fence) = &self.cfg.exec.fence
            && fence.check().is_err()
        {
            return;
        }
        let loaded = self.desired();
        let fleet = &loaded.fleet;
        let Some(watermark) = fleet.fleet.disk_high_watermark else {
            return;
        };
        let digests = match self.store.image_digests() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "disk check skipped: the recorded digests cannot be read");
                return;
            }
        };
        // The images of the newest revisions too (SPEC §11, §13): a rollback needs no pull.
        let revisions = match crate::revisions::kept_images(&self.store) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "disk check skipped: the revisions cannot be read");
                return;
            }
        };
        let keep = disk::Keep::of(&fleet.with_digests(&digests)).with_images(revisions);
        let d = match disk::measure(rt, declared).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(node = %node, error = %e, "disk not measured");
                return;
            }
        };
        self.disk_metrics(node, &d);
        let Some(used) = d.used_hundredths().filter(|u| *u > watermark.0) else {
            lock(&self.state).disk_full_said.remove(node);
            return;
        };
        let over = format!(
            "disk {} > {} ({})",
            disk::percent_text(used),
            disk::percent_text(watermark.0),
            d.data_root
        );
        let refused = lock(&self.state).prune_refused.clone();
        let plan: Vec<disk::Removal> = disk::prune_plan(&d, watermark, &keep)
            .into_iter()
            .filter(|r| !refused.contains(&(node.to_string(), r.image.id.clone())))
            .collect();
        if plan.is_empty() {
            if lock(&self.state).disk_full_said.insert(node.to_string()) {
                let message = format!(
                    "{over}: no image can be removed (each is used by a container, named by the manifests or refused by the engine)"
                );
                tracing::warn!(node = %node, "{message}");
                self.event("disk-high", node, &message);
            }
            return;
        }
        let (removed, failed) = prune(rt, &plan).await;
        {
            let mut st = lock(&self.state);
            for (r, _) in &failed {
                st.prune_refused
                    .insert((node.to_string(), r.image.id.clone()));
            }
        }
        let freed: u64 = removed.iter().map(|r| r.bytes()).sum();
        let m = &self.metrics;
        m.images_pruned
            .get_or_create(&node_labels(node))
            .inc_by(removed.len() as u64);
        m.image_bytes_reclaimed
            .get_or_create(&node_labels(node))
            .inc_by(freed);
        let now = match rt.filesystem(&d.data_root).await {
            Ok(fs) => {
                let after = disk::NodeDisk {
                    filesystem: Some(fs),
                    ..d.clone()
                };
                self.disk_metrics(node, &after);
                after
                    .used_hundredths()
                    .map(|u| format!("; now {}", disk::percent_text(u)))
            }
            Err(_) => None,
        };
        let mut message = over;
        if !removed.is_empty() {
            message.push_str(&format!(
                ": removed {} image(s) no container uses and no manifest names: {} (freed about {}){}",
                removed.len(),
                removed
                    .iter()
                    .map(disk::Removal::label)
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::manifest::quantity::Bytes(freed),
                now.unwrap_or_default()
            ));
        }
        for (r, e) in &failed {
            message.push_str(&format!("; kept {}: {e}", r.label()));
        }
        tracing::info!(node = %node, removed = removed.len(), freed, "{message}");
        self.event(
            if removed.is_empty() {
                "prune-images-failed"
            } else {
                "prune-images"
            },
            node,
            &message,
        );
    }

    fn disk_metrics(&self, node: &str, d: &disk::NodeDisk) {
        if let Some(used) = d.used_hundredths() {
            self.metrics
                .node_disk_used
                .get_or_create(&node_labels(node))
                .set(f64::from(used) / 10_000.0);
        }
        if let Some(size) = d.size() {
            self.metrics
                .node_disk_size
                .get_or_create(&node_labels(node))
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    fn event(&self, action: &str, node: &str, message: &str) {
        if let Err(e) = self.store.record_event(
            self.now_ms(),
            &self.cfg.actor,
            action,
            Some(node),
            None,
            message,
        ) {
            tracing::warn!(error = %e, "could not record event");
        }
    }

    async fn poll_intents(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.tasks.cancelled() => return,
                _ = tokio::time::sleep(INTENT_POLL) => {}
            }
            loop {
                match self.store.claim_intent() {
                    Ok(Some(intent)) if self.is_stale(&intent) => self.fail_stale(&intent),
                    Ok(Some(intent)) => {
                        let me = self.clone();
                        tokio::spawn(async move { me.handle_intent(intent).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read intents");
                        break;
                    }
                }
            }
        }
    }

    /// One reconcile of the whole fleet (see the module docs). `why` is for the log only.
    ///
    /// # Errors
    /// State store failures.
    async fn reconcile(&self, why: &str) -> Result<Action, StoreError> {
        Ok(self.reconcile_report(why, None).await?.0)
    }

    /// [`Controller::reconcile`], also returning what the pass saw and did. For a pass of a
    /// handed-over apply (`apply`), each step waits for readiness at most its `--timeout`, its
    /// `--refresh` is honoured and its memo kept across its passes; otherwise the controller's
    /// own settings hold. The caller holds the work lock.
    async fn reconcile_report(
        &self,
        why: &str,
        apply: Option<&ops::ApplyRun>,
    ) -> Result<(Action, PassReport), StoreError> {
        let n = self.passes.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("reconcile", pass = n, triggers = %why);
        let out = self.reconcile_inner(apply).instrument(span).await;
        // A pass allocates a burst (every container's inspect, the plan) and frees it: hand it
        // back, so an idle controller stays at its idle size.
        crate::memory::release_free_memory();
        out
    }

    /// [`Controller::reconcile`], also returning the pass report.
    async fn reconcile_inner(
        &self,
        apply: Option<&ops::ApplyRun>,
    ) -> Result<(Action, PassReport), StoreError> {
        let started = tokio::time::Instant::now();
        let now = self.now_ms();
        let loaded = self.desired();
        let fleet = &loaded.fleet;
        let spec = &fleet.fleet;
        let runtimes = self.runtimes();

        // Plugs idle past their timeout stop before the plan is made.
        let plugs = self.store.plugs()?;
        for s in evict::idle_stops(fleet, &plugs, now) {
            self.stop_plug(&s, now)?;
        }

        let lost = {
            let st = lock(&self.state);
            st.readiness
                .iter()
                .filter(|(_, r)| r.at(now, spec.node_lost_after).is_lost())
                .map(|(n, _)| n.clone())
                .collect::<BTreeSet<_>>()
        };
        let cx = PassContext {
            fleet,
            runtimes: &runtimes,
            store: &self.store,
            lost,
            evict: BTreeSet::new(),
            // Measuring takes one stats call per container (about a second on Docker 20.10 even
            // one-shot): the pressure check does it off this path, so a restart never waits.
            measure_memory: false,
            exec: ExecOptions {
                ready_timeout: apply.map_or(self.cfg.exec.ready_timeout, |a| a.ready_timeout),
                auth: crate::images::fleet_auth(fleet),
                memo: apply.map(|a| a.memo.clone()),
                ..self.cfg.exec.clone()
            },
            refresh: apply.map_or(crate::images::Refresh::Recorded, |a| a.refresh),
        };
        let holds: Mutex<heal::Holds> = Mutex::default();
        let adjust = |observed: &ObservedFleet, plan| {
            let a = heal::adjust(observed, plan, &mut lock(&self.state).backoff, now);
            *lock(&holds) = a.holds;
            a.plan
        };
        let report = pass_adjusted(&cx, &adjust, &|p| log_progress(&p)).await?;
        let heal::Holds { held, retry_at } = holds.into_inner().unwrap_or_else(|p| p.into_inner());
        let after = self.now_ms();

        self.update_readiness(fleet, &report, after)?;
        self.record_metrics(&report, &held, started.elapsed());

        // When to look again.
        let mut wake: Vec<i64> = held.iter().map(|h| h.until_ms).collect();
        let plugs = self.store.plugs()?;
        {
            let mut st = lock(&self.state);
            st.backoff.forget_stale(after);
            st.last_observed = report.observed.clone();
            st.unplaced.clear();
            for u in &report.plan.unplaced {
                if let crate::plan::Object::Service { name, .. } = &u.object {
                    let e = st
                        .unplaced
                        .entry(name.clone())
                        .or_insert_with(|| (0, u.diagnosis.to_string()));
                    e.0 += 1;
                }
            }
            wake.extend(
                st.readiness
                    .values()
                    .filter_map(|r| r.deadline(spec.node_lost_after)),
            );
            if st
                .readiness
                .values()
                .any(|r| matches!(r, Readiness::Returning { .. }))
            {
                wake.push(after + ERROR_REQUEUE.as_millis() as i64);
            }
        }
        wake.extend(evict::next_idle_expiry(fleet, &plugs));
        // A failed restart was recorded in the backoff: try again when its window ends.
        for o in report.exec.outcomes.iter().filter(|o| !o.ok) {
            let step = &report.plan.steps[o.index];
            if let Some(t) = retry_at.get(&(step.node.clone(), step.container.clone())) {
                wake.push(*t);
            }
        }
        let mut requeue = spec.resync;
        for t in wake {
            requeue = requeue.min(Duration::from_millis((t - after).max(0) as u64));
        }
        // Nothing to do anywhere and every container running (healthy where it has a
        // healthcheck), judged as an apply judges it: the set in force has converged, and is
        // a revision.
        if report.plan.steps.is_empty()
            && report.plan.network.steps.is_empty()
            && report.plan.is_complete()
            && held.is_empty()
        {
            let judged = crate::reconcile::convergence(&report.observed, &report.plan, &[]);
            if judged.placement.is_empty() && judged.containers.is_empty() {
                self.note_revision(&loaded);
            }
        }
        let failed = report.exec.outcomes.iter().filter(|o| !o.ok).count();
        let ok = report.exec.outcomes.len() - failed;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if report.plan.steps.is_empty() && held.is_empty() && report.plan.unreachable.is_empty() {
            tracing::debug!(
                elapsed_ms,
                requeue_ms = requeue.as_millis() as u64,
                "reconciled: nothing to do"
            );
        } else {
            tracing::info!(
                steps = report.plan.steps.len(),
                ok,
                failed,
                held = held.len(),
                unreachable = report.plan.unreachable.len(),
                elapsed_ms,
                requeue_ms = requeue.as_millis() as u64,
                "reconciled"
            );
        }
        Ok((Action::requeue(requeue), report))
    }

    /// Records the set in force as the next revision when it is not the last one already
    /// (SPEC §13); called after a pass that found nothing to do. A failure is logged: the fleet
    /// runs on, and the next such pass tries again.
    fn note_revision(&self, loaded: &Loaded) {
        let digests = match self.store.image_digests() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "revision not recorded: the image digests cannot be read");
                return;
            }
        };
        let hash = loaded.sources_hash();
        let images: BTreeMap<&str, &str> = loaded
            .fleet
            .images()
            .keys()
            .map(|i| (*i, digests.get(*i).map_or("", String::as_str)))
            .collect();
        let secrets = crate::revisions::secret_hashes(&loaded.fleet.secret_values);
        let key = format!("{hash} {images:?} {secrets:?}");
        if *lock(&self.revision_key) == key {
            return;
        }
        let content = crate::revisions::content_of(loaded, &loaded.fleet, &digests);
        let rollback_of = lock(&self.rollback)
            .as_ref()
            .filter(|(h, _)| *h == hash)
            .map(|(_, n)| *n);
        match crate::revisions::record(
            &self.store,
            self.cfg.lease.as_ref().map(|l| l.token),
            &self.cfg.actor,
            &content,
            &loaded.fleet,
            rollback_of,
            self.now_ms(),
        ) {
            Ok(n) => {
                if let Some(n) = n {
                    tracing::info!(revision = n, hash = %&hash[..12], "revision recorded");
                }
                *lock(&self.revision_key) = key;
            }
            Err(e) => tracing::warn!(error = %e, "revision not recorded"),
        }
    }

    fn stop_plug(&self, s: &evict::Stop, now: i64) -> Result<(), StoreError> {
        self.store.set_plug_state(&s.id, s.state, Some(&s.reason))?;
        let action = if s.state == PlugState::Evicted {
            "evict"
        } else {
            "idle-stop"
        };
        tracing::info!(node = %s.node, plug = %s.id, state = s.state.as_str(), reason = %s.reason, "plug stopped");
        self.store.record_event(
            now,
            &self.cfg.actor,
            action,
            Some(&s.node),
            Some(&s.id),
            &s.reason,
        )
    }

    fn update_readiness(
        &self,
        fleet: &crate::manifest::DesiredFleet,
        report: &PassReport,
        now: i64,
    ) -> Result<(), StoreError> {
        let lost_after = fleet.fleet.node_lost_after;
        let mut changes = Vec::new();
        {
            let mut st = lock(&self.state);
            for name in fleet.nodes.keys() {
                let before = st.readiness.get(name).cloned().unwrap_or(Readiness::Ready);
                let error = match report.observed.nodes.get(name) {
                    Some(NodeObservation::Reachable { .. }) => None,
                    Some(NodeObservation::Unreachable { error, .. }) => Some(error.as_str()),
                    None => Some("not observed"),
                };
                let was_lost = before.at(now, lost_after).is_lost();
                let mut after = before.on_observed(error, now, lost_after);
                if was_lost && matches!(after, Readiness::Returning { .. }) {
                    // This pass already ran with the node back but lost (cordoned in the plan,
                    // its stale copies removed): clean if every step there succeeded.
                    let clean = report.exec.outcomes.iter().all(|o| {
                        let s = &report.plan.steps[o.index];
                        let touches = s.node == *name
                            || matches!(&s.action, StepAction::Replace { old_node, .. } if old_node == name);
                        o.ok || !touches
                    });
                    if clean {
                        after = after.on_clean_pass();
                    }
                }
                if before.name() != after.name() {
                    changes.push((name.clone(), before, after.clone()));
                }
                st.readiness.insert(name.clone(), after);
            }
        }
        for (node, before, after) in changes {
            self.store
                .update_node_condition(&node, now, |c| after.apply_to(c))?;
            let message = match &after {
                Readiness::Ready if before.is_lost() => {
                    "Ready: back, its stale copies removed; takes work again".to_string()
                }
                Readiness::Ready => "Ready: answers again".to_string(),
                Readiness::Unreachable { error, .. } => format!(
                    "unreachable ({error}); its work stays until nodeLostAfter ({})",
                    humantime::format_duration(lost_after)
                ),
                Readiness::NotReady { since_ms, error } => format!(
                    "NotReady: unreachable since {} ({error}); its plugs and movable replicas are placed elsewhere",
                    crate::store::format_ms(*since_ms)
                ),
                Readiness::Returning { .. } => {
                    "back after NotReady: removing stale copies before it takes new work"
                        .to_string()
                }
            };
            if after.can_take_work() {
                tracing::info!(node = %node, state = after.name(), "{message}");
            } else {
                tracing::warn!(node = %node, state = after.name(), "{message}");
            }
            self.store.record_event(
                now,
                &self.cfg.actor,
                after.name(),
                Some(&node),
                None,
                &message,
            )?;
        }
        Ok(())
    }

    /// Evicts the most idle plugs of nodes above their watermark; returns how many.
    async fn relieve_pressure(
        &self,
        loaded: &Loaded,
        runtimes: &Runtimes,
        observed: &ObservedFleet,
        now: i64,
    ) -> Result<usize, StoreError> {
        let fleet = &loaded.fleet;
        let plugs = self.store.plugs()?;
        let mut nodes = Vec::new();
        let mut usage = BTreeMap::new();
        for (name, spec) in &fleet.nodes {
            let Some(NodeObservation::Reachable {
                measured_memory: Some(used),
                engine,
                containers,
                ..
            }) = observed.nodes.get(name)
            else {
                continue;
            };
            let capacity = spec
                .capacity_memory
                .map(|b| b.0)
                .or(engine.as_ref().map(|e| e.memory));
            let Some(capacity) = capacity else { continue };
            let node = NodeMemory {
                node: name.clone(),
                allocatable: capacity.saturating_sub(spec.reserved_memory.0),
                used: *used,
            };
            let Some(threshold) = evict::pressure_threshold(fleet, &plugs, &node) else {
                continue;
            };
            if node.used <= threshold {
                continue;
            }
            // Above a watermark: what does each plug there use?
            if let Some(rt) = runtimes.get(name) {
                for o in containers
                    .iter()
                    .filter(|o| o.record.state == RunState::Running && o.kind() == Some("plug"))
                {
                    if let (Some(id), Ok(bytes)) = (
                        o.record.label(labels::PLUG),
                        rt.container_memory_usage(&o.record.id).await,
                    ) {
                        usage.insert(id.to_string(), bytes);
                    }
                }
            }
            nodes.push(node);
        }
        let stops = evict::pressure_evictions(fleet, &plugs, &nodes, &usage);
        for s in &stops {
            self.stop_plug(s, now)?;
        }
        Ok(stops.len())
    }

    fn record_metrics(&self, report: &PassReport, held: &[heal::Held], elapsed: Duration) {
        let m = &self.metrics;
        m.reconciles.inc();
        m.reconcile_duration.observe(elapsed.as_secs_f64());
        for o in &report.exec.outcomes {
            let step = &report.plan.steps[o.index];
            if !o.ok && !o.skipped {
                m.step_failures
                    .get_or_create(&node_labels(&step.node))
                    .inc();
            }
            if o.ok && matches!(step.action, StepAction::Start { .. }) {
                m.restarts.get_or_create(&node_labels(&step.node)).inc();
            }
        }
        for h in held {
            m.restarts_held.get_or_create(&node_labels(&h.node)).inc();
        }
        for (node, r) in self.readiness() {
            m.node_ready
                .get_or_create(&node_labels(&node))
                .set(i64::from(r.can_take_work()));
        }
    }
}

/// Removes each image of `plan` by its names in turn; returns the images removed and those
/// kept, with why. An image whose first name is already gone was removed by someone else: it
/// is neither. The engine's refusal (a container created since the measurement uses it, or
/// an id named in several repositories) keeps that image and goes on; any other error (the
/// node stopped answering) ends the prune of this node.
async fn prune(
    rt: &dyn NodeRuntime,
    plan: &[disk::Removal],
) -> (Vec<disk::Removal>, Vec<(disk::Removal, String)>) {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    'images: for r in plan {
        for (i, name) in r.names.iter().enumerate() {
            match rt.remove_image(name).await {
                Ok(()) => {}
                Err(e) if e.kind == crate::transport::ErrorKind::NotFound => {
                    if i == 0 {
                        continue 'images;
                    }
                }
                Err(e) if e.kind == crate::transport::ErrorKind::Conflict => {
                    failed.push((r.clone(), e.message.clone()));
                    continue 'images;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "image prune stopped");
                    break 'images;
                }
            }
        }
        removed.push(r.clone());
    }
    (removed, failed)
}

fn log_progress(p: &Progress) {
    match p {
        Progress::Started(s) => tracing::debug!(
            node = %s.node, container = %s.container, action = s.action.verb(&s.node), reason = %s.reason,
            "step started"
        ),
        Progress::Done(s, d) => tracing::info!(
            node = %s.node, container = %s.container, action = s.action.verb(&s.node), reason = %s.reason,
            elapsed_ms = d.as_millis() as u64, "step done"
        ),
        Progress::Failed(s, e) => tracing::warn!(
            node = %s.node, container = %s.container, action = s.action.verb(&s.node), reason = %s.reason,
            error = %e, "step failed"
        ),
        Progress::Pulling { .. } => {}
        Progress::Pulled {
            node,
            image,
            elapsed,
        } => tracing::info!(
            node = %node, image = %image, elapsed_ms = elapsed.as_millis() as u64, "image pulled"
        ),
        Progress::Copied {
            node,
            image,
            from,
            elapsed,
        } => tracing::info!(
            node = %node, image = %image, from = %from, elapsed_ms = elapsed.as_millis() as u64,
            "image copied from another node (its registry could not serve it)"
        ),
    }
}

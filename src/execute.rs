//! I/O boundary #2: runs a [`Plan`] through [`NodeRuntime`]s.
//!
//! Groups (one service, one plug, one stray) run concurrently, bounded overall and per node;
//! the steps of a group run in order, and a failed step ends its group (the next reconcile
//! decides again — this module never re-plans). Creation is idempotent: a name conflict means the
//! container is already there (deterministic names), so it is adopted after checking it is ours.
//! Every created or started container is waited for until it runs, and until it is healthy when
//! it has a healthcheck.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore};

use crate::container::{ContainerSpec, Health, PullProgress, RunState, labels};
use crate::images::{self, AuthSource, ImageError, Made};
use crate::lease::{Fence, LeaseLost};
use crate::manifest::{PullPolicy, UpdateOrder};
use crate::plan::{Action, Object, Plan, Step};
use crate::store::{PlugState, Store, now_ms};
use crate::transport::{ContainerUpdate, NodeRuntime, TransportError};

/// The runtimes of the fleet's nodes, by name.
pub type Runtimes = BTreeMap<String, Arc<dyn NodeRuntime>>;

/// How a plan is run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Groups in flight across the fleet.
    pub concurrency: usize,
    /// Steps in flight per node: keeps one engine from being flooded while others idle.
    pub per_node: usize,
    /// How long a container may take to run (and turn healthy) before its step fails.
    pub ready_timeout: Duration,
    /// Who acts, for the event log.
    pub actor: String,
    /// The fleet lease the actor holds, checked before each step: once it is lost, no step
    /// starts (each fails with [`StepError::LeaseLost`]). `None` for work that holds no fleet
    /// lease (plug create/delete, tests).
    pub fence: Option<Fence>,
    /// The credentials pulls carry (the fleet's `registries`, the operator's docker
    /// configuration).
    pub auth: Arc<dyn AuthSource>,
    /// What one apply remembers across its passes; `None`: each run starts afresh (the
    /// controller's own passes, which must try a failed pull again).
    pub memo: Option<Arc<ApplyMemo>>,
}

/// What one apply (or drain) remembers across its passes: the digests its images were pinned
/// to — each tag is looked up once per apply (SPEC §11) — and the outcome of making each (node,
/// image) present, so a failed pull is tried and said once, not once per pass.
#[derive(Default)]
pub struct ApplyMemo {
    /// The pins of the apply's first look.
    pub pins: OnceCell<crate::images::ImagePins>,
    images: ImageCache,
}

impl std::fmt::Debug for ApplyMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyMemo")
            .field("pins", &self.pins.get())
            .finish_non_exhaustive()
    }
}

impl ApplyMemo {
    /// A fresh memo, for one apply.
    pub fn new() -> Arc<ApplyMemo> {
        Arc::new(ApplyMemo::default())
    }
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            concurrency: 16,
            per_node: 8,
            ready_timeout: Duration::from_secs(120),
            actor: "apply".into(),
            fence: None,
            auth: Arc::new(images::NoAuth),
            memo: None,
        }
    }
}

/// Progress reported while a plan runs.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// A step began.
    Started(&'a Step),
    /// A step finished.
    Done(&'a Step, Duration),
    /// A step failed.
    Failed(&'a Step, &'a str),
    /// An image is being pulled on a node: layers and bytes so far (a copy, `pull: fleet`:
    /// bytes sent, no layers).
    Pulling {
        /// Node.
        node: &'a str,
        /// Image reference.
        image: &'a str,
        /// How far.
        progress: PullProgress,
    },
    /// An image its registry could not serve was copied to a node from another (`pull:
    /// fleet`).
    Copied {
        /// Node.
        node: &'a str,
        /// Image reference.
        image: &'a str,
        /// The node it came from.
        from: &'a str,
        /// Wall time of the failed pull and the copy.
        elapsed: Duration,
    },
    /// An image was pulled on a node.
    Pulled {
        /// Node.
        node: &'a str,
        /// Image reference.
        image: &'a str,
        /// Wall time of the pull.
        elapsed: Duration,
    },
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    /// Index into `plan.steps`.
    pub index: usize,
    /// Node.
    pub node: String,
    /// Container.
    pub container: String,
    /// Verb.
    pub action: String,
    /// Success.
    pub ok: bool,
    /// Failure, with node, operation and container.
    pub error: Option<String>,
    /// Wall time.
    pub elapsed_ms: u64,
    /// Not run because an earlier step of its group failed.
    pub skipped: bool,
}

/// The outcomes of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ExecReport {
    /// One per step, in plan order.
    pub outcomes: Vec<StepOutcome>,
    /// One per network step, in plan order (they ran first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<crate::network::exec::NetOutcome>,
}

impl ExecReport {
    /// Whether every step succeeded.
    pub fn ok(&self) -> bool {
        self.outcomes.iter().all(|o| o.ok) && self.network.iter().all(|o| o.ok)
    }
}

/// Failures of one step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A Docker call failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The container did not become ready.
    #[error("node {node}: container {container}: {why}")]
    NotReady {
        /// Node.
        node: String,
        /// Container.
        container: String,
        /// What was seen.
        why: String,
    },
    /// The image is not on the node and could not be made present there.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The image is not on the node; the step that needed it first on that node said why.
    #[error("skipped: image {image} is not on node {node} (said once: {cause})")]
    ImageSaid {
        /// Node.
        node: String,
        /// Image reference.
        image: String,
        /// Why, as said the first time.
        cause: String,
    },
    /// A container with our name exists but is not ours.
    #[error(
        "node {node}: container name {container} is taken by a container fleetctl does not own"
    )]
    NameTaken {
        /// Node.
        node: String,
        /// Name.
        container: String,
    },
    /// No runtime for the node.
    #[error("node {0}: not connected")]
    NoRuntime(String),
    /// The actor's fleet lease was lost before this step: it was not started.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

/// Why a container is not ready.
#[derive(Debug)]
pub enum NotReady {
    /// Inspecting it failed.
    Transport(TransportError),
    /// What was seen: it exited (with its code), or is still starting or unhealthy when the
    /// time was up.
    Seen(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Transport(e) => write!(f, "{e}"),
            NotReady::Seen(why) => f.write_str(why),
        }
    }
}

/// Polls (with [`crate::backoff::READY_POLL`]) until container `id` runs, and is healthy when it
/// has a healthcheck. Gives up at once when it exited and nothing brings it back — a
/// crash-looping container must not hold a pass for the whole `timeout` — and when `timeout`
/// (on tokio's clock) is up. The one readiness wait of service steps and plug starts.
///
/// Healthy is the engine's word, or — while the engine still says `starting` — one success of
/// the container's own healthcheck command run by fleetctl through the engine's exec API
/// ([`probe_health`]) at each poll: the engine runs its first check only a full `interval`
/// after the start (Docker below API 1.44 has no `StartInterval`), and a new plug should not
/// wait a second for an app that answers in 100 ms. One success is what the engine needs too.
///
/// # Errors
/// [`NotReady`] saying what was seen.
pub async fn wait_ready(
    rt: &dyn NodeRuntime,
    id: &str,
    healthcheck: bool,
    timeout: Duration,
) -> Result<(), NotReady> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delays = crate::backoff::READY_POLL.delays();
    // A check that hung once is not run again by this wait (the engine cannot kill an exec's
    // process; each new try could leave another behind): the engine's verdict decides.
    let mut probing = true;
    loop {
        let d = rt
            .inspect_container(id)
            .await
            .map_err(NotReady::Transport)?;
        let running = d.record.state == RunState::Running;
        let healthy = !healthcheck || d.record.health == Some(Health::Healthy);
        if running && healthy {
            return Ok(());
        }
        if probing
            && running
            && healthcheck
            && d.record.health == Some(Health::Starting)
            && let Some(hc) = &d.spec.healthcheck
        {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match probe_health(rt, id, hc, left).await {
                Probe::Passed => return Ok(()),
                Probe::Failed => {}
                Probe::TimedOut | Probe::Unavailable => probing = false,
            }
        }
        let gave_up = matches!(d.record.state, RunState::Exited | RunState::Dead);
        if gave_up || tokio::time::Instant::now() >= deadline {
            let why = match (d.record.state, d.record.health) {
                (RunState::Running, Some(h)) => {
                    format!("still {h:?} after {timeout:?}").to_lowercase()
                }
                (RunState::Exited, _) | (RunState::Dead, _) => format!(
                    "exited with code {}{}",
                    d.exit_code,
                    if d.oom_killed { " (OOM-killed)" } else { "" }
                ),
                (s, _) => format!("{s:?} after {timeout:?}").to_lowercase(),
            };
            return Err(NotReady::Seen(why));
        }
        tokio::time::sleep(delays.next().unwrap_or(crate::backoff::READY_POLL.max)).await;
    }
}

/// The longest fleetctl's own health probe may run when the healthcheck sets no timeout (the
/// engine's default timeout is 30 s; a readiness poll should not hang that long).
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// What one run of a container's healthcheck by fleetctl ([`probe_health`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The command exited 0.
    Passed,
    /// It exited non-zero.
    Failed,
    /// It did not finish in time (it may still run in the container).
    TimedOut,
    /// Nothing to run (`NONE`, an empty test), or the engine could not run it.
    Unavailable,
}

/// Runs healthcheck `hc`'s command once in running container `id`, as the engine would (`CMD`
/// as is; `CMD-SHELL` as `/bin/sh -c` followed by the test's elements — Docker's default
/// shell; an image's own `SHELL` is not read), within its timeout, at most
/// [`PROBE_TIMEOUT_MAX`] and at most `max`.
pub async fn probe_health(
    rt: &dyn NodeRuntime,
    id: &str,
    hc: &crate::container::HealthcheckSpec,
    max: Duration,
) -> Probe {
    let cmd: Vec<String> = match hc.test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => ["/bin/sh", "-c"]
            .into_iter()
            .map(String::from)
            .chain(rest.iter().cloned())
            .collect(),
        _ => return Probe::Unavailable,
    };
    let limit = hc
        .timeout
        .filter(|t| !t.is_zero())
        .map_or(PROBE_TIMEOUT_MAX, |t| t.min(PROBE_TIMEOUT_MAX))
        .min(max);
    let run = async {
        let mut session = rt
            .exec(id, &cmd, crate::transport::ExecOptions::default())
            .await
            .ok()?;
        while let Some(chunk) = session.output.next().await {
            chunk.ok()?;
        }
        // The engine records the exit code as it reaps the process, a moment after the output.
        for _ in 0..50 {
            match rt.exec_exit_code(&session.id).await.ok()? {
                Some(code) => return Some(code == 0),
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        None
    };
    let span = tracing::debug_span!("health_probe", container = id);
    match tokio::time::timeout(limit, tracing::Instrument::instrument(run, span)).await {
        Ok(Some(true)) => Probe::Passed,
        Ok(Some(false)) => Probe::Failed,
        Ok(None) => Probe::Unavailable,
        Err(_) => Probe::TimedOut,
    }
}

/// Per (node, image): the outcome of making the image present, computed once per run, and
/// whether a step has reported its failure yet (each is reported by one step only).
type ImageCache = Mutex<BTreeMap<(String, String), Arc<ImageCell>>>;

#[derive(Default)]
struct ImageCell {
    outcome: OnceCell<Result<(), ImageError>>,
    said: std::sync::atomic::AtomicBool,
}

struct Ctx<'a> {
    runtimes: &'a Runtimes,
    store: Option<&'a Store>,
    opts: &'a ExecOptions,
    node_slots: BTreeMap<String, Arc<Semaphore>>,
    images: &'a ImageCache,
    progress: &'a (dyn Fn(Progress) + Sync),
}

impl Ctx<'_> {
    fn rt(&self, node: &str) -> Result<&Arc<dyn NodeRuntime>, StepError> {
        self.runtimes
            .get(node)
            .ok_or_else(|| StepError::NoRuntime(node.to_string()))
    }

    fn event(&self, action: &str, node: &str, object: &str, message: &str) {
        if let Some(store) = self.store
            && let Err(e) = store.record_event(
                now_ms(),
                &self.opts.actor,
                action,
                Some(node),
                Some(object),
                message,
            )
        {
            tracing::warn!(error = %e, "could not record event");
        }
    }

    /// The cell of `image` on `node`.
    fn image_cell(&self, node: &str, image: &str) -> Arc<ImageCell> {
        let mut map = self.images.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((node.to_string(), image.to_string()))
            .or_default()
            .clone()
    }

    /// Makes `spec`'s image present on `node` as its pull policy says; once per node and image
    /// per run. Its failure is returned to the first step that asks; later steps get
    /// [`StepError::ImageSaid`].
    async fn ensure_image(&self, node: &str, spec: &ContainerSpec) -> Result<(), StepError> {
        let image = spec.run_image();
        let cell = self.image_cell(node, &image);
        let result = cell
            .outcome
            .get_or_init(|| self.pull(node, &image, spec.pull))
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if !cell.said.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                Err(e.clone().into())
            }
            Err(e) => Err(StepError::ImageSaid {
                node: node.to_string(),
                image,
                cause: e.to_string(),
            }),
        }
    }

    /// [`images::make_present`] on `node`, with progress.
    async fn pull(&self, node: &str, image: &str, pull: PullPolicy) -> Result<(), ImageError> {
        let rt = self.runtimes.get(node).ok_or_else(|| ImageError::Check {
            node: node.to_string(),
            image: image.to_string(),
            cause: "not connected".into(),
        })?;
        let started = Instant::now();
        let progress = |p: PullProgress| {
            (self.progress)(Progress::Pulling {
                node,
                image,
                progress: p,
            })
        };
        // `pull: fleet` copies from another node when the registry cannot serve this one.
        let peers: Vec<&dyn NodeRuntime> = self.runtimes.values().map(|r| r.as_ref()).collect();
        match images::make_present(
            rt.as_ref(),
            image,
            pull,
            self.opts.auth.as_ref(),
            &peers,
            &progress,
        )
        .await?
        {
            Made::Present => {}
            Made::Pulled => {
                (self.progress)(Progress::Pulled {
                    node,
                    image,
                    elapsed: started.elapsed(),
                });
                self.event("pull", node, image, "pulled");
            }
            Made::Copied { from, pull_failure } => {
                (self.progress)(Progress::Copied {
                    node,
                    image,
                    from: &from,
                    elapsed: started.elapsed(),
                });
                self.event(
                    "pull",
                    node,
                    image,
                    &format!("copied from {from} (the pull failed: {pull_failure})"),
                );
            }
        }
        Ok(())
    }

    /// Creates `spec` (adopting an existing container of ours with the same name), starts it,
    /// waits until ready. Returns its id.
    async fn create_and_start(
        &self,
        node: &str,
        spec: &ContainerSpec,
    ) -> Result<String, StepError> {
        self.ensure_image(node, spec).await?;
        let rt = self.rt(node)?;
        let id = match rt.create_container(spec).await {
            Ok(id) => id,
            Err(e) if e.is_conflict() => {
                let existing = rt.inspect_container(&spec.name).await?;
                let ours = existing.record.label(labels::MANAGED_BY) == Some(labels::MANAGER)
                    && existing.record.label(labels::FLEET)
                        == spec.labels.get(labels::FLEET).map(String::as_str)
                    && existing.record.label(labels::SPEC_HASH)
                        == spec.labels.get(labels::SPEC_HASH).map(String::as_str);
                if !ours {
                    return Err(StepError::NameTaken {
                        node: node.to_string(),
                        container: spec.name.clone(),
                    });
                }
                existing.record.id
            }
            Err(e) => return Err(e.into()),
        };
        // Secrets and configs are in place before its first start (SPEC §12); an adopted
        // container gets them again (the same bytes). One that could not get them is removed:
        // left created, a later pass would start it without them.
        crate::secrets::deliver_or_remove(rt.as_ref(), &id, spec).await?;
        rt.start_container(&id).await?;
        self.wait_ready(node, &id, &spec.name, spec.healthcheck.is_some())
            .await?;
        Ok(id)
    }

    /// [`wait_ready`] on `node`, as a step error naming the container.
    async fn wait_ready(
        &self,
        node: &str,
        id: &str,
        name: &str,
        healthcheck: bool,
    ) -> Result<(), StepError> {
        let rt = self.rt(node)?;
        wait_ready(rt.as_ref(), id, healthcheck, self.opts.ready_timeout)
            .await
            .map_err(|e| match e {
                NotReady::Transport(e) => StepError::Transport(e),
                NotReady::Seen(why) => StepError::NotReady {
                    node: node.to_string(),
                    container: name.to_string(),
                    why,
                },
            })
    }

    async fn stop(&self, node: &str, id: &str, grace: u64) -> Result<(), StepError> {
        match self
            .rt(node)?
            .stop_container(id, Duration::from_secs(grace))
            .await
        {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn stop_and_remove(&self, node: &str, id: &str, grace: u64) -> Result<(), StepError> {
        self.stop(node, id, grace).await?;
        match self.rt(node)?.remove_container(id).await {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn check_fence(&self) -> Result<(), LeaseLost> {
        self.opts.fence.as_ref().map_or(Ok(()), Fence::check)
    }

    async fn run_step(&self, step: &Step) -> Result<(), StepError> {
        self.check_fence()?;
        let node = step.node.as_str();
        match &step.action {
            Action::Create { spec } => {
                self.create_and_start(node, spec).await?;
            }
            Action::Start { id, healthcheck } => {
                self.rt(node)?.start_container(id).await?;
                self.wait_ready(node, id, &step.container, *healthcheck)
                    .await?;
            }
            Action::Stop { id, grace_secs } => self.stop(node, id, *grace_secs).await?,
            Action::Update {
                id,
                resources,
                restart,
            } => {
                self.rt(node)?
                    .update_container(
                        id,
                        &ContainerUpdate {
                            resources: resources.clone(),
                            restart: *restart,
                        },
                    )
                    .await?;
            }
            Action::Replace {
                old_node,
                old_id,
                old_grace_secs,
                spec,
                order,
                ..
            } => match order {
                UpdateOrder::StartFirst => {
                    self.create_and_start(node, spec).await?;
                    // The wait for the new container can outlast a lease: the old one is
                    // stopped only while the lease is still ours.
                    self.check_fence()?;
                    // The old node's slot is not taken: holding one slot while waiting for a
                    // second could deadlock two moves in opposite directions.
                    self.stop_and_remove(old_node, old_id, *old_grace_secs)
                        .await?;
                }
                UpdateOrder::StopFirst => {
                    // The old container keeps running when the new one's image cannot be had.
                    self.ensure_image(node, spec).await?;
                    self.stop_and_remove(old_node, old_id, *old_grace_secs)
                        .await?;
                    self.create_and_start(node, spec).await?;
                }
            },
            Action::Remove { id, grace_secs } => {
                self.stop_and_remove(node, id, *grace_secs).await?
            }
        }
        if let (Object::Plug { id }, Some(store)) = (&step.object, self.store)
            && matches!(
                step.action,
                Action::Create { .. } | Action::Start { .. } | Action::Replace { .. }
            )
            && let Err(e) = store.set_plug_state(id, PlugState::Running, None)
        {
            tracing::warn!(plug = %id, error = %e, "could not record plug state");
        }
        Ok(())
    }

    async fn slot(&self, node: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.node_slots.get(node)?.clone();
        sem.acquire_owned().await.ok()
    }
}

/// Runs `plan`. `store`, when given, receives an event per step (and plug states).
pub async fn execute(
    plan: &Plan,
    runtimes: &Runtimes,
    store: Option<&Store>,
    opts: &ExecOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> ExecReport {
    let local_images = ImageCache::default();
    // An apply's memo keeps what was decided — a pulled image, a registry's "no such tag" —
    // but a failure that trying again can mend (a node or registry out of reach) is tried
    // again by the next pass.
    if let Some(memo) = &opts.memo {
        memo.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, cell| !matches!(cell.outcome.get(), Some(Err(e)) if e.is_transient()));
    }
    let ctx = Ctx {
        runtimes,
        store,
        opts,
        node_slots: runtimes
            .keys()
            .map(|n| (n.clone(), Arc::new(Semaphore::new(opts.per_node.max(1)))))
            .collect(),
        images: opts.memo.as_ref().map_or(&local_images, |m| &m.images),
        progress,
    };
    let ctx = &ctx;
    // Every image a change needs, on every target node, in parallel — before any step stops
    // anything: a replica whose image cannot be had keeps its old container.
    let mut needs: BTreeMap<(&str, String), &ContainerSpec> = BTreeMap::new();
    for step in &plan.steps {
        if let Action::Create { spec } | Action::Replace { spec, .. } = &step.action {
            needs
                .entry((step.node.as_str(), spec.run_image()))
                .or_insert(spec);
        }
    }
    crate::observe::on_nodes(needs.into_iter().map(|((node, image), spec)| async move {
        let cell = ctx.image_cell(node, &image);
        cell.outcome
            .get_or_init(|| ctx.pull(node, &image, spec.pull))
            .await;
    }))
    .await;
    // Groups in order of first appearance (indexed: a cold fleet has a group per replica).
    let mut groups: Vec<(crate::plan::StepGroup, Vec<usize>)> = Vec::new();
    let mut group_of: std::collections::HashMap<&crate::plan::StepGroup, usize> =
        std::collections::HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        match group_of.get(&s.group) {
            Some(&g) => groups[g].1.push(i),
            None => {
                group_of.insert(&s.group, groups.len());
                groups.push((s.group.clone(), vec![i]));
            }
        }
    }
    let mut outcomes: Vec<StepOutcome> = futures_util::stream::iter(groups)
        .map(|(_, indices)| async move {
            let mut out = Vec::new();
            let mut failed = false;
            for i in indices {
                let step = &plan.steps[i];
                let verb = step.action.verb(&step.node).to_string();
                if failed {
                    out.push(StepOutcome {
                        index: i,
                        node: step.node.clone(),
                        container: step.container.clone(),
                        action: verb,
                        ok: false,
                        error: Some("skipped: an earlier step of this group failed".into()),
                        elapsed_ms: 0,
                        skipped: true,
                    });
                    continue;
                }
                progress(Progress::Started(step));
                let started = Instant::now();
                let result = {
                    let _slot = ctx.slot(&step.node).await;
                    ctx.run_step(step).await
                };
                let elapsed = started.elapsed();
                // A missing image is said by the first step that needed it on that node.
                let said = matches!(result, Err(StepError::ImageSaid { .. }));
                match &result {
                    _ if said => failed = true,
                    Ok(()) => {
                        progress(Progress::Done(step, elapsed));
                        ctx.event(&verb, &step.node, &step.container, &step.reason);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        progress(Progress::Failed(step, &msg));
                        ctx.event(&format!("{verb}-failed"), &step.node, &step.container, &msg);
                        failed = true;
                    }
                }
                out.push(StepOutcome {
                    index: i,
                    node: step.node.clone(),
                    container: step.container.clone(),
                    action: verb,
                    ok: result.is_ok(),
                    error: result.err().map(|e| e.to_string()),
                    elapsed_ms: elapsed.as_millis() as u64,
                    skipped: said,
                });
            }
            out
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    outcomes.sort_by_key(|o| o.index);
    ExecReport {
        outcomes,
        network: Vec::new(),
    }
}

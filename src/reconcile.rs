//! One reconcile pass, shared by `apply` and the controller: observe every node, read the
//! recorded state, plan (pure), record plug moves, execute, then record what the pass settled
//! (plug states, freed port leases, where replicas run).
//!
//! The pass never learns why it ran: it reads the full desired and observed state every time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::adopt::{self, Found};
use crate::container::{Health, RunState};
use crate::execute::{ExecOptions, ExecReport, Progress, Runtimes, execute};
use crate::manifest::DesiredFleet;
use crate::observe::{ObserveOptions, ObservedFleet, observe};
use crate::plan::{Action, Object, Plan, Snapshot, plan};
use crate::store::{PlugRecord, Store, StoreError, TOMBSTONE_KEEP_MS, now_ms};

/// What one pass saw, decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    /// The observation the plan was made from.
    #[serde(skip)]
    pub observed: ObservedFleet,
    /// The plan.
    pub plan: Plan,
    /// Execution outcomes (empty for a dry run).
    pub exec: ExecReport,
    /// Where the pass's wall time went.
    #[serde(skip)]
    pub timings: PassTimings,
}

/// Wall time of each phase of one pass ([`pass_adjusted`]), in the order they run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassTimings {
    /// Observing every node ([`observe_for`]).
    pub observe: std::time::Duration,
    /// Records of conditions, plugs deleted elsewhere, old tombstones; adoption.
    pub records: std::time::Duration,
    /// Pinning images to digests, and recording the pins.
    pub images: std::time::Duration,
    /// Planning (state read, plan, the caller's adjustment) and recording plug moves.
    pub plan: std::time::Duration,
    /// Executing: the network, then the steps.
    pub execute: std::time::Duration,
    /// Recording what the pass settled.
    pub settle: std::time::Duration,
}

impl PassTimings {
    /// The whole pass.
    pub fn total(&self) -> std::time::Duration {
        self.observe + self.records + self.images + self.plan + self.execute + self.settle
    }
}

/// Inputs of a pass besides the desired fleet.
pub struct PassContext<'a> {
    /// Desired state.
    pub fleet: &'a DesiredFleet,
    /// One runtime per node.
    pub runtimes: &'a Runtimes,
    /// State store.
    pub store: &'a Store,
    /// Nodes considered lost (NotReady past `nodeLostAfter`).
    pub lost: BTreeSet<String>,
    /// Nodes force-drained (see [`Snapshot::evict`]).
    pub evict: BTreeSet<String>,
    /// Measure memory use (needed for the measured-memory filter of plug placement).
    pub measure_memory: bool,
    /// Execution options.
    pub exec: ExecOptions,
    /// Which image tags are looked up again in their registries (SPEC §11).
    pub refresh: crate::images::Refresh,
}

impl<'a> PassContext<'a> {
    /// A context with no lost or evicted node, no memory measurement and default execution
    /// options (the CLI's; the controller sets what it tracks).
    pub fn new(fleet: &'a DesiredFleet, runtimes: &'a Runtimes, store: &'a Store) -> Self {
        PassContext {
            fleet,
            runtimes,
            store,
            lost: BTreeSet::new(),
            evict: BTreeSet::new(),
            measure_memory: false,
            exec: ExecOptions {
                auth: crate::images::fleet_auth(fleet),
                ..ExecOptions::default()
            },
            refresh: crate::images::Refresh::default(),
        }
    }
}

/// Observe with what the plan needs: engine facts for nodes whose capacity is not declared.
pub async fn observe_for(cx: &PassContext<'_>) -> ObservedFleet {
    let options = ObserveOptions::for_scheduling(cx.fleet, cx.measure_memory);
    let runtimes: Vec<_> = cx.runtimes.values().cloned().collect();
    let mut observed = observe(&cx.fleet.fleet.name, &runtimes, &options).await;
    crate::network::exec::observe_members(cx.fleet, cx.runtimes, &mut observed).await;
    observed
}

/// Computes the plan for the current state without changing anything.
///
/// # Errors
/// Store failures.
pub async fn plan_only(cx: &PassContext<'_>) -> Result<(ObservedFleet, Plan), StoreError> {
    let observed = observe_for(cx).await;
    let pins = pin_images(cx, &observed).await?;
    let p = plan_from(cx, &observed, &pins)?;
    Ok((observed, p))
}

/// The digest each image runs as in this pass ([`crate::images::resolve`]), asked through the
/// reachable nodes; within one apply, the pins of its first look (each tag is looked up once
/// per apply).
async fn pin_images(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
) -> Result<crate::images::ImagePins, StoreError> {
    let recorded = cx.store.image_digests()?;
    let resolve = async {
        let reachable: Vec<&str> = observed
            .nodes
            .keys()
            .map(String::as_str)
            .filter(|n| observed.is_reachable(n))
            .collect();
        crate::images::resolve(
            cx.fleet,
            cx.runtimes,
            &reachable,
            &recorded,
            &running_images(cx.fleet, observed),
            cx.refresh,
            cx.exec.auth.as_ref(),
        )
        .await
    };
    Ok(match &cx.exec.memo {
        Some(memo) => memo.pins.get_or_init(|| resolve).await.clone(),
        None => resolve.await,
    })
}

/// What the fleet's containers run now, per image tag of the manifests: the digests they are
/// pinned to, and whether some run the tag unpinned.
fn running_images(
    fleet: &DesiredFleet,
    observed: &ObservedFleet,
) -> BTreeMap<String, crate::images::Running> {
    use crate::container::{labels, pin_digest};
    let mut out: BTreeMap<String, crate::images::Running> = BTreeMap::new();
    for node in observed.nodes.keys() {
        for o in observed.containers(node) {
            let r = &o.record;
            let image = match (r.label(labels::SERVICE), r.label(labels::PLUG_CLASS)) {
                (Some(svc), _) => fleet.services.get(svc).map(|s| &s.image),
                (None, Some(class)) => fleet.plug_classes.get(class).map(|c| &c.image),
                _ => None,
            };
            let Some(image) = image else { continue };
            let entry = out.entry(image.clone()).or_default();
            match r
                .label(labels::IMAGE_PIN)
                .and_then(|p| pin_digest(p, image))
            {
                Some(digest) => *entry.digests.entry(digest.to_string()).or_default() += 1,
                // Podman reports `localhost/NAME` for an image without a registry.
                None if crate::disk::familiar(&r.image) == crate::disk::familiar(image) => {
                    entry.by_tag = true
                }
                None => {}
            }
        }
    }
    out
}

/// The plug containers in `observed` this store does not know and did not delete.
fn unknown_plugs(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    plugs: &[PlugRecord],
) -> Result<Found, StoreError> {
    let known: BTreeSet<&str> = plugs.iter().map(|p| p.id.as_str()).collect();
    Ok(adopt::unknown_plugs(
        cx.fleet,
        observed,
        &known,
        &observed.tombstoned(cx.store, now_ms())?,
        now_ms(),
    ))
}

/// Forgets the plugs this store records that a node says were deleted — through another state
/// file, so this one never saw it: record and port lease go (leaving this store's own tombstone,
/// so a copy found later is removed), with a `deleted-elsewhere` event. Without this, a pass
/// would start them again. An actor whose lease fence has failed changes nothing. Returns the
/// ids forgotten.
///
/// # Errors
/// Store failures.
pub fn forget_deleted_elsewhere(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
) -> Result<Vec<String>, StoreError> {
    let now = now_ms();
    let deleted: BTreeSet<&str> = observed.deleted_plugs(now).collect();
    if deleted.is_empty() || cx.exec.fence.as_ref().is_some_and(|f| f.check().is_err()) {
        return Ok(Vec::new());
    }
    let mut forgotten = Vec::new();
    for p in cx.store.plugs()? {
        if !deleted.contains(p.id.as_str()) {
            continue;
        }
        match cx.store.delete_plug(&p.id) {
            Ok(()) | Err(StoreError::NoPlug(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = cx.store.record_event(
            now,
            "plug",
            "deleted-elsewhere",
            Some(&p.node),
            None,
            &format!(
                "plug {} was deleted through another state file (at {}); forgotten here",
                p.id,
                crate::store::format_ms(observed.tombstones[&p.id].deleted_ms)
            ),
        );
        tracing::info!(plug = %p.id, "a node records this plug's deletion; forgotten");
        forgotten.push(p.id);
    }
    Ok(forgotten)
}

/// Whether a pass would change anything — on the nodes or in this state — given a dry run's
/// `observed` and `plan`: steps, plugs to adopt, plugs deleted elsewhere to forget, old
/// tombstones to prune, conditions to learn or to publish. `apply` uses it to leave a fleet
/// with nothing to do untouched: no step, and no lease record on any node.
///
/// # Errors
/// Store failures.
pub fn needs_pass(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    plan: &Plan,
) -> Result<bool, StoreError> {
    if plan.has_changes() || !plan.adopted.is_empty() {
        return Ok(true);
    }
    let now = now_ms();
    let known: BTreeSet<String> = cx.store.plugs()?.into_iter().map(|p| p.id).collect();
    if observed.deleted_plugs(now).any(|id| known.contains(id))
        || observed
            .tombstones
            .values()
            .any(|t| t.deleted_ms < now - TOMBSTONE_KEEP_MS)
    {
        return Ok(true);
    }
    let (_, r) = cx
        .store
        .conditions_with_marks(&observed.marks, &cx.exec.actor)?;
    Ok(!r.learn.is_empty() || !r.publish.is_empty())
}

/// Makes this state and the nodes agree on node conditions: a condition the nodes record that
/// is newer than this state's (set through another state file) is learned, one this state set
/// later (or the nodes never heard of) is recorded on every node it reaches. An actor whose
/// lease fence has failed changes neither.
///
/// # Errors
/// Store failures.
async fn sync_conditions(cx: &PassContext<'_>, observed: &ObservedFleet) -> Result<(), StoreError> {
    if cx.exec.fence.as_ref().is_some_and(|f| f.check().is_err()) {
        return Ok(());
    }
    sync_conditions_with(
        cx.store,
        cx.runtimes,
        &cx.fleet.fleet.name,
        &cx.exec.actor,
        observed,
    )
    .await
}

/// [`sync_conditions`] for a command that holds no pass context (`cordon`, `uncordon`): after
/// it, the state knows every condition set through another state file.
///
/// # Errors
/// Store failures.
pub async fn sync_conditions_with(
    store: &Store,
    runtimes: &Runtimes,
    fleet: &str,
    actor: &str,
    observed: &ObservedFleet,
) -> Result<(), StoreError> {
    let (_, r) = store.conditions_with_marks(&observed.marks, actor)?;
    for (node, mark) in &r.learn {
        tracing::info!(node = %node, schedule = %mark.schedule, by = %mark.by, "the nodes record a newer condition; learned");
        store.learn_schedule(node, mark, now_ms())?;
    }
    for (node, mark) in &r.publish {
        publish_mark(runtimes, fleet, node, mark).await;
    }
    Ok(())
}

/// Records `node`'s condition `mark` on every node of `runtimes` it reaches (best effort: a
/// node missed is told by a later pass, and the newest record on any node wins).
pub async fn publish_mark(
    runtimes: &Runtimes,
    fleet: &str,
    node: &str,
    mark: &crate::condition::Mark,
) {
    let writes = runtimes.values().map(|rt| async move {
        (
            rt.node().to_string(),
            crate::records::write_mark(rt.as_ref(), fleet, node, mark).await,
        )
    });
    for (on, r) in crate::observe::on_nodes(writes).await {
        if let Err(e) = r {
            tracing::warn!(node = %on, about = %node, error = %e, "could not record the node's condition there");
        }
    }
}

/// Removes the nodes' tombstone records older than [`TOMBSTONE_KEEP_MS`] (best effort; an
/// actor whose fence failed leaves them).
async fn prune_tombstones(cx: &PassContext<'_>, observed: &ObservedFleet) {
    if cx.exec.fence.as_ref().is_some_and(|f| f.check().is_err()) {
        return;
    }
    let old = now_ms() - TOMBSTONE_KEEP_MS;
    let removals = observed
        .tombstones
        .values()
        .filter(|t| t.deleted_ms < old)
        .flat_map(|t| &t.records)
        .filter_map(|(node, id)| Some((cx.runtimes.get(node)?.clone(), id.clone())))
        .map(|(rt, id)| async move {
            if let Err(e) = rt.remove_container(&id).await {
                tracing::debug!(error = %e, "could not remove an old tombstone record");
            }
        });
    crate::observe::on_nodes(removals).await;
}

/// What [`adopt`] recorded and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adoption {
    /// The plugs recorded by this call, as recorded (activity and creation: now).
    pub adopted: Vec<PlugRecord>,
    /// Plug containers this store does not know that cannot be adopted, with why (plug id,
    /// reason): left alone, never removed.
    pub skipped: Vec<(String, String)>,
}

/// Records the plugs `observed` holds that this store does not know and did not delete
/// (another machine's state, a lost disk) — each with its port lease and an `adopted` event,
/// as `cx.exec.actor` — so that a plan keeps them. Containers on unreachable nodes are not
/// seen and so not adopted. An actor whose lease fence has failed records nothing. A plug
/// recorded meanwhile by another command is not in the answer.
///
/// # Errors
/// Store failures.
pub fn adopt(cx: &PassContext<'_>, observed: &ObservedFleet) -> Result<Adoption, StoreError> {
    let found = unknown_plugs(cx, observed, &cx.store.plugs()?)?;
    if found.plugs.is_empty() {
        return Ok(Adoption {
            adopted: Vec::new(),
            skipped: found.skipped,
        });
    }
    // An actor that lost its lease records nothing; the plan still keeps what it found (and its
    // steps fail on the fence).
    if cx.exec.fence.as_ref().is_some_and(|f| f.check().is_err()) {
        return Ok(Adoption {
            adopted: Vec::new(),
            skipped: found.skipped,
        });
    }
    let ids = cx
        .store
        .adopt_plugs(&found.plugs, &cx.exec.actor, now_ms())?;
    let adopted: Vec<PlugRecord> = found
        .plugs
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .collect();
    for p in &adopted {
        tracing::info!(plug = %p.id, node = %p.node, port = p.host_port, "adopted a plug this state did not know");
    }
    Ok(Adoption {
        adopted,
        skipped: found.skipped,
    })
}

/// [`adopt`], answering (id, node) of each plug recorded.
fn adopt_unknown(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
) -> Result<Vec<(String, String)>, StoreError> {
    Ok(adopt(cx, observed)?
        .adopted
        .into_iter()
        .map(|p| (p.id, p.node))
        .collect())
}

fn plan_from(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    pins: &crate::images::ImagePins,
) -> Result<Plan, StoreError> {
    let fleet = &cx.fleet.with_digests(&pins.digests());
    // State is read after observation: a plug row is always written before its container, so
    // any plug container observed has its row visible here.
    let (conditions, _) = cx
        .store
        .conditions_with_marks(&observed.marks, &cx.exec.actor)?;
    let mut plugs = cx.store.plugs()?;
    let mut leases = cx.store.port_leases()?;
    let last_known = cx.store.replica_nodes()?;
    // Deleted through another state file: not wanted, whether or not a pass has forgotten it
    // yet (a dry run has not).
    let deleted: BTreeSet<&str> = observed.deleted_plugs(now_ms()).collect();
    plugs.retain(|p| !deleted.contains(p.id.as_str()));
    leases.retain(|(_, _, id)| !deleted.contains(id.as_str()));
    // What this store does not know is adopted, never removed as deleted: a dry run sees it as
    // known (a pass has recorded it already, see `adopt_unknown`).
    let found = unknown_plugs(cx, observed, &plugs)?;
    plugs.extend(found.plugs.iter().cloned());
    leases.extend(
        found
            .plugs
            .iter()
            .map(|p| (p.node.clone(), p.host_port, p.id.clone())),
    );
    let kept: BTreeSet<(&str, &str)> = observed
        .nodes
        .keys()
        .flat_map(|n| observed.containers(n).iter().map(move |o| (n, o)))
        .filter(|(_, o)| {
            o.record
                .label(crate::container::labels::PLUG)
                .is_some_and(|id| found.skipped.iter().any(|(s, _)| s == id))
        })
        .map(|(n, o)| (n.as_str(), o.record.name.as_str()))
        .collect();
    let mut p = plan(&Snapshot {
        fleet,
        observed,
        conditions: &conditions,
        plugs: &plugs,
        port_leases: &leases,
        last_known: &last_known,
        lost: &cx.lost,
        evict: &cx.evict,
    });
    p.steps.retain(|s| {
        !(matches!(s.action, Action::Remove { .. })
            && kept.contains(&(s.node.as_str(), s.container.as_str())))
    });
    p.adopted = found
        .plugs
        .iter()
        .map(|p| (p.id.clone(), p.node.clone()))
        .collect();
    p.unadoptable = found.skipped;
    p.images = pins.clone();
    p.warnings = crate::network::engine_warnings(cx.fleet, observed);
    if observed.networks_observed {
        p.network = crate::network::plan(cx.fleet, observed, &cx.lost);
        let unusable = crate::network::unusable_nodes(cx.fleet, &p.network, &[]);
        hold_unjoinable(&mut p, &unusable);
    }
    Ok(p)
}

/// Takes out of `plan` the creates and replacements of containers that need the fleet's network
/// on a node where it cannot be joined (`unusable`: node → why), each reported: a stop-first
/// replacement there would stop the old container and then fail to create the new one.
fn hold_unjoinable(plan: &mut Plan, unusable: &BTreeMap<String, String>) {
    if unusable.is_empty() {
        return;
    }
    let mut held = Vec::new();
    plan.steps.retain(|s| {
        let spec = match &s.action {
            Action::Create { spec } | Action::Replace { spec, .. } => spec,
            _ => return true,
        };
        let needs = matches!(
            spec.network,
            crate::container::NetworkAttachment::Fleet { .. }
        );
        match unusable.get(&s.node) {
            Some(why) if needs => {
                held.push(crate::network::NetProblem::Held {
                    node: s.node.clone(),
                    container: s.container.clone(),
                    why: why.clone(),
                });
                false
            }
            _ => true,
        }
    });
    plan.network.problems.extend(held);
}

/// A change the caller makes to a computed plan before it runs (the controller adds restarts of
/// unhealthy containers and holds back those inside their restart backoff). Pure: it sees the
/// observation the plan was made from and returns the plan to execute.
pub type PlanAdjust<'a> = dyn Fn(&ObservedFleet, Plan) -> Plan + Sync + 'a;

/// Runs one pass.
///
/// # Errors
/// Store failures (the fleet may have been partly changed; the next pass continues).
pub async fn pass(
    cx: &PassContext<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<PassReport, StoreError> {
    pass_adjusted(cx, &|_, p| p, progress).await
}

/// [`pass`], with `adjust` applied to the plan before anything is recorded or executed.
///
/// # Errors
/// As [`pass`].
pub async fn pass_adjusted(
    cx: &PassContext<'_>,
    adjust: &PlanAdjust<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<PassReport, StoreError> {
    let mut timings = PassTimings::default();
    let mut clock = std::time::Instant::now();
    let mut lap = || {
        let now = std::time::Instant::now();
        std::mem::replace(&mut clock, now).elapsed()
    };
    let observed = observe_for(cx).await;
    timings.observe = lap();
    sync_conditions(cx, &observed).await?;
    forget_deleted_elsewhere(cx, &observed)?;
    prune_tombstones(cx, &observed).await;
    let adopted = adopt_unknown(cx, &observed)?;
    timings.records = lap();
    let pins = pin_images(cx, &observed).await?;
    for pin in &pins.images {
        if let Some(digest) = &pin.record {
            cx.store.record_image_digest(&pin.image, digest, now_ms())?;
        }
    }
    timings.images = lap();
    let mut p = adjust(&observed, plan_from(cx, &observed, &pins)?);
    p.adopted = adopted;
    for m in &p.plug_moves {
        cx.store.move_plug(&m.id, &m.to, m.port)?;
    }
    timings.plan = lap();
    // The network first: containers attach to it when they are created.
    let network =
        crate::network::exec::execute(&p.network, cx.runtimes, Some(cx.store), &cx.exec).await;
    // Where a network step failed, what needs the network waits (reported).
    let unusable = crate::network::unusable_nodes(cx.fleet, &p.network, &network);
    hold_unjoinable(&mut p, &unusable);
    let mut exec = execute(&p, cx.runtimes, Some(cx.store), &cx.exec, progress).await;
    exec.network = network;
    timings.execute = lap();
    settle(cx, &observed, &p, &exec)?;
    timings.settle = lap();
    Ok(PassReport {
        observed,
        plan: p,
        exec,
        timings,
    })
}

/// Records what the pass settled: where replicas run, and port leases no container holds.
/// Records what a look that found nothing to do saw — where each replica runs, which port
/// leases are stale — as a pass would after executing nothing: a state whose applies are all
/// no-ops still learns where replicas run (only the state file is written).
///
/// # Errors
/// Store failures.
pub fn settle_looked(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    plan: &Plan,
) -> Result<(), StoreError> {
    settle(cx, observed, plan, &ExecReport::default())
}

fn settle(
    cx: &PassContext<'_>,
    observed: &ObservedFleet,
    p: &Plan,
    exec: &ExecReport,
) -> Result<(), StoreError> {
    // Replica placement: the plan's, except for replicas with a step that failed or was
    // skipped (then the old record stands until a pass succeeds). Judged per replica from the
    // steps' objects, whatever group the planner put them in.
    let unsettled: BTreeSet<(&str, u32)> = exec
        .outcomes
        .iter()
        .filter(|o| !o.ok)
        .filter_map(|o| match &p.steps[o.index].object {
            Object::Service { name, replica } => Some((name.as_str(), *replica)),
            _ => None,
        })
        .collect();
    let old = cx.store.replica_nodes()?;
    let mut nodes: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (key, node) in &p.replica_nodes {
        let value = if unsettled.contains(&(key.0.as_str(), key.1)) {
            old.get(key).cloned().unwrap_or_else(|| node.clone())
        } else {
            node.clone()
        };
        nodes.insert(key.clone(), value);
    }
    cx.store.set_replica_nodes(&nodes)?;

    // Port leases of plugs on nodes where they no longer run.
    let plugs = cx.store.plugs()?;
    let removed_ok: BTreeSet<(&str, &str)> = exec
        .outcomes
        .iter()
        .filter(|o| o.ok)
        .filter_map(|o| {
            let step = &p.steps[o.index];
            match &step.action {
                Action::Remove { .. } => Some((step.node.as_str(), step.container.as_str())),
                Action::Replace {
                    old_node, old_name, ..
                } => Some((old_node.as_str(), old_name.as_str())),
                _ => None,
            }
        })
        .collect();
    for (node, port, plug) in cx.store.port_leases()? {
        let current = plugs.iter().find(|r| r.id == plug);
        if current.is_some_and(|r| r.node == node && r.host_port == port) {
            continue;
        }
        if !observed.is_reachable(&node) {
            continue; // a copy may still run there
        }
        let copy_left = observed.containers(&node).iter().any(|o| {
            o.record.label(crate::container::labels::PLUG) == Some(plug.as_str())
                && !removed_ok.contains(&(node.as_str(), o.record.name.as_str()))
        });
        if !copy_left {
            cx.store.release_port(&node, port, &plug)?;
        }
    }
    Ok(())
}

/// What keeps the fleet from being converged, judged from one observation and the plan made
/// from it. Shared by `apply` and the controller's handed-over apply.
#[derive(Debug, Clone, Default)]
pub struct Convergence {
    /// Unreachable nodes and replicas that fit nowhere.
    pub placement: Vec<String>,
    /// Containers left to start that exited (with their exit code), and containers that are not
    /// running, or not healthy yet.
    pub containers: Vec<String>,
    /// Whether some container is only waiting for its healthcheck (worth waiting for).
    pub waiting: bool,
}

/// Judges convergence (pure). An exited container named in one of `reported` (for example a
/// failed step's error) is not reported again.
pub fn convergence(observed: &ObservedFleet, plan: &Plan, reported: &[String]) -> Convergence {
    let mut out = Convergence::default();
    for (node, err) in &plan.unreachable {
        out.placement
            .push(format!("node {node} unreachable: {err}"));
    }
    for u in &plan.unplaced {
        out.placement
            .push(format!("{} fits nowhere: {}", u.object, u.diagnosis));
    }
    // The network's problems, except notices: a network whose settings differ still carries
    // traffic; a node on a bridge of its own is as fleetctl makes it.
    for p in &plan.network.problems {
        if !p.is_notice() {
            out.placement.push(format!("network: {p}"));
        }
    }
    let find = |node: &str, name: &str| {
        observed
            .containers(node)
            .iter()
            .find(|o| o.record.name == name)
    };
    // A container left to start: say how it ended last time.
    for st in &plan.steps {
        if let Action::Start { .. } = st.action
            && let Some(d) = find(&st.node, &st.container).and_then(|o| o.details.as_ref())
            && matches!(d.record.state, RunState::Exited | RunState::Dead)
            && !reported.iter().any(|p| p.contains(st.container.as_str()))
        {
            out.containers.push(format!(
                "{}: {} exited with code {}{}",
                st.node,
                st.container,
                d.exit_code,
                if d.oom_killed { " (OOM-killed)" } else { "" }
            ));
        }
    }
    for (node, name) in &plan.unchanged {
        let Some(o) = find(node, name) else {
            continue;
        };
        match (o.record.state, o.record.health) {
            (RunState::Running, None | Some(Health::Healthy)) => {}
            (RunState::Running, Some(Health::Starting)) => {
                out.waiting = true;
                out.containers
                    .push(format!("{node}: {name} is still starting its healthcheck"));
            }
            (RunState::Running, Some(Health::Unhealthy)) => {
                out.waiting = true;
                out.containers.push(format!("{node}: {name} is unhealthy"));
            }
            (state, _) => out
                .containers
                .push(format!("{node}: {name} is {state:?}").to_lowercase()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Unplaced;
    use crate::schedule::Diagnosis;

    /// What fits nowhere is named as operators name it, not as a Rust value
    /// (`Service { name: "redis", replica: 0 }` before).
    #[test]
    fn what_fits_nowhere_is_named_in_words() {
        let mut plan = Plan::default();
        plan.unplaced.push(Unplaced {
            object: Object::Service {
                name: "redis".into(),
                replica: 0,
            },
            diagnosis: Diagnosis::default(),
        });
        let judged = convergence(&ObservedFleet::default(), &plan, &[]);
        assert_eq!(judged.placement.len(), 1);
        assert!(
            judged.placement[0].starts_with("service redis replica 0 fits nowhere"),
            "{:?}",
            judged.placement
        );
    }

    /// Fake engines for node0..node{n-1}, each call waiting 5 ms and counted in `gauge`.
    fn slow_fleet(n: usize, gauge: &crate::transport::fake::InFlight) -> Runtimes {
        use crate::transport::NodeRuntime;
        use crate::transport::fake::{CallLatency, FakeRuntime};
        let wait = std::time::Duration::from_millis(5);
        (0..n)
            .map(|i| {
                let f = FakeRuntime::new(format!("node{i}"));
                f.set_latency(Some(CallLatency {
                    list: wait,
                    inspect: wait,
                    create: wait,
                    start: wait,
                    other: wait,
                }));
                f.count_in_flight(gauge);
                (
                    f.node().to_string(),
                    std::sync::Arc::new(f) as std::sync::Arc<dyn NodeRuntime>,
                )
            })
            .collect()
    }

    /// A condition recorded on every node of a 100-node fleet keeps at most
    /// [`crate::observe::NODE_CONCURRENCY`] nodes' calls in flight (each node costs an SSH
    /// connection and its channels), yet still works on many nodes at once; and reaches them all.
    #[tokio::test(start_paused = true)]
    async fn a_write_to_every_node_is_bounded_in_fan_out() {
        use crate::condition::{Mark, Schedule};
        use crate::observe::NODE_CONCURRENCY;
        let gauge = crate::transport::fake::InFlight::new();
        let runtimes = slow_fleet(100, &gauge);
        let mark = Mark {
            schedule: Schedule::Cordoned,
            since_ms: 1,
            by: "test".into(),
        };
        publish_mark(&runtimes, "demo", "node1", &mark).await;
        assert!(
            gauge.max() <= NODE_CONCURRENCY,
            "{} calls in flight at once",
            gauge.max()
        );
        assert!(gauge.max() > NODE_CONCURRENCY / 2, "{}", gauge.max());
        assert_eq!(gauge.now(), 0);
        for rt in runtimes.values() {
            let name = crate::records::condition_name("demo", "node1");
            assert!(rt.inspect_container(&name).await.is_ok(), "{}", rt.node());
        }
    }

    /// [`crate::observe::on_nodes`] answers in the order given, whatever order the work ends in.
    #[tokio::test(start_paused = true)]
    async fn bounded_fan_out_answers_in_order() {
        let work = (0..100u64).map(|i| async move {
            tokio::time::sleep(std::time::Duration::from_millis(100 - i)).await;
            i
        });
        let out = crate::observe::on_nodes(work).await;
        assert_eq!(out, (0..100).collect::<Vec<_>>());
    }
}

//! What the API and CLI intents ask of a running controller. Nothing is decided here: each
//! operation calls [`crate::plugs`], [`crate::drain`] or the store, under the controller's work
//! lock when it changes containers, so it never runs at the same time as a reconcile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::Instrument;

use super::nodes::Readiness;
use super::triggers::Trigger;
use super::{Controller, lock};
use crate::condition::Transition;
use crate::container::EngineInfo;
use crate::converge::{Passes, converge};
use crate::drain::{DrainReport, drain};
use crate::execute::{ExecOptions, Progress};
use crate::manifest::{self, Bytes, Labels, Source};
use crate::observe::NodeObservation;
use crate::observe::ObservedFleet;
use crate::plan::Plan;
use crate::plugs::{self, PLUG_READY_TIMEOUT, PlugCreated, PlugError};
use crate::reconcile::{PassContext, PassReport, plan_only};
use crate::store::{NodeCondition, PlugRecord, StoreError};
use crate::view::ApplyView;

/// Failures of controller operations.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such node in the manifests in force.
    #[error("node {0:?} is not in the manifests (nodes: {1})")]
    NoNode(String, String),
    /// A plug operation failed.
    #[error(transparent)]
    Plug(#[from] PlugError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifests handed over are invalid (every diagnostic, one per line).
    #[error("invalid manifests:\n{0}")]
    Invalid(String),
    /// The manifests handed over are not the ones the controller runs.
    #[error("{0}")]
    Differs(String),
    /// No such revision (the message names the ones there are).
    #[error("{0}")]
    NoRevision(String),
}

/// One node as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Readiness as the controller tracks it.
    pub readiness: Readiness,
    /// Whether new work may be placed there now (Ready and not cordoned, draining or drained).
    pub schedulable: bool,
    /// Operator conditions.
    pub condition: NodeCondition,
    /// Plug instances recorded there (any state).
    pub plugs: usize,
    /// This fleet's containers seen at the last reconcile.
    pub containers: Option<usize>,
    /// Memory use measured at the last resync (bytes).
    pub measured_memory: Option<u64>,
    /// Allocatable memory (bytes), when known.
    pub allocatable_memory: Option<u64>,
    /// Engine facts, when read.
    pub engine: Option<EngineInfo>,
}

/// The outcome of cordon / uncordon.
#[derive(Debug, Clone, Serialize)]
pub struct CordonOutcome {
    /// Node.
    pub node: String,
    /// Whether anything changed.
    pub changed: bool,
    /// Conditions now.
    pub condition: NodeCondition,
}

impl Controller {
    fn check_node(&self, node: &str) -> Result<(), OpError> {
        let loaded = self.desired();
        if loaded.fleet.nodes.contains_key(node) {
            return Ok(());
        }
        let known: Vec<&str> = loaded.fleet.nodes.keys().map(String::as_str).collect();
        Err(OpError::NoNode(node.to_string(), known.join(", ")))
    }

    fn pass_context<'a>(
        &'a self,
        loaded: &'a manifest::Loaded,
        runtimes: &'a crate::execute::Runtimes,
        evict: BTreeSet<String>,
        actor: &str,
    ) -> PassContext<'a> {
        PassContext {
            fleet: &loaded.fleet,
            runtimes,
            store: &self.store,
            lost: self.lost_nodes(),
            evict,
            measure_memory: true,
            exec: ExecOptions {
                actor: actor.to_string(),
                auth: crate::images::fleet_auth(&loaded.fleet),
                ..self.cfg.exec.clone()
            },
            refresh: crate::images::Refresh::Recorded,
        }
    }

    /// Every plug instance.
    ///
    /// # Errors
    /// Store failures.
    pub fn plugs(&self) -> Result<Vec<PlugRecord>, StoreError> {
        self.store.plugs()
    }

    /// Places and starts a new plug (as `plug create`), avoiding nodes that are lost or back
    /// but not Ready yet.
    ///
    /// # Errors
    /// Unknown class, nothing fits (with the per-node diagnosis), store or Docker failures.
    pub async fn create_plug(&self, class: &str, owner: &str) -> Result<PlugCreated, PlugError> {
        let loaded = self.desired();
        let runtimes = self.runtimes();
        // Memory as the pressure watch last read it (every resync), where a reading could
        // reject: a create does not wait for stats.
        let known = lock(&self.state).measured.clone();
        let observed = plugs::observe_for_placement_with(&loaded.fleet, &runtimes, &known).await;
        plugs::ensure_network(&loaded.fleet, &runtimes, &observed).await;
        let plug = plugs::reserve_plug(
            &loaded.fleet,
            &self.store,
            &observed,
            &self.lost_nodes(),
            class,
            owner,
            self.now_ms(),
        )?;
        // Not under the work lock: creation is idempotent (a pass that creates the pending plug
        // at the same time hits a name conflict and adopts it), and a reconcile should not wait
        // for a new plug's health gate.
        let created = plugs::start_reserved(
            &loaded.fleet,
            &self.store,
            &runtimes,
            &plug,
            PLUG_READY_TIMEOUT,
        )
        .await;
        match &created {
            Ok(c) => {
                tracing::info!(plug = %c.id, node = %c.node, port = c.port, class, owner, "plug created")
            }
            Err(e) => tracing::warn!(class, owner, error = %e, "plug create failed"),
        }
        created
    }

    /// Deletes a plug (its containers, row and port leases).
    ///
    /// # Errors
    /// Unknown plug, store or Docker failures.
    pub async fn delete_plug(&self, id: &str) -> Result<Vec<String>, PlugError> {
        let _work = self.work.lock().await;
        let loaded = self.desired();
        let notes = plugs::delete(&loaded.fleet, &self.store, &self.runtimes(), id).await?;
        tracing::info!(plug = %id, "plug deleted");
        Ok(notes)
    }

    /// Records activity on a plug; a stopped or evicted one is started again where there is room
    /// (see [`plugs::touch`]).
    ///
    /// # Errors
    /// Unknown plug, store or Docker failures.
    pub async fn touch_plug(&self, id: &str) -> Result<PlugRecord, PlugError> {
        let now = self.now_ms();
        if self.store.plug(id)?.state.wants_running() {
            // Activity only: no container changes, no need to wait for a pass.
            self.store.touch_plug(id, now)?;
            return Ok(self.store.plug(id)?);
        }
        let _work = self.work.lock().await;
        let loaded = self.desired();
        let plug = plugs::touch(
            &loaded.fleet,
            &self.store,
            &self.runtimes(),
            &self.lost_nodes(),
            id,
            now,
        )
        .await?;
        tracing::info!(plug = %id, state = plug.state.as_str(), "plug touched and started again");
        self.trigger(Trigger::Operation(format!("touch {id}")));
        Ok(plug)
    }

    /// Cordons (`on`) or uncordons a node: a store write; the next reconcile reads it.
    ///
    /// # Errors
    /// Unknown node, store failures.
    pub fn cordon(&self, node: &str, on: bool, who: &str) -> Result<CordonOutcome, OpError> {
        self.check_node(node)?;
        let now = self.now_ms();
        let transition = if on {
            Transition::Cordon
        } else {
            Transition::Uncordon
        };
        // A condition set through another state file (seen at the last observation) is learned
        // first: this command is the newest word, stamped after it; the next pass records it on
        // the nodes.
        self.store
            .learn_marks(&self.last_observed().marks, who, now)?;
        let (before, after) = self.store.transition_node(node, now, transition)?;
        let changed = before != after;
        if changed {
            let action = if on { "cordon" } else { "uncordon" };
            self.store
                .record_event(now, who, action, Some(node), None, &format!("{action}ed"))?;
            tracing::info!(node, action, "node condition changed");
            self.trigger(Trigger::Operation(format!("{action} {node}")));
        }
        Ok(CordonOutcome {
            node: node.to_string(),
            changed,
            condition: after,
        })
    }

    /// Drains a node through the normal pipeline (see [`crate::drain`]), holding the work lock
    /// for the whole drain: its passes are full reconciles, so the rest of the fleet is still
    /// looked after, one pass at a time. `progress` gets one line per finished step.
    ///
    /// # Errors
    /// Unknown node, store failures.
    pub async fn drain(
        &self,
        node: &str,
        timeout: Duration,
        force: bool,
        who: &str,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<DrainReport, OpError> {
        self.check_node(node)?;
        let _work = self.work.lock().await;
        let loaded = self.desired();
        let runtimes = self.runtimes();
        let evict = if force {
            BTreeSet::from([node.to_string()])
        } else {
            BTreeSet::new()
        };
        let cx = self.pass_context(&loaded, &runtimes, evict, who);
        tracing::info!(node, force, "drain started");
        let report = drain(&cx, node, timeout, &|p| {
            if let Some(line) = progress_line(&p) {
                tracing::info!(node, "{line}");
                progress(&line);
            }
        })
        .instrument(tracing::info_span!("drain", node))
        .await?;
        tracing::info!(node, status = ?report.status, moved = report.moved.len(), left = report.left.len(), "drain ended");
        self.trigger(Trigger::Operation(format!("drain {node}")));
        Ok(report)
    }

    /// An apply handed over by `fleetctl apply`: the controller's manifest directory is the
    /// source of truth, so the manifests given must be the ones in force (after a rescan, so an
    /// edit the watcher has not delivered yet counts). Then passes run until nothing is left to
    /// do, and the outcome says whether everything runs (and is healthy).
    ///
    /// # Errors
    /// Invalid manifests, manifests other than the controller's, store failures.
    pub async fn apply(
        &self,
        sources: &[Source],
        timeout: Duration,
        refresh: crate::images::Refresh,
    ) -> Result<ApplyView, OpError> {
        let given = manifest::parse(sources).map_err(|e| OpError::Invalid(e.to_string()))?;
        // An apply after a rollback puts the watched manifests back in force.
        if lock(&self.rollback).take().is_some() {
            lock(&self.seen_hash).clear();
        }
        // An apply reads the secrets again, as an apply without a controller would (a new
        // manifest set in force has just had them read).
        if !self.reload_manifests() {
            self.reload_secrets();
        }
        let current = self.desired();
        if comparable(&given.fleet) != comparable(&current.fleet) {
            return Err(OpError::Differs(format!(
                "the controller runs the manifests in {} and these differ from them; edit the \
                 files there instead (the controller applies a change within a second), or stop \
                 the controller to apply other manifests by hand",
                self.cfg.manifests.display()
            )));
        }
        let mut passes = ControllerPasses {
            ctl: self,
            turn: None,
            run: ApplyRun {
                ready_timeout: timeout,
                refresh,
                memo: crate::execute::ApplyMemo::new(),
            },
        };
        let done = converge(&mut passes, timeout).await?;
        // Converged as `apply` judges it: a revision now, not at the next pass.
        if done.converged {
            self.note_revision(&self.desired());
        }
        Ok(done.view())
    }

    /// A rollback handed over by `fleetctl rollback`: revision `number`'s manifests (and the
    /// config file contents it recorded) are put in force in place of the watched directory's,
    /// with the image digests it ran recorded again and the secrets' current values; then
    /// passes run as for [`Controller::apply`]. The watched directory's set comes back at the
    /// next change there, or with the next `fleetctl apply`.
    ///
    /// # Errors
    /// No such revision; its manifests no longer validate or name another fleet; a secret
    /// cannot be read; store failures.
    pub async fn rollback(&self, number: i64, timeout: Duration) -> Result<ApplyView, OpError> {
        let Some(rev) = self.store.revision(number)? else {
            let all = self.store.revisions()?;
            return Err(OpError::NoRevision(crate::revisions::no_such(number, &all)));
        };
        let mut loaded = crate::revisions::load(&rev).map_err(|e| {
            OpError::Invalid(format!("revision {number} no longer validates here:\n{e}"))
        })?;
        let current = self.desired();
        if loaded.fleet.fleet.name != current.fleet.fleet.name {
            return Err(OpError::Invalid(format!(
                "revision {number} is of fleet {}, not {}",
                loaded.fleet.fleet.name, current.fleet.fleet.name
            )));
        }
        loaded.fleet.secret_values = self
            .read_secrets(&loaded.fleet, &current.fleet.secret_values)
            .map_err(OpError::Invalid)?;
        {
            // Under the work lock: no pass sees the new set with the old digests.
            let _work = self.work.lock().await;
            for (image, digest) in rev.content.images.iter().filter(|(_, d)| !d.is_empty()) {
                self.store
                    .record_image_digest(image, digest, self.now_ms())?;
            }
            if let Some(lease) = &self.cfg.lease {
                self.store.record_applied(
                    lease.token,
                    &self.cfg.actor,
                    &loaded.sources_hash(),
                    &loaded.sources,
                    self.now_ms(),
                )?;
            }
            tracing::info!(revision = number, "rollback: revision in force");
            *lock(&self.rollback) = Some((loaded.sources_hash(), number));
            self.set_desired(loaded);
        }
        self.sync_runtimes();
        let mut passes = ControllerPasses {
            ctl: self,
            turn: None,
            run: ApplyRun {
                ready_timeout: timeout,
                refresh: crate::images::Refresh::Recorded,
                memo: crate::execute::ApplyMemo::new(),
            },
        };
        let done = converge(&mut passes, timeout).await?;
        if done.converged {
            self.note_revision(&self.desired());
        }
        Ok(done.view())
    }

    /// Every node: readiness, conditions, plugs and what the last reconcile saw.
    ///
    /// # Errors
    /// Store failures.
    pub fn nodes(&self) -> Result<Vec<NodeStatus>, StoreError> {
        let loaded = self.desired();
        let conditions = self.store.node_conditions()?;
        let plugs = self.store.plugs()?;
        let readiness = self.readiness();
        let observed = self.last_observed();
        let measured = self.measured_memory();
        Ok(loaded
            .fleet
            .nodes
            .values()
            .map(|spec| {
                let condition = conditions.get(&spec.name).cloned().unwrap_or_default();
                let r = readiness
                    .get(&spec.name)
                    .cloned()
                    .unwrap_or(Readiness::Ready);
                let (containers, engine) = match observed.nodes.get(&spec.name) {
                    Some(NodeObservation::Reachable {
                        containers, engine, ..
                    }) => (Some(containers.len()), engine.clone()),
                    _ => (None, None),
                };
                NodeStatus {
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    schedulable: r.can_take_work() && condition.schedule().takes_new_work(),
                    readiness: r,
                    condition,
                    plugs: plugs.iter().filter(|p| p.node == spec.name).count(),
                    containers,
                    measured_memory: measured.get(&spec.name).copied(),
                    allocatable_memory: spec
                        .allocatable_memory_or(engine.as_ref().map(|e| Bytes(e.memory)))
                        .map(|b| b.0),
                    engine,
                }
            })
            .collect())
    }
}

/// The controller's passes of a handed-over apply: each under the work lock, so it never runs
/// beside the controller's own reconcile.
struct ControllerPasses<'a> {
    ctl: &'a Controller,
    /// The work lock taken by [`Passes::wait_turn`], for the first pass.
    turn: Option<tokio::sync::MutexGuard<'a, ()>>,
    /// The handed-over apply's settings.
    run: ApplyRun,
}

/// A handed-over apply's settings for each of its passes.
#[derive(Debug, Clone)]
pub struct ApplyRun {
    /// Each step's readiness wait (the apply's `--timeout`).
    pub ready_timeout: Duration,
    /// The apply's `--refresh`.
    pub refresh: crate::images::Refresh,
    /// What the apply remembers across its passes.
    pub memo: Arc<crate::execute::ApplyMemo>,
}

impl<'a> Passes for ControllerPasses<'a> {
    async fn wait_turn(&mut self) {
        self.turn = Some(self.ctl.work.lock().await);
    }

    async fn pass(&mut self, ready_timeout: Duration) -> Result<PassReport, StoreError> {
        // Released after each pass: the controller's own reconciles run between passes.
        let _work = match self.turn.take() {
            Some(held) => held,
            None => self.ctl.work.lock().await,
        };
        let run = ApplyRun {
            ready_timeout,
            ..self.run.clone()
        };
        Ok(self.ctl.reconcile_report("apply", Some(&run)).await?.1)
    }

    async fn look(&mut self) -> Result<(ObservedFleet, Plan), StoreError> {
        let loaded = self.ctl.desired();
        let runtimes = self.ctl.runtimes();
        let mut cx =
            self.ctl
                .pass_context(&loaded, &runtimes, BTreeSet::new(), &self.ctl.cfg.actor);
        cx.refresh = self.run.refresh;
        cx.exec.memo = Some(self.run.memo.clone());
        plan_only(&cx).await
    }
}

/// One finished step as a line of drain progress.
pub fn progress_line(p: &Progress) -> Option<String> {
    match p {
        Progress::Started(_) => None,
        Progress::Done(s, d) => Some(format!(
            "{:<10} {:<8} {}  {} ({:.1}s)",
            s.node,
            s.action.verb(&s.node),
            s.container,
            s.reason,
            d.as_secs_f64()
        )),
        Progress::Failed(s, e) => Some(format!(
            "{:<10} {:<8} {}  FAILED: {e}",
            s.node,
            s.action.verb(&s.node),
            s.container
        )),
        Progress::Pulling { .. } => None,
        Progress::Pulled {
            node,
            image,
            elapsed,
        } => Some(format!(
            "{node:<10} {:<8} {image}  ({:.1}s)",
            "pull",
            elapsed.as_secs_f64()
        )),
        Progress::Copied {
            node,
            image,
            from,
            elapsed,
        } => Some(format!(
            "{node:<10} {:<8} {image}  from {from} ({:.1}s)",
            "copy",
            elapsed.as_secs_f64()
        )),
    }
}

/// `fleet` as two processes of one machine compare it: the files it names (configs, secret
/// and registry password files) by absolute path — each process resolved a relative one
/// against its own working directory — and no secret values.
fn comparable(fleet: &manifest::DesiredFleet) -> manifest::DesiredFleet {
    use crate::manifest::spec::{PasswordSource, SecretSource};
    let abs = |p: &mut std::path::PathBuf| {
        if !p.starts_with("~")
            && let Ok(a) = std::path::absolute(&*p)
        {
            *p = a.components().collect();
        }
    };
    let mut f = manifest::DesiredFleet {
        secret_values: Default::default(),
        ..fleet.clone()
    };
    for s in f.secrets.values_mut() {
        if let SecretSource::File(p) = &mut s.source {
            abs(p);
        }
    }
    for r in &mut f.fleet.registries {
        if let PasswordSource::File(p) = &mut r.password {
            abs(p);
        }
    }
    let files = f
        .services
        .values_mut()
        .map(|s| &mut s.files)
        .chain(f.plug_classes.values_mut().map(|c| &mut c.files));
    for files in files {
        for c in &mut files.configs {
            abs(&mut c.source);
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_named_relative_to_either_working_directory_compare_equal_and_values_do_not_count() {
        let text = "apiVersion: fleet/v1\nkind: Secret\nmetadata: {name: pw}\nspec: {env: PATH}\n---\napiVersion: fleet/v1\nkind: Service\nmetadata: {name: web}\nspec: {image: 'web:1', resources: {memory: 16MiB}, env: {PW: {secret: pw}}}\n";
        let fleet = |name: &str| {
            manifest::parse(&[manifest::Source {
                name: name.into(),
                text: text.into(),
            }])
            .unwrap()
            .fleet
        };
        let mut here = fleet("fleet/f.yaml");
        let abs = std::env::current_dir().unwrap().join("fleet/f.yaml");
        let mut there = fleet(abs.to_str().unwrap());
        for (f, p) in [(&mut here, "conf/x"), (&mut there, "")] {
            let p = if p.is_empty() {
                std::env::current_dir().unwrap().join("conf/./x")
            } else {
                p.into()
            };
            f.fleet
                .registries
                .push(crate::manifest::spec::RegistrySpec {
                    host: "reg.example".into(),
                    username: "u".into(),
                    password: crate::manifest::spec::PasswordSource::File(p),
                });
        }
        there.secret_values = crate::secrets::SecretValues::from_values(
            b"k",
            [(
                "pw".to_string(),
                crate::container::SecretValue::new(b"v".to_vec()),
            )],
        );
        assert_ne!(here, there);
        assert_eq!(comparable(&here), comparable(&there));
    }
}

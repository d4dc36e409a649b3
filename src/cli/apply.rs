//! `fleetctl apply PATH`: converge the fleet and wait until every container runs (and is healthy
//! where it has a healthcheck). Exit 0 converged, 1 not.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::common::{
    connect_all, emit, holder, load_or_report, note_fresh_state, open_store_noting, print_data,
    runtime,
};
use super::render::progress_line;
use super::{GlobalOpts, Output};
use crate::converge::{Passes, converge};
use crate::execute::{ExecOptions, Progress, StepOutcome};
use crate::lease::nodes::NodeSet;
use crate::lease::{LeaseError, LeaseGuard, LeaseKind, Request};
use crate::observe::ObservedFleet;
use crate::plan::Plan;
use crate::reconcile::{PassContext, PassReport, needs_pass, pass, plan_only};
use crate::store::{Store, StoreError, now_ms};
use crate::view::ApplyView;

/// The CLI's passes: one [`PassContext`], the applied manifests recorded after the first pass,
/// progress printed as steps finish.
struct LocalPasses<'a> {
    cx: PassContext<'a>,
    store: &'a Store,
    lease: &'a LeaseGuard,
    loaded: &'a crate::manifest::Loaded,
    print: &'a (dyn Fn(&Progress) + Sync),
    recorded: bool,
    /// A first look that found nothing to do: it is the first pass (nothing is executed, and
    /// the lease was never taken on the nodes).
    nothing_to_do: Option<(ObservedFleet, Plan)>,
}

impl Passes for LocalPasses<'_> {
    async fn pass(&mut self, ready_timeout: Duration) -> Result<PassReport, StoreError> {
        self.cx.exec.ready_timeout = ready_timeout;
        let report = match self.nothing_to_do.take() {
            Some((observed, plan)) => {
                crate::reconcile::settle_looked(&self.cx, &observed, &plan)?;
                PassReport {
                    observed,
                    plan,
                    exec: Default::default(),
                    timings: Default::default(),
                }
            }
            None => pass(&self.cx, &|p| (self.print)(&p)).await?,
        };
        if !self.recorded {
            self.store.record_applied(
                self.lease.token(),
                &self.cx.exec.actor,
                &self.loaded.sources_hash(),
                &self.loaded.sources,
                now_ms(),
            )?;
            self.recorded = true;
        }
        Ok(report)
    }

    async fn look(&mut self) -> Result<(ObservedFleet, Plan), StoreError> {
        plan_only(&self.cx).await
    }
}

/// Runs `apply`.
///
/// # Errors
/// Store failures; lease contention is reported and exits 1.
pub fn run(
    path: &Path,
    lock_timeout: Duration,
    timeout: Duration,
    output: Output,
    refresh: crate::images::Refresh,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(1);
    };
    apply_loaded(
        &loaded,
        lock_timeout,
        timeout,
        output,
        refresh,
        None,
        global,
    )
}

/// A rollback applied as an apply: the revision it applies again and the image digests that
/// revision ran (recorded fleet-wide before the first pass, so the same digests run even where
/// the tags have moved since).
#[derive(Debug, Clone)]
pub struct RollbackOf {
    /// The revision applied again.
    pub revision: i64,
    /// Its image digests (image → digest; `""`: by tag, left as recorded now).
    pub images: std::collections::BTreeMap<String, String>,
}

/// Applies `loaded` as `apply` does (lease, passes, hand-over to a running controller,
/// revision recorded when it converges); `rollback` when it is a revision applied again.
///
/// # Errors
/// Store failures; lease contention is reported and exits 1.
pub fn apply_loaded(
    loaded: &crate::manifest::Loaded,
    lock_timeout: Duration,
    timeout: Duration,
    output: Output,
    refresh: crate::images::Refresh,
    rollback: Option<&RollbackOf>,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let fleet = &loaded.fleet;
    let opened = open_store_noting(global, &fleet.fleet.name)?;
    let fresh = opened.fresh();
    let store = Arc::new(opened.store);
    if let Some(controller) = super::handoff::live_controller(&store)? {
        if let Some(r) = rollback {
            return super::handoff::rollback(&store, &controller, r.revision, timeout, output);
        }
        return super::handoff::apply(
            &store,
            &controller,
            loaded,
            timeout,
            refresh == crate::images::Refresh::All,
            output,
        );
    }
    // The event log's retention: one statement per apply (a handed-over apply leaves it to
    // the controller, which prunes every resync).
    let retention = i64::try_from(fleet.fleet.event_retention.as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = store.prune_events(crate::store::now_ms().saturating_sub(retention)) {
        tracing::warn!(error = %e, "could not prune the event log");
    }
    let with_secrets = super::common::with_secrets(fleet, &store)?;
    let fleet = &with_secrets;
    let who = holder("apply");
    let rt = runtime()?;
    let runtimes = connect_all(fleet);
    let req = Request {
        fleet: &fleet.fleet.name,
        holder: &who,
        kind: LeaseKind::Apply,
        api: None,
        wait: lock_timeout,
    };
    // The lease is taken in the state file and checked on the nodes now, but taken on the
    // nodes only once there is something to do: a no-op apply changes nothing anywhere.
    let nodes = NodeSet::shared(&fleet.fleet.name, runtimes.clone(), rt.handle().clone());
    let mut lease = match LeaseGuard::acquire_deferred(store.clone(), req, nodes, None) {
        Ok(l) => l,
        Err(e @ (LeaseError::Locked { .. } | LeaseError::NoNode { .. })) => {
            return Ok(super::handoff::report_locked(&e));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(r) = rollback {
        // Under the lease (taken in the state file), before the first look: the revision's
        // digests are what the fleet runs from now on, and what this apply's pins start from.
        for (image, digest) in r.images.iter().filter(|(_, d)| !d.is_empty()) {
            store.record_image_digest(image, digest, now_ms())?;
        }
    }
    let exec = ExecOptions {
        actor: who.clone(),
        ready_timeout: timeout,
        fence: Some(lease.fence()),
        auth: crate::images::fleet_auth(fleet),
        memo: Some(crate::execute::ApplyMemo::new()),
        ..Default::default()
    };
    let first = rt.block_on(async {
        let cx = PassContext {
            exec: exec.clone(),
            refresh,
            ..PassContext::new(fleet, &runtimes, &store)
        };
        let (observed, plan) = plan_only(&cx).await?;
        let needed = needs_pass(&cx, &observed, &plan)?;
        Ok::<_, StoreError>((observed, plan, needed))
    });
    let nothing_to_do = match first {
        Ok((observed, plan, false)) => Some((observed, plan)),
        Ok((_, _, true)) => {
            match lease.hold_nodes(req) {
                Ok(()) => {}
                Err(e @ (LeaseError::Locked { .. } | LeaseError::NoNode { .. })) => {
                    drop(lease);
                    return Ok(super::handoff::report_locked(&e));
                }
                Err(e) => return Err(e.into()),
            }
            None
        }
        Err(e) => return Err(e.into()),
    };
    let json = matches!(output, Output::Json | Output::Yaml);
    let result = rt.block_on(async {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let print = |p: &Progress| {
            if json || super::common::quiet() {
                return;
            }
            // On a terminal, a pull in progress is one line rewritten in place; every other line
            // clears it first.
            let clear = if tty { "\r\x1b[K" } else { "" };
            if let Some(line) = progress_line(p) {
                let _ = emit(&format!("{clear}{line}\n"));
            } else if tty && let Some(status) = super::render::pull_status(p) {
                let _ = emit(&format!("{clear}{status}"));
            }
        };
        let mut passes = LocalPasses {
            cx: PassContext {
                exec,
                refresh,
                ..PassContext::new(fleet, &runtimes, &store)
            },
            store: &store,
            lease: &lease,
            loaded,
            print: &print,
            recorded: false,
            nothing_to_do,
        };
        converge(&mut passes, timeout).await
    });
    // A converged apply is a revision (SPEC §13), recorded under the lease it ran with.
    let recorded = match &result {
        Ok(done) if done.converged => Some(record_revision(
            &store,
            lease.token(),
            &who,
            loaded,
            fleet,
            rollback.map(|r| r.revision),
        )),
        _ => None,
    };
    let release = lease.release();
    let done = result?;
    release?;
    if let Some(Err(e)) = recorded {
        eprintln!("warning: the apply converged but its revision was not recorded: {e:#}");
    }
    let view = done.view();
    note_fresh_state(fresh.as_deref(), &fleet.fleet.name, view.adopted.len());
    render_view(&view, Shown::Progress, output)
}

/// Records what a converged apply put in force as the next revision (nothing when the last
/// revision holds the same): `fleet` is `loaded.fleet` with its secrets read; `rollback_of` the
/// revision a rollback applied again.
///
/// # Errors
/// Store failures, a lease lost.
pub fn record_revision(
    store: &Store,
    token: i64,
    who: &str,
    loaded: &crate::manifest::Loaded,
    fleet: &crate::manifest::DesiredFleet,
    rollback_of: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let content = crate::revisions::content_of(loaded, fleet, &store.image_digests()?);
    crate::revisions::record(
        store,
        Some(token),
        who,
        &content,
        fleet,
        rollback_of,
        now_ms(),
    )
}

/// Where an apply ran, for its last lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Here: each step was printed as it finished (unless quiet), failures with their cause.
    Progress,
    /// In the running controller: nothing was printed yet.
    ByController,
}

/// Prints an apply's view — the same words and the same JSON whether it ran here or in the
/// controller. Exit 0 when converged, 1 otherwise.
///
/// # Errors
/// Output failures.
pub fn render_view(view: &ApplyView, shown: Shown, output: Output) -> anyhow::Result<u8> {
    if matches!(output, Output::Json | Output::Yaml) {
        print_data(output, view)?;
        return Ok(if view.converged { 0 } else { 1 });
    }
    let by = match shown {
        Shown::Progress => "",
        Shown::ByController => " (by the controller)",
    };
    let mut text = String::new();
    for w in &view.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    if let Some(first) = view.passes.first()
        && first.summary.steps() == 0
    {
        text.push_str(&format!(
            "No changes: {} containers as desired.\n",
            first.summary.unchanged
        ));
    }
    if !view.adopted.is_empty() {
        text.push_str(&format!(
            "Adopted {} plug{} running on the nodes that this state did not know (recorded, not removed): {}\n",
            view.adopted.len(),
            if view.adopted.len() == 1 { "" } else { "s" },
            view.adopted
                .iter()
                .map(|(id, node)| format!("{id} on {node}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The network's steps: the swarm and networks they formed, or why not.
    for o in view.passes.iter().flat_map(|p| &p.network) {
        match &o.error {
            None => text.push_str(&format!("network: {}: done\n", o.step)),
            Some(e) => text.push_str(&format!("network: ✗ {e}\n")),
        }
    }
    let done = view.changes;
    let secs = view.elapsed_ms as f64 / 1000.0;
    if view.converged {
        text.push_str(&format!(
            "Converged in {secs:.1}s{by}: {done} change{} made.\n",
            if done == 1 { "" } else { "s" }
        ));
    } else {
        text.push_str(&format!(
            "NOT converged after {secs:.1}s{by} ({done} changes made):\n"
        ));
        // Failed steps printed with their cause as they failed (the ✗ lines) are counted here
        // instead of printing each cause a second time.
        // The last pass's failures: an earlier pass's failed step may have succeeded since.
        let failed: Vec<&StepOutcome> = view
            .passes
            .last()
            .into_iter()
            .flat_map(|p| &p.outcomes)
            .filter(|o| !o.ok && !o.skipped)
            .collect();
        let shown: BTreeSet<&str> = if shown == Shown::Progress && !super::common::quiet() {
            failed.iter().filter_map(|o| o.error.as_deref()).collect()
        } else {
            BTreeSet::new()
        };
        for p in view.problems.iter().filter(|p| !shown.contains(p.as_str())) {
            text.push_str(&format!("  - {p}\n"));
        }
        if !shown.is_empty() {
            text.push_str(&format!(
                "  - {} step{} failed (the lines marked ✗ above say why)\n",
                failed.len(),
                if failed.len() == 1 { "" } else { "s" }
            ));
        }
    }
    emit(&text)?;
    Ok(if view.converged { 0 } else { 1 })
}

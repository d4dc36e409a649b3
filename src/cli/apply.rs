//! `fleetctl apply PATH`: converge the fleet and wait until every container runs (and is healthy
//! where it has a healthcheck). Exit 0 converged, 1 not.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::common::{connect_all, emit, holder, load_or_report, open_store, print_data, runtime};
use super::render::{PlanView, failures, plan_view, progress_line, summary, summary_line};
use super::{GlobalOpts, Output};
use crate::execute::{ExecOptions, ExecReport};
use crate::lease::{LeaseGuard, LeaseKind};
use crate::reconcile::{PassContext, convergence, pass, plan_only};
use crate::store::{StoreError, now_ms};

/// Most reconcile passes one apply makes: the first does the work; later ones finish what a
/// conflict or a slow engine left, and stop as soon as nothing is left to do.
pub const MAX_PASSES: usize = 4;

#[derive(Serialize)]
struct PassJson<'a> {
    plan: PlanView<'a>,
    outcomes: &'a ExecReport,
}

#[derive(Serialize)]
struct ApplyJson<'a> {
    converged: bool,
    elapsed_ms: u64,
    passes: Vec<PassJson<'a>>,
    problems: Vec<String>,
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
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(1);
    };
    let fleet = &loaded.fleet;
    let store = Arc::new(open_store(global, &fleet.fleet.name)?);
    if let Some(controller) = super::handoff::live_controller(&store)? {
        return super::handoff::apply(&store, &controller, &loaded, output);
    }
    let who = holder("apply");
    let lease = match LeaseGuard::acquire(
        store.clone(),
        &who,
        LeaseKind::Apply,
        None,
        lock_timeout,
        None,
    ) {
        Ok(l) => l,
        Err(e @ StoreError::Locked { .. }) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let started = Instant::now();
    let json = matches!(output, Output::Json | Output::Yaml);
    let rt = runtime()?;
    let result = rt.block_on(async {
        let runtimes = connect_all(fleet);
        let mut cx = PassContext {
            fleet,
            runtimes: &runtimes,
            store: &store,
            lost: BTreeSet::new(),
            evict: BTreeSet::new(),
            measure_memory: false,
            exec: ExecOptions {
                actor: who.clone(),
                ready_timeout: timeout,
                fence: Some(lease.fence()),
                ..Default::default()
            },
        };
        let print = |p: &crate::execute::Progress| {
            if !json
                && !super::common::quiet()
                && let Some(line) = progress_line(p)
            {
                let _ = emit(&format!("{line}\n"));
            }
        };
        let mut reports = Vec::new();
        for i in 0..MAX_PASSES {
            // Each pass waits for readiness at most what is left of `--timeout`.
            cx.exec.ready_timeout = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_secs(1));
            let report = pass(&cx, &|p| print(&p)).await?;
            if i == 0 {
                store.record_applied(
                    lease.token(),
                    &who,
                    &loaded.sources_hash(),
                    &loaded.sources,
                    now_ms(),
                )?;
            }
            let done = report.plan.steps.is_empty();
            let progress = report.exec.outcomes.iter().any(|o| o.ok);
            // The same steps as the pass before (a container that exits as soon as it starts):
            // repeating them is a restart loop, not progress. The report says how it ended.
            let repeats = reports
                .last()
                .is_some_and(|prev: &crate::reconcile::PassReport| {
                    signature(&prev.plan) == signature(&report.plan)
                });
            reports.push(report);
            if done || !progress || repeats {
                break;
            }
        }
        // Converged: nothing left to do, everything placed and reachable, and every container
        // running (healthy where it has a healthcheck) — waiting out health start periods.
        // One budget for the whole apply (`--timeout`), not one per pass.
        let deadline = started + timeout;
        // A pass that changed nothing saw the final state already: judge it without observing
        // the fleet a second time (this is what keeps a no-op apply cheap).
        let mut last_seen = reports
            .last()
            .filter(|r| r.plan.steps.is_empty())
            .map(|r| (r.observed.clone(), r.plan.clone()));
        let (converged, problems) = loop {
            let (observed, plan) = match last_seen.take() {
                Some(seen) => seen,
                None => plan_only(&cx).await?,
            };
            let mut problems: Vec<String> = Vec::new();
            if plan.has_changes() {
                problems.push(format!("still to do: {}", summary_line(&summary(&plan))));
            }
            if let Some(last) = reports.last() {
                problems.extend(failures(&last.exec));
            }
            let judged = convergence(&observed, &plan, &problems);
            let waiting = judged.waiting;
            problems.splice(0..0, judged.placement);
            problems.extend(judged.containers);
            let plan_clean = !plan.has_changes() && plan.is_complete();
            if problems.is_empty() {
                break (true, problems);
            }
            if !(plan_clean && waiting) || Instant::now() >= deadline {
                break (false, problems);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Ok::<_, anyhow::Error>((reports, converged, problems))
    });
    let release = lease.release();
    let (reports, converged, problems) = result?;
    release?;
    let elapsed = started.elapsed();
    if json {
        print_data(
            output,
            &ApplyJson {
                converged,
                elapsed_ms: elapsed.as_millis() as u64,
                passes: reports
                    .iter()
                    .map(|r| PassJson {
                        plan: plan_view(&r.plan),
                        outcomes: &r.exec,
                    })
                    .collect(),
                problems: problems.clone(),
            },
        )?;
    } else {
        let first = &reports[0].plan;
        let mut text = String::new();
        if first.steps.is_empty() {
            text.push_str(&format!(
                "No changes: {} containers as desired.\n",
                first.unchanged.len()
            ));
        }
        let done: usize = reports
            .iter()
            .map(|r| r.exec.outcomes.iter().filter(|o| o.ok).count())
            .sum();
        if converged {
            text.push_str(&format!(
                "Converged in {:.1}s: {done} change{} made.\n",
                elapsed.as_secs_f64(),
                if done == 1 { "" } else { "s" }
            ));
        } else {
            text.push_str(&format!(
                "NOT converged after {:.1}s ({done} changes made):\n",
                elapsed.as_secs_f64()
            ));
            // Failed steps were printed with their cause as they failed (the ✗ lines): the
            // summary counts them instead of printing each cause a second time.
            let shown: BTreeSet<String> = if super::common::quiet() {
                BTreeSet::new()
            } else {
                reports.iter().flat_map(|r| failures(&r.exec)).collect()
            };
            for p in problems.iter().filter(|p| !shown.contains(*p)) {
                text.push_str(&format!("  - {p}\n"));
            }
            let failed: usize = reports
                .iter()
                .map(|r| {
                    r.exec
                        .outcomes
                        .iter()
                        .filter(|o| !o.ok && !o.skipped)
                        .count()
                })
                .sum();
            if failed > 0 && !shown.is_empty() {
                text.push_str(&format!(
                    "  - {failed} step{} failed (the lines marked ✗ above say why)\n",
                    if failed == 1 { "" } else { "s" }
                ));
            }
        }
        emit(&text)?;
    }
    Ok(if converged { 0 } else { 1 })
}

/// What a plan would do, as (node, container, verb): equal signatures mean the same work again.
fn signature(plan: &crate::plan::Plan) -> Vec<(&str, &str, &'static str)> {
    plan.steps
        .iter()
        .map(|s| {
            (
                s.node.as_str(),
                s.container.as_str(),
                s.action.verb(&s.node),
            )
        })
        .collect()
}

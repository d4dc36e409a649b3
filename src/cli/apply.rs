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
use crate::reconcile::{PassContext, convergence, pass, plan_only};
use crate::store::{LeaseInfo, Store, StoreError, now_ms};

/// How long a lease lives without renewal: a holder killed on another machine blocks others this
/// long at most (one killed on this machine is noticed at once, see [`holder_is_dead`]).
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a running holder renews its lease (a third of the TTL: two renewals may fail).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// Most reconcile passes one apply makes: the first does the work; later ones finish what a
/// conflict or a slow engine left, and stop as soon as nothing is left to do.
pub const MAX_PASSES: usize = 4;

/// Whether a lease holder (`VERB by USER@HOST (pid N)`, see [`super::common::holder`]) is a
/// fleetctl process of this machine that no longer runs — killed, so its lease can be taken at
/// once instead of waiting for it to expire.
pub fn holder_is_dead(holder: &str) -> bool {
    let ours = super::common::holder("x");
    let host_of = |h: &str| {
        h.split_once('@')
            .map(|(_, rest)| rest.split(' ').next().unwrap_or("").to_string())
    };
    let Some(pid) = holder
        .rsplit_once("(pid ")
        .and_then(|(_, p)| p.trim_end_matches(')').parse::<u32>().ok())
    else {
        return false;
    };
    if host_of(holder) != host_of(&ours) || pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim() != "fleetctl",
        Err(_) => true,
    }
}

/// Takes the fleet lease, waiting up to `timeout` for another holder to let go. A holder that
/// was a fleetctl process of this machine and is gone (killed) loses its lease at once.
///
/// # Errors
/// `fleet is locked by HOLDER since TIME` when the wait runs out.
pub fn acquire_lease(
    store: &Store,
    who: &str,
    kind: &str,
    api: Option<&str>,
    timeout: Duration,
) -> Result<LeaseInfo, StoreError> {
    let deadline = Instant::now() + timeout;
    loop {
        match store.try_acquire_lease(who, kind, api, LEASE_TTL, now_ms()) {
            Err(StoreError::Locked { lease, .. }) if holder_is_dead(&lease.holder) => {
                tracing::warn!(holder = %lease.holder, "the lease holder is gone; taking the lease over");
                store.break_lease(lease.token)?;
            }
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            other => return other,
        }
    }
}

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
    let lease = match acquire_lease(&store, &who, "apply", None, lock_timeout) {
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
        // Keep the lease alive while we work.
        let renewer = {
            let store = store.clone();
            let token = lease.token;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_RENEW).await;
                    if let Err(e) = store.renew_lease(token, LEASE_TTL, now_ms()) {
                        tracing::warn!(error = %e, "could not renew the fleet lease");
                    }
                }
            })
        };
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
                    lease.token,
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
        renewer.abort();
        Ok::<_, anyhow::Error>((reports, converged, problems))
    });
    let release = store.release_lease(lease.token);
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
            for p in &problems {
                text.push_str(&format!("  - {p}\n"));
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

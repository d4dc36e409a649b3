//! The one converge loop: reconcile passes until nothing is left to do (or no progress is
//! made, or the same steps come back), then wait — within the apply's `--timeout` — until every
//! container runs and is healthy. `fleetctl apply` and an apply handed to a running controller
//! both run exactly this; only how a pass is run differs ([`Passes`]).

use std::time::Duration;

use tokio::time::Instant;

use crate::observe::ObservedFleet;
use crate::plan::Plan;
use crate::reconcile::{PassReport, convergence};
use crate::store::StoreError;
use crate::view::{ApplyView, PassView, summary, summary_line};

/// Most reconcile passes one apply makes: the first does the work; later ones finish what a
/// conflict or a slow engine left, and stop as soon as nothing is left to do.
pub const MAX_PASSES: usize = 4;
/// How often readiness is looked at again while containers start or turn healthy.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// How the passes of one apply are run: by the CLI itself, or by the controller under its work
/// lock. Implemented only in this crate, by concrete types whose futures' `Send`-ness the
/// compiler sees, hence `async fn`.
#[allow(async_fn_in_trait)]
pub trait Passes {
    /// Waits until passes may run (the controller's work lock, held by its own reconcile or a
    /// drain). The apply's `--timeout` counts from when this returns: it is a budget for
    /// containers to run, not for waiting in line.
    async fn wait_turn(&mut self) {}
    /// One reconcile pass; each step waits for readiness at most `ready_timeout`.
    async fn pass(&mut self, ready_timeout: Duration) -> Result<PassReport, StoreError>;
    /// A fresh observation and the plan made from it, changing nothing.
    async fn look(&mut self) -> Result<(ObservedFleet, Plan), StoreError>;
}

/// How one apply ended.
#[derive(Debug)]
pub struct Converged {
    /// Every pass made.
    pub reports: Vec<PassReport>,
    /// Everything placed, running, and healthy where it has a healthcheck.
    pub converged: bool,
    /// What keeps the fleet from being converged, one line each.
    pub problems: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Converged {
    /// Steps that succeeded, over every pass.
    pub fn changes(&self) -> usize {
        self.reports
            .iter()
            .map(|r| {
                r.exec.outcomes.iter().filter(|o| o.ok).count()
                    + r.exec.network.iter().filter(|o| o.ok).count()
            })
            .sum()
    }

    /// The shared view (`apply -o json`).
    pub fn view(&self) -> ApplyView {
        ApplyView {
            converged: self.converged,
            elapsed_ms: self.elapsed.as_millis() as u64,
            changes: self.changes(),
            passes: self
                .reports
                .iter()
                .map(|r| PassView {
                    summary: summary(&r.plan),
                    outcomes: r.exec.outcomes.clone(),
                    network: r.exec.network.clone(),
                })
                .collect(),
            problems: self.problems.clone(),
            adopted: self
                .reports
                .iter()
                .flat_map(|r| r.plan.adopted.iter().cloned())
                .collect(),
            warnings: self
                .reports
                .last()
                .map(|r| warnings(&r.plan))
                .unwrap_or_default(),
        }
    }
}

/// What a plan says and keeps nothing from converging: its warnings, and the network notices
/// that are not about settings that differ (a node on a bridge of its own).
pub fn warnings(plan: &Plan) -> Vec<String> {
    plan.warnings
        .iter()
        .cloned()
        .chain(
            plan.network
                .problems
                .iter()
                .filter(|p| matches!(p, crate::network::NetProblem::OwnBridge { .. }))
                .map(|p| format!("network: {p}")),
        )
        .collect()
}

/// What a plan would do, as (node, container or network step, verb): equal signatures mean the
/// same work again.
fn signature(plan: &Plan) -> Vec<(String, String, &'static str)> {
    plan.network
        .steps
        .iter()
        .map(|s| (s.node().to_string(), s.describe(), "network"))
        .chain(
            plan.steps
                .iter()
                .map(|s| (s.node.clone(), s.container.clone(), s.action.verb(&s.node))),
        )
        .collect()
}

/// Runs passes until nothing is left to do, a pass makes no progress, or a pass would repeat
/// the one before (a container that exits as soon as it starts: repeating it is a restart loop,
/// not progress); then judges convergence, waiting out starts and health checks until
/// `timeout` (one budget for the whole apply) has passed since [`Passes::wait_turn`] returned.
///
/// # Errors
/// Store failures of a pass or a look.
pub async fn converge(p: &mut impl Passes, timeout: Duration) -> Result<Converged, StoreError> {
    let queued = Instant::now();
    p.wait_turn().await;
    let started = Instant::now();
    let deadline = started + timeout;
    let mut reports: Vec<PassReport> = Vec::new();
    for _ in 0..MAX_PASSES {
        // Each pass waits for readiness at most what is left of the budget.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let report = p.pass(left).await?;
        let done = report.plan.steps.is_empty() && report.plan.network.steps.is_empty();
        // Network steps run before the container steps of the same pass, so they alone are
        // progress only in a pass without container steps: a container step that failed after
        // them would fail the same way again.
        let progress = report.exec.outcomes.iter().any(|o| o.ok)
            || (report.plan.steps.is_empty() && report.exec.network.iter().any(|o| o.ok));
        let repeats = reports
            .last()
            .is_some_and(|prev| signature(&prev.plan) == signature(&report.plan));
        reports.push(report);
        if done || !progress || repeats {
            break;
        }
    }
    // A pass that changed nothing saw the final state already: judge it without observing the
    // fleet a second time (this is what keeps a no-op apply cheap).
    let mut last_seen = reports
        .last()
        .filter(|r| r.plan.steps.is_empty() && r.plan.network.steps.is_empty())
        .map(|r| (r.observed.clone(), r.plan.clone()));
    let (converged, problems) = loop {
        let (observed, plan) = match last_seen.take() {
            Some(seen) => seen,
            None => p.look().await?,
        };
        let mut problems: Vec<String> = Vec::new();
        if plan.has_changes() {
            problems.push(format!("still to do: {}", summary_line(&summary(&plan))));
        }
        if let Some(last) = reports.last() {
            for e in &last.exec.network {
                if let Some(err) = &e.error
                    && !problems.contains(err)
                {
                    problems.push(err.clone());
                }
            }
            for e in last.exec.outcomes.iter().filter(|o| !o.ok && !o.skipped) {
                if let Some(e) = &e.error
                    && !problems.contains(e)
                {
                    problems.push(e.clone());
                }
            }
        }
        let judged = convergence(&observed, &plan, &problems);
        let waiting = judged.waiting;
        problems.splice(0..0, judged.placement);
        problems.extend(judged.containers);
        if problems.is_empty() {
            break (true, problems);
        }
        let clean = !plan.has_changes() && plan.is_complete();
        if !(clean && waiting) || Instant::now() >= deadline {
            break (false, problems);
        }
        tokio::time::sleep(SETTLE_POLL).await;
    };
    Ok(Converged {
        reports,
        converged,
        problems,
        elapsed: queued.elapsed(),
    })
}

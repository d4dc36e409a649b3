//! `fleetctl plan PATH`: what apply would do, per node. Exit 0 no changes, 2 changes, 1 error
//! (invalid manifests, an unreachable node, something that fits nowhere).

use std::path::Path;

use super::common::{connect_all, emit, load_or_report, open_store_readonly, print_data, runtime};
use super::render::{plan_text, plan_view};
use super::{GlobalOpts, Output};
use crate::images::Refresh;
use crate::reconcile::{PassContext, plan_only};

/// Runs `plan`.
///
/// # Errors
/// Store failures.
pub fn run(
    path: &Path,
    output: Output,
    refresh: Refresh,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let Some(loaded) = load_or_report(path) else {
        return Ok(1);
    };
    let fleet = &loaded.fleet;
    let store = open_store_readonly(global, &fleet.fleet.name)?;
    let with_secrets = super::common::with_secrets(fleet, &store)?;
    let fleet = &with_secrets;
    let rt = runtime()?;
    let plan = rt.block_on(async {
        let runtimes = connect_all(fleet);
        let cx = PassContext {
            refresh,
            ..PassContext::new(fleet, &runtimes, &store)
        };
        plan_only(&cx).await.map(|(_, p)| p)
    })?;
    match output {
        Output::Json | Output::Yaml => print_data(output, &plan_view(&plan))?,
        _ => emit(&plan_text(
            &plan,
            &fleet.nodes.keys().cloned().collect::<Vec<_>>(),
        ))?,
    }
    Ok(if !plan.is_complete() {
        1
    } else if plan.has_changes() {
        2
    } else {
        0
    })
}

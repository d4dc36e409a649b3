//! `fleetctl drain NODE [--timeout D] [--force]`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use super::common::{
    connect_all, emit, holder, open_store, print_data, resolve_manifests, runtime,
};
use super::handoff::Found;
use super::remote::Remote;
use super::render::progress_line;
use super::{GlobalOpts, Output};
use crate::drain::{DrainStatus, drain};
use crate::execute::ExecOptions;
use crate::lease::nodes::NodeSet;
use crate::lease::{LeaseError, LeaseGuard, LeaseKind, Request};
use crate::reconcile::PassContext;

/// How long drain waits for another actor's lease.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Runs `drain`; exit 0 when the node is drained, 1 otherwise (the report says what is left).
///
/// # Errors
/// Unknown node, store failures.
pub fn run(
    node: &str,
    timeout: Duration,
    force: bool,
    file: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(file, global)?;
    let fleet = &loaded.fleet;
    if !fleet.nodes.contains_key(node) {
        let known: Vec<&str> = fleet.nodes.keys().map(String::as_str).collect();
        bail!(
            "node {node:?} is not in the manifests (nodes: {})",
            known.join(", ")
        );
    }
    let store = std::sync::Arc::new(open_store(global, &fleet.fleet.name)?);
    // A controller given on the command line gets the drain through its API, found or not.
    if let Some(remote) = Remote::from_options(global.controller.as_deref())? {
        return drain_through(&remote, node, timeout, force, output);
    }
    let rt = runtime()?;
    let runtimes = connect_all(fleet);
    let nodes = NodeSet::shared(&fleet.fleet.name, runtimes.clone(), rt.handle().clone());
    match super::handoff::find_controller(&store, &nodes)? {
        Some(Found::Here(c)) => {
            let quiet = matches!(output, Output::Json | Output::Yaml);
            return match super::handoff::drain(&store, &c, node, timeout, force, quiet)? {
                Some(report) => render(node, &report, output),
                None => Ok(1),
            };
        }
        Some(Found::Elsewhere(c)) => {
            return Ok(super::handoff::refuse(&fleet.fleet.name, "drain", &c));
        }
        None => {}
    }
    let with_secrets = super::common::with_secrets(fleet, &store)?;
    let fleet = &with_secrets;
    let who = holder("drain");
    // Held, and renewed, until the drain ends: a drain can outlast the lease's TTL many times.
    let req = Request {
        fleet: &fleet.fleet.name,
        holder: &who,
        kind: LeaseKind::Drain,
        api: None,
        wait: LOCK_WAIT,
    };
    let lease = match LeaseGuard::acquire(store.clone(), req, Some(nodes), None) {
        Ok(l) => l,
        Err(e @ (LeaseError::Locked { .. } | LeaseError::NoNode { .. })) => {
            return Ok(super::handoff::report_locked(&e));
        }
        Err(e) => return Err(e.into()),
    };
    let json = matches!(output, Output::Json | Output::Yaml);
    let result = rt.block_on(async {
        let cx = PassContext {
            evict: if force {
                BTreeSet::from([node.to_string()])
            } else {
                BTreeSet::new()
            },
            measure_memory: true,
            exec: ExecOptions {
                actor: who.clone(),
                fence: Some(lease.fence()),
                auth: crate::images::fleet_auth(fleet),
                memo: Some(crate::execute::ApplyMemo::new()),
                ..Default::default()
            },
            ..PassContext::new(fleet, &runtimes, &store)
        };
        if !json && !super::common::quiet() {
            let _ = emit(&format!(
                "node {node} cordoned; draining{}\n",
                if force { " (--force)" } else { "" }
            ));
        }
        drain(&cx, node, timeout, &|p| {
            if !json
                && !super::common::quiet()
                && let Some(line) = progress_line(&p)
            {
                let _ = emit(&format!("{line}\n"));
            }
        })
        .await
    });
    drop(lease);
    let report = result?;
    render(node, &report, output)
}

/// `drain` through a controller's API: the report, or the controller's refusal (exit 1). The
/// call waits for the drain's own timeout and a minute more.
fn drain_through(
    remote: &Remote,
    node: &str,
    timeout: Duration,
    force: bool,
    output: Output,
) -> anyhow::Result<u8> {
    if !super::common::quiet() {
        eprintln!("handing `drain` to the controller at {}", remote.url());
    }
    let path = format!(
        "/v1/nodes/{node}/drain?force={force}&timeout={}s",
        timeout.as_secs().max(1)
    );
    let limit = timeout + Duration::from_secs(60);
    let answer = remote.call_within(http::Method::POST, &path, None, limit)?;
    match serde_json::from_value::<crate::drain::DrainReport>(answer.body.clone()) {
        Ok(report) => render(node, &report, output),
        Err(_) => {
            eprintln!("error: {}", answer.error());
            Ok(1)
        }
    }
}

/// Prints the drain report; exit 0 when the node is drained, 1 otherwise.
fn render(node: &str, report: &crate::drain::DrainReport, output: Output) -> anyhow::Result<u8> {
    let json = matches!(output, Output::Json | Output::Yaml);
    if json {
        print_data(output, &report)?;
    } else {
        let mut text = String::new();
        for r in &report.left {
            text.push_str(&format!(
                "left on {node}: {} ({}): {} — {}\n",
                r.container, r.object, r.fate, r.why
            ));
        }
        for e in &report.errors {
            text.push_str(&format!("error: {e}\n"));
        }
        text.push_str(&match report.status {
            DrainStatus::Drained => format!(
                "node {node} drained in {:.1}s: {} moved{}. It takes no work until `fleetctl uncordon {node}`.\n",
                report.elapsed_ms as f64 / 1000.0,
                report.moved.len(),
                if report.left.is_empty() { String::new() } else { format!(", {} pinned left running (use --force to stop them)", report.left.len()) }
            ),
            DrainStatus::Stuck => format!(
                "node {node} NOT drained: {} moved; what is left has nowhere to go (nothing was stopped without a replacement). Make room and run drain again to continue.\n",
                report.moved.len()
            ),
            DrainStatus::Uncordoned => format!(
                "node {node} NOT drained: it was uncordoned while the drain ran ({} moved); it takes work again.\n",
                report.moved.len()
            ),
            DrainStatus::TimedOut => format!(
                "node {node} NOT drained: timed out after {:.0}s with {} moved; run drain again to continue.\n",
                report.elapsed_ms as f64 / 1000.0,
                report.moved.len()
            ),
        });
        emit(&text)?;
    }
    Ok(if report.status == DrainStatus::Drained {
        0
    } else {
        1
    })
}

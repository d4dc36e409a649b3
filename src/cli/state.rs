//! `fleetctl state rebuild [PATH]`: rebuild the state's records of the fleet from its nodes.
//!
//! Every node is observed; every plug container the state does not know (and did not delete)
//! is adopted — recorded with its class, owner, node, host port and state, its port lease and
//! an `adopted` event — exactly as a reconcile pass adopts ([`crate::reconcile::adopt`]). No
//! container is created, changed or removed, and no fleet lease is taken (adoption records only
//! plugs the state does not know, in one transaction, as `plug create` records its own).
//!
//! Exit 0 when every node was seen, 1 when one or more were unreachable (their containers could
//! not be seen, so the rebuild is incomplete: run it again when they answer).

use std::path::Path;

use serde::Serialize;

use super::capacity::{table, table_text};
use super::common::{
    connect_all, emit, holder, note_fresh_state, open_store_noting, print_data, resolve_manifests,
    runtime,
};
use super::{GlobalOpts, Output, StateAction};
use crate::execute::ExecOptions;
use crate::observe::NodeObservation;
use crate::reconcile::{PassContext, adopt, observe_for};
use crate::store::PlugRecord;

/// What the nodes cannot give back: it lived only in a state file.
pub const NOT_RECOVERABLE: [&str; 3] = [
    "the event log",
    "plugs' last activity (adopted plugs start their idle clock now)",
    "the applied-manifest history",
];

/// A plug as the rebuild reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuiltPlug {
    /// Plug id.
    pub id: String,
    /// Plug class.
    pub class: String,
    /// Owner.
    pub owner: String,
    /// Node it is recorded on.
    pub node: String,
    /// Host port.
    pub port: u16,
    /// Recorded state (running, stopped, …).
    pub state: String,
}

impl From<&PlugRecord> for RebuiltPlug {
    fn from(p: &PlugRecord) -> Self {
        RebuiltPlug {
            id: p.id.clone(),
            class: p.class.clone(),
            owner: p.owner.clone(),
            node: p.node.clone(),
            port: p.host_port,
            state: p.state.as_str().to_string(),
        }
    }
}

/// A plug container found on a node that could not be adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotAdopted {
    /// Plug id (from the container's labels).
    pub id: String,
    /// Why (e.g. its class is no longer in the manifests). The container is left alone.
    pub reason: String,
}

/// A node whose containers could not be seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreachableNode {
    /// Node name.
    pub node: String,
    /// Why, as the transport said.
    pub error: String,
}

/// What `state rebuild` did (`-o json` prints exactly this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuildReport {
    /// Fleet name.
    pub fleet: String,
    /// The state file rebuilt.
    pub state: String,
    /// Plugs found on the nodes and recorded by this rebuild.
    pub adopted: Vec<RebuiltPlug>,
    /// Plugs the state knew already (left as recorded).
    pub known: Vec<RebuiltPlug>,
    /// Plug containers found that could not be adopted, with why (left alone, not removed).
    pub not_adopted: Vec<NotAdopted>,
    /// Nodes that did not answer: their containers could not be seen or adopted.
    pub unreachable: Vec<UnreachableNode>,
    /// What the nodes cannot give back.
    pub not_recoverable: Vec<String>,
}

/// Runs a `state` action.
///
/// # Errors
/// Invalid manifests, no manifests given and none applied, store failures.
pub fn run(action: StateAction, global: &GlobalOpts) -> anyhow::Result<u8> {
    match action {
        StateAction::Rebuild { path, output } => rebuild(path.as_deref(), output, global),
    }
}

fn rebuild(path: Option<&Path>, output: Output, global: &GlobalOpts) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = &loaded.fleet;
    let opened = open_store_noting(global, &fleet.fleet.name)?;
    let fresh = opened.fresh();
    let store = opened.store;
    let known: Vec<RebuiltPlug> = store.plugs()?.iter().map(RebuiltPlug::from).collect();
    let rt = runtime()?;
    let (observed, adoption) = rt.block_on(async {
        let runtimes = connect_all(fleet);
        let cx = PassContext {
            exec: ExecOptions {
                actor: holder("state rebuild"),
                ..Default::default()
            },
            ..PassContext::new(fleet, &runtimes, &store)
        };
        let observed = observe_for(&cx).await;
        let adoption = adopt(&cx, &observed);
        (observed, adoption)
    });
    let adoption = adoption?;
    let report = RebuildReport {
        fleet: fleet.fleet.name.clone(),
        state: opened.path.display().to_string(),
        adopted: adoption.adopted.iter().map(RebuiltPlug::from).collect(),
        known,
        not_adopted: adoption
            .skipped
            .into_iter()
            .map(|(id, reason)| NotAdopted { id, reason })
            .collect(),
        unreachable: observed
            .nodes
            .iter()
            .filter_map(|(node, o)| match o {
                NodeObservation::Unreachable { error, .. } => Some(UnreachableNode {
                    node: node.clone(),
                    error: error.clone(),
                }),
                NodeObservation::Reachable { .. } => None,
            })
            .collect(),
        not_recoverable: NOT_RECOVERABLE.iter().map(|s| s.to_string()).collect(),
    };
    note_fresh_state(fresh.as_deref(), &report.fleet, report.adopted.len());
    match output {
        Output::Json | Output::Yaml => print_data(output, &report)?,
        _ => emit(&rebuild_text(&report, fleet.nodes.len()))?,
    }
    Ok(if report.unreachable.is_empty() { 0 } else { 1 })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The report in words: what was adopted (a table), what was known, what was left alone and
/// why, which nodes could not be seen, and what no node can give back.
pub fn rebuild_text(r: &RebuildReport, nodes: usize) -> String {
    let seen = nodes - r.unreachable.len();
    let mut text = format!(
        "State {} of fleet {} rebuilt from {} of {}.\n",
        r.state,
        r.fleet,
        plural(seen, "node", "nodes"),
        nodes
    );
    if r.adopted.is_empty() {
        text.push_str("Adopted no plug: the state knew every plug found on the nodes.\n");
    } else {
        text.push_str(&format!(
            "Adopted {} found on the nodes (recorded; no container changed):\n",
            plural(r.adopted.len(), "plug", "plugs")
        ));
        let mut t = table(&["ID", "CLASS", "OWNER", "NODE", "PORT", "STATE"]);
        for p in &r.adopted {
            t.add_row(vec![
                p.id.clone(),
                p.class.clone(),
                p.owner.clone(),
                p.node.clone(),
                p.port.to_string(),
                p.state.clone(),
            ]);
        }
        text.push_str(&table_text(&t));
    }
    if !r.known.is_empty() {
        text.push_str(&format!(
            "Already known: {} ({}).\n",
            plural(r.known.len(), "plug", "plugs"),
            r.known
                .iter()
                .map(|p| format!("{} on {}", p.id, p.node))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !r.not_adopted.is_empty() {
        text.push_str(&format!(
            "Not adopted ({}; left alone, not removed):\n",
            plural(r.not_adopted.len(), "plug container", "plug containers")
        ));
        for n in &r.not_adopted {
            text.push_str(&format!("  - plug {}: {}\n", n.id, n.reason));
        }
    }
    if !r.unreachable.is_empty() {
        text.push_str(&format!(
            "Unreachable ({}): their containers could not be seen, so plugs there are not adopted; run again when they answer:\n",
            plural(r.unreachable.len(), "node", "nodes")
        ));
        for u in &r.unreachable {
            text.push_str(&format!("  - {}: {}\n", u.node, u.error));
        }
    }
    text.push_str(&format!(
        "Not recoverable from the nodes: {}.\n",
        r.not_recoverable.join("; ")
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plug(id: &str, node: &str) -> RebuiltPlug {
        RebuiltPlug {
            id: id.into(),
            class: "agent".into(),
            owner: "ada".into(),
            node: node.into(),
            port: 51000,
            state: "running".into(),
        }
    }

    #[test]
    fn the_report_says_what_was_adopted_left_unseen_and_lost() {
        let r = RebuildReport {
            fleet: "aims".into(),
            state: "/s/aims.db".into(),
            adopted: vec![plug("p-1", "node1")],
            known: vec![plug("p-0", "node2")],
            not_adopted: vec![NotAdopted {
                id: "p-9".into(),
                reason: "plug class \"old\" is not in the manifests".into(),
            }],
            unreachable: vec![UnreachableNode {
                node: "node3".into(),
                error: "connection refused".into(),
            }],
            not_recoverable: NOT_RECOVERABLE.iter().map(|s| s.to_string()).collect(),
        };
        let text = rebuild_text(&r, 3);
        for want in [
            "State /s/aims.db of fleet aims rebuilt from 2 nodes of 3.",
            "Adopted 1 plug found on the nodes",
            "p-1  agent  ada    node1  51000  running",
            "Already known: 1 plug (p-0 on node2).",
            "  - plug p-9: plug class \"old\" is not in the manifests",
            "Unreachable (1 node)",
            "  - node3: connection refused",
            "the event log; plugs' last activity (adopted plugs start their idle clock now); the applied-manifest history.",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}

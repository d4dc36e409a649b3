//! `fleetctl describe network`: the fleet's network as every node has it — driver, subnet,
//! swarm membership, the fleet's containers attached there with their addresses — and what the
//! next apply would do about it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use super::common::{emit, print_json, print_yaml, resolve_manifests, runtime};
use super::{GlobalOpts, Output};
use crate::container::NetworkRecord;
use crate::network::{NetStep, NetworkPlan};
use crate::observe::{ObserveOptions, observe};
use crate::transport::{self, Endpoint, NodeRuntime};

/// The fleet's network on one node.
#[derive(Debug, Serialize)]
pub struct NetworkOnNode {
    /// Node.
    pub node: String,
    /// Why it could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The network as the node has it (`None`: not there).
    pub network: Option<NetworkRecord>,
    /// Swarm membership (overlay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swarm: Option<crate::container::SwarmInfo>,
}

/// `describe network` as data.
#[derive(Debug, Serialize)]
pub struct NetworkView {
    /// Network name.
    pub name: String,
    /// `bridge` or `overlay`.
    pub driver: String,
    /// Per node.
    pub nodes: Vec<NetworkOnNode>,
    /// What the next apply would do, and what it reports.
    pub plan: NetworkPlan,
}

/// `fleetctl describe network [NAME]`: NAME must be the fleet's network (or `fleet`).
///
/// # Errors
/// Invalid manifests; a name that is not the fleet's network.
pub fn describe(
    name: &str,
    path: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = &loaded.fleet;
    let net = fleet.network_name();
    if name != net && name != "fleet" && name != fleet.fleet.name {
        bail!("no network {name:?}: the fleet's network is {net:?}");
    }
    let mut runtimes: Vec<std::sync::Arc<dyn NodeRuntime>> = Vec::new();
    let mut setup = BTreeMap::new();
    for spec in fleet.nodes.values() {
        match transport::connect(&Endpoint::from_node(spec)) {
            Ok(rt) => runtimes.push(rt),
            Err(e) => {
                setup.insert(spec.name.clone(), e.to_string());
            }
        }
    }
    let by_name: crate::execute::Runtimes = runtimes
        .iter()
        .map(|r| (r.node().to_string(), r.clone()))
        .collect();
    let (observed, mut inspected) = runtime()?.block_on(async {
        let mut o = observe(
            &fleet.fleet.name,
            &runtimes,
            &ObserveOptions::everything(fleet),
        )
        .await;
        crate::network::exec::observe_members(fleet, &by_name, &mut o).await;
        let mut inspected = BTreeMap::new();
        for rt in &runtimes {
            // A node whose engine cannot join the swarm has a bridge of its own.
            let engine = crate::network::engine_of(fleet, &o, rt.node());
            let name = fleet.network_name_on(engine);
            inspected.insert(rt.node().to_string(), rt.inspect_network(&name).await);
        }
        (o, inspected)
    });
    let plan = crate::network::plan(fleet, &observed, &Default::default());
    let swarmless = crate::network::swarmless_nodes(fleet, &observed);
    let nodes = fleet
        .nodes
        .keys()
        .map(|n| {
            let (network, error) = match (setup.get(n), inspected.remove(n)) {
                (Some(e), _) => (None, Some(e.clone())),
                (None, Some(Ok(rec))) => (rec, None),
                (None, Some(Err(e))) => (None, Some(e.to_string())),
                (None, None) => (None, Some("not observed".into())),
            };
            NetworkOnNode {
                node: n.clone(),
                error,
                network,
                swarm: observed
                    .swarm
                    .nodes
                    .get(n)
                    .filter(|_| !swarmless.contains(n))
                    .cloned(),
            }
        })
        .collect();
    let view = NetworkView {
        name: net,
        driver: fleet.network_driver().as_str().to_string(),
        nodes,
        plan,
    };
    match output {
        Output::Json => print_json(&view)?,
        Output::Yaml => print_yaml(&view)?,
        Output::Table | Output::Wide => emit(&text(&view))?,
    }
    Ok(0)
}

fn text(v: &NetworkView) -> String {
    let mut out = format!("Network:  {} ({})\n", v.name, v.driver);
    for n in &v.nodes {
        out.push_str(&format!("{}:\n", n.node));
        if let Some(e) = &n.error {
            out.push_str(&format!("  unreachable: {e}\n"));
            continue;
        }
        if let Some(s) = &n.swarm
            && v.driver == "overlay"
        {
            out.push_str(&format!(
                "  swarm:   {}{}{}\n",
                s.state.as_str(),
                if s.state == crate::container::SwarmState::Active {
                    if s.manager { " (manager)" } else { " (worker)" }
                } else {
                    ""
                },
                s.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        }
        match &n.network {
            None => out.push_str("  network: not on this node\n"),
            Some(r) => {
                out.push_str(&format!(
                    "  network: {} {} subnet {}{}\n",
                    r.driver,
                    r.scope,
                    r.subnet.as_deref().unwrap_or("-"),
                    if r.options.contains_key("encrypted") {
                        ", encrypted"
                    } else {
                        ""
                    }
                ));
                if r.containers.is_empty() {
                    out.push_str("  attached: none\n");
                }
                for (c, ip) in &r.containers {
                    out.push_str(&format!("  attached: {c} {ip}\n"));
                }
            }
        }
    }
    for s in &v.plan.steps {
        out.push_str(&format!("next apply: {}\n", NetStep::describe(s)));
    }
    for p in &v.plan.problems {
        let word = match p {
            crate::network::NetProblem::OwnBridge { .. } => "note",
            _ => "problem",
        };
        out.push_str(&format!("{word}: {p}\n"));
    }
    out
}

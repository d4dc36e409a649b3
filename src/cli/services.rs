//! `fleetctl get services`, `describe service NAME`, `describe plug ID`.

use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use super::capacity::table;
use super::common::{
    connect_all, emit, open_store_readonly, print_json, print_yaml, resolve_manifests, runtime,
};
use super::{GlobalOpts, Output};
use crate::container::{Health, RunState, labels};
use crate::desired::plug_container_name;
use crate::observe::{ObserveOptions, ObservedFleet, observe};
use crate::store::format_ms;

/// One replica as observed.
#[derive(Debug, Serialize)]
pub struct ReplicaView {
    /// Replica index.
    pub replica: String,
    /// Node.
    pub node: String,
    /// Container name.
    pub container: String,
    /// Run state.
    pub state: RunState,
    /// Health, when it has a healthcheck.
    pub health: Option<Health>,
    /// Image.
    pub image: String,
}

/// A service with its replicas.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Desired replicas.
    pub desired: u32,
    /// Replicas running (and healthy where checked).
    pub ready: u32,
    /// Memory limit per replica.
    pub memory: String,
    /// Published ports.
    pub ports: Vec<String>,
    /// Replicas as observed.
    pub replicas: Vec<ReplicaView>,
}

async fn observe_fleet(fleet: &crate::manifest::DesiredFleet) -> ObservedFleet {
    let runtimes = connect_all(fleet);
    let rts: Vec<_> = runtimes.values().cloned().collect();
    observe(&fleet.fleet.name, &rts, &ObserveOptions::default()).await
}

fn services(fleet: &crate::manifest::DesiredFleet, observed: &ObservedFleet) -> Vec<ServiceView> {
    fleet
        .services
        .values()
        .map(|s| {
            let mut replicas: Vec<ReplicaView> = observed
                .nodes
                .keys()
                .flat_map(|node| {
                    observed
                        .containers(node)
                        .iter()
                        .filter(|o| o.record.label(labels::SERVICE) == Some(s.name.as_str()))
                        .map(move |o| ReplicaView {
                            replica: o.record.label(labels::REPLICA).unwrap_or("?").to_string(),
                            node: node.clone(),
                            container: o.record.name.clone(),
                            state: o.record.state,
                            health: o.record.health,
                            image: o.record.image.clone(),
                        })
                })
                .collect();
            replicas
                .sort_by_key(|r| (r.replica.parse::<u32>().unwrap_or(u32::MAX), r.node.clone()));
            let ready = replicas
                .iter()
                .filter(|r| {
                    r.state == RunState::Running && r.health.is_none_or(|h| h == Health::Healthy)
                })
                .count() as u32;
            ServiceView {
                name: s.name.clone(),
                image: s.image.clone(),
                desired: s.replicas,
                ready,
                memory: s.resources.memory.to_string(),
                ports: s
                    .ports
                    .iter()
                    .map(crate::manifest::validate::display_port)
                    .collect(),
                replicas,
            }
        })
        .collect()
}

/// `get services`.
///
/// # Errors
/// Invalid manifests or none applied.
pub fn get(path: Option<&Path>, output: Output, global: &GlobalOpts) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let observed = runtime()?.block_on(observe_fleet(&loaded.fleet));
    let views = services(&loaded.fleet, &observed);
    match output {
        Output::Json => print_json(&views)?,
        Output::Yaml => print_yaml(&views)?,
        _ => {
            let wide = output == Output::Wide;
            let mut header = vec!["NAME", "READY", "NODES", "MEMORY", "IMAGE"];
            if wide {
                header.push("PORTS");
            }
            let mut t = table(&header);
            for v in &views {
                let nodes: Vec<&str> = v
                    .replicas
                    .iter()
                    .map(|r| r.node.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut row = vec![
                    v.name.clone(),
                    format!("{}/{}", v.ready, v.desired),
                    nodes.join(","),
                    v.memory.clone(),
                    v.image.clone(),
                ];
                if wide {
                    row.push(v.ports.join(","));
                }
                t.add_row(row);
            }
            let mut text = super::capacity::table_text(&t);
            for (node, obs) in &observed.nodes {
                if let crate::observe::NodeObservation::Unreachable { error, .. } = obs {
                    text.push_str(&format!(
                        "node {node} UNREACHABLE (its replicas are not shown): {error}\n"
                    ));
                }
            }
            emit(&text)?;
        }
    }
    Ok(0)
}

/// `describe service NAME`.
///
/// # Errors
/// Unknown service, invalid manifests.
pub fn describe_service(
    name: &str,
    path: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let Some(spec) = loaded.fleet.services.get(name) else {
        bail!("service {name:?} is not in the manifests");
    };
    let observed = runtime()?.block_on(observe_fleet(&loaded.fleet));
    let view = services(&loaded.fleet, &observed)
        .into_iter()
        .find(|v| v.name == name)
        .expect("service listed");
    match output {
        Output::Json => print_json(&view)?,
        Output::Yaml => print_yaml(&view)?,
        _ => {
            let r = &spec.resources;
            let mut text = format!(
                "Service:     {name}\nImage:       {}\nReplicas:    {}/{} ready\nPlacement:   {}\nResources:   memory {}{}{}{}{}\nRestart:     {}\nUpdate:      {}\nPorts:       {}\n\nReplicas:\n",
                spec.image,
                view.ready,
                view.desired,
                placement_text(spec),
                r.memory,
                r.memory_reservation
                    .map(|m| format!(", reservation {m}"))
                    .unwrap_or_default(),
                r.cpus.map(|c| format!(", cpus {c}")).unwrap_or_default(),
                r.cpu_shares
                    .map(|c| format!(", cpuShares {c}"))
                    .unwrap_or_default(),
                r.cpuset
                    .as_ref()
                    .map(|c| format!(", cpuset {c}"))
                    .unwrap_or_default(),
                spec.restart.as_str(),
                spec.update_order.as_str(),
                if view.ports.is_empty() {
                    "none".into()
                } else {
                    view.ports.join(", ")
                },
            );
            let mut t = table(&["REPLICA", "NODE", "CONTAINER", "STATE", "HEALTH", "IMAGE"]);
            for rep in &view.replicas {
                t.add_row(vec![
                    rep.replica.clone(),
                    rep.node.clone(),
                    rep.container.clone(),
                    format!("{:?}", rep.state).to_lowercase(),
                    rep.health
                        .map_or("-".into(), |h| format!("{h:?}").to_lowercase()),
                    rep.image.clone(),
                ]);
            }
            text.push_str(&super::capacity::table_text(&t));
            emit(&text)?;
        }
    }
    Ok(0)
}

fn placement_text(s: &crate::manifest::ServiceSpec) -> String {
    let p = &s.placement;
    let mut parts = Vec::new();
    if let Some(n) = &p.nodes {
        parts.push(format!(
            "nodes {}",
            n.iter().cloned().collect::<Vec<_>>().join(",")
        ));
    }
    if !p.node_selector.is_empty() {
        parts.push(format!(
            "nodeSelector {}",
            p.node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(m) = p.max_per_node {
        parts.push(format!("maxPerNode {m}"));
    }
    if parts.is_empty() {
        "any node".into()
    } else {
        parts.join("; ")
    }
}

/// A plug with its container as observed.
#[derive(Debug, Serialize)]
struct PlugView {
    #[serde(flatten)]
    record: crate::store::PlugRecord,
    container: String,
    address: String,
    container_state: Option<RunState>,
    health: Option<Health>,
}

/// `describe plug ID`.
///
/// # Errors
/// Unknown plug.
pub fn describe_plug(
    id: &str,
    path: Option<&Path>,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = &loaded.fleet;
    let store = open_store_readonly(global, &fleet.fleet.name)?;
    let record = store.plug(id)?;
    let observed = runtime()?.block_on(observe_fleet(fleet));
    let name = plug_container_name(&fleet.fleet.name, id);
    let seen = observed
        .containers(&record.node)
        .iter()
        .find(|o| o.record.name == name);
    let view = PlugView {
        container: name.clone(),
        address: format!(
            "{}:{}",
            crate::plugs::node_address(fleet, &record.node),
            record.host_port
        ),
        container_state: seen.map(|o| o.record.state),
        health: seen.and_then(|o| o.record.health),
        record,
    };
    match output {
        Output::Json => print_json(&view)?,
        Output::Yaml => print_yaml(&view)?,
        _ => {
            let r = &view.record;
            emit(&format!(
                "Plug:          {}\nClass:         {}\nOwner:         {}\nNode:          {}\nAddress:       {}\nState:         {}\nContainer:     {} ({})\nCreated:       {}\nLast activity: {}\n{}",
                r.id,
                r.class,
                r.owner,
                r.node,
                view.address,
                r.state.as_str(),
                view.container,
                match (view.container_state, view.health) {
                    (Some(s), Some(h)) => format!("{s:?}, {h:?}").to_lowercase(),
                    (Some(s), None) => format!("{s:?}").to_lowercase(),
                    (None, _) if observed.is_reachable(&r.node) =>
                        "missing: the next reconcile recreates it".into(),
                    (None, _) => format!("node {} unreachable", r.node),
                },
                format_ms(r.created_ms),
                format_ms(r.last_activity_ms),
                r.message
                    .as_ref()
                    .map(|m| format!("Message:       {m}\n"))
                    .unwrap_or_default(),
            ))?;
        }
    }
    Ok(0)
}

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
    /// Autoscale state, for a service that autoscales (SPEC §14).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleView>,
}

/// An autoscaled service's bounds, count, last scale and last measurement.
#[derive(Debug, Serialize)]
pub struct AutoscaleView {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// The count in force (the autoscaler's, else the starting count).
    pub replicas: u32,
    /// The last scale, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<crate::store::ScaleRecord>,
    /// What the controller measured last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<crate::load::MeasuredLoad>,
}

/// The manifests with the autoscaler's counts, the autoscale views, from the state store.
fn with_scale(
    loaded: &crate::manifest::Loaded,
    global: &GlobalOpts,
) -> anyhow::Result<(
    crate::manifest::DesiredFleet,
    std::collections::BTreeMap<String, AutoscaleView>,
)> {
    let mut fleet = loaded.fleet.clone();
    let mut views = std::collections::BTreeMap::new();
    if !fleet.services.values().any(|s| s.autoscale.is_some()) {
        return Ok((fleet, views));
    }
    let store = open_store_readonly(global, &fleet.fleet.name)?;
    let records = store.scale_records()?;
    crate::load::apply_scaled(&mut fleet, &records);
    let load = store.load_snapshot()?.unwrap_or_default();
    for (name, s) in &fleet.services {
        if let Some(a) = &s.autoscale {
            views.insert(
                name.clone(),
                AutoscaleView {
                    min: a.min,
                    max: a.max,
                    replicas: s.replicas,
                    last: records.get(name).cloned(),
                    load: load.services.get(name).cloned(),
                },
            );
        }
    }
    Ok((fleet, views))
}

async fn observe_fleet(fleet: &crate::manifest::DesiredFleet) -> ObservedFleet {
    let runtimes = connect_all(fleet);
    let rts: Vec<_> = runtimes.values().cloned().collect();
    observe(&fleet.fleet.name, &rts, &ObserveOptions::default()).await
}

fn services(
    fleet: &crate::manifest::DesiredFleet,
    observed: &ObservedFleet,
    autoscale: &mut std::collections::BTreeMap<String, AutoscaleView>,
) -> Vec<ServiceView> {
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
                autoscale: autoscale.remove(&s.name),
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
    let (fleet, mut autoscale) = with_scale(&loaded, global)?;
    let observed = runtime()?.block_on(observe_fleet(&fleet));
    let views = services(&fleet, &observed, &mut autoscale);
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
    let (fleet, mut autoscale) = with_scale(&loaded, global)?;
    let observed = runtime()?.block_on(observe_fleet(&fleet));
    let view = services(&fleet, &observed, &mut autoscale)
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
            if let (Some(a), Some(spec_a)) = (&view.autoscale, &spec.autoscale) {
                text = text.replacen(
                    "\n\nReplicas:\n",
                    &format!("\n{}\nReplicas:\n", autoscale_text(a, spec_a)),
                    1,
                );
            }
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

/// The `Autoscale:` lines of `describe service`.
fn autoscale_text(a: &AutoscaleView, spec: &crate::manifest::spec::AutoscaleSpec) -> String {
    use crate::manifest::quantity::format_duration;
    let rule = |name: &str, r: &crate::manifest::spec::LoadRule| {
        let mut s = format!("{name} > {} for {}", r.above, format_duration(r.for_));
        if let Some(b) = r.below {
            s.push_str(&format!(", < {b} for {}", format_duration(r.below_for)));
        }
        s
    };
    let rules: Vec<String> = [("cpu", &spec.cpu), ("memory", &spec.memory)]
        .into_iter()
        .filter_map(|(n, r)| r.as_ref().map(|r| rule(n, r)))
        .collect();
    let mut out = format!(
        "Autoscale:   {}–{} replicas, now {}; {}; cooldown {}\n",
        a.min,
        a.max,
        a.replicas,
        rules.join("; "),
        format_duration(spec.cooldown)
    );
    match &a.last {
        Some(l) => out.push_str(&format!(
            "Last scale:  {} to {} ({})\n",
            format_ms(l.at_ms),
            l.replicas,
            l.why
        )),
        None => out.push_str("Last scale:  none (the starting count)\n"),
    }
    match &a.load {
        Some(l) => out.push_str(&format!("Load:        {}\n", l.text())),
        None => out.push_str("Load:        not measured (no controller has run with autoscale)\n"),
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::quantity::Percent;
    use crate::manifest::spec::{AutoscaleSpec, LoadRule};
    use std::time::Duration;

    #[test]
    fn describe_says_the_bounds_the_count_the_last_scale_and_the_load() {
        let spec = AutoscaleSpec {
            min: 1,
            max: 3,
            cpu: Some(LoadRule {
                above: Percent(5000),
                for_: Duration::from_secs(10),
                below: Some(Percent(1000)),
                below_for: Duration::from_secs(20),
            }),
            memory: None,
            cooldown: Duration::from_secs(5),
        };
        let mut view = AutoscaleView {
            min: 1,
            max: 3,
            replicas: 2,
            last: Some(crate::store::ScaleRecord {
                replicas: 2,
                at_ms: 0,
                why: "cpu 92% > 50% for 10s".into(),
            }),
            load: Some(crate::load::MeasuredLoad {
                cpu: 91.4,
                cpu_mean: 88.0,
                memory: Some(12.0),
                memory_mean: Some(11.6),
                window_s: 20,
            }),
        };
        let text = autoscale_text(&view, &spec);
        assert!(
            text.starts_with(
                "Autoscale:   1–3 replicas, now 2; cpu > 50% for 10s, < 10% for 20s; cooldown 5s\n"
            ),
            "{text}"
        );
        assert!(text.contains("to 2 (cpu 92% > 50% for 10s)\n"), "{text}");
        assert!(
            text.ends_with("Load:        cpu 91% (20s: 88%), memory 12% (20s: 12%)\n"),
            "{text}"
        );
        view.last = None;
        view.load = None;
        let text = autoscale_text(&view, &spec);
        assert!(
            text.contains("Last scale:  none (the starting count)\n"),
            "{text}"
        );
        assert!(text.contains("Load:        not measured"), "{text}");
    }
}

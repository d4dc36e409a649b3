//! Service documents, each on its own: replicas and placement (can they fit the nodes it
//! allows?), resources, ports, restart policy, update order, volumes, healthcheck, command and
//! environment. Checks across services are in `clashes`.

use std::collections::BTreeMap;

use super::fields::{
    check_image, resolve_command, resolve_env, resolve_healthcheck, resolve_pull, resolve_volumes,
};
use super::ports::resolve_ports;
use super::resources::{check_fits, resolve_resources};
use super::{Named, Report, check_node_refs, labels_of};
use crate::container::RestartPolicy;
use crate::manifest::quantity::Percent;
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// Resolves every Service document against the nodes.
pub(super) fn services(
    r: &mut Report,
    raw_services: &[Named<RawServiceSpec>],
    nodes: &BTreeMap<String, NodeSpec>,
    secrets: &BTreeMap<String, SecretSpec>,
) -> BTreeMap<String, ServiceSpec> {
    let mut services = BTreeMap::new();
    for svc in raw_services {
        let file = &svc.doc.file;
        let s = svc.spec;
        let resources = resolve_resources(r, file, "spec.resources", &s.resources, nodes);
        let autoscale =
            super::autoscale::resolve_autoscale(r, file, &s.autoscale, s.replicas.as_ref());
        let replicas = s
            .replicas
            .as_ref()
            .map(|r| r.value)
            .or(autoscale.as_ref().map(|a| a.min))
            .unwrap_or(1);
        let placement = match &s.placement {
            None => Placement::default(),
            Some(p) => Placement {
                nodes: check_node_refs(r, file, "spec.placement.nodes", &p.nodes, nodes),
                node_selector: labels_of(&p.node_selector),
                max_per_node: p.max_per_node.as_ref().map(|m| m.value),
            },
        };
        if let Some(m) = s.placement.as_ref().and_then(|p| p.max_per_node.as_ref())
            && m.value == 0
        {
            r.err(
                file,
                m.pos,
                "spec.placement.maxPerNode",
                "maxPerNode must be at least 1",
            );
        }
        let ports = resolve_ports(r, file, &s.ports);
        let allowed: Vec<&NodeSpec> = nodes.values().filter(|n| placement.allows(n)).collect();
        let place_pos = s.placement.as_ref().map_or(s.pos, |p| p.pos);
        if allowed.is_empty() && !nodes.is_empty() && replicas > 0 {
            r.err(
                file,
                place_pos,
                "spec.placement",
                format!(
                    "no node is allowed by this placement ({})",
                    describe_placement(&placement)
                ),
            );
        } else if !allowed.is_empty() {
            let host_ports = !ports.is_empty();
            let per_node = effective_max_per_node(placement.max_per_node, host_ports);
            let room = per_node.map(|m| u64::from(m) * allowed.len() as u64);
            if let Some(room) = room
                && u64::from(replicas) > room
            {
                let why = if host_ports && placement.max_per_node.is_none_or(|m| m > 1) {
                    "at most 1 per node, since it publishes host ports".to_string()
                } else {
                    format!("maxPerNode {}", per_node.unwrap_or(0))
                };
                let pos = s.replicas.as_ref().map_or(s.pos, |r| r.pos);
                r.err(
                    file,
                    pos,
                    "spec.replicas",
                    format!(
                        "{replicas} replicas cannot fit: {} allowed node{} ({}) × {why}",
                        allowed.len(),
                        if allowed.len() == 1 { "" } else { "s" },
                        allowed
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            } else if let (Some(room), Some(a), Some(raw)) = (room, &autoscale, &s.autoscale)
                && u64::from(a.max) > room
            {
                let pos = raw.max.as_ref().map_or(raw.pos, |m| m.pos);
                r.warn(
                    file,
                    pos,
                    "spec.autoscale.max",
                    format!(
                        "at most {room} replicas can be placed ({} allowed node{} × {} per \
                         node); autoscale will stop there",
                        allowed.len(),
                        if allowed.len() == 1 { "" } else { "s" },
                        per_node.unwrap_or(0)
                    ),
                );
            }
        }
        if let (Some(res), Some(raw_res)) = (&resources, &s.resources) {
            check_fits(r, file, raw_res, res, &allowed, Percent::FULL, "replica");
        }
        let restart = match &s.restart {
            None => RestartPolicy::UnlessStopped,
            Some(v) => RestartPolicy::parse(&v.value).unwrap_or_else(|| {
                r.err(
                    file,
                    v.pos,
                    "spec.restart",
                    format!(
                        "unknown restart policy {:?}; use always, unless-stopped, on-failure or no",
                        v.value
                    ),
                );
                RestartPolicy::UnlessStopped
            }),
        };
        let update_order = match s.update.as_ref().and_then(|u| u.order.as_ref()) {
            None if !ports.is_empty() => UpdateOrder::StopFirst,
            None => UpdateOrder::StartFirst,
            Some(o) => match o.value.as_str() {
                "start-first" => UpdateOrder::StartFirst,
                "stop-first" => UpdateOrder::StopFirst,
                other => {
                    r.err(
                        file,
                        o.pos,
                        "spec.update.order",
                        format!("unknown update order {other:?}; use start-first or stop-first"),
                    );
                    UpdateOrder::StopFirst
                }
            },
        };
        let pull = resolve_pull(r, file, &s.pull);
        let volumes = resolve_volumes(r, file, &s.volumes);
        let healthcheck = resolve_healthcheck(r, file, &s.healthcheck);
        let command = resolve_command(r, file, &s.command);
        let env = resolve_env(r, file, &s.env);
        let files = super::files::resolve_files(r, file, &s.env, &s.secrets, &s.configs, secrets);
        let (network, aliases) = super::network::service_network(r, file, s);
        let knobs = super::knobs::resolve_knobs(
            r,
            file,
            &super::knobs::RawKnobs {
                logging: &s.logging,
                ulimits: &s.ulimits,
                sysctls: &s.sysctls,
                user: &s.user,
                working_dir: &s.working_dir,
                read_only: &s.read_only,
                cap_add: &s.cap_add,
                cap_drop: &s.cap_drop,
                stop_signal: &s.stop_signal,
                host_network: network == ServiceNetwork::Host,
            },
        );
        if let Some(image) = &s.image {
            check_image(r, file, image);
        }
        if let (Some(res), Some(image)) = (resources, &s.image) {
            services.insert(
                svc.name.clone(),
                ServiceSpec {
                    name: svc.name.clone(),
                    labels: labels_of(&svc.doc.metadata.labels),
                    image: image.value.clone(),
                    pull,
                    replicas,
                    placement,
                    resources: res,
                    command,
                    env,
                    ports,
                    volumes,
                    restart,
                    healthcheck,
                    update_order,
                    stop_grace_period: s.stop_grace_period.as_ref().map(|d| d.value.0),
                    network,
                    aliases,
                    files,
                    knobs,
                    autoscale,
                },
            );
        }
    }
    services
}

pub(super) fn describe_placement(p: &Placement) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &p.nodes {
        parts.push(format!(
            "nodes [{}]",
            n.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !p.node_selector.is_empty() {
        parts.push(format!(
            "nodeSelector {{{}}}",
            p.node_selector
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join(" and ")
}

/// The per-node cap that applies to a service: `maxPerNode`, and 1 when it publishes host ports
/// (two replicas on one node would clash on them).
pub fn effective_max_per_node(
    max_per_node: Option<u32>,
    publishes_host_ports: bool,
) -> Option<u32> {
    match (max_per_node, publishes_host_ports) {
        (Some(m), true) => Some(m.min(1)),
        (None, true) => Some(1),
        (m, false) => m,
    }
}

//! Checks across services: replicas their placements force onto one node (their host ports
//! must not clash there, their memory must fit it), and host ports shared by several services.

use std::collections::{BTreeMap, BTreeSet};

use super::ports::ports_clash;
use super::services::effective_max_per_node;
use super::{Named, Report};
use crate::container::PortMapping;
use crate::manifest::quantity::Bytes;
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// The replicas of `svc` that its placement forces onto each node: on a node N, at least
/// `replicas − (allowed nodes other than N) × per-node cap` must run. A service pinned to one
/// node has all its replicas forced there; one free to run on several nodes has none.
pub fn forced_replicas<'a>(
    svc: &ServiceSpec,
    nodes: &'a BTreeMap<String, NodeSpec>,
) -> Vec<(&'a str, u32)> {
    let allowed: Vec<&NodeSpec> = nodes.values().filter(|n| svc.placement.allows(n)).collect();
    if allowed.is_empty() {
        return Vec::new();
    }
    let per_node = effective_max_per_node(svc.placement.max_per_node, !svc.ports.is_empty());
    let others = allowed.len() as u64 - 1;
    let elsewhere = per_node.map_or(if others == 0 { 0 } else { u64::MAX }, |m| {
        others * u64::from(m)
    });
    // At most the per-node cap can be forced onto one node (a service asking for more is already
    // reported as unable to fit).
    let here = u64::from(svc.replicas)
        .saturating_sub(elsewhere)
        .min(per_node.map_or(u64::MAX, u64::from));
    if here == 0 {
        return Vec::new();
    }
    let here = u32::try_from(here).unwrap_or(u32::MAX);
    allowed
        .into_iter()
        .map(|n| (n.name.as_str(), here))
        .collect()
}

/// Services that publish the same host port: a node binds it once, so all their replicas
/// together need as many nodes among those their placements allow.
pub(super) fn check_shared_host_ports(
    r: &mut Report,
    raw: &[Named<RawServiceSpec>],
    services: &BTreeMap<String, ServiceSpec>,
    nodes: &BTreeMap<String, NodeSpec>,
) {
    // (port, protocol) → [(service, its mapping index)]
    let mut by_port: BTreeMap<(u16, &str), Vec<(&ServiceSpec, usize)>> = BTreeMap::new();
    for svc in services.values().filter(|s| s.replicas > 0) {
        for (i, p) in svc.ports.iter().enumerate() {
            by_port
                .entry((p.host_port, p.protocol.as_str()))
                .or_default()
                .push((svc, i));
        }
    }
    for ((port, proto), users) in by_port {
        let names: BTreeSet<&str> = users.iter().map(|(s, _)| s.name.as_str()).collect();
        // Only services whose mappings all clash (different bind addresses may share a port).
        let clash_all = users.iter().all(|(a, i)| {
            users
                .iter()
                .all(|(b, j)| ports_clash(&a.ports[*i], &b.ports[*j]))
        });
        if names.len() < 2 || !clash_all {
            continue;
        }
        let allowed: BTreeSet<&str> = nodes
            .values()
            .filter(|n| users.iter().any(|(s, _)| s.placement.allows(n)))
            .map(|n| n.name.as_str())
            .collect();
        let mut need = 0u64;
        let mut parts = Vec::new();
        for name in &names {
            let n = services[*name].replicas;
            need += u64::from(n);
            parts.push(format!("{name} ({n})"));
        }
        // A clash between services that must run on the same node is reported already.
        let reported = r.diags.iter().any(|d| {
            d.message
                .starts_with(&format!("host port {port}/{proto} clashes on node"))
        });
        if need <= allowed.len() as u64 || allowed.is_empty() || reported {
            continue;
        }
        // Reported at the last of them, where the port is written.
        let (last, i) = users
            .iter()
            .rev()
            .find(|(s, _)| s.name.as_str() == *names.last().expect("two or more"))
            .expect("listed");
        if let Some(rs) = raw.iter().find(|n| n.name == last.name) {
            let pos = rs
                .spec
                .ports
                .as_ref()
                .and_then(|v| v.get(*i))
                .map_or(rs.spec.pos, |p| p.pos);
            r.err(
                &rs.doc.file,
                pos,
                &format!("spec.ports[{i}]"),
                format!(
                    "host port {port}/{proto} is published by {} replicas of {}, but only {} node{} may run them and a node binds a port once",
                    need,
                    parts.join(", "),
                    allowed.len(),
                    if allowed.len() == 1 { "" } else { "s" }
                ),
            );
        }
    }
}

/// Per node, the services that must run at least one replica there (their placement leaves
/// no other choice), with the replica count forced onto it. Two checks follow: their host
/// ports must not clash, and their memory limits must fit the node.
pub(super) fn check_forced_services(
    r: &mut Report,
    raw: &[Named<RawServiceSpec>],
    services: &BTreeMap<String, ServiceSpec>,
    nodes: &BTreeMap<String, NodeSpec>,
) {
    // node → [(service, replicas forced here)]
    let mut forced: BTreeMap<&str, Vec<(&ServiceSpec, u32)>> = BTreeMap::new();
    for svc in services.values() {
        for (node, here) in forced_replicas(svc, nodes) {
            forced.entry(node).or_default().push((svc, here));
        }
    }
    let raw_of = |name: &str| raw.iter().find(|n| n.name == name);
    for (node, list) in &forced {
        // Port clashes between different services.
        let mut taken: Vec<(&PortMapping, &str)> = Vec::new();
        for (svc, _) in list {
            for (i, p) in svc.ports.iter().enumerate() {
                if let Some((_, other)) = taken
                    .iter()
                    .find(|(q, o)| *o != svc.name && ports_clash(q, p))
                    && let Some(rs) = raw_of(&svc.name)
                {
                    let pos = rs
                        .spec
                        .ports
                        .as_ref()
                        .and_then(|v| v.get(i))
                        .map_or(rs.spec.pos, |p| p.pos);
                    r.err(
                        &rs.doc.file,
                        pos,
                        &format!("spec.ports[{i}]"),
                        format!(
                            "host port {}/{} clashes on node {node} with service {other:?}; both must run there",
                            p.host_port,
                            p.protocol.as_str()
                        ),
                    );
                }
                taken.push((p, svc.name.as_str()));
            }
        }
        // Memory of what must run here.
        let Some(alloc) = nodes.get(*node).and_then(NodeSpec::allocatable_memory) else {
            continue;
        };
        let need: u64 = list
            .iter()
            .map(|(s, n)| s.resources.memory.0 * u64::from(*n))
            .sum();
        // A service that alone exceeds the node is reported by the per-replica check already.
        let one_too_big = list.iter().any(|(s, _)| s.resources.memory.0 > alloc.0);
        if need > alloc.0 && !one_too_big {
            // Reported at the largest contributor: the first place an operator would look.
            let (last, _) = list
                .iter()
                .max_by_key(|(svc, n)| {
                    (
                        svc.resources.memory.0 * u64::from(*n),
                        std::cmp::Reverse(svc.name.clone()),
                    )
                })
                .expect("non-empty");
            if let Some(rs) = raw_of(&last.name) {
                let pos = rs
                    .spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.memory.as_ref())
                    .map_or(rs.spec.pos, |m| m.pos);
                r.err(
                    &rs.doc.file,
                    pos,
                    "spec.resources.memory",
                    format!(
                        "services that must run on node {node} ({}) need {} of memory limits; it has {} allocatable",
                        list.iter().map(|(s, n)| if *n > 1 { format!("{}×{n}", s.name) } else { s.name.clone() }).collect::<Vec<_>>().join(", "),
                        Bytes(need),
                        alloc
                    ),
                );
            }
        }
    }
}

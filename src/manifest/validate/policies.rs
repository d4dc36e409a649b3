//! PlacementPolicy documents: plug caps, memory watermark, spread and tiers.

use std::collections::BTreeMap;

use super::{Named, Report, check_node_refs, labels_of};
use crate::manifest::quantity::Percent;
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// Resolves every PlacementPolicy document against the nodes.
pub(super) fn policies(
    r: &mut Report,
    raw_policies: &[Named<RawPolicySpec>],
    nodes: &BTreeMap<String, NodeSpec>,
) -> BTreeMap<String, PolicySpec> {
    let mut policies = BTreeMap::new();
    for p in raw_policies {
        let file = &p.doc.file;
        let s = p.spec;
        if let Some(m) = &s.max_plugs_per_node
            && m.value == 0
        {
            r.err(
                file,
                m.pos,
                "spec.maxPlugsPerNode",
                "maxPlugsPerNode must be at least 1 (remove the class's policy to allow none)",
            );
        }
        if let Some(w) = &s.memory_high_watermark
            && w.value.0 == 0
        {
            r.err(
                file,
                w.pos,
                "spec.memoryHighWatermark",
                "watermark must be above 0%",
            );
        }
        let spread = match &s.spread {
            None => Spread::Pack,
            Some(v) => match v.value.as_str() {
                "pack" => Spread::Pack,
                "spread" => Spread::Spread,
                other => {
                    r.err(
                        file,
                        v.pos,
                        "spec.spread",
                        format!("unknown spread {other:?}; use pack or spread"),
                    );
                    Spread::Pack
                }
            },
        };
        let mut tiers = Vec::new();
        for (i, t) in s.tiers.iter().flatten().enumerate() {
            let path = format!("spec.tiers[{i}]");
            let names = check_node_refs(r, file, &format!("{path}.nodes"), &t.nodes, nodes);
            let tier = Tier {
                nodes: names,
                node_selector: labels_of(&t.node_selector),
            };
            if t.nodes.is_none() && t.node_selector.is_none() {
                r.err(
                    file,
                    t.pos,
                    &path,
                    "a tier needs nodeSelector or nodes (omit tiers for one tier of every node)",
                );
            } else if !nodes.values().any(|n| tier.contains(n)) {
                r.warn(file, t.pos, &path, "no node belongs to this tier");
            }
            tiers.push(tier);
        }
        if let Some(t) = &s.tiers
            && t.is_empty()
        {
            r.err(
                file,
                s.pos,
                "spec.tiers",
                "tiers is empty; omit it for one tier of every node",
            );
        }
        if tiers.is_empty() {
            tiers.push(Tier::default());
        }
        policies.insert(
            p.name.clone(),
            PolicySpec {
                name: p.name.clone(),
                max_plugs_per_node: s.max_plugs_per_node.as_ref().map(|m| m.value),
                memory_high_watermark: s
                    .memory_high_watermark
                    .as_ref()
                    .map_or(Percent::FULL, |w| w.value),
                tiers,
                spread,
                evict_idle_on_pressure: s.evict_idle_on_pressure.as_ref().is_some_and(|e| e.value),
                cpu_high_watermark: super::autoscale::resolve_hot_rule(
                    r,
                    file,
                    &s.cpu_high_watermark,
                ),
            },
        );
    }
    policies
}

//! Property tests of the scheduler (pure): for random fleets, conditions and loads, no placement
//! violates a filter, no plug lands in a later tier while an earlier tier has a node that fits,
//! and placement is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use fleetctl::manifest::{DesiredFleet, PlugClassSpec, PolicySpec, Source, Spread, parse};
use fleetctl::schedule::{Availability, NodeView, assign_plug, place_plug, plug_fits};
use fleetctl::store::NodeCondition;
use proptest::prelude::*;

fn fleet(nodes: usize) -> DesiredFleet {
    let mut text = String::new();
    for i in 0..nodes {
        let tier = if i % 3 == 0 { "primary" } else { "secondary" };
        text.push_str(&format!(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: n{i:02}, labels: {{tier: {tier}}}}}\nspec: {{capacity: {{memory: {}MiB}}}}\n---\n",
            512 + 256 * (i % 5)
        ));
    }
    text.push_str(
        "apiVersion: fleet/v1\nkind: PlugClass\nmetadata: {name: agent}\nspec: {image: p, resources: {memory: 64MiB}, port: 80, hostPorts: 51000-51007}\n",
    );
    parse(&[Source {
        name: "p.yaml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"))
    .fleet
}

#[derive(Debug, Clone)]
struct NodeState {
    availability: u8, // 0 ready, 1 unreachable, 2 lost
    cordoned: bool,
    draining: bool,
    committed_mib: u64,
    measured_mib: Option<u64>,
    plugs: u32,
    used_ports: Vec<u16>,
}

fn node_state() -> impl Strategy<Value = NodeState> {
    (
        prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        0u64..1500,
        prop::option::of(0u64..1500),
        0u32..10,
        prop::collection::vec(51000u16..51010, 0..6),
    )
        .prop_map(
            |(availability, cordoned, draining, committed_mib, measured_mib, plugs, used_ports)| {
                NodeState {
                    availability,
                    cordoned,
                    draining,
                    committed_mib,
                    measured_mib,
                    plugs,
                    used_ports,
                }
            },
        )
}

fn views(f: &DesiredFleet, states: &[NodeState]) -> Vec<NodeView> {
    f.nodes
        .values()
        .zip(states)
        .map(|(spec, s)| {
            let availability = match s.availability {
                0 => Availability::Ready,
                1 => Availability::Unreachable("x".into()),
                _ => Availability::Lost("x".into()),
            };
            let condition = NodeCondition {
                cordoned: s.cordoned,
                draining: s.draining,
                ..Default::default()
            };
            let mut v = NodeView::empty(spec, availability, condition, None);
            v.committed_memory = s.committed_mib << 20;
            v.measured_memory = s.measured_mib.map(|m| m << 20);
            v.plugs = s.plugs;
            v.used_ports = s.used_ports.iter().copied().collect::<BTreeSet<_>>();
            v
        })
        .collect()
}

fn policy(cap: Option<u32>, watermark: u32, spread: bool, tiered: bool) -> PolicySpec {
    let mut p = PolicySpec::implicit();
    p.max_plugs_per_node = cap;
    p.memory_high_watermark = fleetctl::manifest::Percent(watermark * 100);
    p.spread = if spread { Spread::Spread } else { Spread::Pack };
    if tiered {
        p.tiers = vec![
            fleetctl::manifest::Tier {
                nodes: None,
                node_selector: BTreeMap::from([("tier".into(), "primary".into())]),
            },
            fleetctl::manifest::Tier {
                nodes: None,
                node_selector: BTreeMap::from([("tier".into(), "secondary".into())]),
            },
        ];
    }
    p
}

/// Every filter, checked independently of the scheduler's own code path.
fn fits(v: &NodeView, class: &PlugClassSpec, p: &PolicySpec, port: u16) -> bool {
    let allowed = v.allocatable_memory.map(|a| p.memory_high_watermark.of(a));
    v.availability == Availability::Ready
        && !v.condition.cordoned
        && !v.condition.draining
        && !v.condition.drained
        && p.max_plugs_per_node.is_none_or(|c| v.plugs < c)
        && allowed.is_some_and(|a| v.committed_memory + class.resources.memory.0 <= a)
        && v.measured_memory
            .is_none_or(|m| allowed.is_some_and(|a| m < a))
        && class.host_ports.is_some_and(|r| r.contains(port))
        && !v.used_ports.contains(&port)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn no_placement_violates_a_filter_and_earlier_tiers_win(
        n in 1usize..9,
        states in prop::collection::vec(node_state(), 9),
        cap in prop::option::of(1u32..10),
        watermark in 50u32..=100,
        spread in any::<bool>(),
        tiered in any::<bool>(),
        rounds in 1usize..12,
    ) {
        let f = fleet(n);
        let class = &f.plug_classes["agent"];
        let p = policy(cap, watermark, spread, tiered);
        let mut v = views(&f, &states[..n]);
        for _ in 0..rounds {
            match place_plug(&v, class, &p, None) {
                Ok(placed) => {
                    let i = v.iter().position(|x| x.name == placed.node).unwrap();
                    prop_assert!(fits(&v[i], class, &p, placed.host_port), "placed on a node a filter rejects: {:?}", v[i]);
                    // No node of an earlier tier could have taken it.
                    for (t, tier) in p.tiers.iter().enumerate().take(placed.tier) {
                        for other in v.iter().filter(|o| tier.node_selector.iter().all(|(k, val)| o.labels.get(k) == Some(val))) {
                            prop_assert!(plug_fits(other, class, &p, None).is_err(), "tier {t} node {} fits but tier {} was used", other.name, placed.tier);
                        }
                    }
                    // Deterministic: the same input places the same way.
                    prop_assert_eq!(place_plug(&v, class, &p, None).unwrap(), placed.clone());
                    assign_plug(&mut v[i], class, placed.host_port);
                }
                Err(d) => {
                    // Nothing fits anywhere, and every node says why.
                    prop_assert_eq!(d.rejections.len(), v.len());
                    for node in &v {
                        prop_assert!((51000..=51007).all(|port| !fits(node, class, &p, port)), "{} fits but was rejected: {d}", node.name);
                    }
                    break;
                }
            }
        }
        // Never above a cap.
        if let Some(c) = cap {
            for (node, s) in v.iter().zip(&states) {
                prop_assert!(node.plugs <= c.max(s.plugs));
            }
        }
    }
}

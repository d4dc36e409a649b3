//! Placement throughput (SPEC §9: ≥ 100,000 placements/s, in process): place 10,000 plugs one
//! after another on NODES nodes (default 100; the first fifth `tier: primary`, the rest
//! `secondary`; cap 120 per node, 85% watermark, pack), each placement seeing the previous ones.
//! Prints one JSON line per run and a summary.
//!
//! `cargo run --release --example bench_placement [RUNS] [NODES]`

use std::time::Instant;

use fleetctl::manifest::{Source, parse};
use fleetctl::schedule::{Availability, NodeView, assign_plug, place_plug};
use fleetctl::store::NodeCondition;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let nodes: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    // 10,000 plugs at 120 per node need 84 nodes.
    assert!(nodes >= 84, "10,000 plugs need at least 84 nodes");
    // A manifest file holds at most 1,000 documents: 500 nodes per file.
    let mut sources: Vec<Source> = Vec::new();
    for i in 0..nodes {
        if i % 500 == 0 {
            sources.push(Source {
                name: format!("nodes{}.yaml", i / 500),
                text: String::new(),
            });
        }
        let tier = if i < nodes / 5 {
            "primary"
        } else {
            "secondary"
        };
        let text = &mut sources.last_mut().expect("pushed").text;
        if !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(&format!(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node{i:03}, labels: {{tier: {tier}}}}}\nspec: {{capacity: {{memory: 64GiB}}}}\n"
        ));
    }
    sources.push(Source {
        name: "bench.yaml".into(),
        text: "apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: p, resources: {memory: 256MiB}, port: 8080, hostPorts: 51000-51999}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec:
  maxPlugsPerNode: 120
  memoryHighWatermark: 85%
  tiers: [{nodeSelector: {tier: primary}}, {nodeSelector: {tier: secondary}}]
"
        .into(),
    });
    let fleet = parse(&sources).expect("valid").fleet;
    let class = &fleet.plug_classes["agent"];
    let policy = fleet.policy_for(class);
    let mut rates = Vec::new();
    for run in 0..runs {
        let mut views: Vec<NodeView> = fleet
            .nodes
            .values()
            .map(|n| NodeView::empty(n, Availability::Ready, NodeCondition::default(), None))
            .collect();
        // The harness finds the view placed on by name in a map, not by a scan: at 1,000 nodes
        // a scan costs as much as a placement.
        let index: std::collections::HashMap<&str, usize> = fleet
            .nodes
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let start = Instant::now();
        for _ in 0..10_000 {
            let p = place_plug(&views, class, &policy, None).expect("room for 10,000");
            let i = index[p.node.as_str()];
            assign_plug(&mut views[i], class, p.host_port);
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = 10_000.0 / secs;
        println!(
            "{{\"run\": {run}, \"nodes\": {nodes}, \"seconds\": {secs:.6}, \"placements_per_second\": {rate:.0}}}"
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "placement: 10000 plugs on {nodes} nodes, {runs} runs: median {:.0}/s (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

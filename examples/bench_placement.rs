//! Placement throughput (SPEC §9: ≥ 100,000 placements/s, in process, 100 nodes): place 10,000
//! plugs one after another on 100 nodes (two tiers, cap 120 per node, 85% watermark, pack),
//! each placement seeing the previous ones. Prints one JSON line per run and a summary.
//!
//! `cargo run --release --example bench_placement [RUNS]`

use std::time::Instant;

use fleetctl::manifest::{Source, parse};
use fleetctl::schedule::{Availability, NodeView, assign_plug, place_plug};
use fleetctl::store::NodeCondition;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let mut text = String::new();
    for i in 0..100 {
        let tier = if i < 20 { "primary" } else { "secondary" };
        text.push_str(&format!(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node{i:03}, labels: {{tier: {tier}}}}}\nspec: {{capacity: {{memory: 64GiB}}}}\n---\n"
        ));
    }
    text.push_str(
        "apiVersion: fleet/v1
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
",
    );
    let fleet = parse(&[Source {
        name: "bench.yaml".into(),
        text,
    }])
    .expect("valid")
    .fleet;
    let class = &fleet.plug_classes["agent"];
    let policy = fleet.policy_for(class);
    let mut rates = Vec::new();
    for run in 0..runs {
        let mut views: Vec<NodeView> = fleet
            .nodes
            .values()
            .map(|n| NodeView::empty(n, Availability::Ready, NodeCondition::default(), None))
            .collect();
        let start = Instant::now();
        for _ in 0..10_000 {
            let p = place_plug(&views, class, &policy, None).expect("room for 10,000");
            let i = views
                .iter()
                .position(|v| v.name == p.node)
                .expect("placed on a view");
            assign_plug(&mut views[i], class, p.host_port);
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = 10_000.0 / secs;
        println!(
            "{{\"run\": {run}, \"seconds\": {secs:.6}, \"placements_per_second\": {rate:.0}}}"
        );
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "placement: 10000 plugs on 100 nodes, {runs} runs: median {:.0}/s (min {:.0}, max {:.0})",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );
}

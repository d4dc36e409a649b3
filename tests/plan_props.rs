//! Property tests of the planner through the reconcile pass on the fake runtime: for random
//! fleets and random changes to them, one pass converges (the next plan is empty), never more
//! than `replicas` containers run per service, `maxPerNode` and host ports hold per node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fleetctl::container::labels;
use fleetctl::execute::{ExecOptions, Runtimes};
use fleetctl::manifest::{Source, parse};
use fleetctl::reconcile::{PassContext, pass, plan_only};
use fleetctl::store::Store;
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::FakeRuntime;
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Svc {
    replicas: u32,
    max_per_node: Option<u32>,
    pinned: Option<usize>,
    port: Option<u16>,
    memory_mib: u64,
    image: u8,
}

fn svc() -> impl Strategy<Value = Svc> {
    (
        0u32..5,
        prop::option::of(1u32..3),
        prop::option::of(0usize..4),
        prop::option::of(0u16..3),
        16u64..256,
        0u8..3,
    )
        .prop_map(
            |(replicas, max_per_node, pinned, port, memory_mib, image)| Svc {
                replicas,
                max_per_node,
                pinned,
                port: port.map(|p| 8000 + p),
                memory_mib,
                image,
            },
        )
}

fn manifest(nodes: usize, services: &[Svc]) -> String {
    let mut t = String::from("apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: props}\n");
    for i in 0..nodes {
        t.push_str(&format!("---\napiVersion: fleet/v1\nkind: Node\nmetadata: {{name: n{i}}}\nspec: {{capacity: {{memory: 4GiB}}}}\n"));
    }
    for (i, s) in services.iter().enumerate() {
        let mut placement = Vec::new();
        if let Some(p) = s.pinned {
            placement.push(format!("nodes: [n{}]", p % nodes));
        }
        if let Some(m) = s.max_per_node {
            placement.push(format!("maxPerNode: {m}"));
        }
        t.push_str(&format!(
            "---\napiVersion: fleet/v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec:\n  image: img:{}\n  replicas: {}\n  resources: {{memory: {}MiB}}\n",
            s.image, s.replicas, s.memory_mib
        ));
        if !placement.is_empty() {
            t.push_str(&format!("  placement: {{{}}}\n", placement.join(", ")));
        }
        if let Some(p) = s.port {
            t.push_str(&format!("  ports: ['{p}:80']\n"));
        }
    }
    t
}

fn check(
    fakes: &BTreeMap<String, FakeRuntime>,
    fleet: &fleetctl::manifest::DesiredFleet,
) -> Result<(), TestCaseError> {
    let mut per_service: BTreeMap<String, u32> = BTreeMap::new();
    for (node, f) in fakes {
        let mut here: BTreeMap<String, u32> = BTreeMap::new();
        let mut ports: BTreeSet<u16> = BTreeSet::new();
        for c in f.containers() {
            let svc = c.label(labels::SERVICE).unwrap().to_string();
            *here.entry(svc.clone()).or_default() += 1;
            *per_service.entry(svc.clone()).or_default() += 1;
            for p in &c.host_ports {
                prop_assert!(ports.insert(*p), "host port {p} used twice on {node}");
            }
            let spec = &fleet.services[&svc];
            prop_assert!(
                spec.placement.allows(&fleet.nodes[node]),
                "{svc} on a node its placement forbids"
            );
        }
        for (svc, n) in here {
            let s = &fleet.services[&svc];
            let cap = fleetctl::manifest::validate::effective_max_per_node(
                s.placement.max_per_node,
                !s.ports.is_empty(),
            );
            prop_assert!(
                cap.is_none_or(|c| n <= c),
                "{svc}: {n} on {node} above its per-node cap"
            );
        }
    }
    for (svc, n) in per_service {
        prop_assert!(
            n <= fleet.services[&svc].replicas,
            "{svc}: {n} containers for {} replicas",
            fleet.services[&svc].replicas
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn one_pass_converges_and_invariants_hold_across_changes(
        nodes in 1usize..4,
        first in prop::collection::vec(svc(), 1..5),
        second in prop::collection::vec(svc(), 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fakes: BTreeMap<String, FakeRuntime> = (0..nodes).map(|i| (format!("n{i}"), FakeRuntime::new(format!("n{i}")))).collect();
        let runtimes: Runtimes = fakes.iter().map(|(n, f)| (n.clone(), Arc::new(f.clone()) as Arc<dyn NodeRuntime>)).collect();
        let store = Store::in_memory().unwrap();
        for services in [&first, &second] {
            // Fleets the validator refuses (clashes, impossible requests) are not applied; about
            // two in five random fleets are valid.
            let Ok(loaded) = parse(&[Source { name: "p.yaml".into(), text: manifest(nodes, services) }]) else {
                continue;
            };
            let cx = PassContext {
                fleet: &loaded.fleet,
                runtimes: &runtimes,
                store: &store,
                lost: BTreeSet::new(),
                evict: BTreeSet::new(),
                measure_memory: false,
                exec: ExecOptions { ready_timeout: std::time::Duration::from_secs(1), ..Default::default() },
            };
            let report = rt.block_on(pass(&cx, &|_| {})).unwrap();
            prop_assert!(report.exec.ok(), "{:?}", report.exec);
            let (_, again) = rt.block_on(plan_only(&cx)).unwrap();
            prop_assert!(again.steps.is_empty(), "not converged after one pass: {:#?}", again.steps);
            check(&fakes, &loaded.fleet)?;
            // Everything placed is running, and everything unplaced is explained.
            let running: u32 = fakes.values().map(|f| f.containers().len() as u32).sum();
            let wanted: u32 = loaded.fleet.services.values().map(|s| s.replicas).sum();
            prop_assert_eq!(running + again.unplaced.len() as u32, wanted);
        }
    }
}

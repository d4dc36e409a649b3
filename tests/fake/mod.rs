//! The in-memory world shared by the controller-logic tests (reconcile, plugs, drain): fleets
//! parsed from YAML text, one fake engine per node, an in-memory state store, and the pass
//! context over them. The same behaviour is shown against real engines by the e2e tests.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fleetctl::execute::{ExecOptions, Runtimes};
use fleetctl::manifest::{DesiredFleet, Source, parse};
use fleetctl::plugs::{self, PlugCreated, PlugError};
use fleetctl::reconcile::PassContext;
use fleetctl::store::Store;
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::FakeRuntime;

/// Three 8 GiB nodes: node1 `tier: primary`, node2 and node3 `tier: secondary`.
pub const THREE_NODES: &str = "apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {capacity: {memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node3, labels: {tier: secondary}}
spec: {capacity: {memory: 8GiB}}
";

/// The fleet of one manifest text; panics with every diagnostic when it is invalid.
pub fn fleet_of(text: &str) -> DesiredFleet {
    parse(&[Source {
        name: "f.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"))
    .fleet
}

/// Fake engines for node1..nodeN, the runtimes over them, and an empty store.
pub struct World {
    pub fakes: BTreeMap<String, FakeRuntime>,
    pub runtimes: Runtimes,
    pub store: Store,
}

/// A world of `nodes` nodes named node1, node2, ...
pub fn world(nodes: usize) -> World {
    // One swarm fabric: fleets of several nodes with addresses use an overlay.
    let swarm = fleetctl::transport::fake::FakeSwarm::new();
    let fakes: BTreeMap<String, FakeRuntime> = (1..=nodes)
        .map(|i| {
            let n = format!("node{i}");
            (n.clone(), FakeRuntime::with_swarm(&n, &swarm))
        })
        .collect();
    let runtimes = fakes
        .iter()
        .map(|(n, f)| (n.clone(), Arc::new(f.clone()) as Arc<dyn NodeRuntime>))
        .collect();
    World {
        fakes,
        runtimes,
        store: Store::in_memory().unwrap(),
    }
}

/// A pass context over the world: no lost nodes, `evict` forced off their nodes, no memory
/// measurement, a 2 s readiness timeout.
pub fn cx<'a>(w: &'a World, f: &'a DesiredFleet, evict: &[&str]) -> PassContext<'a> {
    PassContext {
        fleet: f,
        runtimes: &w.runtimes,
        store: &w.store,
        lost: BTreeSet::new(),
        evict: evict.iter().map(|s| s.to_string()).collect(),
        measure_memory: false,
        exec: ExecOptions {
            ready_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        refresh: Default::default(),
    }
}

/// `plug create agent --owner OWNER`, as the CLI does it without a controller.
pub async fn create_plug(
    f: &DesiredFleet,
    store: &Store,
    rts: &Runtimes,
    owner: &str,
) -> Result<PlugCreated, PlugError> {
    let observed = plugs::observe_for_placement(f, rts).await;
    let plug = plugs::reserve_plug(f, store, &observed, &BTreeSet::new(), "agent", owner, 0)?;
    plugs::start_reserved(f, store, rts, &plug, Duration::from_secs(2)).await
}

//! Plug operations against the fake runtime and a real SQLite file: spill from primary to
//! secondary, per-node diagnosis, port leases, deletion, concurrency, measured memory.

mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fake::{THREE_NODES, World, create_plug, fleet_of, world};
use fleetctl::manifest::DesiredFleet;
use fleetctl::plugs;
use fleetctl::store::Store;

fn fleet(cap: u32, spread: &str) -> DesiredFleet {
    fleet_of(&format!(
        "apiVersion: fleet/v1
kind: Fleet
metadata: {{name: plugs}}
---
{THREE_NODES}---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: plug:1, resources: {{memory: 256MiB}}, port: 8080, hostPorts: 51000-51019}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: {cap}
  memoryHighWatermark: 85%
  spread: {spread}
  tiers: [{{nodeSelector: {{tier: primary}}}}, {{nodeSelector: {{tier: secondary}}}}]
"
    ))
}

#[tokio::test]
async fn twelve_plugs_fill_the_primary_then_spill_and_the_thirteenth_is_diagnosed() {
    let f = fleet(5, "pack");
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    let store = Store::in_memory().unwrap();
    let mut on: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for i in 0..12 {
        let c = create_plug(&f, &store, &rts, &format!("user{i}"))
            .await
            .unwrap();
        on.entry(c.node.clone()).or_default().push(c.port);
    }
    assert_eq!(on["node1"].len(), 5);
    assert_eq!(on["node2"].len(), 5);
    assert_eq!(on["node3"].len(), 2);
    for ports in on.values() {
        let unique: BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| (51000..=51019).contains(p)));
    }
    for (node, fake) in &fakes {
        assert_eq!(fake.containers().len(), on[node].len());
    }
    // Fill node3, then one more: every node explains itself.
    for i in 0..3 {
        create_plug(&f, &store, &rts, &format!("more{i}"))
            .await
            .unwrap();
    }
    let err = create_plug(&f, &store, &rts, "late").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no node can take a plug of class agent: node1: 5/5 plugs; node2: 5/5 plugs; node3: 5/5 plugs"
    );
    // Deleting one frees its slot and its port.
    let victim = store
        .plugs()
        .unwrap()
        .into_iter()
        .find(|p| p.node == "node2")
        .unwrap();
    plugs::delete(&f, &store, &rts, &victim.id).await.unwrap();
    assert!(
        !store
            .port_leases()
            .unwrap()
            .iter()
            .any(|(n, p, _)| n == "node2" && *p == victim.host_port)
    );
    let again = create_plug(&f, &store, &rts, "late").await.unwrap();
    assert_eq!(
        (again.node.as_str(), again.port),
        ("node2", victim.host_port)
    );
}

#[tokio::test]
async fn a_node_above_the_watermark_by_measurement_takes_no_plug() {
    let f = fleet(5, "pack");
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    let store = Store::in_memory().unwrap();
    let c = create_plug(&f, &store, &rts, "a").await.unwrap();
    assert_eq!(c.node, "node1");
    // That plug's container now uses 7GiB: node1 measures above 85% of its 8GiB, although its
    // limits (256MiB) leave plenty of room.
    let id = fakes["node1"].containers()[0].id.clone();
    fakes["node1"].set_memory_usage(&id, 7 << 30);
    let d = create_plug(&f, &store, &rts, "b").await.unwrap();
    assert_ne!(
        d.node, "node1",
        "node1 measured above its watermark must take nothing"
    );
}

#[test]
fn concurrent_creators_never_exceed_a_cap_or_share_a_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let f = Arc::new(fleet(5, "spread"));
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    let rts = Arc::new(rts);
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let (f, rts, path) = (f.clone(), rts.clone(), path.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let store = Store::open(&path).unwrap();
                rt.block_on(create_plug(&f, &store, &rts, &format!("u{i}")))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 15, "3 nodes × cap 5: {results:?}");
    let store = Store::open(&path).unwrap();
    let plugs = store.plugs().unwrap();
    let mut per_node: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for p in &plugs {
        assert!(
            per_node
                .entry(p.node.as_str())
                .or_default()
                .insert(p.host_port),
            "port leased twice"
        );
    }
    assert!(per_node.values().all(|s| s.len() <= 5), "{per_node:?}");
    let containers: usize = fakes.values().map(|f| f.containers().len()).sum();
    assert_eq!(containers, 15);
}

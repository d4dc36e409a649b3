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
    fleet_of(&fleet_text(cap, spread))
}

fn fleet_text(cap: u32, spread: &str) -> String {
    format!(
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
    )
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
    // A container that is not the fleet's (no limit fleetctl knows of) uses 7GiB: node1
    // measures above 85% of its 8GiB, although the fleet's limits (256MiB) leave plenty of room.
    let id = fakes["node1"].add_foreign("someone-elses-db", BTreeMap::new());
    fakes["node1"].set_memory_usage(&id, 7 << 30);
    let d = create_plug(&f, &store, &rts, "b").await.unwrap();
    assert_ne!(
        d.node, "node1",
        "node1 measured above its watermark must take nothing"
    );
}

/// Memory is read only where a reading could reject a plug: on a node where every running
/// container is one of the fleet's, with a limit, and the limits' sum is under the lowest
/// watermark, no stats call is made (each takes up to a second on Docker 20.10); a container
/// of someone else's on the node, or limits reaching the watermark, means reading it.
#[tokio::test]
async fn memory_is_read_only_where_a_reading_could_reject_a_plug() {
    let f = fleet(40, "pack");
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    let store = Store::in_memory().unwrap();
    let stats_calls = |node: &str| {
        fakes[node]
            .calls()
            .iter()
            .filter(|c| c.op == "stats")
            .count()
    };
    for owner in ["a", "b", "c"] {
        assert_eq!(
            create_plug(&f, &store, &rts, owner).await.unwrap().node,
            "node1"
        );
    }
    assert_eq!(stats_calls("node1"), 0, "{:?}", fakes["node1"].calls());
    let observed = plugs::observe_for_placement(&f, &rts).await;
    for node in ["node1", "node2", "node3"] {
        assert!(
            !plugs::memory_could_matter(&f, node, &observed.nodes[node]),
            "{node}"
        );
    }
    // Someone else's container on node2: node2 is read; node1 still not.
    fakes["node2"].add_foreign("someone-elses-db", BTreeMap::new());
    let observed = plugs::observe_for_placement(&f, &rts).await;
    assert!(plugs::memory_could_matter(
        &f,
        "node2",
        &observed.nodes["node2"]
    ));
    assert!(stats_calls("node2") > 0);
    assert_eq!(stats_calls("node1"), 0);
    // With a watermark of 5% (410MiB of 8GiB), node1's three limits (768MiB) reach it: read.
    let low = fleet_of(
        &fleet_text(40, "pack").replace("memoryHighWatermark: 85%", "memoryHighWatermark: 5%"),
    );
    let observed = plugs::observe_for_placement(&low, &rts).await;
    assert!(plugs::memory_could_matter(
        &low,
        "node1",
        &observed.nodes["node1"]
    ));
    assert!(stats_calls("node1") > 0);
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

/// Issue 13: a second state store (another working directory, a CI runner, a lost disk) sees
/// plugs it does not know. It adopts them — records with their class, owner, node and port —
/// and removes nothing; a plug this store deleted is removed, not adopted, even when its copy
/// turns up later on a node that was unreachable at the deletion.
#[tokio::test]
async fn a_fresh_state_adopts_the_plugs_it_finds_and_removes_only_what_it_deleted() {
    let f = fleet(5, "pack");
    let w = world(3);
    let mut made = Vec::new();
    for i in 0..4 {
        made.push(
            create_plug(&f, &w.store, &w.runtimes, &format!("user{i}"))
                .await
                .unwrap(),
        );
    }
    let running = |w: &World| -> usize { plug_containers(w).len() };
    assert_eq!(running(&w), 4);

    let fresh = Store::in_memory().unwrap();
    let cx = fleetctl::reconcile::PassContext::new(&f, &w.runtimes, &fresh);
    let (_, plan) = fleetctl::reconcile::plan_only(&cx).await.unwrap();
    assert!(
        plan.steps.is_empty(),
        "a dry run removes nothing: {:#?}",
        plan.steps
    );
    assert_eq!(plan.adopted.len(), 4, "{:?}", plan.adopted);
    assert!(
        fresh.plugs().unwrap().is_empty(),
        "a dry run records nothing"
    );

    let report = fleetctl::reconcile::pass(&cx, &|_| {}).await.unwrap();
    assert!(report.plan.steps.is_empty(), "{:#?}", report.plan.steps);
    assert_eq!(report.plan.adopted.len(), 4);
    assert_eq!(running(&w), 4, "nothing removed");
    let mut adopted: Vec<(String, String, String, u16)> = fresh
        .plugs()
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.owner, p.node, p.host_port))
        .collect();
    adopted.sort();
    let mut want: Vec<(String, String, String, u16)> = made
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.clone(), format!("user{i}"), c.node.clone(), c.port))
        .collect();
    want.sort();
    assert_eq!(adopted, want);
    assert_eq!(fresh.port_leases().unwrap().len(), 4);
    assert!(
        fresh
            .events(100)
            .unwrap()
            .iter()
            .filter(|e| e.action == "adopted")
            .count()
            == 4
    );

    // Deleted through this store while its node was unreachable: the copy found later is
    // removed (the tombstone), not adopted.
    let victim = &made[0];
    w.fakes[&victim.node].set_unreachable(true);
    plugs::delete(&f, &fresh, &w.runtimes, &victim.id)
        .await
        .unwrap();
    w.fakes[&victim.node].set_unreachable(false);
    let report = fleetctl::reconcile::pass(&cx, &|_| {}).await.unwrap();
    assert!(report.plan.adopted.is_empty(), "{:?}", report.plan.adopted);
    assert_eq!(running(&w), 3, "{:#?}", report.plan.steps);
    assert!(fresh.plug(&victim.id).is_err());
}

/// This fleet's plug containers on every node (fleetctl's records — lease, tombstones — are not
/// containers of the fleet).
fn plug_containers(w: &World) -> Vec<String> {
    w.fakes
        .values()
        .flat_map(|f| f.containers())
        .filter(|c| c.label("fleet.kind") == Some("plug"))
        .map(|c| c.name)
        .collect()
}

/// Issue 13: a plug deleted through one state file while another state file (another machine)
/// knows it stays deleted: the nodes record the deletion, and the other state's next pass
/// forgets the plug instead of starting it again; its dry run does not plan it either.
#[tokio::test]
async fn a_plug_deleted_through_another_state_file_is_forgotten_not_started_again() {
    let f = fleet(5, "pack");
    let w = world(3);
    let a = create_plug(&f, &w.store, &w.runtimes, "ada").await.unwrap();
    let b = create_plug(&f, &w.store, &w.runtimes, "bob").await.unwrap();
    // State B learns both (adoption), as another machine's apply would.
    let other = Store::in_memory().unwrap();
    let cx = fleetctl::reconcile::PassContext::new(&f, &w.runtimes, &other);
    fleetctl::reconcile::pass(&cx, &|_| {}).await.unwrap();
    assert_eq!(other.plugs().unwrap().len(), 2);

    plugs::delete(&f, &w.store, &w.runtimes, &a.id)
        .await
        .unwrap();
    assert_eq!(plug_containers(&w).len(), 1);

    let (_, plan) = fleetctl::reconcile::plan_only(&cx).await.unwrap();
    assert!(plan.steps.is_empty(), "{:#?}", plan.steps);
    let report = fleetctl::reconcile::pass(&cx, &|_| {}).await.unwrap();
    assert!(report.plan.steps.is_empty(), "{:#?}", report.plan.steps);
    assert_eq!(plug_containers(&w).len(), 1, "nothing came back");
    let left: Vec<String> = other.plugs().unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(left, std::slice::from_ref(&b.id));
    assert!(
        other
            .events(100)
            .unwrap()
            .iter()
            .any(|e| e.action == "deleted-elsewhere"),
        "the forgetting is an event"
    );
    // A state that never knew it does not adopt it either, and counts no record as a plug.
    let third = Store::in_memory().unwrap();
    let cx3 = fleetctl::reconcile::PassContext::new(&f, &w.runtimes, &third);
    let report = fleetctl::reconcile::pass(&cx3, &|_| {}).await.unwrap();
    assert_eq!(report.plan.adopted.len(), 1);
    assert!(report.plan.steps.is_empty(), "{:#?}", report.plan.steps);
}

/// `capacity` on a live fleet counts free plug slots on the scheduler's own views of the
/// observation, as `plug create` does: recorded plugs take slots, and so do plugs running that
/// the store does not know (a fresh state file), which will be adopted rather than overwritten.
#[tokio::test]
async fn live_capacity_counts_recorded_and_unknown_plugs_as_the_scheduler_does() {
    let f = fleet(5, "pack");
    let w = world(3);
    for i in 0..3 {
        create_plug(&f, &w.store, &w.runtimes, &format!("user{i}"))
            .await
            .unwrap();
    }
    let observed = plugs::observe_for_placement(&f, &w.runtimes).await;
    let free = |store: &Store| -> Vec<u32> {
        let r = fleetctl::capacity::live(&f, store, &observed).unwrap();
        r.nodes.iter().map(|n| n.plug_slots[0].free).collect()
    };
    assert_eq!(free(&w.store), [2, 5, 5], "node1 holds 3 of its 5");
    let fresh = Store::in_memory().unwrap();
    assert_eq!(
        free(&fresh),
        [2, 5, 5],
        "unknown plugs take their slots too"
    );
}

/// A controller's pass may create a new plug's container while the API's create of the same
/// plug runs; the engine reserves the name before that container can be inspected. The API's
/// create adopts it instead of failing on the name (and deleting the plug).
#[tokio::test]
async fn a_plug_created_by_a_pass_at_the_same_moment_is_adopted_not_deleted() {
    let f = fleet(5, "pack");
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    let store = Store::in_memory().unwrap();
    let observed = plugs::observe_for_placement(&f, &rts).await;
    let plug =
        plugs::reserve_plug(&f, &store, &observed, &BTreeSet::new(), "agent", "racer", 0).unwrap();
    // The pass's create, half-way: the name is taken, inspect does not find it yet.
    let spec = fleetctl::desired::plug_container(
        &f,
        &f.plug_classes["agent"],
        &fleetctl::desired::PlugIdentity {
            id: &plug.id,
            owner: &plug.owner,
            node: &plug.node,
            host_port: plug.host_port,
        },
    );
    let fake = &fakes[&plug.node];
    use fleetctl::transport::NodeRuntime;
    fake.create_network(&fleetctl::network::network_spec(&f))
        .await
        .unwrap();
    fake.create_container(&spec).await.unwrap();
    fake.reserve_name(&spec.name, 2);
    let created = plugs::start_reserved(&f, &store, &rts, &plug, std::time::Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the create must adopt the pass's container: {e}"));
    assert_eq!(created.id, plug.id);
    let named: Vec<_> = fake
        .containers()
        .into_iter()
        .filter(|c| c.name == spec.name)
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(store.plugs().unwrap().len(), 1, "the plug is kept");
}

/// A plug created on a Podman node of an overlay fleet (issue 19) is made on that node's own
/// bridge — made first when missing, with no swarm call there — and the next reconcile finds it
/// as desired (no replacement).
#[tokio::test]
async fn a_plug_on_a_podman_node_of_an_overlay_fleet_is_on_its_own_bridge() {
    let f = fleet_of(
        "apiVersion: fleet/v1
kind: Fleet
metadata: {name: plugs}
spec: {network: {mode: overlay}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec: {ssh: {host: 10.0.0.1}, capacity: {memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: podman}}
spec: {ssh: {host: 10.0.0.2}, docker: {engine: podman}, capacity: {memory: 8GiB}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: plug:1, resources: {memory: 256MiB}, port: 8080, policy: here}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: here}
spec:
  tiers: [{nodeSelector: {tier: podman}}]
",
    );
    let w = world(2);
    w.fakes["node2"].set_engine_kind(fleetctl::container::EngineKind::Podman);
    let c = create_plug(&f, &w.store, &w.runtimes, "ada").await.unwrap();
    assert_eq!(c.node, "node2");
    let cs = w.fakes["node2"].containers();
    assert_eq!(cs.len(), 1, "{cs:?}");
    assert_eq!(cs[0].networks, ["plugs-bridge".to_string()]);
    assert!(
        w.fakes["node2"]
            .calls()
            .iter()
            .all(|c| !c.op.starts_with("swarm")),
        "{:?}",
        w.fakes["node2"].calls()
    );
    let (_, p) = fleetctl::reconcile::plan_only(&fake::cx(&w, &f, &[]))
        .await
        .unwrap();
    assert!(p.steps.iter().all(|s| s.node != "node2"), "{:#?}", p.steps);
}

/// A plug whose class has a healthcheck is ready as soon as its own check passes, run by
/// fleetctl while the engine still says `starting` (an engine runs its first check a whole
/// interval after the start); a check that fails keeps it waiting until the timeout, and the
/// plug is given up, as before.
#[tokio::test]
async fn a_healthchecked_plug_is_ready_when_its_own_check_passes_before_the_engine_looks() {
    let f = fleet_of(&format!(
        "apiVersion: fleet/v1
kind: Fleet
metadata: {{name: plugs}}
---
{THREE_NODES}---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec:
  image: plug:1
  resources: {{memory: 256MiB}}
  port: 8080
  hostPorts: 51000-51019
  healthcheck: {{command: 'wget -q -O- http://127.0.0.1:8080/health', interval: 1h}}
"
    ));
    let World {
        fakes,
        runtimes: rts,
        ..
    } = world(3);
    for fake in fakes.values() {
        fake.set_health_on_start(fleetctl::container::Health::Starting);
        fake.set_exec(fleetctl::transport::fake::FakeExec {
            output: vec![],
            exit_code: 0,
        });
    }
    let store = Store::in_memory().unwrap();
    let observed = plugs::observe_for_placement(&f, &rts).await;
    let plug =
        plugs::reserve_plug(&f, &store, &observed, &BTreeSet::new(), "agent", "u1", 0).unwrap();
    let created = plugs::start_reserved(&f, &store, &rts, &plug, std::time::Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("its own check passed: {e}"));
    assert_eq!(created.id, plug.id);
    let execs = fakes[&plug.node].execs();
    assert!(
        execs.iter().any(|(_, cmd, _)| cmd
            == &[
                "/bin/sh".to_string(),
                "-c".into(),
                "wget -q -O- http://127.0.0.1:8080/health".into()
            ]),
        "the class's own command, as the engine runs CMD-SHELL: {execs:?}"
    );

    // A check that fails: still starting at the timeout; the plug is not kept.
    for fake in fakes.values() {
        fake.set_exec(fleetctl::transport::fake::FakeExec {
            output: vec![],
            exit_code: 1,
        });
    }
    let observed = plugs::observe_for_placement(&f, &rts).await;
    let plug =
        plugs::reserve_plug(&f, &store, &observed, &BTreeSet::new(), "agent", "u2", 0).unwrap();
    let e = plugs::start_reserved(
        &f,
        &store,
        &rts,
        &plug,
        std::time::Duration::from_millis(300),
    )
    .await
    .expect_err("its check fails");
    assert!(e.to_string().contains("still starting"), "{e}");
    assert!(store.plugs().unwrap().iter().all(|p| p.id != plug.id));
}

//! Drain through the reconcile pipeline against the fake runtime.

mod fake;

use std::collections::BTreeMap;
use std::time::Duration;

use fake::{THREE_NODES, World, create_plug, cx, fleet_of, world};
use fleetctl::container::labels;
use fleetctl::drain::{DrainStatus, Fate, drain};
use fleetctl::manifest::DesiredFleet;
use fleetctl::plugs;
use fleetctl::reconcile::pass;

fn fleet(cap: u32, extra: &str) -> DesiredFleet {
    fleet_of(&format!(
        "apiVersion: fleet/v1
kind: Fleet
metadata: {{name: dr}}
---
{THREE_NODES}---
apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec: {{image: web:1, replicas: 3, resources: {{memory: 128MiB}}}}
---
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
  tiers: [{{nodeSelector: {{tier: secondary}}}}, {{nodeSelector: {{tier: primary}}}}]
{extra}"
    ))
}

async fn add_plugs(w: &World, f: &DesiredFleet, n: usize) {
    for i in 0..n {
        create_plug(f, &w.store, &w.runtimes, &format!("u{i}"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn drain_moves_every_plug_and_replica_starting_each_replacement_first() {
    let w = world(3);
    let f = fleet(8, "");
    pass(&cx(&w, &f, &[]), &|_| {}).await.unwrap();
    add_plugs(&w, &f, 4).await; // pack: all on node2 (first secondary by name)
    let on2: Vec<_> = w.fakes["node2"].containers();
    assert_eq!(on2.len(), 5, "4 plugs + 1 web replica");
    let ports_before: BTreeMap<String, u16> = w
        .store
        .plugs()
        .unwrap()
        .into_iter()
        .map(|p| (p.id, p.host_port))
        .collect();

    let report = drain(&cx(&w, &f, &[]), "node2", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.status, DrainStatus::Drained, "{report:?}");
    assert_eq!(report.moved.len(), 5);
    assert!(w.fakes["node2"].containers().is_empty());
    assert!(w.store.node_conditions().unwrap()["node2"].drained);
    // Plugs kept their ports (free on the new node).
    for p in w.store.plugs().unwrap() {
        assert_ne!(p.node, "node2");
        assert_eq!(p.host_port, ports_before[&p.id]);
    }
    // Each original was stopped only after its replacement started.
    let node2_calls = w.fakes["node2"].calls();
    for old in &on2 {
        let stop = node2_calls
            .iter()
            .find(|c| c.op == "stop" && c.object == old.id)
            .expect("stopped")
            .seq;
        let object = old
            .label(labels::PLUG)
            .or(old.label(labels::REPLICA))
            .unwrap();
        let started = w
            .fakes
            .iter()
            .filter(|(n, _)| *n != "node2")
            .flat_map(|(_, f)| {
                let containers = f.containers();
                f.calls().into_iter().filter(move |c| {
                    c.op == "start"
                        && containers.iter().any(|x| {
                            x.id == c.object
                                && (x.label(labels::PLUG) == Some(object)
                                    || x.label(labels::REPLICA) == Some(object)
                                        && x.label(labels::KIND) == old.label(labels::KIND))
                        })
                })
            })
            .map(|c| c.seq)
            .min()
            .expect("replacement started");
        assert!(
            started < stop,
            "{} stopped before its replacement started",
            old.name
        );
    }
    // New plugs never land on node2 until uncordon.
    add_plugs(&w, &f, 2).await;
    assert!(w.store.plugs().unwrap().iter().all(|p| p.node != "node2"));
}

#[tokio::test]
async fn without_room_drain_stops_nothing_and_resumes_after_room_is_made() {
    let w = world(3);
    let f = fleet(2, "");
    pass(&cx(&w, &f, &[]), &|_| {}).await.unwrap();
    add_plugs(&w, &f, 6).await; // node2: 2, node3: 2, node1: 2 — every node full
    let before = w.fakes["node2"].containers().len();
    let report = drain(&cx(&w, &f, &[]), "node2", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.status, DrainStatus::Stuck, "{report:?}");
    assert!(
        report
            .left
            .iter()
            .any(|r| r.fate == Fate::Stuck && r.why.contains("2/2 plugs")),
        "{:?}",
        report.left
    );
    let plugs_left = w.fakes["node2"]
        .containers()
        .iter()
        .filter(|c| c.label(labels::KIND) == Some("plug"))
        .count();
    assert_eq!(plugs_left, 2, "no plug stopped without a replacement");
    assert!(w.fakes["node2"].containers().len() <= before);
    // Make room: delete the plugs on node3, run drain again.
    for p in w
        .store
        .plugs()
        .unwrap()
        .into_iter()
        .filter(|p| p.node == "node3")
    {
        plugs::delete(&f, &w.store, &w.runtimes, &p.id)
            .await
            .unwrap();
    }
    let report = drain(&cx(&w, &f, &[]), "node2", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.status, DrainStatus::Drained, "{report:?}");
    assert!(w.fakes["node2"].containers().is_empty());
}

#[tokio::test]
async fn a_service_pinned_to_the_node_is_left_unless_forced() {
    let w = world(3);
    let pinned = "---
apiVersion: fleet/v1
kind: Service
metadata: {name: local-db}
spec: {image: db:1, placement: {nodes: [node2]}, resources: {memory: 128MiB}}
";
    let f = fleet(8, pinned);
    pass(&cx(&w, &f, &[]), &|_| {}).await.unwrap();
    let report = drain(&cx(&w, &f, &[]), "node2", Duration::from_secs(30), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.status, DrainStatus::Drained);
    assert_eq!(report.left.len(), 1);
    assert_eq!(report.left[0].fate, Fate::Pinned);
    assert_eq!(w.fakes["node2"].containers().len(), 1);
    let reasons = std::sync::Mutex::new(Vec::<String>::new());
    let report = drain(
        &cx(&w, &f, &["node2"]),
        "node2",
        Duration::from_secs(30),
        &|p| {
            if let fleetctl::execute::Progress::Done(st, _) = p {
                reasons.lock().unwrap().push(st.reason.clone());
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(report.status, DrainStatus::Drained);
    assert!(
        w.fakes["node2"].containers().is_empty(),
        "--force stops the pinned replica"
    );
    let reasons = reasons.lock().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r == "replica 0 evicted from node2 (drain --force): no other node may run it"),
        "{reasons:?}"
    );
}

/// A node uncordoned while its drain ran is not marked drained when the drain ends: the guard
/// of `condition::Schedule` refuses finishing a drain that is no longer under way, and the drain
/// reports `uncordoned` with what it moved.
#[tokio::test]
async fn a_drain_uncordoned_meanwhile_does_not_mark_the_node_drained() {
    use fleetctl::condition::{Schedule, Transition};

    let w = world(3);
    let f = fleet(8, "");
    pass(&cx(&w, &f, &[]), &|_| {}).await.unwrap();
    add_plugs(&w, &f, 2).await;
    let uncordoned = std::sync::atomic::AtomicBool::new(false);
    let result = drain(&cx(&w, &f, &[]), "node2", Duration::from_secs(30), &|p| {
        if let fleetctl::execute::Progress::Done(..) = p
            && !uncordoned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            w.store
                .transition_node("node2", 0, Transition::Uncordon)
                .unwrap();
        }
    })
    .await;
    assert!(uncordoned.into_inner(), "the drain moved something");
    let report = result.unwrap();
    assert_eq!(report.status, DrainStatus::Uncordoned, "{report:?}");
    assert_eq!(
        report.errors,
        ["node node2: cannot finish a drain on a node that is schedulable"]
    );
    assert!(
        !report.moved.is_empty(),
        "what moved is reported: {report:?}"
    );
    assert_eq!(
        w.store.node_conditions().unwrap()["node2"].schedule(),
        Schedule::Schedulable
    );
}

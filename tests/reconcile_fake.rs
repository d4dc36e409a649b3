//! The reconcile pipeline (observe → plan → execute → settle) against the in-memory fake
//! runtime: convergence, idempotence, in-place updates, recreates, pruning, crash safety and
//! unreachable nodes. The same properties are shown against real engines in the e2e tests.

mod fake;

use fleetctl::transport::NodeRuntime;

use std::collections::{BTreeMap, BTreeSet};

use fake::{World, fleet_of, world};
use fleetctl::container::labels;
use fleetctl::manifest::DesiredFleet;
use fleetctl::plan::Action;
use fleetctl::reconcile::{PassContext, pass, plan_only};

const BASE: &str = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: 2
  resources: {memory: 256MiB}
  env: {MODE: prod}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: redis}
spec:
  image: redis:7
  placement: {nodes: [node1]}
  resources: {memory: 128MiB}
  ports: ['6379:6379']
";

fn fleet(text: &str) -> DesiredFleet {
    fleet_of(text)
}

fn cx<'a>(w: &'a World, f: &'a DesiredFleet) -> PassContext<'a> {
    fake::cx(w, f, &[])
}

fn ids(w: &World) -> BTreeSet<String> {
    w.fakes
        .values()
        .flat_map(|f| f.containers())
        .map(|c| c.id)
        .collect()
}

/// (service, replica) → count, over every node.
fn replica_counts(w: &World) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for f in w.fakes.values() {
        for c in f.containers() {
            if c.label(labels::KIND) == Some("service") {
                *out.entry((
                    c.label(labels::SERVICE).unwrap().to_string(),
                    c.label(labels::REPLICA).unwrap().to_string(),
                ))
                .or_default() += 1;
            }
        }
    }
    out
}

#[tokio::test]
async fn cold_apply_converges_and_a_second_pass_changes_nothing() {
    let w = world(2);
    let f = fleet(BASE);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert_eq!(r.plan.steps.len(), 3);
    assert_eq!(replica_counts(&w).len(), 3);
    // redis is pinned to node1; web spreads one replica per node.
    assert_eq!(w.fakes["node1"].containers().len(), 2);
    assert_eq!(w.fakes["node2"].containers().len(), 1);

    let before = ids(&w);
    for fake in w.fakes.values() {
        fake.clear_calls();
    }
    let (_, p) = plan_only(&cx(&w, &f)).await.unwrap();
    assert!(!p.has_changes(), "{:#?}", p.steps);
    assert_eq!(p.unchanged.len(), 3);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.plan.steps.is_empty());
    assert_eq!(ids(&w), before);
    for fake in w.fakes.values() {
        assert!(
            fake.mutating_calls().is_empty(),
            "{:?}",
            fake.mutating_calls()
        );
    }
}

#[tokio::test]
async fn memory_change_is_an_in_place_update_of_the_same_containers() {
    let w = world(2);
    pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    let before = ids(&w);
    let f2 = fleet(&BASE.replace("memory: 256MiB", "memory: 512MiB"));
    let r = pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    assert_eq!(r.plan.steps.len(), 2, "{:#?}", r.plan.steps);
    for s in &r.plan.steps {
        assert!(matches!(s.action, Action::Update { .. }));
        assert_eq!(s.reason, "memory 256MiB → 512MiB, in place");
    }
    assert_eq!(ids(&w), before);
    for fake in w.fakes.values() {
        for c in fake.containers() {
            let spec = fake.spec_of(&c.id).unwrap();
            if c.label(labels::SERVICE) == Some("web") {
                assert_eq!(spec.resources.memory, 512 << 20);
            }
        }
    }
}

#[tokio::test]
async fn image_or_env_change_recreates_only_that_service() {
    let w = world(2);
    pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    let redis_before: Vec<String> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .map(|c| c.id)
        .collect();
    let f2 = fleet(&BASE.replace("image: web:1", "image: web:2"));
    let r = pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    assert!(r.exec.ok());
    assert_eq!(r.plan.steps.len(), 2);
    for s in &r.plan.steps {
        assert!(matches!(s.action, Action::Replace { .. }), "{s:?}");
        assert!(
            s.reason
                .starts_with("image web:1 → web:2, recreate (start-first)"),
            "{}",
            s.reason
        );
    }
    let redis_after: Vec<String> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .map(|c| c.id)
        .collect();
    assert_eq!(redis_before, redis_after);
    assert!(replica_counts(&w).values().all(|n| *n == 1));

    let f3 = fleet(
        &BASE
            .replace("image: web:1", "image: web:2")
            .replace("MODE: prod", "MODE: staging"),
    );
    let r = pass(&cx(&w, &f3), &|_| {}).await.unwrap();
    assert_eq!(r.plan.steps.len(), 2);
    assert!(
        r.plan.steps[0].reason.starts_with("env MODE changed"),
        "{}",
        r.plan.steps[0].reason
    );
}

#[tokio::test]
async fn removed_service_is_pruned_and_foreign_containers_are_untouched() {
    let w = world(2);
    pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    let foreign = w.fakes["node1"].add_foreign("someone-elses", BTreeMap::new());
    let other_fleet = w.fakes["node1"].add_foreign(
        "other-fleet-web",
        BTreeMap::from([
            (labels::MANAGED_BY.to_string(), "fleetctl".to_string()),
            (labels::FLEET.to_string(), "other".to_string()),
            (labels::KIND.to_string(), "service".to_string()),
        ]),
    );
    let without_redis = &BASE[..BASE
        .find("---\napiVersion: fleet/v1\nkind: Service\nmetadata: {name: redis}")
        .unwrap()];
    let r = pass(&cx(&w, &fleet(without_redis)), &|_| {}).await.unwrap();
    assert_eq!(r.plan.steps.len(), 1);
    assert!(matches!(r.plan.steps[0].action, Action::Remove { .. }));
    assert_eq!(
        r.plan.steps[0].reason,
        "service redis is not in the manifests"
    );
    let left: BTreeSet<String> = w.fakes["node1"]
        .containers()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(left.contains(&foreign) && left.contains(&other_fleet));
    for c in w.fakes["node1"].mutating_calls() {
        assert_ne!(c.object, foreign);
        assert_ne!(c.object, other_fleet);
    }
}

#[tokio::test]
async fn a_crash_at_any_call_leaves_nothing_the_next_pass_cannot_finish() {
    // Fail the n-th mutating call (as if fleetctl died there), then run passes until converged:
    // every replica exactly once, nothing else.
    for n in 1..=12 {
        let w = world(2);
        let f = fleet(BASE);
        // Start from a changed fleet so replaces are exercised too.
        pass(
            &cx(&w, &fleet(&BASE.replace("image: web:1", "image: web:0"))),
            &|_| {},
        )
        .await
        .unwrap();
        for fake in w.fakes.values() {
            fake.fail_at_mutation(n);
        }
        let _ = pass(&cx(&w, &f), &|_| {}).await.unwrap();
        for _ in 0..3 {
            let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
            if r.plan.steps.is_empty() {
                break;
            }
        }
        let (_, p) = plan_only(&cx(&w, &f)).await.unwrap();
        assert!(!p.has_changes(), "n={n}: {:#?}", p.steps);
        let counts = replica_counts(&w);
        assert_eq!(counts.len(), 3, "n={n}: {counts:?}");
        assert!(
            counts.values().all(|c| *c == 1),
            "n={n}: duplicates {counts:?}"
        );
        for fake in w.fakes.values() {
            for c in fake.containers() {
                assert_ne!(
                    fake.spec_of(&c.id).unwrap().image,
                    "web:0",
                    "n={n}: old copy left"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_unreachable_node_is_left_alone_and_the_others_converge() {
    let w = world(2);
    let f = fleet(BASE);
    pass(&cx(&w, &f), &|_| {}).await.unwrap();
    w.fakes["node2"].set_unreachable(true);
    let f2 = fleet(&BASE.replace("image: web:1", "image: web:2"));
    let r = pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    assert!(r.plan.unreachable.contains_key("node2"));
    assert!(
        r.plan.steps.iter().all(|s| s.node == "node1"),
        "{:#?}",
        r.plan.steps
    );
    // web replica on node2 is kept there (last known), not duplicated onto node1.
    assert_eq!(
        w.fakes["node1"]
            .containers()
            .iter()
            .filter(|c| c.label(labels::SERVICE) == Some("web"))
            .count(),
        1
    );
    w.fakes["node2"].set_unreachable(false);
    pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    let (_, p) = plan_only(&cx(&w, &f2)).await.unwrap();
    assert!(!p.has_changes());
    assert!(replica_counts(&w).values().all(|c| *c == 1));
}

#[tokio::test]
async fn a_memory_change_on_a_podman_node_converges_by_recreate_and_then_changes_nothing() {
    let w = world(2);
    w.fakes["node1"].set_engine_kind(fleetctl::container::EngineKind::Podman);
    let f = fleet(BASE);
    pass(&cx(&w, &f), &|_| {}).await.unwrap();
    let redis = |w: &World| {
        w.fakes["node1"]
            .containers()
            .into_iter()
            .filter(|c| c.label(labels::SERVICE) == Some("redis"))
            .collect::<Vec<_>>()
    };
    let old = redis(&w);
    assert_eq!(old.len(), 1);
    let f2 = fleet(&BASE.replace("memory: 128MiB", "memory: 256MiB"));
    let r = pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert_eq!(r.plan.steps.len(), 1, "{:#?}", r.plan.steps);
    let s = &r.plan.steps[0];
    assert!(matches!(s.action, Action::Replace { .. }), "{s:?}");
    assert_eq!(
        s.reason,
        "memory 128MiB → 256MiB, recreate stop-first (podman has no in-place update)"
    );
    let new = redis(&w);
    assert_eq!(new.len(), 1, "one new container, the old one gone");
    assert_ne!(new[0].id, old[0].id);
    assert_eq!(
        w.fakes["node1"]
            .spec_of(&new[0].id)
            .unwrap()
            .resources
            .memory,
        256 << 20
    );
    assert!(
        w.fakes["node1"]
            .mutating_calls()
            .iter()
            .all(|c| c.op != "update"),
        "{:?}",
        w.fakes["node1"].mutating_calls()
    );
    // The second apply changes nothing.
    for fake in w.fakes.values() {
        fake.clear_calls();
    }
    let r = pass(&cx(&w, &f2), &|_| {}).await.unwrap();
    assert!(r.plan.steps.is_empty(), "{:#?}", r.plan.steps);
    for fake in w.fakes.values() {
        assert!(fake.mutating_calls().is_empty());
    }
}

#[tokio::test]
async fn a_podman_engine_refuses_an_in_place_update() {
    let w = world(1);
    let fake = &w.fakes["node1"];
    fake.set_engine_kind(fleetctl::container::EngineKind::Podman);
    assert_eq!(
        fake.engine_kind(),
        Some(fleetctl::container::EngineKind::Podman)
    );
    let info = fake.engine_info().await.unwrap();
    assert_eq!(info.kind, fleetctl::container::EngineKind::Podman);
    pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    let id = fake.containers()[0].id.clone();
    let e = fake
        .update_container(
            &id,
            &fleetctl::transport::ContainerUpdate {
                resources: Default::default(),
                restart: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, fleetctl::transport::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("update container"), "{e}");
}

#[tokio::test]
async fn removing_a_limit_recreates_because_the_engine_cannot_do_it_in_place() {
    let w = world(2);
    let with_cpus = BASE.replace(
        "resources: {memory: 256MiB}",
        "resources: {memory: 256MiB, cpus: 0.5}",
    );
    pass(&cx(&w, &fleet(&with_cpus)), &|_| {}).await.unwrap();
    let r = pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert_eq!(r.plan.steps.len(), 2);
    for s in &r.plan.steps {
        assert!(
            matches!(
                s.action,
                Action::Replace {
                    order: fleetctl::manifest::UpdateOrder::StopFirst,
                    ..
                }
            ),
            "{s:?}"
        );
        assert!(
            s.reason
                .starts_with("cpus 0.5 → none, recreate (stop-first"),
            "{}",
            s.reason
        );
    }
    let (_, p) = plan_only(&cx(&w, &fleet(BASE))).await.unwrap();
    assert!(!p.has_changes(), "{:#?}", p.steps);
    assert!(replica_counts(&w).values().all(|c| *c == 1));
}

/// redis (pinned to node1, host port 6379) recreated start-first.
fn start_first_redis(env: &str) -> DesiredFleet {
    fleet(&BASE.replace(
        "  ports: ['6379:6379']\n",
        &format!("  ports: ['6379:6379']\n  update: {{order: start-first}}\n  env: {{V: {env}}}\n"),
    ))
}

#[tokio::test]
async fn start_first_cannot_bind_a_port_the_old_container_holds_so_it_recreates_stop_first() {
    let w = world(2);
    pass(&cx(&w, &start_first_redis("a")), &|_| {})
        .await
        .unwrap();
    let r = pass(&cx(&w, &start_first_redis("b")), &|_| {})
        .await
        .unwrap();
    assert!(r.exec.outcomes.iter().all(|o| o.ok), "{:?}", r.exec);
    let step = r
        .plan
        .steps
        .iter()
        .find(|s| s.container.contains("redis"))
        .unwrap();
    assert!(
        step.reason
            .ends_with("recreate (stop-first: the old container holds host port 6379)"),
        "{}",
        step.reason
    );
    let redis: Vec<_> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .collect();
    assert_eq!(redis.len(), 1);
    assert_eq!(redis[0].state, fleetctl::container::RunState::Running);
}

#[tokio::test]
async fn a_created_replacement_whose_port_the_old_copy_holds_starts_after_it_goes() {
    // An interrupted start-first recreate: the new container was created, the old one runs on
    // with the host port. The next pass removes the old copy first, then starts the new one.
    let w = world(2);
    pass(&cx(&w, &start_first_redis("a")), &|_| {})
        .await
        .unwrap();
    let f = start_first_redis("b");
    let spec = fleetctl::desired::service_container(&f, &f.services["redis"], 0, "node1");
    w.fakes["node1"].create_container(&spec).await.unwrap();
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.outcomes.iter().all(|o| o.ok), "{:?}", r.exec);
    let redis: Vec<&fleetctl::plan::Step> = r
        .plan
        .steps
        .iter()
        .filter(|s| s.container.contains("redis"))
        .collect();
    assert_eq!(redis.len(), 2, "{redis:?}");
    assert!(matches!(redis[0].action, Action::Remove { .. }));
    assert!(
        redis[0]
            .reason
            .ends_with("removed first: it holds host port 6379"),
        "{}",
        redis[0].reason
    );
    assert!(matches!(redis[1].action, Action::Start { .. }));
    let left: Vec<_> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, spec.name);
    assert_eq!(left[0].state, fleetctl::container::RunState::Running);
    // Converged: nothing more to do.
    let (_, p) = plan_only(&cx(&w, &f)).await.unwrap();
    assert!(!p.has_changes(), "{p:?}");
}

/// Issue 12, bug 2: a replica whose create failed keeps its recorded node. Before the fix the
/// settle step looked for failed groups named `service/NAME`, but a create runs in the group
/// `service/NAME/REPLICA`, so the failed node was recorded as the replica's home.
#[tokio::test]
async fn a_failed_create_keeps_the_old_replica_record_issue_12() {
    let w = world(2);
    let one = BASE.replace("replicas: 2", "replicas: 1");
    let f = fleet(&one);
    pass(&cx(&w, &f), &|_| {}).await.unwrap();
    let home = w.store.replica_nodes().unwrap()[&("web".to_string(), 0)].clone();
    let other = if home == "node1" { "node2" } else { "node1" };
    // The replica's container is gone and its node takes no new work, so the planner creates
    // it on the other node, where its image cannot be pulled.
    let c = w.fakes[&home]
        .containers()
        .into_iter()
        .find(|c| c.label(labels::SERVICE) == Some("web"))
        .unwrap();
    w.fakes[&home].remove_by_hand(&c.id);
    w.store
        .update_node_condition(&home, 0, |c| c.cordoned = true)
        .unwrap();
    w.fakes[other].set_images(&["redis:7"]);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    let create = r
        .plan
        .steps
        .iter()
        .position(|s| matches!(s.action, Action::Create { .. }) && s.node == other)
        .expect("web is created on the other node");
    assert!(!r.exec.outcomes[create].ok, "{:?}", r.exec);
    assert_eq!(
        w.store.replica_nodes().unwrap()[&("web".to_string(), 0)],
        home,
        "a failed create must not move the replica's record"
    );
}

/// Where the fleet's network cannot be joined (here: a network of its name that is not
/// fleetctl's), nothing that needs it is created or replaced there — an old container is never
/// stopped for a replacement that cannot start — and the apply says why; the other nodes
/// converge.
#[tokio::test]
async fn nothing_is_created_or_replaced_where_the_fleets_network_cannot_be_joined() {
    use fleetctl::container::{NetworkDriver, NetworkSpec};
    let w = world(2);
    let f = fleet(BASE);
    w.fakes["node1"]
        .create_network(&NetworkSpec {
            name: "demo-bridge".into(),
            driver: NetworkDriver::Bridge,
            labels: Default::default(),
            subnet: None,
            mtu: None,
            encrypted: false,
        })
        .await
        .unwrap();
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(
        w.fakes["node1"].containers().is_empty(),
        "nothing on node1: {:?}",
        w.fakes["node1"].containers()
    );
    assert!(!w.fakes["node2"].containers().is_empty());
    let held: Vec<String> = r
        .plan
        .network
        .problems
        .iter()
        .map(ToString::to_string)
        .filter(|p| p.contains("not created or replaced"))
        .collect();
    assert!(!held.is_empty(), "{:?}", r.plan.network.problems);
    assert!(
        held[0].contains("a network named demo-bridge is not fleetctl's"),
        "{held:?}"
    );
}

/// SPEC §11: every image a change needs is made present before anything is stopped. An image
/// that cannot be had stops nothing — not a start-first replica, not a stop-first one (redis
/// publishes a host port) — and is said once per node and image, however many steps need it.
#[tokio::test]
async fn an_image_that_cannot_be_had_stops_nothing_and_is_said_once_per_node() {
    let w = world(2);
    let base = BASE.replace("replicas: 2", "replicas: 2\n  placement: {nodes: [node1]}");
    pass(&cx(&w, &fleet(&base)), &|_| {}).await.unwrap();
    let before = ids(&w);
    for f in w.fakes.values() {
        f.set_images(&["web:1", "redis:7"]);
    }
    let changed = base.replace("web:1", "web:2").replace("redis:7", "redis:8");
    let mark = w.fakes["node1"].calls().len();
    let r = pass(&cx(&w, &fleet(&changed)), &|_| {}).await.unwrap();
    assert!(
        r.plan.steps.iter().any(|s| matches!(
            &s.action,
            Action::Replace {
                order: fleetctl::manifest::UpdateOrder::StopFirst,
                ..
            }
        )),
        "redis is replaced stop-first: {:?}",
        r.plan.steps
    );
    assert_eq!(ids(&w), before, "every old container is still there");
    let node1 = &w.fakes["node1"];
    let calls = &node1.calls()[mark..];
    assert!(
        !calls
            .iter()
            .any(|c| matches!(c.op, "stop" | "remove" | "create")),
        "{calls:?}"
    );
    let mut said: Vec<&str> = r
        .exec
        .outcomes
        .iter()
        .filter(|o| !o.ok && !o.skipped)
        .filter_map(|o| o.error.as_deref())
        .collect();
    said.sort();
    assert_eq!(
        said,
        [
            "node node1: image redis:8 cannot be pulled: registry docker.io: not found (fake)",
            "node node1: image web:2 cannot be pulled: registry docker.io: not found (fake)",
        ]
    );
    assert_eq!(
        r.exec.outcomes.iter().filter(|o| o.skipped).count(),
        1,
        "the second web replica's step is skipped, not said again: {:?}",
        r.exec.outcomes
    );
}

/// Issue 15: a failed pull is said once per apply, not once per pass — the passes of one apply
/// share its memo (pins and pull outcomes).
#[tokio::test]
async fn a_failed_pull_is_said_once_across_the_passes_of_one_apply() {
    let w = world(2);
    let base = BASE.replace("replicas: 2", "replicas: 1\n  placement: {nodes: [node1]}");
    for f in w.fakes.values() {
        f.set_images(&["redis:7"]);
    }
    let f = fleet(&base);
    let mut c = cx(&w, &f);
    c.exec.memo = Some(fleetctl::execute::ApplyMemo::new());
    let first = pass(&c, &|_| {}).await.unwrap();
    let second = pass(&c, &|_| {}).await.unwrap();
    let said = |r: &fleetctl::reconcile::PassReport| {
        r.exec
            .outcomes
            .iter()
            .filter(|o| !o.ok && !o.skipped)
            .count()
    };
    assert_eq!(said(&first), 1, "{:?}", first.exec.outcomes);
    assert_eq!(said(&second), 0, "{:?}", second.exec.outcomes);
    assert!(second.exec.outcomes.iter().any(|o| o.skipped));
    let pulls = w.fakes["node1"]
        .calls()
        .iter()
        .filter(|c| c.op == "pull")
        .count();
    assert_eq!(pulls, 1, "pulled once per apply");
}

/// A pull that failed because the registry was out of reach is tried again by the next pass of
/// the same apply (only answers are kept in its memo).
#[tokio::test]
async fn an_unreachable_registry_is_tried_again_by_the_next_pass() {
    use fleetctl::transport::fake::FakeRegistry;
    let w = world(2);
    let base = BASE
        .replace("replicas: 2", "replicas: 1\n  placement: {nodes: [node1]}")
        .replace("image: web:1", "image: reg.example:5000/web:1");
    let reg = FakeRegistry::new();
    reg.push("reg.example:5000/web:1", "sha256:aaa");
    reg.set_unreachable("reg.example:5000", true);
    for f in w.fakes.values() {
        f.set_images(&["redis:7"]);
        f.set_registry(&reg);
    }
    let f = fleet(&base);
    let mut c = cx(&w, &f);
    c.exec.memo = Some(fleetctl::execute::ApplyMemo::new());
    let first = pass(&c, &|_| {}).await.unwrap();
    assert!(
        first.exec.outcomes.iter().any(|o| !o.ok && !o.skipped),
        "{:?}",
        first.exec.outcomes
    );
    reg.set_unreachable("reg.example:5000", false);
    let second = pass(&c, &|_| {}).await.unwrap();
    assert!(second.exec.ok(), "{:?}", second.exec.outcomes);
}

/// `BASE` with redis given a secret in its environment and as a file, and web a config file
/// (as the manifests' `env: {X: {secret: …}}`, `secrets:` and `configs:` give them), the
/// secret's value being `password` and the config's content `config`.
fn with_files(password: &str, config: &str) -> DesiredFleet {
    use fleetctl::container::SecretValue;
    use fleetctl::manifest::spec::{ConfigMount, SecretMount};
    let mut f = fleet(BASE);
    let redis = &mut f.services.get_mut("redis").unwrap().files;
    redis
        .secret_env
        .insert("REDIS_PASSWORD".into(), "redis-password".into());
    redis.secrets.push(SecretMount {
        name: "redis-password".into(),
        target: "/run/secrets/redis".into(),
        mode: 0o400,
        uid: 999,
        gid: 999,
    });
    f.services
        .get_mut("web")
        .unwrap()
        .files
        .configs
        .push(ConfigMount {
            name: "./conf/web.conf".into(),
            source: "/manifests/conf/web.conf".into(),
            target: "/etc/web.conf".into(),
            mode: 0o444,
            uid: 0,
            gid: 0,
            content: config.as_bytes().to_vec(),
            sha256: String::new(),
        });
    f.secret_values = fleetctl::secrets::SecretValues::from_values(
        b"fleet key",
        [(
            "redis-password".to_string(),
            SecretValue::new(password.as_bytes().to_vec()),
        )],
    );
    f
}

/// (node, id) of the running containers of service `svc`.
fn running_of(w: &World, svc: &str) -> BTreeSet<(String, String)> {
    w.fakes
        .iter()
        .flat_map(|(n, f)| {
            f.containers()
                .into_iter()
                .filter(|c| c.label(labels::SERVICE) == Some(svc))
                .map(move |c| (n.clone(), c.id))
        })
        .collect()
}

#[tokio::test]
async fn secrets_and_configs_arrive_before_the_start_and_a_change_replaces_exactly_their_users() {
    let w = world(2);
    let f = with_files("pw-one", "listen 80;");
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    let node1 = &w.fakes["node1"];
    let (_, redis) = running_of(&w, "redis").into_iter().next().unwrap();
    let archive = node1
        .get_archive(&redis, "/run/secrets/redis")
        .await
        .unwrap();
    assert_eq!(fleetctl::archive::first_file(&archive).unwrap(), b"pw-one");
    let spec = node1.spec_of(&redis).unwrap();
    assert_eq!(spec.secret_env["REDIS_PASSWORD"].value.expose(), b"pw-one");
    assert!(
        !spec.env.contains_key("REDIS_PASSWORD"),
        "not among the plain variables"
    );
    // The files were placed before the container first started.
    let calls = node1.calls();
    let put = calls
        .iter()
        .position(|c| c.op == "put-archive" && c.object == redis)
        .expect("files placed");
    let start = calls
        .iter()
        .position(|c| c.op == "start" && c.object == redis)
        .expect("started");
    assert!(put < start, "{calls:?}");
    for (n, id) in running_of(&w, "web") {
        let a = w.fakes[&n].get_archive(&id, "/etc/web.conf").await.unwrap();
        assert_eq!(fleetctl::archive::first_file(&a).unwrap(), b"listen 80;");
    }
    // No value in the labels, the plan or the spec's serialized form.
    let shown = format!(
        "{:?} {} {:?}",
        spec,
        serde_json::to_string(&spec).unwrap(),
        r.plan.steps
    );
    assert!(!shown.contains("pw-one"), "{shown}");

    // The same values again: nothing to do, no mutating call.
    for fake in w.fakes.values() {
        fake.clear_calls();
    }
    let r = pass(&cx(&w, &with_files("pw-one", "listen 80;")), &|_| {})
        .await
        .unwrap();
    assert!(r.plan.steps.is_empty(), "{:#?}", r.plan.steps);
    assert!(w.fakes.values().all(|f| f.mutating_calls().is_empty()));

    // A new secret value replaces redis only, and the plan says which secret.
    let web = running_of(&w, "web");
    let r = pass(&cx(&w, &with_files("pw-two", "listen 80;")), &|_| {})
        .await
        .unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert_eq!(r.plan.steps.len(), 1, "{:#?}", r.plan.steps);
    assert!(
        r.plan.steps[0]
            .reason
            .starts_with("secret redis-password changed"),
        "{}",
        r.plan.steps[0].reason
    );
    assert!(!format!("{:?}", r.plan.steps).contains("pw-two"));
    assert_eq!(running_of(&w, "web"), web);
    let (_, redis2) = running_of(&w, "redis").into_iter().next().unwrap();
    assert_ne!(redis2, redis);
    let a = node1
        .get_archive(&redis2, "/run/secrets/redis")
        .await
        .unwrap();
    assert_eq!(fleetctl::archive::first_file(&a).unwrap(), b"pw-two");

    // A new config content replaces web's replicas only.
    let redis_now = running_of(&w, "redis");
    let r = pass(&cx(&w, &with_files("pw-two", "listen 8080;")), &|_| {})
        .await
        .unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert_eq!(r.plan.steps.len(), 2, "{:#?}", r.plan.steps);
    assert!(
        r.plan
            .steps
            .iter()
            .all(|s| s.reason.starts_with("config ./conf/web.conf changed")),
        "{:#?}",
        r.plan.steps
    );
    assert_eq!(running_of(&w, "redis"), redis_now);
}

#[tokio::test]
async fn a_container_whose_files_cannot_be_placed_is_removed_and_never_started_without_them() {
    let w = world(2);
    let f = with_files("pw-one", "listen 80;");
    w.fakes["node1"].refuse_archives(true);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(!r.exec.ok());
    // redis (node1 only) could not get its secret: no container of it is left to be started.
    assert!(
        running_of(&w, "redis").is_empty(),
        "{:?}",
        w.fakes["node1"].containers()
    );
    w.fakes["node1"].refuse_archives(false);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    let (_, redis) = running_of(&w, "redis").into_iter().next().unwrap();
    let a = w.fakes["node1"]
        .get_archive(&redis, "/run/secrets/redis")
        .await
        .unwrap();
    assert_eq!(fleetctl::archive::first_file(&a).unwrap(), b"pw-one");
}

#[tokio::test]
async fn a_changed_knob_recreates_only_that_service_and_says_which() {
    let w = world(2);
    let with = |nofile: &str| {
        BASE.replace(
            "  env: {MODE: prod}\n",
            &format!(
                "  env: {{MODE: prod}}\n  logging: {{maxSize: 10MiB, maxFiles: 14}}\n  \
                 ulimits: {{nofile: {nofile}}}\n  sysctls: {{net.core.somaxconn: 4096}}\n"
            ),
        )
    };
    pass(&cx(&w, &fleet(&with("65536"))), &|_| {})
        .await
        .unwrap();
    let web = w.fakes["node1"]
        .containers()
        .into_iter()
        .find(|c| c.label(labels::SERVICE) == Some("web"))
        .unwrap();
    let d = w.fakes["node1"].inspect_container(&web.id).await.unwrap();
    assert_eq!(d.spec.knobs.log_max_size, Some(10 << 20));
    assert_eq!(d.spec.knobs.ulimits["nofile"].hard, 65536);
    assert_eq!(d.spec.knobs.sysctls["net.core.somaxconn"], "4096");
    // Applied again, nothing changes.
    let (_, again) = plan_only(&cx(&w, &fleet(&with("65536")))).await.unwrap();
    assert!(again.steps.is_empty(), "{:?}", again.steps);

    let redis_before: Vec<String> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .map(|c| c.id)
        .collect();
    let r = pass(&cx(&w, &fleet(&with("1024"))), &|_| {}).await.unwrap();
    assert!(r.exec.ok());
    assert_eq!(r.plan.steps.len(), 2, "{:?}", r.plan.steps);
    for s in &r.plan.steps {
        assert!(matches!(s.action, Action::Replace { .. }), "{s:?}");
        assert!(s.reason.starts_with("ulimits changed"), "{}", s.reason);
    }
    let redis_after: Vec<String> = w.fakes["node1"]
        .containers()
        .into_iter()
        .filter(|c| c.label(labels::SERVICE) == Some("redis"))
        .map(|c| c.id)
        .collect();
    assert_eq!(redis_before, redis_after);

    // Dropping the knobs recreates too: the engine cannot undo them in place.
    let r = pass(&cx(&w, &fleet(BASE)), &|_| {}).await.unwrap();
    assert_eq!(r.plan.steps.len(), 2);
    assert!(
        r.plan.steps[0]
            .reason
            .starts_with("logging changed, ulimits changed, sysctls changed"),
        "{}",
        r.plan.steps[0].reason
    );
}

/// The path `fleetctl rollback` takes without a controller, on the fake engines: revision 1 is
/// recorded from an apply that read a config file; v2 changes the command and the file; the
/// file is then deleted from disk. Revision 1 loads from the store alone (its config content
/// with it), and a pass over it runs v1's command on every replica again.
#[tokio::test]
async fn a_revision_loads_from_the_store_alone_and_a_pass_over_it_runs_it_again() {
    use fleetctl::manifest::{Source, parse};
    use fleetctl::revisions;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("app.conf");
    let name = dir.path().join("fleet.yaml").display().to_string();
    let text = |cmd: &str| {
        format!(
            "apiVersion: fleet/v1
kind: Fleet
metadata: {{name: demo}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node1}}
spec: {{capacity: {{cpus: 4, memory: 8GiB}}}}
---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node2}}
spec: {{capacity: {{cpus: 4, memory: 8GiB}}}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec:
  image: web:1
  replicas: 2
  resources: {{memory: 64MiB}}
  command: [serve, {cmd}]
  configs: [{{source: ./app.conf, target: /etc/app.conf}}]
"
        )
    };
    let load = |t: String| {
        parse(&[Source {
            name: name.clone(),
            text: t,
        }])
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let w = world(2);
    let commands = |w: &World| {
        let mut out: Vec<String> = w
            .fakes
            .values()
            .flat_map(|f| {
                f.containers()
                    .into_iter()
                    .filter_map(|c| f.spec_of(&c.id)?.command)
                    .map(|c| c.join(" "))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    };
    let apply = async |w: &World, loaded: &fleetctl::manifest::Loaded, rollback_of| {
        let r = pass(&cx(w, &loaded.fleet), &|_| {}).await.unwrap();
        assert!(r.exec.ok(), "{:?}", r.exec);
        let content =
            revisions::content_of(loaded, &loaded.fleet, &w.store.image_digests().unwrap());
        revisions::record(
            &w.store,
            None,
            "test",
            &content,
            &loaded.fleet,
            rollback_of,
            0,
        )
        .unwrap()
    };

    std::fs::write(&conf, "a = 1\n").unwrap();
    let v1 = load(text("--v1"));
    assert_eq!(apply(&w, &v1, None).await, Some(1));
    std::fs::write(&conf, "a = 2\n").unwrap();
    let v2 = load(text("--v2"));
    assert_eq!(apply(&w, &v2, None).await, Some(2));
    assert_eq!(commands(&w), ["serve --v2", "serve --v2"]);

    std::fs::remove_file(&conf).unwrap();
    let rev = w.store.revision(1).unwrap().unwrap();
    let back = revisions::load(&rev).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back.fleet.services["web"].files.configs[0].content,
        b"a = 1\n"
    );
    assert_eq!(back.sources_hash(), rev.content.hash);
    assert_eq!(apply(&w, &back, Some(1)).await, Some(3));
    assert_eq!(commands(&w), ["serve --v1", "serve --v1"]);
    let all = w.store.revisions().unwrap();
    assert_eq!(all[2].rollback_of, Some(1));
    assert!(
        all[2]
            .summary
            .starts_with("rollback to revision 1: web: command"),
        "{}",
        all[2].summary
    );
}

/// An overlay fleet with a Podman node (issue 19): the Podman node never joins the swarm; the
/// fleet's network there is a bridge of its own, which its containers attach to, said in the
/// plan as a notice that keeps nothing from converging; the Docker nodes are on the overlay as
/// before. A second apply changes nothing.
#[tokio::test]
async fn a_podman_node_of_an_overlay_fleet_gets_a_bridge_of_its_own_and_a_second_pass_changes_nothing()
 {
    use fleetctl::container::EngineKind;
    use fleetctl::network::NetProblem;
    let text = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
spec: {network: {mode: overlay}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec: {ssh: {host: 10.0.0.1}, capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2}
spec: {ssh: {host: 10.0.0.2}, capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node3}
spec: {ssh: {host: 10.0.0.3}, docker: {engine: podman}, capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: 3
  resources: {memory: 256MiB}
  ports: ['8080:80']
";
    let w = world(3);
    w.fakes["node3"].set_engine_kind(EngineKind::Podman);
    let f = fleet(text);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert!(r.exec.network.iter().all(|o| o.ok), "{:?}", r.exec.network);
    let own: Vec<String> = r
        .plan
        .network
        .problems
        .iter()
        .filter(|p| matches!(p, NetProblem::OwnBridge { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        own,
        [
            "node node3 runs podman, which cannot join the swarm: its containers are on a bridge network of their own, demo-bridge (names resolve on node3 only; other nodes' services through published ports, outside the overlay and its encryption)"
        ]
    );
    // node3 made no swarm call and has the bridge; its replica is on it, the others on the
    // overlay.
    assert!(
        w.fakes["node3"]
            .calls()
            .iter()
            .all(|c| !c.op.starts_with("swarm")),
        "{:?}",
        w.fakes["node3"].calls()
    );
    let nets = w.fakes["node3"]
        .list_networks(&Default::default())
        .await
        .unwrap();
    assert!(
        nets.iter()
            .any(|n| n.name == "demo-bridge" && n.driver == "bridge"),
        "{nets:?}"
    );
    for (node, net) in [
        ("node1", "demo"),
        ("node2", "demo"),
        ("node3", "demo-bridge"),
    ] {
        let cs = w.fakes[node].containers();
        assert_eq!(cs.len(), 1, "{node}: {cs:?}");
        assert_eq!(cs[0].networks, [net.to_string()], "{node}");
    }

    // Converged: the notice is no problem. A second pass plans and changes nothing.
    let before = ids(&w);
    for fake in w.fakes.values() {
        fake.clear_calls();
    }
    let (observed, p) = plan_only(&cx(&w, &f)).await.unwrap();
    assert!(!p.has_changes(), "{:#?} {:#?}", p.steps, p.network.steps);
    let judged = fleetctl::reconcile::convergence(&observed, &p, &[]);
    assert!(judged.placement.is_empty(), "{:?}", judged.placement);
    // Said with every apply, as a warning; declared as it answers, no engine warning.
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(
        fleetctl::converge::warnings(&p),
        [format!("network: {}", own[0])]
    );
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.plan.steps.is_empty() && r.plan.network.steps.is_empty());
    assert_eq!(ids(&w), before);
    for fake in w.fakes.values() {
        assert!(
            fake.mutating_calls().is_empty(),
            "{:?}",
            fake.mutating_calls()
        );
    }
}

/// A node declared Podman whose engine answers as Docker: the plan warns, naming the node and
/// both engines, and plans by the engine found (it joins the swarm, its containers are on the
/// overlay); a node that answers as declared is said nothing about.
#[tokio::test]
async fn an_engine_other_than_declared_is_a_warning_and_the_one_found_is_planned_by() {
    let text = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
spec: {network: {mode: overlay}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec: {ssh: {host: 10.0.0.1}, capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2}
spec: {ssh: {host: 10.0.0.2}, docker: {engine: podman}, capacity: {cpus: 4, memory: 8GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: web:1, replicas: 2, resources: {memory: 256MiB}}
";
    let w = world(2);
    let f = fleet(text);
    let (_, p) = plan_only(&cx(&w, &f)).await.unwrap();
    assert_eq!(
        p.warnings,
        [
            "node node2 is declared podman (spec.docker.engine) but its engine answers as docker 20.10.24: fleetctl plans by the engine found"
        ]
    );
    assert_eq!(fleetctl::converge::warnings(&p), p.warnings);
    let r = pass(&cx(&w, &f), &|_| {}).await.unwrap();
    assert!(r.exec.ok(), "{:?}", r.exec);
    assert!(
        w.fakes["node2"]
            .calls()
            .iter()
            .any(|c| c.op == "swarm-join"),
        "{:?}",
        w.fakes["node2"].calls()
    );
    for node in ["node1", "node2"] {
        let cs = w.fakes[node].containers();
        assert_eq!(cs.len(), 1, "{node}: {cs:?}");
        assert_eq!(cs[0].networks, ["demo".to_string()], "{node}");
    }
    // Declared as it answers: nothing said.
    let f = fleet(&text.replace("docker: {engine: podman}, ", ""));
    let (_, p) = plan_only(&cx(&w, &f)).await.unwrap();
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

//! Unit tests of [`plan`] itself, over hand-built snapshots: each shows one decision with its
//! step, group and reason. The pipeline around it (observe, execute, settle) is shown by
//! tests/reconcile_fake.rs, and its invariants over random fleets by tests/plan_props.rs.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::container::{ContainerDetails, ContainerRecord, ContainerSpec, RunState};
use crate::desired::service_container;
use crate::manifest::{Source, parse};
use crate::store::PlugState;

const NODES: &str = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: t}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: n1}
spec: {capacity: {memory: 4GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: n2}
spec: {capacity: {memory: 4GiB}}
";

fn fleet(services: &str) -> DesiredFleet {
    parse(&[Source {
        name: "t.yaml".into(),
        text: format!("{NODES}{services}"),
    }])
    .unwrap_or_else(|e| panic!("{e}"))
    .fleet
}

fn web(image: &str, replicas: u32, extra: &str) -> String {
    format!(
        "---\napiVersion: fleet/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  image: {image}\n  replicas: {replicas}\n  resources: {{memory: 256MiB}}\n{extra}"
    )
}

/// Everything a snapshot borrows, owned.
struct World {
    fleet: DesiredFleet,
    observed: ObservedFleet,
    conditions: BTreeMap<String, NodeCondition>,
    plugs: Vec<PlugRecord>,
    leases: Vec<(String, u16, String)>,
    last_known: BTreeMap<(String, u32), String>,
    lost: BTreeSet<String>,
    evict: BTreeSet<String>,
    created: i64,
}

impl World {
    /// Every node reachable and empty, nothing recorded.
    fn new(fleet: DesiredFleet) -> World {
        let observed = ObservedFleet {
            networks_observed: false,
            swarm: Default::default(),
            engines: Default::default(),
            nodes: fleet
                .nodes
                .keys()
                .map(|n| {
                    let obs = NodeObservation::Reachable {
                        networks: Vec::new(),
                        containers: Vec::new(),
                        foreign_ports: BTreeSet::new(),
                        foreign_containers: 0,
                        engine: None,
                        measured_memory: None,
                    };
                    (n.clone(), obs)
                })
                .collect(),
            tombstones: Default::default(),
            marks: Default::default(),
        };
        World {
            fleet,
            observed,
            conditions: BTreeMap::new(),
            plugs: Vec::new(),
            leases: Vec::new(),
            last_known: BTreeMap::new(),
            lost: BTreeSet::new(),
            evict: BTreeSet::new(),
            created: 0,
        }
    }

    /// A container of `spec` on `node` in `state`, as observation reports it; returns its id.
    fn observe(&mut self, node: &str, spec: ContainerSpec, state: RunState) -> String {
        self.created += 1;
        let id = format!("id{}", self.created);
        let record = ContainerRecord {
            networks: Vec::new(),
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            state,
            health: None,
            created: self.created,
            host_ports: if state == RunState::Running {
                spec.ports.iter().map(|p| p.host_port).collect()
            } else {
                Vec::new()
            },
        };
        let details = ContainerDetails {
            record: record.clone(),
            spec,
            restart_count: 0,
            exit_code: 0,
            oom_killed: false,
            started_at: None,
            finished_at: None,
        };
        match self.observed.nodes.get_mut(node) {
            Some(NodeObservation::Reachable { containers, .. }) => containers.push(Observed {
                record,
                details: Some(details),
                memory_used: None,
            }),
            _ => panic!("{node} is not reachable"),
        }
        id
    }

    /// Replica `replica` of `svc` running on `node` as `of` (a fleet, maybe an older one)
    /// describes it.
    fn running(&mut self, of: &DesiredFleet, svc: &str, replica: u32, node: &str) -> String {
        let spec = service_container(of, &of.services[svc], replica, node);
        self.observe(node, spec, RunState::Running)
    }

    fn unreachable(&mut self, node: &str) {
        self.observed.nodes.insert(
            node.into(),
            NodeObservation::Unreachable {
                error: "connection refused".into(),
                permanent: false,
            },
        );
    }

    /// `fleetctl cordon NODE`.
    fn cordon(&mut self, node: &str) {
        self.conditions.entry(node.into()).or_default().cordoned = true;
    }

    /// `fleetctl drain NODE`, under way.
    fn drain(&mut self, node: &str) {
        let c = self.conditions.entry(node.into()).or_default();
        c.cordoned = true;
        c.draining = true;
    }

    fn plan(&self) -> Plan {
        plan(&Snapshot {
            fleet: &self.fleet,
            observed: &self.observed,
            conditions: &self.conditions,
            plugs: &self.plugs,
            port_leases: &self.leases,
            last_known: &self.last_known,
            lost: &self.lost,
            evict: &self.evict,
        })
    }
}

/// (verb, node, group, reason) of every step, in order. The group's words are leaked, a few
/// bytes per test, so that expectations stay plain string literals.
fn steps(p: &Plan) -> Vec<(&'static str, &str, &'static str, &str)> {
    p.steps
        .iter()
        .map(|s| {
            (
                s.action.verb(&s.node),
                s.node.as_str(),
                &*Box::leak(s.group.to_string().into_boxed_str()),
                s.reason.as_str(),
            )
        })
        .collect()
}

#[test]
fn a_new_service_creates_every_replica_each_in_its_own_group() {
    let w = World::new(fleet(&web("web:1", 2, "")));
    let p = w.plan();
    let mut got = steps(&p);
    got.sort();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "create");
    assert_eq!(got[0].2, "service/web/0");
    assert_eq!(got[0].3, "replica 0 of web is missing");
    assert_eq!(got[1].2, "service/web/1");
    assert_eq!(p.replica_nodes.len(), 2);
    assert!(p.is_complete());
}

#[test]
fn observed_equal_to_desired_plans_nothing_and_lists_every_container_unchanged() {
    let f = fleet(&web("web:1", 2, ""));
    let mut w = World::new(f.clone());
    let first = w.plan();
    for ((svc, replica), node) in &first.replica_nodes {
        w.running(&f, svc, *replica, node);
    }
    let p = w.plan();
    assert!(!p.has_changes(), "{:#?}", p.steps);
    assert_eq!(p.unchanged.len(), 2);
}

#[test]
fn scaling_down_removes_the_replicas_beyond_replicas_as_strays() {
    let three = fleet(&web("web:1", 3, ""));
    let mut w = World::new(fleet(&web("web:1", 2, "")));
    w.running(&three, "web", 0, "n1");
    w.running(&three, "web", 1, "n2");
    w.running(&three, "web", 2, "n1");
    let p = w.plan();
    assert_eq!(p.steps.len(), 1, "{:#?}", p.steps);
    let s = &p.steps[0];
    assert_eq!(s.action.verb(&s.node), "remove");
    assert_eq!(s.object, Object::Stray);
    assert!(s.container.starts_with("t-web-2-"), "{}", s.container);
    assert_eq!(s.reason, "replica 2 is beyond replicas: 2");
    assert_eq!(s.group.to_string(), format!("stray/{}", s.container));
}

#[test]
fn a_changed_image_recreates_each_replica_in_place_rolling_one_at_a_time() {
    let old = fleet(&web("web:1", 2, ""));
    let mut w = World::new(fleet(&web("web:2", 2, "")));
    w.running(&old, "web", 0, "n1");
    w.running(&old, "web", 1, "n2");
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![
            (
                "recreate",
                "n1",
                "service/web",
                "image web:1 → web:2, recreate (start-first)"
            ),
            (
                "recreate",
                "n2",
                "service/web",
                "image web:1 → web:2, recreate (start-first)"
            ),
        ]
    );
    assert!(p.steps.iter().all(|s| matches!(
        s.action,
        Action::Replace {
            order: UpdateOrder::StartFirst,
            ..
        }
    )));
}

#[test]
fn a_memory_change_is_an_in_place_update_of_the_same_container() {
    let old = fleet(&web("web:1", 1, ""));
    let new = fleet(&web("web:1", 1, "").replace("256MiB", "512MiB"));
    let mut w = World::new(new);
    let id = w.running(&old, "web", 0, "n1");
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![(
            "update",
            "n1",
            "service/web/0",
            "memory 256MiB → 512MiB, in place"
        )]
    );
    assert!(matches!(&p.steps[0].action, Action::Update { id: i, .. } if *i == id));
}

#[test]
fn a_memory_change_on_a_podman_node_is_a_recreate_never_an_update() {
    let old = fleet(&web("web:1", 1, ""));
    let new = fleet(&web("web:1", 1, "").replace("256MiB", "512MiB"));
    let mut w = World::new(new);
    let id = w.running(&old, "web", 0, "n1");
    w.observed
        .engines
        .insert("n1".into(), crate::container::EngineKind::Podman);
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![(
            "recreate",
            "n1",
            "service/web",
            "memory 256MiB → 512MiB, recreate stop-first (podman has no in-place update)"
        )]
    );
    assert!(matches!(
        &p.steps[0].action,
        Action::Replace { old_id, order: UpdateOrder::StopFirst, .. } if *old_id == id
    ));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s.action, Action::Update { .. }))
    );
    // `fleetctl plan` prints the reason on the step's line.
    let text = crate::cli::plan_text_for_tests(&p, &["n1".into(), "n2".into()]);
    let line = text
        .lines()
        .find(|l| l.contains("recreate") && l.contains("web"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.ends_with(
            "memory 256MiB → 512MiB, recreate stop-first (podman has no in-place update)"
        ),
        "{text}"
    );
    // A Docker node beside it still updates in place.
    w.observed
        .engines
        .insert("n1".into(), crate::container::EngineKind::Docker);
    assert_eq!(w.plan().steps[0].action.verb("n1"), "update");
}

#[test]
fn a_cordoned_node_keeps_its_replica_but_takes_no_new_one() {
    let f = fleet(&web("web:1", 2, ""));
    let mut w = World::new(f.clone());
    w.running(&f, "web", 0, "n1");
    w.cordon("n1");
    let p = w.plan();
    assert_eq!(p.replica_nodes[&("web".into(), 0)], "n1");
    assert_eq!(p.replica_nodes[&("web".into(), 1)], "n2");
    assert_eq!(
        steps(&p),
        vec![(
            "create",
            "n2",
            "service/web/1",
            "replica 1 of web is missing"
        )]
    );
    assert_eq!(p.unchanged.len(), 1);

    // When the cordoned node is the only one allowed, the new replica is unplaced, not created.
    let pinned = fleet(&web("web:1", 2, "  placement: {nodes: [n1]}\n"));
    let mut w = World::new(pinned.clone());
    w.running(&pinned, "web", 0, "n1");
    w.cordon("n1");
    let p = w.plan();
    assert!(!p.has_changes(), "{:#?}", p.steps);
    assert_eq!(p.unplaced.len(), 1);
    assert_eq!(
        p.unplaced[0].object,
        Object::Service {
            name: "web".into(),
            replica: 1
        }
    );
}

#[test]
fn an_unreachable_node_keeps_its_replicas_and_nothing_is_planned_for_them() {
    let f = fleet(&web("web:1", 2, ""));
    let mut w = World::new(f.clone());
    w.running(&f, "web", 0, "n1");
    w.unreachable("n2");
    w.last_known.insert(("web".into(), 1), "n2".into());
    let p = w.plan();
    assert!(!p.has_changes(), "{:#?}", p.steps);
    assert_eq!(p.replica_nodes[&("web".into(), 1)], "n2");
    assert_eq!(p.unreachable["n2"], "connection refused");
    assert!(!p.is_complete());
}

#[test]
fn a_lost_node_s_replicas_are_created_elsewhere() {
    let f = fleet(&web("web:1", 2, ""));
    let mut w = World::new(f.clone());
    w.running(&f, "web", 0, "n1");
    w.unreachable("n2");
    w.last_known.insert(("web".into(), 1), "n2".into());
    w.lost.insert("n2".into());
    let p = w.plan();
    assert_eq!(p.replica_nodes[&("web".into(), 1)], "n1");
    assert_eq!(
        steps(&p),
        vec![(
            "create",
            "n1",
            "service/web/1",
            "replica 1 of web is missing"
        )]
    );
}

#[test]
fn a_draining_node_s_replica_moves_start_first_and_says_why() {
    let f = fleet(&web("web:1", 1, ""));
    let mut w = World::new(f.clone());
    w.running(&f, "web", 0, "n1");
    w.drain("n1");
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![("move", "n2", "service/web", "from n1: n1 is draining")]
    );
    assert!(matches!(
        p.steps[0].action,
        Action::Replace {
            order: UpdateOrder::StartFirst,
            ..
        }
    ));
}

#[test]
fn a_container_of_a_removed_service_is_removed_as_a_stray() {
    let gone = fleet(&web("web:1", 1, "").replace("name: web", "name: old"));
    let mut w = World::new(fleet(""));
    w.running(&gone, "old", 0, "n2");
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![(
            "remove",
            "n2",
            &*p.steps[0].group.to_string(),
            "service old is not in the manifests"
        )]
    );
    assert!(p.steps[0].group.to_string().starts_with("stray/t-old-0-"));
}

#[test]
fn a_host_port_handed_from_a_removed_service_is_bound_after_the_removal() {
    let before = fleet(
        &web(
            "web:1",
            1,
            "  placement: {nodes: [n1]}\n  ports: ['8080:80']\n",
        )
        .replace("name: web", "name: old"),
    );
    let mut w = World::new(fleet(&web(
        "web:1",
        1,
        "  placement: {nodes: [n1]}\n  ports: ['8080:80']\n",
    )));
    w.running(&before, "old", 0, "n1");
    let p = w.plan();
    let got = steps(&p);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "remove");
    assert_eq!(got[1].0, "create");
    // One group: the create runs only after the removal freed the port.
    assert_eq!(got[0].2, got[1].2);
    assert_eq!(
        got[1].3,
        format!(
            "replica 0 of web is missing; after {}, which frees its host port",
            p.steps[0].container
        )
    );
}

#[test]
fn a_stopped_plug_s_container_is_stopped_and_a_deleted_plug_s_removed() {
    let f = fleet(
        "---\napiVersion: fleet/v1\nkind: PlugClass\nmetadata: {name: agent}\nspec: {image: plug:1, resources: {memory: 64MiB}, port: 8080, hostPorts: 51000-51009}\n",
    );
    let mut w = World::new(f.clone());
    let record = |id: &str, state| PlugRecord {
        id: id.into(),
        class: "agent".into(),
        owner: "o".into(),
        node: "n1".into(),
        host_port: 51000,
        state,
        created_ms: 0,
        last_activity_ms: 0,
        message: None,
    };
    let idle = record("p1", PlugState::Stopped);
    let spec = crate::desired::plug_container(
        &f,
        &f.plug_classes["agent"],
        &crate::desired::PlugIdentity {
            id: "p1",
            owner: "o",
            node: "n1",
            host_port: 51000,
        },
    );
    w.observe("n1", spec, RunState::Running);
    w.plugs.push(idle);
    let deleted = crate::desired::plug_container(
        &f,
        &f.plug_classes["agent"],
        &crate::desired::PlugIdentity {
            id: "p2",
            owner: "o",
            node: "n1",
            host_port: 51001,
        },
    );
    w.observe("n1", deleted, RunState::Running);
    let p = w.plan();
    assert_eq!(
        steps(&p),
        vec![
            ("stop", "n1", "plug/p1", "plug is stopped"),
            ("remove", "n1", "stray/t-plug-p2", "plug p2 was deleted"),
        ]
    );
}

/// Found by the widened plan property test: a lost node that answers again (still in `lost`,
/// so not ready) kept its stale copy of a replica that had moved away, and the replacement
/// was removed instead — whichever copy's node sorted first was taken as the replica's.
#[test]
fn a_lost_node_back_loses_its_stale_copy_and_the_replacement_stays() {
    let f = fleet(&web("web:1", 1, ""));
    let mut w = World::new(f.clone());
    w.running(&f, "web", 0, "n1"); // the stale copy, on the node that was lost
    w.running(&f, "web", 0, "n2"); // its replacement, made while n1 was lost
    w.last_known.insert(("web".into(), 0), "n2".into());
    w.lost.insert("n1".into());
    let p = w.plan();
    assert_eq!(p.replica_nodes[&("web".into(), 0)], "n2");
    assert_eq!(
        steps(&p),
        vec![(
            "remove",
            "n1",
            "service/web/0",
            "extra copy of web replica 0"
        )]
    );
}

/// Found by the widened plan property test: a replica that has to leave its node because of
/// its per-node cap or a host port (here: the service now publishes one, so one per node) and
/// fits nowhere else (the other node is cordoned) was kept there anyway, as if its node were
/// draining — two replicas were then recreated on one node binding the same port, and the
/// second failed to start on every pass. It is unplaced instead, and its old copy goes.
#[test]
fn a_replica_that_may_not_stay_for_its_cap_is_unplaced_not_kept_past_the_cap() {
    let old = fleet(&web("web:1", 2, "  placement: {nodes: [n1]}\n"));
    let mut w = World::new(fleet(&web("web:1", 2, "  ports: ['8080:80']\n")));
    w.running(&old, "web", 0, "n1");
    w.running(&old, "web", 1, "n1");
    w.cordon("n2");
    let p = w.plan();
    assert_eq!(
        p.replica_nodes,
        BTreeMap::from([(("web".to_string(), 0), "n1".to_string())])
    );
    assert!(p.stuck.is_empty(), "{:#?}", p.stuck);
    assert_eq!(
        p.unplaced.iter().map(|u| &u.object).collect::<Vec<_>>(),
        vec![&Object::Service {
            name: "web".into(),
            replica: 1
        }]
    );
    let verbs: Vec<_> = steps(&p).iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(verbs, vec![("recreate", "n1"), ("remove", "n1")]);
}

/// Found by the widened plan property test: two services on one node swapping host ports (a
/// publishes b's old port and b a's) were planned as two recreates in one group, and
/// whichever ran first could not bind the port the other's old container still held, on every
/// pass. One is split: its old container goes first, its new one is created after the other's
/// recreate freed the port.
#[test]
fn two_services_swapping_host_ports_on_one_node_converge_in_one_plan() {
    let svc = |name: &str, port: u16| {
        web(
            "web:1",
            1,
            &format!("  placement: {{nodes: [n1]}}\n  ports: ['{port}:80']\n"),
        )
        .replace("name: web", &format!("name: {name}"))
    };
    let old = fleet(&format!("{}{}", svc("a", 8000), svc("b", 8001)));
    let mut w = World::new(fleet(&format!("{}{}", svc("a", 8001), svc("b", 8000))));
    w.running(&old, "a", 0, "n1");
    w.running(&old, "b", 0, "n1");
    let p = w.plan();
    let got: Vec<_> = p
        .steps
        .iter()
        .map(|s| {
            (
                s.action.verb(&s.node),
                s.container.split('-').nth(1).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("remove", "b"), ("recreate", "a"), ("create", "b")]
    );
    assert!(
        p.steps.iter().all(|s| s.group == p.steps[0].group),
        "{:#?}",
        p.steps
    );
    binds_only_free_ports(&p, &[(8000, "a"), (8001, "b")]);
}

/// Walks the steps in order (they must all be in one group) from `held` (host port → service
/// holding it) and asserts that no step binds a port another container still holds.
fn binds_only_free_ports(p: &Plan, held: &[(u16, &str)]) {
    assert!(
        p.steps.iter().all(|s| s.group == p.steps[0].group),
        "{:#?}",
        p.steps
    );
    let mut held: BTreeMap<u16, String> = held.iter().map(|(p, n)| (*p, n.to_string())).collect();
    for st in &p.steps {
        let name = st.container.split('-').nth(1).unwrap().to_string();
        match &st.action {
            Action::Remove { .. } => held.retain(|_, n| *n != name),
            Action::Replace { spec, .. } | Action::Create { spec } => {
                if matches!(st.action, Action::Replace { .. }) {
                    held.retain(|_, n| *n != name);
                }
                for port in spec.ports.iter().map(|p| p.host_port) {
                    assert!(
                        !held.contains_key(&port),
                        "{name} binds {port} still held: {:#?}",
                        p.steps
                    );
                    held.insert(port, name.clone());
                }
            }
            _ => {}
        }
    }
}

/// Found by the widened plan property test: ports handed along a chain on one node (a takes
/// b's port, b takes the port of c, which goes) — b's recreate was moved after c's removal
/// into c's group, which left a, moved after b earlier, in b's old group, running alongside
/// b and binding the port b still held.
#[test]
fn host_ports_handed_along_a_chain_on_one_node_run_in_one_ordered_group() {
    let svc = |name: &str, port: Option<u16>| {
        let ports = port.map_or(String::new(), |p| format!("  ports: ['{p}:80']\n"));
        web(
            "web:1",
            1,
            &format!("  placement: {{nodes: [n1]}}\n{ports}"),
        )
        .replace("name: web", &format!("name: {name}"))
    };
    let old = fleet(&format!(
        "{}{}{}",
        svc("a", None),
        svc("b", Some(8000)),
        svc("c", Some(8001))
    ));
    let mut w = World::new(fleet(&format!(
        "{}{}",
        svc("a", Some(8000)),
        svc("b", Some(8001))
    )));
    w.running(&old, "a", 0, "n1");
    w.running(&old, "b", 0, "n1");
    w.running(&old, "c", 0, "n1");
    let p = w.plan();
    binds_only_free_ports(&p, &[(8000, "b"), (8001, "c")]);
}

#[test]
fn a_replica_on_an_unreachable_node_its_placement_now_forbids_is_placed_anew() {
    let mut w = World::new(fleet(&web("web:1", 1, "  placement: {nodes: [n1]}\n")));
    w.unreachable("n2");
    w.last_known.insert(("web".into(), 0), "n2".into());
    let p = w.plan();
    assert_eq!(p.replica_nodes[&("web".into(), 0)], "n1");
    assert_eq!(
        steps(&p),
        vec![(
            "create",
            "n1",
            "service/web/0",
            "replica 0 of web is missing"
        )]
    );
}

/// A stopped plug whose spec changed (an upgrade, a class edit) is not replaced: a replacement
/// would start it. Its old container stays, stopped (and is stopped if it runs).
#[test]
fn a_stopped_plug_whose_spec_changed_is_not_started_by_a_replacement() {
    let class = |image: &str| {
        fleet(&format!(
            "---\napiVersion: fleet/v1\nkind: PlugClass\nmetadata: {{name: agent}}\nspec: {{image: {image}, resources: {{memory: 64MiB}}, port: 8080, hostPorts: 51000-51009}}\n"
        ))
    };
    let (old, new) = (class("plug:1"), class("plug:2"));
    let id = crate::desired::PlugIdentity {
        id: "p1",
        owner: "o",
        node: "n1",
        host_port: 51000,
    };
    for state in [RunState::Exited, RunState::Running] {
        let mut w = World::new(new.clone());
        let spec = crate::desired::plug_container(&old, &old.plug_classes["agent"], &id);
        w.observe("n1", spec, state);
        w.plugs.push(PlugRecord {
            id: "p1".into(),
            class: "agent".into(),
            owner: "o".into(),
            node: "n1".into(),
            host_port: 51000,
            state: PlugState::Stopped,
            created_ms: 0,
            last_activity_ms: 0,
            message: None,
        });
        let p = w.plan();
        let want: Vec<(&str, &str, &str, &str)> = if state == RunState::Running {
            vec![("stop", "n1", "plug/p1", "plug is stopped")]
        } else {
            vec![]
        };
        assert_eq!(steps(&p), want, "{state:?}");
    }
}

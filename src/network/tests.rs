use super::*;
use crate::container::{EngineKind, NetworkRecord, SwarmInfo};
use crate::manifest::{Source, parse};
use crate::observe::NodeObservation;

fn fleet(nodes: usize, network: &str) -> DesiredFleet {
    let mut text = format!(
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: aims}}\nspec: {{network: {network}}}\n"
    );
    for i in 1..=nodes {
        text.push_str(&format!(
            "---\napiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node{i}}}\nspec: {{ssh: {{host: 10.0.0.{i}}}}}\n"
        ));
    }
    parse(&[Source {
        name: "t.yaml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"))
    .fleet
}

fn reachable(networks: Vec<NetworkRecord>) -> NodeObservation {
    NodeObservation::Reachable {
        containers: vec![],
        foreign_ports: Default::default(),
        foreign_containers: 0,
        engine: None,
        measured_memory: None,
        networks,
    }
}

fn ours(name: &str, driver: &str, scope: &str) -> NetworkRecord {
    NetworkRecord {
        id: format!("id-{name}"),
        name: name.into(),
        driver: driver.into(),
        scope: scope.into(),
        labels: [
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (labels::FLEET.to_string(), "aims".to_string()),
        ]
        .into(),
        ..NetworkRecord::default()
    }
}

fn active(id: &str, manager: bool) -> SwarmInfo {
    SwarmInfo {
        state: SwarmState::Active,
        node_id: id.into(),
        manager,
        ..SwarmInfo::default()
    }
}

fn member(id: &str, addr: &str, role: SwarmRole, ready: bool) -> SwarmMember {
    SwarmMember {
        id: id.into(),
        version: 7,
        hostname: "host".into(),
        addr: addr.into(),
        role,
        ready,
        reachable: ready,
        leader: false,
    }
}

/// A fleet whose nodes are all in its swarm with `managers` as managers and the overlay made.
fn formed(f: &DesiredFleet, managers: &[&str], down: &[&str]) -> ObservedFleet {
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    let mut members = Vec::new();
    for (i, n) in f.nodes.keys().enumerate() {
        let id = format!("id{n}");
        let manager = managers.contains(&n.as_str());
        let role = if manager {
            SwarmRole::Manager
        } else {
            SwarmRole::Worker
        };
        members.push(member(
            &id,
            &format!("10.0.0.{}", i + 1),
            role,
            !down.contains(&n.as_str()),
        ));
        if down.contains(&n.as_str()) {
            o.nodes.insert(
                n.clone(),
                NodeObservation::Unreachable {
                    error: "down".into(),
                    permanent: false,
                },
            );
            continue;
        }
        let nets = if manager {
            vec![ours("aims", "overlay", "swarm")]
        } else {
            vec![]
        };
        o.nodes.insert(n.clone(), reachable(nets));
        o.swarm.nodes.insert(n.clone(), active(&id, manager));
    }
    let infos = o.swarm.nodes.clone();
    o.swarm.members = name_members(f, &infos, members);
    o.swarm.labels = Some(BTreeMap::from([(
        labels::FLEET.to_string(),
        "aims".to_string(),
    )]));
    o.swarm.listed_by = managers
        .iter()
        .find(|m| !down.contains(m))
        .map(|m| m.to_string());
    o
}

#[test]
fn managers_are_odd_and_never_more_than_nodes() {
    let want: Vec<usize> = (0..9).map(managers_wanted).collect();
    assert_eq!(want, [0, 1, 1, 3, 3, 3, 3, 5, 5]);
}

#[test]
fn a_fresh_three_node_fleet_forms_one_swarm_of_three_managers_and_one_overlay() {
    let f = fleet(3, "{}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    for n in f.nodes.keys() {
        o.nodes.insert(n.clone(), reachable(vec![]));
        o.swarm.nodes.insert(n.clone(), SwarmInfo::default());
    }
    let p = plan(&f, &o, &BTreeSet::new());
    assert_eq!(p.network, Some(("aims".into(), NetworkDriver::Overlay)));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "swarm init on node1 (advertise 10.0.0.1): the fleet's overlay needs a swarm",
            "swarm join node2 (advertise 10.0.0.2) as manager through node1",
            "swarm join node3 (advertise 10.0.0.3) as manager through node1",
            "create network aims (overlay) on node1",
        ]
    );
    let NetStep::SwarmJoin { remote, .. } = &p.steps[1] else {
        panic!()
    };
    assert_eq!(remote, "10.0.0.1:2377");
}

#[test]
fn a_formed_fleet_plans_nothing() {
    let f = fleet(3, "{}");
    let o = formed(&f, &["node1", "node2", "node3"], &[]);
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

#[test]
fn a_two_node_fleet_without_its_only_manager_reports_lost_quorum_and_starts_no_second_swarm() {
    let f = fleet(2, "{}");
    let o = formed(&f, &["node1"], &["node1"]);
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.problems.len(), 1);
    let text = p.problems[0].to_string();
    assert!(text.starts_with("swarm quorum lost"), "{text}");
    assert!(text.contains("unreachable: node1"), "{text}");
}

#[test]
fn a_lost_manager_is_replaced_by_a_ready_worker_before_it_is_demoted() {
    let f = fleet(4, "{}");
    let o = formed(&f, &["node1", "node2", "node3"], &["node2"]);
    let lost = BTreeSet::from(["node2".to_string()]);
    let p = plan(&f, &o, &lost);
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "promote node4 to swarm manager",
            "demote node2 to swarm worker"
        ]
    );
}

#[test]
fn a_node_that_left_the_manifests_is_demoted_and_removed_from_the_swarm() {
    let three = fleet(3, "{}");
    let mut o = formed(&three, &["node1", "node2", "node3"], &["node3"]);
    let two = fleet(2, "{}");
    // Members are named against the manifests in force.
    let members = o.swarm.members.drain(..).map(|(_, m)| m).collect();
    o.nodes.remove("node3");
    o.swarm.members = name_members(&two, &o.swarm.nodes, members);
    let p = plan(&two, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    // Two nodes keep one manager: node3 leaves, and node2 is demoted.
    assert_eq!(
        lines,
        [
            "demote 10.0.0.3 to swarm worker",
            "remove 10.0.0.3 from the swarm: it is not in the manifests",
            "demote node2 to swarm worker",
        ]
    );
}

#[test]
fn a_joining_node_becomes_a_manager_only_while_managers_are_short() {
    let f = fleet(3, "{}");
    let mut o = formed(&f, &["node1"], &[]);
    // node3 is new: not in the swarm yet; node2 a worker.
    o.swarm.nodes.insert("node3".into(), SwarmInfo::default());
    o.swarm
        .members
        .retain(|(n, _)| n.as_deref() != Some("node3"));
    let p = plan(&f, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "swarm join node3 (advertise 10.0.0.3) as manager through node1",
            "promote node2 to swarm manager",
        ]
    );
}

#[test]
fn a_node_in_another_swarm_is_reported_and_left_alone() {
    let f = fleet(2, "{}");
    let mut o = formed(&f, &["node1"], &[]);
    o.swarm
        .nodes
        .insert("node2".into(), active("elsewhere", true));
    o.swarm
        .members
        .retain(|(n, _)| n.as_deref() != Some("node2"));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(
        p.problems,
        [NetProblem::ForeignSwarm {
            node: "node2".into()
        }]
    );
}

#[test]
fn a_one_node_fleet_gets_a_bridge_and_a_mode_change_removes_the_unused_old_network() {
    let f = fleet(1, "{}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    o.nodes.insert(
        "node1".into(),
        reachable(vec![ours("aims", "overlay", "swarm")]),
    );
    let p = plan(&f, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "create network aims-bridge (bridge) on node1",
            "remove network aims on node1: the fleet's network is now another",
        ]
    );
}

#[test]
fn settings_the_engine_cannot_change_are_reported_not_acted_on() {
    let f = fleet(1, "{subnet: 10.240.0.0/16, mtu: 1400}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    let mut n = ours("aims-bridge", "bridge", "local");
    n.subnet = Some("10.215.0.0/24".into());
    o.nodes.insert("node1".into(), reachable(vec![n]));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty());
    let [NetProblem::Differs { what, .. }] = p.problems.as_slice() else {
        panic!("{:?}", p.problems)
    };
    assert_eq!(
        what,
        "subnet 10.215.0.0/24 → 10.240.0.0/16, mtu default → 1400"
    );
}

#[test]
fn a_network_of_the_fleets_name_that_is_not_fleetctls_is_reported() {
    let f = fleet(1, "{}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    let mut n = ours("aims-bridge", "bridge", "local");
    n.labels.clear();
    o.nodes.insert("node1".into(), reachable(vec![n]));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty());
    assert!(matches!(
        p.problems.as_slice(),
        [NetProblem::Foreign { .. }]
    ));
}

#[test]
fn a_node_the_swarm_removed_that_still_thinks_it_is_a_member_leaves_and_joins_again() {
    let f = fleet(3, "{}");
    let mut o = formed(&f, &["node1", "node2", "node3"], &[]);
    o.swarm
        .members
        .retain(|(n, _)| n.as_deref() != Some("node3"));
    let mut stale = active("old-id", false);
    stale.remote_managers = vec!["10.0.0.1:2377".into()];
    o.swarm.nodes.insert("node3".into(), stale);
    let p = plan(&f, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "swarm leave on node3: its membership is stale or failed; it joins again",
            "swarm join node3 (advertise 10.0.0.3) as manager through node1",
        ]
    );
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

#[test]
fn a_fleet_named_like_a_predefined_network_gets_another_overlay_name() {
    use crate::manifest::network_name;
    assert_eq!(
        network_name("default", NetworkDriver::Overlay),
        "default-overlay"
    );
    assert_eq!(
        network_name("ingress", NetworkDriver::Overlay),
        "ingress-overlay"
    );
    assert_eq!(network_name("aims", NetworkDriver::Overlay), "aims");
    assert_eq!(
        network_name("default", NetworkDriver::Bridge),
        "default-bridge"
    );
}

#[test]
fn no_swarm_is_started_while_a_node_that_may_hold_it_does_not_answer() {
    let f = fleet(3, "{}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    for n in ["node1", "node2"] {
        o.nodes.insert(n.into(), reachable(vec![]));
        o.swarm.nodes.insert(n.into(), SwarmInfo::default());
    }
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(
        p.problems[0].to_string().contains("node3 does not answer"),
        "{:?}",
        p.problems
    );
    // Lost for good: the others form it.
    let p = plan(&f, &o, &BTreeSet::from(["node3".to_string()]));
    assert!(
        matches!(p.steps[0], NetStep::SwarmInit { .. }),
        "{:?}",
        p.steps
    );
}

#[test]
fn where_the_network_cannot_be_joined_every_node_is_named_with_why() {
    let f = fleet(2, "{}");
    let o = formed(&f, &["node1"], &["node1"]);
    let p = plan(&f, &o, &BTreeSet::new());
    let unusable = unusable_nodes(&f, &p, &[]);
    assert_eq!(unusable.len(), 2, "{unusable:?}");
    assert_eq!(unusable["node2"], "no swarm manager answers");
}

#[test]
fn a_swarm_that_is_not_the_fleets_is_never_joined_shaped_or_pruned() {
    let f = fleet(3, "{}");
    // Labelled as another fleet's.
    let mut o = formed(&f, &["node1", "node2", "node3"], &[]);
    o.swarm.labels = Some(BTreeMap::from([(
        labels::FLEET.to_string(),
        "other".to_string(),
    )]));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.problems.len(), 3, "{:?}", p.problems);
    // Made by fleetctl for another fleet on the same nodes: used (its overlay is created, a
    // new node joins), but members outside these manifests are not this fleet's to remove.
    o.swarm.labels = Some(BTreeMap::from([
        (labels::FLEET.to_string(), "other".to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ]));
    o.swarm
        .members
        .push((None, member("theirs", "10.9.9.9", SwarmRole::Worker, true)));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    o.swarm.members.pop();
    // Unlabelled, with a member that is not a node of the manifests (an operator's own swarm):
    // its extra member is neither demoted nor removed.
    let mut o = formed(&f, &["node1", "node2", "node3"], &[]);
    o.swarm.labels = Some(BTreeMap::new());
    o.swarm
        .members
        .push((None, member("theirs", "10.9.9.9", SwarmRole::Manager, true)));
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(matches!(p.problems[0], NetProblem::ForeignSwarm { .. }));
    // Unlabelled, every member a node of the manifests: the fleet's.
    o.swarm.members.pop();
    assert!(plan(&f, &o, &BTreeSet::new()).problems.is_empty());
}

#[test]
fn a_new_swarm_is_labelled_as_the_fleets() {
    let f = fleet(2, "{}");
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    for n in f.nodes.keys() {
        o.nodes.insert(n.clone(), reachable(vec![]));
        o.swarm.nodes.insert(n.clone(), SwarmInfo::default());
    }
    let p = plan(&f, &o, &BTreeSet::new());
    let NetStep::SwarmInit { labels: l, .. } = &p.steps[0] else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(l.get(labels::FLEET).map(String::as_str), Some("aims"));
}

#[test]
fn managers_that_cannot_list_the_swarm_are_a_lost_quorum_not_another_swarm() {
    let f = fleet(3, "{}");
    let mut o = formed(&f, &["node1", "node2", "node3"], &[]);
    o.swarm.members.clear();
    o.swarm.listed_by = None;
    o.swarm.labels = None;
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert!(
        p.problems[0].to_string().starts_with("swarm quorum lost"),
        "{:?}",
        p.problems
    );
}

/// `nodes` Docker nodes node1..nodeN and, last, `node4` declared Podman (overlay fleet).
fn fleet_with_podman(nodes: usize) -> DesiredFleet {
    let mut text =
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: aims}\nspec: {network: {mode: overlay}}\n"
            .to_string();
    for i in 1..=nodes {
        text.push_str(&format!(
            "---\napiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node{i}}}\nspec: {{ssh: {{host: 10.0.0.{i}}}}}\n"
        ));
    }
    text.push_str("---\napiVersion: fleet/v1\nkind: Node\nmetadata: {name: node4}\nspec: {ssh: {host: 10.0.0.4}, docker: {engine: podman}}\n");
    parse(&[Source {
        name: "t.yaml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"))
    .fleet
}

/// A Podman node as it answers: its engine read, inactive in no swarm.
fn podman_answers(o: &mut ObservedFleet, node: &str, networks: Vec<NetworkRecord>) {
    o.nodes.insert(node.into(), reachable(networks));
    let Some(NodeObservation::Reachable { engine, .. }) = o.nodes.get_mut(node) else {
        unreachable!()
    };
    *engine = Some(crate::container::EngineInfo {
        kind: EngineKind::Podman,
        version: "4.3.1".into(),
        api_version: "1.41".into(),
        cpus: 2,
        memory: 1 << 30,
        containers: 0,
        containers_running: 0,
        operating_system: "debian".into(),
        docker_root_dir: "/var/lib/containers/storage".into(),
        swarm: SwarmInfo::default(),
    });
    o.engines.insert(node.into(), EngineKind::Podman);
    o.swarm.nodes.insert(node.into(), SwarmInfo::default());
}

#[test]
fn a_podman_node_of_an_overlay_fleet_is_never_joined_and_gets_a_bridge_of_its_own() {
    let f = fleet_with_podman(2);
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    // node4 sorts last but must not count: two swarm nodes want one manager.
    for n in ["node1", "node2"] {
        o.nodes.insert(n.into(), reachable(vec![]));
        o.swarm.nodes.insert(n.into(), SwarmInfo::default());
        o.engines.insert(n.into(), EngineKind::Docker);
    }
    podman_answers(&mut o, "node4", vec![]);
    let p = plan(&f, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "swarm init on node1 (advertise 10.0.0.1): the fleet's overlay needs a swarm",
            "swarm join node2 (advertise 10.0.0.2) as worker through node1",
            "create network aims (overlay) on node1",
            "create network aims-bridge (bridge) on node4",
        ]
    );
    let NetStep::CreateNetwork { spec, .. } = &p.steps[3] else {
        panic!()
    };
    assert_eq!(
        spec.labels,
        network_spec(&f).labels,
        "labelled as the fleet's"
    );
    assert!(!spec.encrypted);
    let said: Vec<String> = p.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            "node node4 runs podman 4.3.1, which cannot join the swarm: its containers are on a bridge network of their own, aims-bridge (names resolve on node4 only; other nodes' services through published ports, outside the overlay and its encryption)"
        ]
    );
    assert!(p.problems[0].is_notice());
    // Nothing keeps node4 (nor the others) from their network.
    assert!(unusable_nodes(&f, &p, &[]).is_empty());
}

#[test]
fn a_podman_node_alone_never_starts_a_swarm_and_is_never_a_manager() {
    // Node4 sorts after node1, so make it the only one that answers.
    let f = fleet_with_podman(1);
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    o.nodes.insert(
        "node1".into(),
        NodeObservation::Unreachable {
            error: "down".into(),
            permanent: false,
        },
    );
    podman_answers(&mut o, "node4", vec![]);
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(
        p.steps
            .iter()
            .all(|s| !matches!(s, NetStep::SwarmInit { .. } | NetStep::SwarmJoin { .. })),
        "{:?}",
        p.steps
    );
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(lines, ["create network aims-bridge (bridge) on node4"]);
    // node1 may hold the swarm: reported, but node4's bridge is not held back by it.
    assert!(
        p.problems
            .iter()
            .any(|x| matches!(x, NetProblem::NoManager { .. }))
    );
    let unusable = unusable_nodes(&f, &p, &[]);
    assert!(unusable.contains_key("node1"), "{unusable:?}");
    assert!(!unusable.contains_key("node4"), "{unusable:?}");
}

#[test]
fn a_formed_mixed_fleet_plans_nothing_and_keeps_the_podman_nodes_bridge() {
    let f = fleet_with_podman(2);
    // node1 and node2 formed (as `formed` would make them, without node4).
    let two = fleet(2, "{mode: overlay}");
    let mut o = formed(&two, &["node1"], &[]);
    o.swarm.members = name_members(&f, &o.swarm.nodes, {
        o.swarm.members.iter().map(|(_, m)| m.clone()).collect()
    });
    // Its bridge exists and no container uses it (yet): it stays.
    podman_answers(
        &mut o,
        "node4",
        vec![ours("aims-bridge", "bridge", "local")],
    );
    let p = plan(&f, &o, &BTreeSet::new());
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.problems.len(), 1, "{:?}", p.problems);
    assert!(matches!(p.problems[0], NetProblem::OwnBridge { .. }));
}

#[test]
fn a_docker_node_declared_podman_is_planned_by_what_answers() {
    let f = fleet_with_podman(1);
    let mut o = ObservedFleet {
        networks_observed: true,
        ..ObservedFleet::default()
    };
    for n in ["node1", "node4"] {
        o.nodes.insert(n.into(), reachable(vec![]));
        o.swarm.nodes.insert(n.into(), SwarmInfo::default());
        o.engines.insert(n.into(), EngineKind::Docker);
    }
    let p = plan(&f, &o, &BTreeSet::new());
    let lines: Vec<String> = p.steps.iter().map(NetStep::describe).collect();
    assert_eq!(
        lines,
        [
            "swarm init on node1 (advertise 10.0.0.1): the fleet's overlay needs a swarm",
            "swarm join node4 (advertise 10.0.0.4) as worker through node1",
            "create network aims (overlay) on node1",
        ]
    );
    assert!(p.problems.is_empty(), "{:?}", p.problems);
}

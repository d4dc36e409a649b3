//! Property tests of the planner through the reconcile pass on the fake runtime. For random
//! valid fleets, random plugs, random node states (ready, cordoned, draining, force-draining,
//! unreachable, lost) and a random change of the manifests, after each pass:
//! - one pass converges (the next plan is empty) and every step succeeded;
//! - never more than `replicas` containers of a service run on the nodes that count (a lost
//!   node's copies are stale until it is back), `maxPerNode` and host ports hold per node, and
//!   a replica runs only where its placement allows;
//! - a cordoned or draining node takes no new replica or plug, and whatever is left on a
//!   draining node is reported stuck;
//! - nothing on an unreachable node is touched, and every replica is running, unplaced, or
//!   stuck on a lost node;
//! - every plug that wants to run has exactly one running container, on its recorded node and
//!   port, and plugs that do not want to run have none running;
//! - when the unreachable and lost nodes answer again, one pass removes their stale copies and
//!   the fleet converges with every invariant holding on every node.
//!
//! The generator makes only valid fleets (it clamps what the validator would refuse) and
//! asserts that the validator agrees, so no generated case is skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fleetctl::container::{ContainerRecord, RunState, labels};
use fleetctl::execute::{ExecOptions, Runtimes};
use fleetctl::manifest::validate::effective_max_per_node;
use fleetctl::manifest::{DesiredFleet, Source, parse};
use fleetctl::plan::{Object, Plan};
use fleetctl::plugs;
use fleetctl::reconcile::{PassContext, pass, plan_only};
use fleetctl::store::{PlugState, Store};
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::FakeRuntime;
use proptest::prelude::*;

/// Every node has this much memory: with at most 4 services × 5 replicas × 200 MiB forced onto
/// one node, no generated fleet asks more of a node than it has.
const NODE_MEMORY: &str = "4GiB";

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
        16u64..200,
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

/// What happens to a node between the first fleet and the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Ready,
    Cordoned,
    Draining,
    /// `drain --force`: replicas its placement allows nowhere else are removed.
    ForceDraining,
    Unreachable,
    Lost,
}

fn node_state() -> impl Strategy<Value = NodeState> {
    prop_oneof![
        4 => Just(NodeState::Ready),
        1 => Just(NodeState::Cordoned),
        1 => Just(NodeState::Draining),
        1 => Just(NodeState::ForceDraining),
        1 => Just(NodeState::Unreachable),
        1 => Just(NodeState::Lost),
    ]
}

/// Clamps `services` to what the validator accepts on `nodes` nodes: replicas within
/// `maxPerNode` (1 with host ports) × allowed nodes, and a host port shared by services only
/// while their replicas together fit one per node among the nodes they may use.
fn make_valid(nodes: usize, mut services: Vec<Svc>) -> Vec<Svc> {
    let allowed = |s: &Svc| -> BTreeSet<usize> {
        match s.pinned {
            Some(p) => BTreeSet::from([p % nodes]),
            None => (0..nodes).collect(),
        }
    };
    // (port) → (replicas so far, nodes they may use)
    let mut shared: BTreeMap<u16, (u32, BTreeSet<usize>)> = BTreeMap::new();
    // (port) → nodes a service publishing it is pinned to: two such services pinned to one
    // node would both have to bind it there.
    let mut forced: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for s in &mut services {
        let cap = |s: &Svc| effective_max_per_node(s.max_per_node, s.port.is_some());
        let room = |s: &Svc| cap(s).map_or(u32::MAX, |c| c * allowed(s).len() as u32);
        if let Some(port) = s.port {
            let (used, union) = shared.get(&port).cloned().unwrap_or_default();
            let mut with: BTreeSet<usize> = union.clone();
            with.extend(allowed(s));
            let mine = s.replicas.min(room(s));
            let pinned_to = allowed(s);
            let clash = pinned_to.len() == 1
                && forced.get(&port).is_some_and(|f| f.is_superset(&pinned_to));
            if s.replicas > 0 && (used + mine > with.len() as u32 || clash) {
                s.port = None; // publishing it would over-commit the port
            } else if s.replicas > 0 {
                shared.insert(port, (used + mine, with));
                if pinned_to.len() == 1 {
                    forced.entry(port).or_default().extend(pinned_to);
                }
            }
        }
        s.replicas = s.replicas.min(room(s));
    }
    services
}

fn manifest(nodes: usize, services: &[Svc], plug_class: bool) -> String {
    let mut t = String::from("apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: props}\n");
    for i in 0..nodes {
        t.push_str(&format!("---\napiVersion: fleet/v1\nkind: Node\nmetadata: {{name: n{i}}}\nspec: {{capacity: {{memory: {NODE_MEMORY}}}}}\n"));
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
    if plug_class {
        t.push_str("---\napiVersion: fleet/v1\nkind: PlugClass\nmetadata: {name: agent}\nspec: {image: plug:1, resources: {memory: 64MiB}, port: 8080, hostPorts: 51000-51002}\n");
    }
    t
}

/// Parses a generated fleet; the validator must accept every one.
fn load(nodes: usize, services: &[Svc], plug_class: bool) -> Result<DesiredFleet, TestCaseError> {
    let text = manifest(nodes, services, plug_class);
    match parse(&[Source {
        name: "p.yaml".into(),
        text: text.clone(),
    }]) {
        Ok(l) => Ok(l.fleet),
        Err(e) => Err(TestCaseError::fail(format!(
            "the generator made a fleet the validator refuses:\n{e}\n{text}"
        ))),
    }
}

/// Records `state` for `node` the way `cordon` and `drain` do; unreachable and lost nodes are
/// the fake engine's and the pass context's business.
fn set_condition(store: &Store, node: &str, state: NodeState) {
    store
        .update_node_condition(node, 0, |c| match state {
            NodeState::Cordoned => c.cordoned = true,
            NodeState::Draining | NodeState::ForceDraining => {
                c.cordoned = true;
                c.draining = true;
            }
            _ => {}
        })
        .unwrap();
}

/// (kind, service or plug id, replica) of a fleet container.
fn identity(c: &ContainerRecord) -> (String, String, String) {
    let l = |k| c.label(k).unwrap_or("").to_string();
    (
        l(labels::KIND),
        l(labels::SERVICE) + &l(labels::PLUG),
        l(labels::REPLICA),
    )
}

fn identities(f: &FakeRuntime) -> BTreeSet<(String, String, String)> {
    f.containers().iter().map(identity).collect()
}

/// The safety invariants on the nodes in `counted` (per service, ≤ replicas) and on every
/// reachable node (ports, caps, placement).
fn check(
    fakes: &BTreeMap<String, FakeRuntime>,
    fleet: &DesiredFleet,
    counted: &BTreeSet<String>,
    reachable: &BTreeSet<String>,
) -> Result<(), TestCaseError> {
    let mut per_service: BTreeMap<String, u32> = BTreeMap::new();
    for (node, f) in fakes {
        let mut here: BTreeMap<String, u32> = BTreeMap::new();
        let mut ports: BTreeSet<u16> = BTreeSet::new();
        for c in f.containers() {
            if c.state == RunState::Running {
                for p in &c.host_ports {
                    prop_assert!(ports.insert(*p), "host port {p} used twice on {node}");
                }
            }
            let Some(svc) = c.label(labels::SERVICE) else {
                continue;
            };
            *here.entry(svc.to_string()).or_default() += 1;
            if counted.contains(node) {
                *per_service.entry(svc.to_string()).or_default() += 1;
            }
            if reachable.contains(node) {
                let spec = fleet.services.get(svc);
                prop_assert!(
                    spec.is_some(),
                    "{svc} is not in the manifests but runs on {node}"
                );
                prop_assert!(
                    spec.unwrap().placement.allows(&fleet.nodes[node]),
                    "{svc} on {node}, which its placement forbids"
                );
            }
        }
        if !reachable.contains(node) {
            continue;
        }
        for (svc, n) in here {
            let s = &fleet.services[&svc];
            let cap = effective_max_per_node(s.placement.max_per_node, !s.ports.is_empty());
            prop_assert!(
                cap.is_none_or(|c| n <= c),
                "{svc}: {n} on {node} above its per-node cap"
            );
        }
    }
    for (svc, n) in per_service {
        let want = fleet.services.get(&svc).map_or(0, |s| s.replicas);
        prop_assert!(n <= want, "{svc}: {n} containers for {want} replicas");
    }
    Ok(())
}

/// Every plug that wants to run has one running container, on its node and port; the others
/// have none running. Plugs on unreachable nodes, and of a class no longer in the manifests (their
/// containers are strays), are not judged.
fn check_plugs(
    fakes: &BTreeMap<String, FakeRuntime>,
    fleet: &DesiredFleet,
    store: &Store,
    reachable: &BTreeSet<String>,
    stuck: &BTreeSet<String>,
) -> Result<(), TestCaseError> {
    for p in store.plugs().unwrap() {
        if !reachable.contains(&p.node) || !fleet.plug_classes.contains_key(&p.class) {
            continue;
        }
        let running: Vec<(String, Vec<u16>)> = fakes
            .iter()
            .filter(|(n, _)| reachable.contains(*n))
            .flat_map(|(n, f)| {
                f.containers()
                    .into_iter()
                    .filter(|c| c.label(labels::PLUG) == Some(p.id.as_str()))
                    .filter(|c| c.state == RunState::Running)
                    .map(|c| (n.clone(), c.host_ports.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if p.state.wants_running() && !stuck.contains(&p.id) {
            prop_assert_eq!(
                running,
                vec![(p.node.clone(), vec![p.host_port])],
                "plug {} ({:?})",
                &p.id,
                p.state
            );
        } else if !p.state.wants_running() {
            prop_assert!(
                running.is_empty(),
                "plug {} is {:?} but runs",
                p.id,
                p.state
            );
        }
    }
    Ok(())
}

fn stuck_plugs(p: &Plan) -> BTreeSet<String> {
    p.stuck
        .iter()
        .filter_map(|s| match &s.object {
            Object::Plug { id } => Some(id.clone()),
            _ => None,
        })
        .collect()
}

fn context<'a>(
    fleet: &'a DesiredFleet,
    runtimes: &'a Runtimes,
    store: &'a Store,
    lost: BTreeSet<String>,
    evict: BTreeSet<String>,
) -> PassContext<'a> {
    PassContext {
        fleet,
        runtimes,
        store,
        lost,
        evict,
        measure_memory: false,
        exec: ExecOptions {
            ready_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        refresh: Default::default(),
    }
}

struct Case {
    nodes: usize,
    first: Vec<Svc>,
    second: Vec<Svc>,
    states: Vec<NodeState>,
    plugs: usize,
    stop_plug: Option<usize>,
    delete_plug: Option<usize>,
    keep_class: bool,
}

fn run(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let names: Vec<String> = (0..case.nodes).map(|i| format!("n{i}")).collect();
    let swarm = fleetctl::transport::fake::FakeSwarm::new();
    let fakes: BTreeMap<String, FakeRuntime> = names
        .iter()
        .map(|n| (n.clone(), FakeRuntime::with_swarm(n, &swarm)))
        .collect();
    let runtimes: Runtimes = fakes
        .iter()
        .map(|(n, f)| (n.clone(), Arc::new(f.clone()) as Arc<dyn NodeRuntime>))
        .collect();
    let store = Store::in_memory().unwrap();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let state_of = |n: &str| case.states[n[1..].parse::<usize>().unwrap()];
    let in_state = |s: NodeState| -> BTreeSet<String> {
        names.iter().filter(|n| state_of(n) == s).cloned().collect()
    };
    let cx = |fleet, lost, evict| context(fleet, &runtimes, &store, lost, evict);
    let none = BTreeSet::new;
    // One pass, then the plan again: empty, every step having succeeded.
    let converge = |cx: &PassContext| -> Result<Plan, TestCaseError> {
        let report = rt.block_on(pass(cx, &|_| {})).unwrap();
        prop_assert!(report.exec.ok(), "{:?}", report.exec);
        let (_, again) = rt.block_on(plan_only(cx)).unwrap();
        prop_assert!(
            again.steps.is_empty(),
            "not converged after one pass: {:#?}",
            again.steps
        );
        Ok(report.plan)
    };

    // 1. The first fleet on ready nodes, then plugs.
    let first = load(case.nodes, &case.first, true)?;
    converge(&cx(&first, none(), none()))?;
    check(&fakes, &first, &all, &all)?;
    let mut plug_ids = Vec::new();
    for i in 0..case.plugs {
        let observed = rt.block_on(plugs::observe_for_placement(&first, &runtimes));
        match plugs::reserve_plug(
            &first,
            &store,
            &observed,
            &BTreeSet::new(),
            "agent",
            &format!("u{i}"),
            0,
        ) {
            Ok(p) => {
                rt.block_on(plugs::start_reserved(
                    &first,
                    &store,
                    &runtimes,
                    &p,
                    Duration::from_secs(1),
                ))
                .unwrap();
                plug_ids.push(p.id);
            }
            Err(plugs::PlugError::Unschedulable { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("plug create: {e}"))),
        }
    }
    if let Some(i) = case.stop_plug.filter(|i| *i < plug_ids.len()) {
        store
            .set_plug_state(&plug_ids[i], PlugState::Stopped, None)
            .unwrap();
    }
    if let Some(i) = case.delete_plug.filter(|i| *i < plug_ids.len()) {
        store.delete_plug(&plug_ids[i]).unwrap();
    }

    // 2. Nodes change state, and the manifests change.
    for n in &names {
        set_condition(&store, n, state_of(n));
        if matches!(state_of(n), NodeState::Unreachable | NodeState::Lost) {
            fakes[n].set_unreachable(true);
        }
    }
    let lost = in_state(NodeState::Lost);
    let away: BTreeSet<String> = in_state(NodeState::Unreachable)
        .union(&lost)
        .cloned()
        .collect();
    let reachable: BTreeSet<String> = all.difference(&away).cloned().collect();
    let second = load(case.nodes, &case.second, case.keep_class)?;
    let before: BTreeMap<String, Vec<ContainerRecord>> = fakes
        .iter()
        .map(|(n, f)| (n.clone(), f.containers()))
        .collect();
    let evict = in_state(NodeState::ForceDraining);
    let plan = converge(&cx(&second, lost.clone(), evict.clone()))?;
    // A replica on an unreachable node whose placement no longer allows it is placed anew while
    // its old copy cannot be removed yet: only reachable nodes are counted here.
    check(&fakes, &second, &reachable, &reachable)?;
    check_plugs(&fakes, &second, &store, &reachable, &stuck_plugs(&plan))?;
    let stuck: BTreeSet<(String, String)> = plan
        .stuck
        .iter()
        .map(|s| match &s.object {
            Object::Service { name, replica } => (name.clone(), replica.to_string()),
            Object::Plug { id } => (id.clone(), String::new()),
            Object::Stray => (String::new(), String::new()),
        })
        .collect();
    for n in &names {
        let had: BTreeSet<_> = before[n].iter().map(identity).collect();
        match state_of(n) {
            NodeState::Cordoned | NodeState::Draining | NodeState::ForceDraining => {
                let now = identities(&fakes[n]);
                prop_assert!(
                    now.is_subset(&had),
                    "{n} ({:?}) took new work: {:?}",
                    state_of(n),
                    now.difference(&had).collect::<Vec<_>>()
                );
                if state_of(n) != NodeState::Cordoned {
                    for c in fakes[n].containers() {
                        let (kind, name, replica) = identity(&c);
                        let left = kind == "plug" && c.state != RunState::Running;
                        prop_assert!(
                            left || stuck.contains(&(name.clone(), replica.clone())),
                            "{kind} {name} {replica} left on draining {n} but not reported stuck"
                        );
                    }
                }
            }
            NodeState::Unreachable | NodeState::Lost => {
                prop_assert_eq!(&fakes[n].containers(), &before[n], "{} was touched", n);
            }
            NodeState::Ready => {}
        }
    }
    // Every replica is placed on a reachable node and runs there, or kept on a node that did not
    // answer, or unplaced: exactly one of these.
    let unplaced: BTreeSet<&Object> = plan.unplaced.iter().map(|u| &u.object).collect();
    for svc in second.services.values() {
        for r in 0..svc.replicas {
            let object = Object::Service {
                name: svc.name.clone(),
                replica: r,
            };
            match plan.replica_nodes.get(&(svc.name.clone(), r)) {
                Some(node) => {
                    prop_assert!(
                        !unplaced.contains(&object),
                        "{object:?} placed and unplaced"
                    );
                    if reachable.contains(node) {
                        let runs = fakes[node].containers().iter().any(|c| {
                            c.state == RunState::Running
                                && identity(c)
                                    == ("service".into(), svc.name.clone(), r.to_string())
                        });
                        prop_assert!(runs, "{object:?} placed on {node} but not running there");
                    }
                }
                None => prop_assert!(
                    unplaced.contains(&object),
                    "{object:?} neither placed nor unplaced"
                ),
            }
        }
    }

    // 3. The unreachable and lost nodes answer again (the lost ones are not ready yet): one pass
    // removes their stale copies and every invariant holds on every node.
    for n in &away {
        fakes[n].set_unreachable(false);
    }
    let moved_away: BTreeMap<String, BTreeSet<(String, String, String)>> = lost
        .iter()
        .map(|n| {
            let elsewhere: BTreeSet<_> = names
                .iter()
                .filter(|m| *m != n && reachable.contains(*m))
                .flat_map(|m| identities(&fakes[m]))
                .collect();
            (n.clone(), elsewhere)
        })
        .collect();
    let plan = converge(&cx(&second, lost.clone(), evict))?;
    check(&fakes, &second, &all, &all)?;
    check_plugs(&fakes, &second, &store, &all, &stuck_plugs(&plan))?;
    for (n, elsewhere) in &moved_away {
        let stale: Vec<_> = identities(&fakes[n])
            .intersection(elsewhere)
            .cloned()
            .collect();
        prop_assert!(
            stale.is_empty(),
            "{n} is back but not ready: its copies of what moved away must go, yet {stale:?} stayed"
        );
    }
    // 4. The lost nodes are ready again, and the forced drains are over.
    converge(&cx(&second, none(), none()))?;
    check(&fakes, &second, &all, &all)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn one_pass_converges_and_invariants_hold_across_changes(
        nodes in 1usize..4,
        first in prop::collection::vec(svc(), 1..5),
        second in prop::collection::vec(svc(), 1..5),
        states in prop::collection::vec(node_state(), 3),
        plugs in 0usize..4,
        stop_plug in prop::option::of(0usize..4),
        delete_plug in prop::option::of(0usize..4),
        keep_class in prop::bool::weighted(0.8),
    ) {
        run(Case {
            first: make_valid(nodes, first),
            second: make_valid(nodes, second),
            nodes,
            states,
            plugs,
            stop_plug,
            delete_plug,
            keep_class,
        })?;
    }
}

//! The controller loop (`fleetctl run`) against the in-memory fake runtime, with tokio's clock
//! paused where time matters: restart backoff doubling to 5 min, resync timing, node loss after
//! nodeLostAfter and the node's return, eviction of the most idle plugs under memory pressure,
//! idle timeouts, unhealthy restarts, manifest edits, and CLI intents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetctl::container::{Health, RunState, labels};
use fleetctl::controller::intents::{PlugCreateIntent, kinds};
use fleetctl::controller::nodes::Readiness;
use fleetctl::controller::{Clock, Config, Connector, Controller};
use fleetctl::manifest;
use fleetctl::plugs::PlugCreated;
use fleetctl::store::{IntentState, PlugState, Store};
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::FakeRuntime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NODES: &str = "apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {capacity: {cpus: 4, memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node3, labels: {tier: secondary}}
spec: {capacity: {cpus: 4, memory: 1GiB}}
";

fn fleet_doc(extra_spec: &str) -> String {
    format!(
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: ctl}}\nspec: {{resync: 30s, nodeLostAfter: 60s{extra_spec}}}\n---\n{NODES}"
    )
}

const WEB: &str = "---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  placement: {nodes: [node1]}
  resources: {memory: 64MiB}
  restart: 'no'
";

fn plugs_doc(idle: &str, evict: bool) -> String {
    format!(
        "---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: plug:1, resources: {{memory: 64MiB}}, port: 8080, hostPorts: 51000-51099, idleTimeout: {idle}}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: 4
  memoryHighWatermark: 50%
  evictIdleOnPressure: {evict}
  tiers: [{{nodeSelector: {{tier: primary}}}}, {{nodeSelector: {{tier: secondary}}}}]
"
    )
}

struct World {
    fakes: BTreeMap<String, FakeRuntime>,
    store: Arc<Store>,
    ctl: Arc<Controller>,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), fleetctl::controller::ControllerError>>,
    dir: tempfile::TempDir,
}

fn write(dir: &Path, text: &str) {
    std::fs::write(dir.join("fleet.yaml"), text).unwrap();
}

fn world_with(text: &str, tweak: impl FnOnce(&mut Config, &Store)) -> World {
    world_with_files(text, &[], tweak)
}

/// [`world_with`], with `files` (relative path, content) written beside the manifests first,
/// and the secrets the manifests use read as `fleetctl run` reads them at start.
fn world_with_files(
    text: &str,
    files: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config, &Store),
) -> World {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("TEST_LOG"))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        std::fs::write(dir.path().join(path), content).unwrap();
    }
    write(dir.path(), text);
    let mut loaded = manifest::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let swarm = fleetctl::transport::fake::FakeSwarm::new();
    let fakes: BTreeMap<String, FakeRuntime> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| (n.to_string(), FakeRuntime::with_swarm(*n, &swarm)))
        .collect();
    let store = Arc::new(Store::in_memory().unwrap());
    fleetctl::secrets::attach(&mut loaded.fleet, &store).unwrap_or_else(|e| panic!("{e:?}"));
    let mut cfg = Config::new(dir.path().to_path_buf(), "controller (test)");
    cfg.clock = Clock::tokio();
    cfg.watch_manifests = false;
    cfg.poll_intents = false;
    cfg.exec.ready_timeout = Duration::from_secs(2);
    tweak(&mut cfg, &store);
    let by_name = fakes.clone();
    let connect: Connector =
        Arc::new(move |spec| Arc::new(by_name[&spec.name].clone()) as Arc<dyn NodeRuntime>);
    let shutdown = CancellationToken::new();
    let ctl = Controller::new(cfg, store.clone(), loaded, connect, shutdown.clone());
    let c = ctl.clone();
    let run = tokio::spawn(async move { c.run().await });
    World {
        fakes,
        store,
        ctl,
        shutdown,
        run,
        dir,
    }
}

fn world(text: &str) -> World {
    world_with(text, |_, _| {})
}

/// Polls `f` every 50 ms (of tokio time) until it holds; returns how long that took.
async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if f() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl World {
    fn containers(&self, node: &str) -> Vec<fleetctl::container::ContainerRecord> {
        self.fakes[node].containers()
    }

    fn running(&self, node: &str, name_part: &str) -> Option<String> {
        self.containers(node)
            .into_iter()
            .find(|c| c.name.contains(name_part) && c.state == RunState::Running)
            .map(|c| c.id)
    }

    /// Running containers of plug `id`, over every node.
    fn plug_copies(&self, id: &str) -> Vec<(String, RunState)> {
        self.fakes
            .iter()
            .flat_map(|(n, f)| {
                f.containers()
                    .into_iter()
                    .filter(|c| c.label(labels::PLUG) == Some(id))
                    .map(move |c| (n.clone(), c.state))
            })
            .collect()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_killed_container_is_restarted_at_once_then_with_backoff_doubling_to_five_minutes() {
    let w = world(&format!("{}{WEB}", fleet_doc("")));
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    // Its creation counts as the first start: let the 1 s window after it pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut waits = Vec::new();
    for _ in 0..11 {
        let id = w.running("node1", "web").expect("running");
        w.fakes["node1"].kill(&id);
        let took = until("web runs again", Duration::from_secs(400), || {
            w.running("node1", "web").is_some()
        })
        .await;
        waits.push(took.as_secs_f64());
    }
    let expected = [
        0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 300.0, 300.0,
    ];
    for (got, want) in waits.iter().zip(expected) {
        assert!(
            (got - want).abs() <= 0.2,
            "restart waits {waits:?}, expected about {expected:?}"
        );
    }
    // Held restarts are counted.
    let metrics = w.ctl.metrics().encode();
    assert!(
        metrics.contains("fleetctl_restarts_held_total{node=\"node1\"}"),
        "{metrics}"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_controller_reconciles_once_per_resync_and_nothing_else() {
    let w = world(&format!("{}{WEB}", fleet_doc("")));
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = w.ctl.passes();
    w.fakes["node1"].clear_calls();
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(w.ctl.passes() - before, 3, "one pass per 30 s resync");
    assert!(
        w.fakes["node1"].mutating_calls().is_empty(),
        "{:?}",
        w.fakes["node1"].mutating_calls()
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_container_is_stopped_and_started_again() {
    let text = format!(
        "{}{}",
        fleet_doc(""),
        WEB.replace(
            "  restart: 'no'\n",
            "  restart: 'no'\n  healthcheck: {command: [CMD, 'true'], interval: 5s}\n"
        )
    );
    let w = world(&text);
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = w.running("node1", "web").unwrap();
    w.fakes["node1"].clear_calls();
    w.fakes["node1"].set_health(&id, Health::Unhealthy);
    until("restarted", Duration::from_secs(5), || {
        let ops: Vec<&'static str> = w.fakes["node1"]
            .mutating_calls()
            .iter()
            .filter(|c| c.object == id)
            .map(|c| c.op)
            .collect();
        ops == ["stop", "start"]
    })
    .await;
    let c = w.containers("node1");
    assert_eq!(c.len(), 1, "restarted in place, not recreated");
    assert_eq!(c[0].health, Some(Health::Healthy));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn plugs_of_a_node_lost_past_node_lost_after_run_elsewhere_and_its_stale_copies_go_when_it_returns()
 {
    let w = world(&format!("{}{}", fleet_doc(""), plugs_doc("0", false)));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let a = w.ctl.create_plug("agent", "ada").await.unwrap();
    let b = w.ctl.create_plug("agent", "bob").await.unwrap();
    assert_eq!((a.node.as_str(), b.node.as_str()), ("node1", "node1"));

    w.fakes["node1"].set_unreachable(true);
    let lost_at = Instant::now();
    // Before nodeLostAfter: the plugs stay where they are (unreachable is not absent).
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert_eq!(w.store.plug(&a.id).unwrap().node, "node1");
    assert!(matches!(
        w.ctl.readiness()["node1"],
        Readiness::Unreachable { .. }
    ));
    // After it: they run on the secondary tier.
    until("plugs moved", Duration::from_secs(120), || {
        [&a.id, &b.id].iter().all(|id| {
            w.store.plug(id).unwrap().node != "node1"
                && w.plug_copies(id)
                    .iter()
                    .any(|(n, s)| n != "node1" && *s == RunState::Running)
        })
    })
    .await;
    assert!(lost_at.elapsed() >= Duration::from_secs(60));
    assert!(
        w.store.node_conditions().unwrap()["node1"]
            .not_ready_since_ms
            .is_some()
    );
    assert_eq!(w.ctl.readiness()["node1"].name(), "not-ready");

    // Back: the stale copies are removed, then the node is Ready again.
    w.fakes["node1"].set_unreachable(false);
    until("node1 ready", Duration::from_secs(60), || {
        w.ctl.readiness()["node1"] == Readiness::Ready
    })
    .await;
    for id in [&a.id, &b.id] {
        let copies = w.plug_copies(id);
        assert_eq!(copies.len(), 1, "plug {id} runs once: {copies:?}");
        assert_ne!(copies[0].0, "node1");
    }
    assert!(w.containers("node1").is_empty());
    assert_eq!(
        w.store.node_conditions().unwrap()["node1"].not_ready_since_ms,
        None
    );
    // It takes work again.
    let c = w.ctl.create_plug("agent", "cy").await.unwrap();
    assert_eq!(c.node, "node1");
    w.stop().await;
}

#[test]
fn a_returning_node_takes_no_new_plug_before_its_stale_copies_are_gone() {
    use fleetctl::observe::{NodeObservation, ObservedFleet};
    use fleetctl::plan::{Snapshot, scheduling_views};
    let text = format!("{}{}", fleet_doc(""), plugs_doc("0", false));
    let loaded = manifest::parse(&[manifest::Source {
        name: "f.yaml".into(),
        text,
    }])
    .unwrap();
    let f = &loaded.fleet;
    let observed = ObservedFleet {
        engines: Default::default(),
        networks_observed: false,
        swarm: Default::default(),
        nodes: f
            .nodes
            .keys()
            .map(|n| {
                (
                    n.clone(),
                    NodeObservation::Reachable {
                        networks: Vec::new(),
                        containers: vec![],
                        foreign_ports: BTreeSet::new(),
                        foreign_containers: 0,
                        engine: None,
                        measured_memory: None,
                    },
                )
            })
            .collect(),
        tombstones: Default::default(),
        marks: Default::default(),
    };
    let place = |lost: &BTreeSet<String>| {
        let snapshot = Snapshot {
            fleet: f,
            observed: &observed,
            conditions: &BTreeMap::new(),
            plugs: &[],
            port_leases: &[],
            last_known: &BTreeMap::new(),
            lost,
            evict: &BTreeSet::new(),
        };
        let (views, _) = scheduling_views(&snapshot);
        let class = &f.plug_classes["agent"];
        fleetctl::schedule::place_plug(&views, class, &f.policy_for(class), None).unwrap()
    };
    assert_eq!(place(&BTreeSet::new()).node, "node1");
    let returning = place(&BTreeSet::from(["node1".to_string()]));
    assert_ne!(returning.node, "node1");
}

#[tokio::test(start_paused = true)]
async fn memory_pressure_evicts_the_most_idle_plug_first_and_activity_starts_it_again() {
    let w = world(&format!("{}{}", fleet_doc(""), plugs_doc("0", true)));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let mut ids = Vec::new();
    for owner in ["old", "mid", "new"] {
        ids.push(w.ctl.create_plug("agent", owner).await.unwrap().id);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Activity in reverse order of idleness: "old" was touched first, longest ago.
    for id in &ids {
        w.ctl.touch_plug(id).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // 1 GiB node, 50 % watermark = 512 MiB; three plugs at 200 MiB = 600 MiB.
    for c in w.containers("node1") {
        w.fakes["node1"].set_memory_usage(&c.id, 200 << 20);
    }
    until("one plug evicted", Duration::from_secs(40), || {
        w.store
            .plugs()
            .unwrap()
            .iter()
            .any(|p| p.state == PlugState::Evicted)
    })
    .await;
    until("its container stopped", Duration::from_secs(5), || {
        w.plug_copies(&ids[0]) == [("node1".to_string(), RunState::Exited)]
    })
    .await;
    let states: Vec<PlugState> = ids
        .iter()
        .map(|id| w.store.plug(id).unwrap().state)
        .collect();
    assert_eq!(
        states,
        [PlugState::Evicted, PlugState::Running, PlugState::Running],
        "only the most idle goes: 400 MiB is under the watermark"
    );
    let message = w.store.plug(&ids[0]).unwrap().message.unwrap();
    assert!(message.contains("memory pressure on node1"), "{message}");

    // Activity starts it again.
    for c in w.containers("node1") {
        w.fakes["node1"].set_memory_usage(&c.id, 10 << 20);
    }
    let p = w.ctl.touch_plug(&ids[0]).await.unwrap();
    assert_eq!(p.state, PlugState::Running);
    assert_eq!(w.plug_copies(&ids[0])[0].1, RunState::Running);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn activity_on_a_stopped_plug_whose_node_has_no_room_starts_it_on_another_node() {
    let w = world(&format!("{}{}", fleet_doc(""), plugs_doc("30m", false)));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let p = w.ctl.create_plug("agent", "ada").await.unwrap();
    assert_eq!(p.node, "node1");
    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    until("stopped", Duration::from_secs(120), || {
        w.store.plug(&p.id).unwrap().state == PlugState::Stopped
    })
    .await;
    // While it is stopped, its node stops taking work.
    w.ctl.cordon("node1", true, "test").unwrap();
    let t = w.ctl.touch_plug(&p.id).await.unwrap();
    assert_eq!(t.state, PlugState::Running);
    assert_eq!((t.node.as_str(), t.host_port), ("node2", p.port));
    // One copy, running, on the new node; the old port lease is gone.
    assert_eq!(
        w.plug_copies(&p.id),
        [("node2".to_string(), RunState::Running)]
    );
    let leases: Vec<(String, u16, String)> = w.store.port_leases().unwrap();
    assert_eq!(leases, [("node2".to_string(), p.port, p.id.clone())]);
    // No room anywhere: the touch fails with the diagnosis and the plug stays stopped.
    let q = w.ctl.create_plug("agent", "bob").await.unwrap();
    assert_eq!(q.node, "node2");
    w.ctl.delete_plug(&p.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31 * 60)).await;
    until("bob stopped", Duration::from_secs(120), || {
        w.store.plug(&q.id).unwrap().state == PlugState::Stopped
    })
    .await;
    for n in ["node2", "node3"] {
        w.ctl.cordon(n, true, "test").unwrap();
    }
    let e = w.ctl.touch_plug(&q.id).await.unwrap_err().to_string();
    assert!(
        e.contains("node1: cordoned") && e.contains("node3: cordoned"),
        "{e}"
    );
    assert_eq!(w.store.plug(&q.id).unwrap().state, PlugState::Stopped);
    assert_eq!(
        w.plug_copies(&q.id),
        [("node2".to_string(), RunState::Exited)]
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_plug_idle_past_its_timeout_is_stopped_and_a_touch_starts_it() {
    let w = world(&format!("{}{}", fleet_doc(""), plugs_doc("30m", false)));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let p = w.ctl.create_plug("agent", "ada").await.unwrap();
    tokio::time::sleep(Duration::from_secs(29 * 60)).await;
    assert_eq!(w.store.plug(&p.id).unwrap().state, PlugState::Running);
    let took = until("stopped", Duration::from_secs(120), || {
        w.store.plug(&p.id).unwrap().state == PlugState::Stopped
            && w.plug_copies(&p.id)[0].1 == RunState::Exited
    })
    .await;
    assert!(
        took <= Duration::from_secs(62),
        "stopped {took:?} after 29 min: at 30 min, not at the next resync"
    );
    let message = w.store.plug(&p.id).unwrap().message.unwrap();
    assert!(message.starts_with("idle for 30m"), "{message}");
    w.ctl.touch_plug(&p.id).await.unwrap();
    assert_eq!(w.plug_copies(&p.id)[0].1, RunState::Running);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_invalid_edit_changes_nothing_and_the_next_valid_one_applies_in_place() {
    let text = format!("{}{WEB}", fleet_doc(""));
    let w = world(&text);
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    let id = w.running("node1", "web").unwrap();
    // Unchanged content: nothing to do.
    assert!(!w.ctl.reload_manifests());
    // Invalid: the last good set stays.
    write(w.dir.path(), &text.replace("memory: 64MiB", "memory: lots"));
    assert!(!w.ctl.reload_manifests());
    assert_eq!(
        w.ctl.desired().fleet.services["web"].resources.memory.0,
        64 << 20
    );
    // Valid: in force, and the container is updated in place.
    write(
        w.dir.path(),
        &text.replace("memory: 64MiB", "memory: 96MiB"),
    );
    assert!(w.ctl.reload_manifests());
    until("memory updated", Duration::from_secs(5), || {
        w.fakes["node1"]
            .spec_of(&id)
            .is_some_and(|s| s.resources.memory == 96 << 20)
    })
    .await;
    assert_eq!(w.running("node1", "web").as_deref(), Some(id.as_str()));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_edited_config_file_is_a_manifest_change() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("app.conf");
    std::fs::write(&conf, "a = 1\n").unwrap();
    let text = format!(
        "{}{WEB}  configs: [{{source: {:?}, target: /etc/app.conf}}]\n",
        fleet_doc(""),
        conf.display().to_string()
    );
    let w = world(&text);
    let content = |w: &World| {
        w.ctl.desired().fleet.services["web"].files.configs[0]
            .content
            .clone()
    };
    assert_eq!(content(&w), b"a = 1\n");
    assert!(!w.ctl.reload_manifests());
    // The manifest files are unchanged; the config file is not.
    std::fs::write(&conf, "a = 2\n").unwrap();
    assert!(w.ctl.reload_manifests());
    assert_eq!(content(&w), b"a = 2\n");
    // A config file that disappears invalidates the manifests: the last good set stays, and
    // it is in force again as soon as the file is back.
    std::fs::remove_file(&conf).unwrap();
    assert!(!w.ctl.reload_manifests());
    assert_eq!(content(&w), b"a = 2\n");
    std::fs::write(&conf, "a = 3\n").unwrap();
    assert!(w.ctl.reload_manifests());
    assert_eq!(content(&w), b"a = 3\n");
    w.stop().await;
}

#[tokio::test]
async fn a_manifest_edit_is_picked_up_by_the_directory_watch() {
    let text = format!("{}{WEB}", fleet_doc(""));
    let w = world_with(&text, |c, _| c.watch_manifests = true);
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    // An editor's swap file changes nothing.
    std::fs::write(w.dir.path().join(".fleet.yaml.swp"), "garbage").unwrap();
    write(
        w.dir.path(),
        &text.replace("memory: 64MiB", "memory: 80MiB"),
    );
    let took = until("new manifests in force", Duration::from_secs(10), || {
        w.ctl.desired().fleet.services["web"].resources.memory.0 == 80 << 20
    })
    .await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let id = w.running("node1", "web").unwrap();
    until("memory updated", Duration::from_secs(5), || {
        w.fakes["node1"]
            .spec_of(&id)
            .is_some_and(|s| s.resources.memory == 80 << 20)
    })
    .await;
    // The applied set is recorded only with a lease; this test runs without one.
    w.stop().await;
}

#[tokio::test]
async fn a_plug_create_intent_is_claimed_run_and_answered() {
    let w = world_with(
        &format!("{}{}", fleet_doc(""), plugs_doc("0", false)),
        |c, _| c.poll_intents = true,
    );
    let payload = serde_json::to_string(&PlugCreateIntent {
        class: "agent".into(),
        owner: "ada".into(),
    })
    .unwrap();
    let id = w
        .store
        .submit_intent(kinds::PLUG_CREATE, &payload, 0)
        .unwrap();
    until("intent done", Duration::from_secs(10), || {
        w.store.intent(id).unwrap().unwrap().state == IntentState::Done
    })
    .await;
    let created: PlugCreated =
        serde_json::from_str(&w.store.intent(id).unwrap().unwrap().result.unwrap()).unwrap();
    assert_eq!(
        (created.node.as_str(), created.owner.as_str()),
        ("node1", "ada")
    );
    // A refusal comes back as a failure with its reason.
    let bad = serde_json::to_string(&PlugCreateIntent {
        class: "nope".into(),
        owner: "ada".into(),
    })
    .unwrap();
    let id = w.store.submit_intent(kinds::PLUG_CREATE, &bad, 0).unwrap();
    until("intent failed", Duration::from_secs(10), || {
        w.store.intent(id).unwrap().unwrap().state == IntentState::Failed
    })
    .await;
    let result = w.store.intent(id).unwrap().unwrap().result.unwrap();
    assert!(result.contains("no-class"), "{result}");
    w.stop().await;
}

#[tokio::test]
async fn intents_submitted_before_the_controller_took_the_lease_fail_as_stale() {
    let w = world_with(
        &format!("{}{}", fleet_doc(""), plugs_doc("0", false)),
        |c, store| {
            c.poll_intents = true;
            let lease = store
                .try_acquire_lease(
                    "controller (test)",
                    "controller",
                    None,
                    Duration::from_secs(30),
                    fleetctl::store::now_ms(),
                )
                .unwrap();
            c.lease = Some(fleetctl::controller::LeaseConfig {
                token: lease.token,
                acquired_ms: lease.acquired_ms,
            });
        },
    );
    let payload = serde_json::to_string(&PlugCreateIntent {
        class: "agent".into(),
        owner: "ada".into(),
    })
    .unwrap();
    let old = w
        .store
        .submit_intent(kinds::PLUG_CREATE, &payload, 1_000)
        .unwrap();
    let new = w
        .store
        .submit_intent(kinds::PLUG_CREATE, &payload, fleetctl::store::now_ms())
        .unwrap();
    until("both answered", Duration::from_secs(10), || {
        [old, new]
            .iter()
            .all(|id| w.store.intent(*id).unwrap().unwrap().state != IntentState::Pending)
    })
    .await;
    until("the new one done", Duration::from_secs(10), || {
        w.store.intent(new).unwrap().unwrap().state == IntentState::Done
    })
    .await;
    let stale = w.store.intent(old).unwrap().unwrap();
    assert_eq!(stale.state, IntentState::Failed);
    assert!(stale.result.unwrap().contains("\"stale\""));
    assert_eq!(w.store.plugs().unwrap().len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_promptly_and_returns_ok() {
    let w = world(&format!("{}{WEB}", fleet_doc("")));
    until("web runs", Duration::from_secs(5), || {
        w.running("node1", "web").is_some()
    })
    .await;
    let started = std::time::Instant::now();
    w.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn usage(id: &str, tags: &[&str], gib: u64, created: i64) -> fleetctl::container::ImageUsage {
    fleetctl::container::ImageUsage {
        id: format!("sha256:{id}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        size: gib << 30,
        created,
        ..Default::default()
    }
}

fn filesystem(used_gib: u64, available_gib: u64) -> fleetctl::container::Filesystem {
    fleetctl::container::Filesystem {
        size: (used_gib + available_gib) << 30,
        used: used_gib << 30,
        available: available_gib << 30,
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_over_the_disk_watermark_loses_the_images_nothing_uses_or_names_and_says_so_once() {
    let w = world(&format!("{}{WEB}", fleet_doc(", diskHighWatermark: 80%")));
    let node1 = &w.fakes["node1"];
    node1.add_foreign("operators-own", BTreeMap::new());
    node1.set_disk(
        Some(filesystem(90, 10)),
        vec![
            usage("web", &["web:1"], 1, 5),
            usage("old", &["old:1", "old:latest"], 3, 2),
            usage("dangling0123456789", &[], 2, 1),
            usage("tool", &["tool:2"], 1, 3),
            usage("foreign", &["foreign:latest"], 1, 4),
        ],
    );
    let untouched = vec![usage("other", &["other:1"], 5, 1)];
    w.fakes["node2"].set_disk(Some(filesystem(50, 50)), untouched.clone());
    // node3: `df` fails and no capacity.disk is declared: its use is unknown, nothing goes.
    w.fakes["node3"].set_disk(None, untouched.clone());

    let pruned = || {
        w.store
            .events(100)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "prune-images")
            .collect::<Vec<_>>()
    };
    until("node1 pruned", Duration::from_secs(5), || {
        !pruned().is_empty()
    })
    .await;
    let left: BTreeSet<String> = node1.disk_images().into_iter().map(|i| i.id).collect();
    assert_eq!(
        left,
        BTreeSet::from(["sha256:web".to_string(), "sha256:foreign".to_string()]),
        "the image the manifests name and the one a foreign container uses stay"
    );
    let e = &pruned()[0];
    assert_eq!(e.node.as_deref(), Some("node1"));
    assert!(
        e.message
            .starts_with("disk 90% > 80% (/var/lib/docker): removed 3 image(s)")
            && e.message.contains("sha256:dangling0123, old:1, tool:2")
            && e.message.contains("now 84%"),
        "{}",
        e.message
    );
    assert_eq!(w.fakes["node2"].disk_images(), untouched);
    assert_eq!(w.fakes["node3"].disk_images(), untouched);
    let metrics = w.ctl.metrics().encode();
    assert!(
        metrics.contains("fleetctl_images_pruned_total{node=\"node1\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetctl_node_disk_used_ratio{node=\"node2\"} 0.5"),
        "{metrics}"
    );

    // Still above with nothing left to remove: said once, not every resync.
    tokio::time::sleep(Duration::from_secs(95)).await;
    let high: Vec<_> = w
        .store
        .events(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "disk-high")
        .collect();
    assert_eq!(high.len(), 1, "{high:?}");
    assert!(
        high[0].message.contains("disk 84% > 80%"),
        "{}",
        high[0].message
    );
    assert_eq!(pruned().len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_secret_keeps_its_last_good_value_and_sighup_reads_a_new_one() {
    let text = format!(
        "{}---
apiVersion: fleet/v1
kind: Secret
metadata: {{name: pw}}
spec: {{file: ./pw}}
---
apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec:
  image: web:1
  placement: {{nodes: [node1]}}
  resources: {{memory: 64MiB}}
  env: {{PW: {{secret: pw}}}}
",
        fleet_doc("")
    );
    let w = world_with_files(&text, &[("pw", "first\n")], |_, _| {});
    let value = |w: &World| {
        let id = w.running("node1", "web")?;
        let spec = w.fakes["node1"].spec_of(&id)?;
        Some((
            id,
            String::from_utf8_lossy(spec.secret_env["PW"].value.expose()).into_owned(),
        ))
    };
    until("web runs", Duration::from_secs(5), || value(&w).is_some()).await;
    let (id, v) = value(&w).unwrap();
    assert_eq!(v, "first");

    // The source is gone: the last good value stays, said as an event; nothing is replaced.
    std::fs::remove_file(w.dir.path().join("pw")).unwrap();
    assert!(!w.ctl.reload_secrets());
    let said: Vec<_> = w
        .store
        .events(50)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "secret-unreadable")
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].message.starts_with("secret pw: file /")
            && said[0].message.ends_with(
                "/pw: No such file or directory (os error 2); the last good value stays in use"
            ),
        "{}",
        said[0].message
    );
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(value(&w).unwrap(), (id.clone(), "first".to_string()));

    // A new value (as SIGHUP reads it): web is replaced with it.
    std::fs::write(w.dir.path().join("pw"), "second\n").unwrap();
    assert!(w.ctl.reload_secrets());
    until("web runs the new value", Duration::from_secs(10), || {
        value(&w).is_some_and(|(i, v)| i != id && v == "second")
    })
    .await;
    w.stop().await;
}

const AUTOSCALED: &str = "---
apiVersion: fleet/v1
kind: Service
metadata: {name: api}
spec:
  image: api:1
  resources: {memory: 64MiB, cpus: 1}
  autoscale:
    min: 1
    max: 3
    cpu: {above: 50%, for: 10s, below: 10%, belowFor: 20s}
    cooldown: 5s
";

impl World {
    /// Running replicas of service `name`, over every node.
    fn replicas(&self, name: &str) -> Vec<(String, String)> {
        self.fakes
            .iter()
            .flat_map(|(n, f)| {
                f.containers()
                    .into_iter()
                    .filter(|c| {
                        c.label(labels::SERVICE) == Some(name) && c.state == RunState::Running
                    })
                    .map(move |c| (n.clone(), c.id))
            })
            .collect()
    }

    /// Makes every running replica of `name` report `percent` of a CPU.
    fn load(&self, name: &str, percent: f64) {
        for (n, id) in self.replicas(name) {
            self.fakes[&n].set_cpu_percent(&id, percent);
        }
    }

    fn scale_events(&self) -> Vec<String> {
        self.store
            .events_since(0, 0, None)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "scale")
            .map(|e| e.message)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn sustained_cpu_scales_a_service_up_to_max_and_idleness_back_to_min_one_step_at_a_time() {
    let w = world(&format!("{}{AUTOSCALED}", fleet_doc("")));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    assert_eq!(w.replicas("api").len(), 1);
    // 90% of a CPU on every replica, new ones included: 2, then 3, never 4.
    let took = until("two replicas", Duration::from_secs(30), || {
        w.load("api", 90.0);
        w.replicas("api").len() == 2
    })
    .await;
    assert!(
        took >= Duration::from_secs(10),
        "scaled before `for`: {took:?}"
    );
    until("three replicas", Duration::from_secs(40), || {
        w.load("api", 90.0);
        w.replicas("api").len() == 3
    })
    .await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(40) {
        w.load("api", 90.0);
        assert!(w.replicas("api").len() <= 3, "past max");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(w.store.scale_records().unwrap()["api"].replicas, 3);
    // Idle: one step down per belowFor (+ cooldown), to min and no further.
    until("back to one", Duration::from_secs(120), || {
        w.load("api", 2.0);
        w.replicas("api").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(w.replicas("api").len(), 1);
    let events = w.scale_events();
    assert_eq!(events.len(), 4, "{events:#?}");
    assert!(
        events[0].starts_with("api: 1 → 2 replicas (cpu 90% > 50% for 10s)"),
        "{events:#?}"
    );
    assert!(events[1].starts_with("api: 2 → 3 replicas (cpu 90% > 50% for 10s)"));
    assert!(events[2].starts_with("api: 3 → 2 replicas (cpu 2% < 10% for 20s)"));
    assert!(events[3].starts_with("api: 2 → 1 replicas (cpu 2% < 10% for 20s)"));
    let m = w.ctl.metrics_text();
    assert!(
        m.contains("fleetctl_autoscale_total{service=\"api\",direction=\"up\"} 2"),
        "{m}"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn load_flapping_inside_the_window_never_scales() {
    let w = world(&format!("{}{AUTOSCALED}", fleet_doc("")));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        // 6 s busy, 6 s idle: never 10 s above 50% nor 20 s below 10%.
        let busy = (start.elapsed().as_secs() / 6).is_multiple_of(2);
        w.load("api", if busy { 95.0 } else { 1.0 });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(w.replicas("api").len(), 1);
    assert!(w.scale_events().is_empty(), "{:?}", w.scale_events());
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_hot_past_the_watermark_takes_no_plug_until_it_cools() {
    let text = format!(
        "{}{}",
        fleet_doc(""),
        plugs_doc("0", false).replace(
            "  evictIdleOnPressure: false\n",
            "  evictIdleOnPressure: false\n  cpuHighWatermark: {above: 80%, for: 10s}\n"
        )
    );
    let w = world(&text);
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let first = w.ctl.create_plug("agent", "a").await.unwrap();
    assert_eq!(first.node, "node1");
    // node1 has 4 CPUs: its plug at 370% of a CPU is 92.5% of the node.
    let id = w.running("node1", &first.id).unwrap();
    w.fakes["node1"].set_cpu_percent(&id, 370.0);
    until("node1 hot", Duration::from_secs(30), || {
        w.store.hot_nodes().unwrap().contains_key("node1")
    })
    .await;
    let why = &w.store.hot_nodes().unwrap()["node1"].why;
    assert_eq!(why, "cpu 92% > 80% for 10s");
    let second = w.ctl.create_plug("agent", "b").await.unwrap();
    assert_ne!(second.node, "node1", "a hot node took a plug");
    let hot = w
        .store
        .events_since(0, 0, None)
        .unwrap()
        .into_iter()
        .find(|e| e.action == "node-hot")
        .expect("a node-hot event");
    assert_eq!(hot.node.as_deref(), Some("node1"));
    assert!(
        hot.message.contains("cpu 92% > 80% for 10s"),
        "{}",
        hot.message
    );
    // Cooled for 10 s: it takes plugs again.
    w.fakes["node1"].set_cpu_percent(&id, 10.0);
    until("node1 cool", Duration::from_secs(30), || {
        !w.store.hot_nodes().unwrap().contains_key("node1")
    })
    .await;
    let third = w.ctl.create_plug("agent", "c").await.unwrap();
    assert_eq!(third.node, "node1");
    w.stop().await;
}

/// Revisions under the controller: each set it puts in force and converges is one (an edit of
/// the watched manifests or of a config file they read); a rollback handed over puts an
/// earlier revision's manifests and config contents in force — the operator's files are not
/// read — and is itself a revision, noting what it rolled back to; an unknown revision is
/// refused, naming the ones there are, and changes nothing.
#[tokio::test(start_paused = true)]
async fn a_rollback_puts_an_earlier_revision_in_force_and_is_recorded_as_one() {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("app.conf");
    std::fs::write(&conf, "a = 1\n").unwrap();
    let text = format!(
        "{}{WEB}  command: [serve, --v1]\n  configs: [{{source: {:?}, target: /etc/app.conf}}]\n",
        fleet_doc(""),
        conf.display().to_string()
    );
    let w = world(&text);
    let revisions = |w: &World| w.store.revisions().unwrap();
    let command = |w: &World| {
        w.running("node1", "web")
            .and_then(|id| w.fakes["node1"].spec_of(&id))
            .and_then(|s| s.command)
    };
    until("revision 1", Duration::from_secs(60), || {
        revisions(&w).len() == 1
    })
    .await;
    assert_eq!(command(&w), Some(vec!["serve".into(), "--v1".into()]));

    // v2: another command and another config file content.
    write(w.dir.path(), &text.replace("--v1", "--v2"));
    std::fs::write(&conf, "a = 2\n").unwrap();
    assert!(w.ctl.reload_manifests());
    until("revision 2", Duration::from_secs(60), || {
        revisions(&w).len() == 2
    })
    .await;
    assert_eq!(command(&w), Some(vec!["serve".into(), "--v2".into()]));
    assert_eq!(
        revisions(&w)[1].summary,
        "web: command, files changed",
        "{:?}",
        revisions(&w)
    );

    // Unknown revision: refused, nothing changed.
    let err = w
        .ctl
        .rollback(99, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no revision 99; revisions 1–2");
    assert_eq!(revisions(&w).len(), 2);

    // Back to 1, with the config file on disk still at v2 (and the manifests too). Past the
    // restart backoff of the update to v2 (a recreate within it is held).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let view = w.ctl.rollback(1, Duration::from_secs(30)).await.unwrap();
    assert!(view.converged, "{view:?}");
    assert_eq!(command(&w), Some(vec!["serve".into(), "--v1".into()]));
    assert_eq!(
        w.ctl.desired().fleet.services["web"].files.configs[0].content,
        b"a = 1\n"
    );
    until("revision 3", Duration::from_secs(60), || {
        revisions(&w).len() == 3
    })
    .await;
    let third = &revisions(&w)[2];
    assert_eq!(third.rollback_of, Some(1));
    assert_eq!(third.hash, revisions(&w)[0].hash);
    assert!(
        third
            .summary
            .starts_with("rollback to revision 1: web: command"),
        "{}",
        third.summary
    );
    // A resync does not undo it: the watched files have not changed.
    assert!(!w.ctl.reload_manifests());
    assert_eq!(command(&w), Some(vec!["serve".into(), "--v1".into()]));
    w.stop().await;
}

/// `fleetctl rollback` beside a controller goes through the intents table: an unknown
/// revision comes back failed as `no-revision`, naming the ones there are; a known one comes
/// back done with the apply's view, converged.
#[tokio::test(start_paused = true)]
async fn a_rollback_intent_is_run_and_answered() {
    use fleetctl::controller::intents::RollbackIntent;
    let text = format!("{}{WEB}", fleet_doc(""));
    let w = world_with(&text, |c, _| c.poll_intents = true);
    until("revision 1", Duration::from_secs(60), || {
        w.store.revisions().unwrap().len() == 1
    })
    .await;
    write(
        w.dir.path(),
        &text.replace("memory: 64MiB", "memory: 96MiB"),
    );
    assert!(w.ctl.reload_manifests());
    until("revision 2", Duration::from_secs(60), || {
        w.store.revisions().unwrap().len() == 2
    })
    .await;
    let submit = |revision| {
        let payload = serde_json::to_string(&RollbackIntent {
            revision,
            timeout_ms: Some(10_000),
        })
        .unwrap();
        w.store.submit_intent(kinds::ROLLBACK, &payload, 0).unwrap()
    };
    let id = submit(7);
    until("intent failed", Duration::from_secs(60), || {
        w.store.intent(id).unwrap().unwrap().state == IntentState::Failed
    })
    .await;
    let result = w.store.intent(id).unwrap().unwrap().result.unwrap();
    assert!(
        result.contains("no-revision") && result.contains("no revision 7; revisions 1–2"),
        "{result}"
    );
    let id = submit(1);
    until("intent done", Duration::from_secs(60), || {
        w.store.intent(id).unwrap().unwrap().state == IntentState::Done
    })
    .await;
    let view: serde_json::Value =
        serde_json::from_str(&w.store.intent(id).unwrap().unwrap().result.unwrap()).unwrap();
    assert_eq!(view["converged"], true, "{view}");
    assert_eq!(
        w.ctl.desired().fleet.services["web"].resources.memory.0,
        64 << 20
    );
    until("revision 3", Duration::from_secs(60), || {
        w.store.revisions().unwrap().len() == 3
    })
    .await;
    assert_eq!(w.store.revisions().unwrap()[2].rollback_of, Some(1));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_count_placement_cannot_hold_is_given_back_and_said_once_per_cooldown() {
    // One replica per node on three nodes, but max 5: the fourth has no room.
    let text = AUTOSCALED
        .replace("max: 3", "max: 5")
        .replace("  resources:", "  placement: {maxPerNode: 1}\n  resources:");
    let w = world(&format!("{}{text}", fleet_doc("")));
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    until("a 'no room' scale", Duration::from_secs(120), || {
        w.load("api", 90.0);
        assert!(w.replicas("api").len() <= 3, "more replicas than nodes");
        w.scale_events().iter().any(|e| e.contains("no room"))
    })
    .await;
    let first = w.scale_events();
    let no_room = first.iter().find(|e| e.contains("no room")).unwrap();
    assert!(
        no_room.starts_with("api: 4 → 3 replicas (no room for more: node1: "),
        "{first:#?}"
    );
    // The load goes on: the same answer at most once per cooldown (5 s) — here, once per
    // `for` (10 s) after it, since each try needs a full window.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        w.load("api", 90.0);
        assert!(w.replicas("api").len() <= 3);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let again = w
        .scale_events()
        .iter()
        .filter(|e| e.contains("no room"))
        .count();
    assert!((1..=1 + 30 / 5).contains(&again), "{:#?}", w.scale_events());
    assert!(w.store.scale_records().unwrap()["api"].replicas <= 4);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn load_settings_removed_take_their_gauges_marks_and_counts_with_them() {
    let text = format!(
        "{}{AUTOSCALED}{}",
        fleet_doc(""),
        plugs_doc("0", false).replace(
            "  evictIdleOnPressure: false\n",
            "  evictIdleOnPressure: false\n  cpuHighWatermark: {above: 80%, for: 4s}\n"
        )
    );
    let w = world(&text);
    until("first pass", Duration::from_secs(5), || w.ctl.passes() > 0).await;
    let first = w.ctl.create_plug("agent", "a").await.unwrap();
    let id = w.running(&first.node, &first.id).unwrap();
    w.fakes[&first.node].set_cpu_percent(&id, 390.0);
    until("hot, and api scaled", Duration::from_secs(60), || {
        w.load("api", 90.0);
        w.store.hot_nodes().unwrap().contains_key(&first.node)
            && w.store.scale_records().unwrap().contains_key("api")
    })
    .await;
    let m = w.ctl.metrics_text();
    assert!(
        m.contains("fleetctl_service_cpu_percent{service=\"api\"}"),
        "{m}"
    );
    assert!(m.contains(&format!(
        "fleetctl_node_cpu_percent{{node=\"{}\"}}",
        first.node
    )));
    // The settings go: the marks, the counts and the gauges with them.
    write(
        w.dir.path(),
        &text
            .replace("  cpuHighWatermark: {above: 80%, for: 4s}\n", "")
            .replace(
                "  autoscale:\n    min: 1\n    max: 3\n    cpu: {above: 50%, for: 10s, below: 10%, belowFor: 20s}\n    cooldown: 5s\n",
                "",
            ),
    );
    assert!(w.ctl.reload_manifests());
    until(
        "marks and counts forgotten",
        Duration::from_secs(10),
        || w.store.hot_nodes().unwrap().is_empty() && w.store.scale_records().unwrap().is_empty(),
    )
    .await;
    let m = w.ctl.metrics_text();
    assert!(!m.contains("fleetctl_service_cpu_percent{"), "{m}");
    assert!(!m.contains("fleetctl_node_cpu_percent{"), "{m}");
    assert!(
        m.contains(&format!("fleetctl_node_hot{{node=\"{}\"}} 0", first.node)),
        "{m}"
    );
    // The plug's node takes plugs again.
    w.ctl.create_plug("agent", "b").await.unwrap();
    w.stop().await;
}

//! `fleetctl drain` end to end (issue 7): plugs and replicas move start-first, the node ends
//! empty and drained, nothing is stopped without a replacement, pinned services stay unless
//! `--force`, plugs keep their ports.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Fleet, Sandbox};

/// Plugs land on node2 first (tier 0), then node1/node3; web's two replicas may run on any node,
/// one per node, so the one on node2 can move to the third.
fn docs(cap: u32, extra: &str) -> String {
    format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec:
  image: fleet-test/busybox:1
  replicas: 2
  placement: {{maxPerNode: 1}}
  resources: {{memory: 32MiB}}
  healthcheck: {{command: \"timeout 2 wget -q -O- http://127.0.0.1:8080/health\", interval: 1s, retries: 3}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec:
  image: fleet-test/busybox:1
  resources: {{memory: 16MiB}}
  port: 8080
  hostPorts: 51000-51099
  healthcheck: {{command: \"timeout 2 wget -q -O- http://127.0.0.1:8080/health\", interval: 1s, retries: 3}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: {cap}
  tiers: [{{nodes: [node2]}}, {{nodes: [node1, node3]}}]
{extra}"
    )
}

fn plugs(f: &Fleet) -> Vec<serde_json::Value> {
    let (_, out, _) = f.run(&["get", "plugs", "-o", "json"]);
    serde_json::from_str(&out).unwrap()
}

fn create(f: &Fleet, n: usize) {
    let dir = f.path().to_str().unwrap().to_string();
    for i in 0..n {
        let (code, out, err) = f.run(&[
            "plug",
            "create",
            "agent",
            "--owner",
            &format!("u{i}"),
            "-f",
            &dir,
        ]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

#[test]
fn drain_moves_everything_start_first_and_leaves_the_node_drained() {
    let Some(sb) = Sandbox::get("drain_moves_everything_start_first_and_leaves_the_node_drained")
    else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-drain", &docs(4, ""));
    f.apply();
    create(&f, 4);
    let before: BTreeMap<String, (String, u64)> = plugs(&f)
        .into_iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                (
                    p["node"].as_str().unwrap().to_string(),
                    p["host_port"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert!(before.values().all(|(n, _)| n == "node2"), "{before:?}");
    assert_eq!(sb.ids("node2", &f.name).len(), 5, "4 plugs + 1 web replica");

    let t0 = sb.engine_now("node1");
    let (code, out, err) = f.run(&["drain", "node2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node node2 drained"), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = sb.engine_now("node1");

    assert!(
        sb.ids("node2", &f.name).is_empty(),
        "node2 still holds fleet containers"
    );
    for p in plugs(&f) {
        let id = p["id"].as_str().unwrap();
        assert_ne!(p["node"], "node2");
        assert_eq!(
            p["host_port"].as_u64().unwrap(),
            before[id].1,
            "plug {id} lost its port"
        );
    }
    // From the engines' own records: every original on node2 was killed after its replacement
    // started on another node.
    let gone = sb.timed_events("node2", &f.name, &t0, &t1);
    let started: Vec<(u128, String)> = ["node1", "node3"]
        .iter()
        .flat_map(|n| sb.timed_events(n, &f.name, &t0, &t1))
        .filter(|(_, a, _)| a == "start")
        .map(|(t, _, name)| (t, name))
        .collect();
    let mut checked = 0;
    for (t_stop, _, name) in gone.iter().filter(|(_, a, _)| a == "kill" || a == "stop") {
        // Plugs keep their container name; a web replica's replacement has the same prefix.
        let key = if name.contains("-plug-") {
            name.clone()
        } else {
            name[..name.rfind('-').unwrap()].to_string()
        };
        let t_start = started
            .iter()
            .filter(|(_, n)| n.starts_with(&key))
            .map(|(t, _)| *t)
            .min()
            .unwrap_or_else(|| panic!("no replacement started for {name}: {started:?}"));
        assert!(
            t_start < *t_stop,
            "{name} was stopped before its replacement started"
        );
        checked += 1;
    }
    assert!(checked >= 5, "stops seen: {gone:?}");

    // `get nodes` shows it drained.
    let (_, out, _) = f.run(&["get", "nodes", "-o", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let node2 = nodes.iter().find(|n| n["name"] == "node2").unwrap();
    assert_eq!(
        node2["conditions"],
        serde_json::json!(["drained"]),
        "{node2}"
    );
    // Drained: new plugs never land on node2 until uncordon.
    create(&f, 1);
    assert!(plugs(&f).iter().all(|p| p["node"] != "node2"));
    let (code, out, _) = f.run(&["uncordon", "node2"]);
    assert_eq!(code, 0);
    assert!(out.contains("uncordoned"), "{out}");
    create(&f, 1);
    assert!(
        plugs(&f).iter().any(|p| p["node"] == "node2"),
        "after uncordon node2 takes plugs again"
    );
}

#[test]
fn without_room_drain_stops_nothing_and_finishes_when_room_is_made() {
    let Some(sb) = Sandbox::get("without_room_drain_stops_nothing_and_finishes_when_room_is_made")
    else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-drain-full", &docs(2, ""));
    f.apply();
    create(&f, 6); // node2: 2, then node1: 2, node3: 2 — every node at its cap
    let on2 = sb.ids("node2", &f.name);
    let (code, out, err) = f.run(&["drain", "node2"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("NOT drained"), "{out}");
    assert!(out.contains("2/2 plugs"), "the report says why: {out}");
    // Nothing was stopped without a replacement: both plugs still run on node2.
    let running_plugs = sb
        .ids("node2", &f.name)
        .into_iter()
        .filter(|id| {
            sb.inspect(
                "node2",
                id,
                "{{index .Config.Labels \"fleet.kind\"}} {{.State.Status}}",
            ) == "plug running"
        })
        .count();
    assert_eq!(running_plugs, 2, "before: {on2:?}");
    // Make room, run drain again: it finishes.
    for p in plugs(&f).into_iter().filter(|p| p["node"] == "node3") {
        let (code, _, _) = f.run(&["plug", "delete", p["id"].as_str().unwrap()]);
        assert_eq!(code, 0);
    }
    let (code, out, err) = f.run(&["drain", "node2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(sb.ids("node2", &f.name).is_empty());
}

#[test]
fn a_service_pinned_to_the_node_stays_unless_forced() {
    let Some(sb) = Sandbox::get("a_service_pinned_to_the_node_stays_unless_forced") else {
        return;
    };
    let pinned = "---
apiVersion: fleet/v1
kind: Service
metadata: {name: local-cache}
spec: {image: fleet-test/busybox:1, placement: {nodes: [node2]}, resources: {memory: 32MiB}}
";
    let f = Fleet::new(&sb, "e2e-drain-pinned", &docs(4, pinned));
    f.apply();
    let (code, out, err) = f.run(&["drain", "node2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("pinned"),
        "the pinned replica is listed: {out}"
    );
    let left = sb.ids("node2", &f.name);
    assert_eq!(left.len(), 1);
    assert_eq!(
        sb.inspect(
            "node2",
            &left[0],
            "{{index .Config.Labels \"fleet.service\"}} {{.State.Status}}"
        ),
        "local-cache running"
    );
    let (code, out, err) = f.run(&["drain", "node2", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(sb.ids("node2", &f.name).is_empty(), "--force stops it");
}

/// Issue 12, bug 1: a direct drain renews its lease for as long as it runs. Before, it took the
/// lease once (TTL 30 s) and never renewed it, so an apply started after 30 s took the lease and
/// acted beside the drain. Here the drain's replacement cannot turn healthy until the test
/// opens a gate, so the drain outlives the TTL; an apply attempted past the TTL must be refused
/// with "is locked", and the drain must still finish once the gate opens.
///
/// Issue 13: the apply runs with *another state file* (another machine, a CI runner): only the
/// lease held on the nodes can stop it. It is refused naming the drain, changes nothing, and
/// succeeds once the drain is over.
#[test]
fn a_drain_longer_than_the_lease_ttl_keeps_the_fleet_locked() {
    let Some(sb) = Sandbox::get("a_drain_longer_than_the_lease_ttl_keeps_the_fleet_locked") else {
        return;
    };
    let gate = tempfile::tempdir().unwrap();
    let closed = gate.path().join("closed");
    let doc = format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: gated}}
spec:
  image: fleet-test/busybox:1
  placement: {{nodes: [node2, node3]}}
  resources: {{memory: 16MiB}}
  volumes: ['{}:/gate:ro']
  healthcheck: {{command: 'test ! -e /gate/closed', interval: 1s, retries: 1}}
",
        gate.path().display()
    );
    let f = Fleet::new(&sb, "e2e-drain-lease", &doc);
    f.apply();
    let home = ["node2", "node3"]
        .into_iter()
        .find(|n| sb.ids(n, &f.name).len() == 1)
        .expect("gated runs on node2 or node3");

    std::fs::write(&closed, "").unwrap();
    let mut drain = f
        .cmd(&["drain", home, "-f", f.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Past the lease's TTL: the drain is still waiting for its replacement to turn healthy.
    std::thread::sleep(fleetctl::lease::TTL + Duration::from_secs(5));
    assert!(
        drain.try_wait().unwrap().is_none(),
        "the drain is still running"
    );

    let other_state = tempfile::tempdir().unwrap();
    let apply_b = || {
        let out = f
            .cmd(&["apply", f.path().to_str().unwrap(), "--lock-timeout", "2s"])
            .env("FLEETCTL_STATE", other_state.path().join("b.db"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let before = f.all_ids();
    let (code, out, err) = apply_b();
    assert_eq!(code, 1, "apply must not act during the drain:\n{out}{err}");
    assert!(
        err.contains(&format!("fleet {} is locked by drain by", f.name))
            && err.contains(" since ")
            && err.contains("(lease held on "),
        "apply names the drain holding the lease:\n{out}{err}"
    );
    assert_eq!(f.all_ids(), before, "the refused apply changed nothing");

    std::fs::remove_file(&closed).unwrap();
    let out = drain.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("node {home} drained")), "{text}");
    assert!(sb.ids(home, &f.name).is_empty());
    // The drain let go: the other state file's apply now runs (and adopts nothing: no plugs).
    let (code, out, err) = apply_b();
    assert_eq!(code, 0, "apply after the drain:\n{out}{err}");
}

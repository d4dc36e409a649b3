//! Load-driven behaviour end to end (SPEC §14, issue 18): the real binary as a controller over
//! SSH, the engines' own stats streams, and containers that burn a CPU on demand — a busybox
//! loop that spins while `/tmp/burn` exists, toggled with `docker exec` — so the load is real.
//! Short windows are set by the manifests; nothing here sleeps and hopes: every wait polls for
//! the state it needs, with a bound.

mod common;

use std::time::{Duration, Instant};

use common::{Fleet, IMAGE, Run, Sandbox, wait_for};

/// A command that spins one CPU while `/tmp/burn` exists and idles otherwise.
const BURN: &str = "[sh, -c, 'trap \"exit 0\" TERM; while :; do if [ -f /tmp/burn ]; then while [ -f /tmp/burn ]; do :; done; fi; sleep 0.2; done']";

fn write_fleet(f: &Fleet, port: u16, docs: &str) {
    let text = format!(
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: {}}}\nspec: {{nodeLostAfter: 30s, resync: 5s, api: {{listen: '127.0.0.1:{port}'}}}}\n---\n{docs}",
        f.name
    );
    let tmp = f.path().join(".fleet.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, f.path().join("fleet.yaml")).unwrap();
}

/// (node, id) of the running containers of the fleet carrying `label`.
fn running(f: &Fleet, label: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in &f.sb.nodes {
        let text = f.sb.docker(
            n,
            &[
                "ps",
                "--no-trunc",
                "--filter",
                &format!("label=fleet.fleet={}", f.name),
                "--filter",
                &format!("label={label}"),
                "--format",
                "{{.ID}}",
            ],
        );
        out.extend(text.lines().map(|id| (n.clone(), id.to_string())));
    }
    out
}

/// Starts (`on`) or stops the burn in every running container carrying `label`.
fn burn(f: &Fleet, label: &str, on: bool) {
    for (n, id) in running(f, label) {
        let cmd = if on { "touch" } else { "rm" };
        let _ =
            f.sb.script(&["docker", &n, "exec", &id, cmd, "-f", "/tmp/burn"]);
    }
}

fn events(f: &Fleet, action: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = f.run(&["events", f.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    all.into_iter().filter(|e| e["action"] == action).collect()
}

#[test]
fn cpu_load_scales_a_service_to_max_a_restart_keeps_the_count_and_idleness_brings_it_back() {
    const TEST: &str =
        "cpu_load_scales_a_service_to_max_a_restart_keeps_the_count_and_idleness_brings_it_back";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-autoscale", "");
    write_fleet(
        &f,
        7441,
        &format!(
            "apiVersion: fleet/v1
kind: Service
metadata: {{name: api}}
spec:
  image: '{IMAGE}'
  pull: never
  command: {BURN}
  placement: {{maxPerNode: 1}}
  resources: {{memory: 16MiB, cpus: 1}}
  autoscale:
    min: 1
    max: 3
    cpu: {{above: 50%, for: 10s, below: 10%, belowFor: 20s}}
    cooldown: 5s
"
        ),
    );
    let label = "fleet.service=api";
    let mut run = Run::start(&f, 7441);
    wait_for(Duration::from_secs(60), "one replica", || {
        (running(&f, label).len() == 1).then_some(())
    });
    // Load on every replica, new ones included: 2, then 3.
    wait_for(Duration::from_secs(120), "three replicas", || {
        burn(&f, label, true);
        let n = running(&f, label).len();
        assert!(n <= 3, "{n} replicas: past max");
        std::thread::sleep(Duration::from_millis(500));
        (n == 3).then_some(())
    });
    // describe service says the bounds, the count, why and what was measured.
    let dir = f.path().to_str().unwrap().to_string();
    let (code, out, err) = f.run(&["describe", "service", "api", "-f", &dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Replicas:    "), "{out}");
    assert!(
        out.contains(
            "Autoscale:   1–3 replicas, now 3; cpu > 50% for 10s, < 10% for 20s; cooldown 5s"
        ),
        "{out}"
    );
    assert!(
        out.contains("Last scale:  ") && out.contains("to 3 (cpu "),
        "{out}"
    );
    assert!(out.contains("Load:        cpu "), "{out}");
    // A controller restart and a CLI apply keep the scaled count.
    let (code, _) = run.stop();
    assert_eq!(code, 0, "{}", run.log_text());
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(running(&f, label).len(), 3, "apply undid the scale:\n{out}");
    let run = Run::start(&f, 7441);
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        burn(&f, label, true);
        assert_eq!(running(&f, label).len(), 3, "{}", run.log_text());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Idle: back to one, one step per belowFor.
    wait_for(Duration::from_secs(150), "back to one replica", || {
        burn(&f, label, false);
        std::thread::sleep(Duration::from_millis(500));
        (running(&f, label).len() == 1).then_some(())
    });
    let scales = events(&f, "scale");
    let messages: Vec<&str> = scales
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:#?}");
    for (m, (from, to)) in messages.iter().zip([(1, 2), (2, 3), (3, 2), (2, 1)]) {
        assert!(
            m.starts_with(&format!("api: {from} → {to} replicas (cpu ")),
            "{messages:#?}"
        );
        let rule = if to > from {
            "> 50% for 10s"
        } else {
            "< 10% for 20s"
        };
        assert!(m.contains(rule), "{messages:#?}");
    }
    let (_, metrics) = run.get("/metrics", true);
    assert!(
        metrics.contains("fleetctl_autoscale_total{service=\"api\",direction=\"down\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_node_held_above_cpu_high_watermark_gets_no_new_plug_until_it_cools() {
    const TEST: &str = "a_node_held_above_cpu_high_watermark_gets_no_new_plug_until_it_cools";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-hot", "");
    write_fleet(
        &f,
        7442,
        &format!(
            "apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: '{IMAGE}', pull: never, port: 8080, command: {BURN}, resources: {{memory: 16MiB}}}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  tiers: [{{nodes: [node1]}}]
  cpuHighWatermark: {{above: 30%, for: 5s}}
"
        ),
    );
    let dir = f.path().to_str().unwrap().to_string();
    let run = Run::start(&f, 7442);
    let create = |owner: &str| {
        f.run(&[
            "plug", "create", "agent", "--owner", owner, "-f", &dir, "-o", "json",
        ])
    };
    let (code, out, err) = create("a");
    assert_eq!(code, 0, "{out}{err}");
    // One spinning CPU of node1's two: 50% > 30%, sustained for 5 s.
    burn(&f, "fleet.plug-class=agent", true);
    wait_for(Duration::from_secs(60), "node1 hot", || {
        events(&f, "node-hot").into_iter().next()
    });
    let (code, out, err) = create("b");
    assert_eq!(code, 1, "a hot node took a plug:\n{out}{err}");
    assert!(
        err.contains("node1: hot: cpu ") && err.contains("% > 30% for 5s"),
        "{err}"
    );
    let hot = &events(&f, "node-hot")[0];
    assert_eq!(hot["node"], "node1");
    let (code, out, err) = f.run(&["get", "nodes", "-f", &dir]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("node1"))
        .unwrap_or_default();
    assert!(row.contains("Ready,hot"), "{out}");
    let (_, out, _) = f.run(&["describe", "node", "node1", "-f", &dir]);
    assert!(out.contains("Hot:           cpu "), "{out}");
    assert!(out.contains("Load:          cpu "), "{out}");
    // Cooled for 5 s: it takes plugs again.
    burn(&f, "fleet.plug-class=agent", false);
    wait_for(Duration::from_secs(60), "node1 cool", || {
        events(&f, "node-cool").into_iter().next()
    });
    let (code, out, err) = create("c");
    assert_eq!(code, 0, "{out}{err}\n{}", run.log_text());
}

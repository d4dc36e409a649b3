//! One fleet on three engines at once (issue 19): the sandbox's Docker 20.10, Docker 26.1 and
//! Podman 4.3 nodes. apply / no-op / in-place update (a recreate on Podman) / recreate /
//! prune; plugs spilling across the three, a drain from the Podman node to Docker nodes; the
//! controller bringing back a container killed on each engine. Every check reads the engines
//! themselves (inspect, their event records).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Fleet, Run, Sandbox, wait_for};

/// The three engines' nodes: (Docker 20.10, Docker 26.1, Podman).
fn engines(sb: &Sandbox, test: &str) -> Option<[String; 3]> {
    Some([
        sb.node_with(test, "docker-20.10")?,
        sb.node_with(test, "docker-26.1")?,
        sb.node_with(test, "podman")?,
    ])
}

fn web(image: &str, memory: &str, extra: &str) -> String {
    format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec:
  image: {image}
  replicas: 3
  placement: {{maxPerNode: 1}}
  resources: {{memory: {memory}}}
  healthcheck: {{command: \"wget -q -O- http://127.0.0.1:8080/health\", interval: 1s, retries: 3}}
{extra}"
    )
}

/// `node → (id, running, image, memory)` of the fleet's web replicas.
fn replicas(f: &Fleet) -> BTreeMap<String, (String, bool, String, u64)> {
    let mut out = BTreeMap::new();
    for (node, id) in f.all_ids() {
        let line = f.sb.inspect(
            &node,
            &id,
            "{{.State.Running}} {{.Config.Image}} {{.HostConfig.Memory}} {{index .Config.Labels \"fleet.service\"}}",
        );
        let p: Vec<&str> = line.split(' ').collect();
        if p.get(3) != Some(&"web") {
            continue;
        }
        assert!(
            out.insert(
                node.clone(),
                (id, p[0] == "true", p[1].to_string(), p[2].parse().unwrap())
            )
            .is_none(),
            "two replicas on {node}"
        );
    }
    out
}

/// Mutating actions among `events` (`action name` lines).
fn mutating(events: &[String]) -> Vec<String> {
    const MUTATING: [&str; 13] = [
        "create", "start", "stop", "kill", "die", "died", "destroy", "remove", "update", "rename",
        "restart", "init", "cleanup",
    ];
    events
        .iter()
        .filter(|e| MUTATING.contains(&e.split(' ').next().unwrap_or("")))
        .cloned()
        .collect()
}

#[test]
fn one_fleet_converges_on_docker_20_10_docker_26_and_podman_at_once() {
    const T: &str = "one_fleet_converges_on_docker_20_10_docker_26_and_podman_at_once";
    let Some(sb) = Sandbox::get(T) else { return };
    let Some(nodes) = engines(&sb, T) else { return };
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let f = Fleet::on(&sb, "e2e-engines", "", &names);
    f.write_with(
        &web("fleet-test/busybox:1", "64MiB", ""),
        "network: {mode: bridge}",
    );

    // apply: one replica on each engine, running and healthy.
    let t_first = sb.engine_now(&nodes[0]);
    f.apply();
    // The event reads below see what happens: this apply's creates and starts, on every engine.
    std::thread::sleep(Duration::from_millis(1100));
    let t_applied = sb.engine_now(&nodes[0]);
    for n in &nodes {
        let ev = sb.events(n, &f.name, &t_first, &t_applied);
        assert!(
            ev.iter().any(|e| e.starts_with("create "))
                && ev.iter().any(|e| e.starts_with("start ")),
            "{n}: the engine's event record lacks the apply's create and start: {ev:?}"
        );
    }
    let first = replicas(&f);
    assert_eq!(
        first.keys().cloned().collect::<BTreeSet<_>>(),
        nodes.iter().cloned().collect::<BTreeSet<_>>(),
        "{first:?}"
    );
    for (node, (id, running, _, memory)) in &first {
        assert!(running, "{node}: {id} not running");
        assert_eq!(*memory, 64 << 20, "{node}");
        assert_eq!(
            sb.inspect(node, id, "{{.State.Health.Status}}"),
            "healthy",
            "{node}: apply waits for health on every engine"
        );
    }

    // get nodes names each engine.
    let (code, out, err) = f.run(&["get", "nodes", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let kind = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .map(|r| r["engine_kind"].as_str().unwrap_or("").to_string())
            .unwrap()
    };
    assert_eq!(kind(&nodes[0]), "docker", "{out}");
    assert_eq!(kind(&nodes[1]), "docker", "{out}");
    assert_eq!(kind(&nodes[2]), "podman", "{out}");
    let (_, table, _) = f.run(&["get", "nodes"]);
    assert!(table.contains("docker 20.10"), "{table}");
    assert!(table.contains("docker 26.1"), "{table}");
    assert!(table.contains("podman 4."), "{table}");

    // no-op: nothing planned, and no engine records a mutating call.
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = sb.engine_now(&nodes[0]);
    let out = f.apply();
    assert!(out.contains("No changes"), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = sb.engine_now(&nodes[0]);
    for n in &nodes {
        let ev = sb.events(n, &f.name, &t0, &t1);
        assert!(mutating(&ev).is_empty(), "{n}: no-op apply mutated: {ev:?}");
    }
    assert_eq!(replicas(&f), first);

    // A memory change: in place on Docker (same container), a recreate on Podman, which has no
    // update endpoint — the plan says so.
    f.write_with(
        &web("fleet-test/busybox:1", "96MiB", ""),
        "network: {mode: bridge}",
    );
    let (code, plan, err) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 2, "plan finds changes: {plan}{err}");
    assert!(plan.contains("podman has no in-place update"), "{plan}");
    f.apply();
    let updated = replicas(&f);
    for (node, (id, running, _, memory)) in &updated {
        assert!(running, "{node}");
        assert_eq!(*memory, 96 << 20, "{node}");
        if node == &nodes[2] {
            assert_ne!(id, &first[node].0, "{node}: podman recreates");
        } else {
            assert_eq!(id, &first[node].0, "{node}: docker updates in place");
        }
    }

    // An image change recreates every replica, on every engine.
    f.write_with(
        &web("fleet-test/busybox:2", "96MiB", ""),
        "network: {mode: bridge}",
    );
    f.apply();
    let recreated = replicas(&f);
    for (node, (id, running, image, _)) in &recreated {
        assert!(running, "{node}");
        assert_ne!(id, &updated[node].0, "{node}");
        assert!(image.ends_with("fleet-test/busybox:2"), "{node}: {image}");
    }
    let t0 = sb.engine_now(&nodes[0]);
    std::thread::sleep(Duration::from_millis(1100));
    let out = f.apply();
    assert!(out.contains("No changes"), "{out}");
    let t1 = sb.engine_now(&nodes[0]);
    for n in &nodes {
        let ev = sb.events(n, &f.name, &t0, &t1);
        assert!(
            mutating(&ev).is_empty(),
            "{n}: second apply mutated: {ev:?}"
        );
    }

    // Prune: the service leaves the manifests, its containers leave every engine.
    f.write_with(
        "apiVersion: fleet/v1\nkind: PlacementPolicy\nmetadata: {name: default}\nspec: {}\n",
        "network: {mode: bridge}",
    );
    f.apply();
    for n in &nodes {
        assert!(
            sb.ids(n, &f.name).is_empty(),
            "{n} still holds the fleet's containers"
        );
    }
}

fn plug_docs(nodes: &[String; 3], cap: u32, web_per_node: u32) -> String {
    format!(
        "{}---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec:
  image: fleet-test/busybox:1
  resources: {{memory: 16MiB}}
  port: 8080
  hostPorts: 52000-52099
  healthcheck: {{command: \"wget -q -O- http://127.0.0.1:8080/health\", interval: 1s, retries: 3}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: {cap}
  tiers: [{{nodes: [{}]}}, {{nodes: [{}]}}, {{nodes: [{}]}}]
",
        web("fleet-test/busybox:1", "32MiB", "")
            .replace("maxPerNode: 1", &format!("maxPerNode: {web_per_node}")),
        nodes[2],
        nodes[1],
        nodes[0]
    )
}

fn plugs(f: &Fleet) -> BTreeMap<String, (String, u64)> {
    let (code, out, err) = f.run(&["get", "plugs", "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    v.into_iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                (
                    p["node"].as_str().unwrap().to_string(),
                    p["host_port"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn plugs_spill_across_three_engines_drain_off_podman_and_the_controller_heals_each() {
    const T: &str =
        "plugs_spill_across_three_engines_drain_off_podman_and_the_controller_heals_each";
    let Some(sb) = Sandbox::get(T) else { return };
    let Some(nodes) = engines(&sb, T) else { return };
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let f = Fleet::on(&sb, "e2e-engines-plugs", "", &names);
    let spec = "network: {mode: bridge}, api: {listen: '127.0.0.1:7451'}";
    f.write_with(&plug_docs(&nodes, 1, 1), spec);
    f.apply();

    // Three plugs, one per node at a cap of 1: the Podman node (first tier) fills, then the
    // plugs spill to Docker 26.1, then to Docker 20.10.
    let dir = f.path().to_str().unwrap().to_string();
    for i in 0..3 {
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
    let before = plugs(&f);
    let on: BTreeSet<String> = before.values().map(|(n, _)| n.clone()).collect();
    assert_eq!(on, nodes.iter().cloned().collect(), "{before:?}");
    for n in &nodes {
        for id in sb.ids(n, &f.name) {
            assert_eq!(sb.inspect(n, &id, "{{.State.Running}}"), "true", "{n}");
        }
    }

    // Drain the Podman node: its plug and web replica move to Docker nodes (the plug with its
    // port); nothing is lost.
    f.write_with(&plug_docs(&nodes, 2, 2), spec);
    f.apply();
    let (code, out, err) = f.run(&["drain", &nodes[2]]);
    assert_eq!(code, 0, "{out}{err}");
    let after = plugs(&f);
    assert_eq!(after.len(), 3, "{after:?}");
    for (id, (node, port)) in &after {
        assert_ne!(
            node, &nodes[2],
            "plug {id} still on the drained podman node"
        );
        // The same port when it is free on the new node (SPEC §4), else another of the range.
        let taken = before
            .iter()
            .any(|(other, (n, p))| other != id && n == node && *p == before[id].1);
        if !taken {
            assert_eq!(*port, before[id].1, "plug {id} lost its port");
        }
        assert!((52000..=52099).contains(port), "{port}");
    }
    assert!(
        sb.ids(&nodes[2], &f.name).is_empty(),
        "the drained podman node still holds the fleet's containers"
    );
    let web: usize = f
        .all_ids()
        .iter()
        .filter(|(n, id)| {
            sb.inspect(
                n,
                id,
                "{{index .Config.Labels \"fleet.service\"}} {{.State.Running}}",
            ) == "web true"
        })
        .count();
    assert_eq!(web, 3, "web keeps its three replicas, running");
    let (code, out, err) = f.run(&["uncordon", &nodes[2]]);
    assert_eq!(code, 0, "{out}{err}");
    f.apply();

    // A new plug lands on the Podman node again (its tier comes first).
    let (code, out, err) = f.run(&[
        "plug", "create", "agent", "--owner", "late", "-f", &dir, "-o", "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let late: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(late["node"], nodes[2].as_str(), "{out}");

    // The controller brings back a container killed on each engine. Resync is a minute here,
    // so within the 30 s waited only the engines' events trigger its passes; Podman's is killed
    // alone first: its own die event is the only thing that can bring it back in time.
    let text = format!(
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: {}}}\nspec: {{nodeLostAfter: 5s, resync: 60s, {spec}}}\n---\n{}",
        f.name,
        plug_docs(&nodes, 2, 2)
    );
    std::fs::write(f.path().join("fleet.yaml"), text).unwrap();
    let run = Run::start(&f, 7451);
    std::thread::sleep(Duration::from_secs(2));
    let kill_one = |n: &String| {
        let id = sb
            .ids(n, &f.name)
            .into_iter()
            .find(|id| sb.inspect(n, id, "{{.State.Running}}") == "true")
            .unwrap_or_else(|| panic!("{n} runs none of the fleet's containers"));
        let name = sb.inspect(n, &id, "{{.Name}}");
        sb.docker(n, &["kill", &id]);
        (n.clone(), name)
    };
    let runs_again = |(n, name): &(String, String)| {
        wait_for(
            Duration::from_secs(30),
            &format!("{name}, killed on {n}, runs again"),
            || {
                sb.ids(n, &f.name)
                    .into_iter()
                    .any(|id| {
                        sb.inspect(n, &id, "{{.Name}} {{.State.Running}}") == format!("{name} true")
                    })
                    .then_some(())
            },
        );
    };
    let podman = kill_one(&nodes[2]);
    runs_again(&podman);
    // The pass logs its step once the start returned: read the log until it says so.
    let trigger = format!("{}: die {}", nodes[2], podman.1.trim_start_matches('/'));
    wait_for(
        Duration::from_secs(15),
        &format!("a pass triggered by Podman's die event ({trigger})"),
        || {
            run.log_text()
                .lines()
                .any(|l| l.contains("triggers=") && l.contains(&trigger))
                .then_some(())
        },
    );
    let killed: Vec<_> = nodes[..2].iter().map(kill_one).collect();
    for k in &killed {
        runs_again(k);
    }
    // Deleting the Podman node's plug (handed to the controller) removes its container there.
    let late_id = late["id"].as_str().unwrap().to_string();
    let (code, out, err) = f.run(&["plug", "delete", &late_id, "-f", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for(
        Duration::from_secs(20),
        "the deleted plug's container gone from podman",
        || {
            sb.ids(&nodes[2], &f.name)
                .into_iter()
                .all(|id| !sb.inspect(&nodes[2], &id, "{{.Name}}").contains(&late_id))
                .then_some(())
        },
    );
    assert!(!plugs(&f).contains_key(&late_id));
    let log = run.log_text();
    drop(run);
    assert!(!log.contains("panicked"), "{log}");
}

/// The same fleet with the default network mode (an overlay across the nodes): the Docker
/// nodes join the swarm, the Podman node cannot and gets a bridge of its own — said by
/// `validate`, `plan` and `apply`, never a silent difference. On the Podman replica: names
/// resolve (its bridge's DNS), `exec`, `logs`, the one-shot stats `get nodes` measures memory
/// with, and `image push` (the engine's image load) work as on Docker.
#[test]
fn on_an_overlay_fleet_podman_gets_its_own_bridge_and_logs_exec_stats_and_image_push_work() {
    const T: &str =
        "on_an_overlay_fleet_podman_gets_its_own_bridge_and_logs_exec_stats_and_image_push_work";
    let Some(sb) = Sandbox::get(T) else { return };
    let Some(nodes) = engines(&sb, T) else { return };
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let f = Fleet::on(&sb, "e2e-engines-ovl", "", &names);
    let docs = web(
        "fleet-test/busybox:1",
        "32MiB",
        "  command: [\"sh\", \"-c\", \"echo hello-from-$(hostname); exec /bin/fleet-serve\"]\n",
    );
    f.write_with(&docs, "network: {mode: overlay}");
    let dir = f.path().to_str().unwrap().to_string();

    let (code, out, err) = f.run(&["validate", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("spec.docker.engine") && err.contains("cannot join the fleet's overlay"),
        "validate warns about the Podman node:\n{err}"
    );
    let (code, out, err) = f.run(&["apply", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains(&format!("node {} runs podman", nodes[2]))
            && said.contains("cannot join the swarm"),
        "{said}"
    );
    // Docker replicas on the overlay, the Podman one on the fleet's bridge there.
    let r = replicas(&f);
    assert_eq!(r.len(), 3, "{r:?}");
    for (node, (id, running, _, _)) in &r {
        assert!(running, "{node}");
        let nets = sb.inspect(
            node,
            id,
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        );
        if node == &nodes[2] {
            assert!(nets.contains("e2e-engines-ovl-bridge"), "{node}: {nets}");
        } else {
            assert!(
                !nets.contains("-bridge") && nets.contains("e2e-engines-ovl"),
                "{node}: {nets}"
            );
        }
    }
    // A second apply changes nothing on any engine.
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = sb.engine_now(&nodes[0]);
    let out = f.apply();
    assert!(out.contains("No changes"), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = sb.engine_now(&nodes[0]);
    for n in &nodes {
        let ev = sb.events(n, &f.name, &t0, &t1);
        assert!(mutating(&ev).is_empty(), "{n}: no-op apply mutated: {ev:?}");
    }

    // exec into each engine's replica (on Podman, its bridge resolves the service's name).
    for n in &nodes {
        let replica = sb.inspect(n, &r[n].0, "{{index .Config.Labels \"fleet.replica\"}}");
        let (code, out, err) = f.run(&[
            "exec",
            "web",
            "--replica",
            &replica,
            "-f",
            &dir,
            "--",
            "wget",
            "-q",
            "-O-",
            "http://web:8080/health",
        ]);
        assert_eq!((code, out.trim()), (0, "ok"), "{n}: {out}{err}");
        let (code, out, err) = f.run(&[
            "exec",
            "web",
            "--replica",
            &replica,
            "-f",
            &dir,
            "--",
            "sh",
            "-c",
            "exit 7",
        ]);
        assert_eq!(code, 7, "{n}: {out}{err}");
    }

    // logs: every replica's line, the Podman one prefixed with its node.
    let (code, out, err) = f.run(&["logs", "web", "--file", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    for n in &nodes {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{n}/")) && l.contains("hello-from-")),
            "no line from {n}:\n{out}"
        );
    }

    // get nodes measures the Podman node's containers (one-shot stats).
    let (code, out, err) = f.run(&["get", "nodes", &dir, "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let pod = rows
        .iter()
        .find(|r| r["name"] == nodes[2].as_str())
        .unwrap();
    assert!(
        pod["usage"]["memory_used"].as_u64().is_some_and(|m| m > 0),
        "{pod}"
    );

    // image push: a tag only the Docker 20.10 node has, loaded into the Podman node.
    const TAG: &str = "e2e/engines-push:1";
    let _ = sb.script(&["docker", &nodes[2], "rmi", TAG]);
    sb.docker(&nodes[0], &["tag", "fleet-test/busybox:2", TAG]);
    let out = f
        .cmd(&["image", "push", TAG, "--node", &nodes[2], "-f", &dir])
        .env(
            "DOCKER_HOST",
            "unix:///nonexistent/fleetctl-e2e/docker.sock",
        )
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let have = sb.script(&[
        "docker", &nodes[2], "image", "inspect", "-f", "{{.Id}}", TAG,
    ]);
    assert!(
        have.status.success(),
        "{TAG} is not on {}: {said}",
        nodes[2]
    );
    let _ = sb.script(&["docker", &nodes[0], "rmi", TAG]);
    let _ = sb.script(&["docker", &nodes[2], "rmi", TAG]);
}

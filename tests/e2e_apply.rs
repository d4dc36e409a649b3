//! `fleetctl apply` and `plan` end to end: the real binary, real engines behind real sshd (the
//! sandbox fleet). Issue 4's "must show".

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Fleet, IMAGE2, Sandbox};

/// The demo fleet's documents (fleet/sandbox/aims.yaml) without its Fleet document.
fn aims_docs() -> String {
    let text = std::fs::read_to_string(common::repo().join("fleet/sandbox/aims.yaml")).unwrap();
    let start = text.find("---\n").expect("documents after the Fleet one");
    text[start + 4..].to_string()
}

/// A test fleet of the demo's documents, with the files they name (its fake secret, its
/// config) beside them.
fn aims_fleet<'a>(sb: &'a Sandbox, name: &str) -> Fleet<'a> {
    let f = Fleet::new(sb, name, &aims_docs());
    for dir in ["secrets", "conf"] {
        let from = common::repo().join("fleet/sandbox").join(dir);
        std::fs::create_dir_all(f.path().join(dir)).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), f.path().join(dir).join(e.file_name())).unwrap();
        }
    }
    f
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(common::repo().join("tests/fixtures").join(name)).unwrap()
}

/// The limits and labels of every container of `f`, checked against its manifests.
fn check_limits_and_labels(f: &Fleet) {
    let loaded = fleetctl::manifest::load(f.path()).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    for (node, id) in f.all_ids() {
        let out = f.sb.inspect(
            &node,
            &id,
            "{{.HostConfig.Memory}}|{{.HostConfig.MemoryReservation}}|{{.HostConfig.NanoCpus}}|{{.HostConfig.CpuShares}}|{{.HostConfig.CpusetCpus}}|{{json .Config.Labels}}|{{.State.Status}}",
        );
        let parts: Vec<&str> = out.splitn(7, '|').collect();
        let labels: BTreeMap<String, String> = serde_json::from_str(parts[5]).unwrap();
        assert_eq!(labels["fleet.managed-by"], "fleetctl");
        assert_eq!(labels["fleet.fleet"], f.name);
        assert_eq!(labels["fleet.node"], node);
        assert_eq!(labels["fleet.kind"], "service");
        assert_eq!(labels["fleet.spec-hash"].len(), 16);
        let svc = &loaded.fleet.services[&labels["fleet.service"]];
        let r = &svc.resources;
        assert_eq!(parts[0], r.memory.0.to_string(), "{id} Memory");
        assert_eq!(
            parts[1],
            r.memory_reservation.map_or(0, |b| b.0).to_string(),
            "{id} MemoryReservation"
        );
        assert_eq!(
            parts[2],
            r.cpus.map_or(0, |c| c.nanos()).to_string(),
            "{id} NanoCpus"
        );
        assert_eq!(
            parts[3],
            r.cpu_shares.unwrap_or(0).to_string(),
            "{id} CpuShares"
        );
        assert_eq!(
            parts[4],
            r.cpuset.clone().unwrap_or_default(),
            "{id} CpusetCpus"
        );
        assert_eq!(parts[6], "running");
        seen += 1;
    }
    let want: u32 = loaded.fleet.services.values().map(|s| s.replicas).sum();
    assert_eq!(seen, want as usize, "one container per replica");
}

/// Mutating engine events (create, start, update, kill, stop, destroy, ...) of `f` between two
/// instants, over every node. Healthcheck execs are not counted: they are the engine's own.
fn mutations(f: &Fleet, since: &str, until: &str) -> Vec<String> {
    f.sb.nodes
        .iter()
        .flat_map(|n| f.sb.events(n, &f.name, since, until))
        .filter(|e| {
            let action = e.split(' ').next().unwrap_or("");
            !(action.starts_with("exec_") || action.starts_with("health_status"))
        })
        .collect()
}

#[test]
fn seed_fleets_run_with_exactly_the_declared_limits_and_labels() {
    let Some(sb) = Sandbox::get("seed_fleets_run_with_exactly_the_declared_limits_and_labels")
    else {
        return;
    };
    for (name, docs) in [
        ("e2e-aims", aims_docs()),
        ("e2e-bondhu", fixture("sandbox-bondhu.yaml")),
        ("e2e-agentverse", fixture("sandbox-agentverse.yaml")),
    ] {
        let f = if name == "e2e-aims" {
            aims_fleet(&sb, name)
        } else {
            Fleet::new(&sb, name, &docs)
        };
        f.apply();
        check_limits_and_labels(&f);
        let (code, out, _) = f.run(&["get", "services", "-o", "json"]);
        assert_eq!(code, 0);
        let services: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        for s in services {
            assert_eq!(s["ready"], s["desired"], "{s}");
        }
    }
}

#[test]
fn a_second_apply_changes_nothing_and_makes_no_mutating_call() {
    let Some(sb) = Sandbox::get("a_second_apply_changes_nothing_and_makes_no_mutating_call") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-noop", &fixture("sandbox-agentverse.yaml"));
    f.apply();
    let before = f.all_ids();
    let t0 = sb.engine_now("node1");
    let out = f.apply();
    assert!(out.contains("No changes"), "{out}");
    // `apply -o json`: the one shape, also printed when a controller does the apply (e2e_run).
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys: Vec<&str> = view
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "adopted",
            "changes",
            "converged",
            "elapsed_ms",
            "passes",
            "problems"
        ],
        "{out}"
    );
    assert_eq!(view["changes"], 0, "{out}");
    let (code, out, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 0, "plan after apply: {out}");
    assert!(out.contains("no changes"), "{out}");
    std::thread::sleep(Duration::from_millis(1100)); // events are stamped in seconds
    let t1 = sb.engine_now("node1");
    assert_eq!(f.all_ids(), before, "container ids changed");
    let m = mutations(&f, &t0, &t1);
    assert!(m.is_empty(), "no-op apply made mutating calls: {m:?}");
}

#[test]
fn changes_touch_only_what_changed() {
    let Some(sb) = Sandbox::get("changes_touch_only_what_changed") else {
        return;
    };
    let docs = fixture("sandbox-bondhu.yaml");
    let f = Fleet::new(&sb, "e2e-change", &docs);
    f.apply();
    let ids = |svc: &str| -> Vec<String> {
        f.all_ids()
            .into_iter()
            .filter(|(n, id)| {
                f.sb.inspect(n, id, "{{index .Config.Labels \"fleet.service\"}}") == svc
            })
            .map(|(_, id)| id)
            .collect()
    };
    let (redis, api, worker) = (
        ids("bondhu-redis"),
        ids("bondhu-api"),
        ids("bondhu-worker-x"),
    );
    assert!(worker.is_empty());
    let worker = ids("bondhu-celery-worker");

    // Memory: updated in place — same containers, new limit.
    f.write(&docs.replace(
        "memory: 128MiB, memoryReservation: 64MiB",
        "memory: 192MiB, memoryReservation: 64MiB",
    ));
    let (code, out, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("memory 128MiB → 192MiB, in place"), "{out}");
    let t0 = sb.engine_now("node1");
    f.apply();
    std::thread::sleep(Duration::from_millis(1100));
    let t1 = sb.engine_now("node1");
    assert_eq!(
        ids("bondhu-redis"),
        redis,
        "in-place update recreated the container"
    );
    assert_eq!(
        sb.inspect("node1", &redis[0], "{{.HostConfig.Memory}}"),
        (192u64 << 20).to_string()
    );
    let m = mutations(&f, &t0, &t1);
    assert!(
        m.iter()
            .all(|e| e.starts_with("update ") && e.contains("bondhu-redis")),
        "{m:?}"
    );
    assert_eq!(ids("bondhu-api"), api);

    // Image: only that service is recreated.
    let docs2 = docs.replace(
        "memory: 128MiB, memoryReservation: 64MiB",
        "memory: 192MiB, memoryReservation: 64MiB",
    );
    let api_image_changed = {
        let i = docs2.find("name: bondhu-api").unwrap();
        let j = i + docs2[i..].find("fleet-test/busybox:1").unwrap();
        format!("{}{}{}", &docs2[..j], IMAGE2, &docs2[j + IMAGE2.len()..])
    };
    f.write(&api_image_changed);
    let (_, out, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert!(
        out.contains("image fleet-test/busybox:1 → fleet-test/busybox:2"),
        "{out}"
    );
    f.apply();
    let api2 = ids("bondhu-api");
    assert_eq!(api2.len(), 1);
    assert_ne!(api2, api, "image change must recreate");
    assert_eq!(sb.inspect("node1", &api2[0], "{{.Config.Image}}"), IMAGE2);
    assert_eq!(ids("bondhu-redis"), redis);
    assert_eq!(ids("bondhu-celery-worker"), worker);

    // Env: only that service is recreated.
    let with_env = api_image_changed.replace(
        "  placement: {nodes: [node1]}\n  resources: {memory: 1GiB",
        "  placement: {nodes: [node1]}\n  env: {QUEUE: high}\n  resources: {memory: 1GiB",
    );
    f.write(&with_env);
    f.apply();
    let worker2 = ids("bondhu-celery-worker");
    assert_ne!(worker2, worker);
    assert!(
        sb.inspect("node1", &worker2[0], "{{json .Config.Env}}")
            .contains("QUEUE=high")
    );
    assert_eq!(ids("bondhu-api"), api2);
    assert_eq!(ids("bondhu-redis"), redis);

    // Removal: the service's containers go; a foreign container on the same node stays.
    let foreign = sb.docker(
        "node1",
        &[
            "run",
            "-d",
            "--name",
            "e2e-foreign-bystander",
            common::IMAGE,
        ],
    );
    let without_worker = &with_env[..with_env
        .find("---\napiVersion: fleet/v1\nkind: Service\nmetadata: {name: bondhu-celery-worker")
        .unwrap()];
    f.write(without_worker);
    f.apply();
    assert!(ids("bondhu-celery-worker").is_empty());
    assert_eq!(
        sb.inspect("node1", foreign.trim(), "{{.State.Status}}"),
        "running"
    );
    sb.docker("node1", &["rm", "-f", "e2e-foreign-bystander"]);
}

#[test]
fn an_unreachable_node_does_not_stop_the_others() {
    let Some(sb) = Sandbox::get("an_unreachable_node_does_not_stop_the_others") else {
        return;
    };
    let docs = "apiVersion: fleet/v1
kind: Service
metadata: {name: everywhere}
spec: {image: fleet-test/busybox:1, replicas: 3, placement: {maxPerNode: 1}, resources: {memory: 32MiB}}
";
    let f = Fleet::new(&sb, "e2e-unreach", docs);
    let stop = sb.script(&["stop-sshd", "node3"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap()]);
    let start = sb.script(&["start-sshd", "node3"]);
    assert!(start.status.success());
    assert_eq!(code, 1, "apply with a node down must exit 1:\n{out}\n{err}");
    assert!(
        out.contains("node node3 unreachable"),
        "the report names the node:\n{out}"
    );
    assert_eq!(sb.ids("node1", &f.name).len(), 1);
    assert_eq!(sb.ids("node2", &f.name).len(), 1);
    // The third replica could only go to node3 (one per node): it is not put elsewhere.
    // A later apply finishes the job.
    f.apply();
    assert_eq!(sb.ids("node3", &f.name).len(), 1);
}

#[test]
fn a_killed_apply_is_finished_by_the_next_with_no_duplicate() {
    let Some(sb) = Sandbox::get("a_killed_apply_is_finished_by_the_next_with_no_duplicate") else {
        return;
    };
    let f = aims_fleet(&sb, "e2e-sigkill");
    for delay_ms in [300u64, 900, 1800] {
        sb.clean(&f.name);
        let mut child = f
            .cmd(&["apply", f.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The dead apply's lease is taken over at once (its process is gone).
        let started = std::time::Instant::now();
        let (code, out, err) =
            f.run(&["apply", f.path().to_str().unwrap(), "--lock-timeout", "0s"]);
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the dead holder's lease was waited out"
        );
        assert_eq!(code, 0, "after SIGKILL at {delay_ms}ms:\n{out}\n{err}");
        let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
        for (n, id) in f.all_ids() {
            *per_service
                .entry(sb.inspect(&n, &id, "{{index .Config.Labels \"fleet.service\"}}"))
                .or_default() += 1;
        }
        assert_eq!(per_service.len(), 15, "{per_service:?}");
        assert!(
            per_service.values().all(|c| *c == 1),
            "duplicates after SIGKILL at {delay_ms}ms: {per_service:?}"
        );
    }
}

#[test]
fn two_applies_never_act_at_once() {
    let Some(sb) = Sandbox::get("two_applies_never_act_at_once") else {
        return;
    };
    let f = aims_fleet(&sb, "e2e-lease");
    let mut first = f
        .cmd(&["apply", f.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first holds the lease (its first container exists), then try a second.
    common::wait_for(Duration::from_secs(30), "the first apply to start", || {
        (!sb.ids("node1", &f.name).is_empty()).then_some(())
    });
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap(), "--lock-timeout", "0s"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(" is locked by apply by"), "{err}");
    assert!(err.contains(" since "), "{err}");
    assert!(first.wait().unwrap().success());
}

#[test]
fn start_first_with_a_host_port_on_one_node_recreates_stop_first() {
    let Some(sb) = Sandbox::get("start_first_with_a_host_port_on_one_node_recreates_stop_first")
    else {
        return;
    };
    // SPEC's own Service example: published host port and `update.order: start-first`.
    let docs = |v: &str| {
        format!(
            "apiVersion: fleet/v1
kind: Service
metadata: {{name: gw}}
spec:
  image: {}
  placement: {{nodes: [node2]}}
  resources: {{memory: 16MiB}}
  ports: ['18080:8080']
  env: {{V: '{v}'}}
  update: {{order: start-first}}
",
            common::IMAGE
        )
    };
    let f = Fleet::new(&sb, "e2e-startfirst", &docs("1"));
    f.apply();
    f.write(&docs("2"));
    let (code, out, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("recreate (stop-first: the old container holds host port 18080)"),
        "{out}"
    );
    f.apply();
    let ids = sb.ids("node2", &f.name);
    assert_eq!(ids.len(), 1, "one container, no leftover copy");
    assert_eq!(sb.inspect("node2", &ids[0], "{{.State.Status}}"), "running");
    assert!(
        sb.inspect("node2", &ids[0], "{{json .Config.Env}}")
            .contains("\"V=2\""),
        "the new spec runs"
    );
}

#[test]
fn a_host_port_handed_from_one_service_to_another_converges_in_one_apply() {
    let Some(sb) =
        Sandbox::get("a_host_port_handed_from_one_service_to_another_converges_in_one_apply")
    else {
        return;
    };
    let svc = |name: &str| {
        format!(
            "apiVersion: fleet/v1
kind: Service
metadata: {{name: {name}}}
spec:
  image: {}
  placement: {{nodes: [node3]}}
  resources: {{memory: 16MiB}}
  ports: ['18081:8080']
",
            common::IMAGE
        )
    };
    let f = Fleet::new(&sb, "e2e-handover", &svc("old"));
    f.apply();
    // `old` leaves the manifests and `new` takes its port, in one change.
    f.write(&svc("new"));
    let out = f.apply();
    assert!(out.contains("which frees its host port"), "{out}");
    let ids = sb.ids("node3", &f.name);
    assert_eq!(ids.len(), 1, "{out}");
    assert_eq!(
        sb.inspect(
            "node3",
            &ids[0],
            "{{index .Config.Labels \"fleet.service\"}}"
        ),
        "new"
    );
    assert_eq!(sb.inspect("node3", &ids[0], "{{.State.Status}}"), "running");
}

/// Issue 12, bug 4: an image that cannot be pulled is reported as the image's failure, on its
/// node, once — not as a container named after the image with the node said twice, and not a
/// second time in the summary.
#[test]
fn an_image_that_cannot_be_pulled_is_reported_once_per_node_with_the_right_subject() {
    let Some(sb) = Sandbox::get(
        "an_image_that_cannot_be_pulled_is_reported_once_per_node_with_the_right_subject",
    ) else {
        return;
    };
    let f = Fleet::new(
        &sb,
        "e2e-pull",
        "apiVersion: fleet/v1
kind: Service
metadata: {name: cache}
spec: {image: 'fleet-test/absent:1', placement: {nodes: [node1]}, resources: {memory: 16MiB}}
",
    );
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap(), "--timeout", "20s"]);
    assert_eq!(code, 1, "{out}{err}");
    let said = "node node1: image fleet-test/absent:1 cannot be pulled: ";
    assert_eq!(out.matches(said).count(), 1, "{out}{err}");
    assert_eq!(
        out.matches("node node1").count(),
        1,
        "the node is named once:\n{out}"
    );
    assert!(!out.contains("container fleet-test/absent"), "{out}");
    assert!(out.contains("1 step failed"), "{out}");
}

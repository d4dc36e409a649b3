//! The real binary: verbs, exit codes, output formats, and the committed JSON Schema.

use assert_cmd::Command;

/// The binary with no state chosen: its default state directory is under the build's temp
/// directory, never the real home.
fn fleetctl() -> Command {
    fleetctl_in(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-home"))
}

/// The binary with no state chosen and `home` as both `XDG_STATE_HOME` and `HOME`: its state
/// files are `home/fleetctl/<fleet>.db`.
fn fleetctl_in(home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("fleetctl").expect("binary built");
    c.env_remove("FLEETCTL_STATE")
        .env("XDG_STATE_HOME", home)
        .env("HOME", home);
    c
}

const FLEET: &str = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {capacity: {cpus: 4, memory: 8GiB}, reserved: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: web:1, placement: {nodes: [node1]}, resources: {memory: 1GiB, cpus: 1}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: plug:1, resources: {memory: 512MiB}, port: 8080, hostPorts: 51000-51009}
";

#[test]
fn help_lists_every_verb_of_the_spec() {
    let out = fleetctl()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(out).unwrap();
    for verb in [
        "validate",
        "plan",
        "apply",
        "run",
        "get",
        "describe",
        "capacity",
        "cordon",
        "uncordon",
        "drain",
        "plug",
        "trust",
        "completion",
        "schema",
        "state",
        "exec",
        "logs",
        "history",
        "rollback",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{verb} "))),
            "--help lacks {verb}:\n{help}"
        );
    }
}

#[test]
fn validate_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, FLEET).unwrap();
    let out = fleetctl()
        .args(["validate", good.to_str().unwrap()])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8(out).unwrap().contains("valid"));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        FLEET.replace("memory: 1GiB, cpus: 1", "memory: 12XB, cpus: 1"),
    )
    .unwrap();
    let out = fleetctl()
        .args(["validate", bad.to_str().unwrap()])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(
        err.contains(&format!("{}:13:", bad.display())) && err.contains("spec.resources.memory"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_1_never_plans_2() {
    for args in [
        &["plan"][..],
        &["plan", "fleet/", "--bogus"],
        &["validate"],
        &["nosuchverb"],
    ] {
        fleetctl().args(args).assert().code(1);
    }
    fleetctl().arg("--version").assert().code(0);
}

#[test]
fn plan_speaks_yaml_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.yaml");
    std::fs::write(
        &f,
        "apiVersion: fleet/v1\nkind: Node\nmetadata: {name: node1}\nspec: {docker: {socket: /nonexistent/docker.sock}, capacity: {cpus: 2, memory: 4GiB}}\n",
    )
    .unwrap();
    let out = fleetctl()
        .args(["plan", f.to_str().unwrap(), "-o", "yaml", "--state"])
        .arg(dir.path().join("s.db"))
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("changes: false\n"), "{text}");
    assert!(text.contains("unreachable:\n  node1: "), "{text}");
}

#[test]
fn capacity_renders_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.yaml");
    std::fs::write(&f, FLEET).unwrap();
    let table = fleetctl()
        .args(["capacity", f.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("node1") && table.contains("7GiB"), "{table}");
    let json = fleetctl()
        .args(["capacity", f.to_str().unwrap(), "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["fleet"], "demo");
    assert_eq!(v["nodes"][0]["allocatable_memory"], 7u64 << 30);
    // 7GiB allocatable − 1GiB web = 6GiB; the port range (10) is the tighter bound.
    assert_eq!(v["nodes"][0]["plug_slots"][0]["free"], 10);
}

/// Issue 12, bug 3: `capacity` counted plug slots with filters of its own that ignored node
/// conditions, so it promised slots on a cordoned node that `plug create` refuses. The slots are
/// now the scheduler's: none on a cordoned node, and the scheduler's reason says why.
#[test]
fn capacity_promises_no_plug_slot_on_a_cordoned_node() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.yaml");
    let state = dir.path().join("state.db");
    std::fs::write(
        &f,
        format!(
            "{FLEET}---
apiVersion: fleet/v1
kind: Node
metadata: {{name: node2, labels: {{tier: primary}}}}
spec: {{capacity: {{cpus: 2, memory: 4GiB}}}}
"
        ),
    )
    .unwrap();
    let slots = |v: &serde_json::Value| -> Vec<(u64, String)> {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let s = &n["plug_slots"][0];
                (
                    s["free"].as_u64().unwrap(),
                    s["limited_by"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let capacity = || -> serde_json::Value {
        let out = fleetctl()
            .args(["--state", state.to_str().unwrap()])
            .args(["capacity", f.to_str().unwrap(), "-o", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    };
    let before = capacity();
    assert_eq!(slots(&before)[1].0, 8, "4GiB / 512MiB: {before}");

    fleetctl()
        .args(["--state", state.to_str().unwrap()])
        .args(["cordon", "node2", "-f", f.to_str().unwrap()])
        .assert()
        .success();
    let after = capacity();
    assert_eq!(slots(&after)[1], (0, "cordoned".to_string()), "{after}");
    // node1 is untouched: the port range (10) bounds it, as before.
    assert_eq!(slots(&after)[0].0, 10, "{after}");
    assert_eq!(after["classes"][0]["free"], 10, "{after}");
    let table = fleetctl()
        .args(["--state", state.to_str().unwrap()])
        .args(["capacity", f.to_str().unwrap()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("0 (cordoned)"), "{table}");
}

#[test]
fn completion_scripts_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let out = fleetctl()
            .args(["completion", shell])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert!(String::from_utf8(out).unwrap().contains("fleetctl"));
    }
}

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/fleet-v1.schema.json"
    ))
    .expect("manifests/fleet-v1.schema.json is committed");
    let fresh = fleetctl::manifest::schema::json_schema_text();
    assert!(
        committed.trim_end() == fresh.trim_end(),
        "manifests/fleet-v1.schema.json is stale: run `cargo run -q -- schema > manifests/fleet-v1.schema.json`"
    );
}

#[test]
fn schema_covers_every_field_the_decoder_accepts() {
    // Every key of a manifest using every field must appear in the schema (and the manifest
    // must validate): the decoder and the schema describe the same fields.
    let full = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: full, labels: {a: b}}
spec: {resync: 30s, nodeLostAfter: 60s, eventRetention: 30d, api: {listen: '127.0.0.1:7411', tokenFile: /etc/t}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec:
  ssh: {host: 10.0.0.1, port: 22, user: root, identityFile: ~/.ssh/k, hostKey: 'ssh-ed25519 AAAA', knownHostsFile: ~/.ssh/known_hosts}
  docker: {socket: /var/run/docker.sock}
  capacity: {cpus: 4, memory: 8GiB, disk: 100GiB}
  reserved: {cpus: 0.5, memory: 1GiB}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: web:1
  replicas: 1
  placement: {nodes: [node1], nodeSelector: {tier: primary}, maxPerNode: 1}
  resources: {memory: 256MiB, memoryReservation: 128MiB, cpus: 0.5, cpuShares: 512, cpuset: '0-1'}
  command: [sh, -c, 'sleep 1d']
  env: {A: b}
  ports: ['3001:3001']
  volumes: ['data:/data']
  restart: always
  healthcheck: {command: [CMD, 'true'], interval: 10s, timeout: 2s, retries: 3, startPeriod: 20s}
  update: {order: start-first}
  stopGracePeriod: 10s
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec:
  image: plug:1
  resources: {memory: 512MiB}
  command: [plug]
  port: 8080
  hostPorts: 51000-51999
  env: {A: b}
  healthcheck: {command: 'true'}
  idleTimeout: 30m
  policy: default
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec: {maxPlugsPerNode: 8, memoryHighWatermark: 85%, tiers: [{nodeSelector: {tier: primary}, nodes: [node1]}], spread: pack, evictIdleOnPressure: true}
";
    fleetctl::manifest::parse(&[fleetctl::manifest::Source {
        name: "full.yaml".into(),
        text: full.into(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let schema = fleetctl::manifest::schema::json_schema_text();
    let docs = fleetctl::manifest::yaml::parse_documents("full.yaml", full.as_bytes()).unwrap();
    let mut keys = Vec::new();
    for d in &docs {
        collect_keys(d, &mut keys);
    }
    assert!(keys.len() > 60, "{keys:?}");
    for k in keys {
        assert!(
            schema.contains(&format!("\"{k}\"")),
            "schema lacks field {k:?}"
        );
    }
}

/// Mapping keys, except inside free-form maps (labels, env, selectors).
fn collect_keys(node: &fleetctl::manifest::yaml::YNode, out: &mut Vec<String>) {
    use fleetctl::manifest::yaml::Value;
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let k = k.scalar_text().unwrap();
                let free_form = matches!(k.as_str(), "labels" | "env" | "nodeSelector");
                out.push(k);
                if !free_form {
                    collect_keys(v, out);
                }
            }
        }
        Value::Seq(items) => items.iter().for_each(|i| collect_keys(i, out)),
        _ => {}
    }
}

#[test]
fn shipped_fleets_and_examples_validate() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut paths = vec![format!("{root}/fleet/prod.yaml")];
    for entry in std::fs::read_dir(format!("{root}/examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            paths.push(p.display().to_string());
        }
    }
    assert!(paths.len() >= 5, "{paths:?}");
    for p in paths {
        fleetctl().args(["validate", &p]).assert().code(0);
    }
}

#[test]
fn closed_stdout_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.yaml");
    std::fs::write(&f, FLEET).unwrap();
    // A reader that goes away at once, like `| head -0`.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fleetctl"))
        .args(["capacity", f.to_str().unwrap(), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Issue 13: with no --state, a fleet's state is `$XDG_STATE_HOME/fleetctl/<fleet>.db`, not a
/// file under the current directory; a command given no manifests uses the only fleet there,
/// and refuses to guess among several.
#[test]
fn the_default_state_is_one_file_per_fleet_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let f = dir.path().join("fleet.yaml");
    std::fs::write(&f, FLEET).unwrap();
    let run = |args: &[&str]| {
        let out = fleetctl_in(&home)
            .current_dir(&cwd)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Nothing yet: the message names the state directory.
    let (code, _, err) = run(&["get", "nodes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("none applied yet")
            && err.contains(&home.join("fleetctl").display().to_string()),
        "{err}"
    );
    // A command that knows its fleet writes <state dir>/<fleet>.db, nothing in the cwd.
    let (code, out, err) = run(&["cordon", "node1", "-f", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(home.join("fleetctl/demo.db").is_file());
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "cwd untouched");
    // No manifests given: the only fleet's state is used.
    let (code, out, err) = run(&["get", "plugs"]);
    assert_eq!((code, out.as_str()), (0, "No plugs.\n"), "{err}");
    // Several fleets: no guess, the fleets are named.
    std::fs::write(&f, FLEET.replace("name: demo", "name: other")).unwrap();
    let (code, out, err) = run(&["cordon", "node1", "-f", f.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(home.join("fleetctl/other.db").is_file());
    let (code, _, err) = run(&["get", "plugs"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("several fleets (demo, other)") && err.contains("--state"),
        "{err}"
    );
    // --state still chooses.
    let (code, _, err) = run(&[
        "get",
        "plugs",
        "--state",
        home.join("fleetctl/demo.db").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Issue 13: `state rebuild` says which nodes it could not see, exits 1 for them, and names
/// what no node can give back; it creates the fleet's state file but no container.
#[test]
fn state_rebuild_reports_an_unreachable_node_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.yaml");
    std::fs::write(
        &f,
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: lost}\n---\napiVersion: fleet/v1\nkind: Node\nmetadata: {name: node1}\nspec: {docker: {socket: /nonexistent/docker.sock}, capacity: {cpus: 2, memory: 4GiB}}\n",
    )
    .unwrap();
    let home = dir.path().join("home");
    let out = fleetctl_in(&home)
        .args(["state", "rebuild", f.to_str().unwrap()])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("rebuilt from 0 nodes of 1"), "{text}");
    assert!(
        text.contains("Unreachable (1 node)") && text.contains("  - node1: "),
        "{text}"
    );
    assert!(
        text.contains("Not recoverable from the nodes: the event log"),
        "{text}"
    );
    assert!(home.join("fleetctl/lost.db").is_file());
    let out = fleetctl_in(&home)
        .args(["state", "rebuild", f.to_str().unwrap(), "-o", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["fleet"], "lost", "{v}");
    assert_eq!(v["unreachable"][0]["node"], "node1", "{v}");
    assert_eq!(v["adopted"], serde_json::json!([]), "{v}");
    assert_eq!(v["not_recoverable"].as_array().unwrap().len(), 3, "{v}");
}

/// `fleetctl events` reads the state's event log: a table or JSON, oldest first, filtered by
/// time, node and service; a bad `--since` names the option and exits 1.
#[test]
fn events_lists_the_log_filtered_by_time_node_and_service() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.yaml");
    std::fs::write(&f, FLEET).unwrap();
    let state = dir.path().join("s.db");
    let now = fleetctl::store::now_ms();
    {
        let store = fleetctl::store::Store::open(&state).unwrap();
        store.bind_fleet("demo").unwrap();
        let old = now - 3 * 3600 * 1000;
        store
            .record_event(
                old,
                "apply",
                "create",
                Some("node1"),
                Some("demo-web-0-0123abcd"),
                "old",
            )
            .unwrap();
        store
            .record_event(
                now - 60_000,
                "apply",
                "create",
                Some("node1"),
                Some("demo-web-0-89abcdef"),
                "created replica 0",
            )
            .unwrap();
        store
            .record_event(
                now - 30_000,
                "drain by op",
                "drain",
                Some("node2"),
                None,
                "draining started",
            )
            .unwrap();
        store
            .record_event(
                now - 10_000,
                "plug",
                "create",
                Some("node1"),
                Some("demo-plug-p1"),
                "plug p1 of agent for ann on port 51000",
            )
            .unwrap();
    }
    let run = |args: &[&str]| {
        let mut c = fleetctl();
        c.env("FLEETCTL_STATE", &state)
            .arg("events")
            .arg(&f)
            .args(args);
        c
    };
    let out = run(&["--since", "1h", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let rows = v.as_array().unwrap();
    let actions: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["node"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("create", "node1"), ("drain", "node2"), ("create", "node1")]
    );
    assert_eq!(rows[1]["message"], "draining started");
    assert_eq!(rows[2]["actor"], "plug");

    let out = run(&["--since", "1h"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for want in [
        "TIME",
        "ACTOR",
        "MESSAGE",
        "draining started",
        "demo-plug-p1",
        "drain by op",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains("old"), "{text}");

    let out = run(&["--node", "node2", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    let out = run(&["--service", "web", "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let objects: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["object"].as_str().unwrap())
        .collect();
    assert_eq!(objects, ["demo-web-0-0123abcd", "demo-web-0-89abcdef"]);

    let err = run(&["--since", "yesterday"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("--since"), "{err}");
}

/// `fleetctl exec` refuses an unknown service by name (listing the known ones) before reaching
/// any node, and a missing command is a usage error; both exit 1.
#[test]
fn exec_refuses_an_unknown_service_and_a_missing_command() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, FLEET).unwrap();
    let out = fleetctl()
        .args(["exec", "api", "-f"])
        .arg(&file)
        .args(["--", "true"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unknown service api (known: web)"),
        "{stderr}"
    );
    fleetctl()
        .args(["exec", "web", "-f"])
        .arg(&file)
        .assert()
        .code(1);
}

/// `fleetctl logs` refuses an unknown service by name (listing the known ones) and an unknown
/// `--node`, before reaching any node (node1 here has no SSH: reaching it would be this
/// machine's Docker socket); both exit 1.
#[test]
fn logs_refuses_an_unknown_service_and_node_before_reaching_any_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, FLEET).unwrap();
    let out = fleetctl()
        .args(["logs", "api", "--file"])
        .arg(&file)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unknown service api (known: web)"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    let out = fleetctl()
        .args(["logs", "web", "-f", "--node", "node9", "--file"])
        .arg(&file)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unknown node node9 (known: node1)"),
        "{stderr}"
    );
    let out = fleetctl()
        .args(["logs", "web", "--since", "yesterday", "--file"])
        .arg(&file)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(String::from_utf8(out.stderr).unwrap().contains("--since"));
}

/// `fleetctl history` lists the revisions with the one in force marked; `rollback` refuses an
/// unknown revision (naming the ones there are), asks for --yes without a terminal, and says
/// when the revision asked for is already in force — changing nothing in each case.
#[test]
fn history_lists_revisions_and_rollback_refuses_bad_input_changing_nothing() {
    use fleetctl::store::{RevisionContent, Store};
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fleet.yaml");
    std::fs::write(&f, FLEET).unwrap();
    let state = dir.path().join("s.db");
    {
        let store = Store::open(&state).unwrap();
        store.bind_fleet("demo").unwrap();
        for (i, image) in ["web:1", "web:2", "web:3"].into_iter().enumerate() {
            let text = FLEET.replace("web:1", image);
            let sources = vec![fleetctl::manifest::Source {
                name: f.display().to_string(),
                text,
            }];
            let content = RevisionContent {
                hash: format!("h{i}"),
                sources: sources.clone(),
                images: [(image.to_string(), String::new())].into(),
                ..Default::default()
            };
            let n = store
                .record_revision(
                    None,
                    "apply by op",
                    &content,
                    &format!("web: image {image}"),
                    None,
                    1_000 * i as i64,
                )
                .unwrap();
            assert_eq!(n, Some(i as i64 + 1));
            store
                .record_applied(0, "apply by op", &content.hash, &sources, 1_000 * i as i64)
                .unwrap();
        }
    }
    let run = |args: &[&str]| {
        let mut c = fleetctl();
        c.env("FLEETCTL_STATE", &state).args(args);
        c
    };
    let f_arg = f.display().to_string();
    let out = run(&["history", &f_arg, "-o", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["revision"], 3);
    assert_eq!(rows[2]["in_force"], true);
    assert_eq!(rows[0]["in_force"], false);
    assert_eq!(rows[1]["summary"], "web: image web:2");
    let out = run(&["history", "-f", &f_arg])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    for want in ["REVISION", "SUMMARY", "3 (in force)", "apply by op"] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }

    let out = run(&["rollback", "99", "-f", &f_arg, "--yes"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no revision 99; revisions 1–3"), "{err}");
    let out = run(&["rollback", "1", "-f", &f_arg])
        .write_stdin("y\n")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("pass --yes"), "{err}");
    let out = run(&["rollback", "3", "-f", &f_arg])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Revision 3 is already in force"), "{text}");
    // Nothing changed.
    let store = Store::open(&state).unwrap();
    assert_eq!(store.revisions().unwrap().len(), 3);
    assert_eq!(store.last_applied().unwrap().unwrap().2, "h2");

    // Without any state: no revisions yet.
    let empty = dir.path().join("none.db");
    let out = fleetctl()
        .env("FLEETCTL_STATE", &empty)
        .args(["rollback", "-f", &f_arg, "--yes"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no revisions yet"), "{err}");
    assert!(!empty.exists(), "no state file was created");
}

/// A node declared Podman in a fleet whose network is an overlay is valid, with a warning that
/// names the field and says what its containers get instead; the same node in a bridge fleet
/// is said nothing about.
#[test]
fn validate_warns_of_a_podman_node_in_an_overlay_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let text = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: demo}
spec: {network: {mode: overlay}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1}
spec:
  ssh: {host: 10.0.0.1}
  docker:
    engine: docker
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node4}
spec:
  ssh: {host: 10.0.0.4}
  docker: {socket: /run/podman/podman.sock, engine: podman}
";
    let f = dir.path().join("nodes.yaml");
    std::fs::write(&f, text).unwrap();
    let out = fleetctl()
        .args(["validate", f.to_str().unwrap()])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [format!(
            "{}:19:53: warning: spec.docker.engine: node4 runs podman, which cannot join the fleet's overlay network: its containers get a bridge network on node4 only (names resolve among the containers of node4; other nodes' services are reached through their published ports, outside the overlay and its encryption)",
            f.display()
        )],
        "{err}"
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("valid"));
    std::fs::write(&f, text.replace("mode: overlay", "mode: bridge")).unwrap();
    let out = fleetctl()
        .args(["validate", f.to_str().unwrap()])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(out.stderr.is_empty(), "{:?}", String::from_utf8(out.stderr));
}

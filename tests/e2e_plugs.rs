//! Plug instances end to end (issue 5): the real binary placing plugs on the sandbox's engines
//! over SSH — spill from the primary tier, per-node diagnosis, port leases, deletion,
//! concurrency, and the measured-memory watermark.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Fleet, Sandbox};

fn plug_docs(cap: u32, spread: &str) -> String {
    format!(
        "apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec:
  image: fleet-test/busybox:1
  resources: {{memory: 16MiB}}
  port: 8080
  hostPorts: 51000-51099
  env: {{PLUG_MODE: isolated}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec:
  maxPlugsPerNode: {cap}
  memoryHighWatermark: 85%
  spread: {spread}
  tiers: [{{nodeSelector: {{tier: primary}}}}, {{nodeSelector: {{tier: secondary}}}}]
"
    )
}

#[derive(Debug, serde::Deserialize)]
struct Created {
    id: String,
    node: String,
    host: String,
    port: u16,
}

fn create(f: &Fleet, owner: &str) -> Result<Created, String> {
    let dir = f.path().to_str().unwrap().to_string();
    let (code, out, err) = f.run(&[
        "plug", "create", "agent", "--owner", owner, "-f", &dir, "-o", "json",
    ]);
    if code == 0 {
        Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")))
    } else {
        Err(err)
    }
}

/// GET http://host:port/info from this machine (the sandbox node's own address).
fn info(host: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{host}:{port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{host}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /info HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn plugs_fill_the_primary_to_its_cap_then_spill_and_the_rest_is_diagnosed() {
    let Some(sb) =
        Sandbox::get("plugs_fill_the_primary_to_its_cap_then_spill_and_the_rest_is_diagnosed")
    else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-plugs", &plug_docs(5, "pack"));
    let mut placed: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    let mut created = Vec::new();
    for i in 0..12 {
        let c = create(&f, &format!("user{i}")).unwrap_or_else(|e| panic!("plug {i}: {e}"));
        placed.entry(c.node.clone()).or_default().push(c.port);
        created.push(c);
    }
    assert_eq!(placed["node1"].len(), 5, "{placed:?}");
    // pack: one secondary fills before the other.
    assert_eq!(
        (placed["node2"].len(), placed["node3"].len()),
        (5, 2),
        "{placed:?}"
    );
    for (node, ports) in &placed {
        let unique: BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "{node}: a port leased twice");
        assert!(ports.iter().all(|p| (51000..=51099).contains(p)));
        assert_eq!(sb.ids(node, &f.name).len(), ports.len());
    }
    // Each plug answers at its node's address and port, and knows who it is.
    for c in created.iter().step_by(4) {
        let body = info(&c.host, c.port);
        assert!(body.contains(&format!("FLEET_PLUG_ID={}", c.id)), "{body}");
        assert!(body.contains(&format!("FLEET_NODE={}", c.node)), "{body}");
    }
    for i in 12..15 {
        create(&f, &format!("user{i}")).unwrap();
    }
    let err = create(&f, "late").unwrap_err();
    assert!(
        err.contains("node1: 5/5 plugs; node2: 5/5 plugs; node3: 5/5 plugs"),
        "a full fleet must explain itself per node: {err}"
    );
    // Deleting a plug frees its slot and its port.
    let victim = created.iter().find(|c| c.node == "node2").unwrap();
    let (code, out, err) = f.run(&[
        "plug",
        "delete",
        &victim.id,
        "-f",
        f.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sb.ids("node2", &f.name).len(), 4);
    let again = create(&f, "late").unwrap();
    assert_eq!((again.node.as_str(), again.port), ("node2", victim.port));
    // `get plugs` lists them all.
    let (_, out, _) = f.run(&["get", "plugs", "-o", "json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 15);
}

#[test]
fn spread_places_the_spill_on_the_least_loaded_secondary() {
    let Some(sb) = Sandbox::get("spread_places_the_spill_on_the_least_loaded_secondary") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-spread", &plug_docs(3, "spread"));
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..7 {
        *on.entry(create(&f, &format!("u{i}")).unwrap().node)
            .or_default() += 1;
    }
    assert_eq!((on["node1"], on["node2"], on["node3"]), (3, 2, 2), "{on:?}");
}

#[test]
fn twenty_concurrent_creates_never_exceed_a_cap_or_share_a_port() {
    let Some(sb) = Sandbox::get("twenty_concurrent_creates_never_exceed_a_cap_or_share_a_port")
    else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-concurrent", &plug_docs(5, "pack"));
    let dir = f.path().to_str().unwrap().to_string();
    let children: Vec<_> = (0..20)
        .map(|i| {
            f.cmd(&[
                "plug",
                "create",
                "agent",
                "--owner",
                &format!("c{i}"),
                "-f",
                &dir,
                "-o",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok: Vec<Created> = outputs
        .iter()
        .filter(|o| o.status.success())
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    assert_eq!(ok.len(), 15, "3 nodes × cap 5");
    for o in outputs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("5/5 plugs"), "{err}");
    }
    let mut per_node: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for c in &ok {
        assert!(
            per_node.entry(c.node.as_str()).or_default().insert(c.port),
            "port {} leased twice on {}",
            c.port,
            c.node
        );
    }
    for (node, ports) in &per_node {
        assert!(ports.len() <= 5);
        assert_eq!(
            sb.ids(node, &f.name).len(),
            ports.len(),
            "{node}: containers vs plugs"
        );
    }
}

#[test]
fn a_node_measured_above_its_watermark_takes_no_new_plug() {
    let Some(sb) = Sandbox::get("a_node_measured_above_its_watermark_takes_no_new_plug") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-pressure", &plug_docs(5, "pack"));
    // node1 declares 640MiB with 512MiB reserved: 128MiB allocatable, 85% = 108.8MiB allowed.
    let nodes = std::fs::read_to_string(f.path().join("nodes.yaml")).unwrap();
    let i = nodes.find("name: node1").unwrap();
    let j = i + nodes[i..].find("capacity: {cpus: 2, memory: 4GiB").unwrap();
    let nodes = format!(
        "{}capacity: {{cpus: 2, memory: 640MiB{}",
        &nodes[..j],
        &nodes[j + "capacity: {cpus: 2, memory: 4GiB".len()..]
    );
    std::fs::write(f.path().join("nodes.yaml"), nodes).unwrap();
    let first = create(&f, "before").unwrap();
    assert_eq!(first.node, "node1", "limits alone leave room on node1");
    // Something that is not this fleet's uses ~130MiB on node1.
    sb.docker(
        "node1",
        &["run", "-d", "--name", "e2e-memory-hog", "--memory", "300m", common::IMAGE, "awk",
          "BEGIN{s=\"x\"; while (length(s) < 100000000) s = s s; print \"filled\"; fflush(); system(\"sleep 3600\")}"],
    );
    common::wait_for(
        Duration::from_secs(30),
        "the hog to fill its memory",
        || {
            sb.docker("node1", &["logs", "e2e-memory-hog"])
                .contains("filled")
                .then_some(())
        },
    );
    let second = create(&f, "after");
    sb.docker("node1", &["rm", "-f", "e2e-memory-hog"]);
    let second = second.unwrap();
    assert_ne!(
        second.node, "node1",
        "node1 measures above its watermark and must take nothing"
    );
}

/// Issue 20: a plug of a class whose healthcheck runs every hour is ready as soon as its app
/// answers that check, run by fleetctl itself while the engine still says `starting` (the
/// engine's first check is an hour away; `plug create` waits at most a minute, so without
/// fleetctl's own check this create fails `still starting`).
#[test]
fn a_healthchecked_plug_is_ready_when_its_check_first_passes_not_an_interval_later() {
    let Some(sb) = Sandbox::get(
        "a_healthchecked_plug_is_ready_when_its_check_first_passes_not_an_interval_later",
    ) else {
        return;
    };
    let docs = plug_docs(5, "pack").replace(
        "  env: {PLUG_MODE: isolated}\n",
        "  env: {PLUG_MODE: isolated}\n  healthcheck: {command: \"wget -q -O- http://127.0.0.1:8080/health\", interval: 1h, timeout: 3s}\n",
    );
    assert!(docs.contains("interval: 1h"));
    let f = Fleet::new(&sb, "e2e-plug-ready", &docs);
    let c = create(&f, "eager").unwrap_or_else(|e| panic!("the plug answers its check: {e}"));
    let status = sb.docker(
        &c.node,
        &[
            "inspect",
            "-f",
            "{{.State.Health.Status}}",
            &format!("e2e-plug-ready-plug-{}", c.id),
        ],
    );
    assert_eq!(
        status.trim(),
        "starting",
        "the engine has not checked it yet"
    );
    assert!(info(&c.host, c.port).contains("200"), "it serves");
}

/// Issue 13: plugs running, then `plan` and `apply` with other state files (another working
/// directory, a CI runner, a lost disk): nothing is removed, every plug is adopted with its
/// owner and port, and `get plugs` from the new state lists them.
#[test]
fn another_state_file_adopts_the_running_plugs_and_removes_nothing() {
    let Some(sb) = Sandbox::get("another_state_file_adopts_the_running_plugs_and_removes_nothing")
    else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-adopt", &plug_docs(8, "pack"));
    f.apply();
    let made: BTreeMap<String, (String, String, u16)> = ["ada", "bob", "cy"]
        .iter()
        .map(|o| {
            let c = create(&f, o).unwrap();
            (c.id, (o.to_string(), c.node, c.port))
        })
        .collect();
    let before = f.all_ids();
    assert_eq!(before.len(), 3);
    let dir = f.path().to_str().unwrap().to_string();
    let other = tempfile::tempdir().unwrap();
    let run_with = |state: &std::path::Path, args: &[&str]| {
        let out = f.cmd(args).env("FLEETCTL_STATE", state).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, out, err) = run_with(&other.path().join("c.db"), &["plan", &dir]);
    assert_eq!(code, 0, "adoption alone changes no container:\n{out}{err}");
    assert_eq!(out.matches("ADOPT plug").count(), 3, "{out}");
    assert!(!out.contains("was deleted"), "{out}");

    let b = other.path().join("b.db");
    let (code, out, err) = run_with(&b, &["apply", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Adopted 3 plugs"), "{out}");
    assert_eq!(f.all_ids(), before, "no container removed or replaced");
    let (code, out, err) = run_with(&b, &["get", "plugs", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let listed: BTreeMap<String, (String, String, u16)> =
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    (
                        p["owner"].as_str().unwrap().to_string(),
                        p["node"].as_str().unwrap().to_string(),
                        p["host_port"].as_u64().unwrap() as u16,
                    ),
                )
            })
            .collect();
    assert_eq!(listed, made);
    // And a second apply through it is a no-op.
    let (code, out, err) = run_with(&b, &["apply", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("No changes") && !out.contains("Adopted"),
        "{out}"
    );

    // The same from a second working directory with no --state: the default state is the
    // user's, per fleet, wherever fleetctl runs from.
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let in_cwd = |args: &[&str]| {
        let out = f
            .cmd(args)
            .env_remove("FLEETCTL_STATE")
            .env("XDG_STATE_HOME", home.path())
            .current_dir(cwd.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = in_cwd(&["apply", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Adopted 3 plugs"), "{out}");
    assert!(
        err.contains(&format!("no state for fleet {} here", f.name))
            && err.contains("adopted 3 plugs from the nodes"),
        "{err}"
    );
    assert!(home.path().join(format!("fleetctl/{}.db", f.name)).exists());
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "nothing written here"
    );
    assert_eq!(f.all_ids(), before, "no container removed or replaced");
    let (code, out, err) = in_cwd(&["get", "plugs", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap()
            .len(),
        3,
        "{out}"
    );

    // A plug deleted through the first state stays deleted through B, which knew it: the
    // nodes record the deletion; nothing comes back.
    let gone = made.keys().next().unwrap().clone();
    let (code, out, err) = f.run(&["plug", "delete", &gone, "-f", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_with(&b, &["plan", &dir]);
    assert_eq!(code, 0, "nothing to do for B:\n{out}{err}");
    let (code, out, err) = run_with(&b, &["apply", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        f.all_ids().len(),
        2,
        "the deleted plug did not come back:\n{out}"
    );
    let (_, out, _) = run_with(&b, &["get", "plugs", "-o", "json"]);
    assert!(!out.contains(&gone), "B forgot it:\n{out}");
}

/// Issue 13: `state rebuild` with a fresh state file records every plug running on the nodes
/// with its owner, node and port, changes no container, says what it cannot recover, and
/// `get plugs` through that state lists them.
#[test]
fn state_rebuild_records_every_running_plug_from_the_nodes() {
    let Some(sb) = Sandbox::get("state_rebuild_records_every_running_plug_from_the_nodes") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-rebuild", &plug_docs(8, "pack"));
    let made: BTreeMap<String, (String, String, u16)> = ["ada", "bob", "cy"]
        .iter()
        .map(|o| {
            let c = create(&f, o).unwrap();
            (c.id, (o.to_string(), c.node, c.port))
        })
        .collect();
    let before = f.all_ids();
    assert_eq!(before.len(), 3);
    let dir = f.path().to_str().unwrap().to_string();
    let other = tempfile::tempdir().unwrap();
    let run_with = |state: &std::path::Path, args: &[&str]| {
        let out = f.cmd(args).env("FLEETCTL_STATE", state).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let plugs_of = |list: &serde_json::Value, port_key: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    (
                        p["owner"].as_str().unwrap().to_string(),
                        p["node"].as_str().unwrap().to_string(),
                        p[port_key].as_u64().unwrap() as u16,
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };

    let b = other.path().join("b.db");
    let (code, out, err) = run_with(&b, &["state", "rebuild", &dir, "-o", "json"]);
    assert_eq!(code, 0, "every node answers:\n{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plugs_of(&report["adopted"], "port"), made, "{report}");
    assert_eq!(report["known"], serde_json::json!([]), "{report}");
    assert_eq!(report["unreachable"], serde_json::json!([]), "{report}");
    assert!(
        err.contains("no state for fleet e2e-rebuild here") && err.contains("adopted 3 plugs"),
        "{err}"
    );
    assert_eq!(
        f.all_ids(),
        before,
        "no container created, removed or replaced"
    );
    let (code, out, err) = run_with(&b, &["get", "plugs", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plugs_of(&listed, "host_port"), made);

    // Again through the same state: everything is known, nothing adopted.
    let (code, out, err) = run_with(&b, &["state", "rebuild", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Adopted no plug"), "{out}");
    assert!(out.contains("Already known: 3 plugs"), "{out}");
    assert!(
        out.contains("Not recoverable from the nodes: the event log"),
        "{out}"
    );
    assert!(!err.contains("no state for fleet"), "{err}");

    // In words, through another fresh state: one row per plug with its owner and port.
    let (code, out, err) = run_with(&other.path().join("c.db"), &["state", "rebuild", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Adopted 3 plugs"), "{out}");
    for (id, (owner, node, port)) in &made {
        assert!(
            out.lines().any(|l| l.starts_with(id.as_str())
                && l.contains(owner.as_str())
                && l.contains(node.as_str())
                && l.contains(&port.to_string())),
            "{id}: {out}"
        );
    }
    assert_eq!(f.all_ids(), before);
}

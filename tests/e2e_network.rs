//! End-to-end: the fleet's network (SPEC §10) on the sandbox's real engines. Services and plugs
//! reach each other by name — on one node over a user-defined bridge, across nodes over the
//! engines' own Swarm overlay that fleetctl forms — through drains, migrations from the default
//! bridge, a dockerd restart and the loss of the only swarm manager.
//!
//! Requests go from a client container to a service by name with busybox `nc` (the static
//! busybox's `wget` is not usable here); names are looked up with busybox `nslookup` against the
//! engine's embedded DNS.

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::{Fleet, IMAGE, Sandbox, wait_for};

/// Writes the Fleet document with `network` (a flow mapping, e.g. `{mode: bridge}`), short
/// timings, and `docs`.
fn write(f: &Fleet, network: &str, docs: &str) {
    let text = format!(
        "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: {}}}\nspec: {{nodeLostAfter: 5s, resync: 5s, network: {network}}}\n---\n{docs}",
        f.name
    );
    std::fs::write(f.path().join("fleet.yaml"), text).unwrap();
}

/// A service of the test image (busybox httpd on 8080 serving /info with its hostname).
fn service(name: &str, replicas: u32, nodes: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: fleet/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  image: {IMAGE}\n  replicas: {replicas}\n  resources: {{memory: 64MiB}}\n  placement: {{nodes: [{}], maxPerNode: 1}}\n{extra}---\n",
        nodes.join(", ")
    )
}

/// (node, container id) of every container of `service` in fleet `f`.
fn containers_of(f: &Fleet, service: &str) -> Vec<(String, String)> {
    f.sb.nodes
        .iter()
        .flat_map(|n| {
            // A node whose engine is stopped (by the test) has none to show.
            let out = f.sb.script(&[
                "docker",
                n,
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=fleet.fleet={}", f.name),
                "--filter",
                &format!("label=fleet.service={service}"),
            ]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|id| (n.clone(), id.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `sh -c SCRIPT` in container `id` on `node`: (exit code, stdout).
fn exec(sb: &Sandbox, node: &str, id: &str, script: &str) -> (i32, String) {
    let out = sb.script(&["docker", node, "exec", id, "sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// GET http://NAME:8080/info from container `id` on `node`; the body when it answered.
fn fetch(sb: &Sandbox, node: &str, id: &str, name: &str) -> Option<String> {
    let (code, out) = exec(
        sb,
        node,
        id,
        &format!("printf 'GET /info HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {name} 8080"),
    );
    (code == 0 && out.contains("200 OK")).then_some(out)
}

/// The IPv4 addresses `name` resolves to from container `id` (the engine's embedded DNS).
fn resolve(sb: &Sandbox, node: &str, id: &str, name: &str) -> Vec<String> {
    let (_, out) = exec(sb, node, id, &format!("nslookup {name} 127.0.0.11"));
    let mut v: Vec<String> = out
        .split("Name:")
        .skip(1)
        .flat_map(|block| {
            block
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn short(id: &str) -> &str {
    &id[..12]
}

#[test]
fn on_one_node_a_client_reaches_a_service_by_its_name_and_alias_over_the_fleet_bridge() {
    let Some(sb) = Sandbox::get("bridge") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-net-bridge", "");
    write(
        &f,
        "{mode: bridge}",
        &format!(
            "{}{}",
            service("web", 1, &["node1"], "  aliases: [www]\n"),
            service("client", 1, &["node1"], "")
        ),
    );
    let (code, plan, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 2, "changes to make: {plan}");
    assert!(
        plan.contains("create network e2e-net-bridge-bridge (bridge) on node1"),
        "{plan}"
    );
    f.apply();
    let web = containers_of(&f, "web");
    let client = containers_of(&f, "client");
    let (node, cid) = &client[0];
    let body = fetch(&sb, node, cid, "web").expect("client reaches web by name");
    assert!(
        body.contains(&format!("hostname={}", short(&web[0].1))),
        "{body}"
    );
    assert!(
        fetch(&sb, node, cid, "www").is_some(),
        "the alias resolves too"
    );
    let net = sb.inspect(
        node,
        cid,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(net.trim(), "e2e-net-bridge-bridge");
    // The network is fleetctl's, labelled as such; a second apply changes nothing.
    let labels = sb.docker(
        "node1",
        &[
            "network",
            "inspect",
            "-f",
            "{{json .Labels}}",
            "e2e-net-bridge-bridge",
        ],
    );
    assert!(
        labels.contains("\"fleet.managed-by\":\"fleetctl\""),
        "{labels}"
    );
    let out = f.apply();
    assert!(
        out.contains("0 changes") || out.contains("no changes"),
        "{out}"
    );
}

#[test]
fn across_nodes_names_resolve_to_every_replica_and_follow_a_drained_service() {
    let Some(sb) = Sandbox::get("overlay") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-net-overlay", "");
    write(
        &f,
        "{}",
        &format!(
            "{}{}{}",
            service("web", 1, &["node1", "node3"], ""),
            service("pair", 2, &["node1", "node2", "node3"], ""),
            service("client", 1, &["node2"], "")
        ),
    );
    f.apply();
    // One swarm over the three nodes, one attachable overlay, no Swarm service.
    let nodes = sb.docker(
        "node1",
        &["node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}"],
    );
    assert_eq!(
        nodes.lines().filter(|l| l.starts_with("Ready")).count(),
        3,
        "{nodes}"
    );
    assert_eq!(sb.docker("node1", &["service", "ls", "-q"]).trim(), "");
    let overlay = sb.docker(
        "node1",
        &[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{.Attachable}} {{.Scope}}",
            "e2e-net-overlay",
        ],
    );
    assert_eq!(overlay.trim(), "overlay true swarm");

    let (cnode, cid) = containers_of(&f, "client").remove(0);
    assert_eq!(cnode, "node2");
    let (wnode, wid) = containers_of(&f, "web").remove(0);
    let body = wait_for(
        Duration::from_secs(20),
        "client on node2 reaches web",
        || fetch(&sb, &cnode, &cid, "web"),
    );
    assert!(
        body.contains(&format!("hostname={}", short(&wid))),
        "{body}"
    );
    // Two replicas on two nodes: the name resolves to both.
    let pair: Vec<String> = containers_of(&f, "pair")
        .iter()
        .map(|(n, id)| {
            sb.inspect(
                n,
                id,
                "{{(index .NetworkSettings.Networks \"e2e-net-overlay\").IPAddress}}",
            )
        })
        .collect();
    assert_eq!(pair.len(), 2);
    let mut want = pair.clone();
    want.sort();
    assert_eq!(resolve(&sb, &cnode, &cid, "pair"), want);

    // Drain web's node: it moves to the other allowed node; the client, untouched, reaches it
    // by the same name.
    let (code, out, err) = f.run(&["drain", &wnode]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (nnode, nid) = containers_of(&f, "web").remove(0);
    assert_ne!(nnode, wnode);
    let body = wait_for(
        Duration::from_secs(20),
        "client reaches the moved web",
        || {
            fetch(&sb, &cnode, &cid, "web")
                .filter(|b| b.contains(&format!("hostname={}", short(&nid))))
        },
    );
    assert!(body.contains("200 OK"));
    assert_eq!(
        containers_of(&f, "client"),
        [(cnode.clone(), cid.clone())],
        "client not recreated"
    );
    let (code, out, err) = f.run(&["uncordon", &wnode]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn a_plug_without_host_ports_is_reached_by_its_name_from_another_node() {
    let Some(sb) = Sandbox::get("plug") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-net-plug", "");
    write(
        &f,
        "{}",
        &format!(
            "{}apiVersion: fleet/v1\nkind: PlugClass\nmetadata: {{name: echo}}\nspec:\n  image: {IMAGE}\n  port: 8080\n  resources: {{memory: 32MiB}}\n",
            service("client", 3, &["node1", "node2", "node3"], "")
        ),
    );
    f.apply();
    let (code, out, err) = f.run(&["plug", "create", "echo", "--owner", "ann", "-o", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let plug: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = plug["id"].as_str().unwrap();
    let pnode = plug["node"].as_str().unwrap();
    assert_eq!(plug["address"], format!("plug-{id}:8080"));
    assert_eq!(plug["port"], 0, "no host port: {out}");
    let pid = sb.docker(
        pnode,
        &["ps", "-q", "--filter", &format!("label=fleet.plug={id}")],
    );
    let ports = sb.inspect(pnode, pid.trim(), "{{json .HostConfig.PortBindings}}");
    assert!(
        ports == "{}" || ports == "null",
        "publishes nothing: {ports}"
    );
    let (cnode, cid) = containers_of(&f, "client")
        .into_iter()
        .find(|(n, _)| n != pnode)
        .unwrap();
    let body = wait_for(
        Duration::from_secs(20),
        "a client on another node reaches the plug",
        || fetch(&sb, &cnode, &cid, &format!("plug-{id}")),
    );
    assert!(body.contains(&format!("FLEET_PLUG_ID={id}")), "{body}");
    let (code, out, _) = f.run(&["get", "plugs", "-o", "json"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("plug-{id}:8080")), "{out}");
}

#[test]
fn containers_of_the_previous_release_on_the_default_bridge_move_to_the_fleet_network_in_one_apply()
{
    let Some(sb) = Sandbox::get("migrate") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-net-migrate", "");
    write(&f, "{}", &service("web", 1, &["node1"], ""));
    // What the previous release made: the fleet's labels, a v1 spec hash, the default bridge.
    let old = sb.docker(
        "node1",
        &[
            "run",
            "-d",
            "--name",
            "e2e-net-migrate-web-0-0123abcd",
            "--label",
            "fleet.managed-by=fleetctl",
            "--label",
            "fleet.fleet=e2e-net-migrate",
            "--label",
            "fleet.node=node1",
            "--label",
            "fleet.kind=service",
            "--label",
            "fleet.service=web",
            "--label",
            "fleet.replica=0",
            "--label",
            "fleet.spec-hash=0123abcd0123abcd",
            "--memory",
            "64m",
            IMAGE,
        ],
    );
    let old = old.trim().to_string();
    let (code, plan, _) = f.run(&["plan", f.path().to_str().unwrap()]);
    assert_eq!(code, 2, "changes to make: {plan}");
    assert!(
        plan.contains("network: default → e2e-net-migrate"),
        "{plan}"
    );
    f.apply();
    let all = f.all_ids();
    assert_eq!(all.len(), 1, "no duplicate, no orphan: {all:?}");
    assert_ne!(all[0].1, old);
    let net = sb.inspect(
        "node1",
        &all[0].1,
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
    );
    assert_eq!(net.trim(), "e2e-net-migrate");
    let out = f.apply();
    assert!(
        out.contains("0 changes") || out.contains("no changes"),
        "{out}"
    );
}

/// Starts a node's dockerd again when dropped: a test that stopped one leaves it running even
/// when it fails.
struct Restart<'a>(&'a Sandbox, &'static str);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        let _ = self.0.script(&["start-dockerd", self.1]);
    }
}

/// Every sandbox node leaves its swarm (what fleetctl formed is formed again by the next apply).
fn leave_swarm(sb: &Sandbox) {
    for n in ["node3", "node2", "node1"] {
        let _ = sb.script(&["docker", n, "swarm", "leave", "--force"]);
    }
}

/// [`leave_swarm`] when dropped.
struct FreshSwarm<'a>(&'a Sandbox);

impl Drop for FreshSwarm<'_> {
    fn drop(&mut self) {
        leave_swarm(self.0);
    }
}

/// `fleetctl run` as a child; killed when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn after_a_dockerd_restart_its_containers_are_back_on_the_network_within_a_pass() {
    let Some(sb) = Sandbox::get("restart") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-net-restart", "");
    write(
        &f,
        "{}",
        &format!(
            "{}{}",
            service("web", 1, &["node1"], "  restart: always\n"),
            service("client", 1, &["node2"], "  restart: always\n")
        ),
    );
    f.apply();
    let _run = Controller(
        f.cmd(&["run", f.path().to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let restart = Restart(&sb, "node2");
    let out = sb.script(&["stop-dockerd", "node2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Started again (also when the test fails before this line).
    drop(restart);
    // resync is 5s: one pass, plus the reconnect; then the engines' gossip, which takes about
    // 30 s after an engine restarts before the other nodes reach its containers again.
    wait_for(
        Duration::from_secs(90),
        "the client on node2 reaches web again",
        || {
            let (n, id) = containers_of(&f, "client").into_iter().next()?;
            fetch(&sb, &n, &id, "web")
        },
    );
    assert_eq!(containers_of(&f, "client").len(), 1, "no duplicate");
}

#[test]
fn a_two_node_fleet_losing_its_only_manager_says_so_and_converges_when_it_returns() {
    let Some(sb) = Sandbox::get("quorum") else {
        return;
    };
    // This fleet forms the swarm, so it is its to shape (a swarm another fleet made is used,
    // never pruned, by a fleet that shares its nodes).
    leave_swarm(&sb);
    // And when it ends: after its only manager's restart the engines' gossip takes a while (30 s
    // and more) to carry names across nodes again; the next test starts from a fresh swarm.
    let _fresh = FreshSwarm(&sb);
    let f = Fleet::new(&sb, "e2e-net-quorum", "");
    write(
        &f,
        "{}",
        &format!(
            "{}{}",
            service("web", 1, &["node1"], ""),
            service("client", 1, &["node2"], "")
        ),
    );
    // All three nodes first: node3 is a member of the swarm this fleet forms.
    f.apply();
    let node3_id = sb
        .docker("node3", &["info", "-f", "{{.Swarm.NodeID}}"])
        .trim()
        .to_string();
    let members = sb.docker("node1", &["node", "ls", "--format", "{{.ID}}"]);
    assert!(
        !node3_id.is_empty() && members.contains(&node3_id),
        "node3 is a member first: {node3_id:?} in {members}"
    );
    // Then node3 leaves the manifests: fleetctl removes it from the swarm and leaves what is not
    // fleetctl's there alone.
    let nodes = std::fs::read_to_string(f.path().join("nodes.yaml")).unwrap();
    let kept: Vec<&str> = nodes
        .split("\n---\n")
        .filter(|d| !d.contains("name: node3"))
        .collect();
    std::fs::write(f.path().join("nodes.yaml"), kept.join("\n---\n")).unwrap();
    let _ = sb.script(&["docker", "node3", "rm", "-f", "e2e-net-foreign"]);
    let _ = sb.script(&["docker", "node3", "network", "rm", "e2e-net-foreign"]);
    sb.docker("node3", &["network", "create", "e2e-net-foreign"]);
    sb.docker(
        "node3",
        &[
            "run",
            "-d",
            "--name",
            "e2e-net-foreign",
            "--network",
            "e2e-net-foreign",
            IMAGE,
        ],
    );
    let out = f.apply();
    assert!(out.contains("remove"), "{out}");
    let members = sb.docker(
        "node1",
        &["node", "ls", "--format", "{{.ID}} {{.ManagerStatus}}"],
    );
    assert!(
        !members.contains(&node3_id),
        "node3 left the swarm's members: {members}"
    );
    assert_eq!(
        members
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some())
            .count(),
        1,
        "two nodes keep one manager: {members}"
    );
    assert_eq!(
        sb.inspect("node3", "e2e-net-foreign", "{{.State.Running}}"),
        "true",
        "a container fleetctl does not own is untouched"
    );

    // The manager is node1 (the first node); stop it (started again at the end, or when the
    // test fails, so the next test finds it).
    let restart = Restart(&sb, "node1");
    let out = sb.script(&["stop-dockerd", "node1"]);
    assert!(out.status.success());
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{out}\n{err}");
    let text = format!("{out}\n{err}");
    assert!(text.contains("swarm quorum lost"), "{text}");
    assert!(text.contains("containers keep running"), "{text}");
    let (cnode, cid) = containers_of(&f, "client").remove(0);
    assert_eq!(sb.inspect(&cnode, &cid, "{{.State.Running}}"), "true");

    drop(restart);
    let out = wait_for(
        Duration::from_secs(60),
        "apply converges with node1 back",
        || {
            let (code, out, _) = f.run(&["apply", f.path().to_str().unwrap()]);
            (code == 0).then_some(out)
        },
    );
    assert!(!out.contains("quorum"), "{out}");
    // Names across the two nodes come back once the engines' gossip has caught up with the
    // restarted manager: about 30 s here, sometimes longer; not fleetctl's to speed up, so not
    // waited for here (docs/network.md).
    let _ = sb.script(&["docker", "node3", "rm", "-f", "e2e-net-foreign"]);
    let _ = sb.script(&["docker", "node3", "network", "rm", "e2e-net-foreign"]);
}

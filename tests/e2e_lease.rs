//! The fleet lease held on the nodes, end to end (issue 13): actors with different state files
//! — other machines — exclude each other; a holder that dies on another machine is taken over
//! once its lease expires; a holder that comes back after that changes nothing.
//!
//! "Another machine" is a fleetctl run in its own UTS namespace with another host name
//! (`unshare -u`): its lease names that machine, so this machine cannot see whether its process
//! lives and must wait for the lease to expire, exactly as across real machines.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, Sandbox, wait_for};

const OTHER_MACHINE: &str = "other-machine";

/// A service whose healthcheck fails while `gate/closed` exists: an apply of it waits (holding
/// the lease) until the test opens the gate.
fn gated(gate: &Path, extra: &str) -> String {
    format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: gated}}
spec:
  image: fleet-test/busybox:1
  placement: {{nodes: [node1]}}
  resources: {{memory: 16MiB}}
  volumes: ['{}:/gate:ro']
  healthcheck: {{command: 'test ! -e /gate/closed', interval: 1s, retries: 1}}
{extra}",
        gate.display()
    )
}

const EXTRA: &str = "---
apiVersion: fleet/v1
kind: Service
metadata: {name: extra}
spec:
  image: fleet-test/busybox:1
  placement: {nodes: [node2]}
  resources: {memory: 16MiB}
";

/// `fleetctl ARGS` with state A, run as if on another machine.
fn on_other_machine(f: &Fleet, args: &[&str]) -> Child {
    Command::new("unshare")
        .args([
            "-u",
            "sh",
            "-c",
            &format!("hostname {OTHER_MACHINE} && exec \"$0\" \"$@\""),
        ])
        .arg(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env("FLEETCTL_STATE", f.state())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs fleetctl")
}

/// `fleetctl ARGS` with a state file of its own (this machine, another state), as
/// (exit code, stdout, stderr).
fn with_state_b(f: &Fleet, state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = f
        .cmd(args)
        .env("FLEETCTL_STATE", state)
        .output()
        .expect("fleetctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Holders of `fleet`'s lease records on `node`.
fn lease_holders(sb: &Sandbox, node: &str, fleet: &str) -> Vec<String> {
    sb.docker(
        node,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label=fleet.lease={fleet}"),
            "--format",
            "{{.Label \"fleet.lease.holder\"}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {}", child.id());
}

/// Starts a gated apply on the other machine and waits until it holds the lease on every node
/// and has created the gated container (it now waits for the gate).
fn start_holder(sb: &Sandbox, f: &Fleet) -> Child {
    let mut a = on_other_machine(f, &["apply", f.path().to_str().unwrap(), "--timeout", "5m"]);
    wait_for(
        Duration::from_secs(60),
        "the other machine's apply holds the lease and waits for the gate",
        || {
            if let Some(status) = a.try_wait().unwrap() {
                let out = a.wait_with_output_ref();
                panic!("the holder exited early ({status}):\n{out}");
            }
            let held = sb.nodes.iter().all(|n| {
                lease_holders(sb, n, &f.name).iter().any(|h| {
                    h.starts_with("apply by ") && h.contains(&format!("@{OTHER_MACHINE} (pid "))
                })
            });
            (held && sb.ids("node1", &f.name).len() == 1).then_some(())
        },
    );
    a
}

trait OutputRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(o) = self.stdout.as_mut() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(e) = self.stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

/// kill -9 of the lease holder on another machine: until its lease expires, another machine's
/// apply is refused, naming it; then that apply takes over — not at once (this machine cannot
/// see the holder's process), only once the last renewal has run out.
#[test]
fn a_holder_killed_on_another_machine_is_taken_over_once_its_lease_expires() {
    let Some(sb) =
        Sandbox::get("a_holder_killed_on_another_machine_is_taken_over_once_its_lease_expires")
    else {
        return;
    };
    let gate = tempfile::tempdir().unwrap();
    let closed = gate.path().join("closed");
    std::fs::write(&closed, "").unwrap();
    let f = Fleet::new(&sb, "e2e-lease-kill", &gated(gate.path(), ""));
    let mut a = start_holder(&sb, &f);
    signal(&a, "-KILL");
    let killed = Instant::now();
    a.wait().unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    let b = b_dir.path().join("b.db");
    let path = f.path().to_str().unwrap();
    let (code, out, err) = with_state_b(&f, &b, &["apply", path, "--lock-timeout", "2s"]);
    assert_eq!(
        code, 1,
        "refused while the dead holder's lease runs:\n{out}{err}"
    );
    assert!(
        err.contains(&format!("fleet {} is locked by apply by ", f.name))
            && err.contains(&format!("@{OTHER_MACHINE} (pid "))
            && err.contains(" since "),
        "names the holder and its machine:\n{err}"
    );

    std::fs::remove_file(&closed).unwrap();
    let (code, out, err) = with_state_b(&f, &b, &["apply", path, "--lock-timeout", "60s"]);
    assert_eq!(code, 0, "takes over once the lease expired:\n{out}{err}");
    // The holder renewed at most RENEW before it died, so its lease ran at least TTL - RENEW
    // after the kill: taking over sooner would mean it was not waited out.
    let waited = killed.elapsed();
    assert!(
        waited >= fleetctl::lease::TTL - fleetctl::lease::RENEW,
        "taken over after {waited:?}"
    );
    assert_eq!(
        sb.ids("node1", &f.name).len(),
        1,
        "one gated container, not two"
    );
    // The apply released whatever it took; the dead holder's expired records may stay (an
    // apply with nothing to do takes no lease on the nodes, so it removes none).
    for n in &sb.nodes {
        assert!(
            lease_holders(&sb, n, &f.name)
                .iter()
                .all(|h| h.contains(&format!("@{OTHER_MACHINE} (pid "))),
            "the apply released its lease on {n}"
        );
    }
}

/// A holder suspended past its lease (SIGSTOP: a stalled VM, a laptop lid closed) while
/// another machine takes over and changes the fleet: resumed, its fence has run out and its
/// records are gone, so its next step — here, removing the service it does not know as a
/// stray — is never made. It exits 1 saying the lease was lost; the fleet is as the new holder
/// left it.
#[test]
fn a_holder_that_resumes_after_its_lease_was_taken_over_changes_nothing() {
    let Some(sb) =
        Sandbox::get("a_holder_that_resumes_after_its_lease_was_taken_over_changes_nothing")
    else {
        return;
    };
    let gate = tempfile::tempdir().unwrap();
    let closed = gate.path().join("closed");
    std::fs::write(&closed, "").unwrap();
    let f = Fleet::new(&sb, "e2e-lease-fence", &gated(gate.path(), ""));
    let mut a = start_holder(&sb, &f);
    signal(&a, "-STOP");

    // Another machine adds a service while the holder sleeps.
    f.write(&gated(gate.path(), EXTRA));
    std::fs::remove_file(&closed).unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let path = f.path().to_str().unwrap();
    let (code, out, err) = with_state_b(
        &f,
        &b_dir.path().join("b.db"),
        &["apply", path, "--lock-timeout", "60s"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(sb.ids("node2", &f.name).len(), 1, "extra runs");
    let after_b = f.all_ids();

    signal(&a, "-CONT");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = a.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the resumed holder did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = a.wait_with_output_ref();
    assert!(!status.success(), "the resumed holder must fail:\n{text}");
    assert!(
        text.contains("lease"),
        "it says the lease was lost:\n{text}"
    );
    assert_eq!(
        f.all_ids(),
        after_b,
        "the resumed holder changed nothing (extra is still there):\n{text}"
    );
}

const PLUGS: &str = "apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec:
  image: fleet-test/busybox:1
  resources: {memory: 16MiB}
  port: 8080
  hostPorts: 51000-51099
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec:
  maxPlugsPerNode: 4
  tiers: [{nodeSelector: {tier: primary}}, {nodeSelector: {tier: secondary}}]
";

/// Issue 13: node conditions are held on the nodes too. A node cordoned through state A takes
/// no plug created through state B (another machine), and B shows it cordoned; uncordoned
/// through B, A places on it again.
#[test]
fn a_cordon_through_one_state_file_holds_through_another() {
    let Some(sb) = Sandbox::get("a_cordon_through_one_state_file_holds_through_another") else {
        return;
    };
    let f = Fleet::new(&sb, "e2e-lease-cordon", PLUGS);
    f.apply();
    let dir = f.path().to_str().unwrap().to_string();
    let b_dir = tempfile::tempdir().unwrap();
    let b = b_dir.path().join("b.db");
    let node_of = |out: &str| -> String {
        serde_json::from_str::<serde_json::Value>(out).unwrap()["node"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let conditions_of = |out: &str, node: &str| -> Vec<String> {
        serde_json::from_str::<Vec<serde_json::Value>>(out)
            .unwrap()
            .into_iter()
            .find(|n| n["name"] == node)
            .unwrap()["conditions"]
            .as_array()
            .map(|a| a.iter().map(|c| c.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };

    let (code, out, err) = f.run(&["cordon", "node1", "-f", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = with_state_b(
        &f,
        &b,
        &[
            "plug", "create", "agent", "--owner", "b", "-f", &dir, "-o", "json",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(node_of(&out), "node1", "the primary is cordoned, through A");
    let (code, out, err) = with_state_b(&f, &b, &["get", "nodes", &dir, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(conditions_of(&out, "node1"), ["cordoned"], "{out}");

    let (code, out, err) = with_state_b(&f, &b, &["uncordon", "node1", "-f", &dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("node node1 uncordoned"), "{out}");
    let (code, out, err) = f.run(&[
        "plug", "create", "agent", "--owner", "a", "-f", &dir, "-o", "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        node_of(&out),
        "node1",
        "uncordoned through B, A places there again"
    );
    let (_, out, _) = f.run(&["get", "nodes", &dir, "-o", "json"]);
    assert!(conditions_of(&out, "node1").is_empty(), "{out}");
}

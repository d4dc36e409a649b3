//! Images without a registry, end to end (SPEC §11, "Without a registry"):
//! - `fleetctl image push IMAGE --node N…` streams a tag only node1 holds into node2 and node3
//!   over the SSH connections; both then hold the same image id;
//! - a service with `pull: fleet` whose image only node1 holds, pinned to node3: the apply's
//!   pull fails (no registry has it), the image is copied from node1, and node3 runs it.
//!
//! The sandbox has no operator engine, so the source is always a node; `DOCKER_HOST` points at
//! a socket that does not exist, so a Docker engine on the machine running the tests is never
//! used either.
//!
//! Missing sandbox: `SKIPPED` outside CI, a failure under `CI=true`.

mod common;

use common::{Fleet, Sandbox};

/// A local image every sandbox node holds (built by `scripts/sandbox up`).
const BASE: &str = "fleet-test/busybox:1";

/// No engine there: the push must find its source among the nodes.
const NO_LOCAL_ENGINE: &str = "unix:///nonexistent/fleetctl-e2e/docker.sock";

/// Makes `tag` name [`BASE`] on node1 and on no other node.
fn only_on_node1(sb: &Sandbox, tag: &str) {
    for n in &sb.nodes {
        let _ = sb.script(&["docker", n, "rmi", tag]);
    }
    sb.docker("node1", &["tag", BASE, tag]);
}

/// The image id `tag` names on `node`, or `None` when the node lacks it.
fn image_id(sb: &Sandbox, node: &str, tag: &str) -> Option<String> {
    let out = sb.script(&["docker", node, "image", "inspect", "-f", "{{.Id}}", tag]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes `tag` from every node.
fn forget(sb: &Sandbox, tag: &str) {
    for n in &sb.nodes {
        let _ = sb.script(&["docker", n, "rmi", tag]);
    }
}

#[test]
fn image_push_copies_a_tag_only_node1_has_to_node2_and_node3() {
    const TEST: &str = "image_push_copies_a_tag_only_node1_has_to_node2_and_node3";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    const TAG: &str = "e2e/push:1";
    let f = Fleet::new(&sb, "e2e-img-push", "");
    only_on_node1(&sb, TAG);
    let source = image_id(&sb, "node1", TAG).expect("tagged on node1");
    assert_eq!(image_id(&sb, "node2", TAG), None);
    assert_eq!(image_id(&sb, "node3", TAG), None);

    let out = f
        .cmd(&[
            "image",
            "push",
            TAG,
            "--node",
            "node2",
            "--node",
            "node3",
            "-f",
            f.path().to_str().unwrap(),
        ])
        .env("DOCKER_HOST", NO_LOCAL_ENGINE)
        .output()
        .expect("fleetctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // One line per node, naming the source, with bytes, seconds and MB/s.
    for node in ["node2", "node3"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("no line for {node}:\n{stdout}"));
        assert!(line.contains("pushed"), "{line}");
        assert!(line.contains("from node1"), "{line}");
        assert!(line.contains(" MB in ") && line.contains("MB/s"), "{line}");
    }
    assert!(!stdout.contains("node1 "), "node1 was not asked:\n{stdout}");
    assert_eq!(
        image_id(&sb, "node2", TAG).as_deref(),
        Some(source.as_str())
    );
    assert_eq!(
        image_id(&sb, "node3", TAG).as_deref(),
        Some(source.as_str())
    );

    // Again: every node has it; nothing is sent.
    let again = f
        .cmd(&["image", "push", TAG, "-f", f.path().to_str().unwrap()])
        .env("DOCKER_HOST", NO_LOCAL_ENGINE)
        .output()
        .expect("fleetctl runs");
    let again_out = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{again_out}");
    assert!(!again_out.contains("pushed"), "{again_out}");

    // An image no engine has: exit 1, naming where it looked.
    let missing = f
        .cmd(&[
            "image",
            "push",
            "e2e/nowhere:1",
            "-f",
            f.path().to_str().unwrap(),
        ])
        .env("DOCKER_HOST", NO_LOCAL_ENGINE)
        .output()
        .expect("fleetctl runs");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("e2e/nowhere:1"), "{err}");
    assert!(err.contains("node1") && err.contains("node3"), "{err}");
    forget(&sb, TAG);
}

#[test]
fn pull_fleet_copies_an_image_only_node1_has_to_the_node_that_runs_it() {
    const TEST: &str = "pull_fleet_copies_an_image_only_node1_has_to_the_node_that_runs_it";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    const TAG: &str = "e2e/fleet-pull:1";
    only_on_node1(&sb, TAG);
    let source = image_id(&sb, "node1", TAG).expect("tagged on node1");
    let f = Fleet::new(
        &sb,
        "e2e-img-fleet",
        &format!(
            "apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec: {{image: '{TAG}', pull: fleet, placement: {{nodes: [node3]}}, resources: {{memory: 16MiB}}}}
"
        ),
    );
    let out = f.apply();
    let copies: Vec<&str> = out.lines().filter(|l| l.contains("↓ copy")).collect();
    assert_eq!(copies.len(), 1, "one copy, to node3:\n{out}");
    assert!(copies[0].starts_with("node3"), "{out}");
    assert!(copies[0].contains("from node1"), "{out}");
    let ids = f.all_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (node, id) = &ids[0];
    assert_eq!(node, "node3");
    assert_eq!(sb.inspect(node, id, "{{.State.Status}}"), "running");
    assert_eq!(sb.inspect(node, id, "{{.Image}}"), source);
    // Present now: a re-apply neither pulls nor copies.
    let again = f.apply();
    assert!(again.contains("No changes"), "{again}");
    assert!(!again.contains("↓ copy"), "{again}");
    drop(f);
    forget(&sb, TAG);
}

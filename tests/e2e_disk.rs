//! Disk end to end (SPEC §11): `fleetctl run` with `diskHighWatermark` lowered below what the
//! sandbox's disk holds prunes, on the real engines, the images that no container uses and
//! the manifests do not name — and only those: the image of a running service, the image of a
//! plug class nothing runs yet, and the image of a container fleetctl does not own all stay;
//! an event names what went.
//!
//! Missing sandbox: `SKIPPED` outside CI, a failure under `CI=true`.

use std::collections::BTreeSet;
use std::time::Duration;

mod common;

use common::{Fleet, IMAGE, Sandbox};

/// Label of the containers this test creates by hand (removed at the end, and at the start
/// should an earlier run have died).
const KEEPER: &str = "e2e-disk-keeper";

/// Image ids on `node`, untagged ones included.
fn image_ids(sb: &Sandbox, node: &str) -> BTreeSet<String> {
    sb.docker(node, &["images", "-q", "--no-trunc"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// A new image on `node`: a commit of a container of IMAGE that wrote 256 KiB of its own (a
/// prune frees only what an image does not share), tagged `tag` when given; returns its id.
fn new_image(sb: &Sandbox, node: &str, tag: Option<&str>, label: &str) -> String {
    let c = format!("e2e-disk-build-{label}");
    let _ = sb.script(&["docker", node, "rm", "-f", &c]);
    sb.docker(
        node,
        &[
            "run",
            "--name",
            &c,
            IMAGE,
            "sh",
            "-c",
            "head -c 262144 /dev/urandom > /blob",
        ],
    );
    let change = format!("LABEL e2e-disk={label}");
    let mut args = vec!["commit", "--change", &change, &c];
    if let Some(t) = tag {
        args.push(t);
    }
    let id = sb.docker(node, &args).trim().to_string();
    sb.docker(node, &["rm", &c]);
    id
}

/// Removes the containers this test made by hand on every node.
fn remove_keepers(sb: &Sandbox) {
    for n in &sb.nodes {
        let ids = sb.docker(n, &["ps", "-aq", "--filter", &format!("label={KEEPER}")]);
        for id in ids.lines() {
            let _ = sb.script(&["docker", n, "rm", "-f", id]);
        }
    }
}

#[test]
fn above_the_disk_watermark_the_controller_removes_only_images_nothing_uses_or_names() {
    const TEST: &str =
        "above_the_disk_watermark_the_controller_removes_only_images_nothing_uses_or_names";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    remove_keepers(&sb);
    // What the sandbox holds before the test (its test images, what other tests pulled) is
    // kept by a stopped container of the operator's own per image: the controller must not
    // remove an image a foreign container uses.
    let mut before = BTreeSet::new();
    for n in &sb.nodes {
        for id in image_ids(&sb, n) {
            sb.docker(n, &["create", "--label", KEEPER, &id, "true"]);
            before.insert((n.clone(), id));
        }
    }
    // On node2: two images nothing uses (one tagged, one not), one a foreign container uses,
    // one only a plug class names.
    let unused_tagged = new_image(&sb, "node2", Some("e2e-disk/unused:1"), "unused");
    let unused_untagged = new_image(&sb, "node2", None, "untagged");
    let foreign = new_image(&sb, "node2", Some("e2e-disk/foreign:1"), "foreign");
    sb.docker(
        "node2",
        &["create", "--label", KEEPER, "e2e-disk/foreign:1", "true"],
    );
    let class_only = new_image(&sb, "node2", Some("e2e-disk/class:1"), "class");

    let docs = format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: web}}
spec: {{image: '{IMAGE}', pull: never, placement: {{nodes: [node2]}}, resources: {{memory: 16MiB}}}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: 'e2e-disk/class:1', pull: never, port: 8080, resources: {{memory: 16MiB}}}}
"
    );
    let f = Fleet::new(&sb, "e2e-disk", &docs);
    f.write_with(
        &docs,
        "api: {listen: '127.0.0.1:7498'}, diskHighWatermark: 1%",
    );
    // `get nodes` shows each node's disk: the data root's filesystem and what the engine holds.
    let (code, out, err) = f.run(&["get", "nodes", f.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let node2 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node2")
        .unwrap();
    let disk = &node2["disk"];
    assert!(
        disk["used_percent"].as_f64().is_some_and(|p| p > 1.0)
            && disk["size_bytes"].as_u64().is_some_and(|s| s > 0)
            && disk["unused_images"].as_u64().is_some_and(|n| n >= 2)
            && disk["watermark_percent"].as_f64() == Some(1.0),
        "{disk}"
    );
    let log_path = f.path().join("run.log");
    let mut controller = f
        .cmd(&["-v", "run", f.path().to_str().unwrap()])
        .stdout(std::fs::File::create(f.path().join("run.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let pruned = common::wait_for(
        Duration::from_secs(60),
        "a prune-images event for node2",
        || {
            if let Some(status) = controller.try_wait().unwrap() {
                panic!(
                    "fleetctl run exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            let store = fleetctl::store::Store::open(&f.state()).ok()?;
            store
                .events(200)
                .ok()?
                .into_iter()
                .find(|e| e.action == "prune-images" && e.node.as_deref() == Some("node2"))
        },
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &controller.id().to_string()])
        .status();
    let _ = controller.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();

    let left = image_ids(&sb, "node2");
    assert!(!left.contains(&unused_tagged), "{left:?}\n{log}");
    assert!(!left.contains(&unused_untagged), "{left:?}\n{log}");
    assert!(left.contains(&foreign), "a foreign container's image stays");
    assert!(left.contains(&class_only), "a plug class's image stays");
    // The service runs its image, and every image that was there before stays, on every node.
    let web = f.all_ids();
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(
        sb.inspect(&web[0].0, &web[0].1, "{{.State.Status}}"),
        "running"
    );
    for (n, id) in &before {
        assert!(
            image_ids(&sb, n).contains(id),
            "{n}: {id} was removed\n{log}"
        );
    }
    // The event says why and names what went.
    eprintln!("node2: {}", pruned.message);
    assert!(
        pruned.message.starts_with("disk ")
            && pruned.message.contains("> 1% (")
            && pruned.message.contains("removed 2 image(s)")
            && !pruned.message.contains("freed about 0B")
            && pruned.message.contains("e2e-disk/unused:1")
            && pruned
                .message
                .contains(&format!("sha256:{}", &unused_untagged[7..19])),
        "{}",
        pruned.message
    );
    assert!(
        !pruned.message.contains("e2e-disk/class:1"),
        "{}",
        pruned.message
    );

    remove_keepers(&sb);
    for tag in ["e2e-disk/foreign:1", "e2e-disk/class:1"] {
        let _ = sb.script(&["docker", "node2", "rmi", tag]);
    }
}

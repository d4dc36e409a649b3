//! Images end to end (SPEC §11), against the sandbox's real registries (`scripts/sandbox up`
//! runs two: one with htpasswd auth, one open; both TLS with the sandbox CA):
//! - an image only the registry has is pulled on the nodes that need it, and a re-apply pulls
//!   nothing;
//! - a private image is refused without credentials (once, naming the registry), runs with
//!   `Fleet.registries` and with credentials only in a Docker config; the password is nowhere
//!   fleetctl writes;
//! - a tag pushed again moves the fleet only with `--refresh`, every replica to one digest;
//! - a missing tag fails naming node, image, registry and "not found", and the old replica
//!   keeps running.
//!
//! Missing sandbox or registries: `SKIPPED` outside CI, a failure under `CI=true`.

use std::path::Path;
use std::time::Duration;

mod common;

use common::{Fleet, Sandbox};

/// Removes `image` — its tag and every `repository@digest` reference of its repository —
/// from every node, so the next use must pull it (the content stays when another tag, such as
/// `fleet-test/busybox:1`, holds it).
fn forget_everywhere(sb: &Sandbox, image: &str) {
    let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
    for n in &sb.nodes {
        let _ = sb.script(&["docker", n, "rmi", image]);
        let digests = sb.docker(
            n,
            &[
                "images",
                "--digests",
                "--format",
                "{{.Repository}}@{{.Digest}}",
                repo,
            ],
        );
        for r in digests.lines().filter(|l| l.contains("@sha256:")) {
            let _ = sb.script(&["docker", n, "rmi", r]);
        }
    }
}

/// Pushes the local image `from` (on node1) to `to` in a registry, then forgets `to` there.
fn push(sb: &Sandbox, from: &str, to: &str) {
    sb.docker("node1", &["tag", from, to]);
    sb.docker("node1", &["push", "-q", to]);
    sb.docker("node1", &["rmi", to]);
}

/// One service pinned to `node` running `image`.
fn service(name: &str, image: &str, node: &str) -> String {
    format!(
        "apiVersion: fleet/v1
kind: Service
metadata: {{name: {name}}}
spec: {{image: '{image}', placement: {{nodes: [{node}]}}, resources: {{memory: 16MiB}}}}
"
    )
}

/// The image (`.Image`, the engine's image id) each running container of the fleet runs.
fn running_images(f: &Fleet) -> Vec<(String, String)> {
    f.all_ids()
        .into_iter()
        .map(|(n, id)| {
            assert_eq!(f.sb.inspect(&n, &id, "{{.State.Status}}"), "running");
            let image = f.sb.inspect(&n, &id, "{{.Image}}");
            (n, image)
        })
        .collect()
}

#[test]
fn an_image_only_the_registry_has_runs_on_two_nodes_and_a_reapply_pulls_nothing() {
    const TEST: &str =
        "an_image_only_the_registry_has_runs_on_two_nodes_and_a_reapply_pulls_nothing";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let Some(reg) = sb.registry(TEST).cloned() else {
        return;
    };
    let image = format!("{}/fleet-test/busybox:1", reg.open);
    let f = Fleet::new(
        &sb,
        "e2e-img-pull",
        &format!(
            "{}---\n{}",
            service("a", &image, "node2"),
            service("b", &image, "node3")
        ),
    );
    // Not node1: the sandbox pushed the registry's images from there, so its engine holds
    // their content under the registry's digest.
    forget_everywhere(&sb, &image);
    let out = f.apply();
    let pulls: Vec<&str> = out.lines().filter(|l| l.contains("↓ pull")).collect();
    assert_eq!(pulls.len(), 2, "one pull per node:\n{out}");
    assert!(pulls.iter().any(|l| l.starts_with("node2")), "{out}");
    assert!(pulls.iter().any(|l| l.starts_with("node3")), "{out}");
    // Both run the one digest the apply resolved, by digest.
    let ids = f.all_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let refs: Vec<String> = ids
        .iter()
        .map(|(n, id)| sb.inspect(n, id, "{{.Config.Image}}"))
        .collect();
    assert!(refs[0].contains("@sha256:"), "{refs:?}");
    assert_eq!(refs[0], refs[1]);
    let again = f.apply();
    assert!(again.contains("No changes"), "{again}");
    assert!(!again.contains("↓ pull"), "{again}");
    assert_eq!(f.all_ids(), ids);
}

#[test]
fn a_private_image_needs_credentials_from_the_manifests_or_the_docker_config() {
    const TEST: &str = "a_private_image_needs_credentials_from_the_manifests_or_the_docker_config";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let Some(reg) = sb.registry(TEST).cloned() else {
        return;
    };
    let password = std::fs::read_to_string(&reg.password_file).unwrap();
    assert!(password.len() >= 8, "a real password");
    let image = format!("{}/fleet-test/private:1", reg.auth);
    let docs = service("p", &image, "node1");
    let f = Fleet::new(&sb, "e2e-img-private", &docs);
    forget_everywhere(&sb, &image);
    let home = tempfile::tempdir().unwrap();
    let apply = |home: &Path| {
        let out = f
            .cmd(&["apply", f.path().to_str().unwrap(), "--timeout", "30s"])
            .env("HOME", home)
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    // No credentials anywhere: refused, once, naming the registry.
    let (code, out) = apply(home.path());
    assert_eq!(code, 1, "{out}");
    let said: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("cannot be pulled"))
        .collect();
    assert_eq!(said.len(), 1, "{out}");
    assert!(said[0].contains("node node1"), "{out}");
    assert!(
        said[0].contains(&format!("registry {}: unauthorized", reg.auth)),
        "{out}"
    );
    assert!(
        f.all_ids().is_empty(),
        "nothing was created: {:?}",
        f.all_ids()
    );

    // With `Fleet.registries` it runs.
    f.write_with(
        &docs,
        &format!(
            "registries: [{{host: '{}', username: {}, passwordFile: '{}'}}]",
            reg.auth,
            reg.user,
            reg.password_file.display()
        ),
    );
    let (code, with_manifest) = apply(home.path());
    assert_eq!(code, 0, "{with_manifest}");
    assert_eq!(running_images(&f).len(), 1);

    // With the credentials only in the operator's Docker config it runs too.
    sb.clean(&f.name);
    forget_everywhere(&sb, &image);
    f.write(&docs);
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    let auth = base64_encode(&format!("{}:{password}", reg.user));
    std::fs::write(
        home.path().join(".docker/config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.auth),
    )
    .unwrap();
    let (code, with_config) = apply(home.path());
    assert_eq!(code, 0, "{with_config}");
    assert_eq!(running_images(&f).len(), 1);

    // The controller pulls with the manifests' credentials too, and logs no password (at debug
    // level, every library's messages included).
    sb.clean(&f.name);
    forget_everywhere(&sb, &image);
    f.write_with(
        &docs,
        &format!(
            "api: {{listen: '127.0.0.1:7497'}}, registries: [{{host: '{}', username: {}, passwordFile: '{}'}}]",
            reg.auth,
            reg.user,
            reg.password_file.display()
        ),
    );
    let log_path = f.path().join("run.log");
    let mut controller = f
        .cmd(&["-vvv", "run", f.path().to_str().unwrap()])
        .env("HOME", home.path())
        .env_remove("DOCKER_CONFIG")
        .stdout(std::fs::File::create(f.path().join("run.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    common::wait_for(
        Duration::from_secs(60),
        "the controller runs the private image",
        || {
            if let Some(status) = controller.try_wait().unwrap() {
                panic!(
                    "fleetctl run exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            f.all_ids()
                .iter()
                .any(|(n, id)| sb.inspect(n, id, "{{.State.Status}}") == "running")
                .then_some(())
        },
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &controller.id().to_string()])
        .status();
    let _ = controller.wait();
    let log = std::fs::read_to_string(&log_path).unwrap()
        + &std::fs::read_to_string(f.path().join("run.out")).unwrap();
    assert!(
        log.contains("image pulled"),
        "the controller pulled:\n{log}"
    );

    // The password is in no output, not in the state file, not on the nodes' disks.
    for text in [&out, &with_manifest, &with_config, &log] {
        assert!(
            !text.contains(password.as_str()),
            "password in output:\n{text}"
        );
    }
    let state = std::fs::read(f.state()).unwrap();
    assert!(!String::from_utf8_lossy(&state).contains(password.as_str()));
    let wal = f.state().with_extension("db-wal");
    if let Ok(wal) = std::fs::read(wal) {
        assert!(!String::from_utf8_lossy(&wal).contains(password.as_str()));
    }
    // The sandbox's nodes share this machine's root filesystem: root's Docker config is the
    // nodes' `/root/.docker`.
    assert!(
        common::files_containing(Path::new("/root/.docker"), &password).is_empty(),
        "password under /root/.docker"
    );
}

/// `base64` of `s` (standard alphabet, padded), as `docker login` writes `auths`.
fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn a_tag_pushed_again_moves_the_fleet_only_with_refresh_and_to_one_digest() {
    const TEST: &str = "a_tag_pushed_again_moves_the_fleet_only_with_refresh_and_to_one_digest";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let Some(reg) = sb.registry(TEST).cloned() else {
        return;
    };
    let image = format!("{}/e2e/moving:v", reg.open);
    push(&sb, "fleet-test/busybox:1", &image);
    let f = Fleet::new(
        &sb,
        "e2e-img-moving",
        &format!(
            "{}---\n{}",
            service("m1", &image, "node1"),
            service("m2", &image, "node2")
        ),
    );
    forget_everywhere(&sb, &image);
    f.apply();
    let before = f.all_ids();
    let first = running_images(&f);
    let one = sb.docker(
        "node1",
        &["image", "inspect", "-f", "{{.Id}}", "fleet-test/busybox:1"],
    );
    assert!(first.iter().all(|(_, i)| *i == one.trim()), "{first:?}");

    // The tag now names other content.
    push(&sb, "fleet-test/busybox:2", &image);
    let out = f.apply();
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(f.all_ids(), before, "without --refresh nothing moves");

    let (code, plan, err) = f.run(&["plan", f.path().to_str().unwrap(), "--refresh"]);
    assert_eq!(code, 2, "{plan}{err}");
    assert!(plan.contains("the tag moved"), "{plan}");

    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap(), "--refresh"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = running_images(&f);
    let two = sb.docker(
        "node1",
        &["image", "inspect", "-f", "{{.Id}}", "fleet-test/busybox:2"],
    );
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|(_, i)| *i == two.trim()),
        "every replica on every node runs the new digest: {after:?}"
    );
    assert!(f.all_ids().iter().all(|c| !before.contains(c)));
}

#[test]
fn a_missing_tag_names_node_image_and_registry_and_the_old_replica_keeps_running() {
    const TEST: &str =
        "a_missing_tag_names_node_image_and_registry_and_the_old_replica_keeps_running";
    let Some(sb) = Sandbox::get(TEST) else {
        return;
    };
    let Some(reg) = sb.registry(TEST).cloned() else {
        return;
    };
    let good = format!("{}/fleet-test/busybox:1", reg.open);
    let missing = format!("{}/fleet-test/busybox:404", reg.open);
    let f = Fleet::new(&sb, "e2e-img-missing", &service("x", &good, "node1"));
    f.apply();
    let before = f.all_ids();
    f.write(&service("x", &missing, "node1"));
    let (code, out, err) = f.run(&["apply", f.path().to_str().unwrap(), "--timeout", "20s"]);
    assert_eq!(code, 1, "{out}{err}");
    let said: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("cannot be pulled"))
        .collect();
    assert_eq!(said.len(), 1, "{out}");
    for part in [
        "node node1".to_string(),
        missing.clone(),
        format!("registry {}: not found", reg.open),
    ] {
        assert!(said[0].contains(&part), "{part} in {out}");
    }
    assert_eq!(f.all_ids(), before, "the old replica is untouched");
    assert_eq!(running_images(&f).len(), 1, "and still runs");
}

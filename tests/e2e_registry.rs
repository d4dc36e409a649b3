//! End-to-end check of the sandbox's registries (`scripts/sandbox up`, `.sandbox/registry.env`):
//! a node's engine pulls over TLS from the open one, is refused by the one with htpasswd auth
//! when it brings no credentials and served when it does, and the password is on no node's disk.
//!
//! - Missing sandbox or registries: `SKIPPED` outside CI, a failure under `CI=true`
//!   (`tests/common`, which also holds the machine-wide test lock).
//! - The docker CLI runs with a `DOCKER_CONFIG` of its own (a temp dir), never root's
//!   `~/.docker`: what it sends is what the test means. Images pulled here are removed again.

use std::path::Path;
use std::process::{Command, Output};

mod common;

/// The node that pulls (node2 when the sandbox has it: `up` pushes through node1).
fn puller(sb: &common::Sandbox) -> String {
    let n = if sb.nodes.iter().any(|n| n == "node2") {
        "node2"
    } else {
        &sb.nodes[0]
    };
    n.to_string()
}

/// The docker CLI against `node`'s engine with the client config in `config` (a directory).
fn docker(sb: &common::Sandbox, config: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(&sb.script)
        .arg("docker")
        .arg(node)
        .args(args)
        .env("DOCKER_CONFIG", config)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", sb.script.display()))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes `image` from `node` (no error when it is not there).
fn forget(sb: &common::Sandbox, config: &Path, node: &str, image: &str) {
    let _ = docker(sb, config, node, &["rmi", "-f", image]);
    let out = docker(sb, config, node, &["image", "inspect", image]);
    assert!(!out.status.success(), "{image} still on {node}");
}

#[test]
fn nodes_pull_from_the_sandbox_registries_over_tls_and_auth_is_enforced() {
    const TEST: &str = "nodes_pull_from_the_sandbox_registries_over_tls_and_auth_is_enforced";
    let Some(sb) = common::Sandbox::get(TEST) else {
        return;
    };
    let Some(reg) = sb.registry(TEST).cloned() else {
        return;
    };
    let node = puller(&sb);
    let empty = tempfile::tempdir().unwrap();
    let open = format!("{}/fleet-test/busybox:1", reg.open);
    let private = format!("{}/fleet-test/private:1", reg.auth);

    // No node holds a registry image after `up`; an earlier run's pull is undone first.
    forget(&sb, empty.path(), &node, &open);
    forget(&sb, empty.path(), &node, &private);

    // The engine reaches the open registry and trusts its certificate: the sandbox CA in
    // /etc/docker/certs.d, not an insecure-registry exception.
    let info = docker(
        &sb,
        empty.path(),
        &node,
        &[
            "info",
            "--format",
            "{{json .RegistryConfig.InsecureRegistryCIDRs}} {{json .RegistryConfig.IndexConfigs}}",
        ],
    );
    assert!(info.status.success(), "{}", text(&info));
    let host = reg.open.split(':').next().unwrap();
    assert!(
        !String::from_utf8_lossy(&info.stdout).contains(host),
        "{host} is an insecure registry of {node}: {}",
        text(&info)
    );
    let out = docker(&sb, empty.path(), &node, &["pull", &open]);
    assert!(out.status.success(), "pull {open}: {}", text(&out));
    let pulled = sb.inspect(&node, &open, "{{.Id}}");
    assert_eq!(
        pulled,
        sb.inspect(&node, common::IMAGE, "{{.Id}}"),
        "{open} is not {}",
        common::IMAGE
    );
    let digests = sb.inspect(&node, &open, "{{json .RepoDigests}}");
    assert!(
        digests.contains(&format!("{}/fleet-test/busybox@sha256:", reg.open)),
        "{open} has no digest from the registry: {digests}"
    );

    // The auth registry refuses a pull without credentials.
    let out = docker(&sb, empty.path(), &node, &["pull", &private]);
    let err = text(&out).to_lowercase();
    assert!(!out.status.success(), "pull {private} without login: {err}");
    assert!(
        [
            "unauthorized",
            "authentication required",
            "no basic auth credentials"
        ]
        .iter()
        .any(|m| err.contains(m)),
        "pull {private} without login should be unauthorized: {err}"
    );
    assert!(!err.contains("certificate"), "TLS error, not auth: {err}");

    // With the user and password (in a throwaway client config) it serves the image.
    let password = reg.password();
    assert!(password.len() >= 16, "password too short");
    let with_login = tempfile::tempdir().unwrap();
    {
        use base64::Engine as _;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, password));
        let config = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.auth);
        std::fs::write(with_login.path().join("config.json"), config).unwrap();
    }
    let out = docker(&sb, with_login.path(), &node, &["pull", &private]);
    assert!(
        out.status.success(),
        "pull {private} with login: {}",
        text(&out)
    );
    drop(with_login);

    // The password is in no docker client config the nodes (who share this machine's
    // filesystem) or the product could read.
    for dir in [
        "/root/.docker",
        &format!("{}/.docker", std::env::var("HOME").unwrap_or_default()),
    ] {
        let hits = common::files_containing(Path::new(dir), &password);
        assert!(hits.is_empty(), "the registry password is in {hits:?}");
    }

    forget(&sb, empty.path(), &node, &open);
    forget(&sb, empty.path(), &node, &private);
}

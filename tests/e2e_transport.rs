//! End-to-end tests of the transport against real engines behind real sshd: the sandbox of
//! `scripts/sandbox up` (network namespaces fleet-node1..N, each with its own dockerd and sshd at
//! 10.213.K.2:22; Node manifests in `fleet/sandbox/nodes.yaml`).
//!
//! - Missing sandbox: outside CI the tests print a loud `SKIPPED: reason` line and pass; under
//!   `CI=true` a missing sandbox is a failure.
//! - `FLEET_SANDBOX_NODES` overrides the manifest path, `FLEET_SANDBOX_SCRIPT` the control script
//!   (`stop-sshd NODE` / `start-sshd NODE`), e.g. for a one-node development setup.
//! - The harness is `tests/common` (machine-wide lock: no two e2e tests share the nodes at
//!   once); a test that stops an sshd or takes a link down restores it before it returns, even
//!   when it fails. Containers created here carry `fleet.fleet=e2e-transport` and are removed.
//!
//! Traffic goes only to the sandbox nodes' own addresses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetctl::container::{
    ContainerSpec, HealthcheckSpec, PortMapping, Protocol, Resources, RestartPolicy, RunState,
};
use fleetctl::manifest::NodeSpec;
use fleetctl::transport::hostkey;
use fleetctl::transport::{
    self, ConnState, ContainerUpdate, Endpoint, ErrorKind, ListFilter, NodeRuntime,
};
use futures_util::StreamExt;

mod common;

/// The test image every sandbox engine has (no registry is reachable).
const IMAGE: &str = common::IMAGE;
/// A valid ed25519 key that no sandbox node holds.
const FOREIGN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
/// Bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);

/// The shared sandbox harness (machine-wide test lock, skip/fail policy), plus the SSH nodes'
/// manifests.
struct Sandbox {
    nodes: Vec<NodeSpec>,
    inner: common::Sandbox,
}

impl Sandbox {
    fn get(test: &str) -> Option<Sandbox> {
        let inner = common::Sandbox::get(test)?;
        let loaded = fleetctl::manifest::load(&inner.nodes_yaml).unwrap_or_else(|e| {
            panic!(
                "sandbox manifests {} invalid:\n{e}",
                inner.nodes_yaml.display()
            )
        });
        let nodes: Vec<NodeSpec> = loaded
            .fleet
            .nodes
            .into_values()
            .filter(|n| n.ssh.is_some())
            .collect();
        assert!(
            !nodes.is_empty(),
            "{} declares no SSH node",
            inner.nodes_yaml.display()
        );
        Some(Sandbox { nodes, inner })
    }

    fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint::from_node(&self.nodes[i])
    }

    fn ctl(&self, verb: &str, node: &str) {
        let out = self.inner.script(&[verb, node]);
        assert!(
            out.status.success(),
            "{} {verb} {node} failed: {}",
            self.inner.script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The node's sshd log (next to its Docker socket in the sandbox layout), if readable.
fn sshd_log(ep: &Endpoint) -> Option<PathBuf> {
    let p = Path::new(&ep.docker_socket).parent()?.join("sshd.log");
    p.exists().then_some(p)
}

/// "Accepted publickey" lines in the node's sshd log: one per authenticated connection.
fn accepted_logins(ep: &Endpoint) -> Option<usize> {
    let text = std::fs::read_to_string(sshd_log(ep)?).ok()?;
    Some(
        text.lines()
            .filter(|l| l.contains("Accepted publickey"))
            .count(),
    )
}

/// Established TCP connections from this process to the node's sshd.
fn my_ssh_connections(ep: &Endpoint) -> usize {
    let ssh = ep.ssh.as_ref().unwrap();
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .output()
        .expect("ss");
    let me = format!("pid={},", std::process::id());
    let dst = format!("{}:{}", ssh.host, ssh.port);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&me) && l.split_whitespace().any(|f| f == dst))
        .count()
}

fn test_spec(name: &str) -> ContainerSpec {
    ContainerSpec {
        secret_env: Default::default(),
        files: Vec::new(),
        knobs: Default::default(),
        pull: Default::default(),
        network: Default::default(),
        name: name.to_string(),
        image: IMAGE.to_string(),
        command: Some(vec![
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            "8080".into(),
            "-h".into(),
            "/www".into(),
        ]),
        env: [("FLEET_E2E".to_string(), "1".to_string())].into(),
        labels: [
            ("fleet.managed-by".to_string(), "fleetctl".to_string()),
            ("fleet.fleet".to_string(), "e2e-transport".to_string()),
        ]
        .into(),
        ports: vec![PortMapping {
            host_ip: None,
            host_port: 58080,
            container_port: 8080,
            protocol: Protocol::Tcp,
        }],
        volumes: vec![],
        restart: RestartPolicy::No,
        resources: Resources {
            memory: 32 << 20,
            memory_reservation: Some(16 << 20),
            nano_cpus: Some(250_000_000),
            cpu_shares: Some(256),
            cpuset: None,
        },
        healthcheck: Some(HealthcheckSpec {
            test: vec!["CMD".into(), "true".into()],
            interval: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_secs(1)),
            retries: Some(2),
            start_period: None,
        }),
        stop_grace_period: Some(Duration::from_secs(2)),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_sandbox_node_is_ready_over_ssh() {
    let Some(sb) = Sandbox::get("every_sandbox_node_is_ready_over_ssh") else {
        return;
    };
    rt().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..sb.nodes.len() {
            let ep = sb.endpoint(i);
            tasks.push(tokio::spawn(async move {
                let rt = transport::connect_docker(&ep).unwrap();
                let info = rt.engine_info().await;
                let list = rt.list_containers(&ListFilter::default()).await;
                (ep.node, info, list)
            }));
        }
        for t in tasks {
            let (node, info, list) = t.await.unwrap();
            let info = info.unwrap_or_else(|e| panic!("{node} not ready: {e}"));
            assert!(!info.version.is_empty(), "{node}: {info:?}");
            let api = transport::ApiVersion::parse(&info.api_version).unwrap();
            assert!(api >= transport::docker::MIN_API_VERSION, "{node}: {api}");
            assert!(info.cpus > 0 && info.memory > 0, "{node}: {info:?}");
            list.unwrap_or_else(|e| panic!("{node}: list failed: {e}"));
        }
    });
}

#[test]
fn wrong_pinned_host_key_is_refused_before_any_docker_call() {
    let Some(sb) = Sandbox::get("wrong_pinned_host_key_is_refused_before_any_docker_call") else {
        return;
    };
    let mut ep = sb.endpoint(0);
    ep.ssh.as_mut().unwrap().host_key = Some(FOREIGN_KEY.to_string());
    let logins_before = accepted_logins(&ep);
    rt().block_on(async {
        let rt = transport::connect_docker(&ep).unwrap();
        let err = rt
            .list_containers(&ListFilter::default())
            .await
            .expect_err("a wrong pinned key must refuse the connection");
        assert_eq!(err.kind, ErrorKind::HostKey, "{err}");
        assert_eq!(err.node, ep.node);
        let msg = err.to_string();
        assert!(msg.contains("SHA256:"), "{msg}");
        assert!(
            msg.contains(&format!("fleetctl trust {}", ep.node)),
            "{msg}"
        );
        assert!(msg.contains("pinned"), "{msg}");
        // Refused during key exchange: never authenticated, so no channel and no Docker call.
        let ssh = rt.ssh_session().unwrap();
        assert_eq!(ssh.connections_established(), 0);
        assert_eq!(rt.api_version(), None, "no API negotiation happened");
        // A permanent failure: the next call does not dial again.
        let again = rt.engine_info().await.expect_err("still refused");
        assert_eq!(again.kind, ErrorKind::HostKey);
        assert_eq!(
            ssh.connect_attempts(),
            1,
            "host-key failures are not retried"
        );
        assert!(matches!(
            *ssh.state().borrow(),
            ConnState::Down {
                permanent: true,
                ..
            }
        ));
    });
    if let Some(before) = logins_before {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            accepted_logins(&ep),
            Some(before),
            "sshd must not have seen a login"
        );
    }
}

#[test]
fn unknown_and_changed_host_keys_are_refused_with_the_fingerprint() {
    let Some(sb) = Sandbox::get("unknown_and_changed_host_keys_are_refused_with_the_fingerprint")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ep0 = sb.endpoint(0);
    let ssh0 = ep0.ssh.clone().unwrap();
    rt().block_on(async {
        // The key the node really presents, as `fleetctl trust` would show it.
        let presented = transport::ssh::fetch_host_key(&ssh0).await.unwrap();
        let fp = presented.fingerprint();

        // Unknown: an empty known_hosts file.
        let mut ep = ep0.clone();
        let empty = dir.path().join("empty_known_hosts");
        std::fs::write(&empty, "").unwrap();
        ep.ssh.as_mut().unwrap().known_hosts_file = empty;
        let err = transport::connect(&ep)
            .unwrap()
            .engine_info()
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::HostKey);
        assert!(err.message.contains(&fp), "{err}");
        assert!(err.message.contains("not known"), "{err}");

        // Changed: the host recorded with another key on line 2.
        let changed = dir.path().join("changed_known_hosts");
        std::fs::write(
            &changed,
            format!(
                "# fleet\n{} {FOREIGN_KEY}\n",
                hostkey::host_field(&ssh0.host, ssh0.port)
            ),
        )
        .unwrap();
        ep.ssh.as_mut().unwrap().known_hosts_file = changed.clone();
        let err = transport::connect(&ep)
            .unwrap()
            .engine_info()
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::HostKey);
        assert!(err.message.contains("HOST KEY CHANGED"), "{err}");
        assert!(
            err.message.contains(&format!("{}:2", changed.display())),
            "{err}"
        );

        // Trusting it (what `fleetctl trust` records) makes the node reachable.
        let trusted = dir.path().join("sub/known_hosts");
        hostkey::record_known_host(&trusted, &ssh0.host, ssh0.port, &presented.key).unwrap();
        ep.ssh.as_mut().unwrap().known_hosts_file = trusted;
        transport::connect(&ep)
            .unwrap()
            .engine_info()
            .await
            .unwrap_or_else(|e| panic!("after recording the key: {e}"));
    });
}

#[test]
fn a_key_the_node_does_not_accept_is_an_auth_error_and_is_not_retried() {
    let Some(sb) =
        Sandbox::get("a_key_the_node_does_not_accept_is_an_auth_error_and_is_not_retried")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ep = sb.endpoint(0);
    ep.ssh.as_mut().unwrap().identity_file = Some(key.clone());
    rt().block_on(async {
        let rt = transport::connect_docker(&ep).unwrap();
        let err = rt.engine_info().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth, "{err}");
        assert!(!err.is_retryable());
        assert!(err.message.contains(&key.display().to_string()), "{err}");
        let again = rt.engine_info().await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::Auth);
        assert_eq!(rt.ssh_session().unwrap().connect_attempts(), 1);
    });
}

#[test]
fn fifty_concurrent_calls_to_one_node_share_one_ssh_connection() {
    let Some(sb) = Sandbox::get("fifty_concurrent_calls_to_one_node_share_one_ssh_connection")
    else {
        return;
    };
    let ep = sb.endpoint(0);
    let logins_before = accepted_logins(&ep);
    rt().block_on(async {
        let rt = transport::connect_docker(&ep).unwrap();
        let calls = (0..50).map(|_| {
            let rt = rt.clone();
            async move { rt.list_containers(&ListFilter::default()).await }
        });
        let results = futures_util::future::join_all(calls).await;
        for r in results {
            r.unwrap_or_else(|e| panic!("{e}"));
        }
        let ssh = rt.ssh_session().unwrap();
        assert_eq!(ssh.connect_attempts(), 1);
        assert_eq!(ssh.connections_established(), 1);
        assert_eq!(my_ssh_connections(&ep), 1, "TCP connections to sshd");
        if let Some(before) = logins_before {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                accepted_logins(&ep),
                Some(before + 1),
                "sshd saw exactly one login"
            );
        }
    });
}

/// Restarts the node's sshd when dropped, so a failing test leaves the sandbox whole.
struct SshdGuard<'a>(&'a Sandbox, String);

impl Drop for SshdGuard<'_> {
    fn drop(&mut self) {
        self.0.ctl("start-sshd", &self.1);
    }
}

#[test]
fn stopped_sshd_makes_only_that_node_not_ready_and_the_connection_comes_back() {
    let Some(sb) =
        Sandbox::get("stopped_sshd_makes_only_that_node_not_ready_and_the_connection_comes_back")
    else {
        return;
    };
    let victim = sb.nodes.len() - 1;
    let victim_ep = sb.endpoint(victim);
    rt().block_on(async {
        // A long-lived runtime, connected before the outage.
        let held = transport::connect_docker(&victim_ep).unwrap();
        held.list_containers(&ListFilter::default()).await.unwrap();
        let mut state = held.ssh_session().unwrap().state();
        assert_eq!(
            *state.borrow_and_update(),
            ConnState::Connected { generation: 1 }
        );

        let mut events = held.events(&ListFilter::default()).await.unwrap();

        let guard = SshdGuard(&sb, victim_ep.node.clone());
        sb.ctl("stop-sshd", &victim_ep.node);

        // The event stream ends (the caller resubscribes after the reconnect).
        let end = tokio::time::timeout(WAIT, async {
            loop {
                match events.next().await {
                    None => return None,
                    Some(Err(e)) => return Some(e),
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
        .expect("event stream ends when the connection drops");
        if let Some(e) = end {
            assert!(e.is_retryable(), "{e}");
        }

        drop(events);

        // The held connection drops and says so: at once when the node's sshd closes the TCP
        // connection, at the latest when the keepalives go unanswered (a loaded machine can
        // deliver the close late, so the bound is the keepalive one plus the usual wait).
        let bound =
            transport::ssh::KEEPALIVE_INTERVAL * (transport::ssh::KEEPALIVE_MAX as u32 + 1) + WAIT;
        if tokio::time::timeout(
            bound,
            state.wait_for(|s| matches!(s, ConnState::Down { .. })),
        )
        .await
        .is_err()
        {
            panic!(
                "connection loss not noticed within {bound:?}; state: {:?}",
                *state.borrow()
            );
        }

        // A fresh look at the whole fleet: the victim is NotReady with a clear cause, quickly;
        // the others are Ready.
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..sb.nodes.len() {
            let ep = sb.endpoint(i);
            tasks.push(tokio::spawn(async move {
                let rt = transport::connect_docker(&ep).unwrap();
                (ep.node.clone(), rt.engine_info().await)
            }));
        }
        for t in tasks {
            let (node, r) = t.await.unwrap();
            if node == victim_ep.node {
                let err = r.expect_err("victim must be unreachable");
                assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
                assert!(err.to_string().contains(&node), "{err}");
                assert!(
                    err.message.contains("refused") || err.message.contains("cannot reach"),
                    "cause should say the connection was refused: {err}"
                );
            } else {
                r.unwrap_or_else(|e| panic!("{node} should stay ready: {e}"));
            }
        }
        assert!(
            started.elapsed() < transport::CONNECT_TIMEOUT,
            "a refused node must not hold up the others: {:?}",
            started.elapsed()
        );

        // sshd comes back; so does the held runtime, on a new connection.
        drop(guard);
        let deadline = Instant::now() + WAIT;
        loop {
            match held.list_containers(&ListFilter::default()).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    assert!(e.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no reconnect within {WAIT:?}: {e}"),
            }
        }
        let ssh = held.ssh_session().unwrap();
        assert_eq!(ssh.connections_established(), 2);
        assert!(matches!(
            *ssh.state().borrow(),
            ConnState::Connected { generation: 2 }
        ));
    });
}

/// Takes the node's link up again when dropped.
struct LinkGuard<'a>(&'a Sandbox, String);

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        self.0.ctl("link-up", &self.1);
    }
}

#[test]
fn a_silent_node_costs_at_most_the_connect_timeout_and_does_not_slow_the_others() {
    let Some(sb) = Sandbox::get(
        "a_silent_node_costs_at_most_the_connect_timeout_and_does_not_slow_the_others",
    ) else {
        return;
    };
    let victim = sb.endpoint(sb.nodes.len() - 1);
    let _guard = LinkGuard(&sb, victim.node.clone());
    sb.ctl("link-down", &victim.node);
    rt().block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..sb.nodes.len() {
            let ep = sb.endpoint(i);
            tasks.push(tokio::spawn(async move {
                let rt = transport::connect_docker(&ep).unwrap();
                // A container listing, not `/info`: when the silent node was the swarm's leader
                // (the fleet network), the other managers' engines hold `/info` for up to their
                // own 20 s swarm request timeout until a new leader is elected — the engine's
                // wait, not the transport's, which is what this test measures.
                let r = rt.list_containers(&ListFilter::default()).await;
                (ep.node.clone(), r.map(|_| ()), started.elapsed())
            }));
        }
        for t in tasks {
            let (node, r, took) = t.await.unwrap();
            if node == victim.node {
                let err = r.expect_err("a node without link must fail");
                assert!(
                    matches!(err.kind, ErrorKind::Timeout | ErrorKind::Unreachable),
                    "{err}"
                );
                assert!(
                    took <= transport::CONNECT_TIMEOUT + Duration::from_secs(2),
                    "{node} took {took:?}: {err}"
                );
            } else {
                r.unwrap_or_else(|e| panic!("{node} should stay ready: {e}"));
                assert!(took < Duration::from_secs(3), "{node} took {took:?}");
            }
        }
    });
}

#[test]
fn container_lifecycle_on_a_real_engine() {
    let Some(sb) = Sandbox::get("container_lifecycle_on_a_real_engine") else {
        return;
    };
    let ep = sb.endpoint(0);
    let name = format!("e2e-transport-{}", std::process::id());
    rt().block_on(async {
        let rt: Arc<dyn NodeRuntime> = transport::connect(&ep).unwrap();
        assert!(rt.image_present(IMAGE).await.unwrap(), "{IMAGE} preloaded");
        assert!(!rt.image_present("fleet-test/absent:0").await.unwrap());
        let _ = rt.remove_container(&name).await;

        let filter = ListFilter {
            labels: vec!["fleet.fleet=e2e-transport".into()],
        };
        let mut events = rt.events(&filter).await.unwrap();

        let spec = test_spec(&name);
        let id = rt.create_container(&spec).await.unwrap();
        let dup = rt.create_container(&spec).await.unwrap_err();
        assert_eq!(dup.kind, ErrorKind::Conflict, "{dup}");
        rt.start_container(&id).await.unwrap();
        rt.start_container(&id).await.unwrap(); // already running: success

        let d = rt.inspect_container(&id).await.unwrap();
        assert_eq!(d.record.name, name);
        assert_eq!(d.record.image, IMAGE);
        assert_eq!(d.record.state, RunState::Running);
        assert_eq!(d.spec.resources, spec.resources);
        assert_eq!(d.record.label("fleet.fleet"), Some("e2e-transport"));

        // Health shows in the listing (from the status text on API < 1.52).
        let deadline = Instant::now() + WAIT;
        loop {
            let list = rt.list_containers(&filter).await.unwrap();
            let me = list.iter().find(|c| c.id == id).expect("listed by label");
            if me.health == Some(fleetctl::container::Health::Healthy) {
                break;
            }
            assert!(Instant::now() < deadline, "never healthy: {me:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // In place: raise memory past the engine's default swap limit (2 × 32 MiB), then lower.
        for memory in [256u64 << 20, 24 << 20] {
            let update = ContainerUpdate {
                resources: Resources {
                    memory,
                    memory_reservation: Some(8 << 20),
                    nano_cpus: Some(500_000_000),
                    cpu_shares: Some(512),
                    cpuset: Some("0".into()),
                },
                restart: RestartPolicy::UnlessStopped,
            };
            rt.update_container(&id, &update)
                .await
                .unwrap_or_else(|e| panic!("update to {memory}: {e}"));
            let d = rt.inspect_container(&id).await.unwrap();
            assert_eq!(d.spec.resources, update.resources);
            assert_eq!(d.spec.restart, RestartPolicy::UnlessStopped);
            assert_eq!(d.record.state, RunState::Running, "update must not restart");
        }

        let used = rt.container_memory_usage(&id).await.unwrap();
        assert!(used > 0 && used < 24 << 20, "working set {used}");

        rt.stop_container(&id, Duration::from_secs(2))
            .await
            .unwrap();
        rt.remove_container(&id).await.unwrap();
        let gone = rt.remove_container(&id).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");
        let gone = rt.inspect_container(&id).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound);

        // Events: start, health_status, die, destroy for our container, in order.
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !seen.iter().any(|a: &String| a == "destroy") {
            let left = deadline.saturating_duration_since(Instant::now());
            let ev = tokio::time::timeout(left, events.next())
                .await
                .expect("events within the deadline")
                .expect("stream open")
                .unwrap();
            assert_eq!(ev.container_id, id);
            assert_eq!(
                ev.labels.get("fleet.fleet").map(String::as_str),
                Some("e2e-transport")
            );
            seen.push(ev.action);
        }
        assert_eq!(seen.first().map(String::as_str), Some("start"), "{seen:?}");
        assert!(
            seen.iter().any(|a| a == "health_status: healthy"),
            "{seen:?}"
        );
        assert!(seen.iter().any(|a| a == "die"), "{seen:?}");
    });
}

/// A one-node manifest for `ep`, with `known_hosts` as its known_hosts file.
fn node_manifest(ep: &Endpoint, known_hosts: &Path) -> String {
    let ssh = ep.ssh.as_ref().unwrap();
    let identity = ssh
        .identity_file
        .as_ref()
        .map(|p| format!("    identityFile: {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!(
        "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: {}}}\nspec:\n  ssh:\n    host: {:?}\n    \
         port: {}\n    user: {:?}\n{identity}    knownHostsFile: {:?}\n  docker: {{socket: {:?}}}\n",
        ep.node,
        ssh.host,
        ssh.port,
        ssh.user,
        known_hosts.display().to_string(),
        ep.docker_socket
    )
}

#[test]
fn trust_records_the_key_and_then_get_nodes_shows_the_node_ready() {
    let Some(sb) = Sandbox::get("trust_records_the_key_and_then_get_nodes_shows_the_node_ready")
    else {
        return;
    };
    let ep = sb.endpoint(0);
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("ssh/known_hosts");
    let manifest = dir.path().join("nodes.yaml");
    std::fs::write(&manifest, node_manifest(&ep, &kh)).unwrap();
    let fleetctl = || assert_cmd::Command::cargo_bin("fleetctl").unwrap();

    // Unknown key: NotReady, with the fingerprint and the fix.
    let out = fleetctl()
        .args(["get", "nodes", "-o", "json"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["status"], "NotReady", "{json}");
    let cause = json[0]["cause"].as_str().unwrap();
    assert!(
        cause.contains("SHA256:") && cause.contains("fleetctl trust"),
        "{cause}"
    );

    // No terminal and no --yes: nothing written.
    let out = fleetctl()
        .args(["trust", &ep.node, "-f"])
        .arg(&manifest)
        .write_stdin("y\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!kh.exists(), "nothing may be written without confirmation");

    let out = fleetctl()
        .args(["trust", &ep.node, "--yes", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SHA256:"), "{stdout}");
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");

    let out = fleetctl()
        .args(["get", "nodes", "-o", "json"])
        .arg(&manifest)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["status"], "Ready", "{json}");
    assert!(json[0]["api_version"].as_str().unwrap().starts_with("1."));
}

/// A one-node manifest for `ep` without `identityFile`, trusting via `known_hosts`.
fn manifest_without_identity(ep: &Endpoint, known_hosts: &Path) -> String {
    let mut ep = ep.clone();
    ep.ssh.as_mut().unwrap().identity_file = None;
    node_manifest(&ep, known_hosts)
}

/// Kills the ssh-agent this test started (by its pid) when dropped.
struct AgentGuard(std::process::Child);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_identity_file_the_agent_then_the_default_key_are_used() {
    let Some(sb) = Sandbox::get("without_identity_file_the_agent_then_the_default_key_are_used")
    else {
        return;
    };
    let ep = sb.endpoint(0);
    let ssh = ep.ssh.clone().unwrap();
    let key = ssh
        .identity_file
        .clone()
        .expect("sandbox nodes name their key");
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("nodes.yaml");
    std::fs::write(
        &manifest,
        manifest_without_identity(&ep, &ssh.known_hosts_file),
    )
    .unwrap();
    let status = |home: &Path, agent: Option<&Path>| {
        let mut cmd = assert_cmd::Command::cargo_bin("fleetctl").unwrap();
        cmd.env("HOME", home).env_remove("SSH_AUTH_SOCK");
        if let Some(a) = agent {
            cmd.env("SSH_AUTH_SOCK", a);
        }
        let out = cmd
            .args(["get", "nodes", "-o", "json"])
            .arg(&manifest)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json[0].clone()
    };

    // No agent, no ~/.ssh/id_ed25519: an auth error that says what was missing.
    let empty_home = dir.path().join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    let s = status(&empty_home, None);
    assert_eq!(s["status"], "NotReady", "{s}");
    assert!(s["cause"].as_str().unwrap().contains("no SSH key"), "{s}");

    // ~/.ssh/id_ed25519.
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(&key, home.join(".ssh/id_ed25519")).unwrap();
    assert_eq!(status(&home, None)["status"], "Ready");

    // ssh-agent holding the key (and no default key file).
    let sock = dir.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let _agent = AgentGuard(agent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(status(&empty_home, Some(&sock))["status"], "Ready");
}

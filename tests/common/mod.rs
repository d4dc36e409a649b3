//! Shared harness of the end-to-end tests: the local sandbox fleet (`scripts/sandbox up`:
//! network namespaces fleet-node1..N, each with its own dockerd and sshd at 10.213.K.2:22, Node
//! manifests in `fleet/sandbox/nodes.yaml`; two image registries described by
//! `.sandbox/registry.env`), the real `fleetctl` binary, and the docker CLI pointed at each
//! node's engine.
//!
//! - Outside CI a missing sandbox prints a loud `SKIPPED: reason` line and the test passes;
//!   under `CI=true` it is a failure. `FLEET_SANDBOX_NODES` / `FLEET_SANDBOX_SCRIPT` point at
//!   another checkout's sandbox (`FLEET_SANDBOX_REGISTRY_ENV` at its `registry.env`; by default
//!   the one in the `.sandbox/` beside the script's checkout). A test that needs the registries
//!   asks [`Sandbox::registry`], which skips or fails the same way when they are missing.
//! - Every e2e test holds an exclusive lock on `/run/fleet-sandbox-tests.lock` for its whole run:
//!   tests of different binaries, checkouts or processes never share the nodes at once.
//! - Each test starts from an empty sandbox: after taking the lock, every container that
//!   fleetctl manages (any fleet, e.g. a demo's) is removed; other containers stay. Each test uses
//!   its own fleet name, and its containers are removed when it ends, even on panic.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The images every sandbox engine holds (loaded, not pulled: no node has a registry image).
pub const IMAGE: &str = "fleet-test/busybox:1";
/// A second tag, for "image changed → recreate".
pub const IMAGE2: &str = "fleet-test/busybox:2";
/// The lock that serialises e2e tests on the one sandbox of this machine.
pub const LOCK: &str = "/run/fleet-sandbox-tests.lock";

/// Root of this checkout.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The sandbox, held exclusively while this value lives.
pub struct Sandbox {
    /// Node manifests of the sandbox.
    pub nodes_yaml: PathBuf,
    /// The control script.
    pub script: PathBuf,
    /// The nodes of a test's fleet unless it asks for others: the sandbox's Docker nodes.
    pub nodes: Vec<String>,
    /// Every node's engine as the sandbox labels it (`docker-20.10`, `docker-26.1`, `podman`).
    pub engines: BTreeMap<String, String>,
    /// Each node's document of `nodes.yaml`.
    node_docs: BTreeMap<String, String>,
    /// The sandbox's registries (`.sandbox/registry.env`), when that file exists.
    pub registry: Option<Registry>,
    /// Where `registry` is read from.
    pub registry_env: PathBuf,
    _lock: File,
}

/// The sandbox's two registries (`scripts/sandbox up`: Debian's docker-registry, TLS with a
/// sandbox CA that every node's engine trusts). Each holds `fleet-test/...` images pushed at `up`
/// and held by no node: `open` has `fleet-test/busybox:1` and `:2`, `auth` has
/// `fleet-test/private:1` (busybox:1's content).
#[derive(Debug, Clone)]
pub struct Registry {
    /// `host:port` of the registry with htpasswd auth (`REGISTRY_AUTH`).
    pub auth: String,
    /// `host:port` of the registry without auth (`REGISTRY_OPEN`).
    pub open: String,
    /// The htpasswd user of `auth` (`REGISTRY_USER`).
    pub user: String,
    /// The file holding the user's password, no newline (`REGISTRY_PASSWORD_FILE`).
    pub password_file: PathBuf,
    /// The sandbox CA certificate (`REGISTRY_CA`).
    pub ca: PathBuf,
}

impl Registry {
    /// Reads `registry.env` (`KEY=VALUE` lines, values plain or single-quoted).
    pub fn read(path: &Path) -> std::io::Result<Registry> {
        let text = std::fs::read_to_string(path)?;
        let mut vars = std::collections::HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(q) => q.replace("'\\''", "'"),
                None => v.to_string(),
            };
            vars.insert(k.to_string(), v);
        }
        let get = |k: &str| {
            vars.get(k).cloned().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: no {k}", path.display()),
                )
            })
        };
        Ok(Registry {
            auth: get("REGISTRY_AUTH")?,
            open: get("REGISTRY_OPEN")?,
            user: get("REGISTRY_USER")?,
            password_file: get("REGISTRY_PASSWORD_FILE")?.into(),
            ca: get("REGISTRY_CA")?.into(),
        })
    }

    /// The password of `user` (keep it out of every output).
    pub fn password(&self) -> String {
        std::fs::read_to_string(&self.password_file)
            .unwrap_or_else(|e| panic!("{}: {e}", self.password_file.display()))
            .trim_end()
            .to_string()
    }
}

impl Sandbox {
    /// Takes the sandbox, or returns `None` after printing `SKIPPED` (never under `CI=true`).
    pub fn get(test: &str) -> Option<Sandbox> {
        let nodes_yaml = std::env::var_os("FLEET_SANDBOX_NODES")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("fleet/sandbox/nodes.yaml"));
        let script = std::env::var_os("FLEET_SANDBOX_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("scripts/sandbox"));
        if !nodes_yaml.exists() {
            let reason = format!(
                "{} not found: run `scripts/sandbox up` first",
                nodes_yaml.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: sandbox missing under CI=true: {reason}");
            }
            eprintln!("SKIPPED: {test}: {reason}");
            return None;
        }
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .unwrap_or_else(|e| panic!("cannot open {LOCK}: {e}"));
        lock.lock()
            .unwrap_or_else(|e| panic!("cannot lock {LOCK}: {e}"));
        let loaded = fleetctl::manifest::load(&nodes_yaml)
            .unwrap_or_else(|e| panic!("sandbox manifests invalid:\n{e}"));
        let engines: BTreeMap<String, String> = loaded
            .fleet
            .nodes
            .iter()
            .map(|(name, n)| {
                let engine = n
                    .labels
                    .get("engine")
                    .cloned()
                    .unwrap_or_else(|| "docker".into());
                (name.clone(), engine)
            })
            .collect();
        let nodes = engines
            .iter()
            .filter(|(_, e)| e.as_str() != "podman")
            .map(|(n, _)| n.clone())
            .collect();
        let text = std::fs::read_to_string(&nodes_yaml).unwrap();
        let node_docs = text
            .split("\n---\n")
            .filter_map(|doc| {
                let name = doc
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("name: "))?
                    .trim()
                    .to_string();
                Some((name, doc.trim_end().to_string()))
            })
            .collect();
        let registry_env = std::env::var_os("FLEET_SANDBOX_REGISTRY_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let checkout = script
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or_else(|| Path::new("."));
                checkout.join(".sandbox/registry.env")
            });
        let registry = match Registry::read(&registry_env) {
            Ok(r) => Some(r),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("{}: {e}", registry_env.display()),
        };
        let sb = Sandbox {
            nodes_yaml,
            script,
            nodes,
            engines,
            node_docs,
            registry,
            registry_env,
            _lock: lock,
        };
        sb.clear_managed();
        Some(sb)
    }

    /// The registries, or `None` after printing `SKIPPED` when `registry.env` is missing (never
    /// under `CI=true`: there it is a failure).
    pub fn registry(&self, test: &str) -> Option<&Registry> {
        if self.registry.is_none() {
            let reason = format!(
                "{} not found: run `scripts/sandbox up` (this checkout's) first",
                self.registry_env.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: sandbox registries missing under CI=true: {reason}");
            }
            eprintln!("SKIPPED: {test}: {reason}");
        }
        self.registry.as_ref()
    }

    /// Runs the control script (`stop-sshd node3`, `docker node1 ps`, ...).
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new(&self.script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.script.display()))
    }

    /// The docker CLI against `node`'s engine; panics on failure, returns stdout.
    pub fn docker(&self, node: &str, args: &[&str]) -> String {
        let mut all = vec!["docker", node];
        all.extend_from_slice(args);
        let out = self.script(&all);
        assert!(
            out.status.success(),
            "docker {node} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Ids of `fleet`'s containers on `node` (any state).
    pub fn ids(&self, node: &str, fleet: &str) -> Vec<String> {
        let out = self.docker(
            node,
            &[
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label=fleet.fleet={fleet}"),
            ],
        );
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    /// `docker inspect -f FORMAT ID` on `node`.
    pub fn inspect(&self, node: &str, id: &str, format: &str) -> String {
        self.docker(node, &["inspect", "-f", format, id])
            .trim()
            .to_string()
    }

    /// Container events of `fleet` on `node` between two engine timestamps (unix seconds, with
    /// fractions), as `action name` lines: the engine's own record of every mutating call.
    pub fn events(&self, node: &str, fleet: &str, since: &str, until: &str) -> Vec<String> {
        self.timed_events(node, fleet, since, until)
            .into_iter()
            .map(|(_, action, name)| format!("{action} {name}"))
            .collect()
    }

    /// Like [`Sandbox::events`], as (time in ns, action, container name).
    pub fn timed_events(
        &self,
        node: &str,
        fleet: &str,
        since: &str,
        until: &str,
    ) -> Vec<(u128, String, String)> {
        let mut args = vec!["events", "--since", since, "--filter", "type=container"];
        let label = format!("label=fleet.fleet={fleet}");
        args.extend(["--filter", label.as_str()]);
        args.extend([
            "--format",
            "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}",
        ]);
        let podman = self.engines.get(node).is_some_and(|e| e == "podman");
        let out = if podman {
            // Podman's compatible API answers nothing when `until` is given: read the stream
            // from `since` for two seconds (it sends what it has at once) and cut at `until`.
            let mut all = vec![
                "timeout",
                "2",
                self.script.to_str().unwrap(),
                "docker",
                node,
            ];
            all.extend_from_slice(&args);
            let out = Command::new(all[0]).args(&all[1..]).output().unwrap();
            // `timeout` ends the stream: 124 is the only good exit.
            assert_eq!(
                out.status.code(),
                Some(124),
                "docker events on {node}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            args.extend(["--until", until]);
            self.docker(node, &args)
        };
        let until_ns = parse_engine_time(until);
        out.lines()
            .filter_map(|l| {
                let mut p = l.splitn(3, ' ');
                Some((
                    p.next()?.parse().ok()?,
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                ))
            })
            .filter(|(t, _, _)| until_ns.is_none_or(|u| *t <= u))
            .collect()
    }

    /// The engine's clock on `node` (unix seconds with nanoseconds), for event windows.
    pub fn engine_now(&self, node: &str) -> String {
        // The sandbox engines share this machine's clock.
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let _ = node;
        format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
    }

    /// Removes every container fleetctl manages, of any fleet, and every record fleetctl keeps
    /// on the nodes — leases (a test that killed a holder must not leave the next one
    /// waiting), node conditions and plug tombstones (a test's fresh state would learn what an
    /// earlier run left: a node still cordoned) — on every node.
    pub fn clear_managed(&self) {
        for n in self.engines.keys() {
            let mut out = self.docker(
                n,
                &["ps", "-aq", "--filter", "label=fleet.managed-by=fleetctl"],
            );
            for record in ["fleet.lease", "fleet.condition", "fleet.tombstone"] {
                out.push_str(
                    &self.docker(n, &["ps", "-aq", "--filter", &format!("label={record}")]),
                );
            }
            let ids: Vec<&str> = out.lines().collect();
            if !ids.is_empty() {
                let _ = self.script(&[&["docker", n.as_str(), "rm", "-f"][..], &ids[..]].concat());
            }
        }
        self.remove_networks("fleet.managed-by=fleetctl");
    }

    /// Removes the networks carrying `label` on every node (an overlay from any manager; a
    /// network still in use stays).
    pub fn remove_networks(&self, label: &str) {
        for n in self.engines.keys() {
            let out = self.docker(
                n,
                &["network", "ls", "-q", "--filter", &format!("label={label}")],
            );
            let ids: Vec<&str> = out.lines().collect();
            if !ids.is_empty() {
                let _ =
                    self.script(&[&["docker", n.as_str(), "network", "rm"][..], &ids[..]].concat());
            }
        }
    }

    /// Removes every container and network of `fleet` on every node.
    pub fn clean(&self, fleet: &str) {
        for n in self.engines.keys() {
            let ids = self.ids(n, fleet);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.script(&[&["docker", n.as_str()][..], &args[..]].concat());
            }
        }
        self.remove_networks(&format!("fleet.fleet={fleet}"));
    }
}

impl Sandbox {
    /// The `nodes.yaml` documents of `nodes`.
    pub fn nodes_text(&self, nodes: &[&str]) -> String {
        nodes
            .iter()
            .map(|n| {
                self.node_docs
                    .get(*n)
                    .unwrap_or_else(|| panic!("the sandbox has no {n}"))
                    .clone()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
            + "\n"
    }

    /// The first node running `engine` (`docker-20.10`, `docker-26.1`, `podman`), or `None`
    /// after printing `SKIPPED` (under `CI=true` a missing engine is a failure:
    /// `scripts/sandbox up 4` gives the mix).
    pub fn node_with(&self, test: &str, engine: &str) -> Option<String> {
        let found = self
            .engines
            .iter()
            .find(|(_, e)| e.as_str() == engine)
            .map(|(n, _)| n.clone());
        if found.is_none() {
            let reason = format!(
                "no sandbox node runs {engine} (engines: {:?}); run `scripts/sandbox up 4`",
                self.engines
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: {reason}");
            }
            eprintln!("SKIPPED: {test}: {reason}");
        }
        found
    }
}

/// A fleet directory for one test: the sandbox's node manifests plus the test's own documents,
/// a state file, and cleanup of the fleet's containers when dropped.
pub struct Fleet<'a> {
    /// The sandbox.
    pub sb: &'a Sandbox,
    /// Fleet name (unique per test).
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<String>,
    /// Temp dir holding `nodes.yaml`, `fleet.yaml` and `state.db`.
    pub dir: tempfile::TempDir,
}

impl<'a> Fleet<'a> {
    /// A fleet named `name` with `docs` (YAML documents without the Fleet and Node ones).
    pub fn new(sb: &'a Sandbox, name: &str, docs: &str) -> Fleet<'a> {
        let nodes: Vec<&str> = sb.nodes.iter().map(String::as_str).collect();
        Fleet::on(sb, name, docs, &nodes)
    }

    /// A fleet named `name` of the sandbox's `nodes` (any engines) with `docs`.
    pub fn on(sb: &'a Sandbox, name: &str, docs: &str, nodes: &[&str]) -> Fleet<'a> {
        sb.clean(name);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.yaml"), sb.nodes_text(nodes)).unwrap();
        let f = Fleet {
            sb,
            name: name.to_string(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            dir,
        };
        f.write(docs);
        f
    }

    /// Replaces the test's documents.
    pub fn write(&self, docs: &str) {
        self.write_with(docs, "");
    }

    /// Replaces the test's documents, with `fleet_spec` (e.g. `registries: […]`) added to the
    /// Fleet document's spec.
    pub fn write_with(&self, docs: &str, fleet_spec: &str) {
        let extra = if fleet_spec.is_empty() {
            String::new()
        } else {
            format!(", {fleet_spec}")
        };
        let text = format!(
            "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {{name: {}}}\nspec: {{nodeLostAfter: 5s, resync: 5s{extra}}}\n---\n{docs}",
            self.name
        );
        std::fs::write(self.dir.path().join("fleet.yaml"), text).unwrap();
    }

    /// The manifest directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// A `fleetctl` command with this fleet's state (and, should a test remove
    /// `FLEETCTL_STATE`, a default state directory inside the fleet's temp dir, never the real
    /// home's).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetctl"));
        c.env("FLEETCTL_STATE", self.state())
            .env("XDG_STATE_HOME", self.dir.path().join("xdg-state"))
            .args(args);
        c
    }

    /// Runs `fleetctl ARGS` and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(args).output().expect("fleetctl runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `fleetctl apply DIR`, asserting exit 0.
    pub fn apply(&self) -> String {
        let (code, out, err) = self.run(&["apply", self.path().to_str().unwrap()]);
        assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
        out
    }

    /// This fleet's container ids on every node.
    pub fn all_ids(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                self.sb
                    .ids(n, &self.name)
                    .into_iter()
                    .map(move |id| (n.clone(), id))
            })
            .collect()
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        self.sb.clean(&self.name);
    }
}

/// `1712345678.123456789` (unix seconds with an optional fraction) in nanoseconds.
pub fn parse_engine_time(t: &str) -> Option<u128> {
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs: u128 = secs.parse().ok()?;
    let frac = format!("{frac:0<9}");
    let nanos: u128 = frac.get(..9)?.parse().ok()?;
    Some(secs * 1_000_000_000 + nanos)
}

/// Polls `f` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `dir` (recursively) that contains `needle` (the tests that grep for
/// secrets).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if std::fs::read(&p)
            .map(|b| String::from_utf8_lossy(&b).contains(needle))
            .unwrap_or(false)
        {
            hits.push(p.display().to_string());
        }
    }
    hits
}

/// A `fleetctl run` child process; SIGTERM (then SIGKILL) when dropped.
pub struct Run {
    /// The process, until stopped.
    pub child: Option<std::process::Child>,
    /// Its stderr (the log).
    pub log: PathBuf,
    /// The API port on loopback.
    pub port: u16,
    /// The API token file.
    pub token_file: PathBuf,
}

/// Sends `sig` (`-TERM`, `-HUP`, ...) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

impl Run {
    pub fn start(f: &Fleet, port: u16) -> Run {
        let n = std::fs::read_dir(f.path()).unwrap().count();
        let log = f.path().join(format!("run-{n}.log"));
        let child = f
            .cmd(&["run", f.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fleetctl run starts");
        let mut r = Run {
            child: Some(child),
            log,
            port,
            token_file: f.path().join(format!("{}.api-token", f.name)),
        };
        wait_for(Duration::from_secs(20), "the controller's /healthz", || {
            if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("fleetctl run exited with {status}:\n{}", r.log_text());
            }
            (r.get("/healthz", false).0 == 200).then_some(())
        });
        r
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn request(&self, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().unwrap(),
            Duration::from_secs(2),
        ) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if auth {
            req.push_str(&format!("Authorization: Bearer {}\r\n", self.token()));
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        (status, body)
    }

    pub fn get(&self, path: &str, auth: bool) -> (u16, String) {
        self.request("GET", path, auth, "")
    }

    /// SIGTERM; returns (exit code, time to exit).
    pub fn stop(&mut self) -> (i32, Duration) {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        signal(child.id(), "-TERM");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("fleetctl run did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::env::var_os("E2E_SHOW_LOG").is_some() {
            eprintln!("----- {} -----\n{}", self.log.display(), self.log_text());
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(12);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

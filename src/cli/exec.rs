//! `fleetctl exec SERVICE|plug/ID [--replica N] [-i] [-t] -- CMD…` (SPEC §13): runs a command
//! in a running container of a service (or in a plug) through the engine's exec API, and exits
//! with the command's exit code.
//!
//! The container is found by the fleet's labels on every node: `--replica N` picks that
//! replica, else the lowest-numbered replica that runs. `-i` forwards our stdin; `-t` allocates
//! a TTY (its size passed at start and on every window change) and, with `-i` on a terminal,
//! puts that terminal in raw mode until the command ends.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::bail;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::GlobalOpts;
use super::common::{connect_all, resolve_manifests};
use crate::container::{ContainerRecord, RunState, labels};
use crate::execute::Runtimes;
use crate::transport::{ExecOptions, ExecOutput};

pub use crate::logs::Target;

/// The container an exec goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// Node it runs on.
    pub node: String,
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
}

fn replica_of(r: &ContainerRecord) -> Option<u32> {
    r.label(labels::REPLICA).and_then(|v| v.parse().ok())
}

fn state_word(s: RunState) -> String {
    format!("{s:?}").to_lowercase()
}

/// Refuses a service the manifests do not have, naming the ones they do.
///
/// # Errors
/// `unknown service api (known: db, web)`.
pub fn known_service(name: &str, services: &BTreeSet<String>) -> anyhow::Result<()> {
    if services.contains(name) {
        return Ok(());
    }
    let known: Vec<&str> = services.iter().map(String::as_str).collect();
    bail!(
        "unknown service {name} (known: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )
}

/// Picks the container for `target` among `found` (node, record) of the fleet's containers.
/// `services`: the services of the manifests (an unknown one is refused by name);
/// `unreachable`: nodes that could not be listed (named in the error when nothing is found).
///
/// # Errors
/// Unknown service or plug (naming the known ones), no running replica, the asked replica not
/// running, a stopped plug, `--replica` with a plug.
pub fn select(
    target: &Target,
    replica: Option<u32>,
    services: &BTreeSet<String>,
    found: &[(String, ContainerRecord)],
    unreachable: &[String],
) -> anyhow::Result<Chosen> {
    let unreachable_note = if unreachable.is_empty() {
        String::new()
    } else {
        format!("; not reachable: {}", unreachable.join(", "))
    };
    let pick = |c: &(String, ContainerRecord)| Chosen {
        node: c.0.clone(),
        id: c.1.id.clone(),
        name: c.1.name.clone(),
    };
    match target {
        Target::Service(name) => {
            known_service(name, services)?;
            let mut mine: Vec<&(String, ContainerRecord)> = found
                .iter()
                .filter(|(_, r)| r.label(labels::SERVICE) == Some(name.as_str()))
                .collect();
            // Lowest replica first; of two copies of one replica (mid-update), the newest.
            mine.sort_by(|a, b| {
                replica_of(&a.1)
                    .cmp(&replica_of(&b.1))
                    .then(b.1.created.cmp(&a.1.created))
            });
            if let Some(n) = replica {
                let of_n: Vec<_> = mine
                    .iter()
                    .filter(|c| replica_of(&c.1) == Some(n))
                    .collect();
                if let Some(c) = of_n.iter().find(|c| c.1.state == RunState::Running) {
                    return Ok(pick(c));
                }
                if let Some(c) = of_n.first() {
                    bail!(
                        "service {name} replica {n} is {} on {}: exec needs a running container",
                        state_word(c.1.state),
                        c.0
                    );
                }
                let have: BTreeSet<u32> = mine.iter().filter_map(|c| replica_of(&c.1)).collect();
                let have: Vec<String> = have.iter().map(u32::to_string).collect();
                bail!(
                    "service {name} has no replica {n} (replicas: {}){unreachable_note}",
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                );
            }
            if let Some(c) = mine.iter().find(|c| c.1.state == RunState::Running) {
                return Ok(pick(c));
            }
            let seen: Vec<String> = mine
                .iter()
                .map(|c| format!("{} {} on {}", c.1.name, state_word(c.1.state), c.0))
                .collect();
            bail!(
                "service {name} has no running replica ({}{unreachable_note})",
                if seen.is_empty() {
                    "no containers: apply the manifests first".to_string()
                } else {
                    seen.join(", ")
                }
            )
        }
        Target::Plug(id) => {
            if replica.is_some() {
                bail!("--replica applies to services only; plug/{id} has one container");
            }
            let mut mine: Vec<&(String, ContainerRecord)> = found
                .iter()
                .filter(|(_, r)| r.label(labels::PLUG) == Some(id.as_str()))
                .collect();
            mine.sort_by_key(|c| std::cmp::Reverse(c.1.created));
            if let Some(c) = mine.iter().find(|c| c.1.state == RunState::Running) {
                return Ok(pick(c));
            }
            if let Some(c) = mine.first() {
                bail!(
                    "plug {id} is stopped on {}: exec needs a running container",
                    c.0
                );
            }
            let known: BTreeSet<&str> = found
                .iter()
                .filter_map(|(_, r)| r.label(labels::PLUG))
                .collect();
            let known: Vec<&str> = known.into_iter().collect();
            bail!(
                "unknown plug {id} (known: {}){unreachable_note}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

/// The fleet's containers on every node, and the nodes that could not be listed (with why).
async fn list_fleet(
    runtimes: &Runtimes,
    fleet: &str,
) -> (Vec<(String, ContainerRecord)>, Vec<String>) {
    let (found, unreachable) = crate::logs::list_fleet(runtimes, fleet).await;
    let unreachable = unreachable
        .into_iter()
        .map(|(node, e)| format!("{node} ({e})"))
        .collect();
    (found, unreachable)
}

/// Where an exec's bytes go and come from.
pub struct ExecIo {
    /// Our stdout (the command's stdout; everything under a TTY).
    pub stdout: Box<dyn AsyncWrite + Unpin + Send>,
    /// Our stderr.
    pub stderr: Box<dyn AsyncWrite + Unpin + Send>,
    /// Our stdin, forwarded when `-i`.
    pub stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    /// The window size (columns, rows) now, when we have a terminal.
    pub window: fn() -> Option<(u16, u16)>,
    /// Follow window changes (SIGWINCH).
    pub watch_window: bool,
}

/// Runs `cmd` in `target`'s container; returns the command's exit code.
///
/// # Errors
/// As [`select`]; the engine refused the exec; the output stream broke.
#[allow(clippy::too_many_arguments)]
pub async fn exec_in(
    runtimes: &Runtimes,
    fleet: &str,
    services: &BTreeSet<String>,
    target: &Target,
    replica: Option<u32>,
    cmd: &[String],
    tty: bool,
    mut io: ExecIo,
) -> anyhow::Result<i64> {
    if cmd.is_empty() {
        bail!("exec needs a command after `--`, e.g. fleetctl exec web -- sh");
    }
    if let Target::Service(name) = target {
        // An unknown service is refused before any node is reached.
        known_service(name, services)?;
    }
    let (found, unreachable) = list_fleet(runtimes, fleet).await;
    let chosen = select(target, replica, services, &found, &unreachable)?;
    let rt = runtimes
        .get(&chosen.node)
        .ok_or_else(|| anyhow::anyhow!("node {} is not in the manifests", chosen.node))?;
    tracing::debug!(node = %chosen.node, container = %chosen.name, "exec");
    let size = if tty { (io.window)() } else { None };
    let opts = ExecOptions {
        tty,
        stdin: io.stdin.is_some(),
        size,
    };
    let session = rt.exec(&chosen.id, cmd, opts).await?;
    if let Some((w, h)) = size {
        // Older engines take the size only once the command runs; a command already gone
        // cannot be resized, which is fine.
        let _ = rt.exec_resize(&session.id, w, h).await;
    }
    let exec_id = session.id.clone();
    let mut input = session.input;
    let stdin_task = io.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdin, &mut input).await;
            let _ = input.shutdown().await;
        })
    });
    #[cfg(unix)]
    let mut winch = if tty && io.watch_window {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut output = session.output;
    let result: anyhow::Result<()> = async {
        loop {
            #[cfg(unix)]
            let changed = async {
                match winch.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let changed = std::future::pending::<Option<()>>();
            tokio::select! {
                item = output.next() => match item {
                    None => return Ok(()),
                    Some(Ok(ExecOutput::Stdout(b))) => {
                        io.stdout.write_all(&b).await?;
                        io.stdout.flush().await?;
                    }
                    Some(Ok(ExecOutput::Stderr(b))) => {
                        io.stderr.write_all(&b).await?;
                        io.stderr.flush().await?;
                    }
                    Some(Err(e)) => return Err(e.into()),
                },
                Some(()) = changed => {
                    if let Some((w, h)) = (io.window)() {
                        let _ = rt.exec_resize(&exec_id, w, h).await;
                    }
                }
            }
        }
    }
    .await;
    if let Some(t) = stdin_task {
        t.abort();
    }
    result?;
    // The engine records the exit code as the process is reaped, a moment after the output ends.
    for _ in 0..100 {
        if let Some(code) = rt.exec_exit_code(&exec_id).await? {
            return Ok(code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    bail!(
        "the command's output ended but the engine on {} still reports it running",
        chosen.node
    )
}

/// The terminal's size (columns, rows), from stdout, else stdin.
#[cfg(unix)]
fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives for the call.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if rc == 0 && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}

#[cfg(not(unix))]
fn window_size() -> Option<(u16, u16)> {
    None
}

/// Our terminal in raw mode until dropped (then as it was, on every way out).
#[cfg(unix)]
struct RawMode {
    saved: libc::termios,
}

#[cfg(unix)]
impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        // SAFETY: tcgetattr fills `saved`; cfmakeraw and tcsetattr read a valid termios.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                bail!(
                    "cannot read the terminal's settings: {}",
                    std::io::Error::last_os_error()
                );
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                bail!(
                    "cannot put the terminal in raw mode: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(RawMode { saved })
        }
    }
}

#[cfg(unix)]
impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// The docker-like exit status of an exit code: 0–255 as is, anything else 1.
pub fn exit_status(code: i64) -> u8 {
    u8::try_from(code).unwrap_or(1)
}

/// `fleetctl exec`.
///
/// # Errors
/// Invalid manifests; as [`exec_in`].
#[allow(clippy::too_many_arguments)]
pub fn run(
    target: &str,
    replica: Option<u32>,
    interactive: bool,
    tty: bool,
    file: Option<&Path>,
    cmd: &[String],
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    use std::io::IsTerminal;
    let loaded = resolve_manifests(file, global)?;
    let fleet = &loaded.fleet;
    let services: BTreeSet<String> = fleet.services.keys().cloned().collect();
    let runtimes: Runtimes = connect_all(fleet);
    let target = Target::parse(target);
    let stdin_tty = std::io::stdin().is_terminal();
    let rt = super::common::runtime()?;
    #[cfg(unix)]
    let _raw = if tty && interactive && stdin_tty {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let io = ExecIo {
        stdout: Box::new(tokio::io::stdout()),
        stderr: Box::new(tokio::io::stderr()),
        stdin: interactive
            .then(|| Box::new(tokio::io::stdin()) as Box<dyn AsyncRead + Unpin + Send>),
        window: window_size,
        watch_window: stdin_tty || std::io::stdout().is_terminal(),
    };
    let result = rt.block_on(exec_in(
        &runtimes,
        &fleet.fleet.name,
        &services,
        &target,
        replica,
        cmd,
        tty,
        io,
    ));
    // A read of our stdin may still be blocked in a thread: do not wait for it.
    rt.shutdown_background();
    Ok(exit_status(result?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::{FakeExec, FakeRuntime};
    use crate::transport::{Bytes, NodeRuntime};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn rec(id: &str, labels_: &[(&str, &str)], state: RunState, created: i64) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: id.to_string(),
            image: "img".into(),
            labels: labels_
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state,
            health: None,
            created,
            host_ports: vec![],
            networks: vec![],
        }
    }

    fn svc(id: &str, service: &str, replica: u32, state: RunState) -> ContainerRecord {
        let r = replica.to_string();
        rec(
            id,
            &[(labels::SERVICE, service), (labels::REPLICA, &r)],
            state,
            0,
        )
    }

    fn services() -> BTreeSet<String> {
        ["web".to_string(), "db".to_string()].into()
    }

    #[test]
    fn target_parses_plugs_and_services() {
        assert_eq!(Target::parse("web"), Target::Service("web".into()));
        assert_eq!(Target::parse("plug/p1"), Target::Plug("p1".into()));
    }

    #[test]
    fn default_is_lowest_running_replica() {
        let found = vec![
            ("b".to_string(), svc("w2", "web", 2, RunState::Running)),
            ("a".to_string(), svc("w0", "web", 0, RunState::Exited)),
            ("a".to_string(), svc("w1", "web", 1, RunState::Running)),
            ("a".to_string(), svc("d0", "db", 0, RunState::Running)),
        ];
        let c = select(&Target::parse("web"), None, &services(), &found, &[]).unwrap();
        assert_eq!((c.node.as_str(), c.id.as_str()), ("a", "w1"));
        let c = select(&Target::parse("web"), Some(2), &services(), &found, &[]).unwrap();
        assert_eq!((c.node.as_str(), c.id.as_str()), ("b", "w2"));
        let e = select(&Target::parse("web"), Some(0), &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "service web replica 0 is exited on a: exec needs a running container"
        );
        let e = select(&Target::parse("web"), Some(7), &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "service web has no replica 7 (replicas: 0, 1, 2)");
    }

    #[test]
    fn newest_copy_of_a_replica_wins() {
        let mut old = svc("old", "web", 0, RunState::Running);
        old.created = 1;
        let mut new = svc("new", "web", 0, RunState::Running);
        new.created = 2;
        let found = vec![("a".to_string(), old), ("b".to_string(), new)];
        let c = select(&Target::parse("web"), None, &services(), &found, &[]).unwrap();
        assert_eq!(c.id, "new");
    }

    #[test]
    fn no_running_replica_and_unknown_service_are_refused() {
        let found = vec![("a".to_string(), svc("w0", "web", 0, RunState::Exited))];
        let e = select(
            &Target::parse("web"),
            None,
            &services(),
            &found,
            &["c (down)".into()],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "service web has no running replica (w0 exited on a; not reachable: c (down))"
        );
        let e = select(&Target::parse("db"), None, &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "service db has no running replica (no containers: apply the manifests first)"
        );
        let e = select(&Target::parse("api"), None, &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown service api (known: db, web)");
    }

    #[test]
    fn plugs_stopped_unknown_and_running() {
        let found = vec![
            (
                "n1".to_string(),
                rec("p1c", &[(labels::PLUG, "p1")], RunState::Exited, 0),
            ),
            (
                "n2".to_string(),
                rec("p2c", &[(labels::PLUG, "p2")], RunState::Running, 0),
            ),
        ];
        let e = select(&Target::parse("plug/p1"), None, &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "plug p1 is stopped on n1: exec needs a running container"
        );
        let c = select(&Target::parse("plug/p2"), None, &services(), &found, &[]).unwrap();
        assert_eq!((c.node.as_str(), c.id.as_str()), ("n2", "p2c"));
        let e = select(&Target::parse("plug/p9"), None, &services(), &found, &[])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown plug p9 (known: p1, p2)");
        assert!(select(&Target::parse("plug/p2"), Some(0), &services(), &found, &[]).is_err());
    }

    #[test]
    fn exit_status_is_docker_like() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(127), 127);
        assert_eq!(exit_status(-1), 1);
        assert_eq!(exit_status(300), 1);
    }

    fn fleet_labels(service: &str, replica: &str) -> BTreeMap<String, String> {
        [
            (labels::MANAGED_BY, labels::MANAGER),
            (labels::FLEET, "f"),
            (labels::SERVICE, service),
            (labels::REPLICA, replica),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);

    impl AsyncWrite for Sink {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn io(out: &Sink, err: &Sink) -> ExecIo {
        ExecIo {
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            stdin: None,
            window: || Some((120, 40)),
            watch_window: false,
        }
    }

    #[tokio::test]
    async fn exec_runs_in_the_lowest_running_replica_and_returns_its_code() {
        let a = Arc::new(FakeRuntime::new("a"));
        let b = Arc::new(FakeRuntime::new("b"));
        let stopped = a.add_foreign("f-web-0", fleet_labels("web", "0"));
        a.kill(&stopped);
        let w1 = b.add_foreign("f-web-1", fleet_labels("web", "1"));
        b.set_exec(FakeExec {
            output: vec![
                ExecOutput::Stdout(Bytes::from_static(b"host-1\n")),
                ExecOutput::Stderr(Bytes::from_static(b"warn\n")),
            ],
            exit_code: 3,
        });
        let runtimes: Runtimes = [
            ("a".to_string(), a.clone() as Arc<dyn NodeRuntime>),
            ("b".to_string(), b.clone() as Arc<dyn NodeRuntime>),
        ]
        .into();
        let (out, err) = (Sink::default(), Sink::default());
        let cmd = vec!["cat".to_string(), "/etc/hostname".to_string()];
        let code = exec_in(
            &runtimes,
            "f",
            &services(),
            &Target::parse("web"),
            None,
            &cmd,
            false,
            io(&out, &err),
        )
        .await
        .unwrap();
        assert_eq!(code, 3);
        assert_eq!(out.0.lock().unwrap().as_slice(), b"host-1\n");
        assert_eq!(err.0.lock().unwrap().as_slice(), b"warn\n");
        let execs = b.execs();
        assert_eq!(execs.len(), 1);
        assert_eq!(execs[0].0, w1);
        assert_eq!(execs[0].1, cmd);
        assert!(!execs[0].2.tty);
        assert!(a.execs().is_empty());
        assert!(a.mutating_calls().is_empty() && b.mutating_calls().is_empty());

        // Under a TTY: one stream, and the window size passed through.
        let (out, err) = (Sink::default(), Sink::default());
        exec_in(
            &runtimes,
            "f",
            &services(),
            &Target::parse("web"),
            Some(1),
            &cmd,
            true,
            io(&out, &err),
        )
        .await
        .unwrap();
        assert_eq!(out.0.lock().unwrap().as_slice(), b"host-1\nwarn\n");
        assert!(err.0.lock().unwrap().is_empty());
        let execs = b.execs();
        assert_eq!(execs[1].2.size, Some((120, 40)));
        assert!(b.resizes().iter().all(|(_, w, h)| (*w, *h) == (120, 40)));

        // Replica 0 is stopped: refused, nothing run.
        let e = exec_in(
            &runtimes,
            "f",
            &services(),
            &Target::parse("web"),
            Some(0),
            &cmd,
            false,
            io(&out, &err),
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "service web replica 0 is exited on a: exec needs a running container"
        );
        assert!(a.execs().is_empty());
    }
}

//! `fleetctl image push IMAGE [--node N]...`: an image into the nodes that lack it, without a
//! registry (SPEC §11), over the connections apply uses.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::bail;

use super::GlobalOpts;
use super::common::{connect_all, emit, quiet, resolve_manifests};
use crate::images::{Copied, CopyOutcome, CopyProgress, copy_image};
use crate::transport::{DockerRuntime, NodeRuntime};

/// The name the operator's own engine goes by in output and errors.
pub const LOCAL_ENGINE: &str = "local engine";

/// Where the operator's engine is, as the Docker CLI finds it: `DOCKER_HOST` when it is a
/// `unix://` socket, else `/var/run/docker.sock`. `Err` says why there is none to use.
pub fn local_socket(docker_host: Option<&str>) -> Result<String, String> {
    match docker_host.filter(|h| !h.is_empty()) {
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => Ok(path.to_string()),
            None => Err(format!(
                "DOCKER_HOST={host} is not a local socket (only unix:// is used)"
            )),
        },
        None => Ok("/var/run/docker.sock".to_string()),
    }
}

/// The nodes to push to: those asked (each must be a node of the fleet), else every node.
///
/// # Errors
/// A name that is no node of the fleet, saying which nodes there are.
pub fn targets<'a>(fleet_nodes: &[&'a str], asked: &'a [String]) -> Result<Vec<&'a str>, String> {
    if asked.is_empty() {
        return Ok(fleet_nodes.to_vec());
    }
    let mut out: Vec<&str> = Vec::new();
    for n in asked {
        if !fleet_nodes.contains(&n.as_str()) {
            return Err(format!(
                "no node {n} in the fleet (nodes: {})",
                fleet_nodes.join(", ")
            ));
        }
        if !out.contains(&n.as_str()) {
            out.push(n);
        }
    }
    Ok(out)
}

/// One result line per target.
pub fn outcome_line(o: &CopyOutcome, image: &str, from: &str) -> String {
    match &o.result {
        Ok(Copied::Present) => format!("{:<10} = {:<8} {image}  (had it)", o.node, "present"),
        Ok(c @ Copied::Loaded { bytes, elapsed }) => format!(
            "{:<10} ↑ {:<8} {image}  from {from}: {:.1} MB in {:.1}s ({:.1} MB/s)",
            o.node,
            "pushed",
            *bytes as f64 / 1e6,
            elapsed.as_secs_f64(),
            c.mb_per_s().unwrap_or(0.0)
        ),
        Err(e) => format!("{:<10} ✗ {:<8} {image}  FAILED: {e}", o.node, "push"),
    }
}

/// Pushes `image` from the operator's engine (when it has the image) or from a node that has
/// it into the `nodes` asked (default: every node of the fleet that lacks it). Exit 0 when
/// every target has the image, 1 otherwise.
///
/// # Errors
/// Invalid manifests, a node that is not the fleet's, an image no engine has (naming where
/// it looked), a source that cannot export it.
pub fn push(
    image: &str,
    nodes: &[String],
    file: Option<&Path>,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(file, global)?;
    let fleet = &loaded.fleet;
    let names: Vec<&str> = fleet.nodes.keys().map(String::as_str).collect();
    let targets = targets(&names, nodes).map_err(anyhow::Error::msg)?;
    let rt = super::common::runtime()?;
    let runtimes = connect_all(fleet);
    rt.block_on(async {
        let mut looked: Vec<String> = Vec::new();
        let local: Option<Arc<dyn NodeRuntime>> =
            match local_socket(std::env::var("DOCKER_HOST").ok().as_deref()) {
                Ok(socket) if Path::new(&socket).exists() => {
                    let local: Arc<dyn NodeRuntime> =
                        Arc::new(DockerRuntime::local(LOCAL_ENGINE, &socket));
                    match local.image_present(image).await {
                        Ok(true) => Some(local),
                        Ok(false) => {
                            looked.push(format!("the {LOCAL_ENGINE} (unix://{socket})"));
                            None
                        }
                        Err(e) => {
                            looked.push(format!("the {LOCAL_ENGINE} (unix://{socket}: {e})"));
                            None
                        }
                    }
                }
                Ok(socket) => {
                    looked.push(format!("the {LOCAL_ENGINE} (no socket at {socket})"));
                    None
                }
                Err(why) => {
                    looked.push(format!("the {LOCAL_ENGINE} ({why})"));
                    None
                }
            };
        let nodes: Vec<&dyn NodeRuntime> = runtimes.values().map(|r| r.as_ref()).collect();
        let source: &dyn NodeRuntime = match &local {
            Some(l) => l.as_ref(),
            None => match crate::images::find_holder(&nodes, image).await {
                Some(n) => n,
                None => {
                    // Said per node: lacking it, or why it could not be asked.
                    let answers =
                        crate::observe::on_nodes(nodes.iter().map(|n| n.image_present(image)))
                            .await;
                    let said: Vec<String> = nodes
                        .iter()
                        .zip(answers)
                        .map(|(n, a)| match a {
                            Err(e) => format!("{} ({})", n.node(), e.message),
                            Ok(_) => n.node().to_string(),
                        })
                        .collect();
                    looked.push(format!("nodes {}", said.join(", ")));
                    bail!(
                        "image {image} is on no engine fleetctl can reach: looked in {}",
                        looked.join(" and on ")
                    );
                }
            },
        };
        let to: Vec<&dyn NodeRuntime> = targets
            .iter()
            .filter_map(|t| runtimes.get(*t).map(|r| r.as_ref()))
            .filter(|r| r.node() != source.node())
            .collect();
        let from = source.node().to_string();
        let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let sent: Mutex<std::collections::BTreeMap<String, u64>> = Mutex::default();
        let progress = |p: CopyProgress| {
            if !tty || quiet() {
                return;
            }
            let mut sent = sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.insert(p.node.to_string(), p.bytes);
            let parts: Vec<String> = sent
                .iter()
                .map(|(n, b)| format!("{n} {:.1} MB", *b as f64 / 1e6))
                .collect();
            let _ = emit(&format!(
                "\r\x1b[K↑ pushing {image} from {from}: {}",
                parts.join(", ")
            ));
        };
        let outcomes = copy_image(source, &to, image, &progress).await?;
        if tty && !quiet() {
            let _ = emit("\r\x1b[K");
        }
        for o in &outcomes {
            emit(&format!("{}\n", outcome_line(o, image, &from)))?;
        }
        Ok(if outcomes.iter().all(|o| o.result.is_ok()) {
            0
        } else {
            1
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, ImageOp};

    #[test]
    fn push_takes_an_image_repeated_nodes_and_a_manifest_path() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "image",
            "push",
            "e2e/push:1",
            "--node",
            "node2",
            "--node",
            "node3",
            "-f",
            "fleet/",
        ])
        .unwrap();
        let Command::Image {
            op: ImageOp::Push { image, nodes, file },
        } = cli.command
        else {
            panic!("{:?}", cli.command);
        };
        assert_eq!(image, "e2e/push:1");
        assert_eq!(nodes, ["node2", "node3"]);
        assert_eq!(file.as_deref(), Some(Path::new("fleet/")));
        let cli = Cli::try_parse_from(["fleetctl", "image", "push", "web:1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Image { op: ImageOp::Push { ref nodes, file: None, .. } } if nodes.is_empty()
        ));
        assert!(Cli::try_parse_from(["fleetctl", "image", "push"]).is_err());
    }

    #[test]
    fn targets_are_the_nodes_asked_else_every_node() {
        let fleet = ["node1", "node2", "node3"];
        assert_eq!(targets(&fleet, &[]).unwrap(), fleet);
        let asked = vec!["node3".to_string(), "node2".into(), "node3".into()];
        assert_eq!(targets(&fleet, &asked).unwrap(), ["node3", "node2"]);
        let asked = vec!["node9".to_string()];
        assert_eq!(
            targets(&fleet, &asked).unwrap_err(),
            "no node node9 in the fleet (nodes: node1, node2, node3)"
        );
    }

    #[test]
    fn the_local_engine_is_docker_host_when_it_is_a_socket_else_the_default_socket() {
        assert_eq!(local_socket(None).unwrap(), "/var/run/docker.sock");
        assert_eq!(local_socket(Some("")).unwrap(), "/var/run/docker.sock");
        assert_eq!(
            local_socket(Some("unix:///run/user/1000/docker.sock")).unwrap(),
            "/run/user/1000/docker.sock"
        );
        assert!(
            local_socket(Some("tcp://10.0.0.1:2375"))
                .unwrap_err()
                .contains("not a local socket")
        );
    }

    #[test]
    fn each_target_gets_one_line_with_bytes_seconds_and_rate() {
        let loaded = CopyOutcome {
            node: "node2".into(),
            result: Ok(Copied::Loaded {
                bytes: 50_000_000,
                elapsed: Duration::from_secs(2),
            }),
        };
        assert_eq!(
            outcome_line(&loaded, "e2e/push:1", "node1"),
            "node2      ↑ pushed   e2e/push:1  from node1: 50.0 MB in 2.0s (25.0 MB/s)"
        );
        let had = CopyOutcome {
            node: "node1".into(),
            result: Ok(Copied::Present),
        };
        assert_eq!(
            outcome_line(&had, "e2e/push:1", "node1"),
            "node1      = present  e2e/push:1  (had it)"
        );
    }
}

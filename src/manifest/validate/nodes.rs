//! Node documents: SSH address and host key, Docker socket, capacity and reservations.

use std::collections::BTreeMap;

use super::{Named, Report, labels_of};
use crate::manifest::quantity::{Bytes, MilliCpus};
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// Resolves every Node document; the same SSH address twice is a warning.
pub(super) fn nodes(
    r: &mut Report,
    raw_nodes: &[Named<RawNodeSpec>],
) -> BTreeMap<String, NodeSpec> {
    let mut nodes = BTreeMap::new();
    let mut ssh_addrs: BTreeMap<(String, u16), String> = BTreeMap::new();
    for n in raw_nodes {
        let file = &n.doc.file;
        let s = n.spec;
        let ssh = s.ssh.as_ref().map(|ssh| {
            let host = ssh.host.as_ref().map(|h| h.value.clone()).unwrap_or_default();
            if let Some(h) = &ssh.host
                && (h.value.trim().is_empty() || h.value.contains(char::is_whitespace))
            {
                r.err(file, h.pos, "spec.ssh.host", format!("invalid host {:?}", h.value));
            }
            let port = ssh.port.as_ref().map_or(22, |p| p.value);
            if let Some(p) = &ssh.port
                && p.value == 0
            {
                r.err(file, p.pos, "spec.ssh.port", "port must be between 1 and 65535");
            }
            if let Some(k) = &ssh.host_key {
                let parts: Vec<&str> = k.value.split_whitespace().collect();
                if parts.len() < 2
                    || !(parts[0].starts_with("ssh-")
                        || parts[0].starts_with("ecdsa-")
                        || parts[0].starts_with("sk-"))
                {
                    r.err(
                        file,
                        k.pos,
                        "spec.ssh.hostKey",
                        "invalid host key: expected \"TYPE BASE64\", e.g. \"ssh-ed25519 AAAAC3Nz...\" (as in known_hosts, without the host)",
                    );
                }
            }
            if let Some(prev) = ssh_addrs.insert((host.clone(), port), n.name.clone()) {
                r.warn(
                    file,
                    ssh.pos,
                    "spec.ssh",
                    format!("node {:?} has the same SSH address {host}:{port} as node {prev:?}", n.name),
                );
            }
            SshSpec {
                host,
                port,
                user: ssh.user.as_ref().map(|u| u.value.clone()),
                identity_file: ssh.identity_file.as_ref().map(|u| u.value.clone()),
                host_key: ssh.host_key.as_ref().map(|u| u.value.clone()),
                known_hosts_file: ssh.known_hosts_file.as_ref().map(|u| u.value.clone()),
            }
        });
        let docker_socket = s.docker.as_ref().and_then(|d| d.socket.as_ref()).map_or(
            DEFAULT_DOCKER_SOCKET.to_string(),
            |d| {
                if !d.value.starts_with('/') {
                    r.err(
                        file,
                        d.pos,
                        "spec.docker.socket",
                        format!("socket {:?} must be an absolute path", d.value),
                    );
                }
                d.value.clone()
            },
        );
        let engine = match s.docker.as_ref().and_then(|d| d.engine.as_ref()) {
            None => crate::container::EngineKind::Docker,
            Some(e) => match e.value.as_str() {
                "docker" => crate::container::EngineKind::Docker,
                "podman" => crate::container::EngineKind::Podman,
                other => {
                    r.err(
                        file,
                        e.pos,
                        "spec.docker.engine",
                        format!("unknown engine {other:?}; use docker or podman"),
                    );
                    crate::container::EngineKind::Docker
                }
            },
        };
        let cap = s.capacity.clone().unwrap_or_default();
        let res = s.reserved.clone().unwrap_or_default();
        if let Some(m) = &cap.memory
            && m.value.0 == 0
        {
            r.err(
                file,
                m.pos,
                "spec.capacity.memory",
                "capacity memory must be more than 0",
            );
        }
        if let Some(c) = &cap.cpus
            && c.value.0 == 0
        {
            r.err(
                file,
                c.pos,
                "spec.capacity.cpus",
                "capacity cpus must be more than 0",
            );
        }
        if let (Some(c), Some(rm)) = (&cap.memory, &res.memory)
            && rm.value >= c.value
        {
            r.err(
                file,
                rm.pos,
                "spec.reserved.memory",
                format!(
                    "reserved memory {} leaves nothing of capacity {}",
                    rm.value, c.value
                ),
            );
        }
        if let (Some(c), Some(rc)) = (&cap.cpus, &res.cpus)
            && rc.value >= c.value
        {
            r.err(
                file,
                rc.pos,
                "spec.reserved.cpus",
                format!(
                    "reserved cpus {} leave nothing of capacity {}",
                    rc.value, c.value
                ),
            );
        }
        nodes.insert(
            n.name.clone(),
            NodeSpec {
                name: n.name.clone(),
                labels: labels_of(&n.doc.metadata.labels),
                ssh,
                docker_socket,
                engine,
                capacity_cpus: cap.cpus.map(|c| c.value),
                capacity_memory: cap.memory.map(|c| c.value),
                capacity_disk: cap.disk.map(|c| c.value),
                reserved_cpus: res.cpus.map_or(MilliCpus(0), |c| c.value),
                reserved_memory: res.memory.map_or(Bytes(0), |c| c.value),
                address: super::network::node_address(r, file, &s.address),
            },
        );
    }
    nodes
}

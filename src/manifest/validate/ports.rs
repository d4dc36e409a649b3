//! Published ports and host-port ranges: parsing, clashes within one service, display.

use super::Report;
use crate::container::{PortMapping, Protocol};
use crate::manifest::decode::Sp;
use crate::manifest::spec::*;
use crate::manifest::yaml::Pos;

pub(super) fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let bad = || format!("invalid port range {s:?}: use FIRST-LAST, e.g. 51000-51999");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let start: u16 = a.trim().parse().map_err(|_| bad())?;
    let end: u16 = b.trim().parse().map_err(|_| bad())?;
    if start == 0 {
        return Err(format!("invalid port range {s:?}: ports start at 1"));
    }
    if start > end {
        return Err(format!("invalid port range {s:?}: {start} is above {end}"));
    }
    Ok(PortRange { start, end })
}

/// Parses `HOST:CONTAINER`, `IP:HOST:CONTAINER`, each with an optional `/tcp` or `/udp`.
pub fn parse_port(s: &str) -> Result<PortMapping, String> {
    let bad = |why: &str| {
        format!(
            "invalid port {s:?}: {why}; use \"HOST:CONTAINER\" or \"IP:HOST:CONTAINER\", optionally with /tcp or /udp"
        )
    };
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}"))),
        None => (s, Protocol::Tcp),
    };
    let (ip, rest) = if let Some(stripped) = spec.strip_prefix('[') {
        let (ip, rest) = stripped
            .split_once("]:")
            .ok_or_else(|| bad("unclosed IPv6 address"))?;
        (Some(ip.to_string()), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (None, spec),
            3 => (Some(parts[0].to_string()), &spec[parts[0].len() + 1..]),
            1 => return Err(bad("a host port is required")),
            _ => return Err(bad("too many ':'")),
        }
    };
    if let Some(ip) = &ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(bad(&format!("{ip:?} is not an IP address")));
    }
    let (h, c) = rest
        .split_once(':')
        .ok_or_else(|| bad("a host port is required"))?;
    let port = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(&format!("{p:?} is not a port (1-65535)"))),
            Ok(v) => Ok(v),
        }
    };
    Ok(PortMapping {
        host_ip: ip,
        host_port: port(h)?,
        container_port: port(c)?,
        protocol,
    })
}

pub(super) fn resolve_ports(
    r: &mut Report,
    file: &str,
    raw: &Option<Vec<Sp<String>>>,
) -> Vec<PortMapping> {
    let mut out: Vec<(PortMapping, Pos)> = Vec::new();
    for (i, p) in raw.iter().flatten().enumerate() {
        match parse_port(&p.value) {
            Ok(m) => {
                if let Some((other, _)) = out.iter().find(|(o, _)| ports_clash(o, &m)) {
                    r.err(
                        file,
                        p.pos,
                        &format!("spec.ports[{i}]"),
                        format!(
                            "host port {}/{} is published twice (also by {:?})",
                            m.host_port,
                            m.protocol.as_str(),
                            display_port(other)
                        ),
                    );
                }
                out.push((m, p.pos));
            }
            Err(e) => r.err(file, p.pos, &format!("spec.ports[{i}]"), e),
        }
    }
    out.into_iter().map(|(m, _)| m).collect()
}

/// Whether two published ports would collide on one node.
pub fn ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
    let any = |ip: &Option<String>| ip.as_deref().is_none_or(|i| i == "0.0.0.0" || i == "::");
    a.host_port == b.host_port
        && a.protocol == b.protocol
        && (any(&a.host_ip) || any(&b.host_ip) || a.host_ip == b.host_ip)
}

/// `IP:HOST:CONTAINER/proto` as written.
pub fn display_port(p: &PortMapping) -> String {
    let ip = p
        .host_ip
        .as_ref()
        .map(|i| format!("{i}:"))
        .unwrap_or_default();
    format!(
        "{ip}{}:{}/{}",
        p.host_port,
        p.container_port,
        p.protocol.as_str()
    )
}

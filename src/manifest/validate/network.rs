//! The fleet's network (SPEC §10): `Fleet.spec.network`, node addresses, each service's
//! `network` and `aliases`, and the checks across them (overlapping subnets, aliases that clash
//! with service names, an overlay over public addresses without encryption).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::{Named, Report};
use crate::container::NetworkDriver;
use crate::manifest::decode::Sp;
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// The engines' default bridge subnet, which a fleet subnet must not overlap.
const DEFAULT_BRIDGE: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 17, 0, 0), 16);

/// Smallest and largest MTU accepted (IPv4's minimum; jumbo frames).
const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9216;

/// An IPv4 subnet `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (IPv4; host bits must be zero).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid subnet {s:?}: use CIDR form, e.g. 10.240.0.0/16"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("invalid subnet {s:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=29).contains(p))
            .ok_or_else(|| {
                format!("invalid subnet {s:?}: the prefix must be between /8 and /29")
            })?;
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            return Err(format!(
                "invalid subnet {s:?}: host bits are set (did you mean {}/{prefix}?)",
                c.network()
            ));
        }
        Ok(c)
    }

    fn mask(self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// Whether `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let m = if shorter == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(shorter))
        };
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

/// Whether `ip` is private (RFC 1918, CGNAT 100.64/10, loopback, link-local; IPv6 ULA and
/// link-local): overlay traffic between such addresses stays off the public Internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Resolves `Fleet.spec.network`.
pub(super) fn settings(r: &mut Report, file: &str, raw: Option<&RawNetwork>) -> NetworkSettings {
    let mut out = NetworkSettings::default();
    let Some(n) = raw else { return out };
    if let Some(m) = &n.mode {
        out.mode = match m.value.as_str() {
            "auto" => NetworkMode::Auto,
            "bridge" => NetworkMode::Bridge,
            "overlay" => NetworkMode::Overlay,
            other => {
                r.err(
                    file,
                    m.pos,
                    "spec.network.mode",
                    format!("unknown network mode {other:?}; use auto, bridge or overlay"),
                );
                NetworkMode::Auto
            }
        };
    }
    if let Some(s) = &n.subnet {
        match Cidr::parse(&s.value) {
            Ok(c)
                if c.overlaps(Cidr {
                    addr: DEFAULT_BRIDGE.0,
                    prefix: DEFAULT_BRIDGE.1,
                }) =>
            {
                r.err(
                    file,
                    s.pos,
                    "spec.network.subnet",
                    format!(
                        "subnet {} overlaps the engines' default bridge 172.17.0.0/16",
                        s.value
                    ),
                )
            }
            Ok(_) => out.subnet = Some(s.value.clone()),
            Err(e) => r.err(file, s.pos, "spec.network.subnet", e),
        }
    }
    if let Some(m) = &n.mtu {
        if MTU_RANGE.contains(&m.value) {
            out.mtu = Some(m.value);
        } else {
            r.err(
                file,
                m.pos,
                "spec.network.mtu",
                format!(
                    "mtu {} is out of range: use {} to {}",
                    m.value,
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            );
        }
    }
    out.encrypted = n.encrypted.as_ref().is_some_and(|e| e.value);
    out
}

/// Checks a node's `address`: an IP address.
pub(super) fn node_address(r: &mut Report, file: &str, raw: &Option<Sp<String>>) -> Option<String> {
    let a = raw.as_ref()?;
    if a.value.parse::<IpAddr>().is_err() {
        r.err(
            file,
            a.pos,
            "spec.address",
            format!(
                "invalid address {:?}: use the IP address the other nodes reach this one at, e.g. 10.0.0.2",
                a.value
            ),
        );
        return None;
    }
    Some(a.value.clone())
}

/// Resolves a service's `network` and `aliases`; `network: host` with published ports is an
/// error (the container's ports are the node's own).
pub(super) fn service_network(
    r: &mut Report,
    file: &str,
    s: &RawServiceSpec,
) -> (ServiceNetwork, Vec<String>) {
    let network = match &s.network {
        None => ServiceNetwork::Fleet,
        Some(n) => match n.value.as_str() {
            "fleet" => ServiceNetwork::Fleet,
            "host" => ServiceNetwork::Host,
            "none" => ServiceNetwork::None,
            other => {
                r.err(
                    file,
                    n.pos,
                    "spec.network",
                    format!("unknown network {other:?}; use fleet, host or none"),
                );
                ServiceNetwork::Fleet
            }
        },
    };
    if let (ServiceNetwork::Host, Some(p), Some(n)) = (network, &s.ports, &s.network)
        && !p.is_empty()
    {
        r.err(
            file,
            n.pos,
            "spec.network",
            "network: host publishes nothing: the container uses the node's ports directly; remove `ports`",
        );
    }
    let mut aliases = Vec::new();
    for a in s.aliases.iter().flatten() {
        if let Err(e) = super::check_name(&a.value) {
            r.err(
                file,
                a.pos,
                "spec.aliases",
                format!("invalid alias {:?}: {e}", a.value),
            );
        } else if a.value.starts_with("plug-") {
            r.err(
                file,
                a.pos,
                "spec.aliases",
                format!(
                    "alias {:?}: names starting with plug- belong to plugs",
                    a.value
                ),
            );
        } else if aliases.contains(&a.value) {
            r.err(
                file,
                a.pos,
                "spec.aliases",
                format!("alias {:?} is listed twice", a.value),
            );
        } else {
            aliases.push(a.value.clone());
        }
    }
    if network != ServiceNetwork::Fleet
        && let Some(a) = s.aliases.as_ref().and_then(|a| a.first())
    {
        r.err(
            file,
            a.pos,
            "spec.aliases",
            "aliases are names on the fleet's network; this service is not on it (network: host or none)",
        );
    }
    (network, aliases)
}

/// Checks across documents: an alias that is another service's name or another service's
/// alias; node addresses inside the fleet's subnet; an overlay over addresses that are not
/// private without `encrypted` (a warning).
pub(super) fn check_fleet(
    r: &mut Report,
    fleets: &[Named<RawFleetSpec>],
    settings: &NetworkSettings,
    raw_nodes: &[Named<RawNodeSpec>],
    nodes: &BTreeMap<String, NodeSpec>,
    raw_services: &[Named<RawServiceSpec>],
    services: &BTreeMap<String, ServiceSpec>,
) {
    let fleet_file = fleets.first().map(|f| f.doc.file.as_str());
    let raw_fleet = fleets.first().and_then(|f| f.spec.network.as_ref());
    // Aliases against service names and each other.
    let mut owner: BTreeMap<&str, &str> =
        services.keys().map(|n| (n.as_str(), n.as_str())).collect();
    for raw in raw_services {
        let Some(svc) = services.get(&raw.name) else {
            continue;
        };
        let mut seen = Vec::new();
        for a in raw.spec.aliases.iter().flatten() {
            // Judged once (a repeat is reported where the service is read).
            if !svc.aliases.contains(&a.value) || seen.contains(&&a.value) {
                continue;
            }
            seen.push(&a.value);
            match owner.get(a.value.as_str()) {
                Some(o) if *o != svc.name => {
                    let what = if services.contains_key(&a.value) {
                        format!("the name of service {:?}", a.value)
                    } else {
                        format!("an alias of service {o:?}")
                    };
                    r.err(
                        &raw.doc.file,
                        a.pos,
                        "spec.aliases",
                        format!(
                            "alias {:?} is {what}: a name must lead to one service",
                            a.value
                        ),
                    );
                }
                Some(_) => r.err(
                    &raw.doc.file,
                    a.pos,
                    "spec.aliases",
                    format!(
                        "alias {:?} is the service's own name, which always resolves",
                        a.value
                    ),
                ),
                None => {
                    owner.insert(a.value.as_str(), svc.name.as_str());
                }
            }
        }
    }
    // Node addresses inside the fleet's subnet.
    if let (Some(sub), Some(rf), Some(file)) = (&settings.subnet, raw_fleet, fleet_file)
        && let Ok(c) = Cidr::parse(sub)
    {
        for n in nodes.values() {
            if let Some(IpAddr::V4(ip)) = n.peer_address().and_then(|a| a.parse().ok())
                && c.contains(ip)
            {
                let pos = rf.subnet.as_ref().map_or(rf.pos, |s| s.pos);
                r.err(
                    file,
                    pos,
                    "spec.network.subnet",
                    format!("subnet {sub} overlaps node {:?}'s address {ip}", n.name),
                );
            }
        }
    }
    // An overlay asked for needs an address for every node (`auto` falls back to bridges).
    if settings.driver(nodes) == NetworkDriver::Overlay {
        for raw in raw_nodes {
            if nodes
                .get(&raw.name)
                .is_some_and(|n| n.peer_address().is_none())
            {
                r.err(
                    &raw.doc.file,
                    raw.spec.pos,
                    "spec.address",
                    format!(
                        "node {:?} has neither ssh nor address: the fleet's overlay network needs the address the other nodes reach it at",
                        raw.name
                    ),
                );
            }
        }
    }
    // A node declared Podman cannot join the overlay: it gets a bridge of its own.
    if settings.driver(nodes) == NetworkDriver::Overlay {
        for raw in raw_nodes {
            let Some(e) = raw.spec.docker.as_ref().and_then(|d| d.engine.as_ref()) else {
                continue;
            };
            if let Some(n) = nodes.get(&raw.name)
                && !n.engine.joins_swarm()
            {
                r.warn(
                    &raw.doc.file,
                    e.pos,
                    "spec.docker.engine",
                    format!(
                        "{name} runs {engine}, which cannot join the fleet's overlay network: its containers get a bridge network on {name} only (names resolve among the containers of {name}; other nodes' services are reached through their published ports, outside the overlay and its encryption)",
                        name = n.name,
                        engine = n.engine,
                    ),
                );
            }
        }
    }
    // An overlay over public addresses in clear.
    if settings.driver(nodes) == NetworkDriver::Overlay && !settings.encrypted {
        for raw in raw_nodes {
            let Some(n) = nodes.get(&raw.name) else {
                continue;
            };
            let public = match n.peer_address() {
                Some(a) => a.parse::<IpAddr>().is_ok_and(|ip| !is_private(ip)),
                None => false,
            };
            if public {
                let pos = raw.spec.address.as_ref().map_or(raw.spec.pos, |a| a.pos);
                r.warn(
                    &raw.doc.file,
                    pos,
                    "spec.address",
                    format!(
                        "node {:?} is reached at {}, not a private address: the fleet's overlay would carry traffic in clear; set the node's private `address`, or `encrypted: true` on the Fleet's network",
                        n.name,
                        n.peer_address().unwrap_or_default()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_overlap() {
        let a = Cidr::parse("10.240.0.0/16").unwrap();
        assert!(a.contains("10.240.3.4".parse().unwrap()));
        assert!(!a.contains("10.241.0.1".parse().unwrap()));
        assert!(a.overlaps(Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(!a.overlaps(Cidr::parse("10.241.0.0/16").unwrap()));
        assert!(
            Cidr::parse("10.240.0.1/16")
                .unwrap_err()
                .contains("host bits")
        );
        assert!(Cidr::parse("10.240.0.0").is_err());
        assert!(Cidr::parse("10.240.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/8").is_err());
    }

    #[test]
    fn private_addresses() {
        for p in [
            "10.0.0.2",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00::1",
        ] {
            assert!(is_private(p.parse().unwrap()), "{p}");
        }
        for p in ["203.0.113.7", "8.8.8.8", "2001:db8::1"] {
            assert!(!is_private(p.parse().unwrap()), "{p}");
        }
    }
}

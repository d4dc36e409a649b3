//! Raw documents → [`DesiredFleet`]: defaults, name rules, references, port clashes and
//! impossible requests. Every problem is recorded; nothing stops at the first.

use std::collections::{BTreeMap, BTreeSet};

use super::decode::Sp;
use super::error::Diagnostic;
use super::quantity::{Bytes, MilliCpus, Percent};
use super::raw::*;
use super::spec::*;
use super::yaml::Pos;
use crate::container::{HealthcheckSpec, PortMapping, Protocol, RestartPolicy};

/// Longest name of any object.
pub const MAX_NAME_LEN: usize = 40;

/// Collects diagnostics for documents that may come from different files.
struct Report<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Report<'_> {
    fn err(&mut self, file: &str, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(file, pos, path, msg));
    }
    fn warn(&mut self, file: &str, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(file, pos, path, msg));
    }
}

/// Checks a name against SPEC §2: lowercase letters, digits and `-`, starting with a letter, at
/// most 40 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?} is {} characters; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("name {name:?} must start with a lowercase letter"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "name {name:?} has {c:?}; use lowercase letters, digits and '-'"
        ));
    }
    Ok(())
}

fn labels_of(map: &Option<TextMap>) -> Labels {
    map.iter()
        .flatten()
        .map(|(k, v)| (k.value.clone(), v.value.0.clone()))
        .collect()
}

fn check_labels(r: &mut Report, file: &str, path: &str, map: &Option<TextMap>) {
    for k in map.iter().flatten().map(|(k, _)| k) {
        if k.value.is_empty()
            || !k
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
        {
            r.err(
                file,
                k.pos,
                &format!("{path}.{}", k.value),
                format!(
                    "invalid label key {:?}: use letters, digits, '.', '_', '-' and '/'",
                    k.value
                ),
            );
        }
    }
}

/// A document with its resolved name, for cross-document checks.
struct Named<'a, T> {
    doc: &'a RawDocument,
    name: String,
    spec: &'a T,
}

/// Resolves and cross-checks all documents. Returns the fleet only when no error was recorded
/// (by this or an earlier phase: `diags` may already hold decode errors).
pub fn validate(docs: &[RawDocument], diags: &mut Vec<Diagnostic>) -> Option<DesiredFleet> {
    let mut r = Report { diags };

    // Names, uniqueness per kind.
    let mut seen: BTreeMap<(Kind, String), (String, Pos)> = BTreeMap::new();
    let mut named: Vec<(&RawDocument, String)> = Vec::new();
    for doc in docs {
        let Some(name) = &doc.metadata.name else {
            continue;
        };
        check_labels(&mut r, &doc.file, "metadata.labels", &doc.metadata.labels);
        if let Err(m) = check_name(&name.value) {
            // Still check the rest of the document, so every error shows at once.
            r.err(&doc.file, name.pos, "metadata.name", m);
            named.push((doc, name.value.clone()));
            continue;
        }
        match seen.get(&(doc.kind, name.value.clone())) {
            Some((f, p)) => r.err(
                &doc.file,
                name.pos,
                "metadata.name",
                format!(
                    "duplicate {} name {:?}; first defined at {f}:{p}",
                    doc.kind.as_str(),
                    name.value
                ),
            ),
            None => {
                seen.insert((doc.kind, name.value.clone()), (doc.file.clone(), name.pos));
                named.push((doc, name.value.clone()));
            }
        }
    }

    macro_rules! of_kind {
        ($variant:ident) => {
            named
                .iter()
                .filter_map(|(doc, name)| match &doc.spec {
                    Some(RawSpec::$variant(s)) => Some(Named {
                        doc,
                        name: name.clone(),
                        spec: s,
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
    }
    let fleets = of_kind!(Fleet);
    let raw_nodes = of_kind!(Node);
    let raw_services = of_kind!(Service);
    let raw_classes = of_kind!(PlugClass);
    let raw_policies = of_kind!(PlacementPolicy);

    // Fleet.
    let mut fleet = FleetSpec::default();
    for extra in fleets.iter().skip(1) {
        r.err(
            &extra.doc.file,
            extra.doc.pos,
            "kind",
            format!(
                "a second Fleet document ({:?}); at most one is allowed (first: {:?} in {})",
                extra.name, fleets[0].name, fleets[0].doc.file
            ),
        );
    }
    if let Some(f) = fleets.first() {
        fleet.name = f.name.clone();
        let s = f.spec;
        if let Some(d) = &s.resync {
            if d.value.0.is_zero() {
                r.err(
                    &f.doc.file,
                    d.pos,
                    "spec.resync",
                    "resync must be longer than 0s",
                );
            }
            fleet.resync = d.value.0;
        }
        if let Some(d) = &s.node_lost_after {
            if d.value.0.is_zero() {
                r.err(
                    &f.doc.file,
                    d.pos,
                    "spec.nodeLostAfter",
                    "nodeLostAfter must be longer than 0s",
                );
            }
            fleet.node_lost_after = d.value.0;
        }
        if let Some(api) = &s.api {
            if let Some(l) = &api.listen {
                match l.value.parse() {
                    Ok(a) => fleet.api_listen = a,
                    Err(_) => r.err(
                        &f.doc.file,
                        l.pos,
                        "spec.api.listen",
                        format!(
                            "invalid address {:?}: use IP:PORT, e.g. 127.0.0.1:7411",
                            l.value
                        ),
                    ),
                }
            }
            fleet.api_token_file = api.token_file.as_ref().map(|t| t.value.clone().into());
        }
    }

    // Nodes.
    let mut nodes = BTreeMap::new();
    let mut ssh_addrs: BTreeMap<(String, u16), String> = BTreeMap::new();
    for n in &raw_nodes {
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
                capacity_cpus: cap.cpus.map(|c| c.value),
                capacity_memory: cap.memory.map(|c| c.value),
                capacity_disk: cap.disk.map(|c| c.value),
                reserved_cpus: res.cpus.map_or(MilliCpus(0), |c| c.value),
                reserved_memory: res.memory.map_or(Bytes(0), |c| c.value),
            },
        );
    }

    // Placement policies.
    let mut policies = BTreeMap::new();
    for p in &raw_policies {
        let file = &p.doc.file;
        let s = p.spec;
        if let Some(m) = &s.max_plugs_per_node
            && m.value == 0
        {
            r.err(
                file,
                m.pos,
                "spec.maxPlugsPerNode",
                "maxPlugsPerNode must be at least 1 (remove the class's policy to allow none)",
            );
        }
        if let Some(w) = &s.memory_high_watermark
            && w.value.0 == 0
        {
            r.err(
                file,
                w.pos,
                "spec.memoryHighWatermark",
                "watermark must be above 0%",
            );
        }
        let spread = match &s.spread {
            None => Spread::Pack,
            Some(v) => match v.value.as_str() {
                "pack" => Spread::Pack,
                "spread" => Spread::Spread,
                other => {
                    r.err(
                        file,
                        v.pos,
                        "spec.spread",
                        format!("unknown spread {other:?}; use pack or spread"),
                    );
                    Spread::Pack
                }
            },
        };
        let mut tiers = Vec::new();
        for (i, t) in s.tiers.iter().flatten().enumerate() {
            let path = format!("spec.tiers[{i}]");
            let names = check_node_refs(&mut r, file, &format!("{path}.nodes"), &t.nodes, &nodes);
            let tier = Tier {
                nodes: names,
                node_selector: labels_of(&t.node_selector),
            };
            if t.nodes.is_none() && t.node_selector.is_none() {
                r.err(
                    file,
                    t.pos,
                    &path,
                    "a tier needs nodeSelector or nodes (omit tiers for one tier of every node)",
                );
            } else if !nodes.values().any(|n| tier.contains(n)) {
                r.warn(file, t.pos, &path, "no node belongs to this tier");
            }
            tiers.push(tier);
        }
        if let Some(t) = &s.tiers
            && t.is_empty()
        {
            r.err(
                file,
                s.pos,
                "spec.tiers",
                "tiers is empty; omit it for one tier of every node",
            );
        }
        if tiers.is_empty() {
            tiers.push(Tier::default());
        }
        policies.insert(
            p.name.clone(),
            PolicySpec {
                name: p.name.clone(),
                max_plugs_per_node: s.max_plugs_per_node.as_ref().map(|m| m.value),
                memory_high_watermark: s
                    .memory_high_watermark
                    .as_ref()
                    .map_or(Percent::FULL, |w| w.value),
                tiers,
                spread,
                evict_idle_on_pressure: s.evict_idle_on_pressure.as_ref().is_some_and(|e| e.value),
            },
        );
    }

    // Plug classes.
    let mut plug_classes = BTreeMap::new();
    for c in &raw_classes {
        let file = &c.doc.file;
        let s = c.spec;
        let resources = resolve_resources(&mut r, file, "spec.resources", &s.resources, &nodes);
        let host_ports = s.host_ports.as_ref().and_then(|h| {
            parse_port_range(&h.value.0)
                .map_err(|m| r.err(file, h.pos, "spec.hostPorts", m))
                .ok()
        });
        if let Some(p) = &s.port
            && p.value == 0
        {
            r.err(file, p.pos, "spec.port", "port must be between 1 and 65535");
        }
        let policy = match &s.policy {
            Some(p) => {
                if !policies.contains_key(&p.value) {
                    let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                    r.err(
                        file,
                        p.pos,
                        "spec.policy",
                        format!(
                            "PlacementPolicy {:?} does not exist{}",
                            p.value,
                            hint_known(&p.value, &known)
                        ),
                    );
                }
                Some(p.value.clone())
            }
            None => policies
                .contains_key("default")
                .then(|| "default".to_string()),
        };
        // Does an instance fit on at least one node its policy allows?
        if let (Some(res), Some(raw_res)) = (&resources, &s.resources) {
            let policy_spec = policy
                .as_ref()
                .and_then(|p| policies.get(p))
                .cloned()
                .unwrap_or_else(PolicySpec::implicit);
            let candidates: Vec<&NodeSpec> = nodes
                .values()
                .filter(|n| policy_spec.tiers.iter().any(|t| t.contains(n)))
                .collect();
            if candidates.is_empty() && !nodes.is_empty() {
                let (pos, path) = match &s.policy {
                    Some(p) => (p.pos, "spec.policy"),
                    None => (s.pos, "spec"),
                };
                r.err(
                    file,
                    pos,
                    path,
                    format!(
                        "no node belongs to any tier of PlacementPolicy {:?}: instances of this class could never be placed",
                        policy_spec.name
                    ),
                );
            }
            check_fits(
                &mut r,
                file,
                raw_res,
                res,
                &candidates,
                policy_spec.memory_high_watermark,
                "plug instance",
            );
        }
        let healthcheck = resolve_healthcheck(&mut r, file, &s.healthcheck);
        let command = resolve_command(&mut r, file, &s.command);
        let env = resolve_env(&mut r, file, &s.env);
        if let (Some(res), Some(hp), Some(port)) = (resources, host_ports, &s.port)
            && let Some(image) = &s.image
        {
            check_image(&mut r, file, image);
            plug_classes.insert(
                c.name.clone(),
                PlugClassSpec {
                    name: c.name.clone(),
                    labels: labels_of(&c.doc.metadata.labels),
                    image: image.value.clone(),
                    resources: res,
                    command,
                    port: port.value,
                    host_ports: hp,
                    env,
                    healthcheck,
                    idle_timeout: s
                        .idle_timeout
                        .as_ref()
                        .map(|d| d.value.0)
                        .filter(|d| !d.is_zero()),
                    policy,
                },
            );
        }
    }

    // Services.
    let mut services = BTreeMap::new();
    for svc in &raw_services {
        let file = &svc.doc.file;
        let s = svc.spec;
        let resources = resolve_resources(&mut r, file, "spec.resources", &s.resources, &nodes);
        let replicas = s.replicas.as_ref().map_or(1, |r| r.value);
        let placement = match &s.placement {
            None => Placement::default(),
            Some(p) => Placement {
                nodes: check_node_refs(&mut r, file, "spec.placement.nodes", &p.nodes, &nodes),
                node_selector: labels_of(&p.node_selector),
                max_per_node: p.max_per_node.as_ref().map(|m| m.value),
            },
        };
        if let Some(m) = s.placement.as_ref().and_then(|p| p.max_per_node.as_ref())
            && m.value == 0
        {
            r.err(
                file,
                m.pos,
                "spec.placement.maxPerNode",
                "maxPerNode must be at least 1",
            );
        }
        let ports = resolve_ports(&mut r, file, &s.ports);
        let allowed: Vec<&NodeSpec> = nodes.values().filter(|n| placement.allows(n)).collect();
        let place_pos = s.placement.as_ref().map_or(s.pos, |p| p.pos);
        if allowed.is_empty() && !nodes.is_empty() && replicas > 0 {
            r.err(
                file,
                place_pos,
                "spec.placement",
                format!(
                    "no node is allowed by this placement ({})",
                    describe_placement(&placement)
                ),
            );
        } else if !allowed.is_empty() {
            let host_ports = !ports.is_empty();
            let per_node = effective_max_per_node(placement.max_per_node, host_ports);
            let room = per_node.map(|m| u64::from(m) * allowed.len() as u64);
            if let Some(room) = room
                && u64::from(replicas) > room
            {
                let why = if host_ports && placement.max_per_node.is_none_or(|m| m > 1) {
                    "at most 1 per node, since it publishes host ports".to_string()
                } else {
                    format!("maxPerNode {}", per_node.unwrap_or(0))
                };
                let pos = s.replicas.as_ref().map_or(s.pos, |r| r.pos);
                r.err(
                    file,
                    pos,
                    "spec.replicas",
                    format!(
                        "{replicas} replicas cannot fit: {} allowed node{} ({}) × {why}",
                        allowed.len(),
                        if allowed.len() == 1 { "" } else { "s" },
                        allowed
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        if let (Some(res), Some(raw_res)) = (&resources, &s.resources) {
            check_fits(
                &mut r,
                file,
                raw_res,
                res,
                &allowed,
                Percent::FULL,
                "replica",
            );
        }
        let restart = match &s.restart {
            None => RestartPolicy::UnlessStopped,
            Some(v) => RestartPolicy::parse(&v.value).unwrap_or_else(|| {
                r.err(
                    file,
                    v.pos,
                    "spec.restart",
                    format!(
                        "unknown restart policy {:?}; use always, unless-stopped, on-failure or no",
                        v.value
                    ),
                );
                RestartPolicy::UnlessStopped
            }),
        };
        let update_order = match s.update.as_ref().and_then(|u| u.order.as_ref()) {
            None if !ports.is_empty() => UpdateOrder::StopFirst,
            None => UpdateOrder::StartFirst,
            Some(o) => match o.value.as_str() {
                "start-first" => UpdateOrder::StartFirst,
                "stop-first" => UpdateOrder::StopFirst,
                other => {
                    r.err(
                        file,
                        o.pos,
                        "spec.update.order",
                        format!("unknown update order {other:?}; use start-first or stop-first"),
                    );
                    UpdateOrder::StopFirst
                }
            },
        };
        let volumes = resolve_volumes(&mut r, file, &s.volumes);
        let healthcheck = resolve_healthcheck(&mut r, file, &s.healthcheck);
        let command = resolve_command(&mut r, file, &s.command);
        let env = resolve_env(&mut r, file, &s.env);
        if let Some(image) = &s.image {
            check_image(&mut r, file, image);
        }
        if let (Some(res), Some(image)) = (resources, &s.image) {
            services.insert(
                svc.name.clone(),
                ServiceSpec {
                    name: svc.name.clone(),
                    labels: labels_of(&svc.doc.metadata.labels),
                    image: image.value.clone(),
                    replicas,
                    placement,
                    resources: res,
                    command,
                    env,
                    ports,
                    volumes,
                    restart,
                    healthcheck,
                    update_order,
                    stop_grace_period: s.stop_grace_period.as_ref().map(|d| d.value.0),
                },
            );
        }
    }

    check_forced_services(&mut r, &raw_services, &services, &nodes);
    check_shared_host_ports(&mut r, &raw_services, &services, &nodes);

    if r.diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(DesiredFleet {
        fleet,
        nodes,
        services,
        plug_classes,
        policies,
    })
}

fn hint_known(name: &str, known: &[&str]) -> String {
    match super::decode::suggest(name, known) {
        Some(s) => format!("; did you mean {s:?}?"),
        None if known.is_empty() => String::new(),
        None => format!(" (defined: {})", known.join(", ")),
    }
}

fn check_node_refs(
    r: &mut Report,
    file: &str,
    path: &str,
    refs: &Option<Vec<Sp<String>>>,
    nodes: &BTreeMap<String, NodeSpec>,
) -> Option<BTreeSet<String>> {
    let refs = refs.as_ref()?;
    let known: Vec<&str> = nodes.keys().map(String::as_str).collect();
    let mut out = BTreeSet::new();
    for (i, n) in refs.iter().enumerate() {
        if !nodes.contains_key(&n.value) {
            r.err(
                file,
                n.pos,
                &format!("{path}[{i}]"),
                format!(
                    "node {:?} does not exist{}",
                    n.value,
                    hint_known(&n.value, &known)
                ),
            );
        }
        out.insert(n.value.clone());
    }
    Some(out)
}

fn describe_placement(p: &Placement) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &p.nodes {
        parts.push(format!(
            "nodes [{}]",
            n.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !p.node_selector.is_empty() {
        parts.push(format!(
            "nodeSelector {{{}}}",
            p.node_selector
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    parts.join(" and ")
}

/// The per-node cap that applies to a service: `maxPerNode`, and 1 when it publishes host ports
/// (two replicas on one node would clash on them).
pub fn effective_max_per_node(
    max_per_node: Option<u32>,
    publishes_host_ports: bool,
) -> Option<u32> {
    match (max_per_node, publishes_host_ports) {
        (Some(m), true) => Some(m.min(1)),
        (None, true) => Some(1),
        (m, false) => m,
    }
}

fn resolve_resources(
    r: &mut Report,
    file: &str,
    path: &str,
    raw: &Option<RawResources>,
    nodes: &BTreeMap<String, NodeSpec>,
) -> Option<ResourceSpec> {
    let raw = raw.as_ref()?;
    let memory = raw.memory.as_ref()?;
    if memory.value.0 < 6 * 1024 * 1024 {
        r.err(
            file,
            memory.pos,
            &format!("{path}.memory"),
            format!("memory {} is below Docker's minimum of 6MiB", memory.value),
        );
    }
    if let Some(res) = &raw.memory_reservation
        && res.value > memory.value
    {
        r.err(
            file,
            res.pos,
            &format!("{path}.memoryReservation"),
            format!(
                "memoryReservation {} is above the memory limit {}",
                res.value, memory.value
            ),
        );
    }
    if let Some(c) = &raw.cpus
        && c.value.0 == 0
    {
        r.err(
            file,
            c.pos,
            &format!("{path}.cpus"),
            "cpus must be more than 0",
        );
    }
    if let Some(c) = &raw.cpu_shares
        && c.value < 2
    {
        r.err(
            file,
            c.pos,
            &format!("{path}.cpuShares"),
            "cpuShares must be at least 2",
        );
    }
    if let Some(set) = &raw.cpuset {
        match parse_cpuset(&set.value.0) {
            Err(m) => r.err(file, set.pos, &format!("{path}.cpuset"), m),
            Ok(max) => {
                let fits_somewhere = nodes.is_empty()
                    || nodes.values().any(|n| {
                        n.capacity_cpus
                            .is_none_or(|c| u64::from(max) * 1000 < c.0.max(1000))
                    });
                if !fits_somewhere {
                    r.err(
                        file,
                        set.pos,
                        &format!("{path}.cpuset"),
                        format!(
                            "cpuset {:?} names CPU {max}, which no node has",
                            set.value.0
                        ),
                    );
                }
            }
        }
    }
    Some(ResourceSpec {
        memory: memory.value,
        memory_reservation: raw.memory_reservation.as_ref().map(|m| m.value),
        cpus: raw.cpus.as_ref().map(|c| c.value),
        cpu_shares: raw.cpu_shares.as_ref().map(|c| c.value),
        cpuset: raw.cpuset.as_ref().map(|c| c.value.0.clone()),
    })
}

/// Parses a cpuset (`0-3`, `0,2`, `1-2,5`); returns the highest CPU named.
fn parse_cpuset(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid cpuset {s:?}: use e.g. \"0-3\", \"0,2\" or \"1-2,5\"");
    let mut max = 0;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        max = max.max(b);
    }
    Ok(max)
}

/// Records an error when an instance of these resources fits on none of `candidates` (only
/// nodes with a declared capacity are judged; a node read from its engine might fit).
fn check_fits(
    r: &mut Report,
    file: &str,
    raw: &RawResources,
    res: &ResourceSpec,
    candidates: &[&NodeSpec],
    watermark: Percent,
    what: &str,
) {
    if candidates.is_empty() || candidates.iter().any(|n| n.capacity_memory.is_none()) {
        return;
    }
    let best = candidates
        .iter()
        .map(|n| (watermark.of(n.allocatable_memory().map_or(0, |b| b.0)), n))
        .max_by_key(|(m, _)| *m);
    if let (Some((room, node)), Some(pos)) = (best, raw.memory.as_ref().map(|m| m.pos))
        && res.memory.0 > room
    {
        let under = if watermark == Percent::FULL {
            String::new()
        } else {
            format!(" under the {watermark} watermark")
        };
        r.err(
            file,
            pos,
            "spec.resources.memory",
            format!(
                "a {what} needs {} but no allowed node has that much allocatable memory{under} (largest: {} on {})",
                res.memory,
                Bytes(room),
                node.name
            ),
        );
    }
    if let (Some(cpus), Some(c)) = (res.cpus, raw.cpus.as_ref())
        && candidates.iter().all(|n| n.capacity_cpus.is_some())
        && let Some(max) = candidates.iter().filter_map(|n| n.capacity_cpus).max()
        && cpus > max
    {
        r.err(
            file,
            c.pos,
            "spec.resources.cpus",
            format!("a {what} needs {cpus} CPUs but no allowed node has more than {max}"),
        );
    }
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
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

fn resolve_ports(r: &mut Report, file: &str, raw: &Option<Vec<Sp<String>>>) -> Vec<PortMapping> {
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

fn resolve_volumes(r: &mut Report, file: &str, raw: &Option<Vec<Sp<String>>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, v) in raw.iter().flatten().enumerate() {
        let parts: Vec<&str> = v.value.split(':').collect();
        let path = format!("spec.volumes[{i}]");
        let ok = match parts.as_slice() {
            [dst] => dst.starts_with('/'),
            [src, dst] => !src.is_empty() && dst.starts_with('/'),
            [src, dst, mode] => {
                !src.is_empty()
                    && dst.starts_with('/')
                    && mode.split(',').all(|m| {
                        matches!(
                            m,
                            "ro" | "rw"
                                | "z"
                                | "Z"
                                | "nocopy"
                                | "rshared"
                                | "shared"
                                | "slave"
                                | "rslave"
                                | "private"
                                | "rprivate"
                        )
                    })
            }
            _ => false,
        };
        let src = if parts.len() >= 2 { parts[0] } else { "" };
        if ok && !src.is_empty() && !src.starts_with('/') && !is_volume_name(src) {
            let why = if src.contains('/') || src.starts_with('.') || src.starts_with('~') {
                "a host path must be absolute: it is a path on the node, not relative to the manifests"
            } else {
                "a volume name is a letter or digit followed by letters, digits, '_', '.' or '-'"
            };
            r.err(
                file,
                v.pos,
                &path,
                format!("invalid volume source {src:?} in {:?}: {why}", v.value),
            );
        } else if ok {
            out.push(v.value.clone());
        } else {
            r.err(
                file,
                v.pos,
                &path,
                format!(
                    "invalid volume {:?}: use \"NAME:/path\", \"/host/path:/path\" or add \":ro\"; the container path must be absolute",
                    v.value
                ),
            );
        }
    }
    out
}

/// Docker's rule for a named volume: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn resolve_healthcheck(
    r: &mut Report,
    file: &str,
    raw: &Option<RawHealthcheck>,
) -> Option<HealthcheckSpec> {
    let h = raw.as_ref()?;
    let cmd = h.command.as_ref()?;
    let test = cmd.value.0.clone();
    match test.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if test.len() >= 2 => {}
        Some("NONE") if test.len() == 1 => {}
        _ => {
            r.err(
                file,
                cmd.pos,
                "spec.healthcheck.command",
                "healthcheck command must be [\"CMD\", program, args...], [\"CMD-SHELL\", \"shell command\"], [\"NONE\"] or a shell string",
            );
            return None;
        }
    }
    if let Some(n) = &h.retries
        && n.value == 0
    {
        r.err(
            file,
            n.pos,
            "spec.healthcheck.retries",
            "retries must be at least 1",
        );
    }
    for (d, name) in [(&h.interval, "interval"), (&h.timeout, "timeout")] {
        if let Some(d) = d
            && d.value.0 < std::time::Duration::from_millis(1)
        {
            r.err(
                file,
                d.pos,
                &format!("spec.healthcheck.{name}"),
                format!("{name} must be at least 1ms"),
            );
        }
    }
    Some(HealthcheckSpec {
        test,
        interval: h.interval.as_ref().map(|d| d.value.0),
        timeout: h.timeout.as_ref().map(|d| d.value.0),
        retries: h.retries.as_ref().map(|d| d.value),
        start_period: h.start_period.as_ref().map(|d| d.value.0),
    })
}

fn resolve_command(
    r: &mut Report,
    file: &str,
    raw: &Option<Sp<Vec<Sp<String>>>>,
) -> Option<Vec<String>> {
    let c = raw.as_ref()?;
    if c.value.is_empty() {
        r.err(
            file,
            c.pos,
            "spec.command",
            "command is empty; omit it to use the image's",
        );
        return None;
    }
    Some(c.value.iter().map(|s| s.value.clone()).collect())
}

fn resolve_env(r: &mut Report, file: &str, raw: &Option<TextMap>) -> Labels {
    for k in raw.iter().flatten().map(|(k, _)| k) {
        if k.value.is_empty() || k.value.contains('=') || k.value.contains('\0') {
            r.err(
                file,
                k.pos,
                &format!("spec.env.{}", k.value),
                format!("invalid environment variable name {:?}", k.value),
            );
        }
    }
    labels_of(raw)
}

fn check_image(r: &mut Report, file: &str, image: &Sp<String>) {
    let v = &image.value;
    // The repository part of a reference is lowercase; tags and digests may not be.
    let repo = v.split(['@']).next().unwrap_or(v);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    if v.is_empty()
        || v.contains(char::is_whitespace)
        || repo.chars().any(|c| c.is_ascii_uppercase())
    {
        r.err(
            file,
            image.pos,
            "spec.image",
            format!("invalid image reference {v:?}"),
        );
    }
}

/// The replicas of `svc` that its placement forces onto each node: on a node N, at least
/// `replicas − (allowed nodes other than N) × per-node cap` must run. A service pinned to one
/// node has all its replicas forced there; one free to run on several nodes has none.
pub fn forced_replicas<'a>(
    svc: &ServiceSpec,
    nodes: &'a BTreeMap<String, NodeSpec>,
) -> Vec<(&'a str, u32)> {
    let allowed: Vec<&NodeSpec> = nodes.values().filter(|n| svc.placement.allows(n)).collect();
    if allowed.is_empty() {
        return Vec::new();
    }
    let per_node = effective_max_per_node(svc.placement.max_per_node, !svc.ports.is_empty());
    let others = allowed.len() as u64 - 1;
    let elsewhere = per_node.map_or(if others == 0 { 0 } else { u64::MAX }, |m| {
        others * u64::from(m)
    });
    // At most the per-node cap can be forced onto one node (a service asking for more is already
    // reported as unable to fit).
    let here = u64::from(svc.replicas)
        .saturating_sub(elsewhere)
        .min(per_node.map_or(u64::MAX, u64::from));
    if here == 0 {
        return Vec::new();
    }
    let here = u32::try_from(here).unwrap_or(u32::MAX);
    allowed
        .into_iter()
        .map(|n| (n.name.as_str(), here))
        .collect()
}

/// Services that publish the same host port: a node binds it once, so all their replicas
/// together need as many nodes among those their placements allow.
fn check_shared_host_ports(
    r: &mut Report,
    raw: &[Named<RawServiceSpec>],
    services: &BTreeMap<String, ServiceSpec>,
    nodes: &BTreeMap<String, NodeSpec>,
) {
    // (port, protocol) → [(service, its mapping index)]
    let mut by_port: BTreeMap<(u16, &str), Vec<(&ServiceSpec, usize)>> = BTreeMap::new();
    for svc in services.values().filter(|s| s.replicas > 0) {
        for (i, p) in svc.ports.iter().enumerate() {
            by_port
                .entry((p.host_port, p.protocol.as_str()))
                .or_default()
                .push((svc, i));
        }
    }
    for ((port, proto), users) in by_port {
        let names: BTreeSet<&str> = users.iter().map(|(s, _)| s.name.as_str()).collect();
        // Only services whose mappings all clash (different bind addresses may share a port).
        let clash_all = users.iter().all(|(a, i)| {
            users
                .iter()
                .all(|(b, j)| ports_clash(&a.ports[*i], &b.ports[*j]))
        });
        if names.len() < 2 || !clash_all {
            continue;
        }
        let allowed: BTreeSet<&str> = nodes
            .values()
            .filter(|n| users.iter().any(|(s, _)| s.placement.allows(n)))
            .map(|n| n.name.as_str())
            .collect();
        let mut need = 0u64;
        let mut parts = Vec::new();
        for name in &names {
            let n = services[*name].replicas;
            need += u64::from(n);
            parts.push(format!("{name} ({n})"));
        }
        // A clash between services that must run on the same node is reported already.
        let reported = r.diags.iter().any(|d| {
            d.message
                .starts_with(&format!("host port {port}/{proto} clashes on node"))
        });
        if need <= allowed.len() as u64 || allowed.is_empty() || reported {
            continue;
        }
        // Reported at the last of them, where the port is written.
        let (last, i) = users
            .iter()
            .rev()
            .find(|(s, _)| s.name.as_str() == *names.last().expect("two or more"))
            .expect("listed");
        if let Some(rs) = raw.iter().find(|n| n.name == last.name) {
            let pos = rs
                .spec
                .ports
                .as_ref()
                .and_then(|v| v.get(*i))
                .map_or(rs.spec.pos, |p| p.pos);
            r.err(
                &rs.doc.file,
                pos,
                &format!("spec.ports[{i}]"),
                format!(
                    "host port {port}/{proto} is published by {} replicas of {}, but only {} node{} may run them and a node binds a port once",
                    need,
                    parts.join(", "),
                    allowed.len(),
                    if allowed.len() == 1 { "" } else { "s" }
                ),
            );
        }
    }
}

/// Per node, the services that must run at least one replica there (their placement leaves
/// no other choice), with the replica count forced onto it. Two checks follow: their host
/// ports must not clash, and their memory limits must fit the node.
fn check_forced_services(
    r: &mut Report,
    raw: &[Named<RawServiceSpec>],
    services: &BTreeMap<String, ServiceSpec>,
    nodes: &BTreeMap<String, NodeSpec>,
) {
    // node → [(service, replicas forced here)]
    let mut forced: BTreeMap<&str, Vec<(&ServiceSpec, u32)>> = BTreeMap::new();
    for svc in services.values() {
        for (node, here) in forced_replicas(svc, nodes) {
            forced.entry(node).or_default().push((svc, here));
        }
    }
    let raw_of = |name: &str| raw.iter().find(|n| n.name == name);
    for (node, list) in &forced {
        // Port clashes between different services.
        let mut taken: Vec<(&PortMapping, &str)> = Vec::new();
        for (svc, _) in list {
            for (i, p) in svc.ports.iter().enumerate() {
                if let Some((_, other)) = taken
                    .iter()
                    .find(|(q, o)| *o != svc.name && ports_clash(q, p))
                    && let Some(rs) = raw_of(&svc.name)
                {
                    let pos = rs
                        .spec
                        .ports
                        .as_ref()
                        .and_then(|v| v.get(i))
                        .map_or(rs.spec.pos, |p| p.pos);
                    r.err(
                        &rs.doc.file,
                        pos,
                        &format!("spec.ports[{i}]"),
                        format!(
                            "host port {}/{} clashes on node {node} with service {other:?}; both must run there",
                            p.host_port,
                            p.protocol.as_str()
                        ),
                    );
                }
                taken.push((p, svc.name.as_str()));
            }
        }
        // Memory of what must run here.
        let Some(alloc) = nodes.get(*node).and_then(NodeSpec::allocatable_memory) else {
            continue;
        };
        let need: u64 = list
            .iter()
            .map(|(s, n)| s.resources.memory.0 * u64::from(*n))
            .sum();
        // A service that alone exceeds the node is reported by the per-replica check already.
        let one_too_big = list.iter().any(|(s, _)| s.resources.memory.0 > alloc.0);
        if need > alloc.0 && !one_too_big {
            // Reported at the largest contributor: the first place an operator would look.
            let (last, _) = list
                .iter()
                .max_by_key(|(svc, n)| {
                    (
                        svc.resources.memory.0 * u64::from(*n),
                        std::cmp::Reverse(svc.name.clone()),
                    )
                })
                .expect("non-empty");
            if let Some(rs) = raw_of(&last.name) {
                let pos = rs
                    .spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.memory.as_ref())
                    .map_or(rs.spec.pos, |m| m.pos);
                r.err(
                    &rs.doc.file,
                    pos,
                    "spec.resources.memory",
                    format!(
                        "services that must run on node {node} ({}) need {} of memory limits; it has {} allocatable",
                        list.iter().map(|(s, n)| if *n > 1 { format!("{}×{n}", s.name) } else { s.name.clone() }).collect::<Vec<_>>().join(", "),
                        Bytes(need),
                        alloc
                    ),
                );
            }
        }
    }
}

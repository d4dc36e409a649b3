//! PlugClass documents: image, resources, port and host-port range, policy reference, and
//! whether an instance fits on any node its policy allows.

use std::collections::BTreeMap;

use super::fields::{check_image, resolve_command, resolve_env, resolve_healthcheck, resolve_pull};
use super::ports::parse_port_range;
use super::resources::{check_fits, resolve_resources};
use super::{Named, Report, hint_known, labels_of};
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// Resolves every PlugClass document against the nodes and policies.
pub(super) fn plug_classes(
    r: &mut Report,
    raw_classes: &[Named<RawPlugClassSpec>],
    nodes: &BTreeMap<String, NodeSpec>,
    policies: &BTreeMap<String, PolicySpec>,
    secrets: &BTreeMap<String, SecretSpec>,
) -> BTreeMap<String, PlugClassSpec> {
    let mut plug_classes = BTreeMap::new();
    for c in raw_classes {
        let file = &c.doc.file;
        let s = c.spec;
        let resources = resolve_resources(r, file, "spec.resources", &s.resources, nodes);
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
                r,
                file,
                raw_res,
                res,
                &candidates,
                policy_spec.memory_high_watermark,
                "plug instance",
            );
        }
        let pull = resolve_pull(r, file, &s.pull);
        let healthcheck = resolve_healthcheck(r, file, &s.healthcheck);
        let command = resolve_command(r, file, &s.command);
        let env = resolve_env(r, file, &s.env);
        let files = super::files::resolve_files(r, file, &s.env, &s.secrets, &s.configs, secrets);
        let knobs = super::knobs::resolve_knobs(
            r,
            file,
            &super::knobs::RawKnobs {
                logging: &s.logging,
                ulimits: &s.ulimits,
                sysctls: &s.sysctls,
                user: &s.user,
                working_dir: &s.working_dir,
                read_only: &s.read_only,
                cap_add: &s.cap_add,
                cap_drop: &s.cap_drop,
                stop_signal: &s.stop_signal,
                host_network: false,
            },
        );
        let hp = host_ports;
        if let (Some(res), Some(port)) = (resources, &s.port)
            && let Some(image) = &s.image
        {
            check_image(r, file, image);
            plug_classes.insert(
                c.name.clone(),
                PlugClassSpec {
                    name: c.name.clone(),
                    labels: labels_of(&c.doc.metadata.labels),
                    image: image.value.clone(),
                    pull,
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
                    files,
                    knobs,
                },
            );
        }
    }
    plug_classes
}

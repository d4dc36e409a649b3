//! Raw documents → [`DesiredFleet`]: defaults, name rules, references, port clashes and
//! impossible requests. Every problem is recorded; nothing stops at the first.
//!
//! # Layout
//! [`validate`] checks names across documents, then resolves each kind in dependency order,
//! one module per kind: `fleet` (with its `network` and `registries`), `nodes`, `policies`
//! (refer to nodes), `plug_classes` (refer to nodes and policies), `services` (refer to
//! nodes); `files` resolves Secret documents first, then the secrets and config files of each
//! service and plug class; then `clashes` checks across services (forced replicas, shared host ports). Fields
//! shared by kinds are in `resources`, `ports` and `fields` (volumes, healthcheck, command,
//! environment, image, pull policy).

use std::collections::{BTreeMap, BTreeSet};

use super::decode::Sp;
use super::error::Diagnostic;
use super::raw::*;
use super::spec::*;
use super::yaml::Pos;

mod autoscale;
mod clashes;
mod fields;
mod files;
mod fleet;
mod knobs;
mod network;
mod nodes;
mod plug_classes;
mod policies;
mod ports;
mod registries;
mod resources;
mod services;

pub use clashes::forced_replicas;
pub use files::{DEFAULT_CONFIG_MODE, DEFAULT_SECRET_MODE, MAX_CONFIG_BYTES};
pub use network::{Cidr, is_private};
pub use ports::{display_port, parse_port, ports_clash};
pub use services::effective_max_per_node;

/// Longest name of any object.
pub const MAX_NAME_LEN: usize = 40;

/// Collects diagnostics for documents that may come from different files.
struct Report<'a> {
    diags: &'a mut Vec<Diagnostic>,
    /// Config file contents to use instead of reading the files (a revision rolled back to):
    /// resolved path → content.
    configs: Option<&'a std::collections::BTreeMap<String, Vec<u8>>>,
}

impl Report<'_> {
    fn err(&mut self, file: &str, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(file, pos, path, msg));
    }
    fn warn(&mut self, file: &str, pos: Pos, path: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(file, pos, path, msg));
    }
    /// Errors reported so far (warnings not counted).
    fn error_count(&self) -> usize {
        self.diags
            .iter()
            .filter(|d| d.severity == crate::manifest::error::Severity::Error)
            .count()
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
    validate_with(docs, diags, None)
}

/// As [`validate`], with the config files' contents given (resolved path → content) instead
/// of read from disk; a config file not in `configs` is read from disk.
pub fn validate_with(
    docs: &[RawDocument],
    diags: &mut Vec<Diagnostic>,
    configs: Option<&std::collections::BTreeMap<String, Vec<u8>>>,
) -> Option<DesiredFleet> {
    let mut r = Report { diags, configs };

    let named = named_documents(&mut r, docs);

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
    let raw_secrets = of_kind!(Secret);

    let fleet = fleet::fleet(&mut r, &fleets);
    let nodes = nodes::nodes(&mut r, &raw_nodes);
    let secrets = files::secrets(&mut r, &raw_secrets);
    let policies = policies::policies(&mut r, &raw_policies, &nodes);
    let plug_classes =
        plug_classes::plug_classes(&mut r, &raw_classes, &nodes, &policies, &secrets);
    let services = services::services(&mut r, &raw_services, &nodes, &secrets);
    let referenced: BTreeSet<String> = raw_services
        .iter()
        .flat_map(|s| files::referenced_secrets(&s.spec.env, &s.spec.secrets))
        .chain(
            raw_classes
                .iter()
                .flat_map(|c| files::referenced_secrets(&c.spec.env, &c.spec.secrets)),
        )
        .collect();
    files::warn_unused(&mut r, &raw_secrets, &referenced);

    clashes::check_forced_services(&mut r, &raw_services, &services, &nodes);
    clashes::check_shared_host_ports(&mut r, &raw_services, &services, &nodes);
    network::check_fleet(
        &mut r,
        &fleets,
        &fleet.network,
        &raw_nodes,
        &nodes,
        &raw_services,
        &services,
    );

    if r.diags.iter().any(Diagnostic::is_error) {
        return None;
    }
    Some(DesiredFleet {
        fleet,
        nodes,
        services,
        plug_classes,
        policies,
        secrets,
        image_digests: BTreeMap::new(),
        secret_values: Default::default(),
    })
}

/// Every document with a name, checking names and their uniqueness per kind (and labels). A
/// document whose name breaks the rules is still returned, so the rest of it is checked too.
fn named_documents<'d>(r: &mut Report, docs: &'d [RawDocument]) -> Vec<(&'d RawDocument, String)> {
    let mut seen: BTreeMap<(Kind, String), (String, Pos)> = BTreeMap::new();
    let mut named: Vec<(&RawDocument, String)> = Vec::new();
    for doc in docs {
        let Some(name) = &doc.metadata.name else {
            continue;
        };
        check_labels(r, &doc.file, "metadata.labels", &doc.metadata.labels);
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
    named
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

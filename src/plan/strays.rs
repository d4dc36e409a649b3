//! Observed containers sorted by the object they belong to, and the strays: containers of this
//! fleet that nothing wanted claims (a removed service, a replica beyond `replicas`, a deleted
//! plug, a stale copy of a moved plug). Strays go, each in its own group.

use std::collections::{BTreeMap, BTreeSet};

use super::object::Copy;
use super::wanted::Wanted;
use super::{Action, Identity, Object, Snapshot, Step, grace_secs, identity};
use crate::container::labels;
use crate::observe::Observed;

/// Observed copies of every object on reachable nodes, and the strays among them.
pub(super) struct Sorted<'a> {
    /// Copies by the object their labels name.
    pub copies: BTreeMap<Identity, Vec<Copy<'a>>>,
    /// Containers no wanted container claims.
    pub strays: Vec<Copy<'a>>,
}

/// Sorts the containers observed on reachable nodes by object; those without an identity, or
/// whose object is not wanted, are strays.
pub(super) fn sort<'a>(s: &Snapshot<'a>, wanted: &[Wanted]) -> Sorted<'a> {
    let mut copies: BTreeMap<Identity, Vec<Copy<'a>>> = BTreeMap::new();
    let mut strays: Vec<Copy<'a>> = Vec::new();
    for (node, _) in s
        .observed
        .nodes
        .iter()
        .filter(|(n, _)| s.observed.is_reachable(n))
    {
        for o in s.observed.containers(node) {
            match identity(o) {
                Some(id) => copies.entry(id).or_default().push((node.as_str(), o)),
                None => strays.push((node.as_str(), o)),
            }
        }
    }
    let wanted_ids: BTreeSet<&Identity> = wanted.iter().map(|w| &w.identity).collect();
    for (id, list) in &copies {
        if !wanted_ids.contains(id) {
            strays.extend(list.iter().copied());
        }
    }
    Sorted { copies, strays }
}

/// One removal per stray, each in its own group, with why it is a stray.
pub(super) fn removals(s: &Snapshot, strays: &[Copy]) -> Vec<Step> {
    strays
        .iter()
        .map(|(node, o)| Step {
            node: node.to_string(),
            container: o.record.name.clone(),
            object: Object::Stray,
            action: Action::Remove {
                id: o.record.id.clone(),
                grace_secs: grace_secs(o),
            },
            reason: stray_reason(s, o),
            group: Object::Stray.group(&o.record.name),
        })
        .collect()
}

fn stray_reason(s: &Snapshot, o: &Observed) -> String {
    let r = &o.record;
    match r.label(labels::KIND) {
        Some("service") => match r.label(labels::SERVICE) {
            Some(svc) if s.fleet.services.contains_key(svc) => {
                let n = s.fleet.services[svc].replicas;
                let replica = r.label(labels::REPLICA).unwrap_or("?");
                let node = r.label(labels::NODE).unwrap_or("?");
                match replica.parse::<u32>() {
                    Ok(i) if i < n && s.evict.contains(node) => format!(
                        "replica {replica} evicted from {node} (drain --force): no other node may run it"
                    ),
                    Ok(i) if i < n => format!("replica {replica} may not run on {node} any more"),
                    _ => format!("replica {replica} is beyond replicas: {n}"),
                }
            }
            Some(svc) => format!("service {svc} is not in the manifests"),
            None => "service container without a service label".into(),
        },
        Some("plug") => match r.label(labels::PLUG) {
            Some(id) => match s.plugs.iter().find(|p| p.id == id) {
                Some(p) if !s.fleet.plug_classes.contains_key(&p.class) => {
                    format!("plug class {} is not in the manifests", p.class)
                }
                Some(p) => format!("stale copy: plug {id} lives on {}", p.node),
                None => format!("plug {id} was deleted"),
            },
            None => "plug container without a plug label".into(),
        },
        _ => "unknown kind".into(),
    }
}

//! Per object: the steps that turn the observed copies of one wanted container into it — keep
//! the right copy (updating, starting or stopping it), or replace an old copy (same node or a
//! move), or create it; then remove every other copy.

use super::ports::{held_ports, join_ports};
use super::reasons::{
    describe, in_place_changes, move_reason, recreate_reason, removes_a_limit, state_word,
};
use super::wanted::Wanted;
use super::{Action, Identity, Object, Snapshot, Step, StepGroup, grace_of, grace_secs};
use crate::container::{ContainerSpec, EngineKind, NetworkAttachment, RunState, labels};
use crate::manifest::UpdateOrder;
use crate::observe::Observed;

/// An observed copy of an object: its node and the container.
pub(super) type Copy<'a> = (&'a str, &'a Observed);

/// What one wanted container needs.
#[derive(Debug, Default)]
pub(super) struct ObjectSteps {
    /// Its steps, in the order they run.
    pub steps: Vec<Step>,
    /// (node, container) when the kept copy is already as desired.
    pub unchanged: Option<(String, String)>,
}

/// The steps for `w`, given every observed copy of its object on reachable nodes. Its node is
/// reachable (nothing can be done on an unreachable one).
pub(super) fn steps(s: &Snapshot, w: &Wanted, copies: &[Copy]) -> ObjectSteps {
    let mut b = Builder {
        wanted: w,
        group: w.object.group(&w.spec.name),
        steps: Vec::new(),
    };
    let mut unchanged = None;
    let replaced = match kept_copy(w, copies) {
        Some(o) => {
            if converge_kept(&mut b, o, s.observed.engine_kind(&w.node)) {
                unchanged = Some((w.node.clone(), o.record.name.clone()));
            }
            Some(o.record.id.as_str())
        }
        None => replace_or_create(&mut b, s, copies),
    };
    remove_extra_copies(&mut b, s, copies, replaced);
    // A service's replacements roll one replica at a time (one group per service); steps that
    // replace nothing (creates, updates, starts) run in parallel, one group per replica.
    if !b
        .steps
        .iter()
        .any(|st| matches!(st.action, Action::Replace { .. }))
        && let Object::Service { name, replica } = &w.object
    {
        for st in &mut b.steps {
            st.group = StepGroup::Replica(name.clone(), *replica);
        }
    }
    ObjectSteps {
        steps: b.steps,
        unchanged,
    }
}

/// Collects the steps of one object, all in its group.
struct Builder<'w> {
    wanted: &'w Wanted,
    group: StepGroup,
    steps: Vec<Step>,
}

impl Builder<'_> {
    fn step(&mut self, node: &str, container: &str, action: Action, reason: String) {
        self.steps.push(Step {
            node: node.to_string(),
            container: container.to_string(),
            object: self.wanted.object.clone(),
            action,
            reason,
            group: self.group.clone(),
        });
    }
}

/// The copy to keep: on the right node with the right hash, running ones first, then the newest.
fn kept_copy<'a>(w: &Wanted, copies: &[Copy<'a>]) -> Option<&'a Observed> {
    let hash = w.spec.labels.get(labels::SPEC_HASH);
    copies
        .iter()
        .filter(|(n, o)| {
            *n == w.node.as_str() && o.record.label(labels::SPEC_HASH) == hash.map(String::as_str)
        })
        .max_by_key(|(_, o)| (o.record.state == RunState::Running, o.record.created))
        .map(|(_, o)| *o)
}

/// Steps for the kept copy `o`: in-place limit changes (or a stop-first recreate when a limit
/// goes, which the engine cannot do in place, or when the node's engine — Podman — has no
/// in-place update at all), then start or stop it. Returns whether it is already as desired.
fn converge_kept(b: &mut Builder, o: &Observed, engine: EngineKind) -> bool {
    let w = b.wanted;
    let (node, spec) = (&w.node, &w.spec);
    let observed = o
        .details
        .as_ref()
        .map(|d| (&d.spec.resources, d.spec.restart));
    let mut recreated = false;
    if let Some(have) = detached(o, spec) {
        // Same spec, but the engine lost its attachment (e.g. a network removed by hand): only a
        // new container joins it again. Same name, so the old one goes first.
        recreate_in_place(
            b,
            o,
            format!(
                "network: {have} → {} (not attached), recreate",
                spec.network.name()
            ),
        );
        return false;
    }
    if let Some((res, restart)) = observed {
        let changes = in_place_changes(res, restart, &spec.resources, spec.restart);
        if !changes.is_empty() && removes_a_limit(res, &spec.resources) {
            // The engine reads 0 as "unchanged", so a limit cannot be removed in place. Same
            // spec hash, same name: the old container goes first.
            recreate_in_place(
                b,
                o,
                format!(
                    "{}, recreate (stop-first: the engine cannot remove a limit in place)",
                    changes.join(", ")
                ),
            );
            recreated = true;
        } else if !changes.is_empty() && !engine.updates_in_place() {
            // Podman answers 404 to `POST /containers/{id}/update`: a new container with the
            // new limits. Same spec hash, same name: the old container goes first.
            recreate_in_place(
                b,
                o,
                format!(
                    "{}, recreate stop-first ({engine} has no in-place update)",
                    changes.join(", ")
                ),
            );
            recreated = true;
        } else if !changes.is_empty() {
            b.step(
                node,
                &o.record.name,
                Action::Update {
                    id: o.record.id.clone(),
                    resources: spec.resources.clone(),
                    restart: spec.restart,
                },
                format!("{}, in place", changes.join(", ")),
            );
        }
    }
    let running = o.record.state == RunState::Running;
    let mut unchanged = false;
    if recreated {
        // The replacement starts it.
    } else if w.run && !running {
        b.step(
            node,
            &o.record.name,
            Action::Start {
                id: o.record.id.clone(),
                healthcheck: spec.healthcheck.is_some(),
            },
            format!("{} container, should run", state_word(o.record.state)),
        );
    } else if !w.run && running {
        b.step(
            node,
            &o.record.name,
            Action::Stop {
                id: o.record.id.clone(),
                grace_secs: grace_of(spec),
            },
            "plug is stopped".into(),
        );
    } else {
        unchanged = true;
    }
    unchanged
        && observed.is_some_and(|(res, restart)| {
            in_place_changes(res, restart, &spec.resources, spec.restart).is_empty()
        })
}

/// Replaces the kept copy `o` by the same spec on its node: same hash, same name, so the old
/// container goes first (stop-first).
fn recreate_in_place(b: &mut Builder, o: &Observed, reason: String) {
    let (node, spec) = (&b.wanted.node, &b.wanted.spec);
    let action = Action::Replace {
        old_node: node.clone(),
        old_id: o.record.id.clone(),
        old_name: o.record.name.clone(),
        old_grace_secs: grace_secs(o),
        spec: Box::new(spec.clone()),
        order: UpdateOrder::StopFirst,
    };
    let (node, name) = (node.clone(), spec.name.clone());
    b.step(&node, &name, action, reason);
}

/// The networks a running container is on when its spec names the fleet's network and the
/// engine lists it elsewhere; `None` when attached as desired (or when the listing does not say:
/// an engine lists at least one network for every container).
fn detached(o: &Observed, spec: &ContainerSpec) -> Option<String> {
    let NetworkAttachment::Fleet { network, .. } = &spec.network else {
        return None;
    };
    let nets = &o.record.networks;
    (o.record.state == RunState::Running && !nets.is_empty() && !nets.contains(network))
        .then(|| nets.join(","))
}

/// No copy to keep: replace an old copy — on this node first (stop-first may need its ports),
/// else on another node (a move; always start-first) — or create it. Returns the id of the
/// replaced copy.
fn replace_or_create<'a>(b: &mut Builder, s: &Snapshot, copies: &[Copy<'a>]) -> Option<&'a str> {
    let w = b.wanted;
    let (node, spec) = (&w.node, &w.spec);
    let old = copies
        .iter()
        .filter(|(n, _)| *n == node.as_str())
        .chain(copies.iter().filter(|(n, _)| *n != node.as_str()))
        .next();
    let Some((old_node, o)) = old else {
        let reason = match &w.object {
            Object::Service { name, replica } => {
                format!("replica {replica} of {name} is missing")
            }
            Object::Plug { .. } => "plug container is missing".into(),
            Object::Stray => unreachable!("strays are never desired"),
        };
        if w.run {
            b.step(
                node,
                &spec.name,
                Action::Create {
                    spec: Box::new(spec.clone()),
                },
                reason,
            );
        }
        return None;
    };
    if !w.run && *old_node == node.as_str() {
        // A plug that should not run (stopped for idleness, evicted) keeps its old container on
        // its node, stopped: a replacement would start the new one (every idle plug at once
        // after an upgrade that changes specs). It is replaced when it runs again. (A move to
        // another node — a drain — is still a replacement.)
        if o.record.state == RunState::Running {
            b.step(
                old_node,
                &o.record.name,
                Action::Stop {
                    id: o.record.id.clone(),
                    grace_secs: grace_of(spec),
                },
                "plug is stopped".into(),
            );
        }
        return Some(o.record.id.as_str());
    }
    let same_node = *old_node == node.as_str();
    let mut order = match (&w.identity, same_node) {
        (_, false) => UpdateOrder::StartFirst,
        (Identity::Service(svc, _), true) => s.fleet.services[svc].update_order,
        // A plug keeps its host port: the old one must let go of it first.
        (Identity::Plug(_), true) => UpdateOrder::StopFirst,
    };
    // Start-first cannot bind a host port the old container holds on the same node: such a
    // recreate is stop-first, and says why.
    let held = if same_node {
        held_ports(o, spec)
    } else {
        Vec::new()
    };
    let order_note = if order == UpdateOrder::StartFirst && !held.is_empty() {
        order = UpdateOrder::StopFirst;
        format!(
            "stop-first: the old container holds host port {}",
            join_ports(&held)
        )
    } else {
        order.as_str().to_string()
    };
    let reason = if same_node {
        format!("{}, recreate ({order_note})", recreate_reason(spec, o))
    } else {
        format!("from {old_node}: {}", move_reason(s, old_node))
    };
    b.step(
        node,
        &spec.name,
        Action::Replace {
            old_node: old_node.to_string(),
            old_id: o.record.id.clone(),
            old_name: o.record.name.clone(),
            old_grace_secs: grace_secs(o),
            spec: Box::new(spec.clone()),
            order,
        },
        reason,
    );
    Some(o.record.id.as_str())
}

/// Every other copy of the object goes, after the kept or new one is up — except a running copy
/// on the same node that holds host ports the kept one must bind to start: that one goes first
/// (else the start fails on every pass, e.g. after an interrupted start-first recreate).
fn remove_extra_copies(b: &mut Builder, s: &Snapshot, copies: &[Copy], replaced: Option<&str>) {
    let w = b.wanted;
    let starts_kept = b
        .steps
        .iter()
        .position(|st| matches!(st.action, Action::Start { .. }));
    for (n, o) in copies {
        if Some(o.record.id.as_str()) == replaced {
            continue;
        }
        if !s.observed.is_reachable(n) {
            continue;
        }
        let blocking =
            starts_kept.is_some() && *n == w.node.as_str() && !held_ports(o, &w.spec).is_empty();
        let reason = if blocking {
            format!(
                "extra copy of {}, removed first: it holds host port {}",
                describe(&w.object),
                join_ports(&held_ports(o, &w.spec))
            )
        } else {
            format!("extra copy of {}", describe(&w.object))
        };
        let removal = Step {
            node: n.to_string(),
            container: o.record.name.clone(),
            object: w.object.clone(),
            action: Action::Remove {
                id: o.record.id.clone(),
                grace_secs: grace_secs(o),
            },
            reason,
            group: b.group.clone(),
        };
        match starts_kept {
            Some(i) if blocking => b.steps.insert(i, removal),
            _ => b.steps.push(removal),
        }
    }
}

//! Reasons in words: what a step is about, what changed between the observed container and the
//! desired spec, and why something moves. Also the judgement of which limit changes the engine
//! can make in place.

use std::collections::BTreeSet;

use super::{Object, Snapshot};
use crate::container::{ContainerSpec, Knobs, Resources, RestartPolicy, RunState, labels};
use crate::manifest::{Bytes, MilliCpus};
use crate::observe::Observed;

pub(super) fn describe(object: &Object) -> String {
    match object {
        Object::Service { name, replica } => format!("{name} replica {replica}"),
        Object::Plug { id } => format!("plug {id}"),
        Object::Stray => "stray".into(),
    }
}

pub(super) fn state_word(state: RunState) -> &'static str {
    match state {
        RunState::Created => "created, never started",
        RunState::Exited => "exited",
        RunState::Dead => "dead",
        RunState::Paused => "paused",
        RunState::Restarting => "restarting",
        RunState::Removing => "removing",
        RunState::Running => "running",
    }
}

pub(super) fn move_reason(s: &Snapshot, old_node: &str) -> String {
    let c = s.conditions.get(old_node).cloned().unwrap_or_default();
    if c.schedule().must_vacate() {
        format!("{old_node} is draining")
    } else if s.lost.contains(old_node) {
        format!("{old_node} is not ready")
    } else {
        "placement changed".into()
    }
}

/// Whether going from `have` to `want` drops a limit the engine applies now (memory
/// reservation, CPU quota, CPU shares, cpuset): the engine's update call cannot do that.
pub fn removes_a_limit(have: &Resources, want: &Resources) -> bool {
    let set = |v: Option<u64>| v.is_some_and(|x| x != 0);
    (set(have.memory_reservation) && !set(want.memory_reservation))
        || (set(have.nano_cpus) && !set(want.nano_cpus))
        || (set(have.cpu_shares) && !set(want.cpu_shares))
        || (have.cpuset.as_ref().is_some_and(|c| !c.is_empty())
            && want.cpuset.as_ref().is_none_or(|c| c.is_empty()))
}

/// In-place changes between observed and desired limits, in words.
pub fn in_place_changes(
    have: &Resources,
    have_restart: RestartPolicy,
    want: &Resources,
    want_restart: RestartPolicy,
) -> Vec<String> {
    let mut out = Vec::new();
    let nz = |v: Option<u64>| v.filter(|x| *x != 0);
    let bytes = |v: Option<u64>| nz(v).map_or("none".to_string(), |b| Bytes(b).to_string());
    if have.memory != want.memory {
        out.push(format!(
            "memory {} → {}",
            bytes(Some(have.memory)),
            bytes(Some(want.memory))
        ));
    }
    if nz(have.memory_reservation) != nz(want.memory_reservation) {
        out.push(format!(
            "memoryReservation {} → {}",
            bytes(have.memory_reservation),
            bytes(want.memory_reservation)
        ));
    }
    let cpus =
        |v: Option<u64>| nz(v).map_or("none".to_string(), |n| MilliCpus(n / 1_000_000).to_string());
    if nz(have.nano_cpus) != nz(want.nano_cpus) {
        out.push(format!(
            "cpus {} → {}",
            cpus(have.nano_cpus),
            cpus(want.nano_cpus)
        ));
    }
    if nz(have.cpu_shares) != nz(want.cpu_shares) {
        let s = |v: Option<u64>| nz(v).map_or("default".to_string(), |n| n.to_string());
        out.push(format!(
            "cpuShares {} → {}",
            s(have.cpu_shares),
            s(want.cpu_shares)
        ));
    }
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if set(&have.cpuset) != set(&want.cpuset) {
        let s = |v: &Option<String>| set(v).unwrap_or_else(|| "all".into());
        out.push(format!("cpuset {} → {}", s(&have.cpuset), s(&want.cpuset)));
    }
    if have_restart != want_restart {
        out.push(format!(
            "restart {} → {}",
            have_restart.as_str(),
            want_restart.as_str()
        ));
    }
    out
}

/// What differs between the observed container and the desired spec (hash-covered fields).
pub(super) fn recreate_reason(want: &ContainerSpec, o: &Observed) -> String {
    let Some(d) = &o.details else {
        return "spec changed".into();
    };
    let have = &d.spec;
    let mut out = Vec::new();
    if have.network.name() != want.network.name() {
        out.push(format!(
            "network: {} → {}",
            have.network.name(),
            want.network.name()
        ));
    } else if have.network != want.network {
        out.push("aliases changed".into());
    }
    // The engine reports what it was given: `repository@digest` for a pinned image.
    let (have_pin, want_pin) = (
        have.labels.get(labels::IMAGE_PIN),
        want.labels.get(labels::IMAGE_PIN),
    );
    if have_pin != want_pin {
        let shown =
            |pin: Option<&String>, image: &str| pin.map_or(image.to_string(), String::clone);
        out.push(format!(
            "image {} → {}",
            shown(have_pin, &have.image),
            shown(want_pin, &want.image)
        ));
    } else if have.image != want.run_image() && have.image != want.image {
        out.push(format!("image {} → {}", have.image, want.image));
    }
    if let Some(cmd) = &want.command
        && have.command.as_ref() != Some(cmd)
    {
        out.push("command changed".into());
    }
    let env: Vec<&str> = want
        .env
        .iter()
        .filter(|(k, v)| have.env.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if !env.is_empty() {
        out.push(format!("env {} changed", env.join(", ")));
    }
    // Secrets and configs by name, from the digests in the labels (SPEC §12); never a value.
    for (label, kind) in [(labels::SECRETS, "secret"), (labels::CONFIGS, "config")] {
        let have_d = crate::secrets::parse_label(have.labels.get(label).map_or("", String::as_str));
        let want_d = crate::secrets::parse_label(want.labels.get(label).map_or("", String::as_str));
        for (name, d) in &want_d {
            match have_d.get(name) {
                Some(h) if h == d => {}
                Some(_) => out.push(format!("{kind} {name} changed")),
                None => out.push(format!("{kind} {name} added")),
            }
        }
        for name in have_d.keys().filter(|n| !want_d.contains_key(*n)) {
            out.push(format!("{kind} {name} removed"));
        }
    }
    if have.labels.get(labels::SECRET_ENV) != want.labels.get(labels::SECRET_ENV) {
        out.push("secret variables changed".into());
    }
    let mut hp: Vec<_> = have.ports.clone();
    let mut wp: Vec<_> = want.ports.clone();
    hp.sort();
    wp.sort();
    if hp != wp {
        out.push("ports changed".into());
    }
    if have.volumes.iter().collect::<BTreeSet<_>>() != want.volumes.iter().collect::<BTreeSet<_>>()
    {
        out.push("volumes changed".into());
    }
    if want.healthcheck.is_some() && have.healthcheck != want.healthcheck {
        out.push("healthcheck changed".into());
    }
    out.extend(knob_changes(&have.knobs, &want.knobs));
    if have.labels.get(labels::NODE) != want.labels.get(labels::NODE) {
        out.push("node label changed".into());
    }
    if out.is_empty() {
        let old = o.record.label(labels::SPEC_HASH).unwrap_or("none");
        let new = want
            .labels
            .get(labels::SPEC_HASH)
            .map_or("none", String::as_str);
        out.push(format!("spec changed (hash {old} → {new})"));
    }
    out.join(", ")
}

/// Which knobs (SPEC §13) differ, in words. The user, working directory and stop signal read
/// back from the engine are the image's when the spec leaves them out, so they count only when
/// the spec sets them.
fn knob_changes(have: &Knobs, want: &Knobs) -> Vec<String> {
    let mut out = Vec::new();
    if (have.log_max_size, have.log_max_files) != (want.log_max_size, want.log_max_files) {
        out.push("logging changed".into());
    }
    if have.ulimits != want.ulimits {
        out.push("ulimits changed".into());
    }
    if have.sysctls != want.sysctls {
        out.push("sysctls changed".into());
    }
    let set_and_differs = |h: &Option<String>, w: &Option<String>| w.is_some() && h != w;
    if set_and_differs(&have.user, &want.user) {
        out.push("user changed".into());
    }
    if set_and_differs(&have.working_dir, &want.working_dir) {
        out.push("workingDir changed".into());
    }
    if have.read_only != want.read_only {
        out.push("readOnly changed".into());
    }
    if have.cap_add != want.cap_add || have.cap_drop != want.cap_drop {
        out.push("capabilities changed".into());
    }
    if set_and_differs(&have.stop_signal, &want.stop_signal) {
        out.push("stopSignal changed".into());
    }
    out
}

//! fleetctl's own records on the nodes, beside the fleet's containers: never-started containers
//! of an empty image, whose atomic creation and labels hold what every machine running
//! fleetctl must see whatever its state file — the fleet lease ([`crate::lease::nodes`]) and
//! plug tombstones (a plug deleted through one state file stays deleted through another) and
//! node conditions (a node cordoned or drained through one state file is through every other).
//!
//! None carries the fleet's container labels: a record is never observed as one of the fleet's
//! containers, counted as a foreign one, nor removed as a stray.

use std::collections::BTreeMap;

use crate::condition::{Mark, Schedule};
use crate::container::{ContainerRecord, ContainerSpec};
use crate::transport::{NodeRuntime, TransportError};

/// The image of records: empty (no layers, 0 bytes), imported on the node when missing.
pub const IMAGE: &str = "fleetctl/lease:1";

/// Labels of a tombstone record.
pub mod tombstone {
    /// The fleet (its presence makes the container a tombstone).
    pub const FLEET: &str = "fleet.tombstone";
    /// The deleted plug's id.
    pub const PLUG: &str = "fleet.tombstone.plug";
    /// When it was deleted (ms since the epoch).
    pub const DELETED: &str = "fleet.tombstone.deleted";
}

/// Label whose presence marks a lease record.
pub const LEASE_LABEL: &str = "fleet.lease";

/// Labels of a node condition record.
pub mod condition {
    /// The fleet (its presence makes the container a condition record).
    pub const FLEET: &str = "fleet.condition";
    /// The node the condition is about (records of it are kept on every node).
    pub const NODE: &str = "fleet.condition.node";
    /// `schedulable`, `cordoned`, `draining` or `drained`.
    pub const SCHEDULE: &str = "fleet.condition.schedule";
    /// When that condition was set (ms since the epoch).
    pub const SINCE: &str = "fleet.condition.since";
    /// Who set it.
    pub const BY: &str = "fleet.condition.by";
}

/// Whether a listed container is one of fleetctl's records (of any fleet).
pub fn is_record(r: &ContainerRecord) -> bool {
    r.labels.contains_key(LEASE_LABEL)
        || r.labels.contains_key(tombstone::FLEET)
        || r.labels.contains_key(condition::FLEET)
}

/// A record's container spec: `name`, `labels`, the empty image, never started.
pub fn spec(name: String, labels: BTreeMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        secret_env: Default::default(),
        files: Vec::new(),
        knobs: Default::default(),
        pull: Default::default(),
        network: crate::container::NetworkAttachment::Default,
        name,
        image: IMAGE.to_string(),
        // Never started: the empty image has nothing to run.
        command: Some(vec!["fleetctl-record".to_string()]),
        env: BTreeMap::new(),
        labels,
        ports: vec![],
        volumes: vec![],
        restart: Default::default(),
        resources: Default::default(),
        healthcheck: None,
        stop_grace_period: None,
    }
}

/// Creates a record, importing the empty image first when the node lacks it.
///
/// # Errors
/// As `create_container` ([`crate::transport::ErrorKind::Conflict`] when the name exists).
pub async fn create(rt: &dyn NodeRuntime, spec: &ContainerSpec) -> Result<String, TransportError> {
    match rt.create_container(spec).await {
        Err(e) if e.is_not_found() => {
            rt.import_image(IMAGE, crate::archive::empty()).await?;
            rt.create_container(spec).await
        }
        other => other,
    }
}

/// The name of plug `plug`'s tombstone in `fleet`.
pub fn tombstone_name(fleet: &str, plug: &str) -> String {
    // `.` separates: names are letters, digits and `-`, so no two (fleet, plug) share one.
    format!("fleetctl-tombstone.{fleet}.{plug}")
}

/// Records on the node that plug `plug` of `fleet` was deleted at `deleted_ms` (one that is
/// already there is kept).
///
/// # Errors
/// Transport failures.
pub async fn write_tombstone(
    rt: &dyn NodeRuntime,
    fleet: &str,
    plug: &str,
    deleted_ms: i64,
) -> Result<(), TransportError> {
    let labels = BTreeMap::from([
        (tombstone::FLEET.to_string(), fleet.to_string()),
        (tombstone::PLUG.to_string(), plug.to_string()),
        (tombstone::DELETED.to_string(), deleted_ms.to_string()),
    ]);
    match create(rt, &spec(tombstone_name(fleet, plug), labels)).await {
        Err(e) if e.is_conflict() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// `(plug, deleted_ms)` of a listed tombstone record of `fleet`.
pub fn read_tombstone(r: &ContainerRecord, fleet: &str) -> Option<(String, i64)> {
    if r.label(tombstone::FLEET) != Some(fleet) {
        return None;
    }
    Some((
        r.label(tombstone::PLUG)?.to_string(),
        r.label(tombstone::DELETED)?.parse().ok()?,
    ))
}

/// The name of the record of `node`'s condition in `fleet` (one on every node).
pub fn condition_name(fleet: &str, node: &str) -> String {
    // `.` separates: names are letters, digits and `-`, so no two (fleet, node) share one.
    format!("fleetctl-condition.{fleet}.{node}")
}

/// `(node, mark)` of a listed condition record of `fleet`.
pub fn read_mark(r: &ContainerRecord, fleet: &str) -> Option<(String, Mark)> {
    if r.label(condition::FLEET) != Some(fleet) {
        return None;
    }
    Some((
        r.label(condition::NODE)?.to_string(),
        Mark {
            schedule: Schedule::from_word(r.label(condition::SCHEDULE)?)?,
            since_ms: r.label(condition::SINCE)?.parse().ok()?,
            by: r.label(condition::BY).unwrap_or_default().to_string(),
        },
    ))
}

/// Records on the node reached by `rt` that `node`'s condition in `fleet` is `mark`, replacing
/// an older record; a record at least as new is kept (the newest change wins everywhere).
///
/// # Errors
/// Transport failures.
pub async fn write_mark(
    rt: &dyn NodeRuntime,
    fleet: &str,
    node: &str,
    mark: &Mark,
) -> Result<(), TransportError> {
    let name = condition_name(fleet, node);
    match rt.inspect_container(&name).await {
        Ok(d) => {
            let labels = &d.spec.labels;
            let since = labels
                .get(condition::SINCE)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let word = labels.get(condition::SCHEDULE).map_or("", String::as_str);
            // Newer (or as new, with the later word: see `reconcile_marks`) stays.
            if (since, word) >= (mark.since_ms, mark.schedule.word()) {
                return Ok(());
            }
            match rt.remove_container(&d.record.id).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let labels = BTreeMap::from([
        (condition::FLEET.to_string(), fleet.to_string()),
        (condition::NODE.to_string(), node.to_string()),
        (
            condition::SCHEDULE.to_string(),
            mark.schedule.word().to_string(),
        ),
        (condition::SINCE.to_string(), mark.since_ms.to_string()),
        (condition::BY.to_string(), mark.by.clone()),
    ]);
    match create(rt, &spec(name, labels)).await {
        // Another writer raced us: the newest wins at the next comparison.
        Err(e) if e.is_conflict() => Ok(()),
        other => other.map(|_| ()),
    }
}

//! fleetctl's own records on the nodes, beside the fleet's containers: never-started containers
//! of an empty image, whose atomic creation and labels hold what every machine running
//! fleetctl must see whatever its state file — the fleet lease ([`crate::lease::nodes`]) and
//! plug tombstones (a plug deleted through one state file stays deleted through another).
//!
//! None carries the fleet's container labels: a record is never observed as one of the fleet's
//! containers, counted as a foreign one, nor removed as a stray.

use std::collections::BTreeMap;

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

/// Whether a listed container is one of fleetctl's records (of any fleet).
pub fn is_record(r: &ContainerRecord) -> bool {
    r.labels.contains_key(LEASE_LABEL) || r.labels.contains_key(tombstone::FLEET)
}

/// A record's container spec: `name`, `labels`, the empty image, never started.
pub fn spec(name: String, labels: BTreeMap<String, String>) -> ContainerSpec {
    ContainerSpec {
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
    format!("fleetctl-tombstone-{fleet}-{plug}")
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

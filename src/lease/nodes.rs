//! The fleet lease held on the nodes themselves, so that every machine that runs fleetctl —
//! whatever its state file — sees it (docs/state.md, "The lease on the nodes").
//!
//! On each node the lease is a container named `fleetctl-lease-<fleet>` that never starts (a
//! [`crate::records`] record: an empty image fleetctl imports on the node, no registry), its
//! labels say who holds the lease (holder, kind, API address, since, fencing token, first
//! expiry), and a file `/lease` written into it through the engine's archive API carries the
//! expiry of the last renewal. Creating a container whose name exists fails in the engine, so
//! taking the lease on a node is atomic; a record whose expiry has passed is removed (by id, so
//! a newer holder's record is never removed by mistake) and created again.
//!
//! **Which nodes.** An actor holds the fleet lease when it holds the record on *every node that
//! answers* (at least one), with no record of another live holder on any of them; a node that
//! comes back is taken on the next renewal, and another holder's record found there ends the
//! lease. Decision and failure modes (docs/state.md): a down node never blocks work (the common
//! case: a VPS rebooting); two actors that see disjoint sets of nodes (a network partition
//! between the operators, not between fleetctl and a node) could both hold it. A quorum would
//! exclude that but would stop every apply of a two-node fleet whose first node is down, and
//! stop the controller when most of the fleet is unreachable — the moments an operator most
//! needs to act.
//!
//! **Clocks.** Expiries are wall-clock times written by the holder and read by others: the
//! machines' clocks must agree within the holder's safety margin (5 s; NTP does far better).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::observe::on_nodes;

use crate::container::ContainerSpec;
use crate::execute::Runtimes;
use crate::store::{LeaseInfo, now_ms};
use crate::transport::{NodeRuntime, TransportError};

/// Directory of the renewal file in a lease record.
const FILE_DIR: &str = "/";
/// Name of the renewal file.
const FILE_NAME: &str = "lease";

/// Labels of a lease record. None is one of the fleet's container labels: a record is never
/// observed as part of the fleet, nor removed as a stray.
mod label {
    pub const FLEET: &str = crate::records::LEASE_LABEL;
    pub const HOLDER: &str = "fleet.lease.holder";
    pub const KIND: &str = "fleet.lease.kind";
    pub const API: &str = "fleet.lease.api";
    pub const SINCE: &str = "fleet.lease.since";
    pub const TOKEN: &str = "fleet.lease.token";
    pub const EXPIRES: &str = "fleet.lease.expires";
    pub const MACHINE: &str = "fleet.lease.machine";
}

/// How long one node may take over one lease operation (take, renew, read, give back): well
/// under the holder's safety margin, so one hung node never lets the lease lapse on the others.
const NODE_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// This machine's identity (`/etc/machine-id`), recorded with the lease: a holder is judged
/// dead by its pid only on the machine that runs it — a host name alone is shared by many
/// machines (cloud images, containers).
pub fn machine_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether `record`'s holder is known to be gone: it ran on this very machine (same machine id)
/// and `is_dead` judges its pid gone. A holder on another machine is never judged here.
pub fn holder_gone(record: &Record, is_dead: fn(&str) -> bool) -> bool {
    record.machine.is_some() && record.machine == machine_id() && is_dead(&record.lease.holder)
}

/// The deadline of one round of lease calls over every node: [`NODE_CALL_LIMIT`] from now. One
/// deadline for the whole round, not per node: the round fans out at most
/// [`crate::observe::NODE_CONCURRENCY`] nodes at once, and per-node limits would add up wave
/// after wave (a round over 500 hung nodes would outlast the lease itself).
fn round_deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + NODE_CALL_LIMIT
}

/// `fut` by `deadline` (a round's, [`round_deadline`]), a node that has not answered by then
/// failing as unreachable.
async fn limited<T>(
    node: &str,
    deadline: tokio::time::Instant,
    fut: impl std::future::Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(TransportError::new(
                node,
                "lease",
                crate::transport::ErrorKind::Unreachable,
                format!("no answer within {NODE_CALL_LIMIT:?}"),
            ))
        })
}

/// The name of the lease record of `fleet` on every node.
pub fn record_name(fleet: &str) -> String {
    format!("fleetctl-lease-{fleet}")
}

/// The nodes a lease is held on, and where their I/O runs.
#[derive(Clone)]
pub struct NodeSet {
    fleet: String,
    runtimes: Runtimes,
    handle: tokio::runtime::Handle,
    /// A runtime of the lease's own, when the caller's cannot serve a thread outside it (the
    /// controller runs on one thread). Kept alive as long as any clone of the set.
    _own: Option<Arc<tokio::runtime::Runtime>>,
}

impl std::fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSet")
            .field("fleet", &self.fleet)
            .field("nodes", &self.runtimes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl NodeSet {
    /// The nodes of `runtimes`, their calls run on `handle` — a multi-threaded runtime, whose
    /// workers run them while the caller blocks.
    pub fn shared(fleet: &str, runtimes: Runtimes, handle: tokio::runtime::Handle) -> NodeSet {
        NodeSet {
            fleet: fleet.to_string(),
            runtimes,
            handle,
            _own: None,
        }
    }

    /// The nodes of `runtimes` on a runtime of the lease's own (one worker thread).
    ///
    /// # Errors
    /// The OS refused the thread.
    pub fn own(fleet: &str, runtimes: Runtimes) -> std::io::Result<NodeSet> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lease-io")
            .enable_all()
            .build()?;
        Ok(NodeSet {
            fleet: fleet.to_string(),
            handle: rt.handle().clone(),
            runtimes,
            _own: Some(Arc::new(rt)),
        })
    }

    /// The fleet's name.
    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// Runs `fut` on the set's runtime and waits for it, from any thread that is not one of
    /// that runtime's own.
    fn block<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .expect("the lease's runtime stopped while a lease call was in flight")
    }

    /// Reads every answering node's record (in parallel).
    pub fn read(&self) -> BTreeMap<String, Result<Option<Record>, TransportError>> {
        let fleet = self.fleet.clone();
        let runtimes = self.runtimes.clone();
        self.block(async move {
            let deadline = round_deadline();
            let reads = runtimes.iter().map(|(node, rt)| {
                let fleet = fleet.clone();
                async move {
                    (
                        node.clone(),
                        limited(node, deadline, read(rt.as_ref(), &fleet)).await,
                    )
                }
            });
            on_nodes(reads).await.into_iter().collect()
        })
    }

    /// Tries to take the lease described by `mine` on every node in parallel: on success the
    /// records held; when another live holder has any node, every record just taken is given
    /// back and that holder is returned.
    pub fn try_take(&self, mine: &LeaseInfo, is_dead: fn(&str) -> bool) -> Take {
        let fleet = self.fleet.clone();
        let runtimes = self.runtimes.clone();
        let mine = mine.clone();
        self.block(async move {
            let deadline = round_deadline();
            let tries = runtimes.iter().map(|(node, rt)| {
                let (fleet, mine) = (fleet.clone(), mine.clone());
                async move {
                    (
                        node.clone(),
                        limited(
                            node,
                            deadline,
                            take_one(rt.as_ref(), &fleet, &mine, is_dead),
                        )
                        .await,
                    )
                }
            });
            let results: Vec<(String, Result<One, TransportError>)> = on_nodes(tries).await;
            let mut held = BTreeMap::new();
            let mut other = None;
            let mut failed = BTreeMap::new();
            for (node, r) in results {
                match r {
                    Ok(One::Taken(id)) => {
                        held.insert(node, id);
                    }
                    Ok(One::HeldBy(l)) => {
                        other.get_or_insert_with(|| (l, Vec::new())).1.push(node);
                    }
                    Err(e) => {
                        failed.insert(node, e);
                    }
                }
            }
            if let Some((lease, nodes)) = other {
                give_back(&runtimes, &held).await;
                return Take::Busy { lease, nodes };
            }
            if held.is_empty() {
                return Take::NoNode { failed };
            }
            Take::Held { held, failed }
        })
    }

    /// Renews the records `held` until `expires_ms`, and takes the nodes not held yet (back
    /// from an outage). Returns the records held afterwards.
    ///
    /// # Errors
    /// [`Renewal::Lost`] when a record of ours is gone or another holder has a node;
    /// [`Renewal::Failed`] when no node could be renewed.
    pub fn renew(
        &self,
        mine: &LeaseInfo,
        held: &BTreeMap<String, String>,
        expires_ms: i64,
        is_dead: fn(&str) -> bool,
    ) -> Result<BTreeMap<String, String>, Renewal> {
        let fleet = self.fleet.clone();
        let runtimes = self.runtimes.clone();
        // A node taken (back) now carries the new expiry from the start: with the first one
        // it would look expired to others until the next renewal.
        let mine = LeaseInfo {
            expires_ms,
            ..mine.clone()
        };
        let held = held.clone();
        self.block(async move {
            let deadline = round_deadline();
            let calls = runtimes.iter().map(|(node, rt)| {
                let (fleet, mine) = (fleet.clone(), mine.clone());
                let id = held.get(node).cloned();
                async move {
                    let r = match id {
                        Some(id) => limited(
                            node,
                            deadline,
                            put_expiry(rt.as_ref(), &id, mine.token, expires_ms),
                        )
                        .await
                        .map(|()| One::Taken(id)),
                        None => {
                            limited(
                                node,
                                deadline,
                                take_one(rt.as_ref(), &fleet, &mine, is_dead),
                            )
                            .await
                        }
                    };
                    (node.clone(), r)
                }
            });
            let mut now_held = BTreeMap::new();
            let mut failures = Vec::new();
            for (node, r) in on_nodes(calls).await {
                match r {
                    Ok(One::Taken(id)) => {
                        now_held.insert(node, id);
                    }
                    Ok(One::HeldBy(l)) => {
                        return Err(Renewal::Lost(format!(
                            "node {node}: the lease is held by {} (token {})",
                            l.holder, l.token
                        )));
                    }
                    Err(e) if e.is_not_found() && held.contains_key(&node) => {
                        return Err(Renewal::Lost(format!(
                            "node {node}: our lease record was removed"
                        )));
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            if now_held.is_empty() {
                return Err(Renewal::Failed(failures.join("; ")));
            }
            Ok(now_held)
        })
    }

    /// Removes the records `held` (best effort: a record left behind expires).
    pub fn release(&self, held: &BTreeMap<String, String>) {
        let runtimes = self.runtimes.clone();
        let held = held.clone();
        self.block(async move { give_back(&runtimes, &held).await });
    }
}

/// What taking the lease on the nodes gave.
#[derive(Debug)]
pub enum Take {
    /// Held on these nodes (record ids by node); `failed` did not answer.
    Held {
        /// Record id by node.
        held: BTreeMap<String, String>,
        /// Nodes that did not answer, with why.
        failed: BTreeMap<String, TransportError>,
    },
    /// Another live holder has these nodes.
    Busy {
        /// Its lease.
        lease: LeaseInfo,
        /// The nodes it holds (of those that answered).
        nodes: Vec<String>,
    },
    /// No node answered.
    NoNode {
        /// Why, by node.
        failed: BTreeMap<String, TransportError>,
    },
}

/// Why a renewal on the nodes did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Another actor has the lease: stop now.
    Lost(String),
    /// No node could be reached: retry until the lease runs out.
    Failed(String),
}

/// A lease record read from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's container id.
    pub id: String,
    /// The lease it carries (expiry: the later of the first one and the last renewal's).
    pub lease: LeaseInfo,
    /// The holder's machine id, when it recorded one.
    pub machine: Option<String>,
}

enum One {
    Taken(String),
    HeldBy(LeaseInfo),
}

fn spec(fleet: &str, mine: &LeaseInfo) -> ContainerSpec {
    let mut labels = BTreeMap::from([
        (label::FLEET.to_string(), fleet.to_string()),
        (label::HOLDER.to_string(), mine.holder.clone()),
        (label::KIND.to_string(), mine.kind.clone()),
        (label::SINCE.to_string(), mine.acquired_ms.to_string()),
        (label::TOKEN.to_string(), mine.token.to_string()),
        (label::EXPIRES.to_string(), mine.expires_ms.to_string()),
    ]);
    if let Some(api) = &mine.api {
        labels.insert(label::API.to_string(), api.clone());
    }
    if let Some(m) = machine_id() {
        labels.insert(label::MACHINE.to_string(), m);
    }
    crate::records::spec(record_name(fleet), labels)
}

/// The node's record of `fleet`, if any.
async fn read(rt: &dyn NodeRuntime, fleet: &str) -> Result<Option<Record>, TransportError> {
    let details = match rt.inspect_container(&record_name(fleet)).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let labels = &details.spec.labels;
    let num = |k: &str| {
        labels
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let mut lease = LeaseInfo {
        holder: labels.get(label::HOLDER).cloned().unwrap_or_default(),
        kind: labels.get(label::KIND).cloned().unwrap_or_default(),
        api: labels.get(label::API).cloned(),
        acquired_ms: num(label::SINCE),
        expires_ms: num(label::EXPIRES),
        token: num(label::TOKEN),
    };
    let id = details.record.id.clone();
    // The renewal file is read only when the first expiry has passed: one call while fresh.
    if lease.expires_ms <= now_ms()
        && let Some(renewed) = read_expiry(rt, &id, lease.token).await?
    {
        lease.expires_ms = lease.expires_ms.max(renewed);
    }
    Ok(Some(Record {
        id,
        lease,
        machine: labels.get(label::MACHINE).cloned(),
    }))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RenewalFile {
    token: i64,
    expires_ms: i64,
}

async fn read_expiry(
    rt: &dyn NodeRuntime,
    id: &str,
    token: i64,
) -> Result<Option<i64>, TransportError> {
    let path = format!("{FILE_DIR}{FILE_NAME}");
    let tar = match rt.get_archive(id, &path).await {
        Ok(t) => t,
        // Never renewed (or the record went away meanwhile): the labels say it all.
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(crate::archive::first_file(&tar)
        .ok()
        .and_then(|b| serde_json::from_slice::<RenewalFile>(&b).ok())
        .filter(|f| f.token == token)
        .map(|f| f.expires_ms))
}

async fn put_expiry(
    rt: &dyn NodeRuntime,
    id: &str,
    token: i64,
    expires_ms: i64,
) -> Result<(), TransportError> {
    let body = serde_json::to_vec(&RenewalFile { token, expires_ms })
        .expect("a renewal file always serialises");
    rt.put_archive(
        id,
        FILE_DIR,
        crate::archive::one_file(FILE_NAME, &body, 0o644),
    )
    .await
}

/// How many times [`take_one`] looks again for a record whose name is in use but not found.
const UNSEEN_TRIES: u32 = 10;
/// Pause between two such looks.
const UNSEEN_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Takes the lease on one node: creates the record; when one exists, it is ours (kept), live
/// (another holder's), or expired or of a dead holder (removed by id, then created again).
async fn take_one(
    rt: &dyn NodeRuntime,
    fleet: &str,
    mine: &LeaseInfo,
    is_dead: fn(&str) -> bool,
) -> Result<One, TransportError> {
    let spec = spec(fleet, mine);
    // Two takeovers at most: a record removed as expired may be taken by a third actor
    // meanwhile. A name in use that inspect does not find is a create half-way (the engine
    // reserves the name first: a killed holder's last request may still be running) or a
    // record removed between our create and our read: looked at again shortly, a few times.
    let (mut takeovers, mut unseen) = (0, 0);
    while takeovers < 2 {
        match crate::records::create(rt, &spec).await {
            Ok(id) => return Ok(One::Taken(id)),
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e),
        }
        let Some(found) = read(rt, fleet).await? else {
            unseen += 1;
            if unseen >= UNSEEN_TRIES {
                break;
            }
            tokio::time::sleep(UNSEEN_PAUSE).await;
            continue;
        };
        if found.lease.token == mine.token && found.lease.holder == mine.holder {
            return Ok(One::Taken(found.id));
        }
        if found.lease.expires_ms > now_ms() && !holder_gone(&found, is_dead) {
            return Ok(One::HeldBy(found.lease));
        }
        tracing::info!(
            node = rt.node(),
            holder = %found.lease.holder,
            token = found.lease.token,
            "the lease record on this node expired (or its holder is gone); taking it over"
        );
        match rt.remove_container(&found.id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        takeovers += 1;
    }
    match read(rt, fleet).await? {
        Some(found) => Ok(One::HeldBy(found.lease)),
        None => Err(TransportError::new(
            rt.node(),
            "take lease",
            crate::transport::ErrorKind::Conflict,
            "the lease record changed hands twice while it was being taken",
        )),
    }
}

async fn give_back(runtimes: &Runtimes, held: &BTreeMap<String, String>) {
    let deadline = round_deadline();
    let removals = held.iter().filter_map(|(node, id)| {
        let rt = runtimes.get(node)?.clone();
        let id = id.clone();
        Some(async move {
            if let Err(e) = limited(rt.node(), deadline, rt.remove_container(&id)).await
                && !e.is_not_found()
            {
                tracing::warn!(error = %e, "could not remove the lease record; it expires by itself");
            }
        })
    });
    on_nodes(removals).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::FakeRuntime;

    fn lease(holder: &str, token: i64, expires_ms: i64) -> LeaseInfo {
        LeaseInfo {
            holder: holder.into(),
            kind: "apply".into(),
            acquired_ms: 0,
            expires_ms,
            token,
            api: None,
        }
    }

    /// A killed holder's create of the record may still be running in the engine when the next
    /// apply comes: the name is in use but inspect does not find the record yet. The lease is
    /// taken once it shows (expired), not refused as "changed hands".
    #[tokio::test]
    async fn a_record_half_made_by_a_killed_holder_is_waited_for_then_taken_over() {
        let rt = FakeRuntime::new("n1");
        let old = spec("f", &lease("apply by root@x (pid 1)", 1, 0));
        crate::records::create(&rt, &old).await.unwrap();
        rt.reserve_name(&record_name("f"), 3);
        let mine = lease("apply by root@y (pid 2)", 2, now_ms() + 60_000);
        match take_one(&rt, "f", &mine, |_| false).await.unwrap() {
            One::Taken(_) => {}
            One::HeldBy(l) => panic!("held by {l:?}"),
        }
        let now = read(&rt, "f").await.unwrap().unwrap();
        assert_eq!(now.lease.token, 2);
    }
}

//! `fleetctl logs` (SPEC §13): the log lines of every container of a service (or of a plug)
//! on every node, merged in time order; with `follow`, through restarts, re-creations and
//! moves.
//!
//! # Which containers
//! The fleet's containers (labels `fleet.managed-by=fleetctl`, `fleet.fleet=<fleet>`) whose
//! `fleet.service` is the service (or whose `fleet.plug` is the plug), on every node or the one
//! asked for, in any state: a stopped copy's lines are part of the service's history.
//!
//! # Following
//! A container's log stream ends when it stops. Each node's engine events (`start`) re-attach a
//! restarted container and attach a new one (a re-creation, a move, a scale-up) at once; a
//! re-listing of every node every [`RESYNC`] is the backstop for events missed while a
//! subscription was down. A re-attachment asks from just after the last line read from that
//! container ([`merge::Cursor`]), so no line is printed twice and none is lost. Lines are
//! merged with a hold of [`HOLD`] ([`merge::Merger`]).
//!
//! # Failures
//! A node that cannot be listed is reported once through [`Emit::Note`] (its error names it)
//! and tried again every [`RESYNC`]; the other nodes go on. Nothing here changes anything on a
//! node: every call is a read.
//!
//! All I/O is through [`NodeRuntime`]; printing is the caller's ([`Emit`]).

pub mod merge;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::container::{ContainerRecord, EngineEvent, RunState, labels};
use crate::execute::Runtimes;
use crate::transport::{ErrorKind, ListFilter, LogLine, LogOptions, NodeRuntime, TransportError};
use merge::{Cursor, Merger};

/// How long a followed line is held for lines of other containers with earlier timestamps
/// (see [`merge`]). Lines of one host reach us within a few milliseconds of each other over
/// their SSH connections; 100 ms covers a slower node's round trip while keeping a new line
/// on the screen well within the 300 ms the issue budgets for it.
pub const HOLD: Duration = Duration::from_millis(100);

/// How often `follow` lists every node again: catches a container whose `start` event was
/// missed (a subscription down, a node back), and retries an unreachable node.
pub const RESYNC: Duration = Duration::from_secs(2);

/// How many logs a read without `follow` fetches at once (all nodes together): each is one
/// HTTP stream over its node's SSH connection; a service of many replicas should not open
/// them all at once. Following needs one open stream per container and is not bounded.
pub const READS_AT_ONCE: usize = 16;

/// How long before subscribing again to a node whose engine events stopped.
pub const RESUBSCRIBE: Duration = Duration::from_secs(2);

/// What `logs` (and `exec`) read from: a service, or a plug by id (`plug/ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A service (one or all of its replicas).
    Service(String),
    /// A plug, by id (`plug/ID`).
    Plug(String),
}

impl Target {
    /// `plug/ID` is a plug; anything else names a service.
    pub fn parse(s: &str) -> Target {
        match s.strip_prefix("plug/") {
            Some(id) => Target::Plug(id.to_string()),
            None => Target::Service(s.to_string()),
        }
    }

    /// Whether a container with `labels` belongs to this target.
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Target::Service(s) => labels.get(labels::SERVICE) == Some(s),
            Target::Plug(p) => labels.get(labels::PLUG) == Some(p),
        }
    }
}

/// The fleet's containers on every node, and the nodes that could not be listed (with why).
/// Read-only; every node at once.
pub async fn list_fleet(
    runtimes: &Runtimes,
    fleet: &str,
) -> (
    Vec<(String, ContainerRecord)>,
    Vec<(String, TransportError)>,
) {
    let filter = ListFilter {
        labels: crate::desired::fleet_filter(fleet),
    };
    let lists = crate::observe::on_nodes(runtimes.iter().map(|(node, rt)| {
        let filter = filter.clone();
        async move { (node.clone(), rt.list_containers(&filter).await) }
    }))
    .await;
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    for (node, list) in lists {
        match list {
            Ok(records) => found.extend(records.into_iter().map(|r| (node.clone(), r))),
            Err(e) => unreachable.push((node, e)),
        }
    }
    (found, unreachable)
}

/// One container whose log is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The node it runs on.
    pub node: String,
    /// The engine's id.
    pub id: String,
    /// The container's name (`<fleet>-web-1-<hash8>`, `<fleet>-plug-ID`).
    pub container: String,
    /// The replica number (services only).
    pub replica: Option<u32>,
    /// What the prefix calls it: `web-1` (service and replica), `plug-ID`.
    pub name: String,
}

impl Source {
    /// The source for a container with `labels` named `container` on `node`, when it belongs
    /// to `target`.
    pub fn of(
        target: &Target,
        node: &str,
        id: &str,
        container: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<Source> {
        if !target.owns(labels) {
            return None;
        }
        let replica = labels.get(labels::REPLICA).and_then(|r| r.parse().ok());
        let name = match (target, replica) {
            (Target::Service(s), Some(r)) => format!("{s}-{r}"),
            (Target::Service(_), None) => container.to_string(),
            (Target::Plug(p), _) => format!("plug-{p}"),
        };
        Some(Source {
            node: node.to_string(),
            id: id.to_string(),
            container: container.to_string(),
            replica,
            name,
        })
    }

    /// `node/name`, e.g. `node1/web-1`: what each line is prefixed with.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.node, self.name)
    }
}

/// What one `logs` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The fleet's name (its containers' labels).
    pub fleet: String,
    /// The service or plug.
    pub target: Target,
    /// Only this node's containers.
    pub node: Option<String>,
    /// Only lines at or after this time (ns since the epoch, the nodes' clocks).
    pub since_ns: Option<i64>,
    /// Only the last N lines of each container (before following).
    pub tail: Option<u64>,
    /// Go on with new lines until cancelled.
    pub follow: bool,
}

/// What `read` hands the caller, in order.
#[derive(Debug)]
pub enum Emit<'a> {
    /// A line of a container's log.
    Line(&'a Source, &'a LogLine),
    /// Something to tell the operator beside the lines (a node that cannot be reached).
    Note(&'a str),
}

/// Why a read stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A plug that no reachable node has.
    #[error("unknown plug {id} (known: {known}){unreachable}")]
    UnknownPlug {
        /// The plug asked for.
        id: String,
        /// The plugs the nodes have, comma-separated (`none`).
        known: String,
        /// `; looked on NODE only` with `--node`, `; not reachable: …` when some node could
        /// not be listed.
        unreachable: String,
    },
    /// The caller's sink failed (stdout closed).
    #[error("writing the log lines")]
    Sink(#[source] std::io::Error),
}

enum Msg {
    Line(usize, LogLine),
    Ended(usize, Option<TransportError>),
    Listed(String, Result<Vec<ContainerRecord>, TransportError>),
    Started(String, EngineEvent),
}

/// What woke the loop of [`read`].
enum Wake {
    Cancel,
    /// The head of the merge is due by the hold.
    Due,
    Resync,
    Msg(Option<Msg>),
}

struct Attached {
    source: Source,
    cursor: Cursor,
    streaming: bool,
    /// A `start` came while the old stream was still open: attach again once it ends.
    restarted: bool,
    /// The engine refused this container's log (e.g. a logging driver it cannot read back):
    /// said once; attached again only on its next `start`, not by every re-listing.
    refused: bool,
}

/// Registers a container found on `node` (by the first listing, a re-listing or a `start`
/// event) as a new source; returns its index.
fn register(
    attached: &mut Vec<Attached>,
    by_id: &mut BTreeMap<(String, String), usize>,
    node: &str,
    id: &str,
    source: Source,
) -> usize {
    let i = attached.len();
    by_id.insert((node.to_string(), id.to_string()), i);
    attached.push(Attached {
        source,
        cursor: Cursor::default(),
        streaming: false,
        restarted: false,
        refused: false,
    });
    i
}

/// Reads the logs `req` asks for from `runtimes` (the fleet's nodes) and hands each line to
/// `sink`, merged in time order; returns when every log has been read to its end, or, with
/// `req.follow`, when `cancel` fires.
///
/// # Errors
/// A plug no node has, or none that answered ([`LogsError::UnknownPlug`], with or without
/// `follow`); `sink` failed. A node that
/// cannot be reached is not an error: it is reported through [`Emit::Note`].
///
/// # Caveats
/// Lines are ordered by the nodes' clocks: nodes whose clocks differ by more than the gap
/// between two lines interleave those lines by their clocks, not by when they were written.
pub async fn read(
    runtimes: &Runtimes,
    req: &Request,
    sink: &mut (dyn FnMut(Emit<'_>) -> std::io::Result<()> + Send),
    cancel: CancellationToken,
) -> Result<(), LogsError> {
    let runtimes: Runtimes = runtimes
        .iter()
        .filter(|(n, _)| req.node.as_deref().is_none_or(|only| only == n.as_str()))
        .map(|(n, rt)| (n.clone(), rt.clone()))
        .collect();
    let started = tokio::time::Instant::now();
    let now_ns = move || i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
    // With --tail, a container re-attached before any of its lines was taken (its tail was
    // empty, or it was first found later) resumes from when this read began, never from the
    // start of its log; without, from --since (docker's own meaning: everything).
    let start_wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let floor = match req.tail {
        Some(_) => Some(req.since_ns.map_or(start_wall_ns, |s| s.max(start_wall_ns))),
        None => req.since_ns,
    };
    let stop = cancel.child_token();
    let _stop_on_return = stop.clone().drop_guard();
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let reads = Arc::new(tokio::sync::Semaphore::new(READS_AT_ONCE));
    let mut attached: Vec<Attached> = Vec::new();
    let mut by_id: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut merger: Merger<usize, LogLine> = Merger::new(HOLD);
    let mut said_unreachable: BTreeSet<String> = BTreeSet::new();
    let mut open_streams = 0usize;

    let emit_out = |attached: &Vec<Attached>,
                    out: Vec<(usize, LogLine)>,
                    sink: &mut (dyn FnMut(Emit<'_>) -> std::io::Result<()> + Send)|
     -> Result<(), LogsError> {
        for (i, line) in out {
            sink(Emit::Line(&attached[i].source, &line)).map_err(LogsError::Sink)?;
        }
        Ok(())
    };

    // The first listing, of every node at once.
    let filter = ListFilter {
        labels: crate::desired::fleet_filter(&req.fleet),
    };
    let (found, unreachable) = list_fleet(&runtimes, &req.fleet).await;
    for (node, e) in &unreachable {
        said_unreachable.insert(node.clone());
        sink(Emit::Note(&format!("{e}; its logs are left out"))).map_err(LogsError::Sink)?;
    }
    if let Target::Plug(id) = &req.target
        && !found
            .iter()
            .any(|(_, r)| r.label(labels::PLUG) == Some(id.as_str()))
    {
        let known: BTreeSet<&str> = found
            .iter()
            .filter_map(|(_, r)| r.label(labels::PLUG))
            .collect();
        let known: Vec<&str> = known.into_iter().collect();
        return Err(LogsError::UnknownPlug {
            id: id.clone(),
            known: if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            },
            unreachable: {
                let mut note = String::new();
                if let Some(n) = &req.node {
                    note.push_str(&format!("; looked on {n} only"));
                }
                if !unreachable.is_empty() {
                    let nodes: Vec<&str> = unreachable.iter().map(|(n, _)| n.as_str()).collect();
                    note.push_str(&format!("; not reachable: {}", nodes.join(", ")));
                }
                note
            },
        });
    }
    let mut first: Vec<(String, ContainerRecord)> = found
        .into_iter()
        .filter(|(_, r)| req.target.owns(&r.labels))
        .collect();
    if first.is_empty()
        && unreachable.is_empty()
        && let Target::Service(name) = &req.target
    {
        let text = match (&req.node, req.follow) {
            (Some(n), false) => format!("service {name} has no containers on {n}"),
            (None, false) => format!("service {name} has no containers: apply the manifests first"),
            (Some(n), true) => {
                format!("service {name} has no containers on {n} yet: waiting for one")
            }
            (None, true) => format!("service {name} has no containers yet: waiting for one"),
        };
        sink(Emit::Note(&text)).map_err(LogsError::Sink)?;
    }
    // Oldest first: sources are numbered (and coloured) in a stable order.
    first.sort_by(|a, b| (a.1.created, &a.0, &a.1.name).cmp(&(b.1.created, &b.0, &b.1.name)));

    let attach = |i: usize,
                  attached: &mut Vec<Attached>,
                  merger: &mut Merger<usize, LogLine>,
                  open_streams: &mut usize,
                  opts: LogOptions| {
        let a = &mut attached[i];
        a.streaming = true;
        a.restarted = false;
        *open_streams += 1;
        if req.follow {
            merger.open(i);
        }
        let Some(rt) = runtimes.get(&a.source.node).cloned() else {
            return;
        };
        let (tx, stop, id) = (tx.clone(), stop.clone(), a.source.id.clone());
        let reads = (!opts.follow).then(|| reads.clone());
        tokio::spawn(async move {
            let _permit = match reads {
                Some(r) => r.acquire_owned().await.ok(),
                None => None,
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                () = read_one(rt, i, id, opts, tx) => {}
            }
        });
    };

    for (node, r) in &first {
        let Some(source) = Source::of(&req.target, node, &r.id, &r.name, &r.labels) else {
            continue;
        };
        let i = register(&mut attached, &mut by_id, node, &r.id, source);
        let opts = LogOptions {
            follow: req.follow,
            since_ns: req.since_ns,
            tail: req.tail,
        };
        attach(i, &mut attached, &mut merger, &mut open_streams, opts);
    }

    if req.follow {
        for (node, rt) in &runtimes {
            let (node, rt, tx, stop, filter) = (
                node.clone(),
                rt.clone(),
                tx.clone(),
                stop.clone(),
                filter.clone(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    () = follow_starts(node, rt, filter, tx) => {}
                }
            });
        }
    } else if open_streams == 0 {
        return Ok(());
    }

    let mut resync = tokio::time::interval_at(started + RESYNC, RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = merger.next_release();
        let hold_done = async {
            match due {
                Some(t) => {
                    let at = started + Duration::from_nanos(u64::try_from(t.max(0)).unwrap_or(0));
                    tokio::time::sleep_until(at).await;
                }
                None => std::future::pending().await,
            }
        };
        let resync_tick = async {
            if req.follow {
                resync.tick().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let wake = tokio::select! {
            _ = cancel.cancelled() => Wake::Cancel,
            () = hold_done => Wake::Due,
            () = resync_tick => Wake::Resync,
            msg = rx.recv() => Wake::Msg(msg),
        };
        match wake {
            Wake::Cancel => break,
            Wake::Due => {}
            Wake::Resync => {
                for (node, rt) in &runtimes {
                    let (node, rt, tx, filter) =
                        (node.clone(), rt.clone(), tx.clone(), filter.clone());
                    tokio::spawn(async move {
                        let listed = rt.list_containers(&filter).await;
                        let _ = tx.send(Msg::Listed(node, listed)).await;
                    });
                }
            }
            Wake::Msg(msg) => {
                let Some(msg) = msg else { break };
                match msg {
                    Msg::Line(i, line) => {
                        if attached[i].cursor.take(line.stream, line.time_ns) {
                            merger.push(i, line.time_ns, now_ns(), line);
                        }
                    }
                    Msg::Ended(i, err) => {
                        let a = &mut attached[i];
                        a.streaming = false;
                        open_streams = open_streams.saturating_sub(1);
                        merger.close(&i);
                        // A container removed meanwhile (NotFound) simply ends. Any other
                        // failure (the connection broke) is said once per node; the next
                        // re-listing attaches again from the cursor, so a node that is down
                        // is not asked in a loop.
                        if let Some(e) = err.filter(|e| e.kind != ErrorKind::NotFound) {
                            if e.is_unreachable() || e.kind == ErrorKind::Other {
                                // The connection broke: said once per node.
                                if said_unreachable.insert(a.source.node.clone()) {
                                    let what = if req.follow {
                                        "following again once it answers"
                                    } else {
                                        "its lines may be cut short"
                                    };
                                    sink(Emit::Note(&format!("{e}; {what}")))
                                        .map_err(LogsError::Sink)?;
                                }
                            } else if !a.refused {
                                a.refused = true;
                                sink(Emit::Note(&e.to_string())).map_err(LogsError::Sink)?;
                            }
                        } else if req.follow && attached[i].restarted {
                            let opts = LogOptions {
                                follow: true,
                                since_ns: attached[i].cursor.resume_since(floor),
                                tail: None,
                            };
                            attach(i, &mut attached, &mut merger, &mut open_streams, opts);
                        }
                        if !req.follow && open_streams == 0 {
                            break;
                        }
                    }
                    Msg::Listed(node, Ok(records)) => {
                        said_unreachable.remove(&node);
                        for r in records {
                            let running = r.state == RunState::Running;
                            let known = by_id.get(&(node.clone(), r.id.clone())).copied();
                            match known {
                                Some(i)
                                    if running
                                        && !attached[i].streaming
                                        && !attached[i].refused =>
                                {
                                    let opts = LogOptions {
                                        follow: true,
                                        since_ns: attached[i].cursor.resume_since(floor),
                                        tail: None,
                                    };
                                    attach(i, &mut attached, &mut merger, &mut open_streams, opts);
                                }
                                Some(_) => {}
                                None => {
                                    let Some(source) =
                                        Source::of(&req.target, &node, &r.id, &r.name, &r.labels)
                                    else {
                                        continue;
                                    };
                                    let i =
                                        register(&mut attached, &mut by_id, &node, &r.id, source);
                                    // New since we started: all of its log is new. One
                                    // made before (on a node that did not answer at first)
                                    // is read as the others were: --tail of it.
                                    let old =
                                        r.created.saturating_mul(1_000_000_000) < start_wall_ns;
                                    let opts = LogOptions {
                                        follow: true,
                                        since_ns: req.since_ns,
                                        tail: if old { req.tail } else { None },
                                    };
                                    attach(i, &mut attached, &mut merger, &mut open_streams, opts);
                                }
                            }
                        }
                    }
                    Msg::Listed(node, Err(e)) => {
                        if said_unreachable.insert(node) {
                            sink(Emit::Note(&format!(
                                "{e}; its logs are left out until it answers"
                            )))
                            .map_err(LogsError::Sink)?;
                        }
                    }
                    Msg::Started(node, e) => {
                        let name = e
                            .labels
                            .get("name")
                            .cloned()
                            .unwrap_or_else(|| e.container_id.clone());
                        match by_id.get(&(node.clone(), e.container_id.clone())).copied() {
                            Some(i) if attached[i].streaming => attached[i].restarted = true,
                            Some(i) => {
                                attached[i].refused = false;
                                let opts = LogOptions {
                                    follow: true,
                                    since_ns: attached[i].cursor.resume_since(floor),
                                    tail: None,
                                };
                                attach(i, &mut attached, &mut merger, &mut open_streams, opts);
                            }
                            None => {
                                if let Some(source) = Source::of(
                                    &req.target,
                                    &node,
                                    &e.container_id,
                                    &name,
                                    &e.labels,
                                ) {
                                    let i = register(
                                        &mut attached,
                                        &mut by_id,
                                        &node,
                                        &e.container_id,
                                        source,
                                    );
                                    let opts = LogOptions {
                                        follow: true,
                                        since_ns: req.since_ns,
                                        tail: None,
                                    };
                                    attach(i, &mut attached, &mut merger, &mut open_streams, opts);
                                }
                            }
                        }
                    }
                }
            }
        }
        if req.follow {
            let out = merger.release(now_ns());
            emit_out(&attached, out, sink)?;
        }
    }
    let out = merger.drain();
    emit_out(&attached, out, sink)
}

/// Reads one container's log into `tx` as [`Msg::Line`]s, then [`Msg::Ended`].
async fn read_one(
    rt: Arc<dyn NodeRuntime>,
    i: usize,
    id: String,
    opts: LogOptions,
    tx: mpsc::Sender<Msg>,
) {
    let mut lines = match rt.logs(&id, opts).await {
        Ok(lines) => lines,
        Err(e) => {
            let _ = tx.send(Msg::Ended(i, Some(e))).await;
            return;
        }
    };
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => {
                if tx.send(Msg::Line(i, line)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Msg::Ended(i, Some(e))).await;
                return;
            }
        }
    }
    let _ = tx.send(Msg::Ended(i, None)).await;
}

/// One node's `start` events of the fleet's containers, as [`Msg::Started`]; subscribes again
/// after [`RESUBSCRIBE`] when the stream ends (the resync covers what was missed meanwhile).
async fn follow_starts(
    node: String,
    rt: Arc<dyn NodeRuntime>,
    filter: ListFilter,
    tx: mpsc::Sender<Msg>,
) {
    loop {
        if let Ok(mut events) = rt.events(&filter).await {
            while let Some(Ok(e)) = events.next().await {
                if e.action == "start" && tx.send(Msg::Started(node.clone(), e)).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

//! The fleet lease, held by one actor at a time (`apply`, `drain`, the controller): taken with
//! a bounded wait, renewed in the background for as long as the guard lives, released when it
//! is dropped. Every mutating step checks the guard's [`Fence`] first, so an actor whose lease
//! was taken over (it stalled past the TTL, a renewal found another token) stops before its
//! next change instead of acting beside the new holder.
//!
//! The lease is held twice: in the state file (processes sharing one file exclude each other
//! at once, and a holder killed on this machine is noticed at once) and on the nodes
//! ([`nodes`]), so that actors with different state files on different machines exclude each
//! other too.
//!
//! Plug create and delete take no lease: each is one SQLite `IMMEDIATE` transaction (placement,
//! port lease, record) followed by work on one container of its own, so twenty concurrent
//! creates never wait on each other nor on an apply (see docs/design.md, "Leases").

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod nodes;

use std::collections::BTreeMap;

use crate::store::{LeaseInfo, Store, StoreError, format_ms, now_ms};
use nodes::{NodeSet, Renewal, Take};

/// How long a lease lives without renewal: a holder killed on another machine blocks others this
/// long at most (one killed on this machine is noticed at once, see [`holder_is_dead`]).
pub const TTL: Duration = Duration::from_secs(30);
/// How often a running holder renews its lease (a third of the TTL: two renewals may fail).
pub const RENEW: Duration = Duration::from_secs(10);
/// How often a waiting actor asks again whether the lease is free.
const POLL: Duration = Duration::from_millis(250);

/// Who holds the lease, and so what kind of work is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseKind {
    /// `fleetctl apply`.
    Apply,
    /// `fleetctl drain` run directly.
    Drain,
    /// `fleetctl run`: the controller, which also serves the API.
    Controller,
}

impl LeaseKind {
    /// The word stored in the lease row and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseKind::Apply => "apply",
            LeaseKind::Drain => "drain",
            LeaseKind::Controller => "controller",
        }
    }
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lease was taken over by another actor (or could not be renewed within its TTL): the
/// holder must not change anything more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the fleet lease was lost (token {token}): another actor may be acting on the fleet")]
pub struct LeaseLost {
    /// The token this actor held.
    pub token: i64,
}

/// Why the fleet lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another actor holds it (in this state file, or on the nodes).
    #[error("fleet {fleet} is locked by {} since {}{}", lease.holder, format_ms(lease.acquired_ms), held_on(nodes))]
    Locked {
        /// The fleet.
        fleet: String,
        /// The holder's lease.
        lease: Box<LeaseInfo>,
        /// The nodes its record was found on (empty: found in this state file).
        nodes: Vec<String>,
    },
    /// No node of the fleet answered: the lease cannot be held anywhere.
    #[error("cannot take the lease of fleet {fleet}: no node answered ({causes})")]
    NoNode {
        /// The fleet.
        fleet: String,
        /// Each node's failure.
        causes: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LeaseError {
    /// The live holder's lease, when another actor holds it.
    pub fn holder(&self) -> Option<&LeaseInfo> {
        match self {
            LeaseError::Locked { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

fn held_on(nodes: &[String]) -> String {
    if nodes.is_empty() {
        String::new()
    } else {
        format!(" (lease held on {})", nodes.join(", "))
    }
}

/// What is asked for: who, for what, and how long to wait for another holder.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The fleet's name.
    pub fleet: &'a str,
    /// Who asks (see [`holder`]).
    pub holder: &'a str,
    /// For what.
    pub kind: LeaseKind,
    /// The API address the holder serves (the controller).
    pub api: Option<&'a str>,
    /// How long to wait for another holder to let go.
    pub wait: Duration,
}

/// How long before the stored expiry a holder stops trusting its lease: a step started this
/// close to the expiry could still be running when another actor takes over.
const SAFETY_MARGIN: Duration = Duration::from_secs(5);

/// A cheap handle on a lease's liveness, checked before each mutating step. It fails once a
/// renewal found another holder, and also once the last successful renewal is too old to be
/// trusted (a stalled or suspended holder must not resume acting after its lease ran out,
/// whether or not the renewing thread has noticed yet).
#[derive(Debug, Clone)]
pub struct Fence {
    token: i64,
    lost: Arc<AtomicBool>,
    /// Wall-clock ms after which the lease is not trusted: the start of the last successful
    /// renewal (or of the acquisition) plus the TTL, less [`SAFETY_MARGIN`].
    valid_until_ms: Arc<AtomicI64>,
}

impl Fence {
    /// The fencing token of the lease.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Ok while the lease is ours.
    ///
    /// # Errors
    /// [`LeaseLost`] once a renewal found another holder or failed for a whole TTL.
    pub fn check(&self) -> Result<(), LeaseLost> {
        if self.lost.load(Ordering::Acquire)
            || now_ms() > self.valid_until_ms.load(Ordering::Acquire)
        {
            Err(LeaseLost { token: self.token })
        } else {
            Ok(())
        }
    }

    fn new(token: i64, renewed_at_ms: i64) -> Fence {
        Fence {
            token,
            lost: Arc::new(AtomicBool::new(false)),
            valid_until_ms: Arc::new(AtomicI64::new(valid_until(renewed_at_ms))),
        }
    }

    /// Records a renewal that started at `at_ms` (the store computed the new expiry from it).
    fn renewed(&self, at_ms: i64) {
        self.valid_until_ms
            .fetch_max(valid_until(at_ms), Ordering::AcqRel);
    }
}

fn valid_until(renewed_at_ms: i64) -> i64 {
    renewed_at_ms + TTL.saturating_sub(SAFETY_MARGIN).as_millis() as i64
}

/// Called once, from the renewing thread, when the lease is lost.
pub type OnLost = Box<dyn FnOnce() + Send>;

/// The fleet lease held by this process. Renewed every [`RENEW`] on a thread of its own (an
/// async runtime busy with a slow engine cannot starve it); released on drop.
pub struct LeaseGuard {
    store: Arc<Store>,
    info: LeaseInfo,
    /// The lease on the nodes once held (shared with the renewing thread).
    nodes: Arc<Mutex<Option<NodeHold>>>,
    /// Nodes the lease is to be held on once there is work ([`LeaseGuard::hold_nodes`]).
    pending: Option<NodeSet>,
    fence: Fence,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl LeaseGuard {
    /// Takes the fleet lease: in the state file, then (when `nodes` is given) on the nodes,
    /// waiting up to `req.wait` for another holder to let go (not for a controller: it does
    /// not let go). A holder that was a process of this machine's fleetctl and is gone
    /// (killed) loses its lease at once; one on another machine, when its lease expires.
    /// `on_lost` runs when the lease is later lost.
    ///
    /// # Errors
    /// [`LeaseError::Locked`] naming the holder when the wait runs out; [`LeaseError::NoNode`]
    /// when no node answers; store failures.
    pub fn acquire(
        store: Arc<Store>,
        req: Request<'_>,
        nodes: Option<NodeSet>,
        on_lost: Option<OnLost>,
    ) -> Result<LeaseGuard, LeaseError> {
        let deadline = Instant::now() + req.wait;
        let (info, hold) = loop {
            let info = take_local(&store, &req, deadline)?;
            let Some(set) = &nodes else {
                break (info, None);
            };
            match take_nodes(set, &info, &req) {
                Ok(hold) => break (info, Some(hold)),
                Err(e) => {
                    store.release_lease(info.token)?;
                    wait_unless_controller(e, deadline)?;
                }
            }
        };
        Ok(Self::start(store, info, hold, None, on_lost))
    }

    /// Takes the fleet lease in the state file now, and makes sure no other actor holds it on
    /// the nodes (reading them, waiting up to `req.wait` as [`LeaseGuard::acquire`]) — but
    /// takes it there only when [`LeaseGuard::hold_nodes`] is called: an apply that finds
    /// nothing to do changes nothing on any node, not even a lease record.
    ///
    /// # Errors
    /// As [`LeaseGuard::acquire`].
    pub fn acquire_deferred(
        store: Arc<Store>,
        req: Request<'_>,
        nodes: NodeSet,
        on_lost: Option<OnLost>,
    ) -> Result<LeaseGuard, LeaseError> {
        let deadline = Instant::now() + req.wait;
        // The state-file lease is taken again after each wait: held unrenewed while waiting,
        // it would run out (and its fence with it) before the first step.
        let info = loop {
            let info = take_local(&store, &req, deadline)?;
            match other_holder(&nodes, &req) {
                None => break info,
                Some(e) => {
                    store.release_lease(info.token)?;
                    wait_unless_controller(e, deadline)?;
                }
            }
        };
        Ok(Self::start(store, info, None, Some(nodes), on_lost))
    }

    /// Takes the lease on the nodes of [`LeaseGuard::acquire_deferred`] (nothing when it is
    /// held already, or was taken without nodes), waiting up to `wait` for another holder.
    ///
    /// # Errors
    /// As [`LeaseGuard::acquire`]; the state-file lease stays held.
    pub fn hold_nodes(&mut self, req: Request<'_>) -> Result<(), LeaseError> {
        let Some(set) = self.pending.clone() else {
            return Ok(());
        };
        let deadline = Instant::now() + req.wait;
        let hold = loop {
            match take_nodes(&set, &self.info, &req) {
                Ok(hold) => break hold,
                Err(e) => wait_unless_controller(e, deadline)?,
            }
        };
        *self.nodes.lock().unwrap_or_else(|p| p.into_inner()) = Some(hold);
        self.pending = None;
        Ok(())
    }

    fn start(
        store: Arc<Store>,
        info: LeaseInfo,
        hold: Option<NodeHold>,
        pending: Option<NodeSet>,
        on_lost: Option<OnLost>,
    ) -> LeaseGuard {
        let fence = Fence::new(info.token, info.acquired_ms);
        let nodes = Arc::new(Mutex::new(hold));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let holds = Holds {
                store: store.clone(),
                nodes: nodes.clone(),
            };
            let fence = fence.clone();
            std::thread::Builder::new()
                .name("lease-renew".into())
                .spawn(move || renew(&holds, &fence, &stopped, on_lost, RENEW))
                .expect("the OS refused a thread for the lease renewal")
        };
        LeaseGuard {
            store,
            info,
            nodes,
            pending,
            fence,
            stop: Some(stop),
            renewer: Some(renewer),
            released: false,
        }
    }

    /// The lease as taken.
    pub fn info(&self) -> &LeaseInfo {
        &self.info
    }

    /// The fencing token.
    pub fn token(&self) -> i64 {
        self.info.token
    }

    /// The fence to check before each mutating step.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Stops renewing and gives the lease up now, reporting a failure to do so (dropping the
    /// guard does the same and logs the failure instead).
    ///
    /// # Errors
    /// Store failures.
    pub fn release(mut self) -> Result<(), StoreError> {
        self.stop_renewing();
        self.released = true;
        self.release_nodes();
        self.store.release_lease(self.info.token)
    }

    /// The lease as held on the nodes (token and nodes), when it is.
    pub fn on_nodes(&self) -> Option<(LeaseInfo, Vec<String>)> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|n| {
                (
                    n.info.clone(),
                    n.held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .keys()
                        .cloned()
                        .collect(),
                )
            })
    }

    fn release_nodes(&mut self) {
        let hold = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(n) = hold {
            let held = std::mem::take(&mut *n.held.lock().unwrap_or_else(|p| p.into_inner()));
            n.set.release(&held);
        }
    }

    fn stop_renewing(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop_renewing();
        self.release_nodes();
        if !self.released
            && let Err(e) = self.store.release_lease(self.info.token)
        {
            tracing::warn!(error = %e, "could not release the fleet lease; it lapses by itself");
        }
    }
}

/// The lease held on the nodes: where, and as what.
#[derive(Clone)]
struct NodeHold {
    set: NodeSet,
    info: LeaseInfo,
    /// Record id by node, shared with the renewing thread (nodes back from an outage join).
    held: Arc<Mutex<BTreeMap<String, String>>>,
}

/// Everything one renewal renews.
struct Holds {
    store: Arc<Store>,
    nodes: Arc<Mutex<Option<NodeHold>>>,
}

impl Holds {
    /// Renews the lease in the store and on the nodes, the new expiry counted from `at`. A
    /// store that fails for a moment does not keep the nodes from being renewed.
    fn renew(&self, token: i64, at: i64) -> Result<(), Renewal> {
        let local = match self.store.renew_lease(token, TTL, at) {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Fenced { .. }) => return Err(Renewal::Lost(e.to_string())),
            Err(e) => Err(Renewal::Failed(e.to_string())),
        };
        let hold = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(n) = hold {
            let held = n.held.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let now_held =
                n.set
                    .renew(&n.info, &held, at + TTL.as_millis() as i64, holder_is_dead)?;
            *n.held.lock().unwrap_or_else(|p| p.into_inner()) = now_held;
        }
        local
    }
}

/// Sleeps one poll (with jitter, so two waiting actors do not keep colliding) when `deadline`
/// has not passed; else gives `err` back.
fn wait_or(err: LeaseError, deadline: Instant) -> Result<(), LeaseError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(err);
    }
    let jitter = Duration::from_millis(rand::random::<u64>() % 150);
    std::thread::sleep((POLL + jitter).min(left));
    Ok(())
}

/// [`wait_or`], but a lease held by a controller is reported at once: a controller does not
/// let go of its lease.
fn wait_unless_controller(err: LeaseError, deadline: Instant) -> Result<(), LeaseError> {
    if err
        .holder()
        .is_some_and(|l| l.kind == LeaseKind::Controller.as_str())
    {
        return Err(err);
    }
    wait_or(err, deadline)
}

/// Takes the lease in the state file, waiting until `deadline` for another holder.
fn take_local(
    store: &Store,
    req: &Request<'_>,
    deadline: Instant,
) -> Result<LeaseInfo, LeaseError> {
    loop {
        match store.try_acquire_lease(req.holder, req.kind.as_str(), req.api, TTL, now_ms()) {
            Err(StoreError::Locked { lease, .. }) if holder_is_dead(&lease.holder) => {
                tracing::warn!(holder = %lease.holder, "the lease holder is gone; taking the lease over");
                store.break_lease(lease.token)?;
            }
            Err(StoreError::Locked { lease, .. }) => wait_or(
                LeaseError::Locked {
                    fleet: req.fleet.to_string(),
                    lease,
                    nodes: Vec::new(),
                },
                deadline,
            )?,
            other => return Ok(other?),
        }
    }
}

/// One attempt to take the lease on the nodes for the state-file lease `info`. A controller
/// found holding it ends the wait at once (it does not let go).
fn take_nodes(set: &NodeSet, info: &LeaseInfo, req: &Request<'_>) -> Result<NodeHold, LeaseError> {
    // On the nodes the token is the time of taking: it grows across actors whose state files
    // know nothing of each other (clocks agreeing within the safety margin).
    // Records carry an expiry counted from now: taken after a wait, the state-file lease's
    // first expiry may be past, and others would remove them as expired.
    let now = now_ms();
    let on_nodes = LeaseInfo {
        token: now.max(info.token),
        expires_ms: now + TTL.as_millis() as i64,
        ..info.clone()
    };
    match set.try_take(&on_nodes, holder_is_dead) {
        Take::Held { held, failed } => {
            for (node, e) in &failed {
                tracing::warn!(node = %node, error = %e, "node did not answer; the lease is taken there when it is back");
            }
            Ok(NodeHold {
                set: set.clone(),
                info: on_nodes,
                held: Arc::new(Mutex::new(held)),
            })
        }
        Take::Busy { lease, nodes } => Err(LeaseError::Locked {
            fleet: req.fleet.to_string(),
            lease: Box::new(lease),
            nodes,
        }),
        Take::NoNode { failed } => Err(LeaseError::NoNode {
            fleet: req.fleet.to_string(),
            causes: failed
                .values()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

/// Another live holder's lease on the nodes (read only), as the error to report.
fn other_holder(set: &NodeSet, req: &Request<'_>) -> Option<LeaseError> {
    let now = now_ms();
    let mut found: Option<(LeaseInfo, Vec<String>)> = None;
    for (node, r) in set.read() {
        let Ok(Some(rec)) = r else { continue };
        if rec.lease.holder == req.holder
            || rec.lease.expires_ms <= now
            || nodes::holder_gone(&rec, holder_is_dead)
        {
            continue;
        }
        found
            .get_or_insert_with(|| (rec.lease.clone(), Vec::new()))
            .1
            .push(node);
    }
    found.map(|(lease, nodes)| LeaseError::Locked {
        fleet: req.fleet.to_string(),
        lease: Box::new(lease),
        nodes,
    })
}

/// The renewing thread: renews every `every` until told to stop; marks the fence lost (and
/// calls `on_lost`) when another actor took the lease, or when renewals have failed for a TTL —
/// by then another actor may have taken it.
fn renew(
    holds: &Holds,
    fence: &Fence,
    stopped: &mpsc::Receiver<()>,
    on_lost: Option<OnLost>,
    every: Duration,
) {
    let on_lost = Mutex::new(on_lost);
    let lose = |why: &str| {
        fence.lost.store(true, Ordering::Release);
        tracing::error!(
            token = fence.token,
            why,
            "the fleet lease was lost; stopping before the next change"
        );
        if let Some(f) = on_lost.lock().unwrap_or_else(|p| p.into_inner()).take() {
            f();
        }
    };
    loop {
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // A lease that ran out before this renewal is lost for good: another actor may have
        // taken it meanwhile, and renewing now would trust it again.
        if fence.check().is_err() {
            return lose("the lease ran out before it could be renewed");
        }
        // The stored expiry is computed from this instant: the fence trusts the lease from it,
        // however long the store and the nodes take to answer (the whole round at most 4 s).
        let at = now_ms();
        match holds.renew(fence.token, at) {
            Ok(()) => fence.renewed(at),
            Err(Renewal::Lost(why)) => return lose(&why),
            Err(Renewal::Failed(why)) if fence.check().is_err() => {
                tracing::warn!(error = %why, "could not renew the fleet lease before it ran out");
                return lose(&why);
            }
            Err(Renewal::Failed(why)) => {
                tracing::warn!(error = %why, "could not renew the fleet lease; retrying")
            }
        }
    }
}

/// Who is acting, for leases and the event log: `VERB by USER@HOST (pid N)`.
pub fn holder(verb: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    format!(
        "{verb} by {user}@{} (pid {})",
        hostname(),
        std::process::id()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Whether a lease holder (`VERB by USER@HOST (pid N)`, see [`holder`]) is a process of this
/// machine that no longer runs this program — killed, so its lease can be taken at once instead
/// of waiting for it to expire. A holder on another machine is never judged dead here.
pub fn holder_is_dead(holder: &str) -> bool {
    let Some((host, pid)) = parse_holder(holder) else {
        return false;
    };
    if host != hostname() || pid == std::process::id() {
        return false;
    }
    // Without /proc (not Linux) nothing can be judged: wait the lease out.
    let Ok(ours) = std::fs::read_to_string("/proc/self/comm") else {
        return false;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        // Another build or name of the binary (an upgrade, `fleetctl-linux-amd64`) is alive.
        Ok(comm) => {
            let comm = comm.trim();
            comm != ours.trim() && !comm.starts_with("fleetctl")
        }
        Err(_) => true,
    }
}

/// `(host, pid)` of a holder string.
fn parse_holder(holder: &str) -> Option<(&str, u32)> {
    let (_, rest) = holder.split_once('@')?;
    let (host, pid) = rest.split_once(" (pid ")?;
    Some((host, pid.strip_suffix(')')?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(holder: &str, kind: LeaseKind, wait: Duration) -> Request<'_> {
        Request {
            fleet: "f",
            holder,
            kind,
            api: None,
            wait,
        }
    }

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, Arc::new(s))
    }

    #[test]
    fn holders_parse_and_a_live_holder_of_this_process_is_not_dead() {
        assert_eq!(
            parse_holder("apply by root@vps1 (pid 42)"),
            Some(("vps1", 42))
        );
        assert_eq!(parse_holder("nonsense"), None);
        assert!(!holder_is_dead(&holder("apply")));
        assert!(!holder_is_dead("apply by root@another-host (pid 1)"));
        // A pid that cannot exist on this machine.
        assert!(holder_is_dead(&format!(
            "apply by root@{} (pid 4294967294)",
            hostname()
        )));
    }

    #[test]
    fn a_held_lease_refuses_others_and_dropping_the_guard_frees_it() {
        let (_d, s) = store();
        let g = LeaseGuard::acquire(
            s.clone(),
            req("a by x@elsewhere (pid 1)", LeaseKind::Apply, Duration::ZERO),
            None,
            None,
        )
        .unwrap();
        let err = LeaseGuard::acquire(
            s.clone(),
            req(
                "b by y@elsewhere (pid 2)",
                LeaseKind::Drain,
                Duration::from_millis(300),
            ),
            None,
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LeaseError::Locked { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("fleet f is locked by a by x@elsewhere (pid 1) since "),
            "{err}"
        );
        assert!(g.fence().check().is_ok());
        drop(g);
        LeaseGuard::acquire(
            s,
            req("b by y@elsewhere (pid 2)", LeaseKind::Drain, Duration::ZERO),
            None,
            None,
        )
        .unwrap();
    }

    /// A holder suspended past its lease (Ctrl-Z, a stalled VM) must not resume acting before
    /// its renewing thread has even run: the fence distrusts a lease whose last renewal is too
    /// old.
    #[test]
    fn a_fence_whose_last_renewal_is_older_than_the_ttl_fails_by_itself() {
        let fresh = Fence::new(1, now_ms());
        assert!(fresh.check().is_ok());
        let stale = Fence::new(1, now_ms() - TTL.as_millis() as i64);
        assert_eq!(stale.check(), Err(LeaseLost { token: 1 }));
        stale.renewed(now_ms());
        assert!(stale.check().is_ok());
    }

    #[test]
    fn releasing_a_lease_taken_over_does_not_end_the_new_holders() {
        let (_d, s) = store();
        let g = LeaseGuard::acquire(
            s.clone(),
            req("a by x@elsewhere (pid 1)", LeaseKind::Apply, Duration::ZERO),
            None,
            None,
        )
        .unwrap();
        // Someone broke the lease (a stale holder judged dead) and took it.
        assert!(s.break_lease(g.token()).unwrap());
        let other = s
            .try_acquire_lease("b by y@elsewhere (pid 2)", "apply", None, TTL, now_ms())
            .unwrap();
        g.release().unwrap();
        let now = s.lease().unwrap().unwrap();
        assert_eq!(now.token, other.token);
        assert!(now.expires_ms > now_ms());
    }

    #[test]
    fn the_renewer_trips_the_fence_and_calls_on_lost_when_another_actor_holds_the_lease() {
        let (_d, s) = store();
        let mine = s
            .try_acquire_lease("a by x@elsewhere (pid 1)", "apply", None, TTL, now_ms())
            .unwrap();
        let fence = Fence::new(mine.token, mine.acquired_ms);
        let (stop, stopped) = mpsc::channel();
        let called = Arc::new(AtomicBool::new(false));
        let t = std::thread::spawn({
            let (s, fence, called) = (s.clone(), fence.clone(), called.clone());
            let on_lost: OnLost = Box::new(move || called.store(true, Ordering::SeqCst));
            move || {
                let holds = Holds {
                    store: s,
                    nodes: Arc::new(Mutex::new(None)),
                };
                renew(
                    &holds,
                    &fence,
                    &stopped,
                    Some(on_lost),
                    Duration::from_millis(5),
                )
            }
        });
        // Renewals succeed while the lease is ours.
        std::thread::sleep(Duration::from_millis(50));
        assert!(fence.check().is_ok());
        assert!(s.lease().unwrap().unwrap().expires_ms > now_ms());
        // Taken over: the renewer returns by itself, having tripped the fence.
        assert!(s.break_lease(mine.token).unwrap());
        s.try_acquire_lease("b by y@elsewhere (pid 2)", "apply", None, TTL, now_ms())
            .unwrap();
        t.join().unwrap();
        drop(stop);
        assert_eq!(fence.check(), Err(LeaseLost { token: mine.token }));
        assert!(called.load(Ordering::SeqCst));
    }

    fn fake_nodes(names: &[&str]) -> (Vec<crate::transport::fake::FakeRuntime>, NodeSet) {
        let fakes: Vec<_> = names
            .iter()
            .map(|n| crate::transport::fake::FakeRuntime::new(*n))
            .collect();
        let runtimes: crate::execute::Runtimes = fakes
            .iter()
            .map(|f| {
                (
                    f.node().to_string(),
                    Arc::new(f.clone()) as Arc<dyn crate::transport::NodeRuntime>,
                )
            })
            .collect();
        (fakes, NodeSet::own("f", runtimes).unwrap())
    }

    use crate::transport::NodeRuntime as _;

    /// Two actors with two state files (two machines) share only the nodes: the second is
    /// refused, naming the first and the nodes its record is on, until the first lets go.
    #[test]
    fn the_lease_on_the_nodes_excludes_an_actor_with_another_state_file() {
        let (_da, a) = store();
        let (_db, b) = store();
        let (fakes, set) = fake_nodes(&["node1", "node2"]);
        let g = LeaseGuard::acquire(
            a,
            req(
                "apply by x@laptop (pid 1)",
                LeaseKind::Apply,
                Duration::ZERO,
            ),
            Some(set.clone()),
            None,
        )
        .unwrap();
        let (on_nodes, held) = g.on_nodes().unwrap();
        assert_eq!(held, ["node1", "node2"]);
        assert!(on_nodes.token >= g.info().acquired_ms);
        let err = LeaseGuard::acquire(
            b.clone(),
            req(
                "drain by y@ci (pid 2)",
                LeaseKind::Drain,
                Duration::from_millis(300),
            ),
            Some(set.clone()),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("fleet f is locked by apply by x@laptop (pid 1) since "),
            "{err}"
        );
        assert!(
            err.to_string().ends_with("(lease held on node1, node2)"),
            "{err}"
        );
        // The refused actor left nothing behind: not in its own file, not on the nodes.
        assert!(b.lease().unwrap().is_none_or(|l| l.expires_ms <= now_ms()));
        assert_eq!(fakes[0].records().len(), 1);
        g.release().unwrap();
        assert!(fakes.iter().all(|f| f.records().is_empty()));
        let g2 = LeaseGuard::acquire(
            b,
            req("drain by y@ci (pid 2)", LeaseKind::Drain, Duration::ZERO),
            Some(set),
            None,
        )
        .unwrap();
        assert!(g2.fence().check().is_ok());
    }

    /// A record whose holder stopped renewing (killed on another machine) is taken over once
    /// it expires; one renewed keeps others out past its first expiry.
    #[test]
    fn an_expired_record_is_taken_over_and_a_renewed_one_is_not() {
        let (fakes, set) = fake_nodes(&["node1"]);
        let now = now_ms();
        let dead = LeaseInfo {
            holder: "apply by x@gone (pid 7)".into(),
            kind: "apply".into(),
            api: None,
            acquired_ms: now - 60_000,
            expires_ms: now - 30_000,
            token: now - 60_000,
        };
        let Take::Held { held, .. } = set.try_take(&dead, |_| false) else {
            panic!("an empty node must be taken");
        };
        // Renewed until a minute from now: live, whatever its labels' first expiry says.
        set.renew(&dead, &held, now + 60_000, |_| false).unwrap();
        let mine = LeaseInfo {
            holder: "apply by y@here (pid 8)".into(),
            token: now,
            acquired_ms: now,
            expires_ms: now + 30_000,
            ..dead.clone()
        };
        assert!(matches!(set.try_take(&mine, |_| false), Take::Busy { .. }));
        // Its last renewal has run out: taken over, the old record removed by id.
        set.renew(&dead, &held, now - 1, |_| false).unwrap();
        let Take::Held {
            held: mine_held, ..
        } = set.try_take(&mine, |_| false)
        else {
            panic!("an expired record must be taken over");
        };
        assert_ne!(mine_held["node1"], held["node1"]);
        assert_eq!(fakes[0].records().len(), 1);
        // The old holder, back, finds its record gone: lost, not renewed.
        assert!(matches!(
            set.renew(&dead, &held, now + 30_000, |_| false),
            Err(Renewal::Lost(_))
        ));
        let read = set.read();
        let rec = read["node1"].as_ref().unwrap().as_ref().unwrap();
        assert_eq!(rec.lease.holder, "apply by y@here (pid 8)");
    }

    /// A node down at acquisition does not block the lease; back, it is taken on the next
    /// renewal; no node at all is an error naming each cause.
    #[test]
    fn a_down_node_is_taken_when_it_is_back_and_no_node_at_all_is_an_error() {
        let (fakes, set) = fake_nodes(&["node1", "node2"]);
        fakes[1].set_unreachable(true);
        let (_d, s) = store();
        let g = LeaseGuard::acquire(
            s.clone(),
            req("apply by x@here (pid 1)", LeaseKind::Apply, Duration::ZERO),
            Some(set.clone()),
            None,
        )
        .unwrap();
        assert_eq!(g.on_nodes().unwrap().1, ["node1"]);
        fakes[1].set_unreachable(false);
        let holds = Holds {
            store: s.clone(),
            nodes: g.nodes.clone(),
        };
        holds.renew(g.token(), now_ms()).unwrap();
        assert_eq!(g.on_nodes().unwrap().1, ["node1", "node2"]);
        drop(holds);
        drop(g);
        for f in &fakes {
            f.set_unreachable(true);
        }
        let err = LeaseGuard::acquire(
            s,
            req("apply by x@here (pid 1)", LeaseKind::Apply, Duration::ZERO),
            Some(set),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, LeaseError::NoNode { .. }), "{err}");
        assert!(
            err.to_string().contains("connection refused (fake)"),
            "{err}"
        );
    }

    /// Review finding: a node taken back by a renewal carried the acquisition's expiry in its
    /// labels (long past), so any other actor's attempt removed it as expired until the next
    /// renewal wrote its file, and the holder lost its lease.
    #[test]
    fn a_node_taken_back_by_a_renewal_is_not_expired_for_others() {
        let (fakes, set) = fake_nodes(&["node1", "node2"]);
        let now = now_ms();
        let mine = LeaseInfo {
            holder: "run by x@here (pid 1)".into(),
            kind: "controller".into(),
            api: None,
            acquired_ms: now - 120_000,
            expires_ms: now - 90_000,
            token: now - 120_000,
        };
        fakes[1].set_unreachable(true);
        let Take::Held { held, .. } = set.try_take(&mine, |_| false) else {
            panic!("node1 answers");
        };
        fakes[1].set_unreachable(false);
        let held = set.renew(&mine, &held, now + 30_000, |_| false).unwrap();
        assert_eq!(held.len(), 2);
        let other = LeaseInfo {
            holder: "apply by y@elsewhere (pid 2)".into(),
            kind: "apply".into(),
            token: now,
            acquired_ms: now,
            expires_ms: now + 30_000,
            ..mine.clone()
        };
        assert!(matches!(set.try_take(&other, |_| false), Take::Busy { .. }));
        assert_eq!(
            set.renew(&mine, &held, now + 40_000, |_| false)
                .unwrap()
                .len(),
            2,
            "still ours on both nodes"
        );
    }

    /// Review finding: a renewal that starts after the fence ran out must not trust the lease
    /// again (another actor may have taken it meanwhile): the lease is lost.
    #[test]
    fn a_renewal_after_the_lease_ran_out_loses_it() {
        let (_d, s) = store();
        let mine = s
            .try_acquire_lease("a by x@elsewhere (pid 1)", "apply", None, TTL, now_ms())
            .unwrap();
        let fence = Fence::new(mine.token, now_ms() - TTL.as_millis() as i64);
        let (_stop, stopped) = mpsc::channel();
        let called = Arc::new(AtomicBool::new(false));
        let on_lost: OnLost = Box::new({
            let called = called.clone();
            move || called.store(true, Ordering::SeqCst)
        });
        let holds = Holds {
            store: s,
            nodes: Arc::new(Mutex::new(None)),
        };
        renew(
            &holds,
            &fence,
            &stopped,
            Some(on_lost),
            Duration::from_millis(5),
        );
        assert!(called.load(Ordering::SeqCst));
        assert!(fence.check().is_err());
    }

    /// Review finding: a holder is judged dead by its pid only on its own machine; a host name
    /// is shared by many machines.
    #[test]
    fn a_holder_on_another_machine_is_never_judged_dead_by_its_pid() {
        let lease = LeaseInfo {
            holder: format!("apply by root@{} (pid 4294967294)", hostname()),
            kind: "apply".into(),
            api: None,
            acquired_ms: 0,
            expires_ms: i64::MAX,
            token: 1,
        };
        let elsewhere = nodes::Record {
            id: "x".into(),
            lease: lease.clone(),
            machine: Some("another-machine-id".into()),
        };
        assert!(!nodes::holder_gone(&elsewhere, holder_is_dead));
        if let Some(here) = nodes::machine_id() {
            let local = nodes::Record {
                machine: Some(here),
                ..elsewhere
            };
            assert!(nodes::holder_gone(&local, holder_is_dead));
        }
    }

    /// Review finding: the records of a lease taken on the nodes after a wait carried the
    /// state-file lease's first expiry, already past, so a third actor removed them as expired.
    #[test]
    fn records_taken_after_a_wait_carry_an_expiry_from_now() {
        let (_fakes, set) = fake_nodes(&["node1"]);
        let now = now_ms();
        let stale = LeaseInfo {
            holder: "apply by x@here (pid 1)".into(),
            kind: "apply".into(),
            api: None,
            acquired_ms: now - 60_000,
            expires_ms: now - 30_000,
            token: 3,
        };
        let hold = take_nodes(
            &set,
            &stale,
            &req("apply by x@here (pid 1)", LeaseKind::Apply, Duration::ZERO),
        )
        .unwrap();
        assert!(hold.info.expires_ms > now);
        let read = set.read();
        let rec = read["node1"].as_ref().unwrap().as_ref().unwrap();
        assert!(rec.lease.expires_ms > now, "{rec:?}");
    }
}

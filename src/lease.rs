//! The fleet lease, held by one actor at a time (`apply`, `drain`, the controller): taken with
//! a bounded wait, renewed in the background for as long as the guard lives, released when it
//! is dropped. Every mutating step checks the guard's [`Fence`] first, so an actor whose lease
//! was taken over (it stalled past the TTL, a renewal found another token) stops before its
//! next change instead of acting beside the new holder.
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

use crate::store::{LeaseInfo, Store, StoreError, now_ms};

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
    /// Takes the fleet lease for `holder`, waiting up to `wait` for another holder to let go.
    /// A holder that was a process of this machine's fleetctl and is gone (killed) loses its
    /// lease at once. `on_lost` runs when the lease is later lost.
    ///
    /// # Errors
    /// [`StoreError::Locked`] naming the holder when the wait runs out; store failures.
    pub fn acquire(
        store: Arc<Store>,
        holder: &str,
        kind: LeaseKind,
        api: Option<&str>,
        wait: Duration,
        on_lost: Option<OnLost>,
    ) -> Result<LeaseGuard, StoreError> {
        let deadline = Instant::now() + wait;
        let info = loop {
            match store.try_acquire_lease(holder, kind.as_str(), api, TTL, now_ms()) {
                Err(StoreError::Locked { lease, .. }) if holder_is_dead(&lease.holder) => {
                    tracing::warn!(holder = %lease.holder, "the lease holder is gone; taking the lease over");
                    store.break_lease(lease.token)?;
                }
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(
                        POLL.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
                other => break other?,
            }
        };
        let fence = Fence::new(info.token, info.acquired_ms);
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let store = store.clone();
            let fence = fence.clone();
            std::thread::Builder::new()
                .name("lease-renew".into())
                .spawn(move || renew(&store, &fence, &stopped, on_lost, RENEW))
                .expect("the OS refused a thread for the lease renewal")
        };
        Ok(LeaseGuard {
            store,
            info,
            fence,
            stop: Some(stop),
            renewer: Some(renewer),
            released: false,
        })
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
        self.store.release_lease(self.info.token)
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
        if !self.released
            && let Err(e) = self.store.release_lease(self.info.token)
        {
            tracing::warn!(error = %e, "could not release the fleet lease; it lapses by itself");
        }
    }
}

/// The renewing thread: renews every `every` until told to stop; marks the fence lost (and
/// calls `on_lost`) when another actor took the lease, or when renewals have failed for a TTL —
/// by then another actor may have taken it.
fn renew(
    store: &Store,
    fence: &Fence,
    stopped: &mpsc::Receiver<()>,
    on_lost: Option<OnLost>,
    every: Duration,
) {
    let on_lost = Mutex::new(on_lost);
    let lose = || {
        fence.lost.store(true, Ordering::Release);
        tracing::error!(
            token = fence.token,
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
        // The stored expiry is computed from this instant: the fence trusts the lease from it,
        // however long the store takes to answer.
        let at = now_ms();
        match store.renew_lease(fence.token, TTL, at) {
            Ok(()) => fence.renewed(at),
            Err(StoreError::Fenced { .. }) => return lose(),
            Err(e) if fence.check().is_err() => {
                tracing::warn!(error = %e, "could not renew the fleet lease before it ran out");
                return lose();
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the fleet lease; retrying"),
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
            "a by x@elsewhere (pid 1)",
            LeaseKind::Apply,
            None,
            Duration::ZERO,
            None,
        )
        .unwrap();
        let err = LeaseGuard::acquire(
            s.clone(),
            "b by y@elsewhere (pid 2)",
            LeaseKind::Drain,
            None,
            Duration::from_millis(300),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(g.fence().check().is_ok());
        drop(g);
        LeaseGuard::acquire(
            s,
            "b by y@elsewhere (pid 2)",
            LeaseKind::Drain,
            None,
            Duration::ZERO,
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
            "a by x@elsewhere (pid 1)",
            LeaseKind::Apply,
            None,
            Duration::ZERO,
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
                renew(
                    &s,
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
}

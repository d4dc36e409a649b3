//! The trigger queue: everything that may mean "look again" (an engine event, a manifest change,
//! a connection change, an intent, a timer) lands here, coalesced. The loop takes them all at
//! once and runs one reconcile of the whole fleet; triggers that arrive while it runs make
//! exactly one more. Triggers are hints for the logs: the reconcile never learns why it ran.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Distinct triggers kept for one reconcile's log line; more are counted, not listed.
pub const MAX_LISTED: usize = 32;

/// Why a reconcile was asked for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// The controller started.
    Start,
    /// The periodic resync (`Fleet.spec.resync`) or a requeue came due.
    Timer,
    /// The manifests changed.
    Manifests,
    /// An engine event of a managed container: (node, action, container).
    Event(String, String, String),
    /// A node's event stream (re)subscribed or ended, or its connection changed: (node, what).
    Connection(String, String),
    /// An operation from the API or a CLI intent finished changing the store: (what).
    Operation(String),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Start => write!(f, "start"),
            Trigger::Timer => write!(f, "timer"),
            Trigger::Manifests => write!(f, "manifests"),
            Trigger::Event(node, action, c) => write!(f, "{node}: {action} {c}"),
            Trigger::Connection(node, what) => write!(f, "{node}: {what}"),
            Trigger::Operation(what) => write!(f, "{what}"),
        }
    }
}

#[derive(Default)]
struct Pending {
    listed: BTreeSet<Trigger>,
    more: usize,
}

/// Coalescing trigger queue with one consumer.
#[derive(Default)]
pub struct Triggers {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Triggers {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks for a reconcile.
    pub fn push(&self, t: Trigger) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let fixed = matches!(t, Trigger::Start | Trigger::Timer | Trigger::Manifests);
            if fixed || p.listed.len() < MAX_LISTED || p.listed.contains(&t) {
                p.listed.insert(t);
            } else {
                p.more += 1;
            }
        }
        self.notify.notify_one();
    }

    /// Waits until something is pending (returns at once when something already is).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Takes everything pending (`None` when nothing was).
    pub fn take(&self) -> Option<Batch> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.listed.is_empty() {
            return None;
        }
        Some(Batch {
            listed: std::mem::take(&mut p.listed),
            more: std::mem::take(&mut p.more),
        })
    }
}

/// What asked for one reconcile: the triggers taken together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    listed: BTreeSet<Trigger>,
    more: usize,
}

impl Batch {
    /// Whether `t` is among the triggers (always listed for the fixed ones: only events,
    /// connections and operations beyond the first [`MAX_LISTED`] are merely counted).
    pub fn has(&self, t: &Trigger) -> bool {
        self.listed.contains(t)
    }
}

impl fmt::Display for Batch {
    /// The log line: every trigger listed, then `+N more`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in &self.listed {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{t}")?;
        }
        if self.more > 0 {
            write!(f, ", +{} more", self.more)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn triggers_coalesce_into_one_wakeup_and_one_line() {
        let q = Triggers::new();
        q.push(Trigger::Event("node1".into(), "die".into(), "web-0".into()));
        q.push(Trigger::Event("node1".into(), "die".into(), "web-0".into()));
        q.push(Trigger::Manifests);
        q.wait().await; // a permit was stored: returns at once
        assert_eq!(
            q.take().map(|b| b.to_string()).as_deref(),
            Some("manifests, node1: die web-0")
        );
        assert_eq!(q.take(), None);
        for i in 0..MAX_LISTED + 3 {
            q.push(Trigger::Operation(format!("op {i:02}")));
        }
        assert!(q.take().unwrap().to_string().ends_with("+3 more"));
    }

    /// The resync is recognised by what it is, not by its words: a container named `timer-0`
    /// used to make every pass it triggered rescan the manifests.
    #[test]
    fn a_batch_knows_its_triggers_by_kind_not_by_name() {
        let q = Triggers::new();
        q.push(Trigger::Event(
            "node1".into(),
            "die".into(),
            "timer-0".into(),
        ));
        let b = q.take().unwrap();
        assert!(!b.has(&Trigger::Timer), "{b}");
        // The fixed triggers are listed even behind a flood of events.
        for i in 0..MAX_LISTED + 5 {
            q.push(Trigger::Operation(format!("op {i:02}")));
        }
        q.push(Trigger::Timer);
        let b = q.take().unwrap();
        assert!(b.has(&Trigger::Timer), "{b}");
    }
}

//! Views of plans and apply outcomes shared by the CLI and the controller's API: the same words
//! and the same JSON whether `apply` runs here or is handed to a running controller.

use serde::{Deserialize, Serialize};

use crate::execute::StepOutcome;
use crate::plan::Plan;

/// Counts per action.
#[derive(Debug, Serialize, Deserialize, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Containers to create.
    pub create: usize,
    /// To start.
    pub start: usize,
    /// To stop.
    pub stop: usize,
    /// To update in place.
    pub update: usize,
    /// To recreate on the same node.
    pub recreate: usize,
    /// To move to another node.
    pub r#move: usize,
    /// To remove.
    pub remove: usize,
    /// Already as desired.
    pub unchanged: usize,
    /// Swarm and network steps.
    #[serde(default)]
    pub network: usize,
}

impl Summary {
    /// Steps in all (everything but `unchanged`).
    pub fn steps(&self) -> usize {
        self.create
            + self.start
            + self.stop
            + self.update
            + self.recreate
            + self.r#move
            + self.remove
            + self.network
    }
}

/// Counts of a plan's steps.
pub fn summary(plan: &Plan) -> Summary {
    let mut s = Summary {
        unchanged: plan.unchanged.len(),
        network: plan.network.steps.len(),
        ..Default::default()
    };
    for step in &plan.steps {
        match step.action.verb(&step.node) {
            "create" => s.create += 1,
            "start" => s.start += 1,
            "stop" => s.stop += 1,
            "update" => s.update += 1,
            "recreate" => s.recreate += 1,
            "move" => s.r#move += 1,
            _ => s.remove += 1,
        }
    }
    s
}

/// One line per summary count that is not zero.
pub fn summary_line(s: &Summary) -> String {
    let mut parts = Vec::new();
    for (n, word) in [
        (s.create, "to create"),
        (s.start, "to start"),
        (s.stop, "to stop"),
        (s.update, "to update in place"),
        (s.recreate, "to recreate"),
        (s.r#move, "to move"),
        (s.remove, "to remove"),
        (s.network, "network changes"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    if parts.is_empty() {
        format!("no changes; {} unchanged", s.unchanged)
    } else {
        format!("{}; {} unchanged", parts.join(", "), s.unchanged)
    }
}

/// How one pass of an apply went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassView {
    /// What the pass set out to do.
    pub summary: Summary,
    /// How each step ended, in plan order.
    pub outcomes: Vec<StepOutcome>,
    /// How each network step ended (they run first). Absent from an older controller's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<crate::network::exec::NetOutcome>,
}

/// How an apply ended: `fleetctl apply -o json` prints exactly this, whether it ran here or was
/// handed to a running controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyView {
    /// Everything placed, running, and healthy where it has a healthcheck.
    pub converged: bool,
    /// Wall time of the whole apply.
    pub elapsed_ms: u64,
    /// Steps that succeeded, over every pass.
    pub changes: usize,
    /// The passes made (at most [`crate::converge::MAX_PASSES`]). Absent from an older
    /// controller's answer.
    #[serde(default)]
    pub passes: Vec<PassView>,
    /// What keeps the fleet from being converged, one line each.
    pub problems: Vec<String>,
    /// Plugs found on the nodes that this state did not know, adopted (recorded) rather than
    /// removed: (id, node). Absent from an older controller's answer.
    #[serde(default)]
    pub adopted: Vec<(String, String)>,
    /// What the last pass said without acting on it and that keeps nothing from converging: a
    /// node whose engine is not the one declared, a node on a bridge of its own (it cannot join
    /// the overlay's swarm). Absent when there is none, and from an older controller's answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

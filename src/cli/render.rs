//! Rendering plans and apply progress for the terminal, and their JSON views.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::execute::Progress;
use crate::plan::{Action, Object, Plan, Step};
pub use crate::view::{Summary, summary, summary_line};

/// One-character marks of the actions.
pub fn mark(action: &Action, node: &str) -> &'static str {
    match action.verb(node) {
        "create" => "+",
        "start" => ">",
        "stop" => ".",
        "update" => "~",
        "recreate" => "±",
        "move" => "→",
        "remove" => "-",
        _ => "?",
    }
}

/// A step as data (the JSON view of plans).
#[derive(Debug, Serialize)]
pub struct StepView<'a> {
    /// Node.
    pub node: &'a str,
    /// Container.
    pub container: &'a str,
    /// create / start / stop / update / recreate / move / remove.
    pub action: &'a str,
    /// What it is about.
    pub object: &'a Object,
    /// Why.
    pub reason: &'a str,
    /// Image of the new container, for creates and replacements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<&'a str>,
    /// Old node, for moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
}

/// The JSON view of a plan.
#[derive(Debug, Serialize)]
pub struct PlanView<'a> {
    /// Whether applying would change anything.
    pub changes: bool,
    /// Counts.
    pub summary: Summary,
    /// Steps.
    pub steps: Vec<StepView<'a>>,
    /// Containers already as desired.
    pub unchanged: Vec<UnchangedView<'a>>,
    /// Nodes that could not be observed.
    pub unreachable: &'a BTreeMap<String, String>,
    /// What fits nowhere, with why.
    pub unplaced: Vec<UnplacedView>,
    /// What should leave its node but stays (no other node has room), with why.
    pub stuck: Vec<StuckView>,
    /// Plugs found on the nodes that this state did not know: adopted, not removed (id, node).
    pub adopted: &'a [(String, String)],
    /// Plug containers this state does not know and cannot adopt (id, why): left alone.
    pub unadoptable: &'a [(String, String)],
    /// The fleet's network: its steps (run first) and problems.
    pub network: &'a crate::network::NetworkPlan,
    /// The digest each image runs as, and how it was found (SPEC §11).
    pub images: &'a [crate::images::ImagePin],
    /// Warnings: said, not acted on (a node whose engine is not the one declared).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub warnings: &'a [String],
}

/// Something stuck, as data.
#[derive(Debug, Serialize)]
pub struct StuckView {
    /// What.
    pub object: Object,
    /// Where it stays.
    pub node: String,
    /// Per-node reasons, in one line.
    pub diagnosis: String,
}

/// A container already as desired, as data.
#[derive(Debug, Serialize)]
pub struct UnchangedView<'a> {
    /// Node.
    pub node: &'a str,
    /// Container name.
    pub container: &'a str,
}

/// Something unplaced, as data.
#[derive(Debug, Serialize)]
pub struct UnplacedView {
    /// What.
    pub object: Object,
    /// Per-node reasons, in one line.
    pub diagnosis: String,
}

fn step_view(s: &Step) -> StepView<'_> {
    let (image, from) = match &s.action {
        Action::Create { spec } => (Some(spec.image.as_str()), None),
        Action::Replace { spec, old_node, .. } => (
            Some(spec.image.as_str()),
            (old_node != &s.node).then_some(old_node.as_str()),
        ),
        _ => (None, None),
    };
    StepView {
        node: &s.node,
        container: &s.container,
        action: s.action.verb(&s.node),
        object: &s.object,
        reason: &s.reason,
        image,
        from,
    }
}

/// The JSON view.
pub fn plan_view(plan: &Plan) -> PlanView<'_> {
    PlanView {
        changes: plan.has_changes(),
        summary: summary(plan),
        steps: plan.steps.iter().map(step_view).collect(),
        unchanged: plan
            .unchanged
            .iter()
            .map(|(node, container)| UnchangedView { node, container })
            .collect(),
        unreachable: &plan.unreachable,
        unplaced: plan
            .unplaced
            .iter()
            .map(|u| UnplacedView {
                object: u.object.clone(),
                diagnosis: u.diagnosis.to_string(),
            })
            .collect(),
        stuck: plan
            .stuck
            .iter()
            .map(|st| StuckView {
                object: st.object.clone(),
                node: st.node.clone(),
                diagnosis: st.diagnosis.to_string(),
            })
            .collect(),
        adopted: &plan.adopted,
        unadoptable: &plan.unadoptable,
        network: &plan.network,
        images: &plan.images.images,
        warnings: &plan.warnings,
    }
}

/// The plan as a per-node tree.
pub fn plan_text(plan: &Plan, nodes: &[String]) -> String {
    let mut out = String::new();
    for w in &plan.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    for line in image_lines(&plan.images) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some((name, driver)) = &plan.network.network
        && (!plan.network.steps.is_empty() || !plan.network.problems.is_empty())
    {
        out.push_str(&format!(
            "network {name} ({}):
",
            driver.as_str()
        ));
        for s in &plan.network.steps {
            out.push_str(&format!(
                "  + {}
",
                s.describe()
            ));
        }
        for p in &plan.network.problems {
            out.push_str(&format!(
                "  ! {p}
"
            ));
        }
    }
    let width = plan
        .steps
        .iter()
        .map(|s| s.container.len())
        .max()
        .unwrap_or(0);
    for node in nodes {
        if let Some(err) = plan.unreachable.get(node) {
            out.push_str(&format!(
                "{node}: UNREACHABLE, nothing planned there: {err}\n"
            ));
            continue;
        }
        let steps: Vec<&Step> = plan.steps.iter().filter(|s| &s.node == node).collect();
        let unchanged = plan.unchanged.iter().filter(|(n, _)| n == node).count();
        out.push_str(&format!("{node}:\n"));
        for s in &steps {
            out.push_str(&format!(
                "  {} {:<8} {:<width$}  {}\n",
                mark(&s.action, &s.node),
                s.action.verb(&s.node),
                s.container,
                s.reason,
            ));
        }
        if unchanged > 0 || steps.is_empty() {
            out.push_str(&format!("  = {unchanged} unchanged\n"));
        }
    }
    for u in &plan.unplaced {
        out.push_str(&format!(
            "UNPLACED {}: {}\n",
            object_words(&u.object),
            u.diagnosis
        ));
    }
    for (id, node) in &plan.adopted {
        out.push_str(&format!(
            "ADOPT plug {id} on {node}: running there, unknown to this state (recorded, not removed)\n"
        ));
    }
    for (id, why) in &plan.unadoptable {
        out.push_str(&format!(
            "LEAVE plug {id}: unknown to this state and cannot be adopted ({why}); left alone\n"
        ));
    }
    for st in &plan.stuck {
        out.push_str(&format!(
            "STUCK {} stays on {}: no other node can take it: {}\n",
            object_words(&st.object),
            st.node,
            st.diagnosis
        ));
    }
    let mut line = summary_line(&summary(plan));
    // What the plan cannot do: without it "no changes" would read like success.
    let mut cannot = Vec::new();
    if !plan.unplaced.is_empty() {
        cannot.push(format!("{} cannot be placed", plan.unplaced.len()));
    }
    if !plan.unreachable.is_empty() {
        cannot.push(format!(
            "{} node{} unreachable",
            plan.unreachable.len(),
            if plan.unreachable.len() == 1 { "" } else { "s" }
        ));
    }
    if !plan.stuck.is_empty() {
        line.push_str(&format!(
            "; {} stuck (they stay where they are until another node has room)",
            plan.stuck.len()
        ));
    }
    if !cannot.is_empty() {
        line.push_str(&format!(" — NOT complete: {}", cannot.join(", ")));
    }
    out.push_str(&format!("Plan: {line}.\n"));
    out
}

fn object_words(object: &Object) -> String {
    match object {
        Object::Service { name, replica } => format!("service {name} replica {replica}"),
        Object::Plug { id } => format!("plug {id}"),
        Object::Stray => "container".into(),
    }
}

/// Prints apply progress lines as steps finish.
pub fn progress_line(p: &Progress) -> Option<String> {
    match p {
        Progress::Started(_) => None,
        Progress::Done(s, d) => Some(format!(
            "{:<10} {} {:<8} {}  {} ({:.1}s)",
            s.node,
            mark(&s.action, &s.node),
            s.action.verb(&s.node),
            s.container,
            s.reason,
            d.as_secs_f64()
        )),
        Progress::Failed(s, e) => Some(format!(
            "{:<10} ✗ {:<8} {}  FAILED: {e}",
            s.node,
            s.action.verb(&s.node),
            s.container
        )),
        Progress::Pulling { .. } => None,
        Progress::Pulled {
            node,
            image,
            elapsed,
        } => Some(format!(
            "{node:<10} ↓ {:<8} {image}  ({:.1}s)",
            "pull",
            elapsed.as_secs_f64()
        )),
        Progress::Copied {
            node,
            image,
            from,
            elapsed,
        } => Some(format!(
            "{node:<10} ↓ {:<8} {image}  from {from}, its registry could not serve it ({:.1}s)",
            "copy",
            elapsed.as_secs_f64()
        )),
    }
}

/// The status line of a pull in progress, for a terminal (rewritten in place).
pub fn pull_status(p: &Progress) -> Option<String> {
    let Progress::Pulling {
        node,
        image,
        progress,
    } = p
    else {
        return None;
    };
    let mb = |b: u64| b as f64 / 1e6;
    if progress.layers == 0 && progress.bytes == 0 && progress.bytes_done > 0 {
        // A copy from another node (`pull: fleet`): an archive has no layer count up front.
        return Some(format!(
            "{node:<10} ↓ copying  {image}: {:.1} MB",
            mb(progress.bytes_done)
        ));
    }
    Some(format!(
        "{node:<10} ↓ pulling  {image}: {}/{} layers, {:.1}/{:.1} MB",
        progress.layers_done,
        progress.layers,
        mb(progress.bytes_done),
        mb(progress.bytes)
    ))
}

/// `sha256:0123456789ab`: enough of a digest to tell it apart.
fn short_digest(d: &str) -> &str {
    &d[..d.len().min("sha256:".len() + 12)]
}

/// The images lines of a plan: tag → digest each image runs as, which tags moved, which could
/// not be looked up.
pub fn image_lines(pins: &crate::images::ImagePins) -> Vec<String> {
    // An image that runs by its tag is not listed (a locally built one, `pull: never`, or one
    // whose registry could not be asked: the JSON view says why).
    pins.images
        .iter()
        .filter_map(|p| match (p.pinned.as_deref(), &p.error) {
            (Some(digest), _) => Some((p, short_digest(digest).to_string())),
            (None, Some(_)) => Some((p, "its tag".to_string())),
            (None, None) => None,
        })
        .map(|(p, by)| {
            let how = if p.moved() {
                format!(
                    " (the tag moved from {}: its containers are replaced)",
                    short_digest(p.recorded.as_deref().unwrap_or_default())
                )
            } else if let Some(e) = &p.error
                && p.pinned.is_some()
            {
                format!(" (recorded; its registry could not say now: {e})")
            } else if let Some(e) = &p.error {
                format!(" (its registry could not say: {e}; `--refresh` asks again)")
            } else if p.resolved.is_some() && p.recorded.as_deref().is_none_or(str::is_empty) {
                " (resolved now)".to_string()
            } else {
                String::new()
            };
            format!("image {} → {by}{how}", p.image)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{EngineKind, NetworkDriver};
    use crate::network::{NetProblem, NetworkPlan};

    /// `plan` says an engine other than declared as a warning line first, and a Podman node on
    /// a bridge of its own under the network, even when nothing is to be done.
    #[test]
    fn plan_text_says_warnings_and_a_podman_nodes_own_bridge() {
        let plan = Plan {
            warnings: vec!["node node2 is declared podman (spec.docker.engine) but its engine answers as docker 24.0.7: fleetctl plans by the engine found".into()],
            network: NetworkPlan {
                network: Some(("aims".into(), NetworkDriver::Overlay)),
                steps: vec![],
                problems: vec![NetProblem::OwnBridge {
                    node: "node4".into(),
                    engine: EngineKind::Podman,
                    version: Some("4.3.1".into()),
                    name: "aims-bridge".into(),
                }],
            },
            ..Plan::default()
        };
        let text = plan_text(&plan, &[]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "warning: node node2 is declared podman (spec.docker.engine) but its engine answers as docker 24.0.7: fleetctl plans by the engine found",
                "network aims (overlay):",
                "  ! node node4 runs podman 4.3.1, which cannot join the swarm: its containers are on a bridge network of their own, aims-bridge (names resolve on node4 only; other nodes' services through published ports, outside the overlay and its encryption)",
            ],
            "{text}"
        );
        let json = serde_json::to_value(plan_view(&plan)).unwrap();
        assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
        assert_eq!(json["network"]["problems"][0]["problem"], "own-bridge");
    }
}

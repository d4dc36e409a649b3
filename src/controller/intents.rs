//! The hand-off from CLI commands to a running controller, through the state store's `intents`
//! table (see `docs/controller.md`).
//!
//! A command that finds a live controller lease submits an intent (kind + JSON payload) instead
//! of acting itself, then polls the row: the controller claims it (`running`), may post progress
//! (drain: lines so far), and finishes it (`done` with the result, or `failed` with an
//! [`IntentFailure`]). Payload and result types live here so both sides agree on them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Controller;
use super::ops::OpError;
use crate::manifest::Source;
use crate::plugs::PlugError;
use crate::store::{Intent, IntentState};

/// Intent kinds.
pub mod kinds {
    /// `fleetctl apply PATH`: [`super::ApplyIntent`] → [`crate::view::ApplyView`].
    pub const APPLY: &str = "apply";
    /// `fleetctl plug create`: [`super::PlugCreateIntent`] → [`crate::plugs::PlugCreated`].
    pub const PLUG_CREATE: &str = "plug-create";
    /// `fleetctl plug delete`: [`super::PlugIdIntent`] → [`super::PlugDeleted`].
    pub const PLUG_DELETE: &str = "plug-delete";
    /// `fleetctl plug touch`: [`super::PlugIdIntent`] → [`crate::store::PlugRecord`].
    pub const PLUG_TOUCH: &str = "plug-touch";
    /// `fleetctl drain`: [`super::DrainIntent`] → [`crate::drain::DrainReport`], with
    /// [`super::DrainProgress`] while it runs.
    pub const DRAIN: &str = "drain";
    /// `fleetctl rollback`: [`super::RollbackIntent`] → [`crate::view::ApplyView`].
    pub const ROLLBACK: &str = "rollback";
}

/// Payload of a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackIntent {
    /// The revision to apply again.
    pub revision: i64,
    /// The command's `--timeout` (ms), as for an apply.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Payload of an apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyIntent {
    /// The manifests the command was given.
    pub sources: Vec<Source>,
    /// The command's `--timeout` (ms): the whole apply's budget for containers to run and turn
    /// healthy. Absent from an older CLI: the controller's own ready timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The command's `--refresh`: every image's registry is asked again.
    #[serde(default)]
    pub refresh: bool,
}

/// Payload of a plug create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlugCreateIntent {
    /// Class.
    pub class: String,
    /// Owner.
    pub owner: String,
}

/// Payload of a plug delete or touch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlugIdIntent {
    /// Plug id.
    pub id: String,
}

/// Result of a plug delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlugDeleted {
    /// Plug id.
    pub id: String,
    /// Notes (a copy left on an unreachable node).
    pub notes: Vec<String>,
}

/// Payload of a drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainIntent {
    /// Node.
    pub node: String,
    /// Give up after this long (ms).
    pub timeout_ms: u64,
    /// Also stop containers that may run only there.
    pub force: bool,
    /// Who asked.
    pub actor: String,
}

/// Progress of a drain so far (the result of a `running` intent).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainProgress {
    /// One line per finished step.
    pub progress: Vec<String>,
}

/// Result of a failed intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentFailure {
    /// What went wrong, for the operator.
    pub error: String,
    /// `unschedulable`, `no-class`, `no-plug`, `no-node`, `no-revision`, `invalid`, `differs`,
    /// `bad-intent`,
    /// `error`.
    pub kind: String,
}

impl IntentFailure {
    fn new(kind: &str, error: impl ToString) -> Self {
        IntentFailure {
            error: error.to_string(),
            kind: kind.to_string(),
        }
    }

    fn of_plug(e: &PlugError) -> Self {
        let kind = match e {
            PlugError::Unschedulable { .. } => "unschedulable",
            PlugError::NoClass(..) => "no-class",
            PlugError::Store(crate::store::StoreError::NoPlug(_)) => "no-plug",
            _ => "error",
        };
        Self::new(kind, e)
    }

    fn of_op(e: &OpError) -> Self {
        match e {
            OpError::Plug(p) => Self::of_plug(p),
            OpError::NoNode(..) => Self::new("no-node", e),
            OpError::NoRevision(..) => Self::new("no-revision", e),
            OpError::Invalid(_) => Self::new("invalid", e),
            OpError::Differs(_) => Self::new("differs", e),
            OpError::Store(_) => Self::new("error", e),
        }
    }
}

fn payload<T: for<'de> Deserialize<'de>>(intent: &Intent) -> Result<T, IntentFailure> {
    serde_json::from_str(&intent.payload).map_err(|e| {
        IntentFailure::new(
            "bad-intent",
            format!("intent {} ({}): bad payload: {e}", intent.id, intent.kind),
        )
    })
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("results serialize")
}

impl Controller {
    /// Whether `intent` was submitted before this controller took the fleet lease: it was
    /// handed to a controller that is gone, and the command that submitted it has given up (it
    /// watches the lease). Running it now — a drain submitted hours ago — would surprise
    /// everyone.
    pub(super) fn is_stale(&self, intent: &Intent) -> bool {
        self.cfg
            .lease
            .as_ref()
            .is_some_and(|l| intent.at_ms < l.acquired_ms)
    }

    /// Fails a stale intent.
    pub(super) fn fail_stale(&self, intent: &Intent) {
        tracing::warn!(intent = intent.id, kind = %intent.kind, "dropping an intent handed to a previous controller");
        let failure = IntentFailure::new(
            "stale",
            "the controller it was handed to stopped before running it; run the command again",
        );
        let _ = self.store.finish_intent(
            intent.id,
            IntentState::Failed,
            &json(&failure),
            self.now_ms(),
        );
    }

    /// Runs one claimed intent and records its outcome.
    pub(super) async fn handle_intent(self: Arc<Self>, intent: Intent) {
        tracing::info!(intent = intent.id, kind = %intent.kind, "intent from the command line");
        let outcome = self.run_intent(&intent).await;
        let (state, result) = match &outcome {
            Ok(r) => (IntentState::Done, r.clone()),
            Err(f) => {
                tracing::warn!(intent = intent.id, kind = %intent.kind, error = %f.error, "intent failed");
                (IntentState::Failed, json(f))
            }
        };
        if let Err(e) = self
            .store
            .finish_intent(intent.id, state, &result, self.now_ms())
        {
            tracing::warn!(intent = intent.id, error = %e, "could not record the intent's outcome");
        }
    }

    async fn run_intent(&self, intent: &Intent) -> Result<String, IntentFailure> {
        match intent.kind.as_str() {
            kinds::APPLY => {
                let p: ApplyIntent = payload(intent)?;
                let timeout = p.timeout_ms.map_or(
                    self.cfg.exec.ready_timeout,
                    std::time::Duration::from_millis,
                );
                self.apply(
                    &p.sources,
                    timeout,
                    crate::images::Refresh::asked(p.refresh),
                )
                .await
                .map(|o| json(&o))
                .map_err(|e| IntentFailure::of_op(&e))
            }
            kinds::ROLLBACK => {
                let p: RollbackIntent = payload(intent)?;
                let timeout = p.timeout_ms.map_or(
                    self.cfg.exec.ready_timeout,
                    std::time::Duration::from_millis,
                );
                self.rollback(p.revision, timeout)
                    .await
                    .map(|o| json(&o))
                    .map_err(|e| IntentFailure::of_op(&e))
            }
            kinds::PLUG_CREATE => {
                let p: PlugCreateIntent = payload(intent)?;
                self.create_plug(&p.class, &p.owner)
                    .await
                    .map(|c| json(&c))
                    .map_err(|e| IntentFailure::of_plug(&e))
            }
            kinds::PLUG_DELETE => {
                let p: PlugIdIntent = payload(intent)?;
                self.delete_plug(&p.id)
                    .await
                    .map(|notes| json(&PlugDeleted { id: p.id, notes }))
                    .map_err(|e| IntentFailure::of_plug(&e))
            }
            kinds::PLUG_TOUCH => {
                let p: PlugIdIntent = payload(intent)?;
                self.touch_plug(&p.id)
                    .await
                    .map(|r| json(&r))
                    .map_err(|e| IntentFailure::of_plug(&e))
            }
            kinds::DRAIN => {
                let p: DrainIntent = payload(intent)?;
                let lines = Mutex::new(DrainProgress::default());
                let id = intent.id;
                let progress = |line: &str| {
                    let mut l = lines.lock().unwrap_or_else(|e| e.into_inner());
                    l.progress.push(line.to_string());
                    let _ = self.store.finish_intent(
                        id,
                        IntentState::Running,
                        &json(&*l),
                        self.now_ms(),
                    );
                };
                self.drain(
                    &p.node,
                    Duration::from_millis(p.timeout_ms),
                    p.force,
                    &p.actor,
                    &progress,
                )
                .await
                .map(|r| json(&r))
                .map_err(|e| IntentFailure::of_op(&e))
            }
            other => Err(IntentFailure::new(
                "bad-intent",
                format!("unknown intent kind {other:?} (a newer fleetctl than the controller?)"),
            )),
        }
    }
}

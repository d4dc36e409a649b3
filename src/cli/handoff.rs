//! Handing a command's intent to a running controller (see `docs/controller.md`).
//!
//! A live lease of kind `controller` means a controller owns the fleet: `apply`, `plug
//! create|delete|touch` and `drain` then submit an intent to the state store's `intents` table
//! and wait for the controller's outcome instead of acting themselves, so two actors never
//! change the fleet at once. The CLI needs nothing but the state database it already uses (no
//! token, no network); the controller claims intents within a fraction of a second.

use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::controller::intents::{DrainProgress, IntentFailure};
use crate::lease::holder_is_dead;
use crate::store::{IntentState, LeaseInfo, Store, now_ms};

/// How often the CLI looks at its intent.
const POLL: Duration = Duration::from_millis(100);

/// The live controller lease, when a controller runs for this state database.
///
/// # Errors
/// Store failures.
pub fn live_controller(store: &Store) -> anyhow::Result<Option<LeaseInfo>> {
    Ok(store.lease()?.filter(|l| {
        l.kind == "controller" && l.expires_ms > now_ms() && !holder_is_dead(&l.holder)
    }))
}

/// A controller that runs this fleet, as this command finds it.
#[derive(Debug, Clone)]
pub enum Found {
    /// It shares this state file: hand over through it.
    Here(LeaseInfo),
    /// Its lease record is on the nodes but not in this state file: another machine (or
    /// another state file); hand over through its API, or refuse.
    Elsewhere(LeaseInfo),
}

/// The controller running this fleet: in this state file, else on the nodes of `nodes` (one
/// read per node, in parallel).
///
/// # Errors
/// Store failures.
pub fn find_controller(
    store: &Store,
    nodes: &crate::lease::nodes::NodeSet,
) -> anyhow::Result<Option<Found>> {
    if let Some(l) = live_controller(store)? {
        return Ok(Some(Found::Here(l)));
    }
    let now = now_ms();
    Ok(nodes
        .read()
        .into_values()
        .filter_map(|r| r.ok().flatten())
        .find(|r| {
            r.lease.kind == "controller"
                && r.lease.expires_ms > now
                && !crate::lease::nodes::holder_gone(r, holder_is_dead)
        })
        .map(|r| Found::Elsewhere(r.lease)))
}

/// Refuses `verb` beside a controller that runs elsewhere, naming it: exit status 1.
pub fn refuse(fleet: &str, verb: &str, lease: &LeaseInfo) -> u8 {
    eprintln!(
        "error: fleet {fleet} is run by a controller on another machine or state file ({}, API {}): \
         pass --controller http://HOST:PORT (or set FLEETCTL_CONTROLLER) and {} to hand `{verb}` to it",
        lease.holder,
        lease.api.as_deref().unwrap_or("-"),
        super::remote::TOKEN_ENV,
    );
    1
}

/// Reports a lease that could not be taken: exit status 1. When the holder is a controller,
/// says what to do instead (an apply is not handed over across state files: the controller
/// applies the manifests it watches).
pub fn report_locked(e: &crate::lease::LeaseError) -> u8 {
    eprintln!("error: {e}");
    if let Some(l) = e.holder().filter(|l| l.kind == "controller") {
        eprintln!(
            "  a controller runs this fleet (API {}): change the manifests it watches, or stop it first",
            l.api.as_deref().unwrap_or("-")
        );
    }
    1
}

/// Says on stderr that the command is handed over.
pub fn announce(verb: &str, lease: &LeaseInfo) {
    if super::common::quiet() {
        return;
    }
    eprintln!(
        "a controller runs this fleet ({}, API {}): handing `{verb}` to it",
        lease.holder,
        lease.api.as_deref().unwrap_or("-")
    );
}

/// Submits an intent and waits for its outcome; `progress` gets each new progress line (drain).
/// `Ok(Err(..))` is the controller's refusal or failure.
///
/// # Errors
/// Store failures; the controller stopped before finishing.
pub fn submit_and_wait(
    store: &Store,
    lease: &LeaseInfo,
    kind: &str,
    payload: &impl Serialize,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Result<String, IntentFailure>> {
    let id = store.submit_intent(kind, &serde_json::to_string(payload)?, now_ms())?;
    let mut shown = 0;
    loop {
        std::thread::sleep(POLL);
        let Some(intent) = store.intent(id)? else {
            bail!("intent {id} vanished from the state store");
        };
        let result = intent.result.clone().unwrap_or_default();
        match intent.state {
            IntentState::Done => return Ok(Ok(result)),
            IntentState::Failed => {
                return Ok(Err(serde_json::from_str(&result).unwrap_or(
                    IntentFailure {
                        error: result,
                        kind: "error".into(),
                    },
                )));
            }
            IntentState::Running => {
                if let Ok(p) = serde_json::from_str::<DrainProgress>(&result) {
                    for line in p.progress.iter().skip(shown) {
                        progress(line);
                    }
                    shown = shown.max(p.progress.len());
                }
            }
            IntentState::Pending => {}
        }
        let alive = live_controller(store)?.is_some_and(|l| l.token == lease.token);
        if !alive {
            if intent.state == IntentState::Pending {
                store.finish_intent(id, IntentState::Failed, "no controller took it", now_ms())?;
            }
            bail!(
                "the controller ({}) stopped before finishing `{kind}` (intent {id}); run the command again",
                lease.holder
            );
        }
    }
}

/// `apply` through the controller: it checks the manifests are the ones it runs, reconciles
/// and reports whether everything converged. Exit 0 converged, 1 not (or refused).
///
/// # Errors
/// As [`submit_and_wait`].
pub fn apply(
    store: &Store,
    lease: &LeaseInfo,
    loaded: &crate::manifest::Loaded,
    timeout: Duration,
    refresh: bool,
    output: super::Output,
) -> anyhow::Result<u8> {
    use crate::controller::intents::{ApplyIntent, kinds};
    announce("apply", lease);
    // Absolute names: the controller resolves the config and secret files the manifests name
    // against them, from its own working directory.
    let payload = ApplyIntent {
        sources: loaded
            .sources
            .iter()
            .map(|s| crate::manifest::Source {
                name: std::path::absolute(&s.name)
                    .map_or_else(|_| s.name.clone(), |p| p.display().to_string()),
                text: s.text.clone(),
            })
            .collect(),
        timeout_ms: Some(timeout.as_millis() as u64),
        refresh,
    };
    let view: crate::view::ApplyView =
        match submit_and_wait(store, lease, kinds::APPLY, &payload, |_| {})? {
            Ok(json) => serde_json::from_str(&json)?,
            Err(f) => {
                eprintln!("error: {}", f.error);
                return Ok(1);
            }
        };
    super::apply::render_view(&view, super::apply::Shown::ByController, output)
}

/// `rollback` through the controller: it puts the revision in force in place of the manifests
/// it watches (until they change, or the next `apply`), reconciles and reports whether
/// everything converged. Exit 0 converged, 1 not (or refused).
///
/// # Errors
/// As [`submit_and_wait`].
pub fn rollback(
    store: &Store,
    lease: &LeaseInfo,
    revision: i64,
    timeout: Duration,
    output: super::Output,
) -> anyhow::Result<u8> {
    use crate::controller::intents::{RollbackIntent, kinds};
    announce("rollback", lease);
    let payload = RollbackIntent {
        revision,
        timeout_ms: Some(timeout.as_millis() as u64),
    };
    let view: crate::view::ApplyView =
        match submit_and_wait(store, lease, kinds::ROLLBACK, &payload, |_| {})? {
            Ok(json) => serde_json::from_str(&json)?,
            Err(f) => {
                eprintln!("error: {}", f.error);
                return Ok(1);
            }
        };
    super::apply::render_view(&view, super::apply::Shown::ByController, output)
}

/// A plug operation through the controller: the result JSON parsed as `T`, or the controller's
/// failure (printed; the caller exits 1).
///
/// # Errors
/// As [`submit_and_wait`]; a result that does not parse.
pub fn plug_op<T: serde::de::DeserializeOwned>(
    store: &Store,
    lease: &LeaseInfo,
    kind: &str,
    payload: &impl Serialize,
) -> anyhow::Result<Option<T>> {
    announce(&format!("plug {}", kind.trim_start_matches("plug-")), lease);
    match submit_and_wait(store, lease, kind, payload, |_| {})? {
        Ok(json) => Ok(Some(serde_json::from_str(&json)?)),
        Err(f) => {
            eprintln!("error: {}", f.error);
            Ok(None)
        }
    }
}

/// `drain` through the controller, printing its progress as it comes (unless `quiet`).
///
/// # Errors
/// As [`submit_and_wait`].
pub fn drain(
    store: &Store,
    lease: &LeaseInfo,
    node: &str,
    timeout: Duration,
    force: bool,
    quiet: bool,
) -> anyhow::Result<Option<crate::drain::DrainReport>> {
    use crate::controller::intents::{DrainIntent, kinds};
    announce("drain", lease);
    let payload = DrainIntent {
        node: node.to_string(),
        timeout_ms: timeout.as_millis() as u64,
        force,
        actor: super::common::holder("drain"),
    };
    let printed = |line: &str| {
        if !quiet && !super::common::quiet() {
            let _ = super::common::emit(&format!("{line}\n"));
        }
    };
    match submit_and_wait(store, lease, kinds::DRAIN, &payload, printed)? {
        Ok(json) => Ok(Some(serde_json::from_str(&json)?)),
        Err(f) => {
            eprintln!("error: {}", f.error);
            Ok(None)
        }
    }
}

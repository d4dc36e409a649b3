//! What wakes the controller up besides its timer: the manifest directory and each node's
//! engine events. Both only push [`Trigger`]s; neither decides anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{
    DebounceEventResult, Debouncer, RecommendedCache, new_debouncer, notify,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::triggers::{Trigger, Triggers};
use crate::container::labels;
use crate::transport::{ConnState, ListFilter, NodeRuntime};

/// First wait before resubscribing to a node's events after the stream failed or ended.
pub const EVENTS_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two resubscription attempts: a restarted dockerd is noticed within
/// this even when no other trigger comes (the periodic resync looks at the node anyway).
pub const EVENTS_RETRY_MAX: Duration = Duration::from_secs(10);
/// A stream that fails sooner than this after subscribing never worked (the engine's events
/// call answers before it is connected): the engine is still away, so back off quietly.
pub const EVENTS_FAILED_AT_ONCE: Duration = Duration::from_secs(1);

/// Whether a changed path can change the manifest set: a `*.yaml` / `*.yml` file that is not a
/// dotfile (editor swap and lock files, `.#x.yaml`, `.x.yaml.swp`), and, when the manifests are
/// one file, that file.
pub fn relevant(path: &Path, only: Option<&OsString>) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    if let Some(only) = only {
        return name == only.as_os_str();
    }
    let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    yaml && !name.to_string_lossy().starts_with('.')
}

/// The directory to watch for `path` (a directory, or the directory holding a file) and, for a
/// file, its name. The directory is watched, not the files: editors replace files by renaming,
/// which would end a watch on the file itself.
pub fn watch_target(path: &Path) -> (PathBuf, Option<OsString>) {
    if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (dir.to_path_buf(), path.file_name().map(OsString::from))
    }
}

/// Watches `path`'s directory (not recursively), debounced by `debounce`; sends `()` when a
/// relevant file changed. Dropping the returned debouncer stops the watch.
///
/// # Errors
/// The directory cannot be watched (missing, no inotify watches left).
pub fn watch_manifests(
    path: &Path,
    debounce: Duration,
    tx: mpsc::UnboundedSender<()>,
) -> Result<Debouncer<notify::RecommendedWatcher, RecommendedCache>, notify::Error> {
    let (dir, only) = watch_target(path);
    let mut debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| match res {
        Ok(events) => {
            if events
                .iter()
                .any(|e| e.paths.iter().any(|p| relevant(p, only.as_ref())))
            {
                let _ = tx.send(());
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "manifest watch error; rescanning");
            }
            let _ = tx.send(());
        }
    })?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}

/// The label filter of this fleet's managed containers.
pub fn fleet_events_filter(fleet: &str) -> ListFilter {
    ListFilter {
        labels: vec![
            format!("{}={}", labels::MANAGED_BY, labels::MANAGER),
            format!("{}={fleet}", labels::FLEET),
        ],
    }
}

/// Follows one node's engine events until `cancel`: every event of a managed container is a
/// trigger; a stream that ends or fails, and every change of the node's SSH connection, is a
/// trigger too (something may have been missed), and the subscription is made again, with
/// backoff ([`EVENTS_RETRY_MIN`] doubling to [`EVENTS_RETRY_MAX`]).
pub async fn node_events(
    rt: Arc<dyn NodeRuntime>,
    filter: ListFilter,
    triggers: Arc<Triggers>,
    cancel: CancellationToken,
) {
    let node = rt.node().to_string();
    let policy = crate::backoff::Policy::new(EVENTS_RETRY_MIN, EVENTS_RETRY_MAX);
    let mut failures = 1u32;
    let mut retry = policy.delay(failures);
    let mut conn = rt.connection_state();
    let mut first = true;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match rt.events(&filter).await {
            Ok(mut stream) => {
                if !first {
                    // Back after a gap: whatever happened meanwhile is seen by a full pass.
                    triggers.push(Trigger::Connection(
                        node.clone(),
                        "events resubscribed".into(),
                    ));
                    tracing::debug!(node = %node, "engine events resubscribed");
                }
                first = false;
                let since = tokio::time::Instant::now();
                let mut delivered = false;
                let generation = conn.as_ref().map(|c| c.borrow().clone());
                let why = loop {
                    let changed = async {
                        match conn.as_mut() {
                            Some(c) => c.changed().await.is_ok(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        item = stream.next() => match item {
                            Some(Ok(e)) => {
                                delivered = true;
                                let name = e
                                    .labels
                                    .get("name")
                                    .cloned()
                                    .unwrap_or_else(|| e.container_id.chars().take(12).collect());
                                tracing::debug!(node = %node, action = %e.action, container = %name, "engine event");
                                triggers.push(Trigger::Event(node.clone(), e.action, name));
                            }
                            Some(Err(e)) => break e.to_string(),
                            None => break "ended".to_string(),
                        },
                        ok = changed => {
                            if !ok {
                                conn = None;
                                continue;
                            }
                            let now = conn.as_ref().map(|c| c.borrow().clone());
                            if now == generation {
                                continue;
                            }
                            let what = match &now {
                                Some(ConnState::Connected { generation }) => format!("ssh reconnected (connection {generation})"),
                                Some(ConnState::Down { cause, .. }) => format!("ssh down: {cause}"),
                                _ => "ssh idle".to_string(),
                            };
                            tracing::info!(node = %node, state = %what, "connection changed");
                            triggers.push(Trigger::Connection(node.clone(), what.clone()));
                            // A new or dropped connection: this stream rides on the old one.
                            break what;
                        }
                    }
                };
                // The engine's events call answers before it is connected: a stream that fails at
                // once means the engine is still away (keep backing off, the pass triggered by
                // the resubscription already looked); one that worked a while was lost now.
                if delivered || since.elapsed() >= EVENTS_FAILED_AT_ONCE {
                    tracing::info!(node = %node, why = %why, "engine event stream ended; resubscribing");
                    triggers.push(Trigger::Connection(node.clone(), "events ended".into()));
                    failures = 1;
                    retry = policy.delay(failures);
                } else {
                    tracing::debug!(node = %node, why = %why, retry_s = retry.as_secs(), "engine event stream failed at once");
                }
            }
            Err(e) => {
                tracing::debug!(node = %node, error = %e, retry_s = retry.as_secs(), "cannot subscribe to engine events");
                first = false;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        failures = failures.saturating_add(1);
        retry = policy.delay(failures);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yaml_files_that_are_not_dotfiles_count() {
        for p in ["d/web.yaml", "d/x.yml", "/abs/fleet.yaml"] {
            assert!(relevant(Path::new(p), None), "{p}");
        }
        for p in [
            "d/.web.yaml.swp",
            "d/.#web.yaml",
            "d/web.yaml~",
            "d/4913",
            "d/notes.txt",
            "d/.hidden.yaml",
            "d/state.db",
        ] {
            assert!(!relevant(Path::new(p), None), "{p}");
        }
        let only = Some(OsString::from("fleet.yaml"));
        assert!(relevant(Path::new("d/fleet.yaml"), only.as_ref()));
        assert!(!relevant(Path::new("d/other.yaml"), only.as_ref()));
    }
}

//! Helpers shared by the verbs: finding the manifests a command works on, and rendering.

use std::path::Path;

use anyhow::{Context, bail};

use crate::manifest::{self, Loaded};

/// The manifest set a command works on: `path` when given, else the set last applied (kept in
/// the state store, see `--state`).
///
/// # Errors
/// Invalid manifests (every diagnostic, in the error text), or no path and nothing applied yet.
pub fn resolve_manifests(
    path: Option<&Path>,
    global: &super::GlobalOpts,
) -> anyhow::Result<Loaded> {
    match path {
        Some(p) => {
            let loaded = manifest::load(p).map_err(|e| anyhow::anyhow!("{e}"))?;
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded)
        }
        None => {
            let state = crate::store::Store::default_path(global.state.as_deref());
            let applied = if state.exists() {
                crate::store::Store::open(&state)?.last_applied()?
            } else {
                None
            };
            let Some((sources, _, _)) = applied else {
                bail!(
                    "no manifests given and none applied yet (state {}): pass the fleet's manifests (PATH or -f PATH)",
                    state.display()
                );
            };
            manifest::parse(&sources).map_err(|e| {
                anyhow::anyhow!(
                    "the manifests last applied no longer validate with this fleetctl:\n{e}"
                )
            })
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`fleetctl get nodes | head -1`) is not an error:
/// the reader has what it wanted.
///
/// # Errors
/// Other write failures (a full disk behind a redirect).
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: no progress lines or notes, only results and errors.
pub fn set_quiet(on: bool) {
    QUIET.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `-q` was given.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("rendering JSON")?;
    text.push('\n');
    emit(&text)
}

/// Prints `value` as YAML.
pub fn print_yaml<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    emit(&serde_saphyr::to_string(value).context("rendering YAML")?)
}

/// Prints `value` as YAML for `-o yaml`, else as pretty JSON (the data formats).
pub fn print_data<T: serde::Serialize>(output: super::Output, value: &T) -> anyhow::Result<()> {
    match output {
        super::Output::Yaml => print_yaml(value),
        _ => print_json(value),
    }
}

/// A tokio runtime for commands that talk to nodes.
///
/// # Errors
/// The runtime cannot start.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Opens (creating when missing) the state store for `fleet`.
///
/// # Errors
/// The store cannot be opened, or belongs to another fleet.
pub fn open_store(global: &super::GlobalOpts, fleet: &str) -> anyhow::Result<crate::store::Store> {
    let path = crate::store::Store::default_path(global.state.as_deref());
    let store = crate::store::Store::open(&path)?;
    store.bind_fleet(fleet)?;
    Ok(store)
}

/// Opens the state store for reading: an empty in-memory one when the file does not exist
/// (reading commands never create state).
///
/// # Errors
/// The store exists but cannot be opened, or belongs to another fleet.
pub fn open_store_readonly(
    global: &super::GlobalOpts,
    fleet: &str,
) -> anyhow::Result<crate::store::Store> {
    let path = crate::store::Store::default_path(global.state.as_deref());
    let store = if path.exists() {
        crate::store::Store::open(&path)?
    } else {
        crate::store::Store::in_memory()?
    };
    store.bind_fleet(fleet)?;
    Ok(store)
}

/// One runtime per node of the fleet. Connections are made lazily on first use; a node whose
/// connection cannot even be set up gets a runtime that fails every call with that cause.
pub fn connect_all(fleet: &crate::manifest::DesiredFleet) -> crate::execute::Runtimes {
    fleet
        .nodes
        .values()
        .map(|n| {
            let endpoint = crate::transport::Endpoint::from_node(n);
            let rt = crate::transport::connect(&endpoint).unwrap_or_else(|e| {
                std::sync::Arc::new(crate::transport::failed::FailedRuntime::new(&e))
            });
            (n.name.clone(), rt)
        })
        .collect()
}

pub use crate::lease::holder;

/// Loads manifests from `path`, printing warnings; on invalid manifests prints every error and
/// returns `None` (the caller exits 1, nothing changed).
pub fn load_or_report(path: &Path) -> Option<Loaded> {
    match manifest::load(path) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{w}");
            }
            Some(l)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

//! Helpers shared by the verbs: finding the manifests a command works on, and rendering.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::manifest::{self, Loaded};
use crate::state_location::StateLocation;

/// The manifest set a command works on: `path` when given, else the set last applied (kept in
/// the state store: the chosen one, see `--state`, else the only fleet's in the state
/// directory, see [`crate::state_location`]).
///
/// # Errors
/// Invalid manifests (every diagnostic, in the error text); no path and nothing applied yet;
/// no path and several fleets' state in the state directory.
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
            let location = StateLocation::from_env(global.state.as_deref());
            let (applied, state) = match location.for_any_fleet()? {
                Some(state) if state.exists() => (
                    crate::store::Store::open(&state)?.last_applied()?,
                    format!("state {}", state.display()),
                ),
                Some(state) => (None, format!("state {}", state.display())),
                None => (None, format!("no state in {}", location.dir()?.display())),
            };
            let Some((sources, _, _)) = applied else {
                bail!(
                    "no manifests given and none applied yet ({state}): pass the fleet's manifests (PATH or -f PATH)"
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

/// The state file of `fleet`: `--state`, else `$FLEETCTL_STATE`, else
/// `<state dir>/<fleet>.db` (see [`crate::state_location`]).
///
/// # Errors
/// No state file chosen and neither `XDG_STATE_HOME` nor `HOME` set.
pub fn state_path(global: &super::GlobalOpts, fleet: &str) -> anyhow::Result<PathBuf> {
    Ok(StateLocation::from_env(global.state.as_deref()).for_fleet(fleet)?)
}

/// The state file of a command given no manifests: `--state`, else `$FLEETCTL_STATE`, else
/// the only fleet's file in the state directory; `None` when there is none.
///
/// # Errors
/// Several fleets' files in the state directory (naming them); no state directory.
pub fn any_state_path(global: &super::GlobalOpts) -> anyhow::Result<Option<PathBuf>> {
    Ok(StateLocation::from_env(global.state.as_deref()).for_any_fleet()?)
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

/// A state store opened for writing, with where it is and whether this command created it.
pub struct OpenedStore {
    /// The store, bound to its fleet.
    pub store: crate::store::Store,
    /// Its file.
    pub path: PathBuf,
    /// Whether the file did not exist before this command: this state knows nothing of what
    /// runs (the caller says so once it has adopted what the nodes run).
    pub created: bool,
}

impl OpenedStore {
    /// The file's path when this command created it (see [`note_fresh_state`]).
    pub fn fresh(&self) -> Option<PathBuf> {
        self.created.then(|| self.path.clone())
    }
}

/// Opens (creating when missing) the state store for `fleet` at [`state_path`], and says
/// whether it was created.
///
/// # Errors
/// The store cannot be opened, or belongs to another fleet.
pub fn open_store_noting(global: &super::GlobalOpts, fleet: &str) -> anyhow::Result<OpenedStore> {
    let path = state_path(global, fleet)?;
    let created = !path.exists();
    let store = crate::store::Store::open(&path)?;
    store.bind_fleet(fleet)?;
    Ok(OpenedStore {
        store,
        path,
        created,
    })
}

/// Opens (creating when missing) the state store for `fleet`.
///
/// # Errors
/// The store cannot be opened, or belongs to another fleet.
pub fn open_store(global: &super::GlobalOpts, fleet: &str) -> anyhow::Result<crate::store::Store> {
    Ok(open_store_noting(global, fleet)?.store)
}

/// The note of a command that started with no state for a fleet that already runs: printed
/// once on stderr unless `-q`, when `fresh` (the state file this command created, see
/// [`OpenedStore::fresh`]) is given and `adopted` (plugs found on the nodes and recorded) is
/// not zero.
pub fn note_fresh_state(fresh: Option<&Path>, fleet: &str, adopted: usize) {
    if let Some(path) = fresh
        && adopted > 0
        && !quiet()
    {
        eprintln!(
            "no state for fleet {fleet} here ({}): adopted {adopted} plug{} from the nodes",
            path.display(),
            if adopted == 1 { "" } else { "s" }
        );
    }
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
    let path = state_path(global, fleet)?;
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

/// `fleet` as it is to run, for a command that plans or makes containers: the secrets its
/// services and plug classes use read onto it (SPEC §12), and each autoscaled service's
/// replica count as the autoscaler recorded it (SPEC §14: an apply does not undo a scale).
///
/// # Errors
/// Each secret that could not be read, one line each (never a value), or the store's key.
pub fn with_secrets(
    fleet: &crate::manifest::DesiredFleet,
    store: &crate::store::Store,
) -> anyhow::Result<crate::manifest::DesiredFleet> {
    let mut fleet = fleet.clone();
    if fleet.services.values().any(|s| s.autoscale.is_some()) {
        crate::load::apply_scaled(&mut fleet, &store.scale_records()?);
    }
    crate::secrets::attach(&mut fleet, store).map_err(|errors| {
        anyhow::anyhow!(
            "{}
nothing was changed",
            crate::secrets::errors_text(&errors)
        )
    })?;
    Ok(fleet)
}

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

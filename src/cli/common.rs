//! Helpers shared by the verbs: finding the manifests a command works on, and rendering.

use std::path::Path;

use anyhow::{Context, bail};

use crate::manifest::{self, Loaded};

/// The manifest set a command works on: `path` when given, else the set last applied (kept in
/// the state store).
///
/// # Errors
/// Invalid manifests (every diagnostic, in the error text), or no path and nothing applied yet.
pub fn resolve_manifests(path: Option<&Path>) -> anyhow::Result<Loaded> {
    match path {
        Some(p) => {
            let loaded = manifest::load(p).map_err(|e| anyhow::anyhow!("{e}"))?;
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            Ok(loaded)
        }
        None => bail!(
            "no manifests given and none applied yet: pass the fleet's manifests (PATH or -f PATH)"
        ),
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

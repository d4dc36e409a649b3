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

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("rendering JSON")?
    );
    Ok(())
}

/// Prints `value` as YAML.
pub fn print_yaml<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    print!(
        "{}",
        serde_saphyr::to_string(value).context("rendering YAML")?
    );
    Ok(())
}

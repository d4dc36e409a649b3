//! Desired state: YAML manifests → a validated [`DesiredFleet`].
//!
//! Three phases, each reporting every problem it finds:
//! 1. [`yaml`]: text → positioned node tree, under explicit input limits;
//! 2. [`raw`]: node tree → raw documents (types, unknown and missing fields);
//! 3. [`validate`]: raw documents → resolved types (names, references, clashes, impossible
//!    requests).
//!
//! Callers hand in `(file name, bytes)` pairs; [`read_path`] is the helper that reads them from
//! disk. Validation reads one kind of file itself: the config files services and plug classes
//! name (SPEC §12), relative to the directory of the manifest file naming them; it also checks
//! that each Secret's `file` can be opened and its `env` variable is set, without reading either
//! value.

pub mod decode;
pub mod error;
pub mod quantity;
pub mod raw;
pub mod schema;
pub mod spec;
pub mod validate;
pub mod yaml;

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use error::{Diagnostic, ManifestErrors, Severity};
pub use quantity::{Bytes, MilliCpus, Percent};
pub use spec::*;

/// One manifest file's name and content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Path as it will appear in diagnostics.
    pub name: String,
    /// Content (validated as UTF-8 during parsing).
    pub text: String,
}

/// Most manifest files read from one directory.
pub const MAX_FILES: usize = 1000;

/// A validated manifest set, with its sources and any warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The desired state.
    pub fleet: DesiredFleet,
    /// The sources it came from (kept so the state store can record the applied set).
    pub sources: Vec<Source>,
    /// Warnings (valid, but probably unintended).
    pub warnings: Vec<Diagnostic>,
}

impl Loaded {
    /// Every config file the manifests read: path as resolved against the manifest file naming
    /// it → content (what [`parse_with_configs`] takes to load this set again).
    pub fn config_contents(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        self.fleet
            .file_specs()
            .flat_map(|f| &f.configs)
            .map(|c| (c.source.display().to_string(), c.content.clone()))
            .collect()
    }

    /// SHA-256 over the sources' names and texts and over the config files they read (each
    /// config's path and content hash): changes whenever any manifest or config file changes.
    /// Secret values are not part of it. Without config files it is [`sources_hash`].
    pub fn sources_hash(&self) -> String {
        let configs: Vec<&ConfigMount> = self
            .fleet
            .services
            .values()
            .map(|s| &s.files)
            .chain(self.fleet.plug_classes.values().map(|c| &c.files))
            .flat_map(|f| &f.configs)
            .collect();
        let mut h = sha2::Sha256::new();
        hash_sources(&mut h, &self.sources);
        if configs.is_empty() {
            return hex::encode(h.finalize());
        }
        h.update(b"configs\0");
        for c in configs {
            h.update(c.source.as_os_str().as_encoded_bytes());
            h.update([0]);
            h.update(c.sha256.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// SHA-256 over the sources' names and texts (not the config files they name: see
/// [`Loaded::sources_hash`]).
pub fn sources_hash(sources: &[Source]) -> String {
    let mut h = sha2::Sha256::new();
    hash_sources(&mut h, sources);
    hex::encode(h.finalize())
}

fn hash_sources(h: &mut sha2::Sha256, sources: &[Source]) {
    for s in sources {
        h.update(s.name.as_bytes());
        h.update([0]);
        h.update(s.text.as_bytes());
        h.update([0]);
    }
}

/// Reads a manifest file, or every `*.yaml` / `*.yml` directly in a directory in name order.
///
/// # Errors
/// A diagnostic naming the path when it cannot be read, is not UTF-8, is too large, or (for a
/// directory) holds no manifest.
pub fn read_path(path: &Path) -> Result<Vec<Source>, ManifestErrors> {
    let fail = |msg: String| ManifestErrors {
        diagnostics: vec![Diagnostic::new(
            path.display().to_string(),
            yaml::Pos { line: 1, col: 1 },
            "",
            msg,
        )],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let files: Vec<std::path::PathBuf> = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in
            std::fs::read_dir(path).map_err(|e| fail(format!("cannot read directory: {e}")))?
        {
            let entry = entry.map_err(|e| fail(format!("cannot read directory: {e}")))?;
            let p = entry.path();
            let is_yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if is_yaml && !hidden && p.is_file() {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(fail("directory holds no *.yaml or *.yml file".into()));
        }
        if files.len() > MAX_FILES {
            return Err(fail(format!(
                "directory holds {} manifest files; at most {MAX_FILES} are read",
                files.len()
            )));
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::new();
    let mut diagnostics = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match read_limited(&f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source { name, text }),
                Err(e) => {
                    if let Err(d) = yaml::parse_documents(&name, e.as_bytes()) {
                        diagnostics.push(d);
                    }
                }
            },
            Err(msg) => diagnostics.push(Diagnostic::new(
                name,
                yaml::Pos { line: 1, col: 1 },
                "",
                msg,
            )),
        }
    }
    if diagnostics.is_empty() {
        Ok(sources)
    } else {
        Err(ManifestErrors { diagnostics })
    }
}

/// Reads at most one byte past the size limit, so a huge file is refused without reading it.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(yaml::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > yaml::MAX_FILE_BYTES {
        return Err(format!(
            "file is larger than {} bytes (1 MiB), the limit for a manifest file",
            yaml::MAX_FILE_BYTES
        ));
    }
    Ok(bytes)
}

/// Parses and validates a manifest set.
///
/// # Errors
/// Every error of every file, sorted by file and position (warnings included).
pub fn parse(sources: &[Source]) -> Result<Loaded, ManifestErrors> {
    parse_with_configs(sources, None)
}

/// As [`parse`], with the config files' contents given (path as resolved against the manifest
/// file naming it → content) instead of read from disk: a revision's manifest set, loaded as
/// it was applied. A config file not in `configs` is read from disk.
///
/// # Errors
/// As [`parse`].
pub fn parse_with_configs(
    sources: &[Source],
    configs: Option<&std::collections::BTreeMap<String, Vec<u8>>>,
) -> Result<Loaded, ManifestErrors> {
    let mut diags = Vec::new();
    let mut docs = Vec::new();
    for src in sources {
        let (nodes, broken) = yaml::parse_file(&src.name, src.text.as_bytes());
        if nodes.is_empty() && broken.is_empty() {
            diags.push(Diagnostic::new(
                &src.name,
                yaml::Pos { line: 1, col: 1 },
                "",
                "file holds no manifest documents",
            ));
        }
        diags.extend(broken);
        let mut cx = decode::Cx {
            file: &src.name,
            diags: &mut diags,
        };
        for node in &nodes {
            if let Some(doc) = raw::decode_document(node, &mut cx) {
                docs.push(doc);
            }
        }
    }
    let fleet = validate::validate_with(&docs, &mut diags, configs);
    let order = |d: &Diagnostic| {
        (
            sources.iter().position(|s| s.name == d.file),
            d.line,
            d.column,
        )
    };
    diags.sort_by_key(order);
    match fleet {
        Some(fleet) if !diags.iter().any(Diagnostic::is_error) => Ok(Loaded {
            fleet,
            sources: sources.to_vec(),
            warnings: diags,
        }),
        _ => Err(ManifestErrors { diagnostics: diags }),
    }
}

/// Reads and parses `path` (file or directory).
///
/// # Errors
/// As [`read_path`] and [`parse`].
pub fn load(path: &Path) -> Result<Loaded, ManifestErrors> {
    parse(&read_path(path)?)
}

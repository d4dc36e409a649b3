//! Secrets and config files (SPEC §12): values read on the machine that runs fleetctl, the
//! keyed digests that stand for them, and their delivery into containers.
//!
//! - [`read`] reads one secret from its source (`file`, `env` or `command`, no shell); an
//!   error names the secret and the source, never the value or a command's output.
//! - [`SecretValues`] holds what one pass uses, each value with its digest: HMAC-SHA-256 under
//!   the fleet's key ([`crate::store::Store::secret_key`]), so a short password's digest cannot
//!   be guessed offline from labels or the state store. Values live in memory only.
//! - [`attach`] reads every secret the manifests use onto the desired fleet before a pass;
//!   [`crate::desired`] turns them into a container's `secret_env` and `files` and labels the
//!   container with the digests ([`labels::SECRETS`], [`labels::CONFIGS`],
//!   [`labels::SECRET_ENV`]), which the spec hash covers: a changed secret or config changes
//!   exactly the containers that use it.
//! - [`deliver`] places a container's files into it before it starts (the engine's archive
//!   API: nothing on the node's disk outside the container).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};

use crate::container::{ContainerSpec, SecretValue, labels};
use crate::manifest::spec::{DesiredFleet, SecretSource, SecretSpec};
use crate::transport::{NodeRuntime, TransportError};

/// How long a secret's `command` may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Hex characters of a digest kept in labels: 64 bits, plenty to notice a change.
const DIGEST_LEN: usize = 16;

/// One secret read for a pass: its value and the keyed digest that stands for it.
#[derive(Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The value.
    pub value: SecretValue,
    /// HMAC-SHA-256 of the value under the fleet's key, hex, shortened.
    pub digest: String,
}

/// Every secret a pass uses, read. Cheap to clone; `Debug` shows names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(Arc<BTreeMap<String, Resolved>>);

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    /// The secret `name`, when it was read.
    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.0.get(name)
    }

    /// Names read.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// These values, with `kept`'s for the secrets `names` (last good values kept when a
    /// source cannot be read now).
    pub fn with_kept(&self, kept: &SecretValues, names: &[&str]) -> SecretValues {
        let mut all = (*self.0).clone();
        for n in names {
            if let Some(r) = kept.get(n) {
                all.insert((*n).to_string(), r.clone());
            }
        }
        SecretValues(Arc::new(all))
    }

    /// From `(name, value)` pairs, digested under `key`.
    pub fn from_values(
        key: &[u8],
        values: impl IntoIterator<Item = (String, SecretValue)>,
    ) -> Self {
        SecretValues(Arc::new(
            values
                .into_iter()
                .map(|(n, value)| {
                    let digest = digest(key, value.expose());
                    (n, Resolved { value, digest })
                })
                .collect(),
        ))
    }
}

/// Why a secret could not be read. Never holds the value or a command's output.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("secret {secret}: file {path}: {source}")]
    File {
        /// Secret name.
        secret: String,
        /// The file, as the manifest resolves it.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The variable is not set (or not valid UTF-8).
    #[error("secret {secret}: environment variable {var} is not set")]
    Env {
        /// Secret name.
        secret: String,
        /// Variable.
        var: String,
    },
    /// The command could not be started.
    #[error("secret {secret}: command {command}: cannot start: {source}")]
    CommandStart {
        /// Secret name.
        secret: String,
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// The command failed (its output is not shown: it may hold the value).
    #[error("secret {secret}: command {command} {status}")]
    CommandFailed {
        /// Secret name.
        secret: String,
        /// The program.
        command: String,
        /// How it ended, in words.
        status: String,
    },
    /// Used in an environment variable but not text the engine can carry there.
    #[error(
        "secret {secret}: used as environment variable {var} but its value is not UTF-8 text without NUL bytes (mount it as a file instead)"
    )]
    NotText {
        /// Secret name.
        secret: String,
        /// Variable.
        var: String,
    },
    /// The fleet's key could not be read or made.
    #[error("secret digests: {0}")]
    Key(#[from] crate::store::StoreError),
}

impl SecretError {
    /// The secret this error is about (none for the key).
    pub fn secret(&self) -> Option<&str> {
        match self {
            SecretError::File { secret, .. }
            | SecretError::Env { secret, .. }
            | SecretError::CommandStart { secret, .. }
            | SecretError::CommandFailed { secret, .. }
            | SecretError::NotText { secret, .. } => Some(secret),
            SecretError::Key(_) => None,
        }
    }
}

/// The keyed digest of `value`: HMAC-SHA-256 under `key`, hex, the first 16 characters.
pub fn digest(key: &[u8], value: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(value);
    hex::encode(mac.finalize().into_bytes())[..DIGEST_LEN].to_string()
}

/// SHA-256 of a config file's content, hex, shortened as [`digest`].
pub fn content_digest(content: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(content))[..DIGEST_LEN].to_string()
}

/// Reads secret `spec` from its source on this machine. One trailing newline of a file or a
/// command's output is not part of the value (as editors and `echo` add one).
///
/// # Errors
/// [`SecretError`] naming the secret and the source.
pub fn read(spec: &SecretSpec) -> Result<SecretValue, SecretError> {
    let trim = |mut v: Vec<u8>| {
        if v.last() == Some(&b'\n') {
            v.pop();
            if v.last() == Some(&b'\r') {
                v.pop();
            }
        }
        SecretValue::new(v)
    };
    match &spec.source {
        SecretSource::File(path) => {
            // `dir/./x` shown as `dir/x`.
            let shown = path
                .components()
                .collect::<std::path::PathBuf>()
                .display()
                .to_string();
            let path = crate::transport::ssh::expand_tilde(&shown);
            std::fs::read(&path)
                .map(trim)
                .map_err(|source| SecretError::File {
                    secret: spec.name.clone(),
                    path: shown,
                    source,
                })
        }
        SecretSource::Env(var) => std::env::var(var)
            .map(|v| SecretValue::new(v.into_bytes()))
            .map_err(|_| SecretError::Env {
                secret: spec.name.clone(),
                var: var.clone(),
            }),
        SecretSource::Command(argv) => {
            let shown = format!("`{}`", argv.join(" "));
            let Some((program, args)) = argv.split_first() else {
                return Err(SecretError::CommandFailed {
                    secret: spec.name.clone(),
                    command: shown,
                    status: "is empty".into(),
                });
            };
            let run = crate::registry::run_with_timeout(
                std::path::Path::new(program),
                args,
                b"",
                COMMAND_TIMEOUT,
            )
            .map_err(|source| SecretError::CommandStart {
                secret: spec.name.clone(),
                command: shown.clone(),
                source,
            })?;
            match run {
                None => Err(SecretError::CommandFailed {
                    secret: spec.name.clone(),
                    command: shown,
                    status: format!(
                        "ran longer than {}s and was killed",
                        COMMAND_TIMEOUT.as_secs()
                    ),
                }),
                Some(r) if r.stdout.len() as u64 >= crate::registry::HELPER_OUTPUT_LIMIT => {
                    Err(SecretError::CommandFailed {
                        secret: spec.name.clone(),
                        command: shown,
                        status: format!(
                            "printed {} bytes or more; a secret is at most {} bytes less one",
                            crate::registry::HELPER_OUTPUT_LIMIT,
                            crate::registry::HELPER_OUTPUT_LIMIT
                        ),
                    })
                }
                Some(r) if r.status.success() => Ok(trim(r.stdout)),
                Some(r) => Err(SecretError::CommandFailed {
                    secret: spec.name.clone(),
                    command: shown,
                    status: match r.status.code() {
                        Some(c) => format!("exited with status {c}"),
                        None => "was killed by a signal".to_string(),
                    },
                }),
            }
        }
    }
}

/// Reads every secret the services and plug classes of `fleet` use (a secret nothing uses is
/// not read: its command does not run), digested under `key`. Returns what was read and every
/// failure.
pub fn read_used(fleet: &DesiredFleet, key: &[u8]) -> (SecretValues, Vec<SecretError>) {
    let used: std::collections::BTreeSet<&str> =
        fleet.file_specs().flat_map(|f| f.secret_names()).collect();
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for name in used {
        let Some(spec) = fleet.secrets.get(name) else {
            continue; // validation refuses an undefined secret
        };
        match read(spec) {
            Ok(v) => values.push((name.to_string(), v)),
            Err(e) => errors.push(e),
        }
    }
    // A value used in the environment must be text the engine can carry there.
    let read = SecretValues::from_values(key, values);
    for files in fleet.file_specs() {
        for (var, secret) in &files.secret_env {
            if let Some(r) = read.get(secret)
                && (std::str::from_utf8(r.value.expose()).is_err() || r.value.expose().contains(&0))
                && !errors
                    .iter()
                    .any(|e| matches!(e, SecretError::NotText { secret: s, .. } if s == secret))
            {
                errors.push(SecretError::NotText {
                    secret: secret.clone(),
                    var: var.clone(),
                });
            }
        }
    }
    (read, errors)
}

/// Reads the secrets `fleet` uses onto it ([`DesiredFleet::secret_values`]), digested under
/// the key of `store`'s fleet. A fleet that uses none reads nothing and leaves the store as it
/// is.
///
/// # Errors
/// Every secret that could not be read (each once), or the key could not be read.
pub fn attach(
    fleet: &mut DesiredFleet,
    store: &crate::store::Store,
) -> Result<(), Vec<SecretError>> {
    let uses_any = fleet.file_specs().any(|f| !f.secret_names().is_empty());
    if !uses_any {
        return Ok(());
    }
    let key = store.secret_key().map_err(|e| vec![SecretError::Key(e)])?;
    let (values, errors) = read_used(fleet, &key);
    if !errors.is_empty() {
        return Err(errors);
    }
    fleet.secret_values = values;
    Ok(())
}

/// The errors of [`attach`] as one message, one line per secret.
pub fn errors_text(errors: &[SecretError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Places `spec`'s files into container `id` (created, not yet started) in one archive
/// extracted at `/`. Nothing to place: no call.
///
/// # Errors
/// The engine refused the archive (e.g. a read-only target) or the node could not be reached.
pub async fn deliver(
    rt: &dyn NodeRuntime,
    id: &str,
    spec: &ContainerSpec,
) -> Result<(), TransportError> {
    if spec.files.is_empty() {
        return Ok(());
    }
    let files: Vec<crate::archive::TreeFile<'_>> = spec
        .files
        .iter()
        .map(|f| crate::archive::TreeFile {
            path: &f.target,
            content: f.content.expose(),
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
        })
        .collect();
    rt.put_archive(id, "/", crate::archive::tree(&files))
        .await
        .map_err(|e| e.with_object(spec.name.clone()))
}

/// [`deliver`], removing container `id` when its files could not be placed: a created
/// container with the right spec would otherwise be started by a later pass without them.
///
/// # Errors
/// Why the files could not be placed.
pub async fn deliver_or_remove(
    rt: &dyn NodeRuntime,
    id: &str,
    spec: &ContainerSpec,
) -> Result<(), TransportError> {
    match deliver(rt, id, spec).await {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Err(rm) = rt.remove_container(id).await
                && !rm.is_not_found()
            {
                tracing::warn!(container = %spec.name, error = %rm, "could not remove a container whose files were not placed");
            }
            Err(e)
        }
    }
}

/// The label values that stand for `spec`'s secrets and configs, for the spec hash and for
/// plans to say which one changed: `name=digest,…` (sorted) per kind, and `VAR=secret,…`.
pub fn label_values(
    secrets: &BTreeMap<String, String>,
    configs: &BTreeMap<String, String>,
    secret_env: &BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    let join = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = Vec::new();
    if !secrets.is_empty() {
        out.push((labels::SECRETS, join(secrets)));
    }
    if !configs.is_empty() {
        out.push((labels::CONFIGS, join(configs)));
    }
    if !secret_env.is_empty() {
        out.push((labels::SECRET_ENV, join(secret_env)));
    }
    out
}

/// `name=digest,…` of a [`label_values`] label, as a map.
pub fn parse_label(value: &str) -> BTreeMap<&str, &str> {
    value.split(',').filter_map(|p| p.split_once('=')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: SecretSource) -> SecretSpec {
        SecretSpec {
            name: "db-password".into(),
            source,
        }
    }

    #[test]
    fn a_file_loses_one_trailing_newline_and_a_missing_one_names_secret_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n\n").unwrap();
        let v = read(&spec(SecretSource::File(p.clone()))).unwrap();
        assert_eq!(v.expose(), b"s3cret\n");
        assert_eq!(format!("{v:?}"), "<secret>");
        let e = read(&spec(SecretSource::File(dir.path().join("nope")))).unwrap_err();
        assert!(
            e.to_string().starts_with("secret db-password: file ")
                && e.to_string().contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_command_names_its_status_and_not_its_output() {
        let e = read(&spec(SecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "echo leaked-value; echo leaked-err >&2; exit 3".into(),
        ])))
        .unwrap_err();
        let text = e.to_string();
        assert_eq!(
            text,
            "secret db-password: command `sh -c echo leaked-value; echo leaked-err >&2; exit 3` exited with status 3"
        );
        let ok = read(&spec(SecretSource::Command(vec![
            "sh".into(),
            "-c".into(),
            "printf 'v1\\n'".into(),
        ])))
        .unwrap();
        assert_eq!(ok.expose(), b"v1");
    }

    #[test]
    fn an_unset_variable_is_named() {
        let e = read(&spec(SecretSource::Env(
            "FLEETCTL_TEST_SURELY_UNSET".into(),
        )))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret db-password: environment variable FLEETCTL_TEST_SURELY_UNSET is not set"
        );
    }

    #[test]
    fn digests_are_keyed_and_stable() {
        let a = digest(b"key-1", b"hunter2");
        assert_eq!(a.len(), 16);
        assert_eq!(a, digest(b"key-1", b"hunter2"));
        assert_ne!(a, digest(b"key-2", b"hunter2"));
        assert_ne!(a, content_digest(b"hunter2"));
        let values =
            SecretValues::from_values(b"k", [("x".to_string(), SecretValue::new(b"v".to_vec()))]);
        assert_eq!(format!("{values:?}"), "[\"x\"]");
    }

    #[test]
    fn labels_list_digests_by_name_and_read_back() {
        let secrets = BTreeMap::from([
            ("b".to_string(), "22".to_string()),
            ("a".to_string(), "11".to_string()),
        ]);
        let l = label_values(&secrets, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(l, vec![(labels::SECRETS, "a=11,b=22".to_string())]);
        assert_eq!(
            parse_label("a=11,b=22"),
            BTreeMap::from([("a", "11"), ("b", "22")])
        );
    }
}

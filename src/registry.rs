//! Registry credentials (SPEC §11): which registry an image comes from, and what a pull of it
//! carries — `Fleet.spec.registries` first, else the operator's Docker config (`credHelpers`,
//! `credsStore`, `auths`), read the way the Docker CLI reads it, so an image `docker pull` can
//! fetch on the operator's machine is one fleetctl can fetch on the nodes.
//!
//! [`registry_host`] and the config's lookup rules are pure; the I/O (password files, the
//! environment, `config.json`, `docker-credential-*` programs) happens in
//! [`Credentials::load_with`] and [`Credentials::for_image`].
//!
//! # Secrets
//! Nothing read from a password file, a variable, `config.json` or a helper's output appears in
//! a [`CredError`], a `Debug` output or a log line: errors name the registry host and the file,
//! variable or program, never content. Credentials live in memory for one [`Credentials`] and
//! travel only as the [`RegistryAuth`] of a request.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use crate::container::RegistryAuth;
use crate::manifest::spec::{PasswordSource, RegistrySpec};

/// The registry of images without a host part (`redis:7`, `library/redis`).
pub const DOCKER_HUB: &str = "docker.io";

/// Docker Hub as the engine and `config.json` name it: [`RegistryAuth::server`] of a Hub pull,
/// the `auths` key and the helper's server URL.
pub const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// How long a credential helper may take. Helpers backed by a keychain or a cloud API
/// (`ecr-login`, `gcloud`) can take seconds; one that waits for a prompt nobody answers must
/// not hold an apply forever.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Most of a helper's output read: an answer is a few hundred bytes of JSON.
pub const HELPER_OUTPUT_LIMIT: u64 = 1 << 20;

/// How often a running helper is checked for exit while waiting for it.
const HELPER_POLL: Duration = Duration::from_millis(5);

/// The registry host of an image reference, by Docker's rule: the first `/`-separated part of
/// the name is a host when it contains `.` or `:`, is `localhost`, or has an uppercase letter;
/// otherwise the image is on Docker Hub ([`DOCKER_HUB`]). A tag or digest does not change the
/// answer. Hub's other names (`index.docker.io`, `registry-1.docker.io`) answer `docker.io`.
pub fn registry_host(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    match name.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            canonical_host(first).to_string()
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// One spelling per registry: Docker Hub's names are [`DOCKER_HUB`]; any other host as given.
pub fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

/// [`RegistryAuth::server`] for `host`: [`DOCKER_HUB_SERVER`] for Docker Hub, else the host.
fn server_for(host: &str) -> String {
    if host == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_string()
    } else {
        host.to_string()
    }
}

/// The Docker config directory of the process whose environment `env` reads: `$DOCKER_CONFIG`,
/// else `$HOME/.docker`; `None` when neither is set.
pub fn docker_config_dir(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    set("DOCKER_CONFIG").or_else(|| set("HOME").map(|h| h.join(".docker")))
}

/// The process environment, as [`Credentials::load_with`] and [`docker_config_dir`] take it.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A failure to find or read credentials. Names the registry, file, variable or helper; never
/// holds anything read from them.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    /// A manifest registry's `passwordFile` cannot be read.
    #[error("registry {host}: cannot read passwordFile {}", path.display())]
    PasswordFile {
        /// Registry host.
        host: String,
        /// The file, `~` expanded.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A manifest registry's `passwordFile` holds nothing (a newline at most).
    #[error("registry {host}: passwordFile {} is empty", path.display())]
    PasswordFileEmpty {
        /// Registry host.
        host: String,
        /// The file, `~` expanded.
        path: PathBuf,
    },
    /// A manifest registry's `passwordEnv` names a variable that is unset, empty or not UTF-8.
    #[error("registry {host}: environment variable {var} (passwordEnv) {problem}")]
    PasswordEnv {
        /// Registry host.
        host: String,
        /// The variable's name.
        var: String,
        /// "is not set", "is empty" or "is not valid UTF-8".
        problem: &'static str,
    },
    /// `config.json` exists but cannot be read.
    #[error("cannot read Docker config {}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not JSON of the shape Docker writes. Only the place is given: the
    /// parser's own message can quote the file's content.
    #[error(
        "Docker config {} is not valid (line {line}, column {column}): expected JSON with \
         auths, credHelpers and credsStore as Docker writes them",
        path.display()
    )]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Line of the problem, from 1.
        line: usize,
        /// Column of the problem, from 1.
        column: usize,
    },
    /// An `auths` entry's `auth` is not base64 of `user:password`.
    #[error(
        "Docker config {}: auths[{key:?}].auth is not base64 of user:password; run `docker \
         login {key}` again",
        path.display()
    )]
    ConfigAuth {
        /// The file.
        path: PathBuf,
        /// The entry's key.
        key: String,
    },
    /// A helper name that is not a program name (`credHelpers` or `credsStore`).
    #[error("Docker config {}: credential helper name {helper:?} is not a program name", path.display())]
    HelperName {
        /// The file.
        path: PathBuf,
        /// The name as written.
        helper: String,
    },
    /// The helper program could not be started (usually: not installed, not on PATH).
    #[error("cannot run credential helper {program} for registry {host} ({configured})")]
    HelperStart {
        /// `docker-credential-<name>`.
        program: String,
        /// Registry host.
        host: String,
        /// Where the helper was configured, e.g. `credsStore in ~/.docker/config.json`.
        configured: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The helper failed for another reason than "credentials not found". Its output is not
    /// shown: helpers print their messages where they print secrets.
    #[error(
        "credential helper {program} failed for registry {host} ({status}); run `echo {server} \
         | {program} get` to see why"
    )]
    HelperFailed {
        /// `docker-credential-<name>`.
        program: String,
        /// Registry host.
        host: String,
        /// The server URL it was asked about.
        server: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// The helper did not finish within [`HELPER_TIMEOUT`]; it was killed.
    #[error("credential helper {program} did not answer for registry {host} within {}s", after.as_secs())]
    HelperTimeout {
        /// `docker-credential-<name>`.
        program: String,
        /// Registry host.
        host: String,
        /// How long it was given.
        after: Duration,
    },
    /// The helper succeeded but its answer is not `{"ServerURL", "Username", "Secret"}`.
    #[error(
        "credential helper {program} answered for registry {host} with something other than \
         {{\"ServerURL\", \"Username\", \"Secret\"}} JSON"
    )]
    HelperOutput {
        /// `docker-credential-<name>`.
        program: String,
        /// Registry host.
        host: String,
    },
}

/// `config.json` as Docker writes it; other fields are ignored.
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// One `auths` entry: `auth` (base64 `user:password`), or `username`/`password`, and/or an
/// `identitytoken`. An empty entry (as `docker login` leaves beside a `credsStore`) holds none.
#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A helper's answer to `get`.
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The user name a helper answers with when `Secret` is an identity token (Docker's
/// convention).
const TOKEN_USERNAME: &str = "<token>";

/// A loaded Docker config.
struct DockerConfig {
    /// `config.json`'s path, for errors.
    path: PathBuf,
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

/// The credentials of one apply (or one controller pass): the manifests' registries with
/// their passwords read, and the operator's Docker config, consulted per registry when an
/// image needs it.
///
/// # Guarantees
/// - A registry in the manifests is answered from the manifests only, and its password is read
///   once, by [`Credentials::load`].
/// - Any other registry is looked up in the Docker config at most once per `Credentials`
///   (answers, including "none", are cached per host), so a slow helper runs once per host.
/// - `Debug` shows hosts and paths, never a secret.
///
/// # Caveats
/// [`Credentials::for_image`] may run a helper program and wait for it (up to
/// [`HELPER_TIMEOUT`]): call it from a blocking context (`spawn_blocking`) in async code. A
/// `docker login` after `load` is seen by the next `Credentials`, not this one.
pub struct Credentials {
    /// Manifest registries by canonical host, passwords read.
    manifest: BTreeMap<String, RegistryAuth>,
    /// The operator's Docker config, when there is one.
    config: Option<DockerConfig>,
    /// Where `docker-credential-*` programs are looked for; `None` = `PATH`.
    helper_dir: Option<PathBuf>,
    /// How long a helper may take.
    helper_timeout: Duration,
    /// Answers from the Docker config, by canonical host.
    cache: Mutex<BTreeMap<String, Option<RegistryAuth>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("manifest_registries", &self.manifest.keys())
            .field("docker_config", &self.config.as_ref().map(|c| &c.path))
            .field("helper_dir", &self.helper_dir)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads the manifests' `registries` (reading every password now) and the Docker config of
    /// `docker_config_dir` (the caller's choice; usually [`docker_config_dir`] of
    /// [`process_env`]; `None` = no config), from this process's environment, with helpers
    /// found on `PATH`.
    ///
    /// # Errors
    /// As [`Credentials::load_with`].
    pub fn load(
        registries: &[RegistrySpec],
        docker_config_dir: Option<PathBuf>,
    ) -> Result<Self, CredError> {
        Self::load_with(registries, docker_config_dir, None, &process_env)
    }

    /// [`Credentials::load`] with the environment read through `env` (`passwordEnv`, and `HOME`
    /// for a `~/` in `passwordFile`) and helpers looked for in `helper_dir` instead of `PATH`
    /// when given.
    ///
    /// # Errors
    /// A `passwordFile` that cannot be read or is empty, a `passwordEnv` variable that is unset,
    /// empty or not UTF-8 (naming the registry and the file or variable); a `config.json` that
    /// exists but cannot be read or parsed. A missing directory or `config.json` is no error:
    /// there are no credentials in it.
    pub fn load_with(
        registries: &[RegistrySpec],
        docker_config_dir: Option<PathBuf>,
        helper_dir: Option<PathBuf>,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Self, CredError> {
        let mut manifest = BTreeMap::new();
        for reg in registries {
            let host = canonical_host(&reg.host).to_string();
            let password = read_password(&reg.host, &reg.password, env)?;
            manifest.insert(
                host.clone(),
                RegistryAuth {
                    server: server_for(&host),
                    username: reg.username.clone(),
                    password,
                    identity_token: None,
                },
            );
        }
        let config = match docker_config_dir {
            Some(dir) => read_config(&dir.join("config.json"))?,
            None => None,
        };
        Ok(Credentials {
            manifest,
            config,
            helper_dir,
            helper_timeout: HELPER_TIMEOUT,
            cache: Mutex::new(BTreeMap::new()),
        })
    }

    /// The credentials a pull of `image` carries, from its [`registry_host`]; `None` = pull
    /// anonymously.
    ///
    /// # Errors
    /// As [`Credentials::for_host`].
    pub fn for_image(&self, image: &str) -> Result<Option<RegistryAuth>, CredError> {
        self.for_host(&registry_host(image))
    }

    /// The credentials for registry `host`: a manifest registry of that host; else, in the
    /// Docker config, `credHelpers[host]`'s helper, else the `credsStore` helper, else
    /// `auths[host]` (Docker's order: with a helper configured, `auths` only lists registries).
    /// Docker Hub is looked up as `https://index.docker.io/v1/` (also `docker.io`,
    /// `index.docker.io`); `auths` and `credHelpers` keys written with a scheme or a path
    /// match their host.
    ///
    /// # Errors
    /// A helper that cannot be started, fails (other than "credentials not found", which is
    /// `None`), times out or answers nonsense; an `auths` entry whose `auth` is not base64 of
    /// `user:password`. Errors are not cached: the next call asks again.
    pub fn for_host(&self, host: &str) -> Result<Option<RegistryAuth>, CredError> {
        let host = canonical_host(host);
        if let Some(auth) = self.manifest.get(host) {
            return Ok(Some(auth.clone()));
        }
        if let Some(hit) = self.cache_lock().get(host) {
            return Ok(hit.clone());
        }
        // Not holding the lock while a helper runs: lookups of other hosts go on meanwhile.
        let found = self.lookup_config(host)?;
        self.cache_lock().insert(host.to_string(), found.clone());
        Ok(found)
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<RegistryAuth>>> {
        // A panic elsewhere cannot leave the map half-written: inserts are single calls.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lookup_config(&self, host: &str) -> Result<Option<RegistryAuth>, CredError> {
        let Some(cfg) = &self.config else {
            return Ok(None);
        };
        if let Some((_, helper)) = lookup(&cfg.cred_helpers, host) {
            let configured = format!("credHelpers in {}", cfg.path.display());
            return self.run_helper(cfg, helper, host, configured);
        }
        if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
            let configured = format!("credsStore in {}", cfg.path.display());
            return self.run_helper(cfg, store, host, configured);
        }
        match lookup(&cfg.auths, host) {
            Some((key, entry)) => entry_auth(&cfg.path, key, entry, host),
            None => Ok(None),
        }
    }

    /// Runs `docker-credential-<helper> get` with the server URL on stdin.
    fn run_helper(
        &self,
        cfg: &DockerConfig,
        helper: &str,
        host: &str,
        configured: String,
    ) -> Result<Option<RegistryAuth>, CredError> {
        if helper.is_empty() || helper.contains(['/', '\\', '\0']) || helper.starts_with('.') {
            return Err(CredError::HelperName {
                path: cfg.path.clone(),
                helper: helper.to_string(),
            });
        }
        let program = format!("docker-credential-{helper}");
        let server = server_for(host);
        let path = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let run = run_with_timeout(
            &path,
            &["get".to_string()],
            server.as_bytes(),
            self.helper_timeout,
        );
        let HelperRun {
            status,
            stdout,
            stderr,
        } = match run {
            Ok(Some(out)) => out,
            Ok(None) => {
                return Err(CredError::HelperTimeout {
                    program,
                    host: host.to_string(),
                    after: self.helper_timeout,
                });
            }
            Err(source) => {
                return Err(CredError::HelperStart {
                    program,
                    host: host.to_string(),
                    configured,
                    source,
                });
            }
        };
        if !status.success() {
            let not_found = |out: &[u8]| {
                String::from_utf8_lossy(out)
                    .to_ascii_lowercase()
                    .contains("credentials not found")
            };
            if not_found(&stdout) || not_found(&stderr) {
                return Ok(None);
            }
            return Err(CredError::HelperFailed {
                program,
                host: host.to_string(),
                server,
                status,
            });
        }
        let answer: HelperAnswer =
            serde_json::from_slice(&stdout).map_err(|_| CredError::HelperOutput {
                program: program.clone(),
                host: host.to_string(),
            })?;
        if answer.username.is_empty() && answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == TOKEN_USERNAME {
            RegistryAuth {
                server,
                username: String::new(),
                password: String::new(),
                identity_token: Some(answer.secret),
            }
        } else {
            RegistryAuth {
                server,
                username: answer.username,
                password: answer.secret,
                identity_token: None,
            }
        }))
    }
}

/// Reads a manifest registry's password: the file (`~/` expanded with `HOME` from `env`; one
/// trailing newline dropped) or the variable.
fn read_password(
    host: &str,
    source: &PasswordSource,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<String, CredError> {
    match source {
        PasswordSource::File(written) => {
            let path = expand_home(written, env);
            let text =
                std::fs::read_to_string(&path).map_err(|source| CredError::PasswordFile {
                    host: host.to_string(),
                    path: path.clone(),
                    source,
                })?;
            let password = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if password.is_empty() {
                return Err(CredError::PasswordFileEmpty {
                    host: host.to_string(),
                    path,
                });
            }
            Ok(password.to_string())
        }
        PasswordSource::Env(var) => {
            let problem = |problem| CredError::PasswordEnv {
                host: host.to_string(),
                var: var.clone(),
                problem,
            };
            let value = env(var).ok_or_else(|| problem("is not set"))?;
            let value = value
                .into_string()
                .map_err(|_| problem("is not valid UTF-8"))?;
            if value.is_empty() {
                return Err(problem("is empty"));
            }
            Ok(value)
        }
    }
}

/// `~` or `~/…` with `HOME` from `env`; anything else (or no `HOME`) as it is.
fn expand_home(path: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    let home = || env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    if path == Path::new("~") {
        return home().unwrap_or_else(|| path.to_path_buf());
    }
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// Reads and parses `config.json`; `None` when it does not exist.
fn read_config(path: &Path) -> Result<Option<DockerConfig>, CredError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredError::ConfigRead {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // serde_json's message can quote a value of the file (an `auth`, a password): only its
    // position is kept.
    let file: ConfigFile = serde_json::from_slice(&bytes).map_err(|e| CredError::ConfigParse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
    })?;
    Ok(Some(DockerConfig {
        path: path.to_path_buf(),
        auths: file.auths.unwrap_or_default(),
        cred_helpers: file.cred_helpers.unwrap_or_default(),
        creds_store: file.creds_store,
    }))
}

/// The host a `config.json` key names: `https://ghcr.io/v2/` and `ghcr.io` both name
/// `ghcr.io`; Docker Hub's keys name [`DOCKER_HUB`].
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    canonical_host(rest.split('/').next().unwrap_or(rest))
}

/// The entry of `map` for `host`: the key Docker itself would use first
/// ([`DOCKER_HUB_SERVER`] for Hub, else the host), else the first key (in key order) that
/// names the host with a scheme, a path or another of Hub's names.
fn lookup<'m, T>(map: &'m BTreeMap<String, T>, host: &str) -> Option<(&'m str, &'m T)> {
    let exact = if host == DOCKER_HUB {
        DOCKER_HUB_SERVER
    } else {
        host
    };
    map.get_key_value(exact)
        .or_else(|| map.iter().find(|(k, _)| key_host(k) == host))
        .map(|(k, v)| (k.as_str(), v))
}

/// An `auths` entry as credentials: `auth` (base64 `user:password`) wins over `username` and
/// `password`; an `identitytoken` goes along; an empty entry is `None`.
fn entry_auth(
    path: &Path,
    key: &str,
    entry: &AuthEntry,
    host: &str,
) -> Result<Option<RegistryAuth>, CredError> {
    let bad = || CredError::ConfigAuth {
        path: path.to_path_buf(),
        key: key.to_string(),
    };
    let (username, password) = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
        Some(auth) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
            (user.to_string(), password.to_string())
        }
        None => (
            entry.username.clone().unwrap_or_default(),
            entry.password.clone().unwrap_or_default(),
        ),
    };
    let identity_token = entry.identitytoken.clone().filter(|t| !t.is_empty());
    if username.is_empty() && password.is_empty() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        server: server_for(host),
        username,
        password,
        identity_token,
    }))
}

/// A finished program: how it exited and what it printed (never shown: it may hold a secret).
pub struct HelperRun {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, at most [`HELPER_OUTPUT_LIMIT`] bytes.
    pub stdout: Vec<u8>,
    /// Standard error, at most [`HELPER_OUTPUT_LIMIT`] bytes.
    pub stderr: Vec<u8>,
}

/// Runs `program args…` (no shell) with `input` on stdin; `Ok(None)` when it runs longer than
/// `timeout` (it is killed, with whatever it started). Output beyond [`HELPER_OUTPUT_LIMIT`]
/// is dropped. Used for credential helpers and secret `command`s.
///
/// # Errors
/// The program could not be started.
pub fn run_with_timeout(
    program: &Path,
    args: &[String],
    input: &[u8],
    timeout: Duration,
) -> std::io::Result<Option<HelperRun>> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what the helper started as well.
        .process_group(0)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input closes the pipe: its exit status
        // tells what happened, so a failed write is not an error of its own.
        let _ = stdin.write_all(input);
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(HELPER_OUTPUT_LIMIT).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let stdout = stdout.join().unwrap_or_default();
            let stderr = stderr.join().unwrap_or_default();
            return Ok(Some(HelperRun {
                status,
                stdout,
                stderr,
            }));
        }
        if Instant::now() >= deadline {
            if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) takes plain integers and touches no memory of ours; the
                // group is the helper's own (`process_group(0)` above), not yet reaped.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
            let _ = child.kill();
            let _ = child.wait();
            // The readers end when the last holder of the pipes is gone; not waited for.
            return Ok(None);
        }
        std::thread::sleep(HELPER_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::error::Error as _;

    const SECRET: &str = "s3cret-Pa55word";

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// Display of the error and every cause, and its Debug.
    fn everything_said(e: &CredError) -> String {
        let mut out = format!("{e} {e:?}");
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(&format!(" {c}"));
            cause = c.source();
        }
        out
    }

    fn reg(host: &str, password: PasswordSource) -> RegistrySpec {
        RegistrySpec {
            host: host.to_string(),
            username: "deploy".to_string(),
            password,
        }
    }

    /// A temp dir holding `config.json` with `json`.
    fn config_dir(json: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        dir
    }

    fn from_config(dir: &Path, helpers: Option<&Path>) -> Credentials {
        Credentials::load_with(
            &[],
            Some(dir.to_path_buf()),
            helpers.map(Path::to_path_buf),
            &env_of(&[]),
        )
        .unwrap()
    }

    /// Writes an executable `docker-credential-<name>` shell script into `dir`. The file is
    /// written by a child shell, so no descriptor open for writing is ever held by this
    /// (multi-threaded) test process, where another thread's fork could inherit it and make
    /// the exec fail with "text file busy".
    fn helper(dir: &Path, name: &str, body: &str) {
        let path = dir.join(format!("docker-credential-{name}"));
        let script = format!("#!/bin/sh\n{body}\n");
        let status = Command::new("sh")
            .args(["-c", "printf '%s' \"$1\" > \"$2\" && chmod +x \"$2\"", "sh"])
            .arg(&script)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// A helper that logs each call in `calls` beside it and answers per server.
    const KEYCHAIN: &str = r#"[ "$1" = get ] || exit 3
server=$(cat)
echo "$server" >> "$(dirname "$0")/calls"
case "$server" in
  ghcr.io) printf '{"ServerURL":"ghcr.io","Username":"bot","Secret":"s3cret-Pa55word"}' ;;
  tok.example.com) printf '{"ServerURL":"tok.example.com","Username":"<token>","Secret":"id-token-1"}' ;;
  https://index.docker.io/v1/) printf '{"ServerURL":"https://index.docker.io/v1/","Username":"hubuser","Secret":"hubpass"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#;

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn registry_host_follows_dockers_reference_rule() {
        for (image, host) in [
            ("redis", "docker.io"),
            ("redis:7", "docker.io"),
            ("library/redis", "docker.io"),
            ("library/redis:7.2-alpine", "docker.io"),
            ("bitnami/redis:7", "docker.io"),
            ("docker.io/library/redis:7", "docker.io"),
            ("index.docker.io/library/redis", "docker.io"),
            ("registry-1.docker.io/library/redis", "docker.io"),
            ("ghcr.io/a/b:1", "ghcr.io"),
            ("ghcr.io/a/b", "ghcr.io"),
            ("10.213.0.1:5000/x/y:2", "10.213.0.1:5000"),
            ("localhost:5000/x", "localhost:5000"),
            ("localhost/x", "localhost"),
            (
                "registry.example.com/aims/frontend:2.3",
                "registry.example.com",
            ),
            ("Registry/x", "Registry"),
            (
                "x/y@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io",
            ),
            (
                "redis@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io",
            ),
            (
                "ghcr.io/a/b:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ghcr.io",
            ),
            (
                "10.0.0.5:5000/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "10.0.0.5:5000",
            ),
        ] {
            assert_eq!(registry_host(image), host, "{image}");
        }
    }

    #[test]
    fn docker_config_dir_is_docker_config_else_home_docker() {
        assert_eq!(
            docker_config_dir(&env_of(&[("DOCKER_CONFIG", "/cfg"), ("HOME", "/h")])),
            Some(PathBuf::from("/cfg"))
        );
        assert_eq!(
            docker_config_dir(&env_of(&[("DOCKER_CONFIG", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.docker"))
        );
        assert_eq!(docker_config_dir(&env_of(&[])), None);
    }

    #[test]
    fn manifest_passwords_come_from_files_and_variables() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".config")).unwrap();
        std::fs::write(home.path().join(".config/pw"), format!("{SECRET}\n")).unwrap();
        std::fs::write(home.path().join("crlf"), "two\r\n").unwrap();
        std::fs::write(home.path().join("keep"), "pw\n\n").unwrap();
        let registries = [
            reg("ghcr.io", PasswordSource::File("~/.config/pw".into())),
            reg("10.0.0.5:5000", PasswordSource::Env("REG_PW".into())),
            reg(
                "a.example.com",
                PasswordSource::File(home.path().join("crlf")),
            ),
            reg(
                "b.example.com",
                PasswordSource::File(home.path().join("keep")),
            ),
            reg("index.docker.io", PasswordSource::Env("REG_PW".into())),
        ];
        let env = env_of(&[
            ("HOME", home.path().to_str().unwrap()),
            ("REG_PW", "from-env"),
        ]);
        let creds = Credentials::load_with(&registries, None, None, &env).unwrap();

        let a = creds
            .for_image("ghcr.io/aims/frontend:2.3")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.server.as_str(), a.username.as_str(), a.password.as_str()),
            ("ghcr.io", "deploy", SECRET)
        );
        let b = creds.for_image("10.0.0.5:5000/x:1").unwrap().unwrap();
        assert_eq!(b.password, "from-env");
        assert_eq!(b.server, "10.0.0.5:5000");
        assert_eq!(
            creds.for_host("a.example.com").unwrap().unwrap().password,
            "two"
        );
        assert_eq!(
            creds.for_host("b.example.com").unwrap().unwrap().password,
            "pw\n",
            "only one trailing newline is dropped"
        );
        let hub = creds.for_image("redis:7").unwrap().unwrap();
        assert_eq!(hub.server, DOCKER_HUB_SERVER);
        assert_eq!(creds.for_image("quay.io/x/y").unwrap(), None);
    }

    #[test]
    fn unreadable_passwords_name_the_registry_and_the_source_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let env = env_of(&[("EMPTY", "")]);
        let cases = [
            (PasswordSource::File(missing.clone()), "missing"),
            (PasswordSource::File(empty.clone()), "is empty"),
            (PasswordSource::Env("UNSET_VAR".into()), "UNSET_VAR"),
            (PasswordSource::Env("EMPTY".into()), "EMPTY"),
        ];
        for (source, names) in cases {
            let e =
                Credentials::load_with(&[reg("ghcr.io", source)], None, None, &env).unwrap_err();
            let text = e.to_string();
            assert!(text.contains("registry ghcr.io"), "{text}");
            assert!(text.contains(names), "{text}");
        }
        let e = Credentials::load_with(
            &[reg("ghcr.io", PasswordSource::File(missing.clone()))],
            None,
            None,
            &env,
        )
        .unwrap_err();
        assert!(e.to_string().contains(&missing.display().to_string()));
    }

    #[test]
    fn auths_in_every_form_docker_writes() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = format!(
            r#"{{
              "auths": {{
                "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                "ghcr.io": {{"username": "gh", "password": "ghpass"}},
                "https://registry.example.com": {{"auth": "{reg}"}},
                "quay.io/v2/": {{"auth": "{quay}"}},
                "token.example.com": {{"identitytoken": "idtok"}},
                "listed.example.com": {{}},
                "10.213.0.1:5000": {{"auth": "{ip}", "email": "ignored@example.com"}}
              }},
              "HttpHeaders": {{"User-Agent": "x"}}
            }}"#,
            hub = b64("hubuser:hub:pass"),
            reg = b64("r:rpass"),
            quay = b64("q:qpass"),
            ip = b64(&format!("ci:{SECRET}")),
        );
        let dir = config_dir(&json);
        let creds = from_config(dir.path(), None);
        let get = |image: &str| creds.for_image(image).unwrap();

        let hub = get("redis:7").unwrap();
        assert_eq!(hub.server, DOCKER_HUB_SERVER);
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hubuser", "hub:pass")
        );
        assert_eq!(get("docker.io/library/redis").unwrap(), hub);

        let gh = get("ghcr.io/a/b:1").unwrap();
        assert_eq!(
            (
                gh.server.as_str(),
                gh.username.as_str(),
                gh.password.as_str()
            ),
            ("ghcr.io", "gh", "ghpass")
        );
        let r = get("registry.example.com/aims/frontend:2.3").unwrap();
        assert_eq!(
            (r.server.as_str(), r.username.as_str()),
            ("registry.example.com", "r")
        );
        assert_eq!(get("quay.io/x/y").unwrap().password, "qpass");
        let t = get("token.example.com/x").unwrap();
        assert_eq!(t.identity_token.as_deref(), Some("idtok"));
        assert_eq!(t.username, "");
        assert_eq!(get("listed.example.com/x"), None);
        assert_eq!(get("10.213.0.1:5000/x/y:2").unwrap().password, SECRET);
        assert_eq!(get("other.example.com/x"), None);
    }

    #[test]
    fn docker_hub_is_found_under_its_other_keys() {
        for key in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
        ] {
            let dir = config_dir(&format!(
                r#"{{"auths": {{"{key}": {{"username": "u", "password": "p"}}}}}}"#
            ));
            let auth = from_config(dir.path(), None)
                .for_image("library/redis")
                .unwrap()
                .unwrap();
            assert_eq!(auth.server, DOCKER_HUB_SERVER, "{key}");
            assert_eq!(auth.username, "u");
        }
    }

    #[test]
    fn no_config_means_no_credentials() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            from_config(empty.path(), None)
                .for_image("ghcr.io/a/b")
                .unwrap(),
            None
        );
        let gone = empty.path().join("no-such-dir");
        assert_eq!(
            from_config(&gone, None).for_image("ghcr.io/a/b").unwrap(),
            None
        );
        let none = Credentials::load_with(&[], None, None, &env_of(&[])).unwrap();
        assert_eq!(none.for_image("redis").unwrap(), None);
    }

    #[test]
    fn cred_helpers_run_the_hosts_helper_once_per_host() {
        let helpers = tempfile::tempdir().unwrap();
        helper(helpers.path(), "keychain", KEYCHAIN);
        let dir = config_dir(
            r#"{"credHelpers": {"ghcr.io": "keychain", "tok.example.com": "keychain",
                                "unknown.example.com": "keychain"},
                "auths": {"ghcr.io": {"username": "file", "password": "ignored"},
                          "plain.example.com": {"username": "p", "password": "pp"}}}"#,
        );
        let creds = from_config(dir.path(), Some(helpers.path()));

        let gh = creds.for_image("ghcr.io/a/b:1").unwrap().unwrap();
        assert_eq!(
            (
                gh.server.as_str(),
                gh.username.as_str(),
                gh.password.as_str()
            ),
            ("ghcr.io", "bot", SECRET)
        );
        assert_eq!(gh.identity_token, None);
        assert_eq!(creds.for_image("ghcr.io/a/c:2").unwrap().unwrap(), gh);
        assert_eq!(
            calls(helpers.path()),
            ["ghcr.io"],
            "answers are cached per host"
        );

        let tok = creds.for_image("tok.example.com/x").unwrap().unwrap();
        assert_eq!(tok.identity_token.as_deref(), Some("id-token-1"));
        assert_eq!((tok.username.as_str(), tok.password.as_str()), ("", ""));

        assert_eq!(creds.for_image("unknown.example.com/x").unwrap(), None);
        assert_eq!(creds.for_image("unknown.example.com/y").unwrap(), None);
        assert_eq!(
            calls(helpers.path()),
            ["ghcr.io", "tok.example.com", "unknown.example.com"],
            "'not found' is cached too"
        );
        // A host without a helper, and no credsStore: auths.
        assert_eq!(
            creds
                .for_image("plain.example.com/x")
                .unwrap()
                .unwrap()
                .password,
            "pp"
        );
    }

    #[test]
    fn creds_store_answers_for_every_host_without_a_helper_of_its_own() {
        let helpers = tempfile::tempdir().unwrap();
        helper(helpers.path(), "keychain", KEYCHAIN);
        helper(
            helpers.path(),
            "other",
            r#"cat >/dev/null; printf '{"ServerURL":"x","Username":"o","Secret":"op"}'"#,
        );
        let dir = config_dir(
            r#"{"credsStore": "keychain", "credHelpers": {"special.example.com": "other"},
                "auths": {"https://index.docker.io/v1/": {}, "plain.example.com": {"username": "p", "password": "pp"}}}"#,
        );
        let creds = from_config(dir.path(), Some(helpers.path()));
        let hub = creds.for_image("redis:7").unwrap().unwrap();
        assert_eq!(
            (
                hub.server.as_str(),
                hub.username.as_str(),
                hub.password.as_str()
            ),
            (DOCKER_HUB_SERVER, "hubuser", "hubpass")
        );
        assert_eq!(
            calls(helpers.path()),
            [DOCKER_HUB_SERVER],
            "Hub is asked for by its URL"
        );
        assert_eq!(
            creds
                .for_image("special.example.com/x")
                .unwrap()
                .unwrap()
                .username,
            "o"
        );
        // With a store, auths only lists registries (Docker's rule): the store says "not found".
        assert_eq!(creds.for_image("plain.example.com/x").unwrap(), None);
    }

    #[test]
    fn manifest_registries_come_before_the_docker_config() {
        let helpers = tempfile::tempdir().unwrap();
        helper(helpers.path(), "keychain", KEYCHAIN);
        let dir = config_dir(r#"{"credsStore": "keychain"}"#);
        let creds = Credentials::load_with(
            &[reg("ghcr.io", PasswordSource::Env("PW".into()))],
            Some(dir.path().to_path_buf()),
            Some(helpers.path().to_path_buf()),
            &env_of(&[("PW", "manifest-pw")]),
        )
        .unwrap();
        let auth = creds.for_image("ghcr.io/a/b").unwrap().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("deploy", "manifest-pw")
        );
        assert!(calls(helpers.path()).is_empty(), "the helper was not run");
    }

    #[test]
    fn helper_failures_name_the_helper_and_host_but_not_what_it_printed() {
        let helpers = tempfile::tempdir().unwrap();
        helper(
            helpers.path(),
            "broken",
            &format!("cat >/dev/null; echo 'token {SECRET} expired'; echo '{SECRET}' >&2; exit 2"),
        );
        helper(
            helpers.path(),
            "garbled",
            &format!("cat >/dev/null; echo 'Secret: {SECRET}'"),
        );
        helper(helpers.path(), "slow", "sleep 5");
        let dir = config_dir(
            r#"{"credHelpers": {"a.example.com": "broken", "b.example.com": "garbled",
                                "c.example.com": "absent", "d.example.com": "../evil",
                                "e.example.com": "slow"}}"#,
        );
        let mut creds = from_config(dir.path(), Some(helpers.path()));
        creds.helper_timeout = Duration::from_millis(200);

        let e = creds.for_image("a.example.com/x").unwrap_err();
        assert!(matches!(e, CredError::HelperFailed { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("docker-credential-broken") && text.contains("a.example.com"));
        let e2 = creds.for_image("b.example.com/x").unwrap_err();
        assert!(matches!(e2, CredError::HelperOutput { .. }), "{e2:?}");
        let e3 = creds.for_image("c.example.com/x").unwrap_err();
        assert!(matches!(e3, CredError::HelperStart { .. }), "{e3:?}");
        assert!(e3.to_string().contains("docker-credential-absent"), "{e3}");
        assert!(e3.to_string().contains("credHelpers in"), "{e3}");
        let e4 = creds.for_image("d.example.com/x").unwrap_err();
        assert!(matches!(e4, CredError::HelperName { .. }), "{e4:?}");
        let started = Instant::now();
        let e5 = creds.for_image("e.example.com/x").unwrap_err();
        assert!(matches!(e5, CredError::HelperTimeout { .. }), "{e5:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the helper was killed"
        );

        for e in [e, e2, e3, e4, e5] {
            assert!(
                !everything_said(&e).contains(SECRET),
                "{}",
                everything_said(&e)
            );
        }
        // Errors are not cached: a second call asks again (and fails again).
        assert!(creds.for_image("a.example.com/x").is_err());
    }

    #[test]
    fn config_errors_never_quote_the_config() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET); // no ':' inside
        let cases = [
            format!(r#"{{"auths": "{SECRET}"}}"#),
            format!(r#"{{"auths": {{"x.io": {{"auth": 5, "password": "{SECRET}"}}}}}}"#),
            format!(r#"{{"auths": {{"x.io": {{"password": "{SECRET}" "#),
            format!(r#"{{"credsStore": ["{SECRET}"]}}"#),
        ];
        for json in &cases {
            let dir = config_dir(json);
            let e = Credentials::load_with(&[], Some(dir.path().into()), None, &env_of(&[]))
                .unwrap_err();
            assert!(matches!(e, CredError::ConfigParse { .. }), "{e:?}");
            assert!(
                !everything_said(&e).contains(SECRET),
                "{}",
                everything_said(&e)
            );
        }
        for auth in [b64.as_str(), SECRET, "%%%"] {
            let dir = config_dir(&format!(r#"{{"auths": {{"x.io": {{"auth": "{auth}"}}}}}}"#));
            let e = from_config(dir.path(), None)
                .for_image("x.io/y")
                .unwrap_err();
            assert!(matches!(e, CredError::ConfigAuth { .. }), "{e:?}");
            assert!(e.to_string().contains("x.io"), "{e}");
            let said = everything_said(&e);
            assert!(!said.contains(SECRET) && !said.contains(&b64), "{said}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
        let dir = config_dir(&format!(r#"{{"auths": {{"x.io": {{"auth": "{b64}"}}}}}}"#));
        let creds = Credentials::load_with(
            &[reg("ghcr.io", PasswordSource::Env("PW".into()))],
            Some(dir.path().into()),
            None,
            &env_of(&[("PW", SECRET)]),
        )
        .unwrap();
        let auth = creds.for_image("x.io/y").unwrap().unwrap();
        assert_eq!(auth.password, SECRET);
        let manifest_auth = creds.for_image("ghcr.io/y").unwrap().unwrap();
        for said in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{auth:?}"),
            format!("{manifest_auth:?}"),
        ] {
            assert!(!said.contains(SECRET) && !said.contains(&b64), "{said}");
        }
        assert!(format!("{creds:?}").contains("ghcr.io"));
    }
}

//! Secrets and config files (SPEC §12): `Secret` documents (where each value is read), and per
//! service and plug class the variables whose value is a secret, the secrets placed as files
//! and the config files.
//!
//! No secret value is read here: a `file` source is opened to see that it can be read, an `env`
//! source is looked up to see that it is set, a `command` is not run. Config files are read
//! (they are part of the desired state, like the manifests).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::Digest;

use super::registries::{is_env_name, relative_to_manifest};
use super::{Named, Report, hint_known};
use crate::manifest::decode::Sp;
use crate::manifest::raw::*;
use crate::manifest::spec::*;
use crate::manifest::yaml::Pos;

/// Largest config file: files reach the container in the request to the node's engine
/// (its archive API), so they are kept small.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Default mode of a secret placed as a file.
pub const DEFAULT_SECRET_MODE: u32 = 0o400;

/// Default mode of a config file.
pub const DEFAULT_CONFIG_MODE: u32 = 0o444;

/// Resolves every Secret document, checking that its source exists now (without reading it).
/// A Secret with an error is still returned when its source is known, so references to it are
/// not reported as undefined too.
pub(super) fn secrets(
    r: &mut Report,
    raw: &[Named<RawSecretSpec>],
) -> BTreeMap<String, SecretSpec> {
    let mut out = BTreeMap::new();
    for sec in raw {
        let file = &sec.doc.file;
        let s = sec.spec;
        let name = &sec.name;
        let given: Vec<(&str, Pos)> = [
            ("file", s.file.as_ref().map(|f| f.pos)),
            ("env", s.env.as_ref().map(|e| e.pos)),
            ("command", s.command.as_ref().map(|c| c.pos)),
        ]
        .into_iter()
        .filter_map(|(k, p)| Some((k, p?)))
        .collect();
        if given.is_empty() {
            // Said when decoding (or the source did not decode: that error is recorded).
            continue;
        }
        if let [(first, _), (second, pos), ..] = given.as_slice() {
            r.err(
                file,
                *pos,
                &format!("spec.{second}"),
                format!("give one of file, env or command, not both {first} and {second}"),
            );
            continue;
        }
        let source = if let Some(f) = &s.file {
            if f.value.is_empty() {
                r.err(file, f.pos, "spec.file", "file is empty");
                continue;
            }
            let path = relative_to_manifest(file, &f.value);
            if let Err(e) = check_readable(&expand_home(&path)) {
                r.err(
                    file,
                    f.pos,
                    "spec.file",
                    format!("secret {name:?}: cannot read file {:?}: {e}", f.value),
                );
            }
            SecretSource::File(path)
        } else if let Some(env) = &s.env {
            if !is_env_name(&env.value) {
                r.err(
                    file,
                    env.pos,
                    "spec.env",
                    format!(
                        "invalid environment variable name {:?}: use letters, digits and '_', \
                         not starting with a digit",
                        env.value
                    ),
                );
                continue;
            }
            if std::env::var_os(&env.value).is_none() {
                r.err(
                    file,
                    env.pos,
                    "spec.env",
                    format!(
                        "secret {name:?}: environment variable {} is not set (it is read from \
                         the environment of the fleetctl that applies)",
                        env.value
                    ),
                );
            }
            SecretSource::Env(env.value.clone())
        } else if let Some(cmd) = &s.command {
            if cmd.value.is_empty() || cmd.value[0].value.is_empty() {
                r.err(
                    file,
                    cmd.pos,
                    "spec.command",
                    "command is empty: give the program and its arguments as a list, e.g. \
                     [pass, show, aims/db]",
                );
                continue;
            }
            SecretSource::Command(cmd.value.iter().map(|a| a.value.clone()).collect())
        } else {
            continue;
        };
        out.insert(
            name.clone(),
            SecretSpec {
                name: name.clone(),
                source,
            },
        );
    }
    out
}

/// Warns about each Secret that no Service or PlugClass refers to (from `env` or `secrets`).
pub(super) fn warn_unused(
    r: &mut Report,
    raw_secrets: &[Named<RawSecretSpec>],
    referenced: &BTreeSet<String>,
) {
    for sec in raw_secrets {
        if referenced.contains(&sec.name) {
            continue;
        }
        let pos = sec
            .doc
            .metadata
            .name
            .as_ref()
            .map_or(sec.doc.pos, |n| n.pos);
        r.warn(
            &sec.doc.file,
            pos,
            "metadata.name",
            format!(
                "secret {:?} is defined but no Service or PlugClass uses it",
                sec.name
            ),
        );
    }
}

/// The secret names a service's or plug class's raw spec refers to.
pub(super) fn referenced_secrets<'a>(
    env: &'a Option<EnvMap>,
    mounts: &'a Option<Vec<RawSecretMount>>,
) -> impl Iterator<Item = String> + 'a {
    let from_env = env.iter().flatten().filter_map(|(_, v)| match &v.value {
        EnvValue::Secret(s) => Some(s.value.clone()),
        EnvValue::Text(_) => None,
    });
    let from_mounts = mounts
        .iter()
        .flatten()
        .filter_map(|m| m.name.as_ref().map(|n| n.value.clone()));
    from_env.chain(from_mounts)
}

/// `env` secrets, `secrets` and `configs` of one service or plug class (in `file`): references
/// to defined secrets, targets (absolute, no `..`, each once), modes, and each config file's
/// content. Entries with an error are left out (the error is recorded).
pub(super) fn resolve_files(
    r: &mut Report,
    file: &str,
    env: &Option<EnvMap>,
    mounts: &Option<Vec<RawSecretMount>>,
    configs: &Option<Vec<RawConfigMount>>,
    defined: &BTreeMap<String, SecretSpec>,
) -> FileSpecs {
    let known: Vec<&str> = defined.keys().map(String::as_str).collect();
    let check_defined = |r: &mut Report, name: &Sp<String>, path: &str| -> bool {
        if defined.contains_key(&name.value) {
            return true;
        }
        r.err(
            file,
            name.pos,
            path,
            format!(
                "secret {:?} is not defined: no Secret document has this name{}",
                name.value,
                hint_known(&name.value, &known)
            ),
        );
        false
    };
    let mut out = FileSpecs::default();
    for (var, v) in env.iter().flatten() {
        if let EnvValue::Secret(name) = &v.value
            && check_defined(r, name, &format!("spec.env.{}.secret", var.value))
        {
            out.secret_env.insert(var.value.clone(), name.value.clone());
        }
    }
    // Every target placed so far: target → (field path, position).
    let mut targets: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    let mut claim = |r: &mut Report, target: &str, path: String, pos: Pos| -> bool {
        // One spelling per path (`/run//secrets/./x` is `/run/secrets/x`).
        let target: String = Path::new(target)
            .components()
            .collect::<PathBuf>()
            .display()
            .to_string();
        let target = target.as_str();
        if let Some((first, at)) = targets.get(target) {
            r.err(
                file,
                pos,
                &path,
                format!("target {target:?} is also the target of {first} at {file}:{at}"),
            );
            return false;
        }
        // A file cannot be where another mount needs a directory.
        let under = |dir: &str, f: &str| {
            f.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        if let Some((other, (first, at))) = targets
            .iter()
            .find(|(t, _)| under(t, target) || under(target, t))
        {
            r.err(
                file,
                pos,
                &path,
                format!(
                    "target {target:?} and {other:?} (the target of {first} at {file}:{at}) cannot both be files: one is inside the other"
                ),
            );
            return false;
        }
        let owner = path.trim_end_matches(".target").to_string();
        targets.insert(target.to_string(), (owner, pos));
        true
    };
    for (i, m) in mounts.iter().flatten().enumerate() {
        let path = format!("spec.secrets[{i}]");
        let Some(name) = &m.name else { continue };
        let mut ok = check_defined(r, name, &format!("{path}.name"));
        let (target, target_pos) = match &m.target {
            Some(t) => {
                if let Err(msg) = check_target(&t.value) {
                    r.err(file, t.pos, &format!("{path}.target"), msg);
                    ok = false;
                }
                (t.value.clone(), t.pos)
            }
            None => (format!("/run/secrets/{}", name.value), m.pos),
        };
        ok &= claim(r, &target, format!("{path}.target"), target_pos);
        if ok {
            out.secrets.push(SecretMount {
                name: name.value.clone(),
                target,
                mode: m.mode.as_ref().map_or(DEFAULT_SECRET_MODE, |m| m.value.0),
                uid: m.uid.as_ref().map_or(0, |u| u.value),
                gid: m.gid.as_ref().map_or(0, |g| g.value),
            });
        }
    }
    for (i, c) in configs.iter().flatten().enumerate() {
        let path = format!("spec.configs[{i}]");
        let mut ok = true;
        if let Some(t) = &c.target {
            if let Err(msg) = check_target(&t.value) {
                r.err(file, t.pos, &format!("{path}.target"), msg);
                ok = false;
            } else {
                ok &= claim(r, &t.value, format!("{path}.target"), t.pos);
            }
        }
        let Some(source) = &c.source else { continue };
        let read = if source.value.is_empty() {
            Err("source is empty".to_string())
        } else {
            let resolved = relative_to_manifest(file, &source.value);
            match r
                .configs
                .and_then(|given| given.get(&resolved.display().to_string()))
            {
                Some(content) => Ok((resolved, content.clone())),
                None => read_config(&expand_home(&resolved), &source.value)
                    .map(|content| (resolved, content)),
            }
        };
        let (resolved, content) = match read {
            Ok(x) => x,
            Err(msg) => {
                r.err(file, source.pos, &format!("{path}.source"), msg);
                continue;
            }
        };
        if let (true, Some(target)) = (ok, &c.target) {
            out.configs.push(ConfigMount {
                name: source.value.clone(),
                source: resolved,
                target: target.value.clone(),
                mode: c.mode.as_ref().map_or(DEFAULT_CONFIG_MODE, |m| m.value.0),
                uid: c.uid.as_ref().map_or(0, |u| u.value),
                gid: c.gid.as_ref().map_or(0, |g| g.value),
                sha256: hex::encode(sha2::Sha256::digest(&content)),
                content,
            });
        }
    }
    out
}

/// A path in the container: absolute, naming a file, without `..`.
fn check_target(target: &str) -> Result<(), String> {
    if !target.starts_with('/') {
        return Err(format!(
            "target {target:?} must be an absolute path in the container"
        ));
    }
    if Path::new(target)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(format!("target {target:?} must not contain `..`"));
    }
    if target.ends_with('/') {
        return Err(format!(
            "target {target:?} must name a file, not end in `/`"
        ));
    }
    Ok(())
}

/// A leading `~/` (or a lone `~`) as the home directory; other paths as they are.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) if !home.is_empty() => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// Opens a secret's file to see that it can be read, without reading it.
fn check_readable(path: &Path) -> Result<(), String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    Ok(())
}

/// Reads a config file, at most [`MAX_CONFIG_BYTES`]; messages name it as `written`.
fn read_config(path: &Path, written: &str) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read config file {written:?}: {e}");
    let f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!("config file {written:?} is not a regular file"));
    }
    let mut content = Vec::new();
    f.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut content)
        .map_err(cannot)?;
    if content.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "config file {written:?} is larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), the limit \
             for a config file: files reach the container through the engine's API, in the \
             request to each node; use a volume for larger files"
        ));
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Source, parse};

    /// A manifest file named inside `dir`, so relative paths resolve there.
    fn source(dir: &Path, text: &str) -> Source {
        Source {
            name: dir.join("fleet.yaml").display().to_string(),
            text: text.to_string(),
        }
    }

    const FLEET: &str = "\
apiVersion: fleet/v1
kind: Secret
metadata: {name: db-password}
spec: {file: secrets/db-password}
---
apiVersion: fleet/v1
kind: Secret
metadata: {name: path-var}
spec: {env: PATH}
---
apiVersion: fleet/v1
kind: Secret
metadata: {name: from-pass}
spec: {command: [pass, show, aims/db]}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec:
  image: nginx:1.27
  resources: {memory: 64MiB}
  env:
    MODE: production
    DB_PASSWORD: {secret: db-password}
  secrets:
    - {name: db-password}
    - {name: from-pass, target: /etc/app/token, mode: \"0440\", uid: 101, gid: 102}
  configs:
    - {source: conf/nginx.conf, target: /etc/nginx/nginx.conf}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec:
  image: ghcr.io/aims/plug:2
  resources: {memory: 64MiB}
  port: 8080
  env: {SEARCH_PATH: {secret: path-var}}
  secrets: [{name: db-password, target: /run/db}]
  configs: [{source: conf/nginx.conf, target: /etc/agent.conf, mode: \"0600\", uid: 7}]
";

    fn dir_with_files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("secrets/db-password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("conf/nginx.conf"), "events {}\n").unwrap();
        dir
    }

    #[test]
    fn secrets_and_configs_resolve_with_their_defaults() {
        let dir = dir_with_files();
        let loaded = parse(&[source(dir.path(), FLEET)]).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let fleet = &loaded.fleet;
        assert_eq!(
            fleet.secrets["db-password"].source,
            SecretSource::File(dir.path().join("secrets/db-password"))
        );
        assert_eq!(
            fleet.secrets["path-var"].source,
            SecretSource::Env("PATH".into())
        );
        assert_eq!(
            fleet.secrets["from-pass"].source,
            SecretSource::Command(vec!["pass".into(), "show".into(), "aims/db".into()])
        );
        // No value anywhere in the spec.
        assert!(!format!("{fleet:?}").contains("s3cret"));

        let web = &fleet.services["web"];
        assert_eq!(web.env.get("MODE").map(String::as_str), Some("production"));
        assert!(!web.env.contains_key("DB_PASSWORD"));
        assert_eq!(web.files.secret_env["DB_PASSWORD"], "db-password");
        assert_eq!(
            web.files.secrets,
            vec![
                SecretMount {
                    name: "db-password".into(),
                    target: "/run/secrets/db-password".into(),
                    mode: 0o400,
                    uid: 0,
                    gid: 0,
                },
                SecretMount {
                    name: "from-pass".into(),
                    target: "/etc/app/token".into(),
                    mode: 0o440,
                    uid: 101,
                    gid: 102,
                },
            ]
        );
        let conf = &web.files.configs[0];
        assert_eq!(conf.name, "conf/nginx.conf");
        assert_eq!(conf.source, dir.path().join("conf/nginx.conf"));
        assert_eq!(conf.target, "/etc/nginx/nginx.conf");
        assert_eq!((conf.mode, conf.uid, conf.gid), (0o444, 0, 0));
        assert_eq!(conf.content, b"events {}\n");
        assert_eq!(
            conf.sha256,
            hex::encode(sha2::Sha256::digest(b"events {}\n"))
        );

        let agent = &fleet.plug_classes["agent"];
        assert!(agent.env.is_empty());
        assert_eq!(agent.files.secret_env["SEARCH_PATH"], "path-var");
        assert_eq!(agent.files.secrets[0].target, "/run/db");
        assert_eq!(agent.files.secrets[0].mode, 0o400);
        let conf = &agent.files.configs[0];
        assert_eq!((conf.mode, conf.uid, conf.gid), (0o600, 7, 0));
        assert_eq!(conf.content, b"events {}\n");
        assert_eq!(
            agent.files.secret_names().into_iter().collect::<Vec<_>>(),
            ["db-password", "path-var"]
        );
    }

    #[test]
    fn an_edited_config_file_changes_the_manifests_hash() {
        let dir = dir_with_files();
        let sources = [source(dir.path(), FLEET)];
        let before = parse(&sources).unwrap().sources_hash();
        assert_ne!(before, crate::manifest::sources_hash(&sources));
        assert_eq!(parse(&sources).unwrap().sources_hash(), before);
        std::fs::write(dir.path().join("conf/nginx.conf"), "events { }\n").unwrap();
        assert_ne!(parse(&sources).unwrap().sources_hash(), before);
        // A secret's value is not part of it.
        let after = parse(&sources).unwrap().sources_hash();
        std::fs::write(dir.path().join("secrets/db-password"), "other\n").unwrap();
        assert_eq!(parse(&sources).unwrap().sources_hash(), after);
    }

    #[test]
    fn a_config_file_over_1_mib_is_refused() {
        let dir = dir_with_files();
        let big = std::fs::File::create(dir.path().join("conf/nginx.conf")).unwrap();
        big.set_len(MAX_CONFIG_BYTES as u64 + 1).unwrap();
        let err = parse(&[source(dir.path(), FLEET)]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "spec.configs[0].source: config file \"conf/nginx.conf\" is larger than 1 MiB"
            ),
            "{text}"
        );
        assert!(text.contains("engine's API"), "{text}");
        // Exactly 1 MiB is fine.
        let big = std::fs::File::create(dir.path().join("conf/nginx.conf")).unwrap();
        big.set_len(MAX_CONFIG_BYTES as u64).unwrap();
        parse(&[source(dir.path(), FLEET)]).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn an_unused_secret_is_a_warning() {
        let loaded = parse(&[Source {
            name: "<test>".into(),
            text: "apiVersion: fleet/v1\nkind: Secret\nmetadata: {name: spare}\nspec: {command: [pass, show, spare]}\n"
                .into(),
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0]
                .message
                .contains("\"spare\" is defined but no Service or PlugClass uses it")
        );
        assert_eq!(loaded.fleet.secrets.len(), 1);
    }

    #[test]
    fn targets_are_absolute_files_without_parent_components() {
        assert_eq!(check_target("/run/secrets/x"), Ok(()));
        assert_eq!(check_target("/etc/nginx/conf.d/a..b.conf"), Ok(()));
        assert!(check_target("run/x").is_err());
        assert!(check_target("/run/../etc/shadow").is_err());
        assert!(check_target("/run/x/").is_err());
        assert!(check_target("").is_err());
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if let Some(home) = home.filter(|h| !h.as_os_str().is_empty()) {
            assert_eq!(expand_home(Path::new("~/x/y")), home.join("x/y"));
        }
        assert_eq!(expand_home(Path::new("/a/~/b")), PathBuf::from("/a/~/b"));
        assert_eq!(
            expand_home(Path::new("~other/b")),
            PathBuf::from("~other/b")
        );
    }
}

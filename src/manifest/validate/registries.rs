//! `Fleet.spec.registries`: hosts, users and where each password is. Nothing is read here:
//! a password file may exist only on the operator's machine, at apply time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Report;
use crate::manifest::raw::RawRegistry;
use crate::manifest::spec::{PasswordSource, RegistrySpec};
use crate::manifest::yaml::Pos;

/// Resolves `spec.registries` of the Fleet document in `file`. Entries with an error are left
/// out (the error is recorded, so the manifests fail anyway).
pub(super) fn registries(r: &mut Report, file: &str, raw: &[RawRegistry]) -> Vec<RegistrySpec> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, (String, Pos)> = BTreeMap::new();
    for (i, reg) in raw.iter().enumerate() {
        let path = format!("spec.registries[{i}]");
        let mut ok = true;
        let host = reg.host.as_ref().and_then(|h| {
            if let Err(m) = check_host(&h.value) {
                r.err(file, h.pos, &format!("{path}.host"), m);
                return None;
            }
            let key = crate::registry::canonical_host(&h.value).to_string();
            if let Some((first, at)) = seen.get(&key) {
                let msg = if *first == h.value {
                    format!("registry {first:?} is listed twice; first at {file}:{at}")
                } else {
                    format!(
                        "registry {:?} is listed twice: {first:?} at {file}:{at} names the same \
                         registry",
                        h.value
                    )
                };
                r.err(file, h.pos, &format!("{path}.host"), msg);
                return None;
            }
            seen.insert(key, (h.value.clone(), h.pos));
            Some(h.value.clone())
        });
        if let Some(u) = &reg.username
            && u.value.is_empty()
        {
            r.err(
                file,
                u.pos,
                &format!("{path}.username"),
                "username is empty",
            );
            ok = false;
        }
        let password = match (&reg.password_file, &reg.password_env) {
            (Some(_), Some(env)) => {
                r.err(
                    file,
                    env.pos,
                    &format!("{path}.passwordEnv"),
                    "give passwordFile or passwordEnv, not both",
                );
                None
            }
            (None, None) => {
                r.err(
                    file,
                    reg.pos,
                    &path,
                    "missing passwordFile or passwordEnv: say where the password is read from \
                     (the password itself never goes in a manifest)",
                );
                None
            }
            (Some(f), None) if f.value.is_empty() => {
                r.err(
                    file,
                    f.pos,
                    &format!("{path}.passwordFile"),
                    "passwordFile is empty",
                );
                None
            }
            (Some(f), None) => Some(PasswordSource::File(relative_to_manifest(file, &f.value))),
            (None, Some(env)) if !is_env_name(&env.value) => {
                r.err(
                    file,
                    env.pos,
                    &format!("{path}.passwordEnv"),
                    format!(
                        "invalid environment variable name {:?}: use letters, digits and '_', \
                         not starting with a digit",
                        env.value
                    ),
                );
                None
            }
            (None, Some(env)) => Some(PasswordSource::Env(env.value.clone())),
        };
        if let (Some(host), Some(username), Some(password), true) =
            (host, &reg.username, password, ok)
        {
            out.push(RegistrySpec {
                host,
                username: username.value.clone(),
                password,
            });
        }
    }
    out
}

/// A registry host as image references write it: a lowercase host name or IPv4 address, with
/// an optional `:port`; no scheme, no path.
fn check_host(host: &str) -> Result<(), String> {
    const FORM: &str = "use a host name or IP address with an optional :port, e.g. \
                        registry.example.com or 10.0.0.5:5000";
    if host.is_empty() {
        return Err("host is empty".into());
    }
    if let Some((_, rest)) = host.split_once("://") {
        let bare = rest.split('/').next().unwrap_or(rest);
        return Err(format!(
            "write the registry host without a scheme: {bare:?}, not {host:?}"
        ));
    }
    if let Some((bare, _)) = host.split_once('/') {
        return Err(format!(
            "write the registry host without a path: {bare:?}, not {host:?}; credentials are \
             per registry, not per repository"
        ));
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "registry host {host:?} must be lowercase, as image references write it"
        ));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0));
    let name_ok = name.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if port_ok && name_ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {host:?}: {FORM}"))
    }
}

/// A path a manifest names (`passwordFile`, a Secret's `file`, a config's `source`) as it will
/// be read: absolute and `~/…` paths as written
/// (`~` is expanded when the file is read), any other path joined to the directory of the
/// manifest file that names it.
pub(super) fn relative_to_manifest(manifest_file: &str, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() || written == "~" || written.starts_with("~/") {
        return p.to_path_buf();
    }
    match Path::new(manifest_file).parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}

/// A portable environment variable name: letters, digits and `_`, not starting with a digit.
pub(super) fn is_env_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_bare_lowercase_with_an_optional_port() {
        for ok in [
            "ghcr.io",
            "registry.example.com",
            "10.213.0.1:5000",
            "localhost:5000",
            "localhost",
            "docker.io",
            "my-registry.internal:443",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "https://ghcr.io",
            "ghcr.io/aims",
            "GHCR.io",
            "host:",
            "host:0",
            "host:70000",
            "-host.io",
            "a..b",
            "host name",
            "[::1]:5000",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(
            check_host("https://ghcr.io/x")
                .unwrap_err()
                .contains("\"ghcr.io\"")
        );
    }

    #[test]
    fn a_relative_password_file_is_relative_to_its_manifest() {
        assert_eq!(
            relative_to_manifest("fleet/secrets.yaml", "pw.txt"),
            PathBuf::from("fleet/pw.txt")
        );
        assert_eq!(
            relative_to_manifest("fleet/secrets.yaml", "../pw"),
            PathBuf::from("fleet/../pw")
        );
        assert_eq!(
            relative_to_manifest("fleet.yaml", "pw"),
            PathBuf::from("pw")
        );
        assert_eq!(
            relative_to_manifest("fleet/a.yaml", "/etc/pw"),
            PathBuf::from("/etc/pw")
        );
        assert_eq!(
            relative_to_manifest("fleet/a.yaml", "~/.config/pw"),
            PathBuf::from("~/.config/pw")
        );
    }

    #[test]
    fn environment_names() {
        assert!(is_env_name("REGISTRY_PASSWORD"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name("A=B"));
    }
}

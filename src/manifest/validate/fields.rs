//! Container fields shared by services and plug classes: volumes, healthcheck, command,
//! environment, image reference and pull policy.

use super::Report;
use crate::container::HealthcheckSpec;
use crate::manifest::decode::Sp;
use crate::manifest::raw::*;
use crate::manifest::spec::*;

pub(super) fn resolve_volumes(
    r: &mut Report,
    file: &str,
    raw: &Option<Vec<Sp<String>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, v) in raw.iter().flatten().enumerate() {
        let parts: Vec<&str> = v.value.split(':').collect();
        let path = format!("spec.volumes[{i}]");
        let ok = match parts.as_slice() {
            [dst] => dst.starts_with('/'),
            [src, dst] => !src.is_empty() && dst.starts_with('/'),
            [src, dst, mode] => {
                !src.is_empty()
                    && dst.starts_with('/')
                    && mode.split(',').all(|m| {
                        matches!(
                            m,
                            "ro" | "rw"
                                | "z"
                                | "Z"
                                | "nocopy"
                                | "rshared"
                                | "shared"
                                | "slave"
                                | "rslave"
                                | "private"
                                | "rprivate"
                        )
                    })
            }
            _ => false,
        };
        let src = if parts.len() >= 2 { parts[0] } else { "" };
        if ok && !src.is_empty() && !src.starts_with('/') && !is_volume_name(src) {
            let why = if src.contains('/') || src.starts_with('.') || src.starts_with('~') {
                "a host path must be absolute: it is a path on the node, not relative to the manifests"
            } else {
                "a volume name is a letter or digit followed by letters, digits, '_', '.' or '-'"
            };
            r.err(
                file,
                v.pos,
                &path,
                format!("invalid volume source {src:?} in {:?}: {why}", v.value),
            );
        } else if ok {
            out.push(v.value.clone());
        } else {
            r.err(
                file,
                v.pos,
                &path,
                format!(
                    "invalid volume {:?}: use \"NAME:/path\", \"/host/path:/path\" or add \":ro\"; the container path must be absolute",
                    v.value
                ),
            );
        }
    }
    out
}

/// Docker's rule for a named volume: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(super) fn is_volume_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn resolve_healthcheck(
    r: &mut Report,
    file: &str,
    raw: &Option<RawHealthcheck>,
) -> Option<HealthcheckSpec> {
    let h = raw.as_ref()?;
    let cmd = h.command.as_ref()?;
    let test = cmd.value.0.clone();
    match test.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if test.len() >= 2 => {}
        Some("NONE") if test.len() == 1 => {}
        _ => {
            r.err(
                file,
                cmd.pos,
                "spec.healthcheck.command",
                "healthcheck command must be [\"CMD\", program, args...], [\"CMD-SHELL\", \"shell command\"], [\"NONE\"] or a shell string",
            );
            return None;
        }
    }
    if let Some(n) = &h.retries
        && n.value == 0
    {
        r.err(
            file,
            n.pos,
            "spec.healthcheck.retries",
            "retries must be at least 1",
        );
    }
    for (d, name) in [(&h.interval, "interval"), (&h.timeout, "timeout")] {
        if let Some(d) = d
            && d.value.0 < std::time::Duration::from_millis(1)
        {
            r.err(
                file,
                d.pos,
                &format!("spec.healthcheck.{name}"),
                format!("{name} must be at least 1ms"),
            );
        }
    }
    Some(HealthcheckSpec {
        test,
        interval: h.interval.as_ref().map(|d| d.value.0),
        timeout: h.timeout.as_ref().map(|d| d.value.0),
        retries: h.retries.as_ref().map(|d| d.value),
        start_period: h.start_period.as_ref().map(|d| d.value.0),
    })
}

pub(super) fn resolve_command(
    r: &mut Report,
    file: &str,
    raw: &Option<Sp<Vec<Sp<String>>>>,
) -> Option<Vec<String>> {
    let c = raw.as_ref()?;
    if c.value.is_empty() {
        r.err(
            file,
            c.pos,
            "spec.command",
            "command is empty; omit it to use the image's",
        );
        return None;
    }
    Some(c.value.iter().map(|s| s.value.clone()).collect())
}

/// `spec.env`: checks every variable name and returns the plain values; the variables whose
/// value is `{secret: NAME}` are resolved by `files::resolve_files`.
pub(super) fn resolve_env(r: &mut Report, file: &str, raw: &Option<EnvMap>) -> Labels {
    let mut out = Labels::new();
    for (k, v) in raw.iter().flatten() {
        if k.value.is_empty() || k.value.contains('=') || k.value.contains('\0') {
            r.err(
                file,
                k.pos,
                &format!("spec.env.{}", k.value),
                format!("invalid environment variable name {:?}", k.value),
            );
        }
        if let Some(text) = v.value.text() {
            out.insert(k.value.clone(), text.to_string());
        }
    }
    out
}

pub(super) fn check_image(r: &mut Report, file: &str, image: &Sp<String>) {
    let v = &image.value;
    // The repository part of a reference is lowercase; tags and digests may not be.
    let repo = v.split(['@']).next().unwrap_or(v);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    if v.is_empty()
        || v.contains(char::is_whitespace)
        || repo.chars().any(|c| c.is_ascii_uppercase())
    {
        r.err(
            file,
            image.pos,
            "spec.image",
            format!("invalid image reference {v:?}"),
        );
    }
}

/// `spec.pull`: `missing` when absent.
pub(super) fn resolve_pull(r: &mut Report, file: &str, raw: &Option<Sp<String>>) -> PullPolicy {
    let Some(p) = raw else {
        return PullPolicy::default();
    };
    PullPolicy::parse(&p.value).unwrap_or_else(|| {
        // Kubernetes' spellings (IfNotPresent, Always, Never) are the likely slip.
        let hint = match p.value.to_ascii_lowercase().as_str() {
            "ifnotpresent" => "; Kubernetes' IfNotPresent is `missing` here".to_string(),
            lower => PullPolicy::parse(lower)
                .map(|q| format!("; did you mean `{}`?", q.as_str()))
                .unwrap_or_default(),
        };
        r.err(
            file,
            p.pos,
            "spec.pull",
            format!(
                "unknown pull policy {:?}; use missing, always, never or fleet{hint}",
                p.value
            ),
        );
        PullPolicy::default()
    })
}

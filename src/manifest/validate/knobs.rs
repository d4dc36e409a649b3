//! Per-container engine settings of services and plug classes (SPEC §13): log rotation,
//! ulimits, sysctls, user, working directory, read-only root, capabilities and stop signal.
//! None can be changed in place by the engine, so all are in the spec hash.

use std::collections::BTreeMap;

use super::{Report, hint_known};
use crate::container::{Knobs, Ulimit};
use crate::manifest::decode::{Sp, Text};
use crate::manifest::raw::{RawLogging, RawUlimit, TextMap};

/// The knob fields of a raw `Service` or `PlugClass` spec.
pub(super) struct RawKnobs<'a> {
    pub logging: &'a Option<RawLogging>,
    pub ulimits: &'a Option<BTreeMap<Sp<String>, Sp<RawUlimit>>>,
    pub sysctls: &'a Option<TextMap>,
    pub user: &'a Option<Sp<Text>>,
    pub working_dir: &'a Option<Sp<String>>,
    pub read_only: &'a Option<Sp<bool>>,
    pub cap_add: &'a Option<Vec<Sp<String>>>,
    pub cap_drop: &'a Option<Vec<Sp<String>>>,
    pub stop_signal: &'a Option<Sp<Text>>,
    /// The containers use the node's network stack (`network: host`): `net.*` sysctls would
    /// change the node's.
    pub host_network: bool,
}

/// The ulimit names the engine knows.
pub const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Non-`net.` sysctls that are namespaced (IPC namespace), as the engine allows them.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `net.` sysctls that every network namespace of a node shares.
const HOST_WIDE_NET_SYSCTLS: &[&str] = &[
    "net.core.netdev_max_backlog",
    "net.core.optmem_max",
    "net.core.rmem_default",
    "net.core.rmem_max",
    "net.core.wmem_default",
    "net.core.wmem_max",
    "net.ipv4.tcp_mem",
    "net.ipv4.udp_mem",
];

/// Linux capabilities, without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Stop signals accepted by name.
pub const SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL",
];

/// Resolves the knobs of one service or plug class; problems are reported, and a knob with a
/// problem is left unset.
pub(super) fn resolve_knobs(r: &mut Report, file: &str, k: &RawKnobs) -> Knobs {
    let mut out = Knobs::default();
    if let Some(l) = k.logging {
        resolve_logging(r, file, l, &mut out);
    }
    if let Some(u) = k.ulimits {
        out.ulimits = resolve_ulimits(r, file, u);
    }
    if let Some(s) = k.sysctls {
        out.sysctls = resolve_sysctls(r, file, s, k.host_network);
    }
    if let Some(u) = k.user {
        match check_user(&u.value.0) {
            Ok(()) => out.user = Some(u.value.0.clone()),
            Err(m) => r.err(file, u.pos, "spec.user", m),
        }
    }
    if let Some(w) = k.working_dir {
        if w.value.starts_with('/') && !w.value.contains('\0') {
            out.working_dir = Some(w.value.clone());
        } else {
            r.err(
                file,
                w.pos,
                "spec.workingDir",
                format!("workingDir must be an absolute path, found {:?}", w.value),
            );
        }
    }
    out.read_only = k.read_only.as_ref().is_some_and(|b| b.value);
    out.cap_add = resolve_caps(r, file, "spec.capAdd", k.cap_add);
    out.cap_drop = resolve_caps(r, file, "spec.capDrop", k.cap_drop);
    if let Some(caps) = k.cap_add {
        for (i, c) in caps.iter().enumerate() {
            if let Some(name) = canonical_cap(&c.value)
                && out.cap_drop.contains(&name)
            {
                r.err(
                    file,
                    c.pos,
                    &format!("spec.capAdd[{i}]"),
                    format!(
                        "{name} is both added and dropped; keep it in one of capAdd and capDrop"
                    ),
                );
            }
        }
    }
    if let Some(s) = k.stop_signal {
        match canonical_signal(&s.value.0) {
            Some(sig) => out.stop_signal = Some(sig),
            None => r.err(
                file,
                s.pos,
                "spec.stopSignal",
                format!(
                    "unknown stop signal {:?}; use {} or a number from 1 to 31",
                    s.value.0,
                    SIGNALS.join(", ")
                ),
            ),
        }
    }
    out
}

fn resolve_logging(r: &mut Report, file: &str, l: &RawLogging, out: &mut Knobs) {
    if let Some(size) = &l.max_size {
        if size.value.0 == 0 {
            r.err(
                file,
                size.pos,
                "spec.logging.maxSize",
                "maxSize must be above 0 (leave logging out for the engine's default)",
            );
        } else {
            out.log_max_size = Some(size.value.0);
        }
    }
    if let Some(files) = &l.max_files {
        if files.value == 0 {
            r.err(
                file,
                files.pos,
                "spec.logging.maxFiles",
                "maxFiles must be at least 1",
            );
        } else if l.max_size.is_none() {
            r.err(
                file,
                files.pos,
                "spec.logging.maxFiles",
                "maxFiles needs maxSize: the json-file driver rotates a log when it reaches \
                 maxSize, and the engine refuses max-file without max-size",
            );
        } else {
            out.log_max_files = Some(files.value);
        }
    }
}

/// A ulimit value: a non-negative number, or `unlimited` (-1).
fn ulimit_value(s: &str) -> Result<i64, String> {
    if s == "unlimited" || s == "-1" {
        return Ok(-1);
    }
    s.parse::<u64>()
        .ok()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| format!("invalid limit {s:?}: write a non-negative number or unlimited"))
}

fn resolve_ulimits(
    r: &mut Report,
    file: &str,
    raw: &BTreeMap<Sp<String>, Sp<RawUlimit>>,
) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let path = format!("spec.ulimits.{}", name.value);
        if !ULIMITS.contains(&name.value.as_str()) {
            r.err(
                file,
                name.pos,
                &path,
                format!(
                    "unknown ulimit {:?}{}",
                    name.value,
                    hint_known(&name.value, ULIMITS)
                ),
            );
            continue;
        }
        let mut value = |t: &Sp<Text>, path: &str| {
            ulimit_value(&t.value.0)
                .map_err(|m| r.err(file, t.pos, path, m))
                .ok()
        };
        let (soft, hard) = match &v.value {
            RawUlimit::Both(t) => {
                let n = value(
                    &Sp {
                        value: t.clone(),
                        pos: v.pos,
                    },
                    &path,
                );
                (n, n)
            }
            RawUlimit::Pair(p) => (
                p.soft
                    .as_ref()
                    .and_then(|s| value(s, &format!("{path}.soft"))),
                p.hard
                    .as_ref()
                    .and_then(|h| value(h, &format!("{path}.hard"))),
            ),
        };
        let (Some(soft), Some(hard)) = (soft, hard) else {
            continue;
        };
        let above = |a: i64, b: i64| b != -1 && (a == -1 || a > b);
        if above(soft, hard) {
            r.err(
                file,
                v.pos,
                &path,
                format!(
                    "soft limit {} is above the hard limit {}",
                    shown(soft),
                    shown(hard)
                ),
            );
            continue;
        }
        if name.value == "nofile" && (soft == -1 || hard == -1) {
            r.err(
                file,
                v.pos,
                &path,
                "nofile cannot be unlimited: the kernel caps open files at fs.nr_open; give a \
                 number such as 65536",
            );
            continue;
        }
        out.insert(name.value.clone(), Ulimit { soft, hard });
    }
    out
}

fn shown(n: i64) -> String {
    if n == -1 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// Why a sysctl cannot be set in a container, if it cannot.
pub fn sysctl_refusal(name: &str, host_network: bool) -> Option<String> {
    let well_formed = !name.is_empty()
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '@'))
        });
    if !well_formed {
        return Some(format!(
            "invalid sysctl name {name:?}: write it with dots, e.g. net.core.somaxconn"
        ));
    }
    if let Some(rest) = name.strip_prefix("net.") {
        if HOST_WIDE_NET_SYSCTLS.contains(&name) {
            return Some(format!(
                "{name} is not namespaced: every network namespace of a node shares it, so \
                 it would change the whole node"
            ));
        }
        if host_network {
            return Some(format!(
                "{name} would change the node's own network stack: this service uses \
                 network: host"
            ));
        }
        let _ = rest;
        return None;
    }
    if name.starts_with("fs.mqueue.") || IPC_SYSCTLS.contains(&name) {
        return None;
    }
    Some(format!(
        "{name} is not namespaced: it would change the whole node; a container may set \
         net.*, kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, \
         kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced and fs.mqueue.*"
    ))
}

fn resolve_sysctls(
    r: &mut Report,
    file: &str,
    raw: &TextMap,
    host_network: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, v) in raw {
        let path = format!("spec.sysctls.{}", name.value);
        if let Some(m) = sysctl_refusal(&name.value, host_network) {
            r.err(file, name.pos, &path, m);
            continue;
        }
        let value = v.value.0.trim();
        if value.is_empty() || value.contains(['\n', '\0']) {
            r.err(
                file,
                v.pos,
                &path,
                "a sysctl value must be a non-empty single line",
            );
            continue;
        }
        out.insert(name.value.clone(), value.to_string());
    }
    out
}

/// `uid[:gid]` or `name[:group]`.
fn check_user(s: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            p.parse::<u32>().is_ok()
        } else {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.len() <= 32
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
    };
    let mut parts = s.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if s.is_empty()
        || parts.next().is_some()
        || !part_ok(user)
        || group.is_some_and(|g| !part_ok(g))
    {
        return Err(format!(
            "invalid user {s:?}: write uid[:gid] (e.g. 1000:1000) or a user name (e.g. nobody \
             or nobody:nogroup)"
        ));
    }
    Ok(())
}

/// `NET_ADMIN`, `cap_net_admin` or `CAP_NET_ADMIN` → `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn canonical_cap(s: &str) -> Option<String> {
    let up = s.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Some(up);
    }
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    CAPABILITIES.contains(&bare).then(|| format!("CAP_{bare}"))
}

fn resolve_caps(
    r: &mut Report,
    file: &str,
    path: &str,
    raw: &Option<Vec<Sp<String>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in raw.iter().flatten().enumerate() {
        match canonical_cap(&c.value) {
            Some(name) => out.push(name),
            None => {
                let bare = c.value.trim().to_ascii_uppercase();
                let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
                let hint = crate::manifest::decode::suggest(bare, CAPABILITIES)
                    .map(|s| format!("; did you mean {s}?"))
                    .unwrap_or_else(|| {
                        "; use a Linux capability name such as NET_ADMIN, NET_BIND_SERVICE, \
                         SYS_PTRACE or ALL"
                            .into()
                    });
                r.err(
                    file,
                    c.pos,
                    &format!("{path}[{i}]"),
                    format!("unknown capability {:?}{hint}", c.value),
                );
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `SIGTERM`, `term`, `15` → the spelling sent to the engine (`SIGTERM`, `15`).
pub fn canonical_signal(s: &str) -> Option<String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u32>() {
        return (1..=31).contains(&n).then(|| n.to_string());
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    SIGNALS.contains(&name.as_str()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctls_outside_the_containers_namespaces_are_refused() {
        assert_eq!(sysctl_refusal("net.core.somaxconn", false), None);
        assert_eq!(sysctl_refusal("net.ipv4.ip_local_port_range", false), None);
        assert_eq!(sysctl_refusal("kernel.shmmax", false), None);
        assert_eq!(sysctl_refusal("fs.mqueue.msg_max", false), None);
        let why = sysctl_refusal("vm.swappiness", false).unwrap();
        assert!(
            why.contains("not namespaced: it would change the whole node"),
            "{why}"
        );
        assert!(sysctl_refusal("kernel.pid_max", false).is_some());
        assert!(sysctl_refusal("net.core.rmem_max", false).is_some());
        assert!(sysctl_refusal("net.core.somaxconn", true).is_some());
        assert!(sysctl_refusal("net/core/somaxconn", false).is_some());
    }

    #[test]
    fn capabilities_and_signals_have_one_spelling() {
        assert_eq!(canonical_cap("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(
            canonical_cap("CAP_SYS_PTRACE").as_deref(),
            Some("CAP_SYS_PTRACE")
        );
        assert_eq!(canonical_cap("all").as_deref(), Some("ALL"));
        assert_eq!(canonical_cap("NET_ADMIM"), None);
        assert_eq!(canonical_signal("SIGQUIT").as_deref(), Some("SIGQUIT"));
        assert_eq!(canonical_signal("int").as_deref(), Some("SIGINT"));
        assert_eq!(canonical_signal("9").as_deref(), Some("9"));
        assert_eq!(canonical_signal("32"), None);
        assert_eq!(canonical_signal("SIGWINCH"), None);
    }

    #[test]
    fn users_are_ids_or_names() {
        assert!(check_user("1000").is_ok());
        assert!(check_user("1000:1000").is_ok());
        assert!(check_user("nobody:nogroup").is_ok());
        assert!(check_user("").is_err());
        assert!(check_user("a:b:c").is_err());
        assert!(check_user("root ").is_err());
        assert!(check_user("99999999999").is_err());
    }

    #[test]
    fn ulimit_values() {
        assert_eq!(ulimit_value("65536"), Ok(65536));
        assert_eq!(ulimit_value("unlimited"), Ok(-1));
        assert!(ulimit_value("-5").is_err());
        assert!(ulimit_value("lots").is_err());
    }
}

//! Host-key policy: fleetctl trusts a node's SSH host key only when the manifest pins it
//! (`ssh.hostKey`) or the node's known_hosts file lists it. Everything else fails closed.
//!
//! This module is pure apart from [`check_known_hosts_file`] (reads a file) and
//! [`record_known_host`] (appends to one). The SSH client handler asks [`HostKeyPolicy::check`]
//! for a [`Verdict`] and keeps it, so a refusal can say *why* (unknown host, changed key at line
//! N, pinned mismatch, certificate) instead of russh's one-size `UnknownKey`.
//!
//! # known_hosts support
//! Our own parser (russh's splits on single spaces and miscounts lines after comments): fields
//! separated by any run of blanks; comments and blank lines skipped (but counted, so line
//! numbers match an editor's); plain, comma-separated, `[host]:port` and hashed
//! (`|1|salt|hash`) host fields; `*`/`?` wildcards and `!negation`; `@revoked` honoured (a
//! revoked key is refused even when another line lists it); `@cert-authority` lines ignored
//! (host certificates are rejected until fleetctl implements CA checks). Unparseable lines are
//! skipped, as OpenSSH does.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};

/// The OpenSSH fingerprint of `key`: `SHA256:` and the unpadded base64 of its SHA-256 digest,
/// exactly as `ssh-keygen -lf` and `ssh` print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `ssh-ed25519 AAAA...` without a comment: the form a manifest's `hostKey:` pins.
pub fn openssh_line(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The host field OpenSSH uses for `host`:`port`: the bare host for port 22, else `[host]:port`.
pub fn host_field(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// How a node's host key is checked.
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// The manifest pins this key; known_hosts is not consulted.
    Pinned(PublicKey),
    /// The key must be listed in this known_hosts file.
    KnownHosts(PathBuf),
}

impl HostKeyPolicy {
    /// The policy for a pinned key string (`ssh-ed25519 AAAA... [comment]`) or a known_hosts path.
    ///
    /// # Errors
    /// The pinned key does not parse.
    pub fn new(pinned: Option<&str>, known_hosts: &Path) -> Result<Self, String> {
        match pinned {
            Some(p) => parse_public_key(p)
                .map(HostKeyPolicy::Pinned)
                .map_err(|e| format!("hostKey {p:?} is not an OpenSSH public key: {e}")),
            None => Ok(HostKeyPolicy::KnownHosts(known_hosts.to_path_buf())),
        }
    }

    /// The verdict on `presented`, the key the server at `host`:`port` proved it holds.
    ///
    /// A known_hosts file that cannot be read counts as empty (⇒ [`Verdict::Unknown`]), so a
    /// missing file fails closed with the advice to run `fleetctl trust`.
    pub fn check(&self, host: &str, port: u16, presented: &PublicKey) -> Verdict {
        match self {
            HostKeyPolicy::Pinned(pinned) => {
                if pinned.key_data() == presented.key_data() {
                    Verdict::Trusted
                } else {
                    Verdict::PinnedMismatch {
                        pinned: fingerprint(pinned),
                    }
                }
            }
            HostKeyPolicy::KnownHosts(path) => check_known_hosts_file(path, host, port, presented),
        }
    }

    /// Key algorithms this policy already knows for `host`:`port`, so the client can prefer them
    /// in key exchange (as OpenSSH does): a host known by its RSA key is then not asked for its
    /// Ed25519 key, which would be "unknown".
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<russh::keys::Algorithm> {
        match self {
            HostKeyPolicy::Pinned(k) => vec![k.algorithm()],
            HostKeyPolicy::KnownHosts(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let host_port = host_field(host, port);
                let mut algs = Vec::new();
                for e in parse_known_hosts(&text) {
                    if e.marker.is_none()
                        && e.matches(&host_port)
                        && !algs.contains(&e.key.algorithm())
                    {
                        algs.push(e.key.algorithm());
                    }
                }
                algs
            }
        }
    }
}

/// The outcome of checking a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pinned, or listed in known_hosts.
    Trusted,
    /// known_hosts has no entry for this host.
    Unknown {
        /// The file consulted.
        path: PathBuf,
    },
    /// known_hosts lists this host with a different key.
    Changed {
        /// The file consulted.
        path: PathBuf,
        /// 1-based line of the entry that disagrees.
        line: usize,
        /// Algorithm of the key recorded there (`ssh-ed25519`, ...).
        recorded_algorithm: String,
    },
    /// known_hosts marks the presented key `@revoked`.
    Revoked {
        /// The file consulted.
        path: PathBuf,
        /// 1-based line of the `@revoked` entry.
        line: usize,
    },
    /// The manifest pins another key.
    PinnedMismatch {
        /// Fingerprint of the pinned key.
        pinned: String,
    },
    /// The server presented an OpenSSH host certificate; fleetctl does not verify those yet.
    Certificate,
}

/// Why a host key was refused, with what the operator needs to decide: the presented key's
/// fingerprint and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyRejection {
    /// Node name.
    pub node: String,
    /// `host:port` as dialled.
    pub address: String,
    /// Algorithm of the presented key.
    pub algorithm: String,
    /// `SHA256:...` of the presented key.
    pub fingerprint: String,
    /// Why it was refused (never [`Verdict::Trusted`]).
    pub verdict: Verdict,
}

impl fmt::Display for HostKeyRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HostKeyRejection {
            node,
            address,
            algorithm,
            fingerprint,
            verdict,
        } = self;
        match verdict {
            Verdict::Trusted => write!(f, "host key {fingerprint} of {address} is trusted"),
            Verdict::Unknown { path } => write!(
                f,
                "host key of {address} is not known: it presented {algorithm} {fingerprint}, and {} \
                 has no entry for it; if that fingerprint is the node's, run `fleetctl trust {node}` (with `-f PATH` if these manifests were never applied)",
                path.display()
            ),
            Verdict::Changed {
                path,
                line,
                recorded_algorithm,
            } => write!(
                f,
                "HOST KEY CHANGED for {address}: it presented {algorithm} {fingerprint}, but {}:{line} \
                 records a different {recorded_algorithm} key. Someone may be intercepting the \
                 connection, or the host was reinstalled. Verify the new key out of band, remove \
                 line {line}, then run `fleetctl trust {node}` (with `-f PATH` if these manifests were never applied)",
                path.display()
            ),
            Verdict::Revoked { path, line } => write!(
                f,
                "host key {algorithm} {fingerprint} of {address} is revoked ({}:{line}); \
                 refusing to connect. Once the node has a new key, run `fleetctl trust {node}` (with `-f PATH` if these manifests were never applied)",
                path.display()
            ),
            Verdict::PinnedMismatch { pinned } => write!(
                f,
                "host key of {address} does not match the pinned hostKey: it presented \
                 {algorithm} {fingerprint}, the manifest pins {pinned}. If the host was \
                 reinstalled, verify the new key and run `fleetctl trust {node} -f PATH` to print \
                 the hostKey line to pin"
            ),
            Verdict::Certificate => write!(
                f,
                "{address} presented an SSH host certificate ({fingerprint}); fleetctl does not \
                 verify host certificates yet and rejects them. Pin the plain host key instead: \
                 run `fleetctl trust {node}` (with `-f PATH` if these manifests were never applied)"
            ),
        }
    }
}

impl std::error::Error for HostKeyRejection {}

/// Parses `ssh-ed25519 AAAA... [comment]`, or the bare base64 blob.
///
/// # Errors
/// The text is not an OpenSSH public key.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    if text.contains(char::is_whitespace) {
        PublicKey::from_openssh(text).map_err(|e| e.to_string())
    } else {
        russh::keys::parse_public_key_base64(text).map_err(|e| e.to_string())
    }
}

/// A marker at the start of a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `@revoked`: this key must never be accepted.
    Revoked,
    /// `@cert-authority`: a CA key (ignored: certificates are rejected).
    CertAuthority,
}

/// One usable known_hosts line.
#[derive(Debug, Clone)]
pub struct KnownHostsEntry {
    /// 1-based line number in the file.
    pub line: usize,
    /// `@revoked` / `@cert-authority`, if present.
    pub marker: Option<Marker>,
    /// The host field as written (patterns, comma list, or a hashed entry).
    pub hosts: String,
    /// The recorded key.
    pub key: PublicKey,
}

impl KnownHostsEntry {
    /// Whether this entry's host field names `host_port` (see [`host_field`]).
    pub fn matches(&self, host_port: &str) -> bool {
        match_host_field(&self.hosts, host_port)
    }
}

/// Every parseable line of a known_hosts file, in order. Comments, blank lines and lines that do
/// not parse are skipped (line numbers still count them).
pub fn parse_known_hosts(text: &str) -> Vec<KnownHostsEntry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let mut first = fields.next();
        let marker = match first {
            Some("@revoked") => Some(Marker::Revoked),
            Some("@cert-authority") => Some(Marker::CertAuthority),
            Some(m) if m.starts_with('@') => continue,
            _ => None,
        };
        if marker.is_some() {
            first = fields.next();
        }
        let (Some(hosts), Some(_alg), Some(blob)) = (first, fields.next(), fields.next()) else {
            continue;
        };
        let Ok(key) = russh::keys::parse_public_key_base64(blob) else {
            continue;
        };
        out.push(KnownHostsEntry {
            line: i + 1,
            marker,
            hosts: hosts.to_string(),
            key,
        });
    }
    out
}

/// The verdict of known_hosts `text` (from `path`) on `presented` for `host`:`port`, with
/// OpenSSH's precedence: revoked beats everything; any entry with the same key trusts it; an
/// entry for the host with another key means it changed; no entry means unknown.
pub fn check_known_hosts(
    text: &str,
    path: &Path,
    host: &str,
    port: u16,
    presented: &PublicKey,
) -> Verdict {
    let host_port = host_field(host, port);
    let entries = parse_known_hosts(text);
    if let Some(e) = entries
        .iter()
        .find(|e| e.marker == Some(Marker::Revoked) && e.key.key_data() == presented.key_data())
    {
        return Verdict::Revoked {
            path: path.to_path_buf(),
            line: e.line,
        };
    }
    let for_host: Vec<&KnownHostsEntry> = entries
        .iter()
        .filter(|e| e.marker.is_none() && e.matches(&host_port))
        .collect();
    if for_host
        .iter()
        .any(|e| e.key.key_data() == presented.key_data())
    {
        return Verdict::Trusted;
    }
    // Prefer reporting an entry of the same algorithm: that is the key that "changed".
    let differing = for_host
        .iter()
        .find(|e| e.key.algorithm() == presented.algorithm())
        .or_else(|| for_host.first());
    match differing {
        Some(e) => Verdict::Changed {
            path: path.to_path_buf(),
            line: e.line,
            recorded_algorithm: e.key.algorithm().as_str().to_string(),
        },
        None => Verdict::Unknown {
            path: path.to_path_buf(),
        },
    }
}

/// [`check_known_hosts`] on the file at `path`; an unreadable or missing file counts as empty.
pub fn check_known_hosts_file(
    path: &Path,
    host: &str,
    port: u16,
    presented: &PublicKey,
) -> Verdict {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    check_known_hosts(&text, path, host, port, presented)
}

/// Whether a comma-separated known_hosts host field names `host_port`. A negated pattern that
/// matches vetoes the line, as in OpenSSH.
fn match_host_field(field: &str, host_port: &str) -> bool {
    if field.starts_with("|1|") {
        return match_hashed(field, host_port);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        if let Some(neg) = pattern.strip_prefix('!') {
            if glob_match(neg, host_port) {
                return false;
            }
        } else if glob_match(pattern, host_port) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, host_port))`.
fn match_hashed(field: &str, host_port: &str) -> bool {
    let mut parts = field.trim_start_matches("|1|").splitn(2, '|');
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let Ok(mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(host_port.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character; case-insensitive.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Appends `host keytype base64` (or `[host]:port keytype base64`) to the known_hosts file at
/// `path`, creating the file and its directories when missing. Does nothing when an identical
/// entry is already there.
///
/// # Errors
/// The file cannot be created, read or written.
pub fn record_known_host(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
) -> std::io::Result<()> {
    let host_port = host_field(host, port);
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if parse_known_hosts(&existing)
        .iter()
        .any(|e| e.marker.is_none() && e.matches(&host_port) && e.key.key_data() == key.key_data())
    {
        return Ok(());
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = String::new();
    if !existing.is_empty() && !existing.ends_with('\n') {
        line.push('\n');
    }
    line.push_str(&host_port);
    line.push(' ');
    line.push_str(&openssh_line(key));
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two real ed25519 public keys.
    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";
    /// `ssh-keygen -lf` of K1.
    const K1_FP: &str = "SHA256:T7SvZ2cslqpPj6nKzitCBHHlpVF3r3MvLwmFL0fk0IE";

    fn key(s: &str) -> PublicKey {
        parse_public_key(s).unwrap()
    }

    fn check(text: &str, host: &str, port: u16, k: &str) -> Verdict {
        check_known_hosts(text, Path::new("kh"), host, port, &key(k))
    }

    #[test]
    fn fingerprint_is_openssh_sha256_without_padding() {
        let fp = fingerprint(&key(K1));
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert!(!fp.ends_with('='), "{fp}");
        assert_eq!(fp.len(), "SHA256:".len() + 43);
        assert_eq!(fp, K1_FP);
    }

    #[test]
    fn openssh_line_drops_the_comment() {
        assert_eq!(openssh_line(&key(&format!("{K1} root@box"))), K1);
    }

    #[test]
    fn plain_entry_trusts_the_same_key_and_reports_a_changed_one_with_its_line() {
        let text = format!("# comment\n\n10.0.0.1 {K1}\n");
        assert_eq!(check(&text, "10.0.0.1", 22, K1), Verdict::Trusted);
        assert_eq!(
            check(&text, "10.0.0.1", 22, K2),
            Verdict::Changed {
                path: "kh".into(),
                line: 3,
                recorded_algorithm: "ssh-ed25519".into()
            }
        );
        assert_eq!(
            check(&text, "10.0.0.2", 22, K1),
            Verdict::Unknown { path: "kh".into() }
        );
    }

    #[test]
    fn non_default_port_needs_the_bracketed_form() {
        let text = format!("[10.0.0.1]:2222 {K1}\n");
        assert_eq!(check(&text, "10.0.0.1", 2222, K1), Verdict::Trusted);
        assert!(matches!(
            check(&text, "10.0.0.1", 22, K1),
            Verdict::Unknown { .. }
        ));
        let plain = format!("10.0.0.1 {K1}\n");
        assert!(matches!(
            check(&plain, "10.0.0.1", 2222, K1),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn tabs_repeated_spaces_comma_lists_and_trailing_comments_are_accepted() {
        let text = format!(
            "web,10.0.0.1\t  {}   {}  a comment\n",
            K1.split(' ').next().unwrap(),
            K1.split(' ').nth(1).unwrap()
        );
        assert_eq!(check(&text, "10.0.0.1", 22, K1), Verdict::Trusted);
        assert_eq!(check(&text, "WEB", 22, K1), Verdict::Trusted);
    }

    #[test]
    fn hashed_entries_match_with_hmac_sha1() {
        // A hashed entry as `ssh-keygen -H` writes it, computed here with a fixed salt.
        let salt = [7u8; 20];
        let mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(b"[10.0.0.9]:2200")
            .finalize()
            .into_bytes();
        let text = format!("|1|{}|{} {K1}\n", BASE64.encode(salt), BASE64.encode(mac));
        assert_eq!(check(&text, "10.0.0.9", 2200, K1), Verdict::Trusted);
        assert!(matches!(
            check(&text, "10.0.0.9", 22, K1),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            check(&text, "10.0.0.9", 2200, K2),
            Verdict::Changed { line: 1, .. }
        ));
    }

    #[test]
    fn lines_hashed_by_ssh_keygen_match() {
        // `ssh-keygen -H` output for `[10.213.1.2]:2222` and `10.213.1.2` (both K1).
        let text = format!(
            "|1|k5RSYdvnodWbGXUkA1b/qnFwiYk=|OrcCw+HH3SHmkcpafvmi8U0kLCE= {K1}\n\
             |1|PT6Pa936aGnUMfSc7OEc8GynXo8=|GyVDUCiJvWbvmOMzjvMLgIsBs8k= {K1}\n"
        );
        assert_eq!(check(&text, "10.213.1.2", 2222, K1), Verdict::Trusted);
        assert_eq!(check(&text, "10.213.1.2", 22, K1), Verdict::Trusted);
        assert!(matches!(
            check(&text, "10.213.1.3", 22, K1),
            Verdict::Unknown { .. }
        ));
        assert!(matches!(
            check(&text, "10.213.1.2", 22, K2),
            Verdict::Changed { line: 2, .. }
        ));
    }

    #[test]
    fn wildcards_and_negation_follow_openssh() {
        let text = format!("*.example.com,!bad.example.com {K1}\n");
        assert_eq!(check(&text, "a.example.com", 22, K1), Verdict::Trusted);
        assert!(matches!(
            check(&text, "bad.example.com", 22, K1),
            Verdict::Unknown { .. }
        ));
        assert!(glob_match("10.0.0.?", "10.0.0.7"));
        assert!(!glob_match("10.0.0.?", "10.0.0.17"));
    }

    #[test]
    fn revoked_key_is_refused_even_when_listed() {
        let text = format!("10.0.0.1 {K1}\n@revoked * {K1}\n");
        assert_eq!(
            check(&text, "10.0.0.1", 22, K1),
            Verdict::Revoked {
                path: "kh".into(),
                line: 2
            }
        );
    }

    #[test]
    fn cert_authority_and_garbage_lines_are_ignored() {
        let text = format!("@cert-authority * {K1}\nnot a key line\n10.0.0.1 ssh-ed25519 !!!\n");
        assert!(matches!(
            check(&text, "10.0.0.1", 22, K1),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn any_matching_line_trusts_even_if_another_differs() {
        let text = format!("10.0.0.1 {K2}\n10.0.0.1 {K1}\n");
        assert_eq!(check(&text, "10.0.0.1", 22, K1), Verdict::Trusted);
    }

    #[test]
    fn pinned_policy_compares_key_data_only() {
        let p = HostKeyPolicy::new(Some(&format!("{K1} any-comment")), Path::new("/x")).unwrap();
        assert_eq!(p.check("h", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(
            p.check("h", 22, &key(K2)),
            Verdict::PinnedMismatch {
                pinned: K1_FP.to_string()
            }
        );
        assert!(HostKeyPolicy::new(Some("ssh-ed25519 nope"), Path::new("/x")).is_err());
    }

    #[test]
    fn missing_known_hosts_file_is_unknown() {
        let p = HostKeyPolicy::KnownHosts("/nonexistent/known_hosts".into());
        assert!(matches!(
            p.check("h", 22, &key(K1)),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn record_creates_dirs_appends_once_and_the_result_checks_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/known_hosts");
        record_known_host(&path, "10.0.0.1", 2222, &key(K1)).unwrap();
        record_known_host(&path, "10.0.0.1", 2222, &key(K1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[10.0.0.1]:2222 {K1}\n"));
        assert_eq!(
            check_known_hosts_file(&path, "10.0.0.1", 2222, &key(K1)),
            Verdict::Trusted
        );

        let plain = dir.path().join("kh2");
        std::fs::write(&plain, format!("other {K2}")).unwrap(); // no trailing newline
        record_known_host(&plain, "10.0.0.1", 22, &key(K1)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&plain).unwrap(),
            format!("other {K2}\n10.0.0.1 {K1}\n")
        );
    }

    #[test]
    fn rejection_message_names_fingerprint_and_the_fix() {
        let r = HostKeyRejection {
            node: "node1".into(),
            address: "10.0.0.1:22".into(),
            algorithm: "ssh-ed25519".into(),
            fingerprint: K1_FP.into(),
            verdict: Verdict::Unknown {
                path: "/root/.ssh/known_hosts".into(),
            },
        };
        let m = r.to_string();
        assert!(m.contains(K1_FP), "{m}");
        assert!(m.contains("run `fleetctl trust node1`"), "{m}");
        let changed = HostKeyRejection {
            verdict: Verdict::Changed {
                path: "/kh".into(),
                line: 4,
                recorded_algorithm: "ssh-ed25519".into(),
            },
            ..r
        };
        let m = changed.to_string();
        assert!(m.contains("/kh:4") && m.contains("HOST KEY CHANGED"), "{m}");
    }
}

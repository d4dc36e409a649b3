//! Revisions (SPEC §13): every successful apply records what it put in force — the manifest
//! files, the config files they read, the digest each image ran as and a keyed hash of each
//! secret (never a value) — numbered 1, 2, 3…; `fleetctl rollback` applies one again.
//!
//! The store keeps the rows ([`crate::store::Store::record_revision`]); this module builds
//! them from an apply, says in one line what changed ([`summary`], pure), loads a revision's
//! manifests without the operator's files ([`load`]) and names the images the disk prune keeps
//! ([`kept_images`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{self, DesiredFleet, Loaded, ManifestErrors};
use crate::secrets::SecretValues;
use crate::store::{Revision, RevisionContent, Store, StoreError};

/// How many of the newest revisions keep their images on the nodes (SPEC §11, §13): a
/// rollback to any of them needs no pull, and works when the registry has moved or lost a tag.
pub const KEPT_REVISIONS: usize = 5;

/// What an apply of `loaded` put in force: `fleet` is `loaded.fleet` with its secrets read
/// (their hashes are recorded), `digests` the image digests recorded fleet-wide after it.
pub fn content_of(
    loaded: &Loaded,
    fleet: &DesiredFleet,
    digests: &BTreeMap<String, String>,
) -> RevisionContent {
    RevisionContent {
        hash: loaded.sources_hash(),
        sources: loaded.sources.clone(),
        configs: loaded.config_contents(),
        images: fleet
            .images()
            .keys()
            .map(|i| (i.to_string(), digests.get(*i).cloned().unwrap_or_default()))
            .collect(),
        secrets: secret_hashes(&fleet.secret_values),
    }
}

/// Each secret read → its keyed hash.
pub fn secret_hashes(values: &SecretValues) -> BTreeMap<String, String> {
    values
        .names()
        .filter_map(|n| Some((n.to_string(), values.get(n)?.digest.clone())))
        .collect()
}

/// A revision's manifest set, as it was applied: its manifest files and config file contents
/// come from the revision, not from disk (the operator's files may have changed since).
/// Secrets are not part of it: their current values are read by the apply.
///
/// # Errors
/// The manifests no longer validate here (a secret's `env` variable is unset, its file gone).
pub fn load(rev: &Revision) -> Result<Loaded, ManifestErrors> {
    manifest::parse_with_configs(&rev.content.sources, Some(&rev.content.configs))
}

/// Records an apply that converged as the next revision, with its one-line summary against
/// the last revision; nothing when it is what the last revision holds. `rollback_of`: the
/// revision a rollback applied again. Returns the new revision's number.
///
/// # Errors
/// [`StoreError::Fenced`] when `token` is not the current lease; store failures.
pub fn record(
    store: &Store,
    token: Option<i64>,
    actor: &str,
    content: &RevisionContent,
    fleet: &DesiredFleet,
    rollback_of: Option<i64>,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let last = match store.revisions()?.last() {
        // What the last revision holds already: no new one (the store checks again, atomically;
        // this saves loading the last revision's manifests for every no-op apply).
        Some(info)
            if info.hash == content.hash
                && info.images == content.images
                && info.secrets == content.secrets =>
        {
            return Ok(None);
        }
        Some(info) => store.revision(info.number)?,
        None => None,
    };
    let prev = last.as_ref().map(|r| (load(r).ok(), &r.content));
    let mut line = match &prev {
        Some((Some(prev_set), prev_content)) => {
            summary(Some((&prev_set.fleet, prev_content)), (fleet, content))
        }
        // The last revision does not load here any more: say what can be said.
        Some((None, _)) => "manifests changed".to_string(),
        None => summary(None, (fleet, content)),
    };
    if let Some(n) = rollback_of {
        line = format!("rollback to revision {n}: {line}");
    }
    store.record_revision(token, actor, content, &line, rollback_of, now)
}

/// What changed from `prev` to `next`, in one line: services and plug classes added (`+web`),
/// removed (`-web`) or changed (`web: image nginx:1.25 → nginx:1.27`, `api: command changed`,
/// `web: replicas 2 → 3`, `web: env, ports changed`), nodes and policies added or removed, a
/// tag that now runs as another digest, a secret whose value changed. Without `prev` (the
/// first revision): what it runs.
pub fn summary(
    prev: Option<(&DesiredFleet, &RevisionContent)>,
    next: (&DesiredFleet, &RevisionContent),
) -> String {
    let (fleet, content) = next;
    let Some((before, before_content)) = prev else {
        let services: Vec<&str> = fleet.services.keys().map(String::as_str).collect();
        let mut line = format!(
            "first revision: {} service{}",
            services.len(),
            if services.len() == 1 { "" } else { "s" }
        );
        if !services.is_empty() {
            line.push_str(&format!(" ({})", services.join(", ")));
        }
        if !fleet.plug_classes.is_empty() {
            line.push_str(&format!(", {} plug class(es)", fleet.plug_classes.len()));
        }
        return line;
    };
    let mut parts = Vec::new();
    compare(&mut parts, "", &before.services, &fleet.services, describe);
    compare(
        &mut parts,
        "class ",
        &before.plug_classes,
        &fleet.plug_classes,
        describe,
    );
    compare(&mut parts, "node ", &before.nodes, &fleet.nodes, |_, _| {
        "changed".to_string()
    });
    compare(
        &mut parts,
        "policy ",
        &before.policies,
        &fleet.policies,
        |_, _| "changed".to_string(),
    );
    if json(&before.fleet) != json(&fleet.fleet) {
        parts.push("fleet settings changed".to_string());
    }
    for (image, digest) in &content.images {
        if let Some(was) = before_content.images.get(image)
            && was != digest
            && !digest.is_empty()
        {
            parts.push(format!("{image} now runs as {}", short_digest(digest)));
        }
    }
    for (name, hash) in &content.secrets {
        if before_content.secrets.get(name).is_some_and(|h| h != hash) {
            parts.push(format!("secret {name} changed"));
        }
    }
    if parts.is_empty() {
        return if before_content.hash == content.hash {
            "no change".to_string()
        } else {
            "manifests edited (nothing they run changed)".to_string()
        };
    }
    parts.join("; ")
}

/// Objects of one kind: `+name`, `-name`, `name: what changed` (by `what`).
fn compare<T: serde::Serialize>(
    parts: &mut Vec<String>,
    prefix: &str,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
    what: impl Fn(&T, &T) -> String,
) {
    for (name, spec) in after {
        match before.get(name) {
            None => parts.push(format!("+{prefix}{name}")),
            Some(old) if json(old) != json(spec) => {
                parts.push(format!("{prefix}{name}: {}", what(old, spec)));
            }
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        parts.push(format!("-{prefix}{name}"));
    }
}

/// What changed in a service or plug class: the image and replicas with their values, other
/// fields by name.
fn describe<T: serde::Serialize>(old: &T, new: &T) -> String {
    let (serde_json::Value::Object(a), serde_json::Value::Object(b)) = (json(old), json(new))
    else {
        return "changed".to_string();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut valued = Vec::new();
    let mut named = Vec::new();
    // An autoscaled service's count is the autoscaler's (SPEC §14): the fleet recorded may
    // carry it, the earlier revision's manifests their starting count. Not an edit.
    let autoscaled = b.get("autoscale").is_some_and(|v| !v.is_null());
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x == y || (autoscaled && k == "replicas") {
            continue;
        }
        match (k.as_str(), x, y) {
            ("image" | "replicas", Some(x), Some(y)) => {
                valued.push(format!("{k} {} → {}", scalar(x), scalar(y)));
            }
            _ => named.push(k.as_str()),
        }
    }
    if !named.is_empty() {
        valued.push(format!("{} changed", named.join(", ")));
    }
    valued.join(", ")
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `sha256:` and 12 hex characters.
pub fn short_digest(digest: &str) -> &str {
    let end = digest
        .find(':')
        .map_or(digest.len(), |i| (i + 13).min(digest.len()));
    &digest[..end]
}

/// The secrets whose value changed since `recorded` (a revision's hashes), as lines for the
/// operator: a rollback applies the secrets' current values (values are never stored).
pub fn secret_changes(
    number: i64,
    recorded: &BTreeMap<String, String>,
    now: &SecretValues,
) -> Vec<String> {
    recorded
        .iter()
        .filter_map(|(name, hash)| {
            let current = now.get(name)?;
            (current.digest != *hash).then(|| {
                format!(
                    "secret {name} has changed since revision {number}; its current value is used"
                )
            })
        })
        .collect()
}

/// The images (tag → digest, `""` for none) of the newest [`KEPT_REVISIONS`] revisions: the
/// disk prune keeps them.
///
/// # Errors
/// Store failures.
pub fn kept_images(store: &Store) -> Result<Vec<(String, String)>, StoreError> {
    let all = store.revisions()?;
    Ok(all
        .iter()
        .rev()
        .take(KEPT_REVISIONS)
        .flat_map(|r| r.images.clone())
        .collect())
}

/// The refusal of a revision that does not exist: "no revision 99; revisions 1–3" (or "no
/// revisions yet").
pub fn no_such(number: i64, all: &[crate::store::RevisionInfo]) -> String {
    match (all.first(), all.last()) {
        (Some(first), Some(last)) if first.number == last.number => {
            format!(
                "no revision {number}; the only revision is {}",
                first.number
            )
        }
        (Some(first), Some(last)) => format!(
            "no revision {number}; revisions {}–{}",
            first.number, last.number
        ),
        _ => {
            format!("no revision {number}: no revisions yet (an apply that converges records one)")
        }
    }
}

/// The revision in force: the newest, when the last apply recorded (`last_applied_hash`) is
/// the one it holds — an apply that did not converge records no revision, and then none is.
pub fn in_force(
    revisions: &[crate::store::RevisionInfo],
    last_applied_hash: Option<&str>,
) -> Option<i64> {
    let last = revisions.last()?;
    (Some(last.hash.as_str()) == last_applied_hash).then_some(last.number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Source;

    const V1: &str = "\
apiVersion: fleet/v1
kind: Node
metadata: {name: n1}
spec: {address: 10.0.0.1}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: web}
spec: {image: nginx:1.25, replicas: 2, resources: {memory: 64MiB}}
---
apiVersion: fleet/v1
kind: Service
metadata: {name: api}
spec: {image: api:1, command: [serve, --port, '80'], resources: {memory: 64MiB}}
";

    fn fleet(text: &str) -> DesiredFleet {
        match manifest::parse(&[Source {
            name: "fleet.yaml".into(),
            text: text.into(),
        }]) {
            Ok(l) => l.fleet,
            Err(e) => panic!("{e}"),
        }
    }

    fn content(hash: &str, images: &[(&str, &str)]) -> RevisionContent {
        RevisionContent {
            hash: hash.into(),
            images: images
                .iter()
                .map(|(i, d)| (i.to_string(), d.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_revision_says_what_it_runs() {
        assert_eq!(
            summary(None, (&fleet(V1), &content("a", &[]))),
            "first revision: 2 services (api, web)"
        );
    }

    #[test]
    fn a_summary_names_each_change_in_one_line() {
        let v2 = V1
            .replace("nginx:1.25, replicas: 2", "nginx:1.27, replicas: 3")
            .replace("'80'", "'8080'")
            + "---
apiVersion: fleet/v1
kind: Service
metadata: {name: worker}
spec: {image: worker:1, resources: {memory: 64MiB}}
";
        let line = summary(
            Some((&fleet(V1), &content("a", &[]))),
            (&fleet(&v2), &content("b", &[])),
        );
        assert_eq!(
            line,
            "api: command changed; web: image nginx:1.25 → nginx:1.27, replicas 2 → 3; +worker"
        );
        // And back: the worker is removed.
        let back = summary(
            Some((&fleet(&v2), &content("b", &[]))),
            (&fleet(V1), &content("a", &[])),
        );
        assert!(back.ends_with("; -worker"), "{back}");
    }

    #[test]
    fn a_moved_digest_or_changed_secret_is_said_and_an_edit_that_changes_nothing_too() {
        let f = fleet(V1);
        let mut before = content("a", &[("nginx:1.25", "sha256:1111111111111111111")]);
        let mut after = content("a", &[("nginx:1.25", "sha256:2222222222222222222")]);
        before.secrets.insert("db".into(), "h1".into());
        after.secrets.insert("db".into(), "h2".into());
        assert_eq!(
            summary(Some((&f, &before)), (&f, &after)),
            "nginx:1.25 now runs as sha256:222222222222; secret db changed"
        );
        let commented = fleet(&format!("# a comment\n{V1}"));
        assert_eq!(
            summary(
                Some((&f, &content("a", &[]))),
                (&commented, &content("b", &[]))
            ),
            "manifests edited (nothing they run changed)"
        );
    }

    #[test]
    fn secret_changes_name_each_secret_whose_hash_differs() {
        use crate::container::SecretValue;
        let now = SecretValues::from_values(
            b"key",
            [
                ("a".to_string(), SecretValue::new(b"same".to_vec())),
                ("b".to_string(), SecretValue::new(b"new".to_vec())),
            ],
        );
        let same = now.get("a").unwrap().digest.clone();
        let recorded: BTreeMap<String, String> =
            [("a".into(), same), ("b".into(), "old".into())].into();
        assert_eq!(
            secret_changes(2, &recorded, &now),
            ["secret b has changed since revision 2; its current value is used"]
        );
    }

    #[test]
    fn the_images_of_the_newest_five_revisions_are_kept() {
        let store = Store::in_memory().unwrap();
        for i in 1..=7 {
            let c = content(&format!("h{i}"), &[(&format!("app:{i}"), "sha256:d")]);
            store.record_revision(None, "a", &c, "", None, i).unwrap();
        }
        let kept: Vec<String> = kept_images(&store)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(kept, ["app:7", "app:6", "app:5", "app:4", "app:3"]);
    }

    #[test]
    fn the_revision_in_force_is_the_newest_when_the_last_apply_recorded_it() {
        let info = |number, hash: &str| crate::store::RevisionInfo {
            number,
            at_ms: 0,
            actor: String::new(),
            hash: hash.into(),
            images: BTreeMap::new(),
            secrets: BTreeMap::new(),
            summary: String::new(),
            rollback_of: None,
        };
        let revs = [info(1, "a"), info(2, "b")];
        assert_eq!(in_force(&revs, Some("b")), Some(2));
        assert_eq!(in_force(&revs, Some("c")), None, "the last apply failed");
        assert_eq!(in_force(&[], Some("c")), None);
    }
}

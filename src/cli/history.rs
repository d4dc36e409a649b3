//! `fleetctl history` and `fleetctl rollback [REVISION]` (SPEC §13): the revisions recorded by
//! converged applies, and applying one of them again.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::common::{emit, print_data, resolve_manifests};
use super::{GlobalOpts, Output};
use crate::revisions;
use crate::store::{RevisionInfo, Store, format_ms};

/// One revision as `history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionView {
    /// Its number.
    pub revision: i64,
    /// When its apply converged, RFC 3339 (UTC, seconds).
    pub time: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Who applied it.
    pub actor: String,
    /// What changed from the revision before it.
    pub summary: String,
    /// The revision it rolled back to, when it was a rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<i64>,
    /// Whether it is what the fleet runs now (the last apply recorded it).
    pub in_force: bool,
    /// The digest each image ran as (`""`: by its tag).
    pub images: std::collections::BTreeMap<String, String>,
}

/// The state store a revision command works on: the manifests' fleet's when given, else the
/// only fleet's; `None` when there is no state.
fn open(path: Option<&Path>, global: &GlobalOpts) -> anyhow::Result<Option<Store>> {
    if let Some(p) = path {
        // The manifests only name the fleet (and so its state file): a rollback is often
        // wanted because they are broken, so say how to do without them.
        let loaded = resolve_manifests(Some(p), global).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\nthese manifests name the fleet whose revisions to use; without valid \
                 ones, give its state file (--state PATH) instead"
            )
        })?;
        let state = super::common::state_path(global, &loaded.fleet.fleet.name)?;
        if !state.exists() {
            return Ok(None);
        }
        let store = Store::open(&state)?;
        store.bind_fleet(&loaded.fleet.fleet.name)?;
        return Ok(Some(store));
    }
    Ok(match super::common::any_state_path(global)? {
        Some(state) if state.exists() => Some(Store::open(&state)?),
        _ => None,
    })
}

/// The revisions and the one in force.
fn read(store: &Store) -> anyhow::Result<(Vec<RevisionInfo>, Option<i64>)> {
    let all = store.revisions()?;
    let last = store.last_applied()?.map(|(_, _, hash)| hash);
    let in_force = revisions::in_force(&all, last.as_deref());
    Ok((all, in_force))
}

/// Runs `history`: every revision, oldest first. Exit 0.
///
/// # Errors
/// Store failures; invalid manifests given.
pub fn history(path: Option<&Path>, output: Output, global: &GlobalOpts) -> anyhow::Result<u8> {
    let (all, in_force) = match open(path, global)? {
        Some(store) => read(&store)?,
        None => (Vec::new(), None),
    };
    let rows: Vec<RevisionView> = all
        .into_iter()
        .map(|r| RevisionView {
            revision: r.number,
            time: format_ms(r.at_ms),
            at_ms: r.at_ms,
            actor: r.actor,
            summary: r.summary,
            rollback_of: r.rollback_of,
            in_force: Some(r.number) == in_force,
            images: r.images,
        })
        .collect();
    match output {
        Output::Json | Output::Yaml => print_data(output, &rows)?,
        Output::Table | Output::Wide if rows.is_empty() => {
            emit("No revisions yet: an apply that converges records one.\n")?
        }
        Output::Table | Output::Wide => emit(&table_text(&rows))?,
    }
    Ok(0)
}

/// The table of `history`: the revision in force is marked.
pub fn table_text(rows: &[RevisionView]) -> String {
    let mut t = super::capacity::table(&["REVISION", "TIME", "ACTOR", "SUMMARY"]);
    for r in rows {
        t.add_row(vec![
            if r.in_force {
                format!("{} (in force)", r.revision)
            } else {
                r.revision.to_string()
            },
            r.time.clone(),
            r.actor.clone(),
            r.summary.clone(),
        ]);
    }
    super::capacity::table_text(&t)
}

/// What `rollback` applies when given no revision: the one before the last when the last is
/// in force; the last when it is not (the last apply did not converge, so the fleet runs
/// something that is no revision: back to the last good one).
///
/// # Errors
/// No revision, or only the one in force (the message says so).
pub fn default_target(all: &[RevisionInfo], in_force: Option<i64>) -> Result<i64, String> {
    match all {
        [] => Err("no revisions yet: an apply that converges records one".into()),
        [.., last] if in_force != Some(last.number) => Ok(last.number),
        [only] => Err(format!(
            "nothing to roll back to: revision {} is the only one",
            only.number
        )),
        [.., before, _] => Ok(before.number),
    }
}

/// The options of `rollback`.
#[derive(Debug, Clone)]
pub struct RollbackArgs<'a> {
    /// Manifests naming the fleet (its state file); else the only fleet's state.
    pub path: Option<&'a Path>,
    /// The revision to apply again (default: the one before the last).
    pub revision: Option<i64>,
    /// Apply without asking.
    pub yes: bool,
    /// As `apply --lock-timeout`.
    pub lock_timeout: Duration,
    /// As `apply --timeout`.
    pub timeout: Duration,
    /// Output format of the outcome.
    pub output: Output,
}

/// Runs `rollback`: shows the plan of applying the revision again, asks (unless `--yes`), then
/// applies it as `apply` would (handed to a running controller the same way). Exit 0 when it
/// converged or the revision is already in force; 1 for an unknown revision, a refusal, or an
/// apply that did not converge — nothing is changed before the confirmation.
///
/// # Errors
/// Store failures; a secret that cannot be read.
pub fn rollback(args: &RollbackArgs<'_>, global: &GlobalOpts) -> anyhow::Result<u8> {
    let Some(store) = open(args.path, global)? else {
        eprintln!(
            "error: no revisions yet (no state for this fleet): an apply that converges records one"
        );
        return Ok(1);
    };
    let (all, in_force) = read(&store)?;
    let number = match args.revision {
        Some(n) => n,
        None => match default_target(&all, in_force) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        },
    };
    if !all.iter().any(|r| r.number == number) {
        eprintln!("error: {}", revisions::no_such(number, &all));
        return Ok(1);
    }
    if in_force == Some(number) {
        let _ = emit(&format!(
            "Revision {number} is already in force: nothing to do.\n"
        ));
        return Ok(0);
    }
    let Some(rev) = store.revision(number)? else {
        eprintln!("error: {}", revisions::no_such(number, &all));
        return Ok(1);
    };
    let loaded = match revisions::load(&rev) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: revision {number} no longer validates here:\n{e}");
            return Ok(1);
        }
    };
    store.bind_fleet(&loaded.fleet.fleet.name)?;
    let fleet = super::common::with_secrets(&loaded.fleet, &store)?;
    let json = matches!(args.output, Output::Json | Output::Yaml);
    let mut notes = revisions::secret_changes(number, &rev.content.secrets, &fleet.secret_values);
    let recorded = store.image_digests()?;
    for (image, digest) in rev.content.images.iter().filter(|(_, d)| !d.is_empty()) {
        if let Some(now) = recorded.get(image).filter(|now| *now != digest) {
            notes.push(format!(
                "image {image}: revision {number} ran it as {}; it runs as that again (recorded now: {})",
                revisions::short_digest(digest),
                revisions::short_digest(now)
            ));
        }
    }
    // Without a terminal to ask on, refuse before reaching any node.
    if !args.yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "error: rollback asks before it changes anything, and stdin is not a terminal: \
             pass --yes to roll back to revision {number} without asking; nothing was changed"
        );
        return Ok(1);
    }
    // The plan, computed as `plan` does (nothing changes), over the revision's manifests.
    let rt = super::common::runtime()?;
    let plan = rt.block_on(async {
        let runtimes = super::common::connect_all(&fleet);
        let cx = crate::reconcile::PassContext {
            refresh: crate::images::Refresh::Recorded,
            ..crate::reconcile::PassContext::new(&fleet, &runtimes, &store)
        };
        crate::reconcile::plan_only(&cx).await.map(|(_, p)| p)
    })?;
    drop(rt);
    if !json && !super::common::quiet() {
        let mut text = format!(
            "Rollback to revision {number} ({}, by {}): {}\n",
            format_ms(rev.info.at_ms),
            rev.info.actor,
            rev.info.summary
        );
        for n in &notes {
            text.push_str(&format!("note: {n}\n"));
        }
        text.push_str(&super::render::plan_text(
            &plan,
            &fleet.nodes.keys().cloned().collect::<Vec<_>>(),
        ));
        emit(&text)?;
    }
    if !args.yes && !confirm(number)? {
        return Ok(1);
    }
    let rollback_of = super::apply::RollbackOf {
        revision: number,
        images: rev.content.images.clone(),
    };
    drop(store);
    let code = super::apply::apply_loaded(
        &loaded,
        args.lock_timeout,
        args.timeout,
        args.output,
        crate::images::Refresh::Recorded,
        Some(&rollback_of),
        global,
    )?;
    if code == 0 && !super::common::quiet() {
        eprintln!(
            "note: the fleet runs revision {number}'s manifests now, not your manifest files: \
             `fleetctl plan` of them shows the difference; apply them to go forward again"
        );
    }
    Ok(code)
}

/// Asks on the terminal whether to roll back.
fn confirm(number: i64) -> anyhow::Result<bool> {
    use std::io::{BufRead, Write};
    eprint!("Roll back to revision {number}? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        return Ok(true);
    }
    eprintln!("Nothing was changed.");
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(number: i64) -> RevisionInfo {
        RevisionInfo {
            number,
            at_ms: 0,
            actor: String::new(),
            hash: String::new(),
            images: Default::default(),
            secrets: Default::default(),
            summary: String::new(),
            rollback_of: None,
        }
    }

    #[test]
    fn the_default_target_is_the_revision_before_the_one_in_force_else_the_last() {
        assert!(
            default_target(&[], None)
                .unwrap_err()
                .starts_with("no revisions yet")
        );
        assert_eq!(
            default_target(&[info(1)], Some(1)).unwrap_err(),
            "nothing to roll back to: revision 1 is the only one"
        );
        assert_eq!(default_target(&[info(1), info(2), info(3)], Some(3)), Ok(2));
        // The last apply did not converge: back to the last good revision.
        assert_eq!(default_target(&[info(1)], None), Ok(1));
        assert_eq!(default_target(&[info(1), info(2)], None), Ok(2));
    }

    #[test]
    fn an_unknown_revision_names_the_ones_there_are() {
        assert_eq!(
            revisions::no_such(99, &[info(1), info(2), info(3)]),
            "no revision 99; revisions 1–3"
        );
        assert_eq!(
            revisions::no_such(2, &[info(1)]),
            "no revision 2; the only revision is 1"
        );
    }
}

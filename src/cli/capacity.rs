//! `fleetctl capacity [PATH]`: the capacity report as a table or JSON.

use std::path::Path;

use comfy_table::{Table, presets};

use super::common::{emit, print_json, print_yaml, resolve_manifests};
use super::{GlobalOpts, Output};
use crate::capacity::{CapacityReport, report};
use crate::manifest::{Bytes, MilliCpus};

/// When the report observes the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Source {
    /// Live when this fleet has been applied with the current state store, else from manifests.
    #[default]
    Auto,
    /// Always observe the nodes (placements, plugs, measured memory).
    Live,
    /// Never contact the nodes: manifests (and recorded plugs) only.
    Offline,
}

/// Prints the capacity report; exit 0.
///
/// # Errors
/// Invalid manifests, or none to work on.
pub fn run(
    path: Option<&Path>,
    source: Source,
    output: Output,
    global: &GlobalOpts,
) -> anyhow::Result<u8> {
    let loaded = resolve_manifests(path, global)?;
    let fleet = &loaded.fleet;
    let store = super::common::open_store_readonly(global, &fleet.fleet.name)?;
    let live = match source {
        Source::Live => true,
        Source::Offline => false,
        Source::Auto => store.last_applied()?.is_some(),
    };
    let r = if live {
        live_report(fleet, &store)?
    } else {
        report(
            fleet,
            None,
            &crate::capacity::manifest_views(fleet, &store.node_conditions()?),
        )
    };
    match output {
        Output::Json => print_json(&r)?,
        Output::Yaml => print_yaml(&r)?,
        Output::Table | Output::Wide => emit(&render(&r, output == Output::Wide))?,
    }
    Ok(0)
}

/// Observes every node and builds the report from what runs: replicas where they are, plugs as
/// recorded, measured memory of everything running; free plug slots on the scheduler's views of
/// the same observation, built as `plug create` builds them; then the disk of every node that
/// answered ([`crate::disk::measure_all`]).
fn live_report(
    fleet: &crate::manifest::DesiredFleet,
    store: &crate::store::Store,
) -> anyhow::Result<CapacityReport> {
    let rt = super::common::runtime()?;
    let (observed, disks) = rt.block_on(async {
        let runtimes = super::common::connect_all(fleet);
        // Every node's measured memory: the table shows it.
        let observed = crate::plugs::observe_with_memory(fleet, &runtimes).await;
        let disks = crate::disk::measure_all(fleet, &runtimes, &observed).await;
        (observed, disks)
    });
    let mut r = crate::capacity::live(fleet, store, &observed)?;
    r.set_disks(&disks, fleet.fleet.disk_high_watermark);
    Ok(r)
}

/// A table (kubectl-like: no borders).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    t
}

/// A table's text, every line without comfy-table's outer padding (one leading space, trailing
/// blanks) and ending in a newline: every table fleetctl prints starts at column 1.
pub fn table_text(t: &Table) -> String {
    let mut out = String::new();
    for line in t.to_string().lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

fn opt_bytes(b: Option<Bytes>) -> String {
    b.map_or("?".to_string(), |b| b.to_string())
}

fn opt_cpus(c: Option<MilliCpus>) -> String {
    c.map_or("?".to_string(), |c| c.to_string())
}

fn signed_bytes(v: i64) -> String {
    if v < 0 {
        format!("-{}", Bytes(v.unsigned_abs()))
    } else {
        Bytes(v as u64).to_string()
    }
}

fn signed_cpus(v: i64) -> String {
    if v < 0 {
        format!("-{}", MilliCpus(v.unsigned_abs()))
    } else {
        MilliCpus(v as u64).to_string()
    }
}

/// The DISK cell of `n`: live, the share in use as `get nodes` shows it (`-` for a node that
/// did not answer); from manifests, the declared `capacity.disk` (`-` without one).
fn disk_text(observed: bool, n: &crate::capacity::NodeCapacity) -> String {
    if observed {
        n.disk
            .as_ref()
            .map_or("-".into(), crate::disk::DiskStatus::text)
    } else {
        n.capacity_disk
            .map_or("-".into(), |b| format!("{b} (declared)"))
    }
}

/// Renders the report as text.
pub fn render(r: &CapacityReport, wide: bool) -> String {
    let mut out = String::new();
    let source = if r.observed {
        "live: placements, plugs, measured memory and disk as observed on the nodes"
    } else {
        "from manifests: services count where their placement forces them; no plugs yet"
    };
    out.push_str(&format!("Fleet {} ({source})\n\n", r.fleet));
    for (node, why) in &r.unreachable {
        out.push_str(&format!(
            "node {node} UNREACHABLE, shown without what runs there: {why}\n"
        ));
    }

    let mut header = vec![
        "NODE",
        "TIER",
        "CAPACITY",
        "RESERVED",
        "ALLOCATABLE",
        "LIMITS",
        "RESERVATIONS",
        "HEADROOM",
        "PLUGS",
    ];
    if r.observed {
        header.push("MEASURED");
    }
    // Live: the disk as measured; from manifests: the declared capacity.disk, if any node has one.
    let disk_column = r.observed || r.nodes.iter().any(|n| n.capacity_disk.is_some());
    if disk_column {
        header.push("DISK");
    }
    let mut t = table(&header);
    for n in &r.nodes {
        let mut row = vec![
            n.node.clone(),
            n.tier.clone(),
            format!(
                "{} CPU, {}",
                opt_cpus(n.capacity_cpus),
                opt_bytes(n.capacity_memory)
            ),
            format!("{} CPU, {}", n.reserved_cpus, n.reserved_memory),
            format!(
                "{} CPU, {}",
                opt_cpus(n.allocatable_cpus),
                opt_bytes(n.allocatable_memory)
            ),
            format!("{} CPU, {}", n.cpu_limits, n.memory_limits),
            n.memory_reservations.to_string(),
            format!(
                "{} CPU, {}",
                n.headroom_millicpus.map_or("?".into(), signed_cpus),
                n.headroom_memory.map_or("?".into(), signed_bytes)
            ),
            format!("{} ({})", n.plugs, n.plug_memory),
        ];
        if r.observed {
            row.push(n.measured_memory.map_or("?".into(), |m| m.to_string()));
        }
        if disk_column {
            row.push(disk_text(r.observed, n));
        }
        t.add_row(row);
    }
    out.push_str(&table_text(&t));
    for note in r
        .nodes
        .iter()
        .filter_map(|n| n.disk.as_ref()?.unknown_note(&n.node))
    {
        out.push_str(&note);
        out.push('\n');
    }

    if !r.classes.is_empty() {
        out.push_str("\nPlug slots free (more instances that fit, and what bounds them):\n");
        let mut header = vec![
            "CLASS".to_string(),
            "POLICY".into(),
            "MEMORY".into(),
            "CAP/NODE".into(),
            "WATERMARK".into(),
        ];
        header.extend(r.nodes.iter().map(|n| n.node.to_uppercase()));
        header.push("TOTAL".into());
        let mut t = Table::new();
        t.load_style(presets::NOTHING);
        t.set_header(header);
        for c in &r.classes {
            let mut row = vec![
                c.class.clone(),
                c.policy.clone(),
                c.memory.to_string(),
                c.max_per_node.map_or("-".into(), |m| m.to_string()),
                c.watermark.to_string(),
            ];
            for n in &r.nodes {
                let s = n.plug_slots.iter().find(|s| s.class == c.class);
                row.push(s.map_or("-".into(), |s| {
                    if wide || s.free == 0 {
                        format!("{} ({})", s.free, s.limited_by)
                    } else {
                        s.free.to_string()
                    }
                }));
            }
            row.push(c.free.to_string());
            t.add_row(row);
        }
        out.push_str(&table_text(&t));
    }

    let placed: Vec<_> = r.nodes.iter().filter(|n| !n.services.is_empty()).collect();
    if !placed.is_empty() {
        out.push_str("\nServices placed per node:\n");
        for n in placed {
            let list: Vec<String> = n
                .services
                .iter()
                .map(|s| {
                    if s.replicas > 1 {
                        format!("{}×{} {}", s.name, s.replicas, s.memory)
                    } else {
                        format!("{} {}", s.name, s.memory)
                    }
                })
                .collect();
            out.push_str(&format!(
                "  {} ({} services, {}): {}\n",
                n.node,
                n.services.len(),
                Bytes(n.services.iter().map(|s| s.memory.0).sum()),
                list.join(", ")
            ));
        }
    }
    if !r.unplaced.is_empty() {
        out.push_str("\nUnplaced (not counted above):\n");
        for u in &r.unplaced {
            out.push_str(&format!(
                "  {} ×{} ({} each): {}\n",
                u.name, u.replicas, u.memory, u.why
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::capacity::{NodeObservation, manifest_views};
    use crate::container::{EngineDisk, Filesystem};
    use crate::disk::NodeDisk;
    use crate::manifest::{Percent, Source, parse};

    const GIB: u64 = 1 << 30;

    fn fleet(disk: &str) -> crate::manifest::DesiredFleet {
        let text = format!(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node1}}\n\
             spec: {{capacity: {{cpus: 4, memory: 8GiB{disk}}}}}\n---\n\
             apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node2}}\n\
             spec: {{capacity: {{cpus: 2, memory: 4GiB}}}}\n"
        );
        parse(&[Source {
            name: "t.yaml".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
    }

    /// The DISK cell of each node row, by the header's column.
    fn disk_cells(text: &str) -> Option<Vec<String>> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with("NODE"));
        let col = lines.next()?.find("DISK")?;
        Some(
            lines
                .take_while(|l| l.starts_with("node") && !l.contains(": "))
                .map(|l| l[col..].split("  ").next().unwrap_or("").trim().to_string())
                .collect(),
        )
    }

    #[test]
    fn offline_the_disk_column_is_the_declared_capacity_or_absent() {
        let f = fleet("");
        let r = crate::capacity::report(&f, None, &manifest_views(&f, &BTreeMap::new()));
        assert_eq!(disk_cells(&render(&r, false)), None);
        let f = fleet(", disk: 100GiB");
        let r = crate::capacity::report(&f, None, &manifest_views(&f, &BTreeMap::new()));
        let text = render(&r, false);
        println!("{text}");
        assert_eq!(
            disk_cells(&text).unwrap(),
            ["100GiB (declared)", "-"],
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(&r).unwrap()["nodes"][0]["capacity_disk"],
            100 * GIB
        );
    }

    #[test]
    fn live_the_disk_column_is_the_measured_share_as_get_nodes_says_it() {
        let f = fleet("");
        let obs: BTreeMap<String, NodeObservation> = f
            .nodes
            .keys()
            .map(|n| (n.clone(), NodeObservation::default()))
            .collect();
        let mut r = crate::capacity::report(&f, Some(&obs), &manifest_views(&f, &BTreeMap::new()));
        let full = NodeDisk {
            data_root: "/var/lib/docker".into(),
            filesystem: Some(Filesystem {
                size: 30 * GIB,
                used: 255 * GIB / 10,
                available: 45 * GIB / 10,
            }),
            engine: EngineDisk::default(),
            ..NodeDisk::default()
        };
        let measured = BTreeMap::from([
            ("node1".to_string(), Ok(full)),
            (
                "node2".to_string(),
                Err("system df: engine busy".to_string()),
            ),
        ]);
        r.set_disks(&measured, Some(Percent(8000)));
        let text = render(&r, false);
        println!("{text}");
        assert_eq!(
            disk_cells(&text).unwrap(),
            ["85% of 30GiB (> 80%)", "?"],
            "{text}"
        );
        assert!(
            text.contains("node2: disk unknown: system df: engine busy\n"),
            "{text}"
        );
        r.set_disks(&BTreeMap::new(), None);
        assert_eq!(disk_cells(&render(&r, false)).unwrap(), ["-", "-"]);
    }
}

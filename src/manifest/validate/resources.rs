//! Resources (memory, reservation, CPUs, shares, cpuset) shared by services and plug classes,
//! and whether one instance fits on any allowed node.

use std::collections::BTreeMap;

use super::Report;
use crate::manifest::quantity::{Bytes, Percent};
use crate::manifest::raw::*;
use crate::manifest::spec::*;

pub(super) fn resolve_resources(
    r: &mut Report,
    file: &str,
    path: &str,
    raw: &Option<RawResources>,
    nodes: &BTreeMap<String, NodeSpec>,
) -> Option<ResourceSpec> {
    let raw = raw.as_ref()?;
    let memory = raw.memory.as_ref()?;
    if memory.value.0 < 6 * 1024 * 1024 {
        r.err(
            file,
            memory.pos,
            &format!("{path}.memory"),
            format!("memory {} is below Docker's minimum of 6MiB", memory.value),
        );
    }
    if let Some(res) = &raw.memory_reservation
        && res.value > memory.value
    {
        r.err(
            file,
            res.pos,
            &format!("{path}.memoryReservation"),
            format!(
                "memoryReservation {} is above the memory limit {}",
                res.value, memory.value
            ),
        );
    }
    if let Some(c) = &raw.cpus
        && c.value.0 == 0
    {
        r.err(
            file,
            c.pos,
            &format!("{path}.cpus"),
            "cpus must be more than 0",
        );
    }
    if let Some(c) = &raw.cpu_shares
        && c.value < 2
    {
        r.err(
            file,
            c.pos,
            &format!("{path}.cpuShares"),
            "cpuShares must be at least 2",
        );
    }
    if let Some(set) = &raw.cpuset {
        match parse_cpuset(&set.value.0) {
            Err(m) => r.err(file, set.pos, &format!("{path}.cpuset"), m),
            Ok(max) => {
                let fits_somewhere = nodes.is_empty()
                    || nodes.values().any(|n| {
                        n.capacity_cpus
                            .is_none_or(|c| u64::from(max) * 1000 < c.0.max(1000))
                    });
                if !fits_somewhere {
                    r.err(
                        file,
                        set.pos,
                        &format!("{path}.cpuset"),
                        format!(
                            "cpuset {:?} names CPU {max}, which no node has",
                            set.value.0
                        ),
                    );
                }
            }
        }
    }
    Some(ResourceSpec {
        memory: memory.value,
        memory_reservation: raw.memory_reservation.as_ref().map(|m| m.value),
        cpus: raw.cpus.as_ref().map(|c| c.value),
        cpu_shares: raw.cpu_shares.as_ref().map(|c| c.value),
        cpuset: raw.cpuset.as_ref().map(|c| c.value.0.clone()),
    })
}

/// Parses a cpuset (`0-3`, `0,2`, `1-2,5`); returns the highest CPU named.
pub(super) fn parse_cpuset(s: &str) -> Result<u32, String> {
    let bad = || format!("invalid cpuset {s:?}: use e.g. \"0-3\", \"0,2\" or \"1-2,5\"");
    let mut max = 0;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
        max = max.max(b);
    }
    Ok(max)
}

/// Records an error when an instance of these resources fits on none of `candidates` (only
/// nodes with a declared capacity are judged; a node read from its engine might fit).
pub(super) fn check_fits(
    r: &mut Report,
    file: &str,
    raw: &RawResources,
    res: &ResourceSpec,
    candidates: &[&NodeSpec],
    watermark: Percent,
    what: &str,
) {
    if candidates.is_empty() || candidates.iter().any(|n| n.capacity_memory.is_none()) {
        return;
    }
    let best = candidates
        .iter()
        .map(|n| (watermark.of(n.allocatable_memory().map_or(0, |b| b.0)), n))
        .max_by_key(|(m, _)| *m);
    if let (Some((room, node)), Some(pos)) = (best, raw.memory.as_ref().map(|m| m.pos))
        && res.memory.0 > room
    {
        let under = if watermark == Percent::FULL {
            String::new()
        } else {
            format!(" under the {watermark} watermark")
        };
        r.err(
            file,
            pos,
            "spec.resources.memory",
            format!(
                "a {what} needs {} but no allowed node has that much allocatable memory{under} (largest: {} on {})",
                res.memory,
                Bytes(room),
                node.name
            ),
        );
    }
    if let (Some(cpus), Some(c)) = (res.cpus, raw.cpus.as_ref())
        && candidates.iter().all(|n| n.capacity_cpus.is_some())
        && let Some(max) = candidates.iter().filter_map(|n| n.capacity_cpus).max()
        && cpus > max
    {
        r.err(
            file,
            c.pos,
            "spec.resources.cpus",
            format!("a {what} needs {cpus} CPUs but no allowed node has more than {max}"),
        );
    }
}

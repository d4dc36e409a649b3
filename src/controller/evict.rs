//! Idle and memory-pressure decisions (pure): which plugs to stop, and why.
//!
//! - A plug idle (no activity) for its class's `idleTimeout` is stopped (state `stopped`).
//! - A node whose measured memory passes the watermark of its allocatable memory has its most
//!   idle plugs stopped first (state `evicted`) until it is under — only plugs whose class's
//!   policy says `evictIdleOnPressure: true`, each against its own policy's watermark.
//!
//! The planner then stops their containers (a plug whose state does not want running is
//! stopped); activity (`plug touch`, the API) starts them again. Time and measurements are
//! passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::manifest::{Bytes, DesiredFleet};
use crate::store::{PlugRecord, PlugState};

/// One plug to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stop {
    /// Plug id.
    pub id: String,
    /// Its node.
    pub node: String,
    /// `stopped` (idle) or `evicted` (pressure).
    pub state: PlugState,
    /// Why, in words.
    pub reason: String,
}

fn fmt_dur(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Plugs idle for their class's `idleTimeout` or longer (running or pending ones only; a class
/// without a timeout, or with `0`, never idles out).
pub fn idle_stops(fleet: &DesiredFleet, plugs: &[PlugRecord], now: i64) -> Vec<Stop> {
    plugs
        .iter()
        .filter(|p| p.state.wants_running())
        .filter_map(|p| {
            let timeout = fleet.plug_classes.get(&p.class)?.idle_timeout?;
            let idle = now - p.last_activity_ms;
            (idle >= timeout.as_millis() as i64).then(|| Stop {
                id: p.id.clone(),
                node: p.node.clone(),
                state: PlugState::Stopped,
                reason: format!(
                    "idle for {} (idleTimeout {})",
                    fmt_dur(idle),
                    humantime::format_duration(timeout)
                ),
            })
        })
        .collect()
}

/// When the next running plug reaches its idle timeout (ms), if any does.
pub fn next_idle_expiry(fleet: &DesiredFleet, plugs: &[PlugRecord]) -> Option<i64> {
    plugs
        .iter()
        .filter(|p| p.state.wants_running())
        .filter_map(|p| {
            let timeout = fleet.plug_classes.get(&p.class)?.idle_timeout?;
            Some(p.last_activity_ms + timeout.as_millis() as i64)
        })
        .min()
}

/// Memory of one node as measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMemory {
    /// Node.
    pub node: String,
    /// Allocatable memory (capacity − reserved), bytes.
    pub allocatable: u64,
    /// Measured use of every running container, bytes.
    pub used: u64,
}

/// The lowest watermark (bytes) any evictable plug on `node` is held to: above it, the node may
/// need evictions and per-plug use is worth measuring.
pub fn pressure_threshold(
    fleet: &DesiredFleet,
    plugs: &[PlugRecord],
    node: &NodeMemory,
) -> Option<u64> {
    plugs
        .iter()
        .filter(|p| p.node == node.node && p.state == PlugState::Running)
        .filter_map(|p| {
            let class = fleet.plug_classes.get(&p.class)?;
            let policy = fleet.policy_for(class);
            policy
                .evict_idle_on_pressure
                .then(|| policy.memory_high_watermark.of(node.allocatable))
        })
        .min()
}

/// Plugs to evict on nodes above their watermark, most idle first (oldest last activity; ties
/// by id), until each node is under. `usage` is each plug's measured memory by id; a plug
/// without a measurement counts with its class's limit (an upper bound, so the next resync
/// evicts more if that was too hopeful).
pub fn pressure_evictions(
    fleet: &DesiredFleet,
    plugs: &[PlugRecord],
    nodes: &[NodeMemory],
    usage: &BTreeMap<String, u64>,
) -> Vec<Stop> {
    let mut out = Vec::new();
    for node in nodes {
        let mut candidates: Vec<&PlugRecord> = plugs
            .iter()
            .filter(|p| p.node == node.node && p.state == PlugState::Running)
            .collect();
        candidates.sort_by(|a, b| {
            a.last_activity_ms
                .cmp(&b.last_activity_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut used = node.used;
        for p in candidates {
            let Some(class) = fleet.plug_classes.get(&p.class) else {
                continue;
            };
            let policy = fleet.policy_for(class);
            let allowed = policy.memory_high_watermark.of(node.allocatable);
            if !policy.evict_idle_on_pressure || used <= allowed {
                continue;
            }
            let freed = usage
                .get(&p.id)
                .copied()
                .unwrap_or(class.resources.memory.0);
            out.push(Stop {
                id: p.id.clone(),
                node: node.node.clone(),
                state: PlugState::Evicted,
                reason: format!(
                    "memory pressure on {}: {} used > {} allowed ({} of {}); most idle plug",
                    node.node,
                    Bytes(used),
                    Bytes(allowed),
                    policy.memory_high_watermark,
                    Bytes(node.allocatable)
                ),
            });
            used = used.saturating_sub(freed);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Source, parse};

    fn fleet(evict: bool, idle: &str) -> DesiredFleet {
        parse(&[Source {
            name: "f.yaml".into(),
            text: format!(
                "apiVersion: fleet/v1
kind: Node
metadata: {{name: node1}}
spec: {{capacity: {{memory: 4GiB}}}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {{name: agent}}
spec: {{image: p, resources: {{memory: 512MiB}}, port: 8080, hostPorts: 51000-51099, idleTimeout: {idle}}}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {{name: default}}
spec: {{memoryHighWatermark: 50%, evictIdleOnPressure: {evict}}}
"
            ),
        }])
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet
    }

    fn plug(id: &str, last_activity_ms: i64, state: PlugState) -> PlugRecord {
        PlugRecord {
            id: id.into(),
            class: "agent".into(),
            owner: "o".into(),
            node: "node1".into(),
            host_port: 51000,
            state,
            created_ms: 0,
            last_activity_ms,
            message: None,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn eviction_picks_the_most_idle_plugs_first_until_the_node_is_under() {
        let f = fleet(true, "0");
        let plugs = [
            plug("recent", 9_000, PlugState::Running),
            plug("oldest", 1_000, PlugState::Running),
            plug("middle", 5_000, PlugState::Running),
            plug("stopped", 0, PlugState::Stopped),
        ];
        // 4 GiB allocatable, 50% watermark = 2 GiB; 2.8 GiB used; each plug uses 0.5 GiB.
        let node = NodeMemory {
            node: "node1".into(),
            allocatable: 4 * GIB,
            used: 2 * GIB + 800 * (1 << 20),
        };
        let usage = plugs.iter().map(|p| (p.id.clone(), GIB / 2)).collect();
        let stops = pressure_evictions(&f, &plugs, &[node], &usage);
        let ids: Vec<&str> = stops.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["oldest", "middle"],
            "two are needed to get under 2 GiB"
        );
        assert!(stops.iter().all(|s| s.state == PlugState::Evicted));
        assert!(
            stops[0]
                .reason
                .contains("2.8GiB used > 2GiB allowed (50% of 4GiB)"),
            "{}",
            stops[0].reason
        );
    }

    #[test]
    fn no_eviction_under_the_watermark_or_when_the_policy_says_no() {
        let plugs = [plug("a", 0, PlugState::Running)];
        let under = NodeMemory {
            node: "node1".into(),
            allocatable: 4 * GIB,
            used: GIB,
        };
        let over = NodeMemory {
            used: 3 * GIB,
            ..under.clone()
        };
        let none = BTreeMap::new();
        assert!(pressure_evictions(&fleet(true, "0"), &plugs, &[under], &none).is_empty());
        assert!(
            pressure_evictions(
                &fleet(false, "0"),
                &plugs,
                std::slice::from_ref(&over),
                &none
            )
            .is_empty()
        );
        // Without a measurement the class limit is assumed freed.
        assert_eq!(
            pressure_evictions(&fleet(true, "0"), &plugs, &[over], &none).len(),
            1
        );
    }

    #[test]
    fn plugs_idle_past_their_timeout_are_stopped() {
        let f = fleet(false, "30m");
        let min = 60_000;
        let plugs = [
            plug("idle", 0, PlugState::Running),
            plug("busy", 10 * min, PlugState::Running),
            plug("already", 0, PlugState::Evicted),
        ];
        let stops = idle_stops(&f, &plugs, 31 * min);
        assert_eq!(stops.len(), 1);
        assert_eq!(stops[0].id, "idle");
        assert_eq!(stops[0].state, PlugState::Stopped);
        assert_eq!(stops[0].reason, "idle for 31m (idleTimeout 30m)");
        assert_eq!(next_idle_expiry(&f, &plugs), Some(30 * min));
        assert!(idle_stops(&fleet(false, "0"), &plugs, i64::MAX / 2).is_empty());
    }
}

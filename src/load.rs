//! Load-driven decisions (SPEC §14), pure over windows of measurements: how many replicas an
//! autoscaled service should run, and whether a node is too hot for new plugs.
//!
//! The controller samples CPU and memory beside its loop and feeds each object's [`Window`];
//! the functions here only read windows, the spec and the clock, so they are tested with
//! made-up samples and paused time.
//!
//! **Sustained** means: the window has a measurement at or before `now − for` and every
//! measurement from that one to the newest satisfies the condition, with no gap between two of
//! them longer than the window's `max_gap` and the newest no older than `max_gap`. A value is
//! taken to hold from one measurement to the next, so this says "it has been so for the
//! whole of `for`". A controller that just started (or lost its measurements) therefore waits
//! a full `for` before acting.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::manifest::quantity::{Percent, format_duration};
use crate::manifest::spec::{AutoscaleSpec, HotRule, LoadRule};

/// One measurement of an object: when, and the share of its limit in use, in percent
/// (CPU may exceed 100 when a replica without a limit uses more than one CPU).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (ms since the epoch).
    pub at_ms: i64,
    /// Share in use, percent.
    pub used: f64,
}

/// The recent measurements of one object (a service's replicas, a node), oldest first.
#[derive(Debug, Clone)]
pub struct Window {
    samples: VecDeque<Sample>,
    keep_ms: i64,
    max_gap_ms: i64,
}

impl Window {
    /// A window that keeps `keep` of history (the longest `for` that will read it) and treats
    /// two measurements further apart than `max_gap` as a hole (nothing is sustained across
    /// it).
    pub fn new(keep: Duration, max_gap: Duration) -> Self {
        Window {
            samples: VecDeque::new(),
            keep_ms: ms(keep),
            max_gap_ms: ms(max_gap).max(1),
        }
    }

    /// Adds a measurement (one older than the newest is ignored) and forgets what is no longer
    /// needed: everything before the last measurement at or before `newest − keep`.
    pub fn push(&mut self, s: Sample) {
        if self.samples.back().is_some_and(|b| s.at_ms < b.at_ms) {
            return;
        }
        self.samples.push_back(s);
        let cutoff = s.at_ms - self.keep_ms;
        while self.samples.len() >= 2 && self.samples[1].at_ms <= cutoff {
            self.samples.pop_front();
        }
    }

    /// Changes how much history is kept (the spec changed); takes effect at the next push.
    pub fn set_keep(&mut self, keep: Duration) {
        self.keep_ms = ms(keep);
    }

    /// The newest measurement.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.back().copied()
    }

    /// Measurements held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether it holds no measurement.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Forgets every measurement (the object was replaced: what it used says nothing now).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The mean of the measurements over the last `d` (with the one at its start) when every
    /// one of them satisfies `holds` and they cover `d` without a hole (see the module doc);
    /// `None` otherwise.
    pub fn sustained(&self, d: Duration, now_ms: i64, holds: impl Fn(f64) -> bool) -> Option<f64> {
        let newest = self.samples.back()?;
        if now_ms - newest.at_ms > self.max_gap_ms {
            return None;
        }
        let start = now_ms - ms(d);
        let first = self.samples.iter().rposition(|s| s.at_ms <= start)?;
        let span = self.samples.range(first..);
        let mut prev: Option<i64> = None;
        let (mut sum, mut n) = (0.0, 0u32);
        for s in span {
            if !holds(s.used) || prev.is_some_and(|p| s.at_ms - p > self.max_gap_ms) {
                return None;
            }
            prev = Some(s.at_ms);
            sum += s.used;
            n += 1;
        }
        Some(sum / f64::from(n))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn pct(p: Percent) -> f64 {
    f64::from(p.0) / 100.0
}

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        })
    }
}

/// Which side of a threshold a measurement stayed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Above it.
    Above,
    /// Below it.
    Below,
    /// At or under it (a rule without `below` agreeing to a scale-down).
    NotAbove,
}

/// A sustained measurement that caused (or would cause) an action: "cpu 92% > 80% for 10s".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// What was measured.
    pub resource: Resource,
    /// Its mean over `for_`, percent.
    pub mean: f64,
    /// The threshold.
    pub threshold: Percent,
    /// Which side of it.
    pub side: Side,
    /// For how long.
    #[serde(rename = "for", serialize_with = "crate::load::ser_duration")]
    pub for_: Duration,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.side {
            Side::Above => ">",
            Side::Below => "<",
            Side::NotAbove => "≤",
        };
        write!(
            f,
            "{} {:.0}% {op} {} for {}",
            self.resource,
            self.mean,
            self.threshold,
            format_duration(self.for_)
        )
    }
}

/// The measurement windows of one autoscaled service: the mean over its running replicas at
/// each sampling.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceLoad<'a> {
    /// CPU, percent of the replicas' CPU limit (of one CPU without one).
    pub cpu: Option<&'a Window>,
    /// Memory, percent of the replicas' memory limit.
    pub memory: Option<&'a Window>,
}

impl<'a> ServiceLoad<'a> {
    fn window(&self, r: Resource) -> Option<&'a Window> {
        match r {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
        }
    }
}

/// Why an autoscaled service's replica count changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum ScaleReason {
    /// The count was under `min` (a new or changed manifest).
    BelowMin,
    /// The count was over `max` (a new or changed manifest).
    AboveMax,
    /// A rule stayed above its threshold.
    Load {
        /// That rule's measurement.
        cause: Cause,
    },
    /// Every rule stayed low.
    Idle {
        /// Each rule's measurement.
        causes: Vec<Cause>,
    },
}

impl fmt::Display for ScaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaleReason::BelowMin => f.write_str("below autoscale min"),
            ScaleReason::AboveMax => f.write_str("above autoscale max"),
            ScaleReason::Load { cause } => write!(f, "{cause}"),
            ScaleReason::Idle { causes } => {
                let parts: Vec<String> = causes.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(", "))
            }
        }
    }
}

/// Why the count stays.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "hold", rename_all = "kebab-case")]
pub enum Hold {
    /// No rule is sustained either way.
    Steady,
    /// Within `cooldown` of the last scale.
    Cooldown {
        /// Time left.
        #[serde(serialize_with = "crate::load::ser_duration")]
        left: Duration,
    },
    /// A rule asks for more, but the count is at `max`.
    AtMax {
        /// That rule's measurement.
        cause: Cause,
    },
}

/// What an autoscaled service should do now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Scale {
    /// Keep the current count.
    Hold(Hold),
    /// Run `replicas` instead.
    To {
        /// The new count.
        replicas: u32,
        /// Why.
        why: ScaleReason,
    },
}

/// The replica count `spec` asks for now, given the `current` count, the service's `load`
/// and when it last scaled. Pure. The contract (property-tested):
/// - a count outside `[min, max]` is brought to the nearest bound at once (cooldown or not);
/// - otherwise nothing moves within `cooldown` of `last_scale_ms`;
/// - one step at a time: up by one when any rule stayed above its `above` for its `for`
///   (held at `max`), down by one when at least one rule has `below` and every rule agrees —
///   a rule with `below` stayed under it for its `belowFor`, a rule without stayed at or
///   under its `above` for the longest `belowFor` of the service; never under `min`;
/// - an up wins over a down (they cannot both hold for a single rule; across rules, load
///   on one resource is not traded for idleness on another).
pub fn decide(
    spec: &AutoscaleSpec,
    current: u32,
    load: ServiceLoad<'_>,
    last_scale_ms: Option<i64>,
    now_ms: i64,
) -> Scale {
    if current < spec.min {
        return Scale::To {
            replicas: spec.min,
            why: ScaleReason::BelowMin,
        };
    }
    if current > spec.max {
        return Scale::To {
            replicas: spec.max,
            why: ScaleReason::AboveMax,
        };
    }
    if let Some(last) = last_scale_ms {
        let until = last.saturating_add(ms(spec.cooldown));
        if now_ms < until {
            return Scale::Hold(Hold::Cooldown {
                left: Duration::from_millis(u64::try_from(until - now_ms).unwrap_or(0)),
            });
        }
    }
    let rules: Vec<(Resource, &LoadRule)> = [
        (Resource::Cpu, spec.cpu.as_ref()),
        (Resource::Memory, spec.memory.as_ref()),
    ]
    .into_iter()
    .filter_map(|(r, l)| l.map(|l| (r, l)))
    .collect();
    for &(resource, rule) in &rules {
        let Some(w) = load.window(resource) else {
            continue;
        };
        let above = pct(rule.above);
        if let Some(mean) = w.sustained(rule.for_, now_ms, |v| v > above) {
            let cause = Cause {
                resource,
                mean,
                threshold: rule.above,
                side: Side::Above,
                for_: rule.for_,
            };
            if current >= spec.max {
                return Scale::Hold(Hold::AtMax { cause });
            }
            return Scale::To {
                replicas: current + 1,
                why: ScaleReason::Load { cause },
            };
        }
    }
    if current <= spec.min || !rules.iter().any(|(_, r)| r.below.is_some()) {
        return Scale::Hold(Hold::Steady);
    }
    let longest = rules
        .iter()
        .filter(|(_, r)| r.below.is_some())
        .map(|(_, r)| r.below_for)
        .max()
        .unwrap_or_default();
    let mut causes = Vec::new();
    for &(resource, rule) in &rules {
        let Some(w) = load.window(resource) else {
            return Scale::Hold(Hold::Steady);
        };
        let (threshold, side, for_) = match rule.below {
            Some(b) => (b, Side::Below, rule.below_for),
            None => (rule.above, Side::NotAbove, longest),
        };
        let t = pct(threshold);
        let held = match side {
            Side::Below => w.sustained(for_, now_ms, |v| v < t),
            _ => w.sustained(for_, now_ms, |v| v <= t),
        };
        match held {
            Some(mean) => causes.push(Cause {
                resource,
                mean,
                threshold,
                side,
                for_,
            }),
            None => return Scale::Hold(Hold::Steady),
        }
    }
    Scale::To {
        replicas: current - 1,
        why: ScaleReason::Idle { causes },
    }
}

/// A node's change of state under `cpuHighWatermark`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum HotChange {
    /// It stayed above the watermark for `for`: no new plug goes there.
    Hot {
        /// The measurement.
        cause: Cause,
    },
    /// It stayed at or under it for `for`: it takes plugs again.
    Cool {
        /// The measurement.
        cause: Cause,
    },
}

/// Whether a node that `was_hot` (or not) changes state now, given its CPU `window` (percent
/// of its CPUs). Hot after `for` above `above`; cool again after `for` at or under it — the
/// same length both ways, so a load hovering at the watermark does not flap. Pure.
pub fn hot_change(
    rule: &HotRule,
    was_hot: bool,
    window: &Window,
    now_ms: i64,
) -> Option<HotChange> {
    let t = pct(rule.above);
    if was_hot {
        window
            .sustained(rule.for_, now_ms, |v| v <= t)
            .map(|mean| HotChange::Cool {
                cause: Cause {
                    resource: Resource::Cpu,
                    mean,
                    threshold: rule.above,
                    side: Side::NotAbove,
                    for_: rule.for_,
                },
            })
    } else {
        window
            .sustained(rule.for_, now_ms, |v| v > t)
            .map(|mean| HotChange::Hot {
                cause: Cause {
                    resource: Resource::Cpu,
                    mean,
                    threshold: rule.above,
                    side: Side::Above,
                    for_: rule.for_,
                },
            })
    }
}

/// What the controller measured last, kept in the state store so `describe` and `get` show
/// it without a controller to ask (written every sample; informational only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LoadSnapshot {
    /// When (ms).
    pub at_ms: i64,
    /// Per autoscaled service.
    #[serde(default)]
    pub services: std::collections::BTreeMap<String, MeasuredLoad>,
    /// Per node (sampled under `cpuHighWatermark`).
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, MeasuredLoad>,
}

/// The last sample of an object and the mean over its window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct MeasuredLoad {
    /// CPU, percent (of the replicas' limit, or of the node's CPUs).
    pub cpu: f64,
    /// Mean CPU over `window_s`.
    pub cpu_mean: f64,
    /// Memory, percent of the replicas' limit (services only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<f64>,
    /// Mean memory over `window_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mean: Option<f64>,
    /// The window the means are over (the longest rule's), seconds.
    pub window_s: u64,
}

impl MeasuredLoad {
    /// `cpu 92% (10s: 88%), memory 40% (10s: 39%)`.
    pub fn text(&self) -> String {
        let w = format_duration(Duration::from_secs(self.window_s));
        let mut s = format!("cpu {:.0}% ({w}: {:.0}%)", self.cpu, self.cpu_mean);
        if let (Some(m), Some(mm)) = (self.memory, self.memory_mean) {
            s.push_str(&format!(", memory {m:.0}% ({w}: {mm:.0}%)"));
        }
        s
    }
}

impl Window {
    /// The mean of the measurements over the last `d` (with the one at its start), whatever
    /// their values; `None` when there is none.
    pub fn mean(&self, d: Duration, now_ms: i64) -> Option<f64> {
        let start = now_ms - ms(d);
        let first = self
            .samples
            .iter()
            .rposition(|s| s.at_ms <= start)
            .unwrap_or(0);
        let span: Vec<f64> = self.samples.range(first..).map(|s| s.used).collect();
        (!span.is_empty()).then(|| span.iter().sum::<f64>() / span.len() as f64)
    }
}

/// One container's use over the last sampling period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// CPU, percent of one CPU.
    pub cpu_percent: f64,
    /// Memory working set, bytes.
    pub memory: u64,
}

/// The sample a service's replicas give at one instant: their mean CPU (percent of each one's
/// `resources.cpus`, of one CPU without it) and mean memory (percent of `resources.memory`).
/// `None` without a reading.
pub fn service_sample(
    resources: &crate::manifest::spec::ResourceSpec,
    readings: &[Reading],
) -> Option<(f64, f64)> {
    if readings.is_empty() {
        return None;
    }
    let cpus = resources
        .cpus
        .map_or(1.0, |c| c.0 as f64 / 1000.0)
        .max(0.001);
    let memory = (resources.memory.0 as f64).max(1.0);
    let n = readings.len() as f64;
    let cpu = readings.iter().map(|u| u.cpu_percent / cpus).sum::<f64>() / n;
    let mem = readings
        .iter()
        .map(|u| u.memory as f64 / memory * 100.0)
        .sum::<f64>()
        / n;
    Some((cpu, mem))
}

/// A node's CPU use: every running container's CPU (fleetctl's and others') over the node's
/// CPUs, percent.
pub fn node_cpu(readings: &[Reading], cpus: f64) -> f64 {
    readings.iter().map(|u| u.cpu_percent).sum::<f64>() / cpus.max(0.001)
}

/// Sets each autoscaled service's replica count to the one recorded for it, brought within
/// its `[min, max]`; a service without a record keeps the manifest's count (its starting
/// count), and a record for a service that does not autoscale is ignored.
pub fn apply_scaled(
    fleet: &mut crate::manifest::DesiredFleet,
    records: &std::collections::BTreeMap<String, crate::store::ScaleRecord>,
) {
    for (name, s) in &mut fleet.services {
        let (Some(a), Some(r)) = (&s.autoscale, records.get(name)) else {
            continue;
        };
        s.replicas = r.replicas.clamp(a.min, a.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: i64 = 1000;

    fn rule(above: u32, for_s: u64, below: Option<u32>, below_for_s: u64) -> LoadRule {
        LoadRule {
            above: Percent(above * 100),
            for_: Duration::from_secs(for_s),
            below: below.map(|b| Percent(b * 100)),
            below_for: Duration::from_secs(below_for_s),
        }
    }

    /// The example: min 1, max 3, cpu above 50% for 10s, below 10% for 20s, cooldown 5s.
    fn spec() -> AutoscaleSpec {
        AutoscaleSpec {
            min: 1,
            max: 3,
            cpu: Some(rule(50, 10, Some(10), 20)),
            memory: None,
            cooldown: Duration::from_secs(5),
        }
    }

    /// A window fed one sample a second from `from` with `f(t)`.
    fn window(from_s: i64, to_s: i64, f: impl Fn(i64) -> f64) -> Window {
        let mut w = Window::new(Duration::from_secs(60), Duration::from_secs(3));
        for t in from_s..=to_s {
            w.push(Sample {
                at_ms: t * S,
                used: f(t),
            });
        }
        w
    }

    fn cpu(w: &Window) -> ServiceLoad<'_> {
        ServiceLoad {
            cpu: Some(w),
            memory: None,
        }
    }

    #[test]
    fn sustained_needs_the_whole_period_without_holes() {
        let w = window(0, 20, |_| 90.0);
        assert_eq!(
            w.sustained(Duration::from_secs(10), 20 * S, |v| v > 50.0),
            Some(90.0)
        );
        // Not long enough yet: the first sample is at 0, `for` reaches back to -1.
        assert_eq!(
            w.sustained(Duration::from_secs(21), 20 * S, |v| v > 50.0),
            None
        );
        // One sample under the threshold inside the period breaks it.
        let w = window(0, 20, |t| if t == 15 { 10.0 } else { 90.0 });
        assert_eq!(
            w.sustained(Duration::from_secs(10), 20 * S, |v| v > 50.0),
            None
        );
        assert!(
            w.sustained(Duration::from_secs(4), 20 * S, |v| v > 50.0)
                .is_some()
        );
        // A hole longer than max_gap: nothing is sustained across it.
        let mut w = window(0, 5, |_| 90.0);
        w.push(Sample {
            at_ms: 12 * S,
            used: 90.0,
        });
        assert_eq!(
            w.sustained(Duration::from_secs(10), 12 * S, |v| v > 50.0),
            None
        );
        // Stale: the newest measurement is older than max_gap.
        let w = window(0, 20, |_| 90.0);
        assert_eq!(
            w.sustained(Duration::from_secs(10), 30 * S, |v| v > 50.0),
            None
        );
    }

    #[test]
    fn the_window_keeps_only_what_its_longest_rule_reads() {
        let mut w = Window::new(Duration::from_secs(10), Duration::from_secs(3));
        for t in 0..100 {
            w.push(Sample {
                at_ms: t * S,
                used: 1.0,
            });
        }
        assert!(w.len() <= 12, "{}", w.len());
        assert!(
            w.sustained(Duration::from_secs(10), 99 * S, |_| true)
                .is_some()
        );
        // A measurement older than the newest is ignored.
        w.push(Sample {
            at_ms: 5 * S,
            used: 99.0,
        });
        assert_eq!(w.latest().unwrap().at_ms, 99 * S);
    }

    #[test]
    fn load_scales_up_one_at_a_time_to_max_then_holds_there() {
        let w = window(0, 12, |_| 92.0);
        let d = decide(&spec(), 1, cpu(&w), None, 12 * S);
        let Scale::To {
            replicas: 2,
            why: ScaleReason::Load { cause },
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(cause.to_string(), "cpu 92% > 50% for 10s");
        assert!(matches!(
            decide(&spec(), 3, cpu(&w), None, 12 * S),
            Scale::Hold(Hold::AtMax { .. })
        ));
    }

    #[test]
    fn nothing_moves_inside_the_cooldown_then_a_sustained_load_acts() {
        let w = window(0, 12, |_| 92.0);
        assert_eq!(
            decide(&spec(), 2, cpu(&w), Some(10 * S), 12 * S),
            Scale::Hold(Hold::Cooldown {
                left: Duration::from_secs(3)
            })
        );
        assert!(matches!(
            decide(&spec(), 2, cpu(&w), Some(7 * S), 12 * S),
            Scale::To { replicas: 3, .. }
        ));
    }

    #[test]
    fn flapping_load_never_scales() {
        // Above and below by turns, every 4 s: neither side is sustained for 10 s or 20 s.
        let w = window(0, 120, |t| if (t / 4) % 2 == 0 { 95.0 } else { 2.0 });
        for now in 20..=120 {
            assert_eq!(
                decide(&spec(), 2, cpu(&w), None, now * S),
                Scale::Hold(Hold::Steady),
                "at {now}s"
            );
        }
    }

    #[test]
    fn idle_scales_down_only_when_every_rule_agrees() {
        let mut s = spec();
        s.memory = Some(rule(80, 10, None, 0));
        let low = window(0, 30, |_| 3.0);
        let mem_busy = window(0, 30, |_| 85.0);
        let mem_mid = window(0, 30, |_| 60.0);
        let load = |m| ServiceLoad {
            cpu: Some(&low),
            memory: Some(m),
        };
        // Memory above its `above`: that is an up, not a down.
        assert!(matches!(
            decide(&s, 2, load(&mem_busy), None, 30 * S),
            Scale::To { replicas: 3, .. }
        ));
        // Memory without `below` agrees while at or under its `above`.
        let d = decide(&s, 2, load(&mem_mid), None, 30 * S);
        let Scale::To { replicas: 1, why } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            why.to_string(),
            "cpu 3% < 10% for 20s, memory 60% ≤ 80% for 20s"
        );
        // Never under min.
        assert_eq!(
            decide(&s, 1, load(&mem_mid), None, 30 * S),
            Scale::Hold(Hold::Steady)
        );
        // Rules without any `below`: scale up only.
        s.cpu = Some(rule(50, 10, None, 0));
        assert_eq!(
            decide(&s, 2, load(&mem_mid), None, 30 * S),
            Scale::Hold(Hold::Steady)
        );
    }

    #[test]
    fn counts_outside_the_bounds_are_brought_back_at_once() {
        let w = window(0, 3, |_| 50.0);
        assert_eq!(
            decide(&spec(), 0, cpu(&w), Some(2 * S), 3 * S),
            Scale::To {
                replicas: 1,
                why: ScaleReason::BelowMin
            }
        );
        assert_eq!(
            decide(&spec(), 7, cpu(&w), Some(2 * S), 3 * S),
            Scale::To {
                replicas: 3,
                why: ScaleReason::AboveMax
            }
        );
    }

    #[test]
    fn a_node_is_hot_after_for_above_and_cool_after_for_under() {
        let r = HotRule {
            above: Percent(8000),
            for_: Duration::from_secs(10),
        };
        let w = window(0, 10, |_| 92.0);
        let Some(HotChange::Hot { cause }) = hot_change(&r, false, &w, 10 * S) else {
            panic!()
        };
        assert_eq!(cause.to_string(), "cpu 92% > 80% for 10s");
        assert_eq!(hot_change(&r, true, &w, 10 * S), None);
        let w = window(0, 10, |t| if t < 5 { 92.0 } else { 20.0 });
        assert_eq!(
            hot_change(&r, true, &w, 10 * S),
            None,
            "not under for 10s yet"
        );
        let w = window(0, 20, |t| if t < 5 { 92.0 } else { 20.0 });
        assert!(matches!(
            hot_change(&r, true, &w, 20 * S),
            Some(HotChange::Cool { .. })
        ));
    }

    #[test]
    fn a_service_sample_is_the_replicas_mean_over_their_limits() {
        use crate::manifest::quantity::{Bytes, MilliCpus};
        let mut res = crate::manifest::spec::ResourceSpec {
            memory: Bytes(100 << 20),
            memory_reservation: None,
            cpus: Some(MilliCpus(500)),
            cpu_shares: None,
            cpuset: None,
        };
        let u = |cpu, mib: u64| Reading {
            cpu_percent: cpu,
            memory: mib << 20,
        };
        // Half a CPU of limit: 40% and 10% of one CPU are 80% and 20% of it.
        assert_eq!(
            service_sample(&res, &[u(40.0, 50), u(10.0, 10)]),
            Some((50.0, 30.0))
        );
        res.cpus = None;
        assert_eq!(service_sample(&res, &[u(150.0, 100)]), Some((150.0, 100.0)));
        assert_eq!(service_sample(&res, &[]), None);
        assert_eq!(node_cpu(&[u(150.0, 1), u(50.0, 1)], 4.0), 50.0);
    }

    proptest! {
        /// Under any load, the answer is within [min, max], one step from a count inside the
        /// bounds, never a move inside the cooldown, and a down only when the CPU really
        /// stayed under `below` for `belowFor`.
        #[test]
        fn decisions_respect_min_max_cooldown_and_agreement(
            min in 1u32..4,
            extra in 0u32..4,
            current in 0u32..10,
            loads in proptest::collection::vec(0.0f64..150.0, 1..80),
            last in proptest::option::of(0i64..80),
            now in 0i64..100,
        ) {
            let s = AutoscaleSpec { min, max: min + extra, ..spec() };
            let mut w = Window::new(Duration::from_secs(60), Duration::from_secs(3));
            for (t, v) in loads.iter().enumerate() {
                w.push(Sample { at_ms: t as i64 * S, used: *v });
            }
            let last = last.map(|l| l * S);
            match decide(&s, current, cpu(&w), last, now * S) {
                Scale::To { replicas, why } => {
                    prop_assert!(replicas >= s.min && replicas <= s.max);
                    if (s.min..=s.max).contains(&current) {
                        prop_assert!(replicas.abs_diff(current) == 1);
                        prop_assert!(last.is_none_or(|l| now * S >= l + 5 * S));
                        if replicas < current {
                            prop_assert!(w.sustained(Duration::from_secs(20), now * S, |v| v < 10.0).is_some());
                        }
                    } else {
                        prop_assert!(matches!(why, ScaleReason::BelowMin | ScaleReason::AboveMax));
                    }
                }
                Scale::Hold(_) => prop_assert!((s.min..=s.max).contains(&current)),
            }
        }
    }
}

//! The load thresholds of SPEC §14: `Service.spec.autoscale` and
//! `PlacementPolicy.spec.cpuHighWatermark`, with their defaults.

use std::time::Duration;

use super::Report;
use crate::manifest::decode::Sp;
use crate::manifest::quantity::format_duration;
use crate::manifest::raw::{RawAutoscale, RawHotRule, RawLoadRule};
use crate::manifest::spec::{AutoscaleSpec, HotRule, LoadRule};

/// Resolves `spec.autoscale` of a service whose `replicas` is `replicas` (as written, if it
/// was). `None` when absent or when it has an error (reported).
pub(super) fn resolve_autoscale(
    r: &mut Report,
    file: &str,
    raw: &Option<Box<RawAutoscale>>,
    replicas: Option<&Sp<u32>>,
) -> Option<AutoscaleSpec> {
    let a = raw.as_ref()?;
    let errors = r.error_count();
    let (min, max) = (a.min.as_ref()?, a.max.as_ref()?);
    if min.value == 0 {
        r.err(
            file,
            min.pos,
            "spec.autoscale.min",
            "min must be at least 1 (a service scaled to none would not answer to start again)",
        );
    }
    if max.value < min.value {
        r.err(
            file,
            max.pos,
            "spec.autoscale.max",
            format!("max {} is below min {}", max.value, min.value),
        );
    }
    if let Some(n) = replicas
        && (n.value < min.value || n.value > max.value)
    {
        r.err(
            file,
            n.pos,
            "spec.replicas",
            format!(
                "replicas {} is outside autoscale's {}–{}; with autoscale, replicas is the \
                 starting count (omit it to start at min)",
                n.value, min.value, max.value
            ),
        );
    }
    let cpu = rule(r, file, "spec.autoscale.cpu", &a.cpu);
    let memory = rule(r, file, "spec.autoscale.memory", &a.memory);
    if a.cpu.is_none() && a.memory.is_none() {
        r.err(
            file,
            a.pos,
            "spec.autoscale",
            "autoscale needs a cpu or a memory rule, e.g. cpu: {above: 70%, for: 5m, below: 30%}",
        );
    }
    let cooldown = a
        .cooldown
        .as_ref()
        .map_or(AutoscaleSpec::COOLDOWN, |c| c.value.0);
    if r.error_count() > errors {
        return None;
    }
    Some(AutoscaleSpec {
        min: min.value,
        max: max.value,
        cpu,
        memory,
        cooldown,
    })
}

fn rule(r: &mut Report, file: &str, path: &str, raw: &Option<RawLoadRule>) -> Option<LoadRule> {
    let l = raw.as_ref()?;
    let above = l.above.as_ref()?;
    let for_ = positive(r, file, &format!("{path}.for"), &l.for_, LoadRule::FOR);
    let below_for = positive(
        r,
        file,
        &format!("{path}.belowFor"),
        &l.below_for,
        LoadRule::BELOW_FOR,
    );
    if let Some(b) = &l.below
        && b.value >= above.value
    {
        r.err(
            file,
            b.pos,
            &format!("{path}.below"),
            format!(
                "below {} must be under above {} (between them the count holds)",
                b.value, above.value
            ),
        );
    }
    if l.below.is_none()
        && let Some(bf) = &l.below_for
    {
        r.err(
            file,
            bf.pos,
            &format!("{path}.belowFor"),
            "belowFor needs below",
        );
    }
    Some(LoadRule {
        above: above.value,
        for_,
        below: l.below.as_ref().map(|b| b.value),
        below_for,
    })
}

/// A `for`-like duration: the default when absent; zero refused (a single sample would act).
fn positive(
    r: &mut Report,
    file: &str,
    path: &str,
    raw: &Option<Sp<crate::manifest::decode::Dur>>,
    default: Duration,
) -> Duration {
    match raw {
        None => default,
        Some(d) if d.value.0.is_zero() => {
            r.err(
                file,
                d.pos,
                path,
                format!(
                    "must be longer than 0 (a single measurement is not sustained); default {}",
                    format_duration(default)
                ),
            );
            default
        }
        Some(d) => d.value.0,
    }
}

/// Resolves `spec.cpuHighWatermark` of a placement policy.
pub(super) fn resolve_hot_rule(
    r: &mut Report,
    file: &str,
    raw: &Option<RawHotRule>,
) -> Option<HotRule> {
    let h = raw.as_ref()?;
    let above = h.above.as_ref()?;
    if above.value.0 == 0 {
        r.err(
            file,
            above.pos,
            "spec.cpuHighWatermark.above",
            "above must be more than 0% (every node would be hot)",
        );
    }
    let for_ = positive(r, file, "spec.cpuHighWatermark.for", &h.for_, LoadRule::FOR);
    Some(HotRule {
        above: above.value,
        for_,
    })
}

//! The Fleet document: at most one; its resync and node-loss periods, API settings, network,
//! registries, disk watermark and event retention.

use super::{Named, Report};
use crate::manifest::raw::*;
use crate::manifest::spec::*;

/// Resolves the Fleet document (defaults when there is none); a second one is an error.
pub(super) fn fleet(r: &mut Report, fleets: &[Named<RawFleetSpec>]) -> FleetSpec {
    let mut fleet = FleetSpec::default();
    for extra in fleets.iter().skip(1) {
        r.err(
            &extra.doc.file,
            extra.doc.pos,
            "kind",
            format!(
                "a second Fleet document ({:?}); at most one is allowed (first: {:?} in {})",
                extra.name, fleets[0].name, fleets[0].doc.file
            ),
        );
    }
    if let Some(f) = fleets.first() {
        fleet.name = f.name.clone();
        let s = f.spec;
        if let Some(d) = &s.resync {
            if d.value.0.is_zero() {
                r.err(
                    &f.doc.file,
                    d.pos,
                    "spec.resync",
                    "resync must be longer than 0s",
                );
            }
            fleet.resync = d.value.0;
        }
        if let Some(d) = &s.node_lost_after {
            if d.value.0.is_zero() {
                r.err(
                    &f.doc.file,
                    d.pos,
                    "spec.nodeLostAfter",
                    "nodeLostAfter must be longer than 0s",
                );
            }
            fleet.node_lost_after = d.value.0;
        }
        if let Some(d) = &s.event_retention {
            if d.value.0.is_zero() {
                r.err(
                    &f.doc.file,
                    d.pos,
                    "spec.eventRetention",
                    "eventRetention must be longer than 0s (the default keeps events 90 days)",
                );
            }
            fleet.event_retention = d.value.0;
        }
        fleet.network = super::network::settings(r, &f.doc.file, s.network.as_ref());
        if let Some(regs) = &s.registries {
            fleet.registries = super::registries::registries(r, &f.doc.file, regs);
        }
        if let Some(w) = &s.disk_high_watermark {
            if w.value.0 == 0 {
                r.err(
                    &f.doc.file,
                    w.pos,
                    "spec.diskHighWatermark",
                    "watermark must be above 0% (leave it out to never prune)",
                );
            }
            fleet.disk_high_watermark = Some(w.value);
        }
        if let Some(api) = &s.api {
            if let Some(l) = &api.listen {
                match l.value.parse() {
                    Ok(a) => fleet.api_listen = a,
                    Err(_) => r.err(
                        &f.doc.file,
                        l.pos,
                        "spec.api.listen",
                        format!(
                            "invalid address {:?}: use IP:PORT, e.g. 127.0.0.1:7411",
                            l.value
                        ),
                    ),
                }
            }
            fleet.api_token_file = api.token_file.as_ref().map(|t| t.value.clone().into());
        }
    }
    fleet
}

//! Per object, what should run where: one wanted container per placed service replica and per
//! plug whose class is still in the manifests. A plug whose node is draining, drained or lost is
//! placed anew here (the move is recorded in the plan before its container is created).

use super::{Identity, Object, Plan, PlugMove, Snapshot, Stuck};
use crate::container::ContainerSpec;
use crate::desired::{PlugIdentity, plug_container_on, service_container_on};
use crate::manifest::PlugClassSpec;
use crate::schedule::{self, Availability, NodeView, ServicePlacement};
use crate::store::PlugRecord;

/// A container the fleet wants.
#[derive(Debug, Clone)]
pub(super) struct Wanted {
    /// Which object it is, as its labels say.
    pub identity: Identity,
    /// Which object it is, as a step names it.
    pub object: Object,
    /// The node it belongs on.
    pub node: String,
    /// Its spec there.
    pub spec: ContainerSpec,
    /// Whether it should run (a stopped plug keeps its container, stopped).
    pub run: bool,
}

/// One wanted container per replica the placement assigned.
pub(super) fn replicas(s: &Snapshot, placement: &ServicePlacement) -> Vec<Wanted> {
    placement
        .assigned
        .iter()
        .map(|((svc, replica), node)| Wanted {
            identity: Identity::Service(svc.clone(), *replica),
            object: Object::Service {
                name: svc.clone(),
                replica: *replica,
            },
            node: node.clone(),
            spec: service_container_on(
                s.fleet,
                &s.fleet.services[svc],
                *replica,
                node,
                crate::network::engine_of(s.fleet, s.observed, node),
            ),
            run: true,
        })
        .collect()
}

/// One wanted container per plug whose class is still in the manifests (a plug of a removed
/// class is a stray and goes). Plugs that must leave their node are placed on `views`, in
/// record order; the moves and the plugs that fit nowhere else go into `out`.
pub(super) fn plugs(s: &Snapshot, views: &mut [NodeView], out: &mut Plan) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    for p in s.plugs {
        let Some(class) = s.fleet.plug_classes.get(&p.class) else {
            // Its class left the manifests: its container is a stray and goes.
            continue;
        };
        let mut node = p.node.clone();
        let mut port = p.host_port;
        let view = views.iter().find(|v| v.name == p.node);
        if must_move(view) && p.state.wants_running() {
            let policy = s.fleet.policy_for(class);
            match schedule::place_plug(views, class, &policy, Some(p.host_port)) {
                Ok(placed) => {
                    let i = views
                        .iter()
                        .position(|v| v.name == placed.node)
                        .expect("placed on a view");
                    schedule::assign_plug(&mut views[i], class, placed.host_port);
                    out.plug_moves.push(PlugMove {
                        id: p.id.clone(),
                        from: p.node.clone(),
                        from_port: p.host_port,
                        to: placed.node.clone(),
                        port: placed.host_port,
                    });
                    node = placed.node;
                    port = placed.host_port;
                }
                Err(diagnosis) => {
                    out.stuck.push(Stuck {
                        object: Object::Plug { id: p.id.clone() },
                        node: p.node.clone(),
                        diagnosis,
                    });
                }
            }
        }
        wanted.push(plug(s, p, class, node, port));
    }
    wanted
}

/// Whether a plug must leave its node: the node is draining, drained, lost, or no longer in
/// the manifests.
fn must_move(view: Option<&NodeView>) -> bool {
    view.is_none_or(|v| {
        v.condition.schedule().must_vacate() || matches!(v.availability, Availability::Lost(_))
    })
}

fn plug(s: &Snapshot, p: &PlugRecord, class: &PlugClassSpec, node: String, port: u16) -> Wanted {
    let spec = plug_container_on(
        s.fleet,
        class,
        &PlugIdentity {
            id: &p.id,
            owner: &p.owner,
            node: &node,
            host_port: port,
        },
        crate::network::engine_of(s.fleet, s.observed, &node),
    );
    Wanted {
        identity: Identity::Plug(p.id.clone()),
        object: Object::Plug { id: p.id.clone() },
        node,
        spec,
        run: p.state.wants_running(),
    }
}

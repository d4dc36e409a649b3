//! I/O of the fleet's network: reading the swarm's members from a manager, and carrying out a
//! [`NetworkPlan`]'s steps in order (the swarm before the networks; a join uses a token read
//! from its manager at that moment, held in memory only).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::{NetStep, NetworkPlan, name_members};
use crate::container::{JoinTokens, NetworkDriver, SwarmState};
use crate::execute::Runtimes;
use crate::manifest::DesiredFleet;
use crate::observe::ObservedFleet;
use crate::store::{Store, now_ms};
use crate::transport::{ErrorKind, TransportError};

/// Reads the swarm's members from the first manager that answers (name order), when the
/// fleet's network is an overlay and the observation includes the swarm. Leaves the member list
/// empty when no manager answers (the plan then reports it).
pub async fn observe_members(
    fleet: &DesiredFleet,
    runtimes: &Runtimes,
    observed: &mut ObservedFleet,
) {
    if !observed.networks_observed || fleet.network_driver() != NetworkDriver::Overlay {
        return;
    }
    let managers: Vec<String> = observed
        .swarm
        .nodes
        .iter()
        .filter(|(_, i)| i.state == SwarmState::Active && i.manager)
        .map(|(n, _)| n.clone())
        .collect();
    for m in managers {
        let Some(rt) = runtimes.get(&m) else { continue };
        match rt.swarm_members().await {
            Ok(members) => {
                observed.swarm.members = name_members(fleet, &observed.swarm.nodes, members);
                observed.swarm.labels = rt.swarm_labels().await.ok();
                observed.swarm.listed_by = Some(m);
                return;
            }
            Err(e) => tracing::warn!(node = %m, error = %e, "could not list swarm members"),
        }
    }
}

/// How one network step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NetOutcome {
    /// Node it ran on.
    pub node: String,
    /// What it did (the plan's line).
    pub step: String,
    /// Success.
    pub ok: bool,
    /// Failure, naming node and operation.
    pub error: Option<String>,
}

/// Resolves a node's address for the swarm, which wants an IP: a host name is looked up on this
/// machine (the address fleetctl itself reaches the node at).
async fn resolve(addr: &str) -> Result<String, String> {
    if addr.parse::<IpAddr>().is_ok() {
        return Ok(addr.to_string());
    }
    match tokio::net::lookup_host((addr, 0)).await {
        Ok(mut it) => it
            .find(|a| a.is_ipv4())
            .map(|a| a.ip().to_string())
            .ok_or_else(|| format!("{addr} has no IPv4 address")),
        Err(e) => Err(format!("cannot resolve {addr}: {e}")),
    }
}

/// Carries out `plan`'s steps in order. A failed step is reported and the others still run
/// (a join that failed leaves that node off the overlay; the next pass tries again). Each step
/// that ran is an event.
pub async fn execute(
    plan: &NetworkPlan,
    runtimes: &Runtimes,
    store: Option<&Store>,
    opts: &crate::execute::ExecOptions,
) -> Vec<NetOutcome> {
    let mut tokens: BTreeMap<String, JoinTokens> = BTreeMap::new();
    let mut out = Vec::new();
    let actor = opts.actor.as_str();
    let mut promotion_failed = false;
    for step in &plan.steps {
        let node = step.node().to_string();
        let line = step.describe();
        // A holder whose lease is gone changes nothing more.
        let fenced = opts.fence.as_ref().map_or(Ok(()), |f| f.check());
        let demotion = matches!(
            step,
            NetStep::SetRole {
                role: crate::container::SwarmRole::Worker,
                ..
            }
        );
        let result = match fenced {
            // A demotion planned after a promotion that failed would shrink the quorum.
            Ok(()) if demotion && promotion_failed => {
                Err("not demoted: the promotion meant to replace it failed".to_string())
            }
            Ok(()) => run(step, runtimes, &mut tokens).await,
            Err(e) => Err(e.to_string()),
        };
        if result.is_err()
            && matches!(
                step,
                NetStep::SetRole {
                    role: crate::container::SwarmRole::Manager,
                    ..
                } | NetStep::SwarmJoin { manager: true, .. }
            )
        {
            promotion_failed = true;
        }
        let (action, message) = match &result {
            Ok(()) => ("network", line.clone()),
            Err(e) => ("network-failed", format!("{line}: {e}")),
        };
        if let Some(store) = store
            && let Err(e) = store.record_event(now_ms(), actor, action, Some(&node), None, &message)
        {
            tracing::warn!(error = %e, "could not record event");
        }
        out.push(NetOutcome {
            node,
            ok: result.is_ok(),
            error: result.err().map(|e| format!("{line}: {e}")),
            step: line,
        });
    }
    out
}

async fn run(
    step: &NetStep,
    runtimes: &Runtimes,
    tokens: &mut BTreeMap<String, JoinTokens>,
) -> Result<(), String> {
    let rt = runtimes
        .get(step.node())
        .ok_or_else(|| format!("node {} has no connection", step.node()))?;
    let e = |e: TransportError| e.to_string();
    match step {
        NetStep::SwarmInit { addr, labels, .. } => {
            let addr = resolve(addr).await?;
            rt.swarm_init(&addr, labels).await.map(|_| ()).map_err(e)
        }
        NetStep::SwarmJoin {
            addr,
            via,
            remote,
            manager,
            ..
        } => {
            if !tokens.contains_key(via) {
                let m = runtimes
                    .get(via)
                    .ok_or_else(|| format!("manager {via} has no connection"))?;
                tokens.insert(via.clone(), m.swarm_join_tokens().await.map_err(e)?);
            }
            let t = &tokens[via];
            let token = if *manager { &t.manager } else { &t.worker };
            let addr = resolve(addr).await?;
            let (host, port) = remote.rsplit_once(':').unwrap_or((remote, "2377"));
            let ip = resolve(host.trim_matches(|c| c == '[' || c == ']')).await?;
            let remote = if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            rt.swarm_join(&addr, &remote, token).await.map_err(e)
        }
        NetStep::SwarmLeave { .. } => rt.swarm_leave(true).await.map_err(e),
        NetStep::SetRole {
            id, version, role, ..
        } => rt.swarm_set_role(id, *version, *role).await.map_err(e),
        NetStep::RemoveMember { id, .. } => rt.swarm_remove_member(id).await.map_err(e),
        NetStep::CreateNetwork { spec, .. } => match rt.create_network(spec).await {
            Ok(_) => Ok(()),
            // Created meanwhile (another node's step, another actor): what we wanted.
            Err(err) if err.kind == ErrorKind::Conflict => Ok(()),
            Err(err) => Err(err.to_string()),
        },
        NetStep::RemoveNetwork { id, .. } => match rt.remove_network(id).await {
            Ok(()) => Ok(()),
            // Gone already, or still used by a container that is not the fleet's: left alone.
            Err(err) if matches!(err.kind, ErrorKind::NotFound | ErrorKind::Conflict) => Ok(()),
            Err(err) => Err(err.to_string()),
        },
    }
}

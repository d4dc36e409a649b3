//! `fleetctl run PATH`: the controller. Takes the fleet lease as `controller` (or fails at once,
//! exit 1, naming the holder), serves the API, reconciles until SIGTERM/SIGINT, then finishes
//! the pass in flight, releases the lease and exits 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::GlobalOpts;
use super::common::{holder, load_or_report, open_store};
use crate::api;
use crate::controller::{Config, Connector, Controller, ControllerError, LeaseConfig};
use crate::lease::nodes::NodeSet;
use crate::lease::{LeaseError, LeaseGuard, LeaseKind, Request};
use crate::store::now_ms;
use crate::transport::{Endpoint, connect, failed::FailedRuntime};

/// How long requests in flight may finish after the controller stopped.
const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Runs the controller.
///
/// # Errors
/// The store cannot be opened, the token file cannot be read or written, the API address
/// cannot be bound, the manifest directory cannot be watched.
pub fn run(path: &Path, global: &GlobalOpts) -> anyhow::Result<u8> {
    let Some(mut loaded) = load_or_report(path) else {
        return Ok(1);
    };
    let fleet_spec = loaded.fleet.fleet.clone();
    let store = Arc::new(open_store(global, &fleet_spec.name)?);
    // Every secret the manifests use must be readable to start (SPEC §12); later, a source
    // that cannot be read keeps its last good value.
    loaded.fleet = super::common::with_secrets(&loaded.fleet, &store)?;
    let state_db = super::common::state_path(global, &fleet_spec.name)?;
    let who = holder("controller");
    let addr = fleet_spec.api_listen;
    // Cancelled on SIGTERM/SIGINT, and by the lease guard when the lease is lost.
    let shutdown = CancellationToken::new();
    let api_addr = addr.to_string();
    // One SSH connection per node, shared by the controller and its lease: the lease's
    // runtimes are siblings of the controller's over the same SSH sessions, each with its own
    // HTTP connections, and run on a thread of their own — the controller's runtime has one
    // thread, busy with its loop, and the lease must be renewed whatever that loop waits on.
    let mut endpoints: std::collections::BTreeMap<
        String,
        (Endpoint, Arc<dyn crate::transport::NodeRuntime>),
    > = std::collections::BTreeMap::new();
    let mut shared: crate::execute::Runtimes = std::collections::BTreeMap::new();
    for n in loaded.fleet.nodes.values() {
        let endpoint = Endpoint::from_node(n);
        let (mine, lease_side): (
            Arc<dyn crate::transport::NodeRuntime>,
            Arc<dyn crate::transport::NodeRuntime>,
        ) = match crate::transport::connect_docker(&endpoint) {
            Ok(rt) => {
                let sibling = match rt.ssh_session() {
                    Some(s) => crate::transport::DockerRuntime::over_ssh(
                        &n.name,
                        s.clone(),
                        &endpoint.docker_socket,
                    ),
                    None => {
                        crate::transport::DockerRuntime::local(&n.name, &endpoint.docker_socket)
                    }
                };
                (rt, Arc::new(sibling))
            }
            Err(e) => {
                let failed: Arc<dyn crate::transport::NodeRuntime> =
                    Arc::new(FailedRuntime::new(&e));
                (failed.clone(), failed)
            }
        };
        shared.insert(n.name.clone(), lease_side);
        endpoints.insert(n.name.clone(), (endpoint, mine));
    }
    let nodes = NodeSet::own(&fleet_spec.name, shared)?;
    let lease = match LeaseGuard::acquire(
        store.clone(),
        Request {
            fleet: &fleet_spec.name,
            holder: &who,
            kind: LeaseKind::Controller,
            api: Some(&api_addr),
            wait: Duration::ZERO,
        },
        Some(nodes),
        Some(Box::new({
            let shutdown = shutdown.clone();
            move || shutdown.cancel()
        })),
    ) {
        Ok(l) => l,
        Err(e @ (LeaseError::Locked { .. } | LeaseError::NoNode { .. })) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    // Only the lease holder writes a token: a refused second `run` must leave the running
    // controller's token file as it is.
    let token = match api::load_or_create_token(
        fleet_spec.api_token_file.as_deref(),
        &state_db,
        &fleet_spec.name,
    ) {
        Ok(t) => t,
        Err(e) => {
            drop(lease);
            return Err(e.into());
        }
    };
    // One thread: the controller waits on the network almost all the time, and every extra
    // worker thread is another malloc arena (measured: 9 MB of heap with two workers on a fleet
    // of 100 containers).
    crate::memory::limit_arenas();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result: anyhow::Result<Result<(), ControllerError>> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (Fleet spec.api.listen): {e}")
        })?;
        store.record_applied(
            lease.token(),
            &who,
            &loaded.sources_hash(),
            &loaded.sources,
            now_ms(),
        )?;
        tokio::spawn(on_signal(shutdown.clone()));
        let connect: Connector = Arc::new(move |spec| {
            let endpoint = Endpoint::from_node(spec);
            match endpoints.get(&spec.name) {
                Some((e, rt)) if *e == endpoint => rt.clone(),
                _ => connect(&endpoint).unwrap_or_else(|e| Arc::new(FailedRuntime::new(&e))),
            }
        });
        let mut cfg = Config::new(path.to_path_buf(), &who);
        cfg.lease = Some(LeaseConfig {
            token: lease.token(),
            acquired_ms: lease.info().acquired_ms,
        });
        cfg.exec.fence = Some(lease.fence());
        let ctl = Controller::new(cfg, store.clone(), loaded, connect, shutdown.clone());
        tokio::spawn(on_hangup(ctl.clone(), shutdown.clone()));
        let server = tokio::spawn(api::serve(
            listener,
            api::router(ctl.clone(), token.token.clone()),
            shutdown.clone(),
        ));
        tracing::info!(
            fleet = %fleet_spec.name,
            manifests = %path.display(),
            api = %addr,
            token_file = %token.path.display(),
            token_generated = token.generated,
            resync_s = fleet_spec.resync.as_secs(),
            node_lost_after_s = fleet_spec.node_lost_after.as_secs(),
            "controller started; GET /healthz needs no token, every other route needs the token in the token file"
        );
        let outcome = ctl.run().await;
        shutdown.cancel();
        let _ = tokio::time::timeout(API_SHUTDOWN_GRACE, server).await;
        Ok(outcome)
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    let released = lease.release();
    match result? {
        Ok(()) => {
            released?;
            tracing::info!("stopped; fleet lease released");
            Ok(0)
        }
        Err(ControllerError::LeaseLost) => {
            eprintln!("error: {}", ControllerError::LeaseLost);
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the secrets again on each SIGHUP (SPEC §12), until `shutdown`.
async fn on_hangup(ctl: Arc<Controller>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                tracing::info!(signal = "SIGHUP", "reading the secrets again");
                ctl.reload_secrets();
            }
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM");
        return;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    };
    tracing::info!(
        signal = which,
        "stopping: no new work; finishing the pass in flight"
    );
    shutdown.cancel();
}

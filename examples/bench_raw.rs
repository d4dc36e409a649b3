//! The "raw" baseline of the cold-apply benchmark: create and start every container of a fleet
//! directory's services on one node, all in parallel, with plain Docker API calls over the same
//! SSH transport fleetctl uses — no observation, no plan, no wait beyond the start call. This is
//! the engine's own limit that `fleetctl apply` is measured against.
//!
//! `bench_raw DIR NODE` prints the wall time in seconds.

use std::time::Instant;

use fleetctl::desired::service_container;
use fleetctl::transport::{Endpoint, connect};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(node)) = (args.next(), args.next()) else {
        eprintln!("usage: bench_raw DIR NODE");
        std::process::exit(2);
    };
    let fleet = fleetctl::manifest::load(std::path::Path::new(&dir))
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet;
    let rt = connect(&Endpoint::from_node(&fleet.nodes[&node])).expect("connect");
    let specs: Vec<_> = fleet
        .services
        .values()
        .map(|s| service_container(&fleet, s, 0, &node))
        .collect();
    // Connect (and negotiate) before the clock starts, as fleetctl's own connection is part of
    // its run but a raw client's is not the point here.
    rt.engine_info().await.expect("engine answers");
    let start = Instant::now();
    let jobs = specs.iter().map(|spec| {
        let rt = rt.clone();
        async move {
            let id = rt.create_container(spec).await?;
            rt.start_container(&id).await
        }
    });
    for r in futures_util::future::join_all(jobs).await {
        r.expect("create and start");
    }
    println!("{:.3}", start.elapsed().as_secs_f64());
}

//! Measures the transport: cold connect + first call, then the latency of a small request
//! (`GET /containers/json`) repeated sequentially, per node of a manifest set.
//!
//! ```text
//! cargo run --release --example transport_bench -- fleet/sandbox/nodes.yaml [ITERATIONS]
//! ```
//!
//! Prints one line per node: cold connect+first call, median, p99 and max of the small request,
//! and how many SSH connections the node's session made. Nodes without `ssh` go through the
//! local socket, which gives the baseline.

use std::time::{Duration, Instant};

use fleetctl::transport::{self, Endpoint, ListFilter, NodeRuntime};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: transport_bench NODES.yaml [ITERATIONS]"))?;
    let iterations: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let loaded = fleetctl::manifest::load(std::path::Path::new(&path))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{:<12} {:>6} {:>14} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "NODE", "VIA", "COLD+1ST(ms)", "MEDIAN", "P90", "P99", "MAX", "SSH"
    );
    for node in loaded.fleet.nodes.values() {
        let ep = Endpoint::from_node(node);
        let via = if ep.ssh.is_some() { "ssh" } else { "socket" };
        let t0 = Instant::now();
        let rt = transport::connect_docker(&ep)?;
        if let Err(e) = rt.list_containers(&ListFilter::default()).await {
            println!("{:<12} {via:>6} error: {e}", node.name);
            continue;
        }
        let cold = t0.elapsed();
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            rt.list_containers(&ListFilter::default()).await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1000.0);
        println!(
            "{:<12} {via:>6} {:>14} {:>9} {:>9} {:>9} {:>9} {:>6}",
            node.name,
            ms(cold),
            ms(pct(0.5)),
            ms(pct(0.9)),
            ms(pct(0.99)),
            ms(*samples.last().unwrap()),
            rt.ssh_session()
                .map(|s| s.connect_attempts().to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}

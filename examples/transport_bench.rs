//! Measures the transport, per node of a manifest set: cold connect (SSH handshake + auth + API
//! negotiation), the first call after it, then the latency of a small request
//! (`GET /containers/json`) repeated sequentially, and 50 concurrent requests.
//!
//! ```text
//! cargo run --release --example transport_bench -- fleet/sandbox/nodes.yaml [ITERATIONS]
//! ```
//!
//! Nodes without `ssh` go through the local socket, which gives the baseline. The SSH column is
//! the number of SSH connections the node's session made over the whole run (1 is the point).

use std::time::{Duration, Instant};

use fleetctl::transport::{self, Endpoint, ListFilter, NodeRuntime};

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

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
        "{:<12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>5}",
        "NODE",
        "VIA",
        "CONNECT",
        "1ST CALL",
        "MEDIAN",
        "P90",
        "P99",
        "MAX",
        ">10MS",
        "50 CONC",
        "SSH"
    );
    for node in loaded.fleet.nodes.values() {
        let ep = Endpoint::from_node(node);
        let via = if ep.ssh.is_some() { "ssh" } else { "socket" };
        let rt = transport::connect_docker(&ep)?;
        let t0 = Instant::now();
        if let Err(e) = rt.connect().await {
            println!("{:<12} {via:>6} error: {e}", node.name);
            continue;
        }
        let connect = t0.elapsed();
        let t1 = Instant::now();
        rt.list_containers(&ListFilter::default()).await?;
        let first = t1.elapsed();
        let mut samples = Vec::with_capacity(iterations);
        let mut slow = Vec::new();
        for i in 0..iterations {
            let t = Instant::now();
            rt.list_containers(&ListFilter::default()).await?;
            let took = t.elapsed();
            if took > Duration::from_millis(10) {
                slow.push(format!("#{i}:{}ms", took.as_millis()));
            }
            samples.push(took);
        }
        samples.sort();
        let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
        let t2 = Instant::now();
        let calls = (0..50).map(|_| {
            let rt = rt.clone();
            async move { rt.list_containers(&ListFilter::default()).await }
        });
        for r in futures_util::future::join_all(calls).await {
            r?;
        }
        let conc = t2.elapsed();
        println!(
            "{:<12} {via:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>5}",
            node.name,
            ms(connect),
            ms(first),
            ms(pct(0.5)),
            ms(pct(0.9)),
            ms(pct(0.99)),
            ms(*samples.last().unwrap()),
            slow.len(),
            ms(conc),
            rt.ssh_session()
                .map(|s| s.connect_attempts().to_string())
                .unwrap_or_else(|| "-".into()),
        );
        if std::env::var_os("BENCH_VERBOSE").is_some() && !slow.is_empty() {
            println!("  slow requests: {}", slow.join(" "));
        }
    }
    Ok(())
}

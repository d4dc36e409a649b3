//! The "raw" baseline of the plug-start benchmark: the engine's own create + start of the same
//! container a plug of CLASS gets on NODE, over one SSH connection made before the clock starts
//! (the connection a running controller holds), repeated RUNS times one after another. With
//! `--healthy`, each run also runs the healthcheck's command (one exec, as fleetctl's own probe)
//! until it passes — the first passing probe — then waits until the engine reports the container
//! healthy (inspect every 10 ms): the engine's own first check, a whole interval after the start
//! on engines without `StartInterval`.
//!
//! `bench_plug_raw DIR NODE CLASS RUNS [--healthy]` prints `{"connect": S}` (the cold
//! connection: SSH connect and authentication, negotiation, one listing), then one JSON line per
//! run: `{"create_start": S, "probed": S|null, "healthy": S|null}` (seconds, from the create),
//! and removes what it made.

use std::time::{Duration, Instant};

use fleetctl::container::Health;
use fleetctl::desired::{PlugIdentity, plug_container_on};
use fleetctl::transport::{Endpoint, ListFilter, connect};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let healthy = args.iter().any(|a| a == "--healthy");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [dir, node, class, runs] = pos[..] else {
        eprintln!("usage: bench_plug_raw DIR NODE CLASS RUNS [--healthy]");
        std::process::exit(2);
    };
    let runs: usize = runs.parse().expect("RUNS is a number");
    let fleet = fleetctl::manifest::load(std::path::Path::new(dir))
        .unwrap_or_else(|e| panic!("{e}"))
        .fleet;
    let class = &fleet.plug_classes[class.as_str()];
    // The connection a CLI run pays for before its first call: SSH connect, key exchange,
    // authentication, the engine's version, and one small listing.
    let started = Instant::now();
    let rt = connect(&Endpoint::from_node(&fleet.nodes[node.as_str()])).expect("connect");
    rt.list_containers(&ListFilter {
        labels: vec!["fleet.bench-none".into()],
    })
    .await
    .expect("engine answers");
    println!(
        "{}",
        serde_json::json!({"connect": started.elapsed().as_secs_f64()})
    );
    let engine = rt.engine_kind().unwrap_or_default();
    for i in 0..runs {
        let id = format!("raw{i:03}");
        let spec = plug_container_on(
            &fleet,
            class,
            &PlugIdentity {
                id: &id,
                owner: "bench",
                node,
                host_port: class.host_ports.as_ref().map_or(0, |r| r.start + i as u16),
            },
            engine,
        );
        let start = Instant::now();
        let cid = rt.create_container(&spec).await.expect("create");
        rt.start_container(&cid).await.expect("start");
        let create_start = start.elapsed().as_secs_f64();
        let mut to_healthy = None;
        let mut to_probed = None;
        if healthy {
            // The first probe that passes, run as fleetctl runs it (one exec of the
            // healthcheck's command), then the engine's own verdict.
            let hc = spec
                .healthcheck
                .as_ref()
                .expect("the class has a healthcheck");
            while fleetctl::execute::probe_health(
                rt.as_ref(),
                &cid,
                hc,
                fleetctl::execute::PROBE_TIMEOUT_MAX,
            )
            .await
                != fleetctl::execute::Probe::Passed
            {
                assert!(start.elapsed() < Duration::from_secs(60), "never answers");
            }
            to_probed = Some(start.elapsed().as_secs_f64());
            loop {
                let d = rt.inspect_container(&cid).await.expect("inspect");
                if d.record.health == Some(Health::Healthy) {
                    to_healthy = Some(start.elapsed().as_secs_f64());
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "never healthy");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        println!(
            "{}",
            serde_json::json!({"create_start": create_start, "probed": to_probed, "healthy": to_healthy})
        );
        rt.remove_container(&cid).await.expect("remove");
    }
}

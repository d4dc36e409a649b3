//! A reconcile pass at fleet scale (SPEC §9: 500 simulated nodes / 10,000 containers, fake
//! engines with realistic per-call latency: ≤ 2 s per pass, memory linear in containers).
//!
//! Builds NODES fake engines ([`FakeRuntime`] with [`CallLatency`]) and a fleet whose services
//! and plugs total NODES × PER_NODE containers (by default 500 × 20 = 10,000: per node, 4 plugs
//! and 16 service replicas), then runs the pass `fleetctl apply` and the controller run
//! ([`fleetctl::reconcile::pass`]) twice per run: (a) cold, creating everything; (b) converged,
//! observing everything and finding nothing to do. One JSON line per pass with its wall time
//! and phases ([`fleetctl::reconcile::PassTimings`]), then a summary line with medians.
//!
//! `--scale` instead measures memory: the converged pass at 2,500 / 5,000 / 10,000 containers
//! (NODES/4, NODES/2, NODES nodes), reporting per container the bytes the simulated world holds
//! (fake engines, store, manifests: `world_bytes`), the peak bytes one converged pass allocates
//! beyond it (`pass_peak_bytes`: the observation, the plan, and the fakes' call logs of the
//! pass), what its report keeps (`report_bytes`), by a counting allocator; and the process's
//! VmHWM / VmRSS.
//!
//! `cargo run --release --example bench_reconcile -- [--nodes 500] [--per-node 20]
//! [--plugs-per-node 4] [--replicas 50] [--runs 5] [--concurrency GROUPS] [--list-ms X
//! --inspect-ms Y --create-ms Z --start-ms W --other-ms V] [--untimed-cold] [--scale]`
//!
//! `--untimed-cold`: the cold pass builds the world without latency and is not reported (at
//! the measured start latency, 10,000 creates take minutes at apply's concurrency).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fleetctl::execute::Runtimes;
use fleetctl::manifest::{DesiredFleet, Source, parse};
use fleetctl::reconcile::{PassContext, PassReport, PassTimings, pass};
use fleetctl::store::{PlugRecord, PlugState, Store, now_ms};
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::{CallLatency, FakeRuntime};

// Per-call latency of a Docker Engine reached over SSH, ms: measured on the sandbox with
// `fleetctl plug create -vv` (each engine call's span; Docker 20.10, one warm connection per
// node, a node with ~40 containers; the plug on the fleet's overlay network, whose attach makes
// most of a start). Change them here, or per run with `--list-ms` and friends.
/// Container listing (0.8–2.6 ms measured).
const LIST_MS: f64 = 2.0;
/// Container inspect (0.5–0.8 ms measured).
const INSPECT_MS: f64 = 0.8;
/// Container create (35–45 ms measured).
const CREATE_MS: f64 = 40.0;
/// Container start (0.55–1.0 s measured on the overlay; ~0.1 s on a bridge).
const START_MS: f64 = 800.0;
/// Every other call: networks, image checks, engine facts, records (0.7–15 ms measured).
const OTHER_MS: f64 = 2.0;

/// Counts live heap bytes and their peak since the last [`reset_peak`].
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// `VmHWM` and `VmRSS` of this process, bytes.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

struct Args {
    nodes: usize,
    per_node: usize,
    plugs_per_node: usize,
    replicas: usize,
    runs: usize,
    /// Groups in flight across the fleet (`ExecOptions::concurrency`); `None`: apply's default.
    concurrency: Option<usize>,
    latency: CallLatency,
    scale: bool,
    /// The cold pass builds the world without latency and is not reported.
    untimed_cold: bool,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

fn args() -> Args {
    let mut a = Args {
        nodes: 500,
        per_node: 20,
        plugs_per_node: 4,
        replicas: 50,
        runs: 5,
        concurrency: None,
        latency: CallLatency {
            list: ms(LIST_MS),
            inspect: ms(INSPECT_MS),
            create: ms(CREATE_MS),
            start: ms(START_MS),
            other: ms(OTHER_MS),
        },
        scale: false,
        untimed_cold: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--untimed-cold" {
            a.untimed_cold = true;
            continue;
        }
        if flag == "--scale" {
            a.scale = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let n = || value.parse::<usize>().expect("a count");
        let t = || ms(value.parse::<f64>().expect("milliseconds"));
        match flag.as_str() {
            "--nodes" => a.nodes = n(),
            "--per-node" => a.per_node = n(),
            "--plugs-per-node" => a.plugs_per_node = n(),
            "--replicas" => a.replicas = n(),
            "--runs" => a.runs = n(),
            "--concurrency" => a.concurrency = Some(n()),
            "--list-ms" => a.latency.list = t(),
            "--inspect-ms" => a.latency.inspect = t(),
            "--create-ms" => a.latency.create = t(),
            "--start-ms" => a.latency.start = t(),
            "--other-ms" => a.latency.other = t(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.plugs_per_node <= a.per_node);
    a
}

/// The fleet: `nodes` nodes, services of `replicas` replicas totalling `nodes × (per_node −
/// plugs_per_node)` replicas (8 images among them), and a plug class.
fn fleet(a: &Args, nodes: usize) -> DesiredFleet {
    // A manifest file holds at most 1,000 documents: the nodes go 500 per file.
    let mut sources: Vec<Source> = Vec::new();
    for i in 1..=nodes {
        if i % 500 == 1 {
            sources.push(Source {
                name: format!("nodes{}.yaml", i / 500),
                text: String::new(),
            });
        }
        let text = &mut sources.last_mut().expect("pushed").text;
        if !text.is_empty() {
            text.push_str("---\n");
        }
        text.push_str(&format!(
            "apiVersion: fleet/v1\nkind: Node\nmetadata: {{name: node{i:04}}}\nspec: {{capacity: {{cpus: 64, memory: 256GiB}}}}\n"
        ));
    }
    let mut text = String::from("apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: bench}\n");
    let mut left = nodes * (a.per_node - a.plugs_per_node);
    let mut s = 0;
    while left > 0 {
        let replicas = left.min(a.replicas);
        text.push_str(&format!(
            "---\napiVersion: fleet/v1\nkind: Service\nmetadata: {{name: svc{s:04}}}\nspec: {{image: 'app{}:1', replicas: {replicas}, resources: {{memory: 64MiB}}, env: {{SERVICE: svc{s:04}}}}}\n",
            s % 8
        ));
        left -= replicas;
        s += 1;
    }
    text.push_str(
        "---\napiVersion: fleet/v1\nkind: PlugClass\nmetadata: {name: agent}\nspec: {image: 'plug:1', resources: {memory: 128MiB}, port: 8080, hostPorts: 51000-51999}\n",
    );
    sources.push(Source {
        name: "bench.yaml".into(),
        text,
    });
    parse(&sources).unwrap_or_else(|e| panic!("{e}")).fleet
}

struct World {
    fakes: Vec<FakeRuntime>,
    runtimes: Runtimes,
    store: Store,
}

/// Fake engines for the fleet's nodes, and a store recording `plugs_per_node` running plugs on
/// each (their containers are made by the cold pass, as after a lost node's state was moved).
fn world(a: &Args, fleet: &DesiredFleet) -> World {
    let fakes: Vec<FakeRuntime> = fleet.nodes.keys().map(FakeRuntime::new).collect();
    let runtimes = fakes
        .iter()
        .map(|f| {
            (
                f.node().to_string(),
                Arc::new(f.clone()) as Arc<dyn NodeRuntime>,
            )
        })
        .collect();
    let store = Store::in_memory().expect("store");
    let now = now_ms();
    let plugs: Vec<PlugRecord> = fleet
        .nodes
        .keys()
        .enumerate()
        .flat_map(|(n, node)| {
            (0..a.plugs_per_node).map(move |k| PlugRecord {
                id: format!("{:08x}", n * 1000 + k),
                class: "agent".into(),
                owner: format!("owner{n}-{k}"),
                node: node.clone(),
                host_port: 51000 + k as u16,
                state: PlugState::Running,
                created_ms: now,
                last_activity_ms: now,
                message: None,
            })
        })
        .collect();
    store.adopt_plugs(&plugs, "bench", now).expect("plugs");
    World {
        fakes,
        runtimes,
        store,
    }
}

fn set_latency(w: &World, latency: Option<CallLatency>) {
    for f in &w.fakes {
        f.set_latency(latency);
    }
}

fn forget_calls(w: &World) {
    for f in &w.fakes {
        f.clear_calls();
    }
}

fn containers(w: &World) -> usize {
    w.fakes.iter().map(|f| f.containers().len()).sum()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn pass_json(run: usize, kind: &str, containers: usize, r: &PassReport, wall: Duration) -> String {
    let t: PassTimings = r.timings;
    format!(
        "{{\"run\": {run}, \"pass\": \"{kind}\", \"containers\": {containers}, \"steps\": {}, \"failed\": {}, \"seconds\": {:.4}, \"observe\": {:.4}, \"records\": {:.4}, \"images\": {:.4}, \"plan\": {:.4}, \"execute\": {:.4}, \"settle\": {:.4}}}",
        r.plan.steps.len(),
        r.exec.outcomes.iter().filter(|o| !o.ok).count(),
        secs(wall),
        secs(t.observe),
        secs(t.records),
        secs(t.images),
        secs(t.plan),
        secs(t.execute),
        secs(t.settle),
    )
}

async fn run_pass(cx: &PassContext<'_>) -> (PassReport, Duration) {
    let started = Instant::now();
    let r = pass(cx, &|_| {}).await.expect("pass");
    (r, started.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn timing(a: &Args) {
    let f = fleet(a, a.nodes);
    let mut cold = Vec::new();
    let mut converged: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 0..a.runs {
        let w = world(a, &f);
        // With --untimed-cold the cold pass only builds the world (no latency, not reported):
        // at the sandbox's start latency a cold pass of 10,000 containers takes minutes.
        set_latency(&w, (!a.untimed_cold).then_some(a.latency));
        let mut cx = PassContext::new(&f, &w.runtimes, &w.store);
        if let Some(c) = a.concurrency {
            cx.exec.concurrency = c;
        }
        let (r, wall) = run_pass(&cx).await;
        let made = containers(&w);
        if !a.untimed_cold {
            println!("{}", pass_json(run, "cold", made, &r, wall));
        }
        assert!(
            r.exec.ok(),
            "the cold pass failed: {:?}",
            r.exec.outcomes.first()
        );
        assert_eq!(made, a.nodes * a.per_node, "the cold pass made everything");
        if !a.untimed_cold {
            cold.push(secs(wall));
        }
        set_latency(&w, Some(a.latency));
        forget_calls(&w);
        let (r, wall) = run_pass(&cx).await;
        println!("{}", pass_json(run, "converged", made, &r, wall));
        assert!(
            r.plan.steps.is_empty(),
            "converged: {:?}",
            r.plan.steps.first()
        );
        let t = r.timings;
        for (k, v) in [
            ("seconds", wall),
            ("observe", t.observe),
            ("records", t.records),
            ("images", t.images),
            ("plan", t.plan),
            ("execute", t.execute),
            ("settle", t.settle),
        ] {
            converged.entry(k).or_default().push(secs(v));
        }
    }
    let l = a.latency;
    let phases: Vec<String> = converged
        .into_iter()
        .map(|(k, v)| format!("\"{k}\": {:.4}", median(v)))
        .collect();
    println!(
        "{{\"summary\": \"reconcile\", \"nodes\": {}, \"containers\": {}, \"runs\": {}, \"exec_concurrency\": {}, \"latency_ms\": {{\"list\": {}, \"inspect\": {}, \"create\": {}, \"start\": {}, \"other\": {}}}, \"cold_seconds\": {}, \"converged\": {{{}}}}}",
        a.nodes,
        a.nodes * a.per_node,
        a.runs,
        a.concurrency
            .unwrap_or(fleetctl::execute::ExecOptions::default().concurrency),
        l.list.as_secs_f64() * 1000.0,
        l.inspect.as_secs_f64() * 1000.0,
        l.create.as_secs_f64() * 1000.0,
        l.start.as_secs_f64() * 1000.0,
        l.other.as_secs_f64() * 1000.0,
        if cold.is_empty() {
            "null".to_string()
        } else {
            format!("{:.3}", median(cold))
        },
        phases.join(", ")
    );
}

async fn scale(a: &Args) {
    for nodes in [a.nodes / 4, a.nodes / 2, a.nodes] {
        let containers_wanted = nodes * a.per_node;
        let before = live();
        let f = fleet(a, nodes);
        let w = world(a, &f);
        let cx = PassContext::new(&f, &w.runtimes, &w.store);
        // Made without latency (only memory is measured here).
        let (r, _) = run_pass(&cx).await;
        assert!(r.exec.ok());
        drop(r);
        assert_eq!(containers(&w), containers_wanted);
        forget_calls(&w);
        // One converged pass to warm caches (image pins, the store's pages), then the measured one.
        let (r, _) = run_pass(&cx).await;
        drop(r);
        forget_calls(&w);
        set_latency(&w, Some(a.latency));
        let held = live() - before;
        reset_peak();
        let base = live();
        let (r, wall) = run_pass(&cx).await;
        let peak = PEAK.load(Ordering::Relaxed) - base;
        assert!(r.plan.steps.is_empty());
        forget_calls(&w);
        let report_bytes = live().saturating_sub(base);
        drop(r);
        let (hwm, rss) = rss();
        let per = |b: usize| b as f64 / containers_wanted as f64;
        println!(
            "{{\"scale\": true, \"nodes\": {nodes}, \"containers\": {containers_wanted}, \"seconds\": {:.4}, \"world_bytes\": {held}, \"world_bytes_per_container\": {:.0}, \"pass_peak_bytes\": {peak}, \"pass_peak_bytes_per_container\": {:.0}, \"report_bytes_per_container\": {:.0}, \"vm_hwm\": {hwm}, \"vm_rss\": {rss}}}",
            secs(wall),
            per(held),
            per(peak),
            per(report_bytes),
        );
        drop(cx);
        drop(w);
        drop(f);
    }
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if a.scale {
        rt.block_on(scale(&a));
    } else {
        rt.block_on(timing(&a));
    }
}

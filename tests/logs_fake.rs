//! `fleetctl logs` against fake engines (the logic tier; the real engines over SSH are
//! `e2e_logs`): two nodes with one replica each, lines merged in time order across nodes and
//! prefixed `node/replica`; `-f` through a kill and restart without a duplicate or a loss, and
//! onto a container created after it started; an unreachable node named once while the others
//! go on; an unknown plug refused by name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetctl::container::labels;
use fleetctl::execute::Runtimes;
use fleetctl::logs::{Emit, LogsError, Request, Target, read};
use fleetctl::transport::fake::FakeRuntime;
use fleetctl::transport::{LogStream, NodeRuntime};
use tokio_util::sync::CancellationToken;

fn fleet_labels(service: &str, replica: &str) -> BTreeMap<String, String> {
    [
        (labels::MANAGED_BY, labels::MANAGER),
        (labels::FLEET, "f"),
        (labels::SERVICE, service),
        (labels::REPLICA, replica),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn two_nodes() -> (FakeRuntime, FakeRuntime, Runtimes) {
    let a = FakeRuntime::new("node1");
    let b = FakeRuntime::new("node2");
    let runtimes: Runtimes = [
        (
            "node1".to_string(),
            Arc::new(a.clone()) as Arc<dyn NodeRuntime>,
        ),
        (
            "node2".to_string(),
            Arc::new(b.clone()) as Arc<dyn NodeRuntime>,
        ),
    ]
    .into();
    (a, b, runtimes)
}

fn request(target: &str, follow: bool) -> Request {
    Request {
        fleet: "f".into(),
        target: Target::parse(target),
        node: None,
        since_ns: None,
        tail: None,
        follow,
    }
}

/// What a read printed: `prefix text` lines and notes.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<(Vec<String>, Vec<String>)>>);

impl Printed {
    fn sink(&self) -> impl FnMut(Emit<'_>) -> std::io::Result<()> + Send + use<> {
        let me = self.clone();
        move |e| {
            let mut p = me.0.lock().unwrap();
            match e {
                Emit::Line(s, l) => p.0.push(format!("{} {}", s.prefix(), l.text)),
                Emit::Note(n) => p.1.push(n.to_string()),
            }
            Ok(())
        }
    }
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().0.clone()
    }
    fn notes(&self) -> Vec<String> {
        self.0.lock().unwrap().1.clone()
    }
    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..300 {
            if self.lines().len() >= n {
                return self.lines();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("waited for {n} lines, have {:?}", self.lines());
    }
}

#[tokio::test]
async fn replicas_on_two_nodes_are_merged_in_time_order_and_prefixed() {
    let (a, b, runtimes) = two_nodes();
    let w0 = a.add_foreign("f-web-0-00000000", fleet_labels("web", "0"));
    let w1 = b.add_foreign("f-web-1-00000000", fleet_labels("web", "1"));
    let other = a.add_foreign("f-db-0-00000000", fleet_labels("db", "0"));
    // Written node by node; the times interleave.
    for t in [1, 4, 5] {
        a.write_log_at(&w0, LogStream::Stdout, &format!("a{t}"), t);
    }
    for t in [2, 3, 6] {
        b.write_log_at(&w1, LogStream::Stderr, &format!("b{t}"), t);
    }
    a.write_log_at(&other, LogStream::Stdout, "db line", 3);
    let printed = Printed::default();
    let mut sink = printed.sink();
    read(
        &runtimes,
        &request("web", false),
        &mut sink,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        printed.lines(),
        [
            "node1/web-0 a1",
            "node2/web-1 b2",
            "node2/web-1 b3",
            "node1/web-0 a4",
            "node1/web-0 a5",
            "node2/web-1 b6",
        ]
    );
    // --tail per container, --node, --since.
    let printed = Printed::default();
    let mut sink = printed.sink();
    let req = Request {
        tail: Some(1),
        ..request("web", false)
    };
    read(&runtimes, &req, &mut sink, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(printed.lines(), ["node1/web-0 a5", "node2/web-1 b6"]);
    let printed = Printed::default();
    let mut sink = printed.sink();
    let req = Request {
        node: Some("node2".into()),
        since_ns: Some(3),
        ..request("web", false)
    };
    read(&runtimes, &req, &mut sink, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(printed.lines(), ["node2/web-1 b3", "node2/web-1 b6"]);
    assert!(a.mutating_calls().is_empty() && b.mutating_calls().is_empty());
}

#[tokio::test]
async fn follow_goes_on_through_a_restart_and_onto_a_new_container_without_duplicates() {
    let (a, b, runtimes) = two_nodes();
    let w0 = a.add_foreign("f-web-0-00000000", fleet_labels("web", "0"));
    let w1 = b.add_foreign("f-web-1-00000000", fleet_labels("web", "1"));
    a.write_log(&w0, LogStream::Stdout, "before");
    let printed = Printed::default();
    let cancel = CancellationToken::new();
    let task = {
        let (runtimes, cancel, mut sink) = (runtimes.clone(), cancel.clone(), printed.sink());
        tokio::spawn(async move { read(&runtimes, &request("web", true), &mut sink, cancel).await })
    };
    printed.wait_for(1).await;
    let started = std::time::Instant::now();
    b.write_log(&w1, LogStream::Stdout, "one");
    printed.wait_for(2).await;
    // Within the hold (100 ms) and well within the 300 ms budget, on fakes.
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    a.write_log(&w0, LogStream::Stdout, "two");
    printed.wait_for(3).await;
    // Killed: its stream ends; restarted: followed again from after its last line.
    a.kill(&w0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.start_container(&w0).await.unwrap();
    a.write_log(&w0, LogStream::Stdout, "after restart");
    printed.wait_for(4).await;
    // A new container (a re-creation, a move): attached on its start event.
    let w1b = a.add_foreign("f-web-1-11111111", fleet_labels("web", "1"));
    a.start_container(&w1b).await.unwrap();
    a.write_log(&w1b, LogStream::Stdout, "moved");
    let lines = printed.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        printed.lines(),
        [
            "node1/web-0 before",
            "node2/web-1 one",
            "node1/web-0 two",
            "node1/web-0 after restart",
            "node1/web-1 moved",
        ],
        "{lines:?}"
    );
    assert!(printed.notes().is_empty(), "{:?}", printed.notes());
}

#[tokio::test]
async fn an_unreachable_node_is_named_once_and_the_others_go_on() {
    let (a, b, runtimes) = two_nodes();
    let w0 = a.add_foreign("f-web-0-00000000", fleet_labels("web", "0"));
    b.add_foreign("f-web-1-00000000", fleet_labels("web", "1"));
    b.set_unreachable(true);
    a.write_log_at(&w0, LogStream::Stdout, "still here", 1);
    let printed = Printed::default();
    let mut sink = printed.sink();
    read(
        &runtimes,
        &request("web", false),
        &mut sink,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(printed.lines(), ["node1/web-0 still here"]);
    let notes = printed.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("node2"), "{notes:?}");
}

#[tokio::test]
async fn an_unknown_plug_is_refused_naming_the_known_ones() {
    let (a, _b, runtimes) = two_nodes();
    let mut l = BTreeMap::new();
    l.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
    l.insert(labels::FLEET.to_string(), "f".to_string());
    l.insert(labels::PLUG.to_string(), "p1".to_string());
    let p1 = a.add_foreign("f-plug-p1", l);
    a.write_log_at(&p1, LogStream::Stdout, "plug says hi", 1);
    let printed = Printed::default();
    let mut sink = printed.sink();
    let e = read(
        &runtimes,
        &request("plug/p9", false),
        &mut sink,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, LogsError::UnknownPlug { .. }));
    assert_eq!(e.to_string(), "unknown plug p9 (known: p1)");
    let req = Request {
        node: Some("node2".into()),
        ..request("plug/p1", false)
    };
    let e = read(&runtimes, &req, &mut sink, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown plug p1 (known: none); looked on node2 only"
    );
    read(
        &runtimes,
        &request("plug/p1", false),
        &mut sink,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(printed.lines(), ["node1/plug-p1 plug says hi"]);
}

#[tokio::test]
async fn a_service_without_containers_is_a_note_not_an_error() {
    let (_a, _b, runtimes) = two_nodes();
    let printed = Printed::default();
    let mut sink = printed.sink();
    read(
        &runtimes,
        &request("web", false),
        &mut sink,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(printed.lines().is_empty());
    assert_eq!(
        printed.notes(),
        ["service web has no containers: apply the manifests first"]
    );
}

/// A node down when `-f` starts is named once; when it answers again the next re-listing
/// (every 2 s) attaches its replica, whose earlier lines come too.
#[tokio::test]
async fn follow_attaches_a_node_that_answers_again() {
    let (a, b, runtimes) = two_nodes();
    a.add_foreign("f-web-0-00000000", fleet_labels("web", "0"));
    let w1 = b.add_foreign("f-web-1-00000000", fleet_labels("web", "1"));
    b.write_log(&w1, LogStream::Stdout, "while down");
    b.set_unreachable(true);
    let printed = Printed::default();
    let cancel = CancellationToken::new();
    let task = {
        let (runtimes, cancel, mut sink) = (runtimes.clone(), cancel.clone(), printed.sink());
        tokio::spawn(async move { read(&runtimes, &request("web", true), &mut sink, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.set_unreachable(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.write_log(&w1, LogStream::Stdout, "back");
    printed.wait_for(2).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        printed.lines(),
        ["node2/web-1 while down", "node2/web-1 back"]
    );
    let notes = printed.notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("node2"), "{notes:?}");
}

/// `-f` on fakes: 20 lines written one at a time on either node (the other replica quiet
/// meanwhile) each reach the sink within the 300 ms the issue budgets, at p95 — the hold
/// (100 ms) is the whole of it here.
#[tokio::test]
async fn followed_lines_arrive_within_300_ms_at_p95_with_the_other_replica_quiet() {
    let (a, b, runtimes) = two_nodes();
    let w0 = a.add_foreign("f-web-0-00000000", fleet_labels("web", "0"));
    let w1 = b.add_foreign("f-web-1-00000000", fleet_labels("web", "1"));
    let printed = Printed::default();
    let cancel = CancellationToken::new();
    let task = {
        let (runtimes, cancel, mut sink) = (runtimes.clone(), cancel.clone(), printed.sink());
        tokio::spawn(async move { read(&runtimes, &request("web", true), &mut sink, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let (fake, id) = if i % 3 == 0 { (&a, &w0) } else { (&b, &w1) };
        let started = std::time::Instant::now();
        fake.write_log(id, LogStream::Stdout, &format!("line {i}"));
        printed.wait_for(i + 1).await;
        latencies.push(started.elapsed());
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    latencies.sort();
    let p95 = latencies[(latencies.len() * 95).div_ceil(100) - 1];
    eprintln!(
        "fake -f latency: p50 {:?}, p95 {p95:?}",
        latencies[latencies.len() / 2]
    );
    assert!(p95 < Duration::from_millis(300), "{latencies:?}");
    let lines = printed.lines();
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&format!("line {i}")), "{lines:?}");
    }
}

//! The controller API over a real TCP socket on 127.0.0.1, with the fake runtime behind it:
//! bearer token (401 without it, /healthz open), plug create / get / touch / delete, placement
//! errors with their per-node diagnosis, node operations, and /metrics in the Prometheus text
//! format.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetctl::controller::{Config, Connector, Controller};
use fleetctl::store::Store;
use fleetctl::transport::NodeRuntime;
use fleetctl::transport::fake::FakeRuntime;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const FLEET: &str = "apiVersion: fleet/v1
kind: Fleet
metadata: {name: apitest}
spec: {resync: 30s}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node1, labels: {tier: primary}}
spec: {ssh: {host: 10.0.0.1}, capacity: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: Node
metadata: {name: node2, labels: {tier: secondary}}
spec: {ssh: {host: 10.0.0.2}, capacity: {memory: 1GiB}}
---
apiVersion: fleet/v1
kind: PlugClass
metadata: {name: agent}
spec: {image: plug:1, resources: {memory: 64MiB}, port: 8080, hostPorts: 51000-51099}
---
apiVersion: fleet/v1
kind: PlacementPolicy
metadata: {name: default}
spec:
  maxPlugsPerNode: 2
  tiers: [{nodeSelector: {tier: primary}}, {nodeSelector: {tier: secondary}}]
";

const TOKEN: &str = "test-token-0123456789";

struct Api {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    start_with(Store::in_memory().unwrap(), true).await
}

/// The API over a controller on `store`; its reconcile loop runs only when `run`.
async fn start_with(store: Store, run: bool) -> Api {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), FLEET).unwrap();
    let loaded = fleetctl::manifest::load(dir.path()).unwrap();
    let swarm = fleetctl::transport::fake::FakeSwarm::new();
    let fakes: BTreeMap<String, FakeRuntime> = ["node1", "node2"]
        .iter()
        .map(|n| (n.to_string(), FakeRuntime::with_swarm(*n, &swarm)))
        .collect();
    let connect: Connector =
        Arc::new(move |spec| Arc::new(fakes[&spec.name].clone()) as Arc<dyn NodeRuntime>);
    let mut cfg = Config::new(dir.path().to_path_buf(), "controller (api test)");
    cfg.watch_manifests = false;
    cfg.poll_intents = false;
    let shutdown = CancellationToken::new();
    let ctl = Controller::new(cfg, Arc::new(store), loaded, connect, shutdown.clone());
    if run {
        let c = ctl.clone();
        tokio::spawn(async move { c.run().await });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(fleetctl::api::serve(
        listener,
        fleetctl::api::router(ctl, TOKEN.to_string()),
        shutdown.clone(),
    ));
    Api {
        addr,
        shutdown,
        _dir: dir,
    }
}

/// One HTTP/1.1 request; returns (status, body).
async fn http(
    api: &Api,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad answer: {out}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Whether a metric name (with optional labels) is valid: `name` or `name{k="v",...}`.
fn valid_series(s: &str) -> bool {
    let (name, labels) = match s.split_once('{') {
        Some((n, rest)) => match rest.strip_suffix('}') {
            Some(l) => (n, Some(l)),
            None => return false,
        },
        None => (s, None),
    };
    let name_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let labels_ok = labels.is_none_or(|l| {
        l.split("\",").all(|pair| {
            pair.split_once("=\"").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
    });
    name_ok && labels_ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_the_token_places_plugs_and_serves_metrics() {
    let api = start().await;

    // Open: /healthz. Everything else: 401 without or with a wrong token.
    assert_eq!(
        http(&api, "GET", "/healthz", None, None).await,
        (200, "ok\n".into())
    );
    for path in ["/v1/plugs", "/v1/nodes", "/metrics"] {
        let (status, body) = http(&api, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("bearer token")
        );
        assert_eq!(http(&api, "GET", path, Some("wrong"), None).await.0, 401);
    }
    let (status, _) = http(
        &api,
        "POST",
        "/v1/plugs",
        None,
        Some(r#"{"class":"agent","owner":"ada"}"#),
    )
    .await;
    assert_eq!(status, 401);

    // 201 with where the plug runs.
    let t = Some(TOKEN);
    let (status, body) = http(
        &api,
        "POST",
        "/v1/plugs",
        t,
        Some(r#"{"class":"agent","owner":"ada"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created = json(&body);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["node"], "node1");
    assert_eq!(created["host"], "10.0.0.1");
    assert_eq!(created["port"], 51000);

    // Unknown class: 422; malformed body: 422.
    let (status, body) = http(
        &api,
        "POST",
        "/v1/plugs",
        t,
        Some(r#"{"class":"nope","owner":"ada"}"#),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(http(&api, "POST", "/v1/plugs", t, Some("{")).await.0, 422);

    // Nothing fits: 409 with the per-node diagnosis.
    for n in ["node1", "node2"] {
        let (status, body) = http(&api, "POST", &format!("/v1/nodes/{n}/cordon"), t, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["condition"]["cordoned"], true);
    }
    let (status, body) = http(
        &api,
        "POST",
        "/v1/plugs",
        t,
        Some(r#"{"class":"agent","owner":"bob"}"#),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let rejections = json(&body)["diagnosis"]["rejections"].clone();
    assert_eq!(rejections.as_array().unwrap().len(), 2, "{body}");
    assert_eq!(rejections[0]["reason"], "cordoned");
    for n in ["node1", "node2"] {
        assert_eq!(
            http(&api, "POST", &format!("/v1/nodes/{n}/uncordon"), t, None)
                .await
                .0,
            200
        );
    }
    assert_eq!(
        http(&api, "POST", "/v1/nodes/node9/cordon", t, None)
            .await
            .0,
        404
    );

    // Read, touch, list.
    let (status, body) = http(&api, "GET", &format!("/v1/plugs/{id}"), t, None).await;
    assert_eq!(
        (status, json(&body)["state"].clone()),
        (200, "running".into())
    );
    assert_eq!(http(&api, "GET", "/v1/plugs/nope", t, None).await.0, 404);
    // Every plug response reads like the POST's: host, port, container.
    let got = json(&body);
    for key in ["id", "class", "owner", "node", "host", "port", "container"] {
        assert_eq!(got[key], created[key], "{key}: {got}");
    }
    let (status, body) = http(&api, "POST", &format!("/v1/plugs/{id}/touch"), t, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["port"], 51000, "{body}");
    let (status, body) = http(&api, "GET", "/v1/plugs", t, None).await;
    assert_eq!((status, json(&body).as_array().unwrap().len()), (200, 1));
    assert_eq!(json(&body)[0]["host"], "10.0.0.1", "{body}");
    let (status, body) = http(&api, "GET", "/v1/nodes", t, None).await;
    assert_eq!(status, 200);
    let nodes = json(&body);
    assert_eq!(nodes[0]["name"], "node1");
    assert_eq!(nodes[0]["plugs"], 1);
    assert_eq!(nodes[0]["readiness"]["state"], "ready");

    // Drain moves it; the report comes back.
    let (status, body) = http(&api, "POST", "/v1/nodes/node1/drain?timeout=30s", t, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "drained");
    let (_, body) = http(&api, "GET", &format!("/v1/plugs/{id}"), t, None).await;
    assert_eq!(json(&body)["node"], "node2");

    // Metrics: every sample line is `name{labels} value`.
    let (status, text) = http(&api, "GET", "/metrics", t, None).await;
    assert_eq!(status, 200);
    for want in [
        "fleetctl_reconciles_total",
        "fleetctl_reconcile_duration_seconds_bucket",
        "fleetctl_node_ready{node=\"node1\"}",
        "fleetctl_plugs{",
        "fleetctl_docker_call_duration_seconds_bucket{",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.len() > 10);
    for line in samples {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(valid_series(series), "bad series: {line}");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
    }

    // Delete: gone, port freed.
    let (status, body) = http(&api, "DELETE", &format!("/v1/plugs/{id}"), t, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["deleted"], id.as_str());
    assert_eq!(
        http(&api, "GET", &format!("/v1/plugs/{id}"), t, None)
            .await
            .0,
        404
    );
    api.shutdown.cancel();
}

/// The plug gauge is what the state store holds when scraped — not what the last reconcile
/// pass saw: a plug recorded (by the API, the CLI or another writer) before any pass has run
/// is counted, and one deleted is no longer.
#[tokio::test]
async fn the_plug_gauge_is_read_from_the_store_when_scraped() {
    let store = Store::in_memory().unwrap();
    let plug = fleetctl::store::PlugRecord {
        id: "p1".into(),
        class: "agent".into(),
        owner: "ada".into(),
        node: "node2".into(),
        host_port: 20000,
        state: fleetctl::store::PlugState::Running,
        created_ms: 1,
        last_activity_ms: 1,
        message: None,
    };
    store
        .create_plug_with::<fleetctl::store::StoreError>(|_, _| Ok(plug.clone()))
        .unwrap();
    let api = start_with(store, false).await;
    let (status, text) = http(&api, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("fleetctl_plugs{node=\"node2\",state=\"running\"} 1"),
        "{text}"
    );
    assert_eq!(
        text.matches("fleetctl_reconciles_total 0").count(),
        1,
        "{text}"
    );
    api.shutdown.cancel();
}

//! The Docker side of the transport against a tiny fake engine on a Unix socket (a "local
//! socket" node): API-version negotiation and pinning, refusal of old engines, error mapping.
//! No SSH and no real engine: those are in `e2e_transport.rs`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetctl::transport::{self, Endpoint, ErrorKind, ListFilter, NodeRuntime};

/// Every request path (with query) the fake engine saw.
type Seen = Arc<Mutex<Vec<String>>>;

/// Serves a fake engine speaking `api` on a socket in a temp dir; returns the dir (keep it
/// alive), the socket path and the request log.
async fn fake_engine(api: &'static str) -> (tempfile::TempDir, String, Seen) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(move |State(seen): State<Seen>, req: Request| async move {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            seen.lock().unwrap().push(pq.clone());
            let path = req.uri().path().to_string();
            answer(api, &path)
        })
        .with_state(seen.clone());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (dir, sock.display().to_string(), seen)
}

fn json(body: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `/_ping` as engines answer it: the API version and the engine in headers (`noping-…`: an
/// engine whose ping says nothing, asked `/version` instead).
fn ping(api: &str) -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    let h = r.headers_mut();
    if let Some(api) = api.strip_prefix("podman-") {
        h.insert("Api-Version", api.parse().unwrap());
        h.insert("Libpod-Api-Version", "3.4.4".parse().unwrap());
        h.insert("Server", "Libpod/3.4.4 (linux)".parse().unwrap());
    } else if !api.starts_with("noping-") {
        h.insert("Api-Version", api.parse().unwrap());
        h.insert("Server", "Docker/0.0-fake (linux)".parse().unwrap());
    }
    r
}

fn answer(api: &str, path: &str) -> Response {
    if path == "/_ping" {
        return ping(api);
    }
    let api = api.strip_prefix("noping-").unwrap_or(api);
    let unversioned = path
        .strip_prefix("/v")
        .and_then(|p| p.split_once('/'))
        .map(|(_, rest)| format!("/{rest}"))
        .unwrap_or_else(|| path.to_string());
    match unversioned.as_str() {
        "/version" => match api.strip_prefix("podman-") {
            // Podman's compatible API: its version in a `Podman Engine` component.
            Some(api) => json(serde_json::json!({
                "Version": "3.4.4", "ApiVersion": api,
                "Components": [{"Name": "Podman Engine", "Version": "3.4.4"}]
            })),
            None => json(serde_json::json!({"Version": "0.0-fake", "ApiVersion": api})),
        },
        "/info" => json(serde_json::json!({
            "ServerVersion": "0.0-fake", "NCPU": 3, "MemTotal": 1073741824_u64,
            "Containers": 1, "ContainersRunning": 1, "OperatingSystem": "fake"
        })),
        "/containers/json" => json(serde_json::json!([{
            "Id": "abc", "Names": ["/web"], "Image": "img:1", "Labels": {"fleet.fleet": "f"},
            "State": "running", "Status": "Up 3 minutes (health: starting)", "Created": 7,
            "Ports": [{"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]
        }])),
        "/containers/missing/json" => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"message": "No such container: missing"})),
        )
            .into_response(),
        "/containers/create" => (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"message": "name already in use"})),
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected").into_response(),
    }
}

fn local(node: &str, socket: &str) -> Endpoint {
    Endpoint {
        node: node.into(),
        ssh: None,
        docker_socket: socket.into(),
    }
}

#[tokio::test]
async fn requests_after_negotiation_carry_the_engine_api_version() {
    let (_dir, sock, seen) = fake_engine("1.41").await;
    let rt = transport::connect_docker(&local("n1", &sock)).unwrap();
    let list = rt.list_containers(&ListFilter::default()).await.unwrap();
    assert_eq!(rt.api_version().unwrap().to_string(), "1.41");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "web");
    assert_eq!(
        list[0].health,
        Some(fleetctl::container::Health::Starting),
        "from the status text below API 1.52"
    );
    let info = rt.engine_info().await.unwrap();
    assert_eq!(info.api_version, "1.41");
    assert_eq!((info.cpus, info.memory), (3, 1 << 30));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "/_ping", "the probe is unversioned");
    assert!(
        seen[1].starts_with("/v1.41/containers/json?all=true"),
        "{seen:?}"
    );
    assert_eq!(seen[2], "/v1.41/info", "{seen:?}");
    assert_eq!(seen.len(), 3, "negotiated once: {seen:?}");
}

#[tokio::test]
async fn a_newer_engine_is_spoken_to_at_its_own_version_up_to_bollards() {
    let (_dir, sock, seen) = fake_engine("1.47").await;
    let rt = transport::connect_docker(&local("n1", &sock)).unwrap();
    rt.engine_info().await.unwrap();
    assert_eq!(seen.lock().unwrap()[1], "/v1.47/info");
}

#[tokio::test]
async fn an_engine_older_than_api_1_41_is_refused_before_any_other_call() {
    let (_dir, sock, seen) = fake_engine("1.40").await;
    let rt = transport::connect(&local("old", &sock)).unwrap();
    let err = rt
        .list_containers(&ListFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedEngine, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("node old"), "{err}");
    assert!(
        err.message.contains("1.40") && err.message.contains("1.41"),
        "{err}"
    );
    assert_eq!(*seen.lock().unwrap(), vec!["/_ping".to_string()]);
}

#[tokio::test]
async fn an_engine_whose_ping_says_no_version_is_asked_for_it() {
    let (_dir, sock, seen) = fake_engine("noping-1.41").await;
    let rt = transport::connect_docker(&local("n1", &sock)).unwrap();
    rt.list_containers(&ListFilter::default()).await.unwrap();
    assert_eq!(rt.api_version().unwrap().to_string(), "1.41");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[..2], ["/_ping", "/version"], "{seen:?}");
}

#[tokio::test]
async fn an_old_podman_is_refused_naming_podman_not_docker() {
    let (_dir, sock, seen) = fake_engine("podman-1.40").await;
    let rt = transport::connect(&local("old", &sock)).unwrap();
    let err = rt
        .list_containers(&ListFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnsupportedEngine, "{err}");
    assert!(
        err.message.contains("podman 3.4.4") && err.message.contains("Podman 4.0+"),
        "{err}"
    );
    assert!(!err.message.contains("Docker Engine"), "{err}");
    assert_eq!(*seen.lock().unwrap(), vec!["/_ping".to_string()]);
}

#[tokio::test]
async fn engine_statuses_map_to_error_kinds_with_node_and_container() {
    let (_dir, sock, _seen) = fake_engine("1.41").await;
    let rt = transport::connect(&local("n1", &sock)).unwrap();
    let err = rt.inspect_container("missing").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        "node n1: inspect container missing: No such container: missing"
    );
    let spec = fleetctl::container::ContainerSpec {
        secret_env: Default::default(),
        files: Vec::new(),
        knobs: Default::default(),
        pull: Default::default(),
        network: Default::default(),
        name: "web".into(),
        image: "img:1".into(),
        command: None,
        env: Default::default(),
        labels: Default::default(),
        ports: vec![],
        volumes: vec![],
        restart: fleetctl::container::RestartPolicy::No,
        resources: Default::default(),
        healthcheck: None,
        stop_grace_period: None,
    };
    let err = rt.create_container(&spec).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
    assert_eq!(err.object.as_deref(), Some("web"));
}

#[tokio::test]
async fn a_missing_local_socket_is_unreachable_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nope.sock").display().to_string();
    let rt = transport::connect(&local("gone", &sock)).unwrap();
    let err = rt.engine_info().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
    assert!(err.is_retryable());
    assert!(err.message.contains(&sock), "{err}");
}

/// What the network-and-swarm fake engine saw: method, path and body of each request.
type SeenBodies = Arc<Mutex<Vec<(String, String, String, Option<String>)>>>;

const TOKEN: &str =
    "SWMTKN-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7c";

/// A fake engine speaking `api` for networks and swarm calls; records every request.
async fn swarm_engine(api: &'static str) -> (tempfile::TempDir, String, SeenBodies) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let seen: SeenBodies = Arc::default();
    let app = Router::new()
        .fallback(
            move |State(seen): State<SeenBodies>, req: Request| async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let content_type = req
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string());
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let body = String::from_utf8(body.to_vec()).unwrap();
                seen.lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), body, content_type));
                let v = format!("/v{api}");
                let error = |status, message: String| {
                    (
                        status,
                        axum::Json(serde_json::json!({ "message": message })),
                    )
                        .into_response()
                };
                match (method.as_str(), path.strip_prefix(&v).unwrap_or(&path)) {
                    ("GET", "/_ping") => ping(api),
                    ("GET", "/version") => {
                        json(serde_json::json!({"Version": "0.0-fake", "ApiVersion": api}))
                    }
                    // No Warning: newer engines leave it out.
                    ("POST", "/networks/create") => json(serde_json::json!({"Id": "net1"})),
                    ("GET", "/networks/missing") => {
                        error(StatusCode::NOT_FOUND, "network missing not found".into())
                    }
                    ("DELETE", "/networks/busy") => error(
                        StatusCode::FORBIDDEN,
                        "error while removing network: network busy id 3f has active endpoints"
                            .into(),
                    ),
                    ("GET", "/swarm") => json(serde_json::json!({
                        "ID": "c1", "JoinTokens": {"Worker": TOKEN, "Manager": "SWMTKN-1-m"}
                    })),
                    ("POST", "/swarm/join") => error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid join token {TOKEN}"),
                    ),
                    ("POST", "/swarm/init") => error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "This node is already part of a swarm. Use \"docker swarm leave\" to \
                         leave this swarm and join another one."
                            .into(),
                    ),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected").into_response(),
                }
            },
        )
        .with_state(seen.clone());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (dir, sock.display().to_string(), seen)
}

fn network_spec() -> fleetctl::container::NetworkSpec {
    fleetctl::container::NetworkSpec {
        name: "aims-net".into(),
        driver: fleetctl::container::NetworkDriver::Overlay,
        labels: [("fleet.fleet".to_string(), "aims".to_string())].into(),
        subnet: None,
        mtu: None,
        encrypted: false,
    }
}

#[tokio::test]
async fn networks_are_created_with_check_duplicate_below_api_1_44_only() {
    for (api, check) in [("1.41", Some(true)), ("1.44", None)] {
        let (_dir, sock, seen) = swarm_engine(api).await;
        let rt = transport::connect(&local("n1", &sock)).unwrap();
        assert_eq!(rt.create_network(&network_spec()).await.unwrap(), "net1");
        let seen = seen.lock().unwrap().clone();
        let (method, path, body, content_type) = &seen[1];
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", &*format!("/v{api}/networks/create"))
        );
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["Name"], "aims-net");
        assert_eq!(body["Attachable"], true);
        assert_eq!(
            body.get("CheckDuplicate").and_then(|c| c.as_bool()),
            check,
            "{api}"
        );
    }
}

#[tokio::test]
async fn network_answers_map_to_kinds() {
    let (_dir, sock, _seen) = swarm_engine("1.41").await;
    let rt = transport::connect(&local("n1", &sock)).unwrap();
    assert_eq!(rt.inspect_network("missing").await.unwrap(), None);
    let e = rt.remove_network("busy").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert_eq!(e.object.as_deref(), Some("busy"));
    let e = rt
        .swarm_init("10.0.0.1", &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
}

#[tokio::test]
async fn join_tokens_travel_but_never_show_in_errors() {
    let (_dir, sock, seen) = swarm_engine("1.41").await;
    let rt = transport::connect(&local("n2", &sock)).unwrap();
    let tokens = rt.swarm_join_tokens().await.unwrap();
    assert_eq!(tokens.worker, TOKEN);
    assert!(!format!("{tokens:?}").contains("SWMTKN"));
    let e = rt
        .swarm_join("10.0.0.2", "10.0.0.1:2377", TOKEN)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Api { status: 400 });
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(!shown.contains("SWMTKN"), "{shown}");
    }
    assert_eq!(
        e.to_string(),
        "node n2: swarm join 10.0.0.1:2377: invalid join token <join token>"
    );
    // The engine did get it, in the body.
    let seen = seen.lock().unwrap().clone();
    let (method, path, body, _) = seen.last().unwrap();
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1.41/swarm/join")
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["JoinToken"], TOKEN);
    assert_eq!(body["RemoteAddrs"], serde_json::json!(["10.0.0.1:2377"]));
    assert_eq!(body["ListenAddr"], "10.0.0.2:2377");
    assert_eq!(body["AdvertiseAddr"], "10.0.0.2");
}

/// What the health fake engine saw (paths), and whether its container's probe has run.
#[derive(Clone, Default)]
struct HealthEngine {
    seen: Seen,
    probed: Arc<Mutex<Option<String>>>,
}

/// A fake engine — Podman 4.3 (`podman`) or Docker — with one running container `abc` whose
/// healthcheck (interval 10 s) stays `starting` until libpod's healthcheck endpoint runs it,
/// as on a host without systemd.
async fn health_engine(podman: bool) -> (tempfile::TempDir, String, HealthEngine) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let engine = HealthEngine::default();
    let app = Router::new()
        .fallback(
            move |State(e): State<HealthEngine>, req: Request| async move {
                let path = req.uri().path().to_string();
                e.seen.lock().unwrap().push(path.clone());
                match path.as_str() {
                    "/_ping" if podman => {
                        let mut r = (StatusCode::OK, "OK").into_response();
                        r.headers_mut().insert("Api-Version", "1.41".parse().unwrap());
                        r.headers_mut()
                            .insert("Libpod-Api-Version", "4.3.1".parse().unwrap());
                        r
                    }
                    "/_ping" => ping("1.45"),
                    "/version" if podman => json(serde_json::json!({
                        "Version": "4.3.1", "ApiVersion": "1.41",
                        "Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]
                    })),
                    "/version" => json(serde_json::json!({"Version": "26.1.5", "ApiVersion": "1.45"})),
                    "/v4.0.0/libpod/containers/abc/healthcheck" => {
                        let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
                        *e.probed.lock().unwrap() = Some(now.to_string());
                        json(serde_json::json!({"Status": "healthy", "FailingStreak": 0, "Log": null}))
                    }
                    p if p.ends_with("/containers/web/json") => {
                        let health = match e.probed.lock().unwrap().clone() {
                            None => serde_json::json!({"Status": "starting", "FailingStreak": 0, "Log": null}),
                            Some(at) => serde_json::json!({"Status": "healthy", "FailingStreak": 0,
                                "Log": [{"Start": at, "End": at, "ExitCode": 0, "Output": ""}]}),
                        };
                        json(serde_json::json!({
                            "Id": "abc", "Name": "/web",
                            "State": {"Status": "running", "Running": true, "Health": health},
                            "Config": {"Image": "web:1", "Healthcheck": {
                                "Test": ["CMD-SHELL", "true"], "Interval": 10_000_000_000_i64}}
                        }))
                    }
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected").into_response(),
                }
            },
        )
        .with_state(engine.clone());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (dir, sock.display().to_string(), engine)
}

#[tokio::test]
async fn on_podman_a_stuck_health_is_probed_once_per_interval_when_read() {
    use fleetctl::container::{EngineKind, Health};
    let (_dir, sock, engine) = health_engine(true).await;
    let rt = transport::connect(&local("p1", &sock)).unwrap();
    let d = rt.inspect_container("web").await.unwrap();
    assert_eq!(rt.engine_kind(), Some(EngineKind::Podman));
    assert_eq!(
        d.record.health,
        Some(Health::Healthy),
        "read after the probe"
    );
    let probes = |e: &HealthEngine| {
        e.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains("libpod"))
            .count()
    };
    assert_eq!(probes(&engine), 1);
    assert_eq!(
        engine.seen.lock().unwrap().clone(),
        vec![
            "/_ping",
            "/v1.41/containers/web/json",
            "/v4.0.0/libpod/containers/abc/healthcheck",
            "/v1.41/containers/web/json",
        ],
        "the libpod path is sent as is"
    );
    // Read again at once: the log is fresh and a probe ran within the interval.
    *engine.probed.lock().unwrap() = None;
    let d = rt.inspect_container("web").await.unwrap();
    assert_eq!(d.record.health, Some(Health::Starting));
    assert_eq!(probes(&engine), 1, "at most once per interval");
    let e = rt
        .update_container(
            "abc",
            &transport::ContainerUpdate {
                resources: Default::default(),
                restart: Default::default(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnsupportedEngine, "{e}");
    assert!(
        !engine
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("update"))
    );
}

#[tokio::test]
async fn docker_engines_are_never_probed_by_fleetctl() {
    use fleetctl::container::{EngineKind, Health};
    let (_dir, sock, engine) = health_engine(false).await;
    let rt = transport::connect(&local("d1", &sock)).unwrap();
    let d = rt.inspect_container("web").await.unwrap();
    assert_eq!(rt.engine_kind(), Some(EngineKind::Docker));
    assert_eq!(d.record.health, Some(Health::Starting));
    assert!(
        !engine
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("libpod")),
        "{:?}",
        engine.seen.lock().unwrap()
    );
}

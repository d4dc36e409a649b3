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

fn answer(api: &str, path: &str) -> Response {
    let unversioned = path
        .strip_prefix("/v")
        .and_then(|p| p.split_once('/'))
        .map(|(_, rest)| format!("/{rest}"))
        .unwrap_or_else(|| path.to_string());
    match unversioned.as_str() {
        "/version" => json(serde_json::json!({"Version": "0.0-fake", "ApiVersion": api})),
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
    assert_eq!(seen[0], "/version", "the probe is unversioned");
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
    assert_eq!(*seen.lock().unwrap(), vec!["/version".to_string()]);
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
        network: Default::default(),
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

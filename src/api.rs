//! The controller's HTTP API (axum), on `Fleet.spec.api.listen` (default `127.0.0.1:7411`).
//!
//! Every route but `GET /healthz` needs `Authorization: Bearer TOKEN` (401 otherwise); the token
//! comes from `api.tokenFile`, or, without one, from a file the controller writes next to the
//! state database at start ([`load_or_create_token`]). Handlers hold no logic: they call the
//! controller's operations ([`crate::controller::ops`]), which call `plugs`, `drain` and the
//! store.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` (no token needed: for load balancers and systemd checks) |
//! | `GET /metrics` | Prometheus metrics, OpenMetrics text format |
//! | `GET /v1/nodes` | every node: readiness, conditions, plugs, last observation |
//! | `POST /v1/nodes/{name}/cordon`, `/uncordon` | the node's conditions |
//! | `POST /v1/nodes/{name}/drain[?force=true&timeout=10m]` | the drain report (200 drained, 409 not) |
//! | `GET /v1/plugs` | every plug instance |
//! | `POST /v1/plugs` `{"class","owner"}` | 201 `{id, node, host, port, ...}`; 409 nothing fits (with `diagnosis`), 422 unknown class |
//! | `GET /v1/plugs/{id}`, `DELETE /v1/plugs/{id}` | the plug / `{deleted, notes}`; 404 unknown |
//! | `POST /v1/plugs/{id}/touch` | the plug, started again where there is room if it was stopped or evicted |

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::controller::ops::OpError;
use crate::drain::DrainStatus;
use crate::plugs::{PlugError, PlugView};
use crate::store::{PlugRecord, StoreError};

/// Extension of the generated token file, `<fleet>.api-token` next to the state database (one
/// per fleet: fleets whose state files share a directory do not overwrite each other's token).
pub const TOKEN_FILE_EXTENSION: &str = "api-token";

/// Name of the generated token file of `fleet`: `<fleet>.api-token`.
pub fn token_file_name(fleet: &str) -> String {
    format!("{fleet}.{TOKEN_FILE_EXTENSION}")
}
/// Default drain timeout of `POST /v1/nodes/{name}/drain` (as `fleetctl drain`).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Token file failures.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The configured file cannot be read.
    #[error("cannot read the API token file {path} (api.tokenFile)")]
    Read {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configured file is empty.
    #[error("the API token file {0} (api.tokenFile) is empty")]
    Empty(PathBuf),
    /// The generated file cannot be written.
    #[error("cannot write the API token file {path}")]
    Write {
        /// Path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where the token comes from and what it is.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// The file holding it.
    pub path: PathBuf,
    /// The token.
    pub token: String,
    /// Whether it was generated at this start (no `api.tokenFile` configured).
    pub generated: bool,
}

/// The API token: read from `configured` (`api.tokenFile`, trimmed), or, when none is
/// configured, a fresh random token (256 bits, hex) written to `<fleet>.api-token`
/// ([`token_file_name`]) next to `state_db` with mode 0600 — a new one at every start, so read the file rather than copying
/// the token.
///
/// # Errors
/// The configured file cannot be read or is empty; the generated one cannot be written.
pub fn load_or_create_token(
    configured: Option<&Path>,
    state_db: &Path,
    fleet: &str,
) -> Result<ApiToken, TokenError> {
    if let Some(path) = configured {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(TokenError::Empty(path.to_path_buf()));
        }
        return Ok(ApiToken {
            path: path.to_path_buf(),
            token,
            generated: false,
        });
    }
    let dir = state_db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = token_file_name(fleet);
    let path = dir.join(&name);
    let token = hex::encode(rand::random::<[u8; 32]>());
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::create_dir_all(dir)?;
        // Written beside, then renamed: a reader never sees half a token, and the mode is
        // 0600 from the first byte.
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| TokenError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(ApiToken {
        path,
        token,
        generated: true,
    })
}

struct ApiState {
    ctl: Arc<Controller>,
    token: String,
}

/// The router: `/healthz` open, everything else behind the bearer token.
pub fn router(ctl: Arc<Controller>, token: String) -> Router {
    let state = Arc::new(ApiState { ctl, token });
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{name}/cordon", post(cordon))
        .route("/v1/nodes/{name}/uncordon", post(uncordon))
        .route("/v1/nodes/{name}/drain", post(drain))
        .route("/v1/plugs", get(list_plugs).post(create_plug))
        .route("/v1/plugs/{id}", get(get_plug).delete(delete_plug))
        .route("/v1/plugs/{id}/touch", post(touch_plug))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` is cancelled (then stops accepting and lets
/// requests in flight finish).
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same(t.as_bytes(), st.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer TOKEN; the token is in the controller's token file)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn error(status: StatusCode, message: impl ToString) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn ok(status: StatusCode, value: impl serde::Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

fn plug_error(e: PlugError) -> Response {
    match &e {
        PlugError::NoClass(..) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        PlugError::Unschedulable { diagnosis, .. } => (
            StatusCode::CONFLICT,
            axum::Json(json!({ "error": e.to_string(), "diagnosis": diagnosis })),
        )
            .into_response(),
        PlugError::Store(StoreError::NoPlug(_)) => error(StatusCode::NOT_FOUND, &e),
        PlugError::Transport(_) | PlugError::Image(_) => error(StatusCode::BAD_GATEWAY, &e),
        PlugError::NotReady { .. } | PlugError::Store(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
    }
}

fn op_error(e: OpError) -> Response {
    match e {
        OpError::Plug(p) => plug_error(p),
        OpError::NoNode(..) | OpError::NoRevision(_) => error(StatusCode::NOT_FOUND, &e),
        OpError::Invalid(_) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
        OpError::Differs(_) => error(StatusCode::CONFLICT, &e),
        OpError::Store(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        st.ctl.metrics_text(),
    )
        .into_response()
}

async fn nodes(State(st): State<Arc<ApiState>>) -> Response {
    match st.ctl.nodes() {
        Ok(n) => ok(StatusCode::OK, n),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn cordon(State(st): State<Arc<ApiState>>, UrlPath(name): UrlPath<String>) -> Response {
    match st.ctl.cordon(&name, true, "api") {
        Ok(o) => ok(StatusCode::OK, o),
        Err(e) => op_error(e),
    }
}

async fn uncordon(State(st): State<Arc<ApiState>>, UrlPath(name): UrlPath<String>) -> Response {
    match st.ctl.cordon(&name, false, "api") {
        Ok(o) => ok(StatusCode::OK, o),
        Err(e) => op_error(e),
    }
}

#[derive(Debug, Deserialize)]
struct DrainQuery {
    force: Option<bool>,
    timeout: Option<String>,
}

async fn drain(
    State(st): State<Arc<ApiState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DrainQuery>,
) -> Response {
    let timeout = match q.timeout.as_deref().map(humantime::parse_duration) {
        None => DRAIN_TIMEOUT,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("timeout: {e} (use e.g. 30s, 10m)"),
            );
        }
    };
    match st
        .ctl
        .drain(&name, timeout, q.force.unwrap_or(false), "api", &|_| {})
        .await
    {
        Ok(r) if r.status == DrainStatus::Drained => ok(StatusCode::OK, r),
        Ok(r) => ok(StatusCode::CONFLICT, r),
        Err(e) => op_error(e),
    }
}

fn view(st: &ApiState, p: PlugRecord) -> PlugView {
    PlugView::new(&st.ctl.desired().fleet, p)
}

fn views(st: &ApiState, plugs: Vec<PlugRecord>) -> Vec<PlugView> {
    let loaded = st.ctl.desired();
    plugs
        .into_iter()
        .map(|p| PlugView::new(&loaded.fleet, p))
        .collect()
}

async fn list_plugs(State(st): State<Arc<ApiState>>) -> Response {
    match st.ctl.plugs() {
        Ok(p) => ok(StatusCode::OK, views(&st, p)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(Debug, Deserialize)]
struct CreatePlug {
    class: String,
    owner: String,
}

async fn create_plug(
    State(st): State<Arc<ApiState>>,
    body: Result<axum::Json<CreatePlug>, JsonRejection>,
) -> Response {
    let axum::Json(req) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{e}: send {{\"class\": CLASS, \"owner\": OWNER}} as application/json"),
            );
        }
    };
    match st.ctl.create_plug(&req.class, &req.owner).await {
        Ok(created) => ok(StatusCode::CREATED, created),
        Err(e) => plug_error(e),
    }
}

async fn get_plug(State(st): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Response {
    match st.ctl.store().plug(&id) {
        Ok(p) => ok(StatusCode::OK, view(&st, p)),
        Err(e) => plug_error(e.into()),
    }
}

async fn delete_plug(State(st): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Response {
    match st.ctl.delete_plug(&id).await {
        Ok(notes) => ok(StatusCode::OK, json!({ "deleted": id, "notes": notes })),
        Err(e) => plug_error(e),
    }
}

async fn touch_plug(State(st): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Response {
    match st.ctl.touch_plug(&id).await {
        Ok(p) => ok(StatusCode::OK, view(&st, p)),
        Err(e) => plug_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn a_generated_token_file_is_private_and_new_at_every_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("aims.db");
        let a = load_or_create_token(None, &db, "aims").unwrap();
        assert!(a.generated);
        assert_eq!(a.path, dir.path().join("aims.api-token"));
        assert_eq!(a.token.len(), 64);
        let mode = std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&a.path).unwrap().trim(), a.token);
        let b = load_or_create_token(None, &db, "aims").unwrap();
        assert_ne!(a.token, b.token);
        // Another fleet's state in the same directory gets its own token file.
        let other = load_or_create_token(None, &dir.path().join("blog.db"), "blog").unwrap();
        assert_eq!(other.path, dir.path().join("blog.api-token"));
        assert_eq!(std::fs::read_to_string(&b.path).unwrap().trim(), b.token);
        // A configured file is read as is (trimmed).
        let f = dir.path().join("tok");
        std::fs::write(&f, "  s3cret\n").unwrap();
        let c = load_or_create_token(Some(&f), &db, "aims").unwrap();
        assert_eq!((c.token.as_str(), c.generated), ("s3cret", false));
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            load_or_create_token(Some(&f), &db, "aims"),
            Err(TokenError::Empty(_))
        ));
    }
}

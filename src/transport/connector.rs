//! HTTP to a node's Docker Engine: hyper connectors over an SSH channel or a local Unix socket,
//! the pooled hyper client, and the bollard client on top.
//!
//! One HTTP connection is one `direct-streamlocal@openssh.com` channel on the node's single SSH
//! connection. Idle HTTP connections (channels) are pooled: a new channel per request, bollard's
//! own default, made 2–8 % of requests stall 41–47 ms on our machines (Nagle on the server side
//! meeting delayed ACK); with the pool they vanish (DESIGN §6).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::Docker;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ssh::{SshError, SshSession};

/// Idle HTTP connections (SSH channels) kept per node. Sixteen covers the concurrency of one
/// reconcile pass without holding many idle channels on the node.
pub const POOL_MAX_IDLE_PER_HOST: usize = 16;
/// An idle pooled connection is closed after this; keeps few channels open on an idle fleet.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// bollard's own deadline for request + response headers. Our callers wrap every call in a
/// tighter `tokio::time::timeout` (see `docker.rs`); this only bounds what they do not.
pub const BOLLARD_TIMEOUT_SECS: u64 = 120;
/// The client address bollard puts in every request URI. It must be an `http://` URL with a
/// valid host: hyper derives the `Host` header from it (`None` and `unix://…` both fail).
pub const CLIENT_ADDR: &str = "http://docker.localhost";

/// One SSH channel as a byte stream hyper can speak HTTP over.
pub struct SshStream(russh::ChannelStream<russh::client::Msg>);

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects hyper to the Docker socket of a node through that node's [`SshSession`]: one channel
/// per HTTP connection.
#[derive(Clone)]
pub struct SshConnector {
    session: Arc<SshSession>,
    socket: Arc<str>,
}

impl SshConnector {
    /// A connector to `socket` (a path on the node) over `session`.
    pub fn new(session: Arc<SshSession>, socket: &str) -> Self {
        SshConnector {
            session,
            socket: socket.into(),
        }
    }
}

impl tower_service::Service<Uri> for SshConnector {
    type Response = TokioIo<SshStream>;
    type Error = SshError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, SshError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SshError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let session = self.session.clone();
        let socket = self.socket.clone();
        Box::pin(async move {
            let stream = session.open_streamlocal(&socket).await?;
            Ok(TokioIo::new(SshStream(stream)))
        })
    }
}

/// Connects hyper to a Docker socket on this machine (a node without `ssh`).
#[derive(Clone)]
pub struct UnixConnector {
    path: Arc<PathBuf>,
}

impl UnixConnector {
    /// A connector to the Unix socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixConnector {
            path: Arc::new(path.into()),
        }
    }
}

/// A local Docker socket could not be opened.
#[derive(Debug)]
pub struct LocalSocketError {
    /// The socket path.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

impl std::fmt::Display for LocalSocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot connect to the Docker socket {}: {} (is dockerd running?)",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for LocalSocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = LocalSocketError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, LocalSocketError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LocalSocketError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            match tokio::net::UnixStream::connect(path.as_path()).await {
                Ok(s) => Ok(TokioIo::new(s)),
                Err(source) => Err(LocalSocketError {
                    path: path.to_path_buf(),
                    source,
                }),
            }
        })
    }
}

/// Sends one request, exactly as built, over a client's connection pool: the same HTTP
/// connections (SSH channels) bollard uses. For the few requests bollard cannot make (a field its
/// models lack) or must not make (it logs request and response bodies at debug level, and some
/// carry swarm join tokens). The request URI must be absolute (`CLIENT_ADDR` + versioned path).
pub type RawSender = Arc<
    dyn Fn(
            bollard::BollardRequest,
        ) -> Pin<
            Box<
                dyn Future<
                        Output = Result<
                            http::Response<hyper::body::Incoming>,
                            bollard::errors::Error,
                        >,
                    > + Send,
            >,
        > + Send
        + Sync,
>;

/// A bollard client over `connector`, with a pooled hyper client (see the module docs). The
/// client is not version-negotiated yet.
pub fn docker_client<C>(connector: C) -> Docker
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    clients(connector).0
}

/// [`docker_client`], and a [`RawSender`] sharing its connection pool.
pub fn clients<C>(connector: C) -> (Docker, RawSender)
where
    C: tower_service::Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Connection + Unpin + Send + 'static,
    C::Future: Send + Unpin + 'static,
    C::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector);
    let raw_client = client.clone();
    let raw: RawSender = Arc::new(move |req: bollard::BollardRequest| {
        let client = raw_client.clone();
        Box::pin(async move {
            client
                .request(req)
                .await
                .map_err(bollard::errors::Error::from)
        })
    });
    let docker = Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        Some(CLIENT_ADDR),
        BOLLARD_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("a custom transport with an http:// address always builds");
    (docker, raw)
}

/// A bollard client speaking `version`, over the connections (and pool) of `raw`.
pub fn docker_over(raw: RawSender, version: &bollard::ClientVersion) -> Docker {
    Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| raw(req),
        Some(CLIENT_ADDR),
        BOLLARD_TIMEOUT_SECS,
        version,
    )
    .expect("a custom transport with an http:// address always builds")
}

/// Rewrites the request path to `/v{version}/...` unless it is versioned already.
///
/// bollard 0.21.1 sends unversioned paths, so the engine answers at its own maximum API version;
/// pinning the negotiated version makes request and response shapes those fleetctl expects.
pub fn pin_api_version<B>(req: http::Request<B>, version: &str) -> http::Request<B> {
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.clone().into_parts();
    if let Some(pq) = &uri.path_and_query {
        let rewritten = versioned_path(pq.as_str(), version);
        if let Ok(pq) = rewritten.parse() {
            uri.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(uri) {
                parts.uri = u;
            }
        }
    }
    http::Request::from_parts(parts, body)
}

/// `/containers/json?all=true` → `/v1.41/containers/json?all=true`; already versioned paths are
/// left alone: Docker's `/v1.41/…` and Podman's libpod `/v4.0.0/libpod/…` (three parts).
pub fn versioned_path(path_and_query: &str, version: &str) -> String {
    let already = path_and_query
        .strip_prefix("/v")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|v| {
            let parts: Vec<&str> = v.split('.').collect();
            (2..=3).contains(&parts.len())
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
        });
    if already {
        path_and_query.to_string()
    } else {
        format!("/v{version}{path_and_query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_path_prefixes_once() {
        assert_eq!(
            versioned_path("/containers/json?all=true", "1.41"),
            "/v1.41/containers/json?all=true"
        );
        assert_eq!(versioned_path("/v1.41/info", "1.41"), "/v1.41/info");
        assert_eq!(versioned_path("/version", "1.44"), "/v1.44/version");
        assert_eq!(versioned_path("/volumes/x", "1.41"), "/v1.41/volumes/x");
        // Podman's libpod API is versioned in three parts.
        assert_eq!(
            versioned_path("/v4.0.0/libpod/containers/abc/healthcheck", "1.41"),
            "/v4.0.0/libpod/containers/abc/healthcheck"
        );
        assert_eq!(versioned_path("/v1/x", "1.41"), "/v1.41/v1/x");
        assert_eq!(versioned_path("/v1.2.3.4/x", "1.41"), "/v1.41/v1.2.3.4/x");
    }

    #[test]
    fn pin_api_version_keeps_scheme_host_and_query() {
        let req =
            http::Request::get("http://docker.localhost/containers/json?all=true&filters=%7B%7D")
                .body(())
                .unwrap();
        let req = pin_api_version(req, "1.41");
        assert_eq!(
            req.uri().to_string(),
            "http://docker.localhost/v1.41/containers/json?all=true&filters=%7B%7D"
        );
    }
}

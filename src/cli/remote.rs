//! Handing a command to a controller that runs on another machine, through its HTTP API
//! (`--controller URL` or `$FLEETCTL_CONTROLLER`, with the bearer token in `$FLEETCTL_TOKEN`).
//! A controller on this machine that shares our state file is reached through the state file
//! instead (`handoff`).

use std::time::Duration;

use anyhow::{Context, bail};
use hyper::body::Body;

/// Environment variable holding the API token for `--controller`.
pub const TOKEN_ENV: &str = "FLEETCTL_TOKEN";
/// How long one API call may take ([`Remote::call_within`] for longer ones: a drain).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A controller's API, as given on the command line.
#[derive(Clone)]
pub struct Remote {
    /// `host:port`.
    authority: String,
    /// The bearer token.
    token: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Remote")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// An API answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body (`null` when empty or not JSON).
    pub body: serde_json::Value,
}

impl Answer {
    /// The controller's error text (`{"error": …}`), else the status.
    pub fn error(&self) -> String {
        self.body
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("the controller answered HTTP {}", self.status))
    }
}

impl Remote {
    /// The controller given by `--controller` (or `$FLEETCTL_CONTROLLER`), with the token from
    /// `$FLEETCTL_TOKEN`; `None` when no controller was given.
    ///
    /// # Errors
    /// A URL that is not `http://HOST:PORT`, or no token.
    pub fn from_options(url: Option<&str>) -> anyhow::Result<Option<Remote>> {
        let Some(url) = url else {
            return Ok(None);
        };
        let authority = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if url.starts_with("https://") || authority.contains('/') || !authority.contains(':') {
            bail!("--controller {url:?}: give the controller's API as http://HOST:PORT");
        }
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!("--controller needs the controller's API token in ${TOKEN_ENV}")
            })?;
        Ok(Some(Remote {
            authority: authority.to_string(),
            token,
        }))
    }

    /// `METHOD path` with an optional JSON body; the answer whatever its status.
    ///
    /// # Errors
    /// The controller cannot be reached, or the call timed out.
    pub fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        self.call_within(method, path, body, CALL_TIMEOUT)
    }

    /// [`Remote::call`], waiting up to `limit` for the answer.
    ///
    /// # Errors
    /// As [`Remote::call`].
    pub fn call_within(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
        limit: Duration,
    ) -> anyhow::Result<Answer> {
        let rt = super::common::runtime()?;
        let what = format!("{method} http://{}{path}", self.authority);
        rt.block_on(async {
            tokio::time::timeout(limit, self.send(method, path, body))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {limit:?}"))?
        })
        .with_context(|| format!("handing the command to the controller ({what})"))
    }

    /// The controller's address, for messages.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<Answer> {
        let tcp = tokio::net::TcpStream::connect(&self.authority).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(payload)?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let mut incoming = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_frame(cx)).await
        {
            if let Ok(data) = frame?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        })
    }
}

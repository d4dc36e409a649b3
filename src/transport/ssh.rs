//! One SSH connection per node (russh), shared by every Docker call to that node.
//!
//! [`SshSession`] owns the node's connection. It connects lazily on first use, serialises
//! (re)connects behind one lock, and after a connection drops it reconnects in the background
//! with capped, jittered exponential backoff. Host-key and authentication failures are permanent:
//! they are reported on every use (with the node name) and never retried until
//! [`SshSession::reset`]. The connection state is published on a [`watch`] channel
//! ([`SshSession::state`]) so a controller can resubscribe event streams after a reconnect.
//!
//! Docker traffic runs over `direct-streamlocal@openssh.com` channels opened by
//! [`SshSession::open_streamlocal`]; channels are not sshd "sessions", so sshd's `MaxSessions`
//! does not limit them and sshd sees exactly one connection per node per fleetctl process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::sync::{Mutex, oneshot, watch};
use tokio::time::Instant;

use super::error::{ErrorKind, TransportError};
use super::hostkey::{self, HostKeyPolicy, HostKeyRejection, Verdict};
use super::{CONNECT_TIMEOUT, SshEndpoint};

/// Keepalive interval: an idle connection is probed this often, so a dead peer (VPS gone, NAT
/// state dropped) is noticed within `KEEPALIVE_INTERVAL × (KEEPALIVE_MAX + 1)` ≈ 60 s without an
/// inactivity timeout (an idle controller is legitimately idle for hours).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalives before the connection is declared dead.
pub const KEEPALIVE_MAX: usize = 3;
/// Opening one channel to the Docker socket is a single round trip; a node that does not answer
/// it within this is treated as unreachable for the call.
pub const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay after a failed attempt; doubles per consecutive failure.
pub const RECONNECT_INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Reconnect delay cap: a node that has been down for a while is probed once a minute.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(60);

/// What went wrong on the SSH side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshErrorKind {
    /// The host key was refused (see [`SshError::host_key`]). Permanent.
    HostKey,
    /// Authentication failed, or no usable key. Permanent.
    Auth,
    /// Invalid settings (unparseable pinned key). Permanent.
    Config,
    /// TCP, SSH transport or channel failure. Retried with backoff.
    Unreachable,
    /// The connection attempt or channel open did not finish in time. Retried with backoff.
    Timeout,
}

/// An SSH-level failure. Cloneable, so one failed attempt can be reported to every caller that
/// waited on it.
#[derive(Debug, Clone)]
pub struct SshError {
    /// Failure class.
    pub kind: SshErrorKind,
    /// What happened and, where there is one, what to do.
    pub message: String,
    /// The host-key verdict when `kind` is [`SshErrorKind::HostKey`].
    pub host_key: Option<Box<HostKeyRejection>>,
}

impl SshError {
    fn new(kind: SshErrorKind, message: impl Into<String>) -> Self {
        SshError {
            kind,
            message: message.into(),
            host_key: None,
        }
    }

    /// Whether retrying cannot help until an operator acts.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind,
            SshErrorKind::HostKey | SshErrorKind::Auth | SshErrorKind::Config
        )
    }

    /// The transport error for operation `op` on `node`.
    pub fn to_transport(&self, node: &str, op: &'static str) -> TransportError {
        let kind = match self.kind {
            SshErrorKind::HostKey => ErrorKind::HostKey,
            SshErrorKind::Auth => ErrorKind::Auth,
            SshErrorKind::Config => ErrorKind::Other,
            SshErrorKind::Unreachable => ErrorKind::Unreachable,
            SshErrorKind::Timeout => ErrorKind::Timeout,
        };
        TransportError::new(node, op, kind, self.message.clone()).with_source(self.clone())
    }
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SshError {}

/// The connection state of one node, as published by [`SshSession::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected yet (connections are made on first use).
    Idle,
    /// Connected and authenticated. `generation` counts connections: a new value means a new
    /// connection, so event streams must be resubscribed (and state resynced).
    Connected {
        /// 1 for the first connection, +1 per reconnect.
        generation: u64,
    },
    /// Not connected: the last attempt failed or the connection dropped.
    Down {
        /// Why, in words.
        cause: String,
        /// Whether the cause is permanent (host key, auth): no reconnect is attempted.
        permanent: bool,
    },
}

/// The error type of our russh client handler: a host-key verdict survives the trip through
/// russh's connect instead of becoming `UnknownKey`.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Ssh(russh::Error),
    HostKey(HostKeyRejection),
    /// `fetch_host_key` captured the key and stops the handshake on purpose.
    Captured,
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Ssh(e)
    }
}

/// What the handler does with the server's key.
enum KeyMode {
    Verify(Arc<HostKeyPolicy>),
    Capture(Arc<StdMutex<Option<PresentedKey>>>),
}

/// russh client callbacks for one connection.
pub(crate) struct ClientHandler {
    node: String,
    host: String,
    port: u16,
    mode: KeyMode,
    /// Why the session ended, for [`ConnState::Down`].
    disconnect_reason: Arc<StdMutex<Option<String>>>,
    /// Dropped with the handler, i.e. when the session task ends: the watcher's signal.
    _alive: Option<oneshot::Sender<()>>,
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let address = format!("{}:{}", self.host, self.port);
        let (key, is_cert) = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => (key.clone(), false),
            PublicKeyOrCertificate::Certificate(cert) => {
                (PublicKey::from(cert.public_key().clone()), true)
            }
        };
        if let KeyMode::Capture(slot) = &self.mode {
            *slot.lock().expect("capture slot") = Some(PresentedKey {
                key: key.clone(),
                certificate: is_cert,
            });
            return Err(HandlerError::Captured);
        }
        let verdict = match &self.mode {
            _ if is_cert => Verdict::Certificate,
            KeyMode::Verify(policy) => policy.check(&self.host, self.port, &key),
            KeyMode::Capture(_) => unreachable!("handled above"),
        };
        if verdict == Verdict::Trusted {
            return Ok(true);
        }
        Err(HandlerError::HostKey(HostKeyRejection {
            node: self.node.clone(),
            address,
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: hostkey::fingerprint(&key),
            verdict,
        }))
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (text, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => (
                format!("the node closed the SSH connection ({})", info.message),
                Ok(()),
            ),
            client::DisconnectReason::Error(e) => (describe_handler_error(&e), Err(e)),
        };
        *self.disconnect_reason.lock().expect("reason slot") = Some(text);
        result
    }
}

fn describe_handler_error(e: &HandlerError) -> String {
    match e {
        HandlerError::Ssh(russh::Error::KeepaliveTimeout) => {
            "the node stopped answering SSH keepalives".to_string()
        }
        HandlerError::Ssh(e) => format!("SSH connection lost: {e}"),
        HandlerError::HostKey(r) => r.to_string(),
        HandlerError::Captured => "host key captured".to_string(),
    }
}

/// A host key as a server presented it (see [`fetch_host_key`]).
#[derive(Debug, Clone)]
pub struct PresentedKey {
    /// The key (for a certificate: the key it certifies).
    pub key: PublicKey,
    /// Whether the server presented an OpenSSH certificate rather than a plain key.
    pub certificate: bool,
}

impl PresentedKey {
    /// `SHA256:...`, as OpenSSH prints it.
    pub fn fingerprint(&self) -> String {
        hostkey::fingerprint(&self.key)
    }
}

/// The connection slot behind the session lock.
struct Slot {
    handle: Option<Arc<Handle<ClientHandler>>>,
    /// Consecutive failed attempts (0 after a success).
    failures: u32,
    /// No new attempt before this instant (backoff); callers get `last_error` meanwhile.
    retry_at: Option<Instant>,
    last_error: Option<SshError>,
}

/// The one SSH connection to one node. See the module docs.
pub struct SshSession {
    node: String,
    endpoint: SshEndpoint,
    policy: Arc<HostKeyPolicy>,
    config: Arc<client::Config>,
    slot: Mutex<Slot>,
    state: watch::Sender<ConnState>,
    attempts: AtomicU64,
    generation: AtomicU64,
    /// Set by [`SshSession::close`]: the drop that follows is not reconnected in the background.
    closed_on_purpose: AtomicBool,
    me: Weak<SshSession>,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("node", &self.node)
            .field("endpoint", &self.endpoint)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl SshSession {
    /// A session for `node` at `endpoint`. Nothing is connected yet.
    ///
    /// # Errors
    /// The pinned host key does not parse ([`SshErrorKind::Config`]).
    pub fn new(node: &str, endpoint: SshEndpoint) -> Result<Arc<Self>, SshError> {
        let policy = HostKeyPolicy::new(endpoint.host_key.as_deref(), &endpoint.known_hosts_file)
            .map_err(|m| SshError::new(SshErrorKind::Config, m))?;
        let config = client_config(&policy, &endpoint);
        let (state, _) = watch::channel(ConnState::Idle);
        Ok(Arc::new_cyclic(|me| SshSession {
            node: node.to_string(),
            endpoint,
            policy: Arc::new(policy),
            config,
            slot: Mutex::new(Slot {
                handle: None,
                failures: 0,
                retry_at: None,
                last_error: None,
            }),
            state,
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            closed_on_purpose: AtomicBool::new(false),
            me: me.clone(),
        }))
    }

    /// Node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The endpoint this session dials.
    pub fn endpoint(&self) -> &SshEndpoint {
        &self.endpoint
    }

    /// Connection state; changes are published as they happen.
    pub fn state(&self) -> watch::Receiver<ConnState> {
        self.state.subscribe()
    }

    /// How many times this session dialled the node (TCP connect + handshake), successful or not.
    pub fn connect_attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// How many connections were established (authenticated) so far.
    pub fn connections_established(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Forgets a failure (including a permanent one) so the next use connects again at once,
    /// e.g. after the operator ran `fleetctl trust`.
    pub async fn reset(&self) {
        let mut slot = self.slot.lock().await;
        slot.failures = 0;
        slot.retry_at = None;
        slot.last_error = None;
    }

    /// Closes the connection (if any). The next use reconnects.
    pub async fn close(&self) {
        self.closed_on_purpose.store(true, Ordering::Relaxed);
        let handle = self.slot.lock().await.handle.take();
        if let Some(h) = handle {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "fleetctl closing", "en")
                .await;
        }
    }

    /// The live connection, connecting first when there is none.
    ///
    /// Concurrent callers share one attempt. While a failed node is backing off, callers get
    /// the last error immediately instead of dialling again.
    ///
    /// # Errors
    /// Host key refused, authentication failed, node unreachable or too slow.
    pub(crate) async fn handle(&self) -> Result<Arc<Handle<ClientHandler>>, SshError> {
        let mut slot = self.slot.lock().await;
        if let Some(h) = &slot.handle {
            if !h.is_closed() {
                return Ok(h.clone());
            }
            slot.handle = None;
        }
        if let Some(err) = &slot.last_error {
            if err.is_permanent() {
                return Err(err.clone());
            }
            if let Some(at) = slot.retry_at {
                let now = Instant::now();
                if now < at {
                    let mut err = err.clone();
                    err.message = format!(
                        "{} (next attempt in {:.1}s)",
                        err.message,
                        (at - now).as_secs_f64()
                    );
                    return Err(err);
                }
            }
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("ssh_connect", node = %self.node);
        match tracing::Instrument::instrument(self.connect_once(), span).await {
            Ok((handle, alive, reason)) => {
                let handle = Arc::new(handle);
                slot.handle = Some(handle.clone());
                slot.failures = 0;
                slot.retry_at = None;
                slot.last_error = None;
                self.closed_on_purpose.store(false, Ordering::Relaxed);
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                self.state.send_replace(ConnState::Connected { generation });
                tracing::debug!(node = %self.node, generation, "ssh connected");
                tokio::spawn(watch_connection(self.me.clone(), alive, reason, generation));
                Ok(handle)
            }
            Err(err) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.retry_at =
                    Some(Instant::now() + RECONNECT.jittered(slot.failures, rand::random::<f64>()));
                slot.last_error = Some(err.clone());
                self.state.send_replace(ConnState::Down {
                    cause: err.message.clone(),
                    permanent: err.is_permanent(),
                });
                tracing::debug!(node = %self.node, error = %err.message, "ssh connect failed");
                Err(err)
            }
        }
    }

    /// Opens a `direct-streamlocal@openssh.com` channel to `socket_path` on the node.
    ///
    /// # Errors
    /// Host key refused, authentication failed, node unreachable or too slow (connecting first
    /// when needed); sshd refused the channel (streamlocal forwarding disabled, socket missing,
    /// permission denied) or did not answer in time.
    pub async fn open_streamlocal(
        &self,
        socket_path: &str,
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let handle = self.handle().await?;
        let opened = tokio::time::timeout(
            CHANNEL_OPEN_TIMEOUT,
            handle.channel_open_direct_streamlocal(socket_path),
        )
        .await
        .map_err(|_| {
            SshError::new(
                SshErrorKind::Timeout,
                format!(
                    "opening a channel to {socket_path} took longer than {}s",
                    CHANNEL_OPEN_TIMEOUT.as_secs()
                ),
            )
        })?;
        match opened {
            Ok(channel) => Ok(channel.into_stream()),
            Err(russh::Error::ChannelOpenFailure(reason)) => {
                let why = match reason {
                    russh::ChannelOpenFailure::AdministrativelyProhibited => {
                        "administratively prohibited: sshd must allow it \
                         (AllowStreamLocalForwarding yes, DisableForwarding no, and no \
                         `restrict`/`no-port-forwarding` on the authorized key)"
                            .to_string()
                    }
                    russh::ChannelOpenFailure::ConnectFailed => {
                        "connect failed: is dockerd running, and may the SSH user use its socket \
                         (root or the docker group)?"
                            .to_string()
                    }
                    other => format!("{other:?}"),
                };
                Err(SshError::new(
                    SshErrorKind::Unreachable,
                    format!("sshd refused a channel to the Docker socket {socket_path}: {why}"),
                ))
            }
            Err(e) => Err(SshError::new(
                SshErrorKind::Unreachable,
                format!("opening a channel to {socket_path}: {e}"),
            )),
        }
    }

    /// Runs `command` in an SSH session channel on the connection (sshd's `MaxSessions` counts
    /// it while it runs) and returns its exit status and standard output. Only fixed commands of
    /// fleetctl's go here (`df` of the engine's data root): nothing an operator or a manifest
    /// wrote, so no secret can reach a node's process list this way.
    ///
    /// # Errors
    /// The connection failed, sshd refused a session (a key restricted to forwarding), or the
    /// command did not finish within `limit` ([`SshErrorKind::Timeout`]).
    pub async fn run(
        &self,
        command: &str,
        limit: Duration,
    ) -> Result<(Option<u32>, Vec<u8>, String), SshError> {
        let handle = self.handle().await?;
        let mut channel = tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, handle.channel_open_session())
            .await
            .map_err(|_| {
                SshError::new(SshErrorKind::Timeout, "opening a session channel timed out")
            })?
            .map_err(|e| {
                SshError::new(
                    SshErrorKind::Unreachable,
                    format!("sshd refused a session channel: {e}"),
                )
            })?;
        let work = async {
            channel.exec(true, command).await.map_err(|e| {
                SshError::new(
                    SshErrorKind::Unreachable,
                    format!("running {command:?}: {e}"),
                )
            })?;
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut status = None;
            while let Some(msg) = channel.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    russh::ChannelMsg::ExtendedData { data, ext: 1 } if err.len() < 4096 => {
                        err.extend_from_slice(&data)
                    }
                    russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    russh::ChannelMsg::Failure => {
                        return Err(SshError::new(
                            SshErrorKind::Unreachable,
                            "sshd refused to run a command (a key restricted to forwarding, or a \
                             forced command?)",
                        ));
                    }
                    russh::ChannelMsg::Eof if status.is_some() => break,
                    russh::ChannelMsg::Close => break,
                    _ => {}
                }
            }
            let first = String::from_utf8_lossy(&err)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            Ok((status, out, first))
        };
        let result = tokio::time::timeout(limit, work).await.map_err(|_| {
            SshError::new(
                SshErrorKind::Timeout,
                format!("the command took longer than {}s", limit.as_secs()),
            )
        });
        // Closed whatever happened: sshd counts an open session against MaxSessions.
        let _ = channel.close().await;
        result?
    }

    /// One connection attempt: TCP, key exchange with the host-key check, authentication, all
    /// within [`CONNECT_TIMEOUT`].
    async fn connect_once(
        &self,
    ) -> Result<
        (
            Handle<ClientHandler>,
            oneshot::Receiver<()>,
            Arc<StdMutex<Option<String>>>,
        ),
        SshError,
    > {
        let (alive_tx, alive_rx) = oneshot::channel();
        let reason = Arc::new(StdMutex::new(None));
        let handler = ClientHandler {
            node: self.node.clone(),
            host: self.endpoint.host.clone(),
            port: self.endpoint.port,
            mode: KeyMode::Verify(self.policy.clone()),
            disconnect_reason: reason.clone(),
            _alive: Some(alive_tx),
        };
        let ep = &self.endpoint;
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| {
                    SshError::new(
                        SshErrorKind::Unreachable,
                        format!("cannot reach {}:{}: {e}", ep.host, ep.port),
                    )
                })?;
            let _ = tcp.set_nodelay(true);
            let mut handle =
                client::connect_stream(self.config.clone(), QuickAckStream(tcp), handler)
                    .await
                    .map_err(|e| handshake_error(ep, e))?;
            authenticate(&mut handle, ep).await?;
            Ok::<_, SshError>(handle)
        };
        let handle = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| {
                SshError::new(
                    SshErrorKind::Timeout,
                    format!(
                        "no SSH connection to {}:{} within {}s",
                        ep.host,
                        ep.port,
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })??;
        Ok((handle, alive_rx, reason))
    }

    /// Seconds until the next attempt is allowed; `None` when the failure is permanent or the
    /// session is connected.
    async fn next_attempt_in(&self) -> Option<Duration> {
        let slot = self.slot.lock().await;
        if slot.handle.as_ref().is_some_and(|h| !h.is_closed()) {
            return None;
        }
        if slot.last_error.as_ref().is_some_and(SshError::is_permanent) {
            return None;
        }
        Some(
            slot.retry_at
                .map(|at| at.saturating_duration_since(Instant::now()))
                .unwrap_or_default(),
        )
    }
}

/// The TCP connection to sshd, acknowledging every segment at once (Linux `TCP_QUICKACK`,
/// re-armed after each read: the kernel clears it).
///
/// Why: sshd leaves Nagle on for non-interactive connections, so when it sends a response as two
/// small packets the second waits for our ACK of the first — and a delayed ACK costs 40 ms. With
/// the channel pool this still hit about 1 request in 700 on OpenSSH 9.2; acknowledging at once
/// removes the wait. `TCP_NODELAY` on our side does not help: the stall is in sshd's sends.
struct QuickAckStream(tokio::net::TcpStream);

impl tokio::io::AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        }
        r
    }
}

impl tokio::io::AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Waits for connection `generation` to end, publishes [`ConnState::Down`], then reconnects with
/// backoff until connected again, the failure is permanent, or the session is dropped.
///
/// Returns a boxed future (not an `async fn`): it calls [`SshSession::handle`], which spawns it,
/// and the explicit `Send` bound breaks that type cycle.
fn watch_connection(
    session: Weak<SshSession>,
    alive: oneshot::Receiver<()>,
    reason: Arc<StdMutex<Option<String>>>,
    generation: u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let _ = alive.await; // resolves (Err) when the session task drops the handler
        let Some(s) = session.upgrade() else { return };
        let cause = reason
            .lock()
            .expect("reason slot")
            .take()
            .unwrap_or_else(|| "SSH connection closed".to_string());
        {
            // Under the slot lock, like `handle()` publishing `Connected`: a caller that
            // reconnected meanwhile is never overwritten with `Down`.
            let _slot = s.slot.lock().await;
            if s.generation.load(Ordering::Relaxed) != generation {
                return; // a newer connection exists already
            }
            if s.closed_on_purpose.load(Ordering::Relaxed) {
                s.state.send_replace(ConnState::Idle);
                return;
            }
            s.state.send_replace(ConnState::Down {
                cause: cause.clone(),
                permanent: false,
            });
        }
        tracing::info!(node = %s.node, %cause, "ssh connection lost; reconnecting");
        drop(s);
        loop {
            let Some(s) = session.upgrade() else { return };
            let Some(wait) = s.next_attempt_in().await else {
                return;
            };
            drop(s);
            tokio::time::sleep(wait).await;
            let Some(s) = session.upgrade() else { return };
            match s.handle().await {
                Ok(_) => return, // handle() spawned the watcher of the new connection
                Err(e) if e.is_permanent() => return,
                Err(_) => continue,
            }
        }
    })
}

/// Reconnect backoff: 0.5 s doubling per consecutive failure, capped at
/// [`RECONNECT_MAX_DELAY`], jittered so that nodes that failed together do not retry in
/// lockstep.
pub const RECONNECT: crate::backoff::Policy =
    crate::backoff::Policy::new(RECONNECT_INITIAL_DELAY, RECONNECT_MAX_DELAY);

/// russh client settings: keepalive 15 s × 3, no inactivity timeout, `TCP_NODELAY`, and host-key
/// algorithms ordered so the ones already known for this host come first (as OpenSSH does).
fn client_config(policy: &HostKeyPolicy, ep: &SshEndpoint) -> Arc<client::Config> {
    let mut preferred = russh::Preferred::default();
    let known = policy.known_algorithms(&ep.host, ep.port);
    if !known.is_empty() {
        let mut keys: Vec<russh::keys::Algorithm> = Vec::new();
        for k in &known {
            if k.clone().is_rsa() {
                // A recorded ssh-rsa key is verified with any RSA signature algorithm.
                for h in [
                    Some(russh::keys::HashAlg::Sha512),
                    Some(russh::keys::HashAlg::Sha256),
                    None,
                ] {
                    keys.push(russh::keys::Algorithm::Rsa { hash: h });
                }
            } else {
                keys.push(k.clone());
            }
        }
        for k in preferred.key.iter() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        preferred.key = keys.into();
    }
    Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        nodelay: true,
        preferred,
        ..Default::default()
    })
}

/// Maps a failed `client::connect` (TCP + key exchange).
fn handshake_error(ep: &SshEndpoint, e: HandlerError) -> SshError {
    match e {
        HandlerError::HostKey(r) => SshError {
            kind: SshErrorKind::HostKey,
            message: r.to_string(),
            host_key: Some(Box::new(r)),
        },
        HandlerError::Captured => SshError::new(SshErrorKind::Unreachable, "host key captured"),
        HandlerError::Ssh(russh::Error::IO(io)) => SshError::new(
            SshErrorKind::Unreachable,
            format!("cannot reach {}:{}: {io}", ep.host, ep.port),
        ),
        HandlerError::Ssh(e) => SshError::new(
            SshErrorKind::Unreachable,
            format!("SSH handshake with {}:{} failed: {e}", ep.host, ep.port),
        ),
    }
}

/// Public-key authentication: `identityFile` when given; else each key of ssh-agent
/// (`SSH_AUTH_SOCK`), then `~/.ssh/id_ed25519`.
async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    ep: &SshEndpoint,
) -> Result<(), SshError> {
    let auth_err = |m: String| SshError::new(SshErrorKind::Auth, m);
    let transport_err = |e: russh::Error| {
        SshError::new(
            SshErrorKind::Unreachable,
            format!(
                "SSH connection to {}:{} lost during authentication: {e}",
                ep.host, ep.port
            ),
        )
    };
    if let Some(path) = &ep.identity_file {
        let key = load_key(path).map_err(auth_err)?;
        if try_key(handle, &ep.user, key)
            .await
            .map_err(transport_err)?
        {
            return Ok(());
        }
        return Err(auth_err(format!(
            "{}@{}:{} refused the key {} (is its public key in the user's authorized_keys?)",
            ep.user,
            ep.host,
            ep.port,
            path.display()
        )));
    }
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = rsa_hash(handle, &key).await;
                    match handle
                        .authenticate_publickey_with(&ep.user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "ssh-agent could not sign"),
                    }
                }
                tried.push("the keys of ssh-agent".to_string());
            }
            Err(e) => tracing::debug!(error = %e, "ssh-agent not usable"),
        }
    }
    let default = home_dir().join(".ssh/id_ed25519");
    if default.exists() {
        let key = load_key(&default).map_err(auth_err)?;
        if try_key(handle, &ep.user, key)
            .await
            .map_err(transport_err)?
        {
            return Ok(());
        }
        tried.push(default.display().to_string());
    }
    Err(auth_err(if tried.is_empty() {
        format!(
            "no SSH key to log in to {}@{}:{}: set ssh.identityFile, or run ssh-agent, or create ~/.ssh/id_ed25519",
            ep.user, ep.host, ep.port
        )
    } else {
        format!(
            "{}@{}:{} refused {}",
            ep.user,
            ep.host,
            ep.port,
            tried.join(" and ")
        )
    }))
}

fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, String> {
    russh::keys::load_secret_key(path, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => format!(
            "the identity file {} is passphrase-protected: load it into ssh-agent and drop \
             identityFile, or use a key without a passphrase",
            path.display()
        ),
        e => format!("cannot read the identity file {}: {e}", path.display()),
    })
}

async fn try_key(
    handle: &mut Handle<ClientHandler>,
    user: &str,
    key: russh::keys::PrivateKey,
) -> Result<bool, russh::Error> {
    let hash = rsa_hash(handle, key.public_key()).await;
    let r = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await?;
    Ok(r.success())
}

async fn rsa_hash(handle: &Handle<ClientHandler>, key: &PublicKey) -> Option<russh::keys::HashAlg> {
    if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

/// The current user's home directory (`$HOME`, else `/root`).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Expands a leading `~` or `~/` to the home directory.
pub fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        home_dir()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home_dir().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Connects to `endpoint` only far enough to see its host key, and disconnects without
/// authenticating. For `fleetctl trust`: the caller shows the fingerprint and decides.
///
/// # Errors
/// The node cannot be reached or the handshake fails before the key is presented.
pub async fn fetch_host_key(endpoint: &SshEndpoint) -> Result<PresentedKey, SshError> {
    let slot = Arc::new(StdMutex::new(None));
    let handler = ClientHandler {
        node: String::new(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        mode: KeyMode::Capture(slot.clone()),
        disconnect_reason: Arc::new(StdMutex::new(None)),
        _alive: None,
    };
    let policy = HostKeyPolicy::new(endpoint.host_key.as_deref(), &endpoint.known_hosts_file)
        .unwrap_or_else(|_| HostKeyPolicy::KnownHosts(endpoint.known_hosts_file.clone()));
    let config = client_config(&policy, endpoint);
    let attempt = client::connect(config, (endpoint.host.as_str(), endpoint.port), handler);
    let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await;
    if let Some(key) = slot.lock().expect("capture slot").take() {
        return Ok(key);
    }
    match result {
        Err(_) => Err(SshError::new(
            SshErrorKind::Timeout,
            format!(
                "no SSH handshake with {}:{} within {}s",
                endpoint.host,
                endpoint.port,
                CONNECT_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(handshake_error(endpoint, e)),
        Ok(Ok(_)) => Err(SshError::new(
            SshErrorKind::Unreachable,
            "the server completed a handshake without presenting a host key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_from_half_a_second_to_a_minute() {
        assert_eq!(RECONNECT.delay(1), Duration::from_millis(500));
        assert_eq!(RECONNECT.delay(8), Duration::from_secs(60));
    }

    #[test]
    fn tilde_expands_to_home() {
        let home = home_dir();
        assert_eq!(expand_tilde("~/.ssh/id"), home.join(".ssh/id"));
        assert_eq!(expand_tilde("~"), home);
        assert_eq!(expand_tilde("/abs/~x"), PathBuf::from("/abs/~x"));
        assert_eq!(expand_tilde("~other/x"), PathBuf::from("~other/x"));
    }

    #[test]
    fn host_key_and_auth_failures_are_permanent() {
        assert!(SshError::new(SshErrorKind::HostKey, "x").is_permanent());
        assert!(SshError::new(SshErrorKind::Auth, "x").is_permanent());
        assert!(!SshError::new(SshErrorKind::Unreachable, "x").is_permanent());
        assert!(!SshError::new(SshErrorKind::Timeout, "x").is_permanent());
        let t =
            SshError::new(SshErrorKind::HostKey, "bad key").to_transport("node1", "ssh connect");
        assert_eq!(t.kind, ErrorKind::HostKey);
        assert!(!t.is_retryable());
        assert_eq!(t.to_string(), "node node1: ssh connect: bad key");
    }
}

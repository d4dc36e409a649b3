//! The one error type of the transport boundary.

use std::fmt;

/// What kind of failure a [`TransportError`] is; decides whether a retry can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The container or image does not exist (HTTP 404).
    NotFound,
    /// A name is taken or the object is busy (HTTP 409).
    Conflict,
    /// The node could not be reached: TCP, SSH session, or the Docker socket behind it.
    Unreachable,
    /// The node's host key is unknown, changed, or does not match the pin. Never retried.
    HostKey,
    /// SSH authentication failed. Never retried.
    Auth,
    /// The engine answered with an error status.
    Api {
        /// HTTP status.
        status: u16,
    },
    /// The engine speaks an API older than fleetctl supports (below 1.41). Never retried.
    UnsupportedEngine,
    /// The operation did not finish in time.
    Timeout,
    /// The node's engine could not get an image from its registry (a pull or a digest lookup);
    /// the message names the registry.
    Registry(RegistryCause),
    /// Anything else (malformed answers, local I/O).
    Other,
}

/// Why a registry did not give a node an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryCause {
    /// The registry refused the credentials sent, or wants some and none were sent.
    Unauthorized,
    /// The registry has no such repository or tag.
    NotFound,
    /// The node could not reach the registry (DNS, connection, TLS).
    Unreachable,
    /// The registry answered with another error.
    Refused,
}

impl fmt::Display for RegistryCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryCause::Unauthorized => "unauthorized",
            RegistryCause::NotFound => "not found",
            RegistryCause::Unreachable => "unreachable",
            RegistryCause::Refused => "refused",
        })
    }
}

/// A failed operation against one node: which node, which operation, which container, why.
#[derive(Debug)]
pub struct TransportError {
    /// Node name.
    pub node: String,
    /// Operation, e.g. `create container`, `list containers`, `ssh connect`.
    pub op: &'static str,
    /// Container (or image) the operation concerned, when there is one.
    pub object: Option<String>,
    /// Failure class.
    pub kind: ErrorKind,
    /// Human explanation (what the engine or SSH said, and what to do about it).
    pub message: String,
    /// Underlying cause.
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TransportError {
    /// A new error without a source.
    pub fn new(
        node: impl Into<String>,
        op: &'static str,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        TransportError {
            node: node.into(),
            op,
            object: None,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Names the container or image the operation concerned.
    pub fn with_object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether trying again later can succeed. Host-key, auth and unsupported-engine failures
    /// need an operator; not-found and conflicts are answers, not faults.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unreachable
                | ErrorKind::Timeout
                | ErrorKind::Other
                | ErrorKind::Registry(RegistryCause::Unreachable)
        ) || matches!(self.kind, ErrorKind::Api { status } if status >= 500)
    }

    /// Whether the node could not be reached at all (as opposed to the engine refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unreachable | ErrorKind::Timeout | ErrorKind::HostKey | ErrorKind::Auth
        )
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether this is a 409.
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}: {}", self.node, self.op)?;
        if let Some(object) = &self.object {
            write!(f, " {object}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl TransportError {
    /// The underlying error, for debugging. Not offered as [`std::error::Error::source`]: the
    /// message already says it in words, and a report of the whole chain (`{:#}`) would print
    /// the cause twice.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl std::error::Error for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, bug 4: with the cause offered as `source()` too, `{:#}` printed
    /// "… connection reset by peer: connection reset by peer".
    #[test]
    fn a_report_of_the_whole_chain_names_each_cause_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        );
        let e = TransportError::new(
            "node2",
            "list containers",
            ErrorKind::Unreachable,
            format!("connection to the Docker socket failed: {io}"),
        )
        .with_source(io);
        let report = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            report,
            "node node2: list containers: connection to the Docker socket failed: connection reset by peer"
        );
        assert_eq!(report.matches("reset by peer").count(), 1, "{report}");
    }
}

//! One opaque error type for everything the library can fail at.
//!
//! Callers ask the error what happened (`kind()`, `is_contended()`, …) instead of
//! matching on its guts, so the error can grow detail without breaking anyone. The
//! split that matters most in production is kept sharp: *someone else holds the lock*
//! ([`ErrorKind::Contended`]) is never confused with *the stores did not answer*
//! ([`ErrorKind::Unavailable`]).

use std::fmt;
use std::time::Duration;

/// What went wrong, in the terms a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Someone else holds (one of) the keys. Retrying later may succeed.
    Contended,
    /// The acquire deadline passed while waiting for the lock.
    Timeout,
    /// Not enough nodes answered to decide (no quorum). Each node's error is kept.
    Unavailable,
    /// The lease can no longer be proven valid: it expired, or another client owns the key.
    Lost,
    /// An argument was rejected before anything was sent (bad key, TTL, URL …).
    InvalidInput,
    /// The configuration or a store's set-up is wrong in a way retrying cannot fix
    /// (wrong password, a replica node, a corrupt SQLite file …).
    Config,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Contended => "contended",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Lost => "lost",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Config => "config",
        })
    }
}

/// The error of every fallible fencelock operation.
///
/// It is cheap to move (one box) and says what happened in its `Display` text, with
/// the failing node named (never with its password).
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
    nodes: Vec<NodeError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                retry_after: None,
                nodes: Vec::new(),
            }),
        }
    }

    pub(crate) fn invalid(what: &str, why: impl fmt::Display) -> Self {
        Error::new(ErrorKind::InvalidInput, format!("invalid {what}: {why}"))
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    pub(crate) fn contended(keys: &[String], retry_after: Option<Duration>) -> Self {
        let held = match retry_after {
            Some(d) => format!(" (expires in {} ms unless extended)", d.as_millis()),
            None => String::new(),
        };
        let mut e = Error::new(
            ErrorKind::Contended,
            format!("lock {} is held by another owner{held}", KeyList(keys)),
        );
        e.inner.retry_after = retry_after;
        e
    }

    pub(crate) fn unavailable(what: &str, nodes: Vec<NodeError>) -> Self {
        let mut e = Error::new(ErrorKind::Unavailable, what.to_string());
        e.inner.nodes = nodes;
        e
    }

    pub(crate) fn lost(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Lost, message)
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(crate) fn with_nodes(mut self, nodes: Vec<NodeError>) -> Self {
        self.inner.nodes = nodes;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Someone else holds the lock.
    pub fn is_contended(&self) -> bool {
        self.kind() == ErrorKind::Contended
    }

    /// The acquire deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// No quorum of nodes answered.
    pub fn is_unavailable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }

    /// The lease was lost.
    pub fn is_lost(&self) -> bool {
        self.kind() == ErrorKind::Lost
    }

    /// An argument was rejected.
    pub fn is_invalid_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }

    /// The configuration or a store's set-up is wrong.
    pub fn is_config(&self) -> bool {
        self.kind() == ErrorKind::Config
    }

    /// For [`ErrorKind::Contended`] (and a [`ErrorKind::Timeout`] that ended contended):
    /// how long the current holder's lease still runs unless it is extended. `None` when
    /// unknown, or when the key has no expiry (a foreign key written without a TTL).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The errors of the individual nodes behind this one (for
    /// [`ErrorKind::Unavailable`], and for any error a node reported).
    pub fn node_errors(&self) -> &[NodeError] {
        &self.inner.nodes
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("retry_after", &self.inner.retry_after)
            .field("nodes", &self.inner.nodes)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)?;
        for (i, n) in self.inner.nodes.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl std::error::Error for NodeError {}

/// What went wrong on one node, as far as the node (or the way to it) told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeErrorKind {
    /// The node could not be reached, or the connection broke.
    Io,
    /// The node did not answer within the per-node request timeout. The request may
    /// still be applied later; fencelock cleans up after it.
    Timeout,
    /// Authentication or permission refused (NOAUTH, WRONGPASS, NOPERM).
    Auth,
    /// The node is a read-only replica.
    ReadOnly,
    /// A key of ours exists with another type (someone else's data: never deleted).
    WrongType,
    /// The node is out of memory.
    OutOfMemory,
    /// The node is busy (loading its dataset, running a long script …); retry later.
    Busy,
    /// A Redis Cluster problem that retrying cannot fix: a cluster node named by a
    /// standalone `redis://` URL (name the cluster with `redis+cluster://`), or on a
    /// cluster, lock keys whose sibling keys cannot share their slot (keys of one lock
    /// in different slots, or a key without a hash tag that contains `}`).
    Cluster,
    /// The TLS handshake failed on the node's certificate (untrusted CA, wrong host
    /// name, expired): give the CA with `?ca=` or `LockerBuilder::ca_cert`.
    Tls,
    /// The store file is not usable (SQLite: corrupt, not ours, unwritable …).
    Storage,
    /// The node answered something fencelock does not understand.
    Protocol,
    /// Anything else the node reported.
    Other,
}

/// The error of one node, named by its redacted address.
#[derive(Debug, Clone)]
pub struct NodeError {
    kind: NodeErrorKind,
    node: String,
    message: String,
}

impl NodeError {
    pub(crate) fn new(kind: NodeErrorKind, node: &str, message: impl Into<String>) -> Self {
        NodeError {
            kind,
            node: node.to_string(),
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> NodeErrorKind {
        self.kind
    }

    /// The node's address with any password removed.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's or the transport's own words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Errors that retrying cannot fix (bad credentials, a replica, a foreign key type,
    /// a cluster node, an unusable file): the locker reports them as
    /// [`ErrorKind::Config`] instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.kind,
            NodeErrorKind::Auth
                | NodeErrorKind::ReadOnly
                | NodeErrorKind::WrongType
                | NodeErrorKind::Cluster
                | NodeErrorKind::Tls
                | NodeErrorKind::Storage
        )
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            NodeErrorKind::Io => "unreachable",
            NodeErrorKind::Timeout => "timed out",
            NodeErrorKind::Auth => "access denied",
            NodeErrorKind::ReadOnly => "read-only replica",
            NodeErrorKind::WrongType => "key of another type",
            NodeErrorKind::OutOfMemory => "out of memory",
            NodeErrorKind::Busy => "busy",
            NodeErrorKind::Cluster => "cluster node",
            NodeErrorKind::Tls => "TLS certificate refused",
            NodeErrorKind::Storage => "storage error",
            NodeErrorKind::Protocol => "unexpected reply",
            NodeErrorKind::Other => "error",
        };
        write!(f, "{}: {kind}: {}", self.node, self.message)
    }
}

/// Formats a key list for messages: `"a"` or `["a", "b"]`.
pub(crate) struct KeyList<'a>(pub(crate) &'a [String]);

impl fmt::Display for KeyList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one:?}"),
            many => write!(f, "{many:?}"),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contended_and_unavailable_read_differently() {
        let c = Error::contended(&["a".into()], Some(Duration::from_millis(1500)));
        assert!(c.is_contended() && !c.is_unavailable());
        assert_eq!(c.retry_after(), Some(Duration::from_millis(1500)));
        assert!(c.to_string().contains("held by another owner"), "{c}");

        let u = Error::unavailable(
            "no quorum",
            vec![NodeError::new(NodeErrorKind::Io, "redis://h:1", "refused")],
        );
        assert!(u.is_unavailable() && !u.is_contended());
        assert_eq!(u.node_errors().len(), 1);
        assert_eq!(
            u.to_string(),
            "no quorum: redis://h:1: unreachable: refused"
        );
    }
}

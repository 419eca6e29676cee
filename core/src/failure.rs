//! Why something failed, as a type. Core's events, the embedding API's errors, the daemon's logs
//! and `vx6 status --json` carry the same [`Cause`], so nothing downstream branches on text; the
//! [`Failure`]'s detail is for people only.

use std::fmt;

use crate::service::RefusalCode;

/// The kind of a failure, stable across releases (its [`Cause::as_str`] names appear in
/// `vx6 status --json` and in logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Cause {
    /// The owner does not let this node use the service, or has no service by that name (an
    /// owner does not tell a stranger which).
    AccessDenied,
    /// The owner has no service by that name (reported on the owner's side only).
    UnknownService,
    /// The owner allowed the stream but its local target refused or failed the connection.
    TargetUnavailable,
    /// The request did not parse.
    BadRequest,
    /// The peer's key is not the one dialed for or pinned.
    PeerKeyMismatch,
    /// A limit of this node or of the peer was reached (streams, sessions, handshakes).
    LimitReached,
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The peer went silent.
    Timeout,
    /// The peer reset the stream or the connection (for a session: the peer process is gone).
    ResetByPeer,
    /// The session ended: closed by the peer, or its transport failed.
    ConnectionLost,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// The name has no claim, or its node has no usable address.
    NameNotFound,
    /// Several keys claim the name and none is pinned.
    NameAmbiguous,
    /// The peer could not be reached (dial or TCP connect failed).
    Unreachable,
    /// This node closed it (shutdown, or the local connection gave up).
    Closed,
}

impl Cause {
    /// The `snake_case` name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessDenied => "access_denied",
            Self::UnknownService => "unknown_service",
            Self::TargetUnavailable => "target_unavailable",
            Self::BadRequest => "bad_request",
            Self::PeerKeyMismatch => "peer_key_mismatch",
            Self::LimitReached => "limit_reached",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Timeout => "timeout",
            Self::ResetByPeer => "reset_by_peer",
            Self::ConnectionLost => "connection_lost",
            Self::ProtocolViolation => "protocol_violation",
            Self::NameNotFound => "name_not_found",
            Self::NameAmbiguous => "name_ambiguous",
            Self::Unreachable => "unreachable",
            Self::Closed => "closed",
        }
    }

    /// Short text for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AccessDenied => "access denied",
            Self::UnknownService => "unknown service",
            Self::TargetUnavailable => "service unavailable",
            Self::BadRequest => "bad request",
            Self::PeerKeyMismatch => "peer key mismatch",
            Self::LimitReached => "limit reached",
            Self::HandshakeTimeout => "handshake timed out",
            Self::Timeout => "peer went silent",
            Self::ResetByPeer => "reset by peer",
            Self::ConnectionLost => "connection lost",
            Self::ProtocolViolation => "protocol violation",
            Self::NameNotFound => "name not found",
            Self::NameAmbiguous => "name is ambiguous",
            Self::Unreachable => "unreachable",
            Self::Closed => "closed",
        }
    }

    /// Every cause, for tables and tests.
    pub const ALL: [Cause; 15] = [
        Self::AccessDenied,
        Self::UnknownService,
        Self::TargetUnavailable,
        Self::BadRequest,
        Self::PeerKeyMismatch,
        Self::LimitReached,
        Self::HandshakeTimeout,
        Self::Timeout,
        Self::ResetByPeer,
        Self::ConnectionLost,
        Self::ProtocolViolation,
        Self::NameNotFound,
        Self::NameAmbiguous,
        Self::Unreachable,
        Self::Closed,
    ];
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl From<RefusalCode> for Cause {
    fn from(code: RefusalCode) -> Self {
        match code {
            RefusalCode::AccessDenied => Self::AccessDenied,
            RefusalCode::TargetUnavailable => Self::TargetUnavailable,
            RefusalCode::BadRequest => Self::BadRequest,
            RefusalCode::Overloaded => Self::LimitReached,
        }
    }
}

/// A failure: its [`Cause`] to branch on, and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Failure {
    /// What kind.
    pub cause: Cause,
    /// What exactly, for people (may be empty).
    pub detail: String,
}

impl Failure {
    /// A failure with a detail.
    pub fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Self {
            cause,
            detail: detail.into(),
        }
    }

    /// The same cause, with `context` put in front of the detail.
    pub fn context(self, context: impl fmt::Display) -> Self {
        let detail = if self.detail.is_empty() {
            context.to_string()
        } else {
            format!("{context}: {}", self.detail)
        };
        Self {
            cause: self.cause,
            detail,
        }
    }
}

impl From<crate::resolve::ResolveError> for Failure {
    fn from(e: crate::resolve::ResolveError) -> Self {
        use crate::resolve::ResolveError as E;
        let cause = match e {
            E::NotFound(_) => Cause::NameNotFound,
            E::Ambiguous { .. } => Cause::NameAmbiguous,
            E::PinMismatch { .. } => Cause::PeerKeyMismatch,
        };
        Self::new(cause, e.to_string())
    }
}

impl From<crate::dht::LookupError> for Failure {
    fn from(e: crate::dht::LookupError) -> Self {
        match e {
            crate::dht::LookupError::Busy => Self::new(Cause::LimitReached, e.to_string()),
        }
    }
}

impl From<Cause> for Failure {
    fn from(cause: Cause) -> Self {
        Self::new(cause, "")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() || self.detail == self.cause.describe() {
            f.write_str(self.cause.describe())
        } else {
            write!(f, "{}: {}", self.cause.describe(), self.detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut names: Vec<&str> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Cause::ALL.len());
    }

    #[test]
    fn display_leads_with_the_cause() {
        let f = Failure::new(Cause::LimitReached, "session carries 16384 streams");
        assert_eq!(
            f.to_string(),
            "limit reached: session carries 16384 streams"
        );
        assert_eq!(
            Failure::from(Cause::Timeout).to_string(),
            "peer went silent"
        );
        assert_eq!(
            Failure::new(Cause::Unreachable, "no route")
                .context("dialing [fd6a::1]:4433")
                .detail,
            "dialing [fd6a::1]:4433: no route"
        );
    }
}

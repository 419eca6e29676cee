//! Errors of the embedding API.

use std::io;

use vx6_core::{Cause, Failure};

/// What can go wrong starting a node or using it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The core refused the configuration.
    #[error("starting the node: {0}")]
    Node(#[from] vx6_core::node::NodeError),
    /// A service could not be offered.
    #[error(transparent)]
    Service(#[from] vx6_core::service::ServiceError),
    /// A destination or name that does not parse.
    #[error("{0}")]
    BadDestination(String),
    /// A name did not resolve.
    #[error("resolving {name}: {failure}")]
    Resolve {
        /// The name.
        name: String,
        /// Why not.
        failure: Failure,
    },
    /// A stream could not be opened.
    #[error("{destination}: {failure}")]
    Stream {
        /// Where to, as asked.
        destination: String,
        /// Why not.
        failure: Failure,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
}

impl Error {
    /// Why, for the errors that come from the network: branch on this, not on the text.
    pub fn cause(&self) -> Option<Cause> {
        match self {
            Error::Resolve { failure, .. } | Error::Stream { failure, .. } => Some(failure.cause),
            Error::Shutdown => Some(Cause::Closed),
            _ => None,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

//! Errors of the embedding API.

use std::io;

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
    #[error("resolving {name}: {reason}")]
    Resolve {
        /// The name.
        name: String,
        /// Why not.
        reason: String,
    },
    /// A stream could not be opened.
    #[error("{0}")]
    Stream(String),
    /// The node has shut down.
    #[error("the node has shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

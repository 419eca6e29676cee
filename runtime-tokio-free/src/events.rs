//! What the node reports to the application: peers, sessions, pins, refusals.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::Stream;
use vx6_core::record::Transport;
use vx6_core::{Failure, NodeId};

use crate::shared::Shared;

/// Something that happened in the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A session finished its handshake with an authenticated peer.
    SessionUp {
        /// The peer.
        peer: NodeId,
        /// Over what.
        transport: Transport,
        /// Its address.
        remote: SocketAddr,
    },
    /// A session ended.
    SessionDown {
        /// The peer, if the handshake got that far.
        peer: Option<NodeId>,
        /// Its address.
        remote: SocketAddr,
        /// Why.
        failure: Failure,
    },
    /// A peer dialed by address without a NodeId was pinned (trust on first use).
    PinLearned {
        /// The address.
        addr: SocketAddr,
        /// The node that answered there.
        node: NodeId,
    },
    /// A username resolved for the first time was pinned to its node.
    NamePinned {
        /// The username.
        username: String,
        /// The node.
        node: NodeId,
    },
    /// Records this node published were stored at `stored_at` of the nodes closest to `key`
    /// (0 while it knows no one; they are published again when a bootstrap peer answers).
    Published {
        /// The DHT key (the node's id, or its name's key).
        key: NodeId,
        /// How many nodes accepted them.
        stored_at: u32,
    },
    /// A circuit of a relayed link came up, failed over to its standby, or failed; or a
    /// managed link switched paths.
    Circuit(vx6_core::node::CircuitEvent),
    /// A hosted alias's record for a period was stored at `stored_at` nodes.
    AliasPublished {
        /// The alias.
        address: vx6_core::alias::AliasAddress,
        /// The period.
        period: u64,
        /// How many nodes accepted it.
        stored_at: u32,
    },
    /// The addresses enough peers agree they see this node at changed.
    AddressesObserved {
        /// At most one per address family.
        addresses: Vec<SocketAddr>,
    },
    /// Whether peers can dial this node changed (their dial-backs arrive, or never do).
    Reachability {
        /// Per address family (`true`: IPv4).
        verdicts: Vec<(bool, vx6_core::reach::Verdict)>,
    },
    /// The relays the node's record names as its way in changed (it cannot be dialed, so it
    /// keeps sessions to them; empty when it can be again).
    HomeRelays {
        /// The relays.
        relays: Vec<NodeId>,
    },
    /// An answer to [`Node::ping`](crate::Node::ping).
    PingReply {
        /// Which ping.
        id: u64,
        /// The path it took.
        path: vx6_core::policy::PathKind,
        /// Its relays.
        relays: Vec<NodeId>,
        /// Whether it went through a circuit (of zero relays for a managed direct path).
        circuit: bool,
        /// The round trip.
        rtt: std::time::Duration,
    },
    /// A peer was refused a stream to one of this node's services.
    Refused {
        /// Who asked.
        peer: NodeId,
        /// For what.
        service: String,
        /// Why.
        failure: Failure,
    },
}

/// The node's events, in order. Only the most recent 1024 are kept for a reader that falls
/// behind; [`Events::dropped`] counts the rest.
#[derive(Debug, Clone)]
pub struct Events {
    pub(crate) shared: Arc<Shared>,
}

impl Events {
    /// The next event, or `None` once the node has shut down.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        futures_lite::StreamExt::next(self).await
    }

    /// Events dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().events_dropped
    }
}

impl Stream for Events {
    type Item = NodeEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NodeEvent>> {
        let mut st = self.shared.lock();
        if let Some(e) = st.events.pop_front() {
            return Poll::Ready(Some(e));
        }
        if st.stopped {
            return Poll::Ready(None);
        }
        st.events_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

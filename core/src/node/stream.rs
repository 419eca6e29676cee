//! A service stream as the node tracks it: which transport stream carries it and how far its
//! opening exchange has got.

use std::time::Instant;

use bytes::BytesMut;

use super::SessionId;
use crate::names::ServiceName;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Client, by name: waiting for the name to resolve.
    AwaitResolve,
    /// Client: waiting for the session (or stream credit) to open the transport stream.
    AwaitSession,
    /// Client: request sent, waiting for the owner's answer.
    AwaitResponse,
    /// Owner: reading the request.
    ReadRequest,
    /// Owner: authorized, waiting for the runtime to connect the local target.
    Connecting,
    /// Bytes flow both ways.
    Open,
}

pub(super) struct ServiceStream {
    pub session: SessionId,
    /// Transport stream id, once opened.
    pub id: Option<u64>,
    /// Client side: the requested service. Owner side: the service, once the request is read.
    pub service: Option<ServiceName>,
    pub phase: Phase,
    /// Opening bytes (request or response) not yet accepted by the transport.
    pub header_out: Vec<u8>,
    /// Parse buffer for the opening exchange; afterwards, data read ahead for the runtime.
    pub inbuf: BytesMut,
    /// The runtime finished its direction while the header was still pending.
    pub finish_pending: bool,
    /// The runtime has seen the end of the peer's direction.
    pub read_done: bool,
    /// The runtime finished its direction.
    pub write_done: bool,
    /// A write returned 0 before the transport stream existed; wake the runtime when it does.
    pub want_writable: bool,
    /// Client side, until the owner accepts: a copy of what the application wrote, so the
    /// stream can be replayed once on a new session if the owner restarted before answering.
    /// `None` once accepted, retried, or past the size limit.
    pub replay: Option<Vec<u8>>,
    /// Already moved to a new session once.
    pub retried: bool,
    /// Opened by the peer (this node owns the service).
    pub incoming: bool,
    /// Owner side, until the request is read: when the stream is refused for not sending it.
    pub request_due: Option<Instant>,
    /// The code the peer reset the stream with, while its opening exchange ran.
    pub reset_code: Option<u32>,
    /// A circuit stream (the node's own): the request it opens with.
    pub circuit_request: Option<Vec<u8>>,
    /// Client streams: when the runtime opened it (for the connect-time histogram).
    pub opened: Option<Instant>,
}

impl ServiceStream {
    pub fn client(session: SessionId, service: ServiceName, now: Instant) -> Self {
        let mut s = Self::new(session, None, Some(service), Phase::AwaitSession);
        s.replay = Some(Vec::new());
        s.opened = Some(now);
        s
    }

    /// A circuit stream this node opens towards the next hop, with its request.
    pub fn circuit(request: Vec<u8>) -> Self {
        let mut s = Self::new(SessionId(0), None, None, Phase::AwaitSession);
        s.circuit_request = Some(request);
        s
    }

    pub fn owner(session: SessionId, id: u64, request_due: Instant) -> Self {
        let mut s = Self::new(session, Some(id), None, Phase::ReadRequest);
        s.incoming = true;
        s.request_due = Some(request_due);
        s
    }

    fn new(
        session: SessionId,
        id: Option<u64>,
        service: Option<ServiceName>,
        phase: Phase,
    ) -> Self {
        Self {
            session,
            id,
            service,
            phase,
            header_out: Vec::new(),
            inbuf: BytesMut::new(),
            finish_pending: false,
            read_done: false,
            write_done: false,
            want_writable: false,
            replay: None,
            retried: false,
            incoming: false,
            request_due: None,
            reset_code: None,
            circuit_request: None,
            opened: None,
        }
    }
}

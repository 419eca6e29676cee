//! Every service stream of a node, with the indices the node finds them by (its transport
//! stream, the deadline for its service request), kept consistent in one place: a stream
//! leaves every index when it leaves the table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::stream::ServiceStream;
use super::{SessionId, StreamHandle};

#[derive(Default)]
pub(super) struct StreamTable {
    streams: BTreeMap<StreamHandle, ServiceStream>,
    /// Transport stream (session, id) → service stream.
    by_transport: HashMap<(SessionId, u64), StreamHandle>,
    /// Owner streams waiting for their service request, by deadline.
    requests: BTreeSet<(Instant, StreamHandle)>,
    last: u64,
}

impl StreamTable {
    /// A handle never used before on this node.
    pub fn new_handle(&mut self) -> StreamHandle {
        self.last += 1;
        StreamHandle(self.last)
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn get(&self, handle: &StreamHandle) -> Option<&ServiceStream> {
        self.streams.get(handle)
    }

    pub fn get_mut(&mut self, handle: &StreamHandle) -> Option<&mut ServiceStream> {
        self.streams.get_mut(handle)
    }

    /// Adds a stream; an owner stream's request deadline is indexed from its `request_due`, and
    /// a stream with a transport id is bound to it.
    pub fn insert(&mut self, handle: StreamHandle, st: ServiceStream) {
        if let Some(due) = st.request_due {
            self.requests.insert((due, handle));
        }
        if let Some(id) = st.id {
            self.by_transport.insert((st.session, id), handle);
        }
        self.streams.insert(handle, st);
    }

    /// Gives a stream its transport stream `id` on `session`.
    pub fn bind(&mut self, handle: StreamHandle, session: SessionId, id: u64) {
        if let Some(st) = self.streams.get_mut(&handle) {
            st.session = session;
            st.id = Some(id);
            self.by_transport.insert((session, id), handle);
        }
    }

    /// Takes a stream off its transport stream (it moves to another session).
    pub fn unbind(&mut self, handle: StreamHandle) {
        if let Some(st) = self.streams.get_mut(&handle)
            && let Some(id) = st.id.take()
        {
            self.by_transport.remove(&(st.session, id));
        }
    }

    /// The stream carried by transport stream `id` of `session`.
    pub fn by_transport(&self, session: SessionId, id: u64) -> Option<StreamHandle> {
        self.by_transport.get(&(session, id)).copied()
    }

    /// The owner read the stream's request: it no longer has a deadline.
    pub fn request_read(&mut self, handle: StreamHandle) {
        if let Some(st) = self.streams.get_mut(&handle)
            && let Some(due) = st.request_due.take()
        {
            self.requests.remove(&(due, handle));
        }
    }

    /// When the earliest request deadline falls.
    pub fn next_request_deadline(&self) -> Option<Instant> {
        self.requests.first().map(|(due, _)| *due)
    }

    /// Owner streams whose request is overdue at `now`, earliest first.
    pub fn late_requests(&self, now: Instant) -> Vec<StreamHandle> {
        self.requests
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|(_, h)| *h)
            .collect()
    }

    /// Removes a stream from the table and every index.
    pub fn remove(&mut self, handle: StreamHandle) -> Option<ServiceStream> {
        let st = self.streams.remove(&handle)?;
        if let Some(due) = st.request_due {
            self.requests.remove(&(due, handle));
        }
        if let Some(id) = st.id {
            self.by_transport.remove(&(st.session, id));
        }
        Some(st)
    }
}

//! Every session of a node, with their timers in a queue: finding the next deadline, or the
//! sessions due, costs a look at the front instead of a visit to every session (quinn-proto's
//! endpoint keeps its connections' timers the same way).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Index, RangeBounds};
use std::time::Instant;

use super::SessionId;
use super::session::Session;

#[derive(Default)]
pub(super) struct SessionTable {
    sessions: BTreeMap<SessionId, Session>,
    /// Each session's next deadline, ordered; mirrors `deadline`.
    timers: BTreeSet<(Instant, SessionId)>,
    deadline: HashMap<SessionId, Instant>,
}

impl SessionTable {
    pub fn get(&self, sid: &SessionId) -> Option<&Session> {
        self.sessions.get(sid)
    }

    /// Mutable access. Whoever changes a session's transport state through it must call
    /// [`SessionTable::refresh`] afterwards (the node does so at the end of every `drive`).
    pub fn get_mut(&mut self, sid: &SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(sid)
    }

    pub fn insert(&mut self, sid: SessionId, session: Session) {
        self.sessions.insert(sid, session);
        self.refresh(sid);
    }

    pub fn remove(&mut self, sid: &SessionId) -> Option<Session> {
        if let Some(at) = self.deadline.remove(sid) {
            self.timers.remove(&(at, *sid));
        }
        self.sessions.remove(sid)
    }

    pub fn keys(&self) -> impl Iterator<Item = &SessionId> {
        self.sessions.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.sessions.iter()
    }

    pub fn range(
        &self,
        range: impl RangeBounds<SessionId>,
    ) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.sessions.range(range)
    }

    /// Re-reads a session's deadline after its state changed.
    pub fn refresh(&mut self, sid: SessionId) {
        let next = self.sessions.get_mut(&sid).and_then(Session::poll_timeout);
        let old = match next {
            Some(at) => self.deadline.insert(sid, at),
            None => self.deadline.remove(&sid),
        };
        if old == next {
            return;
        }
        if let Some(old) = old {
            self.timers.remove(&(old, sid));
        }
        if let Some(at) = next {
            self.timers.insert((at, sid));
        }
    }

    /// The earliest deadline of any session.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Sessions whose deadline has passed, earliest first.
    pub fn due(&self, now: Instant) -> Vec<SessionId> {
        self.timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, sid)| *sid)
            .collect()
    }

    /// Checks the queue against every session's own deadline: a missed refresh would leave a
    /// session's timer unfired, which shows as a stall far from its cause.
    #[cfg(debug_assertions)]
    pub fn assert_consistent(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for sid in ids {
            let actual = self.sessions.get_mut(&sid).and_then(Session::poll_timeout);
            assert_eq!(
                actual,
                self.deadline.get(&sid).copied(),
                "timer queue out of date for session {sid}"
            );
        }
    }
}

impl Index<&SessionId> for SessionTable {
    type Output = Session;

    fn index(&self, sid: &SessionId) -> &Session {
        &self.sessions[sid]
    }
}

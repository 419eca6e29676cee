//! The way in for a node nobody can dial (DESIGN.md §4, the reachability issue): when peers'
//! dial-backs say a NAT or firewall stands in front of it, the node keeps a QUIC session to a
//! few relays and names them in its node record (`via`). A client then ends its relay path at
//! one of them, and that relay extends the circuit over the session the node keeps, which its
//! NAT lets through, instead of dialing an address that leads nowhere.

use std::time::{Duration, Instant};

use super::session::{Kind, Session};
use super::{Dial, Event, Node, SessionId};
use crate::identity::NodeId;
use crate::reach::Verdict;
use crate::record::Transport;
use crate::relay::{Constraints, select};

/// Relays an unreachable node keeps a session to, and names in its record.
pub const HOME_RELAYS: usize = 3;
/// How often the sessions are checked (and lost ones replaced).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often while a session is still being set up.
const CHECK_SOON: Duration = Duration::from_millis(500);
/// Least time between republications for a changed set (the first goes at once): a relay that
/// keeps dropping the session must not make the node sign and store records without end.
const REPUBLISH_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct State {
    wanted: bool,
    /// The relays chosen, with the session to each.
    relays: Vec<(NodeId, SessionId)>,
    /// What the node record names now.
    pub(super) published: Vec<NodeId>,
    next_check: Option<Instant>,
    last_publish: Option<Instant>,
}

impl Node {
    /// The relays this node's record names as its way in (empty while it can be dialed).
    pub fn home_relays(&self) -> &[NodeId] {
        &self.home.published
    }

    /// Re-reads the dial-back verdicts: any family that peers cannot dial makes the node keep
    /// home relays.
    pub(super) fn home_relays_wanted(&mut self, now: Instant) {
        let wanted = self
            .dial_back_verdicts()
            .iter()
            .any(|(_, v)| *v == Verdict::Unreachable);
        if wanted != self.home.wanted {
            self.home.wanted = wanted;
            self.home.next_check = Some(now);
        }
    }

    pub(super) fn home_next_timeout(&self) -> Option<Instant> {
        self.home.next_check
    }

    pub(super) fn home_timeout(&mut self, now: Instant) {
        if self.home.next_check.is_none_or(|t| t > now) {
            return;
        }
        let sessions = &self.sessions;
        self.home
            .relays
            .retain(|(_, sid)| sessions.get(sid).is_some_and(|s| !s.down));
        if !self.home.wanted {
            // Dialable again: the sessions kept only as a way in are closed (memory follows
            // use); one carrying streams (circuits set up through it) lives on as any session.
            for (_, sid) in std::mem::take(&mut self.home.relays) {
                let idle = self
                    .sessions
                    .get(&sid)
                    .is_some_and(|s| s.streams.is_empty());
                if let Some(Session {
                    kind: Kind::Quic { conn, .. },
                    ..
                }) = self.sessions.get_mut(&sid)
                    && idle
                {
                    conn.close(
                        now,
                        0u32.into(),
                        bytes::Bytes::from_static(b"no longer needed"),
                    );
                    self.drive(now, sid);
                }
            }
        } else if self.home.relays.len() < HOME_RELAYS {
            self.add_home_relays(now);
        }
        let up: Vec<NodeId> = self
            .home
            .relays
            .iter()
            .filter(|(_, sid)| self.sessions.get(sid).is_some_and(|s| s.established))
            .map(|(n, _)| *n)
            .collect();
        let settling = up.len() < self.home.relays.len();
        self.home.next_check = match (self.home.wanted, settling) {
            (false, _) => None,
            (true, true) => Some(now + CHECK_SOON),
            (true, false) => Some(now + CHECK_EVERY),
        };
        if up == self.home.published {
            return;
        }
        let first = self.home.published.is_empty() || up.is_empty();
        match self.home.last_publish.map(|t| t + REPUBLISH_AFTER) {
            Some(at) if !first && at > now => {
                self.home.next_check = Some(self.home.next_check.map_or(at, |c| c.min(at)));
            }
            _ => {
                self.home.published = up.clone();
                self.home.last_publish = Some(now);
                self.events.push_back(Event::HomeRelays { relays: up });
                self.republish(now);
            }
        }
    }

    /// Dials relays (diverse, as path selection draws them) until [`HOME_RELAYS`] are kept.
    fn add_home_relays(&mut self, now: Instant) {
        self.refresh_directory(now);
        let candidates = self.circuits.directory.candidates(now, Transport::Quic);
        let mut constraints = Constraints {
            hops: HOME_RELAYS - self.home.relays.len(),
            endpoints: vec![self.node_id],
            exclude: self.home.relays.iter().map(|(n, _)| *n).collect(),
            ..Constraints::default()
        };
        let chosen = loop {
            match select(&candidates, &constraints, &mut self.circuits.rng) {
                Ok(s) => break s.path,
                Err(_) if constraints.hops > 1 => constraints.hops -= 1,
                Err(_) => return,
            }
        };
        for node in chosen {
            let Some(addr) = self.circuits.directory.get(&node).map(|r| r.addr) else {
                continue;
            };
            let dial = Dial {
                addr,
                transport: Transport::Quic,
                expected: Some(node),
            };
            if let Ok(sid) = self.session_for(now, &dial) {
                self.drive(now, sid);
                self.home.relays.push((node, sid));
            }
        }
    }
}

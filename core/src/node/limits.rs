//! The bounds a node keeps against hostile or merely numerous peers (DESIGN.md §8b), and the
//! table of unauthenticated handshakes they govern.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::SessionId;
use super::rate::RateLimit;

/// What a node holds at most. Each bound says what happens when it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Authenticated sessions; an incoming session past it is refused (QUIC: CONNECTION_REFUSED;
    /// TCP: the connection is closed at once). Handshakes in flight do not count here, so a
    /// flood of them never displaces an authenticated session.
    pub max_sessions: usize,
    /// Authenticated incoming sessions from one source prefix; past it a new incoming session
    /// from that prefix is refused, so keys made up by the thousand on one network cannot fill
    /// the session table.
    pub max_sessions_per_prefix: usize,
    /// Incoming sessions still in their handshake. When full, the oldest one is dropped to make
    /// room: a flood ages out of the table instead of locking honest peers out of it.
    pub max_handshakes: usize,
    /// Incoming handshakes in flight from one source prefix (/64 IPv6, /32 IPv4); past it the
    /// prefix's own oldest handshake is dropped, so one network cannot fill the table alone, and
    /// an honest host that shares a prefix with a flood still gets its (quick) handshake through.
    pub max_handshakes_per_prefix: usize,
    /// An incoming session still unauthenticated after this long is dropped.
    pub handshake_timeout: Duration,
    /// QUIC handshakes in flight past which a new one must first prove its address (Retry), so
    /// spoofed sources cost one stateless reply each.
    pub retry_threshold: usize,
    /// Service streams in the whole node (both roles). Past it, a stream a peer opens takes the
    /// place of one held by the session with the most streams, if that session holds more than
    /// the newcomer's; otherwise it is refused at once ("overloaded"). A client stream past it
    /// is refused at once ([`Cause::LimitReached`](crate::Cause::LimitReached)).
    pub max_streams: usize,
    /// How long a peer may take to send a stream's service request before the stream is
    /// refused: streams that never say what they want cannot be held forever.
    pub request_timeout: Duration,
    /// Client streams waiting on one session for the peer's stream credit; a new one past it is
    /// refused at once.
    pub max_waiting_streams: usize,
    /// DHT requests served per source prefix; past the rate they are dropped unanswered (and
    /// counted) before their signature is even checked.
    pub dht_requests: RateLimit,
    /// Datagrams waiting to be sent (DHT messages, QUIC stateless replies); past it new ones are
    /// dropped and counted.
    pub max_queued_datagrams: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_sessions: 4096,
            max_sessions_per_prefix: 256,
            max_handshakes: 1024,
            max_handshakes_per_prefix: 64,
            handshake_timeout: Duration::from_secs(10),
            retry_threshold: 64,
            max_streams: 65_536,
            request_timeout: Duration::from_secs(10),
            max_waiting_streams: 16_384,
            dht_requests: RateLimit {
                per_second: 100,
                burst: 200,
                max_prefixes: 4096,
            },
            max_queued_datagrams: 4096,
        }
    }
}

/// The part of an address that one party is assumed to control: a /64 for IPv6, the address
/// for IPv4 (DESIGN.md §8b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Prefix([u8; 8]);

impl Prefix {
    pub fn of(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(v4) => {
                let mut b = [0u8; 8];
                b[..4].copy_from_slice(&v4.octets());
                Self(b)
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of(SocketAddr::new(IpAddr::V4(v4), 0)),
                None => Self(v6.octets()[..8].try_into().expect("8 of 16 bytes")),
            },
        }
    }
}

/// What the table says about a new incoming handshake.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Take it.
    Admit,
    /// Take it, after dropping this handshake: the oldest of its prefix when the prefix is at
    /// its limit, else the oldest of all when the table is full.
    AdmitEvicting(SessionId),
}

/// Incoming sessions in their handshake, oldest first, overall and per prefix. Every entry is
/// removed exactly once (established, failed, timed out or evicted), so the table never holds
/// more than [`NodeLimits::max_handshakes`] entries.
#[derive(Debug, Default)]
pub(super) struct Handshakes {
    by_age: BTreeSet<(Instant, SessionId)>,
    started: HashMap<SessionId, (Instant, Prefix)>,
    per_prefix: HashMap<Prefix, BTreeSet<(Instant, SessionId)>>,
}

impl Handshakes {
    pub fn len(&self) -> usize {
        self.by_age.len()
    }

    /// Decides on a new handshake from `remote`; call [`Handshakes::insert`] if admitted.
    pub fn admit(&self, limits: &NodeLimits, remote: SocketAddr) -> Admission {
        let prefix = Prefix::of(remote);
        if let Some(own) = self.per_prefix.get(&prefix)
            && own.len() >= limits.max_handshakes_per_prefix.max(1)
        {
            let &(_, oldest) = own.first().expect("at its limit, so not empty");
            return Admission::AdmitEvicting(oldest);
        }
        if self.by_age.len() >= limits.max_handshakes.max(1) {
            let &(_, oldest) = self.by_age.first().expect("table is full, so not empty");
            return Admission::AdmitEvicting(oldest);
        }
        Admission::Admit
    }

    pub fn insert(&mut self, now: Instant, sid: SessionId, remote: SocketAddr) {
        let prefix = Prefix::of(remote);
        self.by_age.insert((now, sid));
        self.started.insert(sid, (now, prefix));
        self.per_prefix
            .entry(prefix)
            .or_default()
            .insert((now, sid));
    }

    /// Forgets a session (done with its handshake one way or another); a no-op for sessions
    /// that are not in the table.
    pub fn remove(&mut self, sid: SessionId) {
        let Some((at, prefix)) = self.started.remove(&sid) else {
            return;
        };
        self.by_age.remove(&(at, sid));
        if let Some(own) = self.per_prefix.get_mut(&prefix) {
            own.remove(&(at, sid));
            if own.is_empty() {
                self.per_prefix.remove(&prefix);
            }
        }
    }

    /// When the oldest handshake runs out of time.
    pub fn next_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.by_age.first().map(|(at, _)| *at + timeout)
    }

    /// Handshakes that started `timeout` or longer before `now`, oldest first.
    pub fn expired(&self, now: Instant, timeout: Duration) -> Vec<SessionId> {
        self.by_age
            .iter()
            .take_while(|(at, _)| *at + timeout <= now)
            .map(|(_, sid)| *sid)
            .collect()
    }
}

// The table's eviction order, per-prefix cap and deadlines are tested through the node in
// core/tests/limits.rs (they need a clock epoch, which core's own code never reads).
#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_group_a_v6_64_and_a_v4_address() {
        assert_eq!(
            Prefix::of(addr("[fd6a:0:1:2::5]:1")),
            Prefix::of(addr("[fd6a:0:1:2:ffff::9]:2"))
        );
        assert_ne!(
            Prefix::of(addr("[fd6a:0:1:2::5]:1")),
            Prefix::of(addr("[fd6a:0:1:3::5]:1"))
        );
        assert_eq!(
            Prefix::of(addr("192.0.2.1:1")),
            Prefix::of(addr("[::ffff:192.0.2.1]:9"))
        );
        assert_ne!(
            Prefix::of(addr("192.0.2.1:1")),
            Prefix::of(addr("192.0.2.2:1"))
        );
    }
}

//! Managed links: a [`Policy`] chooses which of a link's circuits carries its datagrams, the
//! direct path being the circuit of zero relays, so the end-to-end connection moves between
//! direct and relayed paths without losing a stream.

use super::*;

impl Node {
    /// Sets the policy `id` (streams opened with [`Route::Policy`] follow it). Changing it
    /// applies at once to the links it manages: paths it no longer allows are left, paths it
    /// now wants are built, and the hold-down starts over.
    pub fn set_policy(&mut self, now: Instant, id: PolicyId, policy: Policy) {
        self.circuits.clock = now;
        let old = self.circuits.policies.insert(id, policy);
        if old == Some(policy) {
            return;
        }
        let links: Vec<u64> = self
            .circuits
            .client_links
            .iter()
            .filter(|(_, l)| l.policy == Some(id))
            .map(|(k, _)| *k)
            .collect();
        for link in links {
            let Some(l) = self.circuits.client_links.get_mut(&link) else {
                continue;
            };
            l.hops = usize::from(policy.hops.clamp(1, crate::relay::control::MAX_HOPS as u8));
            // A new preference applies at once (the link moves to the newly preferred path as
            // soon as it meets the SLA); other changes keep the hold-down running.
            if old.is_none_or(|o| o.prefer != policy.prefer) {
                l.last_switch = None;
            }
            l.retry_at = None;
            l.direct_retry_at = None;
            let circuits = l.circuits.clone();
            self.apply_policy(now, link, false, Some(SwitchReason::PolicyChanged));
            if !policy.allows_direct() {
                for c in circuits {
                    if matches!(self.circuits.circuits.get(&c), Some(Circuit::Client { path, .. }) if path.is_empty())
                    {
                        self.circuits.quiet.insert(c);
                        self.teardown(now, c);
                        self.circuits.quiet.remove(&c);
                    }
                }
            }
            self.replenish(now, link);
        }
    }

    /// The policy `id`, if set.
    pub fn policy(&self, id: PolicyId) -> Option<Policy> {
        self.circuits.policies.get(&id).copied()
    }

    /// The state of the link policy `id` manages (the first, if it reaches several owners).
    pub fn policy_status(&self, id: PolicyId) -> Option<PolicyStatus> {
        let l = self
            .circuits
            .client_links
            .values()
            .find(|l| l.policy == Some(id))?;
        Some(self.link_status(id, l))
    }

    /// The links `auto` streams fell back to ([`PolicyId::AUTO`]), one per owner: where each
    /// runs now, and its paths.
    pub fn auto_links(&self) -> Vec<PolicyStatus> {
        self.circuits
            .client_links
            .values()
            .filter(|l| l.policy == Some(PolicyId::AUTO))
            .map(|l| self.link_status(PolicyId::AUTO, l))
            .collect()
    }

    fn link_status(&self, id: PolicyId, l: &ClientLink) -> PolicyStatus {
        let now = self.circuits.clock;
        let policy = self.circuits.policies.get(&id).copied().unwrap_or_default();
        let mut path = None;
        let mut paths = Vec::new();
        for c in &l.circuits {
            if let Some(Circuit::Client {
                path: relays,
                probe,
                ..
            }) = self.circuits.circuits.get(c)
            {
                let kind = kind_of(relays);
                if l.active == Some(*c) {
                    path = Some(kind);
                }
                let stats = probe.window.stats(now);
                let state = policy::judge(&policy.sla, &stats);
                paths.push((kind, relays.clone(), stats, state));
            }
        }
        PolicyStatus {
            owner: l.owner,
            path,
            sla: l.sla,
            switches: l.switches,
            last_reason: l.last_reason,
            paths,
        }
    }

    /// Path switches of managed links so far, by reason.
    pub fn path_switches(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.circuits.switches.iter().map(|(k, v)| (*k, *v))
    }

    /// Judges link `link`'s paths and moves its traffic if the policy says so. `lost_active`:
    /// the path that carried it just went.
    pub(super) fn apply_policy(
        &mut self,
        now: Instant,
        link: u64,
        lost_active: bool,
        reason: Option<SwitchReason>,
    ) {
        let Some(l) = self.circuits.client_links.get(&link) else {
            return;
        };
        let Some(id) = l.policy else {
            return;
        };
        let policy = self.circuits.policies.get(&id).copied().unwrap_or_default();
        let active = l.active;
        let mut keys = Vec::with_capacity(l.circuits.len());
        let mut views = Vec::with_capacity(l.circuits.len());
        for c in l.circuits.clone() {
            if let Some(Circuit::Client {
                out, probe, path, ..
            }) = self.circuits.circuits.get_mut(&c)
            {
                let stats = probe.window.stats(now);
                if policy::judge(&policy.sla, &stats) == SlaState::Met {
                    probe.met_since.get_or_insert(now);
                } else {
                    probe.met_since = None;
                }
                keys.push(c);
                views.push(PathView {
                    kind: kind_of(path),
                    up: out.is_some(),
                    stats,
                    met_since: probe.met_since,
                });
            }
        }
        let current = match active.and_then(|a| keys.iter().position(|c| *c == a)) {
            Some(i) => Some(i),
            None if lost_active || active.is_some() => Some(views.len()),
            None => None,
        };
        let last_switch = self
            .circuits
            .client_links
            .get(&link)
            .and_then(|l| l.last_switch);
        if let Some(d) = policy::decide(&policy, &views, current, last_switch, now) {
            let d = Decision {
                reason: reason.unwrap_or(d.reason),
                ..d
            };
            self.switch_path(now, link, id, (&keys, &views), current, d);
        }
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.sla = l
                .active
                .and_then(|a| keys.iter().position(|c| *c == a))
                .map_or(SlaState::Unknown, |i| {
                    policy::judge(&policy.sla, &views[i].stats)
                });
        }
    }

    /// Moves link `link`'s traffic as `d` says.
    fn switch_path(
        &mut self,
        now: Instant,
        link: u64,
        id: PolicyId,
        (keys, views): (&[u64], &[PathView]),
        current: Option<usize>,
        d: Decision,
    ) {
        let to = d.to.map(|i| keys[i]);
        let Some(l) = self.circuits.client_links.get_mut(&link) else {
            return;
        };
        let from = current.and(l.active_kind);
        l.active = to;
        l.active_kind = d.to.map(|i| views[i].kind);
        l.last_reason = Some(d.reason);
        let owner = l.owner;
        // The first path a link takes is no switch; every later change is.
        if current.is_some() || d.reason != SwitchReason::Initial {
            l.last_switch = Some(now);
            l.switches += 1;
            self.counters.path_switches += 1;
            *self.circuits.switches.entry(d.reason.as_str()).or_default() += 1;
        }
        let path = match to.and_then(|c| self.circuits.circuits.get(&c)) {
            Some(Circuit::Client { path, .. }) => path.clone(),
            _ => Vec::new(),
        };
        if let Some(c) = to {
            let queued: Vec<Vec<u8>> = self
                .circuits
                .client_links
                .get_mut(&link)
                .map(|l| l.queued.drain(..).collect())
                .unwrap_or_default();
            for payload in queued {
                self.send_on_circuit(c, Datagram::Data, &payload);
            }
            // The probe marks the circuit active, so the owner answers on it too.
            self.send_probe(now, c);
            if current.is_some() || d.reason != SwitchReason::Initial {
                self.replay_recent(VirtualEnd::Client(link), c);
            }
        }
        self.events
            .push_back(Event::Circuit(CircuitEvent::Switched {
                owner,
                policy: id,
                from,
                to: d.to.map(|i| views[i].kind),
                path,
                reason: d.reason,
            }));
    }

    /// Managed links judge their paths on every timer tick.
    pub(super) fn apply_policies(&mut self, now: Instant) {
        let managed: Vec<u64> = self
            .circuits
            .client_links
            .iter()
            .filter(|(_, l)| l.policy.is_some())
            .map(|(k, _)| *k)
            .collect();
        for link in managed {
            self.apply_policy(now, link, false, None);
        }
    }

    /// Pings `owner`: one probe straight to `addr` (if given), and one through every circuit
    /// up to it; each answer arrives as [`Event::PingReply`] with id `.0`. `.1` is how many
    /// probes went out.
    pub fn ping(&mut self, now: Instant, owner: NodeId, addr: Option<SocketAddr>) -> (u64, usize) {
        let id = self.circuits.next_ping;
        self.circuits.next_ping += 1;
        self.circuits
            .pings
            .retain(|_, p| now.saturating_duration_since(p.2) < PING_TIMEOUT);
        let mut sent = 0;
        if let Some(addr) = addr
            && self.circuits.pings.len() < MAX_PINGS
        {
            self.circuits.probe_nonce += 1;
            let nonce = self.circuits.probe_nonce;
            let p = header::probe(Datagram::Probe, None, 0, nonce);
            if self.queue_datagram(plain_transmit(addr, p.len()), p) {
                self.circuits.pings.insert(nonce, (id, Err(addr), now));
                sent += 1;
            }
        }
        let circuits: Vec<(u64, Vec<NodeId>)> = self
            .circuits
            .circuits
            .iter()
            .filter_map(|(k, c)| match c {
                Circuit::Client {
                    link,
                    out: Some(_),
                    path,
                    ..
                } if self
                    .circuits
                    .client_links
                    .get(link)
                    .is_some_and(|l| l.owner == owner) =>
                {
                    Some((*k, path.clone()))
                }
                _ => None,
            })
            .collect();
        for (ckey, path) in circuits {
            if self.circuits.pings.len() >= MAX_PINGS {
                break;
            }
            self.circuits.probe_nonce += 1;
            let nonce = self.circuits.probe_nonce;
            let body = header::probe(Datagram::Probe, None, 0, nonce);
            if self.send_on_circuit(ckey, Datagram::Probe, &body[HEADER_LEN..]) {
                self.circuits.pings.insert(nonce, (id, Ok(path), now));
                sent += 1;
            }
        }
        (id, sent)
    }

    /// Whether probe answer `nonce` is a ping's (then reported): one sent on a circuit when
    /// `from` is `None` (the circuit's label vouches for its source), else one sent straight
    /// to `from` (an answer from anywhere else is not the owner's).
    pub(super) fn ping_answered(
        &mut self,
        now: Instant,
        nonce: u64,
        from: Option<SocketAddr>,
    ) -> bool {
        let matches = match (self.circuits.pings.get(&nonce), from) {
            (Some((_, Ok(_), _)), None) => true,
            (Some((_, Err(addr), _)), Some(from)) => *addr == from,
            _ => false,
        };
        if !matches {
            return false;
        }
        let Some((id, path, sent)) = self.circuits.pings.remove(&nonce) else {
            return false;
        };
        let circuit = path.is_ok();
        let relays = path.unwrap_or_default();
        self.events.push_back(Event::PingReply {
            id,
            path: kind_of(&relays),
            relays,
            circuit,
            rtt: now.saturating_duration_since(sent),
        });
        true
    }

    /// Asks the owners of managed links riding relays without a direct path to punch, and
    /// dials again (once this node knows its public address).
    pub(in crate::node) fn punch_waiting_links(&mut self, now: Instant) {
        let links: Vec<u64> = self
            .circuits
            .client_links
            .iter()
            .filter(|(_, l)| l.policy.is_some() && l.active.is_some())
            .map(|(k, _)| *k)
            .collect();
        for link in links {
            if self.wanted_direct_pending(link) && self.request_punch(link) {
                self.restart_direct(now, link);
                self.replenish(now, link);
            }
        }
    }

    /// Sends the hole-punching probes that are due (owner side).
    pub(super) fn owner_punch(&mut self, now: Instant) {
        let due: Vec<(u64, SocketAddr, u64)> = self
            .circuits
            .owner_links
            .iter()
            .filter_map(|(k, l)| match l.punch {
                Some((to, _, next, nonce)) if next <= now => Some((*k, to, nonce)),
                _ => None,
            })
            .collect();
        for (link, to, nonce) in due {
            let p = header::probe(Datagram::Probe, None, PROBE_PUNCH, nonce);
            self.queue_datagram(plain_transmit(to, p.len()), p);
            if let Some(l) = self.circuits.owner_links.get_mut(&link) {
                l.punch = match l.punch {
                    Some((to, left, _, n)) if left > 1 => {
                        Some((to, left - 1, now + PUNCH_EVERY, n))
                    }
                    _ => None,
                };
            }
        }
    }

    /// A probe arrived straight from `from`: if it is an owner's hole-punching probe for one
    /// of this node's links, the owner's NAT maps it to `from`, so the direct path is dialed
    /// there (an owner behind a NAT that picks a port per destination is reached this way when
    /// this side can receive).
    pub(super) fn punch_probe_seen(&mut self, now: Instant, from: SocketAddr, probe: &[u8]) {
        let (flags, nonce) = header::probe_body(probe);
        if flags & PROBE_PUNCH == 0 {
            return;
        }
        let Some((&link, l)) = self
            .circuits
            .client_links
            .iter_mut()
            .find(|(_, l)| l.punch_nonce == Some(nonce))
        else {
            return;
        };
        l.punch_nonce = None;
        if l.owner_addr == from || from.is_ipv4() != l.owner_addr.is_ipv4() {
            return;
        }
        tracing::debug!("owner {} is mapped at {from}: dialing there", l.owner);
        l.owner_addr = from;
        if self.wanted_direct_pending(link) {
            self.restart_direct(now, link);
            self.replenish(now, link);
        }
    }

    /// Asks the owner of managed link `link`, through its active relay path, to open its side
    /// towards this node's public address while the direct path is dialed (hole punching).
    /// Behind a NAT that picks a port per destination, this node first opens its side
    /// sockets towards the owner (birthday punching). Whether it asked (attempts left, a relay
    /// path up, an address to give).
    pub(super) fn request_punch(&mut self, link: u64) -> bool {
        let Some(l) = self.circuits.client_links.get(&link) else {
            return false;
        };
        let allows_direct = l
            .policy
            .map(|id| self.circuits.policies.get(&id).copied().unwrap_or_default())
            .is_some_and(|p| p.allows_direct());
        let (family, owner_addr) = (l.owner_addr.is_ipv4(), l.owner_addr);
        let relay = l.circuits.iter().copied().find(|c| {
            matches!(self.circuits.circuits.get(c),
                Some(Circuit::Client { path, out: Some(_), .. }) if !path.is_empty())
        });
        let (Some(relay), true, true) = (relay, allows_direct, l.punches_left > 0) else {
            return false;
        };
        // One nonce until a probe carrying it arrives: answers and probes of an earlier
        // request (an attempt the owner still runs) count for a later one.
        let nonce = match l.punch_nonce {
            Some(n) => n,
            None => self.circuits.random_u64(),
        };
        let body = match self.punch_address(family) {
            Some((me, flags)) if flags & PUNCH_SPRAY_ME == 0 => {
                header::punch_request(nonce, me, flags)
            }
            // This side's NAT picks a port per destination: it opens many towards the owner
            // first, then asks the owner to probe random ports of its address.
            Some((me, flags)) => {
                let (now, role) = (self.circuits.clock, Role::Client(link));
                if !self.side.attempt_towards(owner_addr, nonce) {
                    if !self.birthdays_left(role)
                        || !self.start_birthday(now, owner_addr, nonce, role)
                    {
                        return false;
                    }
                    self.spend_birthday(role);
                }
                header::punch_request(nonce, me, flags)
            }
            None => return false,
        };
        if !self.send_on_circuit(relay, Datagram::Probe, &body) {
            self.side.cancel(Role::Client(link));
            return false;
        }
        if let Some(l) = self.circuits.client_links.get_mut(&link) {
            l.punches_left -= 1;
            l.punch_nonce = Some(nonce);
        }
        self.counters.punch_requests += 1;
        true
    }

    /// The address to give the far end for hole punching in a family (`true`: IPv4), with its
    /// flags: [`PUNCH_OPEN`] when anyone can send to it, [`PUNCH_SPRAY_ME`] when the far end
    /// should send to random ports there (this node's NAT picks a port per destination: only
    /// its IP is known).
    pub(in crate::node) fn punch_address(&self, v4: bool) -> Option<(SocketAddr, u8)> {
        if let Some(a) = self.own_dialable_address(v4) {
            return Some((a, PUNCH_OPEN));
        }
        if let Some(a) = self.observed_addresses().iter().find(|a| a.is_ipv4() == v4) {
            return Some((*a, 0));
        }
        let (mappings, _) = self.reachability();
        if !mappings.contains(&(v4, Mapping::EndpointDependent)) {
            return None;
        }
        // Any port will do: the far end sends to random ones.
        let ip = self.public_ip(v4)?;
        Some((SocketAddr::new(ip, LOWEST_PORT), PUNCH_SPRAY_ME))
    }

    /// An owner's answer to this node's punch request came back on a client circuit.
    pub(super) fn punch_answered(&mut self, now: Instant, data: &[u8]) {
        let (_, nonce) = header::probe_body(data);
        let Some(at) = header::observed(data) else {
            return;
        };
        if header::punch_flags(data) & PUNCH_SPRAY_ME == 0 {
            return;
        }
        let both_hard = self
            .punch_address(at.is_ipv4())
            .is_some_and(|(_, flags)| flags & PUNCH_SPRAY_ME != 0);
        let Some(link) = self
            .circuits
            .client_links
            .iter()
            .find(|(_, l)| l.punch_nonce == Some(nonce))
            .map(|(k, _)| *k)
        else {
            return;
        };
        let role = Role::Client(link);
        if both_hard {
            self.side.cancel(role);
            let Some(l) = self.circuits.client_links.get_mut(&link) else {
                return;
            };
            // Both NATs pick a port per destination: no port of either side can be learned.
            l.punches_left = 0;
            l.punch_nonce = None;
            tracing::info!(
                "no hole punching to {}: its NAT and this node's both pick a port per peer; the \
                 link stays relayed",
                l.owner
            );
            self.counters.punches_impossible += 1;
            return;
        }
        // However often an owner answers, a link sprays at most `PER_LINK` times.
        if self.birthdays_left(role) && self.start_spray(now, at.ip(), nonce) {
            self.spend_birthday(role);
        }
    }

    /// Carries out a client's punch request on owner link `link` (arrived on circuit `ckey`,
    /// with the client's `flags`): probes to `to` from this node's socket, or the birthday
    /// approach when one side's NAT picks a port per destination and the other filters. The
    /// answer tells the client where this node is seen and whether to spray.
    pub(super) fn punch_for_client(
        &mut self,
        now: Instant,
        link: u64,
        ckey: u64,
        to: SocketAddr,
        nonce: u64,
        flags: u8,
    ) {
        let me = self.punch_address(to.is_ipv4());
        let client_hard = flags & PUNCH_SPRAY_ME != 0;
        let owner_hard = me.is_some_and(|(_, f)| f & PUNCH_SPRAY_ME != 0);
        let role = Role::Owner(link);
        let mut answer = 0;
        if client_hard && owner_hard {
            // Neither port can be learned: the client gives up on hearing so.
            answer = PUNCH_SPRAY_ME;
        } else if client_hard {
            if !self.birthdays_left(role) || !self.start_spray(now, to.ip(), nonce) {
                return;
            }
            self.spend_birthday(role);
        } else if owner_hard && flags & PUNCH_OPEN == 0 {
            if !self.side.attempt_towards(to, nonce) {
                if !self.birthdays_left(role) || !self.start_birthday(now, to, nonce, role) {
                    return;
                }
                self.spend_birthday(role);
            }
            answer = PUNCH_SPRAY_ME;
        } else if let Some(l) = self.circuits.owner_links.get_mut(&link) {
            // Probes from this node's own socket open its side; a client anyone can reach
            // learns from them where this side's NAT maps it.
            l.punch = Some((to, PUNCH_PROBES, now, nonce));
        }
        self.counters.punches_answered += 1;
        if let Some((at, _)) = me {
            let body = header::punch_answer(nonce, at, answer);
            self.send_on_circuit(ckey, Datagram::ProbeReply, &body);
        }
    }

    /// Whether the link `role` names may still cause a birthday attempt or spray.
    fn birthdays_left(&self, role: Role) -> bool {
        match role {
            Role::Client(link) => self
                .circuits
                .client_links
                .get(&link)
                .is_some_and(|l| l.birthdays_left > 0),
            Role::Owner(link) => self
                .circuits
                .owner_links
                .get(&link)
                .is_some_and(|l| l.birthdays_left > 0),
        }
    }

    /// One birthday attempt or spray of the link `role` names has started.
    fn spend_birthday(&mut self, role: Role) {
        let left = match role {
            Role::Client(link) => self
                .circuits
                .client_links
                .get_mut(&link)
                .map(|l| &mut l.birthdays_left),
            Role::Owner(link) => self
                .circuits
                .owner_links
                .get_mut(&link)
                .map(|l| &mut l.birthdays_left),
        };
        if let Some(n) = left {
            *n = n.saturating_sub(1);
        }
    }

    /// Whether the link a birthday attempt was started for is still there.
    pub(in crate::node) fn punch_role_live(&self, role: Role) -> bool {
        match role {
            Role::Client(link) => self.circuits.client_links.contains_key(&link),
            Role::Owner(link) => self.circuits.owner_links.contains_key(&link),
        }
    }

    /// A birthday attempt won: `remote` answered on a side socket of this node's.
    pub(in crate::node) fn punched(
        &mut self,
        now: Instant,
        role: Role,
        remote: SocketAddr,
        nonce: u64,
    ) {
        match role {
            Role::Client(link) => {
                if let Some(l) = self.circuits.client_links.get_mut(&link) {
                    l.punch_nonce = None;
                    tracing::debug!("owner {} answered at {remote}: dialing from there", l.owner);
                }
                if self.wanted_direct_pending(link) {
                    self.restart_direct(now, link);
                    self.replenish(now, link);
                }
            }
            Role::Owner(link) => {
                // Probes from the winning socket through the client's NAT, which the client's
                // spray opened: the client learns where to dial.
                if let Some(l) = self.circuits.owner_links.get_mut(&link) {
                    l.punch = Some((remote, PUNCH_PROBES, now, nonce));
                }
                self.owner_punch(now);
            }
        }
    }

    /// Whether circuit `ckey` belongs to a managed link (whose every path is probed as
    /// often as an active one, so the policy can judge them all).
    pub(super) fn is_managed(&self, ckey: u64) -> bool {
        match self.circuits.circuits.get(&ckey) {
            Some(Circuit::Client { link, .. }) => self
                .circuits
                .client_links
                .get(link)
                .is_some_and(|l| l.policy.is_some()),
            _ => false,
        }
    }
}

impl Node {
    /// The kind of path session `sid` runs over now (for metrics).
    pub(in crate::node) fn session_path(&self, sid: SessionId) -> PathKind {
        let Some(s) = self.sessions.get(&sid) else {
            return PathKind::Direct;
        };
        if !is_virtual(&s.remote) {
            return PathKind::Direct;
        }
        let peer = s.peer;
        match self.circuits.by_vaddr.get(&s.remote) {
            Some(VirtualEnd::Client(l)) => self
                .circuits
                .client_links
                .get(l)
                .and_then(|l| l.active_kind)
                .unwrap_or(PathKind::Relay),
            Some(VirtualEnd::Owner(l)) => {
                let send = self.circuits.owner_links.get(l).and_then(|l| l.send);
                self.circuit_kind(send, peer)
            }
            None => PathKind::Relay,
        }
    }

    /// The client at the far end of owner link `link`, looked up once its session is up.
    pub(super) fn owner_link_client(&mut self, link: u64) -> Option<NodeId> {
        let l = self.circuits.owner_links.get(&link)?;
        if let Some(c) = l.client {
            return Some(c);
        }
        let vaddr = l.vaddr;
        let client = self
            .sessions
            .iter()
            .find(|(_, s)| s.remote == vaddr && s.established)
            .and_then(|(_, s)| s.peer)?;
        if let Some(l) = self.circuits.owner_links.get_mut(&link) {
            l.client = Some(client);
        }
        Some(client)
    }

    /// The kind of path circuit `ckey` is; at an owner, a circuit whose previous hop is the
    /// client itself (`client`) is the direct path.
    pub(super) fn circuit_kind(&self, ckey: Option<u64>, client: Option<NodeId>) -> PathKind {
        match ckey.and_then(|c| self.circuits.circuits.get(&c)) {
            Some(Circuit::Client { path, .. }) => kind_of(path),
            Some(Circuit::Owner { peer, .. }) if Some(*peer) == client => PathKind::Direct,
            _ => PathKind::Relay,
        }
    }
}

/// Pings in flight at most (their answers are forgotten after [`PING_TIMEOUT`]).
const MAX_PINGS: usize = 256;
/// How long a ping's answer is waited for.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A circuit's kind of path, from its relays.
pub(super) fn kind_of(relays: &[NodeId]) -> PathKind {
    if relays.is_empty() {
        PathKind::Direct
    } else {
        PathKind::Relay
    }
}

//! The relay header on the UDP data plane, version 1 (docs/PROTOCOL.md, "Relay datagrams"):
//!
//! ```text
//! byte 0:    0b0001_vvtt   (QUIC's fixed bit 0x40 clear; vv = version - 1; tt = kind)
//! bytes 1-4: circuit label, big-endian u32 (0: addressed to the receiving node itself)
//! then:      payload (a QUIC packet for data; 9 bytes for probes)
//! ```
//!
//! A relay swaps the label and forwards; it never reads the payload.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Bytes the header adds to every relayed datagram.
pub const HEADER_LEN: usize = 5;
/// The header version this build speaks.
pub const RELAY_VERSION: u8 = 1;
/// Probe payload: flags (1 byte) and a nonce (8 bytes).
pub const PROBE_LEN: usize = 9;
/// Probe flag: the sender now sends its data on this circuit (the far end should too).
pub const PROBE_ACTIVE: u8 = 1;
/// Probe flag: "tell me the address you see me at". Such a probe is padded to
/// [`OBSERVE_PROBE_LEN`], so the answer, which carries the address, is no larger.
pub const PROBE_OBSERVE: u8 = 2;
/// Probe flag, on a circuit from a client to its owner: "send probes straight to the address
/// that follows" (as in an answer to [`PROBE_OBSERVE`]), so the owner's NAT or firewall lets
/// the client's direct connection in (hole punching).
pub const PROBE_PUNCH: u8 = 4;
/// Probe flag, with [`PROBE_OBSERVE`]: "and dial me back at that address from a port of yours
/// I never sent to", which only a node without a NAT or stateful firewall in front receives.
/// The dial-back itself is a probe reply carrying this flag alone.
pub const PROBE_DIAL_BACK: u8 = 8;
/// Flag of an answer only: "a dial-back is on its way". A node that echoes flags without
/// knowing [`PROBE_DIAL_BACK`] never sets it, so its silence is not counted against the asker.
pub const PROBE_DIAL_BACK_COMING: u8 = 16;
/// Bytes an observed address takes after a probe reply's body: family (4 or 6), the address
/// (4 or 16 bytes, zero-padded to 16), the port (big-endian).
pub const OBSERVED_LEN: usize = 19;
/// The whole length of an observe probe (and of its answer).
pub const OBSERVE_PROBE_LEN: usize = HEADER_LEN + PROBE_LEN + OBSERVED_LEN;
/// A dial-back probe's length: its answer and its dial-back together are no larger.
pub const DIAL_BACK_PROBE_LEN: usize = OBSERVE_PROBE_LEN + HEADER_LEN + PROBE_LEN;

const TAG: u8 = 0x10;
const TAG_MASK: u8 = 0xf0;

/// The label a spliced (stream) circuit's setup names where a datagram circuit's back label
/// would be: a node receiving a setup with it splices streams, whatever session carries the
/// setup (a relay reaching an owner over the QUIC session the owner keeps to it, in TCP mode).
/// No datagram circuit is ever given it ([`crate::relay::table::LabelTable::allocate`]).
pub const STREAM_LABEL: Label = match Label::new(1) {
    Some(l) => l,
    None => unreachable!(),
};

/// A circuit label: chosen by the node that receives datagrams carrying it, unique in its table.
/// Zero is reserved (probes addressed to the receiving node), so a label is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(std::num::NonZeroU32);

impl Label {
    /// A label from its wire value; `None` for zero.
    pub const fn new(value: u32) -> Option<Self> {
        match std::num::NonZeroU32::new(value) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }

    /// The wire value.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl serde::Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.get())
    }
}

impl<'de> serde::Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        Self::new(v).ok_or_else(|| serde::de::Error::custom("circuit label 0"))
    }
}

/// What a relay datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A packet of the end-to-end QUIC connection.
    Data = 0,
    /// A liveness and RTT probe; the far end (or the receiving node, for label 0) answers.
    Probe = 1,
    /// The answer to a probe, carrying its flags and nonce back.
    ProbeReply = 2,
}

/// The parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What follows.
    pub kind: Kind,
    /// The circuit, or `None` for a probe addressed to the receiving node.
    pub label: Option<Label>,
}

/// Why bytes are not a relay datagram this build accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Shorter than the header (or a probe shorter than its payload).
    #[error("relay datagram truncated")]
    Truncated,
    /// Not a relay datagram at all.
    #[error("not a relay datagram")]
    NotRelay,
    /// A version this build does not speak.
    #[error("relay header version {0} is not supported")]
    Version(u8),
    /// The reserved kind.
    #[error("unknown relay datagram kind")]
    UnknownKind,
    /// Data must travel on a circuit.
    #[error("data datagram without a circuit label")]
    DataWithoutLabel,
}

/// Whether `first` (a datagram's first byte) belongs to the relay header's range.
pub fn is_relay(first: u8) -> bool {
    first & TAG_MASK == TAG
}

/// Parses the header of `datagram`.
pub fn parse(datagram: &[u8]) -> Result<Header, HeaderError> {
    let Some(head) = datagram.get(..HEADER_LEN) else {
        return Err(HeaderError::Truncated);
    };
    if !is_relay(head[0]) {
        return Err(HeaderError::NotRelay);
    }
    let version = ((head[0] >> 2) & 0b11) + 1;
    if version != RELAY_VERSION {
        return Err(HeaderError::Version(version));
    }
    let kind = match head[0] & 0b11 {
        0 => Kind::Data,
        1 => Kind::Probe,
        2 => Kind::ProbeReply,
        _ => return Err(HeaderError::UnknownKind),
    };
    let label = Label::new(u32::from_be_bytes([head[1], head[2], head[3], head[4]]));
    match kind {
        Kind::Data if label.is_none() => return Err(HeaderError::DataWithoutLabel),
        Kind::Probe | Kind::ProbeReply if datagram.len() < HEADER_LEN + PROBE_LEN => {
            return Err(HeaderError::Truncated);
        }
        _ => {}
    }
    Ok(Header { kind, label })
}

/// The header bytes for `kind` on `label`.
pub fn encode(kind: Kind, label: Option<Label>) -> [u8; HEADER_LEN] {
    let l = label.map_or(0, Label::get).to_be_bytes();
    let first = TAG | ((RELAY_VERSION - 1) << 2) | kind as u8;
    [first, l[0], l[1], l[2], l[3]]
}

/// Rewrites the label of a datagram whose header [`parse`] accepted: the whole work of a relay.
pub fn swap_label(datagram: &mut [u8], label: Label) {
    datagram[1..HEADER_LEN].copy_from_slice(&label.get().to_be_bytes());
}

/// A probe (or reply) datagram.
pub fn probe(kind: Kind, label: Option<Label>, flags: u8, nonce: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + PROBE_LEN);
    out.extend_from_slice(&encode(kind, label));
    out.push(flags);
    out.extend_from_slice(&nonce.to_be_bytes());
    out
}

/// An observe probe: [`probe`] with [`PROBE_OBSERVE`], padded to [`OBSERVE_PROBE_LEN`].
pub fn observe_probe(nonce: u64) -> Vec<u8> {
    let mut out = probe(Kind::Probe, None, PROBE_OBSERVE, nonce);
    out.resize(OBSERVE_PROBE_LEN, 0);
    out
}

/// An observe probe that also asks for a dial-back ([`PROBE_DIAL_BACK`]).
pub fn dial_back_probe(nonce: u64) -> Vec<u8> {
    let mut out = probe(Kind::Probe, None, PROBE_OBSERVE | PROBE_DIAL_BACK, nonce);
    out.resize(DIAL_BACK_PROBE_LEN, 0);
    out
}

/// Whether a probe asks to be dialed back (and is long enough that its answer and the
/// dial-back together are no larger than it).
pub fn wants_dial_back(probe_datagram: &[u8]) -> bool {
    let (flags, _) = probe_body(probe_datagram);
    flags & (PROBE_OBSERVE | PROBE_DIAL_BACK) == PROBE_OBSERVE | PROBE_DIAL_BACK
        && probe_datagram.len() >= DIAL_BACK_PROBE_LEN
}

/// The dial-back for the probe with `nonce`.
pub fn dial_back(nonce: u64) -> Vec<u8> {
    probe(Kind::ProbeReply, None, PROBE_DIAL_BACK, nonce)
}

/// Flag of the byte after the address of a punch request or answer: "my NAT gives every
/// destination a port of its own, so send to many ports of my address while I send from many
/// of mine" (the birthday approach; docs/PROTOCOL.md). The byte is absent when no flag is set,
/// as in requests from before it existed.
pub const PUNCH_SPRAY_ME: u8 = 1;
/// Flag of the same byte: "datagrams from anyone reach this address" (no NAT or firewall in
/// front), so probes from the far end's own socket are enough.
pub const PUNCH_OPEN: u8 = 2;

/// The body (after the header) of a punch request asking the far end to probe `to`, with the
/// [`PUNCH_SPRAY_ME`] / [`PUNCH_OPEN`] `flags`.
pub fn punch_request(nonce: u64, to: SocketAddr, flags: u8) -> Vec<u8> {
    punch_body(Kind::Probe, nonce, to, flags)
}

/// The body of the owner's answer to a punch request: where peers see it, and with
/// [`PUNCH_SPRAY_ME`] that the client should send to random ports there (the owner's NAT picks
/// a port per destination and it now sends to the client from many ports).
pub fn punch_answer(nonce: u64, at: SocketAddr, flags: u8) -> Vec<u8> {
    punch_body(Kind::ProbeReply, nonce, at, flags)
}

fn punch_body(kind: Kind, nonce: u64, at: SocketAddr, flags: u8) -> Vec<u8> {
    let mut out = probe(kind, None, PROBE_PUNCH, nonce);
    out.extend_from_slice(&encode_addr(at));
    if flags != 0 {
        out.push(flags);
    }
    out.split_off(HEADER_LEN)
}

/// The flags of a punch request or answer ([`parse`] accepted, with its header); 0 without
/// the byte.
pub fn punch_flags(datagram: &[u8]) -> u8 {
    datagram
        .get(HEADER_LEN + PROBE_LEN + OBSERVED_LEN)
        .copied()
        .unwrap_or(0)
}

fn encode_addr(addr: SocketAddr) -> [u8; OBSERVED_LEN] {
    let mut out = [0u8; OBSERVED_LEN];
    out[0] = if addr.is_ipv4() { 4 } else { 6 };
    match addr.ip() {
        IpAddr::V4(v4) => out[1..5].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out[1..17].copy_from_slice(&v6.octets()),
    }
    out[17..].copy_from_slice(&addr.port().to_be_bytes());
    out
}

/// The answer to `probe_datagram` (a probe [`parse`] accepted) received from `from`: the
/// same flags and nonce, and `from` when the probe asked for it and is long enough to carry
/// it, so an answer is never larger than its probe.
pub fn probe_answer(probe_datagram: &[u8], from: SocketAddr) -> Vec<u8> {
    let (flags, nonce) = probe_body(probe_datagram);
    let mut out = probe(Kind::ProbeReply, None, flags, nonce);
    if flags & PROBE_OBSERVE != 0 && probe_datagram.len() >= OBSERVE_PROBE_LEN {
        out.extend_from_slice(&encode_addr(from));
    }
    out
}

/// The address a probe reply ([`parse`] accepted) says its probe came from, or a punch
/// request names, if it carries a well-formed one.
pub fn observed(reply: &[u8]) -> Option<SocketAddr> {
    let o = reply.get(HEADER_LEN + PROBE_LEN..HEADER_LEN + PROBE_LEN + OBSERVED_LEN)?;
    let port = u16::from_be_bytes([o[17], o[18]]);
    let ip: IpAddr = match o[0] {
        4 if o[5..17].iter().all(|b| *b == 0) => IpAddr::from(<[u8; 4]>::try_from(&o[1..5]).ok()?),
        6 => IpAddr::from(<[u8; 16]>::try_from(&o[1..17]).ok()?),
        _ => return None,
    };
    (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

/// The flags and nonce of a probe datagram [`parse`] accepted.
pub fn probe_body(datagram: &[u8]) -> (u8, u64) {
    let body = &datagram[HEADER_LEN..HEADER_LEN + PROBE_LEN];
    let mut nonce = [0; 8];
    nonce.copy_from_slice(&body[1..]);
    (body[0], u64::from_be_bytes(nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let label = Label::new(0xdead_beef);
        for kind in [Kind::Data, Kind::Probe, Kind::ProbeReply] {
            let mut d = encode(kind, label).to_vec();
            d.extend_from_slice(&[0; PROBE_LEN]);
            assert_eq!(parse(&d), Ok(Header { kind, label }));
            assert_eq!(d[0] & 0x40, 0, "QUIC's fixed bit stays clear");
        }
    }

    #[test]
    fn rejects_what_it_must() {
        assert_eq!(parse(&[0x10, 0, 0, 0]), Err(HeaderError::Truncated));
        assert_eq!(
            parse(&[0x10, 0, 0, 0, 0]),
            Err(HeaderError::DataWithoutLabel)
        );
        assert_eq!(parse(&[0x13, 0, 0, 0, 1]), Err(HeaderError::UnknownKind));
        assert_eq!(parse(&[0x14, 0, 0, 0, 1]), Err(HeaderError::Version(2)));
        assert_eq!(parse(&[0x40, 0, 0, 0, 1]), Err(HeaderError::NotRelay));
        assert_eq!(parse(&[0x11, 0, 0, 0, 1, 0]), Err(HeaderError::Truncated));
    }
}

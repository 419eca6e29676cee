//! Circuit control messages, version 1 (docs/PROTOCOL.md, "Circuits"). A circuit hop is set up
//! on a stream of the session between two neighbours, and lives as long as that stream:
//!
//! ```text
//! dialer → next hop:  version: u8 = 2 | len: u16 BE | postcard(Create)
//! next hop → dialer:  len: u16 BE | postcard(Reply)
//! ```
//!
//! The version byte shares its place with the service stream's (1), which is how an owner tells
//! a circuit from a service request on a new stream.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::header::Label;
use crate::identity::NodeId;

/// First byte of a circuit stream.
pub const CIRCUIT_STREAM_VERSION: u8 = 2;
/// Largest control message body.
pub const MAX_CONTROL_LEN: usize = 4096;
/// Most relays on one circuit.
pub const MAX_HOPS: usize = 8;
/// Longest reason text in a refusal.
pub const MAX_REASON_LEN: usize = 200;

/// Names one end-to-end connection at its owner: the circuits a client builds for it (the active
/// one and its standby) carry the same flow, so the owner sees one peer behind all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FlowId(pub [u8; 16]);

/// Asks the next hop to join a circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    /// The label the next hop puts on datagrams it sends back to the dialer (chosen by the
    /// dialer, which receives them).
    pub back: Label,
    /// The layer of the onion addressed to the next hop ([`super::onion`]).
    pub onion: Vec<u8>,
}

/// What a hop finds inside its layer of the onion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instruction {
    /// Relay: extend the circuit to `next` at `addr`, passing it `inner`.
    Extend {
        /// The next hop's node.
        next: NodeId,
        /// Where it accepts QUIC sessions.
        addr: SocketAddr,
        /// Its layer.
        inner: Vec<u8>,
    },
    /// Endpoint: the circuit ends here and carries `flow`.
    Deliver {
        /// The end-to-end connection.
        flow: FlowId,
    },
}

/// A relay's limits, stated in every reply so the dialer is never surprised by a silent cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLimits {
    /// Circuits the relay carries at once, in total.
    pub max_circuits: u32,
    /// Circuits one peer may have through it at once.
    pub max_per_peer: u32,
    /// Seconds without a datagram after which a circuit is torn down.
    pub idle_expiry_secs: u32,
    /// Circuit setups per second one peer may start (with bursts of twice that).
    pub setups_per_second: u32,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_circuits: 4096,
            max_per_peer: 64,
            idle_expiry_secs: 120,
            setups_per_second: 10,
        }
    }
}

/// Why a hop refused to join a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The node does not relay.
    NotRelay,
    /// A limit stated in [`RelayLimits`] was reached.
    LimitReached,
    /// Setups from this peer arrive faster than the relay allows.
    RateLimited,
    /// The next hop could not be reached.
    NextHopUnreachable,
    /// The request did not decode or decrypt.
    BadRequest,
}

/// The answer to a [`Create`], passed back hop by hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Joined: the dialer sends forward datagrams with `label`; `limits` are those of this
    /// hop and the relays after it, nearest first.
    Created {
        /// The label this hop chose for datagrams from the dialer.
        label: Label,
        /// Limits of the relays from here on.
        limits: Vec<RelayLimits>,
    },
    /// Refused at hop `hop` (0 = the one answering, counted onward).
    Refused {
        /// Why.
        refusal: Refusal,
        /// Which hop refused, counted from the one answering.
        hop: u8,
        /// Human-readable detail.
        reason: String,
    },
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The stream's first byte is not the circuit version.
    #[error("circuit stream version {0} is not supported")]
    Version(u8),
    /// The length prefix exceeds [`MAX_CONTROL_LEN`].
    #[error("circuit control message of {0} bytes is too long")]
    TooLong(usize),
    /// The body does not decode or breaks a bound.
    #[error("malformed circuit control message: {0}")]
    Malformed(&'static str),
}

fn frame(body: Vec<u8>, version: Option<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 3);
    out.extend(version);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Splits a length-prefixed body off `buf`: `Ok(None)` until it is complete.
fn unframe(buf: &[u8]) -> Result<Option<(&[u8], usize)>, ControlError> {
    let Some(len) = buf.get(..2) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if len > MAX_CONTROL_LEN {
        return Err(ControlError::TooLong(len));
    }
    Ok(buf.get(2..2 + len).map(|body| (body, 2 + len)))
}

impl Create {
    /// The framed request, version byte first.
    pub fn encode(&self) -> Vec<u8> {
        frame(
            postcard::to_allocvec(self).expect("serializing to memory"),
            Some(CIRCUIT_STREAM_VERSION),
        )
    }

    /// Decodes a framed request from the start of `buf`: `Ok(None)` until it is complete,
    /// else the request and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ControlError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != CIRCUIT_STREAM_VERSION {
            return Err(ControlError::Version(version));
        }
        let Some((body, used)) = unframe(&buf[1..])? else {
            return Ok(None);
        };
        let create: Self =
            postcard::from_bytes(body).map_err(|_| ControlError::Malformed("create"))?;
        Ok(Some((create, used + 1)))
    }
}

impl Instruction {
    /// The plaintext of an onion layer.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serializing to memory")
    }

    /// Decodes an onion layer's plaintext (the whole slice).
    pub fn decode(buf: &[u8]) -> Result<Self, ControlError> {
        let (inst, rest) = postcard::take_from_bytes::<Self>(buf)
            .map_err(|_| ControlError::Malformed("instruction"))?;
        if !rest.is_empty() {
            return Err(ControlError::Malformed("bytes after the instruction"));
        }
        Ok(inst)
    }
}

impl Reply {
    /// The framed reply.
    pub fn encode(&self) -> Vec<u8> {
        frame(
            postcard::to_allocvec(self).expect("serializing to memory"),
            None,
        )
    }

    /// Decodes a framed reply from the start of `buf`, as [`Create::decode`] does.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ControlError> {
        let Some((body, used)) = unframe(buf)? else {
            return Ok(None);
        };
        let reply: Self =
            postcard::from_bytes(body).map_err(|_| ControlError::Malformed("reply"))?;
        match &reply {
            Reply::Created { limits, .. } if limits.len() > MAX_HOPS => Err(
                ControlError::Malformed("limits of more relays than a circuit has"),
            ),
            Reply::Refused { reason, .. } if reason.len() > MAX_REASON_LEN => {
                Err(ControlError::Malformed("refusal reason too long"))
            }
            _ => Ok(Some((reply, used))),
        }
    }

    /// A refusal by the hop answering, its reason cut to [`MAX_REASON_LEN`].
    pub fn refused(refusal: Refusal, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Reply::Refused {
            refusal,
            hop: 0,
            reason: reason[..end].to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_partial_input() {
        let c = Create {
            back: Label::new(7).unwrap(),
            onion: vec![1; 300],
        };
        let bytes = c.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Create::decode(&bytes[..cut]), Ok(None));
        }
        assert_eq!(Create::decode(&bytes), Ok(Some((c, bytes.len()))));
        let r = Reply::Created {
            label: Label::new(9).unwrap(),
            limits: vec![RelayLimits::default(); 2],
        };
        let bytes = r.encode();
        assert_eq!(Reply::decode(&bytes), Ok(Some((r, bytes.len()))));
        assert_eq!(
            Create::decode(&[1, 0, 0]),
            Err(ControlError::Version(1)),
            "a service request is not a circuit"
        );
        assert_eq!(
            Reply::decode(&[0xff, 0xff]),
            Err(ControlError::TooLong(0xffff))
        );
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let Reply::Refused { reason, .. } = Reply::refused(Refusal::BadRequest, &"é".repeat(150))
        else {
            unreachable!()
        };
        assert!(reason.len() <= MAX_REASON_LEN);
    }
}

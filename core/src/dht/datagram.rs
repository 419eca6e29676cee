//! DHT messages as self-authenticated UDP datagrams on the node's one port (the transport the
//! simulator's figures chose over sessions: no handshake per hop).
//!
//! ```text
//! tag: u8 = 0x2a | signer: [u8; 32] | signature: [u8; 64] | to: [u8; 32] | message (postcard)
//! ```
//!
//! - The tag has QUIC's fixed bit (0x40) clear, and VX6's QUIC endpoints never grease that bit,
//!   so the first byte tells these datagrams from QUIC packets on the shared socket.
//! - The signature (Ed25519, strict) covers `"vx6/dht-datagram/v1" || 0x00 || to || message`;
//!   the signer's NodeId is the sender, and `to` binds the datagram to one receiver, so it cannot
//!   be replayed to another node.
//! - Against amplification, a request is padded to at least [`MIN_REQUEST`] bytes (padding
//!   travels inside the message and is signed), and an answer is trimmed to at most
//!   [`MAX_DATAGRAM`] bytes: an answer is never much larger than the request that caused it.

use super::message::{Body, Message, MessageError, Response};
use crate::identity::{Identity, KeyError, NodeId, PublicKey};

/// First byte of a DHT datagram.
pub const TAG: u8 = 0x2a;
/// Smallest request accepted (anti-amplification).
pub const MIN_REQUEST: usize = 1200;
/// Largest datagram sent or accepted: fits a 1500-byte path with IPv6 and UDP headers.
pub const MAX_DATAGRAM: usize = 1452;
const HEADER: usize = 1 + 32 + 64 + 32;
/// The receiver id of a `Ping` sent to an address whose node is not known yet (bootstrap from a
/// bare address): the only message accepted with it.
pub const ANYONE: NodeId = NodeId::from_bytes([0; 32]);
const DOMAIN: &[u8] = b"vx6/dht-datagram/v1\0";

/// Why bytes are not a valid DHT datagram for this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    /// Not a DHT datagram (wrong first byte).
    #[error("not a DHT datagram")]
    NotDht,
    /// Shorter than the header, or longer than [`MAX_DATAGRAM`].
    #[error("DHT datagram of {0} bytes is out of bounds")]
    Size(usize),
    /// A request below [`MIN_REQUEST`].
    #[error("DHT request of {0} bytes is below the anti-amplification minimum")]
    ShortRequest(usize),
    /// The signer field is not a usable key.
    #[error("DHT datagram signer: {0}")]
    Signer(#[from] KeyError),
    /// The signature does not verify.
    #[error("DHT datagram signature does not verify")]
    BadSignature,
    /// Meant for another node.
    #[error("DHT datagram addressed to another node")]
    NotForUs,
    /// The message inside is invalid.
    #[error(transparent)]
    Message(#[from] MessageError),
}

fn signed(to: &NodeId, message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32 + message.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(to.as_bytes());
    m.extend_from_slice(message);
    m
}

/// Encodes `message` for `to`, signed by `identity`. Requests are padded to [`MIN_REQUEST`];
/// answers that would exceed [`MAX_DATAGRAM`] lose records but the first, then contacts, from
/// the end, then the first record. A
/// request that does not fit is an error: the caller sends fewer records per `Store`.
pub fn encode(
    identity: &Identity,
    to: &NodeId,
    message: &Message,
) -> Result<Vec<u8>, MessageError> {
    let mut message = message.clone();
    let mut body = message.encode()?;
    loop {
        if HEADER + body.len() <= MAX_DATAGRAM {
            break;
        }
        if !trim(&mut message) {
            return Err(MessageError::TooLong(HEADER + body.len()));
        }
        body = message.encode()?;
    }
    if matches!(message.body, Body::Request(_)) && HEADER + body.len() < MIN_REQUEST {
        // Padding follows the message under the signature; `decode` accepts only zeros there.
        body.resize(MIN_REQUEST - HEADER, 0);
    }
    let signature = identity.sign(&signed(to, &body));
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(TAG);
    out.extend_from_slice(&identity.public_key().to_bytes());
    out.extend_from_slice(&signature);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Drops the last record or contact of an answer; false if there is nothing left to drop.
fn trim(message: &mut Message) -> bool {
    match &mut message.body {
        // The first record goes last, after every contact: it is what was asked for (a node
        // serves its alias record first), and an alias record alone is larger than most.
        Body::Response(Response::Value { records, closer }) => {
            (records.len() > 1 && records.pop().is_some())
                || closer.pop().is_some()
                || records.pop().is_some()
        }
        Body::Response(Response::Nodes { closer }) => closer.pop().is_some(),
        Body::Response(Response::Synced { records, want }) => {
            records.pop().is_some() || want.pop().is_some()
        }
        _ => false,
    }
}

/// The transaction a datagram answers, read without checking anything (so cheap enough to do
/// before a rate limit): `Some(txid)` if its message parses as a response.
pub fn peek_response(bytes: &[u8]) -> Option<u64> {
    if bytes.first() != Some(&TAG) || bytes.len() < HEADER {
        return None;
    }
    let (message, _) = Message::decode_prefix(&bytes[HEADER..]).ok()?;
    matches!(message.body, Body::Response(_)).then_some(message.txid)
}

/// Decodes a datagram addressed to `local`: checks size, signature, destination and message.
/// Returns the authenticated sender and the message.
pub fn decode(bytes: &[u8], local: &NodeId) -> Result<(NodeId, Message), DatagramError> {
    if bytes.first() != Some(&TAG) {
        return Err(DatagramError::NotDht);
    }
    if bytes.len() < HEADER || bytes.len() > MAX_DATAGRAM {
        return Err(DatagramError::Size(bytes.len()));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[1..33]);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&bytes[33..97]);
    let mut to = [0u8; 32];
    to.copy_from_slice(&bytes[97..129]);
    let to = NodeId::from_bytes(to);
    let wildcard = to == ANYONE;
    if to != *local && !wildcard {
        return Err(DatagramError::NotForUs);
    }
    let body = &bytes[HEADER..];
    let signer = PublicKey::from_bytes(&key)?;
    if !signer.verify_strict(&signed(&to, body), &signature) {
        return Err(DatagramError::BadSignature);
    }
    // The message, then zero padding only.
    let (message, padding) = Message::decode_prefix(body)?;
    if padding.iter().any(|b| *b != 0) {
        return Err(DatagramError::Message(MessageError::Malformed));
    }
    if matches!(message.body, Body::Request(_)) && bytes.len() < MIN_REQUEST {
        return Err(DatagramError::ShortRequest(bytes.len()));
    }
    if wildcard && !matches!(message.body, Body::Request(super::message::Request::Ping)) {
        return Err(DatagramError::NotForUs);
    }
    Ok((signer.node_id(), message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::Contact;
    use crate::dht::message::{DHT_VERSION, Request};

    fn msg(body: Body) -> Message {
        Message {
            version: DHT_VERSION,
            txid: 7,
            listen: None,
            body,
        }
    }

    #[test]
    fn requests_round_trip_padded_and_bound_to_the_receiver() {
        let a = Identity::from_secret_bytes(&[1; 32]);
        let b = Identity::from_secret_bytes(&[2; 32]).node_id();
        let m = msg(Body::Request(Request::FindNode {
            target: NodeId::from_bytes([9; 32]),
        }));
        let bytes = encode(&a, &b, &m).unwrap();
        assert!(bytes.len() >= MIN_REQUEST);
        assert_eq!(bytes[0] & 0x40, 0, "must not look like QUIC");
        assert_eq!(decode(&bytes, &b), Ok((a.node_id(), m)));
        // Not for anyone else, and not alterable.
        assert_eq!(decode(&bytes, &a.node_id()), Err(DatagramError::NotForUs));
        for i in [1, 40, 100, 200, bytes.len() - 1] {
            let mut x = bytes.clone();
            x[i] ^= 1;
            assert!(decode(&x, &b).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn short_requests_are_refused_and_big_answers_trimmed() {
        let a = Identity::from_secret_bytes(&[1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        let mut bytes = encode(&a, &b, &msg(Body::Request(Request::Ping))).unwrap();
        bytes.truncate(600);
        assert!(decode(&bytes, &b).is_err());
        let closer = vec![
            Contact {
                id: NodeId::from_bytes([3; 32]),
                addr: "[2001:db8::1]:4433".parse().unwrap(),
            };
            20
        ];
        let answer = msg(Body::Response(Response::Value {
            records: vec![vec![0xab; 300]; 6],
            closer,
        }));
        let bytes = encode(&a, &b, &answer).unwrap();
        assert!(bytes.len() <= MAX_DATAGRAM);
        let (_, got) = decode(&bytes, &b).unwrap();
        let Body::Response(Response::Value { records, .. }) = got.body else {
            panic!()
        };
        assert!(records.len() < 6, "nothing was trimmed");
    }

    #[test]
    fn the_largest_alias_record_outlasts_every_contact() {
        let a = Identity::from_secret_bytes(&[1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        let closer = vec![
            Contact {
                id: NodeId::from_bytes([3; 32]),
                addr: "[2001:db8::1]:4433".parse().unwrap(),
            };
            20
        ];
        let record = vec![0xab; crate::alias::record::MAX_ALIAS_RECORD_LEN];
        let answer = msg(Body::Response(Response::Value {
            records: vec![record.clone()],
            closer,
        }));
        let bytes = encode(&a, &b, &answer).unwrap();
        let (_, got) = decode(&bytes, &b).unwrap();
        let Body::Response(Response::Value { records, closer }) = got.body else {
            panic!()
        };
        assert_eq!(records, vec![record]);
        assert!(closer.len() < 20, "nothing was trimmed");
    }
}

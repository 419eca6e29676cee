//! DHT and peer-sync messages, version 1 (docs/PROTOCOL.md). postcard-encoded and bounded: a
//! message that breaks a bound is rejected whole.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::contact::Contact;
use crate::identity::NodeId;

/// Version byte this node speaks.
pub const DHT_VERSION: u8 = 1;
/// Largest encoded message.
pub const MAX_MESSAGE: usize = 48 * 1024;
/// Most contacts in one answer.
pub const MAX_CONTACTS: usize = 20;
/// Most records in one message.
pub const MAX_RECORDS: usize = 32;
/// Most digest entries in one sync message.
pub const MAX_DIGEST: usize = 256;

/// One record's slot and sequence number, for peer sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// Which record (see [`crate::record::SignedRecord::slot`]).
    pub slot: [u8; 16],
    /// Its sequence number.
    pub seq: u64,
}

/// What a node asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness.
    Ping,
    /// The contacts closest to `target`.
    FindNode {
        /// The id sought.
        target: NodeId,
    },
    /// Records stored under `key`, or closer contacts.
    FindValue {
        /// The DHT key.
        key: NodeId,
    },
    /// Store these signed records.
    Store {
        /// Encoded signed records.
        records: Vec<Vec<u8>>,
    },
    /// Peer sync: what the sender holds.
    Sync {
        /// Part of the sender's registry.
        digest: Vec<DigestEntry>,
    },
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To `Ping`.
    Pong,
    /// To `FindNode`.
    Nodes {
        /// Closest known contacts.
        closer: Vec<Contact>,
    },
    /// To `FindValue`.
    Value {
        /// Records under the key (possibly none).
        records: Vec<Vec<u8>>,
        /// Closest known contacts.
        closer: Vec<Contact>,
    },
    /// To `Store`.
    Stored {
        /// Records kept.
        accepted: u16,
        /// Records refused (invalid, stale, or over a bound).
        rejected: u16,
    },
    /// To `Sync`: records the asker lacks or holds older, and the slots it holds newer.
    Synced {
        /// Newer or missing records for the asker.
        records: Vec<Vec<u8>>,
        /// Slots the asker should send.
        want: Vec<[u8; 16]>,
    },
}

/// A request or response with its transaction id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A request.
    Request(Request),
    /// The response to the request with the same id.
    Response(Response),
}

/// The unit on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// [`DHT_VERSION`].
    pub version: u8,
    /// Pairs a response with its request.
    pub txid: u64,
    /// Where the sender accepts sessions, so the receiver can list it as a contact.
    pub listen: Option<SocketAddr>,
    /// The payload.
    pub body: Body,
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Too large.
    #[error("DHT message of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// Does not parse.
    #[error("DHT message does not parse")]
    Malformed,
    /// Unknown version.
    #[error("DHT message version {0} is not supported")]
    Version(u8),
    /// A list is over its bound.
    #[error("DHT message breaks a bound: {0}")]
    Bound(&'static str),
}

impl Message {
    /// Encodes the message. Callers keep within the bounds; an oversized message is an error.
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        self.check()?;
        let bytes = postcard::to_allocvec(self).map_err(|_| MessageError::Malformed)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(MessageError::TooLong(bytes.len()));
        }
        Ok(bytes)
    }

    /// Decodes a message from the front of `bytes` and returns what follows it.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, &[u8]), MessageError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(MessageError::TooLong(bytes.len()));
        }
        let (msg, rest): (Message, _) =
            postcard::take_from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
        if msg.version != DHT_VERSION {
            return Err(MessageError::Version(msg.version));
        }
        msg.check()?;
        Ok((msg, rest))
    }

    /// Decodes and checks bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(MessageError::TooLong(bytes.len()));
        }
        let (msg, rest): (Message, _) =
            postcard::take_from_bytes(bytes).map_err(|_| MessageError::Malformed)?;
        if !rest.is_empty() {
            return Err(MessageError::Malformed);
        }
        if msg.version != DHT_VERSION {
            return Err(MessageError::Version(msg.version));
        }
        msg.check()?;
        Ok(msg)
    }

    fn check(&self) -> Result<(), MessageError> {
        let (contacts, records, digest) = match &self.body {
            Body::Request(Request::Store { records }) => (0, records.len(), 0),
            Body::Request(Request::Sync { digest }) => (0, 0, digest.len()),
            Body::Request(_) => (0, 0, 0),
            Body::Response(Response::Nodes { closer }) => (closer.len(), 0, 0),
            Body::Response(Response::Value { records, closer }) => (closer.len(), records.len(), 0),
            Body::Response(Response::Synced { records, want }) => (0, records.len(), want.len()),
            Body::Response(_) => (0, 0, 0),
        };
        if contacts > MAX_CONTACTS {
            return Err(MessageError::Bound("too many contacts"));
        }
        if records > MAX_RECORDS {
            return Err(MessageError::Bound("too many records"));
        }
        if digest > MAX_DIGEST {
            return Err(MessageError::Bound("too many digest entries"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contact() -> impl Strategy<Value = Contact> {
        (any::<[u8; 32]>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(id, ip, port)| Contact {
            id: NodeId::from_bytes(id),
            addr: SocketAddr::from((ip, port)),
        })
    }

    fn message() -> impl Strategy<Value = Message> {
        let body = prop_oneof![
            Just(Body::Request(Request::Ping)),
            any::<[u8; 32]>().prop_map(|t| Body::Request(Request::FindNode {
                target: NodeId::from_bytes(t)
            })),
            any::<[u8; 32]>().prop_map(|t| Body::Request(Request::FindValue {
                key: NodeId::from_bytes(t)
            })),
            proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..200),
                0..MAX_RECORDS
            )
            .prop_map(|records| Body::Request(Request::Store { records })),
            proptest::collection::vec((any::<[u8; 16]>(), any::<u64>()), 0..50).prop_map(|d| {
                Body::Request(Request::Sync {
                    digest: d
                        .into_iter()
                        .map(|(slot, seq)| DigestEntry { slot, seq })
                        .collect(),
                })
            }),
            proptest::collection::vec(contact(), 0..MAX_CONTACTS)
                .prop_map(|closer| Body::Response(Response::Nodes { closer })),
            (
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..8),
                proptest::collection::vec(contact(), 0..MAX_CONTACTS)
            )
                .prop_map(|(records, closer)| Body::Response(Response::Value { records, closer })),
            (any::<u16>(), any::<u16>()).prop_map(|(accepted, rejected)| Body::Response(
                Response::Stored { accepted, rejected }
            )),
        ];
        (
            any::<u64>(),
            proptest::option::of(contact().prop_map(|c| c.addr)),
            body,
        )
            .prop_map(|(txid, listen, body)| Message {
                version: DHT_VERSION,
                txid,
                listen,
                body,
            })
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in message()) {
            let bytes = m.encode().unwrap();
            prop_assert_eq!(Message::decode(&bytes), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Message::decode(&bytes);
        }
    }

    #[test]
    fn bounds_are_enforced_on_decode() {
        let too_many = Message {
            version: DHT_VERSION,
            txid: 1,
            listen: None,
            body: Body::Response(Response::Nodes {
                closer: vec![
                    Contact {
                        id: NodeId::from_bytes([1; 32]),
                        addr: "[::1]:1".parse().unwrap()
                    };
                    MAX_CONTACTS + 1
                ],
            }),
        };
        let bytes = postcard::to_allocvec(&too_many).unwrap();
        assert_eq!(
            Message::decode(&bytes),
            Err(MessageError::Bound("too many contacts"))
        );
        let mut v2 = Message {
            version: 2,
            txid: 1,
            listen: None,
            body: Body::Request(Request::Ping),
        };
        let bytes = postcard::to_allocvec(&v2).unwrap();
        assert_eq!(Message::decode(&bytes), Err(MessageError::Version(2)));
        v2.version = DHT_VERSION;
        let mut bytes = v2.encode().unwrap();
        bytes.push(0);
        assert_eq!(Message::decode(&bytes), Err(MessageError::Malformed));
    }
}

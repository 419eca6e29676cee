//! The signed envelope around a record body: layout, signing and strict verification.
//!
//! Layout (all fixed-size fields first, so a malformed record is rejected before any parsing):
//!
//! ```text
//! version: u8 | kind: u8 | signer: [u8; 32] | signature: [u8; 64] | body: postcard bytes
//! ```
//!
//! The signature covers `"vx6/record/v1/<kind label>" || 0x00 || body`. The NUL ends the domain
//! string so that no kind's label can be extended into another's. The body must be the canonical
//! postcard encoding with no trailing bytes, so a record has exactly one valid encoding.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::body::{NameClaim, NodeBodyHead, NodeRecord, ServiceRecord};
use super::{Record, RecordKind};
use crate::identity::{Identity, KeyError, NodeId, PublicKey};

/// Envelope format version this code writes and accepts.
pub const RECORD_VERSION: u8 = 1;
/// Largest encoded record accepted or produced: small enough for one UDP datagram with room to
/// spare for a DHT message around it.
pub const MAX_RECORD_LEN: usize = 1024;

pub(super) const HEADER_LEN: usize = 1 + 1 + 32 + 64;
const DOMAIN_PREFIX: &[u8] = b"vx6/record/v1/";

/// The DHT key under which claims to `username` are stored.
pub fn name_key(username: &crate::names::Username) -> NodeId {
    NodeId::from_bytes(blake3::derive_key(
        "vx6 2026 dht name key",
        username.as_str().as_bytes(),
    ))
}

/// A record together with its owner's valid signature. Only [`SignedRecord::sign`] and
/// [`SignedRecord::decode`] make one, so holding one means the signature was checked.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    signer: PublicKey,
    owner: NodeId,
    record: Record,
    encoded: Vec<u8>,
}

/// Why a record could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded record would exceed [`MAX_RECORD_LEN`].
    #[error("record is {0} bytes encoded; at most {MAX_RECORD_LEN} are allowed")]
    TooLong(usize),
    /// The body breaks a bound that decoding enforces.
    #[error("record body is malformed: {0}")]
    Malformed(&'static str),
    /// The body could not be serialized.
    #[error("record body could not be encoded: {0}")]
    Body(#[from] postcard::Error),
}

/// Why bytes are not a valid signed record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    #[error("record is {0} bytes; the header alone is {HEADER_LEN}")]
    TooShort(usize),
    /// More bytes than [`MAX_RECORD_LEN`].
    #[error("record is {0} bytes; at most {MAX_RECORD_LEN} are allowed")]
    TooLong(usize),
    /// A version this code does not speak.
    #[error("record version {0} is not supported (this node speaks {RECORD_VERSION})")]
    UnsupportedVersion(u8),
    /// A kind byte no kind has.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The signer field is not a usable key.
    #[error("record signer: {0}")]
    Signer(#[from] KeyError),
    /// The signature does not verify.
    #[error("record signature does not verify")]
    BadSignature,
    /// The body does not parse as the kind's structure.
    #[error("record body does not parse: {0}")]
    Body(#[from] postcard::Error),
    /// The body parses but has bytes after it, or is not in canonical form.
    #[error("record body is not canonically encoded")]
    NonCanonical,
    /// The body parses but breaks a bound.
    #[error("record body is malformed: {0}")]
    Malformed(&'static str),
}

pub(super) fn signed_message(kind: RecordKind, body: &[u8]) -> Vec<u8> {
    let label = kind.label().as_bytes();
    let mut msg = Vec::with_capacity(DOMAIN_PREFIX.len() + label.len() + 1 + body.len());
    msg.extend_from_slice(DOMAIN_PREFIX);
    msg.extend_from_slice(label);
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

fn check_bounds(record: &Record) -> Result<(), &'static str> {
    match record {
        Record::Node(r) => r.check_bounds(),
        Record::Service(_) | Record::NameClaim(_) => Ok(()),
    }
}

pub(super) fn encode_body(record: &Record) -> Result<Vec<u8>, postcard::Error> {
    fn enc<T: Serialize>(t: &T) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(t)
    }
    match record {
        Record::Node(r) => {
            let head = NodeBodyHead {
                seq: r.seq,
                expires_at: r.expires_at,
                addresses: r.addresses.clone(),
                relay: r.relay.clone(),
            };
            let mut body = enc(&head)?;
            if !r.via.is_empty() {
                body.extend(enc(&r.via)?);
            }
            Ok(body)
        }
        Record::Service(r) => enc(r),
        Record::NameClaim(r) => enc(r),
    }
}

fn decode_body(kind: RecordKind, body: &[u8]) -> Result<Record, DecodeError> {
    fn dec<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
        let (value, rest) = postcard::take_from_bytes(body)?;
        if !rest.is_empty() {
            return Err(DecodeError::NonCanonical);
        }
        Ok(value)
    }
    Ok(match kind {
        RecordKind::Node => {
            let (head, tail): (NodeBodyHead, &[u8]) = postcard::take_from_bytes(body)?;
            // The tail is present only when it names a relay: an empty list written out would
            // be a second encoding of the same record.
            let via: Vec<NodeId> = match tail.is_empty() {
                true => Vec::new(),
                false => dec(tail)?,
            };
            if !tail.is_empty() && via.is_empty() {
                return Err(DecodeError::NonCanonical);
            }
            Record::Node(NodeRecord {
                seq: head.seq,
                expires_at: head.expires_at,
                addresses: head.addresses,
                relay: head.relay,
                via,
            })
        }
        RecordKind::Service => Record::Service(dec::<ServiceRecord>(body)?),
        RecordKind::NameClaim => Record::NameClaim(dec::<NameClaim>(body)?),
    })
}

/// Parses a record body as if its signature had verified, so a fuzzer can reach the body parser
/// (it cannot forge signatures). Only built under `cargo fuzz`.
#[cfg(fuzzing)]
pub fn fuzz_decode_body(kind: u8, body: &[u8]) -> Option<Record> {
    let record = decode_body(RecordKind::from_byte(kind)?, body).ok()?;
    check_bounds(&record).ok()?;
    (encode_body(&record).ok()?.as_slice() == body).then_some(record)
}

impl SignedRecord {
    /// Encodes and signs `record` with `identity`.
    pub fn sign(identity: &Identity, record: Record) -> Result<Self, EncodeError> {
        check_bounds(&record).map_err(EncodeError::Malformed)?;
        let body = encode_body(&record)?;
        let len = HEADER_LEN + body.len();
        if len > MAX_RECORD_LEN {
            return Err(EncodeError::TooLong(len));
        }
        let kind = record.kind();
        let signature = identity.sign(&signed_message(kind, &body));
        let signer = identity.public_key();
        let mut encoded = Vec::with_capacity(len);
        encoded.push(RECORD_VERSION);
        encoded.push(kind as u8);
        encoded.extend_from_slice(&signer.to_bytes());
        encoded.extend_from_slice(&signature);
        encoded.extend_from_slice(&body);
        Ok(Self {
            owner: signer.node_id(),
            signer,
            record,
            encoded,
        })
    }

    /// Parses `bytes` and verifies the signature. Cheap checks come first; the signature is
    /// checked before the body is parsed, so unsigned garbage never reaches the body parser.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_RECORD_LEN {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let (header, body) = bytes.split_at(HEADER_LEN);
        if header[0] != RECORD_VERSION {
            return Err(DecodeError::UnsupportedVersion(header[0]));
        }
        let kind = RecordKind::from_byte(header[1]).ok_or(DecodeError::UnknownKind(header[1]))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&header[2..34]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&header[34..98]);
        let signer = PublicKey::from_bytes(&key)?;
        if !signer.verify_strict(&signed_message(kind, body), &signature) {
            return Err(DecodeError::BadSignature);
        }
        let record = decode_body(kind, body)?;
        check_bounds(&record).map_err(DecodeError::Malformed)?;
        // A body that decodes but re-encodes differently (e.g. an over-long varint) would give one
        // record two encodings; refuse it so byte equality means record equality.
        if encode_body(&record)?.as_slice() != body {
            return Err(DecodeError::NonCanonical);
        }
        Ok(Self {
            owner: signer.node_id(),
            signer,
            record,
            encoded: bytes.to_vec(),
        })
    }

    /// The encoded, signed bytes, as sent on the wire and stored on disk.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// The key that signed the record.
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }

    /// The node that owns the record: the [`NodeId`] of its signer.
    pub fn owner(&self) -> NodeId {
        self.owner
    }

    /// The verified body.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// Which registry slot the record fills: kind, owner and name, hashed to 16 bytes. Two
    /// records with the same slot compete by `seq`; peer sync exchanges slots and seqs.
    pub fn slot(&self) -> [u8; 16] {
        let mut h = blake3::Hasher::new_derive_key("vx6 2026 record slot");
        h.update(&[self.record.kind() as u8])
            .update(self.owner.as_bytes());
        match &self.record {
            Record::Node(_) => {}
            Record::Service(s) => {
                h.update(s.service.as_str().as_bytes());
            }
            Record::NameClaim(c) => {
                h.update(c.username.as_str().as_bytes());
            }
        }
        let mut slot = [0u8; 16];
        slot.copy_from_slice(&h.finalize().as_bytes()[..16]);
        slot
    }

    /// The DHT key the record is stored under: its username's key for a name claim, its owner's
    /// id for node and service records (see [`name_key`]).
    pub fn dht_key(&self) -> NodeId {
        match &self.record {
            Record::NameClaim(c) => name_key(&c.username),
            Record::Node(_) | Record::Service(_) => self.owner,
        }
    }
}

impl std::fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRecord")
            .field("owner", &self.owner)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

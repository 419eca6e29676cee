//! The alias record: what the DHT stores for an alias in one period.
//!
//! Signed by the period's [`BlindedKey`] and stored under its id, it names no alias and no
//! owner. Its one useful part, the descriptor (the introduction relays), is sealed with a key
//! derived from the alias key, so a storer cannot read it; with client authorization, also from
//! a cookie that only listed clients can open. Layout (docs/PROTOCOL.md, "Alias records"):
//!
//! ```text
//! version: u8 = 1 | kind: u8 = 4 | signature: [u8; 64] | body: postcard(AliasBody)
//! ```
//!
//! The first two bytes sit where a [`SignedRecord`](crate::SignedRecord)'s version and kind do,
//! with a kind no signed record uses, so that one byte tells the two apart in the DHT.
//!
//! The signature covers `"vx6/record/v1/alias" || 0x00 || body`, under the body's blinded key.

use std::net::SocketAddr;

use rand_core::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use super::address::{AliasAddress, AliasKey};
use super::blind::{BlindedKey, Period};
use crate::identity::{Identity, NodeId, PublicKey};
use crate::relay::onion;

/// Record format version this code writes and accepts.
pub const ALIAS_RECORD_VERSION: u8 = 1;
/// The record-kind byte of alias records, after the signed records' kinds (1 to 3).
pub const ALIAS_RECORD_KIND: u8 = 4;
/// Largest encoded alias record: one DHT datagram carries it (1452 bytes less 129 of header).
/// The most introduction relays and clients below, with IPv6 addresses, take 1175.
pub const MAX_ALIAS_RECORD_LEN: usize = 1280;
/// Most introduction relays a descriptor lists (the owner keeps 3 by default).
pub const MAX_INTRO_POINTS: usize = 6;
/// Most clients an alias authorizes: each costs 89 bytes of the record.
pub const MAX_ALIAS_CLIENTS: usize = 6;
/// How far a record's expiry may lie past the end of its period: clients whose clocks are
/// behind still find it, and it cannot outlive the period by more.
pub const EXPIRY_GRACE_SECS: u64 = 3600;

const SIGNED_DOMAIN: &[u8] = b"vx6/record/v1/alias\0";
const DESCRIPTOR_CONTEXT: &str = "vx6 alias descriptor key v1";
const CLIENT_ID_CONTEXT: &str = "vx6 alias client id v1";
const COOKIE_CONTEXT: &str = "vx6 alias client cookie v1";
const HEADER_LEN: usize = 2 + 64;

/// One introduction relay: where a client sends its introduction for the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntroPoint {
    /// The relay.
    pub relay: NodeId,
    /// Its key (introductions are sealed hop by hop to it).
    pub key: [u8; 32],
    /// Where it accepts sessions.
    pub addr: SocketAddr,
}

/// What only those who know the alias (and, with client authorization, are listed) read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasDescriptor {
    /// The introduction relays, at most [`MAX_INTRO_POINTS`].
    pub intro: Vec<IntroPoint>,
}

/// A listed client's way in: the descriptor cookie, sealed to its node key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClientEntry {
    /// Which client: a keyed hash of its key and the record's salt, so that entries are not
    /// linkable across records.
    id: [u8; 8],
    sealed_cookie: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AliasBody {
    blinded: [u8; 32],
    period: u64,
    seq: u64,
    expires_at: u64,
    salt: [u8; 16],
    /// Empty: any holder of the address may read the descriptor.
    clients: Vec<ClientEntry>,
    sealed: Vec<u8>,
}

/// An alias record whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    blinded: BlindedKey,
    body: AliasBody,
    encoded: Vec<u8>,
}

/// Why an alias record could not be made, decoded or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasRecordError {
    /// Longer than [`MAX_ALIAS_RECORD_LEN`].
    #[error("alias record is {0} bytes; at most {MAX_ALIAS_RECORD_LEN} are allowed")]
    TooLong(usize),
    /// Shorter than its header, or its body does not decode.
    #[error("alias record is malformed: {0}")]
    Malformed(&'static str),
    /// A version this code does not know.
    #[error("alias record version {0} is not supported")]
    Version(u8),
    /// More introduction relays or clients than allowed.
    #[error("alias record lists too many {0}")]
    TooMany(&'static str),
    /// The signature does not verify under the blinded key it names.
    #[error("alias record signature does not verify")]
    Signature,
    /// Expired, or valid past its period's end (plus grace).
    #[error("alias record has expired, or claims to outlive its period")]
    Expired,
    /// For a period after the next one: held, it would outlive every record of today.
    #[error("alias record is for a period that has not begun")]
    FuturePeriod,
    /// Signed by another alias's (or another period's) blinded key than the one looked up.
    #[error("alias record is not this alias's for this period")]
    WrongAlias,
    /// Client authorization is on and this node's key is not listed.
    #[error("this alias admits listed clients only, and this node's key is not listed")]
    NotAuthorized,
    /// The descriptor does not open: altered, or sealed with another key.
    #[error("alias descriptor does not decrypt")]
    Undecryptable,
}

fn descriptor_key(
    address: &AliasAddress,
    blinded: &BlindedKey,
    salt: &[u8; 16],
    cookie: Option<&[u8; 32]>,
) -> LessSafeKey {
    let mut hasher = blake3::Hasher::new_derive_key(DESCRIPTOR_CONTEXT);
    hasher.update(&address.key_bytes());
    hasher.update(&blinded.public_key().to_bytes());
    hasher.update(salt);
    if let Some(cookie) = cookie {
        hasher.update(cookie);
    }
    let k = hasher.finalize();
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k.as_bytes()).expect("32-byte key"))
}

fn client_id(client: &PublicKey, salt: &[u8; 16]) -> [u8; 8] {
    let mut input = [0u8; 48];
    input[..32].copy_from_slice(&client.to_bytes());
    input[32..].copy_from_slice(salt);
    let h = blake3::derive_key(CLIENT_ID_CONTEXT, &input);
    h[..8].try_into().expect("8 of 32 bytes")
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_DOMAIN.len() + body.len());
    m.extend_from_slice(SIGNED_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// What the owner publishes for one period.
#[derive(Debug, Clone)]
pub struct AliasPublication<'a> {
    /// The period the record is for.
    pub period: Period,
    /// Replaces records of the same period with a lower one.
    pub seq: u64,
    /// Unix seconds; at most the period's end plus [`EXPIRY_GRACE_SECS`].
    pub expires_at: u64,
    /// What clients read.
    pub descriptor: &'a AliasDescriptor,
    /// Client authorization: only these node keys may read the descriptor. Empty: everyone who
    /// knows the address.
    pub clients: &'a [PublicKey],
}

impl AliasRecord {
    /// Seals and signs a record for `alias`, with salt and cookie drawn from `rng`.
    pub fn seal(
        alias: &AliasKey,
        publication: &AliasPublication<'_>,
        rng: &mut impl RngCore,
    ) -> Result<Self, AliasRecordError> {
        let p = publication;
        if p.descriptor.intro.len() > MAX_INTRO_POINTS {
            return Err(AliasRecordError::TooMany("introduction relays"));
        }
        if p.clients.len() > MAX_ALIAS_CLIENTS {
            return Err(AliasRecordError::TooMany("clients"));
        }
        if p.expires_at > p.period.end().saturating_add(EXPIRY_GRACE_SECS) {
            return Err(AliasRecordError::Expired);
        }
        let address = alias.address();
        let blinded = BlindedKey::of(&address, p.period);
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let (cookie, clients) = if p.clients.is_empty() {
            (None, Vec::new())
        } else {
            let mut cookie = [0u8; 32];
            rng.fill_bytes(&mut cookie);
            let entries = p
                .clients
                .iter()
                .map(|c| ClientEntry {
                    id: client_id(c, &salt),
                    sealed_cookie: onion::seal_in(COOKIE_CONTEXT, rng, c, &cookie),
                })
                .collect();
            (Some(cookie), entries)
        };
        let mut sealed = postcard::to_allocvec(p.descriptor)
            .map_err(|_| AliasRecordError::Malformed("descriptor does not encode"))?;
        // The key is new with every salt, so the nonce can be fixed.
        descriptor_key(&address, &blinded, &salt, cookie.as_ref())
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .expect("in-memory sealing");
        let body = AliasBody {
            blinded: blinded.public_key().to_bytes(),
            period: p.period.0,
            seq: p.seq,
            expires_at: p.expires_at,
            salt,
            clients,
            sealed,
        };
        let body_bytes = postcard::to_allocvec(&body)
            .map_err(|_| AliasRecordError::Malformed("body does not encode"))?;
        let signature = alias.sign_blinded(p.period, &signed_message(&body_bytes));
        let mut encoded = Vec::with_capacity(HEADER_LEN + body_bytes.len());
        encoded.push(ALIAS_RECORD_VERSION);
        encoded.push(ALIAS_RECORD_KIND);
        encoded.extend_from_slice(&signature);
        encoded.extend_from_slice(&body_bytes);
        if encoded.len() > MAX_ALIAS_RECORD_LEN {
            return Err(AliasRecordError::TooLong(encoded.len()));
        }
        Ok(Self {
            blinded,
            body,
            encoded,
        })
    }

    /// Decodes a record from the network and checks its signature and bounds. This is all a
    /// DHT node that stores it can check: it learns the blinded key, the period and the expiry,
    /// and nothing of the alias.
    pub fn decode(bytes: &[u8]) -> Result<Self, AliasRecordError> {
        if bytes.len() > MAX_ALIAS_RECORD_LEN {
            return Err(AliasRecordError::TooLong(bytes.len()));
        }
        if bytes.len() < HEADER_LEN {
            return Err(AliasRecordError::Malformed("shorter than its header"));
        }
        if bytes[0] != ALIAS_RECORD_VERSION {
            return Err(AliasRecordError::Version(bytes[0]));
        }
        if bytes[1] != ALIAS_RECORD_KIND {
            return Err(AliasRecordError::Malformed("not an alias record"));
        }
        let signature: [u8; 64] = bytes[2..HEADER_LEN].try_into().expect("64 bytes");
        let body_bytes = &bytes[HEADER_LEN..];
        let (body, rest): (AliasBody, &[u8]) = postcard::take_from_bytes(body_bytes)
            .map_err(|_| AliasRecordError::Malformed("body does not decode"))?;
        if !rest.is_empty() {
            return Err(AliasRecordError::Malformed("bytes after the body"));
        }
        // One record, one encoding: postcard varints have several spellings of a number.
        if postcard::to_allocvec(&body).ok().as_deref() != Some(body_bytes) {
            return Err(AliasRecordError::Malformed("not canonically encoded"));
        }
        if body.clients.len() > MAX_ALIAS_CLIENTS {
            return Err(AliasRecordError::TooMany("clients"));
        }
        let period = Period(body.period);
        if body.expires_at > period.end().saturating_add(EXPIRY_GRACE_SECS) {
            return Err(AliasRecordError::Expired);
        }
        let key = PublicKey::from_bytes(&body.blinded)
            .map_err(|_| AliasRecordError::Malformed("blinded key is not a key"))?;
        if !key.verify_strict(&signed_message(body_bytes), &signature) {
            return Err(AliasRecordError::Signature);
        }
        Ok(Self {
            blinded: BlindedKey::from_verified(key, period),
            body,
            encoded: bytes.to_vec(),
        })
    }

    /// The record's wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Where the DHT stores it.
    pub fn dht_key(&self) -> NodeId {
        self.blinded.dht_key()
    }

    /// The blinded key that signed it.
    pub fn blinded(&self) -> &BlindedKey {
        &self.blinded
    }

    /// Replaces records of the same blinded key with a lower one.
    pub fn seq(&self) -> u64 {
        self.body.seq
    }

    /// Unix seconds after which it is no longer served.
    pub fn expires_at(&self) -> u64 {
        self.body.expires_at
    }

    /// Whether it still holds at `unix_secs`.
    pub fn is_live(&self, unix_secs: u64) -> bool {
        unix_secs < self.body.expires_at
    }

    /// Whether it may be stored or believed at `unix_secs`: live, and for the current period,
    /// an earlier one, or the next (an owner publishes the next period's record ahead of time,
    /// and clocks differ by up to [`EXPIRY_GRACE_SECS`]).
    pub fn check_time(&self, unix_secs: u64) -> Result<(), AliasRecordError> {
        if !self.is_live(unix_secs) {
            return Err(AliasRecordError::Expired);
        }
        let latest = Period::containing(unix_secs.saturating_add(EXPIRY_GRACE_SECS)).0 + 1;
        if self.blinded.period().0 > latest {
            return Err(AliasRecordError::FuturePeriod);
        }
        Ok(())
    }

    /// Whether reading it takes client authorization.
    pub fn requires_authorization(&self) -> bool {
        !self.body.clients.is_empty()
    }

    /// Reads the descriptor, as a client that knows `address` does at `unix_secs`. `client` is
    /// the reader's node identity, needed only when the alias authorizes clients.
    pub fn open(
        &self,
        address: &AliasAddress,
        client: Option<&Identity>,
        unix_secs: u64,
    ) -> Result<AliasDescriptor, AliasRecordError> {
        if !self.is_live(unix_secs) {
            return Err(AliasRecordError::Expired);
        }
        if BlindedKey::of(address, self.blinded.period()) != self.blinded {
            return Err(AliasRecordError::WrongAlias);
        }
        let body = &self.body;
        let cookie = if body.clients.is_empty() {
            None
        } else {
            let me = client.ok_or(AliasRecordError::NotAuthorized)?;
            let id = client_id(&me.public_key(), &body.salt);
            let entry = body
                .clients
                .iter()
                .find(|e| e.id == id)
                .ok_or(AliasRecordError::NotAuthorized)?;
            let cookie = onion::open_in(COOKIE_CONTEXT, me, &entry.sealed_cookie)
                .map_err(|_| AliasRecordError::NotAuthorized)?;
            Some(<[u8; 32]>::try_from(cookie).map_err(|_| AliasRecordError::NotAuthorized)?)
        };
        let mut sealed = body.sealed.clone();
        let plain = descriptor_key(address, &self.blinded, &body.salt, cookie.as_ref())
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| AliasRecordError::Undecryptable)?;
        let (descriptor, rest): (AliasDescriptor, &[u8]) =
            postcard::take_from_bytes(plain).map_err(|_| AliasRecordError::Undecryptable)?;
        if !rest.is_empty() {
            return Err(AliasRecordError::Undecryptable);
        }
        if descriptor.intro.len() > MAX_INTRO_POINTS {
            return Err(AliasRecordError::TooMany("introduction relays"));
        }
        Ok(descriptor)
    }
}

//! The alias record: what the DHT stores for an alias in one period.
//!
//! Signed by the period's [`BlindedKey`] and stored under its id, it names no alias and no
//! owner. Its one useful part, the descriptor (the introduction relays), is sealed with a key
//! derived from the alias key, so a storer cannot read it; with client authorization, also from
//! a cookie that only listed clients can open. Every record has the same shape whatever it
//! holds (the descriptor padded, always [`MAX_ALIAS_CLIENTS`] client entries, unused ones
//! random), so its length tells nothing, and a storer cannot tell whether, or whom, it
//! authorizes. Layout (docs/PROTOCOL.md, "Alias records"):
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

use rand_core::CryptoRngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use super::address::{AliasAddress, AliasKey};
use super::blind::{BlindedKey, Period};
use crate::identity::{Identity, NodeId, PublicKey};

/// Record format version this code writes and accepts.
pub const ALIAS_RECORD_VERSION: u8 = 1;
/// The record-kind byte of alias records, after the signed records' kinds (1 to 3).
pub const ALIAS_RECORD_KIND: u8 = 4;
/// Largest encoded alias record: one DHT datagram carries it (1452 bytes less 129 of header).
/// Every record is about 1134 bytes (measured): fixed-size parts, only varints vary.
pub const MAX_ALIAS_RECORD_LEN: usize = 1280;
/// Most introduction relays a descriptor lists (the owner keeps 3 by default).
pub const MAX_INTRO_POINTS: usize = 6;
/// Client entries in every record, and so the most clients an alias authorizes: 56 bytes each.
pub const MAX_ALIAS_CLIENTS: usize = 8;
/// How long an alias record may hold from its publication (or its period's start, for one
/// published ahead), past the grace below: a record, and so a flood of them, lapses within
/// hours.
pub const ALIAS_RECORD_LIFETIME_SECS: u64 = 3 * 3600;
/// The descriptor's plaintext is padded to this many bytes (six IPv6 relays take 505).
const DESCRIPTOR_PADDED: usize = 512;
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

/// A listed client's way in: the descriptor cookie, sealed under a key only it can agree on
/// with the record's ephemeral key. Unused entries are random bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClientEntry {
    /// Which client: from the key agreement, so that only the client itself recognises it.
    id: [u8; 8],
    cookie: [u8; 32],
    tag: [u8; 16],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AliasBody {
    blinded: [u8; 32],
    period: u64,
    seq: u64,
    expires_at: u64,
    salt: [u8; 16],
    /// The X25519 key the client entries are agreed with.
    ephemeral: [u8; 32],
    /// Exactly [`MAX_ALIAS_CLIENTS`].
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
    /// Valid for longer than [`ALIAS_RECORD_LIFETIME_SECS`] (plus grace) from now.
    #[error("alias record claims to hold longer than alias records may")]
    LongLived,
    /// For a period after the next one: held, it would outlive every record of today.
    #[error("alias record is for a period that has not begun")]
    FuturePeriod,
    /// Signed by another alias's (or another period's) blinded key than the one looked up.
    #[error("alias record is not this alias's for this period")]
    WrongAlias,
    /// The descriptor opens only with a listed client's cookie, and this node is not listed.
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

/// A client entry's id and cookie key, from the X25519 agreement of the record's ephemeral key
/// and the client's node key: nobody else can compute them, so entries name nobody to a storer
/// and do not match across records.
fn client_keys(shared: &[u8; 32], ephemeral: &[u8; 32], salt: &[u8; 16]) -> ([u8; 8], LessSafeKey) {
    let mut input = [0u8; 80];
    input[..32].copy_from_slice(shared);
    input[32..64].copy_from_slice(ephemeral);
    input[64..].copy_from_slice(salt);
    let id = blake3::derive_key(CLIENT_ID_CONTEXT, &input);
    let key = blake3::derive_key(COOKIE_CONTEXT, &input);
    (
        id[..8].try_into().expect("8 of 32 bytes"),
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32-byte key")),
    )
}

fn random_entry(rng: &mut impl CryptoRngCore) -> ClientEntry {
    let mut e = ClientEntry {
        id: [0; 8],
        cookie: [0; 32],
        tag: [0; 16],
    };
    rng.fill_bytes(&mut e.id);
    rng.fill_bytes(&mut e.cookie);
    rng.fill_bytes(&mut e.tag);
    e
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
    /// Seals and signs a record for `alias`, with salt, ephemeral key, cookie and unused
    /// entries drawn from `rng`.
    pub fn seal(
        alias: &AliasKey,
        publication: &AliasPublication<'_>,
        rng: &mut impl CryptoRngCore,
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
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let ephemeral = curve25519_dalek::MontgomeryPoint::mul_base_clamped(secret).0;
        let mut cookie = [0u8; 32];
        rng.fill_bytes(&mut cookie);
        let mut clients = Vec::with_capacity(MAX_ALIAS_CLIENTS);
        for c in p.clients {
            let shared = curve25519_dalek::MontgomeryPoint(c.x25519())
                .mul_clamped(secret)
                .0;
            let (id, key) = client_keys(&shared, &ephemeral, &salt);
            let mut sealed_cookie = cookie;
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::empty(),
                    &mut sealed_cookie,
                )
                .expect("in-memory sealing");
            clients.push(ClientEntry {
                id,
                cookie: sealed_cookie,
                tag: tag.as_ref().try_into().expect("16-byte tag"),
            });
        }
        while clients.len() < MAX_ALIAS_CLIENTS {
            clients.push(random_entry(rng));
        }
        // Listed clients in random places, so their order tells nothing either.
        for i in (1..clients.len()).rev() {
            let j = (rng.next_u32() as usize) % (i + 1);
            clients.swap(i, j);
        }
        let cookie = (!p.clients.is_empty()).then_some(cookie);
        let mut sealed = postcard::to_allocvec(p.descriptor)
            .map_err(|_| AliasRecordError::Malformed("descriptor does not encode"))?;
        if sealed.len() > DESCRIPTOR_PADDED {
            return Err(AliasRecordError::TooMany("introduction relays"));
        }
        sealed.resize(DESCRIPTOR_PADDED, 0);
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
            ephemeral,
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
        if body.clients.len() != MAX_ALIAS_CLIENTS {
            return Err(AliasRecordError::Malformed(
                "not the fixed number of client entries",
            ));
        }
        if body.sealed.len() != DESCRIPTOR_PADDED + 16 {
            return Err(AliasRecordError::Malformed(
                "descriptor not of the fixed size",
            ));
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

    /// Whether it may be stored or believed at `unix_secs`: live; for the current period, an
    /// earlier one, or the next within the current one's last two grace spans (an owner
    /// publishes the next period's record in the last one, and clocks differ by up to one);
    /// and not valid for longer than a record may be.
    pub fn check_time(&self, unix_secs: u64) -> Result<(), AliasRecordError> {
        if !self.is_live(unix_secs) {
            return Err(AliasRecordError::Expired);
        }
        let period = self.blinded.period();
        let latest = Period::containing(unix_secs.saturating_add(2 * EXPIRY_GRACE_SECS));
        if period > latest {
            return Err(AliasRecordError::FuturePeriod);
        }
        let longest = unix_secs
            .max(period.start())
            .saturating_add(ALIAS_RECORD_LIFETIME_SECS + EXPIRY_GRACE_SECS);
        if self.body.expires_at > longest {
            return Err(AliasRecordError::LongLived);
        }
        Ok(())
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
        let cookie = client.and_then(|me| self.cookie_for(me));
        match self.open_descriptor(address, cookie.as_ref()) {
            // Not listed (or no identity given), and the descriptor needs a cookie.
            Err(AliasRecordError::Undecryptable) if cookie.is_none() => {
                Err(AliasRecordError::NotAuthorized)
            }
            other => other,
        }
    }

    /// The descriptor cookie, if one of the entries is `me`'s.
    fn cookie_for(&self, me: &Identity) -> Option<[u8; 32]> {
        let body = &self.body;
        let shared = me.x25519_agree(body.ephemeral)?;
        let (id, key) = client_keys(&shared, &body.ephemeral, &body.salt);
        body.clients.iter().filter(|e| e.id == id).find_map(|e| {
            let mut cookie = e.cookie;
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                ring::aead::Tag::from(e.tag),
                &mut cookie,
                0..,
            )
            .ok()?;
            Some(cookie)
        })
    }

    /// Decrypts the descriptor with the key for `address` (and `cookie`).
    fn open_descriptor(
        &self,
        address: &AliasAddress,
        cookie: Option<&[u8; 32]>,
    ) -> Result<AliasDescriptor, AliasRecordError> {
        let body = &self.body;
        let mut sealed = body.sealed.clone();
        let plain = descriptor_key(address, &self.blinded, &body.salt, cookie)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .map_err(|_| AliasRecordError::Undecryptable)?;
        let (descriptor, rest): (AliasDescriptor, &[u8]) =
            postcard::take_from_bytes(plain).map_err(|_| AliasRecordError::Undecryptable)?;
        if rest.iter().any(|&b| b != 0) {
            return Err(AliasRecordError::Undecryptable);
        }
        if descriptor.intro.len() > MAX_INTRO_POINTS {
            return Err(AliasRecordError::TooMany("introduction relays"));
        }
        Ok(descriptor)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    /// The descriptor key takes the alias key itself, not only the blinded key a storer sees:
    /// with the right blinded key and salt but another address, nothing decrypts.
    #[test]
    fn the_descriptor_key_needs_the_address() {
        let alias = AliasKey::from_secret_bytes(&[1; 32]);
        let period = Period(20_000);
        let record = AliasRecord::seal(
            &alias,
            &AliasPublication {
                period,
                seq: 1,
                expires_at: period.start() + 60,
                descriptor: &AliasDescriptor { intro: vec![] },
                clients: &[],
            },
            &mut ChaCha20Rng::seed_from_u64(1),
        )
        .unwrap();
        let other = AliasKey::from_secret_bytes(&[2; 32]).address();
        assert_eq!(
            record.open_descriptor(&other, None),
            Err(AliasRecordError::Undecryptable)
        );
        assert!(record.open_descriptor(&alias.address(), None).is_ok());
    }
}

//! Node identity: an Ed25519 key pair, and the [`NodeId`] every other node knows it by.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

/// Length of a [`NodeId`] in bytes.
pub const NODE_ID_LEN: usize = 32;
/// Length of a [`NodeId`]'s text form: 256 bits in base32 is 52 characters.
pub const NODE_ID_TEXT_LEN: usize = 52;

/// A node's Ed25519 signing key. Owned by the runtime, which persists it; never leaves the node.
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Generates a fresh identity from the given cryptographic RNG.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// Rebuilds an identity from its 32-byte secret seed (as stored in the identity file).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// The 32-byte secret seed, for persisting the identity. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The public half of the key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key())
    }

    /// The node's identifier: blake3 of the public key.
    pub fn node_id(&self) -> NodeId {
        self.public_key().node_id()
    }

    /// X25519 agreement with `their` Montgomery public key, using this key's Ed25519 scalar (the
    /// standard Ed25519-to-X25519 mapping). `None` for a low-order point (an all-zero secret).
    pub(crate) fn x25519_agree(&self, their: [u8; 32]) -> Option<[u8; 32]> {
        let shared =
            curve25519_dalek::MontgomeryPoint(their).mul_clamped(self.key.to_scalar_bytes());
        (shared.0 != [0; 32]).then_some(shared.0)
    }

    /// Signs `message` with the node's key.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret, even in debug output.
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key that is a valid curve point and not of small order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes as a public key, rejecting invalid and weak (small-order) points.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(key))
    }

    /// The 32-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The [`NodeId`] of this key.
    pub fn node_id(&self) -> NodeId {
        NodeId(*blake3::hash(self.0.as_bytes()).as_bytes())
    }

    /// Verifies `signature` over `message` with the strict rules (canonical encodings, no
    /// small-order components), so that one message has exactly one valid signature per key.
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// The key mapped to X25519 (Montgomery form), for encrypting to its owner.
    pub(crate) fn x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().0
    }

    /// Lowercase hex, for display.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(self.0.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// Why bytes are not a usable public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes do not decode to a point on the curve.
    #[error("not a valid Ed25519 public key")]
    InvalidPoint,
    /// The point has small order; signatures under it prove nothing.
    #[error("Ed25519 public key has small order")]
    WeakKey,
}

/// A node's identifier: blake3 of its Ed25519 public key. Shown as 52 lowercase base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId([u8; NODE_ID_LEN]);

impl NodeId {
    /// Wraps raw bytes. Any 32 bytes are a point in the id space (used by DHT lookups for keys).
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE32_NOPAD.encode(&self.0).to_ascii_lowercase())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdParseError {
    /// Wrong number of characters.
    #[error("node id must be {NODE_ID_TEXT_LEN} characters, got {0}")]
    Length(usize),
    /// A character outside lowercase base32 (`a`–`z`, `2`–`7`).
    #[error("node id has {found:?} at position {position}; only a-z and 2-7 are allowed")]
    Character {
        /// Zero-based character position.
        position: usize,
        /// The offending character.
        found: char,
    },
    /// The last character carries bits beyond the 256 that a node id has.
    #[error("node id is not canonical: its last character has non-zero padding bits")]
    NonCanonical,
}

impl FromStr for NodeId {
    type Err = NodeIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let count = s.chars().count();
        if count != NODE_ID_TEXT_LEN {
            return Err(NodeIdParseError::Length(count));
        }
        if let Some((position, found)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| !matches!(c, 'a'..='z' | '2'..='7'))
        {
            return Err(NodeIdParseError::Character { position, found });
        }
        // The alphabet was checked above, so the only decode failure left is trailing bits.
        let bytes = BASE32_NOPAD
            .decode(s.to_ascii_uppercase().as_bytes())
            .map_err(|_| NodeIdParseError::NonCanonical)?;
        let bytes: [u8; NODE_ID_LEN] = bytes
            .try_into()
            .map_err(|_| NodeIdParseError::NonCanonical)?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn node_id_text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = NodeId::from_bytes(bytes);
            let text = id.to_string();
            prop_assert_eq!(text.len(), NODE_ID_TEXT_LEN);
            prop_assert_eq!(text.parse::<NodeId>(), Ok(id));
        }

        #[test]
        fn node_id_parser_never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<NodeId>();
        }

        #[test]
        fn identity_round_trips_through_secret(seed in any::<[u8; 32]>()) {
            let a = Identity::from_secret_bytes(&seed);
            let b = Identity::from_secret_bytes(&a.secret_bytes());
            prop_assert_eq!(a.node_id(), b.node_id());
        }
    }

    #[test]
    fn node_id_rejects_bad_text_with_reason() {
        let good = NodeId::from_bytes([7; 32]).to_string();
        assert_eq!("abc".parse::<NodeId>(), Err(NodeIdParseError::Length(3)));
        let upper = good.to_ascii_uppercase();
        assert!(matches!(
            upper.parse::<NodeId>(),
            Err(NodeIdParseError::Character { position: 0, .. })
        ));
        let mut bad = good.clone();
        bad.replace_range(10..11, "1");
        assert_eq!(
            bad.parse::<NodeId>(),
            Err(NodeIdParseError::Character {
                position: 10,
                found: '1'
            })
        );
        // 'z' as the last character sets padding bits that no 32-byte id produces.
        let mut noncanonical = good;
        noncanonical.replace_range(51..52, "z");
        assert_eq!(
            noncanonical.parse::<NodeId>(),
            Err(NodeIdParseError::NonCanonical)
        );
    }

    #[test]
    fn weak_public_key_is_rejected() {
        // The identity point (encoded as y = 1) has small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(&identity_point),
            Err(KeyError::WeakKey)
        );
    }

    #[test]
    fn generation_uses_the_injected_rng() {
        struct Counter(u8);
        impl rand_core::RngCore for Counter {
            fn next_u32(&mut self) -> u32 {
                rand_core::impls::next_u32_via_fill(self)
            }
            fn next_u64(&mut self) -> u64 {
                rand_core::impls::next_u64_via_fill(self)
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                for b in dest {
                    self.0 = self.0.wrapping_add(1);
                    *b = self.0;
                }
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        impl rand_core::CryptoRng for Counter {}
        let a = Identity::generate(&mut Counter(0));
        let b = Identity::generate(&mut Counter(0));
        assert_eq!(a.node_id(), b.node_id());
        assert_ne!(a.node_id(), Identity::generate(&mut Counter(9)).node_id());
    }
}

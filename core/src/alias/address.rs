//! The alias key and its address.
//!
//! An address is `base32(key (32) | checksum (2) | version (1))` in lowercase, 56 characters,
//! followed by `.vx6`. The checksum is the first two bytes of
//! `blake3::derive_key("vx6 alias address checksum v1", key | version)`: a single mistyped
//! character (or a swapped pair) changes it, so the address is refused as mistyped instead of
//! leading nowhere, or somewhere else.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::SigningKey;
use rand_core::CryptoRngCore;

use crate::identity::PublicKey;

/// Address format version this code writes and accepts.
pub const ALIAS_VERSION: u8 = 1;
/// The suffix every alias address ends with.
pub const ALIAS_SUFFIX: &str = ".vx6";
/// Characters before the suffix.
pub const ALIAS_LABEL_LEN: usize = 56;

const CHECKSUM_CONTEXT: &str = "vx6 alias address checksum v1";

/// An alias's own signing key. Kept apart from the node key, so that nothing signed for the
/// alias can be tied to the node.
pub struct AliasKey(SigningKey);

impl AliasKey {
    /// A new key from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// The key with this 32-byte secret (as stored in the alias's key file).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The 32-byte secret, for the key file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The alias's address.
    pub fn address(&self) -> AliasAddress {
        AliasAddress {
            key: self.0.verifying_key().to_bytes(),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for AliasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AliasKey({})", self.address())
    }
}

/// A hidden alias's address: its public key, checked to be a usable one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AliasAddress {
    key: [u8; 32],
}

/// Why text is not an alias address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasAddressError {
    /// The text does not end in `.vx6`.
    #[error("an alias address ends in {ALIAS_SUFFIX}")]
    Suffix,
    /// The part before `.vx6` has the wrong length.
    #[error("an alias address has {ALIAS_LABEL_LEN} characters before {ALIAS_SUFFIX}, not {0}")]
    Length(usize),
    /// A character outside lowercase base32 (a–z, 2–7).
    #[error("an alias address is lowercase base32 (a-z, 2-7)")]
    Alphabet,
    /// The checksum does not match: the address was mistyped or altered.
    #[error("the alias address's checksum does not match: it is mistyped")]
    Checksum,
    /// A version this code does not know.
    #[error("alias address version {0} is not supported (this node knows version {ALIAS_VERSION})")]
    Version(u8),
    /// The key is not a usable Ed25519 key (not a point, or one with a small-order part).
    #[error("the alias address does not hold a usable key")]
    Key,
}

fn checksum(key: &[u8; 32], version: u8) -> [u8; 2] {
    let mut input = [0u8; 33];
    input[..32].copy_from_slice(key);
    input[32] = version;
    let sum = blake3::derive_key(CHECKSUM_CONTEXT, &input);
    [sum[0], sum[1]]
}

impl AliasAddress {
    /// The alias's public key bytes.
    pub fn key_bytes(&self) -> [u8; 32] {
        self.key
    }

    /// The alias's public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_bytes(&self.key).expect("checked when the address was made")
    }
}

impl fmt::Display for AliasAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&self.key);
        raw[32..34].copy_from_slice(&checksum(&self.key, ALIAS_VERSION));
        raw[34] = ALIAS_VERSION;
        let label = data_encoding::BASE32_NOPAD
            .encode(&raw)
            .to_ascii_lowercase();
        write!(f, "{label}{ALIAS_SUFFIX}")
    }
}

impl fmt::Debug for AliasAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AliasAddress({self})")
    }
}

impl FromStr for AliasAddress {
    type Err = AliasAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let label = s
            .strip_suffix(ALIAS_SUFFIX)
            .ok_or(AliasAddressError::Suffix)?;
        if label.len() != ALIAS_LABEL_LEN {
            return Err(AliasAddressError::Length(label.chars().count()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(AliasAddressError::Alphabet);
        }
        let raw = data_encoding::BASE32_NOPAD
            .decode(label.to_ascii_uppercase().as_bytes())
            .map_err(|_| AliasAddressError::Alphabet)?;
        // 56 characters carry 280 bits: exactly 35 bytes, nothing left over.
        let raw: [u8; 35] = raw.try_into().map_err(|_| AliasAddressError::Alphabet)?;
        let key: [u8; 32] = raw[..32].try_into().expect("32 of 35 bytes");
        let version = raw[34];
        if raw[32..34] != checksum(&key, version) {
            return Err(AliasAddressError::Checksum);
        }
        if version != ALIAS_VERSION {
            return Err(AliasAddressError::Version(version));
        }
        // Blinding multiplies the key by a scalar: a small-order part would survive it and
        // could link periods, so such keys are refused outright.
        let point = CompressedEdwardsY(key)
            .decompress()
            .ok_or(AliasAddressError::Key)?;
        if point.is_small_order() || !point.is_torsion_free() {
            return Err(AliasAddressError::Key);
        }
        PublicKey::from_bytes(&key).map_err(|_| AliasAddressError::Key)?;
        Ok(Self { key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> AliasKey {
        AliasKey::from_secret_bytes(&[seed; 32])
    }

    #[test]
    fn an_address_reads_back_as_itself() {
        let address = key(1).address();
        let text = address.to_string();
        assert_eq!(text.len(), ALIAS_LABEL_LEN + ALIAS_SUFFIX.len());
        assert!(text.ends_with(".vx6"));
        assert_eq!(text.parse::<AliasAddress>(), Ok(address));
    }

    #[test]
    fn bad_text_is_refused_with_its_reason() {
        let text = key(2).address().to_string();
        let label = text.strip_suffix(".vx6").unwrap();
        assert_eq!(
            label.parse::<AliasAddress>(),
            Err(AliasAddressError::Suffix)
        );
        assert_eq!(
            format!("{}.vx6", &label[1..]).parse::<AliasAddress>(),
            Err(AliasAddressError::Length(55))
        );
        assert_eq!(
            text.to_ascii_uppercase()
                .replace(".VX6", ".vx6")
                .parse::<AliasAddress>(),
            Err(AliasAddressError::Alphabet)
        );
        assert_eq!(
            format!("1{}.vx6", &label[1..]).parse::<AliasAddress>(),
            Err(AliasAddressError::Alphabet)
        );
    }

    #[test]
    fn another_version_is_named() {
        let k = key(3).address().key_bytes();
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&k);
        raw[32..34].copy_from_slice(&checksum(&k, 9));
        raw[34] = 9;
        let text = format!(
            "{}.vx6",
            data_encoding::BASE32_NOPAD
                .encode(&raw)
                .to_ascii_lowercase()
        );
        assert_eq!(
            text.parse::<AliasAddress>(),
            Err(AliasAddressError::Version(9))
        );
    }

    #[test]
    fn a_key_with_a_small_order_part_is_refused() {
        // The identity point: valid encoding, order 1.
        let mut k = [0u8; 32];
        k[0] = 1;
        let mut raw = [0u8; 35];
        raw[..32].copy_from_slice(&k);
        raw[32..34].copy_from_slice(&checksum(&k, ALIAS_VERSION));
        raw[34] = ALIAS_VERSION;
        let text = format!(
            "{}.vx6",
            data_encoding::BASE32_NOPAD
                .encode(&raw)
                .to_ascii_lowercase()
        );
        assert_eq!(text.parse::<AliasAddress>(), Err(AliasAddressError::Key));
    }

    proptest! {
        // A 16-bit checksum lets one typo in 65 536 through (as Tor's does): the seed is fixed,
        // so these cases are the same on every run rather than a coin toss.
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7653_a11a),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any one character changed, or two neighbours swapped, is refused: the address a
        /// user mistypes does not parse as another alias.
        #[test]
        fn a_typo_is_refused(seed in any::<[u8; 32]>(), at in 0usize..ALIAS_LABEL_LEN, to in 0usize..32, swap in any::<bool>()) {
            let text = AliasKey::from_secret_bytes(&seed).address().to_string();
            let mut chars: Vec<u8> = text.into_bytes();
            if swap && at + 1 < ALIAS_LABEL_LEN {
                prop_assume!(chars[at] != chars[at + 1]);
                chars.swap(at, at + 1);
            } else {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
                prop_assume!(chars[at] != alphabet[to]);
                chars[at] = alphabet[to];
            }
            let typo = String::from_utf8(chars).unwrap();
            prop_assert!(typo.parse::<AliasAddress>().is_err(), "{typo} parsed");
        }

        /// Parsing never panics, whatever the text.
        #[test]
        fn parsing_anything_is_safe(text in ".{0,80}") {
            let _ = text.parse::<AliasAddress>();
        }
    }
}

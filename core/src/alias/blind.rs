//! Key blinding (after Tor's rend-spec-v3, appendix A.2): each time period the alias key `A`
//! gives a blinded key `A' = h·A`, with `h` derived from `A` and the period. Whoever knows the
//! address computes `A'` for any period and finds the record; a DHT node that stores it sees
//! only `A'`, and telling whether two blinded keys come from one alias would take the discrete
//! logarithm. The owner signs with `a' = h·a`, which makes ordinary Ed25519 signatures that
//! verify under `A'`.

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use ed25519_dalek::{Signature, VerifyingKey};

use super::address::{AliasAddress, AliasKey};
use crate::identity::{NodeId, PublicKey};

/// Length of a time period: a new blinded key each day, as in Tor.
pub const PERIOD_SECS: u64 = 24 * 3600;

const BLINDING_CONTEXT: &str = "vx6 alias blinding factor v1";
const PREFIX_CONTEXT: &str = "vx6 alias blinded nonce prefix v1";

/// A time period: `unix seconds / PERIOD_SECS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(pub u64);

impl Period {
    /// The period `unix_secs` falls in.
    pub fn containing(unix_secs: u64) -> Self {
        Self(unix_secs / PERIOD_SECS)
    }

    /// When the period starts, in unix seconds.
    pub fn start(self) -> u64 {
        self.0.saturating_mul(PERIOD_SECS)
    }

    /// When the period ends (the next one's start), in unix seconds.
    pub fn end(self) -> u64 {
        self.0.saturating_add(1).saturating_mul(PERIOD_SECS)
    }
}

/// `h` for the alias key `key` in `period`: a uniform scalar from a keyed hash of both.
fn factor(key: &[u8; 32], period: Period) -> Scalar {
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(key);
    input[32..].copy_from_slice(&period.0.to_be_bytes());
    let mut wide = [0u8; 64];
    blake3::Hasher::new_derive_key(BLINDING_CONTEXT)
        .update(&input)
        .finalize_xof()
        .fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// An alias's public key for one period: what its record is signed with and stored under.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlindedKey {
    key: PublicKey,
    period: Period,
}

impl BlindedKey {
    /// The blinded key of `address` in `period`: computable by anyone who knows the address.
    pub fn of(address: &AliasAddress, period: Period) -> Self {
        let bytes = address.key_bytes();
        let point = CompressedEdwardsY(bytes)
            .decompress()
            .expect("an address holds a valid point");
        let blinded = VerifyingKey::from(factor(&bytes, period) * point);
        Self {
            key: PublicKey::from_bytes(&blinded.to_bytes())
                .expect("a torsion-free point times a non-zero scalar is a valid key"),
            period,
        }
    }

    /// A key that verified a record of `period`: what a storer, who cannot derive it, holds.
    pub(super) fn from_verified(key: PublicKey, period: Period) -> Self {
        Self { key, period }
    }

    /// The blinded key as a public key (it verifies the record's signature).
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The period it is for.
    pub fn period(&self) -> Period {
        self.period
    }

    /// Where the DHT stores the alias's record in this period: the id of the blinded key, as a
    /// node's records are stored under its key's id.
    pub fn dht_key(&self) -> NodeId {
        self.key.node_id()
    }
}

impl std::fmt::Debug for BlindedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BlindedKey({}, period {})",
            self.key.to_hex(),
            self.period.0
        )
    }
}

impl AliasKey {
    /// Signs `message` with the key blinded for `period`; the signature verifies under
    /// [`BlindedKey::of`] this alias's address and `period`, and under no other key.
    pub fn sign_blinded(&self, period: Period, message: &[u8]) -> [u8; 64] {
        let blinded = BlindedKey::of(&self.address(), period);
        let expanded = ExpandedSecretKey::from(self.signing_key().as_bytes());
        let h = factor(&self.address().key_bytes(), period);
        // The nonce prefix is blinded too: one shared by two periods would make their
        // signatures' nonces related.
        let mut input = [0u8; 40];
        input[..32].copy_from_slice(&expanded.hash_prefix);
        input[32..].copy_from_slice(&period.0.to_be_bytes());
        let key = ExpandedSecretKey {
            scalar: h * expanded.scalar,
            hash_prefix: blake3::derive_key(PREFIX_CONTEXT, &input),
        };
        let verifying =
            VerifyingKey::from_bytes(&blinded.key.to_bytes()).expect("a valid public key");
        let signature: Signature = raw_sign::<sha2::Sha512>(&key, message, &verifying);
        signature.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn periods_are_days() {
        let p = Period::containing(1_800_000_000);
        assert!(p.start() <= 1_800_000_000 && 1_800_000_000 < p.end());
        assert_eq!(p.end() - p.start(), 86_400);
        assert_eq!(Period::containing(p.end()), Period(p.0 + 1));
    }

    proptest! {
        // Each case is several scalar multiplications, slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A blinded signature verifies under the blinded key of its own period only, never
        /// under the alias key itself or another period's key.
        #[test]
        fn a_blinded_signature_verifies_under_its_period_only(
            seed in any::<[u8; 32]>(),
            period in 0u64..1_000_000,
            message in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let alias = AliasKey::from_secret_bytes(&seed);
            let address = alias.address();
            let signature = alias.sign_blinded(Period(period), &message);
            let this = BlindedKey::of(&address, Period(period));
            let next = BlindedKey::of(&address, Period(period + 1));
            prop_assert!(this.public_key().verify_strict(&message, &signature));
            prop_assert!(!next.public_key().verify_strict(&message, &signature));
            prop_assert!(!address.public_key().verify_strict(&message, &signature));
        }

        /// What a storer sees of two periods (blinded keys, DHT keys) shares nothing with each
        /// other or with the alias key: without the address, the records cannot be linked.
        #[test]
        fn two_periods_look_unrelated(seed in any::<[u8; 32]>(), period in 0u64..1_000_000, gap in 1u64..400) {
            let address = AliasKey::from_secret_bytes(&seed).address();
            let a = BlindedKey::of(&address, Period(period));
            let b = BlindedKey::of(&address, Period(period + gap));
            prop_assert_ne!(a.public_key().to_bytes(), b.public_key().to_bytes());
            prop_assert_ne!(a.dht_key(), b.dht_key());
            prop_assert_ne!(a.public_key().to_bytes(), address.key_bytes());
            prop_assert_ne!(a.dht_key(), address.public_key().node_id());
            // And the address holder gets the same key again, deterministically.
            prop_assert_eq!(a, BlindedKey::of(&address, Period(period)));
        }

        /// Two aliases never share a blinded key in the same period.
        #[test]
        fn aliases_do_not_collide(s1 in any::<[u8; 32]>(), s2 in any::<[u8; 32]>(), period in 0u64..1_000_000) {
            prop_assume!(s1 != s2);
            let a = BlindedKey::of(&AliasKey::from_secret_bytes(&s1).address(), Period(period));
            let b = BlindedKey::of(&AliasKey::from_secret_bytes(&s2).address(), Period(period));
            prop_assert_ne!(a.dht_key(), b.dht_key());
        }
    }
}

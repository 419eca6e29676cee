//! QUIC connection ids that a restarted node still recognises, drawn from the node's seeded RNG.
//!
//! quinn-proto's default generator keys its validity check with a random key per process, so
//! after a restart every packet of an old connection is dropped silently as an invalid id, and
//! the peer waits for its idle timeout. Keying the check with a secret derived from the node key
//! lets the restarted node recognise its old ids and answer with a stateless reset (whose key is
//! also derived from the node key), so peers learn at once that their connection is gone.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

const NONCE_LEN: usize = 3;
const TAG_LEN: usize = 5;

/// 8-byte ids: a random nonce and a keyed blake3 tag over it.
pub struct KeyedCidGenerator {
    rng: ChaCha8Rng,
    key: [u8; 32],
}

impl KeyedCidGenerator {
    /// `key` must be secret and stable for the node; `seed` makes the ids reproducible.
    pub fn new(key: [u8; 32], seed: [u8; 32]) -> Self {
        Self {
            rng: ChaCha8Rng::from_seed(seed),
            key,
        }
    }

    fn tag(&self, nonce: &[u8]) -> [u8; TAG_LEN] {
        let hash = blake3::keyed_hash(&self.key, nonce);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
        tag
    }
}

impl ConnectionIdGenerator for KeyedCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; NONCE_LEN + TAG_LEN];
        self.rng.fill_bytes(&mut bytes[..NONCE_LEN]);
        let tag = self.tag(&bytes[..NONCE_LEN]);
        bytes[NONCE_LEN..].copy_from_slice(&tag);
        ConnectionId::new(&bytes)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() != NONCE_LEN + TAG_LEN {
            return Err(InvalidCid);
        }
        let (nonce, tag) = cid.split_at(NONCE_LEN);
        if self.tag(nonce)[..] == tag[..] {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        NONCE_LEN + TAG_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_validate_across_instances_with_the_same_key() {
        let mut a = KeyedCidGenerator::new([1; 32], [2; 32]);
        let b = KeyedCidGenerator::new([1; 32], [3; 32]);
        let other = KeyedCidGenerator::new([9; 32], [2; 32]);
        for _ in 0..100 {
            let cid = a.generate_cid();
            assert!(b.validate(&cid).is_ok());
            assert!(other.validate(&cid).is_err());
        }
        assert!(b.validate(&ConnectionId::new(&[0; 4])).is_err());
    }

    #[test]
    fn same_seed_same_ids() {
        let mut a = KeyedCidGenerator::new([1; 32], [2; 32]);
        let mut b = KeyedCidGenerator::new([1; 32], [2; 32]);
        assert_eq!(a.generate_cid(), b.generate_cid());
    }
}

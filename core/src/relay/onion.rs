//! The layered circuit-setup message: each hop can open only its own layer, so it learns its
//! neighbours and nothing further down the path (DESIGN.md §6).
//!
//! A layer is `ephemeral X25519 key (32) | ChaCha20-Poly1305(plaintext) | tag (16)`, keyed by
//! `blake3::derive_key("vx6 circuit onion v1", shared | ephemeral | recipient)`. The recipient's
//! X25519 key is its Ed25519 node key mapped to Montgomery form; a key is used for one layer
//! only, so the nonce is zero.

use rand_core::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::control::{FlowId, Instruction};
use crate::identity::{Identity, NodeId, PublicKey};

/// Bytes a layer adds to its plaintext.
pub const LAYER_OVERHEAD: usize = 32 + 16;

const CONTEXT: &str = "vx6 circuit onion v1";

/// Why a layer did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OnionError {
    /// Shorter than a layer's overhead.
    #[error("onion layer truncated")]
    Truncated,
    /// Not sealed to this node, or altered on the way.
    #[error("onion layer does not open with this node's key")]
    Unsealed,
}

fn key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> LessSafeKey {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(recipient);
    let k = blake3::derive_key(CONTEXT, &material);
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("32-byte key"))
}

/// Seals `plaintext` to `recipient`, with an ephemeral key drawn from `rng`.
pub fn seal(rng: &mut impl RngCore, recipient: &PublicKey, plaintext: &[u8]) -> Vec<u8> {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let ephemeral = curve25519_dalek::MontgomeryPoint::mul_base_clamped(secret).0;
    let theirs = recipient.x25519();
    let shared = curve25519_dalek::MontgomeryPoint(theirs)
        .mul_clamped(secret)
        .0;
    let mut body = plaintext.to_vec();
    key(&shared, &ephemeral, &theirs)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut body,
        )
        .expect("in-memory sealing");
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(&body);
    out
}

/// Opens a layer sealed to `identity`.
pub fn open(identity: &Identity, layer: &[u8]) -> Result<Vec<u8>, OnionError> {
    if layer.len() < LAYER_OVERHEAD {
        return Err(OnionError::Truncated);
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&layer[..32]);
    let shared = identity
        .x25519_agree(ephemeral)
        .ok_or(OnionError::Unsealed)?;
    let mut body = layer[32..].to_vec();
    let mine = identity.public_key().x25519();
    let plain = key(&shared, &ephemeral, &mine)
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::empty(),
            &mut body,
        )
        .map_err(|_| OnionError::Unsealed)?;
    Ok(plain.to_vec())
}

/// One node of a path being set up: who, with which key, and where.
#[derive(Debug, Clone)]
pub struct PathHop {
    /// The node.
    pub node: NodeId,
    /// Its key, to seal its layer to.
    pub key: PublicKey,
    /// Where it accepts QUIC sessions.
    pub addr: std::net::SocketAddr,
}

/// The onion for a circuit through `relays` to `end`, carrying `flow`: the layer the first
/// relay opens, with every later layer inside it (with no relays, the direct path of a
/// managed link, `end`'s own layer).
pub fn wrap(rng: &mut impl RngCore, relays: &[PathHop], end: &PathHop, flow: FlowId) -> Vec<u8> {
    let mut layer = seal(rng, &end.key, &Instruction::Deliver { flow }.encode());
    let mut next = end;
    for hop in relays.iter().rev() {
        let inst = Instruction::Extend {
            next: next.node,
            addr: next.addr,
            inner: layer,
        };
        layer = seal(rng, &hop.key, &inst.encode());
        next = hop;
    }
    layer
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;

    #[test]
    fn only_the_recipient_opens_and_tampering_is_caught() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let alice = Identity::from_secret_bytes(&[1; 32]);
        let bob = Identity::from_secret_bytes(&[2; 32]);
        let layer = seal(&mut rng, &alice.public_key(), b"extend to bob");
        assert_eq!(layer.len(), 13 + LAYER_OVERHEAD);
        assert_eq!(open(&alice, &layer).unwrap(), b"extend to bob");
        assert_eq!(open(&bob, &layer), Err(OnionError::Unsealed));
        let mut bad = layer.clone();
        bad[40] ^= 1;
        assert_eq!(open(&alice, &bad), Err(OnionError::Unsealed));
        assert_eq!(open(&alice, &layer[..20]), Err(OnionError::Truncated));
        assert_eq!(
            open(&alice, &[0; 64]),
            Err(OnionError::Unsealed),
            "low-order point"
        );
    }
}

//! Arbitrary bytes as an onion layer arriving at a relay: opening must fail cleanly (a fuzzer
//! cannot forge a ChaCha20-Poly1305 tag), never panic. The same bytes sealed to the relay open
//! to themselves, for the relay only, and not once one byte is changed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use vx6_core::Identity;
use vx6_core::relay::onion::{self, LAYER_OVERHEAD, OnionError};

static KEYS: OnceLock<(Identity, Identity)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (relay, other) = KEYS.get_or_init(|| {
        (
            Identity::from_secret_bytes(&[5; 32]),
            Identity::from_secret_bytes(&[6; 32]),
        )
    });
    match onion::open(relay, data) {
        Err(OnionError::Truncated) => assert!(data.len() < LAYER_OVERHEAD),
        Err(OnionError::Unsealed) => assert!(data.len() >= LAYER_OVERHEAD),
        Ok(plain) => panic!("forged a layer opening to {} bytes", plain.len()),
    }
    let mut rng = ChaCha8Rng::seed_from_u64(data.len() as u64);
    let mut layer = onion::seal(&mut rng, &relay.public_key(), data);
    assert_eq!(layer.len(), data.len() + LAYER_OVERHEAD);
    assert_eq!(onion::open(relay, &layer).as_deref(), Ok(data));
    assert_eq!(onion::open(other, &layer), Err(OnionError::Unsealed));
    let at = data.first().map_or(0, |&b| usize::from(b)) % layer.len();
    layer[at] ^= 0x80;
    assert_eq!(onion::open(relay, &layer), Err(OnionError::Unsealed));
});

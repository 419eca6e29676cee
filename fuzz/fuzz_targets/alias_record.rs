//! Hidden aliases: arbitrary text as an alias address, arbitrary bytes as an alias record (decode,
//! then open as a client would), and records sealed from fuzzed contents with one byte altered,
//! which must never decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use vx6_core::Identity;
use vx6_core::alias::{
    AliasAddress, AliasDescriptor, AliasKey, AliasPublication, AliasRecord, IntroPoint, Period,
};

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let alias = AliasKey::from_secret_bytes(&[7; 32]);
    let reader = Identity::from_secret_bytes(&[8; 32]);
    match mode % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(address) = text.parse::<AliasAddress>()
            {
                assert_eq!(address.to_string(), text, "one spelling per address");
            }
        }
        1 => {
            if let Ok(record) = AliasRecord::decode(rest) {
                assert_eq!(record.as_bytes(), rest, "one encoding per record");
                let _ = record.open(&alias.address(), Some(&reader), NOW);
            }
        }
        _ => {
            // Contents from the input: relays, clients, and which byte to alter.
            let Some((&flip, rest)) = rest.split_first() else {
                return;
            };
            let intro = rest
                .chunks(33)
                .take(8)
                .map(|c| {
                    let id = Identity::from_secret_bytes(&blake3::hash(c).into());
                    IntroPoint {
                        relay: id.node_id(),
                        key: id.public_key().to_bytes(),
                        addr: std::net::SocketAddr::from(([c[0], 0, 0, 1], 4433)),
                    }
                })
                .collect();
            let clients: Vec<_> = (0..rest.len() % 4)
                .map(|i| Identity::from_secret_bytes(&[i as u8 + 20; 32]).public_key())
                .collect();
            let period = Period::containing(NOW);
            let Ok(record) = AliasRecord::seal(
                &alias,
                &AliasPublication {
                    period,
                    seq: rest.len() as u64,
                    expires_at: NOW + 60,
                    descriptor: &AliasDescriptor { intro },
                    clients: &clients,
                },
                &mut ChaCha20Rng::seed_from_u64(rest.len() as u64),
            ) else {
                return;
            };
            let decoded = AliasRecord::decode(record.as_bytes()).expect("a sealed record decodes");
            // The reader is never listed: it reads only an alias open to all; a listed client
            // always reads.
            let opened = decoded.open(&alias.address(), Some(&reader), NOW);
            assert_eq!(opened.is_ok(), clients.is_empty());
            let listed = Identity::from_secret_bytes(&[20; 32]);
            assert!(decoded.open(&alias.address(), Some(&listed), NOW).is_ok());
            let mut altered = record.as_bytes().to_vec();
            let at = usize::from(flip) * altered.len() / 256;
            altered[at] ^= 1 << (flip % 8);
            assert!(
                AliasRecord::decode(&altered).is_err(),
                "byte {at} altered unnoticed"
            );
        }
    }
});

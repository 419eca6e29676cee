//! Alias records: what the owner seals, what a DHT node that stores one can and cannot read,
//! who can open it, and that forged, altered, expired or foreign records are refused.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use vx6_core::Identity;
use vx6_core::alias::record::{EXPIRY_GRACE_SECS, MAX_ALIAS_CLIENTS, MAX_INTRO_POINTS};
use vx6_core::alias::{
    AliasDescriptor, AliasKey, AliasPublication, AliasRecord, AliasRecordError, BlindedKey,
    IntroPoint, Period,
};

const NOW: u64 = 1_800_000_000;

fn intro(seed: u8) -> IntroPoint {
    let relay = Identity::from_secret_bytes(&[seed; 32]);
    IntroPoint {
        relay: relay.node_id(),
        key: relay.public_key().to_bytes(),
        addr: format!("[fd00::{seed}]:4433").parse().unwrap(),
    }
}

fn descriptor() -> AliasDescriptor {
    AliasDescriptor {
        intro: vec![intro(11), intro(12), intro(13)],
    }
}

/// Seals a record of seq 1 with `seed`'s randomness.
fn seal(
    alias: &AliasKey,
    (period, expires_at): (Period, u64),
    descriptor: &AliasDescriptor,
    clients: &[vx6_core::PublicKey],
    seed: u64,
) -> Result<AliasRecord, AliasRecordError> {
    AliasRecord::seal(
        alias,
        &AliasPublication {
            period,
            seq: 1,
            expires_at,
            descriptor,
            clients,
        },
        &mut ChaCha20Rng::seed_from_u64(seed),
    )
}

fn publish(alias: &AliasKey, clients: &[vx6_core::PublicKey], seed: u64) -> AliasRecord {
    let period = Period::containing(NOW);
    seal(
        alias,
        (period, NOW + 3 * 3600),
        &descriptor(),
        clients,
        seed,
    )
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_client_with_the_address_reads_the_introduction_relays() {
    let alias = AliasKey::from_secret_bytes(&[1; 32]);
    let record = publish(&alias, &[], 1);
    let received = AliasRecord::decode(record.as_bytes()).unwrap();
    assert_eq!(
        received.dht_key(),
        BlindedKey::of(&alias.address(), Period::containing(NOW)).dht_key()
    );
    assert_eq!(received.open(&alias.address(), None, NOW), Ok(descriptor()));
}

#[test]
fn a_storer_sees_neither_the_alias_nor_the_relays() {
    let alias = AliasKey::from_secret_bytes(&[2; 32]);
    let bytes = publish(&alias, &[], 2).as_bytes().to_vec();
    // What a DHT node holds: it verifies, but names no alias key, relay, relay key or address.
    let held = AliasRecord::decode(&bytes).unwrap();
    // Nor can it tell an alias open to all from one for listed clients, nor how many relays:
    // every record has the same shape.
    let listed = Identity::from_secret_bytes(&[9; 32]).public_key();
    let authorizing = publish(&alias, &[listed], 3);
    assert!(bytes.len().abs_diff(authorizing.as_bytes().len()) <= 4);
    assert!(!contains(&bytes, &alias.address().key_bytes()));
    assert!(!contains(
        &bytes,
        alias.address().public_key().node_id().as_bytes()
    ));
    for point in descriptor().intro {
        assert!(
            !contains(&bytes, point.relay.as_bytes()),
            "relay id in the clear"
        );
        assert!(!contains(&bytes, &point.key), "relay key in the clear");
        let std::net::SocketAddr::V6(a) = point.addr else {
            unreachable!()
        };
        assert!(
            !contains(&bytes, &a.ip().octets()),
            "relay address in the clear"
        );
    }
    // Someone who knows another alias's address cannot read it either.
    let other = AliasKey::from_secret_bytes(&[3; 32]).address();
    assert_eq!(
        held.open(&other, None, NOW),
        Err(AliasRecordError::WrongAlias)
    );
}

#[test]
fn only_listed_clients_read_an_authorizing_alias() {
    let alias = AliasKey::from_secret_bytes(&[4; 32]);
    let carol = Identity::from_secret_bytes(&[5; 32]);
    let dave = Identity::from_secret_bytes(&[6; 32]);
    let mallory = Identity::from_secret_bytes(&[7; 32]);
    let record = publish(&alias, &[carol.public_key(), dave.public_key()], 3);
    let held = AliasRecord::decode(record.as_bytes()).unwrap();
    let address = alias.address();
    assert_eq!(held.open(&address, Some(&carol), NOW), Ok(descriptor()));
    assert_eq!(held.open(&address, Some(&dave), NOW), Ok(descriptor()));
    assert_eq!(
        held.open(&address, Some(&mallory), NOW),
        Err(AliasRecordError::NotAuthorized)
    );
    assert_eq!(
        held.open(&address, None, NOW),
        Err(AliasRecordError::NotAuthorized)
    );
    assert!(
        AliasRecordError::NotAuthorized
            .to_string()
            .contains("listed clients only")
    );
}

#[test]
fn forged_altered_and_expired_records_are_refused() {
    let alias = AliasKey::from_secret_bytes(&[8; 32]);
    let address = alias.address();
    let bytes = publish(&alias, &[], 4).as_bytes().to_vec();
    // Any flipped bit is caught: by the signature, or earlier by the decoder.
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(
            AliasRecord::decode(&bad).is_err(),
            "byte {i} altered unnoticed"
        );
    }
    assert!(matches!(
        AliasRecord::decode(&bytes[..40]),
        Err(AliasRecordError::Malformed(_))
    ));
    let mut versioned = bytes.clone();
    versioned[0] = 9;
    assert_eq!(
        AliasRecord::decode(&versioned),
        Err(AliasRecordError::Version(9))
    );
    assert_eq!(
        AliasRecord::decode(&vec![1; 4000]),
        Err(AliasRecordError::TooLong(4000))
    );
    // Expired for a reader whose clock has passed it.
    let held = AliasRecord::decode(&bytes).unwrap();
    assert_eq!(
        held.open(&address, None, NOW + 3 * 3600),
        Err(AliasRecordError::Expired)
    );
    // An owner cannot publish a record that outlives its period.
    let period = Period::containing(NOW);
    let too_long = seal(
        &alias,
        (period, period.end() + EXPIRY_GRACE_SECS + 1),
        &descriptor(),
        &[],
        5,
    );
    assert_eq!(too_long.unwrap_err(), AliasRecordError::Expired);
    // Last period's record is not this period's.
    let old = seal(
        &alias,
        (Period(period.0 - 1), period.start()),
        &descriptor(),
        &[],
        6,
    )
    .unwrap();
    assert_ne!(old.dht_key(), held.dht_key());
}

#[test]
fn bounds_are_kept_on_both_sides() {
    let alias = AliasKey::from_secret_bytes(&[9; 32]);
    let period = Period::containing(NOW);
    let many = AliasDescriptor {
        intro: (0..=MAX_INTRO_POINTS as u8).map(intro).collect(),
    };
    let r = seal(&alias, (period, NOW + 60), &many, &[], 7);
    assert_eq!(
        r.unwrap_err(),
        AliasRecordError::TooMany("introduction relays")
    );
    let clients: Vec<_> = (0..=MAX_ALIAS_CLIENTS as u8)
        .map(|i| Identity::from_secret_bytes(&[100 + i; 32]).public_key())
        .collect();
    let r = seal(&alias, (period, NOW + 60), &descriptor(), &clients, 8);
    assert_eq!(r.unwrap_err(), AliasRecordError::TooMany("clients"));
    // The most of both still fits one record.
    let full = AliasDescriptor {
        intro: (0..MAX_INTRO_POINTS as u8).map(intro).collect(),
    };
    let r = seal(
        &alias,
        (period, NOW + 60),
        &full,
        &clients[..MAX_ALIAS_CLIENTS],
        9,
    )
    .unwrap();
    assert_eq!(
        AliasRecord::decode(r.as_bytes())
            .unwrap()
            .open(
                &alias.address(),
                Some(&Identity::from_secret_bytes(&[100; 32])),
                NOW
            )
            .unwrap(),
        full
    );
}

#[test]
fn sealing_is_deterministic_for_a_seed() {
    let alias = AliasKey::from_secret_bytes(&[10; 32]);
    assert_eq!(
        publish(&alias, &[], 42).as_bytes(),
        publish(&alias, &[], 42).as_bytes()
    );
    assert_ne!(
        publish(&alias, &[], 42).as_bytes(),
        publish(&alias, &[], 43).as_bytes()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Two periods' records of one alias share no bytes a storer could match on: keys, ids,
    /// salts and sealed descriptors all differ, so without the address they cannot be linked.
    #[test]
    fn records_of_two_periods_are_unlinkable(seed in any::<[u8; 32]>(), gap in 1u64..30) {
        let alias = AliasKey::from_secret_bytes(&seed);
        let carol_id = Identity::from_secret_bytes(&[5; 32]);
        let carol = carol_id.public_key();
        let mut rng = ChaCha20Rng::from_seed(seed);
        let seal = |period: Period, rng: &mut ChaCha20Rng| {
            AliasRecord::seal(&alias, &AliasPublication {
                period, seq: 7, expires_at: period.end(), descriptor: &descriptor(), clients: &[carol],
            }, rng).unwrap()
        };
        let p = Period::containing(NOW);
        let a = seal(p, &mut rng);
        let b = seal(Period(p.0 + gap), &mut rng);
        prop_assert_ne!(a.dht_key(), b.dht_key());
        prop_assert_ne!(a.blinded().public_key().to_bytes(), b.blinded().public_key().to_bytes());
        // No 16-byte run of one record appears in the other (the fixed fields are short).
        let (x, y) = (a.as_bytes(), b.as_bytes());
        for w in x.windows(16) {
            prop_assert!(!contains(y, w));
        }
        prop_assert!(x.len().abs_diff(y.len()) <= 4);
        // With the address, the listed client opens both.
        prop_assert!(a.open(&alias.address(), Some(&carol_id), p.start()).is_ok());
        prop_assert!(b.open(&alias.address(), Some(&carol_id), Period(p.0 + gap).start()).is_ok());
    }

    /// Decoding never panics, whatever the bytes.
    #[test]
    fn decoding_anything_is_safe(bytes in proptest::collection::vec(any::<u8>(), 0..2100)) {
        let _ = AliasRecord::decode(&bytes);
    }
}

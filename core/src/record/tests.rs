//! Property tests for record encoding and verification, and strategies shared with the registry's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::envelope::{HEADER_LEN, encode_body, signed_message};
use super::*;
use crate::identity::{Identity, NodeId};
use crate::names::{OperatorName, ServiceName, Username};

pub(crate) fn label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn node_address() -> impl Strategy<Value = NodeAddress> {
    (any::<bool>(), socket_addr()).prop_map(|(quic, addr)| NodeAddress {
        transport: if quic {
            Transport::Quic
        } else {
            Transport::Tcp
        },
        addr,
    })
}

/// Any valid record body.
pub(crate) fn record() -> impl Strategy<Value = Record> {
    let relay = proptest::option::of((any::<u32>(), proptest::option::of(label()))).prop_map(|r| {
        r.map(|(max_circuits, op)| RelayCapability {
            max_circuits,
            operator: op.map(|o| o.parse::<OperatorName>().unwrap()),
        })
    });
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(node_address(), 0..=body::MAX_ADDRESSES),
            relay,
            proptest::collection::vec(any::<[u8; 32]>(), 0..=body::MAX_VIA),
        )
            .prop_map(|(seq, expires_at, addresses, relay, via)| {
                Record::Node(NodeRecord {
                    seq,
                    expires_at,
                    addresses,
                    relay,
                    via: via.into_iter().map(NodeId::from_bytes).collect(),
                })
            }),
        (any::<u64>(), any::<u64>(), label()).prop_map(|(seq, expires_at, s)| {
            Record::Service(ServiceRecord {
                seq,
                expires_at,
                service: s.parse::<ServiceName>().unwrap(),
            })
        }),
        (any::<u64>(), any::<u64>(), label()).prop_map(|(seq, expires_at, u)| {
            Record::NameClaim(NameClaim {
                seq,
                expires_at,
                username: u.parse::<Username>().unwrap(),
            })
        }),
    ]
}

pub(crate) fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

proptest! {
    #[test]
    fn every_record_round_trips(seed in any::<[u8; 32]>(), record in record()) {
        let id = Identity::from_secret_bytes(&seed);
        let signed = SignedRecord::sign(&id, record.clone()).unwrap();
        let decoded = SignedRecord::decode(signed.as_bytes()).unwrap();
        prop_assert_eq!(decoded.record(), &record);
        prop_assert_eq!(decoded.owner(), id.node_id());
        prop_assert_eq!(decoded.as_bytes(), signed.as_bytes());
        prop_assert_eq!(decoded, signed);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(record in record(), bit in any::<prop::sample::Index>()) {
        let signed = SignedRecord::sign(&identity(1), record).unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(SignedRecord::decode(&bytes).is_err());
    }

    #[test]
    fn record_under_another_signer_is_rejected(record in record(), a in 1u8..100, b in 100u8..200) {
        let signed = SignedRecord::sign(&identity(a), record).unwrap();
        let mut bytes = signed.as_bytes().to_vec();
        bytes[2..34].copy_from_slice(&identity(b).public_key().to_bytes());
        prop_assert!(matches!(SignedRecord::decode(&bytes), Err(DecodeError::BadSignature)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let _ = SignedRecord::decode(&bytes);
    }

    #[test]
    fn freshness_window(expires_at in any::<u64>(), now in any::<u64>()) {
        let policy = Freshness::default();
        let signed = SignedRecord::sign(&identity(3), Record::NameClaim(NameClaim {
            seq: 0,
            expires_at,
            username: "bob".parse().unwrap(),
        })).unwrap();
        let ok = expires_at > now
            && expires_at <= now.saturating_add(policy.max_lifetime_secs + policy.max_skew_secs);
        prop_assert_eq!(policy.check(&signed, now).is_ok(), ok);
    }
}

#[test]
fn kind_byte_is_bound_by_the_signature() {
    let id = identity(9);
    // A service and a name claim with the same body bytes: swapping the kind byte must not
    // turn one into the other.
    let signed = SignedRecord::sign(
        &id,
        Record::Service(ServiceRecord {
            seq: 1,
            expires_at: 100,
            service: "ssh".parse().unwrap(),
        }),
    )
    .unwrap();
    let mut bytes = signed.as_bytes().to_vec();
    bytes[1] = RecordKind::NameClaim as u8;
    assert!(matches!(
        SignedRecord::decode(&bytes),
        Err(DecodeError::BadSignature)
    ));
}

fn forge(id: &Identity, kind: RecordKind, body: &[u8]) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION, kind as u8];
    out.extend_from_slice(&id.public_key().to_bytes());
    out.extend_from_slice(&id.sign(&signed_message(kind, body)));
    out.extend_from_slice(body);
    out
}

#[test]
fn signed_but_malformed_bodies_are_rejected() {
    let id = identity(4);
    let claim = NameClaim {
        seq: 1,
        expires_at: 100,
        username: "alice".parse().unwrap(),
    };
    let mut body = postcard::to_allocvec(&claim).unwrap();
    body.push(0);
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::NameClaim, &body)),
        Err(DecodeError::NonCanonical)
    ));

    // seq = 1 written as an over-long varint (0x81 0x00) decodes to the same value.
    let mut overlong = vec![0x81, 0x00];
    overlong.extend_from_slice(&postcard::to_allocvec(&claim).unwrap()[1..]);
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::NameClaim, &overlong)),
        Err(DecodeError::Body(_) | DecodeError::NonCanonical)
    ));

    let bad_name = postcard::to_allocvec(&(1u64, 100u64, "Alice")).unwrap();
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::NameClaim, &bad_name)),
        Err(DecodeError::Body(_))
    ));

    let addr = NodeAddress {
        transport: Transport::Quic,
        addr: "[::1]:4433".parse().unwrap(),
    };
    let too_many = NodeRecord {
        seq: 1,
        expires_at: 100,
        addresses: vec![addr; body::MAX_ADDRESSES + 1],
        relay: None,
        via: Vec::new(),
    };
    assert!(matches!(
        SignedRecord::sign(&id, Record::Node(too_many.clone())),
        Err(EncodeError::Malformed(_))
    ));
    let body = encode_body(&Record::Node(too_many)).unwrap();
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::Node, &body)),
        Err(DecodeError::Malformed(_))
    ));

    let too_many_via = NodeRecord {
        seq: 1,
        expires_at: 100,
        addresses: vec![addr],
        relay: None,
        via: vec![NodeId::from_bytes([7; 32]); body::MAX_VIA + 1],
    };
    let body = encode_body(&Record::Node(too_many_via)).unwrap();
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::Node, &body)),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn via_is_a_tail_only_when_it_names_a_relay() {
    let id = identity(9);
    let addr = NodeAddress {
        transport: Transport::Quic,
        addr: "192.0.2.1:4433".parse().unwrap(),
    };
    let plain = NodeRecord {
        seq: 1,
        expires_at: 100,
        addresses: vec![addr],
        relay: None,
        via: Vec::new(),
    };
    let head = encode_body(&Record::Node(plain.clone())).unwrap();
    // A record without relays is byte for byte what nodes before `via` wrote.
    let old = postcard::to_allocvec(&(1u64, 100u64, vec![addr], None::<RelayCapability>)).unwrap();
    assert_eq!(head, old);
    let decoded = SignedRecord::decode(&forge(&id, RecordKind::Node, &head)).unwrap();
    assert_eq!(decoded.record(), &Record::Node(plain));
    // An empty list written out is a second encoding, so it is refused.
    let mut empty_tail = head.clone();
    empty_tail.push(0);
    assert!(matches!(
        SignedRecord::decode(&forge(&id, RecordKind::Node, &empty_tail)),
        Err(DecodeError::NonCanonical)
    ));
    let mut junk = head;
    junk.extend([1, 2, 3]);
    assert!(SignedRecord::decode(&forge(&id, RecordKind::Node, &junk)).is_err());
}

#[test]
fn header_errors_name_the_problem() {
    let signed = SignedRecord::sign(&identity(5), record_fixture()).unwrap();
    let bytes = signed.as_bytes();
    assert!(matches!(
        SignedRecord::decode(&bytes[..HEADER_LEN - 1]),
        Err(DecodeError::TooShort(_))
    ));
    let mut v2 = bytes.to_vec();
    v2[0] = 2;
    assert_eq!(
        SignedRecord::decode(&v2).unwrap_err().to_string(),
        "record version 2 is not supported (this node speaks 1)"
    );
    let mut k = bytes.to_vec();
    k[1] = 77;
    assert!(matches!(
        SignedRecord::decode(&k),
        Err(DecodeError::UnknownKind(77))
    ));
    assert!(matches!(
        SignedRecord::decode(&vec![1; MAX_RECORD_LEN + 1]),
        Err(DecodeError::TooLong(_))
    ));
}

fn record_fixture() -> Record {
    Record::Service(ServiceRecord {
        seq: 1,
        expires_at: 1000,
        service: "web".parse().unwrap(),
    })
}

//! The relay wire formats, property by property: the datagram header, the circuit control
//! messages, the setup onion and the label table that switches labelled datagrams.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use vx6_core::Identity;
use vx6_core::relay::control::{
    ControlError, Create, Instruction, MAX_CONTROL_LEN, MAX_HOPS, MAX_REASON_LEN, Refusal, Reply,
};
use vx6_core::relay::header::{self, HEADER_LEN, Header, HeaderError, Kind, PROBE_LEN};
use vx6_core::relay::onion::{self, LAYER_OVERHEAD, OnionError, PathHop};
use vx6_core::relay::table::{DropReason, LabelTable, Target, Verdict};
use vx6_core::relay::{FlowId, Label, RelayLimits};

#[allow(clippy::disallowed_methods)] // a fixed epoch for table timestamps
fn epoch() -> Instant {
    Instant::now()
}

const KINDS: [Kind; 3] = [Kind::Data, Kind::Probe, Kind::ProbeReply];

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(KINDS.to_vec())
}

fn label() -> impl Strategy<Value = Label> {
    (1..=u32::MAX).prop_map(|v| Label::new(v).unwrap())
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop::sample::select(vec![
        Refusal::NotRelay,
        Refusal::LimitReached,
        Refusal::RateLimited,
        Refusal::NextHopUnreachable,
        Refusal::BadRequest,
    ])
}

fn limits() -> impl Strategy<Value = RelayLimits> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(c, p, i, s)| RelayLimits {
        max_circuits: c,
        max_per_peer: p,
        idle_expiry_secs: i,
        setups_per_second: s,
    })
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (label(), prop::collection::vec(limits(), 0..=MAX_HOPS))
            .prop_map(|(label, limits)| Reply::Created { label, limits }),
        // Any text, cut to the bound the way a relay cuts it.
        (refusal(), any::<u8>(), "\\PC{0,120}").prop_map(|(refusal, hop, reason)| {
            let Reply::Refused { reason, .. } = Reply::refused(refusal, &reason) else {
                unreachable!()
            };
            Reply::Refused {
                refusal,
                hop,
                reason,
            }
        }),
    ]
}

/// An address on an IPv4 or IPv6 network (no flow label or scope: the wire carries neither).
fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// A framed length prefix, version byte first for a `Create`.
fn prefix(create: bool, len: u16) -> Vec<u8> {
    let mut out = Vec::new();
    if create {
        out.push(2);
    }
    out.extend_from_slice(&len.to_be_bytes());
    out
}

proptest! {
    #[test]
    fn header_round_trips_for_every_kind_and_label(
        kind in kind(),
        raw in prop_oneof![Just(0u32), any::<u32>()],
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let label = Label::new(raw);
        let mut d = header::encode(kind, label).to_vec();
        prop_assert_eq!(d.len(), HEADER_LEN);
        prop_assert!(header::is_relay(d[0]));
        prop_assert_eq!(u32::from_be_bytes([d[1], d[2], d[3], d[4]]), raw);
        d.extend_from_slice(&payload);
        let expected = match kind {
            Kind::Data if label.is_none() => Err(HeaderError::DataWithoutLabel),
            Kind::Probe | Kind::ProbeReply if payload.len() < PROBE_LEN => {
                Err(HeaderError::Truncated)
            }
            _ => Ok(Header { kind, label }),
        };
        prop_assert_eq!(header::parse(&d), expected);
    }

    #[test]
    fn probes_round_trip(
        kind in prop::sample::select(vec![Kind::Probe, Kind::ProbeReply]),
        label in prop::option::of(label()),
        flags in any::<u8>(),
        nonce in any::<u64>(),
    ) {
        let d = header::probe(kind, label, flags, nonce);
        prop_assert_eq!(d.len(), HEADER_LEN + PROBE_LEN);
        prop_assert_eq!(header::parse(&d), Ok(Header { kind, label }));
        prop_assert_eq!(header::probe_body(&d), (flags, nonce));
    }

    #[test]
    fn parse_never_panics_and_accepts_only_the_relay_range(
        d in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        match header::parse(&d) {
            Ok(h) => {
                prop_assert!((0x10..=0x12).contains(&d[0]));
                let mut again = header::encode(h.kind, h.label).to_vec();
                again.extend_from_slice(&d[HEADER_LEN..]);
                prop_assert_eq!(&again, &d, "an accepted header is the canonical encoding");
            }
            Err(HeaderError::NotRelay) => prop_assert!(!(0x10..=0x1f).contains(&d[0])),
            Err(HeaderError::Truncated) => prop_assert!(d.len() < HEADER_LEN + PROBE_LEN),
            Err(_) => prop_assert!((0x10..=0x1f).contains(&d[0])),
        }
        if d.len() >= HEADER_LEN && !(0x10..=0x1f).contains(&d[0]) {
            prop_assert_eq!(header::parse(&d), Err(HeaderError::NotRelay));
        }
    }

    #[test]
    fn swapping_the_label_keeps_the_header_and_the_payload(
        kind in kind(),
        old in label(),
        new in label(),
        payload in prop::collection::vec(any::<u8>(), PROBE_LEN..64),
    ) {
        let mut d = header::encode(kind, Some(old)).to_vec();
        d.extend_from_slice(&payload);
        header::swap_label(&mut d, new);
        prop_assert_eq!(header::parse(&d), Ok(Header { kind, label: Some(new) }));
        prop_assert_eq!(&d[HEADER_LEN..], &payload[..]);
    }

    #[test]
    fn create_round_trips_and_waits_for_the_whole_frame(
        back in label(),
        // The largest onion whose body (two varints and the bytes) stays within the bound.
        onion in prop::collection::vec(any::<u8>(), 0..=MAX_CONTROL_LEN - 8),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let c = Create { back, onion };
        let bytes = c.encode();
        prop_assert_eq!(bytes[0], 2, "the circuit stream version");
        prop_assert!(bytes.len() <= 3 + MAX_CONTROL_LEN);
        for cut in 0..bytes.len() {
            prop_assert_eq!(Create::decode(&bytes[..cut]), Ok(None));
        }
        let mut more = bytes.clone();
        more.extend_from_slice(&trailing);
        prop_assert_eq!(Create::decode(&more), Ok(Some((c, bytes.len()))));
    }

    #[test]
    fn reply_round_trips_and_waits_for_the_whole_frame(
        r in reply(),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            prop_assert_eq!(Reply::decode(&bytes[..cut]), Ok(None));
        }
        let mut more = bytes.clone();
        more.extend_from_slice(&trailing);
        prop_assert_eq!(Reply::decode(&more), Ok(Some((r, bytes.len()))));
    }

    #[test]
    fn oversize_length_prefixes_are_too_long(
        len in (MAX_CONTROL_LEN as u16 + 1)..=u16::MAX,
        rest in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let too_long = ControlError::TooLong(usize::from(len));
        let mut d = prefix(true, len);
        d.extend_from_slice(&rest);
        prop_assert_eq!(Create::decode(&d), Err(too_long.clone()));
        let mut d = prefix(false, len);
        d.extend_from_slice(&rest);
        prop_assert_eq!(Reply::decode(&d), Err(too_long));
    }

    #[test]
    fn control_decoders_never_panic(d in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(Some((c, used))) = Create::decode(&d) {
            prop_assert!(used <= d.len());
            let bytes = c.encode();
            prop_assert_eq!(Create::decode(&bytes), Ok(Some((c, bytes.len()))));
        }
        if let Ok(Some((r, used))) = Reply::decode(&d) {
            prop_assert!(used <= d.len());
            let bytes = r.encode();
            prop_assert_eq!(Reply::decode(&bytes), Ok(Some((r, bytes.len()))));
        }
        if let Ok(i) = Instruction::decode(&d) {
            prop_assert_eq!(Instruction::decode(&i.encode()), Ok(i));
        }
    }

    #[test]
    fn refusal_reasons_are_cut_to_the_bound_on_a_char_boundary(
        refusal in refusal(),
        reason in "\\PC{0,300}",
    ) {
        let Reply::Refused { reason: cut, hop, .. } = Reply::refused(refusal, &reason) else {
            unreachable!()
        };
        prop_assert_eq!(hop, 0);
        prop_assert!(cut.len() <= MAX_REASON_LEN);
        prop_assert!(reason.starts_with(&cut));
        prop_assert!(cut.len() == reason.len() || cut.len() + 4 > MAX_REASON_LEN);
    }

    #[test]
    fn instructions_round_trip(
        next in any::<[u8; 32]>(),
        addr in addr(),
        inner in prop::collection::vec(any::<u8>(), 0..256),
        flow in any::<[u8; 16]>(),
    ) {
        for i in [
            Instruction::Extend { next: vx6_core::NodeId::from_bytes(next), addr, inner: inner.clone() },
            Instruction::Deliver { flow: FlowId(flow) },
        ] {
            let mut bytes = i.encode();
            prop_assert_eq!(Instruction::decode(&bytes), Ok(i));
            bytes.push(0);
            prop_assert!(Instruction::decode(&bytes).is_err(), "bytes after the instruction");
        }
    }
}

/// What the label table holds, as the test set it up.
type Model = BTreeMap<Label, (SocketAddr, Target)>;

fn pool(n: u8) -> SocketAddr {
    SocketAddr::from(([0xfd, 0x6a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n], 4433))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn onion_opens_hop_by_hop_and_only_by_its_recipient(
        relays in 1usize..=4,
        seed in any::<u64>(),
        flow in any::<[u8; 16]>(),
        addrs in prop::collection::vec(addr(), 5),
        flip in any::<prop::sample::Index>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // The relays in path order, then the end.
        let ids: Vec<Identity> = (0..=relays).map(|_| Identity::generate(&mut rng)).collect();
        let hops: Vec<PathHop> = ids
            .iter()
            .zip(&addrs)
            .map(|(id, &addr)| PathHop { node: id.node_id(), key: id.public_key(), addr })
            .collect();
        let mut layer = onion::wrap(&mut rng, &hops[..relays], &hops[relays], FlowId(flow));
        for (i, id) in ids.iter().enumerate() {
            for (j, other) in ids.iter().enumerate() {
                if j != i {
                    prop_assert_eq!(
                        onion::open(other, &layer),
                        Err(OnionError::Unsealed),
                        "node {} opened the layer of node {}", j, i
                    );
                }
            }
            let mut tampered = layer.clone();
            tampered[flip.index(layer.len())] ^= 1;
            prop_assert_eq!(onion::open(id, &tampered), Err(OnionError::Unsealed));
            let plain = onion::open(id, &layer).expect("its own layer opens");
            prop_assert_eq!(plain.len() + LAYER_OVERHEAD, layer.len());
            match Instruction::decode(&plain).expect("an instruction") {
                Instruction::Extend { next, addr, inner } => {
                    prop_assert!(i < relays, "the end is told to extend");
                    prop_assert_eq!(next, hops[i + 1].node);
                    prop_assert_eq!(addr, hops[i + 1].addr);
                    layer = inner;
                }
                Instruction::Deliver { flow: got } => {
                    prop_assert_eq!(i, relays, "relay {} is told it is the end", i);
                    prop_assert_eq!(got, FlowId(flow));
                }
            }
        }
    }

    #[test]
    fn a_label_forwards_only_from_its_bound_address(
        seed in any::<u64>(),
        // Entries: the bound address (from a pool of 4) and a forward (label) or local target.
        entries in prop::collection::vec((0u8..4, prop::option::of(label()), any::<u64>()), 1..8),
        datagrams in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..4, kind(), prop::collection::vec(any::<u8>(), 0..32), any::<bool>()),
            1..32,
        ),
    ) {
        let now = epoch();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut table = LabelTable::default();
        let mut model = Model::new();
        for (bound, out, key) in entries {
            let target = match out {
                Some(label) => Target::Forward { addr: pool(9), label },
                None => Target::Local(key),
            };
            let l = table.allocate(now, &mut rng, pool(bound), target);
            prop_assert!(model.insert(l, (pool(bound), target)).is_none());
        }
        let labels: Vec<Label> = model.keys().copied().collect();
        for (which, from, kind, mut payload, remove) in datagrams {
            let label = *which.get(&labels);
            if remove {
                prop_assert_eq!(table.remove(label).is_some(), model.remove(&label).is_some());
            }
            payload.resize(payload.len().max(PROBE_LEN), 0);
            let mut d = header::encode(kind, Some(label)).to_vec();
            d.extend_from_slice(&payload);
            let before = table.get(label).map(|e| (e.packets, e.bytes));
            let verdict = table.switch(now, pool(from), &mut d);
            let expected = match model.get(&label) {
                None => Verdict::Drop(DropReason::UnknownLabel),
                Some(&(bound, _)) if bound != pool(from) => Verdict::Drop(DropReason::WrongSource),
                Some(&(_, Target::Forward { addr, .. })) => Verdict::Forward(addr),
                Some(&(_, Target::Local(key))) => Verdict::Local { key, kind },
            };
            prop_assert_eq!(verdict, expected);
            let after = table.get(label).map(|e| (e.packets, e.bytes));
            match verdict {
                Verdict::Forward(_) => {
                    let Some(&(_, Target::Forward { label: out, .. })) = model.get(&label) else {
                        unreachable!()
                    };
                    prop_assert_eq!(header::parse(&d), Ok(Header { kind, label: Some(out) }));
                    prop_assert_eq!(&d[HEADER_LEN..], &payload[..], "the payload is never touched");
                }
                _ => prop_assert_eq!(header::parse(&d), Ok(Header { kind, label: Some(label) })),
            }
            // Only accepted datagrams count as the circuit's traffic.
            let accepted = matches!(verdict, Verdict::Forward(_) | Verdict::Local { .. });
            let (p, b) = before.unwrap_or_default();
            let counted = after.map(|(p2, b2)| (p2 - p, b2 - b)).unwrap_or_default();
            let expected_count = if accepted { (1, d.len() as u64) } else { (0, 0) };
            prop_assert_eq!(counted, expected_count);
        }
        prop_assert_eq!(table.len(), model.len());
    }

    #[test]
    fn allocated_labels_are_never_zero_and_unique(
        // Values the RNG returns first: mostly zero and repeats, which the table must skip.
        script in prop::collection::vec(prop_oneof![Just(0u32), 0u32..4], 0..64),
        seed in any::<u64>(),
        n in 1usize..200,
    ) {
        let now = epoch();
        let mut rng = Scripted { script: script.into_iter(), rest: ChaCha20Rng::seed_from_u64(seed) };
        let mut table = LabelTable::default();
        let mut seen = BTreeSet::new();
        for i in 0..n {
            let bound = pool((i % 4) as u8);
            let l = table.allocate(now, &mut rng, bound, Target::Local(i as u64));
            prop_assert_ne!(l.get(), 0);
            prop_assert!(seen.insert(l), "label {} handed out twice", l);
            prop_assert_eq!(table.get(l).map(|e| (e.bound, e.target)), Some((bound, Target::Local(i as u64))));
        }
        prop_assert_eq!(table.len(), n);
        // A removed label is unknown at once, and the others are untouched.
        let gone = *seen.iter().next().unwrap();
        prop_assert!(table.remove(gone).is_some());
        let mut d = header::encode(Kind::Data, Some(gone)).to_vec();
        prop_assert_eq!(table.switch(now, pool(0), &mut d), Verdict::Drop(DropReason::UnknownLabel));
        prop_assert_eq!(table.len(), n - 1);
    }
}

/// An RNG that returns a scripted run of values first (zeros and repeats), then random ones.
struct Scripted {
    script: std::vec::IntoIter<u32>,
    rest: ChaCha20Rng,
}

impl RngCore for Scripted {
    fn next_u32(&mut self) -> u32 {
        self.script.next().unwrap_or_else(|| self.rest.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u32()) << 32 | u64::from(self.next_u32())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            let v = self.next_u32().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[test]
fn every_first_byte_outside_0x10_to_0x1f_is_not_relay() {
    for first in 0..=u8::MAX {
        let d = [first, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let relay = (0x10..=0x1f).contains(&first);
        assert_eq!(header::is_relay(first), relay, "{first:#04x}");
        if !relay {
            assert_eq!(
                header::parse(&d),
                Err(HeaderError::NotRelay),
                "{first:#04x}"
            );
        } else {
            assert_ne!(
                header::parse(&d),
                Err(HeaderError::NotRelay),
                "{first:#04x}"
            );
        }
    }
}

#[test]
fn quic_fixed_bit_is_never_set_in_an_encoded_header() {
    // Every kind and label: the first byte does not depend on the label, but check a spread.
    for kind in KINDS {
        for raw in [0, 1, 0xff, 0x4040_4040, 0x8000_0000, u32::MAX] {
            let first = header::encode(kind, Label::new(raw))[0];
            assert_eq!(first & 0x40, 0, "{kind:?} {raw:#x}");
            assert!(header::is_relay(first));
            let probe = header::probe(kind, Label::new(raw), 0xff, u64::MAX);
            assert_eq!(probe[0] & 0x40, 0);
        }
    }
}

#[test]
fn control_messages_past_their_bounds_are_refused() {
    // A reply naming more relays than a circuit has, and a reason past the bound, built by hand
    // (the encoders do not check bounds: the decoders must).
    let many = Reply::Created {
        label: Label::new(1).unwrap(),
        limits: vec![RelayLimits::default(); MAX_HOPS + 1],
    };
    assert!(matches!(
        Reply::decode(&many.encode()),
        Err(ControlError::Malformed(_))
    ));
    let long = Reply::Refused {
        refusal: Refusal::BadRequest,
        hop: 0,
        reason: "x".repeat(MAX_REASON_LEN + 1),
    };
    assert!(matches!(
        Reply::decode(&long.encode()),
        Err(ControlError::Malformed(_))
    ));
    // An onion too large for one message: its frame says so.
    let big = Create {
        back: Label::new(1).unwrap(),
        onion: vec![0; MAX_CONTROL_LEN],
    };
    assert!(matches!(
        Create::decode(&big.encode()),
        Err(ControlError::TooLong(n)) if n > MAX_CONTROL_LEN
    ));
    // Not a circuit stream at all.
    assert_eq!(Create::decode(&[1, 0, 0]), Err(ControlError::Version(1)));
    assert_eq!(
        onion::open(
            &Identity::from_secret_bytes(&[1; 32]),
            &[0; LAYER_OVERHEAD - 1]
        ),
        Err(OnionError::Truncated)
    );
}

proptest! {
    /// An observe probe's answer carries the address it came from and is no larger than the
    /// probe; a plain probe's answer carries none; a punch request names its address.
    #[test]
    fn observed_addresses_ride_probe_answers_without_amplification(
        nonce in any::<u64>(),
        v4 in any::<bool>(),
        ip in any::<[u8; 16]>(),
        port in 1u16..,
    ) {
        let addr: SocketAddr = if v4 {
            SocketAddr::from(([ip[0] | 1, ip[1], ip[2], ip[3]], port))
        } else {
            let mut a = ip;
            a[0] |= 0x20;
            SocketAddr::from((a, port))
        };
        let probe = header::observe_probe(nonce);
        let answer = header::probe_answer(&probe, addr);
        prop_assert!(answer.len() <= probe.len());
        prop_assert_eq!(header::observed(&answer), Some(addr));
        prop_assert_eq!(header::probe_body(&answer).1, nonce);
        let plain = header::probe(Kind::Probe, None, 0, nonce);
        let answer = header::probe_answer(&plain, addr);
        prop_assert_eq!(answer.len(), plain.len());
        prop_assert_eq!(header::observed(&answer), None);
        // An observe flag on a probe too short to carry the answer gets the plain answer.
        let short = header::probe(Kind::Probe, None, header::PROBE_OBSERVE, nonce);
        prop_assert_eq!(header::probe_answer(&short, addr).len(), short.len());
        for flags in [0, header::PUNCH_SPRAY_ME, header::PUNCH_OPEN] {
            for (kind, body) in [
                (Kind::Probe, header::punch_request(nonce, addr, flags)),
                (Kind::ProbeReply, header::punch_answer(nonce, addr, flags)),
            ] {
                let mut punch = header::encode(kind, None).to_vec();
                punch.extend_from_slice(&body);
                prop_assert_eq!(header::parse(&punch).map(|h| h.kind), Ok(kind));
                prop_assert_eq!(header::observed(&punch), Some(addr));
                prop_assert_eq!(header::probe_body(&punch), (header::PROBE_PUNCH, nonce));
                // Without flags, a request is byte for byte one from before they existed.
                prop_assert_eq!(header::punch_flags(&punch), flags);
                prop_assert_eq!(punch.len() == header::OBSERVE_PROBE_LEN, flags == 0);
            }
        }
    }
}

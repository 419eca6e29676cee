//! Arbitrary bytes as a datagram on the relay data plane: the header parser must reject or accept
//! cleanly, an accepted header is canonical (encoding its kind and label gives back the very
//! same bytes), and a relay's label swap keeps it a valid header with only the label changed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vx6_core::relay::Label;
use vx6_core::relay::header::{self, HEADER_LEN, Header, Kind, PROBE_LEN};

fuzz_target!(|data: &[u8]| {
    let parsed = header::parse(data);
    if let Some(&first) = data.first() {
        assert!(parsed.is_err() || header::is_relay(first));
        // QUIC sets the fixed bit in every packet; a relay datagram never does.
        assert!(!header::is_relay(first) || first & 0x40 == 0);
    }
    let Ok(h) = parsed else {
        return;
    };
    assert!(h.kind != Kind::Data || h.label.is_some());
    let mut again = header::encode(h.kind, h.label).to_vec();
    again.extend_from_slice(&data[HEADER_LEN..]);
    assert_eq!(again, data, "an accepted header is the canonical encoding");
    assert_eq!(header::parse(&again), Ok(h));
    if h.kind != Kind::Data {
        let (flags, nonce) = header::probe_body(data);
        assert_eq!(
            header::probe(h.kind, h.label, flags, nonce),
            &data[..HEADER_LEN + PROBE_LEN]
        );
        // The answer to it is never larger than it (no amplification), and the address an
        // answer carries reads back as what was put in.
        let from: std::net::SocketAddr = if nonce % 2 == 0 {
            "[2001:db8::7]:4433".parse().unwrap()
        } else {
            "203.0.113.9:61000".parse().unwrap()
        };
        let answer = header::probe_answer(data, from);
        assert!(answer.len() <= data.len());
        if flags & header::PROBE_OBSERVE != 0 && data.len() >= header::OBSERVE_PROBE_LEN {
            assert_eq!(header::observed(&answer), Some(from));
        }
        // A dial-back is never larger than the probe that asked for it.
        if header::wants_dial_back(data) {
            assert!(answer.len() + header::dial_back(nonce).len() <= data.len());
        }
        // Whatever an arriving reply says, reading its address never panics.
        let flags = header::punch_flags(data);
        // A punch request or answer naming that address (and those flags) reads back so.
        if let Some(at) = header::observed(data) {
            for body in [
                header::punch_request(nonce, at, flags),
                header::punch_answer(nonce, at, flags),
            ] {
                let mut d = header::encode(h.kind, h.label).to_vec();
                d.extend_from_slice(&body);
                assert_eq!(header::observed(&d), Some(at));
                assert_eq!(header::punch_flags(&d), flags);
                assert_eq!(header::probe_body(&d), (header::PROBE_PUNCH, nonce));
            }
        }
    }
    // A relay swaps in the label the next hop chose: here one drawn from the datagram's tail.
    let tail: [u8; 4] = data[data.len() - 4..].try_into().expect("4 bytes");
    let label =
        Label::new(u32::from_be_bytes(tail).rotate_left(7)).unwrap_or(Label::new(1).unwrap());
    let mut swapped = data.to_vec();
    header::swap_label(&mut swapped, label);
    assert_eq!(
        header::parse(&swapped),
        Ok(Header {
            kind: h.kind,
            label: Some(label)
        })
    );
    assert_eq!(swapped[0], data[0]);
    assert_eq!(
        &swapped[HEADER_LEN..],
        &data[HEADER_LEN..],
        "a relay never touches the payload"
    );
});

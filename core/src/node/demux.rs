//! What a datagram on the node's one UDP port is, told by its first byte (docs/PROTOCOL.md,
//! "One port"): QUIC packets keep QUIC's fixed bit (0x40) set, since VX6 endpoints never grease
//! it; VX6's own datagrams have it clear and a tag of their own.

use crate::dht::datagram::TAG as DHT_TAG;

/// The kinds of datagram the port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DatagramClass {
    /// A QUIC packet, for the endpoint.
    Quic,
    /// A signed DHT datagram.
    Dht,
    /// A relay datagram (circuit data or a probe).
    Relay,
    /// Nothing VX6 speaks (empty, or an unassigned tag): dropped and counted.
    Unknown,
}

pub(super) fn classify(datagram: &[u8]) -> DatagramClass {
    match datagram.first() {
        Some(b) if b & 0x40 != 0 => DatagramClass::Quic,
        Some(&DHT_TAG) => DatagramClass::Dht,
        Some(b) if crate::relay::header::is_relay(*b) => DatagramClass::Relay,
        _ => DatagramClass::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_has_one_class() {
        for b in 0..=255u8 {
            let class = classify(&[b, 0, 0]);
            let expected = if b & 0x40 != 0 {
                DatagramClass::Quic
            } else if b == DHT_TAG {
                DatagramClass::Dht
            } else if b & 0xf0 == 0x10 {
                DatagramClass::Relay
            } else {
                DatagramClass::Unknown
            };
            assert_eq!(class, expected, "{b:#04x}");
        }
        assert_eq!(classify(&[]), DatagramClass::Unknown);
    }
}

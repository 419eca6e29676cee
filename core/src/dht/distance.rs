//! XOR distance in the 256-bit id space.

use crate::identity::NodeId;

/// `a XOR b`, ordered as a 256-bit big-endian number: smaller is closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// The distance between two ids.
    pub fn between(a: &NodeId, b: &NodeId) -> Self {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let mut d = [0u8; 32];
        for i in 0..32 {
            d[i] = a[i] ^ b[i];
        }
        Self(d)
    }

    /// Number of leading zero bits (256 for distance zero). Bucket `i` holds the ids whose
    /// distance from the local id has exactly `i` leading zeros.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for byte in self.0 {
            if byte == 0 {
                n += 8;
            } else {
                return n + byte.leading_zeros();
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn xor_metric(a in any::<[u8; 32]>(), b in any::<[u8; 32]>(), c in any::<[u8; 32]>()) {
            let (a, b, c) = (NodeId::from_bytes(a), NodeId::from_bytes(b), NodeId::from_bytes(c));
            prop_assert_eq!(Distance::between(&a, &b), Distance::between(&b, &a));
            prop_assert_eq!(Distance::between(&a, &a), Distance([0; 32]));
            // Unidirectional: for a fixed target, distinct ids have distinct distances.
            if b != c {
                prop_assert_ne!(Distance::between(&a, &b), Distance::between(&a, &c));
            }
        }
    }

    #[test]
    fn leading_zeros_counts_bits() {
        let mut d = [0u8; 32];
        assert_eq!(Distance(d).leading_zeros(), 256);
        d[0] = 0x80;
        assert_eq!(Distance(d).leading_zeros(), 0);
        d[0] = 0;
        d[1] = 0x01;
        assert_eq!(Distance(d).leading_zeros(), 15);
    }
}

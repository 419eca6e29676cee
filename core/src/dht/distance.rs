//! XOR distance in the 256-bit id space.

use crate::identity::NodeId;

/// `a XOR b`, ordered as a 256-bit big-endian number: smaller is closer.
///
/// Held as four big-endian 64-bit words so that comparing two distances (what lookups and
/// routing tables do most) is four integer comparisons rather than a byte-wise `memcmp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Distance([u64; 4]);

impl Distance {
    /// The distance between two ids.
    pub fn between(a: &NodeId, b: &NodeId) -> Self {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let word = |i: usize| {
            let x = u64::from_be_bytes(a[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let y = u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            x ^ y
        };
        Self([word(0), word(1), word(2), word(3)])
    }

    /// The distance as 32 big-endian bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Number of leading zero bits (256 for distance zero). Bucket `i` holds the ids whose
    /// distance from the local id has exactly `i` leading zeros.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for w in self.0 {
            if w != 0 {
                return n + w.leading_zeros();
            }
            n += 64;
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
            prop_assert_eq!(Distance::between(&a, &a), Distance([0; 4]));
            // Ordered as the 256-bit number the bytes spell.
            let (x, y) = (Distance::between(&a, &b), Distance::between(&a, &c));
            prop_assert_eq!(x.cmp(&y), x.to_bytes().cmp(&y.to_bytes()));
            // Unidirectional: for a fixed target, distinct ids have distinct distances.
            if b != c {
                prop_assert_ne!(Distance::between(&a, &b), Distance::between(&a, &c));
            }
        }
    }

    #[test]
    fn leading_zeros_counts_bits() {
        let zero = NodeId::from_bytes([0; 32]);
        let at = |d: [u8; 32]| Distance::between(&zero, &NodeId::from_bytes(d)).leading_zeros();
        let mut d = [0u8; 32];
        assert_eq!(at(d), 256);
        d[0] = 0x80;
        assert_eq!(at(d), 0);
        d[0] = 0;
        d[1] = 0x01;
        assert_eq!(at(d), 15);
        d[1] = 0;
        d[9] = 0x10;
        assert_eq!(at(d), 75);
    }
}

//! The label table: forwarding, and the address binding that stops injection.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use vx6_core::relay::Label;
use vx6_core::relay::header::{self, Kind};
use vx6_core::relay::table::{DropReason, LabelTable, Target, Verdict};

#[test]
fn forwards_only_from_the_bound_address() {
    let now = Instant::now();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut t = LabelTable::default();
    let prev: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
    let next: SocketAddr = "[2001:db8::2]:2".parse().unwrap();
    let out = Label::new(42).unwrap();
    let l = t.allocate(
        now,
        &mut rng,
        prev,
        Target::Forward {
            addr: next,
            label: out,
        },
    );
    let mut d = header::encode(Kind::Data, Some(l)).to_vec();
    d.extend_from_slice(b"ciphertext");
    let mut spoofed = d.clone();
    assert_eq!(t.switch(now, prev, &mut d), Verdict::Forward(next));
    assert_eq!(header::parse(&d).unwrap().label, Some(out));
    assert_eq!(&d[5..], b"ciphertext", "the payload is never touched");
    let stranger: SocketAddr = "[2001:db8::3]:1".parse().unwrap();
    assert_eq!(
        t.switch(now, stranger, &mut spoofed),
        Verdict::Drop(DropReason::WrongSource)
    );
    assert_eq!(
        t.get(l).unwrap().packets,
        1,
        "a spoofed datagram is not counted as traffic"
    );
    t.remove(l);
    assert_eq!(
        t.switch(now, prev, &mut spoofed),
        Verdict::Drop(DropReason::UnknownLabel)
    );
    assert_eq!(
        t.switch(now, prev, &mut [0x10, 0]),
        Verdict::Drop(DropReason::Malformed)
    );
}

/// Label 1 marks a spliced circuit's setup (`header::STREAM_LABEL`): a random source that
/// draws it (and 0) is drawn again, so no datagram circuit's setup reads as a spliced one.
#[test]
fn no_datagram_circuit_gets_the_stream_label() {
    struct Drawn(Vec<u32>);
    impl rand_core::RngCore for Drawn {
        fn next_u32(&mut self) -> u32 {
            self.0.remove(0)
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.next_u32())
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(0);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            dest.fill(0);
            Ok(())
        }
    }
    let mut t = LabelTable::default();
    let addr: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
    let target = Target::Forward {
        addr,
        label: Label::new(9).unwrap(),
    };
    let l = t.allocate(Instant::now(), &mut Drawn(vec![1, 0, 1, 7]), addr, target);
    assert_eq!(l, Label::new(7).unwrap());
    assert_ne!(l, header::STREAM_LABEL);
}

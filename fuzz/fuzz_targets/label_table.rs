//! Arbitrary datagrams from three sources switched by a relay's label table holding a few
//! circuits, each bound to one of the sources: nothing may panic, and every verdict is the one a
//! plain model of the table predicts, so a datagram is forwarded (its label swapped, its payload
//! untouched) only when it comes from the address its label is bound to.
//!
//! Input: a seed byte for the labels, then records of `selector | length | bytes`. The selector
//! chooses the source (bits 0-1), whether to overwrite the datagram's label with one of the
//! table's (bits 2-4; a fuzzer cannot guess random labels), and whether to remove that label
//! from the table first (bit 7).
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use vx6_core::relay::Label;
use vx6_core::relay::header::{self, HEADER_LEN};
use vx6_core::relay::table::{DropReason, LabelTable, Target, Verdict};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([0xfd, 0x6a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n], 4433))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, mut rest)) = data.split_first() else {
        return;
    };
    let now = *EPOCH.get_or_init(Instant::now);
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(seed));
    let sources = [addr(1), addr(2), addr(3)];
    let next = addr(9);
    let mut table = LabelTable::default();
    let mut model: HashMap<Label, (SocketAddr, Target)> = HashMap::new();
    let entries = [
        (
            sources[0],
            Target::Forward {
                addr: next,
                label: Label::new(0x0a0b_0c0d).unwrap(),
            },
        ),
        (
            sources[1],
            Target::Forward {
                addr: sources[0],
                label: Label::new(1).unwrap(),
            },
        ),
        (sources[1], Target::Local(7)),
        (sources[2], Target::Local(8)),
    ];
    let mut labels = Vec::new();
    for (bound, target) in entries {
        let label = table.allocate(now, &mut rng, bound, target);
        assert!(
            model.insert(label, (bound, target)).is_none(),
            "labels are unique"
        );
        labels.push(label);
    }
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let mut datagram = tail[..len].to_vec();
        rest = &tail[len..];
        let from = sources[usize::from(selector & 3) % sources.len()];
        let choice = usize::from((selector >> 2) & 7);
        if let Some(&label) = labels.get(choice.wrapping_sub(1)) {
            if datagram.len() >= HEADER_LEN {
                header::swap_label(&mut datagram, label);
            }
            if selector & 0x80 != 0 {
                assert_eq!(
                    table.remove(label).is_some(),
                    model.remove(&label).is_some()
                );
            }
        }
        let before = datagram.clone();
        let verdict = table.switch(now, from, &mut datagram);
        let expected = match header::parse(&before) {
            Err(_) => Verdict::Drop(DropReason::Malformed),
            Ok(h) => match h.label {
                None => Verdict::Unlabelled(h.kind),
                Some(label) => match model.get(&label) {
                    None => Verdict::Drop(DropReason::UnknownLabel),
                    Some(&(bound, _)) if bound != from => Verdict::Drop(DropReason::WrongSource),
                    Some(&(_, Target::Forward { addr, label: out })) => {
                        assert_eq!(header::parse(&datagram).map(|h| h.label), Ok(Some(out)));
                        Verdict::Forward(addr)
                    }
                    Some(&(_, Target::Local(key))) => Verdict::Local { key, kind: h.kind },
                },
            },
        };
        assert_eq!(verdict, expected);
        if let Verdict::Forward(_) = verdict {
            let label = header::parse(&before).unwrap().label.unwrap();
            assert_eq!(
                table.get(label).map(|e| e.bound),
                Some(from),
                "forwarded from its bound address"
            );
            assert_eq!(datagram[0], before[0]);
            assert_eq!(
                &datagram[HEADER_LEN..],
                &before[HEADER_LEN..],
                "the payload is never touched"
            );
        } else {
            assert_eq!(datagram, before, "only a forwarded datagram is rewritten");
        }
    }
    assert_eq!(table.len(), model.len());
});

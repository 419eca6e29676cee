//! The label table: where a labelled datagram goes, and from where it may come. A relay's
//! entries forward (swap the label, send to the next hop); an end's entries deliver to the
//! node itself. One lookup per datagram, no allocation: the same table can be mirrored into an
//! eBPF map (DESIGN.md §7).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rand_core::RngCore;

use super::header::{self, HeaderError, Kind, Label};

/// Where datagrams carrying a label go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To another node, with its label.
    Forward {
        /// The next node's address.
        addr: SocketAddr,
        /// The label it chose.
        label: Label,
    },
    /// To this node: the circuit with this node-local key.
    Local(u64),
}

/// One label's entry.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The only address datagrams with this label are accepted from (bound at setup).
    pub bound: SocketAddr,
    /// Where they go.
    pub target: Target,
    /// Last datagram switched (or the entry's creation).
    pub last_used: Instant,
    /// Datagrams switched.
    pub packets: u64,
    /// Bytes switched.
    pub bytes: u64,
}

/// What to do with a relay datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The label was swapped in place: send the datagram to this address.
    Forward(SocketAddr),
    /// For this node's circuit `key`.
    Local {
        /// The circuit.
        key: u64,
        /// What the datagram carries.
        kind: Kind,
    },
    /// A probe addressed to this node itself (label 0), or the reply to one.
    Unlabelled(Kind),
    /// Dropped, for this reason.
    Drop(DropReason),
}

/// Why a relay datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The header did not parse.
    Malformed,
    /// No circuit has this label.
    UnknownLabel,
    /// The label is bound to another address: an injection or hijack attempt, or a stale peer.
    WrongSource,
}

/// Labels this node has handed out.
#[derive(Debug, Default)]
pub struct LabelTable {
    entries: HashMap<Label, Entry>,
    /// Bytes of every datagram forwarded, over the table's life.
    forwarded_bytes: u64,
}

impl LabelTable {
    /// Chooses a fresh random label for `target`, accepted only from `bound`.
    pub fn allocate(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        bound: SocketAddr,
        target: Target,
    ) -> Label {
        loop {
            if let Some(label) = Label::new(rng.next_u32())
                && label != header::STREAM_LABEL
                && !self.entries.contains_key(&label)
            {
                self.entries.insert(
                    label,
                    Entry {
                        bound,
                        target,
                        last_used: now,
                        packets: 0,
                        bytes: 0,
                    },
                );
                return label;
            }
        }
    }

    /// Points an allocated label somewhere else (a relay learns the next hop's label after it
    /// allocated its own).
    pub fn retarget(&mut self, label: Label, target: Target) {
        if let Some(e) = self.entries.get_mut(&label) {
            e.target = target;
        }
    }

    /// Forgets a label.
    pub fn remove(&mut self, label: Label) -> Option<Entry> {
        self.entries.remove(&label)
    }

    /// The entry of `label`.
    pub fn get(&self, label: Label) -> Option<&Entry> {
        self.entries.get(&label)
    }

    /// Bytes of every datagram forwarded so far.
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded_bytes
    }

    /// Labels handed out.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decides what `datagram`, received from `from`, is; forwarding swaps its label in place.
    pub fn switch(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> Verdict {
        let h = match header::parse(datagram) {
            Ok(h) => h,
            Err(HeaderError::NotRelay) | Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        let Some(label) = h.label else {
            return Verdict::Unlabelled(h.kind);
        };
        let Some(e) = self.entries.get_mut(&label) else {
            return Verdict::Drop(DropReason::UnknownLabel);
        };
        if e.bound != from {
            return Verdict::Drop(DropReason::WrongSource);
        }
        e.last_used = now;
        e.packets += 1;
        e.bytes += datagram.len() as u64;
        match e.target {
            Target::Forward { addr, label } => {
                header::swap_label(datagram, label);
                self.forwarded_bytes += datagram.len() as u64;
                Verdict::Forward(addr)
            }
            Target::Local(key) => Verdict::Local { key, kind: h.kind },
        }
    }
}

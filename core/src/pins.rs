//! Keys pinned on first use: for a peer dialed by address without a NodeId, the node it turned
//! out to be is remembered, and a different key at that address later is refused (as ssh's
//! known_hosts does); likewise the node a username first resolved to. Text format, one pin per
//! line: `<socket address> <node id>` or `<username> <node id>`; `#` comments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::identity::NodeId;
use crate::names::Username;

/// Most pins held (addresses and names together); beyond it, nothing new is pinned.
pub const MAX_PINS: usize = 10_000;

/// Address → pinned node, and username → pinned node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pins: BTreeMap<SocketAddr, NodeId>,
    names: BTreeMap<Username, NodeId>,
}

/// A line of a pins file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct PinsParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

impl Pins {
    /// The node pinned for `addr`.
    pub fn get(&self, addr: &SocketAddr) -> Option<NodeId> {
        self.pins.get(addr).copied()
    }

    /// Pins `node` for `addr` unless something is pinned already or the table is full; returns
    /// whether it was added.
    pub fn insert(&mut self, addr: SocketAddr, node: NodeId) -> bool {
        if self.len() >= MAX_PINS || self.pins.contains_key(&addr) {
            return false;
        }
        self.pins.insert(addr, node);
        true
    }

    /// The node pinned for `username`.
    pub fn get_name(&self, username: &Username) -> Option<NodeId> {
        self.names.get(username).copied()
    }

    /// Pins `node` for `username`, on the same terms as [`Pins::insert`].
    pub fn insert_name(&mut self, username: Username, node: NodeId) -> bool {
        if self.len() >= MAX_PINS || self.names.contains_key(&username) {
            return false;
        }
        self.names.insert(username, node);
        true
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len() + self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut out = String::from(
            "# VX6 known peers: keys pinned on first use for peers dialed by address, and for\n\
             # usernames resolved by name. Remove a line to accept a new key for it.\n",
        );
        for (addr, node) in &self.pins {
            let _ = writeln!(out, "{addr} {node}");
        }
        for (name, node) in &self.names {
            let _ = writeln!(out, "{name} {node}");
        }
        out
    }

    /// Parses the text form; the first bad line is an error naming it.
    pub fn parse(text: &str) -> Result<Self, PinsParseError> {
        let mut pins = Pins::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem: String| PinsParseError {
                line: i + 1,
                problem,
            };
            let mut parts = line.split_whitespace();
            let (Some(key), Some(node), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(err(
                    "expected `<address> <node id>` or `<username> <node id>`".into(),
                ));
            };
            let node: NodeId = node.parse().map_err(|e| err(format!("{e}")))?;
            let twice = if let Ok(addr) = key.parse::<SocketAddr>() {
                pins.pins.insert(addr, node).is_some()
            } else {
                let name: Username = key.parse().map_err(|e| {
                    err(format!(
                        "{key:?} is neither a socket address nor a username ({e})"
                    ))
                })?;
                pins.names.insert(name, node).is_some()
            };
            if twice {
                return Err(err(format!("{key} is pinned twice")));
            }
            if pins.len() > MAX_PINS {
                return Err(err(format!("more than {MAX_PINS} pins")));
            }
        }
        Ok(pins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_round_trips(
            entries in proptest::collection::btree_map(any::<(u16, [u8; 16])>(), any::<[u8; 32]>(), 0..20),
            names in proptest::collection::btree_map("[a-z][a-z0-9]{0,15}", any::<[u8; 32]>(), 0..10),
        ) {
            let mut pins = Pins::default();
            for ((port, ip), id) in entries {
                pins.insert(SocketAddr::from((ip, port)), NodeId::from_bytes(id));
            }
            for (name, id) in names {
                pins.insert_name(name.parse().unwrap(), NodeId::from_bytes(id));
            }
            prop_assert_eq!(Pins::parse(&pins.to_text()), Ok(pins));
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = Pins::parse(&text);
        }
    }

    #[test]
    fn bad_lines_are_named() {
        let id = NodeId::from_bytes([1; 32]);
        let text = format!("# c\n[::1]:1 {id}\nnonsense\n");
        assert_eq!(Pins::parse(&text).unwrap_err().line, 3);
        let twice = format!("[::1]:1 {id}\n[::1]:1 {id}\n");
        assert!(Pins::parse(&twice).unwrap_err().problem.contains("twice"));
        let bad_name = format!("Not_A_Name {id}\n");
        assert!(
            Pins::parse(&bad_name)
                .unwrap_err()
                .problem
                .contains("neither a socket address nor a username")
        );
        let names = format!("alice {id}\n");
        let pins = Pins::parse(&names).unwrap();
        assert_eq!(pins.get_name(&"alice".parse().unwrap()), Some(id));
    }

    #[test]
    fn first_pin_wins() {
        let mut pins = Pins::default();
        let addr: SocketAddr = "[::1]:4433".parse().unwrap();
        assert!(pins.insert(addr, NodeId::from_bytes([1; 32])));
        assert!(!pins.insert(addr, NodeId::from_bytes([2; 32])));
        assert_eq!(pins.get(&addr), Some(NodeId::from_bytes([1; 32])));
    }
}

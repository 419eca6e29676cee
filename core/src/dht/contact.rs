//! A node as the DHT knows it: its id and the address it was reached at.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// A peer's id and address. The id is authenticated whenever the peer is talked to (sessions
/// verify keys); an address learned second-hand is only a hint until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Contact {
    /// The node.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// The network an address belongs to, for anti-eclipse limits: a /64 for IPv6 and a /24 for
/// IPv4. `None` for addresses that are not globally routable (loopback, link-local, private and
/// unique-local ranges): a LAN or test bed legitimately has many nodes in one such subnet.
pub fn subnet(addr: &SocketAddr) -> Option<[u8; 9]> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            let local = ip.is_private()
                || ip.is_loopback()
                || ip.is_link_local()
                || ip.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64);
            (!local).then(|| [4, o[0], o[1], o[2], 0, 0, 0, 0, 0])
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return subnet(&SocketAddr::new(IpAddr::V4(v4), addr.port()));
            }
            let s = ip.segments();
            let local = ip.is_loopback()
                || ip.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80;
            let o = ip.octets();
            (!local).then(|| [6, o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:2".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:1".parse().unwrap();
        assert_eq!(subnet(&a), subnet(&b));
        assert_ne!(subnet(&a), subnet(&c));
        assert_eq!(subnet(&"[fd6a::1]:1".parse().unwrap()), None);
        assert_eq!(subnet(&"10.1.2.3:1".parse().unwrap()), None);
        assert_eq!(
            subnet(&"198.51.100.7:1".parse().unwrap()),
            subnet(&"198.51.100.200:9".parse().unwrap())
        );
    }
}

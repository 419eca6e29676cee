//! The addresses this node publishes: what `--announce` names; else, for a wildcard listener,
//! the interface addresses peers can use (global and unique-local IPv6, IPv4 that is neither
//! loopback nor link-local); else the listen address; and, unless announced, the address
//! enough peers agree they see the node at (behind a NAT, its public mapping).

use std::net::{IpAddr, SocketAddr};

/// Addresses published per transport at most (the node record holds 8 in all).
const MAX_PUBLISHED: usize = 4;

/// Whether `ip` is worth publishing: reachable from beyond this machine and its link.
pub fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let link_local = s[0] & 0xffc0 == 0xfe80;
            let unique_local = s[0] & 0xfe00 == 0xfc00;
            let global = s[0] & 0xe000 == 0x2000;
            !v6.is_loopback()
                && !v6.is_unspecified()
                && !v6.is_multicast()
                && !link_local
                && (global || unique_local)
        }
        IpAddr::V4(v4) => {
            !v4.is_loopback()
                && !v4.is_unspecified()
                && !v4.is_link_local()
                && !v4.is_multicast()
                && !v4.is_broadcast()
        }
    }
}

/// Order of preference: global IPv6, unique-local IPv6, public IPv4, private IPv4.
fn rank(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V6(v6) if v6.segments()[0] & 0xe000 == 0x2000 => 0,
        IpAddr::V6(_) => 1,
        IpAddr::V4(v4) if !v4.is_private() => 2,
        IpAddr::V4(_) => 3,
    }
}

/// The interface addresses a wildcard listener on `listen` is reachable at (with its port);
/// IPv4 ones for an IPv6 wildcard only if the socket is `dual_stack`.
pub fn interface_addresses(listen: SocketAddr, dual_stack: bool) -> Vec<SocketAddr> {
    let ifaces = match if_addrs::get_if_addrs() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("listing the network interfaces: {e}");
            return Vec::new();
        }
    };
    let mut ips: Vec<IpAddr> = ifaces
        .iter()
        .map(|i| i.ip())
        .filter(usable)
        .filter(|ip| match (listen.is_ipv6(), ip.is_ipv6()) {
            (true, true) | (false, false) => true,
            (true, false) => dual_stack,
            (false, true) => false,
        })
        .collect();
    ips.sort_by_key(|ip| (rank(ip), *ip));
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .collect()
}

/// What to publish: `announce` if given, else `own` (interface or listen addresses) and then
/// the `observed` ones not among them, at most [`MAX_PUBLISHED`].
pub fn published(
    announce: &[SocketAddr],
    own: &[SocketAddr],
    observed: &[SocketAddr],
) -> Vec<SocketAddr> {
    if !announce.is_empty() {
        return announce.iter().copied().take(MAX_PUBLISHED).collect();
    }
    // An agreed observed address goes first: behind a NAT it is the one others can use.
    let mut out: Vec<SocketAddr> = observed.to_vec();
    for a in own {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out.truncate(MAX_PUBLISHED);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_others_can_use() {
        for (ip, ok) in [
            ("2001:db8::1", true),
            ("fd6a::1", true),
            ("fe80::1", false),
            ("::1", false),
            ("ff02::1", false),
            ("::", false),
            ("203.0.113.7", true),
            ("10.1.2.3", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
        ] {
            assert_eq!(usable(&ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn announce_wins_and_observed_comes_first() {
        let a: SocketAddr = "[2001:db8::9]:4433".parse().unwrap();
        let own: Vec<SocketAddr> = vec!["[fd6a::1]:4433".parse().unwrap()];
        let seen: Vec<SocketAddr> = vec!["203.0.113.7:40000".parse().unwrap()];
        assert_eq!(published(&[a], &own, &seen), vec![a]);
        assert_eq!(published(&[], &own, &seen), vec![seen[0], own[0]]);
        assert_eq!(published(&[], &own, &own), own);
    }
}

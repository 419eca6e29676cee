//! Hole punching when one side's NAT gives every destination a port of its own (the hard side,
//! [`super::Mapping::EndpointDependent`]) and the other's keeps one port for all: the birthday
//! approach. The hard side sends to the other's address from [`SIDE_SOCKETS`] sockets, which
//! opens as many random ports on its NAT, each admitting only that address; the other side
//! sends to [`SPRAY_PROBES`] random ports of the hard side's address from its one socket. A
//! probe that lands on an open port passes both NATs, and the two talk through that socket
//! from then on.
//!
//! A NAT that picks ports at random draws them from [`LOWEST_PORT`]..=65535 (Linux does); with
//! 256 of those 64 512 ports open, 1024 distinct probes hit one with probability
//! 1 − C(64256, 1024) / C(64512, 1024) ≈ 98% ([`hit_chance`]), and three attempts fail
//! together about once in 200 000.

/// Sockets the hard side opens for one attempt.
pub const SIDE_SOCKETS: usize = 256;
/// Random ports the other side sends to in one attempt.
pub const SPRAY_PROBES: usize = 1024;
/// The lowest port a NAT hands out (below it lie the privileged ports).
pub const LOWEST_PORT: u16 = 1024;

const PORTS: u64 = 65536 - LOWEST_PORT as u64;

/// `n` distinct ports (at most all of them) from [`LOWEST_PORT`]..=65535, in the order drawn
/// from `next`, a source of uniform random numbers.
pub fn spray_ports(n: usize, mut next: impl FnMut() -> u64) -> Vec<u16> {
    let n = n.min(PORTS as usize);
    let mut drawn = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let port = LOWEST_PORT + (next() % PORTS) as u16;
        if drawn.insert(port) {
            out.push(port);
        }
    }
    out
}

/// The chance that `probes` distinct ports, drawn at random from `range`, include one of the
/// `open` ports in it.
pub fn hit_chance(open: usize, probes: usize, range: usize) -> f64 {
    // All probes miss: each draw picks one of the ports not yet drawn, all of them closed.
    let miss = (0..probes.min(range)).fold(1.0_f64, |p, i| {
        let left = (range - i) as f64;
        p * ((left - open as f64).max(0.0) / left)
    });
    1.0 - miss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attempt_almost_always_hits() {
        let p = hit_chance(SIDE_SOCKETS, SPRAY_PROBES, PORTS as usize);
        assert!((0.98..0.99).contains(&p), "{p}");
        assert!((1.0 - p).powi(3) < 1e-5);
        assert_eq!(hit_chance(0, SPRAY_PROBES, PORTS as usize), 0.0);
        assert_eq!(hit_chance(1, PORTS as usize, PORTS as usize), 1.0);
    }
}

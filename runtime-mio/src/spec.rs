//! Parsing of `--serve`, `--forward` and `--listen` values (shared by flags and config file).

use std::net::SocketAddr;
use std::str::FromStr;

use vx6_core::ServiceName;
pub use vx6_core::destination::{Destination as ForwardTarget, parse_addr};
use vx6_core::node::Route;

/// `NAME=HOST:PORT`: offer local `HOST:PORT` as service `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSpec {
    /// Service name.
    pub name: ServiceName,
    /// Local target.
    pub target: SocketAddr,
}

/// `TARGET=LOCALADDR`: listen on `LOCALADDR`, carry each connection to `TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Where connections go.
    pub target: ForwardTarget,
    /// Local listening address.
    pub local: SocketAddr,
    /// The path kind (`--via`); the configured policy if unset.
    pub via: Option<Via>,
    /// Relays on a relayed path (`--hops`); the configured count if unset.
    pub hops: Option<u8>,
    /// Policy settings given with `--sla` (see [`vx6_core::policy`]'s text form).
    pub sla: Option<String>,
    /// The policy that manages this forward's paths, once settings made it a managed one.
    pub policy: Option<vx6_core::policy::Policy>,
}

impl ForwardSpec {
    /// How connections of forward number `i` reach the owner: under its policy if it has
    /// one, else by what was set, else `auto` over 2 relays.
    pub fn route_of(&self, i: usize) -> Route {
        match self.policy {
            Some(_) => Route::Policy(vx6_core::policy::PolicyId(i as u32)),
            None => self.route(),
        }
    }

    /// The plain route: what was set, else `auto` over 2 relays.
    pub fn route(&self) -> Route {
        let hops = self.hops.unwrap_or(vx6_core::node::DEFAULT_HOPS);
        self.via.unwrap_or(Via::Auto).route(hops)
    }
}

/// `--via`: the path a forward takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Straight to the owner.
    Direct,
    /// Through relays.
    Relay,
    /// Direct if it comes up in time, else relays.
    Auto,
}

impl FromStr for Via {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(Self::Direct),
            "relay" => Ok(Self::Relay),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "{other:?} is not a path kind: use direct, relay or auto"
            )),
        }
    }
}

impl Via {
    /// The route for this path kind with `hops` relays.
    pub fn route(self, hops: u8) -> Route {
        match self {
            Via::Direct => Route::Direct,
            Via::Relay => Route::Relay { hops },
            Via::Auto => Route::Auto { hops },
        }
    }
}

/// `--hops`: relays on a forward's circuit (1 to the most a circuit may have).
pub fn parse_hops(s: &str) -> Result<u8, String> {
    let max = vx6_core::relay::control::MAX_HOPS;
    match s.parse::<u8>() {
        Ok(n) if n >= 1 && usize::from(n) <= max => Ok(n),
        _ => Err(format!("{s:?} is not a hop count from 1 to {max}")),
    }
}

impl FromStr for ServeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, target) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not of the form NAME=HOST:PORT"))?;
        Ok(Self {
            name: name.parse().map_err(|e| format!("{s:?}: {e}"))?,
            target: parse_addr(target)?,
        })
    }
}

impl FromStr for ForwardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (target, local) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("{s:?} is not of the form TARGET=LOCALADDR"))?;
        Ok(Self {
            target: target.parse().map_err(|e| format!("{s:?}: {e}"))?,
            local: parse_addr(local)?,
            via: None,
            hops: None,
            sla: None,
            policy: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vx6_core::NodeId;

    #[test]
    fn serve_specs() {
        let s: ServeSpec = "ssh=127.0.0.1:22".parse().unwrap();
        assert_eq!(s.name.as_str(), "ssh");
        assert_eq!(s.target, "127.0.0.1:22".parse().unwrap());
        let s: ServeSpec = "web=localhost:8080".parse().unwrap();
        assert_eq!(s.target, "127.0.0.1:8080".parse().unwrap());
        assert!(
            "ssh"
                .parse::<ServeSpec>()
                .unwrap_err()
                .contains("NAME=HOST:PORT")
        );
        assert!("SSH=127.0.0.1:22".parse::<ServeSpec>().is_err());
        assert!("ssh=127.0.0.1".parse::<ServeSpec>().is_err());
    }

    #[test]
    fn forward_specs() {
        let f: ForwardSpec = "[fd6a::2]:4433/ssh=127.0.0.1:2222".parse().unwrap();
        assert_eq!(
            f.target,
            ForwardTarget::Direct {
                expected: None,
                addr: "[fd6a::2]:4433".parse().unwrap(),
                service: "ssh".parse().unwrap(),
            }
        );
        assert_eq!(f.local, "127.0.0.1:2222".parse().unwrap());
        let id = NodeId::from_bytes([3; 32]);
        let f: ForwardSpec = format!("{id}@[fd6a::2]:4433/ssh=127.0.0.1:2222")
            .parse()
            .unwrap();
        assert!(matches!(f.target, ForwardTarget::Direct { expected: Some(x), .. } if x == id));
        let f: ForwardSpec = "alice.ssh=127.0.0.1:2222".parse().unwrap();
        assert_eq!(f.target, ForwardTarget::Named("alice.ssh".parse().unwrap()));
        assert!("Alice.ssh=127.0.0.1:2222".parse::<ForwardSpec>().is_err());
        assert!(
            "bad@[::1]:1/ssh=127.0.0.1:1"
                .parse::<ForwardSpec>()
                .unwrap_err()
                .contains("node id")
        );
        assert!("[::1]:1/ssh".parse::<ForwardSpec>().is_err());
        assert!("[::1]:1/=127.0.0.1:1".parse::<ForwardSpec>().is_err());
    }
}

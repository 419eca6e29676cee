//! Parsing of `--serve`, `--forward` and `--listen` values (shared by flags and config file).

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use vx6_core::resolve::Target;
use vx6_core::{NodeId, ServiceName};

/// `NAME=HOST:PORT`: offer local `HOST:PORT` as service `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSpec {
    /// Service name.
    pub name: ServiceName,
    /// Local target.
    pub target: SocketAddr,
}

/// Where a forward leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardTarget {
    /// Direct mode: `[NODEID@]ADDR/SERVICE`.
    Direct {
        /// Node that must answer, if given (`NODEID@`).
        expected: Option<NodeId>,
        /// Where the owner listens.
        addr: SocketAddr,
        /// Which of its services.
        service: ServiceName,
    },
    /// By name: `username.service` (or its self-authenticating form), resolved per connection.
    Named(Target),
}

impl std::fmt::Display for ForwardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct {
                expected: Some(id),
                addr,
                service,
            } => write!(f, "{id}@{addr}/{service}"),
            Self::Direct { addr, service, .. } => write!(f, "{addr}/{service}"),
            Self::Named(t) => write!(f, "{t}"),
        }
    }
}

/// `TARGET=LOCALADDR`: listen on `LOCALADDR`, carry each connection to `TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    /// Where connections go.
    pub target: ForwardTarget,
    /// Local listening address.
    pub local: SocketAddr,
}

/// Parses `HOST:PORT` where HOST may be an IP, `[IPv6]` or `localhost`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an address of the form IP:PORT or [IPv6]:PORT"))
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
        let local = parse_addr(local)?;
        if !target.contains('/')
            && let Ok(name) = target.parse::<Target>()
        {
            return Ok(Self {
                target: ForwardTarget::Named(name),
                local,
            });
        }
        let (expected, rest) = match target.split_once('@') {
            Some((id, rest)) => (
                Some(
                    id.parse::<NodeId>()
                        .map_err(|e| format!("{s:?}: bad node id before '@': {e}"))?,
                ),
                rest,
            ),
            None => (None, target),
        };
        let Some((addr, service)) = rest.rsplit_once('/') else {
            return Err(format!(
                "{s:?}: target must be username.service or [IPv6]:PORT/SERVICE (optionally with NODEID@ in front)"
            ));
        };
        Ok(Self {
            target: ForwardTarget::Direct {
                expected,
                addr: parse_addr(addr)?,
                service: service.parse().map_err(|e| format!("{s:?}: {e}"))?,
            },
            local,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

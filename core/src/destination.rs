//! Where a client wants to go: a service on a node given by address (direct mode, optionally
//! with the NodeId that must answer), or `username.service` to be resolved.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::identity::NodeId;
use crate::names::ServiceName;
use crate::resolve::Target;

/// A destination that does not parse; the message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DestinationError(String);

/// Where a stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
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

impl std::fmt::Display for Destination {
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

impl FromStr for Destination {
    type Err = DestinationError;

    fn from_str(target: &str) -> Result<Self, DestinationError> {
        let err = DestinationError;
        if !target.contains('/')
            && let Ok(name) = target.parse::<Target>()
        {
            return Ok(Self::Named(name));
        }
        let (expected, rest) = match target.split_once('@') {
            Some((id, rest)) => (
                Some(
                    id.parse::<NodeId>()
                        .map_err(|e| err(format!("bad node id before '@': {e}")))?,
                ),
                rest,
            ),
            None => (None, target),
        };
        let Some((addr, service)) = rest.rsplit_once('/') else {
            return Err(err(
                "target must be username.service or [IPv6]:PORT/SERVICE (optionally with NODEID@ in front)".into(),
            ));
        };
        Ok(Self::Direct {
            expected,
            addr: parse_addr(addr).map_err(err)?,
            service: service.parse().map_err(|e| err(format!("{e}")))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn direct_destinations_round_trip(
            id in proptest::option::of(any::<[u8; 32]>()),
            ip in any::<[u8; 16]>(),
            port in any::<u16>(),
            service in "[a-z][a-z0-9]{0,15}",
        ) {
            let d = Destination::Direct {
                expected: id.map(NodeId::from_bytes),
                addr: SocketAddr::from((ip, port)),
                service: service.parse().unwrap(),
            };
            prop_assert_eq!(d.to_string().parse::<Destination>(), Ok(d));
        }

        #[test]
        fn named_destinations_round_trip(user in "[a-z][a-z0-9]{0,15}", service in "[a-z][a-z0-9]{0,15}") {
            let text = format!("{user}.{service}");
            let d: Destination = text.parse().unwrap();
            prop_assert!(matches!(d, Destination::Named(_)));
            prop_assert_eq!(d.to_string(), text);
        }

        #[test]
        fn the_parser_never_panics(text in "\\PC{0,120}") {
            let _ = text.parse::<Destination>();
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| s.parse::<Destination>().unwrap_err().to_string();
        assert!(e("nonsense").contains("username.service"));
        assert!(e("zz@[::1]:4433/ssh").contains("node id"));
        assert!(e("[::1]:99999/ssh").contains("not an address"));
    }
}

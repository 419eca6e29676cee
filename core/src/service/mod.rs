//! Services: what a node offers (name → loopback target, with an access list), and the short
//! exchange at the start of every service stream (`wire`).

pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::identity::NodeId;
use crate::names::ServiceName;
pub use wire::{OpenRequest, OpenResponse, RefusalCode};

/// Who may open streams to a service. There is no default: publishing is an explicit choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated node.
    Public,
    /// Only these nodes.
    Allow(BTreeSet<NodeId>),
}

/// Where a service's accepted streams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A TCP connection to this address (a loopback one unless non-loopback targets are
    /// enabled).
    Tcp(SocketAddr),
    /// The embedding application, which takes the streams itself.
    InProcess,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Tcp(addr) => addr.fmt(f),
            Backend::InProcess => f.write_str("in-process"),
        }
    }
}

/// One offered service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Where accepted streams go.
    pub target: Backend,
    /// Who may use it.
    pub access: Access,
}

/// Why a service could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The target is not a loopback address and non-loopback targets were not enabled.
    #[error("target {0} is not a loopback address (enable non-loopback targets explicitly)")]
    NotLoopback(SocketAddr),
    /// The name is already served.
    #[error("service {0} is already served")]
    Duplicate(ServiceName),
}

/// The services a node offers.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    services: BTreeMap<ServiceName, Service>,
    allow_non_loopback: bool,
}

/// Outcome of an access check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Hand the stream to this backend.
    Granted(Backend),
    /// Refuse with this code.
    Refused(RefusalCode),
}

impl ServiceTable {
    /// An empty table; `allow_non_loopback` lets services point at other hosts.
    pub fn new(allow_non_loopback: bool) -> Self {
        Self {
            services: BTreeMap::new(),
            allow_non_loopback,
        }
    }

    /// Offers `name`.
    pub fn add(&mut self, name: ServiceName, service: Service) -> Result<(), ServiceError> {
        if let Backend::Tcp(addr) = service.target
            && !self.allow_non_loopback
            && !addr.ip().is_loopback()
        {
            return Err(ServiceError::NotLoopback(addr));
        }
        if self.services.contains_key(&name) {
            return Err(ServiceError::Duplicate(name));
        }
        self.services.insert(name, service);
        Ok(())
    }

    /// Stops offering `name`.
    pub fn remove(&mut self, name: &ServiceName) -> Option<Service> {
        self.services.remove(name)
    }

    /// Every service, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceName, &Service)> {
        self.services.iter()
    }

    /// Decides whether `peer` may reach `name`. Unknown services and denied peers get distinct
    /// codes only where that leaks nothing: a peer that is not allowed learns "access denied"
    /// whether or not the service exists, so names cannot be probed.
    pub fn authorize(&self, peer: &NodeId, name: &ServiceName) -> Authorization {
        match self.services.get(name) {
            Some(s) => match &s.access {
                Access::Public => Authorization::Granted(s.target),
                Access::Allow(set) if set.contains(peer) => Authorization::Granted(s.target),
                Access::Allow(_) => Authorization::Refused(RefusalCode::AccessDenied),
            },
            None => Authorization::Refused(RefusalCode::AccessDenied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn access_rules() {
        let mut t = ServiceTable::new(false);
        let ssh: ServiceName = "ssh".parse().unwrap();
        let web: ServiceName = "web".parse().unwrap();
        let target: SocketAddr = "127.0.0.1:22".parse().unwrap();
        t.add(
            ssh.clone(),
            Service {
                target: Backend::Tcp(target),
                access: Access::Allow([node(1)].into()),
            },
        )
        .unwrap();
        t.add(
            web.clone(),
            Service {
                target: Backend::Tcp("[::1]:8080".parse().unwrap()),
                access: Access::Public,
            },
        )
        .unwrap();
        assert_eq!(
            t.authorize(&node(1), &ssh),
            Authorization::Granted(Backend::Tcp(target))
        );
        assert_eq!(
            t.authorize(&node(2), &ssh),
            Authorization::Refused(RefusalCode::AccessDenied)
        );
        assert!(matches!(
            t.authorize(&node(2), &web),
            Authorization::Granted(_)
        ));
        assert_eq!(
            t.authorize(&node(1), &"nope".parse().unwrap()),
            Authorization::Refused(RefusalCode::AccessDenied)
        );
    }

    #[test]
    fn non_loopback_targets_need_opt_in() {
        let remote: SocketAddr = "192.0.2.1:22".parse().unwrap();
        let svc = Service {
            target: Backend::Tcp(remote),
            access: Access::Public,
        };
        let mut strict = ServiceTable::new(false);
        assert_eq!(
            strict.add("ssh".parse().unwrap(), svc.clone()),
            Err(ServiceError::NotLoopback(remote))
        );
        let mut open = ServiceTable::new(true);
        assert!(open.add("ssh".parse().unwrap(), svc).is_ok());
    }
}

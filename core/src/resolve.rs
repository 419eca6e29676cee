//! Turning `username.service` into the node to dial, without ever picking silently between
//! keys (DESIGN.md §3).
//!
//! Anyone may claim any username, so a lookup can return several claims. The rules:
//! - a name pinned earlier (trust on first use, like ssh's known_hosts) resolves to the pinned
//!   node if it still claims the name, and is refused with the candidates listed if not;
//! - an unpinned name resolves only if exactly one key claims it (the caller then pins it);
//!   several claims are an ambiguity error that lists them;
//! - the self-authenticating form `username.service.<node id prefix>` (at least 8 base32
//!   characters, 40 bits) names the owner's key directly: exactly one claimant must match.

use std::fmt;
use std::str::FromStr;

use crate::identity::NodeId;
use crate::names::{NameError, QualifiedName};
use crate::record::{Record, SignedRecord};

/// Shortest node id prefix accepted in the self-authenticating form.
pub const MIN_PREFIX: usize = 8;

/// A name as a client writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `username.service`.
    pub name: QualifiedName,
    /// The owner's node id prefix, for the self-authenticating form.
    pub prefix: Option<String>,
}

impl FromStr for Target {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '.');
        let (Some(user), Some(service)) = (parts.next(), parts.next()) else {
            return Err(NameError::NotQualified(s.to_owned()));
        };
        let name: QualifiedName = format!("{user}.{service}").parse()?;
        let prefix = match parts.next() {
            None => None,
            Some(p)
                if p.len() >= MIN_PREFIX
                    && p.len() <= 52
                    && p.chars().all(|c| matches!(c, 'a'..='z' | '2'..='7')) =>
            {
                Some(p.to_owned())
            }
            Some(_) => {
                return Err(NameError::NotQualified(format!(
                    "{s} (a third part must be a node id prefix of at least {MIN_PREFIX} base32 characters)"
                )));
            }
        };
        Ok(Self { name, prefix })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{}.{p}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// How a name was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The pinned node still claims the name.
    Pinned(NodeId),
    /// The only claimant of an unpinned name: pin it now.
    FirstUse(NodeId),
    /// The self-authenticating form matched exactly one claimant.
    SelfAuthenticated(NodeId),
}

impl Resolved {
    /// The node to dial.
    pub fn node(&self) -> NodeId {
        match *self {
            Resolved::Pinned(n) | Resolved::FirstUse(n) | Resolved::SelfAuthenticated(n) => n,
        }
    }
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nobody claims the name (or nobody matching the prefix).
    #[error("no node claims {0}")]
    NotFound(String),
    /// Several keys claim it and nothing says which is meant.
    #[error("{name} is claimed by {} nodes: {}; use {name}.<node id prefix> to choose", candidates.len(), list(candidates))]
    Ambiguous {
        /// The name.
        name: String,
        /// Every claimant.
        candidates: Vec<NodeId>,
    },
    /// The pinned node no longer claims the name; others do.
    #[error(
        "{name} is pinned to node {pinned}, which no longer claims it (claimed now by: {}); if the owner really changed keys, remove the pin from known_peers",
        list(found)
    )]
    PinMismatch {
        /// The name.
        name: String,
        /// The pinned node.
        pinned: NodeId,
        /// Who claims it now.
        found: Vec<NodeId>,
    },
}

fn list(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "nobody".into();
    }
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Picks the node for `target` among `claims` (already verified and fresh), given the pin.
pub fn choose(
    target: &Target,
    claims: &[SignedRecord],
    pinned: Option<NodeId>,
) -> Result<Resolved, ResolveError> {
    let mut candidates: Vec<NodeId> = claims
        .iter()
        .filter(
            |r| matches!(r.record(), Record::NameClaim(c) if c.username == target.name.username),
        )
        .map(SignedRecord::owner)
        .collect();
    candidates.sort();
    candidates.dedup();
    let name = target.name.username.to_string();
    if let Some(prefix) = &target.prefix {
        let matching: Vec<NodeId> = candidates
            .into_iter()
            .filter(|id| id.to_string().starts_with(prefix.as_str()))
            .collect();
        return match matching.as_slice() {
            [one] => Ok(Resolved::SelfAuthenticated(*one)),
            [] => Err(ResolveError::NotFound(target.to_string())),
            _ => Err(ResolveError::Ambiguous {
                name: target.to_string(),
                candidates: matching,
            }),
        };
    }
    if let Some(pin) = pinned {
        return if candidates.contains(&pin) {
            Ok(Resolved::Pinned(pin))
        } else if candidates.is_empty() {
            Err(ResolveError::NotFound(name))
        } else {
            Err(ResolveError::PinMismatch {
                name,
                pinned: pin,
                found: candidates,
            })
        };
    }
    match candidates.as_slice() {
        [one] => Ok(Resolved::FirstUse(*one)),
        [] => Err(ResolveError::NotFound(name)),
        _ => Err(ResolveError::Ambiguous { name, candidates }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::record::NameClaim;
    use proptest::prelude::*;

    fn claim(seed: u8, name: &str) -> SignedRecord {
        SignedRecord::sign(
            &Identity::from_secret_bytes(&[seed; 32]),
            Record::NameClaim(NameClaim {
                seq: 1,
                expires_at: 100,
                username: name.parse().unwrap(),
            }),
        )
        .unwrap()
    }

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }

    #[test]
    fn single_claim_resolves_on_first_use() {
        let a = claim(1, "alice");
        assert_eq!(
            choose(&t("alice.ssh"), std::slice::from_ref(&a), None),
            Ok(Resolved::FirstUse(a.owner()))
        );
    }

    #[test]
    fn two_claims_are_never_picked_silently() {
        let (a, b) = (claim(1, "alice"), claim(2, "alice"));
        let err = choose(&t("alice.ssh"), &[a.clone(), b.clone()], None).unwrap_err();
        let ResolveError::Ambiguous { candidates, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(candidates.len(), 2);
        assert!(err.to_string().contains(&a.owner().to_string()));
        // A pin settles it, and so does the self-authenticating form.
        assert_eq!(
            choose(&t("alice.ssh"), &[a.clone(), b.clone()], Some(b.owner())),
            Ok(Resolved::Pinned(b.owner()))
        );
        let prefix = &a.owner().to_string()[..10];
        assert_eq!(
            choose(&t(&format!("alice.ssh.{prefix}")), &[a.clone(), b], None),
            Ok(Resolved::SelfAuthenticated(a.owner()))
        );
    }

    #[test]
    fn a_changed_key_behind_a_pinned_name_is_refused() {
        let (a, b) = (claim(1, "alice"), claim(2, "alice"));
        let err = choose(&t("alice.ssh"), std::slice::from_ref(&b), Some(a.owner())).unwrap_err();
        assert!(matches!(err, ResolveError::PinMismatch { .. }));
        assert!(err.to_string().contains("known_peers"), "{err}");
    }

    #[test]
    fn claims_for_other_names_do_not_count() {
        let m = claim(3, "mallory");
        assert_eq!(
            choose(&t("alice.ssh"), &[m], None),
            Err(ResolveError::NotFound("alice".into()))
        );
    }

    #[test]
    fn target_syntax() {
        assert_eq!(t("alice.ssh").prefix, None);
        assert_eq!(t("alice.ssh.abcdefgh").prefix.as_deref(), Some("abcdefgh"));
        assert!("alice.ssh.abc".parse::<Target>().is_err());
        assert!("alice.ssh.ABCDEFGH".parse::<Target>().is_err());
        assert!("alice".parse::<Target>().is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Target>();
        }

        #[test]
        fn resolution_never_returns_a_non_claimant(seeds in proptest::collection::vec(1u8..20, 0..6), pin in proptest::option::of(1u8..20)) {
            let claims: Vec<_> = seeds.iter().map(|s| claim(*s, "alice")).collect();
            let pinned = pin.map(|p| Identity::from_secret_bytes(&[p; 32]).node_id());
            if let Ok(r) = choose(&t("alice.ssh"), &claims, pinned) {
                prop_assert!(claims.iter().any(|c| c.owner() == r.node()));
                let distinct: std::collections::BTreeSet<_> = claims.iter().map(SignedRecord::owner).collect();
                if pinned.is_none() {
                    prop_assert_eq!(distinct.len(), 1);
                }
            }
        }
    }
}

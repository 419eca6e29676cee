//! Validated names: usernames, service names, and the `username.service` form clients type.
//!
//! Both parts share one label grammar, chosen so names are safe in DNS-like contexts, file names
//! and shell arguments: 1 to 32 characters of `a`–`z`, `0`–`9` and `-`, starting with a letter
//! and not ending with `-`. Upper case is rejected rather than folded, so that one name has one
//! spelling and signatures over it are unambiguous.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 32;

/// Why a string is not a valid name label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The label is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The label is longer than [`MAX_LABEL_LEN`].
    #[error("{what} is {len} characters long; at most {MAX_LABEL_LEN} are allowed")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The label starts with something other than a letter.
    #[error("{what} must start with a letter a-z")]
    BadStart {
        /// Which kind of name.
        what: &'static str,
    },
    /// The label ends with a hyphen.
    #[error("{what} must not end with '-'")]
    TrailingHyphen {
        /// Which kind of name.
        what: &'static str,
    },
    /// A character outside the grammar.
    #[error("{what} contains {found:?}; only a-z, 0-9 and '-' are allowed")]
    BadCharacter {
        /// Which kind of name.
        what: &'static str,
        /// The offending character.
        found: char,
    },
    /// A qualified name without the `.` between username and service.
    #[error("{0:?} is not of the form username.service")]
    NotQualified(String),
}

fn check_label(s: &str, what: &'static str) -> Result<(), NameError> {
    let Some(first) = s.chars().next() else {
        return Err(NameError::Empty { what });
    };
    if s.len() > MAX_LABEL_LEN {
        return Err(NameError::TooLong { what, len: s.len() });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
    {
        return Err(NameError::BadCharacter { what, found });
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart { what });
    }
    if s.ends_with('-') {
        return Err(NameError::TrailingHyphen { what });
    }
    Ok(())
}

macro_rules! label_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_label(s, $what)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                check_label(&s, $what)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

label_type!(
    /// The human name a key claims, the `alice` of `alice.ssh`.
    Username,
    "username"
);
label_type!(
    /// A service's name under its owner, the `ssh` of `alice.ssh`.
    ServiceName,
    "service name"
);

label_type!(
    /// The operator a relay declares, so that path selection can avoid two relays of one operator.
    OperatorName,
    "operator name"
);

/// `username.service`: what a client asks to reach.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct QualifiedName {
    /// The owner's claimed username.
    pub username: Username,
    /// The service under that owner.
    pub service: ServiceName,
}

impl FromStr for QualifiedName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, service) = s
            .split_once('.')
            .ok_or_else(|| NameError::NotQualified(s.to_owned()))?;
        Ok(Self {
            username: user.parse()?,
            service: service.parse()?,
        })
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.username, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["alice", "a", "web-1", "postgres", "x2"] {
            assert_eq!(ok.parse::<Username>().unwrap().as_str(), ok);
        }
        let q: QualifiedName = "alice.ssh".parse().unwrap();
        assert_eq!(q.username.as_str(), "alice");
        assert_eq!(q.service.as_str(), "ssh");
        assert_eq!(q.to_string(), "alice.ssh");
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let err = |s: &str| s.parse::<Username>().unwrap_err().to_string();
        assert_eq!(err(""), "username is empty");
        assert_eq!(
            err("Alice"),
            "username contains 'A'; only a-z, 0-9 and '-' are allowed"
        );
        assert_eq!(err("1alice"), "username must start with a letter a-z");
        assert_eq!(err("alice-"), "username must not end with '-'");
        assert!(err(&"a".repeat(33)).contains("33 characters"));
        assert!(err("al.ice").contains("'.'"));
        assert!(matches!(
            "alice".parse::<QualifiedName>(),
            Err(NameError::NotQualified(_))
        ));
        assert!("alice.ssh.x".parse::<QualifiedName>().is_err());
    }

    #[test]
    fn deserialization_validates() {
        let bytes = postcard::to_allocvec(&"NOT-VALID".to_string()).unwrap();
        assert!(postcard::from_bytes::<Username>(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn valid_labels_round_trip(s in "[a-z]([a-z0-9-]{0,30}[a-z0-9])?") {
            let name: ServiceName = s.parse().unwrap();
            let bytes = postcard::to_allocvec(&name).unwrap();
            prop_assert_eq!(postcard::from_bytes::<ServiceName>(&bytes).unwrap(), name);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<QualifiedName>();
        }
    }
}

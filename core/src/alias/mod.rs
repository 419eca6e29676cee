//! Hidden aliases (DESIGN.md §6b, after Tor onion services v3): a service reached by an address
//! derived from its own Ed25519 key, never the owner's node key.
//!
//! - [`address`]: the alias key and its self-authenticating address, with a checksum so that a
//!   mistyped address is refused rather than looked up.
//! - [`blind`]: the key blinded per time period, which signs the alias record and names where
//!   the DHT stores it, so that storers can neither learn the alias nor link two periods.
//! - [`record`]: the alias record, signed by the blinded key, its introduction relays sealed
//!   to those who know the address (and, optionally, to listed clients only).

pub mod address;
pub mod blind;
pub mod record;

pub use address::{AliasAddress, AliasAddressError, AliasKey};
pub use blind::{BlindedKey, Period};
pub use record::{AliasDescriptor, AliasPublication, AliasRecord, AliasRecordError, IntroPoint};

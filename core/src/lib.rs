//! The sans-IO protocol core of VX6.
//!
//! Nothing in this crate touches a socket, a file, a clock, a thread or the operating system's
//! randomness: time arrives as an argument (`unix_secs` for wall-clock validity), randomness as an
//! injected RNG, and bytes as slices. Runtimes (`vx6-runtime-mio`, and later the async ones) own
//! the I/O and feed this crate. `core/clippy.toml` enforces the rule.
//!
//! - [`alias`]: hidden aliases: alias keys and addresses, and keys blinded per period.
//! - [`dht`]: the Kademlia DHT and peer sync, independent of sessions (so the simulator can
//!   drive it directly).
//! - [`failure`]: why something failed, as a [`Cause`] every layer branches on.
//! - [`identity`]: Ed25519 node identity and the [`NodeId`] derived from it.
//! - [`names`]: validated usernames, service names and `username.service` names.
//! - [`reach`]: the addresses peers see this node at, which to trust, and its NAT mapping.
//! - [`record`]: signed, expiring, sequence-numbered records and their wire format.
//! - [`relay`]: choosing a circuit's relays for health, RTT and diversity, saying why.
//! - [`registry`]: the local registry of records, its merge rules, bounds and file format.
//! - [`node`]: the node state machine that ties sessions, services and streams together.
//! - [`pins`]: keys pinned on first use for peers dialed by address.
//! - [`policy`]: which path a forward uses: preference, SLA thresholds, hold-down.
//! - [`resolve`]: the rules that turn `username.service` into a node, without silent choices.
//! - [`session`]: authenticated sessions over QUIC or TLS/TCP, and their streams.
//! - [`service`]: offered services, access lists and the service-stream handshake.
//!
//! ```
//! use vx6_core::record::NameClaim;
//! use vx6_core::registry::{Inserted, RegistryLimits};
//! use vx6_core::{Identity, Record, Registry, SignedRecord};
//!
//! let now = 1_800_000_000; // unix seconds, read by the runtime, never by core
//! let alice = Identity::from_secret_bytes(&[7; 32]); // runtimes use Identity::generate(rng)
//! let claim = SignedRecord::sign(&alice, Record::NameClaim(NameClaim {
//!     seq: 1,
//!     expires_at: now + 3600,
//!     username: "alice".parse()?,
//! }))?;
//!
//! // What arrives from the network is decoded and verified in one step.
//! let received = SignedRecord::decode(claim.as_bytes())?;
//! assert_eq!(received.owner(), alice.node_id());
//!
//! let mut registry = Registry::new(RegistryLimits::default());
//! assert_eq!(registry.insert(received, now), Ok(Inserted::New));
//! let claimants: Vec<_> = registry.claims_for(&"alice".parse()?).collect();
//! assert_eq!(claimants.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod alias;
pub mod destination;
pub mod dht;
pub mod failure;
pub mod identity;
pub mod names;
pub mod node;
pub mod pins;
pub mod policy;
pub mod reach;
pub mod record;
pub mod registry;
pub mod relay;
pub mod resolve;
pub mod service;
pub mod session;

pub use failure::{Cause, Failure};
pub use identity::{Identity, NodeId, PublicKey};
pub use names::{OperatorName, QualifiedName, ServiceName, Username};
pub use record::{Record, RecordKind, SignedRecord};
pub use registry::Registry;

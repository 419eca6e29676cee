//! What a node learns about its own reachability (DESIGN.md §4, the reachability issue): the
//! addresses peers see it at, which of them enough peers agree on to publish, and what that
//! says about the NAT or firewall in front of it.
//!
//! - [`Observations`]: one observed address per reporting peer, the agreement rule, and the
//!   mapping [`Observations::mapping`] infers.

mod observed;

pub use observed::{MAX_REPORTERS, MIN_AGREE, Mapping, OBSERVATION_TTL, Observations};

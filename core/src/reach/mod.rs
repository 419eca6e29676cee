//! What a node learns about its own reachability (DESIGN.md §4, the reachability issue): the
//! addresses peers see it at, which of them enough peers agree on to publish, and what that
//! says about the NAT or firewall in front of it.
//!
//! - [`Observations`]: one observed address per reporting peer, the agreement rule, and the
//!   mapping [`Observations::mapping`] infers.

//! - [`DialBacks`]: whether peers' dial-backs arrive, and the [`Verdict`] that says whether
//!   the node can be dialed at all.
//! - [`birthday`]: how many ports to open and to probe when one side's NAT picks a port per
//!   destination.

pub mod birthday;
mod dial_back;
mod observed;

pub use dial_back::{DialBacks, MAX_OUTCOMES, MIN_VERDICT, OUTCOME_TTL, Verdict, dial_back_source};
pub use observed::{MAX_REPORTERS, MIN_AGREE, Mapping, OBSERVATION_TTL, Observations};

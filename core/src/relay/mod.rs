//! Relaying (DESIGN.md §6): choosing the relays of a circuit. Circuits, the relay header and
//! failover follow (the relay issue).

mod path_select;

pub use path_select::{
    Candidate, Constraints, Diversity, PassedOver, SelectError, Selection, select,
};

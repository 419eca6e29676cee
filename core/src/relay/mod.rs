//! Relaying (DESIGN.md §6): choosing a circuit's relays, the relay header of the data plane,
//! the circuit control messages and their onion, and the label table that switches datagrams.

pub mod control;
pub mod directory;
pub mod header;
pub mod onion;
mod path_select;
pub mod table;

pub use control::{FlowId, RelayLimits};
pub use header::Label;
pub use path_select::{
    Candidate, Constraints, Diversity, PassedOver, SelectError, Selection, select,
};

//! Deterministic discrete-event simulation of many VX6 nodes.
//!
//! The DHT and peer sync of `vx6-core` run unchanged, below the session layer: messages are
//! delivered after a latency drawn from a seeded model, with loss, dead nodes, churn and
//! adversaries. A session handshake is modelled as one extra round trip whenever a node talks to
//! a peer outside its warm-session pool. Same seed, same results: every run keeps a hash of
//! every delivered message, and a test checks it.
//!
//! - [`net`]: the event loop and the network model.
//! - [`scenario`]: the scenarios and what they measure.
//! - [`path_quality`]: relay path selection at scale, against the fastest and random paths.
//! - [`report`]: markdown and SVG output.

pub mod net;
pub mod path_quality;
pub mod report;
pub mod scenario;

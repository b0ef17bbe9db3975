//! Sparkplug B (Eclipse Sparkplug 3.0, namespace `spBv1.0`) as an input, the host
//! application's side: what an edge node's messages mean for the state a consumer keeps.
//!
//! ```text
//!  topic ──▶ topic::Topic::parse ──▶ group, message type, node, device
//!  payload ──▶ proto::Payload (prost) ──▶ value::read (datatype → Value)
//!                                              │
//!                 Sessions::apply ◀────────────┘  births: aliases, bdSeq, liveness
//!                        │                        data: aliases resolved, seq checked
//!                        ▼                        deaths: node and devices dead, values stale
//!               Outcome::Update (last known values, what changed, gaps, liveness)
//!                        │
//!                        ▼
//!               event::payload ──▶ the input event's payload, for the rules
//! ```
//!
//! Modules: `command` (the rebirth request, rate-limited per node), `topic` (levels), `proto`
//! (the payload's messages), `value` (datatypes), `metrics` (a birth's metrics by slot, and
//! reading a message against them), `session` (the state per edge node), `parts` (the state in
//! the store, a record per node and per device), `error` (the refusals and their dead-letter
//! reasons), `event` (an update as the payload rules see).
//!
//! [`Sessions`] is a plain state machine: no I/O, no clock (time is an argument), and a message
//! it refuses changes nothing. It serializes, for the agent's durable state.

pub mod command;
pub mod error;
pub mod event;
pub mod metrics;
mod parts;
pub mod proto;
pub mod session;
pub mod topic;
pub mod value;

pub use error::SparkplugError;
pub use metrics::{Known, Limits, Metrics};
pub use parts::ImportError;
pub use session::{Gap, Liveness, Outcome, Part, Sessions, Update};
pub use topic::{Kind, Topic};
pub use value::Value;

#[cfg(test)]
mod tests;

//! The Edgewatch engine: the pure complex-event-processing core.
//!
//! # Data flow
//!
//! ```text
//! rule files (text) ──Sandbox::compile_file──▶ Rule ──▶ RuleSet
//!                                                         │
//! Event {topic, payload, time, id} ──▶ Engine::process(event, now) ──▶ Outputs
//!                                        │  route by TopicPattern          ├─ Composite events
//!                                        │  call Rhai closures (sandboxed) └─ RuleFaults
//! ```
//!
//! # Layout
//! - [`time`]: [`Timestamp`], milliseconds since the epoch. The engine never reads a clock:
//!   time comes in as an argument, so tests and replays run on virtual time.
//! - [`topic`]: MQTT topic patterns with named levels (`sensors/{device}/temperature`).
//! - [`event`]: the decoded input [`Event`] and its identity.
//! - [`sandbox`]: the Rhai engine with its limits, and the loader of rule files.
//! - [`rule`]: compiled [`Rule`]s and the [`RuleSet`].
//! - [`engine`]: [`Engine`], which runs events through the rules.
//! - [`output`]: [`Composite`] events with deterministic ids, and [`RuleFault`]s.
//!
//! This crate does no I/O: no network, no disk, no clock, no async runtime. The agent
//! crate is the shell around it.

pub mod config;
mod context;
mod declare;
pub mod engine;
pub mod event;
mod func;
mod kinds;
mod lifecycle;
mod native;
pub mod output;
mod persist;
mod quality;
pub mod rule;
mod runtime;
pub mod sandbox;
pub mod tables;
pub mod time;
mod timers;
pub mod topic;

pub use config::EngineConfig;
pub use engine::{Engine, EngineStats};
pub use event::{Event, EventId};
pub use output::{Composite, CompositeId, KeyLimitReport, Outputs, RuleFault, Touched};
pub use persist::StateError;
pub use rule::{OnFull, Origin, Rule, RuleSet};
pub use sandbox::{CompileError, Limits, Sandbox};
pub use tables::{Table, TableError, Tables};
pub use time::Timestamp;
pub use topic::{PatternError, TopicPattern};

/// Re-exported so callers build payloads with the same `Dynamic` the rules see.
pub use rhai::{Dynamic, Map};

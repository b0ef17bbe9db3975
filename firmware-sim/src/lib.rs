//! Virtual sensor fleets for Edgewatch: many firmware-like devices publishing readings and
//! heartbeats over MQTT, as JSON or as `edgewatch_wire` frames, with faults on demand.
//!
//! # Layout
//!
//! ```text
//! FleetConfig ──Fleet::new──▶ Fleet ─────────────────────────────┐
//!   (devices, intervals,        │ schedule: min-heap of           │ pure: virtual time in,
//!    signal, seed, faults)      │ (time, device, job)             │ messages out, no I/O
//!                               ▼                                 │
//!                       Device (device.rs) ── Message ──encode──▶ payload bytes
//!                         seq, timers, signal,     (edgewatch_wire: JSON view or frame)
//!                         own ChaCha8 stream                      │
//!                               │                                 │
//!            Fleet::poll(now) ──▶ Vec<SimMessage {topic, payload, device, at}>
//!                               │                                 ┘
//!                               ▼
//! publish::run (publish.rs): sleeps until Fleet::next_due (tokio::time), publishes with
//!   rumqttc's AsyncClient; a second task polls the EventLoop and reconnects with backoff.
//! main.rs: flags ──▶ FleetConfig + PublishOptions ──▶ publish::run (or --dry-run to stdout).
//! ```
//!
//! * [`device`]: one device written like firmware: fixed encode buffer of
//!   [`edgewatch_wire::MAX_FRAME_LEN`] bytes, its own `seq`, reading and heartbeat timers,
//!   a [`Signal`] model.
//! * [`fleet`]: devices on one schedule plus [`Fault`] injection. Same config and seed give a
//!   byte-identical message sequence, however the caller slices time.
//! * [`publish`]: the only module that does I/O.
//!
//! Device ids are `{id_prefix}{index:03}` (`t-000`, `t-001`...). Readings go to
//! `{topic_prefix}/{device}/{channel}`, heartbeats to `{topic_prefix}/{device}/heartbeat`.
//! JSON payloads follow the wire crate's JSON mapping:
//! `{"device":"t-001","seq":17,"ts":1732170000000,"kind":"reading","temperature":23.5}`.

pub mod device;
pub mod fleet;
pub mod publish;

pub use device::{Device, EncodeError, Signal};
pub use fleet::{
    ConfigError, DEFAULT_START_MS, Fault, Fleet, FleetConfig, FleetStats, MessageKind, PayloadFormat, SimMessage,
};
pub use publish::{PublishOptions, PublishStats, SimError, run};

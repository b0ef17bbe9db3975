//! Edgewatch, the agent: the I/O shell around the pure engine.
//!
//! # Data flow
//!
//! ```text
//! sensor broker ─▶ mqtt (source) ─▶ decode ─▶ engine (edgewatch-engine) ─▶ emit (CloudEvents) ─▶ outbox ─▶ mqtt (upstream)
//!                       ▲             │                 │                  └─▶ events: the event log ◀─ published, acked ┘
//!                       │             │                 │                                         │
//!                       │             │                 ├─ state ─▶ store (sled) ◀────────────────┘ (durable)
//!                       │             │                 └─ closed roll-ups ─▶ history (segment files, before the batch)
//!                       └── acks ─────┼── once the batch is on disk
//!                                     ├─▶ dead letters for bad input (and payloads their schema refuses)
//!                                     ├─ privacy: protected fields dropped, masked, pseudonymised, before all below
//!                                     └─▶ actions ─▶ sinks: a queue per sink (in the batch) ─▶ http | mqtt
//!       config ──▶ reload / rules (one loader: *.rhai, tables) ──▶ engine, swapped between events
//!       history ──▶ seed: rules' pasts at a load or reload; `edgewatch history`, `state export`
//!       start, reload, alarm command, restore, state export/import ──▶ audit (hash-chained files) ──▶ outbox
//!       browser / curl ──▶ server ──▶ console: Query ──▶ engine loop (rules, devices, alarms, commands);
//!                                   events, history, journal files; live stream ◀── engine loop
//! ```
//!
//! # Layout
//! - [`config`]: TOML + `EDGEWATCH_*` environment -> raw -> validated [`config::Config`].
//! - [`mqtt`]: rumqttc connections (MQTT 3.1.1 and 5) behind one face, with [`firmware_sim::backoff`].
//! - [`decode`]: payload bytes (JSON, plain scalars, wire frames) -> values for rules.
//! - [`sparkplug`]: Sparkplug B (spBv1.0) messages -> the host application's state per edge
//!   node (aliases, `seq`, births and deaths, last known values); plain state machine, not
//!   yet read by a subscription.
//! - [`schema`]: a subscription's payload schema, checked on each decoded payload.
//! - [`audit`]: the audit trail: what was done to the agent, hash-chained on disk and sent
//!   upstream on `<prefix>/audit`.
//! - [`privacy`]: a subscription's protected fields, dropped, masked or pseudonymised right
//!   after the schema check, before anything else sees them.
//! - [`rules`]: the rules directory -> a compiled rule set.
//! - [`agent`]: the running pipeline: `source` ─▶ `step` (the engine loop) ─▶ `commit` ─▶
//!   `upstream`, around plain state machines; shutdown and reloads passed in as values.
//! - [`reload`]: the one rule loader (for the agent, `check`, `test` and `replay`) and the
//!   rules directory's watcher.
//! - [`emit`]: composite events -> CloudEvents JSON, with their lineage as extension
//!   attributes.
//! - [`events`]: the event log: recent composite events as sent, with when each was
//!   published and acknowledged upstream (the journal's files, its own directory);
//!   `edgewatch trace` reads it (`trace`: an event, its rule version, its causes, its inputs).
//! - [`delivery`]: how an action's delivery to a sink goes: answers classified, retries,
//!   a sink's rate limit, action ids (plain values).
//! - [`sinks`]: rules' actions (`notify`, `act`): a bounded durable queue and a delivery task
//!   per configured sink (webhooks over HTTP(S), device commands over MQTT).
//! - [`alarms`]: alarm commands on the control topic, read and answered (plain values).
//! - [`outbox`]: events waiting to go upstream: one bounded bookkeeping ([`outbox::Book`]),
//!   the whole outbox in memory, or kept in sled by [`store`] when durability is on.
//! - [`store`]: durable state in sled: engine state, the outbox's entries, snapshots.
//! - `frames`: checksummed frames, the one framing (and torn-or-damaged reader) of the
//!   append-only files: history's and the journal's segments.
//! - [`history`]: closed roll-ups ([`edgewatch_engine::history::Closed`]) in append-only
//!   segment files under `<state_dir>/history/`, bounded in bytes and age; read by any process.
//! - [`journal`]: the raw inputs, in append-only segment files under `<state_dir>/journal/`
//!   (optional, bounded in bytes and age), for `edgewatch backtest` and `journal export`.
//! - [`telemetry`]: counters and the log lines that go with them; [`health`]: the
//!   connection state `/healthz` and readiness waits read; [`metrics`]: `/metrics` and
//!   `/healthz`.
//! - [`server`]: the one small HTTP/1 server of the listeners (`/metrics`, the console):
//!   bounded connections, header timeout, optional TLS.
//! - [`console`]: the page and its JSON API (`/api/v1`), behind read and write tokens: what
//!   the engine loop holds (asked with a `Query`), the event log, history, dead letters, the
//!   live stream, reloads, alarm commands and backtests (a child process).
//! - [`tls`]: broker TLS settings and the console's certificate, reread when their files change.
//! - [`broker`]: an embedded rumqttd (feature `embedded-broker`) for the demo and tests.
//! - [`demo`]: `edgewatch demo`.
//! - [`replay`]: recorded events under virtual time: `edgewatch replay` and `edgewatch test`.
//! - [`backtest`]: a candidate rule set against a baseline over the same recorded inputs.
//!
//! Logic that needs no I/O lives in `edgewatch-engine`; this crate connects it to the world.

pub mod agent;
pub mod alarms;
pub mod audit;
pub mod backtest;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
pub mod console;
pub mod decode;
pub mod delivery;
pub mod demo;
pub mod emit;
pub mod events;
mod frames;
pub mod health;
pub mod history;
pub mod journal;
pub mod metrics;
pub mod mqtt;
pub mod outbox;
pub mod privacy;
pub mod reload;
pub mod replay;
pub mod rules;
pub mod schema;
pub mod server;
pub mod sinks;
pub mod sparkplug;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use agent::{Agent, AgentError};

/// The time now, as the engine counts it: read here and passed to the engine as an argument
/// (the engine never reads a clock).
pub fn wall_clock() -> edgewatch_engine::Timestamp {
    edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now())
}

pub use config::{Config, ConfigError};
pub use health::Readiness;

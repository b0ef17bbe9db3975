//! The Edgewatch engine: the pure complex-event-processing core.
//!
//! # Data flow
//!
//! ```text
//! rule files (text) ─▶ Sandbox / RuleSet::compile ─▶ declare: which kind, checked ─▶ Rule ─▶ RuleSet
//!
//! Engine::process(event, now)          Event {topic, payload, time, id}; `now` is an argument
//!   ├─ fire due processing-time timers           (timers: heartbeats, handlers' `after`)
//!   ├─ quality: drop duplicates; event time from the payload; hold and reorder up to the
//!   │           allowed lateness (watermark), or return the event as late
//!   ├─ fire event-time timers the watermark passed (windows closing, sequences timing out)
//!   └─ for each rule whose TopicPattern matches: key ─▶ KindState::on_event ─▶ Outputs
//!          (a kind is Rust; a rule's closures run in Rhai, or natively when simple, and
//!          read the key's past with `history(...)`); then the event's readings are folded
//!          into the rule's past and remembered series; composites re-enter as events on
//!          `<chain_prefix>/<rule>` (chaining)
//! Engine::tick(now)                    fire due timers: KindState::on_timer ─▶ Outputs
//!
//! Engine::alarm_command(rule, key, cmd)  acknowledge, snooze, disable: ─▶ Outputs
//!
//! Outputs = composites (deterministic ids) + actions for sinks (gated by each key's alarm)
//!           + alarm transitions + rule faults + late events + key-limit reports
//!           + Touched names ─▶ caller: Engine::export(name) ─▶ bytes; Engine::import back
//! ```
//!
//! Nothing in here reads a clock: time comes in as an argument (`now`, and each event's
//! time), so tests and replays run on virtual time and give the same outputs every run.
//!
//! # Layout
//! Input and rules:
//! - [`time`]: [`Timestamp`], milliseconds since the epoch, always handed in.
//! - [`event`]: the decoded input [`Event`] and its identity.
//! - [`topic`]: MQTT topic patterns with named levels (`sensors/{device}/temperature`).
//! - [`tables`]: lookup tables (enrichment, a heartbeat's expected devices).
//! - [`sandbox`]: the Rhai engine with its limits, and the loader of rule files
//!   (`RuleSet::compile`, `Sandbox::compile_file`).
//! - `declare`: checks one `rule(name, #{...})` declaration and decides its kind.
//! - [`rule`]: compiled [`Rule`]s and the [`RuleSet`]: plain data, no loading.
//! - `func`: a rule's Rhai closures and how they are called; `native`: simple predicates
//!   evaluated in Rust, always agreeing with Rhai; `math`: Rhai's math functions taking
//!   integers too; `context`: what native functions see during a call (tables, time, a
//!   handler's `emit`/`after` buffers, the key's past).
//!
//! The step:
//! - [`engine`]: [`Engine`]: `process`, `tick`, routing, timers, chaining. It matches on no
//!   kind.
//! - [`config`]: [`EngineConfig`], how input is treated.
//! - `quality`: deduplication, event time, reordering.
//! - `kinds`: what each kind does (`filter` and threshold, `window`, `stuck`, `sequence`,
//!   `heartbeat`, `handler`), each in its own file with its per-key state, timers, and
//!   saved form; `kinds/mod.rs` is the one place that lists them (`KindState`);
//!   `kinds/cx.rs` the step context (`Cx`: calls, faults, emitting with the event's
//!   causes); `kinds/view.rs` the event as rules see it (`Ev`) and the
//!   default key; `kinds/keys.rs` bounds each rule's keys.
//! - `runtime`: a rule's failures (disabling) and key-limit reports, beside its kind state
//!   and its past.
//! - [`past`]: a rule's past (`past: #{ temperature: "7d by 1h" }`): per key, a ring of
//!   buckets per field, what `history(field, span[, offset[, times]])` answers, its saved
//!   form; `recall`: the engine's side of it (folding readings in after the rule ran,
//!   export and import, seeding from the agent's roll-ups: [`Engine::past_wanted`],
//!   [`Engine::seed_past`]).
//! - [`alarm`]: the alarm lifecycle of a rule and key (ISA-18.2's basic model, snooze, out
//!   of service, rate limits with folding, escalation). Rules with `notify`/`act` keep one
//!   per key (`keyalarm`: the alarm plus what later sends need, saved with the key's state)
//!   beside their kind state (`runtime`). `kinds/notify.rs` gates an event's actions with it
//!   and activates and clears it for the kinds with a "clear" side; `notices` handles what
//!   crosses rules or time: [`Engine::alarm_command`], deadlines (snooze end, folded "and N
//!   more", escalation levels, a hold's end) and `inhibit` (a child's notification held
//!   while its parent's alarm is active). `declare/notify.rs` reads the keys.
//! - [`history`]: roll-ups of remembered fields (`remember`) on their way to the agent's
//!   history log; `remember`: which series an event feeds.
//! - `timers`: the timer queues (one on processing time, one on event time).
//! - [`lineage`]: which inputs caused a composite event ([`Causes`]: the first and last few
//!   [`Ref`]s and their count, the parent of a chained event), in the compact form the agent
//!   sends as a CloudEvents attribute.
//! - [`output`]: what a step produces: [`Composite`] events with deterministic ids,
//!   [`RuleFault`]s, [`KeyLimitReport`]s, and the [`Touched`] names of changed state.
//!
//! Around the step:
//! - `persist`: [`Engine::export`], [`Engine::export_all`], [`Engine::import`]: state as
//!   named bytes, for the caller to store.
//! - `lifecycle`: [`Engine::reload`] (state carried over, removed rules' state kept a
//!   while), new tables, absence paused and resumed, grace after a restart.
//!
//! This crate does no I/O: no network, no disk, no clock, no async runtime. The agent
//! crate is the shell around it.

pub mod alarm;
pub mod config;
mod context;
mod declare;
pub mod detect;
pub mod engine;
pub mod event;
mod func;
pub mod history;
mod keyalarm;
mod kinds;
mod lifecycle;
pub mod lineage;
mod math;
mod native;
mod notices;
pub mod output;
pub mod overview;
pub mod past;
mod persist;
mod quality;
mod recall;
mod remember;
pub mod rule;
mod runtime;
pub mod sandbox;
pub mod tables;
pub mod time;
mod timers;
pub mod topic;

pub use config::EngineConfig;
pub use engine::{AlarmCommandError, Engine, EngineStats};
pub use event::{Event, EventId};
pub use lineage::{Causes, Ref};
pub use output::{Action, AlarmTransition, Composite, CompositeId, KeyLimitReport, Outputs, RuleFault, Touched};
pub use overview::{AlarmView, DeviceView, Liveness, RuleView};
pub use past::{PastError, PastSpec, PastWant, SeedError, Seeded};
pub use persist::StateError;
pub use rule::{OnFull, Origin, Rule, RuleSet};
pub use sandbox::{CompileError, Limits, Sandbox};
pub use tables::{Table, TableError, Tables};
pub use time::Timestamp;
pub use topic::{PatternError, TopicPattern};

/// Re-exported so callers build payloads with the same `Dynamic` the rules see.
pub use rhai::{Dynamic, Map};

/// The hash maps a message passes through (per-key state, duplicate windows, history
/// series, the agent's batch and state journal): std's map with aHash, seeded at random per
/// process as std's SipHash is (chosen device ids cannot make keys collide), at a fraction
/// of SipHash's cost on short keys. aHash is linked already: rhai's maps use it.
pub type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
/// The set of [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;

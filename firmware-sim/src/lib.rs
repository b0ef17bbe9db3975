//! Virtual sensor fleets for Edgewatch: many firmware-like devices (sensors and door
//! controllers) publishing over MQTT, as JSON or as `edgewatch_wire` frames, with a
//! timeline of injected faults and a ground-truth list of what was injected.
//!
//! # Layout
//!
//! ```text
//! config/scenarios/*.toml ──Scenario::load──▶ Scenario ◀──Scenario::new── ScenarioSpec (built in code,
//!   (scenario/raw.rs: serde,       (scenario/validate.rs:                or a file's spec edited:
//!    deny_unknown_fields,           ids, topics, faults resolved)        resize, prefix_topics, stretch)
//!    errors name the key path)           │
//!                                        ▼ Simulation::new(&scenario, SimOptions { seed, start_ms, duration })
//!                     Simulation (sim/) ──── pure: virtual time in, Emissions out, no I/O
//!                       │  schedule: min-heap of (time, device, job)
//!                       │  Device (device/): seq, timers, Signal (signal.rs), own ChaCha8 stream
//!                       │  jobs (sim/jobs.rs) ─▶ faults (sim/faults.rs): withhold ─▶ shape ─▶ deliver
//!                       ▼
//!            poll(now) ─▶ Emission { at, time_ms, device, Connect | Publish | Drop }
//!                       │                               │
//!                       │                               ├─▶ record.rs: recording lines (replay format)
//!                       │                               └─  Simulation::truth(): Truth ─▶ truth lines
//!                       ▼
//! runner.rs: run_simulation: sleeps until next_due (tokio::time, × speed), hands each message to
//!   a client: one shared connection, or one per own-connection device (link.rs: rumqttc client +
//!   event-loop task with backoff, last will; Drop = abort the task, so the broker sends the will);
//!   SimError, the connect and drain timeouts
//! main.rs: flags ──▶ Scenario (a file, or the fleet flags as one group) ──▶ run_simulation,
//!   or --dry-run to stdout; --sparkplug N ──▶ sparkplug::live::run
//!
//! sparkplug/: Sparkplug B edge nodes beside the scenario fleets: EdgeNode (pure: births,
//!   alias-only DDATA, seq and bdSeq, the NDEATH will, rebirth answers, faults) and live.rs
//!   (one connection per node, the will armed, NCMD subscribed; faults at their times; the
//!   ground truth of what a host application should report)
//!
//! Imports go one way, down this list: main → sparkplug → runner → link, record → sim → device → scenario
//! → signal, template; link → backoff. No module imports one that imports it back.
//! ```
//!
//! # Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use firmware_sim::{RunOptions, Scenario, SimOptions, Simulation};
//! use std::time::Duration;
//!
//! let scenario = Scenario::load("config/scenarios/accuracy.toml")?;   // or Scenario::from_toml(text)
//! let opts = SimOptions { seed: 7, start_ms: 1_732_170_000_000, duration: Some(Duration::from_secs(60)) };
//!
//! // Pure, for tests without a broker: the whole schedule, its recording and the truth.
//! let mut sim = Simulation::new(&scenario, opts.clone())?;
//! let emissions = sim.run_to_end().unwrap_or_default();
//! let recording: String = firmware_sim::record_lines(&emissions);
//! let truth = sim.truth();
//!
//! // Against a broker, in real time (speed 1) until the duration or the shutdown future.
//! let run = RunOptions { host: "127.0.0.1".into(), port: 1883, ..RunOptions::default() };
//! let report = firmware_sim::run_scenario(&scenario, opts, &run, std::future::pending()).await?;
//! assert_eq!(report.truth, truth);
//! # Ok(()) }
//! ```
//!
//! Same scenario, seed, `start_ms` and duration give byte-identical emissions, recording
//! and truth, however the caller slices time. The truth of a live run equals the pure one
//! when it runs to its end (a run stopped early cuts the truth where it stopped).
//!
//! # Modules
//!
//! * [`scenario`]: groups (sensor or door, counts, id and topic templates, format,
//!   intervals, signals, own connections) and the fault timeline; file format in
//!   `config/scenarios/README.md`.
//! * [`sim`]: the pure generator, how each fault acts, [`Truth`].
//! * [`device`]: one device written like firmware: a fixed encode buffer of
//!   [`edgewatch_wire::MAX_FRAME_LEN`] bytes, its own `seq`, timers, [`Signal`] models.
//! * [`record`]: recording and truth lines.
//! * [`runner`] (and its private `link`, one connection): the only modules that do I/O.
//! * [`backoff`]: reconnection delays, shared with the agent (it has no other home: see there).
//!
//! Sensor messages follow the wire crate's JSON mapping:
//! `{"device":"t-001","seq":17,"ts":1732170000000,"kind":"reading","temperature":23.5}`;
//! door controllers send events, `{"kind":"event","code":1}` for a badge read
//! ([`BADGE_CODE`]) and `"code":2` for an opening ([`OPEN_CODE`]).

pub mod backoff;
pub mod device;
mod link;
pub mod record;
pub mod runner;
pub mod scenario;
pub mod signal;
pub mod sim;
pub mod sparkplug;
pub mod template;
pub mod toml_keys;

pub use device::{BADGE_CODE, Device, DeviceError, EncodeError, OPEN_CODE};
pub use record::{
    RecordBody, RecordLine, RecordLineError, Recorder, record_line, record_lines, truth_line, truth_lines, unhex,
    write_record, write_truth,
};
pub use runner::{
    CONNECT_TIMEOUT, Command, DRAIN_TIMEOUT, MAX_COMMANDS, RunOptions, RunReport, RunStats, SimError, run_scenario,
    run_simulation,
};
pub use scenario::{
    BATTERY_CHANNEL, ChannelSpec, DeviceRef, DoorSpec, FaultKind, FaultSet, FaultSpec, FaultType, FlapVia, Group,
    GroupKind, MAX_OWN_CONNECTIONS, MessageFilter, PayloadFormat, Scenario, ScenarioError, ScenarioSpec, SensorSpec,
    SpikeValue,
};
pub use signal::{Signal, SignalError};
pub use sim::{
    Action, DEFAULT_START_MS, Emission, Encoding, Kind, ONLINE_PAYLOAD, Publish, SimOptions, SimStats, Simulation,
    Truth, WILL_PAYLOAD,
};
pub use template::{IdTemplate, TopicTemplate};

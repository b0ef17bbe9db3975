//! Recorded events under virtual time: `edgewatch replay` and `edgewatch test`.
//!
//! A recording is JSON lines, one message (or clock step) each, as `firmware-sim --record`
//! writes them:
//!
//! ```text
//! {"t": 1000, "topic": "sensors/t-001/temperature", "payload": {"temperature": 85.5}}
//! {"t": 2000, "topic": "sensors/t-001/status", "text": "offline"}     plain-text payload
//! {"t": 3000, "topic": "sensors/t-001/temperature", "hex": "0105..."} binary (wire frame)
//! {"t": 70000}                                                        the clock moves on
//! ```
//!
//! A line is [`firmware_sim::RecordLine`], the type the simulator writes, so writer and reader
//! cannot drift; this module turns its body into the bytes and value the engine sees.
//!
//! `t` is both the message's arrival time and the processing time at that line, in
//! milliseconds. Output is JSON lines too: composite events
//! (`{"t", "rule", "key", "data"}`, plus `"id"` from `replay`), and rule faults, duplicates
//! and late messages, so golden files pin those as well.
//!
//! Golden tests live next to the rules: `<rules>/tests/<case>/in.jsonl` and `out.jsonl`, and
//! optionally `case.toml`: `rules = ["overheat"]` to run only some rules, and an `[engine]`
//! section as in the agent configuration.

mod golden;

pub use golden::{CaseResult, cases, run_case};

use crate::config::RawEngine;
use crate::decode::{Format, decode};
use edgewatch_engine::{Dynamic, Engine, EngineConfig, Event, Outputs, RuleSet, Sandbox, Tables, Timestamp};
use firmware_sim::{RecordBody, RecordLine, unhex};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The prefix chained events use in replays and golden tests.
pub const EVENTS_PREFIX: &str = "edgewatch/replay/events";

/// A recording or a golden case that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Line { file: String, line: usize, message: String },
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// Rule files that do not compile: every error, one `file:line:col: message` a line.
    #[error("{0}")]
    Rules(String),
}

/// One step of a recording.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival and processing time, ms.
    pub t: i64,
    /// The message, if this line has one: topic, raw bytes, and the decoded payload or why
    /// it did not decode (as the agent would dead-letter it).
    pub message: Option<(String, Vec<u8>, Result<Dynamic, String>)>,
}

fn decoded(topic: String, raw: Vec<u8>) -> (String, Vec<u8>, Result<Dynamic, String>) {
    let value = if topic.starts_with(SPARKPLUG) {
        // Read against its edge node's session, by [`Reader`].
        Err("sparkplug".to_owned())
    } else {
        decode(Format::Auto, &raw, usize::MAX).map_err(|e| e.reason().to_owned())
    };
    (topic, raw, value)
}

/// Where Sparkplug B topics are: messages under it are read as `format = "sparkplug"`.
const SPARKPLUG: &str = "spBv1.0/";

/// Reads recorded messages as the agent reads them: a message on a `spBv1.0/` topic through
/// its Sparkplug B edge node's session (none, one, or several inputs: an NDEATH is one for the
/// node and one per device), anything else as it was parsed. One per replay: the sessions
/// start empty, so a recording of Sparkplug traffic starts with its births.
#[derive(Debug, Default)]
pub struct Reader {
    sessions: crate::sparkplug::Sessions,
    limits: crate::sparkplug::Limits,
}

impl Reader {
    /// With these Sparkplug limits (the configuration's `[sparkplug]`).
    pub fn new(limits: crate::sparkplug::Limits) -> Reader {
        Reader { sessions: crate::sparkplug::Sessions::default(), limits }
    }

    /// Hands each input of `step` to `f`.
    pub fn each(&mut self, step: &Recorded, f: impl FnMut(Input<'_>)) {
        match &step.message {
            Some((topic, raw, _)) if topic.starts_with(SPARKPLUG) => self.sparkplug(step.t, topic, raw, f),
            _ => {
                let mut f = f;
                f(step.input());
            }
        }
    }

    /// Hands each input of the Sparkplug B message `raw` on `topic` at `t` to `f`: the
    /// events its session makes of it, or its refusal (dead-lettered, with its reason), or
    /// the clock alone for a message the specification says to ignore.
    pub fn sparkplug(&mut self, t: i64, topic: &str, raw: &[u8], mut f: impl FnMut(Input<'_>)) {
        use crate::sparkplug::{Outcome, event};
        let outcome = self.sessions.apply(topic, raw, u64::try_from(t).unwrap_or(0), &self.limits);
        // Nothing of a replay is stored: what changed is not kept for a write.
        self.sessions.take_changed();
        match outcome {
            Err(e) => f(Input::Message { topic, raw, value: &Err(e.reason().to_owned()) }),
            Ok(Outcome::Ignored(_)) => f(Input::Clock),
            Ok(Outcome::Update(update)) => {
                for value in event::payloads(&update, &self.sessions) {
                    f(Input::Message { topic, raw, value: &Ok(value) });
                }
            }
        }
    }
}

/// Parses a recording; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<Recorded>, ReplayError> {
    Lines::new(text.as_bytes(), file).collect()
}

/// A recording read line by line from `input`, for replays of any length in bounded memory.
#[derive(Debug)]
pub struct Lines<R> {
    input: R,
    file: String,
    line: usize,
    buf: String,
}

impl<R: std::io::BufRead> Lines<R> {
    pub fn new(input: R, file: &str) -> Lines<R> {
        Lines { input, file: file.to_owned(), line: 0, buf: String::new() }
    }
}

impl<R: std::io::BufRead> Iterator for Lines<R> {
    type Item = Result<Recorded, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            self.line += 1;
            match self.input.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => return Some(Err(ReplayError::Read { file: self.file.clone(), source })),
            }
            if let Some(parsed) = parse_line(&self.buf, &self.file, self.line).transpose() {
                return Some(parsed);
            }
        }
    }
}

/// One line of a recording; `None` for a blank or `//` comment line.
fn parse_line(raw: &str, file: &str, line_no: usize) -> Result<Option<Recorded>, ReplayError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with("//") {
        return Ok(None);
    }
    let err = |message: String| ReplayError::Line { file: file.to_owned(), line: line_no, message };
    let line: RecordLine = serde_json::from_str(trimmed).map_err(|e| err(e.to_string()))?;
    let message = match line.message().map_err(|e| err(e.to_string()))? {
        None => None,
        Some((topic, RecordBody::Json(json))) => {
            let payload: Value = serde_json::from_str(json.get()).map_err(|e| err(e.to_string()))?;
            let raw = serde_json::to_vec(&payload).map_err(|e| err(e.to_string()))?;
            let value: Dynamic = serde_json::from_value(payload).map_err(|e| err(e.to_string()))?;
            Some((topic.to_owned(), raw, Ok(value)))
        }
        Some((topic, RecordBody::Text(text))) => Some(decoded(topic.to_owned(), text.as_bytes().to_vec())),
        Some((topic, RecordBody::Hex(hex))) => {
            let raw = unhex(hex).ok_or_else(|| err("`hex` must be pairs of hex digits".into()))?;
            Some(decoded(topic.to_owned(), raw))
        }
    };
    Ok(Some(Recorded { t: line.t, message }))
}

/// One input of a replay or a backtest.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// The clock moves on: timers fire.
    Clock,
    /// A message: its topic, raw bytes, and the decoded payload or why it did not decode.
    Message {
        topic: &'a str,
        raw: &'a [u8],
        value: &'a Result<Dynamic, String>,
    },
    /// The sensor link went down or came back (from the journal): absence detection pauses.
    LinkDown,
    LinkUp,
}

impl Recorded {
    /// This step as an input.
    pub fn input(&self) -> Input<'_> {
        match &self.message {
            None => Input::Clock,
            Some((topic, raw, value)) => Input::Message { topic, raw, value },
        }
    }
}

/// Runs one input at `t` (its arrival and processing time, ms) through `engine`; `out` is
/// cleared first and holds what it produced.
pub fn feed(engine: &mut Engine, t: i64, input: Input<'_>, out: &mut Outputs) {
    out.clear();
    let now = Timestamp(t);
    match input {
        Input::Message { value: Ok(payload), topic, raw } => {
            engine.process(Event::new(topic.to_owned(), payload.clone(), raw, now), now, out);
        }
        Input::Message { value: Err(_), .. } | Input::Clock => engine.tick(now, out),
        Input::LinkDown => engine.pause_absence(now),
        Input::LinkUp => engine.resume_absence(now, out),
    }
}

/// The output lines of one fed input (see [`feed`]): dead letters, duplicates, late
/// messages, faults and composite events. With `ids`, composite events carry their ids.
pub fn output_lines(t: i64, input: Input<'_>, out: &Outputs, ids: bool, mut emit: impl FnMut(Value)) {
    match input {
        Input::Message { topic, value: Err(reason), .. } => {
            emit(json!({"t": t, "dead_letter": topic, "reason": reason}))
        }
        Input::Message { topic, .. } if out.duplicates > 0 => emit(json!({"t": t, "duplicate": topic})),
        _ => {}
    }
    for late in &out.late {
        emit(json!({"t": t, "late": late.topic, "event_time": late.time.millis()}));
    }
    for f in &out.faults {
        emit(json!({"t": t, "fault": f.to_string(), "rule": &*f.rule}));
    }
    for c in &out.events {
        let mut line = json!({"t": c.time.millis(), "rule": &*c.rule, "key": c.key, "data": c.data_json()});
        if ids {
            line["id"] = json!(c.id.to_string());
        }
        emit(line);
    }
}

/// Runs a recording through `engine`; returns the output lines. With `ids`, composite events
/// carry their ids.
pub fn run(engine: &mut Engine, recording: &[Recorded], ids: bool) -> Vec<Value> {
    let mut out = Outputs::default();
    let mut lines = Vec::new();
    let mut reader = Reader::default();
    for step in recording {
        reader.each(step, |input| {
            feed(engine, step.t, input, &mut out);
            output_lines(step.t, input, &out, ids, |l| lines.push(l));
        });
    }
    lines
}

/// An engine for a replay: the rules of `rules` (a directory or one file) with their tables.
pub fn engine_for(rules: &Path, config: EngineConfig) -> Result<Engine, ReplayError> {
    engine_only(rules, config, None)
}

fn engine_only(rules: &Path, config: EngineConfig, only: Option<&[String]>) -> Result<Engine, ReplayError> {
    let sandbox = Arc::new(Sandbox::default());
    let loaded = crate::reload::load(sandbox.clone(), rules)
        .map_err(|e| ReplayError::Config { file: rules.display().to_string(), message: e.to_string() })?;
    if !loaded.errors.is_empty() {
        let lines: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(ReplayError::Rules(lines.join("\n")));
    }
    let (tables, errors) = crate::rules::load_tables(rules, &Default::default());
    if let Some(e) = errors.first() {
        return Err(ReplayError::Config { file: e.path.clone(), message: e.message.clone() });
    }
    let set = match only {
        None => loaded.rules,
        Some(names) => {
            if let Some(missing) = names.iter().find(|n| loaded.rules.get(n).is_none()) {
                return Err(ReplayError::Config {
                    file: rules.display().to_string(),
                    message: format!("no rule named `{missing}`"),
                });
            }
            loaded.rules.filtered(|r| names.iter().any(|n| **n == *r.name))
        }
    };
    Ok(engine_with(sandbox, set, tables, config))
}

fn engine_with(sandbox: Arc<Sandbox>, rules: RuleSet, tables: Tables, config: EngineConfig) -> Engine {
    Engine::with_config(sandbox, rules, tables, config)
}

/// The default engine configuration of replays: as the agent's, chaining under
/// [`EVENTS_PREFIX`].
pub fn default_engine_config() -> EngineConfig {
    RawEngine::default().to_engine_config(EVENTS_PREFIX)
}

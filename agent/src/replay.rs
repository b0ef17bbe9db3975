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

use crate::config::RawEngine;
use crate::decode::{Format, decode};
use edgewatch_engine::{Dynamic, Engine, EngineConfig, Event, Outputs, RuleSet, Sandbox, Tables, Timestamp};
use firmware_sim::{RecordBody, RecordLine, unhex};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
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

/// What a golden case may set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseConfig {
    /// Names of the rules to run; absent: all.
    rules: Option<Vec<String>>,
    #[serde(default)]
    engine: RawEngine,
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

/// One golden case's outcome.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `None` when the output matched; else a unified diff (expected -> actual).
    pub diff: Option<String>,
}

/// The golden cases under `<rules>/tests/`, sorted.
pub fn cases(rules: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(rules.join("tests"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("in.jsonl").is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn read(path: &Path) -> Result<String, ReplayError> {
    std::fs::read_to_string(path).map_err(|source| ReplayError::Read { file: path.display().to_string(), source })
}

/// Runs one golden case. With `bless`, writes the actual output as the expected one.
pub fn run_case(rules: &Path, case: &Path, bless: bool) -> Result<CaseResult, ReplayError> {
    let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let config_file = case.join("case.toml");
    let case_config: CaseConfig = if config_file.is_file() {
        toml::from_str(&read(&config_file)?)
            .map_err(|e| ReplayError::Config { file: config_file.display().to_string(), message: e.to_string() })?
    } else {
        CaseConfig::default()
    };
    let config = case_config.engine.to_engine_config(EVENTS_PREFIX);
    let mut engine = engine_only(rules, config, case_config.rules.as_deref())?;
    let input_file = case.join("in.jsonl");
    let recording = parse(&read(&input_file)?, &input_file.display().to_string())?;
    let actual: String = run(&mut engine, &recording, false).iter().map(|v| format!("{v}\n")).collect();
    let expected_file = case.join("out.jsonl");
    if bless {
        std::fs::write(&expected_file, &actual)
            .map_err(|source| ReplayError::Read { file: expected_file.display().to_string(), source })?;
        return Ok(CaseResult { name, diff: None });
    }
    let expected_text = if expected_file.is_file() { read(&expected_file)? } else { String::new() };
    // Compare as JSON values, so formatting and key order in the file do not matter.
    let normalise = |text: &str| -> String {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).map(|v| v.to_string()).unwrap_or_else(|_| l.to_owned()) + "\n")
            .collect()
    };
    let expected = normalise(&expected_text);
    if expected == actual {
        return Ok(CaseResult { name, diff: None });
    }
    let diff = unified_diff(&expected, &actual, &format!("{} (expected)", expected_file.display()), "actual");
    Ok(CaseResult { name, diff: Some(diff) })
}

/// A unified diff of two texts, line by line, with three lines of context. Myers' algorithm
/// from `similar`, called once with one hook type: its `TextDiff` front end compiles every
/// algorithm for several hook types into the binary (about 0.5 MB, for a test report).
fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    use std::fmt::Write as _;
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    // `Replace` turns a delete next to an insert into one replace: `-` lines before `+` lines.
    let mut hook = similar::algorithms::Replace::new(similar::algorithms::Capture::new());
    let Ok(()) = similar::algorithms::myers::diff(&mut hook, &old, 0..old.len(), &new, 0..new.len());
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for hunk in hook.into_inner().into_grouped_ops(3) {
        let (Some(first), Some(last)) = (hunk.first(), hunk.last()) else { continue };
        let (o, n) = (first.old_range().start..last.old_range().end, first.new_range().start..last.new_range().end);
        // 1-based starts; an empty side names the line before it (0 at the top).
        let start = |r: &std::ops::Range<usize>| if r.is_empty() { r.start } else { r.start + 1 };
        let _ = writeln!(out, "@@ -{},{} +{},{} @@", start(&o), o.len(), start(&n), n.len());
        for op in &hunk {
            let (tag, o, n) = op.as_tag_tuple();
            let (del, ins) = match tag {
                similar::DiffTag::Equal => {
                    o.for_each(|i| {
                        let _ = writeln!(out, " {}", old[i]);
                    });
                    continue;
                }
                similar::DiffTag::Delete => (o, 0..0),
                similar::DiffTag::Insert => (0..0, n),
                similar::DiffTag::Replace => (o, n),
            };
            del.for_each(|i| {
                let _ = writeln!(out, "-{}", old[i]);
            });
            ins.for_each(|i| {
                let _ = writeln!(out, "+{}", new[i]);
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    #[test]
    fn the_diff_shows_changed_lines_in_hunks_with_context() {
        let old: String = (1..=10).map(|i| format!("line {i}\n")).collect();
        let new = old.replace("line 2\n", "line two\n").replace("line 9\n", "");
        let diff = unified_diff(&old, &new, "expected", "actual");
        // Changes 7 lines apart share a hunk (3 lines of context each side overlap).
        let want = "--- expected\n+++ actual\n@@ -1,10 +1,9 @@\n\
                    \x20line 1\n-line 2\n+line two\n line 3\n line 4\n line 5\n line 6\n line 7\n line 8\n-line 9\n line 10\n";
        assert_eq!(diff, want);
        let far: String = (1..=30).map(|i| format!("l{i}\n")).collect();
        let diff = unified_diff(&far, &far.replace("l2\n", "").replace("l29\n", "x\n"), "a", "b");
        assert_eq!(diff.matches("@@ ").count(), 2, "{diff}");
        assert!(diff.contains("-l2\n") && diff.contains("-l29\n+x\n"), "{diff}");
        assert_eq!(unified_diff("same\n", "same\n", "a", "b"), "--- a\n+++ b\n");
        // A new case with no expected output yet, and a rule that now produces nothing.
        assert_eq!(unified_diff("", "x\ny\n", "a", "b"), "--- a\n+++ b\n@@ -0,0 +1,2 @@\n+x\n+y\n");
        assert_eq!(unified_diff("x\n", "", "a", "b"), "--- a\n+++ b\n@@ -1,1 +0,0 @@\n-x\n");
    }
}

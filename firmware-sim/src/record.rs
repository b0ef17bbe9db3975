//! Recordings and ground truth, as JSON lines.
//!
//! A recording has one line per message sent, in send order, in the format
//! `edgewatch replay` reads:
//!
//! ```text
//! {"t":1732170000000,"topic":"sensors/t-000/temperature","payload":{"device":"t-000","seq":0,...}}
//! {"t":1732170000000,"topic":"sensors/t-000/status","text":"online"}
//! {"t":1732170003500,"topic":"sensors/t-003/temperature","hex":"01057432..."}
//! ```
//!
//! `t` is the epoch ms the message was sent (`start_ms` + virtual ms; for a late message,
//! when it was delivered, while its `ts` keeps the time it was made). JSON payloads are
//! copied byte for byte under `payload`, plain text (`online`, `offline`) goes under
//! `text`, and everything else (wire frames, garbage) under `hex`, lowercase. When an
//! own-connection device's connection drops, the broker publishes its last will: that is
//! recorded too, at the moment of the drop, as `{"t":..,"topic":"<status topic>","text":"offline"}`.
//!
//! [`RecordLine`] is that line as a serde type, written here and read by the agent.
//!
//! The truth file has one line per fault instance that began during the run:
//!
//! ```text
//! {"device":"t-003","group":"temperature","fault":"overheat","start_ms":1732170010000,"end_ms":1732170016000,"duration_ms":6000,"value":90.0,"channel":"temperature","messages":6}
//! ```
//!
//! `start_ms`/`end_ms` as [`Truth`] says, then the fault's parameters (durations in ms,
//! rates per hour), then `channel` for faults that change values, then `messages`, the
//! count of messages it withheld or shaped. The faults that change values over a span:
//!
//! ```text
//! {...,"fault":"drift","start_ms":..,"end_ms":..,"duration_ms":86400000,"rate_per_hour":0.25,"channel":"temperature","messages":1440}
//! {...,"fault":"level_shift",..,"duration_ms":43200000,"by":4.0,"channel":"temperature","messages":720}
//! {...,"fault":"spike",..,"by":8.0,"count":3,"channel":"temperature","messages":3}
//! {...,"fault":"pattern_break",..,"duration_ms":86400000,"channel":"temperature","messages":1440}
//! {...,"fault":"noise_burst",..,"duration_ms":21600000,"noise":3.0,"channel":"temperature","messages":360}
//! {...,"fault":"battery_decline",..,"rate_per_hour":0.03,"from":3.9,"channel":"battery","messages":1440}
//! ```
//!
//! A `battery_decline` has `duration_ms` only if it has a `duration` (else it runs to the
//! end, `end_ms`), and `from` (the battery's level at its first reading, before declining)
//! once it has read one: its readings follow `from - rate_per_hour · hours since start_ms`,
//! plus the signal's noise, never below 0.

use std::io::{self, Write};
use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::scenario::{FaultKind, SpikeValue};
use crate::sim::{Action, Emission, Encoding, Truth, WILL_PAYLOAD};

/// One line of a recording: the one type both sides use, firmware-sim to write
/// ([`record_line`]) and `edgewatch replay` to read ([`RecordLine::message`]).
///
/// A message line has a `topic` and exactly one body: `payload` (JSON, kept byte for byte),
/// `text` (UTF-8) or `hex` (anything else). A line with only `t` moves the clock on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLine {
    /// Epoch ms the message was sent (for a reader: its arrival and processing time).
    pub t: i64,
    /// MQTT topic; `None` on a clock-only line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A JSON payload, as the device sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<RawValue>>,
    /// A plain-text payload (`online`, `offline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Any other payload (wire frames, garbage), lowercase hex (whitespace is ignored when read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
}

/// What a [`RecordLine`] carries, checked.
#[derive(Debug, Clone, Copy)]
pub enum RecordBody<'a> {
    /// JSON text.
    Json(&'a RawValue),
    /// Plain text.
    Text(&'a str),
    /// The bytes, decoded from `hex`.
    Hex(&'a str),
}

/// Why a [`RecordLine`] does not describe a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordLineError {
    /// A body without a `topic`.
    #[error("a line with a payload needs a `topic`")]
    NoTopic,
    /// A `topic` with no body, or more than one.
    #[error("give exactly one of `payload`, `text` or `hex` with a `topic`")]
    Body,
}

impl RecordLine {
    /// The line of `e`; `None` for what puts nothing on the wire (a connect).
    pub fn of(e: &Emission) -> Option<RecordLine> {
        let t = i64::try_from(e.time_ms).unwrap_or(i64::MAX);
        let line = |topic: &str| RecordLine { t, topic: Some(topic.to_owned()), payload: None, text: None, hex: None };
        match &e.action {
            Action::Connect => None,
            Action::Publish(p) => Some(line(&p.topic).with_body(p.encoding, &p.payload)),
            Action::Drop { will_topic } => Some(RecordLine { text: Some(WILL_PAYLOAD.to_owned()), ..line(will_topic) }),
        }
    }

    /// The line of a message at `t`: `payload` for JSON, `text` for text, `hex` for anything
    /// else (JSON that does not parse and text that is not UTF-8 become `hex` too).
    pub fn of_message(t: i64, topic: &str, encoding: Encoding, payload: &[u8]) -> RecordLine {
        RecordLine { t, topic: Some(topic.to_owned()), payload: None, text: None, hex: None }
            .with_body(encoding, payload)
    }

    /// A line that only moves the clock on to `t`.
    pub fn clock(t: i64) -> RecordLine {
        RecordLine { t, topic: None, payload: None, text: None, hex: None }
    }

    fn with_body(mut self, encoding: Encoding, payload: &[u8]) -> RecordLine {
        let text = std::str::from_utf8(payload).ok();
        match (encoding, text) {
            // The simulator's JSON payloads are compact JSON already: copied as they are.
            (Encoding::Json, Some(text)) => match RawValue::from_string(text.to_owned()) {
                Ok(raw) => self.payload = Some(raw),
                Err(_) => self.hex = Some(hex(payload)),
            },
            (Encoding::Text, Some(text)) => self.text = Some(text.to_owned()),
            _ => self.hex = Some(hex(payload)),
        }
        self
    }

    /// The message of the line: its topic and body; `None` for a clock-only line.
    pub fn message(&self) -> Result<Option<(&str, RecordBody<'_>)>, RecordLineError> {
        let any = self.payload.is_some() || self.text.is_some() || self.hex.is_some();
        if self.topic.is_none() && any {
            return Err(RecordLineError::NoTopic);
        }
        let body = match (&self.payload, &self.text, &self.hex) {
            (None, None, None) => None,
            (Some(json), None, None) => Some(RecordBody::Json(json)),
            (None, Some(text), None) => Some(RecordBody::Text(text)),
            (None, None, Some(hex)) => Some(RecordBody::Hex(hex)),
            _ => return Err(RecordLineError::Body),
        };
        match (self.topic.as_deref(), body) {
            (_, None) if self.topic.is_none() => Ok(None),
            (Some(topic), Some(body)) => Ok(Some((topic, body))),
            _ => Err(RecordLineError::Body),
        }
    }
}

/// The recording line of `e` (no trailing newline); `None` for what puts nothing on the wire
/// (a connect).
pub fn record_line(e: &Emission) -> Option<String> {
    RecordLine::of(e).and_then(|line| serde_json::to_string(&line).ok())
}

/// The bytes of lowercase or uppercase hex, whitespace ignored; `None` unless it is pairs of
/// hex digits.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Every line of `emissions`' recording, each ending in `\n`.
pub fn record_lines(emissions: &[Emission]) -> String {
    let mut out = String::new();
    for line in emissions.iter().filter_map(record_line) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Writes `e`'s recording line (if it has one) to `w`.
pub fn write_record(w: &mut (impl Write + ?Sized), e: &Emission) -> io::Result<()> {
    match record_line(e) {
        Some(line) => writeln!(w, "{line}"),
        None => Ok(()),
    }
}

/// Writes recording lines to any writer and counts them.
#[derive(Debug)]
pub struct Recorder<W: Write> {
    /// Where lines go (buffer it: one `write` per line otherwise).
    out: W,
    /// Lines written so far.
    lines: u64,
}

impl<W: Write> Recorder<W> {
    /// A recorder writing to `out`.
    pub fn new(out: W) -> Self {
        Recorder { out, lines: 0 }
    }

    /// Records `e` (nothing for a connect).
    pub fn record(&mut self, e: &Emission) -> io::Result<()> {
        if let Some(line) = record_line(e) {
            writeln!(self.out, "{line}")?;
            self.lines += 1;
        }
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn dur_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Serialize for Truth {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("device", &self.device)?;
        m.serialize_entry("group", &self.group)?;
        m.serialize_entry("fault", self.fault().name())?;
        m.serialize_entry("start_ms", &self.start_ms)?;
        m.serialize_entry("end_ms", &self.end_ms)?;
        let span = self.kind.span();
        match &self.kind {
            FaultKind::Silence { .. }
            | FaultKind::HeartbeatLoss { .. }
            | FaultKind::Disconnect { .. }
            | FaultKind::ForcedDoor { .. } => m.serialize_entry("duration_ms", &dur_ms(span))?,
            FaultKind::Flap { period, down, count, via } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("period_ms", &dur_ms(*period))?;
                m.serialize_entry("down_ms", &dur_ms(*down))?;
                m.serialize_entry("count", count)?;
                m.serialize_entry("via", via.name())?;
            }
            FaultKind::Overheat { value, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("value", value)?;
            }
            FaultKind::Spike { value, count, .. } => {
                match value {
                    SpikeValue::Absolute(value) => m.serialize_entry("value", value)?,
                    SpikeValue::Relative(by) => m.serialize_entry("by", by)?,
                }
                m.serialize_entry("count", count)?;
            }
            FaultKind::Stuck { .. } => m.serialize_entry("duration_ms", &dur_ms(span))?,
            FaultKind::Duplicate { count, messages } | FaultKind::Reorder { count, messages } => {
                m.serialize_entry("count", count)?;
                m.serialize_entry("message_kind", messages.name())?;
            }
            FaultKind::Late { delay, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("delay_ms", &dur_ms(*delay))?;
            }
            FaultKind::Malformed { count } | FaultKind::Burst { count } => m.serialize_entry("count", count)?,
            FaultKind::ClockSkew { offset_ms, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("offset_ms", offset_ms)?;
            }
            FaultKind::Drift { rate, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("rate_per_hour", rate)?;
            }
            FaultKind::LevelShift { by, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("by", by)?;
            }
            FaultKind::PatternBreak { .. } => m.serialize_entry("duration_ms", &dur_ms(span))?,
            FaultKind::NoiseBurst { noise, .. } => {
                m.serialize_entry("duration_ms", &dur_ms(span))?;
                m.serialize_entry("noise", noise)?;
            }
            FaultKind::BatteryDecline { duration, rate, .. } => {
                if let Some(d) = duration {
                    m.serialize_entry("duration_ms", &dur_ms(*d))?;
                }
                m.serialize_entry("rate_per_hour", rate)?;
                if let Some(from) = self.from {
                    m.serialize_entry("from", &from)?;
                }
            }
        }
        if let Some(channel) = &self.channel {
            m.serialize_entry("channel", channel)?;
        }
        m.serialize_entry("messages", &self.messages)?;
        m.end()
    }
}

/// The truth line of `t` (no trailing newline).
pub fn truth_line(t: &Truth) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

/// Every truth line, each ending in `\n`.
pub fn truth_lines(truth: &[Truth]) -> String {
    let mut out = String::new();
    for t in truth {
        out.push_str(&truth_line(t));
        out.push('\n');
    }
    out
}

/// Writes every truth line to `w`.
pub fn write_truth(w: &mut (impl Write + ?Sized), truth: &[Truth]) -> io::Result<()> {
    w.write_all(truth_lines(truth).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::FaultSet;
    use crate::sim::{Kind, Publish};
    use std::sync::Arc;

    fn publish(encoding: Encoding, payload: &[u8]) -> Emission {
        Emission {
            at: Duration::from_millis(1500),
            time_ms: 1_000_001_500,
            device: 0,
            action: Action::Publish(Publish {
                topic: Arc::from("sensors/t-000/temperature"),
                payload: payload.to_vec(),
                kind: Kind::Reading,
                encoding,
                faults: FaultSet::EMPTY,
            }),
        }
    }

    #[test]
    fn lines_by_encoding() {
        assert_eq!(
            record_line(&publish(Encoding::Json, br#"{"temperature":21.5}"#)).as_deref(),
            Some(r#"{"t":1000001500,"topic":"sensors/t-000/temperature","payload":{"temperature":21.5}}"#)
        );
        assert_eq!(
            record_line(&publish(Encoding::Text, b"on\"line")).as_deref(),
            Some(r#"{"t":1000001500,"topic":"sensors/t-000/temperature","text":"on\"line"}"#)
        );
        assert_eq!(
            record_line(&publish(Encoding::Binary, &[0x01, 0xab, 0x00])).as_deref(),
            Some(r#"{"t":1000001500,"topic":"sensors/t-000/temperature","hex":"01ab00"}"#)
        );
        // JSON that is not JSON (never made by the simulator) falls back to hex.
        assert!(record_line(&publish(Encoding::Json, b"{\"a\":")).is_some_and(|l| l.contains("\"hex\":")));
        let drop = Emission {
            at: Duration::ZERO,
            time_ms: 7,
            device: 0,
            action: Action::Drop { will_topic: Arc::from("sensors/t-000/status") },
        };
        assert_eq!(record_line(&drop).as_deref(), Some(r#"{"t":7,"topic":"sensors/t-000/status","text":"offline"}"#));
        assert_eq!(record_line(&Emission { action: Action::Connect, ..drop }), None);
    }

    /// Writer and reader agree: every line the simulator writes reads back as the same message.
    #[test]
    fn a_line_reads_back_as_written() {
        for (encoding, payload) in [
            (Encoding::Json, &br#"{"device":"t-000","seq":3,"kind":"reading","temperature":21.5}"#[..]),
            (Encoding::Text, b"online"),
            (Encoding::Binary, &[0x01, 0xab, 0x00]),
        ] {
            let text = record_line(&publish(encoding, payload)).expect("a message");
            let line: RecordLine = serde_json::from_str(&text).expect("reads back");
            assert_eq!(serde_json::to_string(&line).expect("writes"), text, "same bytes again");
            assert_eq!(line.t, 1_000_001_500);
            let Ok(Some((topic, body))) = line.message() else { panic!("a message: {text}") };
            assert_eq!(topic, "sensors/t-000/temperature");
            let bytes = match body {
                RecordBody::Json(json) => json.get().as_bytes().to_vec(),
                RecordBody::Text(text) => text.as_bytes().to_vec(),
                RecordBody::Hex(hex) => unhex(hex).expect("hex"),
            };
            assert_eq!(bytes, payload, "{text}");
        }
        let clock: RecordLine = serde_json::from_str(r#"{"t":70000}"#).expect("a clock step");
        assert!(matches!(clock.message(), Ok(None)));
        let bad = |text: &str| serde_json::from_str::<RecordLine>(text).expect("parses").message().map(|_| ());
        assert_eq!(bad(r#"{"t":1,"text":"x"}"#), Err(RecordLineError::NoTopic));
        assert_eq!(bad(r#"{"t":1,"topic":"a","text":"x","hex":"00"}"#), Err(RecordLineError::Body));
        assert_eq!(bad(r#"{"t":1,"topic":"a"}"#), Err(RecordLineError::Body));
        assert!(serde_json::from_str::<RecordLine>(r#"{"t":1,"topic":"a","extra":1}"#).is_err());
        assert_eq!(unhex("01 AB00"), Some(vec![1, 0xab, 0]));
        assert_eq!(unhex("0"), None);
    }

    #[test]
    fn recorder_counts_lines() {
        let mut r = Recorder::new(Vec::new());
        r.record(&publish(Encoding::Binary, &[1])).expect("writes");
        r.record(&publish(Encoding::Binary, &[2])).expect("writes");
        assert_eq!(r.lines(), 2);
        let bytes = r.finish().expect("flushes");
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
    }
}

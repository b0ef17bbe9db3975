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
//! The truth file has one line per fault instance that began during the run:
//!
//! ```text
//! {"device":"t-003","group":"temperature","fault":"overheat","start_ms":1732170010000,"end_ms":1732170016000,"duration_ms":6000,"value":90.0,"channel":"temperature","messages":6}
//! ```
//!
//! `start_ms`/`end_ms` as [`Truth`] says, then the fault's parameters (durations in ms),
//! then `messages`, the count of messages it withheld or shaped.

use std::io::{self, Write};
use std::time::Duration;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::scenario::FaultKind;
use crate::sim::{Action, Emission, Encoding, Truth, WILL_PAYLOAD};

/// The recording line of `e`; `None` for what puts nothing on the wire (a connect).
pub fn record_line(e: &Emission) -> Option<String> {
    let (topic, body) = match &e.action {
        Action::Connect => return None,
        Action::Publish(p) => (&*p.topic, body(p.encoding, &p.payload)),
        Action::Drop { will_topic } => (&**will_topic, text_body(WILL_PAYLOAD)),
    };
    let topic = serde_json::to_string(topic).unwrap_or_else(|_| "\"\"".to_owned());
    Some(format!("{{\"t\":{},\"topic\":{topic},{body}}}", e.time_ms))
}

fn body(encoding: Encoding, payload: &[u8]) -> String {
    match encoding {
        Encoding::Json => match std::str::from_utf8(payload) {
            // The simulator's JSON payloads are compact JSON already: copied as they are.
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => format!("\"payload\":{text}"),
            _ => hex_body(payload),
        },
        Encoding::Text => match std::str::from_utf8(payload) {
            Ok(text) => text_body(text),
            Err(_) => hex_body(payload),
        },
        Encoding::Binary => hex_body(payload),
    }
}

fn text_body(text: &str) -> String {
    format!("\"text\":{}", serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()))
}

fn hex_body(payload: &[u8]) -> String {
    format!("\"hex\":\"{}\"", hex(payload))
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
                m.serialize_entry("value", value)?;
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

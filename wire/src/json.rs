//! The JSON mapping: a [`Message`] as the flat object the agent's rules see.
//!
//! ```text
//! reading:   {"device":"t-001","seq":17,"ts":1732170000000,"kind":"reading","temperature":23.5}
//! heartbeat: {"device":"t-001","seq":18,"ts":1732170001000,"kind":"heartbeat","uptime_s":120}
//! event:     {"device":"t-001","seq":19,"ts":1732170002000,"kind":"event","code":7}
//! ```
//!
//! Written as a plain `Serialize` impl so it needs neither `std` nor a JSON crate here: the
//! simulator writes it with `serde_json::to_vec`, the agent serializes it straight into a rule
//! value (`rhai::serde::to_dynamic`, in its `decode`), and both get the same keys in the same
//! order. This is the only copy of the mapping.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::{Body, Message};

/// A [`Message`] viewed as the JSON mapping; made by [`Message::json`].
///
/// Keys, in order: `device`, `seq`, `ts`, `kind`, then for a reading one key per sample
/// channel (its value from [`Sample::value_f64`](crate::Sample::value_f64); non-finite
/// values are serialized as `None`: `null` in JSON), for a heartbeat `uptime_s`, for an event
/// `code`.
#[derive(Debug, Clone, Copy)]
pub struct JsonView<'a>(pub &'a Message);

impl Serialize for JsonView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let msg = self.0;
        let extra = match &msg.body {
            Body::Reading(samples) => samples.len(),
            Body::Heartbeat { .. } | Body::Event { .. } => 1,
        };
        let mut map = serializer.serialize_map(Some(4 + extra))?;
        map.serialize_entry("device", msg.device.as_str())?;
        map.serialize_entry("seq", &msg.seq)?;
        map.serialize_entry("ts", &msg.timestamp_ms)?;
        map.serialize_entry("kind", msg.kind())?;
        match &msg.body {
            Body::Reading(samples) => {
                for s in samples {
                    // Non-finite: `None`, which JSON writes as `null` (as it would NaN) and a
                    // serializer into other values (the agent's rule values) sees as "no value".
                    let v = s.value_f64();
                    map.serialize_entry(s.channel.as_str(), &Some(v).filter(|v| v.is_finite()))?;
                }
            }
            Body::Heartbeat { uptime_s } => map.serialize_entry("uptime_s", uptime_s)?,
            Body::Event { code } => map.serialize_entry("code", code)?,
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::Message;

    fn text(msg: &Message) -> std::string::String {
        serde_json::to_string(&msg.json()).expect("serializes")
    }

    #[test]
    fn reading_shape() {
        let msg = Message::reading("t-001", 17, 1_732_170_000_000, &[("temperature", 23.5), ("humidity", 41.2)])
            .expect("valid");
        assert_eq!(
            text(&msg),
            r#"{"device":"t-001","seq":17,"ts":1732170000000,"kind":"reading","temperature":23.5,"humidity":41.2}"#
        );
    }

    #[test]
    fn heartbeat_shape() {
        let msg = Message::heartbeat("t-001", 18, 1_732_170_001_000, 120).expect("valid");
        assert_eq!(text(&msg), r#"{"device":"t-001","seq":18,"ts":1732170001000,"kind":"heartbeat","uptime_s":120}"#);
    }

    #[test]
    fn event_shape() {
        let msg = Message::event("t-001", 19, 1_732_170_002_000, 7).expect("valid");
        assert_eq!(text(&msg), r#"{"device":"t-001","seq":19,"ts":1732170002000,"kind":"event","code":7}"#);
    }

    #[test]
    fn value_and_text_agree() {
        // The agent may build a Value directly from a decoded frame, or parse JSON text
        // from a JSON-format device: both must give the same numbers.
        let msg = Message::reading("t-001", 1, 0, &[("temperature", 22.1)]).expect("valid");
        let direct = serde_json::to_value(msg.json()).expect("serializes");
        let parsed: serde_json::Value = serde_json::from_str(&text(&msg)).expect("parses");
        assert_eq!(direct, parsed);
        assert_eq!(direct["temperature"], serde_json::json!(22.1));
    }

    #[test]
    fn non_finite_is_null() {
        let msg = Message::reading("t-001", 1, 0, &[("temperature", f32::NAN)]).expect("valid");
        assert!(text(&msg).ends_with(r#""temperature":null}"#));
    }
}

//! Composite events -> CloudEvents 1.0 (structured JSON) on their upstream topics.

use edgewatch_engine::{Composite, Dynamic};
use serde::Serialize;

/// A CloudEvents 1.0 envelope, structured mode.
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a> {
    pub specversion: &'static str,
    /// Deterministic: the same rule, key and input give the same id, so consumers can
    /// deduplicate redeliveries.
    pub id: String,
    /// `edgewatch/<agent id>`.
    pub source: &'a str,
    /// `edgewatch.<rule>`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The rule's key, usually the device.
    pub subject: &'a str,
    /// RFC 3339, from the triggering input's event time.
    pub time: String,
    pub datacontenttype: &'static str,
    pub data: &'a Dynamic,
}

impl<'a> CloudEvent<'a> {
    /// The envelope of `event` as sent by agent `source`.
    pub fn new(event: &'a Composite, source: &'a str) -> Self {
        CloudEvent {
            specversion: "1.0",
            id: event.id.to_string(),
            source,
            ty: format!("edgewatch.{}", event.rule),
            subject: &event.key,
            time: event.time.to_rfc3339(),
            datacontenttype: "application/json",
            data: &event.data,
        }
    }

    /// The JSON bytes to publish.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a Dynamic cannot fail for values rules can build; fall back to an
        // envelope without data rather than lose the event.
        serde_json::to_vec(self).unwrap_or_else(|error| {
            tracing::error!(%error, id = %self.id, "Event data is not serialisable; sending it without data.");
            let empty = Dynamic::UNIT;
            let bare =
                CloudEvent { data: &empty, id: self.id.clone(), ty: self.ty.clone(), time: self.time.clone(), ..*self };
            serde_json::to_vec(&bare).unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatch_engine::{CompositeId, Timestamp};

    #[test]
    fn envelope_fields() {
        let mut data = edgewatch_engine::Map::new();
        data.insert("celsius".into(), Dynamic::from_float(85.5));
        let c = Composite {
            id: CompositeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            input: edgewatch_engine::EventId(1),
            rule: "overheat".into(),
            key: "t-01".into(),
            time: Timestamp(1_732_170_000_123),
            data: data.into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(&CloudEvent::new(&c, "edgewatch/gw-1").to_json()).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "specversion": "1.0",
                "id": "01234567-89ab-cdef-0011-223344556677",
                "source": "edgewatch/gw-1",
                "type": "edgewatch.overheat",
                "subject": "t-01",
                "time": "2024-11-21T06:20:00.123Z",
                "datacontenttype": "application/json",
                "data": {"celsius": 85.5}
            })
        );
    }
}

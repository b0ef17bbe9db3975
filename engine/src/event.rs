//! Input events: what the agent decoded from one MQTT message, ready for the rules.

use crate::time::Timestamp;
use rhai::Dynamic;
use xxhash_rust::xxh3::Xxh3;

/// Identity of an input message. Composite events derive their ids from it, so the same
/// input always yields the same CloudEvents `id` and downstream can deduplicate replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventId(pub u128);

impl EventId {
    /// Identity from the message content: its topic and its payload bytes.
    pub fn from_content(topic: &str, payload: &[u8]) -> Self {
        let mut h = Xxh3::new();
        h.update(topic.as_bytes());
        h.update(&[0]);
        h.update(payload);
        EventId(h.digest128())
    }
}

/// Persisted as 32 hex digits: some serde formats and buffers have no 128-bit integers.
impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map(EventId).map_err(serde::de::Error::custom)
    }
}

/// One decoded input message.
#[derive(Debug, Clone)]
pub struct Event {
    /// The MQTT topic it arrived on; rules match their patterns against it.
    pub topic: String,
    /// The decoded payload: a map for JSON objects and wire frames, a scalar for plain values.
    pub payload: Dynamic,
    /// Event time: when it happened, as far as the agent knows.
    pub time: Timestamp,
    /// Identity of the message, for deterministic output ids.
    pub id: EventId,
    /// When it arrived (ms since the epoch): with `id`, how lineage refers to it
    /// ([`crate::lineage::Ref`]). Event time may be rewritten from the payload; this is not.
    pub arrived: i64,
    /// A composite event re-entering as an input (chaining): `id` is its id.
    pub chained: bool,
}

impl Event {
    /// An event whose id is derived from its topic and payload bytes.
    pub fn new(topic: impl Into<String>, payload: Dynamic, raw: &[u8], time: Timestamp) -> Self {
        let topic = topic.into();
        let id = EventId::from_content(&topic, raw);
        Event { topic, payload, time, id, arrived: time.millis(), chained: false }
    }
}

//! An event waiting to go upstream ([`OutboxEntry`]), its JSON form on disk and in
//! snapshots (a payload that is not UTF-8 is written `hex:...`), and what it counts against
//! `state.max_outbox_mb` ([`OutboxEntry::size`]).

use serde::{Deserialize, Serialize};

/// Bytes counted for an entry besides its topic and payload (sequence number, QoS, flags,
/// bookkeeping, allocation), so that a flood of empty events is bounded too.
pub const ENTRY_OVERHEAD: u64 = 64;

/// An event waiting to go upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub topic: String,
    /// Shared, not copied, between the outbox in memory and the publish.
    #[serde(with = "serde_bytes_hex")]
    pub payload: bytes::Bytes,
    pub qos: u8,
    /// Published with the retain flag (status documents).
    #[serde(default)]
    pub retain: bool,
    /// A composite event: its publication and acknowledgement go to the event log
    /// (`crate::events`), which has its record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub traced: bool,
}

impl OutboxEntry {
    /// What it counts against `max_outbox_mb` (see the module docs).
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64 + ENTRY_OVERHEAD
    }
}

mod serde_bytes_hex {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_str(&format!("hex:{}", firmware_sim::record::hex(b))),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("hex:") {
            None => Ok(s.into_bytes().into()),
            Some(h) => (0..h.len())
                .step_by(2)
                .map(|i| h.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .map(bytes::Bytes::from)
                .ok_or_else(|| serde::de::Error::custom("bad hex")),
        }
    }
}

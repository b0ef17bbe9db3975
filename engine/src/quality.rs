//! Data quality before the rules: event time, duplicates, and out-of-order delivery.
//!
//! - Event time comes from a configured payload field when present (integer milliseconds,
//!   float seconds, or RFC 3339 text), else it is the arrival time.
//! - Duplicates (same `device` and `seq`, or the same configured id field) are dropped: per
//!   device a 64-message window of sequence numbers, as in IPsec's anti-replay check.
//! - Events timed by their payload are held up to the allowed lateness and released in
//!   event-time order; one older than what was already released is late and is returned
//!   for dead-lettering instead of being folded in out of order.

use crate::event::{Event, EventId};
use crate::output::Touched;
use crate::{FastMap, FastSet};
use rhai::{Dynamic, Map};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// Sequence numbers remembered per device.
const SEQ_WINDOW: u32 = 64;
/// Devices whose sequence numbers are tracked.
const MAX_DEVICES: usize = 100_000;
/// Ids remembered for id-field deduplication.
const MAX_IDS: usize = 100_000;
/// Longest device id or message id remembered for deduplication, in bytes: so the memory
/// the windows take is bounded (longer ones are processed, not deduplicated).
const MAX_ID_BYTES: usize = crate::kinds::keys::MAX_KEY_BYTES;
/// Events held for reordering at most.
const MAX_BUFFERED: usize = 100_000;

/// Reads event time from `field` of a map payload.
pub(crate) fn payload_time(payload: &Dynamic, field: &str) -> Option<i64> {
    let map = payload.read_lock::<Map>()?;
    let v = map.get(field)?;
    if let Ok(i) = v.as_int() {
        return Some(i);
    }
    if let Ok(f) = v.as_float() {
        return f.is_finite().then_some((f * 1000.0) as i64);
    }
    if v.is_string() {
        let t = humantime::parse_rfc3339_weak(&v.to_string()).ok()?;
        return Some(crate::Timestamp::from_system_time(t).millis());
    }
    None
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct SeqWindow {
    max: u32,
    seen: u64,
}

/// Duplicate detection.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    devices: FastMap<Box<str>, SeqWindow>,
    ids: FastSet<Box<str>>,
    id_order: VecDeque<Box<str>>,
}

impl Dedup {
    /// Has this payload been seen? Records it if not; names what changed in `touched`.
    pub(crate) fn is_duplicate(
        &mut self,
        payload: &Dynamic,
        id_field: Option<&str>,
        touched: &mut Vec<Touched>,
    ) -> bool {
        let Some(map) = payload.read_lock::<Map>() else { return false };
        if let Some(field) = id_field {
            if let Some(id) = map.get(field) {
                let id: Box<str> = id.to_string().into();
                if id.len() > MAX_ID_BYTES {
                    return false;
                }
                if self.ids.contains(&id) {
                    return true;
                }
                if self.id_order.len() >= MAX_IDS {
                    if let Some(old) = self.id_order.pop_front() {
                        self.ids.remove(&old);
                        touched.push(Touched::Dedup(format!("id:{old}").into()));
                    }
                }
                touched.push(Touched::Dedup(format!("id:{id}").into()));
                self.ids.insert(id.clone());
                self.id_order.push_back(id);
                return false;
            }
        }
        let (Some(device), Some(seq)) = (map.get("device"), map.get("seq").and_then(|s| s.as_int().ok())) else {
            return false;
        };
        let Ok(seq) = u32::try_from(seq) else { return false };
        if !device.is_string() {
            return false;
        }
        let device = device.to_string();
        if device.len() > MAX_ID_BYTES {
            return false;
        }
        let dup = match self.devices.get_mut(device.as_str()) {
            None => {
                if self.devices.len() >= MAX_DEVICES {
                    return false;
                }
                self.devices.insert(device.as_str().into(), SeqWindow { max: seq, seen: 1 });
                false
            }
            Some(w) => {
                if seq > w.max {
                    let shift = seq - w.max;
                    w.seen = if shift >= 64 { 0 } else { w.seen << shift };
                    w.seen |= 1;
                    w.max = seq;
                    false
                } else if w.max - seq >= SEQ_WINDOW {
                    // Far behind: the device restarted its counter. Start over from here.
                    *w = SeqWindow { max: seq, seen: 1 };
                    false
                } else {
                    let bit = 1u64 << (w.max - seq);
                    let dup = w.seen & bit != 0;
                    w.seen |= bit;
                    dup
                }
            }
        };
        if !dup {
            touched.push(Touched::Dedup(format!("seq:{device}").into()));
        }
        dup
    }

    /// The persisted form of one entry (`seq:<device>` or `id:<id>`), `None` if absent.
    pub(crate) fn export(&self, name: &str) -> Option<Vec<u8>> {
        if let Some(device) = name.strip_prefix("seq:") {
            return self.devices.get(device).and_then(|w| serde_json::to_vec(w).ok());
        }
        let id = name.strip_prefix("id:")?;
        self.ids.contains(id).then(|| b"1".to_vec())
    }

    /// Every entry, for snapshots.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.devices.keys().map(|d| format!("seq:{d}")).collect();
        v.extend(self.id_order.iter().map(|i| format!("id:{i}")));
        v
    }

    /// Restores one entry.
    pub(crate) fn import(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        if let Some(device) = name.strip_prefix("seq:") {
            let w: SeqWindow = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            self.devices.insert(device.into(), w);
            return Ok(());
        }
        let id = name.strip_prefix("id:").ok_or_else(|| format!("unknown dedup entry `{name}`"))?;
        if self.ids.insert(id.into()) {
            self.id_order.push_back(id.into());
        }
        Ok(())
    }
}

/// Holds payload-timed events until the allowed lateness has passed, and releases them in
/// event-time order. Whether an event is too late is the engine's call (its watermark).
/// Held events are state: they are named in `touched` when they come and go, so a crash
/// does not lose messages that were acknowledged while they waited.
#[derive(Debug, Default)]
pub(crate) struct Reorder {
    /// Ordered by (event time, id, name): ties broken by content, so arrival order never matters.
    buffer: BinaryHeap<Reverse<(i64, EventId, Arc<str>)>>,
    events: HashMap<Arc<str>, Event>,
    /// Latest event time seen.
    max_seen: Option<i64>,
}

/// A held event, as persisted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HeldEvent {
    topic: String,
    payload: Dynamic,
    time: i64,
    id: EventId,
    /// Arrival time, for lineage (state saved before it existed: the event time).
    #[serde(default)]
    arrived: Option<i64>,
}

impl Reorder {
    /// Holds `event`. When more than the bound wait, the oldest is released early into `ready`.
    pub(crate) fn push(&mut self, event: Event, ready: &mut Vec<Event>, touched: &mut Vec<Touched>) {
        let t = event.time.millis();
        self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        let name: Arc<str> = format!("{t:016x}-{:032x}", event.id.0).into();
        touched.push(Touched::Held(name.clone()));
        self.buffer.push(Reverse((t, event.id, name.clone())));
        self.events.insert(name, event);
        while self.buffer.len() > MAX_BUFFERED {
            self.release_one(ready, touched);
        }
    }

    /// The latest event time seen.
    pub(crate) fn max_seen(&self) -> Option<i64> {
        self.max_seen
    }

    /// Releases events up to event time `upto` (inclusive), in order.
    pub(crate) fn release(&mut self, upto: i64, ready: &mut Vec<Event>, touched: &mut Vec<Touched>) {
        while self.buffer.peek().is_some_and(|Reverse((t, _, _))| *t <= upto) {
            self.release_one(ready, touched);
        }
    }

    fn release_one(&mut self, ready: &mut Vec<Event>, touched: &mut Vec<Touched>) {
        if let Some(Reverse((_, _, name))) = self.buffer.pop() {
            if let Some(e) = self.events.remove(&name) {
                ready.push(e);
            }
            touched.push(Touched::Held(name));
        }
    }

    /// How many events wait.
    pub(crate) fn len(&self) -> usize {
        self.buffer.len()
    }

    /// The persisted form of a held event, `None` if it is no longer held.
    pub(crate) fn export(&self, name: &str) -> Option<Vec<u8>> {
        let e = self.events.get(name)?;
        let held = HeldEvent {
            topic: e.topic.clone(),
            payload: e.payload.clone(),
            time: e.time.millis(),
            id: e.id,
            arrived: Some(e.arrived),
        };
        serde_json::to_vec(&held).ok()
    }

    /// Every held event's name.
    pub(crate) fn names(&self) -> Vec<Arc<str>> {
        self.events.keys().cloned().collect()
    }

    /// Holds a persisted event again.
    pub(crate) fn import(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let h: HeldEvent = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let arrived = h.arrived.unwrap_or(h.time);
        let event = Event {
            topic: h.topic,
            payload: h.payload,
            time: crate::Timestamp(h.time),
            id: h.id,
            arrived,
            chained: false,
        };
        let name: Arc<str> = name.into();
        self.max_seen = Some(self.max_seen.map_or(h.time, |m| m.max(h.time)));
        self.buffer.push(Reverse((h.time, h.id, name.clone())));
        self.events.insert(name, event);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Dedup {
        fn is_duplicate_t(&mut self, p: &Dynamic, id: Option<&str>) -> bool {
            self.is_duplicate(p, id, &mut Vec::new())
        }
    }

    fn reading(device: &str, seq: i64) -> Dynamic {
        let mut m = Map::new();
        m.insert("device".into(), device.into());
        m.insert("seq".into(), Dynamic::from_int(seq));
        Dynamic::from_map(m)
    }

    #[test]
    fn sequence_numbers_dedup_within_a_window() {
        let mut d = Dedup::default();
        assert!(!d.is_duplicate_t(&reading("a", 1), None));
        assert!(!d.is_duplicate_t(&reading("a", 3), None));
        assert!(d.is_duplicate_t(&reading("a", 1), None));
        assert!(!d.is_duplicate_t(&reading("a", 2), None), "late but new");
        assert!(d.is_duplicate_t(&reading("a", 2), None));
        assert!(!d.is_duplicate_t(&reading("b", 1), None), "another device");
        assert!(!d.is_duplicate_t(&reading("a", 500), None));
        assert!(!d.is_duplicate_t(&reading("a", 0), None), "a restarted counter is accepted");
        assert!(d.is_duplicate_t(&reading("a", 0), None));
    }

    #[test]
    fn id_field_dedup() {
        let mut d = Dedup::default();
        let mut m = Map::new();
        m.insert("msg_id".into(), "x-1".into());
        let p = Dynamic::from_map(m);
        assert!(!d.is_duplicate(&p, Some("msg_id"), &mut Vec::new()));
        assert!(d.is_duplicate(&p, Some("msg_id"), &mut Vec::new()));
    }

    #[test]
    fn payload_times() {
        let mut m = Map::new();
        m.insert("ts".into(), Dynamic::from_int(1500));
        m.insert("tf".into(), Dynamic::from_float(1.5));
        m.insert("tr".into(), "1970-01-01T00:00:01.500Z".into());
        let p = Dynamic::from_map(m);
        assert_eq!(payload_time(&p, "ts"), Some(1500));
        assert_eq!(payload_time(&p, "tf"), Some(1500));
        assert_eq!(payload_time(&p, "tr"), Some(1500));
        assert_eq!(payload_time(&p, "nope"), None);
    }
}

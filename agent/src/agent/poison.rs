//! Poison messages: after a crash, the first redeliveries may include the message that
//! crashed the agent. Each such delivery is counted on disk before it is processed; one that
//! reaches `limits.max_deliveries` is dead-lettered unprocessed (`poison`) and acknowledged,
//! so the session moves on instead of crashing the agent again and again.
//!
//! A delivery is recognised by a hash of topic and payload: rumqttd gives redeliveries new
//! packet ids, and Mosquitto's `dup` flag is not sent by every broker.

use crate::store::{Batch, Store};

/// What to do with a message that may be a redelivery of the one the last run crashed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Process it; its count (under this hash) is forgotten with its effects.
    Process(Option<u64>),
    /// It crashed the agent on its earlier deliveries: dead-letter it unprocessed.
    Quarantine,
}

/// The identity of a delivery, across runs.
pub(super) fn delivery_hash(topic: &str, payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(payload, xxhash_rust::xxh3::xxh3_64(topic.as_bytes()))
}

/// Counts this delivery in `batch` (which must reach the disk before the message is
/// processed), or says to quarantine it. The first delivery, before the crash, was not
/// counted: the normal path writes nothing.
pub(super) fn count(store: &Store, batch: &mut Batch, hash: u64, max_deliveries: u32) -> Delivery {
    let failed = store.deliveries(hash).saturating_add(1);
    if failed >= max_deliveries {
        store.forget_delivery(batch, hash);
        return Delivery::Quarantine;
    }
    store.count_delivery(batch, hash, failed);
    Delivery::Process(Some(hash))
}

/// The error a quarantined message's dead letter carries.
pub(super) fn quarantine_reason(max_deliveries: u32) -> String {
    format!("the agent stopped without finishing it on {max_deliveries} deliveries; quarantined unprocessed")
}

/// Fault injection for tests (feature `failpoints`, which the packages never have): the
/// process aborts, as in a crash or a power cut, just before it processes a payload that
/// contains the text in `EDGEWATCH_FAILPOINT_CRASH_ON`.
#[cfg(feature = "failpoints")]
pub(super) fn crash_on(payload: &[u8]) {
    use std::sync::OnceLock;
    static NEEDLE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    let needle = NEEDLE.get_or_init(|| {
        std::env::var("EDGEWATCH_FAILPOINT_CRASH_ON").ok().filter(|n| !n.is_empty()).map(String::into_bytes)
    });
    if let Some(n) = needle {
        if payload.windows(n.len()).any(|w| w == n.as_slice()) {
            eprintln!("failpoint: crashing on a payload with {:?}", String::from_utf8_lossy(n));
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_counted_until_the_limit_then_quarantined() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), 1 << 20, 1 << 20).expect("store");
        let hash = delivery_hash("sensors/a", b"{\"crash\":1}");
        assert_ne!(hash, delivery_hash("sensors/b", b"{\"crash\":1}"), "the topic is part of it");
        for expected in [Delivery::Process(Some(hash)), Delivery::Process(Some(hash))] {
            let mut batch = Batch::default();
            assert_eq!(count(&store, &mut batch, hash, 3), expected);
            store.apply(batch).expect("apply");
        }
        let mut batch = Batch::default();
        assert_eq!(count(&store, &mut batch, hash, 3), Delivery::Quarantine);
        store.apply(batch).expect("apply");
        assert_eq!(store.deliveries(hash), 0, "forgotten once quarantined");
    }
}

//! Actions waiting for their sinks on disk (`a/<sink>\0<seq: u64 BE>`, each the JSON of a
//! [`Pending`]): inserted in the batch of the input that caused them, so they are durable
//! exactly when that input's other effects are; deleted one by one when delivered or given up
//! (no flush: a delete lost in a crash only sends the action again, with the same
//! Idempotency-Key, which the receiver deduplicates).

use super::{Batch, Store, StoreError};
use crate::sinks::queue::Pending;
use std::collections::BTreeMap;

/// Actions on disk by sink, each sink's oldest first.
pub type LeftActions = BTreeMap<String, Vec<(u64, Pending)>>;

/// The key of action `seq` of `sink`: a sink's keys scan in sequence order.
fn key(sink: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sink.len() + 1 + 8);
    k.extend_from_slice(b"a/");
    k.extend_from_slice(sink.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sink and sequence number in an action key.
fn parse_key(k: &[u8]) -> Option<(&str, u64)> {
    let rest = k.strip_prefix(b"a/")?;
    // The sequence number is the last 8 bytes (zeros among them), after the NUL.
    let nul = rest.len().checked_sub(9)?;
    if rest[nul] != 0 {
        return None;
    }
    let sink = std::str::from_utf8(&rest[..nul]).ok()?;
    let seq = rest[nul + 1..].try_into().ok().map(u64::from_be_bytes)?;
    Some((sink, seq))
}

impl Store {
    /// Adds action `seq` of `sink` (`bytes`: the JSON of its [`Pending`]) to `batch`.
    pub fn put_action_bytes(&self, batch: &mut Batch, sink: &str, seq: u64, bytes: Vec<u8>) {
        batch.inner.insert(key(sink, seq), bytes);
        batch.changes += 1;
    }

    /// Removes action `seq` of `sink` with `batch` (dropped for space).
    pub fn drop_action(&self, batch: &mut Batch, sink: &str, seq: u64) {
        batch.inner.remove(key(sink, seq));
        batch.changes += 1;
    }

    /// Removes a delivered (or given up) action now, without waiting for the disk.
    pub fn remove_action(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.db.remove(key(sink, seq)).map(|_| ()).map_err(|e| self.db_err(e))
    }

    /// Every action an earlier run left, by sink, oldest first. Unreadable ones are removed
    /// and counted (the second number).
    pub fn load_actions(&self) -> Result<(LeftActions, usize), StoreError> {
        let mut out = LeftActions::new();
        let mut bad = Vec::new();
        for item in self.db.scan_prefix(b"a/") {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            match (parse_key(&k), serde_json::from_slice::<Pending>(&v)) {
                (Some((sink, seq)), Ok(p)) => out.entry(sink.to_owned()).or_default().push((seq, p)),
                _ => bad.push(k),
            }
        }
        for k in &bad {
            self.db.remove(k).map_err(|e| self.db_err(e))?;
        }
        Ok((out, bad.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_scan_in_order_per_sink() {
        let k = key("pager", 258);
        assert_eq!(parse_key(&k), Some(("pager", 258)));
        assert!(key("pager", 2) < key("pager", 10), "big-endian: numeric order");
        assert_eq!(parse_key(&key("a-b_c", 0)), Some(("a-b_c", 0)));
        assert_eq!(parse_key(b"a/x"), None);
    }
}

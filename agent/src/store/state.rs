//! The engine's state and the agent's marks in the store: per-key rule state, duplicate
//! windows, held events, the watermark, open history roll-ups and rules' past per key
//! (`s/`, `d/`, `h/`, `w/`, `r/`, `q/`: `q/c/` closed buckets, `q/o/` open ones), the
//! "alive" and "clean stop" marks (`m/`), delivery counts of possibly poisonous
//! messages (`p/`), and the Sparkplug B sessions, one record per edge node (`g/`).

use super::{Batch, Store, StoreError, u64_key};
use edgewatch_engine::Touched;

pub(super) fn state_key(t: &Touched) -> Vec<u8> {
    match t {
        Touched::Rule { rule, key } => {
            let mut k = Vec::with_capacity(3 + rule.len() + key.len());
            k.extend_from_slice(b"s/");
            k.extend_from_slice(rule.as_bytes());
            k.push(0);
            k.extend_from_slice(key.as_bytes());
            k
        }
        Touched::Dedup(name) => [b"d/".as_slice(), name.as_bytes()].concat(),
        Touched::Held(name) => [b"h/".as_slice(), name.as_bytes()].concat(),
        Touched::Watermark => b"w/watermark".to_vec(),
        Touched::Series { key, field } => pair_key(b"r/", key, field),
        Touched::Past { rule, key } => pair_key(b"q/c/", rule, key),
        Touched::PastOpen { rule, key } => pair_key(b"q/o/", rule, key),
    }
}

/// `<prefix><a>\0<b>`: `r/<key>\0<field>` (a series' open roll-ups), `q/c/<rule>\0<key>` (a
/// rule's closed past buckets) or `q/o/<rule>\0<key>` (its open ones).
fn pair_key(prefix: &[u8], a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 1 + a.len() + b.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

/// The engine's name of a stored state key.
pub(super) fn touched_of(k: &[u8]) -> Option<Touched> {
    if let Some(rest) = k.strip_prefix(b"s/") {
        let split = rest.iter().position(|b| *b == 0)?;
        let rule = std::str::from_utf8(&rest[..split]).ok()?;
        let key = std::str::from_utf8(&rest[split + 1..]).ok()?;
        return Some(Touched::Rule { rule: rule.into(), key: key.into() });
    }
    if let Some(rest) = k.strip_prefix(b"r/") {
        let split = rest.iter().rposition(|b| *b == 0)?;
        let key = std::str::from_utf8(&rest[..split]).ok()?;
        let field = std::str::from_utf8(&rest[split + 1..]).ok()?;
        return Some(Touched::Series { key: key.into(), field: field.into() });
    }
    for (prefix, closed) in [(b"q/c/", true), (b"q/o/", false)] {
        if let Some(rest) = k.strip_prefix(prefix) {
            let split = rest.iter().position(|b| *b == 0)?;
            let rule: std::sync::Arc<str> = std::str::from_utf8(&rest[..split]).ok()?.into();
            let key: std::sync::Arc<str> = std::str::from_utf8(&rest[split + 1..]).ok()?.into();
            return Some(if closed { Touched::Past { rule, key } } else { Touched::PastOpen { rule, key } });
        }
    }
    if k == b"w/watermark" {
        return Some(Touched::Watermark);
    }
    if let Some(held) = k.strip_prefix(b"h/") {
        return Some(Touched::Held(std::str::from_utf8(held).ok()?.into()));
    }
    let name = std::str::from_utf8(k.strip_prefix(b"d/")?).ok()?;
    Some(Touched::Dedup(name.into()))
}

/// Where engine state lives: rule state, duplicate windows, held events, the watermark,
/// open history roll-ups, rules' past.
pub(super) const STATE_PREFIXES: [&[u8]; 6] = [b"s/", b"d/", b"h/", b"w/", b"r/", b"q/"];

/// Whether the piece stored at `k` is one the engine saves as raw bytes ([`Touched::raw`]).
fn raw_piece(k: &[u8]) -> bool {
    touched_of(k).is_some_and(|t| t.raw())
}

/// A state value as a snapshot carries it, as text: raw pieces go as base64; what earlier
/// versions saved as text in their place (base64 already, or JSON) goes as it is.
pub(super) fn value_text(k: &[u8], v: &[u8]) -> String {
    use base64::Engine as _;
    match raw_piece(k) && v.first().is_some_and(|b| *b < b' ') {
        true => base64::engine::general_purpose::STANDARD_NO_PAD.encode(v),
        false => String::from_utf8_lossy(v).into_owned(),
    }
}

/// The inverse of [`value_text`]: a raw piece's text that is not JSON is base64 (what does
/// not decode stays as it is, for the engine to refuse with its error).
pub(super) fn value_bytes(k: &str, text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let decoded = (raw_piece(k.as_bytes()) && !text.starts_with('{'))
        .then(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).ok())
        .flatten();
    decoded.unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The key of a message's delivery count.
fn delivery_key(hash: u64) -> [u8; 10] {
    u64_key(b"p/", hash)
}

impl Store {
    /// Every saved engine state, to import at start.
    pub fn load_state(&self) -> Result<Vec<(Touched, Vec<u8>)>, StoreError> {
        Ok(self.state_records()?.into_iter().filter_map(|(k, v)| Some((touched_of(&k)?, v))).collect())
    }

    /// Every saved engine state by its stored key: the keys in place, with the journal's
    /// newer values instead where it holds them.
    pub(super) fn state_records(&self) -> Result<Vec<super::journal::Saved>, StoreError> {
        let journal = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut state = Vec::new();
        for prefix in STATE_PREFIXES {
            for item in self.db.scan_prefix(prefix) {
                let (k, val) = item.map_err(|e| self.db_err(e))?;
                if !journal.holds(&k) {
                    state.push((k.to_vec(), val.to_vec()));
                }
            }
        }
        journal.newest_values(&self.db, &mut state).map_err(|e| self.db_err(e))?;
        Ok(state)
    }

    /// Records a state change (or deletion) in `batch`.
    pub fn put_state(&self, batch: &mut Batch, what: &Touched, value: Option<Vec<u8>>) {
        batch.put_state(state_key(what), value);
    }

    /// Records that the agent is running now (for downtime after a crash).
    pub fn mark_alive(&self, batch: &mut Batch, now_ms: i64) {
        batch.inner.insert(b"m/alive".as_slice(), &now_ms.to_be_bytes());
        batch.changes += 1;
    }

    /// Records in `batch` that audit entries up to `seq` are queued for upstream (in the same
    /// batch as their outbox entries): a start queues those after it again.
    pub fn mark_audit_queued(&self, batch: &mut Batch, seq: u64) {
        batch.inner.insert(b"m/audit".as_slice(), &seq.to_be_bytes());
        batch.changes += 1;
    }

    /// The last audit entry queued for upstream, if any ever was.
    pub fn audit_queued(&self) -> Option<u64> {
        let v = self.db.get(b"m/audit").ok()??;
        v.as_ref().try_into().ok().map(u64::from_be_bytes)
    }

    /// Records a clean stop: the next start follows no crash.
    pub fn mark_clean_stop(&self, batch: &mut Batch) {
        batch.inner.insert(b"m/clean".as_slice(), b"1".as_slice());
        batch.changes += 1;
    }

    /// Did the last run stop cleanly? Asked once at start: the mark is removed, so that a
    /// crash of this run is seen by the next. A store that never ran counts as clean.
    pub fn take_clean_stop(&self) -> Result<bool, StoreError> {
        let clean = self.db.remove(b"m/clean").map_err(|e| self.db_err(e))?.is_some();
        Ok(clean || self.last_alive().is_none())
    }

    /// How many deliveries of the message with this hash were recorded as started and never
    /// completed (see [`Store::count_delivery`]).
    pub fn deliveries(&self, hash: u64) -> u32 {
        match self.db.get(delivery_key(hash)) {
            Ok(Some(v)) => v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0),
            _ => 0,
        }
    }

    /// Records in `batch` that a delivery of the message with this hash starts; written
    /// before it is processed, and removed ([`Store::forget_delivery`]) with its effects.
    pub fn count_delivery(&self, batch: &mut Batch, hash: u64, deliveries: u32) {
        batch.inner.insert(&delivery_key(hash), &deliveries.to_be_bytes());
        batch.changes += 1;
    }

    /// Removes the delivery count of this message, in `batch`.
    pub fn forget_delivery(&self, batch: &mut Batch, hash: u64) {
        batch.inner.remove(&delivery_key(hash));
        batch.changes += 1;
    }

    /// Records one part of the Sparkplug sessions (`None`: removes it) in `batch`:
    /// `g/<group>\0<node>` for a node's own part, `g/<group>\0<node>\0<device>` for a device's.
    pub fn put_sparkplug(&self, batch: &mut Batch, part: &crate::sparkplug::Part, value: Option<&[u8]>) {
        let mut k = [b"g/".as_slice(), part.group.as_bytes(), &[0], part.node.as_bytes()].concat();
        if let Some(d) = &part.device {
            k.push(0);
            k.extend_from_slice(d.as_bytes());
        }
        match value {
            Some(v) => batch.inner.insert(k, v),
            None => batch.inner.remove(k),
        }
        batch.changes += 1;
    }

    /// Every part of the Sparkplug sessions, in key order (a node's own part before its
    /// devices'), to restore at start.
    pub fn load_sparkplug(&self) -> Result<Vec<(crate::sparkplug::Part, Vec<u8>)>, StoreError> {
        let mut v = Vec::new();
        for item in self.db.scan_prefix(b"g/") {
            let (k, val) = item.map_err(|e| self.db_err(e))?;
            let mut levels = k[2..].split(|b| *b == 0).map(std::str::from_utf8);
            let (Some(Ok(group)), Some(Ok(node))) = (levels.next(), levels.next()) else { continue };
            let device = match levels.next() {
                None => None,
                Some(Ok(d)) => Some(d.to_owned()),
                Some(Err(_)) => continue,
            };
            let part = crate::sparkplug::Part { group: group.to_owned(), node: node.to_owned(), device };
            v.push((part, val.to_vec()));
        }
        Ok(v)
    }

    /// When the agent was last known running, if ever.
    pub fn last_alive(&self) -> Option<i64> {
        let v = self.db.get(b"m/alive").ok()??;
        v.as_ref().try_into().ok().map(i64::from_be_bytes)
    }
}

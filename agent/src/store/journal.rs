//! Engine state written as a journal: a batch's state changes go into a few `j/<seq>` records
//! at the end of the tree instead of one key each, and are folded into their own keys later.
//!
//! Why: sled 0.34 copies a leaf (up to 16 keys) and logs a fragment for every key it
//! inserts, and the per-key state of thousands of devices (a duplicate window, an open
//! history roll-up) lands on hundreds of leaves. Measured with the harness at 10k msg/s and
//! 10 000 devices, each such key written per message cost 6–9 µs of CPU (docs/benchmarks.md);
//! a journal record costs one insert per [`CHUNK`] bytes of changes.
//!
//! ```text
//! Batch::state ──plan──▶ j/<seq> records (+ the oldest records folded into s/ d/ r/ …) ──▶ one sled batch
//!                                                             │ taken by sled
//!                                                             ▼
//!                                                   Journal::commit (bookkeeping)
//! ```
//!
//! - **Reading** ([`Journal::newest_values`]): the keys in place that the journal does not
//!   hold, and the newest entry of each key it holds, unless that is a removal.
//! - **Folding**: while the journal holds more than its limit, its oldest records are folded
//!   into place in the same sled batch as the commit that pushed it over (so atomically). An
//!   entry that a later record writes again is skipped, since the later one is folded in its
//!   turn: a key that changes every second is written in place only once it stops changing,
//!   and a start reads at most the limit of journal.
//! - The bookkeeping changes only once sled took the batch: a failed write leaves it as it was.

use super::u64_key;
use edgewatch_engine::FastMap;
use edgewatch_engine::history::rollup::{get_varint, put_varint};
use std::collections::VecDeque;

/// Changes per record, in bytes, about: sled keeps values inside its leaves and rewrites a
/// whole leaf (up to 16 records) every 10 changes to it, so records stay small.
const CHUNK: usize = 4 << 10;

/// The journal's size past which its oldest records are folded into place: at 10k msg/s
/// with two changes of about 60 bytes per message, about 7 s of changes; at the rates of a
/// real fleet, minutes to hours. It is also what a start reads back at most.
pub(super) const MAX_BYTES: usize = 8 << 20;

/// Whether changes to `key` go through the journal. A rule's closed past buckets (`q/c/`)
/// do not: about 1–3 KB a key, rewritten once a bucket closes (a minute, an hour), so they
/// would fill the journal and be folded, written a second time, before any later record
/// rewrites them. A key is always one or the other, so the journal never holds an entry
/// older than the key's own record.
pub(super) fn journaled(key: &[u8]) -> bool {
    !key.starts_with(b"q/c/")
}

/// One state change: a stored key and its new value, or `None` to remove it.
pub(super) type Change = (Vec<u8>, Option<Vec<u8>>);

/// A piece of saved state: its stored key and its value.
pub(super) type Saved = (Vec<u8>, Vec<u8>);

/// A journal record that cannot be read (sled checks its own files, so only a bug or a
/// hand-edited database gets here).
#[derive(Debug, thiserror::Error)]
pub(super) enum JournalError {
    #[error("journal record {seq}: {message}")]
    Unreadable { seq: u64, message: String },
    #[error("{0}")]
    Db(#[from] sled::Error),
}

type Entries<'a> = Vec<(&'a [u8], Option<&'a [u8]>)>;

/// A record: for each change, varint key length, the key, then varint 0 for a removal or
/// the value's length + 1 and the value. Framed by hand with the engine's varints, as the
/// input journal's segments are, rather than with postcard's serde code: the gateway binary
/// is at its 8 MB budget.
pub(super) fn encode(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 4).sum());
    for (k, v) in changes {
        put_varint(&mut out, k.len() as u64);
        out.extend_from_slice(k);
        match v {
            Some(v) => {
                put_varint(&mut out, v.len() as u64 + 1);
                out.extend_from_slice(v);
            }
            None => put_varint(&mut out, 0),
        }
    }
    out
}

pub(super) fn decode(seq: u64, record: &[u8]) -> Result<Entries<'_>, JournalError> {
    let bad = |message: &str| JournalError::Unreadable { seq, message: message.into() };
    let mut at = 0;
    let take = |n: u64, at: &mut usize| -> Result<&[u8], JournalError> {
        let end = usize::try_from(n).ok().and_then(|n| at.checked_add(n)).ok_or_else(|| bad("truncated"))?;
        let bytes = record.get(*at..end).ok_or_else(|| bad("truncated"))?;
        *at = end;
        Ok(bytes)
    };
    let mut entries = Vec::new();
    while at < record.len() {
        let n = get_varint(record, &mut at).map_err(|e| bad(&e.to_string()))?;
        let key = take(n, &mut at)?;
        let value = match get_varint(record, &mut at).map_err(|e| bad(&e.to_string()))? {
            0 => None,
            n => Some(take(n - 1, &mut at)?),
        };
        entries.push((key, value));
    }
    Ok(entries)
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.strip_prefix(b"j/")?.try_into().ok()?))
}

/// The journal's bookkeeping, rebuilt from its records at open.
#[derive(Debug)]
pub(super) struct Journal {
    /// Folding starts past this many bytes ([`MAX_BYTES`]; tests set less).
    limit: usize,
    next_seq: u64,
    /// The records on disk, oldest first, with their sizes: folding takes the front.
    records: VecDeque<(u64, usize)>,
    /// Their total size.
    bytes: usize,
    /// Every key the journal holds, with the newest record that writes it: folding skips
    /// the older entries of a key.
    newest: FastMap<Box<[u8]>, u64>,
}

/// What one batch does to the journal: put in its sled batch by [`Journal::plan`], kept by
/// [`Journal::commit`] once sled took it.
#[derive(Debug)]
pub(super) struct Plan {
    next_seq: u64,
    appended: Vec<(u64, usize)>,
    /// The batch's keys, with the record that writes each.
    written: Vec<(Box<[u8]>, u64)>,
    /// Records folded, from the front.
    folded: usize,
    /// Keys folded into place: no longer in the journal.
    placed: Vec<Box<[u8]>>,
}

impl Plan {
    /// Whether it writes anything.
    pub(super) fn writes(&self) -> bool {
        !self.appended.is_empty() || self.folded > 0
    }
}

impl Journal {
    /// Reads the bookkeeping back from `db`.
    pub(super) fn recover(db: &sled::Db, limit: usize) -> Result<Journal, JournalError> {
        let mut j = Journal { limit, next_seq: 0, records: VecDeque::new(), bytes: 0, newest: FastMap::default() };
        for item in db.scan_prefix(b"j/") {
            let (k, record) = item?;
            let seq = seq_of(&k).ok_or_else(|| JournalError::Unreadable { seq: 0, message: "truncated".into() })?;
            for (key, _) in decode(seq, &record)? {
                j.newest.insert(key.into(), seq);
            }
            j.records.push_back((seq, record.len()));
            j.bytes += record.len();
            j.next_seq = seq + 1;
        }
        Ok(j)
    }

    /// Puts `changes` into `batch` as journal records, and the folding of the oldest records
    /// if that takes the journal over its limit. Nothing changes here until
    /// [`Journal::commit`].
    pub(super) fn plan(
        &self,
        db: &sled::Db,
        changes: &[Change],
        batch: &mut sled::Batch,
    ) -> Result<Plan, JournalError> {
        let mut plan = Plan {
            next_seq: self.next_seq,
            appended: Vec::new(),
            written: Vec::with_capacity(changes.len()),
            folded: 0,
            placed: Vec::new(),
        };
        let mut start = 0;
        let mut size = 0;
        for (i, (k, v)) in changes.iter().enumerate() {
            size += k.len() + v.as_ref().map_or(0, Vec::len) + 4;
            if size < CHUNK && i + 1 < changes.len() {
                continue;
            }
            let (seq, part) = (plan.next_seq, &changes[start..=i]);
            let record = encode(part);
            plan.appended.push((seq, record.len()));
            batch.insert(&u64_key(b"j/", seq), record);
            plan.written.extend(part.iter().map(|(k, _)| (k.as_slice().into(), seq)));
            plan.next_seq += 1;
            (start, size) = (i + 1, 0);
        }
        let mut bytes = self.bytes + plan.appended.iter().map(|(_, n)| n).sum::<usize>();
        for &(seq, len) in &self.records {
            if bytes <= self.limit {
                break;
            }
            let key = u64_key(b"j/", seq);
            if let Some(record) = db.get(key)? {
                for (k, v) in decode(seq, &record)? {
                    // Rewritten by a later record (this batch's ones are not in `newest` yet: a
                    // key they rewrite may be written in place too, harmlessly, since the
                    // journal is read over the keys in place).
                    if self.newest.get(k) != Some(&seq) {
                        continue;
                    }
                    match v {
                        Some(v) => batch.insert(k, v),
                        None => batch.remove(k),
                    }
                    plan.placed.push(k.into());
                }
            }
            batch.remove(&key);
            plan.folded += 1;
            bytes -= len;
        }
        Ok(plan)
    }

    /// Keeps what `plan` did, now that sled took it.
    pub(super) fn commit(&mut self, plan: Plan) {
        for _ in 0..plan.folded {
            if let Some((_, len)) = self.records.pop_front() {
                self.bytes -= len;
            }
        }
        for k in plan.placed {
            self.newest.remove(&k);
        }
        for (k, seq) in plan.written {
            self.newest.insert(k, seq);
        }
        for (seq, len) in plan.appended {
            self.records.push_back((seq, len));
            self.bytes += len;
        }
        self.next_seq = plan.next_seq;
    }

    /// Records and bytes held.
    #[cfg(test)]
    pub(super) fn size(&self) -> (usize, usize) {
        (self.records.len(), self.bytes)
    }

    #[cfg(test)]
    pub(super) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Whether the journal holds `key` (its newest value is there, not in place).
    pub(super) fn holds(&self, key: &[u8]) -> bool {
        self.newest.contains_key(key)
    }

    /// The newest value of every key the journal holds and does not remove, record by
    /// record: what is read over the keys in place.
    pub(super) fn newest_values(&self, db: &sled::Db, out: &mut Vec<Saved>) -> Result<(), JournalError> {
        for &(seq, _) in &self.records {
            let Some(record) = db.get(u64_key(b"j/", seq))? else { continue };
            for (key, value) in decode(seq, &record)? {
                if let (Some(v), true) = (value, self.newest.get(key) == Some(&seq)) {
                    out.push((key.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(())
    }
}

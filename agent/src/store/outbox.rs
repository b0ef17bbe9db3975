//! The outbox's entries on disk (`o/<seq>`, each the JSON of an [`OutboxEntry`]), around the
//! bookkeeping in [`Book`]: a pushed entry is encoded once, when its batch is applied and only
//! if it is still waiting (see [`Store::apply`]); reads come from the book's cache, and from disk only for what did
//! not fit it or what an earlier run left ([`recover`] reads that back at open).

use super::{Batch, Store, StoreError, open_error, u64_key};
use crate::outbox::book::{Book, Read};
use crate::outbox::entry::OutboxEntry;
use std::path::Path;

/// The key of outbox entry `seq`: keys scan in sequence order.
pub(super) fn key(seq: u64) -> [u8; 10] {
    u64_key(b"o/", seq)
}

/// The sequence number in an outbox key.
pub(super) fn seq_of(k: &[u8]) -> Option<u64> {
    k.get(2..10).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes)
}

/// An entry as it is stored.
pub(super) fn encode(entry: &OutboxEntry) -> Vec<u8> {
    serde_json::to_vec(entry).unwrap_or_default()
}

/// Fills `book` with the entries an earlier run left in `db`, oldest first.
pub(super) fn recover(db: &sled::Db, path: &Path, mut book: Book) -> Result<Book, StoreError> {
    for item in db.scan_prefix(b"o/") {
        let (k, v) = item.map_err(|e| open_error(path, &e))?;
        let seq = seq_of(&k).ok_or_else(|| StoreError::Damaged {
            path: path.display().to_string(),
            detail: "unreadable outbox key".into(),
        })?;
        // Unreadable: it still counts (by its length on disk) until read and skipped.
        book.recovered(seq, serde_json::from_slice(&v).ok(), v.len() as u64);
    }
    Ok(book)
}

impl Store {
    /// Adds an outbox entry to `batch`, readable by the publisher at once. When the outbox is
    /// over its size, the oldest entries are dropped (and counted) in the same batch.
    ///
    /// An entry the book caches is encoded only when its batch is applied, and only if
    /// upstream has not acknowledged it by then: with a responsive upstream broker most
    /// events are never encoded for the disk. One past the cache is encoded now.
    pub fn push_outbox(&self, batch: &mut Batch, entry: OutboxEntry) -> u64 {
        let (seq, uncached) = self.book().push_uncached(entry, |old| {
            batch.inner.remove(&key(old));
            batch.deletes += 1;
        });
        batch.outbox.push((seq, uncached.map(|e| encode(&e))));
        batch.changes += 1;
        seq
    }

    /// Up to `n` outbox entries from `from_seq` on, in order: from memory when they are
    /// there, else from disk.
    pub fn outbox_from(&self, from_seq: u64, n: usize) -> Result<Vec<(u64, OutboxEntry)>, StoreError> {
        match self.book().next(from_seq, n) {
            Read::Entries(v) => return Ok(v),
            Read::Disk => {}
        }
        let mut v = Vec::with_capacity(n.min(1024));
        for item in self.db.range(key(from_seq)..key(u64::MAX)) {
            if v.len() >= n {
                break;
            }
            let (k, val) = item.map_err(|e| self.db_err(e))?;
            let Some(seq) = seq_of(&k) else { continue };
            // Acknowledged, its deletion waiting for the next batch: not sent again.
            if !self.book().is_live(seq) {
                continue;
            }
            match serde_json::from_slice(&val) {
                Ok(entry) => v.push((seq, entry)),
                Err(error) => tracing::error!(seq, %error, "Unreadable outbox entry skipped."),
            }
        }
        Ok(v)
    }

    /// Marks an outbox entry acknowledged: it no longer counts, and is deleted from disk with
    /// the next applied batch (after a crash before that, it is sent again: same id).
    pub fn ack_outbox(&self, seq: u64) {
        self.book().ack(seq);
    }

    /// Acknowledged entries are waiting to be deleted.
    pub fn has_acked(&self) -> bool {
        self.book().has_acked()
    }

    /// (entries, bytes) waiting in the outbox.
    pub fn outbox_depth(&self) -> (usize, u64) {
        self.book().depth()
    }

    /// Entries dropped for space since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.book().take_dropped()
    }
}

//! The audit trail from the engine loop: each entry appended to the log (on disk before it is
//! queued) and queued on `<prefix>/audit` with the batch that records it as queued, so a
//! crash in between queues it again at the next start, never loses it.

use super::{Sink, Step};
use crate::agent::reports::wall_clock;
use crate::audit::Entry;
use crate::store::OutboxEntry;

impl Step {
    /// Records `kind` with `data` in the audit trail, and sends it upstream.
    pub(super) fn audit(&mut self, kind: &str, data: serde_json::Value) {
        let Some(log) = &mut self.audit else { return };
        match log.append(wall_clock().millis(), kind, data) {
            Ok(entry) => self.queue_audit(&entry),
            Err(error) => {
                self.stats.audit_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(kind, %error, "Audit entry not written.");
            }
        }
    }

    /// Queues an entry already in the log for `<prefix>/audit` (QoS 1, through the outbox).
    pub(in crate::agent) fn queue_audit(&mut self, entry: &Entry) {
        let topic = format!("{}/audit", self.config.upstream.topic_prefix);
        self.queue(OutboxEntry { topic, payload: entry.line().into(), qos: 1, retain: false, traced: false });
        if let Sink::Disk { store, .. } = &self.sink {
            store.mark_audit_queued(&mut self.pending.batch, entry.seq);
        }
        self.pending.nudge();
    }
}

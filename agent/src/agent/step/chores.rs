//! The engine loop's periodic work (gauges, the alive mark, snapshots, the drop report) and
//! its stop.

use super::{ALIVE_EVERY, CommitJob, GAUGES_EVERY, Sink, Step, reserve_after};
use crate::agent::reports::{self, wall_clock};
use crate::store::{self, Batch, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

impl Step {
    /// After each input: what is due by the clock, and the report of events dropped for space.
    pub(super) async fn housekeeping(&mut self) {
        let now = Instant::now();
        if let Some(feed) = &mut self.feed {
            feed.flush_due(now);
        }
        if now >= self.next_gauges {
            self.next_gauges = now + GAUGES_EVERY;
            // Acknowledged events are deleted with the next batch; when idle, make one.
            if self.outbox.has_acked() {
                self.pending.nudge();
            }
            let keys = self.engine.tracked_keys().map(|(rule, n)| (Arc::<str>::from(rule), n as u64)).collect();
            if let Ok(mut tracked) = self.stats.detail.tracked_keys.lock() {
                *tracked = keys;
            }
            // Events a full request queue held back (QoS 0 ones free no room by a PUBACK).
            self.upstream.pump();
            // Publications and acknowledgements recorded since the last batch, when idle.
            if let Some(log) = &self.event_log {
                log.hand_over();
            }
        }
        if let Sink::Memory(acker) = &mut self.sink {
            acker.retry();
        }
        if now >= self.next_alive {
            if let Sink::Disk { store, .. } = &self.sink {
                store.mark_alive(&mut self.pending.batch, wall_clock().millis());
            }
            self.next_alive = now + ALIVE_EVERY;
        }
        self.report_drops(now);
        if now >= self.next_snapshot {
            self.next_snapshot = now + self.config.state.snapshot_interval;
            if let Sink::Disk { store, .. } = &self.sink {
                write_snapshot(store).await;
            }
        }
    }

    /// The outbox overflowed (a long upstream outage): say so, in order, once the link is up,
    /// at most once a second. A report queued into the full outbox during the outage would
    /// push out an older event, and be pushed out itself, count and all.
    fn report_drops(&mut self, now: Instant) {
        let dropped = self.outbox.take_dropped();
        if dropped > 0 {
            if self.unreported_drops == 0 {
                tracing::warn!(dropped, "Outbox full: oldest events dropped.");
            }
            self.stats.outbox_dropped.fetch_add(dropped, Relaxed);
            self.unreported_drops += dropped;
        }
        if self.unreported_drops > 0 && self.health.borrow().upstream_connected && now >= self.next_drop_report {
            let data = reports::drop_report(std::mem::take(&mut self.unreported_drops));
            self.queue(reports::agent_event(&self.config, &self.source, "dropped", data));
            self.next_drop_report = now + Duration::from_secs(1);
        }
    }

    /// The input closed (stopping): commits what is left with the `offline` status, lets the
    /// committer finish, and marks a clean stop.
    pub(super) async fn finish(mut self, jobs: Option<mpsc::Sender<CommitJob>>) {
        if self.unreported_drops > 0 {
            // Sent by the next run if the link is down now.
            let data = reports::drop_report(self.unreported_drops);
            self.queue(reports::agent_event(&self.config, &self.source, "dropped", data));
        }
        // A clean stop says so itself (the last will is only for a lost connection).
        let rules = self.engine.rules().len();
        self.queue(reports::agent_status(&self.config, "offline", self.started, rules));
        if let Ok(permit) = reserve_after(jobs.as_ref(), Instant::now()).await {
            self.commit(permit, None);
        }
        self.upstream.pump();
        drop(jobs);
        match self.sink {
            Sink::Disk { store, jobs, committer } => {
                // The committer ends once every sender is gone: wait for its last write.
                drop(jobs);
                let _ = committer.await;
                let mut b = Batch::default();
                store.mark_alive(&mut b, wall_clock().millis());
                store.mark_clean_stop(&mut b);
                let _ = store.commit(b).await;
                write_snapshot(&store).await;
            }
            Sink::Memory(mut acker) => acker.finish().await,
        }
        if let Some(journal) = self.journal.take() {
            // Its thread writes what is queued, then ends: off the runtime's thread.
            let _ = tokio::task::spawn_blocking(move || drop(journal)).await;
        }
    }
}

/// Writes the periodic snapshot, off the runtime's thread.
pub(in crate::agent) async fn write_snapshot(store: &Store) {
    let store = store.clone();
    let written = tokio::task::spawn_blocking(move || {
        let now = wall_clock().millis();
        // Taken by the running agent: it is alive now.
        let snap = store::Snapshot { alive_ms: Some(now), ..store.snapshot(now)? };
        store.write_snapshot_file(&snap)
    })
    .await;
    match written {
        Ok(Ok(path)) => tracing::debug!(path = %path.display(), "State snapshot written."),
        Ok(Err(error)) => tracing::error!(%error, "State snapshot not written."),
        Err(error) => tracing::error!(%error, "State snapshot task failed."),
    }
}

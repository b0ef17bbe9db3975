//! Making a batch durable, then acknowledging its messages to the sensor broker.
//!
//! ```text
//!  engine loop ──CommitJob──▶ committer task: apply (off the runtime) ─▶ flush ─▶ Acker ─▶ source request queue
//!                               └──▶ Upstream::pump (entries that did not fit the cache are readable now)
//! ```
//!
//! In memory (durability off) there is nothing to write: the engine loop hands a batch's
//! acknowledgements to its own [`Acker`] and no committer runs.

use super::upstream::Upstream;
use crate::mqtt::{AckToken, Client};
use crate::store::{self, Batch, Store};
use crate::telemetry::Stats;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long the stop waits for the last acknowledgements and events to go out.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon acknowledgements that found the request queue full are tried again.
const ACK_RETRY: Duration = Duration::from_millis(10);

/// A batch on its way to disk, and the acknowledgements that must wait for it.
#[derive(Debug)]
pub(super) struct CommitJob {
    pub batch: Batch,
    pub acks: Vec<AckToken>,
    pub arrived: Vec<Instant>,
    /// Told whether the batch is on disk, for a caller that must wait for it.
    pub done: Option<oneshot::Sender<bool>>,
    /// How far each sink's queue may be delivered once the batch is on disk (empty without
    /// sinks).
    pub marks: crate::sinks::Marks,
}

/// Acknowledges messages to the sensor broker in the order they were received, without
/// ever waiting on the source connection's request queue: its polling task may itself be
/// waiting for room in the engine's queue, and awaiting here would close that cycle. What
/// does not fit now is kept, in order, and tried again.
#[derive(Debug)]
pub(super) struct Acker {
    client: Client,
    /// Acknowledgements that found the queue full, oldest first (at most the broker's
    /// in-flight window: it sends no more until these are acknowledged).
    backlog: VecDeque<AckToken>,
}

impl Acker {
    pub fn new(client: Client) -> Acker {
        Acker { client, backlog: VecDeque::new() }
    }

    /// Queues these acknowledgements after any still waiting.
    pub fn send(&mut self, acks: Vec<AckToken>) {
        self.backlog.extend(acks);
        self.retry();
    }

    /// Queues what is waiting, in order, until the request queue is full.
    pub fn retry(&mut self) {
        while let Some(token) = self.backlog.front() {
            if self.client.try_ack(token).is_err() {
                return;
            }
            self.backlog.pop_front();
        }
    }

    /// When to try again, if something waits.
    pub fn retry_at(&self) -> Option<Instant> {
        (!self.backlog.is_empty()).then(|| Instant::now() + ACK_RETRY)
    }

    /// At a stop: keeps trying for up to [`DRAIN_TIMEOUT`] while the source connection still
    /// drains its queue. What is left the broker redelivers (duplicates are recognised).
    pub async fn finish(&mut self) {
        let until = Instant::now() + DRAIN_TIMEOUT;
        while !self.backlog.is_empty() && Instant::now() < until {
            tokio::time::sleep(ACK_RETRY).await;
            self.retry();
        }
        if !self.backlog.is_empty() {
            tracing::warn!(waiting = self.backlog.len(), "Acknowledgements not sent; the broker will redeliver.");
        }
    }
}

/// Writes batches in order and flushes them, then acknowledges their messages and lets the
/// upstream side send what the batches added. The engine keeps processing meanwhile; batches
/// that queue up while a flush runs share the next flush (group commit).
pub(super) async fn committer(
    store: Store,
    mut jobs: mpsc::Receiver<CommitJob>,
    mut acker: Acker,
    upstream: Upstream,
    stats: Arc<Stats>,
    sinks: Arc<crate::sinks::Sinks>,
) {
    loop {
        let first = match acker.retry_at() {
            None => jobs.recv().await,
            Some(at) => tokio::select! {
                job = jobs.recv() => job,
                () = tokio::time::sleep_until(at) => {
                    acker.retry();
                    continue;
                }
            },
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        while let Ok(more) = jobs.try_recv() {
            group.push(more);
        }
        let ok = write(&store, &mut group, &stats).await;
        upstream.pump();
        if ok {
            let now = Instant::now();
            for t in group.iter().flat_map(|j| &j.arrived) {
                stats.detail.commit_latency_seconds.observe(now.duration_since(*t).as_secs_f64());
            }
        }
        for job in group {
            if let Some(done) = job.done {
                let _ = done.send(ok);
            }
            // Not on disk: no acks. The broker redelivers after a restart.
            if ok {
                acker.send(job.acks);
                sinks.release(&job.marks);
            }
        }
    }
    acker.finish().await;
}

/// Applies the group's batches and flushes them; whether all of it is on disk.
async fn write(store: &Store, group: &mut [CommitJob], stats: &Stats) -> bool {
    let started = Instant::now();
    // Off the runtime's thread: with `agent.threads = 1` a large batch would hold up both MQTT
    // connections for as long as sled takes to write it.
    let batches: Vec<Batch> = group.iter_mut().map(|j| std::mem::take(&mut j.batch)).collect();
    let s = store.clone();
    let results =
        tokio::task::spawn_blocking(move || batches.into_iter().map(|b| s.apply(b)).collect()).await.unwrap_or_else(
            |_| vec![Err(store::StoreError::Db { path: String::new(), message: "the write task panicked".into() })],
        );
    let mut ok = true;
    let mut wrote = false;
    for result in results {
        match result {
            Ok(applied) => {
                wrote |= applied.wrote;
                stats.outbox_written.fetch_add(applied.events, Relaxed);
                if let Some((closed, history)) = applied.history {
                    stats.history_appended(closed, history, store.history_bytes());
                }
            }
            Err(error) => {
                tracing::error!(%error, "State not written; messages stay unacknowledged.");
                ok = false;
            }
        }
    }
    // Nothing written (no state changed, every event already acknowledged upstream): nothing
    // to flush.
    if ok && wrote {
        match store.flush().await {
            Ok(()) => stats.record_flush(started.elapsed()),
            Err(error) => {
                tracing::error!(%error, "State not flushed; messages stay unacknowledged.");
                ok = false;
            }
        }
    }
    ok
}

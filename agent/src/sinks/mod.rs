//! Sinks: where rules' actions go besides upstream (`notify`, `act`; `[[sinks]]` in the
//! configuration).
//!
//! ```text
//!  engine loop ──enqueue──▶ Lane (SinkQueue, bounded) ──put_action──▶ the input's batch ─▶ sled
//!  committer (batch on disk) ──release(marks)──▶ Lane: committed up to here, wake its task
//!  one task per sink: front ─▶ rate limit ─▶ send (http | mqtt | dry run) ─▶ classify
//!        delivered / given up ─▶ done + remove_action      retry ─▶ backoff (Retry-After)
//!        given up ─▶ `edgewatch.agent.action_failed` upstream (through the engine loop)
//! ```
//!
//! An action is durable exactly when the input that caused it is (same batch), is sent only
//! once that batch is on disk, and is deleted only once its sink has it (or it is given up):
//! at least once, in order per sink, with a stable `Idempotency-Key` per action. Each sink has
//! its own queue and task, so a slow or dead sink never holds up another, or upstream.
//!
//! - `queue.rs`: one sink's queue as bookkeeping;
//! - `http.rs`: the webhook client;
//! - `deliver.rs`: the delivery tasks.

pub mod deliver;
pub mod http;
pub mod queue;

use crate::config::{SinkConfig, SinkKind};
use crate::store::{Batch, Store};
use prometheus_client::metrics::histogram::Histogram;
use queue::{Pending, SinkQueue};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// One sink's counters, read by `/metrics`.
#[derive(Debug)]
pub struct LaneStats {
    pub sent: AtomicU64,
    /// Attempts that failed and will be tried again.
    pub retried: AtomicU64,
    /// Given up: a permanent refusal, or retries exhausted.
    pub failed: AtomicU64,
    /// Dropped unsent for space (the queue's `max_queue_mb`).
    pub dropped: AtomicU64,
    /// Logged and counted, not sent (`dry_run`).
    pub dry_run: AtomicU64,
    /// From the action being made to its sink accepting it.
    pub latency_seconds: Histogram,
}

impl Default for LaneStats {
    fn default() -> Self {
        LaneStats {
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dry_run: AtomicU64::new(0),
            latency_seconds: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0]),
        }
    }
}

/// One sink: its configuration, queue, counters, and the wake-up of its task.
#[derive(Debug)]
pub struct Lane {
    pub config: SinkConfig,
    /// Shared by the engine loop (push), the committer (commit marks) and the sink's task
    /// (front, done). Every change is one step, so a poisoned lock still holds consistent data.
    queue: Mutex<SinkQueue>,
    /// Told when an action becomes deliverable; a permit is kept if the task is busy.
    wake: tokio::sync::Notify,
    pub stats: LaneStats,
}

impl Lane {
    fn queue(&self) -> MutexGuard<'_, SinkQueue> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (actions, bytes) waiting.
    pub fn depth(&self) -> (usize, u64) {
        self.queue().depth()
    }

    /// The next deliverable action.
    fn front(&self) -> Option<(u64, Pending)> {
        self.queue().front().cloned()
    }
}

/// Every configured sink. Empty when none is configured: then the engine loop does nothing
/// more per message than check that.
#[derive(Debug, Default)]
pub struct Sinks {
    lanes: Vec<Arc<Lane>>,
}

/// What a batch made deliverable once it is on disk: the last sequence number pushed to each
/// lane when the batch was handed to the committer.
pub type Marks = Vec<u64>;

impl Sinks {
    /// A lane per configured sink, filled with what an earlier run left in `store`.
    pub fn new(configs: &[SinkConfig], store: Option<&Store>) -> Result<Sinks, crate::store::StoreError> {
        let mut left = match store {
            Some(store) => {
                let (left, bad) = store.load_actions()?;
                if bad > 0 {
                    tracing::warn!(actions = bad, "Unreadable actions on disk dropped.");
                }
                left
            }
            None => Default::default(),
        };
        let mut lanes = Vec::with_capacity(configs.len());
        for config in configs {
            let mut queue = SinkQueue::new(config.max_queue_bytes);
            let recovered = left.remove(&config.name).unwrap_or_default();
            if !recovered.is_empty() {
                tracing::info!(sink = %config.name, actions = recovered.len(), "Actions left by the last run will be sent.");
            }
            for (seq, p) in recovered {
                queue.recovered(seq, p);
            }
            lanes.push(Arc::new(Lane {
                config: config.clone(),
                queue: Mutex::new(queue),
                wake: tokio::sync::Notify::new(),
                stats: LaneStats::default(),
            }));
        }
        for (sink, actions) in &left {
            // A sink removed from the configuration: its actions can go nowhere.
            tracing::warn!(sink = %sink, actions = actions.len(), "Actions for a sink no longer configured dropped.");
            if let Some(store) = store {
                for (seq, _) in actions {
                    let _ = store.remove_action(sink, *seq);
                }
            }
        }
        Ok(Sinks { lanes })
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    pub fn lanes(&self) -> &[Arc<Lane>] {
        &self.lanes
    }

    /// The lane of sink `name`.
    pub fn lane(&self, name: &str) -> Option<(usize, &Arc<Lane>)> {
        self.lanes.iter().enumerate().find(|(_, l)| l.config.name == name)
    }

    /// Queues `action` for lane `i`: into `batch` when durable (deliverable once
    /// [`Sinks::release`] says the batch is on disk), deliverable at once in memory. The
    /// oldest actions go first when the queue is over its size, counted, their deletes in
    /// the same batch.
    pub fn enqueue(&self, i: usize, action: Pending, durable: Option<(&Store, &mut Batch)>) {
        let Some(lane) = self.lanes.get(i) else { return };
        let bytes = durable.as_ref().map(|_| serde_json::to_vec(&action).unwrap_or_default());
        let mut queue = lane.queue();
        let (seq, dropped) = queue.push(action);
        if !dropped.is_empty() {
            lane.stats.dropped.fetch_add(dropped.len() as u64, Relaxed);
            tracing::warn!(sink = %lane.config.name, dropped = dropped.len(), "Sink queue full: oldest actions dropped unsent.");
        }
        match (durable, bytes) {
            (Some((store, batch)), Some(bytes)) => {
                for old in dropped {
                    store.drop_action(batch, &lane.config.name, old);
                }
                store.put_action_bytes(batch, &lane.config.name, seq, bytes);
            }
            _ => {
                queue.commit(seq);
                drop(queue);
                lane.wake.notify_one();
            }
        }
    }

    /// Where each lane stands: handed to the committer with a batch.
    pub fn marks(&self) -> Marks {
        self.lanes.iter().map(|l| l.queue().last_seq()).collect()
    }

    /// The batch `marks` came with is on disk: its actions may go.
    pub fn release(&self, marks: &[u64]) {
        for (lane, &seq) in self.lanes.iter().zip(marks) {
            let mut queue = lane.queue();
            let before = queue.front().map(|f| f.0);
            queue.commit(seq);
            let woke = queue.front().map(|f| f.0) != before;
            drop(queue);
            if woke {
                lane.wake.notify_one();
            }
        }
    }
}

/// The kind of a sink, as a word for logs.
pub fn kind_name(kind: &SinkKind) -> &'static str {
    match kind {
        SinkKind::Http(_) => "http",
        SinkKind::Mqtt { .. } => "mqtt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinkKind;
    use crate::delivery::RetryPolicy;

    fn pager(max_queue_bytes: u64) -> SinkConfig {
        SinkConfig {
            name: "pager".into(),
            kind: SinkKind::Mqtt { topic: crate::emit::TopicTemplate::parse("c/{key}").expect("template"), qos: 1 },
            dry_run: false,
            max_queue_bytes,
            retry: RetryPolicy::default(),
            rate: None,
        }
    }

    fn action(n: u32) -> Pending {
        Pending {
            id: format!("id-{n}"),
            event: format!("ev-{n}"),
            rule: "hot".into(),
            key: "t-1".into(),
            time: i64::from(n),
            body: "x".repeat(400),
            topic: "c/t-1".into(),
            made: 0,
            attempts: 0,
            first_attempt: 0,
        }
    }

    #[test]
    fn actions_are_durable_with_their_batch_bounded_and_deliverable_once_released() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), 1 << 20, 1 << 20).expect("store");
        // Room for two actions: a third drops the oldest, on disk too.
        let sinks = Sinks::new(&[pager(2 * (400 + 100 + queue::ACTION_OVERHEAD))], Some(&store)).expect("sinks");
        let lane = sinks.lanes()[0].clone();
        let mut batch = Batch::default();
        for n in 1..=3 {
            sinks.enqueue(0, action(n), Some((&store, &mut batch)));
        }
        assert_eq!(lane.depth().0, 2);
        assert_eq!(lane.stats.dropped.load(Relaxed), 1);
        let marks = sinks.marks();
        assert_eq!(lane.front(), None, "nothing goes before its batch is on disk");
        store.apply(batch).expect("applied");
        sinks.release(&marks);
        assert_eq!(lane.front().map(|(_, p)| p.id), Some("id-2".to_owned()));
        // What a restart finds: the two newest, in order.
        let (left, bad) = store.load_actions().expect("load");
        assert_eq!(bad, 0);
        let ids: Vec<&str> = left["pager"].iter().map(|(_, p)| p.id.as_str()).collect();
        assert_eq!(ids, ["id-2", "id-3"]);
        // Delivered: gone from disk; a new set of lanes starts from what is left.
        let (seq, _) = lane.front().expect("front");
        assert!(lane.queue().done(seq));
        store.remove_action("pager", seq).expect("removed");
        let again = Sinks::new(&[pager(1 << 20)], Some(&store)).expect("sinks");
        assert_eq!(again.lanes()[0].front().map(|(_, p)| p.id), Some("id-3".to_owned()), "left on disk: committed");
        // A sink no longer configured: its actions are dropped, not kept forever.
        let none = Sinks::new(&[], Some(&store)).expect("sinks");
        assert!(none.is_empty());
        assert!(store.load_actions().expect("load").0.is_empty());
    }
}

//! What the engine loop is handed, and where its batches go.

use super::super::commit::{Acker, CommitJob};
use crate::console::Query;
use crate::decode::Format;
use crate::mqtt::AckToken;
use crate::reload::Scan;
use crate::store::Store;
use bytes::Bytes;
use edgewatch_engine::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the engine loop is handed (by the source task and the reloader).
#[derive(Debug)]
pub(in crate::agent) enum Input {
    Message {
        topic: String,
        payload: Bytes,
        format: Format,
        /// Its subscription, by its index in the configuration: for its schema.
        sub: Option<u16>,
        received: Timestamp,
        /// When it came off the socket, for the latency histogram.
        arrived: Instant,
        ack: Option<AckToken>,
        /// Maybe a redelivery of the message the last run crashed on.
        suspect: bool,
    },
    /// A message over the size limit, read past by the connection: dead-lettered, never
    /// decoded. Only its size is known; the payload was never kept.
    TooLarge {
        topic: String,
        size: usize,
        received: Timestamp,
        arrived: Instant,
        ack: Option<AckToken>,
    },
    /// The sensor link went down: silence says nothing about devices meanwhile.
    LinkDown,
    LinkUp,
    /// New rules (and maybe tables), swapped in between two events.
    Reload(Box<Scan>),
    /// A message with nothing to process (the control topic, an unroutable topic) whose
    /// acknowledgement must still go out in order, after those received before it.
    Ack(AckToken),
    /// A command for an alarm (acknowledge, snooze, ...) from the control topic.
    Alarm {
        payload: Bytes,
        ack: Option<AckToken>,
    },
    /// A question from the console (rules, devices, alarms; an alarm command).
    Query(Query),
    /// An event about the agent from another task (an action given up by its sink), to go
    /// upstream through the outbox like the engine loop's own.
    Report {
        kind: &'static str,
        data: serde_json::Value,
    },
}

/// Where a committed batch goes.
#[derive(Debug)]
pub(in crate::agent) enum Sink {
    /// To the committer, which writes it to the store and then acknowledges its messages.
    Disk {
        store: Store,
        jobs: mpsc::Sender<CommitJob>,
        /// Awaited at the stop: the clean-stop mark goes after its last write.
        committer: tokio::task::JoinHandle<()>,
    },
    /// Durability off: nothing to write, the messages are acknowledged at once.
    Memory(Acker),
}

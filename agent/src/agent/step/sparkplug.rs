//! Sparkplug B in the engine loop: each message through its edge node's session
//! ([`Sessions`]) into the input events rules see, the sessions' changes into each batch, and
//! the host application's requests for a rebirth.
//!
//! ```text
//!  spBv1.0/... ──▶ Sessions::apply ──Update──▶ event::payloads ──▶ Engine::process (one event each)
//!                      │ refused: dead letter (`sparkplug_*`)   │ seq gap: reorder timer
//!                      └── unknown alias, unborn data ──────────┴──▶ Rebirths::ask ──▶ NCMD (source)
//!  commit: Sessions::take_changed ──▶ Store::put_sparkplug (a record per node's own part
//!          and per device, the changed ones only)
//! ```

use super::Step;
use crate::config::SparkplugConfig;
use crate::decode::DecodeError;
use crate::mqtt;
use crate::sparkplug::command::{Rebirths, Reorder};
use crate::sparkplug::{Kind, Outcome, Sessions, event};
use bytes::Bytes;
use edgewatch_engine::{Event, EventId, Timestamp};
use std::sync::atomic::Ordering::Relaxed;

/// The engine loop's Sparkplug side.
#[derive(Debug)]
pub(in crate::agent) struct Sparkplug {
    /// Every edge node followed: restored from the store at start, written with each batch.
    pub sessions: Sessions,
    config: SparkplugConfig,
    /// Where rebirth requests go (the source connection), and how often they may (`None`:
    /// `sparkplug.rebirth` is off).
    requests: Option<(mqtt::Client, Rebirths)>,
    /// Edge nodes whose `seq` skipped, asked for a rebirth unless born again first.
    reorder: Reorder,
}

impl Sparkplug {
    pub fn new(config: SparkplugConfig) -> Self {
        let timeout = u64::try_from(config.reorder_timeout.as_millis()).unwrap_or(u64::MAX);
        let reorder = Reorder::new(timeout, config.limits.max_nodes);
        Sparkplug { sessions: Sessions::default(), config, requests: None, reorder }
    }

    /// Rebirth requests go through `source` (the connection edge nodes publish on), if
    /// `sparkplug.rebirth` asks for them.
    pub fn send_requests_through(&mut self, source: mqtt::Client) {
        if self.config.rebirth {
            let interval = u64::try_from(self.config.rebirth_interval.as_millis()).unwrap_or(u64::MAX);
            self.requests = Some((source, Rebirths::new(interval, self.config.limits.max_nodes)));
        }
    }

    /// When the next reorder timeout ends, if any (ms).
    pub fn next_deadline(&self) -> Option<i64> {
        self.reorder.next().and_then(|t| i64::try_from(t).ok())
    }

    /// Asks `group`/`node` for a rebirth, unless one went out less than the interval ago.
    fn ask(&mut self, group: &str, node: &str, now: i64, stats: &crate::telemetry::Stats) {
        let Some((client, rebirths)) = &mut self.requests else { return };
        let Some((topic, payload)) = rebirths.ask(group, node, u64::try_from(now).unwrap_or(0)) else { return };
        match client.try_publish(topic, 0, false, Bytes::from(payload)) {
            Ok(()) => {
                stats.sparkplug_rebirths.fetch_add(1, Relaxed);
                tracing::info!(group, node, "Rebirth requested of a Sparkplug edge node.");
            }
            Err(error) => tracing::warn!(group, node, %error, "Rebirth request not sent."),
        }
    }
}

impl Step {
    /// One Sparkplug B message, received at `received`.
    pub(super) fn sparkplug_message(&mut self, topic: String, payload: Bytes, received: Timestamp) {
        let now = received.millis();
        let now_ms = u64::try_from(now).unwrap_or(0);
        let spb = &mut self.sparkplug;
        let limits = spb.config.limits;
        match spb.sessions.apply(&topic, &payload, now_ms, &limits) {
            Err(error) => {
                if let Some((group, node)) = error.rebirth() {
                    let (group, node) = (group.to_owned(), node.to_owned());
                    spb.ask(&group, &node, now, &self.stats);
                }
                let size = payload.len();
                self.undecodable((&topic, Some(&payload), size), received, &DecodeError::Sparkplug(error));
            }
            Ok(Outcome::Ignored(why)) => {
                self.stats.sparkplug_ignored.fetch_add(1, Relaxed);
                tracing::debug!(topic, why, "Sparkplug message ignored.");
            }
            Ok(Outcome::Update(update)) => {
                if update.kind == Kind::NBirth {
                    spb.reorder.born(&update.group, &update.node);
                }
                if let Some(gap) = update.gap {
                    self.stats.sparkplug_seq_gaps.fetch_add(1, Relaxed);
                    tracing::info!(topic, expected = gap.expected, got = gap.got, "Sparkplug seq out of order.");
                    if spb.requests.is_some() {
                        spb.reorder.skipped(&update.group, &update.node, now_ms);
                    }
                }
                let payloads = event::payloads(&update, &spb.sessions);
                for (i, value) in payloads.into_iter().enumerate() {
                    let mut input = Event::new(topic.clone(), value, &payload, received);
                    if i > 0 {
                        // The devices that died with their node: one event each, each its own id.
                        input.id = EventId::from_content(&topic, &[&payload[..], &i.to_be_bytes()].concat());
                    }
                    self.run_engine(input);
                }
            }
        }
    }

    /// Reorder timeouts that ended by `now`: each such node is asked for a rebirth.
    pub(super) fn sparkplug_due(&mut self, now: i64) {
        let spb = &mut self.sparkplug;
        for (group, node) in spb.reorder.take_due(u64::try_from(now).unwrap_or(0)) {
            spb.ask(&group, &node, now, &self.stats);
        }
    }

    /// Writes the parts of the sessions changed since the last batch into it.
    pub(super) fn sparkplug_commit(&mut self) {
        let changed = self.sparkplug.sessions.take_changed();
        if let super::Sink::Disk { store, .. } = &self.sink {
            for part in changed {
                let value = self.sparkplug.sessions.export(&part);
                store.put_sparkplug(&mut self.pending.batch, &part, value.as_deref());
            }
        }
    }

    /// Restores the edge nodes' sessions from the store (at start): a restart loses no alias.
    pub(super) fn restore_sparkplug(&mut self) {
        let super::Sink::Disk { store, .. } = &self.sink else { return };
        let records = match store.load_sparkplug() {
            Ok(r) => r,
            Err(error) => {
                tracing::error!(%error, "Sparkplug sessions not read: edge nodes must be born again.");
                return;
            }
        };
        for (part, bytes) in records {
            if let Err(error) = self.sparkplug.sessions.import(&part, &bytes) {
                let (group, node) = (&part.group, &part.node);
                let device = part.device.as_deref().unwrap_or("");
                tracing::error!(group, node, device, %error, "Sparkplug session not restored: it must be born again.");
            }
        }
    }
}

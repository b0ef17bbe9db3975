//! A message's way through the engine loop: decoded, checked against its schema, its private
//! fields protected, recorded in the journal, and run through the engine.

use super::Step;
use super::reports::{self, wall_clock};
use crate::decode::{DecodeError, Format, decode_with};
use bytes::Bytes;
use edgewatch_engine::{Event, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

impl Step {
    /// Decodes a message, protects its private fields, and runs it through the engine.
    pub(super) fn process(
        &mut self,
        topic: String,
        payload: Bytes,
        (format, sub): (Format, Option<u16>),
        received: Timestamp,
    ) {
        let private = self.private(sub);
        if let (Some(j), None) = (&mut self.journal, &private) {
            j.message(received.millis(), format, &topic, &payload);
        }
        if format == Format::Sparkplug {
            return self.sparkplug_message(topic, payload, received);
        }
        let sub = sub.and_then(|i| self.config.subscriptions.get(usize::from(i)));
        let decoded = decode_with(format, &payload, &self.config.decode_limits()).and_then(|value| {
            match sub.and_then(|s| Some((s, s.schema.as_deref()?.check(&value).err()?))) {
                Some((s, mut violation)) => {
                    self.stats.schema_rejected(&s.filter, &violation.version);
                    if private.as_deref().is_some_and(|p| p.covers(&violation.path)) {
                        "(protected)".clone_into(&mut violation.got);
                    }
                    Err(DecodeError::Schema(violation))
                }
                None => Ok(value),
            }
        });
        match (decoded, private) {
            (Err(error), private) => {
                // A protected subscription's dead letters hold none of its bytes: the payload
                // that does not parse may be the one that holds the field.
                let shown = private.is_none().then_some(&payload[..]);
                self.undecodable((&topic, shown, payload.len()), received, &error);
            }
            (Ok(value), None) => self.run_engine(Event::new(topic, value, &payload, received)),
            (Ok(mut value), Some(private)) => {
                let applied = self.protector.apply(&private, &mut value, received.millis());
                self.stats.privacy_protected.fetch_add(u64::from(applied.protected), Relaxed);
                self.stats.privacy_dropped_instead.fetch_add(u64::from(applied.dropped_instead), Relaxed);
                // From here on the payload is its protected form, as JSON: what the journal
                // keeps (and a backtest replays) and what the event id is derived from.
                let protected = serde_json::to_vec(&value).unwrap_or_default();
                if let Some(j) = &mut self.journal {
                    j.message(received.millis(), Format::Json, &topic, &protected);
                }
                self.run_engine(Event::new(topic, value, &protected, received));
            }
        }
    }

    /// The privacy of subscription `sub` (by index), if it protects fields.
    pub(super) fn private(&self, sub: Option<u16>) -> Option<Arc<crate::privacy::Privacy>> {
        self.config.subscriptions.get(usize::from(sub?))?.privacy.clone()
    }

    /// Runs a decoded event through the engine.
    pub(super) fn run_engine(&mut self, event: Event) {
        let topic = event.topic.clone();
        let began = std::time::Instant::now();
        self.engine.process(event, wall_clock(), &mut self.outputs);
        self.stats.detail.engine_seconds.observe(began.elapsed().as_secs_f64());
        let mut first = false;
        for rule in &self.outputs.value_missing {
            first |= self.stats.value_missing(rule, &topic);
        }
        if first {
            self.queue(reports::status_entry(&self.config, &self.rules_status, &self.stats));
        }
        self.stats.processed.fetch_add(1, Relaxed);
        if self.outputs.matched == 0 && self.outputs.duplicates == 0 && self.outputs.late.is_empty() {
            self.stats.unmatched(&topic);
        }
    }
}

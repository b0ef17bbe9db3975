//! Persistence: the engine's state as named pieces of bytes, out and back in.
//!
//! ```text
//! step ─▶ Outputs::touched (Touched names) ─▶ caller: Engine::export(name) ─▶ bytes ─▶ store
//! restart: store ─▶ (name, bytes) ─▶ Engine::import ─▶ state restored, its timers re-armed
//! ```
//!
//! A piece is one of: a rule's state for one key (its bytes come from the kind's own
//! module, through [`KindState::export`](crate::kinds::KindState::export) and tagged
//! with the kind), a rule's past for one key (closed buckets, open buckets: see
//! `recall`), the watermark, the events held for reordering, the deduplication window,
//! history series. The engine never writes anything itself: it names what changed, the caller
//! decides when to store it. The same export and import carry a removed rule's state
//! over a reload (see [`Engine::reload`]).

use crate::engine::Engine;
use crate::output::{Outputs, Touched};
use std::sync::Arc;

/// Saved state could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state of {what}: {message}")]
pub struct StateError {
    /// The piece, as its [`Touched`] name prints.
    pub what: String,
    /// Why it was refused.
    pub message: String,
}

impl Engine {
    /// The persisted form of `what`, or `None` if it no longer exists (delete it).
    pub fn export(&self, what: &Touched) -> Option<Vec<u8>> {
        match what {
            Touched::Dedup(name) => self.dedup.export(name),
            Touched::Held(name) => self.reorder.export(name),
            Touched::Watermark => (self.config.time_field.is_some() && self.watermark != i64::MIN)
                .then(|| self.watermark.to_string().into_bytes()),
            Touched::Rule { rule, key } => {
                let idx = self.rules.iter().position(|r| r.name == *rule)?;
                let rt = &self.runtime[idx];
                let kind = rt.state.export(key);
                match rt.alarms.get(key) {
                    None => kind,
                    Some(alarm) => with_alarm(kind.as_deref(), alarm),
                }
            }
            Touched::Series { key, field } => self.recorder.export(key, field),
            Touched::Past { rule, key } => self.export_past(rule, key, true),
            Touched::PastOpen { rule, key } => self.export_past(rule, key, false),
        }
    }

    /// Everything there is, for snapshots and `state export`.
    pub fn export_all(&self) -> Vec<(Touched, Vec<u8>)> {
        let mut all = Vec::new();
        for (rule, rt) in self.rules.iter().zip(&self.runtime) {
            let mut keys = rt.state.key_names();
            keys.extend(rt.alarms.keys().filter(|k| !rt.state.key_set().is_some_and(|s| s.tracks(k))).cloned());
            for key in keys {
                let t = Touched::Rule { rule: rule.name.clone(), key };
                if let Some(bytes) = self.export(&t) {
                    all.push((t, bytes));
                }
            }
        }
        for t in self.past_pieces() {
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        if let Some(bytes) = self.export(&Touched::Watermark) {
            all.push((Touched::Watermark, bytes));
        }
        for name in self.reorder.names() {
            let t = Touched::Held(name);
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        for (key, field) in self.recorder.names() {
            let t = Touched::Series { key, field };
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        for name in self.dedup.names() {
            let t = Touched::Dedup(name.into());
            if let Some(bytes) = self.export(&t) {
                all.push((t, bytes));
            }
        }
        all.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        all
    }

    /// Restores one piece of state saved by [`Engine::export`], re-arming its timers. State
    /// of a rule that no longer exists, or that changed kind, is refused with an error (the
    /// caller logs and drops it).
    pub fn import(&mut self, what: &Touched, bytes: &[u8]) -> Result<(), StateError> {
        let err = |message: String| StateError { what: format!("{what:?}"), message };
        match what {
            Touched::Dedup(name) => self.dedup.import(name, bytes).map_err(err),
            Touched::Held(name) => self.reorder.import(name, bytes).map_err(err),
            Touched::Watermark => {
                let w = std::str::from_utf8(bytes).ok().and_then(|t| t.parse::<i64>().ok());
                self.watermark = w.ok_or_else(|| err("unreadable watermark".into()))?;
                Ok(())
            }
            Touched::Series { key, field } => {
                let (cfg, lateness) = (&self.config.history, self.config.lateness_ms);
                self.recorder
                    .import(cfg, lateness, Arc::clone(key), Arc::clone(field), bytes)
                    .map_err(|e| err(e.to_string()))
            }
            Touched::Past { rule, key } => self.import_past(rule, key, true, bytes).map_err(err),
            Touched::PastOpen { rule, key } => self.import_past(rule, key, false, bytes).map_err(err),
            Touched::Rule { rule, key } => {
                let idx = self.rules.iter().position(|r| r.name == *rule).ok_or_else(|| err("no such rule".into()))?;
                let (kind, alarm) = split_alarm(bytes).map_err(err)?;
                if let Some(kind) = kind {
                    // Restoring emits nothing; what it would touch is what is being restored.
                    let mut out = Outputs::default();
                    let (state, mut cx) = self.rule_cx(idx, 0, &mut out).ok_or_else(|| err("no such rule".into()))?;
                    state.import(&mut cx, Arc::clone(key), &kind).map_err(err)?;
                }
                if let Some(alarm) = alarm {
                    self.restore_alarm(idx, Arc::clone(key), alarm);
                }
                Ok(())
            }
        }
    }
}

/// The field of a rule's saved per-key state that holds the key's alarm, beside the kind's
/// own fields; state saved before alarms existed has none and loads as it did.
const ALARM_FIELD: &str = "alarm";
/// The `kind` of a piece that holds an alarm only (rules whose kind keeps no state).
const ALARM_ONLY: &str = "alarm_only";

/// The kind's saved state (if any) with `alarm` added.
fn with_alarm(kind: Option<&[u8]>, alarm: &crate::keyalarm::KeyAlarm) -> Option<Vec<u8>> {
    let mut v = match kind {
        Some(bytes) => serde_json::from_slice::<serde_json::Value>(bytes).ok()?,
        None => serde_json::json!({ "kind": ALARM_ONLY }),
    };
    v.as_object_mut()?.insert(ALARM_FIELD.into(), serde_json::to_value(alarm).ok()?);
    serde_json::to_vec(&v).ok()
}

/// Splits saved per-key state into the kind's bytes (none for an alarm-only piece) and the
/// alarm (none in state saved without one).
fn split_alarm(bytes: &[u8]) -> Result<(Option<Vec<u8>>, Option<crate::keyalarm::KeyAlarm>), String> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some(obj) = v.as_object_mut() else { return Ok((Some(bytes.to_vec()), None)) };
    let Some(alarm) = obj.remove(ALARM_FIELD) else { return Ok((Some(bytes.to_vec()), None)) };
    let alarm: crate::keyalarm::KeyAlarm =
        serde_json::from_value(alarm).map_err(|e| format!("unreadable alarm: {e}"))?;
    if obj.get("kind").and_then(|k| k.as_str()) == Some(ALARM_ONLY) {
        return Ok((None, Some(alarm)));
    }
    Ok((Some(serde_json::to_vec(&v).map_err(|e| e.to_string())?), Some(alarm)))
}

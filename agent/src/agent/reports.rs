//! What the agent says about itself, as outbox entries: its retained status (`online`,
//! `offline`), the rules' status document, events about the agent (`restarted`, `restored`,
//! `dropped`, `key_limit`), rule faults, and dead letters. Plain functions from facts to
//! entries; the engine loop queues them.

use crate::config::Config;
use crate::emit::CloudEvent;
use crate::store::{Opened, OutboxEntry};
use crate::telemetry::Stats;
use edgewatch_engine::{Engine, Outputs, Timestamp};
use std::sync::atomic::Ordering::Relaxed;

pub(super) use crate::wall_clock;

/// A dead letter on `<prefix>/deadletter`.
pub(super) fn dead_letter_entry(config: &Config, letter: Vec<u8>) -> OutboxEntry {
    OutboxEntry {
        topic: config.upstream.deadletter_topic(),
        payload: letter.into(),
        qos: 1,
        retain: false,
        traced: false,
    }
}

/// A rule fault, on `<prefix>/errors`.
pub(super) fn fault_entry(config: &Config, fault: &edgewatch_engine::RuleFault) -> OutboxEntry {
    let report = serde_json::json!({
        "rule": &*fault.rule,
        "location": fault.location,
        "error": fault.message,
        "disabled": fault.disabled,
        "time": wall_clock().to_rfc3339(),
    });
    OutboxEntry {
        topic: config.upstream.errors_topic(),
        payload: report.to_string().into(),
        qos: 1,
        retain: false,
        traced: false,
    }
}

/// Opens the history log and hands it to the store. What the opening repaired (a torn tail
/// after a crash, a damaged file) is reported once, as the state's restore is; a log that
/// cannot be opened leaves the agent running without history, said loudly.
pub(super) fn open_history(
    store: &mut crate::store::Store,
    config: &Config,
    stats: &Stats,
) -> Option<(&'static str, serde_json::Value)> {
    let dir = crate::history::dir_in(&config.state_dir);
    match crate::history::HistoryLog::open(&dir, config.history) {
        Ok((log, recovery)) => {
            stats.detail.history.bytes.store(log.usage().bytes, Relaxed);
            store.attach_history(log);
            if recovery.is_clean() {
                return None;
            }
            let damaged: Vec<_> = recovery
                .damaged
                .iter()
                .map(|d| serde_json::json!({ "file": d.path.display().to_string(), "at": d.at, "why": d.why }))
                .collect();
            tracing::warn!(
                truncated_files = recovery.truncated_files,
                truncated_bytes = recovery.truncated_bytes,
                damaged = damaged.len(),
                "History repaired at start: torn tails cut off, damaged files read up to the damage."
            );
            Some((
                "history_recovered",
                serde_json::json!({
                    "truncated_files": recovery.truncated_files,
                    "truncated_bytes": recovery.truncated_bytes,
                    "damaged": damaged,
                }),
            ))
        }
        Err(error) => {
            tracing::error!(%error, "History cannot be opened: this run keeps none (roll-ups counted as dropped).");
            Some(("history_unavailable", serde_json::json!({ "error": error.to_string() })))
        }
    }
}

/// After a restart, whether from the database or from the snapshot after a restore: gives
/// every tracked device a full timeout from now (no storm of `missing`), and returns the
/// events that say so: `restored` (what opening the store had to do) and `restarted`.
/// `last_alive` is the store's "alive" mark (a restored snapshot's, after a restore); none
/// and a clean open means a first start.
pub(super) fn restart_events(
    engine: &mut Engine,
    opened: &Opened,
    last_alive: Option<i64>,
    restored_keys: usize,
) -> Vec<(&'static str, serde_json::Value)> {
    let mut events = Vec::new();
    let (restored_from, snapshot_time) = match opened {
        Opened::Clean => ("database", None),
        Opened::Recovered { reason, quarantined, snapshot } => {
            let snapshot_time = snapshot.as_ref().ok().map(|t| Timestamp(*t).to_rfc3339());
            let lost = match snapshot {
                Ok(_) => "changes since the snapshot".to_owned(),
                Err(why) => format!("all state and waiting events: {why}"),
            };
            events.push((
                "restored",
                serde_json::json!({
                    "reason": reason,
                    "quarantined": quarantined.display().to_string(),
                    "restored": snapshot.is_ok(),
                    "snapshot_time": snapshot_time,
                    "lost": lost,
                }),
            ));
            (if snapshot.is_ok() { "snapshot" } else { "nothing" }, snapshot_time)
        }
    };
    if last_alive.is_none() && matches!(opened, Opened::Clean) {
        return events;
    }
    let now = wall_clock();
    engine.grace_after_restart(now, &mut Outputs::default());
    let downtime = last_alive.map(|last| (now.millis() - last).max(0));
    tracing::info!(restored_keys, restored_from, downtime_ms = downtime, "State restored after a restart.");
    let mut data = serde_json::json!({
        "down_since": last_alive.map(|t| Timestamp(t).to_rfc3339()),
        "downtime_ms": downtime,
        "restored_keys": restored_keys,
        "restored_from": restored_from,
    });
    if let Some(t) = snapshot_time {
        data["snapshot_time"] = serde_json::json!(t);
    }
    events.push(("restarted", data));
    events
}

/// The data of an `edgewatch.agent.dropped` event.
pub(super) fn drop_report(dropped: u64) -> serde_json::Value {
    serde_json::json!({ "dropped": dropped, "reason": "outbox full (state.max_outbox_mb)" })
}

/// The agent's own status, retained on `<prefix>/status`: `online` (with version, uptime and
/// rule count) on every connection to the upstream broker, `offline` at a clean stop; the
/// broker publishes the last will `offline` if the connection is lost.
pub(super) fn agent_status(config: &Config, status: &str, started: Timestamp, rules: usize) -> OutboxEntry {
    let now = wall_clock();
    let doc = serde_json::json!({
        "status": status,
        "agent": config.agent_id,
        "version": env!("CARGO_PKG_VERSION"),
        "started": started.to_rfc3339(),
        "uptime_s": (now.millis() - started.millis()).max(0) / 1000,
        "rules": rules,
        "time": now.to_rfc3339(),
    });
    OutboxEntry {
        topic: config.upstream.agent_status_topic(),
        payload: doc.to_string().into(),
        qos: 1,
        retain: true,
        traced: false,
    }
}

/// The rules' status document, retained on `<prefix>/status/rules`, with each rule's count of
/// messages whose `e.value` it read and found missing (why a rule may never fire).
pub(super) fn status_entry(config: &Config, status: &serde_json::Value, stats: &Stats) -> OutboxEntry {
    let mut doc = status.clone();
    doc["agent"] = serde_json::json!(config.agent_id);
    if let (Some(rules), Ok(counts)) = (doc["rules"].as_array_mut(), stats.detail.by_rule.lock()) {
        for rule in rules {
            let missing = rule["name"].as_str().and_then(|n| counts.get(n)).map_or(0, |c| c.value_missing);
            rule["value_missing"] = serde_json::json!(missing);
        }
    }
    OutboxEntry {
        topic: config.upstream.rules_status_topic(),
        payload: doc.to_string().into(),
        qos: 1,
        retain: true,
        traced: false,
    }
}

/// An event about the agent itself, on `<prefix>/agent/events`.
pub(super) fn agent_event(config: &Config, source: &str, kind: &str, data: serde_json::Value) -> OutboxEntry {
    let now = wall_clock();
    let id = edgewatch_engine::CompositeId::derive(
        "agent",
        kind,
        edgewatch_engine::EventId::from_content(kind, &now.millis().to_le_bytes()),
        0,
    );
    let event = CloudEvent::about_agent(kind, id.to_string(), (source, &config.agent_id), now.to_rfc3339(), &data);
    OutboxEntry {
        topic: format!("{}/agent/events", config.upstream.topic_prefix),
        payload: event.to_json().into(),
        qos: 1,
        retain: false,
        traced: false,
    }
}

/// The dead letter for a payload that could not be processed: where it came from, why, and
/// (a bounded prefix of) what it was. `size` is the whole payload's: `payload` may be less
/// (nothing, for a message too large to have been kept).
pub(super) fn dead_letter(
    topic: &str,
    payload: Option<&[u8]>,
    size: usize,
    time: Timestamp,
    reason: &str,
    error: &str,
) -> Vec<u8> {
    const SHOWN: usize = 256;
    let mut letter = serde_json::json!({
        "topic": topic,
        "reason": reason,
        "error": error,
        "size": size,
        "received": time.to_rfc3339(),
    });
    letter["payload_prefix"] = match payload {
        Some(payload) => String::from_utf8_lossy(&payload[..payload.len().min(SHOWN)]).into(),
        // Its subscription protects fields (`privacy`): no byte of it is shown.
        None => serde_json::Value::Null,
    };
    letter.to_string().into_bytes()
}

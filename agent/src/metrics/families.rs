//! The metric families of `/metrics`, encoded from the agent's counters and gauges at each
//! scrape (docs/operations.md lists them).

use super::Sources;
use crate::health::Link;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

/// Every family, read from the agent's counters when scraped.
#[derive(Debug)]
pub(super) struct AgentCollector(pub(super) Arc<Sources>);

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// A family with two labels.
fn labelled2<'a>(
    e: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    (l1, l2): (&str, &str),
    values: impl IntoIterator<Item = ((&'a str, &'a str), u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for ((v1, v2), n) in values {
        ConstCounter::new(n).encode(m.encode_family(&[(l1, v1), (l2, v2)])?)?;
    }
    Ok(())
}

fn labelled<'a>(
    e: &mut DescriptorEncoder<'_>,
    (name, help, ty): (&str, &str, MetricType),
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, ty)?;
    for (value, n) in values {
        let labels = [(label, value)];
        let fam = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(n).encode(fam)?,
            _ => ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(fam)?,
        }
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0.stats;
        let d = &s.detail;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed);
        let e = &mut e;
        labelled(
            e,
            ("messages_received", "Messages received, by subscription filter.", MetricType::Counter),
            "subscription",
            d.subscriptions.iter().map(String::as_str).zip(d.received_by_subscription.iter().map(load)),
        )?;
        counter(e, "messages_processed", "Messages decoded and run through the rules.", load(&s.processed))?;
        counter(e, "messages_unmatched", "Messages no rule listens to.", load(&s.unmatched))?;
        counter(e, "duplicates", "Redelivered or repeated messages dropped.", load(&s.duplicates))?;
        counter(e, "late", "Messages older than the allowed lateness (dead-lettered).", load(&s.late))?;
        if let Ok(reasons) = d.decode_errors_by_reason.lock() {
            labelled(
                e,
                ("decode_errors", "Payloads that could not be decoded, by reason.", MetricType::Counter),
                "reason",
                reasons.iter().map(|(r, n)| (*r, *n)),
            )?;
        }
        if let Ok(rejected) = d.schema_rejected.lock() {
            labelled2(
                e,
                (
                    "schema_rejected",
                    "Payloads their subscription's schema refused, by subscription and schema version.",
                ),
                ("subscription", "version"),
                rejected.iter().map(|((s, v), n)| ((s.as_str(), v.as_str()), *n)),
            )?;
        }
        counter(e, "dead_letters", "Messages published to the dead-letter topic.", load(&s.dead_letters))?;
        counter(
            e,
            "messages_quarantined",
            "Messages dead-lettered unprocessed after the agent crashed on their earlier deliveries.",
            load(&s.quarantined),
        )?;
        counter(
            e,
            "privacy_fields_protected",
            "Payload fields dropped, masked or pseudonymised by their subscription's privacy.",
            load(&s.privacy_protected),
        )?;
        counter(
            e,
            "privacy_fields_dropped_instead",
            "Protected fields that could not be masked as declared (wrong type) and were dropped instead.",
            load(&s.privacy_dropped_instead),
        )?;
        counter(e, "audit_errors", "Audit entries that could not be written.", load(&s.audit_errors))?;
        counter(
            e,
            "sparkplug_seq_gaps",
            "Sparkplug B messages whose seq did not follow their edge node's previous message.",
            load(&s.sparkplug_seq_gaps),
        )?;
        counter(
            e,
            "sparkplug_ignored",
            "Sparkplug B messages ignored as the specification asks (an old session's NDEATH, commands, STATE).",
            load(&s.sparkplug_ignored),
        )?;
        counter(
            e,
            "sparkplug_rebirths_requested",
            "Rebirth requests sent to edge nodes.",
            load(&s.sparkplug_rebirths),
        )?;
        if let Ok(by_rule) = d.by_rule.lock() {
            let mut rules: Vec<_> = by_rule.iter().map(|(r, c)| (r.clone(), *c)).collect();
            drop(by_rule);
            rules.sort_by(|a, b| a.0.cmp(&b.0));
            let it = || rules.iter().map(|(r, c)| (&**r, *c));
            labelled(
                e,
                ("events", "Composite events produced, by rule.", MetricType::Counter),
                "rule",
                it().map(|(r, c)| (r, c.events)),
            )?;
            labelled(
                e,
                ("rule_errors", "Rule calls that failed (limits, runtime errors), by rule.", MetricType::Counter),
                "rule",
                it().map(|(r, c)| (r, c.faults)),
            )?;
            labelled(
                e,
                ("rule_disabled", "1 if the rule was disabled after repeated failures.", MetricType::Gauge),
                "rule",
                it().map(|(r, c)| (r, u64::from(c.disabled))),
            )?;
            labelled(
                e,
                (
                    "rule_value_missing",
                    "Messages whose e.value a rule read and found missing (it cannot fire on them), by rule.",
                    MetricType::Counter,
                ),
                "rule",
                it().map(|(r, c)| (r, c.value_missing)),
            )?;
        }
        if let Ok(keys) = d.tracked_keys.lock() {
            labelled(
                e,
                ("tracked_keys", "Keys (devices) with state, by rule.", MetricType::Gauge),
                "rule",
                keys.iter().map(|(r, n)| (&**r, *n)),
            )?;
        }
        counter(e, "keys_refused", "New keys turned away at a rule's key limit (or too long).", load(&s.keys_refused))?;
        counter(e, "keys_evicted", "Least recently seen keys evicted at a rule's key limit.", load(&s.keys_evicted))?;
        gauge(e, "rules_loaded", "Rules running.", None, d.rules_loaded.load(Relaxed) as i64)?;
        counter(
            e,
            "rule_file_errors",
            "Rule files or tables that failed to load at start.",
            load(&s.rule_file_errors),
        )?;
        counter(e, "reloads", "Reloads that changed the rules.", load(&s.reloads))?;
        counter(e, "reload_errors", "Rule files or tables that failed at a reload.", load(&s.reload_errors))?;
        for (name, help, h) in [
            ("engine", "Engine time per message, all rules it reaches.", &d.engine_seconds),
            (
                "commit_latency",
                "From a message's arrival to its effects being durable and acknowledged.",
                &d.commit_latency_seconds,
            ),
            ("flush", "One write of state and outbox to disk.", &d.flush_seconds),
        ] {
            h.encode(e.encode_descriptor(name, help, Some(&Unit::Seconds), h.metric_type())?)?;
        }
        gauge(
            e,
            "queue_depth",
            "Messages waiting between the source connection and the engine.",
            None,
            load(&d.queue_depth) as i64,
        )?;
        let (events, bytes) = (self.0.outbox)();
        gauge(e, "outbox_events", "Events waiting for the upstream broker.", None, events as i64)?;
        gauge(e, "outbox", "Size of the events waiting for the upstream broker.", Some(&Unit::Bytes), bytes as i64)?;
        counter(e, "outbox_dropped", "Events dropped because the outbox was full.", load(&s.outbox_dropped))?;
        let h = &d.history;
        if let Ok(skipped) = h.skipped.lock() {
            labelled2(
                e,
                ("history_skipped", "Readings not kept in history, by subscription or rule and reason."),
                ("source", "reason"),
                skipped.iter().map(|((s, r), n)| ((&**s, *r), *n)),
            )?;
        }
        counter(e, "history_rollups_written", "Closed roll-ups written to history.", load(&h.written))?;
        counter(
            e,
            "history_rollups_dropped",
            "Closed roll-ups not written (memory only, or a disk error).",
            load(&h.dropped),
        )?;
        counter(
            e,
            "history_evicted_bytes",
            "History deleted, oldest first, to stay within history.max_mb.",
            load(&h.evicted_bytes),
        )?;
        gauge(e, "history", "Size of history on disk.", Some(&Unit::Bytes), load(&h.bytes) as i64)?;
        let j = &*d.journal;
        counter(e, "journal_written", "Inputs written to the input journal.", load(&j.written))?;
        counter(
            e,
            "journal_skipped",
            "Inputs not journaled: its queue was full (a slow disk) or the disk refused them.",
            load(&j.skipped),
        )?;
        counter(
            e,
            "journal_evicted_bytes",
            "Journal segments deleted, oldest first, to stay within journal.max_mb and journal.max_age.",
            load(&j.evicted_bytes),
        )?;
        gauge(e, "journal", "Size of the input journal on disk.", Some(&Unit::Bytes), load(&j.bytes) as i64)?;
        let l = &*d.event_log;
        counter(
            e,
            "event_log_skipped",
            "Event log records not written: its queue was full (a slow disk) or the disk refused them.",
            load(&l.skipped),
        )?;
        gauge(e, "event_log", "Size of the event log on disk.", Some(&Unit::Bytes), load(&l.bytes) as i64)?;
        counter(
            e,
            "outbox_written",
            "Events written to disk: not acknowledged upstream by the time their batch was written.",
            load(&s.outbox_written),
        )?;
        counter(e, "events_published", "Events handed to the upstream connection.", load(&s.published))?;
        counter(e, "events_acked", "Events acknowledged by the upstream broker.", load(&s.acked))?;
        let lanes = self.0.sinks.lanes();
        if !lanes.is_empty() {
            counter(e, "actions", "Actions queued for sinks (notify, act).", load(&s.actions))?;
            let per_sink = |f: fn(&crate::sinks::LaneStats) -> u64| {
                lanes.iter().map(move |l| (l.config.name.as_str(), f(&l.stats))).collect::<Vec<_>>()
            };
            for (name, help, f) in [
                (
                    "actions_sent",
                    "Actions a sink accepted.",
                    (|s| s.sent.load(Relaxed)) as fn(&crate::sinks::LaneStats) -> u64,
                ),
                ("actions_retried", "Attempts that failed and will be tried again.", |s| s.retried.load(Relaxed)),
                ("actions_failed", "Actions given up: refused for good, or out of retries.", |s| {
                    s.failed.load(Relaxed)
                }),
                ("actions_dropped", "Actions dropped unsent: the sink's queue was full.", |s| s.dropped.load(Relaxed)),
                ("actions_dry_run", "Actions logged and not sent (dry_run).", |s| s.dry_run.load(Relaxed)),
            ] {
                labelled(e, (name, help, MetricType::Counter), "sink", per_sink(f))?;
            }
            let depth = lanes.iter().map(|l| (l.config.name.as_str(), l.depth().0 as u64)).collect::<Vec<_>>();
            labelled(e, ("action_queue_depth", "Actions waiting for their sink.", MetricType::Gauge), "sink", depth)?;
            let mut m = e.encode_descriptor(
                "action_latency",
                "From an action being made to its sink accepting it.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for l in lanes {
                l.stats.latency_seconds.encode(m.encode_family(&[("sink", l.config.name.as_str())])?)?;
            }
        }
        if let Some(disk) = (self.0.disk)() {
            gauge(e, "state_disk", "Size of the state database on disk.", Some(&Unit::Bytes), disk as i64)?;
        }
        let names = ["source", "upstream"];
        let ready = *self.0.ready.borrow();
        labelled(
            e,
            ("connected", "1 while connected to the broker.", MetricType::Gauge),
            "connection",
            [Link::Source, Link::Upstream].map(|l| (l.name(), u64::from(ready.connected(l)))),
        )?;
        labelled(
            e,
            ("connects", "Successful connections (the first and every reconnect).", MetricType::Counter),
            "connection",
            names.iter().map(|n| (*n, d.connection(n).connects.load(Relaxed))),
        )?;
        labelled(
            e,
            ("connection_failures", "Connection attempts or connections that failed.", MetricType::Counter),
            "connection",
            names.iter().map(|n| (*n, d.connection(n).failures.load(Relaxed))),
        )?;
        labelled(
            e,
            ("disconnects", "Connections that were up and went down (one per outage).", MetricType::Counter),
            "connection",
            names.iter().map(|n| (*n, d.connection(n).disconnects.load(Relaxed))),
        )?;
        gauge(
            e,
            "uptime",
            "Time since the agent started.",
            Some(&Unit::Seconds),
            d.started.elapsed().as_secs() as i64,
        )?;
        let info = [("version", env!("CARGO_PKG_VERSION"))];
        let mut m = e.encode_descriptor("build", "Version of the agent.", None, MetricType::Info)?;
        m.encode_info(&info)?;
        Ok(())
    }
}

//! The parts the agent is wired from at start, each opened or built on its own: the audit
//! trail, the input journal and the event log (each optional: the agent runs without one that
//! cannot be opened, and says so), the sinks' delivery tasks, what the console and `/metrics`
//! read, and the subscriptions.

use super::reports::wall_clock;
use super::step::Input;
use crate::config::{Config, Subscription};
use crate::decode::Format;
use crate::health::Readiness;
use crate::outbox::Outbox;
use crate::reload::{RuleFiles, Trigger};
use crate::sinks::Sinks;
use crate::store;
use crate::telemetry::Stats;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The input journal, when `[journal]` is on and it opens.
pub(super) fn open_journal(config: &Config, stats: &Stats) -> Option<crate::journal::Journal> {
    let limits = config.journal?;
    let dir = crate::journal::dir_in(&config.state_dir);
    match crate::journal::Journal::start(&dir, limits, stats.detail.journal.clone()) {
        Ok((journal, recovered)) => {
            tracing::info!(dir = %dir.display(), segments = recovered.segments, bytes = recovered.bytes, torn_bytes = recovered.torn, "Input journal open.");
            Some(journal)
        }
        Err(error) => {
            tracing::error!(%error, "Input journal not opened: running without it.");
            None
        }
    }
}

/// The event log, unless turned off or it cannot be opened.
pub(super) fn open_event_log(config: &Config, stats: &Stats) -> Option<crate::events::EventLog> {
    let limits = config.event_log?;
    let dir = crate::events::dir_in(&config.state_dir);
    crate::events::EventLog::start(&dir, limits, stats.detail.event_log.clone())
        .map_err(|error| tracing::error!(%error, "Event log not opened: running without it."))
        .ok()
}

/// Starts the sinks' delivery tasks. An action a sink gives up on is reported through the
/// engine loop's queue, as an event about the agent.
pub(super) fn spawn_deliveries(
    config: &Config,
    sinks: &Arc<Sinks>,
    outbox: &Outbox,
    inputs: &mpsc::Sender<Input>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let reports = inputs.clone();
    let report: crate::sinks::deliver::Report = Arc::new(move |data| {
        let input = Input::Report { kind: "action_failed", data };
        if let Err(mpsc::error::TrySendError::Full(input)) = reports.try_send(input) {
            let reports = reports.clone();
            tokio::spawn(async move { reports.send(input).await });
        }
    });
    let ctx = crate::sinks::deliver::Ctx {
        store: outbox.store().cloned(),
        report,
        broker: config.source.clone(),
        stop: stop.clone(),
    };
    crate::sinks::deliver::spawn_all(sinks, &ctx)
}

/// What the console reads, and how it asks the engine loop: through its input queue, behind
/// the messages already there. The console holds the queue only while it asks, so it never
/// keeps the engine loop from ending.
pub(super) fn console_api(
    config: &Config,
    stats: &Arc<Stats>,
    inputs: &mpsc::Sender<Input>,
    (reload, feed, stop): (mpsc::Sender<Trigger>, Arc<crate::console::feed::Feed>, CancellationToken),
) -> crate::console::Api {
    let queue = inputs.downgrade();
    let ask: crate::console::Ask = Arc::new(move |query| {
        let queue = queue.upgrade();
        Box::pin(async move {
            match queue {
                Some(q) => q.send(Input::Query(query)).await.is_ok(),
                None => false,
            }
        })
    });
    let c = config.console.as_ref();
    crate::console::Api {
        tokens: crate::console::auth::Tokens {
            read: c.and_then(|c| c.read_token.clone()),
            write: c.and_then(|c| c.write_token.clone()),
        },
        ask,
        stats: stats.clone(),
        history_dir: crate::history::dir_in(&config.state_dir),
        events_dir: config.event_log.map(|_| crate::events::dir_in(&config.state_dir)),
        reload,
        feed,
        stop,
        backtester: crate::console::backtest::Backtester::find(config.file.as_deref()),
        backtests: Arc::new(tokio::sync::Semaphore::new(1)),
    }
}

/// The sensor subscriptions, and the control topics' if there are any.
pub(super) fn subscriptions(config: &Config) -> Vec<Subscription> {
    let mut subscriptions = config.subscriptions.clone();
    for topic in config.control_topic.iter().chain(&config.alarms_topic) {
        if let Ok(pattern) = edgewatch_engine::TopicPattern::parse(topic) {
            subscriptions.push(Subscription {
                filter: topic.clone(),
                pattern,
                qos: 1,
                format: Format::Scalar,
                strip_prefix: String::new(),
                schema: None,
                privacy: None,
            });
        }
    }
    subscriptions
}

/// What `/metrics` reads from this agent.
pub(super) fn metrics_sources(
    outbox: &Outbox,
    stats: Arc<Stats>,
    ready: watch::Receiver<Readiness>,
    sinks: Arc<Sinks>,
) -> crate::metrics::Sources {
    let (a, b) = (outbox.clone(), outbox.clone());
    let depth: crate::metrics::OutboxGauge = Box::new(move || {
        let (n, bytes) = a.depth();
        (n as u64, bytes)
    });
    let disk: crate::metrics::DiskGauge = Box::new(move || b.size_on_disk());
    crate::metrics::Sources { stats, ready, outbox: depth, disk, sinks }
}

/// Opens the audit trail and records this start (version, configuration, rule files) and a
/// restore after damage, if there was one. Returns the log with the entries to queue
/// upstream: those after the last one queued (durable state remembers it), else those since
/// the previous start (what `state export` or `import` recorded in between). `None` if the
/// log cannot be opened or written: the agent runs without it and says so.
pub(super) fn open_audit(
    config: &Config,
    files: &RuleFiles,
    store: Option<&store::Store>,
    startup_events: &[(&'static str, serde_json::Value)],
) -> Option<(crate::audit::AuditLog, Vec<crate::audit::Entry>)> {
    let dir = crate::audit::dir_in(&config.state_dir);
    let result = (|| {
        let (mut log, opened) = crate::audit::AuditLog::open(&dir, config.audit)?;
        let mut backlog = crate::audit::read_after(&dir, store.and_then(store::Store::audit_queued))?;
        let problem = match (&opened.missing_tail, opened.torn_bytes) {
            (Some(tail), _) => Some(tail.clone()),
            (None, 0) => None,
            (None, n) => Some(format!("a half-written last entry ({n} bytes) was cut off")),
        };
        let now = wall_clock().millis();
        let start = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "agent": config.agent_id,
            // Of the effective configuration (file and environment), secrets left out.
            "config_sha256": config.fingerprint,
            "rules": files.loaded(),
            "audit_problem": problem,
        });
        backlog.push(log.append(now, "start", start)?);
        for (kind, data) in startup_events.iter().filter(|(k, _)| *k == "restored") {
            backlog.push(log.append(now, kind, data.clone())?);
        }
        if let Some(problem) = &problem {
            tracing::error!(dir = %dir.display(), problem, "Audit trail damaged; recorded in its start entry.");
        }
        Ok::<_, crate::audit::AuditError>((log, backlog))
    })();
    match result {
        Ok(audit) => Some(audit),
        Err(error) => {
            tracing::error!(%error, "Audit trail not opened: running without it.");
            None
        }
    }
}

//! `edgewatch demo`: the whole path on one machine with nothing installed.
//!
//! An embedded broker, a simulated fleet (firmware-sim as a library) with one device that
//! overheats, the agent with the shipped rules, and a subscriber that prints every
//! composite event the agent publishes upstream. It ends with a summary.

use crate::agent::Agent;
use crate::broker::EmbeddedBroker;
use crate::config::Config;
use crate::telemetry::Snapshot;
use firmware_sim::{Fault, Fleet, FleetConfig, PublishOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The shipped rules, built in so the demo runs from anywhere.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    ("battery-low.rhai", include_str!("../../rules/battery-low.rhai")),
    ("door-forced.rhai", include_str!("../../rules/door-forced.rhai")),
    ("offline.rhai", include_str!("../../rules/offline.rhai")),
    ("overheat.rhai", include_str!("../../rules/overheat.rhai")),
    ("stuck-sensor.rhai", include_str!("../../rules/stuck-sensor.rhai")),
];

/// The shipped lookup tables, built in likewise.
pub const SHIPPED_TABLES: &[(&str, &str)] = &[("devices.csv", include_str!("../../rules/tables/devices.csv"))];

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub duration: Duration,
    pub devices: usize,
    /// Rules directory; `None` uses `./rules` when it exists, else the built-in copies.
    pub rules: Option<PathBuf>,
    pub seed: u64,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("the agent did not connect to the embedded broker within {0:?}")]
    NotReady(Duration),
    #[error("simulator: {0}")]
    Sim(#[from] firmware_sim::SimError),
}

/// What the demo saw.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// Messages the simulator published.
    pub published: u64,
    /// The agent's counters.
    pub agent: Snapshot,
    /// Composite events the upstream subscriber received.
    pub received_upstream: u64,
}

/// Runs the demo, printing events and the summary to `out`.
pub async fn run(opts: DemoOptions, out: &mut (impl Write + Send)) -> Result<DemoSummary, DemoError> {
    let broker =
        tokio::task::spawn_blocking(EmbeddedBroker::start).await.map_err(|e| DemoError::Setup(e.to_string()))??;
    let scratch = tempfile::tempdir().map_err(|e| DemoError::Setup(format!("temp dir: {e}")))?;
    let rules_dir = rules_dir(opts.rules.as_deref(), scratch.path())?;
    let text = format!(
        r#"
[agent]
id = "demo"
state_dir = {state:?}
[rules]
dir = {rules:?}
[source]
url = "{url}"
[[subscriptions]]
topic = "sensors/#"
format = "auto"
"#,
        state = scratch.path().join("state").display().to_string(),
        rules = rules_dir.display().to_string(),
        url = broker.url(),
    );
    let config = Config::from_toml(&text, "<demo>", std::iter::empty()).map_err(|e| DemoError::Setup(e.to_string()))?;
    let agent = Agent::new(config).await?;
    let _ = writeln!(
        out,
        "edgewatch demo: broker {}, {} devices, rules from {} ({}), {:?}",
        broker.url(),
        opts.devices,
        rules_dir.display(),
        agent.rule_names().join(", "),
        opts.duration
    );
    let mut ready = agent.readiness();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(agent.run(async move {
        let _ = stop_rx.await;
    }));
    let wait = Duration::from_secs(15);
    if tokio::time::timeout(wait, ready.wait_for(|r| r.is_ready())).await.is_err() {
        return Err(DemoError::NotReady(wait));
    }

    // The upstream side: what a cloud consumer would see.
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<(String, serde_json::Value)>(256);
    let watcher = tokio::spawn(watch_upstream(broker.v4.port(), "edgewatch/demo/events/#".into(), events_tx));
    // Give the watcher's subscription a moment to land before events flow.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // One device overheats for half the run; another goes silent, then comes back.
    let mut faults = vec![Fault::Overheat {
        device: opts.devices.min(3),
        start: opts.duration / 5,
        duration: opts.duration / 2,
        value: 85.5,
    }];
    if opts.devices > 7 {
        faults.push(Fault::Silence { device: 7, start: opts.duration / 5, duration: opts.duration / 2 });
    }
    let start_ms = edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
    let fleet = Fleet::new(FleetConfig {
        devices: opts.devices,
        seed: opts.seed,
        reading_interval: Duration::from_millis(500),
        heartbeat_interval: Some(Duration::from_secs(2)),
        start_ms: u64::try_from(start_ms).unwrap_or(0),
        faults,
        ..FleetConfig::default()
    })
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    let started = Instant::now();
    let sim = tokio::spawn(firmware_sim::run(
        fleet,
        PublishOptions {
            port: broker.v4.port(),
            client_id: "demo-fleet".into(),
            qos: 1,
            duration: opts.duration,
            ..PublishOptions::default()
        },
        std::future::pending(),
    ));

    let mut received_upstream = 0u64;
    let mut sim = sim;
    let sim_stats = loop {
        tokio::select! {
            Some((topic, event)) = events_rx.recv() => {
                received_upstream += 1;
                let _ = writeln!(out, "{}", format_event(started.elapsed(), &topic, &event));
            }
            done = &mut sim => break done.map_err(|e| DemoError::Setup(e.to_string()))??,
        }
    };
    // Let the last events through, then stop the agent and drain.
    let settle = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            Some((topic, event)) = events_rx.recv() => {
                received_upstream += 1;
                let _ = writeln!(out, "{}", format_event(started.elapsed(), &topic, &event));
            }
            _ = &mut settle => break,
        }
    }
    let _ = stop_tx.send(());
    let snapshot = agent_task.await.map_err(|e| DemoError::Setup(e.to_string()))??;
    watcher.abort();
    let summary = DemoSummary { published: sim_stats.published, agent: snapshot, received_upstream };
    let a = &summary.agent;
    let _ = writeln!(
        out,
        "summary:\n  simulator published   {} messages\n  agent received        {} ({} processed, {} decode errors, {} duplicates, {} rule faults)\n  \
         composite events      {} produced; {} messages acknowledged upstream (events and status)\n  events received upstream: {}",
        summary.published,
        a.received,
        a.processed,
        a.decode_errors,
        a.duplicates,
        a.rule_faults,
        a.events,
        a.acked,
        summary.received_upstream
    );
    Ok(summary)
}

/// The rules directory to use: the one given, `./rules`, or the built-in rules written to
/// `scratch`.
fn rules_dir(given: Option<&Path>, scratch: &Path) -> Result<PathBuf, DemoError> {
    if let Some(dir) = given {
        return Ok(dir.to_owned());
    }
    let local = PathBuf::from("rules");
    if local.join("overheat.rhai").is_file() {
        return Ok(local);
    }
    let dir = scratch.join("rules");
    std::fs::create_dir_all(dir.join("tables")).map_err(|e| DemoError::Setup(format!("{}: {e}", dir.display())))?;
    for (name, text) in SHIPPED_RULES {
        std::fs::write(dir.join(name), text).map_err(|e| DemoError::Setup(format!("{name}: {e}")))?;
    }
    for (name, text) in SHIPPED_TABLES {
        std::fs::write(dir.join("tables").join(name), text).map_err(|e| DemoError::Setup(format!("{name}: {e}")))?;
    }
    Ok(dir)
}

/// One readable line per event: time, rule, subject, data.
fn format_event(elapsed: Duration, topic: &str, event: &serde_json::Value) -> String {
    let rule = event["type"].as_str().and_then(|t| t.strip_prefix("edgewatch.")).unwrap_or(topic);
    let subject = event["subject"].as_str().unwrap_or("?");
    format!("[{:>6.1}s] {rule:<13} {subject:<8} {}", elapsed.as_secs_f64(), event["data"])
}

/// Subscribes to `filter` and forwards every message (parsed as JSON) until the receiver goes.
async fn watch_upstream(port: u16, filter: String, tx: tokio::sync::mpsc::Sender<(String, serde_json::Value)>) {
    let mut o = rumqttc::MqttOptions::new("demo-upstream-watcher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 16);
    let mut backoff = crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                backoff.reset();
                let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let value = serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                if tx.send((p.topic, value)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

//! `edgewatch demo`: the whole path on one machine.
//!
//! A broker, a simulated fleet (firmware-sim running `config/scenarios/demo.toml`, fitted to
//! the flags by [`fleet`]: one device overheats, another goes silent and comes back), the
//! agent with the shipped rules, and a subscriber that prints every composite event the
//! agent publishes upstream. It ends with a summary.
//!
//! The broker is an embedded one (feature `embedded-broker`, the default of a source build:
//! nothing to install), or the one given with `--broker` (the gateway's Mosquitto: the
//! packages leave the embedded broker out). Either way everything happens under a private
//! topic tree, `edgewatch-demo/<nonce>/`: the fleet publishes to `<tree>/sensors/...`, the
//! agent strips the tree off (`strip_prefix`) so the shipped rules match, and publishes to
//! `<tree>/events/...`. An agent in production on the same broker sees none of it, and the
//! demo clears its retained status messages when it ends.

mod broker;

use crate::agent::Agent;
use crate::config::Config;
use crate::telemetry::Snapshot;
use broker::{DemoBroker, upstream_client, watch_upstream};
use firmware_sim::{RunOptions, Scenario, SimOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The shipped rules, built in so the demo runs from anywhere.
pub const SHIPPED_RULES: &[(&str, &str)] = &[
    ("battery-forecast.rhai", include_str!("../../../rules/battery-forecast.rhai")),
    ("battery-low.rhai", include_str!("../../../rules/battery-low.rhai")),
    ("door-forced.rhai", include_str!("../../../rules/door-forced.rhai")),
    ("offline.rhai", include_str!("../../../rules/offline.rhai")),
    ("overheat.rhai", include_str!("../../../rules/overheat.rhai")),
    ("stuck-sensor.rhai", include_str!("../../../rules/stuck-sensor.rhai")),
    ("temperature-anomaly.rhai", include_str!("../../../rules/temperature-anomaly.rhai")),
];

/// The demo's own rule, beside the shipped ones: it acts. When a sensor overheats (the
/// shipped `overheat` rule's condition), it sends the sensor's fan a command on the demo's
/// `fans` sink (`<tree>/devices/<device>/cmd`), which the simulated fleet receives. Not in
/// `rules/`: a rule naming a sink fails to load where the configuration declares none.
pub const DEMO_COOLING_RULE: &str = r#"
rule("cooling", #{
    description: "Turn the fan of an overheating sensor on",
    on: "sensors/{device}/temperature",
    window: #{ size: "60s", filter: |e| e.value > 80.0 },
    when: |e| e.window.count >= 3,
    clear: |e| e.window.count == 0,
    emit: |e| #{ device: e.device, max_celsius: e.window.max },
    act: #{ sink: "fans", data: |ev| #{ fan: "on", device: ev.subject, because: "overheat" } },
});
"#;

/// The demo's fleet, `config/scenarios/demo.toml`, built in likewise: 20 sensors, one
/// overheating, one going silent and coming back; [`fleet`] fits it to the flags.
pub const DEMO_SCENARIO: &str = include_str!("../../../config/scenarios/demo.toml");

/// The shipped lookup tables, built in likewise.
pub const SHIPPED_TABLES: &[(&str, &str)] = &[("devices.csv", include_str!("../../../rules/tables/devices.csv"))];

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// `mqtt://host:port` of a broker to use; `None` starts the embedded one.
    pub broker: Option<String>,
    pub duration: Duration,
    pub devices: usize,
    /// Rules directory; `None` uses `./rules` when it exists, else the built-in copies.
    pub rules: Option<PathBuf>,
    pub seed: u64,
    /// Where to serve the console during the demo (another port of the same address when it
    /// is taken); `None`: no console.
    pub console: Option<std::net::SocketAddr>,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    #[error("no MQTT broker at {url} ({error}){hint}")]
    NoBroker { url: String, error: std::io::Error, hint: &'static str },
    #[error("--broker `{0}`: the demo needs a plain mqtt://host:port URL")]
    BrokerUrl(String),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("the agent did not connect to the broker at {0} within {1:?}")]
    NotReady(String, Duration),
    #[error("simulator: {0}")]
    Sim(#[from] firmware_sim::SimError),
    #[error("demo scenario: {0}")]
    Scenario(#[from] firmware_sim::ScenarioError),
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
    /// Commands the simulated devices received (from the demo's `cooling` rule).
    pub commands: Vec<firmware_sim::Command>,
}

/// Runs the demo, printing events and the summary to `out`. When `shutdown` completes (Ctrl-C)
/// the fleet stops early and the demo ends as it would at the end of its run: the agent
/// stops, and its retained status is cleared from the broker.
pub async fn run(
    opts: DemoOptions,
    out: &mut (impl Write + Send),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<DemoSummary, DemoError> {
    let broker = DemoBroker::start(opts.broker.as_deref()).await?;
    let (host, port) = (broker.host.clone(), broker.port);
    let url = if host.contains(':') { format!("mqtt://[{host}]:{port}") } else { format!("mqtt://{host}:{port}") };
    let nonce = format!("{:08x}", rand::random::<u32>());
    let tree = format!("edgewatch-demo/{nonce}");
    let scratch = tempfile::tempdir().map_err(|e| DemoError::Setup(format!("temp dir: {e}")))?;
    let (rules_dir, rules_from) = rules_dir(opts.rules.as_deref(), scratch.path())?;
    let text = format!(
        r#"
[agent]
id = "demo-{nonce}"
state_dir = {state:?}
[rules]
dir = {rules:?}
[source]
url = "{url}"
[[subscriptions]]
topic = "{tree}/sensors/#"
strip_prefix = "{tree}/"
format = "auto"
[upstream]
topic_prefix = "{tree}"
[[sinks]]
name = "fans"
kind = "mqtt"
topic = "{{prefix}}/devices/{{key}}/cmd"
qos = 1
"#,
        state = scratch.path().join("state").display().to_string(),
        rules = rules_dir.display().to_string(),
    );
    let console = opts.console.map(free_or_any);
    let text = match console {
        Some(addr) => format!("{text}[console]\nlisten = \"{addr}\"\n"),
        None => text,
    };
    let config = Config::from_toml(&text, "<demo>", std::iter::empty()).map_err(|e| DemoError::Setup(e.to_string()))?;
    let agent = Agent::new(config).await?;
    let _ = writeln!(
        out,
        "edgewatch demo: broker {url}{}, topics under {tree}/, {} devices, rules from {} ({}), {:?}",
        if broker.embedded { " (embedded)" } else { "" },
        opts.devices,
        rules_from,
        agent.rule_names().join(", "),
        opts.duration
    );
    if let Some(addr) = agent.console_addr() {
        let _ = writeln!(out, "console: http://{addr}/ (open it to watch the devices go missing and come back)");
    }
    let mut ready = agent.readiness();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // No reloads asked for from outside: the demo's rules only change by file.
    let (_no_reloads, reloads) = tokio::sync::mpsc::channel(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let cancel = stop.clone();
    tokio::spawn(async move {
        let _ = stop_rx.await;
        cancel.cancel();
    });
    let agent_task = tokio::spawn(agent.run(stop, reloads));
    let wait = Duration::from_secs(15);
    if tokio::time::timeout(wait, ready.wait_for(|r| r.is_ready())).await.is_err() {
        let _ = stop_tx.send(());
        // Its state lives in `scratch`: let it stop before the directory goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
        return Err(DemoError::NotReady(url, wait));
    }

    // The upstream side: what a cloud consumer would see.
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<(String, serde_json::Value)>(256);
    let (watcher_client, watcher_loop) = upstream_client(&host, port, &format!("edgewatch-demo-{nonce}-watcher"));
    let filters = vec![format!("{tree}/events/#"), format!("{tree}/status/#")];
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let watcher = tokio::spawn(watch_upstream(watcher_client.clone(), watcher_loop, filters, events_tx, subscribed_tx));
    // Events flow only once the watcher's subscriptions are acknowledged: none is missed.
    if tokio::time::timeout(wait, subscribed_rx).await.is_err() {
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
        watcher.abort();
        return Err(DemoError::NotReady(url, wait));
    }

    let scenario = fleet(&opts, &tree)?;
    let start_ms = crate::wall_clock().millis();
    let sim_opts = SimOptions { seed: opts.seed, start_ms: u64::try_from(start_ms).unwrap_or(0), duration: None };
    let client_id = format!("edgewatch-demo-{nonce}-fleet");
    let commands = Some(format!("{tree}/devices/+/cmd"));
    let run = RunOptions { host: host.clone(), port, client_id, qos: 1, commands, ..RunOptions::default() };
    let started = Instant::now();
    let mut sim = tokio::spawn(async move { firmware_sim::run_scenario(&scenario, sim_opts, &run, shutdown).await });

    let mut received_upstream = 0u64;
    // An error of the fleet still ends the demo the usual way (agent stopped, status cleared).
    let sim_result = loop {
        tokio::select! {
            Some((topic, event)) = events_rx.recv() => received_upstream += print_event(out, &tree, started, &topic, &event),
            done = &mut sim => break done.map_err(|e| DemoError::Setup(e.to_string())).and_then(|r| r.map_err(DemoError::from)),
        }
    };
    // Let the last events through, then stop the agent and drain.
    let settle = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(settle);
    loop {
        tokio::select! {
            Some((topic, event)) = events_rx.recv() => received_upstream += print_event(out, &tree, started, &topic, &event),
            _ = &mut settle => break,
        }
    }
    let _ = stop_tx.send(());
    let agent_result =
        agent_task.await.map_err(|e| DemoError::Setup(e.to_string())).and_then(|r| r.map_err(DemoError::from));
    // The agent left its status retained (`offline`) on the broker: take it away, so a shared
    // broker keeps nothing of the demo. An empty retained message deletes one. A broker may
    // still publish the agent's last will after this (rumqttd races a clean DISCONNECT
    // against the will), so clear again until the status topics stay quiet.
    for _ in 0..5 {
        for topic in [format!("{tree}/status"), format!("{tree}/status/rules")] {
            let _ = watcher_client.publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::new()).await;
        }
        let mut again = false;
        let quiet = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                Some((topic, event)) = events_rx.recv() => {
                    let shown = print_event(out, &tree, started, &topic, &event);
                    received_upstream += shown;
                    again |= shown == 0 && !event.is_null();
                }
                _ = &mut quiet => break,
            }
        }
        if !again {
            break;
        }
    }
    drop(events_rx);
    let _ = watcher_client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), watcher).await;
    drop(broker);
    let (sim_stats, snapshot) = (sim_result?, agent_result?);
    for c in &sim_stats.commands {
        let device = c.topic.strip_prefix(&format!("{tree}/devices/")).and_then(|t| t.strip_suffix("/cmd"));
        let _ = writeln!(
            out,
            "[{:>6.1}s] command to    {:<8} {}",
            c.at.as_secs_f64(),
            device.unwrap_or(&c.topic),
            c.payload
        );
    }
    let summary = DemoSummary {
        published: sim_stats.stats.published,
        agent: snapshot,
        received_upstream,
        commands: sim_stats.commands.clone(),
    };
    let a = &summary.agent;
    let _ = writeln!(
        out,
        "summary:\n  simulator published   {} messages\n  agent received        {} ({} processed, {} decode errors, {} duplicates, {} rule faults)\n  \
         composite events      {} produced; {} messages acknowledged upstream (events and status)\n  events received upstream: {}\n  \
         commands received by simulated devices: {}",
        summary.published,
        a.received,
        a.processed,
        a.decode_errors,
        a.duplicates,
        a.rule_faults,
        a.events,
        a.acked,
        summary.received_upstream,
        summary.commands.len()
    );
    Ok(summary)
}

/// `addr` if nothing listens there, else a free port of the same address: a second demo, or
/// an agent using the port, does not stop this one.
fn free_or_any(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => addr,
        Err(_) => std::net::TcpListener::bind((addr.ip(), 0)).and_then(|l| l.local_addr()).unwrap_or(addr),
    }
}

/// The demo scenario fitted to the flags: `devices` sensors (faults on devices it no
/// longer has are left out; the file's one group is `temperature`), topics under `tree`, and the fault timeline stretched to
/// `duration` (a zero duration runs until Ctrl-C, on the file's timeline).
pub fn fleet(opts: &DemoOptions, tree: &str) -> Result<Scenario, firmware_sim::ScenarioError> {
    let mut spec = Scenario::from_toml(DEMO_SCENARIO)?.spec().clone();
    spec.resize("temperature", opts.devices);
    spec.prefix_topics(tree);
    if opts.duration.is_zero() {
        spec.duration = None;
    } else {
        spec.stretch(opts.duration);
    }
    Scenario::new(spec)
}

/// The rules the demo runs, written to `scratch`: those of the directory given, of
/// `./rules`, or the built-in copies, plus the demo's own `cooling` rule (which acts, so it
/// needs the demo's sink); and where they came from, to say so.
fn rules_dir(given: Option<&Path>, scratch: &Path) -> Result<(PathBuf, String), DemoError> {
    let setup = |what: &Path, e: std::io::Error| DemoError::Setup(format!("{}: {e}", what.display()));
    let dir = scratch.join("rules");
    std::fs::create_dir_all(dir.join("tables")).map_err(|e| setup(&dir, e))?;
    let local = PathBuf::from("rules");
    let source = given.map(Path::to_owned).or_else(|| local.join("overheat.rhai").is_file().then_some(local));
    let label = match &source {
        Some(src) => {
            for (sub, ext) in [("", "rhai"), ("tables", "csv"), ("tables", "toml")] {
                let from = src.join(sub);
                let Ok(entries) = std::fs::read_dir(&from) else { continue };
                for path in entries.filter_map(Result::ok).map(|e| e.path()) {
                    if path.is_file() && path.extension().is_some_and(|x| x == ext) {
                        let to = dir.join(sub).join(path.file_name().unwrap_or_default());
                        std::fs::copy(&path, &to).map_err(|e| setup(&path, e))?;
                    }
                }
            }
            src.display().to_string()
        }
        None => {
            for (name, text) in SHIPPED_RULES {
                std::fs::write(dir.join(name), text).map_err(|e| setup(Path::new(name), e))?;
            }
            for (name, text) in SHIPPED_TABLES {
                std::fs::write(dir.join("tables").join(name), text).map_err(|e| setup(Path::new(name), e))?;
            }
            "the built-in copies".to_owned()
        }
    };
    std::fs::write(dir.join("demo-cooling.rhai"), DEMO_COOLING_RULE).map_err(|e| setup(&dir, e))?;
    Ok((dir, label))
}

/// Prints `event` if it is a composite event of the demo's `tree` (not a status message);
/// 1 if it was, else 0.
fn print_event(out: &mut impl Write, tree: &str, started: Instant, topic: &str, event: &serde_json::Value) -> u64 {
    if !topic.strip_prefix(tree).is_some_and(|t| t.starts_with("/events/")) {
        return 0;
    }
    let _ = writeln!(out, "{}", format_event(started.elapsed(), topic, event));
    1
}

/// One readable line per event: time, rule, subject, data.
fn format_event(elapsed: Duration, topic: &str, event: &serde_json::Value) -> String {
    let rule = event["type"].as_str().and_then(|t| t.strip_prefix("edgewatch.")).unwrap_or(topic);
    let subject = event["subject"].as_str().unwrap_or("?");
    format!("[{:>6.1}s] {rule:<13} {subject:<8} {}", elapsed.as_secs_f64(), event["data"])
}

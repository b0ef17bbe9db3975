//! Drives a [`Simulation`] against an MQTT broker: the only module (with the private `link`,
//! one connection) that does network I/O.
//!
//! One task (the caller's) sleeps until [`Simulation::next_due`], polls the simulation and
//! hands each message to a client; every connection has its own event-loop task
//! (a `Link`), which never publishes. Devices publish over one shared connection, except
//! own-connection devices, which get one each (with a last will), opened before the clock
//! starts and dropped or reopened when the simulation says so.
//!
//! Time is `tokio::time`, so tests can pause and advance it. Virtual t=0 is the moment every
//! connection is up; `speed` maps virtual to real time.
//!
//! Delivery is best effort, like a real device's: sessions are clean, so messages queued
//! while a connection is down, or QoS 1 messages in flight when it drops, are lost. On the
//! shared connection a full request channel slows the schedule down (the publish is
//! awaited); an own-connection device whose queue is full loses the message instead
//! (counted in [`RunStats::dropped`]), as a device with a dead radio would.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use rumqttc::QoS;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};

use crate::link::{Link, mqtt_options};
use crate::record::record_line;
use crate::scenario::{Scenario, ScenarioError};
use crate::sim::{Action, Emission, Kind, SimOptions, Simulation, Truth};

/// How long a run waits for its connections' first ConnAck before giving up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a run lets queued messages and the Disconnect go out when it stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound of the shared connection's request channel: how many messages may wait for its
/// event loop before the schedule waits.
const SHARED_CAPACITY: usize = 1024;
/// Bound of an own-connection device's request channel.
const OWN_CAPACITY: usize = 64;
/// At unlimited speed, how much virtual time one poll covers.
const MAX_SPEED_STEP: Duration = Duration::from_millis(50);

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// `qos` was not 0, 1 or 2.
    #[error("QoS must be 0, 1 or 2, not {0}")]
    InvalidQos(u8),
    /// `speed` was not a positive number.
    #[error("speed must be more than zero, not {0}")]
    InvalidSpeed(f64),
    /// No ConnAck within [`CONNECT_TIMEOUT`].
    #[error("no MQTT connection to {host}:{port} within {timeout:?}")]
    ConnectTimeout {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// How long we waited.
        timeout: Duration,
    },
    /// The client refused a request (its event loop is gone).
    #[error("the MQTT client refused a request")]
    Client(#[from] rumqttc::ClientError),
    /// An event loop task ended on its own.
    #[error("the MQTT event loop stopped")]
    EventLoopStopped,
    /// The scenario could not be built.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The recording could not be written.
    #[error("cannot write the recording")]
    Record(#[source] std::io::Error),
}

/// Where to publish, and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Broker host name or IP address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id of the shared connection; own-connection devices use
    /// `{client_id}-{device id}`. Two clients with the same id knock each other off.
    pub client_id: String,
    /// QoS of every publish but `online`, which is always QoS 1: 0, 1 or 2.
    pub qos: u8,
    /// Virtual seconds per real second: 1 is real time, 10 ten times faster,
    /// `f64::INFINITY` as fast as the broker takes it.
    pub speed: f64,
    /// A topic filter of the devices' command topics (`devices/+/cmd`): the fleet subscribes
    /// to it on its shared connection, logs each command and reports it
    /// ([`RunReport::commands`]), as devices that act on commands would see them.
    pub commands: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "firmware-sim".to_owned(),
            qos: 0,
            speed: 1.0,
            commands: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Messages handed to an MQTT client.
    pub published: u64,
    /// Of those, messages a fault shaped.
    pub shaped: u64,
    /// Messages a fault withheld (silence, flap, disconnect, heartbeat loss, forced door).
    pub withheld: u64,
    /// Messages an own-connection device could not queue (its connection was backed up).
    pub dropped: u64,
    /// Connections dropped abruptly (disconnect and flap faults).
    pub drops: u64,
    /// Times the shared connection came back after a failure.
    pub reconnects: u64,
    /// `published`, by device number.
    pub per_device: Vec<u64>,
}

/// What a run did, and what it injected.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Counters.
    pub stats: RunStats,
    /// Every fault that began during the run, its end cut where the run stopped.
    pub truth: Vec<Truth>,
    /// Virtual time the run covered (the duration, unless it was stopped early).
    pub covered: Duration,
    /// Commands received on [`RunOptions::commands`], in order, the first [`MAX_COMMANDS`].
    pub commands: Vec<Command>,
}

/// Most commands a run keeps for its report (all are logged).
pub const MAX_COMMANDS: usize = 1000;
/// Longest payload kept per command, in bytes.
const MAX_COMMAND_BYTES: usize = 1024;

/// A command a device received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Virtual time it arrived at.
    pub at: Duration,
    pub topic: String,
    /// Its payload as text (invalid UTF-8 replaced), at most 1 KiB.
    pub payload: String,
}

fn qos(level: u8) -> Result<QoS, SimError> {
    match level {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        other => Err(SimError::InvalidQos(other)),
    }
}

/// Real time for virtual `v` at `speed`; `None` when it does not fit.
fn real(v: Duration, speed: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(v.as_secs_f64() / speed).ok()
}

/// Sleeps until `start` + `after`, for ever if that is out of range.
async fn sleep_from(start: Instant, after: Option<Duration>) {
    match after.and_then(|a| start.checked_add(a)) {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Builds the simulation of `scenario` with `sim` and runs it with [`run_simulation`],
/// without recording.
pub async fn run_scenario(
    scenario: &Scenario,
    sim: SimOptions,
    opts: &RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, SimError> {
    let sim = Simulation::new(scenario, sim)?;
    run_simulation(sim, opts, None, shutdown).await
}

/// Publishes `sim`'s emissions until its end or `shutdown`, whichever comes first, then
/// disconnects every connection cleanly. Every message handed to a client (and the last
/// will of every dropped connection) is written to `record`, one line each.
///
/// Waits up to [`CONNECT_TIMEOUT`] for every connection's first ConnAck before the clock
/// starts. A `shutdown` before then ends with empty stats.
pub async fn run_simulation(
    mut sim: Simulation,
    opts: &RunOptions,
    mut record: Option<&mut (dyn Write + Send)>,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, SimError> {
    let qos = qos(opts.qos)?;
    if opts.speed.is_nan() || opts.speed <= 0.0 {
        return Err(SimError::InvalidSpeed(opts.speed));
    }
    let speed = opts.speed;
    tokio::pin!(shutdown);
    let mut stats = RunStats { per_device: vec![0; sim.len()], ..RunStats::default() };

    let (commands_tx, mut commands_rx) = tokio::sync::mpsc::channel(256);
    let mut commands = Vec::new();
    let subscription = opts.commands.clone().map(|filter| (filter, commands_tx));
    let mut shared = (sim.has_shared_devices() || subscription.is_some()).then(|| {
        Link::open_with(mqtt_options(&opts.host, opts.port, &opts.client_id, None), SHARED_CAPACITY, subscription)
    });
    let mut own: HashMap<usize, Link> = HashMap::new();
    for d in sim.own_connection_devices() {
        own.insert(d.index(), open_own(opts, d.id(), d.status_topic()));
    }

    tokio::select! {
        biased;
        () = &mut shutdown => {
            tracing::info!("Shutdown before the broker answered; nothing published");
            return Ok(RunReport { stats, truth: Vec::new(), covered: Duration::ZERO, commands: Vec::new() });
        }
        waited = timeout(CONNECT_TIMEOUT, all_connected(&mut shared, &mut own)) => match waited {
            Err(_) => {
                return Err(SimError::ConnectTimeout { host: opts.host.clone(), port: opts.port, timeout: CONNECT_TIMEOUT });
            }
            Ok(false) => return Err(SimError::EventLoopStopped),
            Ok(true) => {}
        }
    }

    let start = Instant::now();
    let end = sim.end();
    tracing::info!(
        devices = sim.len(),
        own_connections = own.len(),
        speed,
        duration = ?end,
        "Publishing the schedule"
    );
    let mut batch: Vec<Emission> = Vec::new();
    let mut now = Duration::ZERO;
    'run: loop {
        let Some(next) = sim.next_due() else {
            // Nothing more to send: wait for the end of the run (in real time) or shutdown.
            match end {
                Some(e) if speed.is_finite() => tokio::select! {
                    biased;
                    () = &mut shutdown => {}
                    () = sleep_from(start, real(e, speed)) => {}
                },
                Some(_) => {}
                None => shutdown.as_mut().await,
            }
            now = end.unwrap_or(now).max(now);
            break;
        };
        if speed.is_finite() {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = sleep_from(start, real(next, speed)) => {}
            }
            // Catch up on everything due by now (the simulation stops at its end by itself).
            let elapsed = Duration::try_from_secs_f64(start.elapsed().as_secs_f64() * speed).unwrap_or(Duration::MAX);
            now = elapsed.max(next);
        } else {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::task::yield_now() => {}
            }
            now = next.saturating_add(MAX_SPEED_STEP);
        }
        while let Ok((topic, payload)) = commands_rx.try_recv() {
            received(&mut commands, now, topic, &payload);
        }
        sim.poll(now, &mut batch);
        for e in batch.drain(..) {
            let line = if record.is_some() { record_line(&e) } else { None };
            let device = e.device;
            let sent = match e.action {
                Action::Publish(p) => {
                    let level = if p.kind == Kind::Status { QoS::AtLeastOnce } else { qos };
                    let faulted = !p.faults.is_empty();
                    let queued = if let Some(link) = own.get(&device) {
                        link.client().try_publish(&*p.topic, level, false, p.payload).is_ok()
                    } else if let Some(link) = &shared {
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break 'run,
                            sent = link.client().publish(&*p.topic, level, false, p.payload) => { sent?; true }
                        }
                    } else {
                        false
                    };
                    if queued {
                        stats.published += 1;
                        stats.shaped += u64::from(faulted);
                        if let Some(n) = stats.per_device.get_mut(device) {
                            *n += 1;
                        }
                    } else {
                        stats.dropped += 1;
                        tracing::debug!(device, topic = %p.topic, "Connection backed up; message dropped");
                    }
                    queued
                }
                Action::Connect => {
                    if let (Entry::Vacant(slot), Some(d)) = (own.entry(device), sim.device(device)) {
                        slot.insert(open_own(opts, d.id(), d.status_topic()));
                    }
                    false
                }
                Action::Drop { .. } => match own.remove(&device) {
                    Some(link) => {
                        link.abort();
                        stats.drops += 1;
                        true
                    }
                    None => false,
                },
            };
            if let (true, Some(line), Some(w)) = (sent, line, record.as_deref_mut()) {
                writeln!(w, "{line}").map_err(SimError::Record)?;
            }
        }
    }

    if let Some(w) = record {
        w.flush().map_err(SimError::Record)?;
    }
    while let Ok((topic, payload)) = commands_rx.try_recv() {
        received(&mut commands, now, topic, &payload);
    }
    let sim_stats = sim.stats();
    stats.withheld = sim_stats.withheld;
    stats.reconnects = shared.as_ref().map_or(0, |l| l.state().connects.saturating_sub(1));
    let truth = sim.truth_at(now);
    close_all(shared, own).await;
    tracing::info!(
        published = stats.published,
        shaped = stats.shaped,
        withheld = stats.withheld,
        dropped = stats.dropped,
        drops = stats.drops,
        reconnects = stats.reconnects,
        faults = truth.len(),
        "Finished publishing"
    );
    Ok(RunReport { stats, truth, covered: now, commands })
}

/// Logs a command a device received and keeps it for the report (the first [`MAX_COMMANDS`]).
fn received(commands: &mut Vec<Command>, at: Duration, topic: String, payload: &[u8]) {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX_COMMAND_BYTES)]).into_owned();
    tracing::info!(%topic, payload = %text, "Command received");
    if commands.len() < MAX_COMMANDS {
        commands.push(Command { at, topic, payload: text });
    }
}

fn open_own(opts: &RunOptions, id: &str, will: Option<&str>) -> Link {
    let client_id = format!("{}-{id}", opts.client_id);
    Link::open(mqtt_options(&opts.host, opts.port, &client_id, will), OWN_CAPACITY)
}

/// Waits until every link is connected; `false` if one's driving task is gone.
async fn all_connected(shared: &mut Option<Link>, own: &mut HashMap<usize, Link>) -> bool {
    if let Some(link) = shared {
        if !link.wait_connected().await {
            return false;
        }
    }
    for link in own.values_mut() {
        if !link.wait_connected().await {
            return false;
        }
    }
    true
}

/// Lets what is queued go out and says goodbye on every connection, all at once; gives up
/// after [`DRAIN_TIMEOUT`].
async fn close_all(shared: Option<Link>, own: HashMap<usize, Link>) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut closing = JoinSet::new();
    for link in shared.into_iter().chain(own.into_values()) {
        closing.spawn(link.close(deadline));
    }
    let mut late = 0;
    while let Some(done) = closing.join_next().await {
        if !matches!(done, Ok(true)) {
            late += 1;
        }
    }
    if late > 0 {
        tracing::warn!(connections = late, timeout = ?DRAIN_TIMEOUT, "Broker did not take the last messages in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{ChannelSpec, Group, GroupKind, PayloadFormat, ScenarioSpec, SensorSpec};
    use crate::signal::Signal;
    use crate::template::{IdTemplate, TopicTemplate};

    /// Two sensors, a reading a second, run for 5 s.
    fn sim() -> Simulation {
        let group = Group {
            name: "fleet".to_owned(),
            count: 2,
            id: IdTemplate::with_prefix("t-"),
            first_index: 0,
            format: PayloadFormat::Json,
            heartbeat_interval: None,
            heartbeat_topic: TopicTemplate::legacy("sensors", Some("heartbeat")),
            own_connection: false,
            status_topic: TopicTemplate::legacy("sensors", Some("status")),
            kind: GroupKind::Sensor(SensorSpec {
                reading_interval: Duration::from_secs(1),
                reading_topic: TopicTemplate::legacy("sensors", None),
                channels: vec![ChannelSpec { name: "temperature".to_owned(), signal: Signal::default() }],
            }),
        };
        let spec = ScenarioSpec {
            name: "two".to_owned(),
            description: String::new(),
            duration: Some(Duration::from_secs(5)),
            groups: vec![group],
            faults: Vec::new(),
        };
        let scenario = Scenario::new(spec).expect("valid");
        Simulation::new(&scenario, SimOptions::default()).expect("valid")
    }

    /// A port nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        l.local_addr().expect("has address").port()
    }

    fn opts(port: u16) -> RunOptions {
        RunOptions { port, ..RunOptions::default() }
    }

    /// Callers spawn a run, so its future must be `Send` when `shutdown` is.
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let o = opts(1);
        let fut = run_simulation(sim(), &o, None, std::future::pending::<()>());
        assert_send(&fut);
    }

    #[tokio::test(start_paused = true)]
    async fn no_broker_is_a_connect_timeout() {
        let started = Instant::now();
        let err = run_simulation(sim(), &opts(closed_port()), None, std::future::pending())
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, SimError::ConnectTimeout { .. }), "{err:?}");
        // Virtual time (the runtime is paused): the client waited the whole timeout.
        let waited = started.elapsed();
        assert!(waited >= CONNECT_TIMEOUT, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_before_connecting_publishes_nothing() {
        let report = run_simulation(sim(), &opts(closed_port()), None, async {}).await.expect("clean stop");
        assert_eq!(report.stats.published, 0);
        assert_eq!(report.stats.per_device, [0, 0]);
    }

    #[tokio::test]
    async fn bad_qos_is_refused_before_connecting() {
        let o = RunOptions { qos: 7, ..opts(closed_port()) };
        let err = run_simulation(sim(), &o, None, std::future::pending()).await.expect_err("bad QoS");
        assert!(matches!(err, SimError::InvalidQos(7)));
    }

    #[test]
    fn qos_levels() {
        assert_eq!(qos(0).ok(), Some(QoS::AtMostOnce));
        assert_eq!(qos(1).ok(), Some(QoS::AtLeastOnce));
        assert_eq!(qos(2).ok(), Some(QoS::ExactlyOnce));
        assert!(matches!(qos(3), Err(SimError::InvalidQos(3))));
    }

    #[test]
    fn real_time_at_speed() {
        assert_eq!(real(Duration::from_secs(10), 10.0), Some(Duration::from_secs(1)));
        assert_eq!(real(Duration::from_secs(10), f64::INFINITY), Some(Duration::ZERO));
        assert_eq!(real(Duration::MAX, 1e-30), None);
    }
}

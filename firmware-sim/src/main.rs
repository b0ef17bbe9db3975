//! `firmware-sim`: run a virtual sensor fleet against an MQTT broker.
//!
//! ```text
//! firmware-sim --scenario config/scenarios/accuracy.toml --host 127.0.0.1 --port 1883 \
//!              --duration 60s --seed 7 --record rec.jsonl --truth truth.jsonl
//! firmware-sim --scenario config/scenarios/demo.toml --dry-run --duration 10s   # records to stdout
//! firmware-sim --host 127.0.0.1 --port 1883 --devices 20 --interval 1s --format json \
//!              --seed 42 --duration 30s --overheat 3 --overheat-at 10s --overheat-for 20s
//! ```
//!
//! Without `--scenario`, the fleet flags describe one group of sensors (the first
//! firmware-sim). Flags are parsed raw here, then turned into a validated [`Scenario`] and
//! [`SimOptions`]; everything else is the library's.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use firmware_sim::{
    ChannelSpec, DEFAULT_START_MS, DeviceRef, FaultKind, FaultSpec, Group, GroupKind, IdTemplate, PayloadFormat,
    RunOptions, Scenario, ScenarioSpec, SensorSpec, Signal, SimOptions, Simulation, TopicTemplate,
};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SignalKind {
    /// `--base` ± `--amplitude` over `--period`, plus uniform `--noise`.
    Sine,
    /// Always `--base`.
    Constant,
    /// Random walk from `--base`, moving up to `--step` a reading, within `--min`..`--max`.
    Walk,
}

/// Virtual sensor fleets publishing readings, heartbeats and door events over MQTT, with
/// injected faults, a recording and the ground truth.
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about)]
struct Args {
    /// Scenario file (config/scenarios/*.toml); without it, the fleet flags below apply.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1", env = "FIRMWARE_SIM_HOST")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883, env = "FIRMWARE_SIM_PORT")]
    port: u16,
    /// MQTT client id [default: firmware-sim-<pid>]; own-connection devices add `-<device>`.
    #[arg(long)]
    client_id: Option<String>,
    /// QoS of every publish (`online` is always QoS 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Run for this long (e.g. 30s, 5m) [default: the scenario's `duration`]; 0 runs until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the devices' random streams: same seed, same messages and truth.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epoch milliseconds of virtual t=0 [default: now; with --dry-run, 1732170000000].
    #[arg(long)]
    start_ms: Option<u64>,
    /// Virtual seconds per real second (10 = ten times faster than real time; `max` = as
    /// fast as the broker takes it).
    #[arg(long, default_value = "1", value_parser = parse_speed)]
    speed: f64,
    /// Subscribe to the devices' command topics (a filter, such as `devices/+/cmd`) and log
    /// each command a device receives.
    #[arg(long, value_name = "FILTER")]
    commands: Option<String>,
    /// Write every message sent, one JSON line each, in the format `edgewatch replay` reads.
    #[arg(long, value_name = "FILE.jsonl")]
    record: Option<PathBuf>,
    /// Write the injected faults, one JSON line each, when the run ends.
    #[arg(long, value_name = "FILE.jsonl")]
    truth: Option<PathBuf>,
    /// Print the recording to stdout in virtual time instead of publishing.
    #[arg(long)]
    dry_run: bool,

    /// Sparkplug B instead: this many edge nodes (`spBv1.0/<group>/…/gw-000` …), each on its
    /// own connection with its NDEATH as the will, answering rebirth requests, with `--devices`
    /// devices each sending DDATA every `--interval`.
    #[arg(long, value_name = "NODES", conflicts_with_all = ["scenario", "dry_run", "record"])]
    sparkplug: Option<usize>,
    /// The Sparkplug group of `--sparkplug`'s nodes.
    #[arg(long, default_value = "plant", requires = "sparkplug")]
    sparkplug_group: String,
    /// A Sparkplug fault, `kind:node:at` (kinds: seq_gap, unknown_alias, bdseq_mismatch,
    /// kill); repeat for more. `--truth` gets what a host should report of each.
    #[arg(long, value_name = "KIND:NODE:AT", requires = "sparkplug", value_parser = firmware_sim::sparkplug::live::Injected::parse)]
    sparkplug_fault: Vec<firmware_sim::sparkplug::live::Injected>,

    /// Number of devices.
    #[arg(long, default_value_t = 20, conflicts_with = "scenario")]
    devices: usize,
    /// Time between two readings of one device.
    #[arg(long, visible_alias = "rate", default_value = "1s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    interval: Duration,
    /// Time between two heartbeats of one device.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    heartbeat: Duration,
    /// Send no heartbeats.
    #[arg(long, conflicts_with_all = ["heartbeat", "scenario"])]
    no_heartbeat: bool,
    /// Payload encoding: json or postcard.
    #[arg(long, default_value = "json", conflicts_with = "scenario")]
    format: PayloadFormat,
    /// Device ids are this plus a 3-digit index.
    #[arg(long, default_value = "t-", conflicts_with = "scenario")]
    id_prefix: String,
    /// First topic level.
    #[arg(long, default_value = "sensors", conflicts_with = "scenario")]
    topic_prefix: String,
    /// Sensor channel: last topic level of readings and the JSON key of the value.
    #[arg(long, default_value = "temperature", conflicts_with = "scenario")]
    channel: String,

    /// Signal model.
    #[arg(long, value_enum, default_value = "sine", conflicts_with = "scenario")]
    signal: SignalKind,
    /// Sine centre, constant value, or random-walk start.
    #[arg(long, default_value_t = 22.0, allow_negative_numbers = true, conflicts_with = "scenario")]
    base: f32,
    /// Sine amplitude.
    #[arg(long, default_value_t = 3.0, conflicts_with = "scenario")]
    amplitude: f32,
    /// Sine period.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    period: Duration,
    /// Sine noise half-width.
    #[arg(long, default_value_t = 0.2, conflicts_with = "scenario")]
    noise: f32,
    /// Largest random-walk step.
    #[arg(long, default_value_t = 0.1, conflicts_with = "scenario")]
    step: f32,
    /// Random-walk lower bound.
    #[arg(long, default_value_t = -40.0, allow_negative_numbers = true, conflicts_with = "scenario")]
    min: f32,
    /// Random-walk upper bound.
    #[arg(long, default_value_t = 85.0, allow_negative_numbers = true, conflicts_with = "scenario")]
    max: f32,

    /// Overheat this device (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX", conflicts_with = "scenario")]
    overheat: Vec<usize>,
    /// When overheating starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    overheat_at: Duration,
    /// How long overheating lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    overheat_for: Duration,
    /// Value reported while overheating.
    #[arg(long, default_value_t = 85.0, allow_negative_numbers = true, conflicts_with = "scenario")]
    overheat_value: f32,
    /// Silence this device (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX", conflicts_with = "scenario")]
    silence: Vec<usize>,
    /// When the silence starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    silence_at: Duration,
    /// How long the silence lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    silence_for: Duration,
    /// Make this device send one malformed payload (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX", conflicts_with = "scenario")]
    malformed: Vec<usize>,
    /// When the malformed payload is sent.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    malformed_at: Duration,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(f64::INFINITY);
    }
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number or `max`")),
    }
}

impl Args {
    fn signal(&self) -> Signal {
        match self.signal {
            SignalKind::Sine => {
                Signal::Sine { base: self.base, amplitude: self.amplitude, period: self.period, noise: self.noise }
            }
            SignalKind::Constant => Signal::Constant { value: self.base, noise: 0.0 },
            SignalKind::Walk => Signal::RandomWalk { start: self.base, step: self.step, min: self.min, max: self.max },
        }
    }

    /// The fault flags as a timeline; faults of zero length, which do nothing, are left out.
    fn faults(&self) -> Vec<FaultSpec> {
        let at = |device: usize| DeviceRef::Index { group: "fleet".to_owned(), index: device };
        let overheat = self.overheat.iter().filter(|_| !self.overheat_for.is_zero()).map(|&device| FaultSpec {
            device: at(device),
            start: self.overheat_at,
            kind: FaultKind::Overheat { duration: self.overheat_for, value: self.overheat_value, channel: None },
        });
        let silence = self.silence.iter().filter(|_| !self.silence_for.is_zero()).map(|&device| FaultSpec {
            device: at(device),
            start: self.silence_at,
            kind: FaultKind::Silence { duration: self.silence_for },
        });
        let malformed = self.malformed.iter().map(|&device| FaultSpec {
            device: at(device),
            start: self.malformed_at,
            kind: FaultKind::Malformed { count: 1 },
        });
        overheat.chain(silence).chain(malformed).collect()
    }

    /// The fleet flags as one group of sensors, `fleet`: ids `{id_prefix}{index:03}`, readings
    /// on `{topic_prefix}/{device}/{channel}`, heartbeats on `{topic_prefix}/{device}/heartbeat`.
    fn fleet(&self) -> anyhow::Result<ScenarioSpec> {
        // The prefixes are taken literally (not as templates): refuse what would change the
        // topic's levels or is not publishable; the scenario checks the rest.
        if self.id_prefix.contains(['/', '+', '#', '\0']) {
            bail!("--id-prefix {:?} may not contain '/', '+', '#' or NUL", self.id_prefix);
        }
        if self.topic_prefix.contains(['+', '#', '\0']) {
            bail!("--topic-prefix {:?} may not contain '+', '#' or NUL", self.topic_prefix);
        }
        if self.channel == "heartbeat" || self.channel.contains(['/', '+', '#', '\0']) {
            bail!("--channel {:?} is not a usable channel name", self.channel);
        }
        let prefix = self.topic_prefix.as_str();
        let group = Group {
            name: "fleet".to_owned(),
            count: self.devices,
            id: IdTemplate::with_prefix(&self.id_prefix),
            first_index: 0,
            format: self.format,
            heartbeat_interval: (!self.no_heartbeat).then_some(self.heartbeat),
            heartbeat_topic: TopicTemplate::legacy(prefix, Some("heartbeat")),
            own_connection: false,
            status_topic: TopicTemplate::legacy(prefix, Some("status")),
            kind: GroupKind::Sensor(SensorSpec {
                reading_interval: self.interval,
                reading_topic: TopicTemplate::legacy(prefix, None),
                channels: vec![ChannelSpec { name: self.channel.clone(), signal: self.signal() }],
            }),
        };
        Ok(ScenarioSpec {
            name: "fleet".to_owned(),
            description: String::new(),
            duration: None,
            groups: vec![group],
            faults: self.faults(),
        })
    }

    fn start_ms(&self) -> anyhow::Result<u64> {
        if let Some(ms) = self.start_ms {
            return Ok(ms);
        }
        if self.dry_run {
            return Ok(DEFAULT_START_MS);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?;
        u64::try_from(now.as_millis()).context("the system clock is out of range")
    }

    /// The scenario to run: the file, or the fleet flags as a one-group scenario.
    fn scenario(&self) -> anyhow::Result<Scenario> {
        if let Some(path) = &self.scenario {
            return Ok(Scenario::load(path)?);
        }
        Scenario::new(self.fleet()?).context("invalid fleet settings")
    }

    /// Virtual run length: `--duration` (0 = open-ended), else the scenario's.
    fn duration(&self, scenario: &Scenario) -> Option<Duration> {
        match self.duration {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => scenario.duration(),
        }
    }
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| format!("cannot create {}", path.display()))?))
}

fn write_truth(path: &Path, truth: &[firmware_sim::Truth]) -> anyhow::Result<()> {
    let mut out = create(path)?;
    firmware_sim::write_truth(&mut out, truth).and_then(|()| out.flush())?;
    tracing::info!(file = %path.display(), faults = truth.len(), "Wrote the ground truth");
    Ok(())
}

/// Prints the recording of the whole run to stdout (and to `--record`), in virtual time.
fn dry_run(args: &Args, mut sim: Simulation) -> anyhow::Result<()> {
    let Some(emissions) = sim.run_to_end() else {
        bail!("--dry-run needs a --duration (or a scenario with one)");
    };
    let mut record = args.record.as_deref().map(create).transpose()?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for e in &emissions {
        if let Some(line) = firmware_sim::record_line(e) {
            writeln!(out, "{line}")?;
            if let Some(r) = record.as_mut() {
                writeln!(r, "{line}")?;
            }
        }
    }
    out.flush()?;
    if let Some(r) = record.as_mut() {
        r.flush()?;
    }
    if let Some(path) = &args.truth {
        write_truth(path, &sim.truth())?;
    }
    let stats = sim.stats();
    tracing::info!(
        published = stats.published,
        shaped = stats.shaped,
        withheld = stats.withheld,
        drops = stats.drops,
        "Dry run done"
    );
    Ok(())
}

/// `--sparkplug`: the edge nodes until `--duration` (default: until Ctrl-C), then the truth.
async fn sparkplug(args: &Args, nodes: usize) -> anyhow::Result<()> {
    use firmware_sim::sparkplug::live;
    let fleet = live::Fleet {
        group: args.sparkplug_group.clone(),
        nodes,
        devices: args.devices,
        metrics: vec![args.channel.clone()],
        interval: args.interval,
        down: Duration::from_secs(2),
        faults: args.sparkplug_fault.clone(),
    };
    let duration = args.duration.filter(|d| !d.is_zero()).unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
    let report = live::run(&fleet, (&args.host, args.port), duration, ctrl_c()).await.context("publishing failed")?;
    tracing::info!(published = report.published, rebirths = report.rebirths, "Sparkplug run done");
    if let Some(path) = &args.truth {
        let mut out = create(path)?;
        for t in &report.truth {
            serde_json::to_writer(&mut out, t)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Completes on Ctrl-C; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    match tokio::signal::ctrl_c().await {
        Ok(()) => tracing::info!("Ctrl-C received; stopping"),
        Err(error) => {
            tracing::warn!(error = %error, "Cannot listen for Ctrl-C; run until --duration");
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // RUST_LOG as `target=level` directives (no span or field filters).
    let filter = std::env::var("RUST_LOG").ok().and_then(|spec| {
        let spec: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
        let parsed = spec.join(",").parse::<Targets>().ok().filter(|_| !spec.iter().any(|d| d.contains(['[', '{'])));
        if parsed.is_none() {
            eprintln!("firmware-sim: RUST_LOG not understood (only `target=level` directives); logging at info");
        }
        parsed
    });
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter.unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO)))
        .init();
    let args = Args::parse();
    if let Some(nodes) = args.sparkplug {
        return sparkplug(&args, nodes).await;
    }
    let scenario = args.scenario()?;
    let opts = SimOptions { seed: args.seed, start_ms: args.start_ms()?, duration: args.duration(&scenario) };
    let sim = Simulation::new(&scenario, opts)?;
    if args.dry_run {
        return dry_run(&args, sim);
    }
    let run = RunOptions {
        host: args.host.clone(),
        port: args.port,
        client_id: args.client_id.clone().unwrap_or_else(|| format!("firmware-sim-{}", std::process::id())),
        qos: args.qos,
        speed: args.speed,
        commands: args.commands.clone(),
    };
    let mut record = args.record.as_deref().map(create).transpose()?;
    let report =
        firmware_sim::run_simulation(sim, &run, record.as_mut().map(|w| w as &mut (dyn Write + Send)), ctrl_c())
            .await
            .context("publishing failed")?;
    if let Some(path) = &args.truth {
        write_truth(path, &report.truth)?;
    }
    Ok(())
}

//! `firmware-sim`: run a virtual sensor fleet against an MQTT broker.
//!
//! ```text
//! firmware-sim --host 127.0.0.1 --port 1883 --devices 20 --interval 1s --format json \
//!              --seed 42 --duration 30s --overheat 3 --overheat-at 10s --overheat-for 20s
//! firmware-sim --devices 3 --duration 5s --dry-run      # print the messages, no broker
//! ```

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use firmware_sim::{Fault, Fleet, FleetConfig, PayloadFormat, PublishOptions, Signal};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SignalKind {
    /// `--base` ± `--amplitude` over `--period`, plus uniform `--noise`.
    Sine,
    /// Always `--base`.
    Constant,
    /// Random walk from `--base`, moving up to `--step` a reading, within `--min`..`--max`.
    Walk,
}

/// Virtual sensor fleets publishing readings and heartbeats over MQTT.
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about)]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1", env = "FIRMWARE_SIM_HOST")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883, env = "FIRMWARE_SIM_PORT")]
    port: u16,
    /// MQTT client id [default: firmware-sim-<pid>].
    #[arg(long)]
    client_id: Option<String>,
    /// QoS of every publish.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Run for this long (e.g. 30s, 5m); 0 runs until Ctrl-C.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print the messages (JSON as text, frames as hex) in virtual time instead of publishing.
    #[arg(long)]
    dry_run: bool,

    /// Number of devices.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Time between two readings of one device.
    #[arg(long, visible_alias = "rate", default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Time between two heartbeats of one device.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Send no heartbeats.
    #[arg(long, conflicts_with = "heartbeat")]
    no_heartbeat: bool,
    /// Payload encoding: json or postcard.
    #[arg(long, default_value = "json")]
    format: PayloadFormat,
    /// Seed of the devices' random streams: same seed, same messages.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epoch milliseconds of virtual t=0 in the `ts` field [default: now].
    #[arg(long)]
    start_ms: Option<u64>,
    /// Device ids are this plus a 3-digit index.
    #[arg(long, default_value = "t-")]
    id_prefix: String,
    /// First topic level.
    #[arg(long, default_value = "sensors")]
    topic_prefix: String,
    /// Sensor channel: last topic level of readings and the JSON key of the value.
    #[arg(long, default_value = "temperature")]
    channel: String,

    /// Signal model.
    #[arg(long, value_enum, default_value = "sine")]
    signal: SignalKind,
    /// Sine centre, constant value, or random-walk start.
    #[arg(long, default_value_t = 22.0, allow_negative_numbers = true)]
    base: f32,
    /// Sine amplitude.
    #[arg(long, default_value_t = 3.0)]
    amplitude: f32,
    /// Sine period.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    period: Duration,
    /// Sine noise half-width.
    #[arg(long, default_value_t = 0.2)]
    noise: f32,
    /// Largest random-walk step.
    #[arg(long, default_value_t = 0.1)]
    step: f32,
    /// Random-walk lower bound.
    #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
    min: f32,
    /// Random-walk upper bound.
    #[arg(long, default_value_t = 85.0, allow_negative_numbers = true)]
    max: f32,

    /// Overheat this device (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX")]
    overheat: Vec<usize>,
    /// When overheating starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    overheat_at: Duration,
    /// How long overheating lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    overheat_for: Duration,
    /// Value reported while overheating.
    #[arg(long, default_value_t = 85.0, allow_negative_numbers = true)]
    overheat_value: f32,
    /// Silence this device (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX")]
    silence: Vec<usize>,
    /// When the silence starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    silence_at: Duration,
    /// How long the silence lasts.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    silence_for: Duration,
    /// Make this device send one malformed payload (index; repeatable).
    #[arg(long, value_name = "DEVICE_INDEX")]
    malformed: Vec<usize>,
    /// When the malformed payload is sent.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    malformed_at: Duration,
}

impl Args {
    fn signal(&self) -> Signal {
        match self.signal {
            SignalKind::Sine => {
                Signal::Sine { base: self.base, amplitude: self.amplitude, period: self.period, noise: self.noise }
            }
            SignalKind::Constant => Signal::Constant(self.base),
            SignalKind::Walk => Signal::RandomWalk { start: self.base, step: self.step, min: self.min, max: self.max },
        }
    }

    fn faults(&self) -> Vec<Fault> {
        let overheat = self.overheat.iter().map(|&device| Fault::Overheat {
            device,
            start: self.overheat_at,
            duration: self.overheat_for,
            value: self.overheat_value,
        });
        let silence = self.silence.iter().map(|&device| Fault::Silence {
            device,
            start: self.silence_at,
            duration: self.silence_for,
        });
        let malformed = self.malformed.iter().map(|&device| Fault::Malformed { device, at: self.malformed_at });
        overheat.chain(silence).chain(malformed).collect()
    }

    fn fleet_config(&self) -> anyhow::Result<FleetConfig> {
        let start_ms = match self.start_ms {
            Some(ms) => ms,
            None => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the system clock is before 1970")?;
                u64::try_from(now.as_millis()).context("the system clock is out of range")?
            }
        };
        Ok(FleetConfig {
            devices: self.devices,
            id_prefix: self.id_prefix.clone(),
            topic_prefix: self.topic_prefix.clone(),
            channel: self.channel.clone(),
            reading_interval: self.interval,
            heartbeat_interval: (!self.no_heartbeat).then_some(self.heartbeat),
            format: self.format,
            signal: self.signal(),
            seed: self.seed,
            start_ms,
            faults: self.faults(),
        })
    }
}

/// Prints every message due before `duration`, one a line: virtual seconds, topic, payload.
fn dry_run(mut fleet: Fleet, duration: Duration) -> anyhow::Result<()> {
    if duration.is_zero() {
        bail!("--dry-run needs a --duration");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for msg in fleet.poll_until(duration) {
        let shown = match std::str::from_utf8(&msg.payload) {
            Ok(text) if fleet.config().format == PayloadFormat::Json => text.to_owned(),
            _ => msg.payload.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        };
        writeln!(out, "{:>10.3} {} {}", msg.at.as_secs_f64(), msg.topic, shown)?;
    }
    out.flush()?;
    let stats = fleet.stats();
    tracing::info!(emitted = stats.emitted, faults = stats.faults_injected, silenced = stats.silenced, "Dry run done");
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
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let fleet = Fleet::new(args.fleet_config()?).context("invalid fleet settings")?;
    if args.dry_run {
        return dry_run(fleet, args.duration);
    }
    let opts = PublishOptions {
        host: args.host.clone(),
        port: args.port,
        client_id: args.client_id.clone().unwrap_or_else(|| format!("firmware-sim-{}", std::process::id())),
        qos: args.qos,
        duration: args.duration,
    };
    firmware_sim::run(fleet, opts, ctrl_c()).await.context("publishing failed")?;
    Ok(())
}

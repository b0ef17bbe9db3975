//! A fleet: one group of identical temperature-like sensors with a few faults, the
//! first firmware-sim API, kept for the agent's `edgewatch demo` and simple tests.
//!
//! A [`FleetConfig`] is a one-group scenario: [`Fleet`] builds that [`Scenario`] and runs
//! it on the same [`Simulation`] as scenario files, so both give the same bytes for the
//! same devices. Pure: [`Fleet::poll`] takes the virtual time and returns the messages due
//! by then; the publisher only has to sleep until [`Fleet::next_due`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::device::{Device, Signal};
use crate::scenario::{
    ChannelSpec, DeviceRef, FaultKind, FaultSpec, Group, GroupKind, Scenario, ScenarioError, ScenarioSpec, SensorSpec,
};
use crate::sim::{Action, Emission, Kind, SimOptions, Simulation};
use crate::template::{IdTemplate, TopicTemplate};

/// Wall-clock epoch ms used for `ts` at virtual t=0 unless a config says otherwise
/// (2024-11-21T06:20:00Z): fixed, so default fleets are repeatable. The binary uses "now".
pub const DEFAULT_START_MS: u64 = 1_732_170_000_000;

/// How payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    /// The flat JSON object of the wire crate's JSON mapping.
    #[default]
    Json,
    /// An `edgewatch_wire` frame: version byte, then postcard.
    Postcard,
}

impl FromStr for PayloadFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(PayloadFormat::Json),
            "postcard" => Ok(PayloadFormat::Postcard),
            other => Err(format!("unknown format {other:?} (expected json or postcard)")),
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadFormat::Json => "json",
            PayloadFormat::Postcard => "postcard",
        })
    }
}

/// A misbehaviour injected into one device, by its index in the fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Readings taken in `[start, start + duration)` report `value` instead of the signal.
    Overheat {
        /// Device index.
        device: usize,
        /// Virtual time the fault begins.
        start: Duration,
        /// How long it lasts.
        duration: Duration,
        /// The value reported meanwhile.
        value: f32,
    },
    /// The device sends nothing in `[start, start + duration)`: no readings, no heartbeats,
    /// no sequence numbers used.
    Silence {
        /// Device index.
        device: usize,
        /// Virtual time the fault begins.
        start: Duration,
        /// How long it lasts.
        duration: Duration,
    },
    /// At `at` the device sends one payload that neither format can decode, on its reading
    /// topic (see [`Device::garbage`]).
    Malformed {
        /// Device index.
        device: usize,
        /// Virtual time of the bad payload.
        at: Duration,
    },
}

impl Fault {
    /// The index of the device it affects.
    pub fn device(&self) -> usize {
        match *self {
            Fault::Overheat { device, .. } | Fault::Silence { device, .. } | Fault::Malformed { device, .. } => device,
        }
    }
}

/// What a fleet simulates. [`Default`] is 20 devices reading temperature every second,
/// heartbeats every 5 s, a sine around 22 °C, JSON payloads, seed 42, no faults.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    /// Number of devices.
    pub devices: usize,
    /// Device ids are `{id_prefix}{index:03}`: `t-000`, `t-001`, ...
    pub id_prefix: String,
    /// Readings go to `{topic_prefix}/{device}/{channel}`, heartbeats to
    /// `{topic_prefix}/{device}/heartbeat`. Empty means no prefix.
    pub topic_prefix: String,
    /// The one sensor channel every device reads; also the JSON key of the value.
    pub channel: String,
    /// Time between two readings of a device.
    pub reading_interval: Duration,
    /// Time between two heartbeats of a device; `None` for no heartbeats.
    pub heartbeat_interval: Option<Duration>,
    /// Payload encoding.
    pub format: PayloadFormat,
    /// How the sensor value evolves.
    pub signal: Signal,
    /// Seed of every device's random stream: same seed and config, same bytes.
    pub seed: u64,
    /// Wall-clock epoch ms at virtual t=0, for the `ts` field.
    pub start_ms: u64,
    /// Faults to inject.
    pub faults: Vec<Fault>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            devices: 20,
            id_prefix: "t-".to_owned(),
            topic_prefix: "sensors".to_owned(),
            channel: "temperature".to_owned(),
            reading_interval: Duration::from_secs(1),
            heartbeat_interval: Some(Duration::from_secs(5)),
            format: PayloadFormat::Json,
            signal: Signal::default(),
            seed: 42,
            start_ms: DEFAULT_START_MS,
            faults: Vec::new(),
        }
    }
}

/// Why a [`FleetConfig`] cannot be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `devices` is 0.
    #[error("a fleet needs at least one device")]
    NoDevices,
    /// An interval is zero.
    #[error("{0} must be longer than zero")]
    ZeroInterval(&'static str),
    /// A device id does not fit the wire format.
    #[error("device id {id:?} is not valid on the wire")]
    DeviceId {
        /// The offending id.
        id: String,
        /// What the wire format said.
        source: edgewatch_wire::Error,
    },
    /// The channel name does not fit the wire format or is reserved.
    #[error("channel {channel:?} is not valid on the wire")]
    Channel {
        /// The offending channel.
        channel: String,
        /// What the wire format said.
        source: edgewatch_wire::Error,
    },
    /// A name that goes into a topic holds a character MQTT gives a meaning to.
    #[error("{field} {value:?} may not contain {forbidden}")]
    TopicChars {
        /// Which setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// The characters it may not contain.
        forbidden: &'static str,
    },
    /// The channel is named `heartbeat`, which would share the heartbeat topic.
    #[error("channel may not be named \"heartbeat\": that is the heartbeat topic")]
    HeartbeatChannel,
    /// A fault names a device the fleet does not have.
    #[error("fault {fault:?} names device {device}, but the fleet has {devices} devices")]
    FaultDevice {
        /// The fault.
        fault: Fault,
        /// The index it names.
        device: usize,
        /// The fleet size.
        devices: usize,
    },
    /// An overheat value is not a finite number.
    #[error("overheat value must be finite")]
    OverheatValue,
    /// The signal's parameters are unusable.
    #[error("signal: {0}")]
    Signal(String),
    /// The scenario built from the config was refused (a bug: the config's own checks
    /// should have caught it).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

impl FleetConfig {
    /// The id of device `index`: `{id_prefix}{index:03}`.
    pub fn device_id(&self, index: usize) -> String {
        format!("{}{index:03}", self.id_prefix)
    }

    /// Checks everything that does not depend on a device index; [`Fleet::new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.devices == 0 {
            return Err(ConfigError::NoDevices);
        }
        if self.reading_interval.is_zero() {
            return Err(ConfigError::ZeroInterval("reading interval"));
        }
        if self.heartbeat_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroInterval("heartbeat interval"));
        }
        let segment_chars: &[char] = &['/', '+', '#', '\0'];
        for (field, value) in [("id prefix", &self.id_prefix), ("channel", &self.channel)] {
            if value.contains(segment_chars) {
                return Err(ConfigError::TopicChars { field, value: value.clone(), forbidden: "'/', '+', '#' or NUL" });
            }
        }
        if self.topic_prefix.contains(['+', '#', '\0']) {
            return Err(ConfigError::TopicChars {
                field: "topic prefix",
                value: self.topic_prefix.clone(),
                forbidden: "'+', '#' or NUL",
            });
        }
        edgewatch_wire::channel(&self.channel)
            .map_err(|source| ConfigError::Channel { channel: self.channel.clone(), source })?;
        if self.channel == "heartbeat" {
            return Err(ConfigError::HeartbeatChannel);
        }
        self.signal.validate()?;
        for fault in &self.faults {
            if fault.device() >= self.devices {
                return Err(ConfigError::FaultDevice {
                    fault: fault.clone(),
                    device: fault.device(),
                    devices: self.devices,
                });
            }
            if matches!(fault, Fault::Overheat { value, .. } if !value.is_finite()) {
                return Err(ConfigError::OverheatValue);
            }
        }
        // Ids only grow longer with the index: the last one is the longest.
        let last = self.device_id(self.devices - 1);
        edgewatch_wire::device_id(&last).map_err(|source| ConfigError::DeviceId { id: last, source })?;
        Ok(())
    }

    /// The one group of devices this config describes (group `fleet`).
    pub fn group(&self) -> Group {
        Group {
            name: "fleet".to_owned(),
            count: self.devices,
            id: IdTemplate::with_prefix(&self.id_prefix),
            first_index: 0,
            format: self.format,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_topic: TopicTemplate::legacy(&self.topic_prefix, Some("heartbeat")),
            own_connection: false,
            status_topic: TopicTemplate::legacy(&self.topic_prefix, Some("status")),
            kind: GroupKind::Sensor(SensorSpec {
                reading_interval: self.reading_interval,
                reading_topic: TopicTemplate::legacy(&self.topic_prefix, None),
                channels: vec![ChannelSpec { name: self.channel.clone(), signal: self.signal.clone() }],
            }),
        }
    }

    /// This config as a scenario: one group, its faults on the timeline (faults of zero
    /// length, which do nothing, are left out). Validates first.
    pub fn scenario(&self) -> Result<Scenario, ConfigError> {
        self.validate()?;
        let at = |device: usize| DeviceRef::Index { group: "fleet".to_owned(), index: device };
        let faults = self
            .faults
            .iter()
            .filter_map(|fault| match *fault {
                Fault::Overheat { device, start, duration, value } => (!duration.is_zero()).then(|| FaultSpec {
                    device: at(device),
                    start,
                    kind: FaultKind::Overheat { duration, value, channel: None },
                }),
                Fault::Silence { device, start, duration } => (!duration.is_zero()).then(|| FaultSpec {
                    device: at(device),
                    start,
                    kind: FaultKind::Silence { duration },
                }),
                Fault::Malformed { device, at: when } => {
                    Some(FaultSpec { device: at(device), start: when, kind: FaultKind::Malformed { count: 1 } })
                }
            })
            .collect();
        let spec = ScenarioSpec {
            name: "fleet".to_owned(),
            description: String::new(),
            duration: None,
            groups: vec![self.group()],
            faults,
        };
        Ok(Scenario::new(spec)?)
    }
}

/// What a [`SimMessage`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    /// A reading (possibly overheated).
    Reading,
    /// A heartbeat.
    Heartbeat,
    /// Garbage from a [`Fault::Malformed`].
    Malformed,
}

/// One payload to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// MQTT topic.
    pub topic: String,
    /// Encoded payload (JSON text or a wire frame; garbage for [`MessageKind::Malformed`]).
    pub payload: Vec<u8>,
    /// Index of the sending device.
    pub device: usize,
    /// Virtual time the device sent it (its `ts` is `start_ms` + this).
    pub at: Duration,
    /// What it carries.
    pub kind: MessageKind,
    /// A reading whose value a [`Fault::Overheat`] replaced.
    pub overheated: bool,
}

impl SimMessage {
    /// Whether a fault shaped this message (an overheated reading or a malformed payload).
    pub fn is_fault(&self) -> bool {
        self.overheated || self.kind == MessageKind::Malformed
    }

    /// The message of a fleet's emission; `None` for what a fleet never emits (connection
    /// changes, status messages, door events).
    fn from_emission(e: Emission) -> Option<SimMessage> {
        let Action::Publish(p) = e.action else { return None };
        let kind = match p.kind {
            Kind::Reading => MessageKind::Reading,
            Kind::Heartbeat => MessageKind::Heartbeat,
            Kind::Malformed => MessageKind::Malformed,
            Kind::Status | Kind::Badge | Kind::Open => return None,
        };
        Some(SimMessage {
            topic: p.topic.to_string(),
            payload: p.payload,
            device: e.device,
            at: e.at,
            kind,
            overheated: kind == MessageKind::Reading && p.faults.contains(crate::scenario::FaultType::Overheat),
        })
    }
}

/// Counters of what a fleet has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Messages returned by [`Fleet::poll`].
    pub emitted: u64,
    /// Of those, messages a fault shaped ([`SimMessage::is_fault`]).
    pub faults_injected: u64,
    /// Messages not sent because their device was silenced.
    pub silenced: u64,
    /// Messages dropped because encoding failed (a bug; logged).
    pub encode_errors: u64,
}

/// A [`FleetConfig`]'s devices on one schedule. See the module docs.
#[derive(Debug)]
pub struct Fleet {
    /// The one-group scenario, running.
    sim: Simulation,
    /// Messages returned and fault-shaped messages among them; the simulation counts the rest.
    emitted: u64,
    faults_injected: u64,
    /// Reused between polls.
    buffer: Vec<Emission>,
    /// Kept for callers that describe the run (format, size) without carrying it separately.
    config: FleetConfig,
}

impl Fleet {
    /// Builds every device and schedules its first reading and heartbeat, staggered across
    /// the interval by index so large fleets do not all fire at t=0.
    pub fn new(config: FleetConfig) -> Result<Fleet, ConfigError> {
        let scenario = config.scenario()?;
        let opts = SimOptions { seed: config.seed, start_ms: config.start_ms, duration: None };
        let sim = Simulation::new(&scenario, opts)?;
        Ok(Fleet { sim, emitted: 0, faults_injected: 0, buffer: Vec::new(), config })
    }

    /// The config it was built from.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.sim.len()
    }

    /// Always false: a fleet has at least one device.
    pub fn is_empty(&self) -> bool {
        self.sim.is_empty()
    }

    /// Device number `index`, if there is one.
    pub fn device(&self, index: usize) -> Option<&Device> {
        self.sim.device(index)
    }

    /// Counters so far.
    pub fn stats(&self) -> FleetStats {
        let sim = self.sim.stats();
        FleetStats {
            emitted: self.emitted,
            faults_injected: self.faults_injected,
            silenced: sim.withheld,
            encode_errors: sim.encode_errors,
        }
    }

    /// Virtual time of the earliest message not yet emitted, if any.
    pub fn next_due(&self) -> Option<Duration> {
        self.sim.next_due()
    }

    /// Appends to `out` every message due at or before `now`, ordered by time, then device
    /// index, then reading before heartbeat before malformed.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<SimMessage>) {
        self.sim.poll(now, &mut self.buffer);
        for e in self.buffer.drain(..) {
            if let Some(msg) = SimMessage::from_emission(e) {
                self.emitted += 1;
                self.faults_injected += u64::from(msg.is_fault());
                out.push(msg);
            }
        }
    }

    /// Every message due strictly before `end`, in order (a convenience over [`poll`](Self::poll)).
    pub fn poll_until(&mut self, end: Duration) -> Vec<SimMessage> {
        let mut out = Vec::new();
        if let Some(last) = end.checked_sub(Duration::from_nanos(1)) {
            self.poll(last, &mut out);
        }
        out
    }

    /// The simulation underneath, to run with [`run_simulation`](crate::run_simulation)
    /// (recording, truth) or to poll as [`Emission`]s.
    pub fn into_simulation(self) -> Simulation {
        self.sim
    }

    /// The simulation underneath.
    pub fn simulation(&self) -> &Simulation {
        &self.sim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatch_wire::{Body, decode};
    use serde_json::{Value, json};

    fn small(format: PayloadFormat) -> FleetConfig {
        FleetConfig { devices: 3, format, ..FleetConfig::default() }
    }

    fn json_of(m: &SimMessage) -> Value {
        serde_json::from_slice(&m.payload).expect("valid JSON")
    }

    #[test]
    fn same_seed_same_bytes() {
        for format in [PayloadFormat::Json, PayloadFormat::Postcard] {
            let cfg = FleetConfig {
                faults: vec![
                    Fault::Malformed { device: 1, at: Duration::from_millis(3500) },
                    Fault::Overheat {
                        device: 2,
                        start: Duration::from_secs(2),
                        duration: Duration::from_secs(3),
                        value: 90.0,
                    },
                ],
                ..small(format)
            };
            let a = Fleet::new(cfg.clone()).expect("valid").poll_until(Duration::from_secs(60));
            // Polling in different steps must not change anything either.
            let mut f = Fleet::new(cfg).expect("valid");
            let mut b = Vec::new();
            let mut t = Duration::ZERO;
            while t < Duration::from_secs(60) {
                f.poll(t, &mut b);
                t += Duration::from_millis(333);
            }
            b.retain(|m| m.at < Duration::from_secs(60));
            assert_eq!(a.len(), 3 * 60 + 3 * 12 + 1);
            assert_eq!(a, b);
            // And a different seed changes the values.
            let other = Fleet::new(FleetConfig { seed: 7, ..small(format) })
                .expect("valid")
                .poll_until(Duration::from_secs(60));
            assert_ne!(
                a.iter().map(|m| &m.payload).collect::<Vec<_>>(),
                other.iter().map(|m| &m.payload).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_device_does_not_depend_on_fleet_size() {
        // Device 0's readings are the same in a fleet of 1 and a fleet of 50, apart from
        // stagger (device 0 is never staggered).
        let one = Fleet::new(FleetConfig { devices: 1, ..FleetConfig::default() })
            .expect("valid")
            .poll_until(Duration::from_secs(10));
        let many: Vec<SimMessage> = Fleet::new(FleetConfig { devices: 50, ..FleetConfig::default() })
            .expect("valid")
            .poll_until(Duration::from_secs(10))
            .into_iter()
            .filter(|m| m.device == 0)
            .collect();
        assert_eq!(one, many);
    }

    #[test]
    fn schedule_order_is_time_then_device_then_job() {
        let cfg = FleetConfig {
            devices: 4,
            reading_interval: Duration::from_secs(1),
            heartbeat_interval: Some(Duration::from_secs(2)),
            ..FleetConfig::default()
        };
        let msgs = Fleet::new(cfg).expect("valid").poll_until(Duration::from_secs(4));
        let keys: Vec<(Duration, usize, MessageKind)> = msgs.iter().map(|m| (m.at, m.device, m.kind)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let ms = Duration::from_millis;
        assert_eq!(
            keys[..6],
            [
                (ms(0), 0, MessageKind::Reading),
                (ms(0), 0, MessageKind::Heartbeat),
                (ms(250), 1, MessageKind::Reading),
                (ms(500), 1, MessageKind::Heartbeat),
                (ms(500), 2, MessageKind::Reading),
                (ms(750), 3, MessageKind::Reading),
            ]
        );
        // 4 devices × 4 readings + 4 devices × 2 heartbeats in [0, 4 s).
        assert_eq!(msgs.len(), 16 + 8);
    }

    #[test]
    fn next_due_and_poll_agree() {
        let mut f = Fleet::new(small(PayloadFormat::Json)).expect("valid");
        let mut out = Vec::new();
        for _ in 0..50 {
            let due = f.next_due().expect("periodic fleets never run dry");
            out.clear();
            if let Some(before) = due.checked_sub(Duration::from_nanos(1)) {
                f.poll(before, &mut out);
                assert!(out.is_empty(), "nothing before next_due");
            }
            f.poll(due, &mut out);
            assert!(!out.is_empty());
            assert!(out.iter().all(|m| m.at == due));
            assert!(f.next_due() > Some(due));
        }
    }

    #[test]
    fn stagger_spreads_ten_thousand_devices() {
        let cfg = FleetConfig { devices: 10_000, heartbeat_interval: None, ..FleetConfig::default() };
        let mut f = Fleet::new(cfg).expect("valid");
        let mut out = Vec::new();
        f.poll(Duration::ZERO, &mut out);
        assert_eq!(out.len(), 1, "only device 0 fires at t=0");
        f.poll(Duration::from_millis(100), &mut out);
        assert_eq!(out.len(), 1001);
        f.poll(Duration::from_millis(999), &mut out);
        assert_eq!(out.len(), 9991);
        out.clear();
        // A poll costs what is due, not the fleet size: one more device's reading.
        f.poll(Duration::from_micros(999_100), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn json_shape_is_exact() {
        let msgs = Fleet::new(FleetConfig { signal: Signal::Constant(23.5), ..small(PayloadFormat::Json) })
            .expect("valid")
            .poll_until(Duration::from_secs(2));
        let reading = msgs.iter().find(|m| m.device == 1 && m.kind == MessageKind::Reading).expect("device 1 reads");
        assert_eq!(reading.topic, "sensors/t-001/temperature");
        assert_eq!(reading.at, Duration::from_nanos(333_333_333));
        assert_eq!(
            std::str::from_utf8(&reading.payload).expect("UTF-8"),
            r#"{"device":"t-001","seq":0,"ts":1732170000333,"kind":"reading","temperature":23.5}"#
        );
        let hb = msgs.iter().find(|m| m.device == 1 && m.kind == MessageKind::Heartbeat).expect("device 1 beats");
        assert_eq!(hb.topic, "sensors/t-001/heartbeat");
        assert_eq!(
            json_of(hb),
            json!({"device":"t-001","seq":2,"ts":1732170001666_u64,"kind":"heartbeat","uptime_s":1})
        );
    }

    #[test]
    fn postcard_frames_decode_to_the_json_values() {
        let cfg = |format| FleetConfig {
            faults: vec![Fault::Overheat {
                device: 0,
                start: Duration::from_secs(3),
                duration: Duration::from_secs(2),
                value: 85.0,
            }],
            ..small(format)
        };
        let js = Fleet::new(cfg(PayloadFormat::Json)).expect("valid").poll_until(Duration::from_secs(20));
        let pc = Fleet::new(cfg(PayloadFormat::Postcard)).expect("valid").poll_until(Duration::from_secs(20));
        assert_eq!(js.len(), pc.len());
        for (j, p) in js.iter().zip(&pc) {
            assert_eq!((&j.topic, j.at, j.kind), (&p.topic, p.at, p.kind));
            let msg = decode(&p.payload).expect("valid frame");
            assert_eq!(msg.device.as_str(), format!("t-{:03}", p.device));
            // The postcard frame, mapped to JSON, equals the JSON payload.
            assert_eq!(serde_json::to_value(msg.json()).expect("serializes"), json_of(j));
            if let Body::Reading(samples) = &msg.body {
                assert_eq!(samples.len(), 1);
                assert_eq!(samples[0].channel.as_str(), "temperature");
            }
        }
    }

    #[test]
    fn overheat_span_is_honoured() {
        let start = Duration::from_secs(3);
        let duration = Duration::from_secs(2);
        let cfg = FleetConfig {
            faults: vec![Fault::Overheat { device: 1, start, duration, value: 85.0 }],
            ..small(PayloadFormat::Postcard)
        };
        let mut fleet = Fleet::new(cfg).expect("valid");
        let msgs = fleet.poll_until(Duration::from_secs(10));
        let mut hot = 0;
        for m in msgs.iter().filter(|m| m.kind == MessageKind::Reading) {
            let Ok(msg) = decode(&m.payload) else { panic!("bad frame") };
            let Body::Reading(s) = msg.body else { panic!("not a reading") };
            let inside = m.device == 1 && m.at >= start && m.at < start + duration;
            assert_eq!(m.overheated, inside);
            assert_eq!(s[0].value == 85.0, inside, "{m:?}");
            hot += usize::from(inside);
        }
        // Device 1 reads at 0.333 s + k: 3.333 and 4.333 fall inside [3 s, 5 s).
        assert_eq!(hot, 2);
        assert_eq!(fleet.stats().faults_injected, 2);
    }

    #[test]
    fn silence_span_is_honoured_and_seq_resumes() {
        let cfg = FleetConfig {
            faults: vec![Fault::Silence { device: 0, start: Duration::from_secs(2), duration: Duration::from_secs(5) }],
            ..small(PayloadFormat::Json)
        };
        let mut fleet = Fleet::new(cfg).expect("valid");
        let msgs = fleet.poll_until(Duration::from_secs(10));
        let dev0: Vec<(Duration, u64)> =
            msgs.iter().filter(|m| m.device == 0).map(|m| (m.at, json_of(m)["seq"].as_u64().expect("seq"))).collect();
        assert!(dev0.iter().all(|(at, _)| *at < Duration::from_secs(2) || *at >= Duration::from_secs(7)));
        let seqs: Vec<u64> = dev0.iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
        // Readings at 2..=6 and the heartbeat at 5 were held back.
        assert_eq!(fleet.stats().silenced, 6);
        // Other devices are untouched: 10 readings + 2 heartbeats each.
        assert_eq!(msgs.iter().filter(|m| m.device == 1).count(), 12);
    }

    #[test]
    fn malformed_fault_sends_one_bad_payload() {
        let at = Duration::from_millis(4200);
        for format in [PayloadFormat::Json, PayloadFormat::Postcard] {
            let cfg = FleetConfig { faults: vec![Fault::Malformed { device: 2, at }], ..small(format) };
            let msgs = Fleet::new(cfg).expect("valid").poll_until(Duration::from_secs(10));
            let bad: Vec<&SimMessage> = msgs.iter().filter(|m| m.kind == MessageKind::Malformed).collect();
            assert_eq!(bad.len(), 1);
            assert_eq!((bad[0].device, bad[0].at), (2, at));
            assert_eq!(bad[0].topic, "sensors/t-002/temperature");
            assert!(bad[0].is_fault());
            assert!(decode(&bad[0].payload).is_err());
            assert!(serde_json::from_slice::<Value>(&bad[0].payload).is_err());
            // Every other payload is well-formed.
            for m in msgs.iter().filter(|m| m.kind != MessageKind::Malformed) {
                match format {
                    PayloadFormat::Json => {
                        assert!(serde_json::from_slice::<Value>(&m.payload).is_ok())
                    }
                    PayloadFormat::Postcard => assert!(decode(&m.payload).is_ok()),
                }
            }
        }
    }

    #[test]
    fn heartbeats_can_be_off_and_topics_can_be_bare() {
        let cfg = FleetConfig { heartbeat_interval: None, topic_prefix: String::new(), ..small(PayloadFormat::Json) };
        let msgs = Fleet::new(cfg).expect("valid").poll_until(Duration::from_secs(5));
        assert!(msgs.iter().all(|m| m.kind == MessageKind::Reading));
        assert_eq!(msgs[0].topic, "t-000/temperature");
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = |cfg: FleetConfig| Fleet::new(cfg).expect_err("should be refused");
        let d = FleetConfig::default;
        assert!(matches!(bad(FleetConfig { devices: 0, ..d() }), ConfigError::NoDevices));
        assert!(matches!(bad(FleetConfig { reading_interval: Duration::ZERO, ..d() }), ConfigError::ZeroInterval(_)));
        assert!(matches!(
            bad(FleetConfig { heartbeat_interval: Some(Duration::ZERO), ..d() }),
            ConfigError::ZeroInterval(_)
        ));
        assert!(matches!(
            bad(FleetConfig { id_prefix: "a-very-long-prefix-for-an-id-xyz-".into(), ..d() }),
            ConfigError::DeviceId { .. }
        ));
        assert!(matches!(bad(FleetConfig { id_prefix: "a/b".into(), ..d() }), ConfigError::TopicChars { .. }));
        assert!(matches!(bad(FleetConfig { topic_prefix: "s/#".into(), ..d() }), ConfigError::TopicChars { .. }));
        for channel in ["kind", "", "a-channel-too-long"] {
            assert!(matches!(bad(FleetConfig { channel: channel.into(), ..d() }), ConfigError::Channel { .. }));
        }
        assert!(matches!(bad(FleetConfig { channel: "heartbeat".into(), ..d() }), ConfigError::HeartbeatChannel));
        assert!(matches!(
            bad(FleetConfig { faults: vec![Fault::Malformed { device: 20, at: Duration::ZERO }], ..d() }),
            ConfigError::FaultDevice { device: 20, .. }
        ));
        assert!(matches!(bad(FleetConfig { signal: Signal::Constant(f32::INFINITY), ..d() }), ConfigError::Signal(_)));
    }

    #[test]
    fn payload_format_parses() {
        assert_eq!("JSON".parse(), Ok(PayloadFormat::Json));
        assert_eq!("postcard".parse(), Ok(PayloadFormat::Postcard));
        assert!("cbor".parse::<PayloadFormat>().is_err());
        assert_eq!(PayloadFormat::Postcard.to_string(), "postcard");
    }
}

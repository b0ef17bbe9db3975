//! Scenarios: device groups plus a fault timeline, from TOML files or built in code.
//!
//! Two stages, as with every config here: `raw` holds the serde structs (unknown keys
//! are errors, and errors name the key path, `faults[3].duration`), which become a
//! [`ScenarioSpec`] of typed values; [`Scenario::new`] validates a spec (ids fit the wire
//! format and are unique, topics do not collide, faults name devices that exist and suit
//! them) and resolves every fault to its device. A [`Scenario`] is therefore always
//! runnable: [`Simulation::new`](crate::Simulation::new) takes it with a seed.
//!
//! The file format is documented in `config/scenarios/README.md`.

mod faults;
mod raw;
mod validate;

pub use faults::{BATTERY_CHANNEL, FaultKind, FaultSet, FaultSpec, FaultType, FlapVia, MessageFilter, SpikeValue};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::signal::Signal;
use crate::template::{IdTemplate, TopicTemplate};

/// Most devices a scenario may have, across all groups.
pub const MAX_DEVICES: usize = 1_000_000;
/// Most devices with their own MQTT connection (`own_connection = true`) a scenario may
/// have: each costs a TCP connection, a task and a broker session.
pub const MAX_OWN_CONNECTIONS: usize = 1_000;
/// Most channels one sensor reads (the wire format's [`edgewatch_wire::MAX_SAMPLES`]).
pub const MAX_CHANNELS: usize = edgewatch_wire::MAX_SAMPLES;

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

/// Why a scenario cannot be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not TOML.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file (or `<scenario>` for text).
        origin: String,
        /// What the TOML parser said.
        message: String,
    },
    /// A key is unknown, missing, mistyped or has a value that cannot work.
    #[error("{origin}: {path}: {message}")]
    Invalid {
        /// The file (or `<scenario>` for text, `scenario "name"` for a spec built in code).
        origin: String,
        /// The key path, such as `groups[0].channels[1].signal.period` or `faults[3]`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A scenario before validation: plain typed values, as [`Scenario::from_toml`] parses
/// them or as code builds them. [`Scenario::new`] checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSpec {
    /// Short name (the file stem unless the file says `name = ...`).
    pub name: String,
    /// What the scenario is for; free text.
    pub description: String,
    /// How long it is meant to run; callers may override it.
    pub duration: Option<Duration>,
    /// The devices, group by group; devices are numbered across groups in this order.
    pub groups: Vec<Group>,
    /// The fault timeline.
    pub faults: Vec<FaultSpec>,
}

/// What a caller may change about a scenario file without editing it (the flags of
/// `edgewatch demo`): edit the spec, then validate it again with [`Scenario::new`].
impl ScenarioSpec {
    /// Gives group `group` `count` devices (nothing happens if there is no such group).
    /// Faults that name a device the group no longer has are left out, so a smaller fleet
    /// still runs.
    pub fn resize(&mut self, group: &str, count: usize) {
        let Some(g) = self.groups.iter_mut().find(|g| g.name == group) else { return };
        let kept = g.first_index.saturating_add(count);
        let removed: HashSet<String> = (kept..g.first_index.saturating_add(g.count)).map(|i| g.id.render(i)).collect();
        g.count = count;
        self.faults.retain(|f| match &f.device {
            DeviceRef::Id(id) => !removed.contains(id),
            DeviceRef::Index { group: name, index } => name != group || *index < kept,
        });
    }

    /// Puts `prefix` and a `/` in front of every topic of every group.
    pub fn prefix_topics(&mut self, prefix: &str) {
        for g in &mut self.groups {
            for t in [&mut g.heartbeat_topic, &mut g.status_topic] {
                *t = t.prefixed(prefix);
            }
            match &mut g.kind {
                GroupKind::Sensor(s) => s.reading_topic = s.reading_topic.prefixed(prefix),
                GroupKind::Door(d) => {
                    d.badge_topic = d.badge_topic.prefixed(prefix);
                    d.open_topic = d.open_topic.prefixed(prefix);
                }
            }
        }
    }

    /// Sets the duration to `duration` and stretches (or shrinks) the fault timeline with
    /// it: each fault's start and span keep their share of the run, so a 4 s run of a 20 s
    /// scenario still shows every fault. Counts and delays stay as they are. Without a
    /// duration of its own, the scenario only gets `duration`.
    pub fn stretch(&mut self, duration: Duration) {
        let factor = match self.duration {
            Some(own) if !own.is_zero() => duration.as_secs_f64() / own.as_secs_f64(),
            _ => 1.0,
        };
        self.duration = Some(duration);
        let scale = |d: &mut Duration| *d = Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(*d);
        for f in &mut self.faults {
            scale(&mut f.start);
            match &mut f.kind {
                FaultKind::Silence { duration }
                | FaultKind::HeartbeatLoss { duration }
                | FaultKind::Overheat { duration, .. }
                | FaultKind::Stuck { duration, .. }
                | FaultKind::Late { duration, .. }
                | FaultKind::ClockSkew { duration, .. }
                | FaultKind::Disconnect { duration }
                | FaultKind::ForcedDoor { duration }
                | FaultKind::Drift { duration, .. }
                | FaultKind::LevelShift { duration, .. }
                | FaultKind::PatternBreak { duration, .. }
                | FaultKind::NoiseBurst { duration, .. } => scale(duration),
                FaultKind::BatteryDecline { duration, .. } => {
                    if let Some(d) = duration {
                        scale(d);
                    }
                }
                FaultKind::Flap { period, down, .. } => {
                    scale(period);
                    scale(down);
                }
                FaultKind::Spike { .. }
                | FaultKind::Duplicate { .. }
                | FaultKind::Reorder { .. }
                | FaultKind::Malformed { .. }
                | FaultKind::Burst { .. } => {}
            }
        }
    }
}

/// Devices that share a kind, settings and templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Unique within the scenario; faults may name devices by group and index.
    pub name: String,
    /// Number of devices.
    pub count: usize,
    /// Device ids: `t-{index:03}`, `door-{number}`.
    pub id: IdTemplate,
    /// `{index}` of the group's first device (so two groups can continue one numbering).
    pub first_index: usize,
    /// Payload encoding of every message but the plain-text `online`/`offline`.
    pub format: PayloadFormat,
    /// Time between two heartbeats of a device; `None` for none.
    pub heartbeat_interval: Option<Duration>,
    /// Where heartbeats go.
    pub heartbeat_topic: TopicTemplate,
    /// Each device has its own MQTT connection, with a last will (`offline`, QoS 1, not
    /// retained, on `status_topic`), and publishes `online` there when it connects.
    pub own_connection: bool,
    /// Where `online` and the last will go.
    pub status_topic: TopicTemplate,
    /// What the devices do.
    pub kind: GroupKind,
}

/// What a group's devices are.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupKind {
    /// Periodic readings of one or more channels.
    Sensor(SensorSpec),
    /// A door controller: badge read, then the door opens `open_delay` later, every `cycle`.
    Door(DoorSpec),
}

impl GroupKind {
    /// `"sensor"` or `"door"`.
    pub fn name(&self) -> &'static str {
        match self {
            GroupKind::Sensor(_) => "sensor",
            GroupKind::Door(_) => "door",
        }
    }
}

/// A sensor group's readings.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorSpec {
    /// Time between two readings of a device.
    pub reading_interval: Duration,
    /// Where readings go. With `{channel}`, each channel is its own message on its own
    /// topic; without, one message carries every channel's sample.
    pub reading_topic: TopicTemplate,
    /// The channels read, in order; 1 to [`MAX_CHANNELS`].
    pub channels: Vec<ChannelSpec>,
}

/// One channel of a sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    /// The channel (`temperature`): a topic level and the JSON key of the value.
    pub name: String,
    /// How its value evolves.
    pub signal: Signal,
}

/// A door group's cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct DoorSpec {
    /// Time between two badge reads of a door, on average.
    pub cycle: Duration,
    /// Each cycle is `cycle` ± up to this, drawn per cycle; less than `cycle`.
    pub jitter: Duration,
    /// The door opens this long after the badge read; less than `cycle - jitter`.
    pub open_delay: Duration,
    /// Where badge reads go.
    pub badge_topic: TopicTemplate,
    /// Where door openings go.
    pub open_topic: TopicTemplate,
}

/// Which device a fault targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// By id: `t-003`.
    Id(String),
    /// By group and `{index}` (which counts from the group's `first_index`).
    Index {
        /// Group name.
        group: String,
        /// The device's `{index}`.
        index: usize,
    },
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::Id(id) => write!(f, "{id:?}"),
            DeviceRef::Index { group, index } => write!(f, "{group}[{index}]"),
        }
    }
}

/// A validated scenario: every device id unique and valid on the wire, every topic valid,
/// every fault resolved to a device it suits.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// What it was built from.
    spec: ScenarioSpec,
    /// Every device id, in device order (group by group).
    ids: Vec<String>,
    /// Device number of each group's first device.
    offsets: Vec<usize>,
    /// Device number each fault targets, parallel to `spec.faults`.
    targets: Vec<usize>,
    /// Channel index each fault acts on (0 where it names none), parallel to `spec.faults`.
    channels: Vec<usize>,
}

/// [`Scenario::load`] and [`Scenario::from_toml`] are in `raw.rs`, with the file format: this
/// module never reaches into `raw`, which builds on it.
impl Scenario {
    /// Validates a spec built in code; errors name `scenario "<name>"` and the key path.
    pub fn new(spec: ScenarioSpec) -> Result<Scenario, ScenarioError> {
        let origin = format!("scenario {:?}", spec.name);
        Scenario::validated(spec, &origin)
    }

    pub(crate) fn validated(spec: ScenarioSpec, origin: &str) -> Result<Scenario, ScenarioError> {
        validate::validate(spec).map_err(|(path, message)| ScenarioError::Invalid {
            origin: origin.to_owned(),
            path,
            message,
        })
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &ScenarioSpec {
        &self.spec
    }

    /// Short name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// How long it is meant to run, if it says.
    pub fn duration(&self) -> Option<Duration> {
        self.spec.duration
    }

    /// The groups.
    pub fn groups(&self) -> &[Group] {
        &self.spec.groups
    }

    /// The fault timeline.
    pub fn faults(&self) -> &[FaultSpec] {
        &self.spec.faults
    }

    /// Number of devices, across groups.
    pub fn device_count(&self) -> usize {
        self.ids.len()
    }

    /// Every device id, in device order.
    pub fn device_ids(&self) -> &[String] {
        &self.ids
    }

    /// The device number of `id`, if the scenario has it.
    pub fn device_index(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|d| d == id)
    }

    /// The group and position in it of device number `device`.
    pub fn locate(&self, device: usize) -> Option<(usize, usize)> {
        let group = self.offsets.iter().rposition(|&o| o <= device)?;
        let position = device - self.offsets.get(group)?;
        (position < self.spec.groups.get(group)?.count).then_some((group, position))
    }

    /// Device number of the device fault number `fault` targets.
    pub fn fault_target(&self, fault: usize) -> Option<usize> {
        self.targets.get(fault).copied()
    }

    pub(crate) fn fault_channel(&self, fault: usize) -> usize {
        self.channels.get(fault).copied().unwrap_or(0)
    }

    /// Number of devices with their own MQTT connection.
    pub fn own_connections(&self) -> usize {
        self.spec.groups.iter().filter(|g| g.own_connection).map(|g| g.count).sum()
    }
}

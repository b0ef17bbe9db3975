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

mod raw;

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

/// One entry of the fault timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// The device it affects.
    pub device: DeviceRef,
    /// Virtual time it begins.
    pub start: Duration,
    /// What it does.
    pub kind: FaultKind,
}

/// What a fault does; times are relative to its `start`.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// The device sends nothing (timers run on, `seq` does not advance).
    Silence {
        /// How long.
        duration: Duration,
    },
    /// Heartbeats stop; everything else continues.
    HeartbeatLoss {
        /// How long.
        duration: Duration,
    },
    /// Gone and back, `count` times: each `period` starts with `down` of absence.
    Flap {
        /// One down-and-up cycle.
        period: Duration,
        /// The absent part of each cycle; shorter than `period`.
        down: Duration,
        /// Number of cycles.
        count: u32,
        /// Absent as in [`FaultKind::Silence`] or as in [`FaultKind::Disconnect`].
        via: FlapVia,
    },
    /// Readings report `value` on `channel`.
    Overheat {
        /// How long.
        duration: Duration,
        /// The value reported.
        value: f32,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// The next `count` readings from `start` report an outlier on `channel`: `value`, or
    /// the normal value plus `by`.
    Spike {
        /// The outlier.
        value: SpikeValue,
        /// How many readings.
        count: u32,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// Readings repeat the first value read in the span.
    Stuck {
        /// How long.
        duration: Duration,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// The next `count` messages (of the kind `messages` says) are sent twice: the same
    /// bytes, the same `seq`.
    Duplicate {
        /// How many messages.
        count: u32,
        /// Which messages.
        messages: MessageFilter,
    },
    /// The next message (of the kind `messages` says) is held and sent right after the
    /// device's following one; `count` times.
    Reorder {
        /// How many swaps.
        count: u32,
        /// Which messages are held.
        messages: MessageFilter,
    },
    /// Messages generated in the span are delivered `delay` later, with their original `ts`.
    Late {
        /// How long.
        duration: Duration,
        /// How late.
        delay: Duration,
    },
    /// `count` payloads that no decoder accepts, at `start`.
    Malformed {
        /// How many.
        count: u32,
    },
    /// `count` extra readings at `start`, all at once.
    Burst {
        /// How many.
        count: u32,
    },
    /// `ts` is off by `offset_ms` in the span.
    ClockSkew {
        /// How long.
        duration: Duration,
        /// Milliseconds added to `ts` (negative: behind).
        offset_ms: i64,
    },
    /// The device's TCP connection drops without an MQTT DISCONNECT, so the broker publishes
    /// its last will; it reconnects (and says `online`) after `duration`. Own-connection
    /// devices only.
    Disconnect {
        /// How long it stays away.
        duration: Duration,
    },
    /// The door opens with no badge read, and no badge is read for `duration`. Door groups
    /// only. To keep every *normal* opening answered by a badge, the badge read just before
    /// `start` is not followed by its opening.
    ForcedDoor {
        /// How long no badge is read after the forced opening.
        duration: Duration,
    },
    /// A sensor drifting out of calibration: in the span, `rate · (t - start)` (t in hours)
    /// is added to `channel`'s readings, an offset growing linearly from 0 to
    /// `rate · duration`. After the span, readings are normal again.
    Drift {
        /// How long.
        duration: Duration,
        /// Units of the channel per hour (negative: drifts down); not zero.
        rate: f32,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// In the span, `by` is added to `channel`'s readings (a step up or down and back).
    LevelShift {
        /// How long.
        duration: Duration,
        /// The offset; not zero.
        by: f32,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// In the span, the periodic part of `channel`'s `daily` or `sine` signal is the one it
    /// had half a period earlier: a `daily` shows 03:00's value at 15:00 and the reverse
    /// (its shape shifted by 12 hours), a `sine` is inverted. Values stay in their normal
    /// range, at the wrong time of day; base and noise are unchanged.
    PatternBreak {
        /// How long.
        duration: Duration,
        /// Which channel (default: the first); its signal must be `daily` or `sine`.
        channel: Option<String>,
    },
    /// In the span, uniform noise in `[-noise, noise]` is added to `channel`'s readings, on
    /// top of the signal's own (drawn from the fault's own random stream, so the device's
    /// values after the span are those of a run without it).
    NoiseBurst {
        /// How long.
        duration: Duration,
        /// Half-width of the extra noise; above zero.
        noise: f32,
        /// Which channel (default: the first).
        channel: Option<String>,
    },
    /// A battery running down: from `start`, `rate · (t - start)` (t in hours) is taken off
    /// `channel`'s readings, never below 0, for `duration` or to the end of the run. The
    /// truth gives the channel's noiseless level at the first reading of the span (`from`),
    /// so a reading at `t` is about `from - rate · (t - start)`. After the span (a new
    /// battery), readings are normal again.
    BatteryDecline {
        /// How long; `None`: to the end of the run.
        duration: Option<Duration>,
        /// Volts (units of the channel) per hour; above zero.
        rate: f32,
        /// Which channel (default: the one named `battery`).
        channel: Option<String>,
    },
}

/// A [`FaultKind::Spike`]'s outlier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpikeValue {
    /// The reading is this value (`value = 85.0`).
    Absolute(f32),
    /// The reading is the normal value plus this (`by = 8.0`).
    Relative(f32),
}

/// The channel a battery fault acts on unless it names one.
pub const BATTERY_CHANNEL: &str = "battery";

/// How a flapping device is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlapVia {
    /// It stays connected and sends nothing.
    Silence,
    /// Its connection drops (the broker sends its last will); own-connection devices only.
    Disconnect,
}

impl FlapVia {
    /// `"silence"` or `"disconnect"`.
    pub fn name(self) -> &'static str {
        match self {
            FlapVia::Silence => "silence",
            FlapVia::Disconnect => "disconnect",
        }
    }
}

/// Which messages a [`FaultKind::Duplicate`] or [`FaultKind::Reorder`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFilter {
    /// Any data message (not `online`, not garbage).
    Any,
    /// Sensor readings.
    Reading,
    /// Heartbeats.
    Heartbeat,
    /// Badge reads.
    Badge,
    /// Door openings.
    Open,
}

impl MessageFilter {
    /// The name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            MessageFilter::Any => "any",
            MessageFilter::Reading => "reading",
            MessageFilter::Heartbeat => "heartbeat",
            MessageFilter::Badge => "badge",
            MessageFilter::Open => "open",
        }
    }
}

/// The name of a fault kind, as scenario and truth files spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultType {
    /// [`FaultKind::Silence`]
    Silence,
    /// [`FaultKind::HeartbeatLoss`]
    HeartbeatLoss,
    /// [`FaultKind::Flap`]
    Flap,
    /// [`FaultKind::Overheat`]
    Overheat,
    /// [`FaultKind::Spike`]
    Spike,
    /// [`FaultKind::Stuck`]
    Stuck,
    /// [`FaultKind::Duplicate`]
    Duplicate,
    /// [`FaultKind::Reorder`]
    Reorder,
    /// [`FaultKind::Late`]
    Late,
    /// [`FaultKind::Malformed`]
    Malformed,
    /// [`FaultKind::Burst`]
    Burst,
    /// [`FaultKind::ClockSkew`]
    ClockSkew,
    /// [`FaultKind::Disconnect`]
    Disconnect,
    /// [`FaultKind::ForcedDoor`]
    ForcedDoor,
    /// [`FaultKind::Drift`]
    Drift,
    /// [`FaultKind::LevelShift`]
    LevelShift,
    /// [`FaultKind::PatternBreak`]
    PatternBreak,
    /// [`FaultKind::NoiseBurst`]
    NoiseBurst,
    /// [`FaultKind::BatteryDecline`]
    BatteryDecline,
}

impl FaultType {
    /// Every fault type, in declaration order.
    pub const ALL: [FaultType; 19] = [
        FaultType::Silence,
        FaultType::HeartbeatLoss,
        FaultType::Flap,
        FaultType::Overheat,
        FaultType::Spike,
        FaultType::Stuck,
        FaultType::Duplicate,
        FaultType::Reorder,
        FaultType::Late,
        FaultType::Malformed,
        FaultType::Burst,
        FaultType::ClockSkew,
        FaultType::Disconnect,
        FaultType::ForcedDoor,
        FaultType::Drift,
        FaultType::LevelShift,
        FaultType::PatternBreak,
        FaultType::NoiseBurst,
        FaultType::BatteryDecline,
    ];

    /// `silence`, `heartbeat_loss`, `flap`, ...
    pub fn name(self) -> &'static str {
        match self {
            FaultType::Silence => "silence",
            FaultType::HeartbeatLoss => "heartbeat_loss",
            FaultType::Flap => "flap",
            FaultType::Overheat => "overheat",
            FaultType::Spike => "spike",
            FaultType::Stuck => "stuck",
            FaultType::Duplicate => "duplicate",
            FaultType::Reorder => "reorder",
            FaultType::Late => "late",
            FaultType::Malformed => "malformed",
            FaultType::Burst => "burst",
            FaultType::ClockSkew => "clock_skew",
            FaultType::Disconnect => "disconnect",
            FaultType::ForcedDoor => "forced_door",
            FaultType::Drift => "drift",
            FaultType::LevelShift => "level_shift",
            FaultType::PatternBreak => "pattern_break",
            FaultType::NoiseBurst => "noise_burst",
            FaultType::BatteryDecline => "battery_decline",
        }
    }

    /// The type named `name`, if any.
    pub fn from_name(name: &str) -> Option<FaultType> {
        FaultType::ALL.into_iter().find(|t| t.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for FaultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A small set of [`FaultType`]s: the faults that shaped one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FaultSet(u32);

impl FaultSet {
    /// No fault.
    pub const EMPTY: FaultSet = FaultSet(0);

    /// Whether `t` is in the set.
    pub fn contains(self, t: FaultType) -> bool {
        self.0 & t.bit() != 0
    }

    /// Adds `t`.
    pub fn insert(&mut self, t: FaultType) {
        self.0 |= t.bit();
    }

    /// Whether no fault is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`FaultType::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = FaultType> {
        FaultType::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

impl FaultKind {
    /// Its name.
    pub fn fault_type(&self) -> FaultType {
        match self {
            FaultKind::Silence { .. } => FaultType::Silence,
            FaultKind::HeartbeatLoss { .. } => FaultType::HeartbeatLoss,
            FaultKind::Flap { .. } => FaultType::Flap,
            FaultKind::Overheat { .. } => FaultType::Overheat,
            FaultKind::Spike { .. } => FaultType::Spike,
            FaultKind::Stuck { .. } => FaultType::Stuck,
            FaultKind::Duplicate { .. } => FaultType::Duplicate,
            FaultKind::Reorder { .. } => FaultType::Reorder,
            FaultKind::Late { .. } => FaultType::Late,
            FaultKind::Malformed { .. } => FaultType::Malformed,
            FaultKind::Burst { .. } => FaultType::Burst,
            FaultKind::ClockSkew { .. } => FaultType::ClockSkew,
            FaultKind::Disconnect { .. } => FaultType::Disconnect,
            FaultKind::ForcedDoor { .. } => FaultType::ForcedDoor,
            FaultKind::Drift { .. } => FaultType::Drift,
            FaultKind::LevelShift { .. } => FaultType::LevelShift,
            FaultKind::PatternBreak { .. } => FaultType::PatternBreak,
            FaultKind::NoiseBurst { .. } => FaultType::NoiseBurst,
            FaultKind::BatteryDecline { .. } => FaultType::BatteryDecline,
        }
    }

    /// How long the fault's span lasts from `start`; zero for one-off faults (spike,
    /// duplicate, reorder, malformed, burst), which act on the next messages instead;
    /// [`Duration::MAX`] for a battery decline to the end of the run.
    pub fn span(&self) -> Duration {
        match *self {
            FaultKind::BatteryDecline { duration, .. } => duration.unwrap_or(Duration::MAX),
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
            | FaultKind::NoiseBurst { duration, .. } => duration,
            FaultKind::Flap { period, count, .. } => period.saturating_mul(count),
            FaultKind::Spike { .. }
            | FaultKind::Duplicate { .. }
            | FaultKind::Reorder { .. }
            | FaultKind::Malformed { .. }
            | FaultKind::Burst { .. } => Duration::ZERO,
        }
    }

    /// The channel a fault that changes readings' values names, if it names one.
    pub fn channel(&self) -> Option<&str> {
        match self {
            FaultKind::Overheat { channel, .. }
            | FaultKind::Spike { channel, .. }
            | FaultKind::Stuck { channel, .. }
            | FaultKind::Drift { channel, .. }
            | FaultKind::LevelShift { channel, .. }
            | FaultKind::PatternBreak { channel, .. }
            | FaultKind::NoiseBurst { channel, .. }
            | FaultKind::BatteryDecline { channel, .. } => channel.as_deref(),
            _ => None,
        }
    }

    /// Whether the fault changes the value of one channel of a sensor's readings (and so
    /// needs a sensor, and its truth names the channel).
    pub fn shapes_values(&self) -> bool {
        matches!(
            self,
            FaultKind::Overheat { .. }
                | FaultKind::Spike { .. }
                | FaultKind::Stuck { .. }
                | FaultKind::Drift { .. }
                | FaultKind::LevelShift { .. }
                | FaultKind::PatternBreak { .. }
                | FaultKind::NoiseBurst { .. }
                | FaultKind::BatteryDecline { .. }
        )
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
        validate(spec).map_err(|(path, message)| ScenarioError::Invalid { origin: origin.to_owned(), path, message })
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

type Invalid = (String, String);

fn invalid<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((path.into(), message.into()))
}

/// A name that becomes one topic level: the wire crate's check, shared with the agent.
fn check_level(path: &str, what: &str, value: &str) -> Result<(), Invalid> {
    edgewatch_wire::check_topic_level(value).or_else(|e| invalid(path, format!("{what} {value:?} {e}")))
}

fn check_topic(path: &str, topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        return invalid(path, "renders to an empty topic");
    }
    if topic.len() > usize::from(u16::MAX) {
        return invalid(path, "renders to a topic longer than 65535 bytes");
    }
    Ok(())
}

fn nonzero(path: String, what: &str, d: Duration) -> Result<(), Invalid> {
    if d.is_zero() { invalid(path, format!("{what} must be longer than zero")) } else { Ok(()) }
}

fn validate(spec: ScenarioSpec) -> Result<Scenario, Invalid> {
    if spec.groups.is_empty() {
        return invalid("groups", "a scenario needs at least one group");
    }
    if let Some(d) = spec.duration {
        nonzero("duration".into(), "duration", d)?;
    }
    let mut group_names = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut offsets = Vec::with_capacity(spec.groups.len());
    let mut own = 0usize;
    for (gi, g) in spec.groups.iter().enumerate() {
        let p = |key: &str| format!("groups[{gi}].{key}");
        check_level(&p("name"), "group name", &g.name)?;
        if !group_names.insert(g.name.as_str()) {
            return invalid(p("name"), format!("two groups are named {:?}", g.name));
        }
        if g.count == 0 {
            return invalid(p("count"), "a group needs at least one device");
        }
        if ids.len().saturating_add(g.count) > MAX_DEVICES {
            return invalid(p("count"), format!("a scenario may have at most {MAX_DEVICES} devices"));
        }
        if g.count > 1 && !g.id.has_placeholder() {
            return invalid(p("id"), "with more than one device the id needs {index} or {number}");
        }
        if let Some(hb) = g.heartbeat_interval {
            nonzero(p("heartbeat_interval"), "heartbeat_interval", hb)?;
        }
        if g.own_connection {
            own += g.count;
            if own > MAX_OWN_CONNECTIONS {
                return invalid(
                    p("own_connection"),
                    format!("at most {MAX_OWN_CONNECTIONS} devices may have their own connection ({own} would)"),
                );
            }
        }
        offsets.push(ids.len());
        for position in 0..g.count {
            let id = g.id.render(g.first_index.saturating_add(position));
            check_level(&p("id"), "device id", &id)?;
            if let Err(e) = edgewatch_wire::device_id(&id) {
                return invalid(p("id"), format!("device id {id:?} is not valid on the wire: {e}"));
            }
            if let Some(prev) = seen.insert(id.clone(), ids.len()) {
                let other = ids.get(prev).cloned().unwrap_or_default();
                return invalid(p("id"), format!("device id {id:?} is used twice (also by device {prev}, {other:?})"));
            }
            ids.push(id);
        }
        // Topics of one device must not collide (checked on the first device; the others
        // differ only by id).
        let first = ids.get(offsets[gi]).cloned().unwrap_or_default();
        let mut topics: Vec<(String, String)> = Vec::new();
        if g.heartbeat_interval.is_some() {
            topics.push((p("heartbeat_topic"), g.heartbeat_topic.render(&first, "", &g.name)));
        }
        if g.own_connection {
            topics.push((p("status_topic"), g.status_topic.render(&first, "", &g.name)));
        }
        match &g.kind {
            GroupKind::Sensor(s) => {
                nonzero(p("reading_interval"), "reading_interval", s.reading_interval)?;
                if s.channels.is_empty() || s.channels.len() > MAX_CHANNELS {
                    return invalid(p("channels"), format!("a sensor reads 1 to {MAX_CHANNELS} channels"));
                }
                let mut names = HashSet::new();
                for (ci, c) in s.channels.iter().enumerate() {
                    let cp = |key: &str| format!("groups[{gi}].channels[{ci}].{key}");
                    check_level(&cp("name"), "channel", &c.name)?;
                    if let Err(e) = edgewatch_wire::channel(&c.name) {
                        return invalid(cp("name"), format!("channel {:?} is not valid on the wire: {e}", c.name));
                    }
                    if !names.insert(c.name.as_str()) {
                        return invalid(cp("name"), format!("channel {:?} is read twice", c.name));
                    }
                    c.signal.validate().map_err(|e| (cp("signal"), e.0))?;
                    if s.reading_topic.has_channel() || ci == 0 {
                        topics.push((p("reading_topic"), s.reading_topic.render(&first, &c.name, &g.name)));
                    }
                }
            }
            GroupKind::Door(d) => {
                nonzero(p("cycle"), "cycle", d.cycle)?;
                if d.jitter >= d.cycle {
                    return invalid(p("jitter"), "jitter must be shorter than the cycle");
                }
                if d.open_delay >= d.cycle - d.jitter {
                    return invalid(p("open_delay"), "open_delay must be shorter than cycle - jitter");
                }
                topics.push((p("badge_topic"), d.badge_topic.render(&first, "", &g.name)));
                topics.push((p("open_topic"), d.open_topic.render(&first, "", &g.name)));
            }
        }
        for (i, (path, topic)) in topics.iter().enumerate() {
            check_topic(path, topic)?;
            if let Some((other, _)) = topics[..i].iter().find(|(_, t)| t == topic) {
                return invalid(path.clone(), format!("renders to {topic:?}, as {other} does"));
            }
        }
    }

    let mut targets = Vec::with_capacity(spec.faults.len());
    let mut channels = Vec::with_capacity(spec.faults.len());
    for (fi, f) in spec.faults.iter().enumerate() {
        let p = |key: &str| format!("faults[{fi}].{key}");
        let target = match &f.device {
            DeviceRef::Id(id) => *seen.get(id).ok_or_else(|| (p("device"), format!("no device has the id {id:?}")))?,
            DeviceRef::Index { group, index } => {
                let gi = spec
                    .groups
                    .iter()
                    .position(|g| &g.name == group)
                    .ok_or_else(|| (p("group"), format!("no group is named {group:?}")))?;
                let g = &spec.groups[gi];
                match index.checked_sub(g.first_index).filter(|pos| *pos < g.count) {
                    Some(pos) => offsets[gi] + pos,
                    None => {
                        return invalid(
                            p("index"),
                            format!("group {group:?} has indexes {} to {}", g.first_index, g.first_index + g.count - 1),
                        );
                    }
                }
            }
        };
        let gi = offsets.iter().rposition(|&o| o <= target).unwrap_or(0);
        let g = &spec.groups[gi];
        let name = f.kind.fault_type().name();
        let unsuited = |what: &str| -> Invalid {
            (format!("faults[{fi}]"), format!("a {name} fault needs {what}, and {} is not one", f.device))
        };
        let needs = |ok: bool, what: &str| -> Result<(), Invalid> { if ok { Ok(()) } else { Err(unsuited(what)) } };
        let mut channel = 0;
        match &f.kind {
            FaultKind::Silence { duration }
            | FaultKind::Stuck { duration, .. }
            | FaultKind::ClockSkew { duration, .. }
            | FaultKind::ForcedDoor { duration }
            | FaultKind::Disconnect { duration }
            | FaultKind::HeartbeatLoss { duration }
            | FaultKind::Overheat { duration, .. }
            | FaultKind::Late { duration, .. }
            | FaultKind::Drift { duration, .. }
            | FaultKind::LevelShift { duration, .. }
            | FaultKind::PatternBreak { duration, .. }
            | FaultKind::NoiseBurst { duration, .. } => nonzero(p("duration"), "duration", *duration)?,
            FaultKind::BatteryDecline { duration, .. } => {
                if let Some(d) = duration {
                    nonzero(p("duration"), "duration", *d)?;
                }
            }
            FaultKind::Flap { period, down, count, .. } => {
                nonzero(p("period"), "period", *period)?;
                nonzero(p("down"), "down", *down)?;
                if down >= period {
                    return invalid(p("down"), "down must be shorter than the period");
                }
                if *count == 0 {
                    return invalid(p("count"), "count must be at least 1");
                }
            }
            FaultKind::Spike { count, .. }
            | FaultKind::Duplicate { count, .. }
            | FaultKind::Reorder { count, .. }
            | FaultKind::Malformed { count }
            | FaultKind::Burst { count } => {
                if *count == 0 {
                    return invalid(p("count"), "count must be at least 1");
                }
            }
        }
        match &f.kind {
            FaultKind::Overheat { value, .. } | FaultKind::Spike { value: SpikeValue::Absolute(value), .. }
                if !value.is_finite() =>
            {
                return invalid(p("value"), "value must be a finite number");
            }
            FaultKind::Spike { value: SpikeValue::Relative(by), .. } | FaultKind::LevelShift { by, .. }
                if !by.is_finite() || *by == 0.0 =>
            {
                return invalid(p("by"), "by must be a finite number other than zero");
            }
            FaultKind::Drift { rate, .. } if !rate.is_finite() || *rate == 0.0 => {
                return invalid(p("rate"), "rate must be a finite number other than zero (units per hour)");
            }
            FaultKind::BatteryDecline { rate, .. } if !rate.is_finite() || *rate <= 0.0 => {
                return invalid(p("rate"), "rate must be a finite number above zero (volts per hour)");
            }
            FaultKind::NoiseBurst { noise, .. } if !noise.is_finite() || *noise <= 0.0 => {
                return invalid(p("noise"), "noise must be a finite number above zero");
            }
            FaultKind::Late { delay, .. } => nonzero(p("delay"), "delay", *delay)?,
            FaultKind::HeartbeatLoss { .. } => needs(g.heartbeat_interval.is_some(), "a device that sends heartbeats")?,
            FaultKind::Disconnect { .. } | FaultKind::Flap { via: FlapVia::Disconnect, .. } => {
                needs(g.own_connection, "a device with its own connection (own_connection = true)")?
            }
            FaultKind::ForcedDoor { .. } => needs(matches!(g.kind, GroupKind::Door(_)), "a door")?,
            FaultKind::Burst { .. } => needs(matches!(g.kind, GroupKind::Sensor(_)), "a sensor")?,
            FaultKind::Duplicate { messages, .. } | FaultKind::Reorder { messages, .. } => {
                let fits = match (messages, &g.kind) {
                    (MessageFilter::Any, _) => true,
                    (MessageFilter::Heartbeat, _) => g.heartbeat_interval.is_some(),
                    (MessageFilter::Reading, GroupKind::Sensor(_)) => true,
                    (MessageFilter::Badge | MessageFilter::Open, GroupKind::Door(_)) => true,
                    _ => false,
                };
                if !fits {
                    return invalid(
                        p("messages"),
                        format!("device {} never sends {} messages", f.device, messages.name()),
                    );
                }
            }
            _ => {}
        }
        if f.kind.shapes_values() {
            let GroupKind::Sensor(s) = &g.kind else {
                return Err(unsuited("a sensor"));
            };
            let battery = matches!(f.kind, FaultKind::BatteryDecline { .. });
            match f.kind.channel() {
                Some(name) => {
                    channel = s
                        .channels
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| (p("channel"), format!("device {} has no channel {name:?}", f.device)))?;
                }
                None if battery => {
                    channel = s.channels.iter().position(|c| c.name == BATTERY_CHANNEL).ok_or_else(|| {
                        unsuited(&format!("a sensor with a {BATTERY_CHANNEL:?} channel (or name one with `channel`)"))
                    })?;
                }
                None => {}
            }
            if let (FaultKind::PatternBreak { .. }, Some(c)) = (&f.kind, s.channels.get(channel)) {
                if !matches!(c.signal, Signal::Daily { .. } | Signal::Sine { .. }) {
                    let at = if f.kind.channel().is_some() { p("channel") } else { format!("faults[{fi}]") };
                    return invalid(
                        at,
                        format!(
                            "a pattern_break fault needs a daily or sine signal, and channel {:?} of {} has none",
                            c.name, f.device
                        ),
                    );
                }
            }
        }
        targets.push(target);
        channels.push(channel);
    }
    Ok(Scenario { spec, ids, offsets, targets, channels })
}

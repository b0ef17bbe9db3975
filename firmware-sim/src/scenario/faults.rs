//! Faults as a scenario declares them (`[[faults]]`): what each kind does, which devices
//! and messages it reaches, and the types ground truth reports them by.

use super::*;

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

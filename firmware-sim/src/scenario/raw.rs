//! The TOML shape of a scenario: serde structs with `deny_unknown_fields` and named
//! defaults, turned into a [`ScenarioSpec`] with errors that name the key path.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{
    ChannelSpec, DeviceRef, DoorSpec, FaultKind, FaultSpec, FaultType, FlapVia, Group, GroupKind, MessageFilter,
    PayloadFormat, Scenario, ScenarioError, ScenarioSpec, SensorSpec, SpikeValue,
};
use crate::signal::Signal;
use crate::template::{IdTemplate, TopicTemplate};

fn default_reading_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_reading_topic() -> String {
    "sensors/{device}/{channel}".to_owned()
}
fn default_heartbeat_topic() -> String {
    "sensors/{device}/heartbeat".to_owned()
}
fn default_status_topic() -> String {
    "sensors/{device}/status".to_owned()
}
fn default_badge_topic() -> String {
    "doors/{device}/badge".to_owned()
}
fn default_open_topic() -> String {
    "doors/{device}/open".to_owned()
}
fn default_cycle() -> Duration {
    Duration::from_secs(7)
}
fn default_jitter() -> Duration {
    Duration::from_secs(1)
}
fn default_open_delay() -> Duration {
    Duration::from_secs(1)
}
/// Longer than the 10 s the shipped `door-forced` rule waits for a badge.
fn default_forced_quiet() -> Duration {
    Duration::from_secs(15)
}
/// Mid-afternoon, as outdoor temperatures peak.
fn default_peak_hour() -> f32 {
    15.0
}
/// Weekends like weekdays.
fn default_weekend_factor() -> f32 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    faults: Vec<RawFault>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    #[default]
    Sensor,
    Door,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawFormat {
    #[default]
    Json,
    Postcard,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    kind: RawKind,
    count: usize,
    id: Option<String>,
    id_prefix: Option<String>,
    #[serde(default)]
    first_index: usize,
    #[serde(default)]
    format: RawFormat,
    #[serde(default, with = "humantime_serde")]
    heartbeat_interval: Option<Duration>,
    #[serde(default = "default_heartbeat_topic")]
    heartbeat_topic: String,
    #[serde(default)]
    own_connection: bool,
    #[serde(default = "default_status_topic")]
    status_topic: String,
    // Sensors.
    #[serde(default, with = "humantime_serde")]
    reading_interval: Option<Duration>,
    reading_topic: Option<String>,
    channels: Option<Vec<RawChannel>>,
    // Doors.
    #[serde(default, with = "humantime_serde")]
    cycle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    open_delay: Option<Duration>,
    badge_topic: Option<String>,
    open_topic: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    #[serde(default)]
    signal: Option<RawSignal>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
enum RawSignal {
    Constant {
        value: f32,
        #[serde(default)]
        noise: f32,
    },
    Daily {
        base: f32,
        amplitude: f32,
        #[serde(default = "default_peak_hour")]
        peak_hour: f32,
        #[serde(default = "default_weekend_factor")]
        weekend_factor: f32,
        #[serde(default)]
        noise: f32,
    },
    Sine {
        base: f32,
        amplitude: f32,
        #[serde(with = "humantime_serde")]
        period: Duration,
        #[serde(default)]
        noise: f32,
    },
    RandomWalk {
        start: f32,
        step: f32,
        min: f32,
        max: f32,
    },
    Steps {
        levels: Vec<f32>,
        #[serde(with = "humantime_serde")]
        every: Duration,
        #[serde(default)]
        noise: f32,
    },
}

impl From<RawSignal> for Signal {
    fn from(raw: RawSignal) -> Signal {
        match raw {
            RawSignal::Constant { value, noise } => Signal::Constant { value, noise },
            RawSignal::Daily { base, amplitude, peak_hour, weekend_factor, noise } => {
                Signal::Daily { base, amplitude, peak_hour, weekend_factor, noise }
            }
            RawSignal::Sine { base, amplitude, period, noise } => Signal::Sine { base, amplitude, period, noise },
            RawSignal::RandomWalk { start, step, min, max } => Signal::RandomWalk { start, step, min, max },
            RawSignal::Steps { levels, every, noise } => Signal::Steps { levels, every, noise },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    fault: String,
    device: Option<String>,
    group: Option<String>,
    index: Option<usize>,
    #[serde(with = "humantime_serde")]
    start: Duration,
    #[serde(default, with = "humantime_serde")]
    duration: Option<Duration>,
    value: Option<f32>,
    channel: Option<String>,
    count: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    down: Option<Duration>,
    via: Option<String>,
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
    offset: Option<String>,
    messages: Option<String>,
    by: Option<f32>,
    rate: Option<f32>,
    noise: Option<f32>,
}

impl Scenario {
    /// Reads and validates a scenario file; errors name the file and the key path.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { file: file.clone(), source })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("scenario");
        parse(&text, &file, stem)
    }

    /// Parses and validates scenario text; errors name `<scenario>` and the key path.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        parse(text, "<scenario>", "scenario")
    }
}

/// Parses scenario text; `origin` names it in errors, `stem` is the default name.
fn parse(text: &str, origin: &str, stem: &str) -> Result<Scenario, ScenarioError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ScenarioError::Syntax { origin: origin.to_owned(), message: e.to_string() })?;
    let raw: RawScenario = crate::toml_keys::deserialize(toml::Value::Table(table))
        .map_err(|(path, message)| ScenarioError::Invalid { origin: origin.to_owned(), path, message })?;
    let spec = raw.into_spec(stem).map_err(|(path, message)| ScenarioError::Invalid {
        origin: origin.to_owned(),
        path,
        message,
    })?;
    Scenario::validated(spec, origin)
}

type Invalid = (String, String);

impl RawScenario {
    fn into_spec(self, stem: &str) -> Result<ScenarioSpec, Invalid> {
        let groups = self.groups.into_iter().enumerate().map(|(i, g)| g.into_group(i)).collect::<Result<_, _>>()?;
        let faults = self.faults.into_iter().enumerate().map(|(i, f)| f.into_spec(i)).collect::<Result<_, _>>()?;
        Ok(ScenarioSpec {
            name: self.name.unwrap_or_else(|| stem.to_owned()),
            description: self.description,
            duration: self.duration,
            groups,
            faults,
        })
    }
}

impl RawGroup {
    fn into_group(self, gi: usize) -> Result<Group, Invalid> {
        let p = |key: &str| format!("groups[{gi}].{key}");
        let id = match (self.id, self.id_prefix) {
            (Some(_), Some(_)) => return Err((p("id_prefix"), "give `id` or `id_prefix`, not both".to_owned())),
            (Some(template), None) => IdTemplate::parse(&template).map_err(|e| (p("id"), e))?,
            (None, Some(prefix)) => IdTemplate::with_prefix(&prefix),
            (None, None) => IdTemplate::with_prefix(&format!("{}-", self.name)),
        };
        let topic = |key: &str, text: &str, channel: bool| TopicTemplate::parse(text, channel).map_err(|e| (p(key), e));
        let wrong_kind = |key: &str, kind: &str| Err((p(key), format!("only {kind} groups take `{key}`")));
        let kind = match self.kind {
            RawKind::Sensor => {
                for (key, set) in [
                    ("cycle", self.cycle.is_some()),
                    ("jitter", self.jitter.is_some()),
                    ("open_delay", self.open_delay.is_some()),
                    ("badge_topic", self.badge_topic.is_some()),
                    ("open_topic", self.open_topic.is_some()),
                ] {
                    if set {
                        return wrong_kind(key, "door");
                    }
                }
                let channels = match self.channels {
                    None => vec![ChannelSpec { name: "temperature".to_owned(), signal: Signal::default() }],
                    Some(list) => list
                        .into_iter()
                        .map(|c| ChannelSpec { name: c.name, signal: c.signal.map(Signal::from).unwrap_or_default() })
                        .collect(),
                };
                GroupKind::Sensor(SensorSpec {
                    reading_interval: self.reading_interval.unwrap_or_else(default_reading_interval),
                    reading_topic: topic(
                        "reading_topic",
                        &self.reading_topic.unwrap_or_else(default_reading_topic),
                        true,
                    )?,
                    channels,
                })
            }
            RawKind::Door => {
                for (key, set) in [
                    ("reading_interval", self.reading_interval.is_some()),
                    ("reading_topic", self.reading_topic.is_some()),
                    ("channels", self.channels.is_some()),
                ] {
                    if set {
                        return wrong_kind(key, "sensor");
                    }
                }
                GroupKind::Door(DoorSpec {
                    cycle: self.cycle.unwrap_or_else(default_cycle),
                    jitter: self.jitter.unwrap_or_else(default_jitter),
                    open_delay: self.open_delay.unwrap_or_else(default_open_delay),
                    badge_topic: topic("badge_topic", &self.badge_topic.unwrap_or_else(default_badge_topic), false)?,
                    open_topic: topic("open_topic", &self.open_topic.unwrap_or_else(default_open_topic), false)?,
                })
            }
        };
        Ok(Group {
            name: self.name,
            count: self.count,
            id,
            first_index: self.first_index,
            format: match self.format {
                RawFormat::Json => PayloadFormat::Json,
                RawFormat::Postcard => PayloadFormat::Postcard,
            },
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_topic: topic("heartbeat_topic", &self.heartbeat_topic, false)?,
            own_connection: self.own_connection,
            status_topic: topic("status_topic", &self.status_topic, false)?,
            kind,
        })
    }
}

/// `-30s`, `+5m`, `250ms`: a signed duration in milliseconds.
fn signed_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (sign, body) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = humantime::parse_duration(body.trim()).map_err(|e| format!("{text:?} is not a duration: {e}"))?;
    let ms = i64::try_from(d.as_millis()).map_err(|_| format!("{text:?} is too long"))?;
    Ok(sign * ms)
}

impl RawFault {
    fn into_spec(self, fi: usize) -> Result<FaultSpec, Invalid> {
        let p = |key: &str| format!("faults[{fi}].{key}");
        let kind = FaultType::from_name(&self.fault).ok_or_else(|| {
            let names: Vec<&str> = FaultType::ALL.iter().map(|t| t.name()).collect();
            (p("fault"), format!("unknown fault {:?} (expected one of: {})", self.fault, names.join(", ")))
        })?;
        let device = match (self.device, self.group, self.index) {
            (Some(id), None, None) => DeviceRef::Id(id),
            (None, Some(group), Some(index)) => DeviceRef::Index { group, index },
            (None, Some(_), None) => return Err((p("index"), "`group` needs an `index`".to_owned())),
            (None, None, Some(_)) => return Err((p("group"), "`index` needs a `group`".to_owned())),
            (None, None, None) => {
                return Err((
                    format!("faults[{fi}]"),
                    "name the device: `device = \"id\"`, or `group` and `index`".into(),
                ));
            }
            (Some(_), ..) => return Err((p("device"), "give `device`, or `group` and `index`, not both".to_owned())),
        };
        let name = kind.name();
        // Which parameters each kind takes; anything else set is an error.
        let allowed: &[&str] = match kind {
            FaultType::Silence | FaultType::HeartbeatLoss | FaultType::Disconnect | FaultType::ForcedDoor => {
                &["duration"]
            }
            FaultType::Flap => &["period", "down", "count", "via"],
            FaultType::Overheat => &["duration", "value", "channel"],
            FaultType::Spike => &["value", "by", "count", "channel"],
            FaultType::Stuck => &["duration", "channel"],
            FaultType::Duplicate | FaultType::Reorder => &["count", "messages"],
            FaultType::Late => &["duration", "delay"],
            FaultType::Malformed | FaultType::Burst => &["count"],
            FaultType::ClockSkew => &["duration", "offset"],
            FaultType::Drift | FaultType::BatteryDecline => &["duration", "rate", "channel"],
            FaultType::LevelShift => &["duration", "by", "channel"],
            FaultType::PatternBreak => &["duration", "channel"],
            FaultType::NoiseBurst => &["duration", "noise", "channel"],
        };
        for (key, set) in [
            ("duration", self.duration.is_some()),
            ("value", self.value.is_some()),
            ("channel", self.channel.is_some()),
            ("count", self.count.is_some()),
            ("period", self.period.is_some()),
            ("down", self.down.is_some()),
            ("via", self.via.is_some()),
            ("delay", self.delay.is_some()),
            ("offset", self.offset.is_some()),
            ("messages", self.messages.is_some()),
            ("by", self.by.is_some()),
            ("rate", self.rate.is_some()),
            ("noise", self.noise.is_some()),
        ] {
            if set && !allowed.contains(&key) {
                return Err((
                    p(key),
                    format!("a {name} fault does not take `{key}` (it takes: {})", allowed.join(", ")),
                ));
            }
        }
        let missing = |key: &str| (p(key), format!("a {name} fault needs `{key}`"));
        let duration = || self.duration.ok_or_else(|| missing("duration"));
        let messages = || -> Result<MessageFilter, Invalid> {
            match self.messages.as_deref() {
                None | Some("any") => Ok(MessageFilter::Any),
                Some("reading") => Ok(MessageFilter::Reading),
                Some("heartbeat") => Ok(MessageFilter::Heartbeat),
                Some("badge") => Ok(MessageFilter::Badge),
                Some("open") => Ok(MessageFilter::Open),
                Some(other) => Err((
                    p("messages"),
                    format!("unknown message kind {other:?} (expected any, reading, heartbeat, badge or open)"),
                )),
            }
        };
        let count = self.count.unwrap_or(1);
        let kind = match kind {
            FaultType::Silence => FaultKind::Silence { duration: duration()? },
            FaultType::HeartbeatLoss => FaultKind::HeartbeatLoss { duration: duration()? },
            FaultType::Disconnect => FaultKind::Disconnect { duration: duration()? },
            FaultType::ForcedDoor => {
                FaultKind::ForcedDoor { duration: self.duration.unwrap_or_else(default_forced_quiet) }
            }
            FaultType::Flap => {
                let period = self.period.ok_or_else(|| missing("period"))?;
                FaultKind::Flap {
                    period,
                    down: self.down.unwrap_or(period / 2),
                    count: self.count.ok_or_else(|| missing("count"))?,
                    via: match self.via.as_deref() {
                        None | Some("silence") => FlapVia::Silence,
                        Some("disconnect") => FlapVia::Disconnect,
                        Some(other) => {
                            return Err((p("via"), format!("unknown {other:?} (expected silence or disconnect)")));
                        }
                    },
                }
            }
            FaultType::Overheat => FaultKind::Overheat {
                duration: duration()?,
                value: self.value.ok_or_else(|| missing("value"))?,
                channel: self.channel,
            },
            FaultType::Spike => {
                let value = match (self.value, self.by) {
                    (Some(value), None) => SpikeValue::Absolute(value),
                    (None, Some(by)) => SpikeValue::Relative(by),
                    (Some(_), Some(_)) => return Err((p("by"), "give `value` or `by`, not both".to_owned())),
                    (None, None) => {
                        return Err((
                            p("value"),
                            "a spike fault needs `value` (the outlier) or `by` (added)".to_owned(),
                        ));
                    }
                };
                FaultKind::Spike { value, count, channel: self.channel }
            }
            FaultType::Stuck => FaultKind::Stuck { duration: duration()?, channel: self.channel },
            FaultType::Duplicate => FaultKind::Duplicate { count, messages: messages()? },
            FaultType::Reorder => FaultKind::Reorder { count, messages: messages()? },
            FaultType::Late => {
                FaultKind::Late { duration: duration()?, delay: self.delay.ok_or_else(|| missing("delay"))? }
            }
            FaultType::Malformed => FaultKind::Malformed { count },
            FaultType::Burst => FaultKind::Burst { count: self.count.ok_or_else(|| missing("count"))? },
            FaultType::ClockSkew => {
                let offset = self.offset.as_deref().ok_or_else(|| missing("offset"))?;
                let offset_ms = signed_ms(offset).map_err(|e| (p("offset"), e))?;
                if offset_ms == 0 {
                    return Err((p("offset"), "offset must not be zero".to_owned()));
                }
                FaultKind::ClockSkew { duration: duration()?, offset_ms }
            }
            FaultType::Drift => FaultKind::Drift {
                duration: duration()?,
                rate: self.rate.ok_or_else(|| missing("rate"))?,
                channel: self.channel,
            },
            FaultType::LevelShift => FaultKind::LevelShift {
                duration: duration()?,
                by: self.by.ok_or_else(|| missing("by"))?,
                channel: self.channel,
            },
            FaultType::PatternBreak => FaultKind::PatternBreak { duration: duration()?, channel: self.channel },
            FaultType::NoiseBurst => FaultKind::NoiseBurst {
                duration: duration()?,
                noise: self.noise.ok_or_else(|| missing("noise"))?,
                channel: self.channel,
            },
            FaultType::BatteryDecline => FaultKind::BatteryDecline {
                duration: self.duration,
                rate: self.rate.ok_or_else(|| missing("rate"))?,
                channel: self.channel,
            },
        };
        Ok(FaultSpec { device, start: self.start, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_offsets() {
        assert_eq!(signed_ms("-30s"), Ok(-30_000));
        assert_eq!(signed_ms("+5m"), Ok(300_000));
        assert_eq!(signed_ms("250ms"), Ok(250));
        assert!(signed_ms("soon").is_err());
    }
}

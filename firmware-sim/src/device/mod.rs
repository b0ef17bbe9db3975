//! One virtual device, written the way its firmware would be: fixed buffers, its own
//! sequence counter, timers, and its own random stream.
//!
//! A device is a sensor (readings of one or more channels, each with a [`Signal`] model)
//! or a door controller (badge reads and door openings), and either may send heartbeats.
//! It knows nothing of faults or of other devices: the [`Simulation`](crate::Simulation)
//! decides when it runs and whether a fault bends what it sends. Nothing here does I/O.

use std::sync::Arc;
use std::time::Duration;

use edgewatch_wire::{Body, Channel, DeviceId, MAX_FRAME_LEN, MAX_SAMPLES, Message, Sample, Samples};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Group, GroupKind, PayloadFormat};
pub use crate::signal::Signal;
use crate::signal::SignalState;

/// `code` of a door's badge-read event (`{"kind":"event","code":1}`).
pub const BADGE_CODE: u16 = 1;
/// `code` of a door's door-opened event (`{"kind":"event","code":2}`).
pub const OPEN_CODE: u16 = 2;

/// The values of one reading, one per channel.
pub(crate) type Values = edgewatch_wire::heapless::Vec<f32, MAX_SAMPLES>;

/// Why a device cannot be built: a name that does not fit the wire format. A validated
/// [`Scenario`](crate::Scenario) has checked both, so this means a bug there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A device id does not fit the wire format.
    #[error("device id {id:?} is not valid on the wire")]
    DeviceId {
        /// The offending id.
        id: String,
        /// What the wire format said.
        source: edgewatch_wire::Error,
    },
    /// A channel name does not fit the wire format or is reserved.
    #[error("channel {channel:?} is not valid on the wire")]
    Channel {
        /// The offending channel.
        channel: String,
        /// What the wire format said.
        source: edgewatch_wire::Error,
    },
}

/// Why a device could not produce a payload. Devices are validated when built, so this
/// means a bug, not bad input; the simulation logs it and drops the one message.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The wire format refused the message.
    #[error("wire encoding failed")]
    Wire(#[from] edgewatch_wire::Error),
    /// JSON serialization failed.
    #[error("JSON encoding failed")]
    Json(#[from] serde_json::Error),
}

/// A periodic timer: the next firing is always the last one plus `every` (no drift).
#[derive(Debug, Clone, Copy)]
struct Timer {
    every: Duration,
    next: Duration,
}

impl Timer {
    /// Returns the due time and moves on by one period.
    fn take(&mut self) -> Duration {
        let at = self.next;
        self.next = at.saturating_add(self.every);
        at
    }
}

#[derive(Debug)]
struct ChannelState {
    /// Checked once, at build time, against the wire format's capacity.
    name: Channel,
    /// Topic of this channel's readings (or of the combined reading, for channel 0).
    topic: Arc<str>,
    /// The sensor model's running state (phase, walk position).
    signal: SignalState,
}

#[derive(Debug)]
struct Sensor {
    timer: Timer,
    channels: Vec<ChannelState>,
    /// One message carries every channel (the reading topic has no `{channel}`).
    combined: bool,
}

#[derive(Debug)]
struct Door {
    cycle: Duration,
    /// Largest deviation of one cycle from `cycle`, in ms.
    jitter_ms: u64,
    open_delay: Duration,
    /// Virtual time of the next badge read.
    next_badge: Duration,
    badge_topic: Arc<str>,
    open_topic: Arc<str>,
}

#[derive(Debug)]
enum Role {
    Sensor(Sensor),
    Door(Door),
}

/// One virtual device.
#[derive(Debug)]
pub struct Device {
    /// Device number across the scenario.
    index: usize,
    /// Index of its group in the scenario.
    group: usize,
    /// Checked against the wire format's capacity once, at build time.
    id: DeviceId,
    /// JSON or postcard: fixed per device, as a firmware build would be.
    format: PayloadFormat,
    /// The device's own message counter, as firmware keeps it: +1 for every message it
    /// sends, wrapping. Withheld messages do not consume numbers (the device sent nothing).
    seq: u32,
    /// Wall-clock epoch ms at virtual t=0, so `ts` = `start_ms` + virtual ms.
    start_ms: u64,
    /// Heartbeat timer; `None` when heartbeats are off.
    heartbeat: Option<Timer>,
    /// Built once so emitting costs no formatting.
    heartbeat_topic: Arc<str>,
    /// `online` and the last will go here; `Some` only for own-connection devices.
    status_topic: Option<Arc<str>>,
    /// Sensor or door, with its timers.
    role: Role,
    /// This device's own random stream (seed, stream = group << 32 | position), so its
    /// values depend neither on the other devices nor on the order they run in.
    rng: ChaCha8Rng,
    /// Encode buffer sized for the worst-case frame, as on a microcontroller.
    frame: [u8; MAX_FRAME_LEN],
}

/// `base` scaled by `index / count`, for staggering first messages across an interval.
fn stagger(base: Duration, index: usize, count: usize) -> Duration {
    let count = count.max(1) as u128;
    let nanos = base.as_nanos() * index as u128 / count;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Device {
    /// Device `position` of group number `group_no` (`spec`), device number `index` of
    /// its scenario, with id `id`.
    pub(crate) fn build(
        index: usize,
        group_no: usize,
        position: usize,
        spec: &Group,
        id: &str,
        seed: u64,
        start_ms: u64,
    ) -> Result<Device, DeviceError> {
        let wire_id =
            edgewatch_wire::device_id(id).map_err(|source| DeviceError::DeviceId { id: id.to_owned(), source })?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(((group_no as u64) << 32) | position as u64);
        let topic = |t: &crate::template::TopicTemplate, channel: &str| -> Arc<str> {
            Arc::from(t.render(id, channel, &spec.name))
        };
        let role = match &spec.kind {
            GroupKind::Sensor(s) => {
                let mut channels = Vec::with_capacity(s.channels.len());
                for c in &s.channels {
                    let name = edgewatch_wire::channel(&c.name)
                        .map_err(|source| DeviceError::Channel { channel: c.name.clone(), source })?;
                    let signal = SignalState::new(&c.signal, &mut rng, start_ms);
                    channels.push(ChannelState { name, topic: topic(&s.reading_topic, &c.name), signal });
                }
                Role::Sensor(Sensor {
                    timer: Timer { every: s.reading_interval, next: stagger(s.reading_interval, position, spec.count) },
                    channels,
                    combined: !s.reading_topic.has_channel(),
                })
            }
            GroupKind::Door(d) => Role::Door(Door {
                cycle: d.cycle,
                jitter_ms: ms(d.jitter),
                open_delay: d.open_delay,
                next_badge: stagger(d.cycle, position, spec.count),
                badge_topic: topic(&d.badge_topic, ""),
                open_topic: topic(&d.open_topic, ""),
            }),
        };
        Ok(Device {
            index,
            group: group_no,
            id: wire_id,
            format: spec.format,
            seq: 0,
            start_ms,
            heartbeat: spec.heartbeat_interval.map(|every| Timer { every, next: stagger(every, position, spec.count) }),
            heartbeat_topic: topic(&spec.heartbeat_topic, ""),
            status_topic: spec.own_connection.then(|| topic(&spec.status_topic, "")),
            role,
            rng,
            frame: [0; MAX_FRAME_LEN],
        })
    }

    /// Device number (position in the fleet).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Index of its group in the scenario.
    pub fn group(&self) -> usize {
        self.group
    }

    /// The device id, e.g. `t-007`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sequence number the next message will carry.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Payload encoding.
    pub fn format(&self) -> PayloadFormat {
        self.format
    }

    /// Name of channel number `index`, for a sensor.
    pub fn channel_name(&self, index: usize) -> Option<&str> {
        match &self.role {
            Role::Sensor(s) => s.channels.get(index).map(|c| c.name.as_str()),
            Role::Door(_) => None,
        }
    }

    /// Whether it is a door controller.
    pub fn is_door(&self) -> bool {
        matches!(self.role, Role::Door(_))
    }

    /// Topic of readings (of the first channel, if each has its own); of badge reads, for a door.
    pub fn reading_topic(&self) -> &str {
        match &self.role {
            Role::Sensor(s) => s.channels.first().map(|c| &*c.topic).unwrap_or_default(),
            Role::Door(d) => &d.badge_topic,
        }
    }

    /// Topic of heartbeats.
    pub fn heartbeat_topic(&self) -> &str {
        &self.heartbeat_topic
    }

    /// Topic of `online` and of the last will, for an own-connection device.
    pub fn status_topic(&self) -> Option<&str> {
        self.status_topic.as_deref()
    }

    pub(crate) fn status_topic_arc(&self) -> Option<Arc<str>> {
        self.status_topic.clone()
    }

    pub(crate) fn heartbeat_topic_arc(&self) -> Arc<str> {
        self.heartbeat_topic.clone()
    }

    /// Virtual time of the next reading (of the next badge read, for a door).
    pub fn next_reading(&self) -> Duration {
        match &self.role {
            Role::Sensor(s) => s.timer.next,
            Role::Door(d) => d.next_badge,
        }
    }

    /// Virtual time of the next heartbeat, if heartbeats are on.
    pub fn next_heartbeat(&self) -> Option<Duration> {
        self.heartbeat.map(|t| t.next)
    }

    /// Messages one reading makes: one per channel on per-channel topics, else one.
    pub(crate) fn messages_per_reading(&self) -> usize {
        match &self.role {
            Role::Sensor(s) if !s.combined => s.channels.len(),
            _ => 1,
        }
    }

    /// `ts` of a message sent at virtual `at`.
    pub(crate) fn ts(&self, at: Duration) -> u64 {
        self.start_ms.saturating_add(ms(at))
    }

    /// Takes the reading due at [`next_reading`](Self::next_reading): samples every
    /// channel's signal (so a withheld reading still moves the signal on, as a real sensor's
    /// would) and advances the timer. Doors read nothing.
    pub(crate) fn take_reading(&mut self) -> (Duration, Values) {
        let mut values = Values::new();
        let Role::Sensor(s) = &mut self.role else {
            return (Duration::ZERO, values);
        };
        let at = s.timer.take();
        for c in &mut s.channels {
            // At most MAX_SAMPLES channels, checked when the scenario was validated.
            let _ = values.push(c.signal.sample(at, &mut self.rng));
        }
        (at, values)
    }

    /// Samples every channel once more at `at`, without touching the timer (a burst).
    pub(crate) fn sample_extra(&mut self, at: Duration) -> Values {
        let mut values = Values::new();
        if let Role::Sensor(s) = &mut self.role {
            for c in &mut s.channels {
                let _ = values.push(c.signal.sample(at, &mut self.rng));
            }
        }
        values
    }

    /// The noiseless level of channel `channel` at virtual `at` (see `SignalState::level`).
    pub(crate) fn level(&self, channel: usize, at: Duration) -> Option<f32> {
        match &self.role {
            Role::Sensor(s) => s.channels.get(channel).map(|c| c.signal.level(at)),
            Role::Door(_) => None,
        }
    }

    /// What a `pattern_break` adds to channel `channel` at virtual `at`: the periodic part of
    /// half a period earlier minus the periodic part now; `None` if the channel's signal has
    /// no periodic part.
    pub(crate) fn pattern_break(&self, channel: usize, at: Duration) -> Option<f32> {
        let Role::Sensor(s) = &self.role else { return None };
        let signal = &s.channels.get(channel)?.signal;
        let half = signal.half_period()?;
        let delta = signal.periodic(at, half)? - signal.periodic(at, Duration::ZERO)?;
        Some(delta as f32)
    }

    /// Encodes a reading of `values` with `ts`, appending `(topic, payload)` to `out`: one
    /// message per channel, or one for all. Every message takes a `seq`.
    pub(crate) fn encode_reading(
        &mut self,
        ts: u64,
        values: &[f32],
        out: &mut Vec<(Arc<str>, Vec<u8>)>,
    ) -> Result<(), EncodeError> {
        let Role::Sensor(s) = &self.role else {
            return Ok(());
        };
        let mut messages: edgewatch_wire::heapless::Vec<(Arc<str>, Samples), MAX_SAMPLES> =
            edgewatch_wire::heapless::Vec::new();
        if s.combined {
            let mut samples = Samples::new();
            for (c, &value) in s.channels.iter().zip(values) {
                let _ = samples.push(Sample { channel: c.name.clone(), value });
            }
            let topic = s.channels.first().map(|c| c.topic.clone()).unwrap_or_else(|| Arc::from(""));
            let _ = messages.push((topic, samples));
        } else {
            for (c, &value) in s.channels.iter().zip(values) {
                let _ =
                    messages.push((c.topic.clone(), Samples::from_array([Sample { channel: c.name.clone(), value }])));
            }
        }
        for (topic, samples) in messages {
            let payload = self.encode_next(ts, Body::Reading(samples))?;
            out.push((topic, payload));
        }
        Ok(())
    }

    /// Takes the heartbeat due at [`next_heartbeat`](Self::next_heartbeat) and advances
    /// its timer; `None` if heartbeats are off.
    pub(crate) fn take_heartbeat(&mut self) -> Option<Duration> {
        self.heartbeat.as_mut().map(Timer::take)
    }

    /// A heartbeat sent at virtual `at` with `ts`; `uptime_s` counts from virtual t=0.
    pub(crate) fn encode_heartbeat(&mut self, at: Duration, ts: u64) -> Result<Vec<u8>, EncodeError> {
        let uptime_s = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
        self.encode_next(ts, Body::Heartbeat { uptime_s })
    }

    /// A door event (`BADGE_CODE` or `OPEN_CODE`) with `ts`.
    pub(crate) fn encode_event(&mut self, ts: u64, code: u16) -> Result<Vec<u8>, EncodeError> {
        self.encode_next(ts, Body::Event { code })
    }

    /// A door's badge read due now: returns its time and the time of the next one (this
    /// cycle's jitter drawn from the device's stream), and advances.
    pub(crate) fn take_badge(&mut self) -> Option<(Duration, Duration)> {
        let Role::Door(d) = &mut self.role else {
            return None;
        };
        let at = d.next_badge;
        let mut next = at.saturating_add(d.cycle);
        if d.jitter_ms > 0 {
            let offset = self.rng.random_range(0..=2 * d.jitter_ms);
            next = (next + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(d.jitter_ms));
        }
        d.next_badge = next;
        Some((at, next))
    }

    /// How long after a badge read the door opens.
    pub(crate) fn open_delay(&self) -> Duration {
        match &self.role {
            Role::Door(d) => d.open_delay,
            Role::Sensor(_) => Duration::ZERO,
        }
    }

    pub(crate) fn badge_topic(&self) -> Option<Arc<str>> {
        match &self.role {
            Role::Door(d) => Some(d.badge_topic.clone()),
            Role::Sensor(_) => None,
        }
    }

    pub(crate) fn open_topic(&self) -> Option<Arc<str>> {
        match &self.role {
            Role::Door(d) => Some(d.open_topic.clone()),
            Role::Sensor(_) => None,
        }
    }

    /// Topic garbage goes to: the (first) reading topic, or a door's badge topic.
    pub(crate) fn garbage_topic(&self) -> Arc<str> {
        match &self.role {
            Role::Sensor(s) => s.channels.first().map(|c| c.topic.clone()).unwrap_or_else(|| Arc::from("")),
            Role::Door(d) => d.badge_topic.clone(),
        }
    }

    /// A corrupted payload, as a flaky radio or a firmware bug would send: the first half of
    /// the message the device would send with `ts` (a zero reading, or a badge read). A
    /// strict prefix of a postcard frame never decodes, and a strict prefix of a JSON object
    /// never parses, so it is invalid in both formats. Touches neither `seq` nor the signal.
    pub(crate) fn garbage_at(&mut self, ts: u64) -> Result<Vec<u8>, EncodeError> {
        let body = match &self.role {
            Role::Sensor(s) => Body::Reading(
                s.channels.iter().take(1).map(|c| Sample { channel: c.name.clone(), value: 0.0 }).collect(),
            ),
            Role::Door(_) => Body::Event { code: BADGE_CODE },
        };
        let msg = Message { device: self.id.clone(), seq: self.seq, timestamp_ms: ts, body };
        let mut bytes = self.payload(&msg)?;
        bytes.truncate(bytes.len() / 2);
        Ok(bytes)
    }

    /// Encodes `body` with the next `seq` and `ts`, then advances `seq`.
    fn encode_next(&mut self, ts: u64, body: Body) -> Result<Vec<u8>, EncodeError> {
        let msg = Message { device: self.id.clone(), seq: self.seq, timestamp_ms: ts, body };
        self.seq = self.seq.wrapping_add(1);
        self.payload(&msg)
    }

    fn payload(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        match self.format {
            PayloadFormat::Json => Ok(serde_json::to_vec(&msg.json())?),
            PayloadFormat::Postcard => Ok(edgewatch_wire::encode(msg, &mut self.frame)?.to_vec()),
        }
    }

    // The single-channel API of the first firmware-sim, kept for callers that drive a
    // device by hand.

    /// Takes the reading due at [`next_reading`](Self::next_reading) and returns its
    /// payload; `override_value` replaces the first channel's value (a fault). Advances the
    /// timer and `seq`. With several channels on their own topics, this is the first
    /// channel's payload only (the others are dropped, but take their `seq`).
    pub fn reading(&mut self, override_value: Option<f32>) -> Result<Vec<u8>, EncodeError> {
        let (at, mut values) = self.take_reading();
        if let (Some(v), Some(first)) = (override_value, values.first_mut()) {
            *first = v;
        }
        let mut out = Vec::with_capacity(1);
        self.encode_reading(self.ts(at), &values, &mut out)?;
        Ok(out.into_iter().next().map(|(_, p)| p).unwrap_or_default())
    }

    /// The reading due now is not sent (the device is silent): the timer and the signal move
    /// on, `seq` does not.
    pub fn skip_reading(&mut self) {
        self.take_reading();
    }

    /// Sends the heartbeat due at [`next_heartbeat`](Self::next_heartbeat). Advances the
    /// timer and `seq`. `None` if heartbeats are off.
    pub fn heartbeat(&mut self) -> Option<Result<Vec<u8>, EncodeError>> {
        let at = self.take_heartbeat()?;
        let ts = self.ts(at);
        Some(self.encode_heartbeat(at, ts))
    }

    /// The heartbeat due now is not sent (the device is silent).
    pub fn skip_heartbeat(&mut self) {
        self.take_heartbeat();
    }

    /// A corrupted payload for virtual time `at` (see the simulation's `malformed` fault):
    /// the first half of a zero reading's payload. Touches neither `seq` nor the signal.
    pub fn garbage(&mut self, at: Duration) -> Result<Vec<u8>, EncodeError> {
        let ts = self.ts(at);
        self.garbage_at(ts)
    }
}

#[cfg(test)]
mod tests;

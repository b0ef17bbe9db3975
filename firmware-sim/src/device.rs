//! One virtual device, written the way its firmware would be: fixed buffers, its own
//! sequence counter, readings and heartbeats on timers, and a signal model for the sensor.
//!
//! A device knows nothing of faults or of other devices: [`Fleet`](crate::Fleet) decides
//! when it runs and whether a fault bends what it sends. Nothing here does I/O.

use std::time::Duration;

use edgewatch_wire::{Body, Channel, DeviceId, MAX_FRAME_LEN, Message, Sample, Samples};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fleet::{ConfigError, FleetConfig, PayloadFormat};

/// How a device's sensor value evolves.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Always the same value.
    Constant(f32),
    /// `base + amplitude · sin(2π·t/period + phase) + noise`, where each device gets its own
    /// random phase and the noise is uniform in `[-noise, noise]`.
    Sine {
        /// Centre of the wave.
        base: f32,
        /// Peak deviation from `base`.
        amplitude: f32,
        /// One full wave; must be non-zero.
        period: Duration,
        /// Half-width of the uniform noise added to each reading (0 for none).
        noise: f32,
    },
    /// Starts at `start` and moves by a uniform step in `[-step, step]` each reading,
    /// clamped to `[min, max]`.
    RandomWalk {
        /// First value.
        start: f32,
        /// Largest move between two readings.
        step: f32,
        /// Lower clamp.
        min: f32,
        /// Upper clamp.
        max: f32,
    },
}

impl Default for Signal {
    /// Indoor temperature: 22 °C ± 3 over ten minutes, with a little noise.
    fn default() -> Self {
        Signal::Sine { base: 22.0, amplitude: 3.0, period: Duration::from_secs(600), noise: 0.2 }
    }
}

impl Signal {
    /// Checks the parameters: finite numbers, non-negative noise and step, `min <= start <= max`,
    /// a non-zero period.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |reason: &str| Err(ConfigError::Signal(reason.to_owned()));
        match *self {
            Signal::Constant(v) if !v.is_finite() => bad("constant value must be finite"),
            Signal::Constant(_) => Ok(()),
            Signal::Sine { base, amplitude, period, noise } => {
                if ![base, amplitude, noise].iter().all(|v| v.is_finite()) {
                    bad("sine parameters must be finite")
                } else if noise < 0.0 {
                    bad("sine noise must not be negative")
                } else if period.is_zero() {
                    bad("sine period must be longer than zero")
                } else {
                    Ok(())
                }
            }
            Signal::RandomWalk { start, step, min, max } => {
                if ![start, step, min, max].iter().all(|v| v.is_finite()) {
                    bad("random-walk parameters must be finite")
                } else if step < 0.0 {
                    bad("random-walk step must not be negative")
                } else if !(min <= start && start <= max) {
                    bad("random walk needs min <= start <= max")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The running state of a [`Signal`] on one device.
#[derive(Debug, Clone)]
enum SignalState {
    Constant(f32),
    Sine {
        base: f64,
        amplitude: f64,
        period_s: f64,
        noise: f32,
        /// Per-device phase, so a fleet does not move in lockstep.
        phase: f64,
    },
    RandomWalk {
        value: f32,
        step: f32,
        min: f32,
        max: f32,
    },
}

impl SignalState {
    fn new(signal: &Signal, rng: &mut ChaCha8Rng) -> Self {
        match *signal {
            Signal::Constant(v) => SignalState::Constant(v),
            Signal::Sine { base, amplitude, period, noise } => SignalState::Sine {
                base: f64::from(base),
                amplitude: f64::from(amplitude),
                period_s: period.as_secs_f64(),
                noise,
                phase: rng.random_range(0.0..std::f64::consts::TAU),
            },
            Signal::RandomWalk { start, step, min, max } => SignalState::RandomWalk { value: start, step, min, max },
        }
    }

    /// The value read at virtual time `at`. Generated values are rounded to 0.01, like a
    /// sensor's resolution, so JSON payloads stay short.
    fn sample(&mut self, at: Duration, rng: &mut ChaCha8Rng) -> f32 {
        match self {
            SignalState::Constant(v) => *v,
            SignalState::Sine { base, amplitude, period_s, noise, phase } => {
                let angle = std::f64::consts::TAU * at.as_secs_f64() / *period_s + *phase;
                let jitter = if *noise > 0.0 { rng.random_range(-*noise..=*noise) } else { 0.0 };
                round2((*base + *amplitude * angle.sin()) as f32 + jitter)
            }
            SignalState::RandomWalk { value, step, min, max } => {
                if *step > 0.0 {
                    *value = (*value + rng.random_range(-*step..=*step)).clamp(*min, *max);
                }
                round2(*value)
            }
        }
    }
}

fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// Why a device could not produce a payload. Devices are validated when built, so this
/// means a bug, not bad input; the fleet logs it and drops the one message.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The wire format refused the message.
    #[error("wire encoding failed")]
    Wire(#[from] edgewatch_wire::Error),
    /// JSON serialization failed.
    #[error("JSON encoding failed")]
    Json(#[from] serde_json::Error),
}

/// One virtual device.
#[derive(Debug)]
pub struct Device {
    /// Position in the fleet; faults and stats refer to devices by it.
    index: usize,
    /// `{id_prefix}{index:03}`, checked against the wire format's capacity once, at build time.
    id: DeviceId,
    /// The sensor's channel name; checked once, at build time.
    channel: Channel,
    /// `{topic_prefix}/{id}/{channel}`, built once so emitting costs no formatting.
    reading_topic: String,
    /// `{topic_prefix}/{id}/heartbeat`.
    heartbeat_topic: String,
    /// JSON or postcard: fixed per device, as a firmware build would be.
    format: PayloadFormat,
    /// The device's own message counter, as firmware keeps it: +1 for every message it
    /// sends, wrapping. Silenced periods do not consume numbers (the device sent nothing).
    seq: u32,
    /// Wall-clock epoch ms at virtual t=0, so `ts` = `start_ms` + virtual ms.
    start_ms: u64,
    /// Reading timer period; the next reading is always the last one plus this (no drift).
    reading_interval: Duration,
    /// Heartbeat timer period; `None` when heartbeats are off.
    heartbeat_interval: Option<Duration>,
    /// Virtual time of the next reading; first one staggered by index across the interval.
    next_reading: Duration,
    /// Virtual time of the next heartbeat, if heartbeats are on.
    next_heartbeat: Option<Duration>,
    /// The sensor model's running state (phase, walk position).
    signal: SignalState,
    /// This device's own random stream (fleet seed, stream = index), so a device's values
    /// do not depend on how many other devices there are or in which order they run.
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

/// `{prefix}/{device}/{leaf}`, or `{device}/{leaf}` when the prefix is empty.
pub(crate) fn topic(prefix: &str, device: &str, leaf: &str) -> String {
    if prefix.is_empty() { format!("{device}/{leaf}") } else { format!("{prefix}/{device}/{leaf}") }
}

impl Device {
    /// Device number `index` of a fleet built from `cfg`. The config's own checks
    /// ([`FleetConfig::validate`]) are assumed done; this checks what depends on the index
    /// (the id must fit [`edgewatch_wire::MAX_DEVICE_ID_LEN`]).
    pub fn new(index: usize, cfg: &FleetConfig) -> Result<Device, ConfigError> {
        let id_string = cfg.device_id(index);
        let id = edgewatch_wire::device_id(&id_string)
            .map_err(|source| ConfigError::DeviceId { id: id_string.clone(), source })?;
        let channel = edgewatch_wire::channel(&cfg.channel)
            .map_err(|source| ConfigError::Channel { channel: cfg.channel.clone(), source })?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(index as u64);
        let signal = SignalState::new(&cfg.signal, &mut rng);
        Ok(Device {
            index,
            reading_topic: topic(&cfg.topic_prefix, &id_string, &cfg.channel),
            heartbeat_topic: topic(&cfg.topic_prefix, &id_string, "heartbeat"),
            id,
            channel,
            format: cfg.format,
            seq: 0,
            start_ms: cfg.start_ms,
            reading_interval: cfg.reading_interval,
            heartbeat_interval: cfg.heartbeat_interval,
            next_reading: stagger(cfg.reading_interval, index, cfg.devices),
            next_heartbeat: cfg.heartbeat_interval.map(|every| stagger(every, index, cfg.devices)),
            signal,
            rng,
            frame: [0; MAX_FRAME_LEN],
        })
    }

    /// Position in the fleet.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The device id, e.g. `t-007`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sequence number the next message will carry.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// Topic of readings: `{topic_prefix}/{id}/{channel}`.
    pub fn reading_topic(&self) -> &str {
        &self.reading_topic
    }

    /// Topic of heartbeats: `{topic_prefix}/{id}/heartbeat`.
    pub fn heartbeat_topic(&self) -> &str {
        &self.heartbeat_topic
    }

    /// Virtual time of the next reading.
    pub fn next_reading(&self) -> Duration {
        self.next_reading
    }

    /// Virtual time of the next heartbeat, if heartbeats are on.
    pub fn next_heartbeat(&self) -> Option<Duration> {
        self.next_heartbeat
    }

    /// Takes the reading due at [`next_reading`](Self::next_reading) and returns its payload;
    /// `override_value` replaces the sensor value (a fault). Advances the timer and `seq`.
    pub fn reading(&mut self, override_value: Option<f32>) -> Result<Vec<u8>, EncodeError> {
        let at = self.next_reading;
        self.next_reading = at.saturating_add(self.reading_interval);
        let measured = self.signal.sample(at, &mut self.rng);
        let msg = self.message(
            at,
            Body::Reading(Samples::from_array([Sample {
                channel: self.channel.clone(),
                value: override_value.unwrap_or(measured),
            }])),
        );
        self.seq = self.seq.wrapping_add(1);
        self.payload(&msg)
    }

    /// The reading due now is not sent (the device is silent): the timer and the signal move
    /// on, `seq` does not.
    pub fn skip_reading(&mut self) {
        let at = self.next_reading;
        self.next_reading = at.saturating_add(self.reading_interval);
        self.signal.sample(at, &mut self.rng);
    }

    /// Sends the heartbeat due at [`next_heartbeat`](Self::next_heartbeat); `uptime_s` counts
    /// from virtual t=0. Advances the timer and `seq`. `None` if heartbeats are off.
    pub fn heartbeat(&mut self) -> Option<Result<Vec<u8>, EncodeError>> {
        let at = self.advance_heartbeat()?;
        let uptime_s = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
        let msg = self.message(at, Body::Heartbeat { uptime_s });
        self.seq = self.seq.wrapping_add(1);
        Some(self.payload(&msg))
    }

    /// The heartbeat due now is not sent (the device is silent).
    pub fn skip_heartbeat(&mut self) {
        self.advance_heartbeat();
    }

    /// A corrupted payload, as a flaky radio or a firmware bug would send: the first half of
    /// the reading frame the device would send at `at`. A strict prefix of a postcard frame
    /// never decodes, and a strict prefix of a JSON object never parses, so it is invalid in
    /// both formats. Touches neither `seq` nor the signal.
    pub fn garbage(&mut self, at: Duration) -> Result<Vec<u8>, EncodeError> {
        let msg = self
            .message(at, Body::Reading(Samples::from_array([Sample { channel: self.channel.clone(), value: 0.0 }])));
        let mut bytes = self.payload(&msg)?;
        bytes.truncate(bytes.len() / 2);
        Ok(bytes)
    }

    fn advance_heartbeat(&mut self) -> Option<Duration> {
        let at = self.next_heartbeat?;
        let every = self.heartbeat_interval?;
        self.next_heartbeat = Some(at.saturating_add(every));
        Some(at)
    }

    fn message(&self, at: Duration, body: Body) -> Message {
        let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        Message { device: self.id.clone(), seq: self.seq, timestamp_ms: self.start_ms.saturating_add(at_ms), body }
    }

    fn payload(&mut self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        match self.format {
            PayloadFormat::Json => Ok(serde_json::to_vec(&msg.json())?),
            PayloadFormat::Postcard => Ok(edgewatch_wire::encode(msg, &mut self.frame)?.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(signal: Signal) -> FleetConfig {
        FleetConfig { devices: 4, signal, ..FleetConfig::default() }
    }

    fn values(dev: &mut Device, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let at = dev.next_reading();
                dev.signal.sample(at, &mut dev.rng)
            })
            .collect()
    }

    #[test]
    fn staggers_first_messages_across_the_interval() {
        let c = cfg(Signal::Constant(1.0));
        let firsts: Vec<Duration> = (0..4).map(|i| Device::new(i, &c).expect("valid").next_reading()).collect();
        assert_eq!(firsts, [0, 250, 500, 750].map(Duration::from_millis).to_vec());
        let hb = Device::new(2, &c).expect("valid").next_heartbeat().expect("heartbeats on by default");
        assert_eq!(hb, Duration::from_millis(2500));
    }

    #[test]
    fn seq_counts_every_sent_message_but_not_skipped_ones() {
        let mut d = Device::new(0, &cfg(Signal::Constant(1.0))).expect("valid");
        assert_eq!(d.seq(), 0);
        d.reading(None).expect("encodes");
        d.heartbeat().expect("on").expect("encodes");
        assert_eq!(d.seq(), 2);
        d.skip_reading();
        d.skip_heartbeat();
        assert_eq!(d.seq(), 2);
        d.garbage(Duration::ZERO).expect("encodes");
        assert_eq!(d.seq(), 2);
        assert_eq!(d.next_reading(), Duration::from_secs(2));
        assert_eq!(d.next_heartbeat(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn seq_wraps() {
        let mut d = Device::new(0, &cfg(Signal::Constant(1.0))).expect("valid");
        d.seq = u32::MAX;
        d.reading(None).expect("encodes");
        assert_eq!(d.seq(), 0);
    }

    #[test]
    fn random_walk_stays_in_bounds_and_moves() {
        let mut d =
            Device::new(1, &cfg(Signal::RandomWalk { start: 20.0, step: 0.5, min: 19.0, max: 21.0 })).expect("valid");
        let v = values(&mut d, 500);
        assert!(v.iter().all(|x| (19.0..=21.0).contains(x)));
        assert!(v.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn sine_stays_within_amplitude_plus_noise() {
        let mut d = Device::new(3, &cfg(Signal::default())).expect("valid");
        let v = values(&mut d, 2000);
        assert!(v.iter().all(|x| (18.79..=25.21).contains(x)), "{v:?}");
        // Rounded to 0.01.
        assert!(v.iter().all(|x| ((x * 100.0).round() - x * 100.0).abs() < 1e-3));
    }

    #[test]
    fn devices_have_their_own_phase() {
        let c = cfg(Signal::Sine { base: 0.0, amplitude: 10.0, period: Duration::from_secs(60), noise: 0.0 });
        let a = Device::new(0, &c).expect("valid").signal.sample(Duration::ZERO, &mut ChaCha8Rng::seed_from_u64(0));
        let b = Device::new(1, &c).expect("valid").signal.sample(Duration::ZERO, &mut ChaCha8Rng::seed_from_u64(0));
        assert_ne!(a, b);
    }

    #[test]
    fn signal_validation() {
        assert!(Signal::default().validate().is_ok());
        assert!(Signal::Constant(f32::NAN).validate().is_err());
        let walk = |start, step, min, max| Signal::RandomWalk { start, step, min, max };
        assert!(walk(0.0, 1.0, -1.0, 1.0).validate().is_ok());
        assert!(walk(2.0, 1.0, -1.0, 1.0).validate().is_err());
        assert!(walk(0.0, -1.0, -1.0, 1.0).validate().is_err());
        let sine = |period, noise| Signal::Sine { base: 0.0, amplitude: 1.0, period, noise };
        assert!(sine(Duration::ZERO, 0.0).validate().is_err());
        assert!(sine(Duration::from_secs(1), -0.1).validate().is_err());
        assert!(sine(Duration::from_secs(1), 0.0).validate().is_ok());
    }

    #[test]
    fn garbage_is_invalid_in_both_formats() {
        for format in [PayloadFormat::Json, PayloadFormat::Postcard] {
            let c = FleetConfig { format, ..cfg(Signal::default()) };
            let mut d = Device::new(0, &c).expect("valid");
            let g = d.garbage(Duration::from_secs(5)).expect("encodes");
            assert!(!g.is_empty());
            assert!(edgewatch_wire::decode(&g).is_err());
            assert!(serde_json::from_slice::<serde_json::Value>(&g).is_err());
        }
    }
}

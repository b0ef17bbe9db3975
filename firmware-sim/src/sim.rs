//! The simulation: every device of a [`Scenario`] on one schedule, with its fault
//! timeline applied. Pure: virtual time in, [`Emission`]s out, no I/O, no clock.
//!
//! [`Simulation::poll`] takes the virtual time and returns what is due by then, so tests
//! run minutes of traffic in microseconds and the runner only has to sleep until
//! [`Simulation::next_due`]. The schedule is a binary heap keyed by `(time, device, job)`:
//! a poll costs O(log n) per message due, not O(devices), and the order is total, so the
//! same scenario, seed and start time give byte-identical output however time is sliced.
//!
//! # How faults act
//!
//! A message goes through three stages, each of which a fault may bend:
//!
//! 1. *Withhold*: `silence`, `flap`, `disconnect` (while away), `heartbeat_loss` and a
//!    `forced_door`'s quiet span stop the message; its timer and signal move on, `seq`
//!    does not.
//! 2. *Shape*: `stuck`, `overheat` and `spike` replace a reading's value (a relative
//!    `spike` adds to it); `drift`, `level_shift`, `pattern_break`, `noise_burst` and
//!    `battery_decline` add to it (see [`FaultKind`] for each); `clock_skew` shifts `ts`.
//! 3. *Deliver*: `duplicate` sends it twice; `late` holds it for `delay`; `reorder` holds it
//!    until the device's next message has gone.
//!
//! One-off jobs at a fault's `start` send what no timer would: `malformed` garbage, a
//! `burst`, a `forced_door` opening, a `disconnect`'s drop and reconnect.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::device::{BADGE_CODE, Device, EncodeError, OPEN_CODE};
use crate::scenario::{
    FaultKind, FaultSet, FaultType, FlapVia, MessageFilter, PayloadFormat, Scenario, ScenarioError, SpikeValue,
};

/// Payload an own-connection device publishes on its status topic when it connects.
pub const ONLINE_PAYLOAD: &str = "online";
/// Payload of an own-connection device's last will (QoS 1, not retained), which the broker
/// publishes on the device's status topic when its connection drops without a DISCONNECT.
pub const WILL_PAYLOAD: &str = "offline";

/// Wall-clock epoch ms used for `ts` at virtual t=0 unless the options say otherwise
/// (2024-11-21T06:20:00Z): fixed, so default runs are repeatable. The binary uses "now".
pub const DEFAULT_START_MS: u64 = 1_732_170_000_000;

/// How a simulation starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// Seed of every device's random stream: same scenario and seed, same bytes.
    pub seed: u64,
    /// Wall-clock epoch ms at virtual t=0: `ts` and record times are this plus virtual ms.
    pub start_ms: u64,
    /// Nothing at or after this virtual time is generated; `None` uses the scenario's
    /// `duration`, and without one the simulation runs for ever.
    pub duration: Option<Duration>,
}

impl Default for SimOptions {
    /// Seed 42, [`DEFAULT_START_MS`], the scenario's duration.
    fn default() -> Self {
        SimOptions { seed: 42, start_ms: DEFAULT_START_MS, duration: None }
    }
}

/// How a payload's bytes are to be read (and recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A JSON document (recorded as `"payload"`).
    Json,
    /// Plain UTF-8 text such as `online` (recorded as `"text"`).
    Text,
    /// Anything else: wire frames, garbage (recorded as `"hex"`).
    Binary,
}

/// What a published message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `online` on an own-connection device's status topic.
    Status,
    /// A sensor reading.
    Reading,
    /// A heartbeat.
    Heartbeat,
    /// A door's badge read.
    Badge,
    /// A door opening (a forced one carries [`FaultType::ForcedDoor`]).
    Open,
    /// Garbage from a `malformed` fault.
    Malformed,
}

/// One message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// MQTT topic.
    pub topic: Arc<str>,
    /// The payload's bytes.
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// How to read the bytes.
    pub encoding: Encoding,
    /// The faults that shaped it (empty for a normal message).
    pub faults: FaultSet,
}

/// What a device does at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An own-connection device connects (with its last will armed); its `online` follows.
    Connect,
    /// A message to publish.
    Publish(Publish),
    /// An own-connection device's TCP connection drops without a DISCONNECT: the broker
    /// publishes [`WILL_PAYLOAD`] on `will_topic`.
    Drop {
        /// The device's status topic.
        will_topic: Arc<str>,
    },
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission {
    /// Virtual time it happens (a late message: when it is delivered, not when it was made).
    pub at: Duration,
    /// `start_ms` + `at`, in ms: the record's `t`.
    pub time_ms: u64,
    /// Device number (across groups, in scenario order).
    pub device: usize,
    /// What happens.
    pub action: Action,
}

impl Emission {
    /// The message, if this is a publish.
    pub fn publish(&self) -> Option<&Publish> {
        match &self.action {
            Action::Publish(p) => Some(p),
            _ => None,
        }
    }
}

/// One injected fault instance, as the truth file lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// The device's id.
    pub device: String,
    /// Its group.
    pub group: String,
    /// Epoch ms the fault began (`start_ms` + its `start`).
    pub start_ms: u64,
    /// Epoch ms it ended: the end of its span (cut at the end of the run), or for one-off
    /// faults (spike, duplicate, reorder, malformed, burst) when it last acted.
    pub end_ms: u64,
    /// Messages it withheld or shaped (for `forced_door`: the opening withheld before it,
    /// badge reads withheld after it, and the forced opening).
    pub messages: u64,
    /// The channel a fault that changes readings' values acted on (overheat, spike, stuck,
    /// drift, level shift, pattern break, noise burst, battery decline).
    pub channel: Option<String>,
    /// A battery decline's starting point: the channel's noiseless level at the first
    /// reading of the span (`None` before that reading, and for other faults).
    pub from: Option<f32>,
    /// The fault and its parameters, as scheduled.
    pub kind: FaultKind,
}

impl Truth {
    /// The fault's name.
    pub fn fault(&self) -> FaultType {
        self.kind.fault_type()
    }
}

/// Counters of what a simulation has generated so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages emitted for publishing.
    pub published: u64,
    /// Of those, messages a fault shaped.
    pub shaped: u64,
    /// Messages a fault withheld (silence, flap, disconnect, heartbeat loss, forced door).
    pub withheld: u64,
    /// Connections opened (own-connection devices, first time and after a drop).
    pub connects: u64,
    /// Connections dropped abruptly.
    pub drops: u64,
    /// Messages dropped because encoding failed (a bug; logged).
    pub encode_errors: u64,
}

/// One entry of the schedule. Field order is the tie-break order: time, then device, then
/// job, which makes the emitted sequence total and repeatable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    at: Duration,
    device: usize,
    job: Job,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Connect,
    Reading,
    Heartbeat,
    Badge,
    Open,
    /// A fault's own job (by fault number): garbage, burst, forced opening, drop, reconnect.
    Fault(usize),
}

/// What a message is, for deciding which faults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Status,
    Reading,
    Heartbeat,
    Badge,
    Open,
    /// A forced opening: not held back by its own quiet span.
    ForcedOpen,
    Garbage,
}

impl Class {
    fn matches(self, filter: MessageFilter) -> bool {
        match filter {
            MessageFilter::Any => !matches!(self, Class::Status | Class::Garbage),
            MessageFilter::Reading => self == Class::Reading,
            MessageFilter::Heartbeat => self == Class::Heartbeat,
            MessageFilter::Badge => self == Class::Badge,
            MessageFilter::Open => matches!(self, Class::Open | Class::ForcedOpen),
        }
    }
}

/// A fault's running state.
#[derive(Debug, Clone)]
struct FaultState {
    device: usize,
    start: Duration,
    kind: FaultKind,
    /// Channel index it acts on (overheat, spike, stuck).
    channel: usize,
    /// Readings or messages still to act on (spike, duplicate, reorder).
    remaining: u32,
    /// Messages withheld or shaped so far.
    messages: u64,
    /// When it last acted (one-off faults).
    last_at: Option<Duration>,
    /// A stuck fault's frozen value; a battery decline's level at its first reading.
    frozen: Option<f32>,
    /// A noise burst's own random stream (seed, stream `u64::MAX - fault number`), so the
    /// device's stream, and its values after the burst, are those of a run without it.
    rng: Option<ChaCha8Rng>,
    /// Step of a multi-step job (disconnect: drop, reconnect; flap: drop, reconnect, ...).
    phase: u32,
}

impl FaultState {
    /// Whether `at` falls in `[start, start + d)`.
    fn covers(&self, at: Duration, d: Duration) -> bool {
        at >= self.start && at < self.start.saturating_add(d)
    }

    fn acted(&mut self, at: Duration) {
        self.messages += 1;
        self.last_at = Some(at);
    }
}

/// A message held for later delivery (a `late` fault).
#[derive(Debug)]
struct Held {
    at: Duration,
    /// Tie-break: held messages due at the same time go out in the order they were held.
    order: u64,
    device: usize,
    publish: Publish,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Per-device state the faults need.
#[derive(Debug, Default)]
struct Link {
    /// The fault that dropped the connection, while it is down.
    dropped_by: Option<usize>,
    /// A message a `reorder` fault holds until the device's next one.
    held: Option<(usize, Publish)>,
}

/// Every device of a scenario plus its schedule and faults. See the module docs.
#[derive(Debug)]
pub struct Simulation {
    /// Indexed by device number.
    devices: Vec<Device>,
    /// Group name of each group, for truth lines.
    group_names: Vec<String>,
    /// Min-heap of every timer's next job, plus faults' one-off jobs.
    schedule: BinaryHeap<Reverse<Slot>>,
    /// Messages a `late` fault holds, by delivery time.
    held: BinaryHeap<Reverse<Held>>,
    /// Counter for [`Held::order`].
    held_order: u64,
    /// Every fault instance, in timeline order.
    faults: Vec<FaultState>,
    /// Fault numbers by device, so a message checks only its own device's faults.
    faults_of: Vec<Vec<usize>>,
    /// Connection and reorder state by device (all default for devices no fault touches).
    links: Vec<Link>,
    /// Wall-clock epoch ms at virtual t=0.
    start_ms: u64,
    /// Nothing at or after this is generated.
    end: Option<Duration>,
    /// Virtual time generated so far (exclusive): truth is cut here.
    covered: Duration,
    /// Running totals.
    stats: SimStats,
    /// Reused for a reading's `(topic, payload)` pairs.
    scratch: Vec<(Arc<str>, Vec<u8>)>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn encoding(format: PayloadFormat) -> Encoding {
    match format {
        PayloadFormat::Json => Encoding::Json,
        PayloadFormat::Postcard => Encoding::Binary,
    }
}

const NANO: Duration = Duration::from_nanos(1);

/// To 0.01, as the signals round (a sensor's resolution), so shaped values stay short too.
fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

impl Simulation {
    /// Builds every device of `scenario` and schedules its first messages, staggered across
    /// each interval by position so large groups do not all fire at t=0.
    pub fn new(scenario: &Scenario, opts: SimOptions) -> Result<Simulation, ScenarioError> {
        let n = scenario.device_count();
        let mut devices = Vec::with_capacity(n);
        let mut schedule = BinaryHeap::with_capacity(n * 2 + scenario.faults().len());
        for (gi, group) in scenario.groups().iter().enumerate() {
            for position in 0..group.count {
                let index = devices.len();
                let id = scenario.device_ids().get(index).map(String::as_str).unwrap_or_default();
                let device = Device::build(index, gi, position, group, id, opts.seed, opts.start_ms).map_err(|e| {
                    ScenarioError::Invalid {
                        origin: format!("scenario {:?}", scenario.name()),
                        path: format!("groups[{gi}]"),
                        message: e.to_string(),
                    }
                })?;
                if group.own_connection {
                    schedule.push(Reverse(Slot { at: Duration::ZERO, device: index, job: Job::Connect }));
                }
                let first = if device.is_door() { Job::Badge } else { Job::Reading };
                schedule.push(Reverse(Slot { at: device.next_reading(), device: index, job: first }));
                if let Some(at) = device.next_heartbeat() {
                    schedule.push(Reverse(Slot { at, device: index, job: Job::Heartbeat }));
                }
                devices.push(device);
            }
        }
        let mut faults = Vec::with_capacity(scenario.faults().len());
        let mut faults_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (fi, spec) in scenario.faults().iter().enumerate() {
            let Some(device) = scenario.fault_target(fi) else { continue };
            let remaining = match spec.kind {
                FaultKind::Spike { count, .. }
                | FaultKind::Duplicate { count, .. }
                | FaultKind::Reorder { count, .. } => count,
                _ => 0,
            };
            if matches!(
                spec.kind,
                FaultKind::Malformed { .. }
                    | FaultKind::Burst { .. }
                    | FaultKind::ForcedDoor { .. }
                    | FaultKind::Disconnect { .. }
                    | FaultKind::Flap { via: FlapVia::Disconnect, .. }
            ) {
                schedule.push(Reverse(Slot { at: spec.start, device, job: Job::Fault(fi) }));
            }
            if let Some(list) = faults_of.get_mut(device) {
                list.push(fi);
            }
            faults.push(FaultState {
                device,
                start: spec.start,
                kind: spec.kind.clone(),
                channel: scenario.fault_channel(fi),
                remaining,
                messages: 0,
                last_at: None,
                frozen: None,
                rng: matches!(spec.kind, FaultKind::NoiseBurst { .. }).then(|| {
                    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                    rng.set_stream(u64::MAX - fi as u64);
                    rng
                }),
                phase: 0,
            });
        }
        let links = (0..n).map(|_| Link::default()).collect();
        Ok(Simulation {
            devices,
            group_names: scenario.groups().iter().map(|g| g.name.clone()).collect(),
            schedule,
            held: BinaryHeap::new(),
            held_order: 0,
            faults,
            faults_of,
            links,
            start_ms: opts.start_ms,
            end: opts.duration.or(scenario.duration()),
            covered: Duration::ZERO,
            stats: SimStats::default(),
            scratch: Vec::new(),
        })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Always false: a scenario has at least one device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Device number `index`, if there is one.
    pub fn device(&self, index: usize) -> Option<&Device> {
        self.devices.get(index)
    }

    /// The devices with their own MQTT connection.
    pub fn own_connection_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|d| d.status_topic().is_some())
    }

    /// Whether any device publishes over the shared connection.
    pub fn has_shared_devices(&self) -> bool {
        self.devices.iter().any(|d| d.status_topic().is_none())
    }

    /// Wall-clock epoch ms at virtual t=0.
    pub fn start_ms(&self) -> u64 {
        self.start_ms
    }

    /// Where the simulation ends, if it does.
    pub fn end(&self) -> Option<Duration> {
        self.end
    }

    /// Sets where the simulation ends; do it before the first poll (door cycles use it to
    /// leave no opening unanswered at the end).
    pub fn set_end(&mut self, end: Option<Duration>) {
        self.end = end;
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// Virtual time of the earliest emission not yet made, if any before the end.
    pub fn next_due(&self) -> Option<Duration> {
        let slot = self.schedule.peek().map(|Reverse(s)| s.at);
        let held = self.held.peek().map(|Reverse(h)| h.at);
        let next = match (slot, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        match self.end {
            Some(end) if next >= end => None,
            _ => Some(next),
        }
    }

    /// Appends to `out` everything due at or before `now` (and before the end), ordered by
    /// time, then device, then job.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<Emission>) {
        let now = match self.end {
            Some(end) => match end.checked_sub(NANO) {
                Some(last) => now.min(last),
                None => return,
            },
            None => now,
        };
        loop {
            let slot = self.schedule.peek().map(|Reverse(s)| s.at).filter(|&at| at <= now);
            let held = self.held.peek().map(|Reverse(h)| h.at).filter(|&at| at <= now);
            match (slot, held) {
                (None, None) => break,
                (Some(s), Some(h)) if h <= s => self.release_held(out),
                (None, Some(_)) => self.release_held(out),
                (Some(_), _) => {
                    if let Some(Reverse(slot)) = self.schedule.pop() {
                        self.run(slot, out);
                    }
                }
            }
        }
        self.covered = self.covered.max(now.saturating_add(NANO));
    }

    /// Everything due strictly before `end`, in order (a convenience over [`poll`](Self::poll)).
    pub fn poll_until(&mut self, end: Duration) -> Vec<Emission> {
        let mut out = Vec::new();
        if let Some(last) = end.checked_sub(NANO) {
            self.poll(last, &mut out);
        }
        out
    }

    /// Runs to the end and returns every emission; `None` if the simulation has no end.
    pub fn run_to_end(&mut self) -> Option<Vec<Emission>> {
        let end = self.end?;
        Some(self.poll_until(end))
    }

    /// The faults that have begun in the virtual time generated so far, with their ends
    /// cut there.
    pub fn truth(&self) -> Vec<Truth> {
        self.truth_at(self.covered)
    }

    /// The faults that have begun before virtual time `until` (and the end), with their
    /// ends cut there.
    pub fn truth_at(&self, until: Duration) -> Vec<Truth> {
        let until = self.end.map_or(until, |end| until.min(end));
        self.faults
            .iter()
            .filter(|f| f.start < until)
            .map(|f| {
                let span = f.kind.span();
                let end =
                    if span.is_zero() { f.last_at.unwrap_or(f.start) } else { f.start.saturating_add(span).min(until) };
                let device = self.devices.get(f.device);
                let channel = if f.kind.shapes_values() {
                    device.and_then(|d| d.channel_name(f.channel)).map(str::to_owned)
                } else {
                    None
                };
                let from = if matches!(f.kind, FaultKind::BatteryDecline { .. }) { f.frozen } else { None };
                Truth {
                    device: device.map(|d| d.id().to_owned()).unwrap_or_default(),
                    group: device.and_then(|d| self.group_names.get(d.group())).cloned().unwrap_or_default(),
                    start_ms: self.start_ms.saturating_add(ms(f.start)),
                    end_ms: self.start_ms.saturating_add(ms(end)),
                    messages: f.messages,
                    channel,
                    from,
                    kind: f.kind.clone(),
                }
            })
            .collect()
    }

    /// Delivers the next late message, unless its device's connection is down by then.
    fn release_held(&mut self, out: &mut Vec<Emission>) {
        let Some(Reverse(h)) = self.held.pop() else { return };
        match self.links.get(h.device).and_then(|l| l.dropped_by) {
            Some(fi) => self.withhold(fi, 1),
            None => self.emit(h.at, h.device, Action::Publish(h.publish), out),
        }
    }

    fn emit(&mut self, at: Duration, device: usize, action: Action, out: &mut Vec<Emission>) {
        match &action {
            Action::Publish(p) => {
                self.stats.published += 1;
                if !p.faults.is_empty() {
                    self.stats.shaped += 1;
                }
            }
            Action::Connect => self.stats.connects += 1,
            Action::Drop { .. } => self.stats.drops += 1,
        }
        out.push(Emission { at, time_ms: self.start_ms.saturating_add(ms(at)), device, action });
    }

    fn push(&mut self, at: Duration, device: usize, job: Job) {
        self.schedule.push(Reverse(Slot { at, device, job }));
    }

    fn encode_failed(&mut self, device: usize, error: &EncodeError) {
        self.stats.encode_errors += 1;
        let id = self.devices.get(device).map(Device::id).unwrap_or_default();
        tracing::error!(device = id, error = %error, "Could not encode a message; dropped it");
    }

    /// The fault that withholds a message of `class` from `device` at `at`, if any.
    fn withholder(&self, device: usize, at: Duration, class: Class) -> Option<usize> {
        if let Some(f) = self.links.get(device).and_then(|l| l.dropped_by) {
            return Some(f);
        }
        for &fi in self.faults_of.get(device)? {
            let Some(f) = self.faults.get(fi) else { continue };
            let hit = match f.kind {
                FaultKind::Silence { duration } => f.covers(at, duration),
                FaultKind::HeartbeatLoss { duration } => class == Class::Heartbeat && f.covers(at, duration),
                FaultKind::Flap { period, down, count, via: FlapVia::Silence } => {
                    at.checked_sub(f.start).is_some_and(|rel| {
                        let k = rel.as_nanos() / period.as_nanos().max(1);
                        let into = rel.as_nanos() % period.as_nanos().max(1);
                        k < u128::from(count) && into < down.as_nanos()
                    })
                }
                FaultKind::ForcedDoor { duration } => {
                    matches!(class, Class::Badge | Class::Open) && f.covers(at, duration)
                }
                _ => false,
            };
            if hit {
                return Some(fi);
            }
        }
        None
    }

    /// Counts `n` messages withheld by fault `fi`.
    fn withhold(&mut self, fi: usize, n: usize) {
        self.stats.withheld += n as u64;
        if let Some(f) = self.faults.get_mut(fi) {
            f.messages += n as u64;
        }
    }

    /// Applies the faults that change values (stuck, overheat, spike, drift, level shift,
    /// pattern break, noise burst, battery decline) to a reading's values.
    fn shape_values(&mut self, device: usize, at: Duration, values: &mut [f32], shaped: &mut FaultSet) {
        let Some(list) = self.faults_of.get(device) else { return };
        let dev = self.devices.get(device);
        for &fi in list {
            let Some(f) = self.faults.get_mut(fi) else { continue };
            let Some(value) = values.get_mut(f.channel) else { continue };
            let hours = at.saturating_sub(f.start).as_secs_f64() / 3600.0;
            match f.kind {
                FaultKind::Stuck { duration, .. } if f.covers(at, duration) => {
                    *value = *f.frozen.get_or_insert(*value);
                    shaped.insert(FaultType::Stuck);
                    f.acted(at);
                }
                FaultKind::Overheat { duration, value: hot, .. } if f.covers(at, duration) => {
                    *value = hot;
                    shaped.insert(FaultType::Overheat);
                    f.acted(at);
                }
                FaultKind::Spike { value: outlier, .. } if at >= f.start && f.remaining > 0 => {
                    *value = match outlier {
                        SpikeValue::Absolute(v) => v,
                        SpikeValue::Relative(by) => round2(*value + by),
                    };
                    f.remaining -= 1;
                    shaped.insert(FaultType::Spike);
                    f.acted(at);
                }
                FaultKind::Drift { duration, rate, .. } if f.covers(at, duration) => {
                    *value = round2((f64::from(*value) + f64::from(rate) * hours) as f32);
                    shaped.insert(FaultType::Drift);
                    f.acted(at);
                }
                FaultKind::LevelShift { duration, by, .. } if f.covers(at, duration) => {
                    *value = round2(*value + by);
                    shaped.insert(FaultType::LevelShift);
                    f.acted(at);
                }
                FaultKind::PatternBreak { duration, .. } if f.covers(at, duration) => {
                    // Validation made sure the channel's signal has a periodic part.
                    let delta = dev.and_then(|d| d.pattern_break(f.channel, at)).unwrap_or(0.0);
                    *value = round2(*value + delta);
                    shaped.insert(FaultType::PatternBreak);
                    f.acted(at);
                }
                FaultKind::NoiseBurst { duration, noise, .. } if f.covers(at, duration) => {
                    let extra = f.rng.as_mut().map_or(0.0, |rng| rng.random_range(-noise..=noise));
                    *value = round2(*value + extra);
                    shaped.insert(FaultType::NoiseBurst);
                    f.acted(at);
                }
                FaultKind::BatteryDecline { duration, rate, .. } if f.covers(at, duration.unwrap_or(Duration::MAX)) => {
                    if f.frozen.is_none() {
                        f.frozen = dev.and_then(|d| d.level(f.channel, at));
                    }
                    let declined = f64::from(*value) - f64::from(rate) * hours;
                    *value = round2(declined.max(0.0) as f32);
                    shaped.insert(FaultType::BatteryDecline);
                    f.acted(at);
                }
                _ => {}
            }
        }
    }

    /// `ts` of a message sent at `at`, shifted by any clock skew.
    fn ts(&mut self, device: usize, at: Duration, shaped: &mut FaultSet) -> u64 {
        let base = self.start_ms.saturating_add(ms(at));
        let Some(list) = self.faults_of.get(device) else { return base };
        let mut ts = base;
        for &fi in list {
            let Some(f) = self.faults.get_mut(fi) else { continue };
            if let FaultKind::ClockSkew { duration, offset_ms } = f.kind {
                if f.covers(at, duration) {
                    ts = ts.saturating_add_signed(offset_ms);
                    shaped.insert(FaultType::ClockSkew);
                    f.acted(at);
                }
            }
        }
        ts
    }

    /// The first one-off fault of `ty` on `device` that still has messages to act on.
    fn pick(&self, device: usize, at: Duration, class: Class, ty: FaultType) -> Option<usize> {
        self.faults_of.get(device)?.iter().copied().find(|&fi| {
            self.faults.get(fi).is_some_and(|f| {
                let filter = match f.kind {
                    FaultKind::Duplicate { messages, .. } | FaultKind::Reorder { messages, .. } => messages,
                    _ => return false,
                };
                f.kind.fault_type() == ty && at >= f.start && f.remaining > 0 && class.matches(filter)
            })
        })
    }

    /// Stage 3: duplicate, then route each copy.
    fn deliver(&mut self, device: usize, at: Duration, publish: Publish, class: Class, out: &mut Vec<Emission>) {
        if let Some(fi) = self.pick(device, at, class, FaultType::Duplicate) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.remaining -= 1;
                f.acted(at);
            }
            let mut copy = publish.clone();
            copy.faults.insert(FaultType::Duplicate);
            self.route(device, at, publish, class, out);
            self.route(device, at, copy, class, out);
        } else {
            self.route(device, at, publish, class, out);
        }
    }

    /// Stage 3: late, reorder, or out now.
    fn route(&mut self, device: usize, at: Duration, mut publish: Publish, class: Class, out: &mut Vec<Emission>) {
        let late = self.faults_of.get(device).and_then(|list| {
            list.iter().copied().find_map(|fi| match self.faults.get(fi)?.kind {
                FaultKind::Late { duration, delay } if self.faults.get(fi)?.covers(at, duration) => Some((fi, delay)),
                _ => None,
            })
        });
        if let Some((fi, delay)) = late {
            if let Some(f) = self.faults.get_mut(fi) {
                f.acted(at);
            }
            publish.faults.insert(FaultType::Late);
            self.held.push(Reverse(Held { at: at.saturating_add(delay), order: self.held_order, device, publish }));
            self.held_order += 1;
            return;
        }
        if let Some((fi, held)) = self.links.get_mut(device).and_then(|l| l.held.take()) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.last_at = Some(at);
            }
            self.emit(at, device, Action::Publish(publish), out);
            self.emit(at, device, Action::Publish(held), out);
            return;
        }
        if let Some(fi) = self.pick(device, at, class, FaultType::Reorder) {
            if let Some(f) = self.faults.get_mut(fi) {
                f.remaining -= 1;
                f.acted(at);
            }
            publish.faults.insert(FaultType::Reorder);
            if let Some(link) = self.links.get_mut(device) {
                link.held = Some((fi, publish));
            }
            return;
        }
        self.emit(at, device, Action::Publish(publish), out);
    }

    fn run(&mut self, slot: Slot, out: &mut Vec<Emission>) {
        let d = slot.device;
        if d >= self.devices.len() {
            return;
        }
        match slot.job {
            Job::Connect => self.connect(d, slot.at, out),
            Job::Reading => {
                let (at, values) = self.devices[d].take_reading();
                let next = self.devices[d].next_reading();
                self.push(next, d, Job::Reading);
                self.reading(d, at, values, FaultSet::EMPTY, out);
            }
            Job::Heartbeat => {
                let Some(at) = self.devices[d].take_heartbeat() else { return };
                if let Some(next) = self.devices[d].next_heartbeat() {
                    self.push(next, d, Job::Heartbeat);
                }
                if let Some(fi) = self.withholder(d, at, Class::Heartbeat) {
                    return self.withhold(fi, 1);
                }
                let mut shaped = FaultSet::EMPTY;
                let ts = self.ts(d, at, &mut shaped);
                let topic = self.devices[d].heartbeat_topic_arc();
                match self.devices[d].encode_heartbeat(at, ts) {
                    Ok(payload) => {
                        let encoding = encoding(self.format(d));
                        let p = Publish { topic, payload, kind: Kind::Heartbeat, encoding, faults: shaped };
                        self.deliver(d, at, p, Class::Heartbeat, out);
                    }
                    Err(e) => self.encode_failed(d, &e),
                }
            }
            Job::Badge => {
                let Some((at, next)) = self.devices[d].take_badge() else { return };
                self.push(next, d, Job::Badge);
                if let Some(fi) = self.withholder(d, at, Class::Badge) {
                    return self.withhold(fi, 1);
                }
                self.door_event(d, at, Class::Badge, FaultSet::EMPTY, out);
                // Every opening must be answered by a badge read within the next cycle, so
                // the badge read before a forced opening, and the last one of the run, are
                // not followed by an opening.
                let forced = self.faults_of[d].iter().copied().find(|&fi| {
                    self.faults.get(fi).is_some_and(|f| {
                        matches!(f.kind, FaultKind::ForcedDoor { .. }) && at < f.start && f.start <= next
                    })
                });
                if let Some(fi) = forced {
                    self.withhold(fi, 1);
                } else if self.end.is_none_or(|end| next < end) {
                    let open_at = at.saturating_add(self.devices[d].open_delay());
                    self.push(open_at, d, Job::Open);
                }
            }
            Job::Open => {
                if let Some(fi) = self.withholder(d, slot.at, Class::Open) {
                    return self.withhold(fi, 1);
                }
                self.door_event(d, slot.at, Class::Open, FaultSet::EMPTY, out);
            }
            Job::Fault(fi) => self.fault_job(fi, slot.at, out),
        }
    }

    fn format(&self, d: usize) -> PayloadFormat {
        self.devices.get(d).map_or(PayloadFormat::Json, Device::format)
    }

    /// Stages 1 to 3 for one reading of `values` taken at `at`.
    fn reading(
        &mut self,
        d: usize,
        at: Duration,
        mut values: crate::device::Values,
        mut shaped: FaultSet,
        out: &mut Vec<Emission>,
    ) {
        if let Some(fi) = self.withholder(d, at, Class::Reading) {
            let n = self.devices[d].messages_per_reading();
            return self.withhold(fi, n);
        }
        self.shape_values(d, at, &mut values, &mut shaped);
        let ts = self.ts(d, at, &mut shaped);
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Err(e) = self.devices[d].encode_reading(ts, &values, &mut scratch) {
            self.encode_failed(d, &e);
        }
        let encoding = encoding(self.format(d));
        for (topic, payload) in scratch.drain(..) {
            let p = Publish { topic, payload, kind: Kind::Reading, encoding, faults: shaped };
            self.deliver(d, at, p, Class::Reading, out);
        }
        self.scratch = scratch;
    }

    /// A badge read or door opening (normal or forced) at `at`.
    fn door_event(&mut self, d: usize, at: Duration, class: Class, mut shaped: FaultSet, out: &mut Vec<Emission>) {
        let (topic, code, kind) = match class {
            Class::Badge => (self.devices[d].badge_topic(), BADGE_CODE, Kind::Badge),
            _ => (self.devices[d].open_topic(), OPEN_CODE, Kind::Open),
        };
        let Some(topic) = topic else { return };
        let ts = self.ts(d, at, &mut shaped);
        match self.devices[d].encode_event(ts, code) {
            Ok(payload) => {
                let encoding = encoding(self.format(d));
                let p = Publish { topic, payload, kind, encoding, faults: shaped };
                self.deliver(d, at, p, class, out);
            }
            Err(e) => self.encode_failed(d, &e),
        }
    }

    /// An own-connection device connects and says `online`.
    fn connect(&mut self, d: usize, at: Duration, out: &mut Vec<Emission>) {
        let Some(topic) = self.devices[d].status_topic_arc() else { return };
        self.emit(at, d, Action::Connect, out);
        if let Some(fi) = self.withholder(d, at, Class::Status) {
            return self.withhold(fi, 1);
        }
        let p = Publish {
            topic,
            payload: ONLINE_PAYLOAD.as_bytes().to_vec(),
            kind: Kind::Status,
            encoding: Encoding::Text,
            faults: FaultSet::EMPTY,
        };
        self.emit(at, d, Action::Publish(p), out);
    }

    /// An own-connection device's connection drops, unless it is down already.
    fn drop_link(&mut self, fi: usize, d: usize, at: Duration, out: &mut Vec<Emission>) -> bool {
        let Some(will_topic) = self.devices[d].status_topic_arc() else { return false };
        if self.links[d].dropped_by.is_some() {
            return false;
        }
        self.links[d].dropped_by = Some(fi);
        if let Some(f) = self.faults.get_mut(fi) {
            f.last_at = Some(at);
        }
        self.emit(at, d, Action::Drop { will_topic }, out);
        true
    }

    /// The connection fault `fi` dropped comes back.
    fn restore_link(&mut self, fi: usize, d: usize, at: Duration, out: &mut Vec<Emission>) {
        if self.links[d].dropped_by == Some(fi) {
            self.links[d].dropped_by = None;
            self.connect(d, at, out);
        }
    }

    fn fault_job(&mut self, fi: usize, at: Duration, out: &mut Vec<Emission>) {
        let Some(f) = self.faults.get(fi) else { return };
        let (d, kind, start, phase) = (f.device, f.kind.clone(), f.start, f.phase);
        match kind {
            FaultKind::Malformed { count } => {
                if let Some(by) = self.withholder(d, at, Class::Garbage) {
                    return self.withhold(by, count as usize);
                }
                let topic = self.devices[d].garbage_topic();
                for _ in 0..count {
                    let mut shaped = FaultSet::EMPTY;
                    shaped.insert(FaultType::Malformed);
                    let ts = self.ts(d, at, &mut shaped);
                    match self.devices[d].garbage_at(ts) {
                        Ok(payload) => {
                            if let Some(f) = self.faults.get_mut(fi) {
                                f.acted(at);
                            }
                            let p = Publish {
                                topic: topic.clone(),
                                payload,
                                kind: Kind::Malformed,
                                encoding: Encoding::Binary,
                                faults: shaped,
                            };
                            self.emit(at, d, Action::Publish(p), out);
                        }
                        Err(e) => self.encode_failed(d, &e),
                    }
                }
            }
            FaultKind::Burst { count } => {
                for _ in 0..count {
                    let values = self.devices[d].sample_extra(at);
                    let before = self.stats.withheld;
                    let mut shaped = FaultSet::EMPTY;
                    shaped.insert(FaultType::Burst);
                    self.reading(d, at, values, shaped, out);
                    if self.stats.withheld == before {
                        if let Some(f) = self.faults.get_mut(fi) {
                            f.acted(at);
                        }
                    }
                }
            }
            FaultKind::ForcedDoor { .. } => {
                if let Some(by) = self.withholder(d, at, Class::ForcedOpen) {
                    return self.withhold(by, 1);
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.acted(at);
                }
                let mut shaped = FaultSet::EMPTY;
                shaped.insert(FaultType::ForcedDoor);
                self.door_event(d, at, Class::ForcedOpen, shaped, out);
            }
            FaultKind::Disconnect { duration } => {
                if phase == 0 {
                    if self.drop_link(fi, d, at, out) {
                        self.push(start.saturating_add(duration), d, Job::Fault(fi));
                    }
                } else {
                    self.restore_link(fi, d, at, out);
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.phase += 1;
                }
            }
            FaultKind::Flap { period, down, count, .. } => {
                // Even phases drop, odd phases reconnect: phase 2k at start + k·period,
                // phase 2k+1 at start + k·period + down.
                let k = phase / 2;
                let cycle_start = start.saturating_add(period.saturating_mul(k));
                if phase % 2 == 0 {
                    // Counted as "withheld" by the messages it stops; the drop itself is one action.
                    self.drop_link(fi, d, at, out);
                    self.push(cycle_start.saturating_add(down), d, Job::Fault(fi));
                } else {
                    self.restore_link(fi, d, at, out);
                    if k + 1 < count {
                        self.push(cycle_start.saturating_add(period), d, Job::Fault(fi));
                    }
                }
                if let Some(f) = self.faults.get_mut(fi) {
                    f.phase += 1;
                }
            }
            _ => {}
        }
    }
}

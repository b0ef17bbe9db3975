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

mod faults;
mod jobs;

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
}

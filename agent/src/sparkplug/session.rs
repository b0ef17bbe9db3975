//! What a host application keeps per edge node, as a plain state machine: the bdSeq of its
//! session, the last `seq`, the alias-to-name maps learned from births, the last known value
//! of every metric, and whether the node and each device are alive. [`Sessions::apply`] takes
//! one message and either changes the state and says what happened ([`Update`]), or refuses it
//! and changes nothing: a bad message never poisons an alias table.
//!
//! It is `Serialize`: the agent keeps it in its durable state, so a restart loses no alias.

use super::error::SparkplugError;
use super::metrics::{Limits, Metrics, apply_values, born, data, stale};
use super::proto::Payload;
use super::topic::{Kind, Topic};
use edgewatch_sparkplug::BD_SEQ;
use prost::Message;
use rhai::ImmutableString as Name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every edge node seen, by group and node id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sessions {
    pub(super) groups: BTreeMap<String, BTreeMap<String, Node>>,
    /// How many nodes `groups` holds (for the bound).
    pub(super) nodes: usize,
    /// Parts changed since the agent last wrote them to its store ([`Sessions::take_changed`]):
    /// each batch writes only those. Each is listed once: its node or device is marked
    /// [`Dirty`] until it is taken, so a part is named (its strings copied) once per batch.
    #[serde(skip)]
    pub(super) changed: Vec<Part>,
}

/// Whether a node's own part or a device changed since it was last taken for the store. Not
/// state: equal whatever it says, so that sessions compare by what they hold.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Dirty(pub(super) bool);

impl PartialEq for Dirty {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What the store keeps as one record: a node's own part of its session (`device: None`: all
/// but its devices), or one device's. A DDATA rewrites its node's small part (the `seq`) and its
/// device's, not every device of the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Part {
    pub group: String,
    pub node: String,
    pub device: Option<String>,
}

/// Equal when they hold the same sessions, whatever is still to be written.
impl PartialEq for Sessions {
    fn eq(&self, other: &Self) -> bool {
        self.groups == other.groups && self.nodes == other.nodes
    }
}

/// One edge node's session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Node {
    /// The bdSeq of its last NBIRTH: an NDEATH with another one is an old session's will.
    pub(super) bd_seq: Option<u64>,
    /// The `seq` of its last message, to check the next one's.
    pub(super) last_seq: Option<u8>,
    pub(super) alive: bool,
    /// When it died (ms), for the downtime at its rebirth.
    pub(super) died: Option<u64>,
    pub(super) own: Metrics,
    pub(super) devices: BTreeMap<String, Device>,
    #[serde(skip)]
    pub(super) dirty: Dirty,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Device {
    pub(super) alive: bool,
    pub(super) died: Option<u64>,
    pub(super) metrics: Metrics,
    #[serde(skip)]
    pub(super) dirty: Dirty,
}

/// What a message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Update(Update),
    /// Nothing to do, and nothing wrong: commands (NCMD, DCMD) and STATE are other
    /// applications' traffic; `stale_death` is an NDEATH of an earlier session (its bdSeq is
    /// not the current birth's), which the specification says to ignore.
    Ignored(&'static str),
}

/// A message applied: what rules see of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub kind: Kind,
    pub group: String,
    pub node: String,
    pub device: Option<String>,
    pub seq: Option<u8>,
    /// The message's timestamp (ms).
    pub timestamp: Option<u64>,
    /// The metrics this message carried, by name (historical ones aside). The last known
    /// value of every metric of the node or device, after it: [`Sessions::metrics`].
    pub changed: Vec<Name>,
    /// The `seq` was not the one after the previous message's.
    pub gap: Option<Gap>,
    /// The node or devices that died or came back with this message.
    pub liveness: Vec<Liveness>,
}

/// A `seq` out of order: lost, repeated or reordered messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub expected: u8,
    pub got: u8,
}

/// A node (`device: None`) or device that died or was born again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub device: Option<String>,
    pub alive: bool,
    /// For a rebirth after a death: how long it was dead (ms).
    pub downtime: Option<u64>,
}

impl Sessions {
    /// Applies one message received on `topic`, at `now` (ms since the epoch).
    pub fn apply(&mut self, topic: &str, payload: &[u8], now: u64, limits: &Limits) -> Result<Outcome, SparkplugError> {
        let outcome = self.apply_inner(topic, payload, now, limits)?;
        match &outcome {
            Outcome::Update(u) => self.mark(&u.group, &u.node, u.kind, u.device.as_deref()),
            // A DDEATH for a dead device still moves its node's `seq`.
            Outcome::Ignored("stale_death") => {
                if let Ok(Topic::Edge { group, node, kind, device }) = Topic::parse(topic) {
                    self.mark(group, node, kind, device);
                }
            }
            Outcome::Ignored(_) => {}
        }
        Ok(outcome)
    }

    fn apply_inner(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: u64,
        limits: &Limits,
    ) -> Result<Outcome, SparkplugError> {
        let (group, kind, node_id, device_id) = match Topic::parse(topic)? {
            Topic::State { .. } => return Ok(Outcome::Ignored("state")),
            Topic::Edge { kind: Kind::NCmd | Kind::DCmd, .. } => return Ok(Outcome::Ignored("command")),
            Topic::Edge { group, kind, node, device } => (group, kind, node, device),
        };
        for name in [Some(group), Some(node_id), device_id].into_iter().flatten() {
            if name.len() > limits.max_name_bytes {
                return Err(SparkplugError::Limit(format!("a topic level is over {} bytes", limits.max_name_bytes)));
            }
        }
        let payload = Payload::decode(payload).map_err(|e| SparkplugError::Protobuf(e.to_string()))?;
        if payload.metrics.len() > limits.max_metrics {
            return Err(SparkplugError::Limit(format!(
                "{} metrics in one message, over the limit of {}",
                payload.metrics.len(),
                limits.max_metrics
            )));
        }
        let seq = payload.seq.map(|s| (s & 0xff) as u8);
        let known_node = self.groups.get(group).is_some_and(|g| g.contains_key(node_id));
        if !known_node && self.nodes >= limits.max_nodes && kind == Kind::NBirth {
            return Err(SparkplugError::Limit(format!("{} edge nodes are known, the limit", limits.max_nodes)));
        }
        let unborn = |what: String| SparkplugError::Unborn { what, group: group.to_owned(), node: node_id.to_owned() };
        let mut update = Update {
            kind,
            group: group.to_owned(),
            node: node_id.to_owned(),
            device: device_id.map(str::to_owned),
            seq,
            timestamp: payload.timestamp,
            changed: Vec::new(),
            gap: None,
            liveness: Vec::new(),
        };
        // Deaths are dated by their arrival: an NDEATH is the will set at CONNECT, and its
        // timestamp is that moment, not the death's.
        let at = now;
        match kind {
            Kind::NBirth => {
                let birth = born(&payload, group, node_id, limits)?;
                if !known_node {
                    self.nodes += 1;
                }
                let node = self.groups.entry(group.to_owned()).or_default().entry(node_id.to_owned()).or_default();
                let downtime = node.died.filter(|_| !node.alive).map(|d| now.saturating_sub(d));
                if !node.alive {
                    update.liveness.push(Liveness { device: None, alive: true, downtime });
                }
                node.bd_seq = bd_seq(&payload);
                node.last_seq = seq;
                node.alive = true;
                node.died = None;
                update.changed = birth.names.clone();
                node.own = birth;
                // Its devices' aliases belong to the old session: each device sends a DBIRTH next.
                for device in node.devices.values_mut() {
                    device.metrics.aliases.clear();
                }
            }
            Kind::NDeath => {
                let Some(node) = self.node_mut(group, node_id) else { return Ok(Outcome::Ignored("stale_death")) };
                if !node.alive || (node.bd_seq.is_some() && bd_seq(&payload) != node.bd_seq) {
                    return Ok(Outcome::Ignored("stale_death"));
                }
                node.alive = false;
                node.died = Some(at);
                stale(&mut node.own);
                update.liveness.push(Liveness { device: None, alive: false, downtime: None });
                for (name, device) in &mut node.devices {
                    stale(&mut device.metrics);
                    if device.alive {
                        device.alive = false;
                        device.died = Some(at);
                        update.liveness.push(Liveness { device: Some(name.clone()), alive: false, downtime: None });
                    }
                }
            }
            Kind::NData => {
                let node = self.node_mut(group, node_id).filter(|n| n.alive);
                let node = node.ok_or_else(|| unborn(format!("edge node {group}/{node_id}")))?;
                let values = data(&payload, &node.own, group, node_id)?;
                update.gap = check_seq(&mut node.last_seq, seq);
                update.changed = apply_values(&mut node.own, values);
            }
            Kind::DBirth | Kind::DData | Kind::DDeath => {
                let device_id = device_id.unwrap_or_default();
                let node = self.node_mut(group, node_id).filter(|n| n.alive);
                let node = node.ok_or_else(|| unborn(format!("edge node {group}/{node_id}")))?;
                if !node.devices.contains_key(device_id) && node.devices.len() >= limits.max_devices {
                    return Err(SparkplugError::Limit(format!(
                        "edge node {group}/{node_id} has {} devices, the limit",
                        limits.max_devices
                    )));
                }
                match kind {
                    Kind::DBirth => {
                        let birth = born(&payload, group, node_id, limits)?;
                        update.gap = check_seq(&mut node.last_seq, seq);
                        let device = node.devices.entry(device_id.to_owned()).or_default();
                        if !device.alive {
                            let downtime = device.died.map(|d| now.saturating_sub(d));
                            update.liveness.push(Liveness {
                                device: Some(device_id.to_owned()),
                                alive: true,
                                downtime,
                            });
                        }
                        device.alive = true;
                        device.died = None;
                        update.changed = birth.names.clone();
                        device.metrics = birth;
                    }
                    Kind::DData => {
                        let what = || unborn(format!("device {group}/{node_id}/{device_id}"));
                        let device = node.devices.get_mut(device_id).filter(|d| d.alive).ok_or_else(what)?;
                        let values = data(&payload, &device.metrics, group, node_id)?;
                        update.gap = check_seq(&mut node.last_seq, seq);
                        update.changed = apply_values(&mut device.metrics, values);
                    }
                    _ => {
                        update.gap = check_seq(&mut node.last_seq, seq);
                        let Some(device) = node.devices.get_mut(device_id).filter(|d| d.alive) else {
                            return Ok(Outcome::Ignored("stale_death"));
                        };
                        device.alive = false;
                        device.died = Some(at);
                        stale(&mut device.metrics);
                        update.liveness.push(Liveness {
                            device: Some(device_id.to_owned()),
                            alive: false,
                            downtime: None,
                        });
                    }
                }
            }
            // Returned before the payload was read (above).
            Kind::NCmd | Kind::DCmd => return Ok(Outcome::Ignored("command")),
        }
        Ok(Outcome::Update(update))
    }

    /// The last known metrics of a node (`device: None`) or device, and whether it is alive.
    pub fn metrics(&self, group: &str, node: &str, device: Option<&str>) -> Option<(&Metrics, bool)> {
        let n = self.groups.get(group)?.get(node)?;
        match device {
            None => Some((&n.own, n.alive)),
            Some(d) => n.devices.get(d).map(|d| (&d.metrics, d.alive && n.alive)),
        }
    }

    pub(super) fn node_mut(&mut self, group: &str, node: &str) -> Option<&mut Node> {
        self.groups.get_mut(group)?.get_mut(node)
    }
}

/// The bdSeq metric of an NBIRTH or NDEATH.
fn bd_seq(payload: &Payload) -> Option<u64> {
    let m = payload.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ))?;
    match m.value.as_ref()? {
        super::proto::MetricValue::LongValue(v) => Some(*v),
        super::proto::MetricValue::IntValue(v) => Some(u64::from(*v)),
        _ => None,
    }
}

/// Records `seq` as the node's last; a gap when it is not the one after the previous.
fn check_seq(last: &mut Option<u8>, seq: Option<u8>) -> Option<Gap> {
    let seq = seq?;
    let expected = last.map(|l| l.wrapping_add(1));
    *last = Some(seq);
    expected.filter(|e| *e != seq).map(|expected| Gap { expected, got: seq })
}

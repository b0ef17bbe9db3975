//! Sparkplug B edge nodes, written as their firmware would behave: each node has devices with
//! metrics, announces them in births (NBIRTH, then one DBIRTH per device) with aliases, sends
//! alias-only DDATA from then on, numbers every message with `seq` (0–255, wrapping, reset by
//! its births) and every session with `bdSeq`, leaves an NDEATH with that bdSeq as its MQTT
//! will, and answers a rebirth request (`Node Control/Rebirth` in an NCMD) with its births.
//!
//! ```text
//!  EdgeNode::connect ─▶ will (NDEATH, this session's bdSeq)   pure: no I/O, time is an argument
//!  EdgeNode::births ─▶ NBIRTH + DBIRTH…   ◀── EdgeNode::command (NCMD rebirth)
//!  EdgeNode::data ─▶ DDATA (aliases only)      faults: Fault::{SeqGap, UnknownAlias,
//!                                                       BdSeqMismatch, Kill}
//!  live.rs: one MQTT connection per node (the will armed), its NCMD subscribed, faults at
//!  their times, and the ground truth of what a host application should report
//! ```
//!
//! The payloads are `edgewatch-sparkplug`'s messages, the ones the agent decodes.

pub mod live;

use edgewatch_sparkplug::{BD_SEQ, Metric, MetricValue, Payload, REBIRTH, datatype, topic};
use prost::Message as _;

/// One MQTT message of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// What goes wrong with a node, and what a host application should make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// One `seq` is skipped (a message lost on the way): the host counts a gap, and asks for
    /// a rebirth after its reorder timeout.
    SeqGap,
    /// One DDATA names an alias no birth declared: the host refuses it (`sparkplug_alias`)
    /// and asks for a rebirth, which the node answers.
    UnknownAlias,
    /// The node says goodbye with an NDEATH whose bdSeq is not its session's (as pysparkplug
    /// 0.6 does on a clean disconnect), then connects again with new births: the host must
    /// ignore that NDEATH, so the node is never reported dead.
    BdSeqMismatch,
    /// The node's connection drops without DISCONNECT: the broker publishes its will (the
    /// NDEATH of its session), so the node and its devices are dead until it is born again.
    Kill,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::SeqGap => "seq_gap",
            Fault::UnknownAlias => "unknown_alias",
            Fault::BdSeqMismatch => "bdseq_mismatch",
            Fault::Kill => "kill",
        }
    }

    /// A fault by [`Fault::name`].
    pub fn parse(name: &str) -> Option<Fault> {
        [Fault::SeqGap, Fault::UnknownAlias, Fault::BdSeqMismatch, Fault::Kill].into_iter().find(|f| f.name() == name)
    }
}

/// The alias of an [`Fault::UnknownAlias`] DDATA: far above any a node declares.
pub const UNKNOWN_ALIAS: u64 = 9_999;

/// One device of a node and its metrics: `(name, alias)`, all Double.
#[derive(Debug, Clone)]
struct DeviceModel {
    id: String,
    metrics: Vec<(String, u64)>,
}

/// One edge node.
#[derive(Debug, Clone)]
pub struct EdgeNode {
    pub group: String,
    pub node: String,
    devices: Vec<DeviceModel>,
    /// This session's number (Sparkplug's bdSeq, 0–255): +1 at every connection.
    bd_seq: Option<u8>,
    /// The next message's `seq`.
    seq: u8,
    /// The last value of every metric, by device and metric: a birth declares them.
    last: Vec<Vec<f64>>,
}

impl EdgeNode {
    /// Node `node` of `group` with `devices`, each with the metrics `metrics` (Doubles, aliases
    /// 1, 2, … per device).
    pub fn new(group: &str, node: &str, devices: &[String], metrics: &[&str]) -> EdgeNode {
        let devices: Vec<DeviceModel> = devices
            .iter()
            .map(|id| DeviceModel {
                id: id.clone(),
                metrics: metrics.iter().zip(1u64..).map(|(m, alias)| ((*m).to_owned(), alias)).collect(),
            })
            .collect();
        let last = devices.iter().map(|d| vec![0.0; d.metrics.len()]).collect();
        EdgeNode { group: group.to_owned(), node: node.to_owned(), devices, bd_seq: None, seq: 0, last }
    }

    /// The key a host names this node (or one of its devices) by: `group/node[/device]`.
    pub fn key(&self, device: Option<usize>) -> String {
        match device.and_then(|d| self.devices.get(d)) {
            Some(d) => format!("{}/{}/{}", self.group, self.node, d.id),
            None => format!("{}/{}", self.group, self.node),
        }
    }

    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// A new session: the will to arm on its CONNECT (an NDEATH with its bdSeq).
    pub fn connect(&mut self, now: u64) -> Message {
        let next = self.bd_seq.map_or(0, |b| b.wrapping_add(1));
        self.bd_seq = Some(next);
        self.death(now, next)
    }

    /// An NDEATH of bdSeq `bd_seq` (the session's, or not: [`Fault::BdSeqMismatch`]).
    fn death(&self, now: u64, bd_seq: u8) -> Message {
        let metric = Metric {
            name: Some(BD_SEQ.to_owned()),
            datatype: Some(datatype::INT64),
            value: Some(MetricValue::LongValue(u64::from(bd_seq))),
            ..Metric::default()
        };
        let payload = Payload { timestamp: Some(now), metrics: vec![metric], seq: None };
        Message { topic: topic(&self.group, "NDEATH", &self.node, None), payload: payload.encode_to_vec() }
    }

    /// The NDEATH a [`Fault::BdSeqMismatch`] sends: the next session's bdSeq, not this one's.
    pub fn mismatched_death(&self, now: u64) -> Message {
        self.death(now, self.bd_seq.unwrap_or(0).wrapping_add(1))
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = s.wrapping_add(1);
        u64::from(s)
    }

    /// NBIRTH (`seq` 0, bdSeq, the rebirth metric) and one DBIRTH per device, each metric by
    /// name, alias and datatype, with its last value.
    pub fn births(&mut self, now: u64) -> Vec<Message> {
        self.seq = 0;
        let double = |name: &str, alias: u64, v: f64| Metric {
            name: Some(name.to_owned()),
            alias: Some(alias),
            timestamp: Some(now),
            datatype: Some(datatype::DOUBLE),
            value: Some(MetricValue::DoubleValue(v)),
            ..Metric::default()
        };
        let node_metrics = vec![
            Metric {
                name: Some(REBIRTH.to_owned()),
                timestamp: Some(now),
                datatype: Some(datatype::BOOLEAN),
                value: Some(MetricValue::BooleanValue(false)),
                ..Metric::default()
            },
            Metric {
                name: Some(BD_SEQ.to_owned()),
                timestamp: Some(now),
                datatype: Some(datatype::INT64),
                value: Some(MetricValue::LongValue(u64::from(self.bd_seq.unwrap_or(0)))),
                ..Metric::default()
            },
        ];
        let nbirth = Payload { timestamp: Some(now), metrics: node_metrics, seq: Some(self.next_seq()) };
        let mut out =
            vec![Message { topic: topic(&self.group, "NBIRTH", &self.node, None), payload: nbirth.encode_to_vec() }];
        for (d, device) in self.devices.iter().enumerate() {
            let metrics = device.metrics.iter().zip(&self.last[d]).map(|((n, a), v)| double(n, *a, *v)).collect();
            let seq = u64::from(self.seq);
            self.seq = self.seq.wrapping_add(1);
            let payload = Payload { timestamp: Some(now), metrics, seq: Some(seq) };
            out.push(Message {
                topic: topic(&self.group, "DBIRTH", &self.node, Some(&device.id)),
                payload: payload.encode_to_vec(),
            });
        }
        out
    }

    /// A DDATA of device `device` with `values` (one per metric, by alias only, as Sparkplug
    /// recommends once born). `None` for a device the node does not have.
    pub fn data(&mut self, device: usize, values: &[f64], now: u64) -> Option<Message> {
        let model = self.devices.get(device)?;
        let metrics: Vec<Metric> = model
            .metrics
            .iter()
            .zip(values)
            .map(|((_, alias), v)| Metric {
                alias: Some(*alias),
                timestamp: Some(now),
                value: Some(MetricValue::DoubleValue(*v)),
                ..Metric::default()
            })
            .collect();
        let topic = topic(&self.group, "DDATA", &self.node, Some(&model.id));
        for (slot, v) in self.last[device].iter_mut().zip(values) {
            *slot = *v;
        }
        let payload = Payload { timestamp: Some(now), metrics, seq: Some(self.next_seq()) };
        Some(Message { topic, payload: payload.encode_to_vec() })
    }

    /// [`Fault::SeqGap`]: the next message's `seq` is one further on.
    pub fn skip_seq(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    /// [`Fault::UnknownAlias`]: a DDATA of device 0 by an alias no birth declared.
    pub fn unknown_alias(&mut self, now: u64) -> Option<Message> {
        let model = self.devices.first()?;
        let metric = Metric {
            alias: Some(UNKNOWN_ALIAS),
            timestamp: Some(now),
            value: Some(MetricValue::DoubleValue(0.0)),
            ..Metric::default()
        };
        let topic = topic(&self.group, "DDATA", &self.node, Some(&model.id));
        let payload = Payload { timestamp: Some(now), metrics: vec![metric], seq: Some(self.next_seq()) };
        Some(Message { topic, payload: payload.encode_to_vec() })
    }

    /// A command to this node (its NCMD): its births again if it asks for a rebirth, else
    /// nothing. A payload that does not decode is ignored, as firmware would.
    pub fn command(&mut self, payload: &[u8], now: u64) -> Vec<Message> {
        let Ok(p) = Payload::decode(payload) else { return Vec::new() };
        let rebirth = p
            .metrics
            .iter()
            .any(|m| m.name.as_deref() == Some(REBIRTH) && matches!(m.value, Some(MetricValue::BooleanValue(true))));
        if rebirth { self.births(now) } else { Vec::new() }
    }
}

#[cfg(test)]
mod tests;

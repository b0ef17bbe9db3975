//! A node's or device's metrics: declared by its birth, each in a slot found by alias or name,
//! holding its last known value; and how a birth and a DATA message are read against them.
//! Reading never changes anything: `Sessions::apply` applies what these return only once a
//! whole message has been read.

use super::error::{SparkplugError, alias_error};
use super::proto::{Metric, Payload};
use super::value::{self, Value};
use rhai::ImmutableString as Name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The bounds on what the sessions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Edge nodes known at once.
    pub max_nodes: usize,
    /// Devices per edge node.
    pub max_devices: usize,
    /// Metrics of one node or device (and in one message).
    pub max_metrics: usize,
    /// Longest metric, node or device name, in bytes.
    pub max_name_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_nodes: 1024, max_devices: 256, max_metrics: 1024, max_name_bytes: 256 }
    }
}

/// A node's or device's metrics, as its birth declared them: each has a slot, found by its
/// alias or its name, that holds its last known value. A DATA message by alias (the usual
/// kind) is resolved without comparing a single name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Names, by slot (shared strings: an update names its metrics without copying them).
    pub(super) names: Vec<Name>,
    /// Last known values, by slot.
    pub(super) values: Vec<Known>,
    pub(super) aliases: BTreeMap<u64, u32>,
    by_name: BTreeMap<Name, u32>,
}

impl Metrics {
    /// The last known value of `name`.
    pub fn get(&self, name: &str) -> Option<&Known> {
        self.by_name.get(name).and_then(|&slot| self.values.get(slot as usize))
    }

    /// Every metric with its last known value, in the order of the birth.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Known)> {
        self.names.iter().zip(&self.values)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A metric's last known value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Known {
    pub value: Value,
    /// Its Sparkplug datatype (`proto::datatype`), from its birth.
    pub datatype: u32,
    /// The metric's own timestamp (ms), else its message's.
    pub timestamp: Option<u64>,
    /// Its node or device died since: the value is not current.
    pub stale: bool,
    /// Its `Quality` property, as the edge node sent it with this value (192: good).
    pub quality: Option<i64>,
}

/// The metrics of a birth: every one named once, aliases unique, values readable.
pub(super) fn born(payload: &Payload, group: &str, node: &str, limits: &Limits) -> Result<Metrics, SparkplugError> {
    let mut out = Metrics::default();
    for m in &payload.metrics {
        let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) else {
            return Err(alias_error(group, node, "a birth certificate has a metric without a name".into()));
        };
        if name.len() > limits.max_name_bytes {
            return Err(SparkplugError::Limit(format!("metric name over {} bytes", limits.max_name_bytes)));
        }
        let datatype = m.datatype.unwrap_or(0);
        let value = read(m, datatype, name)?;
        let slot = out.names.len() as u32;
        let name = Name::from(name);
        if out.by_name.insert(name.clone(), slot).is_some() {
            return Err(alias_error(group, node, format!("metric `{name}` is declared twice in one birth")));
        }
        if let Some(alias) = m.alias {
            if let Some(first) = out.aliases.insert(alias, slot) {
                let first = &out.names[first as usize];
                let why = format!("alias {alias} is declared twice in one birth (`{first}` and `{name}`)");
                return Err(alias_error(group, node, why));
            }
        }
        let timestamp = m.timestamp.or(payload.timestamp);
        out.names.push(name);
        out.values.push(Known { value, datatype, timestamp, stale: false, quality: m.quality() });
    }
    Ok(out)
}

/// The values of a DATA message, by slot, resolved against `metrics` (its birth's).
pub(super) fn data(
    payload: &Payload,
    metrics: &Metrics,
    group: &str,
    node: &str,
) -> Result<Vec<(u32, Known)>, SparkplugError> {
    let mut out = Vec::with_capacity(payload.metrics.len());
    for m in payload.metrics.iter().filter(|m| m.is_historical != Some(true)) {
        let slot = match (&m.name, m.alias) {
            (Some(name), _) if !name.is_empty() => metrics.by_name.get(name.as_str()).copied().ok_or_else(|| {
                alias_error(group, node, format!("metric `{name}` was not declared in the birth certificate"))
            })?,
            (_, Some(alias)) => metrics.aliases.get(&alias).copied().ok_or_else(|| {
                alias_error(group, node, format!("alias {alias} was not declared in the birth certificate"))
            })?,
            _ => return Err(alias_error(group, node, "a metric has neither a name nor an alias".into())),
        };
        let born = &metrics.values[slot as usize];
        let datatype = m.datatype.unwrap_or(born.datatype);
        let value = read(m, datatype, &metrics.names[slot as usize])?;
        let timestamp = m.timestamp.or(payload.timestamp);
        out.push((slot, Known { value, datatype, timestamp, stale: false, quality: m.quality() }));
    }
    Ok(out)
}

fn read(m: &Metric, datatype: u32, name: &str) -> Result<Value, SparkplugError> {
    value::read(datatype, m.value.as_ref(), m.is_null == Some(true))
        .map_err(|error| SparkplugError::Type { metric: name.chars().take(100).collect(), error })
}

pub(super) fn apply_values(metrics: &mut Metrics, values: Vec<(u32, Known)>) -> Vec<Name> {
    let mut changed = Vec::with_capacity(values.len());
    for (slot, known) in values {
        metrics.values[slot as usize] = known;
        changed.push(metrics.names[slot as usize].clone());
    }
    changed
}

pub(super) fn stale(metrics: &mut Metrics) {
    for known in &mut metrics.values {
        known.stale = true;
    }
}

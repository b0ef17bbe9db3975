//! What a host application publishes: its STATE (online, and offline as its will), and the
//! rebirth request to an edge node (an NCMD with `Node Control/Rebirth` = true), and how often
//! that may be sent. The agent asks for a rebirth
//! when a node's data cannot be read without one (an unknown alias, data before any birth); a
//! node that keeps sending such data must not be flooded with requests, so each node gets at
//! most one per `interval`.

use super::proto::{Metric, MetricValue, Payload, datatype};
use super::topic::node_command;
use prost::Message;
use std::collections::BTreeMap;

pub use edgewatch_sparkplug::REBIRTH;

/// The payload of a rebirth request sent at `now` (ms). It carries the metric's datatype
/// (Boolean) and the payload's timestamp, and no `seq` (a command has none): some edge node
/// libraries drop a command without them (pysparkplug 0.6 stops reading commands altogether).
pub fn rebirth_payload(now: u64) -> Vec<u8> {
    let metric = Metric {
        name: Some(REBIRTH.to_owned()),
        timestamp: Some(now),
        datatype: Some(datatype::BOOLEAN),
        value: Some(MetricValue::BooleanValue(true)),
        ..Metric::default()
    };
    Payload { timestamp: Some(now), metrics: vec![metric], seq: None }.encode_to_vec()
}

/// The topic of host application `host`'s STATE (Sparkplug 3.0: `spBv1.0/STATE/<host id>`).
/// `None` when `host` cannot be a topic level (empty, or holding `/`, `+` or `#`).
pub fn state_topic(host: &str) -> Option<String> {
    let valid = !host.is_empty() && !host.contains(['/', '+', '#']);
    valid.then(|| format!("{}/STATE/{host}", super::topic::NAMESPACE))
}

/// A STATE payload (Sparkplug 3.0): `{"online":true,"timestamp":<ms>}`, published retained at
/// QoS 1 on connecting; the will is the same with `false` and the same timestamp, which is how
/// edge nodes tell an old will from a new birth.
pub fn state_payload(online: bool, timestamp: u64) -> Vec<u8> {
    serde_json::json!({ "online": online, "timestamp": timestamp }).to_string().into_bytes()
}

/// When each edge node was last asked to rebirth: at most one request per node per
/// `interval`, and at most `max_nodes` remembered (the oldest are forgotten first, which at
/// worst lets one more request through).
#[derive(Debug, Clone)]
pub struct Rebirths {
    interval: u64,
    max_nodes: usize,
    /// Last request per `<group>/<node>`, in ms.
    asked: BTreeMap<String, u64>,
}

impl Rebirths {
    /// `interval` in ms.
    pub fn new(interval: u64, max_nodes: usize) -> Self {
        Rebirths { interval, max_nodes: max_nodes.max(1), asked: BTreeMap::new() }
    }

    /// The topic and payload of a rebirth request for `group`/`node` at `now` (ms), or `None`
    /// when one was sent less than `interval` ago.
    pub fn ask(&mut self, group: &str, node: &str, now: u64) -> Option<(String, Vec<u8>)> {
        let key = format!("{group}/{node}");
        if self.asked.get(&key).is_some_and(|&at| now.saturating_sub(at) < self.interval) {
            return None;
        }
        if !self.asked.contains_key(&key) && self.asked.len() >= self.max_nodes {
            let oldest = self.asked.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.asked.remove(&oldest);
            }
        }
        self.asked.insert(key, now);
        Some((node_command(group, node), rebirth_payload(now)))
    }
}

/// Sparkplug 3.0's reorder timeout (§5.9): a node whose `seq` skipped is given `timeout` for a
/// birth to set things right; if none comes, it is due a rebirth request. The agent applies
/// messages in arrival order (MQTT keeps one publisher's order per connection), so a skip is
/// a lost message, never one still on its way; the wait lets a node that is already
/// restarting be born again unasked. Bounded: one entry per node, `max_nodes` at most (past
/// it a new skip is not timed, and the node's next unreadable message asks instead).
#[derive(Debug, Clone)]
pub struct Reorder {
    timeout: u64,
    max_nodes: usize,
    /// When each node with a skip is due (ms), by `(group, node)`.
    due: BTreeMap<(String, String), u64>,
}

impl Reorder {
    /// `timeout` in ms.
    pub fn new(timeout: u64, max_nodes: usize) -> Self {
        Reorder { timeout, max_nodes, due: BTreeMap::new() }
    }

    /// `group`/`node` skipped a `seq` at `now`: due at `now + timeout`, unless already waiting.
    pub fn skipped(&mut self, group: &str, node: &str, now: u64) {
        let key = (group.to_owned(), node.to_owned());
        if self.due.len() < self.max_nodes || self.due.contains_key(&key) {
            self.due.entry(key).or_insert(now.saturating_add(self.timeout));
        }
    }

    /// `group`/`node` was born again: nothing to ask.
    pub fn born(&mut self, group: &str, node: &str) {
        self.due.remove(&(group.to_owned(), node.to_owned()));
    }

    /// When the next node is due, if any.
    pub fn next(&self) -> Option<u64> {
        self.due.values().min().copied()
    }

    /// The nodes due by `now`, taken.
    pub fn take_due(&mut self, now: u64) -> Vec<(String, String)> {
        if self.next().is_none_or(|d| d > now) {
            return Vec::new();
        }
        let due: Vec<_> = self.due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for k in &due {
            self.due.remove(k);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_not_healed_by_a_birth_is_due_after_the_reorder_timeout() {
        let mut r = Reorder::new(5_000, 2);
        r.skipped("p", "gw1", 1_000);
        r.skipped("p", "gw1", 3_000);
        assert_eq!(r.next(), Some(6_000), "timed from the first skip");
        assert!(r.take_due(5_999).is_empty());
        assert_eq!(r.take_due(6_000), [("p".to_owned(), "gw1".to_owned())]);
        assert_eq!(r.next(), None, "taken");
        r.skipped("p", "gw2", 7_000);
        r.born("p", "gw2");
        assert!(r.take_due(100_000).is_empty(), "a birth healed it");
        for node in ["a", "b", "c"] {
            r.skipped("p", node, 0);
        }
        assert_eq!(r.take_due(5_000).len(), 2, "bounded");
    }

    #[test]
    fn a_rebirth_request_is_the_command_the_specification_names() {
        let payload = Payload::decode(rebirth_payload(1_796_512_550_000).as_slice()).expect("decodes");
        assert_eq!(payload.timestamp, Some(1_796_512_550_000));
        assert_eq!(payload.seq, None, "commands carry no seq");
        let [metric] = payload.metrics.as_slice() else { panic!("one metric: {payload:?}") };
        assert_eq!(metric.name.as_deref(), Some(REBIRTH));
        assert_eq!(metric.datatype, Some(datatype::BOOLEAN));
        assert_eq!(metric.value, Some(MetricValue::BooleanValue(true)));
        assert_eq!(metric.alias, None, "the rebirth metric has no alias");
    }

    /// The command pysparkplug's own host sends (fixture `ncmd_rebirth.bin`) and ours mean the
    /// same: the same metric, type and value.
    #[test]
    fn it_matches_what_an_independent_host_sends() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sparkplug/ncmd_rebirth.bin");
        let theirs = Payload::decode(std::fs::read(path).expect("the fixture").as_slice()).expect("decodes");
        let ours = Payload::decode(rebirth_payload(1).as_slice()).expect("decodes");
        let key =
            |p: &Payload| p.metrics.iter().map(|m| (m.name.clone(), m.datatype, m.value.clone())).collect::<Vec<_>>();
        assert_eq!(key(&ours), key(&theirs));
    }

    #[test]
    fn the_host_state_is_the_json_of_sparkplug_3() {
        assert_eq!(state_topic("scada-1").as_deref(), Some("spBv1.0/STATE/scada-1"));
        for bad in ["", "a/b", "a+", "#"] {
            assert_eq!(state_topic(bad), None, "{bad}");
        }
        let online: serde_json::Value = serde_json::from_slice(&state_payload(true, 1_796_512_550_000)).expect("JSON");
        assert_eq!(online, serde_json::json!({"online": true, "timestamp": 1_796_512_550_000u64}));
        let will: serde_json::Value = serde_json::from_slice(&state_payload(false, 1_796_512_550_000)).expect("JSON");
        assert_eq!(will["online"], false);
    }

    #[test]
    fn each_node_is_asked_at_most_once_per_interval() {
        let mut r = Rebirths::new(10_000, 2);
        let (topic, _) = r.ask("plant1", "gw1", 0).expect("the first request goes");
        assert_eq!(topic, "spBv1.0/plant1/NCMD/gw1");
        assert!(r.ask("plant1", "gw1", 9_999).is_none(), "not again within the interval");
        assert!(r.ask("plant1", "gw2", 5_000).is_some(), "another node is asked on its own");
        assert!(r.ask("plant1", "gw1", 10_000).is_some(), "again once the interval is over");
        // A third node: the oldest entry (gw2 at 5 000) is forgotten, the bound holds.
        assert!(r.ask("plant2", "gw1", 11_000).is_some());
        assert_eq!(r.asked.len(), 2);
        assert!(r.ask("plant1", "gw2", 12_000).is_some(), "forgotten, so asked again");
    }
}

//! Sparkplug B edge nodes against a broker, in real time: each node on its own connection
//! with its NDEATH armed as the will, subscribed to its NCMD (a rebirth request is answered
//! with its births), its devices' DDATA every `interval`, and its faults at their times. What
//! a host application should report of each fault is the ground truth ([`Truth`]).

use std::time::{Duration, SystemTime};

use rumqttc::{LastWill, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::{EdgeNode, Fault, Message};
use crate::link::{Link, mqtt_options};
use crate::runner::SimError;

/// How long a node waits for its connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A fleet of edge nodes and what goes wrong with them.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The Sparkplug group of every node.
    pub group: String,
    /// Edge nodes `gw-000`, `gw-001`, …
    pub nodes: usize,
    /// Devices per node, `dev-00`, `dev-01`, …, each with every metric of `metrics`.
    pub devices: usize,
    pub metrics: Vec<String>,
    /// Time between two DDATA of a device.
    pub interval: Duration,
    /// How long a node that was killed (or said a mismatched goodbye) stays away before it
    /// connects again with a new session.
    pub down: Duration,
    pub faults: Vec<Injected>,
}

/// A fault of one node at a time after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    pub at: Duration,
    pub node: usize,
    pub fault: Fault,
}

impl Injected {
    /// `kind:node:at`, as the command line takes it: `kill:2:30s`.
    pub fn parse(text: &str) -> Result<Injected, String> {
        let mut parts = text.splitn(3, ':');
        let (Some(kind), Some(node), Some(at)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("`{text}`: expected kind:node:at, such as kill:2:30s"));
        };
        let fault = Fault::parse(kind)
            .ok_or_else(|| format!("`{kind}`: not a fault (seq_gap, unknown_alias, bdseq_mismatch, kill)"))?;
        let node = node.parse().map_err(|_| format!("`{node}`: not a node number"))?;
        let at = humantime::parse_duration(at).map_err(|e| format!("`{at}`: {e}"))?;
        Ok(Injected { at, node, fault })
    }
}

/// What a host application should make of one injected fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Truth {
    /// When it was injected, ms since the Unix epoch.
    pub t: u64,
    /// The node's key, as a host names it (`group/node`).
    pub node: String,
    pub fault: Fault,
    /// `gap` (a seq gap counted), `refused` (a DDATA refused, a rebirth asked for and
    /// answered), `ignored` (an NDEATH that is not the session's), `death` (the node and its
    /// devices dead until their births).
    pub expect: &'static str,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub published: u64,
    /// Rebirth requests the nodes answered.
    pub rebirths: u64,
    pub truth: Vec<Truth>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Runs `fleet` against `host:port` for `duration` (or until `shutdown`); every node ends with
/// a clean NDEATH and DISCONNECT.
pub async fn run(
    fleet: &Fleet,
    (host, port): (&str, u16),
    duration: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Report, SimError> {
    let end = Instant::now() + duration;
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    for index in 0..fleet.nodes {
        let devices: Vec<String> = (0..fleet.devices).map(|d| format!("dev-{d:02}")).collect();
        let metrics: Vec<&str> = fleet.metrics.iter().map(String::as_str).collect();
        let node = EdgeNode::new(&fleet.group, &format!("gw-{index:03}"), &devices, &metrics);
        let mut faults: Vec<Injected> = fleet.faults.iter().filter(|f| f.node == index).copied().collect();
        faults.sort_by_key(|f| f.at);
        let ctx = NodeRun {
            host: host.to_owned(),
            port,
            interval: fleet.interval,
            down: fleet.down,
            end,
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(ctx.run(node, faults)));
    }
    tokio::select! {
        () = shutdown => {}
        () = sleep_until(end) => {}
    }
    let _ = stop_tx.send(true);
    let mut report = Report::default();
    for task in tasks {
        match task.await {
            Ok(Ok(r)) => {
                report.published += r.published;
                report.rebirths += r.rebirths;
                report.truth.extend(r.truth);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SimError::EventLoopStopped),
        }
    }
    report.truth.sort_by(|a, b| (a.t, &a.node).cmp(&(b.t, &b.node)));
    Ok(report)
}

/// One node's run.
#[derive(Debug)]
struct NodeRun {
    host: String,
    port: u16,
    interval: Duration,
    down: Duration,
    end: Instant,
    stop: watch::Receiver<bool>,
}

impl NodeRun {
    async fn run(mut self, mut node: EdgeNode, mut faults: Vec<Injected>) -> Result<Report, SimError> {
        let start = Instant::now();
        let mut report = Report::default();
        let key = node.key(None);
        let client_id = format!("firmware-sim-spb-{}-{}", node.group, node.node);
        let ncmd = edgewatch_sparkplug::topic(&node.group, "NCMD", &node.node, None);
        'session: loop {
            let will = node.connect(now_ms());
            let mut options = mqtt_options(&self.host, self.port, &client_id, None);
            options.set_last_will(LastWill::new(will.topic, will.payload, QoS::AtLeastOnce, false));
            let (tx, mut commands) = mpsc::channel(8);
            let mut link = Link::open_with(options, 256, Some((ncmd.clone(), tx)));
            let connected = tokio::time::timeout(CONNECT_TIMEOUT, link.wait_connected()).await;
            if !matches!(connected, Ok(true)) {
                return Err(SimError::ConnectTimeout {
                    host: self.host.clone(),
                    port: self.port,
                    timeout: CONNECT_TIMEOUT,
                });
            }
            report.published += publish(&link, node.births(now_ms())).await?;
            let mut next_data = Instant::now() + self.interval;
            let mut tick: u64 = 0;
            loop {
                let next_fault = faults.first().map(|f| start + f.at);
                let wake =
                    [Some(next_data), next_fault, Some(self.end)].into_iter().flatten().min().unwrap_or(self.end);
                tokio::select! {
                    () = sleep_until(wake) => {}
                    Some((_, payload)) = commands.recv() => {
                        let births = node.command(&payload, now_ms());
                        if !births.is_empty() {
                            report.rebirths += 1;
                            report.published += publish(&link, births).await?;
                        }
                        continue;
                    }
                    _ = self.stop.changed() => {
                        return self.goodbye(node, link, report).await;
                    }
                }
                let now = Instant::now();
                if now >= self.end {
                    return self.goodbye(node, link, report).await;
                }
                if next_fault.is_some_and(|at| at <= now) {
                    let f = faults.remove(0);
                    let t = now_ms();
                    let expect = match f.fault {
                        Fault::SeqGap => {
                            node.skip_seq();
                            "gap"
                        }
                        Fault::UnknownAlias => {
                            report.published += publish(&link, node.unknown_alias(t).into_iter().collect()).await?;
                            "refused"
                        }
                        Fault::BdSeqMismatch => "ignored",
                        Fault::Kill => "death",
                    };
                    report.truth.push(Truth { t, node: key.clone(), fault: f.fault, expect });
                    match f.fault {
                        Fault::BdSeqMismatch => {
                            report.published += publish(&link, vec![node.mismatched_death(t)]).await?;
                            link.close(Instant::now() + Duration::from_secs(2)).await;
                        }
                        Fault::Kill => link.abort(),
                        _ => continue,
                    }
                    tokio::time::sleep(self.down).await;
                    if *self.stop.borrow() || Instant::now() >= self.end {
                        return Ok(report);
                    }
                    continue 'session;
                }
                if now >= next_data {
                    tick += 1;
                    let t = now_ms();
                    let mut out = Vec::with_capacity(node.devices());
                    for d in 0..node.devices() {
                        let values: Vec<f64> = (0..node.devices[d].metrics.len())
                            .map(|m| 50.0 + 10.0 * (tick as f64 / 10.0 + d as f64 + m as f64).sin())
                            .collect();
                        out.extend(node.data(d, &values, t));
                    }
                    report.published += publish(&link, out).await?;
                    next_data += self.interval;
                }
            }
        }
    }

    /// A clean end: the session's NDEATH, then DISCONNECT.
    async fn goodbye(&self, node: EdgeNode, link: Link, mut report: Report) -> Result<Report, SimError> {
        let bd = node.bd_seq.unwrap_or(0);
        report.published += publish(&link, vec![node.death(now_ms(), bd)]).await?;
        link.close(Instant::now() + Duration::from_secs(2)).await;
        Ok(report)
    }
}

/// Publishes `messages` at QoS 0 (Sparkplug's for births and data); how many.
async fn publish(link: &Link, messages: Vec<Message>) -> Result<u64, SimError> {
    let n = messages.len() as u64;
    for m in messages {
        link.client().publish(m.topic, QoS::AtMostOnce, false, m.payload).await?;
    }
    Ok(n)
}

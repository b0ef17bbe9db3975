//! The offered load: a firmware-sim fleet (JSON readings and heartbeats) replayed in real
//! time at a chosen rate, every message stamped with its number and its send time.
//!
//! firmware-sim's [`Simulation`] decides what each device sends and when (staggered first
//! messages, its own sequence numbers, `heartbeat_loss` faults for the silenced devices);
//! this module maps its virtual time onto the wall clock at `speed = rate / natural rate`
//! and publishes each message when it is due, at QoS 1, over one connection. Before a
//! message goes out, `"n":<number>,"sent":<µs>,` is put at the front of its JSON object:
//! every contender carries those two fields into what it emits, which is how the consumer
//! knows what arrived and how long it took.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use firmware_sim::sparkplug::EdgeNode;
use firmware_sim::{Action, Kind, Scenario, SimOptions, Simulation};
use hdrhistogram::Histogram;

use crate::mqtt;

/// Id template of the fleet: `t-00000` ...
pub fn device_id(index: usize) -> String {
    format!("t-{index:05}")
}

/// The device number in an id made by [`device_id`].
pub fn device_index(id: &str) -> Option<usize> {
    id.strip_prefix("t-")?.parse().ok()
}

/// A fleet and what happens to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Sensors in the fleet.
    pub devices: usize,
    /// Virtual time between a device's readings.
    pub reading_every: Duration,
    /// Virtual time between a device's heartbeats.
    pub heartbeat_every: Duration,
    /// Devices that stop sending heartbeats (readings go on), and when (virtual time).
    pub silenced: Vec<(usize, Duration)>,
    /// Readings go out as Sparkplug B DDATA (alias-only `temperature`, `n` and `sent`) of
    /// edge nodes of [`SPARKPLUG_NODE_DEVICES`] devices each, born before the step;
    /// heartbeats are not sent.
    pub sparkplug: bool,
}

/// Devices per Sparkplug edge node of the benchmark (`gw-000` has `t-00000` to `t-00099`).
pub const SPARKPLUG_NODE_DEVICES: usize = 100;

impl Workload {
    /// Readings every second and heartbeats every five: one message in six is a heartbeat.
    pub fn readings(devices: usize) -> Workload {
        Workload {
            devices,
            reading_every: Duration::from_secs(1),
            heartbeat_every: Duration::from_secs(5),
            silenced: Vec::new(),
            sparkplug: false,
        }
    }

    /// [`Workload::readings`] as Sparkplug B: one DDATA a second per device, heartbeats a day
    /// apart (so the rate is the readings').
    pub fn sparkplug(devices: usize) -> Workload {
        Workload { heartbeat_every: Duration::from_secs(86_400), sparkplug: true, ..Workload::readings(devices) }
    }

    /// The Sparkplug edge nodes of the fleet, each after its births (their seq numbers used),
    /// and the births.
    pub fn sparkplug_nodes(&self, now_ms: u64) -> (Vec<EdgeNode>, Vec<firmware_sim::sparkplug::Message>) {
        let mut nodes = Vec::new();
        let mut births = Vec::new();
        for (n, first) in (0..self.devices).step_by(SPARKPLUG_NODE_DEVICES).enumerate() {
            let ids: Vec<String> = (first..(first + SPARKPLUG_NODE_DEVICES).min(self.devices)).map(device_id).collect();
            let mut node = EdgeNode::new("bench", &format!("gw-{n:03}"), &ids, &["temperature", "n", "sent"]);
            node.connect(now_ms);
            births.extend(node.births(now_ms));
            nodes.push(node);
        }
        (nodes, births)
    }

    /// Messages per virtual second.
    pub fn natural_rate(&self) -> f64 {
        self.devices as f64 * (1.0 / self.reading_every.as_secs_f64() + 1.0 / self.heartbeat_every.as_secs_f64())
    }

    /// The firmware-sim scenario. Temperatures are a sine around 30 °C (27 to 33 with noise),
    /// so every reading is above the benchmark rules' 20 °C threshold.
    pub fn scenario_toml(&self) -> String {
        let mut s = format!(
            "name = \"bench\"\n\n[[groups]]\nname = \"t\"\ncount = {}\nid = \"t-{{index:05}}\"\nformat = \"json\"\n\
             reading_interval = \"{}ms\"\nheartbeat_interval = \"{}ms\"\n\n[[groups.channels]]\nname = \"temperature\"\n\
             signal = {{ model = \"sine\", base = 30.0, amplitude = 3.0, period = \"10m\", noise = 0.2 }}\n",
            self.devices,
            self.reading_every.as_millis(),
            self.heartbeat_every.as_millis()
        );
        for (index, start) in &self.silenced {
            s.push_str(&format!(
                "\n[[faults]]\nfault = \"heartbeat_loss\"\ndevice = \"{}\"\nstart = \"{}ms\"\nduration = \"24h\"\n",
                device_id(*index),
                start.as_millis()
            ));
        }
        s
    }

    /// The simulation, for `duration` of virtual time.
    pub fn simulation(&self, duration: Duration) -> anyhow::Result<Simulation> {
        let scenario = Scenario::from_toml(&self.scenario_toml()).context("benchmark scenario")?;
        let opts = SimOptions { seed: 9, duration: Some(duration), ..SimOptions::default() };
        Simulation::new(&scenario, opts).context("benchmark simulation")
    }
}

/// Writes `{"n":<n>,"sent":<sent>,` into `prefix` (cleared first), ready to replace the
/// opening brace of a JSON object.
pub fn stamp_prefix(prefix: &mut Vec<u8>, n: u64, sent_us: u64) {
    prefix.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(prefix, "{{\"n\":{n},\"sent\":{sent_us},");
}

/// The unsigned integer after `"key":` in a JSON text, found by a byte search (the
/// consumer reads many thousands of these a second and needs nothing else).
pub fn find_u64(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    let digits = text.get(at..)?;
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The number after `"key":` in a JSON text (the reading's temperature).
fn find_f64(text: &[u8], key: &[u8]) -> Option<f64> {
    let at = find(text, key)? + key.len();
    let rest = text.get(at..)?;
    let end = rest.iter().position(|b| !(b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+')))?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Announces the Sparkplug edge nodes of `workload` (NBIRTH and DBIRTH each, QoS 1), then
/// waits `settle` for the contender to read them: births come before the measured step.
pub fn sparkplug_births(addr: SocketAddr, workload: &Workload, settle: Duration) -> anyhow::Result<()> {
    let (_, births) = workload.sparkplug_nodes(0);
    let mut s = mqtt::open(addr, "bench-births", &[]).context("births connect")?;
    let reader = s.try_clone()?;
    let acked = Arc::new(AtomicU64::new(0));
    let acks = {
        let acked = acked.clone();
        std::thread::spawn(move || count_acks(reader, &acked))
    };
    let mut out = Vec::with_capacity(1 << 20);
    for (i, m) in births.iter().enumerate() {
        mqtt::put_publish(&mut out, &m.topic, 1, (i % 65_535) as u16 + 1, m.payload.len(), |o| {
            o.extend_from_slice(&m.payload)
        });
        if out.len() > 64 * 1024 {
            s.write_all(&out).context("publishing births")?;
            out.clear();
        }
    }
    s.write_all(&out).context("publishing births")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Relaxed) < births.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = s.write_all(&[0xe0, 0]);
    let _ = s.shutdown(Shutdown::Both);
    let _ = acks.join();
    std::thread::sleep(settle);
    Ok(())
}

/// The string after `"key":"` in a JSON text (no escapes expected: device ids).
pub fn find_str<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let at = find(text, key)? + key.len();
    let rest = text.get(at..)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One load step.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// Offered messages per second.
    pub rate: f64,
    /// Wall time to publish for.
    pub duration: Duration,
    pub workload: Workload,
}

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Messages handed to the broker.
    pub published: u64,
    /// Of those, readings.
    pub readings: u64,
    /// Of those, heartbeats.
    pub heartbeats: u64,
    /// PUBACKs received by the end.
    pub acked: u64,
    /// First and last send, µs after the origin.
    pub first_us: u64,
    pub last_us: u64,
    /// How late messages left against their schedule: p99 and max, µs.
    pub lag_p99_us: u64,
    pub lag_max_us: u64,
    /// Per device, the send time (µs after the origin) of its last heartbeat; 0 = none.
    pub last_heartbeat_us: Vec<u64>,
}

/// Most QoS 1 messages without a PUBACK before the publisher waits (packet ids are 16 bits).
const MAX_UNACKED: u64 = 30_000;

/// Publishes `spec.workload` at `spec.rate` for `spec.duration`; send times are µs after
/// `origin`. Blocks until every message is acknowledged by the broker (or 10 s pass).
pub fn publish(spec: &LoadSpec, origin: Instant) -> anyhow::Result<LoadReport> {
    let speed = spec.rate / spec.workload.natural_rate();
    // Virtual time covers the wall duration, plus a nanosecond so the last slot is included.
    let virtual_span = Duration::from_secs_f64(spec.duration.as_secs_f64() * speed);
    let mut sim = spec.workload.simulation(virtual_span)?;
    let mut stream = mqtt::open(spec.addr, "bench-load", &[]).context("load generator connects")?;
    let reader = stream.try_clone()?;
    let acked = Arc::new(AtomicU64::new(0));
    let acks = {
        let acked = acked.clone();
        std::thread::Builder::new().name("load-acks".into()).spawn(move || count_acks(reader, &acked))?
    };

    let mut report = LoadReport { last_heartbeat_us: vec![0; spec.workload.devices], ..LoadReport::default() };
    let mut lag = Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).context("histogram")?;
    let mut batch = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut prefix = Vec::with_capacity(48);
    let mut n: u64 = 0;
    // The same nodes `sparkplug_births` announced: their `seq` goes on from the births.
    let mut nodes = if spec.workload.sparkplug { spec.workload.sparkplug_nodes(0).0 } else { Vec::new() };
    let start = Instant::now();
    report.first_us = micros(origin.elapsed());
    loop {
        let elapsed = start.elapsed();
        if elapsed >= spec.duration {
            break;
        }
        sim.poll(Duration::from_secs_f64(elapsed.as_secs_f64() * speed), &mut batch);
        for e in batch.drain(..) {
            let Action::Publish(p) = e.action else { continue };
            if spec.workload.sparkplug && p.kind != Kind::Reading {
                continue;
            }
            while n.saturating_sub(acked.load(Relaxed)) >= MAX_UNACKED {
                std::thread::sleep(Duration::from_micros(50));
            }
            let now = origin.elapsed();
            let sent = micros(now);
            let due = start + Duration::from_secs_f64(e.at.as_secs_f64() / speed);
            lag.saturating_record(micros(Instant::now().saturating_duration_since(due)));
            let packet_id = (n % 65_535) as u16 + 1;
            let node = nodes.get_mut(e.device / SPARKPLUG_NODE_DEVICES);
            match p.payload.split_first() {
                Some(_) if spec.workload.sparkplug => {
                    let temperature = find_f64(&p.payload, b"\"temperature\":").unwrap_or(0.0);
                    let values = [temperature, n as f64, sent as f64];
                    let t = e.time_ms;
                    let Some(m) = node.and_then(|nd| nd.data(e.device % SPARKPLUG_NODE_DEVICES, &values, t)) else {
                        continue;
                    };
                    mqtt::put_publish(&mut out, &m.topic, 1, packet_id, m.payload.len(), |o| {
                        o.extend_from_slice(&m.payload)
                    });
                }
                Some((b'{', rest)) => {
                    stamp_prefix(&mut prefix, n, sent);
                    mqtt::put_publish(&mut out, &p.topic, 1, packet_id, prefix.len() + rest.len(), |o| {
                        o.extend_from_slice(&prefix);
                        o.extend_from_slice(rest);
                    });
                }
                _ => mqtt::put_publish(&mut out, &p.topic, 1, packet_id, p.payload.len(), |o| {
                    o.extend_from_slice(&p.payload)
                }),
            }
            n += 1;
            match p.kind {
                Kind::Reading => report.readings += 1,
                Kind::Heartbeat => {
                    report.heartbeats += 1;
                    if let Some(t) = report.last_heartbeat_us.get_mut(e.device) {
                        *t = sent;
                    }
                }
                _ => {}
            }
            report.last_us = sent;
            if out.len() > 64 * 1024 {
                stream.write_all(&out).context("publishing")?;
                out.clear();
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).context("publishing")?;
            out.clear();
        }
        // Sleep until the next message is due (at most 1 ms, so the end is not overshot).
        let now = start.elapsed();
        if let Some(next) = sim.next_due() {
            let at = Duration::from_secs_f64(next.as_secs_f64() / speed);
            if at > now + Duration::from_micros(80) {
                std::thread::sleep((at - now).min(Duration::from_millis(1)));
            }
        } else if now < spec.duration {
            std::thread::sleep((spec.duration - now).min(Duration::from_millis(1)));
        }
    }
    report.published = n;
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    report.acked = acked.load(Relaxed);
    let _ = stream.write_all(&[0xe0, 0]);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = acks.join();
    report.lag_p99_us = lag.value_at_quantile(0.99);
    report.lag_max_us = lag.max();
    if report.acked < n {
        bail!("the broker acknowledged {} of {n} messages", report.acked);
    }
    Ok(report)
}

fn count_acks(mut s: TcpStream, acked: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        match std::io::Read::read(&mut s, &mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => len += k,
        }
        let mut at = 0;
        while let Ok(Some(f)) = mqtt::frame(&buf[at..len]) {
            if f.kind() == mqtt::PUBACK {
                acked.fetch_add(1, Relaxed);
            }
            at += f.end();
        }
        buf.copy_within(at..len, 0);
        len -= at;
        if len == buf.len() {
            return; // a packet larger than the buffer: not something a broker sends us
        }
    }
}

/// Publishes a probe reading on `bench/probe` every 200 ms until `done` says it came
/// through, or `timeout` passes. `Ok(true)` if it came through.
pub fn probe(addr: SocketAddr, timeout: Duration, done: impl Fn() -> bool) -> anyhow::Result<bool> {
    let mut s = mqtt::open(addr, "bench-probe", &[]).context("probe connects")?;
    let mut reader = s.try_clone()?;
    let drain = std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(std::io::Read::read(&mut reader, &mut sink), Ok(k) if k > 0) {}
    });
    let start = Instant::now();
    let mut seq = 0u64;
    let mut ok = false;
    while start.elapsed() < timeout {
        let payload = format!(r#"{{"device":"probe","seq":{seq},"kind":"reading","temperature":50.0}}"#);
        let mut out = Vec::new();
        mqtt::put_publish(&mut out, "bench/probe", 1, (seq % 65_535) as u16 + 1, payload.len(), |o| {
            o.extend_from_slice(payload.as_bytes())
        });
        s.write_all(&out).context("probe publish")?;
        seq += 1;
        let wait = Instant::now();
        while wait.elapsed() < Duration::from_millis(200) {
            if done() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if ok {
            break;
        }
    }
    let _ = s.write_all(&[0xe0, 0]);
    let _ = s.shutdown(Shutdown::Both);
    let _ = drain.join();
    Ok(ok)
}

/// A duration in whole microseconds.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_payload_is_json_with_number_and_time_first() {
        let mut prefix = Vec::new();
        stamp_prefix(&mut prefix, 42, 1_234_567);
        let original = br#"{"device":"t-00001","seq":3,"kind":"reading","temperature":30.5}"#;
        let mut stamped = prefix.clone();
        stamped.extend_from_slice(&original[1..]);
        let v: serde_json::Value = serde_json::from_slice(&stamped).expect("still JSON");
        assert_eq!(v["n"], 42);
        assert_eq!(v["sent"], 1_234_567);
        assert_eq!(v["device"], "t-00001");
        assert_eq!(find_u64(&stamped, b"\"n\":"), Some(42));
        assert_eq!(find_u64(&stamped, b"\"sent\":"), Some(1_234_567));
        assert_eq!(find_u64(&stamped, b"\"missing\":"), None);
        assert_eq!(find_str(&stamped, b"\"device\":\""), Some("t-00001"));
    }

    #[test]
    fn number_search_finds_fields_inside_a_cloud_event() {
        let ev =
            br#"{"specversion":"1.0","id":"x","subject":"t-00007","data":{"kind":"reading","n":9,"seq":1,"sent":77}}"#;
        assert_eq!(find_u64(ev, b"\"n\":"), Some(9));
        assert_eq!(find_u64(ev, b"\"sent\":"), Some(77));
        assert_eq!(find_str(ev, b"\"subject\":\"").and_then(device_index), Some(7));
    }

    #[test]
    fn rates_and_shares_of_the_reading_fleet() {
        let w = Workload::readings(10_000);
        assert!((w.natural_rate() - 12_000.0).abs() < 1e-6);
        assert_eq!(device_index(&device_id(123)), Some(123));
    }

    #[test]
    fn scenario_is_valid_and_sends_what_the_rates_say() {
        let mut w = Workload::readings(100);
        w.silenced = vec![(3, Duration::from_secs(2))];
        let mut sim = w.simulation(Duration::from_secs(10)).expect("valid scenario");
        let all = sim.run_to_end().expect("ends");
        let publishes: Vec<_> = all.iter().filter_map(|e| e.publish().map(|p| (e.device, p))).collect();
        // 10 s: 1000 readings, 200 heartbeats less device 3's heartbeats after 2 s.
        let readings = publishes.iter().filter(|(_, p)| p.kind == Kind::Reading).count();
        let heartbeats: Vec<_> = publishes.iter().filter(|(_, p)| p.kind == Kind::Heartbeat).collect();
        assert_eq!(readings, 1000);
        assert!(heartbeats.len() < 200 && heartbeats.len() >= 198, "{}", heartbeats.len());
        assert!(publishes.iter().all(|(_, p)| p.payload.first() == Some(&b'{')));
        assert!(publishes.iter().filter(|(_, p)| p.kind == Kind::Reading).all(|(_, p)| {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).expect("json");
            v["temperature"].as_f64().is_some_and(|t| t > 20.0)
        }));
    }
}

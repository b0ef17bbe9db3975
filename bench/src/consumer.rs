//! The upstream consumer: subscribes (QoS 1) to what a contender emits, or, for the bare
//! subscriber, to the sensors' topics themselves, and records what arrives.
//!
//! For each message it reads `"n"` (which input it answers) and `"sent"` (when that input
//! was published, µs after the harness's origin): `n` goes into a bitset (so losses and
//! duplicates are exact), `now - sent` into a latency histogram. Heartbeat runs instead
//! note, per device, when its first "missing" report arrived. One thread, one blocking
//! socket; the clock is read once per `read()`, which is when those bytes arrived.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::mqtt;
use crate::workload::{device_index, find_str, find_u64, micros};

/// What the consumer expects to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Messages carrying `n` and `sent`: count and time them.
    Count,
    /// "Missing" reports naming a device (`subject` of a CloudEvent, or `device`).
    Heartbeat {
        /// Devices in the fleet.
        devices: usize,
    },
}

/// Counters the harness polls while the consumer runs.
#[derive(Debug, Default)]
pub struct Live {
    /// Distinct inputs answered so far.
    pub answered: AtomicU64,
    /// Probe outputs seen (topic ending in `/probe`).
    pub probes: AtomicU64,
    /// "Missing" reports so far.
    pub missing: AtomicU64,
    /// Arrival of the latest counted message, µs after the origin.
    pub last_us: AtomicU64,
    /// The consumer thread's kernel thread id (for its CPU time).
    pub tid: AtomicU64,
}

/// Everything the consumer saw.
#[derive(Debug)]
pub struct Consumed {
    /// Publish-to-arrival, µs, one sample per distinct answered input.
    pub latency: Histogram<u64>,
    /// Distinct inputs answered.
    pub answered: u64,
    /// Messages answering an input already answered.
    pub duplicates: u64,
    /// Messages that were neither answers nor probes nor reports.
    pub other: u64,
    /// Per device: when each of its "missing" reports arrived (µs after the origin).
    pub reports_us: Vec<Vec<u64>>,
    /// Arrival of the last distinct answer, µs after the origin.
    pub last_us: u64,
}

/// A running consumer.
#[derive(Debug)]
pub struct Consumer {
    pub live: Arc<Live>,
    stream: TcpStream,
    thread: JoinHandle<Consumed>,
}

impl Consumer {
    /// Connects, subscribes to `filters` at QoS 1 and starts reading. Returns once the
    /// broker acknowledged the subscription.
    pub fn start(addr: SocketAddr, filters: &[&str], mode: Mode, origin: Instant) -> anyhow::Result<Consumer> {
        let stream = mqtt::open(addr, "bench-consumer", filters).context("consumer connects")?;
        let reader = stream.try_clone()?;
        let live = Arc::new(Live::default());
        let thread = {
            let live = live.clone();
            std::thread::Builder::new().name("consumer".into()).spawn(move || consume(reader, mode, origin, &live))?
        };
        // Its thread id first: the bare subscriber's CPU is read from it right away.
        let start = Instant::now();
        while live.tid.load(Relaxed) == 0 && start.elapsed() < std::time::Duration::from_secs(1) {
            std::thread::yield_now();
        }
        Ok(Consumer { live, stream, thread })
    }

    /// Closes the connection and returns what was seen.
    pub fn finish(self) -> Consumed {
        let _ = (&self.stream).write_all(&[0xe0, 0]);
        let _ = self.stream.shutdown(Shutdown::Both);
        match self.thread.join() {
            Ok(c) => c,
            Err(_) => Consumed::empty(0),
        }
    }
}

impl Consumed {
    fn empty(devices: usize) -> Consumed {
        Consumed {
            latency: new_histogram(),
            answered: 0,
            duplicates: 0,
            other: 0,
            reports_us: vec![Vec::new(); devices],
            last_us: 0,
        }
    }
}

/// A latency histogram from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The thread's id, from `/proc/thread-self` (a link to `/proc/<pid>/task/<tid>`).
pub fn own_tid() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn consume(mut s: TcpStream, mode: Mode, origin: Instant, live: &Live) -> Consumed {
    live.tid.store(own_tid(), Relaxed);
    let devices = match mode {
        Mode::Heartbeat { devices } => devices,
        Mode::Count => 0,
    };
    let mut c = Consumed::empty(devices);
    let mut seen: Vec<u64> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    let mut acks = Vec::with_capacity(64 * 1024);
    loop {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => len += k,
        }
        let now = micros(origin.elapsed());
        let mut at = 0;
        while let Ok(Some(f)) = mqtt::frame(&buf[at..len]) {
            let (b0, b1) = (at + f.body.0, at + f.body.1);
            at += f.end();
            if f.kind() != mqtt::PUBLISH {
                continue;
            }
            let Some((topic, id, payload)) = mqtt::split_publish(f.header, &buf[b0..b1]) else { continue };
            if let Some(id) = id {
                mqtt::put_puback(&mut acks, id);
            }
            if topic.ends_with(b"/probe") {
                live.probes.fetch_add(1, Relaxed);
                continue;
            }
            match mode {
                Mode::Count => match (find_u64(payload, b"\"n\":"), find_u64(payload, b"\"sent\":")) {
                    (Some(n), Some(sent)) => {
                        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
                        if word >= seen.len() {
                            seen.resize(word + 1024, 0);
                        }
                        if seen[word] & bit != 0 {
                            c.duplicates += 1;
                        } else {
                            seen[word] |= bit;
                            c.answered += 1;
                            c.latency.saturating_record(now.saturating_sub(sent).max(1));
                            c.last_us = now;
                            live.answered.store(c.answered, Relaxed);
                            live.last_us.store(now, Relaxed);
                        }
                    }
                    _ => c.other += 1,
                },
                Mode::Heartbeat { .. } => {
                    let device = find_str(payload, b"\"subject\":\"")
                        .or_else(|| find_str(payload, b"\"device\":\""))
                        .and_then(device_index);
                    match device.and_then(|d| c.reports_us.get_mut(d)) {
                        Some(times) => {
                            times.push(now);
                            live.missing.fetch_add(1, Relaxed);
                            live.last_us.store(now, Relaxed);
                        }
                        None => c.other += 1,
                    }
                }
            }
        }
        buf.copy_within(at..len, 0);
        len -= at;
        if !acks.is_empty() {
            if s.write_all(&acks).is_err() {
                break;
            }
            acks.clear();
        }
        if len == buf.len() {
            break; // a packet over 1 MiB: not from this benchmark
        }
    }
    c
}

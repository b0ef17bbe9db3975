//! The bare relay: the least any one-in, one-out contender can do. It subscribes to the
//! sensors' topics at QoS 1 and republishes every reading, unchanged, at QoS 1 under
//! `relay/`, acknowledging what it receives; nothing else (no decoding, no rule, no state).
//!
//! It measures the broker's own limit for the shape of work every contender has: each
//! reading crosses the broker twice (sensor to contender, contender to consumer), and the
//! broker carries the acknowledgements of both legs. The bare subscriber, which only
//! receives, is the limit for half of that. One thread, one blocking socket; everything made
//! from one `read()` goes out with one `write()`, so its own cost per message is as low as a
//! client's can be.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::mqtt;

/// Where the relay republishes; the consumer subscribes here.
pub const RELAY_EVENTS: &str = "relay/#";

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    /// Its thread's kernel id (for its CPU time).
    pub tid: Arc<AtomicU64>,
    stream: TcpStream,
    thread: JoinHandle<u64>,
}

impl Relay {
    /// Connects and subscribes to `sensors/#` and the probe topic; returns once subscribed.
    pub fn start(addr: SocketAddr) -> anyhow::Result<Relay> {
        let stream = mqtt::open(addr, "bench-relay", &["sensors/#", "bench/probe"]).context("relay connects")?;
        let socket = stream.try_clone()?;
        let tid = Arc::new(AtomicU64::new(0));
        let thread = {
            let tid = tid.clone();
            std::thread::Builder::new().name("relay".into()).spawn(move || relay(socket, &tid))?
        };
        let start = std::time::Instant::now();
        while tid.load(Relaxed) == 0 && start.elapsed() < std::time::Duration::from_secs(1) {
            std::thread::yield_now();
        }
        Ok(Relay { tid, stream, thread })
    }

    /// Disconnects; returns how many messages it republished.
    pub fn finish(self) -> u64 {
        let _ = (&self.stream).write_all(&[0xe0, 0]);
        let _ = self.stream.shutdown(Shutdown::Both);
        self.thread.join().unwrap_or(0)
    }
}

/// Which messages go on: readings (what every contender answers) and probes.
fn relayed(topic: &[u8]) -> bool {
    topic.ends_with(b"/temperature") || topic == b"bench/probe"
}

fn relay(mut s: TcpStream, tid: &AtomicU64) -> u64 {
    tid.store(crate::consumer::own_tid(), Relaxed);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    let mut out = Vec::with_capacity(1 << 20);
    let mut topic = String::with_capacity(128);
    let mut next_id: u16 = 0;
    let mut relayed_n = 0u64;
    loop {
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => len += k,
        }
        let mut at = 0;
        while let Ok(Some(f)) = mqtt::frame(&buf[at..len]) {
            let (b0, b1) = (at + f.body.0, at + f.body.1);
            at += f.end();
            if f.kind() != mqtt::PUBLISH {
                continue; // PUBACKs of what it published
            }
            let Some((t, id, payload)) = mqtt::split_publish(f.header, &buf[b0..b1]) else { continue };
            if let Some(id) = id {
                mqtt::put_puback(&mut out, id);
            }
            if !relayed(t) {
                continue;
            }
            topic.clear();
            topic.push_str("relay/");
            topic.push_str(&String::from_utf8_lossy(t));
            // Packet ids 1..=65535, round and round: far more than are ever in flight here.
            next_id = next_id.checked_add(1).unwrap_or(1);
            mqtt::put_publish(&mut out, &topic, 1, next_id, payload.len(), |o| o.extend_from_slice(payload));
            relayed_n += 1;
        }
        buf.copy_within(at..len, 0);
        len -= at;
        if !out.is_empty() {
            if s.write_all(&out).is_err() {
                break;
            }
            out.clear();
        }
        if len == buf.len() {
            break; // a packet over 1 MiB: not from this benchmark
        }
    }
    relayed_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_and_probes_go_on_heartbeats_do_not() {
        assert!(relayed(b"sensors/d-00001/temperature"));
        assert!(relayed(b"bench/probe"));
        assert!(!relayed(b"sensors/d-00001/heartbeat"));
        assert!(!relayed(b"sensors/d-00001/temperature/x"));
    }
}

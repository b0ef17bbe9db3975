//! Agent throughput with durable state (sled, flush before ack) versus state in memory only,
//! through a real broker (rumqttd, embedded), and the flush latency. Prints a markdown table:
//! `cargo bench -p edgewatch --bench durability`.

use edgewatch::broker::EmbeddedBroker;
use edgewatch_e2e::{AgentToml, Mosquitto, RunningAgent};
use std::time::{Duration, Instant};

const MESSAGES: usize = 40_000;
const DEVICES: usize = 100;

const RULES: &str = r#"
rule("overheat", #{
    on: "sensors/{device}/temperature",
    window: #{ size: "60s", filter: |e| e.value > 80.0 },
    when: |e| e.window.count >= 3,
    clear: |e| e.window.count == 0,
});
rule("offline", #{ on: "sensors/{device}/temperature", heartbeat: #{ timeout: "1h" } });
"#;

struct Row {
    broker: &'static str,
    mode: &'static str,
    rate: f64,
    flushes: u64,
    p50: u32,
    p99: u32,
    max: u64,
}

async fn run(broker_name: &'static str, addr: std::net::SocketAddr, durable: bool, round: usize) -> Row {
    let text = AgentToml::new()
        .id(&format!("bench{round}"))
        .source(addr)
        .subscribe_with("sensors/#", &[("qos", 1.into())])
        .set("state.durable", durable)
        .to_string();
    let agent = RunningAgent::start(&text, &[("bench.rhai", RULES)]).await;
    let stats = agent.stats.clone();

    // Pre-encode, then publish as fast as the client allows (QoS 1, pipelined).
    let payloads: Vec<(String, Vec<u8>)> = (0..MESSAGES)
        .map(|i| {
            let d = i % DEVICES;
            let seq = i / DEVICES + 1;
            (
                format!("sensors/d{d}/temperature"),
                format!(r#"{{"device":"d{d}","seq":{seq},"temperature":{}}}"#, 20 + i % 70).into_bytes(),
            )
        })
        .collect();
    let mut o = rumqttc::MqttOptions::new(format!("bench-pub-{round}"), addr.ip().to_string(), addr.port());
    o.set_inflight(200);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let start = Instant::now();
    for (topic, payload) in payloads {
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.expect("queued");
    }
    let all_processed = async {
        while stats.snapshot().processed < MESSAGES as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(300), all_processed).await.is_err() {
        panic!("agent stalled at {} messages", stats.snapshot().processed);
    }
    let elapsed = start.elapsed();
    agent.stop().await;
    poller.abort();
    let mut samples = stats.flush_samples.lock().map(|s| s.clone()).unwrap_or_default();
    samples.sort_unstable();
    let pct = |p: f64| {
        samples.get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    let s = stats.snapshot();
    let _ = s;
    Row {
        broker: broker_name,
        mode: if durable { "durable (sled, flush before ack)" } else { "state in memory" },
        rate: MESSAGES as f64 / elapsed.as_secs_f64(),
        flushes: stats.flushes.load(std::sync::atomic::Ordering::Relaxed),
        p50: pct(0.50),
        p99: pct(0.99),
        max: stats.flush_max_micros.load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let embedded = EmbeddedBroker::start().expect("broker");
    // Mosquitto sends at most `max_inflight_messages` unacknowledged QoS 1 messages per
    // client (20 by default): with acks after the flush, that window bounds throughput.
    let mosquitto = Mosquitto::start_configured(None, None, "max_inflight_messages 1000\nmax_queued_messages 100000");
    let mut brokers: Vec<(&'static str, std::net::SocketAddr)> = vec![("rumqttd (embedded)", embedded.v4)];
    if let Some(m) = &mosquitto {
        brokers.push(("mosquitto (max_inflight_messages 1000)", m.addr));
    }
    let rows = rt.block_on(async {
        let mut rows = Vec::new();
        let mut round = 0;
        for (name, addr) in &brokers {
            for durable in [false, true, false, true] {
                rows.push(run(name, *addr, durable, round).await);
                round += 1;
            }
        }
        rows
    });
    println!("| broker | mode | messages/s | flushes | batch (msgs/flush) | flush p50 | flush p99 | flush max |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let batch = if r.flushes > 0 { format!("{:.0}", MESSAGES as f64 / r.flushes as f64) } else { "-".into() };
        println!(
            "| {} | {} | {:.0} | {} | {} | {} µs | {} µs | {} µs |",
            r.broker, r.mode, r.rate, r.flushes, batch, r.p50, r.p99, r.max
        );
    }
    for (name, _) in &brokers {
        let mem: Vec<f64> = rows.iter().filter(|r| r.broker == *name && r.flushes == 0).map(|r| r.rate).collect();
        let dur: Vec<f64> = rows.iter().filter(|r| r.broker == *name && r.flushes > 0).map(|r| r.rate).collect();
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        println!("{name}: durable / in-memory throughput {:.0}%", 100.0 * avg(&dur) / avg(&mem));
    }
}

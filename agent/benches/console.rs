//! The console API's answers at a gateway's scale: `GET /api/v1/devices` for 10 000 devices
//! (the target is ≤ 50 ms), one device, the rules, and an event page, against a running
//! agent (in memory, embedded broker). `cargo bench -p edgewatch --bench console` prints a
//! markdown table of the median and the slowest of 30 requests each.

use edgewatch_e2e::{AgentToml, Broker, RunningAgent, http};
use std::time::{Duration, Instant};

const DEVICES: usize = 10_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = Broker::embedded();
    let addr = edgewatch::broker::free_port().expect("port");
    let mut table = String::from("device\n");
    for i in 0..DEVICES {
        table.push_str(&format!("t-{i:05}\n"));
    }
    let rules = r#"rule("offline", #{ on: "sensors/{device}/heartbeat", heartbeat: #{ timeout: "1h", expected: "devices", grace: "1h" } });"#;
    let config = AgentToml::new()
        .source(broker.addr())
        .subscribe("sensors/#")
        .set("state.durable", false)
        .set("console.listen", addr)
        .to_string();
    let agent = RunningAgent::start(&config, &[("offline.rhai", rules), ("tables/devices.csv", &table)]).await;
    // The registry is loaded at the first tick.
    let loaded = async {
        loop {
            let (_, body) = http(addr, "GET", "/api/v1/devices?state=missing", &[], b"").await;
            let d: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            if d["total"].as_u64() == Some(DEVICES as u64) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), loaded).await.expect("the registry loads");
    println!("| request | median | slowest of 30 | answer |\n|---|---:|---:|---:|");
    for path in [
        "/api/v1/devices",
        "/api/v1/devices?state=missing",
        "/api/v1/devices/t-04242",
        "/api/v1/rules",
        "/api/v1/events",
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..30 {
            let t = Instant::now();
            let (status, body) = http(addr, "GET", path, &[], b"").await;
            times.push(t.elapsed());
            assert!(status == 200 || path.contains("t-04242"), "{path}: {status}");
            size = body.len();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| `GET {path}` | {:.1} ms | {:.1} ms | {:.0} KB |",
            ms(times[15]),
            ms(times[29]),
            size as f64 / 1000.0
        );
    }
    agent.stop().await;
}

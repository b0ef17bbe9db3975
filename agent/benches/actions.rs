//! What an action costs: latency from the reading that fires a rule to the webhook receiving
//! the action (p50, p99), and the agent's CPU per action (the agent process with `notify`
//! against the same rule without it). A real broker (rumqttd, embedded here), the agent as a
//! process of its own (durable state, as shipped), a real HTTP server as the receiver.
//! `cargo bench -p edgewatch --bench actions`; prints a markdown table.

use edgewatch_e2e::{AgentToml, Publisher, Webhook, wait_healthy};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Readings per run, each firing the rule once.
const ACTIONS: usize = 2000;
/// Readings per second.
const RATE: u64 = 200;
const ROUNDS: usize = 3;

fn rules(notify: bool) -> String {
    format!(
        r#"
rule("hot", #{{
    on: "sensors/{{device}}/t",
    when: |e| e.payload.v > 80,
    emit: |e| #{{ sent: e.payload.sent }},
    {}
}});
"#,
        if notify { r#"notify: "pager","# } else { "" }
    )
}

/// CPU time (user + system) of process `pid` so far.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Run {
    cpu: Duration,
    latencies_us: Vec<u64>,
}

async fn run(broker: std::net::SocketAddr, notify: bool, round: usize) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).expect("rules dir");
    std::fs::write(rules_dir.join("hot.rhai"), rules(notify)).expect("rules");
    let hook = Webhook::start().await;
    let metrics = edgewatch::broker::free_port().expect("port");
    let file = dir.path().join("edgewatch.toml");
    AgentToml::new()
        .id(&format!("bench-actions-{round}-{notify}"))
        .dirs_in(dir.path())
        .source(broker)
        .set("agent.metrics_listen", metrics)
        .subscribe_with("sensors/#", &[("qos", 1.into())])
        .sink("pager", "http", &[("url", hook.url("/").into())])
        .write(&file);
    let mut agent: Child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["run", "--config"])
        .arg(&file)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("agent starts");
    wait_healthy(metrics).await;
    let mut sensor = Publisher::connect(broker, &format!("bench-sensor-{round}-{notify}")).await;
    let start = Instant::now();
    let cpu_before = cpu(agent.id());
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    for i in 0..ACTIONS {
        tick.tick().await;
        let sent = start.elapsed().as_micros();
        sensor.publish(&format!("sensors/d{}/t", i % 50), format!(r#"{{"v": 90, "sent": {sent}}}"#)).await;
    }
    let latencies_us = if notify {
        let seen = hook.wait_for("every action", Duration::from_secs(60), |r| r.len() >= ACTIONS).await;
        seen.iter()
            .filter_map(|r| {
                let sent = r.body["data"]["sent"].as_u64()?;
                Some((r.at.duration_since(start).as_micros() as u64).saturating_sub(sent))
            })
            .collect()
    } else {
        // The same time for the agent to finish its work.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Vec::new()
    };
    let cpu = cpu(agent.id()).saturating_sub(cpu_before);
    let _ = agent.kill();
    let _ = agent.wait();
    Run { cpu, latencies_us }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let broker = edgewatch_e2e::Broker::embedded();
    println!("| round | p50 (rule fires → webhook has it) | p99 | agent CPU with notify | without | CPU per action |");
    println!("|---|---:|---:|---:|---:|---:|");
    for round in 0..ROUNDS {
        let without = run(broker.addr(), false, round).await;
        let with = run(broker.addr(), true, round).await;
        let mut l = with.latencies_us.clone();
        l.sort_unstable();
        let per_action = with.cpu.saturating_sub(without.cpu).as_secs_f64() * 1e6 / ACTIONS as f64;
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} s | {:.2} s | {per_action:.0} µs |",
            round + 1,
            percentile(&l, 0.5) as f64 / 1000.0,
            percentile(&l, 0.99) as f64 / 1000.0,
            with.cpu.as_secs_f64(),
            without.cpu.as_secs_f64(),
        );
    }
}

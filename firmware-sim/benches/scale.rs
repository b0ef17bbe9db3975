//! Scale benchmark: `cargo bench -p firmware-sim --bench scale`. Prints a markdown table.
//!
//! 1. Schedule generation, pure: 10 000 sensors (a reading every 1 s, a heartbeat every 5 s)
//!    for 60 s of virtual time, JSON and postcard; messages generated per second of CPU.
//! 2. Publishing, when Mosquitto is installed: the same 10 000 sensors against a Mosquitto
//!    on a free loopback port, as fast as it takes them (`speed = max`), QoS 0, for ~5 s of
//!    wall time; messages handed to the client per second.

use std::time::{Duration, Instant};

use firmware_sim::{RunOptions, Scenario, SimOptions, Simulation};

const DEVICES: usize = 10_000;

fn fleet(format: &str) -> Scenario {
    let text = format!(
        r#"
[[groups]]
name = "t"
count = {DEVICES}
id = "t-{{index:05}}"
format = "{format}"
reading_interval = "1s"
heartbeat_interval = "5s"
[[groups.channels]]
name = "temperature"
signal = {{ model = "sine", base = 22.0, amplitude = 3.0, period = "10m", noise = 0.2 }}
"#
    );
    match Scenario::from_toml(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench scenario invalid: {e}");
            std::process::exit(1);
        }
    }
}

struct Row {
    what: String,
    messages: u64,
    seconds: f64,
    note: String,
}

fn generate(format: &str) -> Row {
    let scenario = fleet(format);
    let built = Instant::now();
    let opts = SimOptions { seed: 1, duration: Some(Duration::from_secs(60)), ..SimOptions::default() };
    let mut sim = match Simulation::new(&scenario, opts) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("cannot build: {e}");
            std::process::exit(1);
        }
    };
    let build = built.elapsed();
    let started = Instant::now();
    let mut out = Vec::with_capacity(4096);
    let mut messages = 0u64;
    let mut bytes = 0usize;
    // Poll in 100 ms steps, as a runner would, and drop each batch.
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(60) {
        t += Duration::from_millis(100);
        sim.poll(t - Duration::from_nanos(1), &mut out);
        messages += out.len() as u64;
        bytes += out.iter().filter_map(|e| e.publish()).map(|p| p.payload.len()).sum::<usize>();
        out.clear();
    }
    let seconds = started.elapsed().as_secs_f64();
    Row {
        what: format!("generate, {DEVICES} devices, {format}, 60 s virtual"),
        messages,
        seconds,
        note: format!(
            "build {:.0} ms; {:.0} bytes/payload",
            build.as_secs_f64() * 1e3,
            bytes as f64 / messages.max(1) as f64
        ),
    }
}

fn publish(port: u16, qos: u8) -> Option<Row> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().ok()?;
    let scenario = fleet("json");
    let sim = Simulation::new(&scenario, SimOptions { seed: 1, duration: None, ..SimOptions::default() }).ok()?;
    let run =
        RunOptions { port, client_id: format!("bench-{qos}"), qos, speed: f64::INFINITY, ..RunOptions::default() };
    let wall = Duration::from_secs(5);
    let started = Instant::now();
    let report =
        runtime.block_on(firmware_sim::run_simulation(sim, &run, None, async move { tokio::time::sleep(wall).await }));
    let seconds = started.elapsed().as_secs_f64();
    match report {
        Ok(r) => Some(Row {
            what: format!("publish to Mosquitto, {DEVICES} devices, JSON, QoS {qos}, speed max"),
            messages: r.stats.published,
            seconds,
            note: format!("{:.1} s virtual in {seconds:.1} s (includes connect and drain)", r.covered.as_secs_f64()),
        }),
        Err(e) => {
            eprintln!("publishing failed: {e}");
            None
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need.
    let mut rows = vec![generate("json"), generate("postcard")];
    // Skips publishing (saying why) when Mosquitto is not installed.
    if let Some(broker) = edgewatch_e2e::Mosquitto::start_configured(None, None, "max_queued_messages 0") {
        rows.extend(publish(broker.addr.port(), 0));
        rows.extend(publish(broker.addr.port(), 1));
    }
    println!("| benchmark | messages | seconds | messages/s | notes |");
    println!("|---|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} |",
            r.what,
            r.messages,
            r.seconds,
            r.messages as f64 / r.seconds.max(1e-9),
            r.note
        );
    }
}

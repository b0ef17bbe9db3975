//! `bench --backtest`: `edgewatch backtest` over a large journal, timed.
//!
//! Writes a journal of `inputs` readings of `devices` devices (temperatures, heartbeats,
//! batteries and doors, for every shipped rule) with the agent's own journal writer, then
//! runs `edgewatch backtest --rules rules/` against the shipped rules as the baseline over
//! all of it, and reports wall time, CPU time and peak memory of that process.

use crate::procs::{cpu_ticks, peak_rss_kib, ticks_per_second};
use anyhow::{Context, bail};
use edgewatch::decode::Format;
use edgewatch::journal::{Entry, JournalLimits, JournalLog};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T0: i64 = 1_780_000_000_000;

/// One reading of device `d` at step `i`: (topic, payload).
fn reading(i: u64, d: u64) -> (String, String) {
    let t = i / 1000;
    match i % 20 {
        0..=13 => {
            // A slow daily wave and a little noise; device 7 of every 100 runs hot now and then.
            let hot = d % 100 == 7 && (t / 600).is_multiple_of(5);
            let v = 21.0
                + 3.0 * ((t as f64) / 13_750.0).sin()
                + ((i * 7919) % 100) as f64 / 100.0
                + if hot { 65.0 } else { 0.0 };
            (format!("sensors/d-{d:04}/temperature"), format!("{{\"temperature\":{v:.2},\"seq\":{i}}}"))
        }
        14..=16 => (format!("sensors/d-{d:04}/heartbeat"), format!("{{\"seq\":{i}}}")),
        17..=18 => {
            let v = 3.9 - (t as f64) / 400_000.0 - (d % 10) as f64 * 0.02;
            (format!("sensors/d-{d:04}/battery"), format!("{{\"battery\":{v:.3},\"seq\":{i}}}"))
        }
        _ => {
            let kind = if (i / 20).is_multiple_of(3) { "badge" } else { "open" };
            (format!("doors/d-{d:04}/{kind}"), format!("{{\"seq\":{i}}}"))
        }
    }
}

/// Runs the benchmark; prints its numbers.
pub fn run(root: &Path, edgewatch: &Path, inputs: u64, devices: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let journal = edgewatch::journal::dir_in(&state);
    let limits = JournalLimits { max_bytes: 64 << 30, max_age_ms: i64::MAX / 4 };
    let (mut log, _) = JournalLog::open(&journal, limits)?;
    let started = Instant::now();
    // 100 readings a second in all: 10 million are ~28 hours of a 1 000-device site.
    let mut t = T0;
    for i in 0..inputs {
        t = T0 + (i as i64) * 10;
        let (topic, payload) = reading(i, i % devices);
        log.append(&Entry::Message { t, format: Format::Json, topic: &topic, payload: payload.as_bytes() }, t)?;
    }
    log.flush()?;
    let bytes = log.bytes();
    drop(log);
    eprintln!(
        "bench: journal of {inputs} inputs, {bytes} bytes ({:.1} B an input), written in {:.1} s",
        bytes as f64 / inputs as f64,
        started.elapsed().as_secs_f64()
    );
    let config = dir.path().join("edgewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nid = \"bench\"\nstate_dir = {:?}\n\n[rules]\ndir = {:?}\n\n[[subscriptions]]\ntopic = \"sensors/#\"\n\n\
             [[subscriptions]]\ntopic = \"doors/#\"\n\n[journal]\nenabled = true\n",
            state.display().to_string(),
            root.join("rules").display().to_string()
        ),
    )?;
    let iso = |t: i64| edgewatch_engine::Timestamp(t).to_rfc3339();
    let started = Instant::now();
    let mut child = Command::new(edgewatch)
        .arg("backtest")
        .arg("--rules")
        .arg(root.join("rules"))
        .args(["--since", &iso(T0), "--until", &iso(t + 1), "--format", "json", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", edgewatch.display()))?;
    let pid = child.id();
    let (mut ticks, mut peak) = (0, 0);
    let stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    while child.try_wait()?.is_none() {
        ticks = cpu_ticks(pid).unwrap_or(ticks);
        peak = peak_rss_kib(pid).unwrap_or(peak);
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    let report: serde_json::Value = serde_json::from_str(&reader.join().map_err(|_| anyhow::anyhow!("reader"))??)?;
    if report["inputs"].as_u64() != Some(inputs) || report["identical"] != true {
        bail!("unexpected report: inputs {} identical {}", report["inputs"], report["identical"]);
    }
    let events: u64 = report["rules"].as_array().map_or(0, |r| r.iter().filter_map(|r| r["baseline"].as_u64()).sum());
    println!(
        "backtest of {inputs} journaled inputs ({devices} devices, the shipped rules against themselves): \
         {:.1} s wall, {:.1} s CPU (last sample), peak RSS {:.1} MiB, {events} events a side, {:.0} inputs/s",
        wall.as_secs_f64(),
        ticks as f64 / ticks_per_second(),
        peak as f64 / 1024.0,
        inputs as f64 / wall.as_secs_f64()
    );
    Ok(())
}

//! `bench`: Edgewatch side by side with the broker's own limit and with Node-RED 4, on one
//! machine, in one run, with one command:
//!
//! ```sh
//! cargo run --release -p bench              # about 15 minutes; writes docs/benchmarks/side-by-side.{md,svg,json}
//! cargo run --release -p bench -- --quick   # a smoke run in well under a minute; writes under target/bench/quick/
//! # one contender at steady rates (for a profiler; writes under target/bench/partial/):
//! cargo run --release -p bench -- --only edgewatch-threshold --rates 10000 --step-secs 30
//! ```
//!
//! # Layout
//!
//! ```text
//!  main.rs: plan (setups x rates, ramps) ──▶ one step:
//!     procs.rs: fresh Mosquitto ──▶ fresh contender (edgewatch run | node red.js | none)
//!     consumer.rs: QoS 1 subscriber on the contender's outputs (or on sensors/# for the bare one)
//!     workload.rs: probe until an output comes through, then firmware-sim's fleet at the rate,
//!                  each message stamped {"n","sent"} ──▶ Mosquitto ──▶ contender ──▶ Mosquitto ──▶ consumer
//!     procs.rs: CPU (/proc/<pid>/stat) and peak RSS (VmHWM) of the contender
//!  stats.rs: Step, "sustained", Ramp (grid then bisection), Detection (heartbeats)
//!  report.rs: markdown, SVG chart (plotters), JSON      mqtt.rs: the harness's own MQTT 3.1.1 client
//! ```

mod backtest;
mod consumer;
mod machine;
mod mqtt;
mod procs;
mod relay;
mod report;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use consumer::{Consumer, Mode};
use procs::{Proc, Rule};
use report::{Meta, Results, Series};
use stats::{Contender, Criteria, Detection, GRID, Latency, Ramp, Setup, Step};
use workload::{LoadSpec, Workload, micros};

/// Edgewatch side by side with the broker's own limit and Node-RED 4, through Mosquitto on loopback.
#[derive(Debug, Parser)]
#[command(name = "bench", about)]
struct Args {
    /// A smoke run: 2 s steps at 1k and 10k msg/s, threshold rule only, 1 000-device heartbeats.
    #[arg(long)]
    quick: bool,
    /// Where the report goes (default: docs/benchmarks/, or target/bench/quick/ with --quick).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The edgewatch binary (default: built with this binary's profile and used from beside it).
    #[arg(long)]
    edgewatch: Option<PathBuf>,
    /// Leave Node-RED out.
    #[arg(long)]
    no_node_red: bool,
    /// Seconds of load per step (default 10, or 2 with --quick).
    #[arg(long)]
    step_secs: Option<f64>,
    /// Only these setups (comma-separated): bare, edgewatch-threshold, edgewatch-window,
    /// edgewatch-memory, edgewatch-history, edgewatch-past, edgewatch-script, edgewatch-journal, edgewatch-privacy, edgewatch-governed, edgewatch-watched, node-red-threshold, node-red-window, heartbeats.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these offered rates (msg/s, comma-separated), no ramp; with `--only`, for
    /// profiling a contender under a steady load.
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Stop contenders with SIGTERM and wait this many seconds before killing them (for a
    /// profiler wrapped around `--edgewatch` that writes its data on exit); default: kill.
    #[arg(long, default_value_t = 0.0)]
    stop_grace: f64,
    /// Instead of the side-by-side run: `edgewatch backtest` of the shipped rules over a
    /// journal of `--inputs` readings (no broker involved).
    #[arg(long)]
    backtest: bool,
    /// Journaled inputs for `--backtest`.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
    /// Devices for `--backtest`.
    #[arg(long, default_value_t = 1000)]
    devices: u64,
}

/// What every step needs.
struct Ctx {
    /// Zero of every `sent` stamp and arrival time.
    origin: Instant,
    mosquitto: PathBuf,
    edgewatch: PathBuf,
    /// Node-RED's `red.js`, unless left out.
    node_red: Option<PathBuf>,
    step: Duration,
    criteria: Criteria,
    /// How long to wait after the load for outputs still on their way.
    drain_max: Duration,
    ticks: f64,
    quick: bool,
    stop_grace: Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_else(|| PathBuf::from("."))
}

/// Builds `edgewatch` with the profile this binary was built with (so `--release` gives a
/// release agent), and returns its path beside this binary.
fn build_edgewatch(root: &Path, profile_dir: &Path) -> anyhow::Result<PathBuf> {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(p) => p.to_owned(),
        None => bail!("cannot tell the build profile from {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building edgewatch (profile {profile})");
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--profile", &profile, "-p", "edgewatch", "--bin", "edgewatch"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build -p edgewatch failed: {status}");
    }
    Ok(profile_dir.join("edgewatch"))
}

fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = machine::load_average();
    let root = workspace_root();
    let exe = std::env::current_exe().context("own path")?;
    let profile_dir = exe.parent().context("own directory")?.to_owned();
    let target_dir = profile_dir.parent().context("target directory")?.to_owned();

    let edgewatch = match &args.edgewatch {
        Some(p) => p.clone(),
        None => build_edgewatch(&root, &profile_dir)?,
    };
    if !edgewatch.is_file() {
        bail!("no edgewatch binary at {}", edgewatch.display());
    }
    if args.backtest {
        return backtest::run(&root, &edgewatch, args.inputs, args.devices.max(1));
    }
    let mosquitto = procs::find_or_install_mosquitto()?;
    let node_red_cache = target_dir.join("bench").join("node-red");
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let node_red_wanted = wanted("node-red-threshold") || wanted("node-red-window") || wanted("heartbeats");
    let node_red = if args.no_node_red || !node_red_wanted {
        None
    } else {
        Some(procs::find_or_install_node_red(&node_red_cache)?)
    };
    let quick = args.quick;
    let step = Duration::from_secs_f64(args.step_secs.unwrap_or(if quick { 2.0 } else { 10.0 }).max(0.5));
    let ctx = Ctx {
        origin: Instant::now(),
        mosquitto,
        edgewatch,
        node_red,
        step,
        criteria: Criteria { drain: Duration::from_millis(500), lag: Duration::from_millis(50) },
        drain_max: if quick { Duration::from_secs(3) } else { Duration::from_secs(10) },
        ticks: procs::ticks_per_second(),
        quick,
        stop_grace: Duration::from_secs_f64(args.stop_grace.max(0.0)),
    };

    let mut setups = Vec::new();
    for (name, contender, rule, full_only) in [
        ("bare", Contender::Bare, Rule::Threshold, false),
        ("relay", Contender::Relay, Rule::Threshold, false),
        ("edgewatch-threshold", Contender::Edgewatch, Rule::Threshold, false),
        ("edgewatch-window", Contender::Edgewatch, Rule::Window, true),
        ("edgewatch-memory", Contender::EdgewatchMemory, Rule::Threshold, true),
        ("edgewatch-history", Contender::Edgewatch, Rule::History, true),
        ("edgewatch-past", Contender::Edgewatch, Rule::Past, true),
        ("edgewatch-script", Contender::Edgewatch, Rule::Script, true),
        ("edgewatch-journal", Contender::Edgewatch, Rule::Journal, true),
        ("edgewatch-privacy", Contender::Edgewatch, Rule::Privacy, true),
        ("edgewatch-governed", Contender::Edgewatch, Rule::Governed, true),
        ("edgewatch-watched", Contender::Edgewatch, Rule::Watched, true),
        ("edgewatch-sparkplug", Contender::Edgewatch, Rule::Sparkplug, true),
        ("node-red-threshold", Contender::NodeRed, Rule::Threshold, false),
        ("node-red-window", Contender::NodeRed, Rule::Window, true),
    ] {
        let node_red_missing = contender == Contender::NodeRed && ctx.node_red.is_none();
        if wanted(name) && !(quick && full_only && args.only.is_empty()) && !node_red_missing {
            setups.push(setup(contender, rule));
        }
    }
    let (grid, required, refinements): (&[f64], &[f64], usize) = if !args.rates.is_empty() {
        (&args.rates, &args.rates, 0)
    } else if quick {
        (&[1_000.0, 10_000.0], &[1_000.0, 10_000.0], 0)
    } else {
        (GRID, &[1_000.0, 10_000.0, 50_000.0], 2)
    };

    // Round-robin over the setups, so a disturbance on the machine spreads over all of them.
    let mut ramps: Vec<(Setup, Ramp, Vec<Step>)> =
        setups.iter().map(|s| (*s, Ramp::new(grid, required, refinements), Vec::new())).collect();
    loop {
        let mut ran = false;
        for (setup, ramp, steps) in &mut ramps {
            if let Some(rate) = ramp.next() {
                let s = run_step(&ctx, *setup, rate);
                progress(&ctx, *setup, &s);
                ramp.record(rate, s.sustained(&ctx.criteria));
                steps.push(s);
                ran = true;
            }
        }
        if !ran {
            break;
        }
    }

    let mut heartbeats = Vec::new();
    if wanted("heartbeats") {
        heartbeats.push((Contender::Edgewatch, run_heartbeat(&ctx, Contender::Edgewatch)));
        if ctx.node_red.is_some() {
            heartbeats.push((Contender::NodeRed, run_heartbeat(&ctx, Contender::NodeRed)));
        }
    }
    for (c, d) in &heartbeats {
        eprintln!(
            "[{:6.1}s] {} heartbeat, {} devices: {} of {} reported, delay p50 {:.1} / p99 {:.1} / max {:.1} ms{}",
            ctx.origin.elapsed().as_secs_f64(),
            c.name(),
            d.devices,
            d.detected,
            d.silenced,
            d.delay.p50 as f64 / 1e3,
            d.delay.p99 as f64 / 1e3,
            d.delay.max as f64 / 1e3,
            d.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
        );
    }

    let series = ramps
        .into_iter()
        .map(|(setup, ramp, mut steps)| {
            steps.sort_by(|a, b| a.rate.total_cmp(&b.rate));
            Series { setup, steps, max_sustained: ramp.max_sustained(), bounded: ramp.bounded() }
        })
        .collect();
    let edgewatch_version = format!(
        "{}{}",
        procs::edgewatch_version(&ctx.edgewatch),
        machine::git_revision(&root).map(|r| format!(" (git {r})")).unwrap_or_default()
    );
    let results = Results {
        meta: Meta {
            date: machine::today(),
            machine: machine::describe(),
            mosquitto: procs::mosquitto_version(&ctx.mosquitto),
            node_red: ctx
                .node_red
                .as_ref()
                .map(|_| format!("{} on Node.js {}", procs::node_red_version(&node_red_cache), procs::node_version())),
            edgewatch: edgewatch_version,
            command: if quick {
                "cargo run --release -p bench -- --quick".into()
            } else {
                "cargo run --release -p bench".into()
            },
            quick,
            step_seconds: step.as_secs_f64(),
            drain_max_seconds: ctx.drain_max.as_secs_f64(),
            total_seconds: started.elapsed().as_secs_f64(),
            load_before,
            load_after: machine::load_average(),
        },
        criteria: ctx.criteria,
        series,
        heartbeats,
    };

    let partial = !args.only.is_empty() || !args.rates.is_empty() || args.step_secs.is_some();
    let out = args.out.unwrap_or_else(|| match (quick, partial) {
        (true, _) => target_dir.join("bench").join("quick"),
        (false, true) => target_dir.join("bench").join("partial"),
        (false, false) => root.join("docs").join("benchmarks"),
    });
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let md = report::markdown(&results);
    std::fs::write(out.join("side-by-side.md"), &md)?;
    std::fs::write(out.join("side-by-side.json"), serde_json::to_string_pretty(&report::json(&results))?)?;
    report::svg(&results, &out.join("side-by-side.svg"))?;
    // The summary and targets on stdout; everything is in the file.
    let head: String = md.split("\n## Missed heartbeats").next().unwrap_or_default().to_owned();
    println!("{head}");
    eprintln!("bench: wrote {}", out.join("side-by-side.md").display());
    Ok(())
}

fn setup(contender: Contender, rule: Rule) -> Setup {
    Setup { contender, rule }
}

fn progress(ctx: &Ctx, setup: Setup, s: &Step) {
    eprintln!(
        "[{:6.1}s] {:<32} {:>7.0} msg/s: {}; {}/{} outputs, p50 {:.2} / p99 {:.2} / max {:.1} ms, CPU {}, broker CPU {}, RSS {}",
        ctx.origin.elapsed().as_secs_f64(),
        setup.label(),
        s.rate,
        s.verdict(&ctx.criteria),
        s.answered,
        s.expected,
        s.latency.p50 as f64 / 1e3,
        s.latency.p99 as f64 / 1e3,
        s.latency.max as f64 / 1e3,
        s.cpu_pct.map_or("–".into(), |c| format!("{c:.0}%")),
        s.broker_cpu_pct.map_or("–".into(), |c| format!("{c:.0}%")),
        s.peak_rss_kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
}

/// Heartbeat timeout of the throughput runs' agents (their rules do not use it).
const UNUSED_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the contender for `setup` against `broker`; `None` for the bare subscriber.
fn start_contender(
    ctx: &Ctx,
    setup: Setup,
    broker: std::net::SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Option<Proc>> {
    Ok(match setup.contender {
        Contender::Bare | Contender::Relay => None,
        Contender::Edgewatch => Some(procs::start_edgewatch(&ctx.edgewatch, broker, setup.rule, timeout, true)?),
        Contender::EdgewatchMemory => Some(procs::start_edgewatch(&ctx.edgewatch, broker, setup.rule, timeout, false)?),
        Contender::NodeRed => {
            let red = ctx.node_red.as_ref().context("Node-RED is not installed")?;
            Some(procs::start_node_red(red, broker, setup.rule, timeout)?)
        }
    })
}

fn output_filter(contender: Contender) -> &'static str {
    match contender {
        Contender::Bare => "sensors/#",
        Contender::Relay => relay::RELAY_EVENTS,
        Contender::Edgewatch | Contender::EdgewatchMemory => procs::EDGEWATCH_EVENTS,
        Contender::NodeRed => procs::NODE_RED_EVENTS,
    }
}

/// Publishes probes until one comes out of the contender (it is connected and subscribed).
fn wait_ready(broker: std::net::SocketAddr, proc: &mut Proc, consumer: &Consumer) -> anyhow::Result<()> {
    let live = consumer.live.clone();
    let through = workload::probe(broker, Duration::from_secs(60), || live.probes.load(Relaxed) > 0)?;
    if !through {
        bail!("no probe came through in 60 s; alive: {}; log:\n{}", proc.alive(), proc.log_tail());
    }
    Ok(())
}

/// CPU ticks of the contender (or of the relay's or the bare subscriber's thread).
fn contender_ticks(proc: Option<&Proc>, relay: Option<&relay::Relay>, consumer: &Consumer) -> Option<u64> {
    match (proc, relay) {
        (Some(p), _) => procs::cpu_ticks(p.pid()),
        (None, Some(r)) => procs::thread_cpu_ticks(r.tid.load(Relaxed)),
        (None, None) => procs::thread_cpu_ticks(consumer.live.tid.load(Relaxed)),
    }
}

fn run_step(ctx: &Ctx, setup: Setup, rate: f64) -> Step {
    let devices = if rate <= 2_000.0 { 1_000 } else { 10_000 };
    let mut step = Step { rate, devices, seconds: ctx.step.as_secs_f64(), ..Step::default() };
    let workload =
        if setup.rule == Rule::Sparkplug { Workload::sparkplug(devices) } else { Workload::readings(devices) };
    if let Err(e) = measure(ctx, setup, workload, &mut step) {
        step.error = Some(format!("{e:#}"));
    }
    step
}

fn measure(ctx: &Ctx, setup: Setup, workload: Workload, step: &mut Step) -> anyhow::Result<()> {
    let (broker, addr) = procs::start_mosquitto(&ctx.mosquitto)?;
    let consumer = Consumer::start(addr, &[output_filter(setup.contender)], Mode::Count, ctx.origin)?;
    let mut proc = start_contender(ctx, setup, addr, UNUSED_TIMEOUT)?;
    if let Some(p) = &mut proc {
        wait_ready(addr, p, &consumer)?;
    }
    let relay = if setup.contender == Contender::Relay {
        let relay = relay::Relay::start(addr)?;
        let live = consumer.live.clone();
        if !workload::probe(addr, Duration::from_secs(10), || live.probes.load(Relaxed) > 0)? {
            bail!("no probe came through the relay in 10 s");
        }
        Some(relay)
    } else {
        None
    };
    if workload.sparkplug {
        // The births go before the measured step, as a gateway's arrive once per session.
        workload::sparkplug_births(addr, &workload, Duration::from_secs(2))?;
    }
    let cpu0 = contender_ticks(proc.as_ref(), relay.as_ref(), &consumer);
    let broker0 = procs::cpu_ticks(broker.pid());
    let t0 = Instant::now();
    let load = workload::publish(&LoadSpec { addr, rate: step.rate, duration: ctx.step, workload }, ctx.origin)?;
    let expected = if setup.contender == Contender::Bare { load.published } else { load.readings };
    let deadline = Instant::now() + ctx.drain_max;
    while consumer.live.answered.load(Relaxed) < expected && Instant::now() < deadline {
        if let Some(p) = &mut proc {
            if !p.alive() {
                bail!("{} exited during the step; log:\n{}", setup.contender.name(), p.log_tail());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = contender_ticks(proc.as_ref(), relay.as_ref(), &consumer);
    if let Some(r) = relay {
        r.finish();
    }
    let broker1 = procs::cpu_ticks(broker.pid());
    step.peak_rss_kib = proc.as_ref().and_then(|p| procs::peak_rss_kib(p.pid()));
    let consumed = consumer.finish();
    if let Some(p) = proc {
        if consumed.answered < expected {
            // Whatever it said about it (the log goes with its temp dir).
            eprintln!(
                "bench: {} log, last lines:\n{}\nbroker log:\n{}",
                setup.label(),
                p.log_tail(),
                broker.log_tail()
            );
        }
        p.stop(ctx.stop_grace);
    }
    drop(broker);

    let cpu_secs = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / ctx.ticks);
    step.cpu_pct = cpu_secs(cpu0, cpu1).map(|c| 100.0 * c / wall);
    step.cpu_us_per_msg = cpu_secs(cpu0, cpu1).map(|c| c * 1e6 / load.published.max(1) as f64);
    step.broker_cpu_pct = cpu_secs(broker0, broker1).map(|c| 100.0 * c / wall);
    step.published = load.published;
    step.expected = expected;
    step.answered = consumed.answered;
    step.duplicates = consumed.duplicates;
    step.lag_p99_us = load.lag_p99_us;
    step.latency = Latency::of(&consumed.latency);
    // From the last publish to the last output (0 when the last output came first).
    let drain = consumed.last_us.saturating_sub(load.last_us) as f64 / 1e3;
    step.drain_ms = (consumed.answered >= expected).then_some(drain);
    Ok(())
}

/// Heartbeat detection: a fleet whose heartbeats stop one device in ten, at staggered times.
fn run_heartbeat(ctx: &Ctx, contender: Contender) -> Detection {
    // Silences start after every device has sent a heartbeat and end early enough that every
    // deadline (last heartbeat + timeout) falls inside the load.
    let (devices, every, reading, timeout, length, from, to) = if ctx.quick {
        (
            1_000,
            Duration::from_secs(1),
            Duration::from_secs(10),
            Duration::from_secs(2),
            Duration::from_secs(5),
            1.0,
            2.5,
        )
    } else {
        (
            10_000,
            Duration::from_secs(5),
            Duration::from_secs(30),
            Duration::from_secs(12),
            Duration::from_secs(28),
            6.0,
            14.0,
        )
    };
    let silenced: Vec<(usize, Duration)> = (0..devices)
        .step_by(10)
        .enumerate()
        .map(|(k, d)| (d, Duration::from_secs_f64(from + (to - from) * k as f64 / (devices / 10) as f64)))
        .collect();
    let workload = Workload { devices, reading_every: reading, heartbeat_every: every, silenced, sparkplug: false };
    let mut d = Detection {
        devices,
        timeout,
        every,
        reading_every: reading,
        rate: workload.natural_rate(),
        ..Detection::default()
    };
    if let Err(e) = detect(ctx, contender, workload, length, &mut d) {
        d.error = Some(format!("{e:#}"));
    }
    d
}

fn detect(
    ctx: &Ctx,
    contender: Contender,
    workload: Workload,
    length: Duration,
    d: &mut Detection,
) -> anyhow::Result<()> {
    let (broker, addr) = procs::start_mosquitto(&ctx.mosquitto)?;
    let consumer =
        Consumer::start(addr, &[output_filter(contender)], Mode::Heartbeat { devices: d.devices }, ctx.origin)?;
    let setup = Setup { contender, rule: Rule::Heartbeat };
    let mut proc = start_contender(ctx, setup, addr, d.timeout)?.context("a heartbeat contender")?;
    wait_ready(addr, &mut proc, &consumer)?;
    let cpu0 = procs::cpu_ticks(proc.pid());
    let t0 = Instant::now();
    let mut silenced = vec![false; d.devices];
    for (i, _) in &workload.silenced {
        if let Some(s) = silenced.get_mut(*i) {
            *s = true;
        }
    }
    let load = workload::publish(&LoadSpec { addr, rate: d.rate, duration: length, workload }, ctx.origin)?;
    // Every silenced device's deadline is before the end of the load; the others' are at
    // least `timeout - heartbeat interval` after it, so a second more counts no device that
    // merely stopped because the load ended.
    std::thread::sleep(Duration::from_secs(1));
    let wall = t0.elapsed().as_secs_f64();
    d.cpu_pct =
        procs::cpu_ticks(proc.pid()).zip(cpu0).map(|(b, a)| 100.0 * b.saturating_sub(a) as f64 / ctx.ticks / wall);
    d.peak_rss_kib = procs::peak_rss_kib(proc.pid());
    let consumed = consumer.finish();
    proc.stop(ctx.stop_grace);
    drop(broker);

    stats::judge_heartbeats(&consumed.reports_us, &silenced, &load.last_heartbeat_us, micros(d.timeout), d);
    Ok(())
}

//! The results as markdown (`side-by-side.md`), a chart (`side-by-side.svg`) and raw JSON
//! (`side-by-side.json`, for comparing runs).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::json;

use crate::procs::Rule;
use crate::stats::{Contender, Criteria, Detection, Setup, Step};

/// Where and with what the run happened.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub date: String,
    pub machine: String,
    pub mosquitto: String,
    pub node_red: Option<String>,
    pub edgewatch: String,
    pub command: String,
    pub quick: bool,
    pub step_seconds: f64,
    /// How long the harness waits for outputs after the load.
    pub drain_max_seconds: f64,
    pub total_seconds: f64,
    /// `/proc/loadavg` before and after the run: how busy the machine was otherwise.
    pub load_before: String,
    pub load_after: String,
}

/// One contender with one rule, across rates.
#[derive(Debug, Clone)]
pub struct Series {
    pub setup: Setup,
    /// By ascending rate.
    pub steps: Vec<Step>,
    pub max_sustained: Option<f64>,
    /// Whether some rate failed (else the maximum is only the top of the ramp).
    pub bounded: bool,
}

impl Series {
    pub fn at(&self, rate: f64) -> Option<&Step> {
        self.steps.iter().find(|s| s.rate == rate)
    }
    fn at_max(&self) -> Option<&Step> {
        self.max_sustained.and_then(|m| self.at(m))
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Results {
    pub meta: Meta,
    pub criteria: Criteria,
    pub series: Vec<Series>,
    pub heartbeats: Vec<(Contender, Detection)>,
}

impl Results {
    fn find(&self, contender: Contender, rule: Rule) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.setup.contender == contender && (s.setup.contender.is_baseline() || s.setup.rule == rule))
    }
}

/// The rate at which latency, CPU and memory are compared (issue 9's latency target).
pub const REFERENCE_RATE: f64 = 10_000.0;

fn rate(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn lat(l: &crate::stats::Latency) -> String {
    if l.count == 0 { "–".into() } else { format!("{} / {} / {} ms", ms(l.p50), ms(l.p99), ms(l.p999)) }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn pct(p: Option<f64>) -> String {
    p.map_or("–".into(), |p| format!("{p:.0}%"))
}

/// A target of issue 9 and whether this run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: &'static str,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

/// Issue 9's four targets, judged on these results.
pub fn targets(r: &Results) -> Vec<Target> {
    let bare = r.find(Contender::Bare, Rule::Threshold);
    let ew = r.find(Contender::Edgewatch, Rule::Threshold);
    let nr = r.find(Contender::NodeRed, Rule::Threshold);
    let max = |s: Option<&Series>| s.and_then(|s| s.max_sustained);
    let mut out = Vec::new();

    let relay = max(r.find(Contender::Relay, Rule::Threshold));
    let t1 = match (max(ew), max(bare)) {
        (Some(e), Some(b)) => Target {
            what: "Edgewatch (threshold) sustains ≥ 90% of the bare subscriber's rate",
            measured: format!(
                "{} / {} msg/s = {:.0}%{}",
                rate(e),
                rate(b),
                100.0 * e / b,
                relay.map_or(String::new(), |l| format!(
                    "; the bare relay (one in, one out, no work) sustains {} msg/s, so Edgewatch does {:.0}% of what the broker allows any contender",
                    rate(l),
                    100.0 * e / l
                ))
            ),
            met: Some(e >= 0.9 * b),
        },
        _ => Target {
            what: "Edgewatch (threshold) sustains ≥ 90% of the bare subscriber's rate",
            measured: "not measured".into(),
            met: None,
        },
    };
    out.push(t1);

    let rss_at_max = |s: Option<&Series>| s.and_then(Series::at_max).and_then(|s| s.peak_rss_kib);
    let t2 = match (max(ew), max(nr), rss_at_max(ew), rss_at_max(nr)) {
        (Some(e), Some(n), Some(er), Some(nrss)) => Target {
            what: "≥ 10× Node-RED's sustained throughput at ≤ 1/5 of its peak RSS",
            measured: format!(
                "{:.1}× ({} vs {} msg/s); RSS {:.2}× ({} vs {}){}",
                e / n,
                rate(e),
                rate(n),
                er as f64 / nrss as f64,
                mib(Some(er)),
                mib(Some(nrss)),
                relay.map_or(String::new(), |l| format!(
                    "; the bare relay itself sustains only {:.1}× Node-RED on this broker",
                    l / n
                ))
            ),
            met: Some(e >= 10.0 * n && er as f64 <= nrss as f64 / 5.0),
        },
        _ => Target {
            what: "≥ 10× Node-RED's sustained throughput at ≤ 1/5 of its peak RSS",
            measured: "not measured".into(),
            met: None,
        },
    };
    out.push(t2);

    let t3 = match ew.and_then(|s| s.at(REFERENCE_RATE)) {
        Some(s) if s.latency.count > 0 => Target {
            what: "End-to-end p99 ≤ 2 ms at 10k msg/s through Mosquitto on loopback",
            measured: format!(
                "p99 {} ms ({} outputs{})",
                ms(s.latency.p99),
                s.latency.count,
                if s.lost() > 0 { ", some lost" } else { "" }
            ),
            met: Some(s.latency.p99 <= 2_000 && s.lost() == 0),
        },
        _ => Target {
            what: "End-to-end p99 ≤ 2 ms at 10k msg/s through Mosquitto on loopback",
            measured: "not measured".into(),
            met: None,
        },
    };
    out.push(t3);

    let t4 = match r.heartbeats.iter().find(|(c, _)| *c == Contender::Edgewatch) {
        Some((_, d)) if d.error.is_none() && d.silenced > 0 => Target {
            what: "A missed heartbeat is reported ≤ 100 ms after its deadline at 10k devices",
            measured: format!(
                "{} devices: {} of {} reported, max {} ms, p99 {} ms after the deadline",
                rate(d.devices as f64),
                d.detected,
                d.silenced,
                ms(d.delay.max),
                ms(d.delay.p99)
            ),
            met: Some(d.devices >= 10_000 && d.detected == d.silenced && d.delay.max <= 100_000),
        },
        _ => Target {
            what: "A missed heartbeat is reported ≤ 100 ms after its deadline at 10k devices",
            measured: "not measured".into(),
            met: None,
        },
    };
    out.push(t4);
    out
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let m = &r.meta;
    let mut o = String::new();
    let _ = writeln!(o, "# Side by side: Edgewatch, the broker's own limit, and Node-RED\n");
    if m.quick {
        let _ = writeln!(o, "**Quick smoke run (`--quick`): short steps, few rates, no ramp. Not for publishing.**\n");
    }
    let _ = writeln!(o, "Generated by the harness in `bench/`; reproduce with one command:\n");
    let _ = writeln!(o, "```sh\n{}\n```\n", m.command);
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| date | {} |", m.date);
    let _ = writeln!(o, "| machine | {} |", m.machine);
    let _ = writeln!(
        o,
        "| broker | Mosquitto {} on loopback; QoS 1 everywhere; `max_inflight_messages 1000`, `max_queued_messages 2000000`, `set_tcp_nodelay true` |",
        m.mosquitto
    );
    let _ = writeln!(
        o,
        "| Edgewatch | {} (release build, `edgewatch run`, durable state in sled: input acknowledged after the flush) |",
        m.edgewatch
    );
    let _ = writeln!(o, "| Node-RED | {} |", m.node_red.as_deref().unwrap_or("not run"));
    let _ = writeln!(
        o,
        "| load | firmware-sim fleet (JSON, readings every 1 s and heartbeats every 5 s per device, time-scaled to the offered rate); 1 000 devices at ≤ 2k msg/s, 10 000 above |"
    );
    let _ = writeln!(
        o,
        "| run | {:.0} s per step, {:.1} min in all; load average before: {}, after: {} |\n",
        m.step_seconds,
        m.total_seconds / 60.0,
        m.load_before,
        m.load_after
    );

    let _ = writeln!(o, "## Summary\n");
    let _ = writeln!(
        o,
        "| contender | max sustained, nothing lost | vs bare subscriber | vs bare relay | latency at 10k msg/s, p50 / p99 / p99.9 | CPU at 10k msg/s | peak RSS at 10k msg/s | peak RSS at max |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---:|---:|");
    let bare_max = r.find(Contender::Bare, Rule::Threshold).and_then(|s| s.max_sustained);
    let relay_max = r.find(Contender::Relay, Rule::Threshold).and_then(|s| s.max_sustained);
    for s in &r.series {
        let at = s.at(REFERENCE_RATE);
        let max = match (s.max_sustained, s.bounded) {
            (Some(v), true) => format!("{} msg/s", rate(v)),
            (Some(v), false) => format!("≥ {} msg/s", rate(v)),
            (None, _) => "none".into(),
        };
        let vs = |limit: Option<f64>, of: Contender| match (s.max_sustained, limit) {
            (Some(v), Some(b)) if s.setup.contender != of && s.setup.contender != Contender::Bare => {
                format!("{:.0}%", 100.0 * v / b)
            }
            _ => "–".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.setup.label(),
            max,
            vs(bare_max, Contender::Bare),
            vs(relay_max, Contender::Relay),
            at.map_or("–".into(), |a| lat(&a.latency)),
            pct(at.and_then(|a| a.cpu_pct)),
            mib(at.and_then(|a| a.peak_rss_kib)),
            mib(s.at_max().and_then(|a| a.peak_rss_kib)),
        );
    }
    let _ = writeln!(o, "\n![throughput and latency](side-by-side.svg)\n");

    let _ = writeln!(o, "## Targets (issue 9)\n");
    let _ = writeln!(o, "| target | measured | met |\n|---|---|---|");
    for t in targets(r) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, met);
    }

    if !r.heartbeats.is_empty() {
        let _ = writeln!(o, "\n## Missed heartbeats\n");
        if let Some((_, d)) = r.heartbeats.first() {
            let _ = writeln!(
                o,
                "Every device sends a heartbeat every {} s and a reading every {} s; one in ten stops its heartbeats, at \
                 staggered times, and must be reported one timeout ({} s) after its last heartbeat. Delay = report \
                 received upstream − (last heartbeat published + timeout); \"early\" counts reports before that instant \
                 (timers that round to milliseconds); \"false\" counts reports of devices that were still sending (a \
                 contender that falls behind sees heartbeats late and reports live devices).\n",
                d.every.as_secs_f64(),
                d.reading_every.as_secs_f64(),
                d.timeout.as_secs_f64()
            );
        }
        let _ = writeln!(
            o,
            "| contender | devices | load | silenced | reported | early | delay p50 / p99 / max | false reports | CPU | peak RSS |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|");
        for (c, d) in &r.heartbeats {
            if let Some(e) = &d.error {
                let _ = writeln!(o, "| {} | {} | | | | | error: {e} | | | |", c.name(), rate(d.devices as f64));
                continue;
            }
            let _ = writeln!(
                o,
                "| {} | {} | {} msg/s | {} | {} | {} | {} / {} / {} ms | {} | {} | {} |",
                c.name(),
                rate(d.devices as f64),
                rate(d.rate),
                d.silenced,
                d.detected,
                d.early,
                ms(d.delay.p50),
                ms(d.delay.p99),
                ms(d.delay.max),
                d.false_reports,
                pct(d.cpu_pct),
                mib(d.peak_rss_kib)
            );
        }
    }

    let _ = writeln!(o, "\n## Every step\n");
    let _ = writeln!(
        o,
        "| contender | offered msg/s | devices | outputs expected | arrived | dup | drain | p50 / p99 / p99.9 / max | CPU | CPU µs/msg | broker CPU | peak RSS | verdict |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|");
    for s in &r.series {
        for st in &s.steps {
            let l = &st.latency;
            let latency = if l.count == 0 {
                "–".to_owned()
            } else {
                format!("{} / {} / {} / {} ms", ms(l.p50), ms(l.p99), ms(l.p999), ms(l.max))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.setup.label(),
                rate(st.rate),
                rate(st.devices as f64),
                st.expected,
                st.answered,
                st.duplicates,
                st.drain_ms.map_or("–".into(), |d| format!("{d:.0} ms")),
                latency,
                pct(st.cpu_pct),
                st.cpu_us_per_msg.map_or("–".into(), |c| format!("{c:.1}")),
                pct(st.broker_cpu_pct),
                mib(st.peak_rss_kib),
                st.verdict(&r.criteria)
            );
        }
    }
    o.push_str(&method(r));
    o
}

fn method(r: &Results) -> String {
    let c = &r.criteria;
    format!(
        "\n## Method\n\n\
    - **One machine, one run.** Mosquitto, the contender, and the harness (load generator and upstream consumer, one thread each) \
    share the same cores; every contender meets the same broker, load and consumer. Each step starts a fresh Mosquitto and a fresh \
    contender process, waits until a probe message comes through it, then offers the load for the step's duration.\n\
    - **Load.** firmware-sim's `Simulation` (as a library) generates the fleet's messages; the harness publishes each when it \
    is due (QoS 1, one connection), with `\"n\"` (its number) and `\"sent\"` (µs, the harness's monotonic clock) put first in the \
    JSON. Every contender subscribes to `sensors/#` and so handles every message, readings and heartbeats.\n\
    - **Outputs.** Each contender turns every reading into one output carrying the reading's `n` and `sent`; the consumer \
    subscribes at QoS 1 to the outputs (the bare subscriber: to `sensors/#` itself, counting every message).\n\
    - **Two limits.** The **bare subscriber** only receives: what the broker can deliver to one client. The **bare relay** \
    (`bench/src/relay.rs`, a thread of the harness) subscribes to `sensors/#` and republishes every reading unchanged at QoS 1, \
    nothing else: the broker's limit for one message in, one out, which is the shape of every contender's work (each reading \
    crosses the broker twice, with the acknowledgements of both legs).\n\
    - **Sustained, nothing lost**: every expected output arrived (counted by `n`, duplicates apart; \"missing\" means not arrived \
    when the harness stopped waiting, {drain_max} s after the load), the last within {drain} ms of \
    the last publish (a contender slower than the offered rate falls behind linearly, so this allows about {pct:.0}% of slack \
    over a {step:.0} s step), and the load generator kept to its schedule (p99 lateness ≤ {lag} ms). The ramp walks up \
    1k, 2k, 5k, 10k, 20k, 30k, 50k, 70k, 100k, 140k, 200k msg/s until a step fails (1k, 10k and 50k always run), then bisects \
    twice between the best pass and the first failure.\n\
    - **Latency**: output received by the consumer − `sent`, every output of the step (hdrhistogram, 3 significant digits). \
    For an overloaded step it mostly measures queueing.\n\
    - **CPU**: utime + stime of the contender's process from `/proc/<pid>/stat` over the step (load start to drain end), as % of \
    one core; per message published. The bare subscriber's and the bare relay's are their threads'. **Peak RSS**: `VmHWM` of the contender's process at \
    the end of the step (a fresh process per step).\n\
    - **Edgewatch** runs `edgewatch run` with the rules below, durable state on (the default: sled, flush before acknowledging), \
    upstream events as CloudEvents at QoS 1. **Node-RED** runs flows written by the harness (`bench/src/procs.rs`): \
    threshold: mqtt in → json → switch (`payload.temperature > 20`) → mqtt out; window: mqtt in → json → switch (readings) → \
    function (last 10 per topic in context; count, average) → mqtt out; heartbeat: mqtt in → json → switch (heartbeats) → \
    trigger (handle each `msg.topic` separately, send nothing, then the latest message after the timeout, each message extends \
    the delay) → mqtt out. One trigger node in per-topic mode is Node-RED's per-device watchdog. **Edgewatch, state in \
    memory** (when present) is the same agent with `state.durable = false`, for reference: what durability costs.\n\n\
    ```rhai\n{threshold}\n{window}\n{heartbeat}```\n",
        drain = c.drain.as_millis(),
        drain_max = r.meta.drain_max_seconds,
        lag = c.lag.as_millis(),
        step = r.meta.step_seconds,
        pct = 100.0 * c.drain.as_secs_f64() / r.meta.step_seconds.max(0.1),
        threshold = crate::procs::edgewatch_rules(Rule::Threshold, std::time::Duration::from_secs(5))
            .split("\nrule(\"probe\"")
            .next()
            .unwrap_or_default(),
        window = crate::procs::edgewatch_rules(Rule::Window, std::time::Duration::from_secs(5))
            .split("\nrule(\"probe\"")
            .next()
            .unwrap_or_default(),
        heartbeat = crate::procs::edgewatch_rules(Rule::Heartbeat, std::time::Duration::from_secs(5))
            .split("\nrule(\"probe\"")
            .next()
            .unwrap_or_default(),
    )
}

/// The raw results, for comparing runs.
pub fn json(r: &Results) -> serde_json::Value {
    let lat = |l: &crate::stats::Latency| json!({"count": l.count, "p50_us": l.p50, "p99_us": l.p99, "p999_us": l.p999, "max_us": l.max});
    json!({
        "date": r.meta.date,
        "machine": r.meta.machine,
        "mosquitto": r.meta.mosquitto,
        "node_red": r.meta.node_red,
        "edgewatch": r.meta.edgewatch,
        "command": r.meta.command,
        "quick": r.meta.quick,
        "load_before": r.meta.load_before,
        "load_after": r.meta.load_after,
        "series": r.series.iter().map(|s| json!({
            "setup": s.setup.label(),
            "max_sustained": s.max_sustained,
            "bounded": s.bounded,
            "steps": s.steps.iter().map(|st| json!({
                "rate": st.rate, "devices": st.devices, "published": st.published, "expected": st.expected,
                "answered": st.answered, "duplicates": st.duplicates, "drain_ms": st.drain_ms,
                "latency": lat(&st.latency), "cpu_pct": st.cpu_pct, "cpu_us_per_msg": st.cpu_us_per_msg,
                "broker_cpu_pct": st.broker_cpu_pct, "peak_rss_kib": st.peak_rss_kib, "lag_p99_us": st.lag_p99_us,
                "sustained": st.sustained(&r.criteria), "verdict": st.verdict(&r.criteria),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "heartbeats": r.heartbeats.iter().map(|(c, d)| json!({
            "contender": c.name(), "devices": d.devices, "silenced": d.silenced, "detected": d.detected,
            "early": d.early, "delay": lat(&d.delay), "false_reports": d.false_reports,
            "timeout_ms": d.timeout.as_millis() as u64, "rate": d.rate, "cpu_pct": d.cpu_pct,
            "peak_rss_kib": d.peak_rss_kib, "error": d.error,
        })).collect::<Vec<_>>(),
    })
}

fn short(setup: Setup) -> String {
    match setup.contender {
        Contender::Bare => "broker limit".into(),
        Contender::Relay => "relay limit".into(),
        Contender::Edgewatch => format!("Edgewatch {}", setup.rule.name()),
        Contender::EdgewatchMemory => format!("Edgewatch {} (memory)", setup.rule.name()),
        Contender::NodeRed => format!("Node-RED {}", setup.rule.name()),
    }
}

fn color(setup: Setup) -> RGBColor {
    match (setup.contender, setup.rule) {
        (Contender::Bare, _) => RGBColor(120, 120, 120),
        (Contender::Relay, _) => RGBColor(170, 170, 170),
        (Contender::Edgewatch, Rule::Window) => RGBColor(90, 160, 230),
        (Contender::Edgewatch, _) => RGBColor(20, 90, 180),
        (Contender::EdgewatchMemory, _) => RGBColor(60, 170, 110),
        (Contender::NodeRed, Rule::Window) => RGBColor(240, 140, 110),
        (Contender::NodeRed, _) => RGBColor(190, 40, 30),
    }
}

/// The chart: maximum sustained throughput per contender (left) and p99 latency against the
/// offered rate for the steps that were sustained (right, log-log).
pub fn svg(r: &Results, path: &Path) -> anyhow::Result<()> {
    draw(r, path).map_err(|e| anyhow::anyhow!("{e}")).with_context(|| format!("cannot draw {}", path.display()))
}

fn draw(r: &Results, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let base = SVGBackend::new(path, (1240, 500)).into_drawing_area();
    base.fill(&WHITE)?;
    let root = base.clone();
    let title = format!("Through Mosquitto on loopback, one machine ({}), {}", r.meta.machine, r.meta.date);
    let root = root.titled(&title, ("sans-serif", 18))?;
    let (left, right) = root.split_horizontally(620);

    let series: Vec<&Series> = r.series.iter().collect();
    let top = series.iter().filter_map(|s| s.max_sustained).fold(1_000.0f64, f64::max) * 1.15;
    let n = series.len().max(1);
    let mut bars = ChartBuilder::on(&left)
        .caption("max sustained, nothing lost (msg/s)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
    bars.configure_mesh().disable_x_mesh().x_labels(0).y_label_formatter(&|v| rate(*v)).y_labels(8).draw()?;
    for (i, s) in series.iter().enumerate() {
        let v = s.max_sustained.unwrap_or(0.0);
        let x = i as f64;
        bars.draw_series(std::iter::once(Rectangle::new([(x + 0.15, 0.0), (x + 0.85, v)], color(s.setup).filled())))?;
        let label = if s.bounded || s.max_sustained.is_none() { rate(v) } else { format!("≥{}", rate(v)) };
        bars.draw_series(std::iter::once(Text::new(label, (x + 0.2, v + top * 0.02), ("sans-serif", 13))))?;
        // Two short lines under each bar: who, and which rule.
        let (who, what) = match s.setup.contender {
            Contender::Bare => ("broker".to_owned(), "limit".to_owned()),
            Contender::Relay => ("relay".to_owned(), "limit".to_owned()),
            Contender::EdgewatchMemory => ("Edgewatch".to_owned(), format!("{} (mem)", s.setup.rule.name())),
            c => (c.name().to_owned(), s.setup.rule.name().to_owned()),
        };
        // Below the axis, in pixels (chart coordinates outside the range are clamped).
        let (px, py) = bars.backend_coord(&(x + 0.5, 0.0));
        let style = TextStyle::from(("sans-serif", 12)).pos(Pos::new(HPos::Center, VPos::Top));
        base.draw(&Text::new(who, (px, py + 6), style.clone()))?;
        base.draw(&Text::new(what, (px, py + 20), style))?;
    }

    let points: Vec<(Setup, Vec<(f64, f64)>)> = series
        .iter()
        .map(|s| {
            let pts = s
                .steps
                .iter()
                .filter(|st| st.sustained(&r.criteria) && st.latency.count > 0)
                .map(|st| (st.rate, (st.latency.p99.max(1) as f64) / 1000.0))
                .collect();
            (s.setup, pts)
        })
        .collect();
    let max_rate = points.iter().flat_map(|(_, p)| p.iter().map(|x| x.0)).fold(2_000.0f64, f64::max) * 1.5;
    let max_ms = points.iter().flat_map(|(_, p)| p.iter().map(|x| x.1)).fold(1.0f64, f64::max) * 2.0;
    let mut lines = ChartBuilder::on(&right)
        .caption("p99 latency, publish → output received (ms)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((500f64..max_rate).log_scale(), (0.05f64..max_ms).log_scale())?;
    lines
        .configure_mesh()
        .x_desc("offered msg/s")
        .x_labels(6)
        .y_labels(6)
        .max_light_lines(2)
        .x_label_formatter(&|v| rate(*v))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (setup, pts) in points {
        if pts.is_empty() {
            continue;
        }
        let c = color(setup);
        lines
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(short(setup))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        lines.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
    }
    lines
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latency;
    use std::time::Duration;

    fn step(rate: f64, p99: u64, rss: u64, ok: bool) -> Step {
        Step {
            rate,
            devices: 10_000,
            seconds: 10.0,
            published: (rate * 10.0) as u64,
            expected: 100,
            answered: if ok { 100 } else { 90 },
            drain_ms: ok.then_some(2.0),
            latency: Latency { count: 100, p50: p99 / 2, p99, p999: p99 * 2, max: p99 * 3 },
            cpu_pct: Some(40.0),
            cpu_us_per_msg: Some(12.0),
            broker_cpu_pct: Some(30.0),
            peak_rss_kib: Some(rss),
            ..Step::default()
        }
    }

    fn series(contender: Contender, rule: Rule, steps: Vec<Step>, max: f64) -> Series {
        Series { setup: Setup { contender, rule }, steps, max_sustained: Some(max), bounded: true }
    }

    fn results() -> Results {
        Results {
            meta: Meta {
                date: "2026-11-21".into(),
                machine: "AMD EPYC, 2 cores".into(),
                mosquitto: "2.0.11".into(),
                node_red: Some("4.1.15 (Node.js v20)".into()),
                edgewatch: "0.1.0".into(),
                command: "cargo run --release -p bench".into(),
                step_seconds: 10.0,
                total_seconds: 600.0,
                ..Meta::default()
            },
            criteria: Criteria { drain: Duration::from_millis(500), lag: Duration::from_millis(50) },
            series: vec![
                series(
                    Contender::Bare,
                    Rule::Threshold,
                    vec![step(10_000.0, 500, 0, true), step(100_000.0, 900, 0, true)],
                    100_000.0,
                ),
                series(
                    Contender::Edgewatch,
                    Rule::Threshold,
                    vec![step(10_000.0, 1_500, 20_000, true), step(95_000.0, 3_000, 25_000, true)],
                    95_000.0,
                ),
                series(
                    Contender::NodeRed,
                    Rule::Threshold,
                    vec![step(5_000.0, 4_000, 150_000, true), step(10_000.0, 90_000, 160_000, false)],
                    5_000.0,
                ),
            ],
            heartbeats: vec![(
                Contender::Edgewatch,
                Detection {
                    devices: 10_000,
                    silenced: 1000,
                    detected: 1000,
                    delay: Latency { count: 1000, p50: 2_000, p99: 9_000, p999: 12_000, max: 15_000 },
                    timeout: Duration::from_secs(5),
                    rate: 6_000.0,
                    ..Detection::default()
                },
            )],
        }
    }

    #[test]
    fn targets_are_judged_from_the_numbers() {
        let t = targets(&results());
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].met, Some(true), "{:?}", t[0]); // 95k of 100k
        assert!(t[0].measured.contains("95%"));
        assert_eq!(t[1].met, Some(true), "{:?}", t[1]); // 19x, 25 MB vs 150 MB
        assert_eq!(t[2].met, Some(true), "{:?}", t[2]); // p99 1.5 ms
        assert_eq!(t[3].met, Some(true), "{:?}", t[3]); // max 15 ms

        let mut r = results();
        r.series[1].steps[0].latency.p99 = 2_500;
        r.series[1].max_sustained = Some(80_000.0);
        r.series[1].steps[1].rate = 80_000.0;
        let t = targets(&r);
        assert_eq!(t[0].met, Some(false));
        assert_eq!(t[2].met, Some(false));
        r.heartbeats.clear();
        r.series.truncate(2);
        let t = targets(&r);
        assert_eq!((t[1].met, t[3].met), (None, None));
    }

    #[test]
    fn contenders_are_also_compared_with_the_relay() {
        let mut r = results();
        r.series.insert(1, series(Contender::Relay, Rule::Threshold, vec![step(10_000.0, 600, 0, true)], 50_000.0));
        let md = markdown(&r);
        assert!(md.contains("| Edgewatch, threshold | 95\u{202f}000 msg/s | 95% | 190% |"), "{md}");
        assert!(md.contains("| bare relay (broker limit, one in, one out) | 50\u{202f}000 msg/s | 50% | – |"), "{md}");
        let t = targets(&r);
        assert_eq!(t[0].met, Some(true));
        assert!(
            t[0].measured.contains("the bare relay (one in, one out, no work) sustains 50\u{202f}000 msg/s"),
            "{}",
            t[0].measured
        );
        assert!(t[1].measured.contains("the bare relay itself sustains only 10.0× Node-RED"), "{}", t[1].measured);
    }

    #[test]
    fn markdown_has_the_summary_every_step_and_the_method() {
        let md = markdown(&results());
        assert!(md.contains("cargo run --release -p bench"));
        assert!(md.contains("| date | 2026-11-21 |"));
        assert!(
            md.contains("| Edgewatch, threshold | 95\u{202f}000 msg/s | 95% | – | 0.75 / 1.50 / 3.00 ms |"),
            "{md}"
        );
        assert!(md.contains("| Node-RED, threshold | 5\u{202f}000 msg/s | 5% | – |"), "{md}");
        assert!(md.contains("10 of 100 outputs missing"), "{md}");
        assert!(md.contains("rule(\"threshold\""));
        assert!(!md.contains("rule(\"probe\""), "the probe rule is the harness's, not part of the method");
        // Every table row has as many cells as its header.
        for table in md.split("\n\n").filter(|b| b.starts_with('|')) {
            let cells: Vec<usize> = table.lines().map(|l| l.matches('|').count()).collect();
            assert!(cells.iter().all(|&c| c == cells[0]), "ragged table:\n{table}");
        }
    }

    #[test]
    fn chart_is_an_svg_with_every_contender() {
        let dir = tempfile::tempdir().expect("temp dir");
        // BENCH_CHART_OUT=/tmp/chart.svg keeps the chart to look at.
        let path = std::env::var_os("BENCH_CHART_OUT").map_or_else(|| dir.path().join("chart.svg"), Into::into);
        svg(&results(), &path).expect("drawn");
        let text = std::fs::read_to_string(&path).expect("written");
        assert!(text.starts_with("<svg"));
        for label in ["broker limit", "Edgewatch threshold", "Node-RED threshold"] {
            assert!(text.contains(label), "{label} missing");
        }
    }

    #[test]
    fn json_round_trips_the_numbers() {
        let v = json(&results());
        assert_eq!(v["series"][1]["steps"][0]["latency"]["p99_us"], 1_500);
        assert_eq!(v["series"][2]["steps"][1]["sustained"], false);
        assert_eq!(v["heartbeats"][0]["delay"]["max_us"], 15_000);
    }

    #[test]
    fn rates_get_thin_space_thousands() {
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1_000.0), "1\u{202f}000");
        assert_eq!(rate(1_234_567.0), "1\u{202f}234\u{202f}567");
    }
}

//! Engine benchmarks: single-core throughput per rule kind, memory per tracked key and per
//! compiled rule. Prints a markdown table (`cargo bench -p edgewatch-engine`).
//!
//! Times are wall-clock on whatever machine runs this; memory is counted exactly by an
//! instrumented allocator. Events are built before timing starts, so the numbers are the
//! engine's own cost: routing, keying, state, and the Rhai calls of each rule.

use edgewatch_engine::{
    Dynamic, Engine, EngineConfig, Event, Map, Outputs, RuleSet, Sandbox, Table, Tables, Timestamp,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn engine_with(src: &str, tables: Tables) -> Engine {
    let sandbox = Arc::new(Sandbox::default());
    let (rules, errors) = RuleSet::compile(&sandbox, [("bench.rhai", src)]);
    assert!(errors.is_empty(), "{errors:?}");
    Engine::with_config(sandbox, rules, tables, EngineConfig { dedup: false, ..EngineConfig::default() })
}

fn reading(topic: &str, value: f64, t: i64) -> Event {
    let mut m = Map::new();
    m.insert("temperature".into(), Dynamic::from_float(value));
    Event::new(topic, Dynamic::from_map(m), topic.as_bytes(), Timestamp(t))
}

/// Runs `events` through `engine` repeatedly for about `budget`; returns events per second
/// and composite events produced.
fn throughput(engine: &mut Engine, events: &[Event], budget: Duration) -> (f64, u64) {
    let mut out = Outputs::default();
    let mut done = 0u64;
    let mut produced = 0u64;
    let start = Instant::now();
    let mut t_offset = 0;
    while start.elapsed() < budget {
        for e in events {
            let mut e = e.clone();
            e.time = Timestamp(e.time.millis() + t_offset);
            let now = e.time;
            engine.process(e, now, &mut out);
            produced += out.events.len() as u64;
            out.clear();
        }
        done += events.len() as u64;
        t_offset += 1_000_000;
    }
    (done as f64 / start.elapsed().as_secs_f64(), black_box(produced))
}

fn net_bytes(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64 + c.bytes_reallocated as i64
}

struct Row {
    case: String,
    value: String,
    note: String,
}

fn main() {
    let budget = Duration::from_millis(std::env::var("BENCH_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000));
    let mut rows: Vec<Row> = Vec::new();
    let k = |n: f64| format!("{:.0}k events/s", n / 1000.0);

    // 1. Threshold with hysteresis, 1000 keys.
    let src =
        r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > 80.0, clear: |e| e.value < 75.0 });"#;
    let mut eng = engine_with(src, Tables::new());
    let events: Vec<Event> = (0..10_000)
        .map(|i| reading(&format!("sensors/d{}/temperature", i % 1000), if i % 7 == 0 { 85.0 } else { 20.0 }, i))
        .collect();
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row {
        case: "threshold rule (hysteresis), 1k keys".into(),
        value: k(rate),
        note: "one `when` call per event, `clear` while active".into(),
    });

    // 1b. Stateless filter.
    let src = r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > 80.0 });"#;
    let mut eng = engine_with(src, Tables::new());
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row { case: "filter rule".into(), value: k(rate), note: "one `when` call per event".into() });

    // 2. Sliding window over 10k keys: three readings above 80 within 60 s.
    let src = r#"
        rule("overheat", #{
            on: "sensors/{device}/temperature",
            window: #{ size: "60s", filter: |e| e.value > 80.0 },
            when: |e| e.window.count >= 3,
            clear: |e| e.window.count == 0,
        });"#;
    let mut eng = engine_with(src, Tables::new());
    let events: Vec<Event> = (0..50_000)
        .map(|i| reading(&format!("sensors/d{}/temperature", i % 10_000), if i % 3 == 0 { 85.0 } else { 20.0 }, i * 5))
        .collect();
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row {
        case: "sliding window rule, 10k keys".into(),
        value: k(rate),
        note: "filter + when (+ clear) per event".into(),
    });

    // 2b. Anomaly and forecast rules, 1k keys: a wave with a ripple, a reading a minute per key.
    let wave = |i: i64| 20.0 + 2.0 * ((i / 1000) as f64 / 229.0).sin() + ((i * 7919) % 13) as f64 * 0.01;
    let events: Vec<Event> = (0..100_000)
        .map(|i| reading(&format!("sensors/d{}/temperature", i % 1000), wave(i), (i / 1000) * 60_000))
        .collect();
    for (case, src, note) in [
        (
            "anomaly rule, 1k keys",
            r#"rule("odd", #{ on: "sensors/{device}/temperature", anomaly: #{} });"#,
            "novelty + level statistics + episode per event",
        ),
        (
            "anomaly rule with the daily profile, 1k keys",
            r#"rule("odd", #{ on: "sensors/{device}/temperature", anomaly: #{ daily: true } });"#,
            "+ the hour's mean and spread",
        ),
        (
            "forecast rule, 1k keys",
            r#"rule("low", #{ on: "sensors/{device}/temperature", forecast: #{ below: 10, horizon: "1d" } });"#,
            "weighted line update + fit + crossing per event",
        ),
    ] {
        let mut eng = engine_with(src, Tables::new());
        let (rate, _) = throughput(&mut eng, &events, budget);
        rows.push(Row { case: case.into(), value: k(rate), note: note.into() });
    }
    // Memory per key of each: 10k keys, a day of readings for the first 100 (the profile full),
    // less the same run through a stuck-sensor rule (24 B of state a key): what the kind's own
    // state costs, beyond what the engine keeps for any key (its name, map slot, recency).
    let mut baseline = None;
    for (case, src) in [
        ("stuck rule (baseline)", r#"rule("st", #{ on: "s/{device}/temperature", stuck: #{ unchanged: "1h" } });"#),
        (
            "anomaly rule (daily profile): memory per key",
            r#"rule("odd", #{ on: "s/{device}/temperature", anomaly: #{ daily: true } });"#,
        ),
        (
            "forecast rule: memory per key",
            r#"rule("low", #{ on: "s/{device}/temperature", forecast: #{ below: 10, horizon: "1d" } });"#,
        ),
    ] {
        let mut eng = engine_with(src, Tables::new());
        let mut out = Outputs::default();
        let region = Region::new(GLOBAL);
        for i in 0..10_000i64 {
            eng.process(reading(&format!("s/d{i:05}/temperature"), wave(i), 0), Timestamp(0), &mut out);
            out.clear();
        }
        for m in 1..1_440i64 {
            for d in 0..100 {
                eng.process(
                    reading(&format!("s/d{d:05}/temperature"), wave(m * 1000), m * 60_000),
                    Timestamp(m * 60_000),
                    &mut out,
                );
                out.clear();
            }
        }
        let per_key = net_bytes(&region) as f64 / 10_000.0;
        let saved = eng.export_all().iter().map(|(_, b)| b.len()).max().unwrap_or(0);
        let Some(base) = baseline else {
            baseline = Some(per_key - 24.0);
            continue;
        };
        rows.push(Row {
            case: case.into(),
            value: format!("{:.0} B", per_key - base),
            note: format!("{per_key:.0} B with the engine's own per-key cost; saved form at most {saved} B"),
        });
    }

    // 3. Sequence with negation, 1k doors.
    let src = r#"
        rule("door-forced", #{
            on: ["doors/{device}/open", "doors/{device}/badge"],
            sequence: [
                #{ name: "opened", when: |e| e.levels[2] == "open" },
                #{ name: "badge", when: |e| e.levels[2] == "badge", absent: true },
            ],
            within: "10s",
        });"#;
    let mut eng = engine_with(src, Tables::new());
    let events: Vec<Event> = (0..20_000)
        .map(|i| {
            let kind = if i % 2 == 0 { "open" } else { "badge" };
            Event::new(format!("doors/d{}/{kind}", (i / 2) % 1000), Dynamic::from_int(1), b"1", Timestamp(i * 3))
        })
        .collect();
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row {
        case: "sequence rule with negation, 1k keys".into(),
        value: k(rate),
        note: "both steps' predicates per event".into(),
    });

    // 4. 300 rules on one topic.
    let src: String = (0..300)
        .map(|i| {
            format!("rule(\"r{i}\", #{{ on: \"sensors/{{device}}/temperature\", when: |e| e.value > {} }});\n", 50 + i)
        })
        .collect();
    let mut eng = engine_with(&src, Tables::new());
    let events: Vec<Event> =
        (0..1_000).map(|i| reading(&format!("sensors/d{}/temperature", i % 100), 20.0, i)).collect();
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row {
        case: "300 filter rules on one topic".into(),
        value: format!("{:.0}k rule evaluations/s", rate * 300.0 / 1000.0),
        note: format!("{:.0} events/s", rate),
    });

    // 5. Heartbeats: memory per key and tick cost with 100k keys.
    let src = r#"rule("offline", #{ on: "hb/{device}", heartbeat: #{ timeout: "30s" } });"#;
    let mut eng = engine_with(src, Tables::new());
    let n = 100_000usize;
    let events: Vec<Event> =
        (0..n).map(|i| Event::new(format!("hb/d{i:06}"), Dynamic::from_int(1), b"1", Timestamp(0))).collect();
    let mut out = Outputs::default();
    let region = Region::new(GLOBAL);
    for e in events.iter().cloned() {
        eng.process(e, Timestamp(0), &mut out);
        out.clear();
    }
    let per_key = net_bytes(&region) as f64 / n as f64;
    rows.push(Row {
        case: "heartbeat state, 100k keys".into(),
        value: format!("{per_key:.0} bytes/key"),
        note: "key, deadline, timer entry, map slot".into(),
    });
    // Refresh everyone (no timer work), then tick: nothing due.
    let start = Instant::now();
    for e in events.iter().cloned() {
        let mut e = e;
        e.time = Timestamp(10_000);
        eng.process(e, Timestamp(10_000), &mut out);
        out.clear();
    }
    let refresh = n as f64 / start.elapsed().as_secs_f64();
    rows.push(Row {
        case: "heartbeat messages, 100k keys".into(),
        value: k(refresh),
        note: "a sign of life moves a deadline; no timer work".into(),
    });
    let start = Instant::now();
    eng.tick(Timestamp(20_000), &mut out);
    let idle_tick = start.elapsed();
    rows.push(Row {
        case: "tick, 100k keys, none due".into(),
        value: format!("{:.1} µs", idle_tick.as_secs_f64() * 1e6),
        note: "O(expired), not O(keys)".into(),
    });
    // At 30 s every entry fires once and reschedules; at 40 s all are missing.
    let start = Instant::now();
    eng.tick(Timestamp(30_000), &mut out);
    let reschedule = start.elapsed();
    out.clear();
    let start = Instant::now();
    eng.tick(Timestamp(40_000), &mut out);
    let fire = start.elapsed();
    let missing = out.events.len();
    out.clear();
    rows.push(Row {
        case: "tick, 100k deadlines moved".into(),
        value: format!("{:.0} ns/key", reschedule.as_secs_f64() * 1e9 / n as f64),
        note: "each entry pops and reschedules once per timeout".into(),
    });
    rows.push(Row {
        case: format!("tick, {missing} keys missing"),
        value: format!("{:.2} µs/missing event", fire.as_secs_f64() * 1e6 / missing.max(1) as f64),
        note: "includes building each event".into(),
    });

    // 6. Memory per compiled rule.
    let sandbox = Sandbox::default();
    let files: Vec<(String, String)> = (0..300)
        .map(|i| {
            (format!("r{i}.rhai"), format!(
                "rule(\"r{i}\", #{{ on: \"sensors/{{device}}/temperature\", window: #{{ size: \"60s\", filter: |e| e.value > 80.0 }}, when: |e| e.window.count >= 3, emit: |e| #{{ n: e.window.count, max: e.window.max }} }});\n"
            ))
        })
        .collect();
    let region = Region::new(GLOBAL);
    let (set, errors) = RuleSet::compile(&sandbox, files.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let per_rule = net_bytes(&region) as f64 / set.len() as f64;
    assert!(errors.is_empty());
    black_box(&set);
    rows.push(Row {
        case: "compiled window rule (own file)".into(),
        value: format!("{:.1} KB/rule", per_rule / 1024.0),
        note: "AST, closures, patterns".into(),
    });

    // 7. Lookup-table enrichment in the predicate.
    let csv: String = std::iter::once("device,limit\n".to_owned())
        .chain((0..1000).map(|i| format!("d{i},{}\n", 70 + i % 20)))
        .collect();
    let mut tables = Tables::new();
    tables.insert("devices".into(), Arc::new(Table::from_csv("devices", &csv).expect("table")));
    let src = r#"rule("hot", #{ on: "sensors/{device}/temperature", when: |e| e.value > lookup("devices", e.device, "limit", 80) });"#;
    let mut eng = engine_with(src, tables);
    let events: Vec<Event> =
        (0..10_000).map(|i| reading(&format!("sensors/d{}/temperature", i % 1000), 20.0, i)).collect();
    let (rate, _) = throughput(&mut eng, &events, budget);
    rows.push(Row {
        case: "filter with per-device lookup".into(),
        value: k(rate),
        note: "`lookup(table, key, column, default)` per event".into(),
    });

    // 8. Custom handler, 1k keys: a running mean in `this` (copied before each call, so a
    // failed call can be rolled back), with a small and a 200-entry state.
    for (what, init) in [("small state", "#{ n: 0, sum: 0.0 }"), ("200-entry state", "#{ n: 0, sum: 0.0, pad: PAD }")] {
        let pad = format!("#{{ {} }}", (0..200).map(|i| format!("f{i}: {i}")).collect::<Vec<_>>().join(", "));
        let src = format!(
            r#"rule("mean", #{{ on: "sensors/{{device}}/temperature", state: {init},
                on_event: |e| {{ this.n += 1; this.sum += e.value; if this.sum / this.n > 80.0 {{ emit(#{{ n: this.n }}); }} }} }});"#
        )
        .replace("PAD", &pad);
        let mut eng = engine_with(&src, Tables::new());
        let events: Vec<Event> =
            (0..10_000).map(|i| reading(&format!("sensors/d{}/temperature", i % 1000), 20.0, i)).collect();
        let (rate, _) = throughput(&mut eng, &events, budget);
        rows.push(Row {
            case: format!("handler rule, 1k keys, {what}"),
            value: k(rate),
            note: "one `on_event` call per event; `this` copied for rollback".into(),
        });
    }

    // 9. A rule's past read at every reading, 1k keys, and the same closure without it
    // (the side-by-side harness's `past` and `script` setups). A key reads every 6 s (10
    // readings a bucket), a pass is 6 minutes, and the next starts about 17 minutes on: a
    // key's hour holds a third of its buckets or more.
    for (what, past, read, note) in [
        (
            "past, `1h by 1m`, 1k keys",
            r#"past: #{ temperature: "1h by 1m" },"#,
            r#"history("temperature", "1h")"#,
            "`history(field, span)` per event; the reading folded into the key's past",
        ),
        (
            "the same closure without its past",
            "",
            "#{ count: 0, avg: 0.0, min: 0.0, max: 0.0, stddev: 0.0 }",
            "a map of the same five numbers built in its place",
        ),
    ] {
        let src = format!(
            r#"rule("r", #{{ on: "sensors/{{device}}/temperature", {past} when: |e| {{ let h = {read}; e.temperature > 20.0 || h.count < 0 }} }});"#
        );
        let mut eng = engine_with(&src, Tables::new());
        let events: Vec<Event> = (0..60_000)
            .map(|i| reading(&format!("sensors/d{}/temperature", i % 1000), 20.0 + (i % 7) as f64, i * 6))
            .collect();
        let (rate, _) = throughput(&mut eng, &events, budget);
        rows.push(Row { case: format!("filter rule with a closure: {what}"), value: k(rate), note: note.into() });
    }

    println!("| case | result | note |");
    println!("|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.case, r.value, r.note);
    }
}

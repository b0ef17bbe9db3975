//! The past inside rules (`past`, `history(...)`): spans against a reference over a generated
//! stream, offsets, the ring moving on with event time, restarts, reloads, bad readings,
//! key limits, seeding, and the worked example of docs/rules.md.

use crate::support::{H, Out};
use edgewatch_engine::history::{Rollup, Skip};
use edgewatch_engine::{Dynamic, Event, Map, PastWant, RuleSet, SeedError, Seeded, Timestamp, Touched};
use serde_json::Value;
use std::collections::BTreeMap;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// Midnight UTC, Monday 5 January 2026.
const T0: i64 = 20_458 * DAY;

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn compile(h: &H, src: &str) -> RuleSet {
    let (set, errors) = RuleSet::compile(h.engine.sandbox(), [("test.rhai", src)]);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

const SPANS: &str = r#"
rule("spans", #{
    on: "s/{device}/t",
    past: #{ t: "1d by 1h" },
    emit: |e| #{
        day: history("t", "1d"),
        six: history("t", "6h"),
        now: history("t", "1h"),
        yday: history("t", "1h", "1d"),
        every2: history("t", "1h", "2h", 4),
        all: history("t", "25h"),
    },
});
"#;

/// The asks of `SPANS`: (name, span, offset, times), in hours.
const ASKS: [(&str, i64, i64, i64); 6] =
    [("day", 24, 0, 1), ("six", 6, 0, 1), ("now", 1, 0, 1), ("yday", 1, 24, 1), ("every2", 1, 2, 4), ("all", 25, 0, 1)];

/// The readings an ask at time `t` covers, from every earlier reading of the key.
fn covered(readings: &[(i64, f64)], t: i64, (span, offset, times): (i64, i64, i64)) -> Vec<f64> {
    let c = t.div_euclid(HOUR);
    let ranges: Vec<(i64, i64)> = (1..=times).map(|k| (c - offset * k - span + 1, c - offset * k)).collect();
    readings
        .iter()
        .filter(|(at, _)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&at.div_euclid(HOUR))))
        .map(|r| r.1)
        .collect()
}

/// `got` (a `history(...)` map, as JSON) holds the readings `want`: count, min and max
/// exactly, avg and stddev to f32 precision.
fn check(got: &Value, want: &[f64], what: &str) {
    assert_eq!(got["count"].as_u64(), Some(want.len() as u64), "{what}: {got}");
    if want.is_empty() {
        for f in ["avg", "min", "max", "stddev"] {
            assert!(got[f].is_null(), "{what}: {f} of nothing: {got}");
        }
        return;
    }
    let n = want.len() as f64;
    let mean = want.iter().sum::<f64>() / n;
    let var = if want.len() > 1 { want.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let min = want.iter().copied().fold(f64::INFINITY, f64::min);
    let max = want.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!((got["min"].as_f64(), got["max"].as_f64()), (Some(min), Some(max)), "{what}: {got}");
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() <= 1e-5 * b.abs().max(1.0));
    assert!(close(got["avg"].as_f64(), mean), "{what}: avg {} vs {mean}", got["avg"]);
    assert!(close(got["stddev"].as_f64(), var.sqrt()), "{what}: stddev {} vs {}", got["stddev"], var.sqrt());
}

/// Steps of (device, time, reading): two devices, gaps of minutes mostly, of hours
/// sometimes, and now and then of more than the day kept.
fn stream(seed: u64, steps: usize) -> Vec<(u8, i64, f64)> {
    let mut rng = Lcg(seed);
    let mut t = T0;
    (0..steps)
        .map(|_| {
            t += match rng.below(100) {
                0..=79 => (1 + rng.below(40) as i64) * MIN,
                80..=94 => (1 + rng.below(5) as i64) * HOUR,
                _ => (20 + rng.below(20) as i64) * HOUR,
            };
            let cents = rng.below(5000) as i64 - 1000;
            (rng.below(2) as u8, t, cents as f64 / 100.0)
        })
        .collect()
}

#[test]
fn spans_and_offsets_match_a_reference_over_a_generated_stream() {
    let mut h = H::new(SPANS);
    let mut seen: BTreeMap<u8, Vec<(i64, f64)>> = BTreeMap::new();
    for (d, t, v) in stream(11, 600) {
        let out = h.send(t, &format!("s/d{d}/t"), &v.to_string());
        assert_eq!(out.len(), 1, "{:?}", h.faults);
        let readings = seen.entry(d).or_default();
        for (name, span, offset, times) in ASKS {
            let want = covered(readings, t, (span, offset, times));
            check(&out[0].3[name], &want, &format!("{name} of d{d} at +{} min", (t - T0) / MIN));
        }
        readings.push((t, v));
    }
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

#[test]
fn the_same_hour_yesterday_and_on_each_of_the_last_days() {
    let src = r#"rule("r", #{ on: "s/{device}/t", past: #{ t: "7d by 1h" },
        emit: |e| #{ yday: history("t", "1h", "1d"), week: history("t", "1h", "1d", 7), now: history("t", "1h") } });"#;
    let mut h = H::new(src);
    // Day d at 10:15 reads d; other hours read 100.
    for d in 0..7 {
        h.send(T0 + d * DAY + 10 * HOUR + 15 * MIN, "s/a/t", &d.to_string());
        h.send(T0 + d * DAY + 11 * HOUR, "s/a/t", "100");
    }
    let out = h.send(T0 + 7 * DAY + 10 * HOUR + 50 * MIN, "s/a/t", "7");
    let o = &out[0].3;
    assert_eq!((o["yday"]["count"].as_u64(), o["yday"]["avg"].as_f64()), (Some(1), Some(6.0)));
    assert_eq!(o["week"]["count"].as_u64(), Some(7));
    assert_eq!(
        (o["week"]["avg"].as_f64(), o["week"]["min"].as_f64(), o["week"]["max"].as_f64()),
        (Some(3.0), Some(0.0), Some(6.0))
    );
    assert_eq!(o["now"]["count"].as_u64(), Some(0), "the present is not its own past");
    let out = h.send(T0 + 7 * DAY + 10 * HOUR + 55 * MIN, "s/a/t", "8");
    assert_eq!(out[0].3["now"]["avg"].as_f64(), Some(7.0), "the reading before, in the current hour");
}

#[test]
fn old_buckets_drop_out_as_event_time_advances() {
    let src = r#"rule("r", #{ on: "s/{device}/t", past: #{ t: "3h by 1h" }, emit: |e| history("t", "4h").count });"#;
    let mut h = H::new(src);
    let count = |out: Vec<Out>| out[0].3.as_u64();
    h.send(T0, "s/a/t", "1");
    h.send(T0 + HOUR, "s/a/t", "1");
    h.send(T0 + 2 * HOUR, "s/a/t", "1");
    assert_eq!(count(h.send(T0 + 3 * HOUR, "s/a/t", "1")), Some(3));
    assert_eq!(count(h.send(T0 + 4 * HOUR + 30 * MIN, "s/a/t", "1")), Some(3), "the first hour dropped out");
    // A gap longer than the span: nothing is left; then it fills again.
    assert_eq!(count(h.send(T0 + 20 * HOUR, "s/a/t", "1")), Some(0));
    assert_eq!(count(h.send(T0 + 21 * HOUR, "s/a/t", "1")), Some(1));
}

#[test]
fn the_closed_buckets_are_saved_only_when_a_bucket_closes() {
    let src = r#"rule("r", #{ on: "s/{device}/t", past: #{ t: "1d by 1h" } });"#;
    let mut h = H::new(src);
    h.record_touched = true;
    let closed = Touched::Past { rule: "r".into(), key: "a".into() };
    let open = Touched::PastOpen { rule: "r".into(), key: "a".into() };
    h.send(T0, "s/a/t", "1");
    h.send(T0 + 10 * MIN, "s/a/t", "2");
    assert_eq!(h.touched, [open.clone(), open.clone()]);
    assert_eq!(h.engine.export(&closed), None, "no bucket closed yet");
    h.touched.clear();
    h.send(T0 + HOUR, "s/a/t", "3");
    assert_eq!(h.touched, [closed.clone(), open]);
    assert!(h.engine.export(&closed).is_some());
}

/// A store as the agent keeps one: the latest export of everything touched.
type Store = BTreeMap<String, (Touched, Option<Vec<u8>>)>;

fn persist(h: &mut H, store: &mut Store) {
    for t in h.touched.drain(..) {
        let bytes = h.engine.export(&t);
        store.insert(format!("{t:?}"), (t, bytes));
    }
}

/// The spans rule over a stream; after step `crash_at` the engine is replaced by a fresh one
/// that imports the store. Returns every output, and how often each piece was touched.
fn run_spans(steps: &[(u8, i64, f64)], crash_at: Option<usize>) -> (Vec<Out>, usize, usize) {
    let fresh = || {
        let mut h = H::new(SPANS);
        h.record_touched = true;
        h
    };
    let mut h = fresh();
    let mut store = Store::new();
    let (mut all, mut closed, mut open) = (Vec::new(), 0, 0);
    for (i, (d, t, v)) in steps.iter().enumerate() {
        all.extend(h.send(*t, &format!("s/d{d}/t"), &v.to_string()));
        closed += h.touched.iter().filter(|t| matches!(t, Touched::Past { .. })).count();
        open += h.touched.iter().filter(|t| matches!(t, Touched::PastOpen { .. })).count();
        persist(&mut h, &mut store);
        if crash_at == Some(i) {
            h = fresh();
            assert_eq!(h.engine.past_wanted().len(), 1, "a fresh rule wants seeding");
            for (what, bytes) in store.values() {
                if let Some(bytes) = bytes {
                    h.engine.import(what, bytes).expect("imports");
                }
            }
            assert_eq!(h.engine.past_wanted(), [], "restored: nothing to seed");
        }
    }
    (all, closed, open)
}

#[test]
fn an_in_rule_span_survives_a_restart() {
    let steps = stream(5, 300);
    let (straight, closed, open) = run_spans(&steps, None);
    assert_eq!(open, steps.len(), "the open buckets are saved with every reading");
    assert!(closed > 0 && closed < open, "the closed ones when a bucket closes: {closed}");
    for crash_at in [0, 17, 150, 298] {
        assert_eq!(run_spans(&steps, Some(crash_at)).0, straight, "restart after step {crash_at}");
    }
}

#[test]
fn a_reload_keeps_fields_whose_span_stays_and_resets_the_others() {
    let src = r#"rule("r", #{ on: "s/{device}/m", past: #{ a: "1d by 1h", b: "1d by 1h" },
        emit: |e| #{ a: history("a", "1d").count, b: history("b", "1d").count } });"#;
    let mut h = H::new(src);
    let counts = |out: Vec<Out>| (out[0].3["a"].as_u64(), out[0].3["b"].as_u64());
    for i in 0..3 {
        h.send(T0 + i * MIN, "s/x/m", r#"{"a": 1, "b": 2}"#);
    }
    h.engine.past_seeded("r", "a");
    h.engine.past_seeded("r", "b");
    assert_eq!(h.engine.past_wanted(), []);
    // `b` gets another span: it starts empty (and may be seeded); `a` keeps its past.
    let changed = compile(&h, &src.replace(r#"b: "1d by 1h""#, r#"b: "2d by 1h""#));
    h.engine.reload(changed.clone(), Timestamp(T0 + 4 * MIN));
    let want = PastWant { rule: "r".into(), field: "b".into(), span_ms: 2 * DAY, every_ms: HOUR };
    assert_eq!(h.engine.past_wanted(), [want]);
    assert_eq!(counts(h.send(T0 + 5 * MIN, "s/x/m", r#"{"a": 1, "b": 2}"#)), (Some(3), Some(0)));
    // Deleted and restored within the grace period: the past comes back with the rule.
    h.engine.reload(compile(&h, r#"rule("other", #{ on: "x" });"#), Timestamp(T0 + 6 * MIN));
    h.engine.reload(changed.clone(), Timestamp(T0 + 7 * MIN));
    assert_eq!(counts(h.send(T0 + 8 * MIN, "s/x/m", r#"{"a": 1, "b": 2}"#)), (Some(4), Some(1)));
    assert_eq!(h.engine.past_wanted(), [], "restored");
    // Another kind (a threshold now): the kind's state starts afresh, the past stays.
    let threshold = compile(
        &h,
        &src.replace(r#"b: "1d by 1h""#, r#"b: "2d by 1h""#)
            .replace("emit:", "when: |e| true, clear: |e| false, emit:"),
    );
    h.engine.reload(threshold, Timestamp(T0 + 9 * MIN));
    assert_eq!(counts(h.send(T0 + 10 * MIN, "s/x/m", r#"{"a": 1, "b": 2}"#)), (Some(5), Some(2)));
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

#[test]
fn missing_non_numeric_and_non_finite_readings_are_skipped_and_counted() {
    let src = r#"rule("r", #{ on: "s/{device}", past: #{ temperature: "1h by 1m" },
        emit: |e| history("temperature", "1h").count });"#;
    let mut h = H::new(src);
    h.send(T0, "s/a", r#"{"temperature": "hot"}"#);
    h.send(T0 + 1, "s/a", r#"{"humidity": 40}"#);
    for (i, v) in [f64::NAN, f64::INFINITY, 1e300].into_iter().enumerate() {
        let mut m = Map::new();
        m.insert("temperature".into(), Dynamic::from_float(v));
        let e = Event::new("s/a", Dynamic::from_map(m), format!("bad {i}").as_bytes(), Timestamp(T0 + 2 + i as i64));
        h.engine.process(e, Timestamp(T0 + 2 + i as i64), &mut h.out);
        h.take();
    }
    let skips: Vec<Skip> = h.skipped.iter().filter(|(who, _)| who == "r").map(|s| s.1).collect();
    assert_eq!(skips, [Skip::NotNumeric, Skip::Missing, Skip::NonFinite, Skip::NonFinite, Skip::NonFinite]);
    assert_eq!(h.send(T0 + 10, "s/a", r#"{"temperature": 21.5}"#)[0].3, 0, "nothing was folded");
    assert_eq!(h.send(T0 + 11, "s/a", r#"{"temperature": 22}"#)[0].3, 1);
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

#[test]
fn asking_for_what_is_not_kept_is_a_fault_with_its_position() {
    let src = "rule(\"unknown\", #{ on: \"s\", past: #{ t: \"1d by 1h\" },\n    when: |e| history(\"humidity\", \"1h\").count > 0 });\n\
               rule(\"too-far\", #{ on: \"s\", past: #{ t: \"1d by 1h\" },\n    when: |e| history(\"t\", \"2d\").count > 0 });\n\
               rule(\"undeclared\", #{ on: \"s\", when: |e| history(\"t\", \"1h\").count > 0 });\n\
               rule(\"in-key\", #{ on: \"s\", past: #{ t: \"1d by 1h\" }, key: |e| `${history(\"t\", \"1h\").count}` });\n\
               rule(\"half\", #{ on: \"s\", past: #{ t: \"1d by 1h\" }, when: |e| history(\"t\", \"30m\").count > 0 });\n\
               rule(\"soon\", #{ on: \"s\", past: #{ t: \"1d by 1h\" }, when: |e| history(\"t\", \"1h\", \"soon\").count > 0 });\n";
    let mut h = H::new(src);
    // Twice: what `history` parsed once (and what it could not) reads the same again.
    h.send(T0, "s", "1");
    h.send(T0 + 1, "s", "1");
    let fault = |rule: &str| h.fault_list.iter().find(|f| &*f.rule == rule).cloned().expect(rule);
    let f = fault("unknown");
    assert!(f.message.contains("`past` keeps no `humidity` (it keeps: t)"), "{f}");
    assert!(f.location.starts_with("test.rhai:2:"), "{f}");
    assert!(fault("too-far").message.contains("at most 1day 1h back"), "{}", fault("too-far"));
    assert!(fault("undeclared").message.contains("no past here"), "{}", fault("undeclared"));
    assert!(fault("in-key").message.contains("no past here"), "{}", fault("in-key"));
    assert!(fault("half").message.contains("not a whole number of `1h` buckets"), "{}", fault("half"));
    assert!(fault("soon").message.contains("the offset `soon` is not a duration"), "{}", fault("soon"));
    for rule in ["unknown", "too-far", "half", "soon"] {
        assert_eq!(h.fault_list.iter().filter(|f| &*f.rule == rule).count(), 2, "{rule}: {:?}", h.fault_list);
    }
}

#[test]
fn declaring_a_past_is_checked() {
    let sandbox = edgewatch_engine::Sandbox::default();
    let cases = [
        (r#"past: "7d by 1h""#, "must be an object map"),
        ("past: #{}", "names no field"),
        (r#"past: #{ t: 7 }"#, "must be text"),
        (r#"past: #{ t: "7d per 1h" }"#, "is not \"<span> by <every>\""),
        (r#"past: #{ t: "7d by 5h" }"#, "not a whole number of 5h buckets"),
        (r#"past: #{ t: "7d by 1m" }"#, "10080 buckets, more than 1000"),
        (r#"past: #{ t: "soon by 1h" }"#, "the span `soon` is not a duration"),
        (
            r#"past: #{ a: "1h by 1m", b: "1h by 1m", c: "1h by 1m", d: "1h by 1m", e: "1h by 1m", f: "1h by 1m", g: "1h by 1m", h: "1h by 1m", i: "1h by 1m" }"#,
            "at most 8",
        ),
    ];
    for (decl, expected) in cases {
        let src = format!("rule(\"r\", #{{ on: \"s\", {decl} }});");
        let err = sandbox.compile_file("f.rhai", &src).expect_err(&src);
        assert!(err.message.contains(expected), "{src}: got {err}");
    }
    let ok = sandbox
        .compile_file("f.rhai", r#"rule("r", #{ on: "s", past: #{ temperature: "7d by 1h", hum: "1d by 10m" } });"#)
        .expect("compiles");
    let past: Vec<(&str, i64, i64)> = ok[0].past.iter().map(|p| (&*p.field, p.span_ms, p.every_ms)).collect();
    assert_eq!(past, [("hum", DAY, 10 * MIN), ("temperature", 7 * DAY, HOUR)]);
}

#[test]
fn a_rules_past_is_bounded_by_its_key_limit_and_goes_with_an_evicted_key() {
    let src = r#"rule("r", #{ on: "s/{device}/t", past: #{ t: "1d by 1h" }, max_keys: 2 });"#;
    let mut h = H::new(src);
    h.record_touched = true;
    for (i, d) in ["a", "b", "c"].iter().enumerate() {
        h.send(T0 + i as i64, &format!("s/{d}/t"), "20");
    }
    assert_eq!(h.evicted, 1, "a filter's past reports its own evictions");
    assert_eq!(h.engine.past_bytes("r", "a"), None);
    assert!(h.engine.past_bytes("r", "c").is_some());
    let gone = Touched::PastOpen { rule: "r".into(), key: "a".into() };
    assert!(h.touched.contains(&gone), "the evicted key's saved past is named, to be deleted");
    assert_eq!(h.engine.export(&gone), None);
    h.tick(T0 + 100);
    assert_eq!(h.key_limits.len(), 1, "and reported: {:?}", h.key_limits);
}

#[test]
fn seven_days_by_the_hour_cost_under_4_kb_per_key() {
    let src = r#"rule("r", #{ on: "s/{device}/t", past: #{ t: "7d by 1h" } });"#;
    let mut h = H::new(src);
    h.record_touched = true;
    let mut rng = Lcg(9);
    let mut t = T0;
    while t < T0 + 7 * DAY + 2 * HOUR {
        h.send(t, "s/sensor-0001/t", &format!("{}", (1500 + rng.below(1500) as i64) as f64 / 100.0));
        t += 10 * MIN;
    }
    let bytes = h.engine.past_bytes("r", "sensor-0001").expect("kept");
    assert!(bytes < 3600, "{bytes} bytes in memory");
    let closed = h.engine.export(&Touched::Past { rule: "r".into(), key: "sensor-0001".into() }).expect("saved");
    let open = h.engine.export(&Touched::PastOpen { rule: "r".into(), key: "sensor-0001".into() }).expect("saved");
    assert!(closed.len() < 4096, "{} bytes saved", closed.len());
    assert!(open.len() < 200, "{} bytes saved", open.len());
}

#[test]
fn history_in_a_timer_ends_at_its_deadline() {
    let src = r#"rule("alive", #{ on: "s/{device}/t", past: #{ t: "1h by 10m" },
        heartbeat: #{ timeout: "10m" }, emit: |e| #{ seen: history("t", "1h").count } });"#;
    let mut h = H::new(src);
    for i in 0..3 {
        h.send(T0 + i * MIN, "s/a/t", "20");
    }
    let missing = h.tick(T0 + 12 * MIN);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].3["seen"], 3);
}

const SEEDED: &str = r#"
rule("seeded", #{
    on: "sensors/{device}/temperature",
    past: #{ temperature: "7d by 1h" },
    emit: |e| #{ week: history("temperature", "7d"), yday: history("temperature", "1h", "1d") },
});
rule("small", #{ on: "x/{device}", past: #{ v: "1d by 1h" }, max_keys: 1, on_full: "refuse" });
"#;

#[test]
fn a_new_rule_is_seeded_from_the_agents_roll_ups() {
    let mut h = H::new(SEEDED);
    let week = PastWant { rule: "seeded".into(), field: "temperature".into(), span_ms: 7 * DAY, every_ms: HOUR };
    let small = PastWant { rule: "small".into(), field: "v".into(), span_ms: DAY, every_ms: HOUR };
    assert_eq!(h.engine.past_wanted(), [week, small.clone()]);
    let now = T0 + 9 * DAY + 12 * HOUR + 30 * MIN;
    // Minute roll-ups of day 8, and three that do not fit: not aligned, older than the
    // span, in the future.
    let mut rollups: Vec<(i64, Rollup)> =
        (0..1440).map(|m| (T0 + 8 * DAY + m * MIN, Rollup::of(20.0 + (m % 60) as f64 / 100.0))).collect();
    rollups.extend([
        (T0 + 8 * DAY + 30_000, Rollup::of(1.0)),
        (T0 + DAY, Rollup::of(1.0)),
        (now + HOUR, Rollup::of(1.0)),
    ]);
    let seed = |h: &mut H, key: &str, rollups: &[(i64, Rollup)]| {
        h.engine.seed_past("seeded", key, "temperature", MIN, rollups, Timestamp(now), &mut h.out)
    };
    assert_eq!(seed(&mut h, "t-01", &rollups), Ok(Seeded { merged: 1440, ignored: 3 }));
    assert!(h.out.touched.contains(&Touched::Past { rule: "seeded".into(), key: "t-01".into() }));
    h.take();
    assert_eq!(seed(&mut h, "t-01", &rollups), Ok(Seeded { merged: 0, ignored: 1443 }), "seeding twice adds nothing");
    h.engine.past_seeded("seeded", "temperature");
    assert_eq!(h.engine.past_wanted(), [small]);

    let out = h.send(now, "sensors/t-01/temperature", "25");
    let (week, yday) = (&out[0].3["week"], &out[0].3["yday"]);
    assert_eq!(week["count"], 1440);
    assert_eq!(
        (yday["count"].as_u64(), yday["min"].as_f64(), yday["max"].as_f64()),
        (Some(60), Some(20.0), Some(20.59))
    );
    assert!((yday["avg"].as_f64().unwrap_or(0.0) - 20.295).abs() < 1e-5, "{yday}");
    // The rule's own readings win over a seed.
    let mine = [(now - 30 * MIN, Rollup::of(99.0))];
    assert_eq!(seed(&mut h, "t-01", &mine), Ok(Seeded { merged: 0, ignored: 1 }));

    assert!(matches!(
        h.engine.seed_past("seeded", "t-02", "temperature", 7 * MIN, &rollups, Timestamp(now), &mut h.out),
        Err(SeedError::Period { .. })
    ));
    assert!(matches!(
        h.engine.seed_past("seeded", "t-02", "humidity", MIN, &rollups, Timestamp(now), &mut h.out),
        Err(SeedError::NoField { .. })
    ));
    assert!(matches!(
        h.engine.seed_past("nope", "t-02", "temperature", MIN, &rollups, Timestamp(now), &mut h.out),
        Err(SeedError::NoRule(_))
    ));
    // Seeding creates keys within the rule's limit.
    let hourly = [(now.div_euclid(HOUR) * HOUR - 2 * HOUR, Rollup::of(1.0))];
    let small = |h: &mut H, key: &str| h.engine.seed_past("small", key, "v", HOUR, &hourly, Timestamp(now), &mut h.out);
    assert_eq!(small(&mut h, "a"), Ok(Seeded { merged: 1, ignored: 0 }));
    assert!(matches!(small(&mut h, "b"), Err(SeedError::Refused { .. })));
    assert_eq!(h.engine.past_bytes("small", "b"), None);
}

/// The example of docs/rules.md, as written there.
fn docs_example() -> String {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md"));
    let start = doc.find("<!-- past-example: begin -->").expect("begin marker");
    let end = doc.find("<!-- past-example: end -->").expect("end marker");
    let block = doc[start..end].split("```rhai").nth(1).and_then(|b| b.split("```").next());
    block.expect("a rhai block").to_owned()
}

#[test]
fn the_worked_example_fires_on_a_deviation_from_the_same_hour() {
    let mut h = H::new(&docs_example());
    // A week of a reading every 10 minutes: a value per hour of the day, plus up to ±0.3.
    let usual = |t: i64| 2000 + ((t.rem_euclid(DAY) / HOUR) - 12).abs() * 50;
    let reading = |cents: i64| format!("{}", cents as f64 / 100.0);
    let mut rng = Lcg(3);
    let mut t = T0;
    while t < T0 + 7 * DAY {
        let v = usual(t) + rng.below(61) as i64 - 30;
        assert_eq!(
            h.send(t, "sensors/t-01/temperature", &reading(v)),
            [],
            "a usual reading at +{} min",
            (t - T0) / MIN
        );
        t += 10 * MIN;
    }
    let t = T0 + 7 * DAY + 14 * HOUR + 20 * MIN;
    let base = usual(t);
    assert_eq!(h.send(t, "sensors/t-01/temperature", &reading(base + 20)), [], "within 3 standard deviations");
    let fired = h.send(t + MIN, "sensors/t-01/temperature", &reading(base + 300));
    assert_eq!(fired.len(), 1);
    let data = &fired[0].3;
    assert_eq!((data["device"].as_str(), data["readings"].as_u64()), (Some("t-01"), Some(42)));
    assert!((data["usual"].as_f64().unwrap_or(0.0) - base as f64 / 100.0).abs() < 0.1, "{data}");
    assert!((0.1..0.3).contains(&data["stddev"].as_f64().unwrap_or(0.0)), "{data}");
    assert_eq!(h.send(t + 2 * MIN, "sensors/t-01/temperature", &reading(base + 350)), [], "once per episode");
    assert_eq!(h.send(t + 3 * MIN, "sensors/t-01/temperature", &reading(base)), [], "back to usual: re-armed");
    assert_eq!(h.send(t + 4 * MIN, "sensors/t-01/temperature", &reading(base + 300)).len(), 1, "a new episode");
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

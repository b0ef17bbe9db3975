//! A rule added to a gateway with history starts with it: `seed` hands the log's roll-ups to
//! the engine, which the rule then reads with `history(...)`.

use super::{DAY0, HOUR, MIN, closed};
use crate::history::{HistoryLimits, HistoryLog, Resolution, Rollup, dir_in, seed};
use edgewatch_engine::{Dynamic, Engine, Event, Outputs, RuleSet, Sandbox, Timestamp, Touched};
use std::sync::Arc;

const RULE: &str = r#"
rule("above-usual", #{
    on: "sensors/{device}/temperature",
    past: #{ temperature: "3h by 1h" },
    when: |e| { let h = history("temperature", "3h"); h.count >= 6 && e.value > h.max },
    emit: |e| #{ seen: history("temperature", "3h").count },
});
"#;

fn engine() -> Engine {
    let sandbox = Arc::new(Sandbox::default());
    let (rules, errors) = RuleSet::compile(&sandbox, [("r.rhai", RULE)]);
    assert!(errors.is_empty(), "{errors:?}");
    Engine::new(sandbox, rules)
}

fn reading(device: &str, value: f64, t: i64) -> Event {
    let topic = format!("sensors/{device}/temperature");
    Event::new(&topic, Dynamic::from_float(value), b"x", Timestamp(t))
}

#[test]
fn a_new_rule_starts_with_the_history_the_gateway_kept() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_in(tmp.path());
    let limits = HistoryLimits::default();
    let now = DAY0 + 5 * HOUR + 30 * MIN;
    // Two hours of coarse roll-ups for t-1 (three readings each, up to 22.0); t-2 has fine ones only.
    let mut r = Rollup::of(20.0);
    r.fold(21.0);
    r.fold(22.0);
    let (mut log, _) = HistoryLog::open(&dir, limits).expect("opens");
    let kept = [
        closed("t-1", "temperature", Resolution::Coarse, DAY0 + 3 * HOUR, DAY0 + 3 * HOUR, r),
        closed("t-1", "temperature", Resolution::Coarse, DAY0 + 4 * HOUR, DAY0 + 4 * HOUR, r),
        closed("t-1", "humidity", Resolution::Coarse, DAY0 + 4 * HOUR, DAY0 + 4 * HOUR, r),
        closed("t-2", "temperature", Resolution::Fine, DAY0 + 5 * HOUR, DAY0 + 5 * HOUR, r),
    ];
    log.append(&kept, now).expect("written");

    // Without history, the rule has seen nothing and cannot fire.
    let mut fresh = engine();
    let mut out = Outputs::default();
    fresh.process(reading("t-1", 23.0, now), Timestamp(now), &mut out);
    assert!(out.events.is_empty());

    let mut eng = engine();
    let mut out = Outputs::default();
    let report = seed(&mut eng, &dir, &limits, Timestamp(now), &mut out);
    assert_eq!((report.fields, report.keys, report.merged), (1, 1, 2), "{report:?}");
    assert!(
        out.touched.iter().any(|t| matches!(t, Touched::Past { .. } | Touched::PastOpen { .. })),
        "seeded state is saved"
    );
    assert!(eng.past_wanted().is_empty(), "asked once");
    out.clear();
    eng.process(reading("t-1", 23.0, now), Timestamp(now), &mut out);
    assert_eq!(out.events.len(), 1, "six readings of history, and 23.0 above them all");
    assert_eq!(out.events[0].data_json()["seen"], 6);
    // A second seeding finds nothing wanted and changes nothing.
    out.clear();
    assert_eq!(seed(&mut eng, &dir, &limits, Timestamp(now), &mut out).fields, 0);
}

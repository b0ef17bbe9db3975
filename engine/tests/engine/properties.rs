//! Properties: the engine is deterministic, and shuffling events within the allowed
//! lateness does not change what it produces.

use crate::support::{H, Out};
use edgewatch_engine::{EngineConfig, Tables};
use proptest::prelude::*;

const RULES: &str = r#"
rule("hot3", #{
    on: "s/{device}/t",
    window: #{ size: "10s", filter: |e| e.value > 50 },
    when: |e| e.window.count >= 3,
});
rule("avg", #{ on: "s/{device}/t", window: #{ size: "5s", tumbling: true }, emit: |e| e.window.avg });
rule("up-down", #{
    on: "s/{device}/t",
    sequence: [ #{ name: "up", when: |e| e.value > 80 }, #{ name: "down", when: |e| e.value < 20 } ],
    within: "8s",
});
"#;

fn config(lateness: i64) -> EngineConfig {
    EngineConfig { time_field: Some("ts".into()), lateness_ms: lateness, ..EngineConfig::default() }
}

/// Feeds (device, ts, value) in the given order; processing time is the latest ts seen, and a
/// final tick far ahead flushes everything.
fn run(events: &[(u8, i64, i64)], lateness: i64) -> Vec<Out> {
    let mut h = H::with(RULES, Tables::new(), config(lateness));
    let mut all = Vec::new();
    let mut now = 0;
    for (d, ts, v) in events {
        now = now.max(*ts);
        all.extend(h.send(now, &format!("s/d{d}/t"), &format!(r#"{{"ts":{ts},"value":{v}}}"#)));
    }
    all.extend(h.tick(now + 1_000_000));
    all
}

fn stream() -> impl Strategy<Value = Vec<(u8, i64, i64)>> {
    prop::collection::vec((0u8..3, 1i64..2_000, 0i64..100), 1..60).prop_map(|steps| {
        let mut t = 0;
        steps
            .into_iter()
            .map(|(d, gap, v)| {
                t += gap;
                (d, t, v)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_same_input_gives_the_same_output(events in stream()) {
        prop_assert_eq!(run(&events, 0), run(&events, 0));
    }

    #[test]
    fn shuffling_within_the_lateness_changes_nothing(events in stream(), seed in any::<u64>()) {
        const LATENESS: i64 = 3_000;
        let ordered = run(&events, LATENESS);
        // Delay each event by up to LATENESS of event time: it arrives after later events
        // whose time is at most LATENESS ahead of its own.
        let mut keyed: Vec<(i64, usize, (u8, i64, i64))> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let jitter = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % (LATENESS as u64)) as i64;
                (e.1 + jitter, i, *e)
            })
            .collect();
        keyed.sort();
        let shuffled: Vec<_> = keyed.into_iter().map(|(_, _, e)| e).collect();
        prop_assert_eq!(ordered, run(&shuffled, LATENESS));
    }
}

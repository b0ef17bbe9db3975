//! What the console reads of the engine: rules with their keys and alarms, every heartbeat
//! key's liveness, and the alarms that are not idle.

use crate::support::{H, table_csv};
use edgewatch_engine::alarm::{Command, Condition};
use edgewatch_engine::{EngineConfig, Liveness, Outputs, Timestamp};

const SRC: &str = r#"
rule("offline", #{
    on: "s/{device}/hb",
    heartbeat: #{ timeout: "30s", expected: "devices", grace: "1m", flap: #{ max: 3, window: "10m" } },
});
rule("hot", #{ on: "s/{device}/t", when: |e| e.value > 80, clear: |e| e.value < 70, notify: "pager" });
rule("all", #{ on: "s/#" });
"#;

#[test]
fn devices_alarms_and_rules_are_listed_as_the_engine_holds_them() {
    let tables = table_csv("devices", "device\nt-1\nt-2\nt-3\n");
    let mut h = H::with(SRC, tables, EngineConfig::default());
    h.tick(0);
    h.send(1_000, "s/t-1/hb", "1");
    h.send(1_000, "s/t-2/hb", "1");
    // t-2 goes quiet: missing at 31 s. t-3 never reports.
    h.send(20_000, "s/t-1/hb", "1");
    h.tick(31_000);
    let by_key = |h: &H, key: &str| {
        let d = h.engine.devices(Some(key));
        assert_eq!(d.len(), 1, "{key}: {d:?}");
        (d[0].state, d[0].last_seen, d[0].missing_since)
    };
    assert_eq!(by_key(&h, "t-1"), (Liveness::Up, Some(20_000), None));
    assert_eq!(by_key(&h, "t-2"), (Liveness::Missing, Some(1_000), Some(31_000)));
    assert_eq!(by_key(&h, "t-3").0, Liveness::NeverSeen);
    assert!(h.engine.devices(Some("nobody")).is_empty());
    let all = h.engine.devices(None);
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|d| &*d.rule == "offline"));
    // t-1 goes missing and comes back, again and again: flapping.
    let mut t = 20_000;
    for _ in 0..3 {
        t += 31_000;
        h.tick(t);
        t += 1_000;
        h.send(t, "s/t-1/hb", "1");
    }
    assert_eq!(by_key(&h, "t-1").0, Liveness::Flapping);
    assert!(Liveness::Missing.severity() > Liveness::Flapping.severity());

    // An alarm: active, then acknowledged by command.
    h.send(t, "s/t-9/t", r#"{"value": 90}"#);
    let alarms = h.engine.alarms(None);
    assert_eq!(alarms.len(), 1);
    assert_eq!((&*alarms[0].rule, &*alarms[0].key), ("hot", "t-9"));
    assert_eq!(alarms[0].alarm.condition, Condition::Unacknowledged);
    let mut out = Outputs::default();
    h.engine.alarm_command("hot", "t-9", Command::Acknowledge, Timestamp(t + 1), &mut out).expect("applies");
    assert_eq!(h.engine.alarms(Some("t-9"))[0].alarm.condition, Condition::Acknowledged);
    assert!(h.engine.alarms(Some("t-1")).is_empty());

    let rules = h.engine.rule_views();
    let names: Vec<_> = rules.iter().map(|r| (&*r.name, r.kind, r.keys, r.alarms, r.active_alarms)).collect();
    assert_eq!(names, [("offline", "heartbeat", 3, 0, 0), ("hot", "threshold", 1, 1, 1), ("all", "filter", 0, 0, 0)]);
}

//! `inhibit`: a child's notifications held back while its parent's alarm is active; one page
//! for a dead hub instead of one per sensor, and, when the hub is back, pages for the
//! sensors still missing, and only those.

use crate::support::{H, table_csv};
use edgewatch_engine::alarm::Change;
use edgewatch_engine::{EngineConfig, Sandbox, Tables};

const SEC: i64 = 1000;

const RULES: &str = r#"
rule("hub-offline", #{ on: "hubs/{device}/hb", heartbeat: #{ timeout: "60s" }, notify: "pager" });
rule("offline", #{
    on: "sensors/{device}/t",
    heartbeat: #{ timeout: "30s" },
    notify: "pager",
    inhibit: #{ by: "hub-offline", parent: "devices.hub", hold: "2m" },
});
"#;

fn sensors() -> Vec<String> {
    (1..=20).map(|i| format!("s-{i:02}")).collect()
}

fn tables() -> Tables {
    let mut csv = "device,hub\n".to_owned();
    for s in sensors() {
        csv.push_str(&format!("{s},hub-2\n"));
    }
    csv.push_str("lonely,\n");
    table_csv("devices", &csv)
}

fn harness() -> H {
    H::with(RULES, tables(), EngineConfig::default())
}

/// Pages so far, as (rule, key) pairs.
fn pages(h: &H) -> Vec<(String, String)> {
    h.full_actions.iter().map(|a| (a.rule.to_string(), a.key.clone())).collect()
}

/// Everyone reports at `t`.
fn all_report(h: &mut H, t: i64) {
    h.send(t, "hubs/hub-2/hb", "1");
    for s in sensors() {
        h.send(t, &format!("sensors/{s}/t"), "20");
    }
}

#[test]
fn a_dead_hub_is_one_page_and_when_it_is_back_only_the_sensors_still_missing_page() {
    let mut h = harness();
    all_report(&mut h, 0);
    // The sensors time out first (30 s), the hub at 60 s: within the sensors' hold.
    h.tick(30 * SEC);
    assert!(pages(&h).is_empty(), "held for 2 minutes");
    h.tick(60 * SEC);
    assert_eq!(pages(&h), [("hub-offline".to_owned(), "hub-2".to_owned())]);
    h.tick(150 * SEC);
    assert_eq!(pages(&h).len(), 1, "the hold ended while the hub is down: inhibited");
    let inhibited: Vec<_> = h.alarm_changes.iter().filter(|c| c.change == Change::Inhibited).collect();
    assert_eq!(inhibited.len(), 20);
    assert_eq!(inhibited[0].cause.as_deref(), Some("hub-offline/hub-2"));
    // An hour later the hub comes back, then 18 of its sensors; s-07 and s-13 stay dead.
    let back = 3_600 * SEC;
    let alive: Vec<String> = sensors().into_iter().filter(|s| s != "s-07" && s != "s-13").collect();
    let mut t = back;
    while t <= back + 3_600 * SEC {
        h.send(t, "hubs/hub-2/hb", "1");
        for s in &alive {
            h.send(t + SEC, &format!("sensors/{s}/t"), "20");
        }
        if t == back + 100 * SEC {
            assert_eq!(pages(&h).len(), 2, "the hub's recovery; the sensors wait out the hold again: {:?}", pages(&h));
        }
        h.tick(t + 10 * SEC);
        t += 20 * SEC;
    }
    let mut sensors_paged: Vec<_> = pages(&h).into_iter().filter(|(r, _)| r == "offline").map(|(_, k)| k).collect();
    sensors_paged.sort();
    assert_eq!(sensors_paged, ["s-07", "s-13"], "only the ones still missing; no \"back\" for the others");
    assert_eq!(pages(&h).len(), 4, "nothing more: {:?}", pages(&h));
    let released: Vec<i64> = h.full_actions[2..].iter().map(|a| a.time.millis()).collect();
    assert_eq!(released, [30 * SEC, 30 * SEC], "about the events that said they went missing");
    for a in &h.full_actions[2..] {
        let data = a.event_data.as_ref().map(|d| d.to_string()).unwrap_or_default();
        assert!(data.contains("missing"), "the event's data travels with the held page: {data}");
    }
}

#[test]
fn without_its_parent_down_a_child_pages_after_the_hold_and_a_blip_within_it_not_at_all() {
    let mut h = harness();
    all_report(&mut h, 0);
    // The hub keeps reporting; s-01 goes missing for good, s-02 for a moment.
    for t in (20..300).step_by(20) {
        h.send(t * SEC, "hubs/hub-2/hb", "1");
        for s in sensors().iter().filter(|s| *s != "s-01" && *s != "s-02") {
            h.send(t * SEC, &format!("sensors/{s}/t"), "20");
        }
        if t == 60 {
            h.send(t * SEC, "sensors/s-02/t", "20");
        }
        h.tick(t * SEC);
    }
    // s-01 missing at 30 s, paged at 150 s; s-02 missing at 30 s, back at 60 s (within its
    // hold): never paged, neither missing nor back. s-02 goes missing again at 90 s: paged at 210 s.
    let paged: Vec<_> = h.full_actions.iter().map(|a| (a.key.clone(), a.time.millis())).collect();
    assert_eq!(paged, [("s-01".to_owned(), 30 * SEC), ("s-02".to_owned(), 90 * SEC)], "{paged:?}");
}

#[test]
fn a_key_without_a_parent_is_not_inhibited_and_held_pages_survive_a_restart() {
    let mut h = harness();
    h.record_touched = true;
    all_report(&mut h, 0);
    h.send(0, "sensors/lonely/t", "20");
    h.tick(30 * SEC);
    h.tick(60 * SEC);
    let saved = h.engine.export_all();
    // A restart while the sensors' pages are held and the hub is down.
    let mut h2 = H::with(RULES, tables(), EngineConfig::default());
    for (t, bytes) in &saved {
        h2.engine.import(t, bytes).expect("saved state loads");
    }
    h2.tick(150 * SEC);
    let paged: Vec<_> = h2.full_actions.iter().map(|a| a.key.clone()).collect();
    assert_eq!(paged, ["lonely"], "no parent: paged after its hold; the hub's sensors stay held");
    for t in (200..=320).step_by(20) {
        h2.send(t * SEC, "hubs/hub-2/hb", "1");
        h2.tick(t * SEC);
    }
    assert_eq!(
        h2.full_actions.iter().filter(|a| &*a.rule == "offline").count(),
        21,
        "released after the restart: {:?}",
        h2.alarm_changes
    );
}

#[test]
fn inhibit_is_checked_when_declared() {
    let bad = [
        (r#"inhibit: #{ parent: "devices.hub" }"#, "needs `by`"),
        (r#"inhibit: #{ by: "x", parent: "devices" }"#, "lookup table and column"),
        (r#"inhibit: #{ by: "x", parent: "devices.hub", hold: "soon" }"#, "`inhibit.hold`"),
        (r#"inhibit: #{ by: "c", parent: "devices.hub" }"#, "the rule itself"),
        (r#"inhibit: #{ by: "x", parent: "d.h", after: "1m" }"#, "unknown key `inhibit.after`"),
    ];
    for (inhibit, expected) in bad {
        let src = format!(r#"rule("c", #{{ on: "s/{{device}}/t", when: |e| true, notify: "p", {inhibit} }});"#);
        let err = Sandbox::default().compile_file("c.rhai", &src).expect_err(inhibit).to_string();
        assert!(err.contains(expected) && err.starts_with("c.rhai:1:"), "{inhibit}: {err}");
    }
    let err = Sandbox::default()
        .compile_file("c.rhai", r#"rule("c", #{ on: "s/t", when: |e| true, inhibit: #{ by: "x", parent: "d.h" } });"#)
        .expect_err("needs notify")
        .to_string();
    assert!(err.contains("needs `notify` or `act`"), "{err}");
}

#[test]
fn a_reload_that_removes_the_parents_rule_releases_what_it_held() {
    let mut h = harness();
    all_report(&mut h, 0);
    h.tick(30 * SEC);
    h.tick(60 * SEC);
    h.tick(150 * SEC);
    assert_eq!(pages(&h).len(), 1, "20 held behind the hub");
    let only_sensors = RULES.lines().filter(|l| !l.contains("hub-offline\", #{ on")).collect::<Vec<_>>().join("\n");
    let (rules, errors) =
        edgewatch_engine::RuleSet::compile(h.engine.sandbox(), [("test.rhai", only_sensors.as_str())]);
    assert!(errors.is_empty(), "{errors:?}");
    h.engine.reload(rules, edgewatch_engine::Timestamp(200 * SEC));
    h.tick(319 * SEC);
    assert_eq!(pages(&h).len(), 1, "they wait out the hold again");
    h.tick(320 * SEC);
    assert_eq!(pages(&h).iter().filter(|(r, _)| r == "offline").count(), 20, "never held for good");
}

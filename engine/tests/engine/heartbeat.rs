use crate::support::{H, keys, table_csv};
use edgewatch_engine::EngineConfig;

const OFFLINE: &str = r#"
rule("offline", #{
    on: ["sensors/{device}/heartbeat", "sensors/{device}/status"],
    heartbeat: #{
        timeout: "30s",
        offline: |e| e.levels[2] == "status" && e.value == "offline",
    },
});
"#;

#[test]
fn missing_after_the_timeout_and_recovered_with_the_downtime() {
    let mut h = H::new(OFFLINE);
    assert!(h.send(0, "sensors/a/heartbeat", "1").is_empty());
    assert!(h.send(20_000, "sensors/a/heartbeat", "1").is_empty());
    assert!(h.tick(49_999).is_empty(), "deadline moved to 50 s");
    let o = h.tick(50_000);
    assert_eq!(keys(&o), ["a"]);
    assert_eq!(o[0].2, 50_000);
    assert_eq!(o[0].3["status"], "missing");
    assert_eq!(o[0].3["last_seen"], "1970-01-01T00:00:20.000Z");
    assert_eq!(o[0].3["reason"], "timeout");
    assert!(h.tick(500_000).is_empty(), "reported once");
    let o = h.send(600_000, "sensors/a/heartbeat", "1");
    assert_eq!(o[0].3["status"], "recovered");
    assert_eq!(o[0].3["downtime_ms"], 550_000);
    assert_eq!(o[0].3["last_seen"], "1970-01-01T00:00:20.000Z", "when it was last seen before the outage");
}

#[test]
fn a_last_will_marks_it_missing_at_once() {
    let mut h = H::new(OFFLINE);
    h.send(0, "sensors/a/heartbeat", "1");
    let o = h.send(1_000, "sensors/a/status", "\"offline\"");
    assert_eq!(o[0].3["status"], "missing");
    assert_eq!(o[0].3["reason"], "offline");
    assert!(h.tick(100_000).is_empty(), "not reported again at the deadline");
    assert_eq!(h.send(200_000, "sensors/a/heartbeat", "1")[0].3["status"], "recovered");
}

#[test]
fn expected_devices_that_never_report_are_missing_after_the_grace() {
    let src = r#"
        rule("offline", #{
            on: "sensors/{device}/heartbeat",
            heartbeat: #{ timeout: "30s", expected: "devices", timeout_column: "timeout", grace: "1m" },
        });
    "#;
    let tables = table_csv("devices", "device,site,timeout\nt-1,roof,10s\nt-2,cellar,\nt-3,yard,5m\n");
    let mut h = H::with(src, tables, EngineConfig::default());
    assert!(h.tick(0).is_empty());
    h.send(5_000, "sensors/t-1/heartbeat", "1");
    // t-1 has its own 10 s timeout from the table: seen at 5 s, missing at 15 s.
    let o = h.tick(15_000);
    assert_eq!(keys(&o), ["t-1"]);
    assert_eq!(o[0].3["timeout_ms"], 10_000);
    assert_eq!(o[0].3["never_seen"], false);
    // t-2 never reported: missing when the grace (1 min) ends. t-3's own timeout (5 min) is longer.
    let o = h.tick(60_000);
    assert_eq!(keys(&o), ["t-2"]);
    assert_eq!(o[0].3["never_seen"], true);
    assert!(o[0].3["last_seen"].is_null());
    assert_eq!(keys(&h.tick(300_000)), ["t-3"]);
}

#[test]
fn per_message_timeout_from_the_payload() {
    let src = r#"
        rule("offline", #{
            on: "sensors/{device}/heartbeat",
            heartbeat: #{ timeout: "30s", timeout_of: |e| if e.payload.interval_s != () { e.payload.interval_s * 3000 } else { () } },
        });
    "#;
    let mut h = H::new(src);
    h.send(0, "sensors/a/heartbeat", r#"{"interval_s": 2}"#);
    h.send(0, "sensors/b/heartbeat", r#"{}"#);
    assert_eq!(keys(&h.tick(6_000)), ["a"]);
    assert_eq!(keys(&h.tick(30_000)), ["b"]);
}

#[test]
fn flapping_is_reported_once_with_a_count() {
    let src = r#"
        rule("offline", #{
            on: ["sensors/{device}/heartbeat", "sensors/{device}/status"],
            heartbeat: #{ timeout: "1h", offline: |e| e.value == "offline", flap: #{ window: "10m", max: 2 } },
        });
    "#;
    let mut h = H::new(src);
    let mut all = Vec::new();
    let mut t = 0;
    for _ in 0..5 {
        all.extend(h.send(t, "sensors/a/status", "\"offline\""));
        all.extend(h.send(t + 1_000, "sensors/a/heartbeat", "1"));
        t += 10_000;
    }
    let statuses: Vec<String> = all.iter().map(|o| o.3["status"].as_str().unwrap_or("?").to_owned()).collect();
    assert_eq!(statuses, ["missing", "recovered", "flapping"], "10 transitions, 3 reports");
    // Stable for a whole window: one report of where it settled, with the count.
    let o = h.tick(t + 10 * 60_000);
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o[0].3["status"], "recovered");
    assert_eq!(o[0].3["flaps"], 10);
}

#[test]
fn timers_cost_the_expired_not_the_tracked() {
    let mut h = H::new(OFFLINE);
    for i in 0..10_000 {
        h.send(0, &format!("sensors/d{i}/heartbeat"), "1");
    }
    // Everyone keeps reporting: each key has one timer entry at most, however many messages.
    for i in 0..10_000 {
        h.send(10_000, &format!("sensors/d{i}/heartbeat"), "1");
    }
    assert_eq!(h.engine.stats().timers, 10_000);
    h.send(35_000, "sensors/d0/heartbeat", "1");
    // At 30 s every entry fires once and reschedules to 40 s (no one is missing yet)...
    assert!(h.tick(30_000).is_empty());
    assert_eq!(h.engine.stats().timers, 10_000);
    // ...and at 40 s all but d0 are missing.
    assert_eq!(h.tick(40_000).len(), 9_999);
}

/// Drives `h` as the agent does: sleeps until `next_deadline` (from `now` on), ticks, and
/// stops at the first composite event or when nothing is scheduled; at most `steps` ticks.
fn run_until_event(h: &mut H, mut now: i64, steps: usize) -> Vec<crate::support::Out> {
    for _ in 0..steps {
        let Some(due) = h.engine.next_deadline() else { return Vec::new() };
        now = now.max(due.millis());
        let o = h.tick(now);
        if !o.is_empty() {
            return o;
        }
    }
    Vec::new()
}

const EXPECTED_15S: &str = r#"
    rule("offline", #{
        on: "sensors/{device}/heartbeat",
        heartbeat: #{ timeout: "5s", expected: "devices", grace: "15s" },
    });
"#;

/// Issue 14: an expected device that never reported was reported one second late (16.018 s
/// for a 15 s grace): the registry waited for the agent's next one-second tick, because
/// `next_deadline` did not know about it. A caller that sleeps until `next_deadline` must
/// load the registry at once, so the grace runs from the start.
#[test]
fn a_never_seen_device_is_missing_exactly_at_the_grace_for_a_caller_sleeping_until_next_deadline() {
    let tables = table_csv("devices", "device\nghost\n");
    let mut h = H::with(EXPECTED_15S, tables, EngineConfig::default());
    let start = 1_000_000;
    let due = h.engine.next_deadline().expect("loading the registry is work due at once");
    assert!(due.millis() <= start, "due at once, not later: {due:?}");
    let o = run_until_event(&mut h, start, 10);
    assert_eq!(keys(&o), ["ghost"]);
    assert_eq!(o[0].2, start + 15_000, "at the end of the grace, not a tick later");
    assert_eq!(o[0].3["never_seen"], true);
    assert_eq!(o[0].3["timeout_ms"], 5_000);
}

/// New tables (a reload) bring new expected devices: their grace starts when the tables
/// are set, not at whatever step comes next.
#[test]
fn devices_added_by_new_tables_are_missing_exactly_a_grace_after_the_tables_changed() {
    let tables = table_csv("devices", "device\nold\n");
    let mut h = H::with(EXPECTED_15S, tables, EngineConfig::default());
    h.send(0, "sensors/old/heartbeat", "1");
    assert_eq!(h.engine.next_deadline().map(|d| d.millis()), Some(5_000), "old's timeout, nothing pending");
    let reloaded = 3_000;
    h.engine.set_tables(table_csv("devices", "device\nold\nnew\n"));
    assert!(h.engine.next_deadline().is_some_and(|d| d.millis() <= reloaded), "due at once");
    let o = run_until_event(&mut h, reloaded, 10);
    assert_eq!(keys(&o), ["old"], "old keeps its own deadline");
    assert_eq!(o[0].2, 5_000);
    let o = run_until_event(&mut h, 5_000, 10);
    assert_eq!(keys(&o), ["new"]);
    assert_eq!(o[0].2, reloaded + 15_000);
}

/// What the agent makes of Sparkplug B messages (see `agent/src/sparkplug/event.rs`): the key in
/// `device`, the message type under `sparkplug`.
fn spb(kind: &str, device: &str) -> String {
    format!(r#"{{"device": "{device}", "sparkplug": {{"type": "{kind}"}}, "metrics": {{}}}}"#)
}

#[test]
fn sparkplug_deaths_are_absence_and_births_recover_with_the_downtime() {
    let src = r#"rule("spb", #{ on: "spBv1.0/#", heartbeat: #{ sparkplug: true } });"#;
    let mut h = H::new(src);
    assert!(h.send(0, "spBv1.0/p/NBIRTH/gw", &spb("NBIRTH", "p/gw")).is_empty());
    assert!(h.send(10, "spBv1.0/p/DBIRTH/gw/m", &spb("DBIRTH", "p/gw/m")).is_empty());
    assert!(h.send(20, "spBv1.0/p/DDATA/gw/m", &spb("DDATA", "p/gw/m")).is_empty());
    // No `timeout`: a node that reports by exception is not missing for being quiet.
    assert!(h.tick(10 * 86_400_000).is_empty());
    // An NDEATH reaches the rule once for the node and once for each of its devices.
    let t = 10 * 86_400_000 + 1_000;
    let o = h.send(t, "spBv1.0/p/NDEATH/gw", &spb("NDEATH", "p/gw"));
    assert_eq!(keys(&o), ["p/gw"]);
    assert_eq!(o[0].3["status"], "missing");
    assert_eq!(o[0].3["reason"], "death");
    assert!(o[0].3["timeout_ms"].is_null(), "no timeout: {}", o[0].3);
    let o = h.send(t, "spBv1.0/p/NDEATH/gw", &spb("NDEATH", "p/gw/m"));
    assert_eq!((keys(&o), o[0].3["reason"].clone()), (vec!["p/gw/m"], "death".into()));
    assert!(h.send(t + 5, "spBv1.0/p/NDEATH/gw", &spb("NDEATH", "p/gw")).is_empty(), "dead once");
    let o = h.send(t + 60_000, "spBv1.0/p/NBIRTH/gw", &spb("NBIRTH", "p/gw"));
    assert_eq!((o[0].3["status"].clone(), o[0].3["downtime_ms"].clone()), ("recovered".into(), 60_000.into()));
    let o = h.send(t + 60_010, "spBv1.0/p/DBIRTH/gw/m", &spb("DBIRTH", "p/gw/m"));
    assert_eq!((keys(&o), o[0].3["status"].clone()), (vec!["p/gw/m"], "recovered".into()));
    // A DDEATH makes only its device missing.
    let o = h.send(t + 70_000, "spBv1.0/p/DDEATH/gw/m", &spb("DDEATH", "p/gw/m"));
    assert_eq!((keys(&o), o[0].3["reason"].clone()), (vec!["p/gw/m"], "death".into()));
}

#[test]
fn sparkplug_with_a_timeout_reports_silence_too() {
    let src = r#"rule("spb", #{ on: "spBv1.0/#", heartbeat: #{ sparkplug: true, timeout: "1m" } });"#;
    let mut h = H::new(src);
    h.send(0, "spBv1.0/p/NBIRTH/gw", &spb("NBIRTH", "p/gw"));
    let o = h.tick(60_000);
    assert_eq!((keys(&o), o[0].3["reason"].clone()), (vec!["p/gw"], "timeout".into()));
}

#[test]
fn a_heartbeat_needs_a_timeout_unless_it_follows_sparkplug() {
    for (src, want) in [
        (r#"rule("x", #{ on: "a/#", heartbeat: #{} });"#, "`heartbeat` needs `timeout`"),
        (r#"rule("x", #{ on: "a/#", heartbeat: #{ sparkplug: 1 } });"#, "`heartbeat.sparkplug` must be true or false"),
        (r#"rule("x", #{ on: "a/#", heartbeat: #{ sparkplug: false } });"#, "`heartbeat` needs `timeout`"),
    ] {
        let sandbox = std::sync::Arc::new(edgewatch_engine::Sandbox::default());
        let (_, errors) = edgewatch_engine::RuleSet::compile(&sandbox, [("f.rhai", src)]);
        let err = errors.first().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want), "{src}: {err}");
    }
}

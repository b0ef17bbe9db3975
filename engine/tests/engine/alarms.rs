//! Alarms of rules that notify or act: the rate limit (`every`) with folding, snooze and
//! out of service by command, `alarmstate` on events, typed command errors.

use crate::support::H;
use edgewatch_engine::alarm::{Change, Command, CommandError, Condition};
use edgewatch_engine::{AlarmCommandError, Outputs, RuleSet, Sandbox, Timestamp, Touched};
use std::sync::Arc;

const MIN: i64 = 60_000;

const SRC: &str = r#"
rule("hot", #{
    on: "s/{device}/t",
    when: |e| e.value > 80,
    notify: ["pager", "chat"],
    every: "10m",
});
rule("warm", #{ on: "s/{device}/t", when: |e| e.value > 50, notify: "pager" });
rule("quiet", #{ on: "s/{device}/t", when: |e| e.value > 50 });
"#;

fn hot(h: &H) -> Vec<(String, u32, u8)> {
    h.full_actions.iter().filter(|a| &*a.rule == "hot").map(|a| (a.sink.to_string(), a.folded, a.level)).collect()
}

#[test]
fn a_burst_of_100_within_the_rate_limit_gives_1_action_then_1_with_99_folded() {
    let mut h = H::new(SRC);
    for i in 0..100 {
        let events = h.send(i * 1000, "s/a/t", r#"{"value": 90}"#);
        assert_eq!(events.iter().filter(|e| e.0 == "hot").count(), 1, "upstream events always flow");
    }
    assert_eq!(hot(&h), [("pager".to_owned(), 0, 0), ("chat".to_owned(), 0, 0)]);
    // Another key has its own limit.
    h.send(100_000, "s/b/t", r#"{"value": 90}"#);
    assert_eq!(hot(&h).len(), 4);
    h.full_actions.clear();
    // Still within 10 minutes of the first send: folded.
    h.send(10 * MIN - 1, "s/a/t", r#"{"value": 90}"#);
    assert!(hot(&h).is_empty());
    // The window has ended: the next carries the 100 held back.
    h.send(10 * MIN, "s/a/t", r#"{"value": 90}"#);
    assert_eq!(hot(&h), [("pager".to_owned(), 100, 0), ("chat".to_owned(), 100, 0)]);
    // A rule without `every` notifies on every event.
    let warm = h.full_actions.iter().filter(|a| &*a.rule == "warm").count();
    assert_eq!(warm, 2);
}

#[test]
fn events_carry_the_alarm_condition_only_for_rules_that_keep_alarms() {
    let mut h = H::new(SRC);
    let events = h.send(1, "s/a/t", r#"{"value": 90}"#);
    let states: Vec<(&str, Option<Condition>)> =
        events.iter().map(|e| e.0.as_str()).zip(h.alarm_states.iter().copied()).collect();
    assert_eq!(states, [("hot", Some(Condition::Normal)), ("warm", Some(Condition::Normal)), ("quiet", None)]);
}

#[test]
fn a_snooze_holds_actions_back_and_they_resume_after_unshelve() {
    let mut h = H::new(SRC);
    let mut out = Outputs::default();
    h.engine
        .alarm_command("warm", "a", Command::Shelve { until: 5 * MIN }, Timestamp(0), &mut out)
        .expect("command applies");
    assert_eq!(out.alarm_changes.len(), 1);
    assert_eq!(out.alarm_changes[0].change, Change::Shelved { until: 5 * MIN });
    assert_eq!((&*out.alarm_changes[0].rule, out.alarm_changes[0].key.as_str()), ("warm", "a"));
    let events = h.send(1000, "s/a/t", r#"{"value": 60}"#);
    assert_eq!(events.iter().filter(|e| e.0 == "warm").count(), 1, "the event still flows upstream");
    assert!(h.full_actions.is_empty(), "but its notification is held");
    h.send(1000, "s/b/t", r#"{"value": 60}"#);
    assert_eq!(h.full_actions.len(), 1, "another key is not snoozed");
    out.clear();
    h.engine.alarm_command("warm", "a", Command::Unshelve, Timestamp(2000), &mut out).expect("command applies");
    assert_eq!(out.alarm_changes[0].change, Change::Unshelved);
    h.send(3000, "s/a/t", r#"{"value": 60}"#);
    assert_eq!(h.full_actions.len(), 2);
    // A snooze also ends by itself at its time.
    h.engine
        .alarm_command("warm", "a", Command::Shelve { until: 4000 }, Timestamp(3500), &mut out)
        .expect("command applies");
    h.send(3900, "s/a/t", r#"{"value": 60}"#);
    assert_eq!(h.full_actions.len(), 2);
    h.send(4000, "s/a/t", r#"{"value": 60}"#);
    assert_eq!(h.full_actions.len(), 3);
}

#[test]
fn out_of_service_holds_actions_until_enabled() {
    let mut h = H::new(SRC);
    let mut out = Outputs::default();
    h.engine.alarm_command("warm", "a", Command::Disable, Timestamp(0), &mut out).expect("command applies");
    h.send(1000, "s/a/t", r#"{"value": 60}"#);
    assert!(h.full_actions.is_empty());
    let again = h.engine.alarm_command("warm", "a", Command::Disable, Timestamp(0), &mut out);
    assert_eq!(again, Err(AlarmCommandError::Refused(CommandError::AlreadyDisabled)));
    h.engine.alarm_command("warm", "a", Command::Enable, Timestamp(1500), &mut out).expect("command applies");
    let changes: Vec<Change> = out.alarm_changes.iter().map(|c| c.change).collect();
    assert_eq!(changes, [Change::Disabled, Change::Enabled]);
    h.send(2000, "s/a/t", r#"{"value": 60}"#);
    assert_eq!(h.full_actions.len(), 1);
}

#[test]
fn a_command_for_an_unknown_rule_or_one_without_alarms_is_a_typed_error() {
    let mut h = H::new(SRC);
    let mut out = Outputs::default();
    let unknown = h.engine.alarm_command("nope", "a", Command::Acknowledge, Timestamp(0), &mut out);
    assert_eq!(unknown, Err(AlarmCommandError::UnknownRule("nope".into())));
    let none = h.engine.alarm_command("quiet", "a", Command::Acknowledge, Timestamp(0), &mut out);
    assert_eq!(none, Err(AlarmCommandError::NoAlarms("quiet".into())));
    let nothing = h.engine.alarm_command("warm", "a", Command::Acknowledge, Timestamp(0), &mut out);
    assert_eq!(nothing, Err(AlarmCommandError::Refused(CommandError::NothingToAcknowledge("normal"))));
    assert!(out.alarm_changes.is_empty(), "a refused command changes nothing");
}

#[test]
fn sinks_lists_every_sink_a_rule_names_and_every_needs_a_sink() {
    let sandbox = Arc::new(Sandbox::default());
    let (rules, errors) = RuleSet::compile(&sandbox, [("t.rhai", SRC)]);
    assert!(errors.is_empty());
    let hot = rules.get("hot").expect("rule hot");
    assert_eq!(hot.sinks().collect::<Vec<_>>(), ["pager", "chat"]);
    assert_eq!(hot.every_ms, Some(10 * MIN));
    let (_, errors) =
        RuleSet::compile(&sandbox, [("t.rhai", r#"rule("x", #{ on: "a", when: |e| true, every: "1m" });"#)]);
    assert!(errors.iter().any(|e| e.to_string().contains("`every`")), "{errors:?}");
    // `inhibit` and `escalate` sinks are listed too.
    let src = r#"rule("x", #{ on: "a", when: |e| true, notify: "p", escalate: #{ after: "1m", to: ["q", "r"] },
        inhibit: #{ by: "y", parent: "devices.hub" } });"#;
    let (rules, errors) = RuleSet::compile(&sandbox, [("t.rhai", src)]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rules.get("x").expect("rule x").sinks().collect::<Vec<_>>(), ["p", "q", "r"]);
}

#[test]
fn when_the_window_ends_the_folded_ones_go_out_as_one_action_per_sink_with_folded_99() {
    let mut h = H::new(SRC);
    for i in 0..100 {
        h.send(i * 1000, "s/a/t", &format!(r#"{{"value": 90, "n": {i}}}"#));
    }
    assert_eq!(hot(&h).len(), 2);
    assert_eq!(h.engine.next_deadline(), Some(Timestamp(10 * MIN)));
    h.tick(10 * MIN - 1);
    assert_eq!(hot(&h).len(), 2, "not before the window ends");
    h.tick(10 * MIN);
    assert_eq!(hot(&h)[2..], [("pager".to_owned(), 99, 0), ("chat".to_owned(), 99, 0)]);
    // About the last event folded (at 99 s), and at its time.
    let last = &h.full_actions[h.full_actions.len() - 1];
    assert_eq!(last.time, Timestamp(99_000));
    assert_ne!(last.event, h.full_actions[0].event);
    // Nothing more is due, and the idle alarm is forgotten at the next window's end.
    h.tick(30 * MIN);
    assert_eq!(hot(&h).len(), 4);
    h.send(30 * MIN + 1, "s/a/t", r#"{"value": 90}"#);
    assert_eq!(hot(&h)[4..], [("pager".to_owned(), 0, 0), ("chat".to_owned(), 0, 0)]);
}

#[test]
fn a_command_is_saved_with_the_rule_state_and_survives_a_restart() {
    let mut h = H::new(SRC);
    h.record_touched = true;
    h.send(0, "s/a/t", r#"{"value": 90}"#);
    let mut out = Outputs::default();
    h.engine.alarm_command("warm", "a", Command::Disable, Timestamp(1000), &mut out).expect("command applies");
    let warm_a = Touched::Rule { rule: "warm".into(), key: "a".into() };
    assert!(out.touched.contains(&warm_a), "the agent learns what to save: {:?}", out.touched);
    // Folded notifications of `hot` for `a` are saved too.
    h.send(2000, "s/a/t", r#"{"value": 91}"#);
    let saved = h.engine.export_all();
    assert!(saved.iter().any(|(t, _)| *t == warm_a), "{saved:?}");

    let mut h2 = H::new(SRC);
    for (t, bytes) in &saved {
        h2.engine.import(t, bytes).expect("saved state loads");
    }
    h2.send(3000, "s/a/t", r#"{"value": 60}"#);
    assert!(h2.full_actions.is_empty(), "still out of service after the restart");
    // The rate limit window of `hot` and its folded one carried over: due at 10 min.
    assert_eq!(h2.engine.next_deadline(), Some(Timestamp(10 * MIN)));
    h2.tick(10 * MIN);
    assert_eq!(hot(&h2), [("pager".to_owned(), 1, 0), ("chat".to_owned(), 1, 0)]);
}

#[test]
fn kind_state_saved_before_alarms_existed_still_loads_and_keeps_its_alarm_beside_it() {
    let src = r#"rule("hi", #{ on: "s/{device}/t", when: |e| e.value > 80, clear: |e| e.value < 70,
        notify: "pager", every: "1m" });"#;
    let mut h = H::new(src);
    let old = Touched::Rule { rule: "hi".into(), key: "z".into() };
    h.engine.import(&old, br#"{"kind":"threshold","active":true}"#).expect("old state loads");
    assert!(h.send(1, "s/z/t", r#"{"value": 90}"#).is_empty(), "already active: hysteresis holds");
    h.send(2, "s/z/t", r#"{"value": 60}"#);
    h.send(3, "s/z/t", r#"{"value": 90}"#);
    assert_eq!(h.full_actions.len(), 1);
    let bytes = h.engine.export(&old).expect("state and alarm");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(text.contains(r#""kind":"threshold""#) && text.contains(r#""alarm""#), "{text}");
    let mut h2 = H::new(src);
    h2.engine.import(&old, &bytes).expect("loads");
    h2.send(4, "s/z/t", r#"{"value": 60}"#);
    h2.send(5, "s/z/t", r#"{"value": 90}"#);
    assert!(h2.full_actions.is_empty(), "the rate limit carried over the restart");
}

#[test]
fn a_threshold_activates_its_alarm_and_clearing_returns_it_unacknowledged() {
    let src = r#"rule("hi", #{ on: "s/{device}/t", when: |e| e.value > 80, clear: |e| e.value < 70,
        emit_clear: |e| #{ cleared: true }, notify: "pager" });"#;
    let mut h = H::new(src);
    h.send(1, "s/z/t", r#"{"value": 90}"#);
    h.send(2, "s/z/t", r#"{"value": 75}"#);
    h.send(3, "s/z/t", r#"{"value": 60}"#);
    let changes: Vec<(Change, Condition, i64)> =
        h.alarm_changes.iter().map(|c| (c.change, c.condition, c.time.millis())).collect();
    assert_eq!(
        changes,
        [
            (Change::Activated, Condition::Unacknowledged, 1),
            (Change::Cleared { to: Condition::ReturnedUnacknowledged }, Condition::ReturnedUnacknowledged, 3),
        ]
    );
    assert_eq!(h.alarm_states, [Some(Condition::Unacknowledged), Some(Condition::ReturnedUnacknowledged)]);
    let mut out = Outputs::default();
    h.engine.alarm_command("hi", "z", Command::Acknowledge, Timestamp(4), &mut out).expect("command applies");
    assert_eq!(out.alarm_changes[0].condition, Condition::Normal);
    // Acknowledged while active, clearing goes straight to normal.
    h.send(5, "s/z/t", r#"{"value": 90}"#);
    h.engine.alarm_command("hi", "z", Command::Acknowledge, Timestamp(6), &mut out).expect("command applies");
    h.send(7, "s/z/t", r#"{"value": 60}"#);
    assert_eq!(h.alarm_states[2..], [Some(Condition::Unacknowledged), Some(Condition::Normal)]);
}

#[test]
fn a_heartbeat_activates_when_missing_and_clears_when_back() {
    let src = r#"rule("offline", #{ on: "sensors/{device}/heartbeat", heartbeat: #{ timeout: "30s" },
        notify: "pager" });"#;
    let mut h = H::new(src);
    h.send(0, "sensors/a/heartbeat", "1");
    assert!(h.alarm_changes.is_empty());
    h.tick(30_000);
    assert_eq!(h.alarm_changes.len(), 1);
    assert_eq!((h.alarm_changes[0].change, h.alarm_changes[0].key.as_str()), (Change::Activated, "a"));
    assert_eq!(h.alarm_states, [Some(Condition::Unacknowledged)]);
    h.send(40_000, "sensors/a/heartbeat", "1");
    assert_eq!(h.alarm_changes[1].change, Change::Cleared { to: Condition::ReturnedUnacknowledged });
    assert_eq!(h.full_actions.len(), 2, "missing and recovered both notify");
}

const ESCALATING: &str = r#"rule("hi", #{ on: "s/{device}/t", when: |e| e.value > 80, clear: |e| e.value < 70,
    notify: "pager",
    escalate: [#{ after: "15m", to: "oncall" }, #{ after: "30m", to: ["boss", "chat"] }] });"#;

#[test]
fn an_unacknowledged_alarm_escalates_once_per_level_about_its_activation_event() {
    let mut h = H::new(ESCALATING);
    h.send(1000, "s/z/t", r#"{"value": 90}"#);
    assert_eq!(h.full_actions.len(), 1);
    let first = h.full_actions[0].event;
    assert_eq!(h.engine.next_deadline(), Some(Timestamp(1000 + 15 * MIN)));
    h.tick(1000 + 15 * MIN - 1);
    assert_eq!(h.full_actions.len(), 1);
    h.tick(1000 + 15 * MIN);
    h.tick(1000 + 20 * MIN);
    let sent: Vec<(String, u8)> = h.full_actions.iter().map(|a| (a.sink.to_string(), a.level)).collect();
    assert_eq!(sent, [("pager".to_owned(), 0), ("oncall".to_owned(), 1)]);
    h.tick(1000 + 30 * MIN);
    h.tick(1000 + 90 * MIN);
    let sent: Vec<(String, u8)> = h.full_actions.iter().map(|a| (a.sink.to_string(), a.level)).collect();
    assert_eq!(sent[2..], [("boss".to_owned(), 2), ("chat".to_owned(), 2)]);
    assert!(h.full_actions.iter().all(|a| a.event == first && a.time == Timestamp(1000)));
    let sandbox = Arc::new(Sandbox::default());
    let (rules, _) = RuleSet::compile(&sandbox, [("t.rhai", ESCALATING)]);
    let sinks: Vec<&str> = rules.get("hi").map(|r| r.sinks().collect()).unwrap_or_default();
    assert_eq!(sinks, ["pager", "oncall", "boss", "chat"]);
}

#[test]
fn an_acknowledged_alarm_does_not_escalate() {
    let mut h = H::new(ESCALATING);
    h.send(0, "s/z/t", r#"{"value": 90}"#);
    let mut out = Outputs::default();
    h.engine.alarm_command("hi", "z", Command::Acknowledge, Timestamp(MIN), &mut out).expect("command applies");
    h.tick(15 * MIN);
    h.tick(60 * MIN);
    assert_eq!(h.full_actions.len(), 1, "{:?}", h.full_actions);
    // A new activation escalates again.
    h.send(61 * MIN, "s/z/t", r#"{"value": 60}"#);
    h.send(62 * MIN, "s/z/t", r#"{"value": 90}"#);
    h.tick(62 * MIN + 15 * MIN);
    assert_eq!(h.full_actions.iter().filter(|a| a.level == 1).count(), 1);
}

#[test]
fn a_compatible_reload_keeps_the_alarm_and_its_escalation() {
    let mut h = H::new(ESCALATING);
    h.send(0, "s/z/t", r#"{"value": 90}"#);
    let edited = ESCALATING.replace("value > 80", "value > 85");
    let (rules, errors) = RuleSet::compile(h.engine.sandbox(), [("test.rhai", edited.as_str())]);
    assert!(errors.is_empty(), "{errors:?}");
    h.engine.reload(rules, Timestamp(MIN));
    h.tick(15 * MIN);
    let levels: Vec<u8> = h.full_actions.iter().map(|a| a.level).collect();
    assert_eq!(levels, [0, 1], "still active and unacknowledged after the reload");
}

#[test]
fn a_window_with_when_activates_its_alarm_and_clear_clears_it() {
    let src = r#"rule("busy", #{
        on: "s/{device}/t",
        window: #{ size: "1m", value: |e| e.value },
        when: |e| e.window.avg > 80,
        clear: |e| e.window.avg < 70,
        notify: "pager",
    });"#;
    let mut h = H::new(src);
    h.send(1000, "s/a/t", "90");
    h.send(2000, "s/a/t", "60");
    h.send(3000, "s/a/t", "30");
    let changes: Vec<(Change, i64)> = h.alarm_changes.iter().map(|c| (c.change, c.time.millis())).collect();
    assert_eq!(changes, [(Change::Activated, 1000), (Change::Cleared { to: Condition::ReturnedUnacknowledged }, 3000)]);
}

#[test]
fn an_anomaly_episode_activates_its_alarm_and_calm_readings_clear_it() {
    let src = r#"rule("odd", #{ on: "s/{device}/t", anomaly: #{ learn: 60 }, notify: "pager" });"#;
    let mut h = H::new(src);
    let calm = |i: i64| 20.0 + 0.1 * ((i * 7919) % 13 - 6) as f64 / 6.0;
    for i in 0..200 {
        h.send(i * MIN, "s/a/t", &format!("{:.4}", calm(i)));
    }
    assert!(h.alarm_changes.is_empty(), "normal readings: {:?}", h.alarm_changes);
    h.send(200 * MIN, "s/a/t", "45");
    for i in 201..260 {
        h.send(i * MIN, "s/a/t", &format!("{:.4}", calm(i)));
    }
    let changes: Vec<Change> = h.alarm_changes.iter().map(|c| c.change).collect();
    assert_eq!(changes, [Change::Activated, Change::Cleared { to: Condition::ReturnedUnacknowledged }]);
    assert_eq!(h.full_actions.len(), 1, "one page for the episode");
}

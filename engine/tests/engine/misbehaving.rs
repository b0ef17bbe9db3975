//! Rules that misbehave (an endless loop, deep recursion, a huge string, array or map,
//! expensive operations, an error in every call) are stopped by the sandbox, reported with
//! the rule's name and the position, and disabled after 10 failures in a row; the other
//! rules keep running and producing their events throughout.

use crate::support::H;
use edgewatch_engine::{EngineConfig, Limits, RuleSet, Sandbox, Tables};
use std::time::Duration;

/// Fires for every event: it must keep doing so whatever `bad` does.
const GOOD: &str = r#"rule("good", #{ on: "s/{device}", emit: |e| #{ v: e.value } });"#;

/// Sends 12 events through `GOOD` (line 1) plus `bad` (from line 2), and checks: `good`
/// emits for every one; `bad` fails 10 times with `message` at line `line`, is then reported
/// disabled, and is silent afterwards.
fn stopped_and_disabled(limits: Limits, bad: &str, line: usize, message: &str) -> H {
    let mut h =
        H::with_sandbox(Sandbox::new(limits), &format!("{GOOD}\n{bad}"), Tables::new(), EngineConfig::default());
    for t in 0..12 {
        // Two devices: a rule is disabled only for failures across keys.
        let out = h.send(t, &format!("s/d-{}", t % 2), "1");
        let rules: Vec<&str> = out.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(rules, ["good"], "the good rule fires, and only it, at {t}");
    }
    let faults = &h.fault_list;
    assert_eq!(faults.len(), 11, "10 failures, one `disabled` report, then silence: {:#?}", h.faults);
    for f in &faults[..10] {
        assert_eq!(&*f.rule, "bad");
        assert!(f.location.starts_with(&format!("test.rhai:{line}:")), "{f}");
        assert!(f.message.contains(message), "{f} should say {message:?}");
        assert!(!f.disabled);
    }
    assert!(faults[10].disabled && &*faults[10].rule == "bad", "{}", faults[10]);
    assert!(faults[10].message.contains("10 times in a row"), "{}", faults[10]);
    assert!(h.engine.stats().rules.iter().any(|r| r.0 == "bad" && r.3), "bad is disabled");
    h
}

/// A low operation limit, and no practical time budget: which limit stops a rule must not
/// depend on how loaded the machine running the tests is.
fn quick() -> Limits {
    Limits { max_operations: 20_000, ..untimed() }
}

/// The default limits without the time budget.
fn untimed() -> Limits {
    Limits { max_call_time: Duration::from_secs(3600), ..Limits::default() }
}

#[test]
fn an_endless_loop_is_stopped_by_the_operation_limit() {
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| { loop { } } });"#;
    stopped_and_disabled(quick(), bad, 2, "Too many operations");
}

#[test]
fn deep_recursion_is_stopped_by_the_call_depth_limit() {
    let bad = "fn down(n) { down(n + 1) }\nrule(\"bad\", #{ on: \"s/{device}\", when: |e| down(0) > 0 });";
    // Rhai gives limit errors no position: the rule's declaration (line 3) stands in.
    stopped_and_disabled(quick(), bad, 3, "Stack overflow");
}

#[test]
fn a_huge_string_is_stopped_by_the_string_limit() {
    let bad = r#"rule("bad", #{ on: "s/{device}", emit: |e| { let s = "x"; loop { s += s; } } });"#;
    stopped_and_disabled(quick(), bad, 2, "Length of string too large");
}

#[test]
fn a_huge_array_is_stopped_by_the_array_limit() {
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| { let a = []; loop { a.push(e.value); } } });"#;
    stopped_and_disabled(untimed(), bad, 2, "Size of array/BLOB too large");
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| { let a = []; a.pad(1000000, 0); true } });"#;
    stopped_and_disabled(quick(), bad, 2, "Size of array/BLOB too large");
}

#[test]
fn a_huge_map_is_stopped_by_the_map_limit() {
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| { let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += m.len(); } } });"#;
    stopped_and_disabled(untimed(), bad, 2, "Size of object map too large");
}

#[test]
fn state_and_emitted_data_over_the_limits_are_refused_after_the_call() {
    // Rhai does not check every in-place change (`this[k] = v`): what a handler keeps is
    // checked after each call, and the call rolled back if over; so is what a rule emits.
    let src = format!(
        "{GOOD}\n{}\n{}",
        r#"rule("hoard", #{ on: "s/{device}", key: |e| "all", on_event: |e| { this[e.device] = e.value; } });"#,
        r#"rule("flood", #{ on: "s/{device}", emit: |e| { let m = #{}; for i in 0..2000 { m[`k${i}`] = i; } m } });"#
    );
    let mut h = H::with_sandbox(Sandbox::new(untimed()), &src, Tables::new(), EngineConfig::default());
    for i in 0..1030 {
        let out = h.send(i, &format!("s/d-{i}"), "1");
        assert_eq!(out.len(), 1, "only good emits: {out:?}");
    }
    let hoard: Vec<_> = h.fault_list.iter().filter(|f| &*f.rule == "hoard").collect();
    // The 1025th device is one too many, and so is every one after it: each call is
    // rolled back to the 1024 entries before it (issue 17; it used to reset them all).
    assert_eq!(hoard.len(), 1030 - 1024, "{hoard:?}");
    for f in &hoard {
        assert!(f.message.contains("`this` holds more than 1024 map entries; call rolled back"), "{f}");
    }
    let flood: Vec<_> = h.fault_list.iter().filter(|f| &*f.rule == "flood").collect();
    assert!(
        flood[0].message.contains("the event's data holds more than 1024 map entries; not emitted"),
        "{}",
        flood[0]
    );
    assert!(flood[10].disabled, "flood fails on every event: disabled");
    // Data nested deeper than 64 levels is refused too (it is within Rhai's size limits).
    let src = r#"rule("deep", #{ on: "s", emit: |e| { let v = 1; for i in 0..100 { v = [v]; } v } });"#;
    let mut h = H::new(src);
    assert!(h.send(0, "s", "1").is_empty());
    assert!(h.faults[0].contains("nested deeper than 64 levels"), "{:?}", h.faults);
}

#[test]
fn expensive_operations_are_stopped_by_the_time_budget() {
    // Sorting a full array is one operation: the operation limit alone would let this run
    // for minutes.
    let limits = Limits { max_operations: 0, max_call_time: Duration::from_millis(20), ..Limits::default() };
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| { let a = []; a.pad(4096, 1); loop { a.sort(); a.reverse(); } } });"#;
    stopped_and_disabled(limits, bad, 2, "over the time budget of 20 ms");
}

#[test]
fn an_error_in_every_call_disables_the_rule_until_it_is_reloaded() {
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| throw "calibration table missing" });"#;
    let mut h = stopped_and_disabled(quick(), bad, 2, "calibration table missing");
    // A reload (here with the same source) enables it again.
    let (rules, errors) = RuleSet::compile(h.engine.sandbox(), [("test.rhai", format!("{GOOD}\n{bad}").as_str())]);
    assert!(errors.is_empty());
    h.engine.reload(rules, edgewatch_engine::Timestamp(100));
    assert_eq!(h.send(101, "s/d-1", "1").len(), 1);
    assert_eq!(h.fault_list.len(), 12, "bad runs (and fails) again after the reload");
}

/// Found by fuzzing: a bare `throw` made an error with an empty message.
#[test]
fn a_bare_throw_still_says_what_happened() {
    let err = Sandbox::default().compile_file("t.rhai", "throw").expect_err("fails to load");
    assert_eq!(err.to_string(), "t.rhai:1:1: `throw` without a message");
    let bad = r#"rule("bad", #{ on: "s/{device}", when: |e| throw });"#;
    stopped_and_disabled(quick(), bad, 2, "`throw` without a message");
}

#[test]
fn a_failing_key_or_emit_counts_as_a_failure_of_the_rule() {
    let bad = r#"rule("bad", #{ on: "s/{device}", key: |e| e.payload.nope.site });"#;
    stopped_and_disabled(quick(), bad, 2, "nope");
    let bad = r#"rule("bad", #{ on: "s/{device}",
        emit: |e| e.payload.nope.site });"#;
    stopped_and_disabled(quick(), bad, 3, "nope");
}

#[test]
fn a_timer_that_loops_is_stopped_and_disabled_too() {
    let src = format!(
        "{GOOD}\n{}",
        r#"rule("bad", #{ on: "s/{device}", on_event: |e| { after("1s", "check") }, on_timer: |name, data| { loop { } } });"#
    );
    let mut h = H::with_sandbox(Sandbox::new(quick()), &src, Tables::new(), EngineConfig::default());
    for t in 0..12 {
        // Each event arms a timer (one per device); they all fire a second later.
        assert_eq!(h.send(t, &format!("s/d-{t}"), "1").len(), 1, "good fires at {t}");
    }
    h.tick(2_000);
    assert_eq!(h.send(3_000, "s/d-1", "1").len(), 1, "good still fires");
    let bad: Vec<_> = h.fault_list.iter().filter(|f| &*f.rule == "bad").collect();
    assert_eq!(bad.len(), 11, "{:#?}", h.faults);
    assert!(
        bad[0].message.contains("Too many operations") && bad[0].location.starts_with("test.rhai:2:"),
        "{}",
        bad[0]
    );
    assert!(bad[10].disabled);
}

#[test]
fn deeply_nested_source_is_a_compile_error_not_a_crash() {
    let sandbox = Sandbox::default();
    for src in [
        format!("let x = {}1{};", "(".repeat(10_000), ")".repeat(10_000)),
        format!("rule(\"r\", #{{ on: \"s\", when: |e| {}1{} > 0 }});", "[".repeat(5_000), "]".repeat(5_000)),
        format!("rule(\"r\", #{{ on: \"s\", when: |e| {}true{} }});", "!".repeat(50_000), ""),
    ] {
        let err = sandbox.compile_file("deep.rhai", &src).expect_err("too deep");
        assert_eq!(err.line, 1, "{err}");
    }
}

#[test]
fn one_device_cannot_switch_a_rule_off_for_the_fleet() {
    // A payload field the rule relies on is missing: the rule throws for this device only.
    let bad = r#"rule("calib", #{ on: "s/{device}", when: |e| e.payload.cal.offset > 0 });"#;
    let mut h =
        H::with_sandbox(Sandbox::new(quick()), &format!("{GOOD}\n{bad}"), Tables::new(), EngineConfig::default());
    for t in 0..50 {
        h.send(t, "s/hostile", "1");
    }
    assert_eq!(h.fault_list.len(), 50, "every failure reported");
    assert!(h.fault_list.iter().all(|f| !f.disabled), "one key's failures never disable the rule");
    assert!(!h.engine.stats().rules.iter().any(|r| r.0 == "calib" && r.3), "calib still enabled");
    // The same failure on a second device: the rule fails for the fleet, and is disabled.
    h.send(50, "s/other", "1");
    assert!(h.fault_list.last().is_some_and(|f| f.disabled && &*f.rule == "calib"), "{:?}", h.fault_list.last());
}

/// Rules have no wall clock (Rhai's `no_time`): time comes from the event and `now()`, which a
/// replay and a backtest set, so they decide as the agent did.
#[test]
fn a_rule_cannot_read_the_wall_clock() {
    let mut h = H::new(r#"rule("clock", #{ on: "s/{device}", when: |e| timestamp().elapsed > 0 });"#);
    assert!(h.send(1_000, "s/a", "1").is_empty());
    assert!(h.faults.iter().any(|f| f.contains("timestamp")), "{:?}", h.faults);
    let mut h = H::new(r#"rule("clock", #{ on: "s/{device}", when: |e| now() == 1000 });"#);
    assert_eq!(h.send(1_000, "s/a", "1").len(), 1, "now() is the processing time handed in");
}

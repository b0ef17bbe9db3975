//! Black-box tests of the engine: rule files in, events in, composite events and faults out.

use edgewatch_engine::{Dynamic, Engine, Event, Limits, Outputs, RuleSet, Sandbox, Timestamp};
use std::sync::Arc;

fn engine(files: &[(&str, &str)]) -> Engine {
    engine_with(Sandbox::default(), files)
}

fn engine_with(sandbox: Sandbox, files: &[(&str, &str)]) -> Engine {
    let sandbox = Arc::new(sandbox);
    let (rules, errors) = RuleSet::compile(&sandbox, files.iter().copied());
    assert!(errors.is_empty(), "unexpected compile errors: {errors:?}");
    Engine::new(sandbox, rules)
}

fn json_event(topic: &str, json: &str, t: i64) -> Event {
    let payload: Dynamic = serde_json::from_str(json).expect("test payload is JSON");
    Event::new(topic, payload, json.as_bytes(), Timestamp(t))
}

fn run(engine: &mut Engine, event: &Event) -> Outputs {
    let mut out = Outputs::default();
    engine.process(event.clone(), event.time, &mut out);
    out
}

const OVERHEAT: &str = r#"
// Readings above 80 °C.
rule("overheat", #{
    on: "sensors/{device}/temperature",
    when: |e| e.value > 80.0,
    emit: |e| #{ celsius: e.value, device: e.device, site: e.levels[0] },
});
"#;

#[test]
fn a_filter_rule_emits_for_matching_events_only() {
    let mut eng = engine(&[("overheat.rhai", OVERHEAT)]);
    let hot = run(&mut eng, &json_event("sensors/t-01/temperature", r#"{"temperature": 85.5}"#, 1000));
    assert_eq!(hot.events.len(), 1);
    let ev = &hot.events[0];
    assert_eq!(&*ev.rule, "overheat");
    assert_eq!(ev.key, "t-01");
    assert_eq!(ev.time, Timestamp(1000));
    assert_eq!(ev.data_json(), serde_json::json!({"celsius": 85.5, "device": "t-01", "site": "sensors"}));

    let cool = run(&mut eng, &json_event("sensors/t-01/temperature", r#"{"temperature": 20.0}"#, 2000));
    assert!(cool.events.is_empty() && cool.faults.is_empty());

    assert_eq!(cool.matched, 1, "the rule listened but did not fire");

    let elsewhere = run(&mut eng, &json_event("sensors/t-01/humidity", r#"{"humidity": 99.0}"#, 3000));
    assert!(elsewhere.events.is_empty() && elsewhere.faults.is_empty());
    assert_eq!(elsewhere.matched, 0);
}

#[test]
fn scalar_payloads_are_the_value() {
    let mut eng = engine(&[("overheat.rhai", OVERHEAT)]);
    let out = run(&mut eng, &Event::new("sensors/t-02/temperature", Dynamic::from_float(90.0), b"90", Timestamp(5)));
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].data_json()["celsius"], 90.0);
}

#[test]
fn without_emit_the_payload_is_the_data_and_the_key_defaults_to_the_payload_device() {
    let src = r#"rule("all", #{ on: "plant/#" });"#;
    let mut eng = engine(&[("all.rhai", src)]);
    let out = run(&mut eng, &json_event("plant/line1/press", r#"{"device":"p-7","bar":3}"#, 1));
    assert_eq!(out.events[0].key, "p-7");
    assert_eq!(out.events[0].data_json(), serde_json::json!({"device":"p-7","bar":3}));
    let out = run(&mut eng, &json_event("plant/line1/press", "5", 1));
    assert_eq!(out.events[0].key, "plant/line1/press", "no device anywhere: the topic is the key");
}

#[test]
fn a_key_closure_and_an_emit_that_declines() {
    let src = r#"
        rule("by-line", #{
            on: ["plant/{line}/+"],
            key: |e| e.line,
            emit: |e| if e.value > 1 { #{ v: e.value } } else { () },
        });
    "#;
    let mut eng = engine(&[("k.rhai", src)]);
    assert_eq!(run(&mut eng, &json_event("plant/l1/x", "2", 1)).events[0].key, "l1");
    assert!(run(&mut eng, &json_event("plant/l1/x", "0", 1)).events.is_empty());
}

#[test]
fn composite_ids_are_deterministic_and_depend_on_the_input() {
    let mut a = engine(&[("overheat.rhai", OVERHEAT)]);
    let mut b = engine(&[("overheat.rhai", OVERHEAT)]);
    let e1 = json_event("sensors/t-01/temperature", r#"{"temperature": 85.5}"#, 1000);
    let e2 = json_event("sensors/t-01/temperature", r#"{"temperature": 86.5}"#, 1000);
    let id_a = run(&mut a, &e1).events[0].id;
    assert_eq!(id_a, run(&mut b, &e1).events[0].id, "same input, same id, on another engine");
    assert_ne!(id_a, run(&mut a, &e2).events[0].id);
}

#[test]
fn a_syntax_error_is_reported_with_file_line_and_column() {
    let sandbox = Sandbox::default();
    let src = "rule(\"x\", #{\n    on: \"a/b\",\n    when: |e| e.value > ,\n});\n";
    let err = sandbox.compile_file("rules/broken.rhai", src).expect_err("must not compile");
    assert_eq!((err.file.as_str(), err.line), ("rules/broken.rhai", 3));
    assert!(err.col > 0);
    let shown = err.to_string();
    assert!(shown.starts_with("rules/broken.rhai:3:"), "{shown}");
}

#[test]
fn rule_declaration_mistakes_name_the_rule_and_position() {
    let sandbox = Sandbox::default();
    let cases = [
        ("\n\nrule(\"x\", #{ on: \"a\", wen: |e| true });", "unknown key `wen`", 3),
        ("rule(\"x\", #{ when: |e| true });", "missing `on`", 1),
        ("rule(\"x\", #{ on: \"a/#/b\" });", "`#` must be the last level", 1),
        ("rule(\"x\", #{ on: \"a\", when: true });", "`when` must be a function", 1),
        ("rule(\"x y\", #{ on: \"a\" });", "rule name", 1),
        ("rule(\"x\", #{ on: \"a\" });\nrule(\"x\", #{ on: \"b\" });", "declared twice", 2),
        ("let x = undefined_variable;", "undefined_variable", 1),
    ];
    for (src, expected, line) in cases {
        let err = sandbox.compile_file("f.rhai", src).expect_err(src);
        assert!(err.message.contains(expected), "{src}: got {err}");
        assert_eq!(err.line, line, "{src}: got {err}");
    }
}

#[test]
fn a_broken_file_does_not_stop_the_others_and_names_are_unique_across_files() {
    let sandbox = Sandbox::default();
    let files = [
        ("a.rhai", r#"rule("one", #{ on: "a" });"#),
        ("b.rhai", "rule(\"two\", #{ on: "),
        ("c.rhai", r#"rule("one", #{ on: "c" });"#),
        ("d.rhai", r#"rule("three", #{ on: "d" });"#),
    ];
    let (set, errors) = RuleSet::compile(&sandbox, files);
    let names: Vec<&str> = set.iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["one", "three"]);
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].file, "b.rhai");
    assert!(errors[1].message.contains("already declared at a.rhai:1:1"), "{}", errors[1]);
}

#[test]
fn a_failing_rule_is_a_fault_with_its_position_and_the_others_still_run() {
    let src = "rule(\"bad\", #{\n  on: \"s/#\",\n  when: |e| e.payload.missing.deeper > 1,\n});\nrule(\"good\", #{ on: \"s/#\" });\n";
    let mut eng = engine(&[("r.rhai", src)]);
    let out = run(&mut eng, &json_event("s/1", r#"{"a":1}"#, 1));
    assert_eq!(out.events.len(), 1);
    assert_eq!(&*out.events[0].rule, "good");
    assert_eq!(out.faults.len(), 1);
    assert_eq!(&*out.faults[0].rule, "bad");
    assert!(out.faults[0].location.starts_with("r.rhai:3:"), "{}", out.faults[0]);
}

#[test]
fn a_predicate_that_returns_a_non_bool_is_a_fault() {
    let mut eng = engine(&[("r.rhai", r#"rule("r", #{ on: "s", when: |e| 1 });"#)]);
    let out = run(&mut eng, &json_event("s", "1", 1));
    assert!(out.events.is_empty());
    assert!(out.faults[0].message.contains("must return a bool"), "{}", out.faults[0]);
}

#[test]
fn the_sandbox_stops_endless_loops_and_huge_strings() {
    let limits = Limits { max_operations: 10_000, ..Limits::default() };
    let src = r#"
        rule("spin", #{ on: "s", when: |e| { loop {} } });
        rule("grow", #{ on: "s", emit: |e| { let s = "x"; loop { s += s; } } });
        rule("fine", #{ on: "s" });
    "#;
    let mut eng = engine_with(Sandbox::new(limits), &[("r.rhai", src)]);
    let out = run(&mut eng, &json_event("s", "1", 1));
    let faulted: Vec<&str> = out.faults.iter().map(|f| &*f.rule).collect();
    assert_eq!(faulted, ["spin", "grow"]);
    assert_eq!(out.events.len(), 1);
}

#[test]
fn rules_cannot_declare_rules_or_eval_at_run_time() {
    let src = r#"
        rule("sneaky", #{ on: "s", when: |e| { rule("x", #{ on: "y" }); true } });
    "#;
    let mut eng = engine(&[("r.rhai", src)]);
    let out = run(&mut eng, &json_event("s", "1", 1));
    assert!(out.faults[0].message.contains("top level"), "{}", out.faults[0]);
    assert_eq!(eng.rules().len(), 1);

    let err = Sandbox::default().compile_file("e.rhai", r#"eval("1")"#).expect_err("eval is disabled");
    assert_eq!(err.line, 1);
}

#[test]
fn a_top_level_endless_loop_fails_the_load_instead_of_hanging() {
    let sandbox = Sandbox::new(Limits { max_operations: 1000, ..Limits::default() });
    let err = sandbox.compile_file("loop.rhai", "loop { }").expect_err("stopped");
    assert!(err.message.to_lowercase().contains("too many operations"), "{err}");
}

#[test]
fn mqtt_filters_cover_the_rules() {
    let sandbox = Sandbox::default();
    let (set, _) = RuleSet::compile(
        &sandbox,
        [("a.rhai", OVERHEAT), ("b.rhai", r#"rule("b", #{ on: ["x/#", "sensors/+/temperature"] });"#)],
    );
    assert_eq!(set.mqtt_filters(), ["sensors/+/temperature", "x/#"]);
}

#[test]
fn replacing_rules_takes_effect_on_the_next_event() {
    let mut eng = engine(&[("overheat.rhai", OVERHEAT)]);
    let ev = json_event("sensors/t-01/temperature", r#"{"temperature": 50}"#, 1);
    assert!(run(&mut eng, &ev).events.is_empty());
    let (rules, _) = RuleSet::compile(
        eng.sandbox(),
        [("o.rhai", r#"rule("warm", #{ on: "sensors/+/temperature", when: |e| e.value > 40 });"#)],
    );
    eng.replace_rules(rules);
    assert_eq!(&*run(&mut eng, &ev).events[0].rule, "warm");
}

#[test]
fn every_rule_example_in_the_docs_compiles() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sandbox = Sandbox::default();
    let mut seen = 0;
    for doc in ["docs/rules.md", "README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect("doc exists");
        let mut in_block = false;
        let mut block = String::new();
        let mut start = 0;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start() == "```rhai" {
                in_block = true;
                block.clear();
                start = i + 2;
            } else if in_block && line.trim_start() == "```" {
                in_block = false;
                seen += 1;
                let name = format!("{doc}:{start}");
                if let Err(e) = sandbox.compile_file(&name, &block) {
                    panic!("example at {name} does not compile: {e}\n{block}");
                }
            } else if in_block {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(seen >= 12, "found only {seen} examples");
}

#[test]
fn the_engine_crate_does_no_io() {
    // The engine is pure: no async runtime, no MQTT, no database. Its manifest says so.
    let manifest =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("manifest");
    let deps = manifest.split("[dependencies]").nth(1).and_then(|s| s.split("\n[").next()).expect("dependencies");
    for forbidden in ["tokio", "rumqttc", "rumqttd", "sled"] {
        assert!(!deps.lines().any(|l| l.trim_start().starts_with(forbidden)), "engine depends on {forbidden}");
    }
}

/// Issue 14: a rule whose `e.value` is `()` for every message (`{"temp": 90}` on
/// `.../telemetry`: no `value` field, none named like the last level) never fired and said
/// nothing. Each event a rule's predicate read `e.value` of, and found none, is reported.
#[test]
fn reading_a_missing_value_is_reported_per_rule_and_event() {
    use crate::support::{H, keys};
    let src = r#"
        rule("hot", #{ on: "sensors/{device}/+", when: |e| e.value > 80 });
        rule("hot-script", #{ on: "sensors/{device}/+", when: |e| { let v = e.value; v == 90 } });
        rule("by-field", #{ on: "sensors/{device}/telemetry", when: |e| e.payload.temp > 80 });
        rule("stuck", #{ on: "sensors/{device}/+", stuck: #{ unchanged: "1m" } });
    "#;
    let mut h = H::new(src);
    assert_eq!(keys(&h.send(0, "sensors/t-1/telemetry", r#"{"temp": 90}"#)), ["t-1"], "by-field fires");
    assert_eq!(h.value_missing, ["hot", "hot-script", "stuck"], "rules reading e.value, once each");
    h.value_missing.clear();
    // With a value: nothing to report, whether the rule fires or not.
    h.send(1_000, "sensors/t-1/temperature", r#"{"temperature": 90}"#);
    h.send(2_000, "sensors/t-1/telemetry", r#"{"value": 20}"#);
    h.send(3_000, "sensors/t-1/temperature", "20");
    assert_eq!(h.value_missing, Vec::<String>::new());
    assert!(h.faults.is_empty(), "{:?}", h.faults);
}

/// The shipped `offline` rule reads `e.value` only on a `status` message
/// (`e.levels[2] == "status" && e.value == "offline"`): a heartbeat without a value is not
/// reported as a missing value (the demo warned about it on every start).
#[test]
fn a_value_read_only_past_a_false_condition_is_not_reported_missing() {
    use crate::support::H;
    let src = r#"
        rule("guarded", #{ on: "sensors/{device}/+", when: |e| e.levels[2] == "status" && e.value == "offline" });
        rule("either", #{ on: "sensors/{device}/+", when: |e| e.levels[2] == "heartbeat" || e.value == "x" });
        rule("unguarded", #{ on: "sensors/{device}/+", when: |e| e.value == "offline" && e.levels[2] == "status" });
    "#;
    let mut h = H::new(src);
    h.send(0, "sensors/t-1/heartbeat", r#"{"n": 1}"#);
    assert_eq!(h.value_missing, ["unguarded"], "only the rule that did read it");
    h.value_missing.clear();
    h.send(1_000, "sensors/t-1/status", r#"{"n": 1}"#);
    assert_eq!(h.value_missing, ["guarded", "either", "unguarded"], "past the guard, all read it");
}

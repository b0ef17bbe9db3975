//! Numbers in rules (issue 17): integers and floats mix, math functions take both, and
//! non-finite numbers are never emitted.

use crate::support::H;
use serde_json::json;

/// Runs `emit: |e| <expr>` on one reading with payload `value` and returns the data.
fn eval(expr: &str, value: &str) -> (Vec<serde_json::Value>, Vec<String>) {
    let src = format!(r#"rule("r", #{{ on: "s/{{device}}/v", emit: |e| {expr} }});"#);
    let mut h = H::new(&src);
    let o = h.send(0, "s/a/v", value);
    (o.into_iter().map(|o| o.3).collect(), h.faults)
}

#[test]
fn math_functions_take_integers_like_floats() {
    let one_arg = [
        "sqrt",
        "exp",
        "ln",
        "log",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "tanh",
        "asinh",
        "acosh",
        "atanh",
        "to_radians",
        "to_degrees",
    ];
    for f in one_arg {
        // acosh needs x >= 1, asin/acos and atanh need |x| <= 1 (or < 1): 1 suits all but atanh.
        let x = if f == "atanh" { "0" } else { "1" };
        let (as_int, faults) = eval(&format!("#{{ y: {f}(e.value) }}"), x);
        assert!(faults.is_empty(), "{f}: {faults:?}");
        let (as_float, _) = eval(&format!("#{{ y: {f}(e.value) }}"), &format!("{x}.0"));
        assert_eq!(as_int, as_float, "{f}");
    }
    for (f, x) in [("log", "e.value, 10"), ("atan", "e.value, 2"), ("hypot", "e.value, 4"), ("hypot", "3, e.value")] {
        let expr = format!("#{{ y: {f}({x}) }}");
        let (as_int, faults) = eval(&expr, "3");
        assert!(faults.is_empty(), "{f}({x}): {faults:?}");
        let (as_float, faults) = eval(&expr, "3.0");
        assert!(faults.is_empty(), "{f}({x}) on a float: {faults:?}");
        assert_eq!(as_int, as_float, "{f}({x})");
    }
    assert_eq!(eval("#{ y: sqrt(e.value) }", "4").0, [json!({"y": 2.0})]);
    assert_eq!(eval("#{ y: hypot(3, 4) }", "4").0, [json!({"y": 5.0})]);
}

#[test]
fn rounding_an_integer_keeps_it_an_integer() {
    for f in ["floor", "ceiling", "round", "int"] {
        assert_eq!(eval(&format!("#{{ y: {f}(e.value) }}"), "7").0, [json!({"y": 7})], "{f}");
        assert_eq!(eval(&format!("#{{ y: e.value.{f} }}"), "7").0, [json!({"y": 7})], "{f} as a property");
        assert_eq!(eval(&format!("#{{ y: {f}(e.value) }}"), "7.0").0, [json!({"y": 7.0})], "{f} of a float");
    }
    assert_eq!(eval("#{ y: fraction(e.value) }", "7").0, [json!({"y": 0})]);
    assert_eq!(
        eval("#{ n: is_nan(e.value), f: is_finite(e.value), i: is_infinite(e.value) }", "7").0,
        [json!({"n": false, "f": true, "i": false})]
    );
}

#[test]
fn integers_stay_integers() {
    assert_eq!(eval("#{ y: e.value + 1, z: abs(e.value - 10) }", "2").0, [json!({"y": 3, "z": 8})]);
    assert_eq!(eval("#{ y: e.value * 1.5 }", "2").0, [json!({"y": 3.0})]);
}

#[test]
fn mixed_arithmetic_works_both_ways_and_in_place() {
    for v in ["2", "2.0"] {
        let (o, faults) = eval(
            "{ let s = 0; s += e.value; s += 0.5; let t = 1.5; t += e.value; let m = 3; m *= e.value; m -= 0.5; \
             let d = 1; d /= 4.0; #{ s: s, t: t, m: m, d: d, lt: e.value < 2.5, eq: e.value == 2, mx: max(e.value, 1.5) } }",
            v,
        );
        assert!(faults.is_empty(), "{v}: {faults:?}");
        assert_eq!(o, [json!({"s": 2.5, "t": 3.5, "m": 5.5, "d": 0.25, "lt": true, "eq": true, "mx": 2.0})], "{v}");
    }
}

#[test]
fn nan_or_infinity_in_emitted_data_is_a_fault_that_names_the_field() {
    let cases = [
        ("#{ ratio: e.value / 0.0 }", "emitted `data.ratio` is infinite"),
        ("#{ a: #{ b: [1.0, -e.value / 0.0] } }", "emitted `data.a.b[1]` is -infinite"),
        ("#{ r: (e.value - e.value) / 0.0 }", "emitted `data.r` is NaN"),
        ("e.value / 0.0", "emitted `data` is infinite"),
        ("#{ s: sqrt(-e.value) }", "emitted `data.s` is NaN"),
    ];
    for (expr, want) in cases {
        for v in ["2", "2.0"] {
            let (o, faults) = eval(expr, v);
            assert!(o.is_empty(), "{expr} on {v}: not emitted, but {o:?}");
            assert_eq!(faults.len(), 1, "{expr} on {v}: {faults:?}");
            assert!(faults[0].contains(want), "{expr} on {v}: {faults:?}");
        }
    }
    let (o, faults) = eval("#{ ok: e.value / 4.0, big: 1.0e300 }", "2");
    assert!(faults.is_empty(), "{faults:?}");
    assert_eq!(o, [json!({"ok": 0.5, "big": 1.0e300})]);
}

#[test]
fn a_handler_emitting_nan_is_a_fault_too() {
    let src = r#"rule("h", #{ on: "s/{device}/v", on_event: |e| { emit(#{ x: e.value / 0.0 }); emit(#{ y: 1 }); } });"#;
    let mut h = H::new(src);
    let o = h.send(0, "s/a/v", "0");
    assert_eq!(o.len(), 1, "the good one is emitted: {o:?}");
    assert!(h.faults.iter().any(|f| f.contains("emitted `data.x` is NaN")), "{:?}", h.faults);
}

/// The topics a rule file listens on, made concrete: `{name}` and `+` become `d1`, `#` `x`.
fn topics(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in src.lines().filter(|l| l.trim_start().starts_with("on:")) {
        for (i, part) in line.split('"').enumerate() {
            if i % 2 == 1 {
                let levels: Vec<&str> = part
                    .split('/')
                    .map(|l| match l {
                        "+" => "d1",
                        "#" => "x",
                        l if l.starts_with('{') => "d1",
                        l => l,
                    })
                    .collect();
                out.push(levels.join("/"));
            }
        }
    }
    out
}

/// Every number as a float, so `2` and `2.0` compare equal.
fn as_floats(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map(|f| json!(f)).unwrap_or(Value::Number(n)),
        Value::Array(a) => Value::Array(a.into_iter().map(as_floats).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, as_floats(v))).collect()),
        other => other,
    }
}

/// Issue 17: every rule example of docs/rules.md, fed the same readings spelled as integers
/// and as floats, says the same thing, and never that a function does not take a number.
#[test]
fn the_docs_examples_work_with_both_spellings_of_each_number() {
    let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md"));
    let readings = [20, 85, 90, 95, 2, 100, 81, 70, 30, 2, 4, 4, 60, 85];
    let mut ran = 0;
    for block in doc.split("```rhai\n").skip(1).filter_map(|b| b.split("```").next()) {
        let topics = topics(block);
        if topics.is_empty() {
            continue;
        }
        let run = |float: bool| {
            let mut h = H::new(block);
            let mut outs = Vec::new();
            for (i, v) in readings.iter().enumerate() {
                let payload = if float { format!("{v}.0") } else { v.to_string() };
                let t = i as i64 * 10_000;
                for topic in &topics {
                    outs.extend(h.send(t, topic, &payload));
                    outs.extend(h.send(t, topic, &format!(r#"{{"temperature": {payload}, "device": "d1"}}"#)));
                }
            }
            outs.extend(h.tick(10_000_000));
            let outs: Vec<_> = outs.into_iter().map(|(r, k, t, d)| (r, k, t, as_floats(d))).collect();
            // Payloads a rule does not expect fail the same way, up to the number's type.
            let faults: Vec<String> = h.faults.iter().map(|f| f.replace("i64", "f64")).collect();
            (outs, faults)
        };
        let (ints, int_faults) = run(false);
        let (floats, float_faults) = run(true);
        for f in int_faults.iter().chain(&float_faults) {
            assert!(!f.contains("Function not found"), "{f}\n{block}");
        }
        assert_eq!(int_faults, float_faults, "{block}");
        assert_eq!(ints, floats, "{block}");
        ran += 1;
    }
    assert!(ran >= 12, "ran only {ran} examples");
}

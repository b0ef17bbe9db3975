//! Differential tests of [`crate::native`]: on the event as rules see it ([`Ev`]), the
//! native path must say what Rhai says, or defer to it. Here rather than in `native.rs`, so
//! `native` needs nothing of `kinds` (which builds on it).

use super::Ev;
use crate::event::Event;
use crate::native::Pred;
use crate::time::Timestamp;
use proptest::prelude::*;
use rhai::{Dynamic, FnPtr};
use std::cell::OnceCell;

const PREDICATES: &[&str] = &[
    "|e| e.value > 80.0",
    "|e| e.value >= 80",
    "|e| e.value < LIMIT",
    "|e| e.value == 42",
    "|e| e.value != 42.5",
    "|e| e.device == \"t-1\" && e.value > 10",
    "|e| !(e.device == \"t-1\") || e.time >= 1000",
    "|e| e.levels[2] == \"temperature\"",
    "|e| e.levels[9] == \"x\"",
    "|e| e.payload.battery < 3.3",
    "|e| e.payload.nested.level >= 2",
    "|e| e.payload.state == \"on\"",
    "|e| e.topic != \"a\"",
    "|e| e.nothing == 1",
    "|e| true",
    "|e| e.value > NAME",
];

fn rhai_and_native(src: &str, payload: Dynamic, topic: &str) -> (Option<bool>, Option<bool>, bool) {
    let engine = rhai::Engine::new();
    let full = format!("const LIMIT = 50; const NAME = \"x\"; let f = {src}; f");
    let ast = engine.compile(full).expect("compiles");
    let f: FnPtr = engine.eval_ast(&ast).expect("a function");
    let native = Pred::compile(&f, &ast);
    let event = Event::new(topic, payload, b"", Timestamp(1234));
    let base = OnceCell::new();
    let captures = [("device", "t-1")];
    let x = Ev::new(&event, &captures, &base);
    let fast = native.as_ref().and_then(|p| p.eval(&x.view()));
    let slow = f.call::<Dynamic>(&engine, &ast, (x.dynamic().clone(),)).ok().and_then(|v| v.as_bool().ok());
    (fast, slow, native.is_some())
}

fn payload() -> impl Strategy<Value = Dynamic> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| Dynamic::from_int(i % 200)),
        (-200.0f64..200.0).prop_map(Dynamic::from_float),
        Just(Dynamic::from_float(42.0)),
        Just(Dynamic::from_int(42)),
        any::<bool>().prop_map(Dynamic::from_bool),
        prop::sample::select(vec!["on", "off", "x"]).prop_map(|s| Dynamic::from(s.to_owned())),
        Just(Dynamic::UNIT),
    ];
    (scalar.clone(), scalar.clone(), scalar, any::<bool>()).prop_map(|(a, b, c, as_map)| {
        if !as_map {
            return a;
        }
        let mut m = rhai::Map::new();
        m.insert("temperature".into(), a);
        m.insert("battery".into(), b.clone());
        m.insert("state".into(), b);
        let mut nested = rhai::Map::new();
        nested.insert("level".into(), c);
        m.insert("nested".into(), Dynamic::from_map(nested));
        Dynamic::from_map(m)
    })
}

#[test]
fn simple_predicates_are_recognised() {
    for src in PREDICATES {
        let (_, _, native) = rhai_and_native(src, Dynamic::from_int(1), "sensors/t-1/temperature");
        assert!(native, "{src} should be native");
    }
    for src in ["|e| e.value.abs() > 1", "|e| { let x = 1; e.value > x }", "|e| lookup(\"t\", e.device) == ()"] {
        let engine = rhai::Engine::new();
        let ast = engine.compile(format!("let f = {src}; f")).expect("compiles");
        let f: FnPtr = engine.eval_ast(&ast).expect("fn");
        assert!(Pred::compile(&f, &ast).is_none(), "{src} must go to Rhai");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn native_agrees_with_rhai(i in 0..PREDICATES.len(), payload in payload(), other_topic in any::<bool>()) {
        let topic = if other_topic { "sensors/t-2/humidity" } else { "sensors/t-1/temperature" };
        let (fast, slow, _) = rhai_and_native(PREDICATES[i], payload, topic);
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), slow, "{}", PREDICATES[i]);
        }
    }
}

// Shared by the `compile` fuzz target and `engine/tests/engine/corpus.rs` (included in both).
//
// Any text as a rule file: compiling never panics and errors have a position inside the
// file. Rules that compile run on a few events and a tick under small limits without
// panicking, and the state they leave exports and imports into a fresh engine.

use edgewatch_engine::{Dynamic, Engine, Event, Limits, Outputs, RuleSet, Sandbox, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let limits =
                Limits { max_operations: 5_000, max_call_time: Duration::from_millis(50), ..Limits::default() };
            Arc::new(Sandbox::new(limits))
        })
        .clone()
}

/// Checks one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let sandbox = sandbox();
    let (rules, errors) = RuleSet::compile(&sandbox, [("fuzz.rhai", src)]);
    // Rhai counts a lone `\r` as a line break too (old Mac line endings).
    let lines = src.matches('\n').count() + src.matches('\r').count() - src.matches("\r\n").count() + 1;
    for e in &errors {
        assert!(e.line <= lines, "error past the end of the file: {e}");
        assert!(!e.message.is_empty());
    }
    if rules.is_empty() {
        return;
    }
    let mut engine = Engine::new(sandbox.clone(), rules.clone());
    let mut out = Outputs::default();
    let inputs: [(&str, &str); 4] = [
        ("sensors/t-1/temperature", r#"{"device": "t-1", "seq": 1, "temperature": 85.5, "site": "yard"}"#),
        ("sensors/t-1/temperature", "21.5"),
        ("doors/d-1/state", r#""open""#),
        ("sensors/t-2/heartbeat", r#"{"device": "t-2", "seq": 7, "uptime_s": 12}"#),
    ];
    for (i, (topic, json)) in inputs.iter().enumerate() {
        let payload: Dynamic = serde_json::from_str(json).expect("test payloads are JSON");
        let t = i64::try_from(i).unwrap_or(0) * 1_000;
        engine.process(Event::new(*topic, payload, json.as_bytes(), Timestamp(t)), Timestamp(t), &mut out);
        for e in &out.events {
            let _ = e.data_json();
        }
        out.clear();
    }
    engine.tick(Timestamp(3_600_000), &mut out);
    let _ = engine.stats();
    // What one engine saved, an engine with the same rules restores.
    let mut fresh = Engine::new(sandbox, rules);
    for (what, bytes) in engine.export_all() {
        if let Err(e) = fresh.import(&what, &bytes) {
            panic!("state saved by these rules does not restore: {e}");
        }
    }
}

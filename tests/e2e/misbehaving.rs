//! A rule that misbehaves inside the agent: stopped by the sandbox, reported on
//! `<prefix>/errors` with its name and position, disabled after 10 failures in a row, while
//! a healthy rule keeps firing.

use crate::{OVERHEAT, config};
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber};

/// Spins forever on every reading; the operation limit stops each call.
const SPIN: &str = r#"// Waits for a calm that never comes.
rule("spin", #{
    on: "sensors/{device}/temperature",
    when: |e| { loop { } },
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_stuck_in_a_loop_is_reported_and_disabled_and_the_others_keep_firing() {
    for broker in Broker::all() {
        let label = broker.name();
        let addr = broker.addr();
        let agent =
            RunningAgent::start(&config(addr, "3.1.1"), &[("overheat.rhai", OVERHEAT), ("spin.rhai", SPIN)]).await;
        let mut errors = Subscriber::connect(addr, "errors-reader", "edgewatch/gw-test/errors").await;
        let mut upstream = Subscriber::connect(addr, "cloud", "edgewatch/gw-test/events/#").await;
        let mut sensor = Publisher::connect(addr, "sensor").await;
        for i in 0..12 {
            sensor.publish(&format!("sensors/t-{i:02}/temperature"), "99").await;
        }
        for i in 0..12 {
            let ev = upstream.next().await.json();
            assert_eq!(ev["type"], "edgewatch.overheat", "{label}: {ev}");
            assert_eq!(ev["subject"], format!("t-{i:02}"), "{label}: the healthy rule fires for every reading");
        }
        for n in 0..10 {
            let report = errors.next().await.json();
            assert_eq!(report["rule"], "spin", "{label}: {report}");
            let location = report["location"].as_str().unwrap_or_default();
            assert!(location.ends_with("/spin.rhai:2:1"), "{label}: where the rule is declared: {report}");
            // Stopped by the operation limit, or on a loaded machine by the time budget first.
            let error = report["error"].as_str().unwrap_or_default();
            assert!(error == "Too many operations" || error.contains("over the time budget"), "{label}: {report}");
            assert_eq!(report["disabled"], false, "{label}: failure {n}: {report}");
        }
        let last = errors.next().await.json();
        assert_eq!((last["rule"].as_str(), last["disabled"].as_bool()), (Some("spin"), Some(true)), "{label}: {last}");
        let s = agent.wait_for_stats("every event to be counted", |s| s.events == 12).await;
        assert_eq!(s.rule_faults, 11, "{label}: 10 failures and the report that it is disabled; {s}");
        // Disabled: the next reading costs it nothing and reports nothing; overheat still fires.
        sensor.publish("sensors/t-99/temperature", "99").await;
        assert_eq!(upstream.next().await.json()["subject"], "t-99", "{label}");
        let s = agent.wait_for_stats("the last event", |s| s.events == 13).await;
        assert_eq!(s.rule_faults, 11, "{label}: silent once disabled; {s}");
        // Fixed and reloaded: running again. The audit trail (issue 20) has both: the disable,
        // and the reload that re-enabled it.
        let fixed = SPIN.replace("loop { }", "e.value > 200");
        std::fs::write(agent.dir.path().join("rules").join("spin.rhai"), fixed).expect("fix the rule");
        agent.request_reload().await;
        let audit = edgewatch::audit::dir_in(&agent.dir.path().join("state"));
        let mut entries = Vec::new();
        for _ in 0..100 {
            entries = edgewatch::audit::read(&audit, i64::MIN).expect("the audit trail reads");
            if entries.iter().any(|e| e.kind == "reload") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let of = |kind: &str| entries.iter().find(|e| e.kind == kind).map(|e| e.data.clone());
        assert_eq!(of("rule_disabled").map(|d| d["rule"].clone()), Some("spin".into()), "{label}: {entries:?}");
        let reload = of("reload").unwrap_or_default();
        assert_eq!(reload["reenabled"], serde_json::json!(["spin"]), "{label}: {entries:?}");
        assert_eq!(reload["trigger"], "signal", "{label}");
        agent.stop().await;
    }
}

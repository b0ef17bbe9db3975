//! Keys per rule: every stateful rule is bounded; at the limit it refuses new keys or evicts
//! the least recently seen, counts it, and reports it once per interval.

use crate::support::{H, keys, table_csv};
use edgewatch_engine::{EngineConfig, OnFull, RuleSet, Sandbox, Tables, Touched};

/// A threshold per device: it fires once when a device gets hot, and not again until it
/// cools down. Evicting a device would forget that it already fired.
fn hot(extra: &str) -> String {
    format!(r#"rule("hot", #{{ on: "s/{{device}}/t", when: |e| e.value > 80, clear: |e| e.value < 70, {extra} }});"#)
}

fn junk(h: &mut H, t: i64, n: usize) {
    for i in 0..n {
        h.send(t, &format!("s/junk-{t}-{i}/t"), "1");
    }
}

#[test]
fn by_default_a_rule_evicts_the_key_seen_least_recently_and_keeps_the_active_fleet() {
    let mut h = H::new(&hot("max_keys: 5"));
    for d in ["a", "b"] {
        assert_eq!(keys(&h.send(0, &format!("s/{d}/t"), "90")), [d], "fires once");
    }
    // A flood of new ids, while a and b keep reporting: they stay tracked (and stay fired).
    for t in 1..50 {
        junk(&mut h, t, 3);
        for d in ["a", "b"] {
            assert!(h.send(t, &format!("s/{d}/t"), "90").is_empty(), "{d} does not fire again at {t}");
        }
    }
    assert_eq!(h.engine.tracked_keys().collect::<Vec<_>>(), [("hot", 5)]);
    assert_eq!(h.refused, 0);
    assert_eq!(h.evicted, 49 * 3 - 3, "all but the first 3 junk keys needed room");
    // A device that went quiet is the oldest: evicted when room is needed, then new again.
    junk(&mut h, 100, 5);
    assert_eq!(keys(&h.send(101, "s/a/t", "90")), ["a"], "a was forgotten, so it fires again");
}

#[test]
fn a_refusing_rule_keeps_the_keys_it_has() {
    let mut h = H::new(&hot(r#"max_keys: 3, on_full: "refuse""#));
    for d in ["a", "b", "c"] {
        h.send(0, &format!("s/{d}/t"), "1");
    }
    junk(&mut h, 1, 10);
    assert_eq!(h.refused, 10);
    assert_eq!(h.evicted, 0);
    assert!(h.send(2, "s/junk-x/t", "90").is_empty(), "a refused key is not evaluated");
    assert_eq!(keys(&h.send(2, "s/a/t", "90")), ["a"], "known keys work as before");
}

#[test]
fn a_rule_without_max_keys_is_bounded_by_the_engine_default() {
    let config = EngineConfig { max_keys_per_rule: 50, ..EngineConfig::default() };
    let src = format!("{}\n{}", hot(""), r#"rule("all", #{ on: "s/{device}/t" });"#);
    let mut h = H::with(&src, Tables::new(), config);
    junk(&mut h, 0, 1000);
    let tracked: Vec<(String, usize)> = h.engine.tracked_keys().map(|(r, n)| (r.to_owned(), n)).collect();
    assert_eq!(tracked, [("hot".to_owned(), 50), ("all".to_owned(), 0)], "a filter keeps no keys");
    assert_eq!(h.evicted, 950);
    // A rule's own max_keys wins over the default, both ways.
    let src = hot("max_keys: 80");
    let mut h = H::with(&src, Tables::new(), EngineConfig { max_keys_per_rule: 50, ..EngineConfig::default() });
    junk(&mut h, 0, 1000);
    assert_eq!(h.engine.tracked_keys().next(), Some(("hot", 80)));
}

#[test]
fn refusals_and_evictions_are_reported_once_per_rule_per_interval() {
    let config = EngineConfig { key_report_interval_ms: 60_000, ..EngineConfig::default() };
    let src = format!(
        "{}\n{}",
        hot("max_keys: 2"),
        r#"rule("cold", #{ on: "s/{device}/t", when: |e| e.value < 0, clear: |e| e.value > 5, max_keys: 2, on_full: "refuse" });"#
    );
    let mut h = H::with(&src, Tables::new(), config);
    junk(&mut h, 1_000, 10);
    // The first hit is reported at once, per rule.
    let reports: Vec<(&str, OnFull, u64, u64, i64)> =
        h.key_limits.iter().map(|r| (&*r.rule, r.on_full, r.refused, r.evicted, r.since.millis())).collect();
    assert_eq!(
        reports,
        [("hot", OnFull::EvictOldest, 0, 1, 1_000), ("cold", OnFull::Refuse, 1, 0, 1_000)],
        "one report each, as soon as the limit is hit"
    );
    assert_eq!(h.key_limits[0].max_keys, 2);
    assert!(h.key_limits[0].to_string().contains("rule `hot` tracks its maximum of 2 keys"), "{}", h.key_limits[0]);
    // Everything else within the interval adds up silently...
    junk(&mut h, 30_000, 10);
    assert!(h.tick(60_999).is_empty());
    assert_eq!(h.key_limits.len(), 2, "no more reports within the interval");
    // ...and is reported when it has passed, even without new input.
    h.tick(61_000);
    let later: Vec<(&str, u64, u64, i64)> =
        h.key_limits[2..].iter().map(|r| (&*r.rule, r.refused, r.evicted, r.since.millis())).collect();
    assert_eq!(later, [("hot", 0, 17, 1_000), ("cold", 17, 0, 1_000)]);
    // Quiet rules are not reported.
    h.tick(200_000);
    assert_eq!(h.key_limits.len(), 4);
    junk(&mut h, 300_000, 1);
    assert_eq!(h.key_limits.len(), 6, "a new period starts with a report at once");
    assert_eq!((h.key_limits[4].since.millis(), h.key_limits[4].evicted), (300_000, 1));
}

#[test]
fn evicted_keys_are_named_as_touched_so_their_saved_state_is_deleted() {
    let mut h = H::new(&hot("max_keys: 1"));
    h.record_touched = true;
    h.send(0, "s/a/t", "90");
    h.send(1, "s/b/t", "90");
    let a = Touched::Rule { rule: "hot".into(), key: "a".into() };
    assert!(h.touched.contains(&a));
    assert_eq!(h.engine.export(&a), None, "nothing to save for a: the store deletes it");
    assert!(h.engine.export(&Touched::Rule { rule: "hot".into(), key: "b".into() }).is_some());
}

#[test]
fn keys_longer_than_256_bytes_are_refused() {
    let mut h = H::new(&hot(""));
    let long = "x".repeat(257);
    assert!(h.send(0, &format!("s/{long}/t"), "90").is_empty());
    assert_eq!((h.refused, h.engine.tracked_keys().next()), (1, Some(("hot", 0))));
    assert_eq!(keys(&h.send(0, &format!("s/{}/t", "x".repeat(256)), "90")).len(), 1);
}

#[test]
fn heartbeats_refuse_by_default_and_never_evict_an_expected_device() {
    const HB: &str = r#"
        rule("offline", #{
            on: "s/{device}/hb",
            heartbeat: #{ timeout: "10s", expected: "devices" },
            max_keys: 4,
            ON_FULL
        });
    "#;
    let tables = || table_csv("devices", "device\nd-1\nd-2\nd-3\n");
    // Default: refuse. The registry and the first stranger fill it; later strangers are refused.
    let mut h = H::with(&HB.replace("ON_FULL", ""), tables(), EngineConfig::default());
    h.send(0, "s/stranger-1/hb", "1");
    h.send(0, "s/stranger-2/hb", "1");
    assert_eq!((h.refused, h.evicted), (1, 0));
    assert_eq!(h.key_limits[0].on_full, OnFull::Refuse);
    // Evicting: strangers evict each other, never an expected device, even one that went
    // silent long ago (the least recently seen key of all).
    let mut h = H::with(&HB.replace("ON_FULL", r#"on_full: "evict_oldest","#), tables(), EngineConfig::default());
    for d in ["d-1", "d-2", "d-3"] {
        h.send(0, &format!("s/{d}/hb"), "1");
    }
    let mut reported = Vec::new();
    for t in 1..=20 {
        reported.extend(h.send(t * 1_000, &format!("s/stranger-{t}/hb"), "1"));
        reported.extend(h.send(t * 1_000, "s/d-2/hb", "1"));
        reported.extend(h.send(t * 1_000, "s/d-3/hb", "1"));
    }
    assert_eq!(h.evicted, 19);
    let missing: Vec<(&str, i64)> =
        reported.iter().filter(|o| o.3["status"] == "missing").map(|o| (o.1.as_str(), o.2)).collect();
    assert_eq!(missing, [("d-1", 10_000)], "d-1, silent since 0, is still watched and reported");
}

#[test]
fn evicted_keys_leave_no_timers_piling_up() {
    // A tumbling window arms a timer per key; a stream of new ids evicts the keys and would
    // leave a timer each until the windows close.
    let src = r#"rule("avg", #{ on: "s/{device}/t", window: #{ size: "1h", tumbling: true }, max_keys: 10 });"#;
    let mut h = H::new(src);
    junk(&mut h, 0, 20_000);
    let timers = h.engine.stats().timers;
    assert!(timers <= 2 * 4096 + 10, "timers of evicted keys are purged: {timers}");
    assert_eq!(h.evicted, 19_990);
    // Windows of keys still tracked close as usual.
    let closed = h.tick(3_600_000);
    assert_eq!(closed.len(), 10, "the 10 tracked windows close");
}

#[test]
fn a_reload_applies_a_new_limit_to_the_state_kept() {
    let mut h = H::new(&hot("max_keys: 10"));
    junk(&mut h, 0, 10);
    let (rules, errors) =
        RuleSet::compile(h.engine.sandbox(), [("test.rhai", hot(r#"max_keys: 4, on_full: "refuse""#).as_str())]);
    assert!(errors.is_empty());
    h.engine.reload(rules, edgewatch_engine::Timestamp(1));
    assert_eq!(h.engine.tracked_keys().next(), Some(("hot", 10)), "kept, though over the new limit");
    junk(&mut h, 2, 1);
    assert_eq!((h.refused, h.evicted), (1, 0), "now refusing");
}

#[test]
fn on_full_must_be_refuse_or_evict_oldest() {
    let sandbox = Sandbox::default();
    for (bad, says) in [(r#""evict""#, r#"not "evict""#), ("1", "not i64"), (r#""""#, r#"not """#)] {
        let src = format!("rule(\"r\", #{{ on: \"s\", when: |e| true, clear: |e| false,\n on_full: {bad} }});");
        let err = sandbox.compile_file("r.rhai", &src).expect_err("rejected");
        assert!(err.message.contains("`on_full` must be \"refuse\" or \"evict_oldest\""), "{err}");
        assert!(err.message.contains(says), "{err}");
        assert_eq!(err.line, 1);
    }
}

/// The agent refuses a key made of a rotating pseudonym (issue 20, privacy): it needs the
/// names a `key` closure reads, by property or by string index, and `None` without one.
#[test]
fn a_key_closure_names_the_fields_it_reads() {
    let rules = Sandbox::default()
        .compile_file(
            "k.rhai",
            r#"
            rule("by-owner", #{ on: "s/#", key: |e| e.payload.owner + "/" + e["site"], when: |e| e.value > 1 });
            rule("by-line", #{ on: "s/#", key: |e| e.line, when: |e| e.value > 1 });
            rule("default", #{ on: "s/{device}/t", when: |e| e.value > 1 });
            "#,
        )
        .expect("compiles");
    let reads = |name: &str| {
        let rule = rules.iter().find(|r| &*r.name == name).expect("rule");
        rule.key_reads().map(|names| names.into_iter().collect::<Vec<_>>())
    };
    assert_eq!(reads("by-owner"), Some(vec!["/".to_owned(), "owner".into(), "payload".into(), "site".into()]));
    assert_eq!(reads("by-line"), Some(vec!["line".to_owned()]));
    assert_eq!(reads("default"), None);
}

use crate::support::{H, keys};

const DOOR: &str = r#"
rule("door-forced", #{
    on: ["doors/{device}/open", "doors/{device}/badge"],
    sequence: [
        #{ name: "opened", when: |e| e.levels[2] == "open" },
        #{ name: "badge", when: |e| e.levels[2] == "badge", absent: true },
    ],
    within: "10s",
});
"#;

#[test]
fn door_opened_then_no_badge_within_10s_fires_at_the_deadline() {
    let mut h = H::new(DOOR);
    assert!(h.send(1_000, "doors/d1/open", "1").is_empty());
    assert!(h.tick(10_999).is_empty());
    let o = h.tick(11_000);
    assert_eq!(keys(&o), ["d1"]);
    assert_eq!(o[0].2, 11_000, "reported at the deadline");
    assert_eq!(o[0].3["started"], 1_000);
    assert_eq!(o[0].3["matches"]["opened"]["time"], 1_000);
}

#[test]
fn a_badge_in_time_cancels_it() {
    let mut h = H::new(DOOR);
    h.send(1_000, "doors/d1/open", "1");
    assert!(h.send(5_000, "doors/d1/badge", "\"alice\"").is_empty());
    assert!(h.tick(60_000).is_empty());
    // A badge on another door does not help.
    h.send(61_000, "doors/d2/open", "1");
    h.send(62_000, "doors/d3/badge", "\"bob\"");
    assert_eq!(keys(&h.tick(71_000)), ["d2"]);
}

#[test]
fn ordered_steps_with_repetition_within_a_time_limit() {
    let src = r#"
        rule("brute-force", #{
            on: "auth/{device}/+",
            sequence: [
                #{ name: "failures", when: |e| e.levels[2] == "fail", times: 3 },
                #{ name: "success", when: |e| e.levels[2] == "ok" },
            ],
            within: "1m",
            max_partial: 4,
        });
    "#;
    let mut h = H::new(src);
    h.send(0, "auth/a/fail", "1");
    h.send(1_000, "auth/a/fail", "1");
    assert!(h.send(2_000, "auth/a/ok", "1").is_empty(), "only two failures so far");
    h.send(3_000, "auth/a/fail", "1");
    h.send(4_000, "auth/a/fail", "1");
    let o = h.send(5_000, "auth/a/ok", "1");
    // The partials started at 0 s and 1 s both have three failures now (0/1/3 and 1/3/4).
    assert!(!o.is_empty(), "fires after three failures then a success");
    assert!(o.iter().all(|x| x.0 == "brute-force" && x.1 == "a"));
    assert!(h.send(120_000, "auth/a/ok", "1").is_empty(), "partials expired with their time");
}

#[test]
fn negation_in_the_middle_guards_between_steps() {
    let src = r#"
        rule("unattended", #{
            on: "m/{device}/+",
            sequence: [
                #{ name: "start", when: |e| e.levels[2] == "start" },
                #{ name: "check", when: |e| e.levels[2] == "check", absent: true },
                #{ name: "stop", when: |e| e.levels[2] == "stop" },
            ],
            within: "1h",
        });
    "#;
    let mut h = H::new(src);
    h.send(0, "m/x/start", "1");
    assert_eq!(h.send(10, "m/x/stop", "1").len(), 1, "no check between start and stop");
    h.send(20, "m/x/start", "1");
    h.send(30, "m/x/check", "1");
    assert!(h.send(40, "m/x/stop", "1").is_empty(), "a check happened");
}

#[test]
fn partial_matches_are_bounded_per_key() {
    let src = r#"
        rule("pairs", #{
            on: "p/{device}/+",
            sequence: [ #{ when: |e| e.levels[2] == "a" }, #{ when: |e| e.levels[2] == "b" } ],
            within: "1h",
            max_partial: 2,
        });
    "#;
    let mut h = H::new(src);
    for t in 0..5 {
        h.send(t, "p/k/a", "1");
    }
    assert_eq!(h.send(10, "p/k/b", "1").len(), 2, "only the newest two partials survive");
}

//! Reloading rules between two events: state follows the rule's name.

use crate::support::H;
use edgewatch_engine::{RuleSet, Timestamp};

fn compile(h: &H, src: &str) -> RuleSet {
    let (set, errors) = RuleSet::compile(h.engine.sandbox(), [("r.rhai", src)]);
    assert!(errors.is_empty(), "{errors:?}");
    set
}

const HOT3: &str = r#"rule("hot3", #{ on: "s/{device}", window: #{ size: "60s", filter: |e| e.value > 80 }, when: |e| e.window.count >= 3 });"#;

#[test]
fn a_half_full_window_survives_an_edit_of_its_predicate() {
    let mut h = H::new(HOT3);
    h.send(0, "s/a", "85");
    h.send(1_000, "s/a", "86");
    // The edit: a new threshold. Same name, same kind: the two readings stay.
    let edited = compile(&h, &HOT3.replace("e.value > 80", "e.value > 84"));
    h.engine.reload(edited, Timestamp(1_500));
    assert_eq!(h.send(2_000, "s/a", "87").len(), 1, "the third reading fires");
}

#[test]
fn a_partial_sequence_and_a_pending_deadline_survive_an_edit() {
    let src = r#"
        rule("door", #{
            on: ["d/{device}/open", "d/{device}/badge"],
            sequence: [ #{ when: |e| e.levels[2] == "open" }, #{ when: |e| e.levels[2] == "badge", absent: true } ],
            within: "10s",
        });
        rule("alive", #{ on: "d/{device}/+", heartbeat: #{ timeout: "30s" } });
    "#;
    let mut h = H::new(src);
    h.send(1_000, "d/x/open", "1");
    let edited = compile(&h, &src.replace("within: \"10s\"", "within: \"12s\"").replace("30s", "40s"));
    h.engine.reload(edited, Timestamp(2_000));
    assert!(h.tick(12_999).is_empty(), "the new `within` applies to the running match");
    assert_eq!(h.tick(13_000).len(), 1, "door forced, from the match started before the edit");
    assert_eq!(h.tick(31_000).len(), 1, "the heartbeat deadline set before the edit still fires");
}

#[test]
fn an_incompatible_change_starts_afresh() {
    let mut h = H::new(HOT3);
    h.send(0, "s/a", "85");
    h.send(1_000, "s/a", "86");
    let tumbling = compile(&h, &HOT3.replace("size: \"60s\"", "size: \"60s\", tumbling: true"));
    h.engine.reload(tumbling, Timestamp(1_500));
    assert!(h.send(2_000, "s/a", "87").is_empty(), "the window was emptied");
}

#[test]
fn a_deleted_rule_comes_back_with_its_state_within_the_grace_period() {
    let mut h = H::new(HOT3);
    h.send(0, "s/a", "85");
    h.send(1_000, "s/a", "86");
    let other = compile(&h, r#"rule("other", #{ on: "x" });"#);
    h.engine.reload(other, Timestamp(1_500));
    assert!(h.send(2_000, "s/a", "99").is_empty(), "gone");
    let back = compile(&h, HOT3);
    h.engine.reload(back, Timestamp(3_000));
    assert_eq!(h.send(4_000, "s/a", "87").len(), 1, "restored: two readings kept, this is the third");

    // After the grace period, gone for good.
    let mut h = H::new(HOT3);
    h.send(0, "s/a", "85");
    h.send(1_000, "s/a", "86");
    let other = compile(&h, r#"rule("other", #{ on: "x" });"#);
    h.engine.reload(other, Timestamp(1_500));
    let back = compile(&h, HOT3);
    h.engine.reload(back, Timestamp(1_500 + edgewatch_engine::engine::RETIRED_GRACE_MS));
    assert!(h.send(40_000, "s/a", "87").is_empty());
}

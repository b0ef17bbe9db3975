// Shared by the `sparkplug` fuzz target and `agent/tests/fuzz_corpus.rs` (included in both).
//
// The first byte picks the topic (a node or device message of each type, a command, STATE, a
// foreign topic), the rest is the payload, applied to sessions where pysparkplug's edge node
// `plant1/gw1` and its device `motor1` are born (the fixtures of agent/tests/fixtures/sparkplug).
// Any bytes: no panic. A refused message changes nothing and has a reason; an applied one
// names only metrics it holds, and the state still stores and reads back the same.

use edgewatch::sparkplug::{Limits, Outcome, Sessions};

const TOPICS: [&str; 12] = [
    "spBv1.0/plant1/NBIRTH/gw1",
    "spBv1.0/plant1/NDATA/gw1",
    "spBv1.0/plant1/NDEATH/gw1",
    "spBv1.0/plant1/DBIRTH/gw1/motor1",
    "spBv1.0/plant1/DDATA/gw1/motor1",
    "spBv1.0/plant1/DDEATH/gw1/motor1",
    "spBv1.0/plant1/DBIRTH/gw1/motor2",
    "spBv1.0/plant1/DDATA/gw1/motor2",
    "spBv1.0/plant1/NBIRTH/gw2",
    "spBv1.0/plant1/NCMD/gw1",
    "spBv1.0/STATE/scada",
    "sensors/t1",
];
const NBIRTH: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/tests/fixtures/sparkplug/nbirth.bin"));
const DBIRTH: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/tests/fixtures/sparkplug/dbirth.bin"));
/// Small, so the limits are hit.
const LIMITS: Limits = Limits { max_nodes: 2, max_devices: 2, max_metrics: 16, max_name_bytes: 32 };

/// Checks one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    let topic = TOPICS[usize::from(selector) % TOPICS.len()];
    let mut sessions = Sessions::default();
    sessions.apply(TOPICS[0], NBIRTH, 0, &LIMITS).expect("the node's birth applies");
    sessions.apply(TOPICS[3], DBIRTH, 0, &LIMITS).expect("the device's birth applies");
    let before = sessions.clone();
    match sessions.apply(topic, payload, 1_000, &LIMITS) {
        Err(e) => {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            assert!(sessions == before, "a refused message changed the state");
        }
        Ok(Outcome::Ignored(why)) => {
            assert!(!why.is_empty());
            assert!(sessions == before, "an ignored message changed the state");
        }
        Ok(Outcome::Update(update)) => {
            let (metrics, _) = sessions
                .metrics(&update.group, &update.node, update.device.as_deref())
                .expect("an update is about a known node or device");
            for name in &update.changed {
                assert!(metrics.get(name).is_some(), "`{name}` changed but is not known");
            }
            assert!(metrics.len() <= LIMITS.max_metrics);
        }
    }
    // What the agent stores (a record per node's own part and per device, each written when a
    // message changed it) restores the same sessions. They started empty, so every part of them
    // is among the changed ones.
    let mut restored = Sessions::default();
    for part in sessions.take_changed() {
        let record = sessions.export(&part).expect("a changed part is there");
        restored.import(&part, &record).expect("and reads back");
    }
    assert!(restored == sessions, "the state changed through its stored form");
}

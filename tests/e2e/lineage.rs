//! Lineage end to end: readings on a real broker -> a window rule and a rule chained on it ->
//! CloudEvents upstream naming their causes, rule version and parent, read by the
//! CloudEvents Python SDK; then `trace` on the live agent's state directory finds the event,
//! its publication and acknowledgement, the rule version's audit entry, the input messages
//! in the journal, and the parent; and finds them again after a restart.

use crate::agent;
use edgewatch::trace::{Wanted, trace};
use edgewatch_e2e::{Broker, Publisher, RunningAgent, Subscriber, cloudevents};
use edgewatch_engine::{Causes, EventId};
use std::time::{Duration, Instant};

const RULES: &str = r#"
rule("warm", #{ on: "sensors/{device}/temperature", window: #{ count: 8 }, when: |e| e.window.avg > 50.0 });
rule("warm-again", #{ on: "edgewatch/gw-test/events/warm" });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_their_inputs_rule_version_and_parent_and_trace_follows_them() {
    let broker = Broker::embedded();
    let text = agent(broker.addr(), "3.1.1").set("journal.enabled", true).to_string();
    let agent = RunningAgent::start(&text, &[("warm.rhai", RULES)]).await;
    let mut upstream = Subscriber::connect(broker.addr(), "cloud", "edgewatch/gw-test/events/#").await;
    let mut sensor = Publisher::connect(broker.addr(), "sensor").await;
    let topic = "sensors/t-01/temperature";
    let payload = |i: usize| format!(r#"{{"temperature": {}, "n": {i}}}"#, if i < 8 { 10 } else { 100 });
    let started = edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
    // Eight cool readings, then hot ones: the average passes 50 with the fourth hot one (the
    // 12th reading), when the window holds readings 4 to 11.
    for i in 0..12 {
        sensor.publish(topic, payload(i)).await;
    }
    let warm = upstream.next().await;
    let again = upstream.next().await;
    assert_eq!(
        (warm.topic.as_str(), again.topic.as_str()),
        ("edgewatch/gw-test/events/warm", "edgewatch/gw-test/events/warm-again")
    );
    let (warm_ev, again_ev) = (warm.json(), again.json());

    // The causes: 8 inputs, the first and last three, each the reading with that id.
    let causes = Causes::decode(warm_ev["edgewatchcauses"].as_str().expect("edgewatchcauses")).expect("decodes");
    let id_of = |i: usize| EventId::from_content(topic, payload(i).as_bytes()).0;
    assert_eq!(causes.count, 8);
    let firsts: Vec<bool> = causes.first.iter().zip(4..).map(|(r, i)| r.is(id_of(i))).collect();
    let lasts: Vec<bool> = causes.last.iter().zip(9..).map(|(r, i)| r.is(id_of(i))).collect();
    assert_eq!((firsts, lasts), (vec![true; 3], vec![true; 3]), "{causes:?}");
    let now = edgewatch_engine::Timestamp::from_system_time(std::time::SystemTime::now()).millis();
    assert!(causes.refs().all(|r| (started..=now).contains(&r.at)), "arrival times: {causes:?}");
    // The rule version: the file and its content hash, as the rules' status names it.
    let rules_file = agent.dir.path().join("rules/warm.rhai").display().to_string();
    let version = warm_ev["edgewatchrule"].as_str().expect("edgewatchrule");
    let (file, hash) = version.rsplit_once('#').expect("file#hash");
    assert_eq!((file, hash.len()), (rules_file.as_str(), 16), "{version}");
    // The chained event: its parent is `warm`, and its one input is that event.
    let warm_id = warm_ev["id"].as_str().expect("id");
    assert_eq!(again_ev["edgewatchparent"], warm_id);
    let again_causes = Causes::decode(again_ev["edgewatchcauses"].as_str().expect("causes")).expect("decodes");
    let warm_u128 = match Wanted::parse(warm_id) {
        Ok(Wanted::Id(id)) => id,
        other => panic!("{other:?}"),
    };
    assert!(again_causes.count == 1 && again_causes.first[0].is(warm_u128), "{again_causes:?}");

    // A strict, independent reader accepts both, extensions included; and refuses an
    // extension name CloudEvents does not allow (so it is checking).
    if cloudevents::available() {
        let mut bad = warm_ev.clone();
        bad["edgewatch_causes"] = "n=0".into();
        let bad = serde_json::to_vec(&bad).expect("json");
        let read = cloudevents::read(&[warm.payload.to_vec(), again.payload.to_vec(), bad]);
        for (got, sent) in read.iter().zip([&warm_ev, &again_ev]) {
            let attrs = got.as_ref().unwrap_or_else(|e| panic!("the SDK refused {sent}: {e}"));
            for name in ["id", "edgewatchcauses", "edgewatchrule"] {
                assert_eq!(attrs[name], sent[name], "{name}");
            }
        }
        assert_eq!(read[1].as_ref().expect("read")["edgewatchparent"], warm_id);
        assert!(read[2].is_err(), "an underscore in an extension name must be refused: {:?}", read[2]);
    }

    // `trace`, on the live agent's files: the chained event, then its parent.
    let state = agent.dir.path().join("state");
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = trace(&state, Wanted::parse(again_ev["id"].as_str().expect("id")).expect("an id")).expect("reads");
        let done = report.found.as_ref().is_some_and(|t| {
            t.acked.is_some()
                && t.parent.as_ref().is_some_and(|p| p.acked.is_some() && p.causes.iter().all(|c| c.message.is_some()))
        });
        if done || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = edgewatch::trace::text(&report);
    for want in ["edgewatch.warm-again", "edgewatch.warm ", "parent", "... 2 more", r#""n": 11"#, version] {
        assert!(text.contains(want), "`{want}` in:\n{text}");
    }
    let t = report.found.expect("the chained event is in the event log");
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(t.event["id"], again_ev["id"]);
    assert!(t.published.is_some() && t.acked.is_some(), "published {:?}, acked {:?}", t.published, t.acked);
    assert_eq!(t.causes.len(), 1);
    assert_eq!(t.causes[0].event.as_ref().expect("its input is an event")["id"], warm_id);
    let p = t.parent.expect("the parent followed");
    assert_eq!(p.event, warm_ev, "the parent as it was sent");
    assert_eq!(p.inputs, 8);
    let sent: Vec<String> = [4, 5, 6, 9, 10, 11].iter().map(|&i| payload(i)).collect();
    let got: Vec<String> = p
        .causes
        .iter()
        .map(|c| {
            let m = c.message.as_ref().expect("in the journal");
            assert_eq!(m.topic.as_deref(), Some(topic));
            m.payload.as_ref().expect("a JSON payload").get().to_owned()
        })
        .collect();
    assert_eq!(got, sent, "the inputs as they arrived");
    let loaded = p.rule.as_ref().and_then(|r| r.loaded.as_ref()).expect("the audit entry of the version");
    assert_eq!(loaded["kind"], "start", "loaded when the agent started");

    // After a restart the files are still there: the event, its publication, its inputs.
    let agent = agent.restart().await;
    let report = trace(&state, Wanted::Id(warm_u128)).expect("reads");
    let p = report.found.expect("still in the event log");
    assert!(p.published.is_some() && p.acked.is_some());
    let got: Vec<String> =
        p.causes.iter().filter_map(|c| Some(c.message.as_ref()?.payload.as_ref()?.get().to_owned())).collect();
    assert_eq!(got, sent, "the inputs, from the journal, after a restart");
    agent.stop().await;
}

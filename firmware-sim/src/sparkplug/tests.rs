use super::*;

fn node() -> EdgeNode {
    EdgeNode::new("plant", "gw1", &["m1".to_owned(), "m2".to_owned()], &["Speed", "Current"])
}

fn decode(m: &Message) -> Payload {
    Payload::decode(m.payload.as_slice()).expect("a Sparkplug payload")
}

#[test]
fn a_session_is_a_will_births_and_alias_only_data_numbered_by_seq() {
    let mut n = node();
    let will = n.connect(1_000);
    assert_eq!(will.topic, "spBv1.0/plant/NDEATH/gw1");
    let bd = |p: &Payload| p.metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ)).and_then(|m| m.value.clone());
    assert_eq!(bd(&decode(&will)), Some(MetricValue::LongValue(0)));
    let births = n.births(1_000);
    let topics: Vec<&str> = births.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["spBv1.0/plant/NBIRTH/gw1", "spBv1.0/plant/DBIRTH/gw1/m1", "spBv1.0/plant/DBIRTH/gw1/m2"]);
    let seqs: Vec<Option<u64>> = births.iter().map(|m| decode(m).seq).collect();
    assert_eq!(seqs, [Some(0), Some(1), Some(2)]);
    assert_eq!(bd(&decode(&births[0])), Some(MetricValue::LongValue(0)), "the birth's bdSeq is the will's");
    let dbirth = decode(&births[2]);
    let declared: Vec<(Option<&str>, Option<u64>, Option<u32>)> =
        dbirth.metrics.iter().map(|m| (m.name.as_deref(), m.alias, m.datatype)).collect();
    assert_eq!(
        declared,
        [(Some("Speed"), Some(1), Some(datatype::DOUBLE)), (Some("Current"), Some(2), Some(datatype::DOUBLE))]
    );

    let data = decode(&n.data(1, &[1500.5, 12.25], 2_000).expect("a device"));
    assert_eq!(data.seq, Some(3));
    assert!(data.metrics.iter().all(|m| m.name.is_none() && m.alias.is_some()), "aliases only");
    assert_eq!(data.metrics[1].value, Some(MetricValue::DoubleValue(12.25)));
    assert!(n.data(7, &[1.0], 2_000).is_none());
    // A new session: the next bdSeq, and births declare the last values.
    assert_eq!(bd(&decode(&n.connect(3_000))), Some(MetricValue::LongValue(1)));
    let again = n.births(3_000);
    assert_eq!(decode(&again[2]).metrics[1].value, Some(MetricValue::DoubleValue(12.25)));
}

#[test]
fn faults_bend_what_the_node_sends() {
    let mut n = node();
    n.connect(0);
    n.births(0);
    n.skip_seq();
    assert_eq!(decode(&n.data(0, &[1.0, 2.0], 1).expect("data")).seq, Some(4), "seq 3 never sent");
    let bad = decode(&n.unknown_alias(2).expect("data"));
    assert_eq!(bad.metrics[0].alias, Some(UNKNOWN_ALIAS));
    let mismatch = decode(&n.mismatched_death(3));
    let bd = mismatch.metrics[0].value.clone();
    assert_eq!(bd, Some(MetricValue::LongValue(1)), "not this session's bdSeq (0)");
    for f in [Fault::SeqGap, Fault::UnknownAlias, Fault::BdSeqMismatch, Fault::Kill] {
        assert_eq!(Fault::parse(f.name()), Some(f));
    }
}

#[test]
fn a_rebirth_request_is_answered_with_the_births_and_nothing_else_is() {
    let mut n = node();
    n.connect(0);
    n.births(0);
    n.data(0, &[1.0, 2.0], 1);
    let rebirth = Payload {
        timestamp: Some(5),
        metrics: vec![Metric {
            name: Some(REBIRTH.to_owned()),
            datatype: Some(datatype::BOOLEAN),
            value: Some(MetricValue::BooleanValue(true)),
            ..Metric::default()
        }],
        seq: None,
    };
    let answer = n.command(&rebirth.encode_to_vec(), 5);
    assert_eq!(answer.len(), 3);
    assert_eq!(decode(&answer[0]).seq, Some(0), "births start the seq again");
    let other = Payload { timestamp: Some(5), metrics: vec![], seq: None };
    assert!(n.command(&other.encode_to_vec(), 5).is_empty());
    assert!(n.command(b"\xff\xff", 5).is_empty());
}

#[test]
fn a_fault_on_the_command_line_is_kind_node_and_time() {
    let f = live::Injected::parse("kill:2:30s").expect("valid");
    assert_eq!((f.fault, f.node, f.at), (Fault::Kill, 2, std::time::Duration::from_secs(30)));
    for bad in ["kill:2", "melt:1:1s", "kill:x:1s", "kill:1:soon"] {
        assert!(live::Injected::parse(bad).is_err(), "{bad}");
    }
}

//! What a Sparkplug B message costs: a 20-metric DDATA (by alias, as edge nodes send them)
//! decoded with prost, its aliases resolved, its `seq` checked and its values folded into the
//! device's last known values (`Sessions::apply`, the target is ≤ 2 µs), beside the protobuf
//! decoding alone and a JSON payload of the same readings for scale.
//! `cargo bench -p edgewatch --bench sparkplug` prints a markdown table.

mod common;
use common::ns_per;
use edgewatch::decode::{DecodeLimits, Format, decode_with};
use edgewatch::sparkplug::proto::{Metric, MetricValue, Payload, datatype};
use edgewatch::sparkplug::{Limits, Outcome, Sessions, event};
use prost::Message;
use std::hint::black_box;

const METRICS: u64 = 20;

fn metric(i: u64, named: bool, value: f64) -> Metric {
    Metric {
        name: named.then(|| format!("Line/Motor{i}/Speed")),
        alias: Some(100 + i),
        timestamp: Some(1_796_512_550_000 + i),
        datatype: named.then_some(datatype::DOUBLE),
        value: Some(MetricValue::DoubleValue(value)),
        ..Metric::default()
    }
}

fn main() {
    let limits = Limits::default();
    let node = Payload {
        timestamp: Some(1),
        metrics: vec![Metric {
            name: Some("bdSeq".into()),
            datatype: Some(datatype::INT64),
            value: Some(MetricValue::LongValue(0)),
            ..Metric::default()
        }],
        seq: Some(0),
    };
    let birth =
        Payload { timestamp: Some(1), metrics: (0..METRICS).map(|i| metric(i, true, 0.0)).collect(), seq: Some(1) };
    let mut sessions = Sessions::default();
    sessions.apply("spBv1.0/plant/NBIRTH/gw", &node.encode_to_vec(), 0, &limits).expect("a birth");
    sessions.apply("spBv1.0/plant/DBIRTH/gw/line", &birth.encode_to_vec(), 0, &limits).expect("a birth");
    // 256 DDATA messages, one per seq value, so the sequence check sees every message in order.
    let data: Vec<Vec<u8>> = (0..256u64)
        .map(|k| {
            let seq = (k + 2) % 256;
            let metrics = (0..METRICS).map(|i| metric(i, false, (k * METRICS + i) as f64 * 0.5)).collect();
            Payload { timestamp: Some(1_796_512_550_000 + k), metrics, seq: Some(seq) }.encode_to_vec()
        })
        .collect();
    let json = format!(
        "{{{}}}",
        (0..METRICS).map(|i| format!("\"Line/Motor{i}/Speed\": {}.5", 1000 + i)).collect::<Vec<_>>().join(", ")
    );
    let n = 100_000;
    let mut k = 0usize;
    let apply = ns_per(n, || {
        let bytes = &data[k % 256];
        k += 1;
        let out = sessions.apply(black_box("spBv1.0/plant/DDATA/gw/line"), black_box(bytes), 0, &limits);
        black_box(out.is_ok());
    });
    assert_eq!(sessions.apply("spBv1.0/plant/DDATA/gw/line", &data[k % 256], 0, &limits).map(|_| ()), Ok(()));
    let Ok(Outcome::Update(last)) = sessions.apply("spBv1.0/plant/DDATA/gw/line", &data[(k + 1) % 256], 0, &limits)
    else {
        panic!("an update")
    };
    let (metrics, alive) = sessions.metrics("plant", "gw", Some("line")).expect("known");
    let build = ns_per(n, || {
        let _ = black_box(event::payload(black_box(&last), metrics, alive));
    });
    let decode = ns_per(n, || {
        black_box(Payload::decode(black_box(data[7].as_slice())).is_ok());
    });
    let json_limits = DecodeLimits::default();
    let json_decode = ns_per(n, || {
        black_box(decode_with(Format::Json, black_box(json.as_bytes()), &json_limits).is_ok());
    });
    println!("| {METRICS} metrics, one message | ns |");
    println!("|---|---:|");
    println!("| DDATA by alias: `Sessions::apply` (decode, aliases, seq, last known values) | {apply:.0} |");
    println!("| of which the protobuf decoding (`Payload::decode`) | {decode:.0} |");
    println!("| then the event's payload for the rules (`event::payload`: 20 values, what changed) | {build:.0} |");
    println!("| the same readings as a JSON object (`decode_with`, for scale) | {json_decode:.0} |");
    println!("\n({} B protobuf, {} B JSON)", data[7].len(), json.len());
}

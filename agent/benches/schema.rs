//! What a payload schema and privacy cost per message: `Schema::check` of a decoded 10-field
//! payload (the target is ≤ 1 µs), and `Protector::apply` with the protected payload's JSON
//! re-encoding (for the journal and the event id), beside the payload's decoding for scale.
//! `cargo bench -p edgewatch --bench schema` prints a markdown table.

mod common;
use common::ns_per;
use edgewatch::decode::{DecodeLimits, Format, decode_with};
use edgewatch::privacy::{Privacy, Protect, Protector, Rule};
use edgewatch::schema::{Field, Kind, Schema, Shape, Versions};
use std::hint::black_box;

const PAYLOAD: &str = r#"{"device": "t-0042", "seq": 1234, "temperature": 21.5, "humidity": 48.2,
    "pressure": 1013.2, "battery": 3.61, "rssi": -71, "door": "closed", "ok": true,
    "gps": {"lat": 48.137, "lon": 11.575}, "firmware": "2.4.1"}"#;

fn schema(versions: bool) -> Schema {
    let number = |min: f64, max: f64| Kind::Number { min: Some(min), max: Some(max) };
    let shape = Shape {
        fields: vec![
            Field::new("device", Kind::String { min_length: Some(1), max_length: Some(32) }, false),
            Field::new("temperature", number(-40.0, 125.0), false),
            Field::new("humidity", number(0.0, 100.0), false),
            Field::new("pressure", number(300.0, 1100.0), false),
            Field::new("battery", number(0.0, 5.0), false),
            Field::new("rssi", Kind::Integer { min: Some(-130), max: Some(0) }, false),
            Field::new("door", Kind::Enum(vec!["open".into(), "closed".into()]), false),
            Field::new("ok", Kind::Bool, false),
            Field::new("gps.lat", number(-90.0, 90.0), true),
            Field::new("firmware", Kind::String { min_length: None, max_length: Some(16) }, true),
        ],
        closed: false,
    };
    let versions = if versions {
        Versions::By { field: "schema_version".into(), shapes: vec![("1".into(), shape)], default: Some("1".into()) }
    } else {
        Versions::One(shape)
    };
    Schema { name: "reading".into(), versions }
}

fn main() {
    let limits = DecodeLimits::default();
    let payload = decode_with(Format::Json, PAYLOAD.as_bytes(), &limits).expect("valid payload");
    let n = 200_000;
    let decode = ns_per(n, || {
        black_box(decode_with(Format::Json, black_box(PAYLOAD.as_bytes()), &limits).ok());
    });
    println!("| per message (10 fields checked, 11 in the payload) | ns |");
    println!("|---|---:|");
    println!("| decoding the JSON payload, for scale | {decode:.0} |");
    for (what, versions) in [("schema check, one shape", false), ("schema check, by version (default)", true)] {
        let s = schema(versions);
        assert!(s.check(&payload).is_ok(), "the payload fits");
        let ns = ns_per(n, || {
            black_box(s.check(black_box(&payload)).is_ok());
        });
        println!("| {what} | {ns:.0} |");
    }
    let s = schema(false);
    let bad = decode_with(Format::Json, PAYLOAD.replace("21.5", "\"85C\"").as_bytes(), &limits).expect("valid JSON");
    let ns = ns_per(n, || {
        black_box(s.check(black_box(&bad)).is_err());
    });
    println!("| schema check, refused (the violation's message made) | {ns:.0} |");

    // Privacy: each call protects a fresh copy of the decoded payload (as the agent does), so
    // the copy is measured alone first and subtracted.
    let copy = ns_per(n, || {
        let _ = black_box(black_box(&payload).clone());
    });
    let mut protector = Protector::new(Some(b"a bench secret of 32 bytes......"));
    let day = Some(86_400_000);
    let one = Privacy { fields: vec![Rule::new("device", Protect::Pseudonym { rotate_ms: day })] };
    let four = Privacy {
        fields: vec![
            Rule::new("device", Protect::Pseudonym { rotate_ms: None }),
            Rule::new("firmware", Protect::Drop),
            Rule::new("door", Protect::KeepLast(2)),
            Rule::new("gps.lat", Protect::Decimals(2)),
        ],
    };
    let mut t = 1_700_000_000_000_i64;
    for (what, privacy) in [
        ("privacy, 1 pseudonym (rotating daily)", &one),
        ("privacy, 4 fields (pseudonym, drop, mask, decimals)", &four),
    ] {
        let ns = ns_per(n, || {
            let mut v = black_box(&payload).clone();
            t += 1;
            black_box(protector.apply(privacy, &mut v, t));
        }) - copy;
        println!("| {what} | {ns:.0} |");
    }
    let encode = ns_per(n, || {
        black_box(serde_json::to_vec(black_box(&payload)).ok());
    });
    println!("| privacy: the protected payload re-encoded as JSON (journal, event id) | {encode:.0} |");
}

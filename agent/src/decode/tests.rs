use super::*;

fn ok(format: Format, bytes: &[u8]) -> serde_json::Value {
    let v = decode(format, bytes, 1024).expect("decodes");
    serde_json::to_value(&v).expect("serializable")
}

#[test]
fn scalars() {
    assert_eq!(ok(Format::Scalar, b"23.5"), serde_json::json!(23.5));
    assert_eq!(ok(Format::Scalar, b" 42\n"), serde_json::json!(42));
    assert_eq!(ok(Format::Scalar, b"on"), serde_json::json!(true));
    assert_eq!(ok(Format::Scalar, b"OFF"), serde_json::json!(false));
    assert_eq!(ok(Format::Scalar, b"offline"), serde_json::json!("offline"));
    assert_eq!(ok(Format::Scalar, b"NaN"), serde_json::json!("NaN"));
}

#[test]
fn json_and_auto() {
    assert_eq!(ok(Format::Json, br#"{"t": 21.5, "ok": true}"#), serde_json::json!({"t": 21.5, "ok": true}));
    assert_eq!(ok(Format::Auto, br#"  {"t": 1}"#), serde_json::json!({"t": 1}));
    assert_eq!(ok(Format::Auto, b"17"), serde_json::json!(17));
    assert_eq!(ok(Format::Json, b"17"), serde_json::json!(17));
}

#[test]
fn wire_frames_decode_to_the_json_shape() {
    let msg = wire::Message::reading("t-001", 17, 1_732_170_000_000, &[("temperature", 23.5)]).expect("fits");
    let mut buf = [0u8; wire::MAX_FRAME_LEN];
    let frame = wire::encode(&msg, &mut buf).expect("encodes");
    let expected =
        serde_json::json!({"device":"t-001","seq":17,"ts":1_732_170_000_000_i64,"kind":"reading","temperature":23.5});
    assert_eq!(ok(Format::Postcard, frame), expected);
    assert_eq!(ok(Format::Auto, frame), expected);
}

#[test]
fn bad_input_is_an_error_with_a_reason() {
    let err = |f, b: &[u8]| decode(f, b, 8).expect_err("rejected").reason();
    assert_eq!(err(Format::Json, b"{\"a\":"), "json");
    assert_eq!(err(Format::Auto, b"{nope}"), "json");
    assert_eq!(err(Format::Scalar, &[0xff, 0xfe]), "not_utf8");
    assert_eq!(err(Format::Auto, &[0xff, 0xfe]), "not_utf8");
    assert_eq!(err(Format::Postcard, &[wire::VERSION, 0xff]), "wire");
    assert_eq!(err(Format::Auto, b""), "empty");
    assert_eq!(err(Format::Json, b"123456789"), "too_large");
}

fn limited(format: Format, bytes: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let limits = DecodeLimits { max_payload_bytes: 1 << 20, max_json_depth: 4, max_string_bytes: 8 };
    decode_with(format, bytes, &limits).map(|v| serde_json::to_value(&v).expect("serializable"))
}

/// `{"a":{"a":...1...}}`, `depth` objects deep.
fn nested(depth: usize) -> Vec<u8> {
    format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)).into_bytes()
}

#[test]
fn nesting_up_to_the_limit_decodes_and_deeper_is_too_deep() {
    assert!(limited(Format::Json, &nested(4)).is_ok());
    assert_eq!(limited(Format::Json, &nested(5)), Err(DecodeError::TooDeep { max: 4 }));
    assert_eq!(limited(Format::Auto, br#"{"a":[[[[1]]]]}"#), Err(DecodeError::TooDeep { max: 4 }));
    assert!(limited(Format::Auto, br#"{"a":[[[1]]]}"#).is_ok());
    // Far deeper than serde_json's own limit (128): still ours, and no stack overflow.
    let deep = decode_with(Format::Json, &nested(100_000), &DecodeLimits::default().with_payload(1 << 20));
    assert_eq!(deep.expect_err("too deep").reason(), "too_deep");
    let deep = DecodeLimits::default();
    assert!(decode_with(Format::Json, &nested(deep.max_json_depth), &deep).is_ok());
}

#[test]
fn strings_keys_and_plain_text_over_the_limit_are_too_long() {
    assert!(limited(Format::Json, br#"{"device":"12345678"}"#).is_ok());
    let too_long = Err(DecodeError::StringTooLong { len: 9, max: 8 });
    assert_eq!(limited(Format::Json, br#"{"device":"123456789"}"#), too_long);
    assert_eq!(limited(Format::Json, br#"{"123456789":1}"#), too_long);
    assert_eq!(limited(Format::Json, br#""123456789""#), too_long);
    assert_eq!(limited(Format::Json, br#"{"a":["x","123456789"]}"#), too_long);
    // Escapes count as what they decode to.
    assert!(limited(Format::Json, br#""\u0041\u0042""#).is_ok());
    assert_eq!(limited(Format::Scalar, b"offline!!"), too_long);
    assert_eq!(limited(Format::Scalar, b"12345678901234567890"), Ok(serde_json::json!(12345678901234567890.0)));
    assert_eq!(limited(Format::Auto, b"online"), Ok(serde_json::json!("online")));
}

#[test]
fn wrong_types_are_named() {
    let reason = |b: &[u8]| limited(Format::Json, b).map(|_| ()).map_err(|e| (e.reason(), e.to_string()));
    for (payload, says) in [
        (&b"null"[..], "`null`"),
        (b"[1, 2]", "array"),
        (br#"{"device": 7}"#, "`device` must be a non-empty string, not an integer"),
        (br#"{"device": ""}"#, "not an empty string"),
        (br#"{"device": {"id": "x"}}"#, "not an object"),
        (br#"{"seq": -1}"#, "out of range"),
        (br#"{"seq": 4294967296}"#, "out of range"),
        (br#"{"seq": "7"}"#, "not a string"),
        (br#"{"seq": 7.0}"#, "not a number"),
    ] {
        let (r, text) = reason(payload).expect_err("wrong type");
        assert_eq!(r, "wrong_type", "{text}");
        assert!(text.contains(says), "{text} should say {says}");
    }
    assert!(reason(br#"{"device": "t-1", "seq": 4294967295}"#).is_ok());
    assert!(reason(br#"{"value": null, "list": [1], "x": {"seq": "n"}}"#).is_ok());
    assert!(reason(br#""text""#).is_ok());
}

/// Issue 14: a plain `null` payload became the text "null", so a rule reading
/// `e.payload.temp` faulted ("Unknown property 'temp' ... type 'string'"). `null` is the
/// wrong shape whatever the subscription's format: dead-lettered as `wrong_type`.
#[test]
fn a_null_payload_is_dead_lettered_in_every_text_format() {
    for format in [Format::Auto, Format::Json, Format::Scalar] {
        for payload in [&b"null"[..], b" null\n"] {
            let err = decode(format, payload, 1024).expect_err("null is refused");
            assert_eq!(err.reason(), "wrong_type", "{format:?} {payload:?}: {err}");
            assert!(err.to_string().contains("`null`"), "{err}");
        }
    }
    // Text that merely contains it is still text.
    assert_eq!(ok(Format::Scalar, b"nullable"), serde_json::json!("nullable"));
}

/// The backticked pieces of a line of Markdown.
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Issue 14: a plain `on` became `true`, so `e.value == "on"` silently never matched.
/// The mapping stays (JSON booleans and switch words test alike) and is documented in
/// docs/rules.md; this checks every row of that table, and its example rule, against
/// what decoding and the engine do.
#[test]
fn the_plain_payload_table_in_the_rule_docs_is_what_decoding_does() {
    let doc = include_str!("../../../docs/rules.md");
    let (_, rest) = doc.split_once("<!-- plain-payloads: begin -->").expect("the table's begin marker");
    let (table, after) = rest.split_once("<!-- plain-payloads: end -->").expect("the table's end marker");
    let mut rows = 0;
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let (payloads, values) = (backticked(cells[0]), backticked(cells[1]));
        assert!(!payloads.is_empty(), "{line}");
        for (i, payload) in payloads.iter().enumerate() {
            let decoded = decode(Format::Auto, payload.as_bytes(), 1024);
            if cells[1].contains("dead-lettered") {
                assert_eq!(decoded.err().map(|e| e.reason()), Some("wrong_type"), "{line}");
                continue;
            }
            let want = values.get(i).or(values.first()).expect("a value in the row");
            let want: serde_json::Value = serde_json::from_str(want).expect("the value column is JSON");
            let got = serde_json::to_value(decoded.expect("decodes")).expect("serializable");
            assert_eq!(got, want, "{payload:?} in {line}");
        }
        rows += 1;
    }
    assert_eq!(rows, 6, "every row checked");

    // The example rule after the table: a plain `ON` fires it, `off` does not.
    let (_, code) = after.split_once("```rhai\n").expect("an example rule after the table");
    let (code, _) = code.split_once("```").expect("the example's end");
    let sandbox = std::sync::Arc::new(edgewatch_engine::Sandbox::default());
    let (rules, errors) = edgewatch_engine::RuleSet::compile(&sandbox, [("docs.rhai", code)]);
    assert!(errors.is_empty(), "{errors:?}");
    let mut engine = edgewatch_engine::Engine::new(sandbox, rules);
    let mut fired = Vec::new();
    for (t, payload) in [(1, "ON"), (2, "off"), (3, "true"), (4, "\"on\"")] {
        let value = decode(Format::Auto, payload.as_bytes(), 1024).expect("decodes");
        let now = edgewatch_engine::Timestamp(t);
        let mut out = edgewatch_engine::Outputs::default();
        engine.process(edgewatch_engine::Event::new("pumps/p-1/state", value, payload.as_bytes(), now), now, &mut out);
        fired.extend(out.events.iter().map(|_| payload));
    }
    assert_eq!(fired, ["ON", "true"]);
}

#[test]
fn non_finite_wire_samples_are_unit_as_in_the_json_mapping() {
    let msg = wire::Message::reading("t-1", 1, 0, &[("t", f32::NAN), ("h", f32::INFINITY), ("p", 1.5)]).expect("fits");
    let mut buf = [0u8; wire::MAX_FRAME_LEN];
    let frame = wire::encode(&msg, &mut buf).expect("encodes");
    let from_wire = ok(Format::Postcard, frame);
    let from_json = ok(Format::Json, &serde_json::to_vec(&msg.json()).expect("json"));
    assert_eq!(from_wire["t"], serde_json::Value::Null);
    assert_eq!(from_wire["h"], serde_json::Value::Null);
    assert_eq!(from_wire, from_json);
}

/// Every kind of frame, and the edges of its numbers, decodes to the value its JSON text
/// (the wire crate's `JsonView`, as the simulator sends it) decodes to: same keys, same
/// values, and the same rhai type for each (an integer stays an integer).
#[test]
fn wire_frames_decode_exactly_as_their_json_text() {
    let messages = [
        wire::Message::reading("t-001", 17, 1_732_170_000_000, &[("temperature", 23.5), ("humidity", 41.2)]),
        wire::Message::reading("t-1", u32::MAX, 0, &[("t", f32::NAN), ("h", f32::NEG_INFINITY), ("p", -0.0)]),
        wire::Message::reading("t-1", 0, u64::MAX, &[("x", f32::MAX), ("y", -1.5e-7), ("z", 22.1)]),
        wire::Message::heartbeat("t-2", 18, i64::MAX as u64, u32::MAX),
        wire::Message::heartbeat("t-2", 18, i64::MAX as u64 + 1, 0),
        wire::Message::event("dev/ice+#", 19, 1, u16::MAX),
    ];
    for msg in messages {
        let msg = msg.expect("fits");
        let mut buf = [0u8; wire::MAX_FRAME_LEN];
        let frame = wire::encode(&msg, &mut buf).expect("encodes");
        let text = serde_json::to_vec(&msg.json()).expect("json");
        let limits = DecodeLimits::default();
        let from_wire = decode_with(Format::Postcard, frame, &limits).expect("frame decodes");
        let from_json = decode_with(Format::Json, &text, &limits).expect("text decodes");
        let types = |v: &Dynamic| -> Vec<(String, String)> {
            let map = v.read_lock::<Map>().expect("an object");
            map.iter().map(|(k, v)| (k.to_string(), v.type_name().to_owned())).collect()
        };
        assert_eq!(types(&from_wire), types(&from_json), "{msg:?}");
        assert_eq!(
            serde_json::to_value(&from_wire).expect("ok"),
            serde_json::to_value(&from_json).expect("ok"),
            "{msg:?}"
        );
    }
}

/// Found by fuzzing: `ts` beyond i64 was clamped to i64::MAX from a frame, but became a
/// float from the frame's JSON mapping.
#[test]
fn wire_timestamps_beyond_i64_decode_as_their_json_mapping_does() {
    let msg = wire::Message::heartbeat("t-1", 1, u64::MAX, 5).expect("fits");
    let mut buf = [0u8; wire::MAX_FRAME_LEN];
    let frame = wire::encode(&msg, &mut buf).expect("encodes");
    let from_json = ok(Format::Json, &serde_json::to_vec(&msg.json()).expect("json"));
    assert_eq!(ok(Format::Postcard, frame), from_json);
    assert_eq!(from_json["ts"].as_f64(), Some(u64::MAX as f64));
}

/// Within the limits, the one-pass decoder builds exactly what serde_json would (or
/// refuses the shape). Random documents from a fixed seed: no extra dependency.
#[test]
fn agrees_with_serde_json_within_the_limits() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let limits = DecodeLimits::default().with_payload(1 << 20);
    for _ in 0..2000 {
        let v = random_json(&mut rng, 0);
        let text = serde_json::to_vec(&v).expect("serializable");
        let theirs: Dynamic = serde_json::from_slice(&text).expect("valid JSON");
        match decode_with(Format::Json, &text, &limits) {
            Ok(ours) => {
                assert_eq!(serde_json::to_value(&ours).expect("ok"), serde_json::to_value(&theirs).expect("ok"), "{v}")
            }
            Err(e) => assert_eq!(e.reason(), "wrong_type", "{v}: {e}"),
        }
    }
}

fn next(rng: &mut u64) -> u64 {
    // xorshift64*
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn random_json(rng: &mut u64, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    let pick = next(rng) % if depth >= 6 { 6 } else { 8 };
    match pick {
        0 => Value::Null,
        1 => Value::from(next(rng).is_multiple_of(2)),
        2 => Value::from(next(rng) as i64),
        3 => Value::from(next(rng)),
        4 => Value::from(f64::from_bits(next(rng))).as_f64().map_or(Value::from(0.5), Value::from),
        5 => {
            let chars = ['a', 'é', '"', '\\', '\n', '\u{1F600}', '\u{0}', 'z'];
            let n = (next(rng) % 12) as usize;
            Value::from((0..n).map(|_| chars[(next(rng) % 8) as usize]).collect::<String>())
        }
        6 => Value::from((0..next(rng) % 5).map(|_| random_json(rng, depth + 1)).collect::<Vec<_>>()),
        _ => Value::Object(
            (0..next(rng) % 5).map(|i| (format!("k{}", i + next(rng) % 3), random_json(rng, depth + 1))).collect(),
        ),
    }
}

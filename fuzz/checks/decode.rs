// Shared by the `decode` fuzz target and `agent/tests/fuzz_corpus.rs` (included in both).
//
// The first byte picks the format, the rest is the payload, decoded under small limits so
// the limits are reached often. Any bytes: no panic. A payload that decodes serializes to
// JSON (as the agent does with events); JSON decodes to what serde_json builds; a wire frame
// decodes to the same value as the JSON mapping of its message.

use edgewatch::decode::{DecodeLimits, Format, decode_with};
use edgewatch_engine::Dynamic;
use serde_json::Value;

const FORMATS: [Format; 4] = [Format::Auto, Format::Json, Format::Scalar, Format::Postcard];
const LIMITS: DecodeLimits = DecodeLimits { max_payload_bytes: 8192, max_json_depth: 8, max_string_bytes: 64 };

/// Checks one input; panics on a violated property.
pub fn check(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else { return };
    let format = FORMATS[usize::from(selector % 4)];
    let decoded = match decode_with(format, payload, &LIMITS) {
        Ok(v) => v,
        Err(e) => {
            assert!(!e.reason().is_empty() && !e.to_string().is_empty());
            return;
        }
    };
    let json = serde_json::to_value(&decoded).expect("decoded values serialize");
    if format == Format::Json {
        let theirs: Dynamic = serde_json::from_slice(payload).expect("what we accept, serde_json accepts");
        let theirs = serde_json::to_value(&theirs).expect("serializes");
        assert!(same(&json, &theirs), "one-pass decoder differs from serde_json: {json} vs {theirs}");
    }
    if format == Format::Postcard {
        let msg = edgewatch_wire::decode(payload).expect("accepted frames are frames");
        let text = serde_json::to_vec(&msg.json()).expect("serializes");
        let big = DecodeLimits { max_payload_bytes: 1 << 20, ..LIMITS };
        let via_json = decode_with(Format::Json, &text, &big).expect("the JSON mapping of a frame decodes");
        let via_json = serde_json::to_value(&via_json).expect("serializes");
        assert!(same(&json, &via_json), "wire and its JSON mapping differ: {json} vs {via_json}");
    }
}

/// Equal, but floats within a relative 1e-12 (serde_json's default float parsing may be
/// one unit in the last place off).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

//! Decoding: raw MQTT payload bytes -> the `Dynamic` value rules see.
//!
//! Three formats, chosen per subscription: JSON, plain scalars (`23.5`, `true`, `on`,
//! `offline`), and the postcard frames of the `wire` crate. `auto` tells them apart by the
//! first byte: wire frames start with a non-text version byte. A wire frame decodes to the
//! same object a JSON sensor would send (see `wire/README.md`), so one rule serves both.

use edgewatch_engine::{Dynamic, Map};
use edgewatch_wire as wire;
use serde::Deserialize;

/// How a subscription's payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Any of the below, told apart by content.
    #[default]
    Auto,
    /// A JSON document (usually an object).
    Json,
    /// One plain value: a number, `true`/`false`/`on`/`off`, or text.
    #[serde(alias = "plain")]
    Scalar,
    /// A postcard frame of the `wire` crate.
    #[serde(alias = "wire")]
    Postcard,
}

/// Why a payload could not be decoded. Each reason is counted separately.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {size} bytes is over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("empty payload")]
    Empty,
    #[error("payload is not valid UTF-8 text")]
    NotUtf8,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid wire frame: {0}")]
    Wire(wire::Error),
}

impl DecodeError {
    /// A short, stable reason for counters and dead letters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Empty => "empty",
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::Json(_) => "json",
            DecodeError::Wire(_) => "wire",
        }
    }
}

/// Decodes `bytes` as `format`, refusing payloads over `max_len` bytes.
pub fn decode(format: Format, bytes: &[u8], max_len: usize) -> Result<Dynamic, DecodeError> {
    if bytes.len() > max_len {
        return Err(DecodeError::TooLarge { size: bytes.len(), max: max_len });
    }
    let Some(&first) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    match format {
        Format::Json => json(bytes),
        Format::Scalar => scalar(bytes),
        Format::Postcard => postcard(bytes),
        Format::Auto if first == wire::VERSION || (first < 0x20 && !first.is_ascii_whitespace()) => postcard(bytes),
        Format::Auto => {
            let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?.trim_start();
            if text.starts_with(['{', '[', '"']) { json(bytes) } else { scalar(bytes) }
        }
    }
}

fn json(bytes: &[u8]) -> Result<Dynamic, DecodeError> {
    serde_json::from_slice::<Dynamic>(bytes).map_err(|e| DecodeError::Json(e.to_string()))
}

fn scalar(bytes: &[u8]) -> Result<Dynamic, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(match text {
        "true" | "on" | "ON" | "On" | "TRUE" | "True" => Dynamic::TRUE,
        "false" | "off" | "OFF" | "Off" | "FALSE" | "False" => Dynamic::FALSE,
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Dynamic::from_int(i)
            } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
                Dynamic::from_float(f)
            } else {
                Dynamic::from(text.to_owned())
            }
        }
    })
}

fn postcard(bytes: &[u8]) -> Result<Dynamic, DecodeError> {
    let msg = wire::decode(bytes).map_err(DecodeError::Wire)?;
    Ok(wire_to_map(&msg).into())
}

/// The JSON-shaped view of a wire message: `device`, `seq`, `ts`, `kind`, then one field per
/// sample channel (readings), `uptime_s` (heartbeats) or `code` (events).
pub fn wire_to_map(msg: &wire::Message) -> Map {
    let mut m = Map::new();
    m.insert("device".into(), msg.device.as_str().into());
    m.insert("seq".into(), Dynamic::from_int(i64::from(msg.seq)));
    m.insert("ts".into(), Dynamic::from_int(i64::try_from(msg.timestamp_ms).unwrap_or(i64::MAX)));
    m.insert("kind".into(), msg.kind().into());
    match &msg.body {
        wire::Body::Reading(samples) => {
            for s in samples {
                m.insert(s.channel.as_str().into(), Dynamic::from_float(s.value_f64()));
            }
        }
        wire::Body::Heartbeat { uptime_s } => {
            m.insert("uptime_s".into(), Dynamic::from_int(i64::from(*uptime_s)));
        }
        wire::Body::Event { code } => {
            m.insert("code".into(), Dynamic::from_int(i64::from(*code)));
        }
    }
    m
}

#[cfg(test)]
mod tests {
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
        let expected = serde_json::json!({"device":"t-001","seq":17,"ts":1_732_170_000_000_i64,"kind":"reading","temperature":23.5});
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
}

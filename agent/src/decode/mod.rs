//! Decoding: raw MQTT payload bytes -> the `Dynamic` value rules see.
//!
//! Three formats, chosen per subscription: JSON, plain scalars (`23.5`, `true`, `on`,
//! `offline`), and the postcard frames of the `wire` crate. `auto` tells them apart by the
//! first byte: wire frames start with a non-text version byte. A wire frame decodes through
//! the wire crate's own JSON mapping (`wire::JsonView`, the one copy of it) to the same object
//! a JSON sensor would send (see `wire/README.md`), so one rule serves both.

use edgewatch_engine::{Dynamic, Map};
use edgewatch_wire as wire;
use rhai::ImmutableString;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;

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
    /// Sparkplug B (`spBv1.0/...`): protobuf, read against its edge node's session (births,
    /// aliases, seq), which [`decode_with`] does not have: the engine loop reads it through
    /// [`crate::sparkplug::Sessions`]. Never chosen by `auto`.
    Sparkplug,
}

/// What a payload may hold. Each limit has its own dead-letter reason, so an operator sees
/// which one a sensor ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest payload, in bytes (reason `too_large`).
    pub max_payload_bytes: usize,
    /// Deepest nesting of JSON arrays and objects (reason `too_deep`); `{"a": 1}` is 1 deep.
    pub max_json_depth: usize,
    /// Longest string (a JSON string value or key, or a plain-text scalar), in bytes
    /// (reason `string_too_long`).
    pub max_string_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_payload_bytes: 64 * 1024, max_json_depth: 32, max_string_bytes: 4096 }
    }
}

impl DecodeLimits {
    /// These limits with another payload size limit.
    pub fn with_payload(self, max_payload_bytes: usize) -> Self {
        DecodeLimits { max_payload_bytes, ..self }
    }
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
    #[error("JSON nested deeper than the limit of {max} levels")]
    TooDeep { max: usize },
    #[error("a string of {len} bytes is over the limit of {max} bytes")]
    StringTooLong { len: usize, max: usize },
    #[error("wrong type: {0}")]
    WrongType(String),
    /// Decoded, but not the shape its subscription's schema asks for.
    #[error("{0}")]
    Schema(crate::schema::Violation),
    /// A Sparkplug B message its edge node's session refused (its own reasons).
    #[error("{0}")]
    Sparkplug(crate::sparkplug::SparkplugError),
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
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::StringTooLong { .. } => "string_too_long",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::Schema(_) => "schema",
            DecodeError::Sparkplug(e) => e.reason(),
        }
    }

    /// Every reason [`DecodeError::reason`] can return but Sparkplug's
    /// ([`crate::sparkplug::SparkplugError::REASONS`]), for exporters that pre-register their
    /// counters.
    pub const REASONS: [&'static str; 9] =
        ["too_large", "empty", "not_utf8", "json", "wire", "too_deep", "string_too_long", "wrong_type", "schema"];
}

/// Decodes `bytes` as `format`, refusing payloads over `max_len` bytes; the other limits are
/// the defaults of [`DecodeLimits`].
pub fn decode(format: Format, bytes: &[u8], max_len: usize) -> Result<Dynamic, DecodeError> {
    decode_with(format, bytes, &DecodeLimits { max_payload_bytes: max_len, ..DecodeLimits::default() })
}

/// Decodes `bytes` as `format` within `limits`.
///
/// Besides syntax, a payload must have the shape rules and the engine rely on (reason
/// `wrong_type`): the top level is an object or a single value (not an array, not `null`),
/// (a plain `null` too, whatever the format), and the envelope fields, when present, have their types: `device` a non-empty string (it
/// is the default key and the duplicate-detection id), `seq` an integer from 0 to 2^32 - 1.
/// Wire frames have those by construction; their non-finite samples become `()`, as the
/// wire crate's JSON mapping makes them `null`.
pub fn decode_with(format: Format, bytes: &[u8], limits: &DecodeLimits) -> Result<Dynamic, DecodeError> {
    if bytes.len() > limits.max_payload_bytes {
        return Err(DecodeError::TooLarge { size: bytes.len(), max: limits.max_payload_bytes });
    }
    let Some(&first) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    match format {
        Format::Json => json(bytes, limits),
        Format::Scalar => scalar(bytes, limits),
        Format::Postcard => postcard(bytes),
        Format::Sparkplug => {
            Err(DecodeError::WrongType("a Sparkplug B payload is read by its edge node's session".into()))
        }
        Format::Auto if first == wire::VERSION || (first < 0x20 && !first.is_ascii_whitespace()) => postcard(bytes),
        Format::Auto => {
            let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?.trim_start();
            if text.starts_with(['{', '[', '"']) { json(bytes, limits) } else { scalar(bytes, limits) }
        }
    }
}

fn json(bytes: &[u8], limits: &DecodeLimits) -> Result<Dynamic, DecodeError> {
    let hit = Cell::new(None);
    let seed = Limited { depth: 0, limits, hit: &hit };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (value, hit.take()) {
        (_, Some(limit)) => Err(limit),
        (Err(e), None) => Err(DecodeError::Json(e.to_string())),
        (Ok(v), None) => {
            check_shape(&v)?;
            Ok(v)
        }
    }
}

/// The top level and the envelope fields (see [`decode_with`]).
fn check_shape(v: &Dynamic) -> Result<(), DecodeError> {
    if v.is_unit() {
        return Err(null_payload());
    }
    if v.is_array() {
        return Err(DecodeError::WrongType("the payload is an array; expected an object or a single value".into()));
    }
    let Some(map) = v.read_lock::<Map>() else { return Ok(()) };
    if let Some(device) = map.get("device") {
        if !device.is_string() || device.read_lock::<ImmutableString>().is_some_and(|s| s.is_empty()) {
            let what = if device.is_string() { "an empty string".to_owned() } else { type_of(device) };
            return Err(DecodeError::WrongType(format!("`device` must be a non-empty string, not {what}")));
        }
    }
    if let Some(seq) = map.get("seq") {
        if !seq.as_int().is_ok_and(|s| u32::try_from(s).is_ok()) {
            let what = if seq.is_int() { "out of range".to_owned() } else { format!("not {}", type_of(seq)) };
            return Err(DecodeError::WrongType(format!("`seq` must be an integer from 0 to 4294967295, {what}")));
        }
    }
    Ok(())
}

/// A `null` payload (JSON or plain): no reading at all, so not an event.
fn null_payload() -> DecodeError {
    DecodeError::WrongType("the payload is `null`; expected an object or a single value".into())
}

/// A JSON-ish name for a value's type, for messages.
fn type_of(v: &Dynamic) -> String {
    let name = if v.is_unit() {
        "null"
    } else if v.is_string() {
        "a string"
    } else if v.is_int() {
        "an integer"
    } else if v.is_float() {
        "a number"
    } else if v.is_bool() {
        "a boolean"
    } else if v.is_array() {
        "an array"
    } else if v.is_map() {
        "an object"
    } else {
        v.type_name()
    };
    name.to_owned()
}

/// Builds the `Dynamic` straight from the parser, refusing too deep nesting and too long
/// strings as it goes: one pass, and nothing over a limit is ever allocated. (serde_json's
/// own recursion limit, 128, is a backstop above ours.)
#[derive(Clone, Copy)]
struct Limited<'a> {
    /// Arrays and objects around the value being read.
    depth: usize,
    limits: &'a DecodeLimits,
    /// The limit that stopped parsing, if one did (serde's errors carry only text).
    hit: &'a Cell<Option<DecodeError>>,
}

impl Limited<'_> {
    fn fail<E: de::Error>(&self, limit: DecodeError) -> E {
        let message = limit.to_string();
        self.hit.set(Some(limit));
        E::custom(message)
    }

    fn text<E: de::Error>(&self, s: &str) -> Result<(), E> {
        if s.len() > self.limits.max_string_bytes {
            return Err(self.fail(DecodeError::StringTooLong { len: s.len(), max: self.limits.max_string_bytes }));
        }
        Ok(())
    }

    /// The same limits one level deeper; fails past the depth limit.
    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        if self.depth >= self.limits.max_json_depth {
            return Err(self.fail(DecodeError::TooDeep { max: self.limits.max_json_depth }));
        }
        Ok(Limited { depth: self.depth + 1, ..*self })
    }
}

impl<'de> DeserializeSeed<'de> for Limited<'_> {
    type Value = Dynamic;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Dynamic, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Limited<'_> {
    type Value = Dynamic;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Dynamic, E> {
        Ok(Dynamic::from_bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dynamic, E> {
        // As rhai's own deserializer: integers beyond i64 become floats.
        Ok(i64::try_from(v).map_or_else(|_| Dynamic::from_float(v as f64), Dynamic::from_int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Dynamic, E> {
        self.text(v)?;
        // Straight into rhai's string (short ones inline): no `String` on the way.
        Ok(Dynamic::from(rhai::ImmutableString::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let inner = self.nested()?;
        let mut array = rhai::Array::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            array.push(v);
        }
        Ok(Dynamic::from_array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Dynamic, A::Error> {
        let inner = self.nested()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(Key(inner))? {
            let value = access.next_value_seed(inner)?;
            map.insert(key, value);
        }
        Ok(Dynamic::from_map(map))
    }
}

/// An object key, under the string limit. Made straight into a map key (short ones inline,
/// without an allocation): every field of every payload is one.
struct Key<'a>(Limited<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = rhai::Identifier;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<rhai::Identifier, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = rhai::Identifier;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<rhai::Identifier, E> {
        self.0.text(v)?;
        Ok(v.into())
    }
}

fn scalar(bytes: &[u8], limits: &DecodeLimits) -> Result<Dynamic, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?.trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(match text {
        // As in JSON: the wrong shape, not the text "null" (see `decode_with`).
        "null" => return Err(null_payload()),
        "true" | "on" | "ON" | "On" | "TRUE" | "True" => Dynamic::TRUE,
        "false" | "off" | "OFF" | "Off" | "FALSE" | "False" => Dynamic::FALSE,
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Dynamic::from_int(i)
            } else if let Some(f) = text.parse::<f64>().ok().filter(|f| f.is_finite()) {
                Dynamic::from_float(f)
            } else if text.len() > limits.max_string_bytes {
                return Err(DecodeError::StringTooLong { len: text.len(), max: limits.max_string_bytes });
            } else {
                Dynamic::from(text.to_owned())
            }
        }
    })
}

/// A frame through the wire crate's JSON mapping ([`wire::JsonView`]), serialized straight
/// into a rule value: the same object the frame's JSON text would decode to (integers beyond
/// `i64` become floats, non-finite samples `()`), with no second copy of the mapping here.
fn postcard(bytes: &[u8]) -> Result<Dynamic, DecodeError> {
    let msg = wire::decode(bytes).map_err(DecodeError::Wire)?;
    // The view holds only strings, integers, floats and `None`, which rhai's serializer always
    // takes; a failure would be a malformed message, not a panic.
    rhai::serde::to_dynamic(msg.json()).map_err(|_| DecodeError::Wire(wire::Error::Malformed))
}

#[cfg(test)]
mod tests;

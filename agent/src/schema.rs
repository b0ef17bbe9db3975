//! Payload schemas: the shape a subscription's payloads must have, checked right after
//! decoding, so that rules never see a payload that breaks it.
//!
//! ```text
//! [schemas.<name>] (config/schemas.rs, checked with key paths) ─▶ Schema
//! decoded payload ─▶ Schema::check ─▶ Ok(version) ─▶ engine
//!                                  └▶ Err(Violation) ─▶ dead letter, reason `schema`:
//!                                     `temperature: expected number in [-40, 125], got "85C"`
//! ```
//!
//! A subset of JSON Schema, the part a sensor payload needs: each field (a dotted path into
//! nested objects) is a number, an integer, a bool, a string or one of an enum's strings, with
//! ranges and lengths, required unless `optional`. Several versions may be declared, chosen by
//! a payload field (`schema_version`). Hand-written rather than a JSON Schema crate: those
//! bring a regex engine and a JSON pointer resolver, about a megabyte the gateway's 8 MB
//! budget cannot spare, for features (patterns, `$ref`, combinators) sensors do not need.

use rhai::{Dynamic, Map};
use std::fmt;

/// What one field must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Any finite number, integers included.
    Number {
        min: Option<f64>,
        max: Option<f64>,
    },
    /// A whole number.
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Bool,
    /// A string; lengths in characters.
    String {
        min_length: Option<usize>,
        max_length: Option<usize>,
    },
    /// One of these strings.
    Enum(Vec<String>),
}

/// One declared field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// As written (`gps.lat`), for messages.
    pub name: String,
    /// The levels of `name`, split once.
    path: Vec<String>,
    pub kind: Kind,
    /// May be absent (or `null`).
    pub optional: bool,
}

impl Field {
    pub fn new(name: &str, kind: Kind, optional: bool) -> Field {
        Field { name: name.to_owned(), path: name.split('.').map(str::to_owned).collect(), kind, optional }
    }
}

/// One version of a schema: its fields, and whether others are allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub fields: Vec<Field>,
    /// Fields not declared are refused (`additional_fields = false`).
    pub closed: bool,
}

/// A named schema, with one shape or several versions of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub name: String,
    pub versions: Versions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Versions {
    One(Shape),
    /// Chosen by the payload's `field` (a string or an integer); `default` when it is absent.
    By {
        field: String,
        shapes: Vec<(String, Shape)>,
        default: Option<String>,
    },
}

// Eq for the configuration's sake: ranges are finite numbers (checked in `config`), never NaN.
impl Eq for Kind {}
impl Eq for Field {}
impl Eq for Shape {}
impl Eq for Versions {}
impl Eq for Schema {}

/// Why a payload breaks its schema: the field, what was expected, what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, got {got}{}", if version.is_empty() { String::new() } else { format!(" (schema version {version})") })]
pub struct Violation {
    /// The version the payload was checked against (`""` for a schema without versions).
    pub version: String,
    pub path: String,
    pub expected: String,
    pub got: String,
}

/// Longest excerpt of an offending value in a message.
const MAX_SHOWN: usize = 40;

impl Schema {
    /// Checks a decoded payload; the version it was checked against on success (`""` for a
    /// schema without versions).
    pub fn check<'a>(&'a self, payload: &Dynamic) -> Result<&'a str, Violation> {
        let map = payload.read_lock::<Map>();
        let Some(map) = map.as_deref() else {
            return Err(violation("(payload)", "an object".into(), payload));
        };
        let (version, shape) = match &self.versions {
            Versions::One(shape) => ("", shape),
            Versions::By { field, shapes, default } => {
                let given = map.get(field.as_str()).filter(|v| !v.is_unit());
                let chosen = match given {
                    None => default.as_deref().and_then(|d| shapes.iter().find(|(name, _)| name == d)),
                    Some(v) => shapes.iter().find(|(name, _)| names(v, name)),
                };
                match chosen {
                    Some((name, shape)) => (name.as_str(), shape),
                    None => {
                        let known: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
                        let got = given.cloned().unwrap_or(Dynamic::UNIT);
                        return Err(violation(field, format!("one of the versions {}", known.join(", ")), &got));
                    }
                }
            }
        };
        shape.check(map).map_err(|mut v| {
            v.version = version.to_owned();
            v
        })?;
        Ok(version)
    }
}

impl Shape {
    fn check(&self, map: &Map) -> Result<(), Violation> {
        for f in &self.fields {
            at(map, &f.path, |value| match value.filter(|v| !v.is_unit()) {
                None if f.optional => Ok(()),
                None => Err(violation(&f.name, format!("{} (required)", describe(&f.kind)), &Dynamic::UNIT)),
                Some(v) if fits(&f.kind, v) => Ok(()),
                Some(v) => Err(violation(&f.name, describe(&f.kind), v)),
            })?;
        }
        if self.closed {
            if let Some(extra) = map.keys().find(|k| !self.fields.iter().any(|f| f.path[0] == k.as_str())) {
                return Err(Violation {
                    version: String::new(),
                    path: extra.to_string(),
                    expected: "no such field (the schema allows no others)".into(),
                    got: "it".into(),
                });
            }
        }
        Ok(())
    }
}

/// Whether a payload's version value (a string or an integer) names version `name`.
fn names(v: &Dynamic, name: &str) -> bool {
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return s.as_str() == name;
    }
    v.as_int().is_ok_and(|i| name.parse::<i64>() == Ok(i))
}

/// Calls `f` with the value at `path` in nested objects (`None`: absent). Each level is
/// borrowed in place, through a read guard that lives for the call.
fn at<R>(map: &Map, path: &[String], f: impl FnOnce(Option<&Dynamic>) -> R) -> R {
    let Some((first, rest)) = path.split_first() else { return f(None) };
    let Some(v) = map.get(first.as_str()) else { return f(None) };
    if rest.is_empty() {
        return f(Some(v));
    }
    match v.read_lock::<Map>() {
        Some(inner) => at(&inner, rest, f),
        None => f(None),
    }
}

fn fits(kind: &Kind, v: &Dynamic) -> bool {
    match kind {
        Kind::Number { min, max } => {
            let x = if let Ok(i) = v.as_int() {
                i as f64
            } else if let Ok(f) = v.as_float() {
                f
            } else {
                return false;
            };
            x.is_finite() && min.is_none_or(|m| x >= m) && max.is_none_or(|m| x <= m)
        }
        Kind::Integer { min, max } => {
            v.as_int().is_ok_and(|i| min.is_none_or(|m| i >= m) && max.is_none_or(|m| i <= m))
        }
        Kind::Bool => v.is_bool(),
        Kind::String { min_length, max_length } => v.read_lock::<rhai::ImmutableString>().is_some_and(|s| {
            let n = s.chars().count();
            min_length.is_none_or(|m| n >= m) && max_length.is_none_or(|m| n <= m)
        }),
        Kind::Enum(values) => {
            v.read_lock::<rhai::ImmutableString>().is_some_and(|s| values.iter().any(|x| x.as_str() == s.as_str()))
        }
    }
}

/// What a kind expects, as the dead letter says it: `number in [-40, 125]`.
pub fn describe(kind: &Kind) -> String {
    fn range<T: fmt::Display>(what: &str, min: &Option<T>, max: &Option<T>) -> String {
        match (min, max) {
            (None, None) => what.to_owned(),
            (Some(a), Some(b)) => format!("{what} in [{a}, {b}]"),
            (Some(a), None) => format!("{what} ≥ {a}"),
            (None, Some(b)) => format!("{what} ≤ {b}"),
        }
    }
    match kind {
        Kind::Number { min, max } => range("number", min, max),
        Kind::Integer { min, max } => range("integer", min, max),
        Kind::Bool => "bool".into(),
        Kind::String { min_length: None, max_length: None } => "string".into(),
        Kind::String { min_length, max_length } => range("string of length", min_length, max_length),
        Kind::Enum(values) => {
            format!("one of {}", values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// A violation; its version is filled in by [`Schema::check`].
fn violation(path: &str, expected: String, got: &Dynamic) -> Violation {
    Violation { version: String::new(), path: path.to_owned(), expected, got: shown(got) }
}

/// A value as JSON, cut short: `"85C"`, `12.5`, `nothing`.
fn shown(v: &Dynamic) -> String {
    if v.is_unit() {
        return "nothing".into();
    }
    let mut text = serde_json::to_string(v).unwrap_or_else(|_| v.type_name().to_owned());
    if text.len() > MAX_SHOWN {
        let mut cut = MAX_SHOWN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON payload as the decoder gives it to rules (integers as integers).
    fn decode(json: &str) -> Dynamic {
        let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        rhai::serde::to_dynamic(value).expect("a value")
    }

    fn sensor() -> Shape {
        Shape {
            fields: vec![
                Field::new("device", Kind::String { min_length: Some(1), max_length: Some(16) }, false),
                Field::new("temperature", Kind::Number { min: Some(-40.0), max: Some(125.0) }, false),
                Field::new("count", Kind::Integer { min: Some(0), max: None }, false),
                Field::new("door", Kind::Enum(vec!["open".into(), "closed".into()]), true),
                Field::new("ok", Kind::Bool, true),
                Field::new("gps.lat", Kind::Number { min: Some(-90.0), max: Some(90.0) }, true),
            ],
            closed: false,
        }
    }

    fn check(schema: &Schema, json: &str) -> Result<String, String> {
        let v = decode(json);
        schema.check(&v).map(str::to_owned).map_err(|e| e.to_string())
    }

    #[test]
    fn valid_payloads_pass_and_each_violation_names_its_field_and_expectation() {
        let s = Schema { name: "sensor".into(), versions: Versions::One(sensor()) };
        let ok = r#"{"device": "t-1", "temperature": 21.5, "count": 3, "door": "open", "gps": {"lat": 48.1}}"#;
        assert_eq!(check(&s, ok), Ok(String::new()));
        assert!(
            check(&s, r#"{"device": "t-1", "temperature": 21, "count": 3, "extra": [1]}"#).is_ok(),
            "ints are numbers"
        );
        let cases = [
            (
                r#"{"device": "t-1", "temperature": "85C", "count": 1}"#,
                r#"temperature: expected number in [-40, 125], got "85C""#,
            ),
            (
                r#"{"device": "t-1", "temperature": 130, "count": 1}"#,
                "temperature: expected number in [-40, 125], got 130",
            ),
            (r#"{"device": "t-1", "count": 1}"#, "temperature: expected number in [-40, 125] (required), got nothing"),
            (
                r#"{"device": "t-1", "temperature": null, "count": 1}"#,
                "temperature: expected number in [-40, 125] (required), got nothing",
            ),
            (r#"{"device": "t-1", "temperature": 1, "count": 1.5}"#, "count: expected integer ≥ 0, got 1.5"),
            (r#"{"device": "t-1", "temperature": 1, "count": -1}"#, "count: expected integer ≥ 0, got -1"),
            (
                r#"{"device": "a-very-long-device-id", "temperature": 1, "count": 1}"#,
                r#"device: expected string of length in [1, 16], got "a-very-long-device-id""#,
            ),
            (
                r#"{"device": "t-1", "temperature": 1, "count": 1, "door": "ajar"}"#,
                r#"door: expected one of "open", "closed", got "ajar""#,
            ),
            (r#"{"device": "t-1", "temperature": 1, "count": 1, "ok": "yes"}"#, r#"ok: expected bool, got "yes""#),
            (
                r#"{"device": "t-1", "temperature": 1, "count": 1, "gps": {"lat": 91}}"#,
                "gps.lat: expected number in [-90, 90], got 91",
            ),
            ("17", "(payload): expected an object, got 17"),
        ];
        for (payload, expected) in cases {
            assert_eq!(check(&s, payload), Err(expected.to_owned()), "{payload}");
        }
        // A long value is cut short in the message.
        let long = format!(r#"{{"device": "t-1", "temperature": "{}", "count": 1}}"#, "x".repeat(500));
        assert!(check(&s, &long).is_err_and(|e| e.chars().count() < 120), "bounded");
    }

    #[test]
    fn a_closed_shape_refuses_fields_it_does_not_declare() {
        let s = Schema { name: "s".into(), versions: Versions::One(Shape { closed: true, ..sensor() }) };
        assert!(check(&s, r#"{"device": "t", "temperature": 1, "count": 1, "gps": {"lat": 1}}"#).is_ok());
        assert_eq!(
            check(&s, r#"{"device": "t", "temperature": 1, "count": 1, "name": "Alice"}"#),
            Err("name: expected no such field (the schema allows no others), got it".to_owned())
        );
    }

    #[test]
    fn the_version_field_chooses_the_shape() {
        let v1 = Shape { fields: vec![Field::new("t", Kind::Integer { min: None, max: None }, false)], closed: false };
        let v2 =
            Shape { fields: vec![Field::new("celsius", Kind::Number { min: None, max: None }, false)], closed: false };
        let s = Schema {
            name: "s".into(),
            versions: Versions::By {
                field: "schema_version".into(),
                shapes: vec![("1".into(), v1), ("2".into(), v2)],
                default: Some("1".into()),
            },
        };
        assert_eq!(check(&s, r#"{"t": 20}"#), Ok("1".to_owned()), "absent: the default");
        assert_eq!(check(&s, r#"{"schema_version": 2, "celsius": 20.5}"#), Ok("2".to_owned()));
        assert_eq!(check(&s, r#"{"schema_version": "2", "celsius": 20.5}"#), Ok("2".to_owned()));
        let err = s.check(&decode(r#"{"schema_version": 2, "t": 20}"#)).expect_err("v2");
        assert_eq!((err.version.as_str(), err.path.as_str()), ("2", "celsius"));
        assert_eq!(
            check(&s, r#"{"schema_version": 3, "t": 20}"#),
            Err("schema_version: expected one of the versions 1, 2, got 3".to_owned())
        );
    }
}

//! `[schemas.<name>]`: payload schemas, raw, then checked into [`crate::schema::Schema`]s
//! that subscriptions name (`schema = "<name>"`).
//!
//! ```toml
//! [schemas.sensor]
//! additional_fields = true                      # default; false refuses undeclared fields
//! [schemas.sensor.fields]
//! device = { type = "string", max_length = 32 }
//! temperature = { type = "number", min = -40, max = 125 }
//! door = { type = "enum", values = ["open", "closed"], optional = true }
//! "gps.lat" = { type = "number", min = -90, max = 90, optional = true }   # nested
//!
//! # Or versions, chosen by a payload field:
//! [schemas.meter]
//! version_field = "schema_version"
//! default_version = "1"                         # when the payload has no such field
//! [schemas.meter.versions.1.fields]
//! t = { type = "integer" }
//! [schemas.meter.versions.2.fields]
//! celsius = { type = "number" }
//! ```
//!
//! A compact TOML form in the configuration rather than JSON Schema files: the whole subset
//! fits one line per field, the configuration's strict two-stage checking names the key path
//! of every mistake, and the form maps one to one onto JSON Schema (docs/operations.md).

use super::{Invalid, invalid};
use crate::schema::{Field, Kind, Schema, Shape, Versions};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One schema as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    #[serde(default)]
    pub fields: BTreeMap<String, RawField>,
    pub additional_fields: Option<bool>,
    pub version_field: Option<String>,
    pub default_version: Option<String>,
    #[serde(default)]
    pub versions: BTreeMap<String, RawShape>,
}

/// One version's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShape {
    #[serde(default)]
    pub fields: BTreeMap<String, RawField>,
    pub additional_fields: Option<bool>,
}

/// One field as written: `{ type = "number", min = -40, max = 125, optional = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub values: Option<Vec<String>>,
    #[serde(default)]
    pub optional: bool,
}

/// Most fields one shape may declare, and most versions: a schema is checked on every
/// message.
const MAX_FIELDS: usize = 256;
const MAX_VERSIONS: usize = 32;

/// Checks every schema; by name.
pub fn validate(raw: BTreeMap<String, RawSchema>) -> Result<BTreeMap<String, Schema>, Invalid> {
    let mut out = BTreeMap::new();
    for (name, s) in raw {
        let path = format!("schemas.{name}");
        if s.default_version.is_some() && s.versions.is_empty() {
            return Err(invalid(&format!("{path}.default_version"), "needs `versions`"));
        }
        let versions = match (&s.version_field, s.versions.is_empty(), s.fields.is_empty()) {
            (None, true, false) => Versions::One(shape(&path, s.fields, s.additional_fields)?),
            (None, true, true) => return Err(invalid(&path, "declares no `fields` and no `versions`")),
            (None, false, _) => return Err(invalid(&format!("{path}.version_field"), "is required with `versions`")),
            (Some(_), true, _) => {
                return Err(invalid(&format!("{path}.versions"), "are required with `version_field`"));
            }
            (Some(_), false, false) => {
                return Err(invalid(&format!("{path}.fields"), "go under each version when there are `versions`"));
            }
            (Some(field), false, true) => {
                if s.versions.len() > MAX_VERSIONS {
                    return Err(invalid(&format!("{path}.versions"), format!("at most {MAX_VERSIONS}")));
                }
                let mut shapes = Vec::new();
                for (version, v) in s.versions {
                    let vpath = format!("{path}.versions.{version}");
                    let closed = v.additional_fields.or(s.additional_fields);
                    shapes.push((version, shape(&vpath, v.fields, closed)?));
                }
                if let Some(d) = s.default_version.as_ref().filter(|d| !shapes.iter().any(|(v, _)| v == *d)) {
                    return Err(invalid(
                        &format!("{path}.default_version"),
                        format!("`{d}` is not one of the `versions`"),
                    ));
                }
                Versions::By { field: field.clone(), shapes, default: s.default_version }
            }
        };
        out.insert(name.clone(), Schema { name, versions });
    }
    Ok(out)
}

fn shape(path: &str, fields: BTreeMap<String, RawField>, additional: Option<bool>) -> Result<Shape, Invalid> {
    if fields.is_empty() {
        return Err(invalid(&format!("{path}.fields"), "declares no field"));
    }
    if fields.len() > MAX_FIELDS {
        return Err(invalid(&format!("{path}.fields"), format!("at most {MAX_FIELDS} fields")));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (name, f) in fields {
        let fpath = format!("{path}.fields.{name}");
        if name.split('.').any(str::is_empty) {
            return Err(invalid(&fpath, "a field is a name, or a dotted path into nested objects (`gps.lat`)"));
        }
        out.push(Field::new(&name, kind(&fpath, &f)?, f.optional));
    }
    Ok(Shape { fields: out, closed: additional == Some(false) })
}

fn kind(path: &str, f: &RawField) -> Result<Kind, Invalid> {
    let key = |k: &str| format!("{path}.{k}");
    let range_ok = |min: Option<f64>, max: Option<f64>| -> Result<(), Invalid> {
        for (k, v) in [("min", min), ("max", max)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(invalid(&key(k), "must be a finite number"));
            }
        }
        if let (Some(a), Some(b)) = (min, max) {
            if a > b {
                return Err(invalid(&key("min"), format!("is above `max` ({a} > {b})")));
            }
        }
        Ok(())
    };
    let only = |allowed: &[&str]| -> Result<(), Invalid> {
        let given = [
            ("min", f.min.is_some()),
            ("max", f.max.is_some()),
            ("min_length", f.min_length.is_some()),
            ("max_length", f.max_length.is_some()),
            ("values", f.values.is_some()),
        ];
        match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(invalid(&key(k), format!("does not apply to type `{}`", f.kind))),
            None => Ok(()),
        }
    };
    match f.kind.as_str() {
        "number" => {
            only(&["min", "max"])?;
            range_ok(f.min, f.max)?;
            Ok(Kind::Number { min: f.min, max: f.max })
        }
        "integer" => {
            only(&["min", "max"])?;
            range_ok(f.min, f.max)?;
            let whole = |k: &str, v: Option<f64>| match v {
                None => Ok(None),
                Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(Some(x as i64)),
                Some(_) => Err(invalid(&key(k), "must be a whole number for an integer")),
            };
            Ok(Kind::Integer { min: whole("min", f.min)?, max: whole("max", f.max)? })
        }
        "bool" => {
            only(&[])?;
            Ok(Kind::Bool)
        }
        "string" => {
            only(&["min_length", "max_length"])?;
            if let (Some(a), Some(b)) = (f.min_length, f.max_length) {
                if a > b {
                    return Err(invalid(&key("min_length"), format!("is above `max_length` ({a} > {b})")));
                }
            }
            Ok(Kind::String { min_length: f.min_length, max_length: f.max_length })
        }
        "enum" => {
            only(&["values"])?;
            match &f.values {
                Some(v) if !v.is_empty() => Ok(Kind::Enum(v.clone())),
                _ => Err(invalid(&key("values"), "an enum needs its `values`, a non-empty list of strings")),
            }
        }
        other => Err(invalid(&key("type"), format!("`{other}` is not a type: number, integer, bool, string or enum"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BTreeMap<String, Schema>, Invalid> {
        #[derive(Deserialize)]
        struct Doc {
            schemas: BTreeMap<String, RawSchema>,
        }
        let doc: Doc = toml::from_str(text).expect("toml");
        validate(doc.schemas)
    }

    #[test]
    fn the_compact_form_and_versions_are_read() {
        let s = parse(
            r#"
            [schemas.sensor.fields]
            temperature = { type = "number", min = -40, max = 125 }
            "gps.lat" = { type = "number", optional = true }
            [schemas.meter]
            version_field = "schema_version"
            default_version = "1"
            additional_fields = false
            [schemas.meter.versions.1.fields]
            t = { type = "integer", min = 0 }
            [schemas.meter.versions.2.fields]
            celsius = { type = "number" }
            "#,
        )
        .expect("valid");
        let Versions::One(sensor) = &s["sensor"].versions else { panic!("one shape") };
        assert_eq!(sensor.fields.len(), 2);
        assert!(!sensor.closed);
        let Versions::By { shapes, default, .. } = &s["meter"].versions else { panic!("versions") };
        assert_eq!((shapes.len(), default.as_deref()), (2, Some("1")));
        assert!(shapes.iter().all(|(_, s)| s.closed), "additional_fields applies to every version");
        assert_eq!(shapes[0].1.fields[0].kind, Kind::Integer { min: Some(0), max: None });
    }

    #[test]
    fn mistakes_name_their_key_path() {
        let cases = [
            ("[schemas.s]\n", "schemas.s", "no `fields`"),
            ("[schemas.s.fields]\nt = { type = \"float\" }\n", "schemas.s.fields.t.type", "not a type"),
            ("[schemas.s.fields]\nt = { type = \"number\", min = 5, max = 1 }\n", "schemas.s.fields.t.min", "above"),
            ("[schemas.s.fields]\nt = { type = \"string\", min = 1 }\n", "schemas.s.fields.t.min", "does not apply"),
            ("[schemas.s.fields]\nt = { type = \"integer\", max = 1.5 }\n", "schemas.s.fields.t.max", "whole"),
            ("[schemas.s.fields]\nt = { type = \"enum\" }\n", "schemas.s.fields.t.values", "needs"),
            ("[schemas.s.fields]\n\"a..b\" = { type = \"bool\" }\n", "schemas.s.fields.a..b", "dotted path"),
            ("[schemas.s.versions.1.fields]\nt = { type = \"bool\" }\n", "schemas.s.version_field", "required"),
            (
                "[schemas.s]\nversion_field = \"v\"\ndefault_version = \"9\"\n[schemas.s.versions.1.fields]\nt = { type = \"bool\" }\n",
                "schemas.s.default_version",
                "not one of",
            ),
        ];
        for (text, path, message) in cases {
            let (p, m) = parse(text).expect_err(text);
            assert_eq!(p, path, "{text}: {m}");
            assert!(m.contains(message), "{text}: {m}");
        }
    }
}

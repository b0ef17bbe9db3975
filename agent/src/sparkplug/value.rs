//! A metric's value as rules see it, from its protobuf field and its datatype (the metric's
//! own, or the one its birth declared when a DATA message leaves it out).

use super::proto::{MetricValue, datatype as dt};
use serde::{Deserialize, Serialize};

/// A decoded metric value. Kept in the durable state as the last known value of its metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// `is_null`, no value sent, or a float that is NaN or infinite.
    Null,
    Bool(bool),
    /// Every integer type, and DateTime (ms since the epoch). A UInt64 above `i64::MAX` is a
    /// `Float`.
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
}

/// Why a value could not be read (reason `sparkplug_type`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TypeError {
    #[error("datatype {0} is not supported (DataSet, Template, PropertySet and extensions are not read)")]
    Unsupported(&'static str),
    #[error("a {datatype} metric carries the wrong value field")]
    Mismatch { datatype: &'static str },
    #[error("a {datatype} array's {len} bytes are not a whole number of elements")]
    BadArray { datatype: &'static str, len: usize },
    #[error("a {datatype} array holds {len} elements, over the limit of {max}")]
    ArrayTooLong { datatype: &'static str, len: usize, max: usize },
}

/// Largest array a metric may hold, in elements.
pub const MAX_ARRAY: usize = 4096;

/// The value of a metric of `datatype` that sent `value` (`None`: no value field).
pub fn read(datatype: u32, value: Option<&MetricValue>, is_null: bool) -> Result<Value, TypeError> {
    let name = dt::name(datatype);
    let mismatch = || TypeError::Mismatch { datatype: name };
    let Some(value) = value.filter(|_| !is_null) else {
        return match datatype {
            dt::INT8..=dt::FILE | dt::INT8_ARRAY..=dt::DATETIME_ARRAY if datatype != 16 => Ok(Value::Null),
            _ => Err(TypeError::Unsupported(name)),
        };
    };
    // Integers are read from either integer field: Eclipse Tahu's Java library sends UInt32 in
    // `long_value`, and encoders differ on negative Int8/16/32 (the width's two's complement,
    // or sign-extended to 32 bits). Truncating to the width and then casting reads all of them.
    let int = match value {
        MetricValue::IntValue(v) => Some(u64::from(*v)),
        MetricValue::LongValue(v) => Some(*v),
        _ => None,
    };
    Ok(match (datatype, value) {
        (dt::INT8..=dt::UINT64 | dt::DATETIME, _) => {
            let v = int.ok_or_else(mismatch)?;
            match datatype {
                dt::INT8 => Value::Int(i64::from(v as u8 as i8)),
                dt::INT16 => Value::Int(i64::from(v as u16 as i16)),
                dt::INT32 => Value::Int(i64::from(v as u32 as i32)),
                dt::UINT8 => Value::Int(i64::from(v as u8)),
                dt::UINT16 => Value::Int(i64::from(v as u16)),
                dt::UINT32 => Value::Int(i64::from(v as u32)),
                dt::UINT64 => i64::try_from(v).map_or(Value::Float(v as f64), Value::Int),
                _ => Value::Int(v as i64),
            }
        }
        (dt::FLOAT, MetricValue::FloatValue(v)) => float(f64::from(*v)),
        (dt::DOUBLE, MetricValue::DoubleValue(v)) => float(*v),
        (dt::BOOLEAN, MetricValue::BooleanValue(v)) => Value::Bool(*v),
        (dt::STRING | dt::TEXT | dt::UUID, MetricValue::StringValue(v)) => Value::Text(v.clone()),
        (dt::BYTES | dt::FILE, MetricValue::BytesValue(v)) => Value::Bytes(v.clone()),
        (dt::INT8_ARRAY..=dt::DATETIME_ARRAY, MetricValue::BytesValue(v)) => array(datatype, v)?,
        (16 | 19..=21, _) | (35.., _) | (0, _) => return Err(TypeError::Unsupported(name)),
        _ => return Err(mismatch()),
    })
}

/// An array datatype's packed bytes (Sparkplug 3.0, 6.4.17): numbers little-endian, booleans
/// as a 4-byte count then bits from the most significant, strings NUL-terminated.
fn array(datatype: u32, bytes: &[u8]) -> Result<Value, TypeError> {
    let name = dt::name(datatype);
    let items: Vec<Value> = match datatype {
        32 => {
            let (count, bits) =
                bytes.split_first_chunk::<4>().ok_or(TypeError::BadArray { datatype: name, len: bytes.len() })?;
            let count = u32::from_le_bytes(*count) as usize;
            if count > bits.len() * 8 {
                return Err(TypeError::BadArray { datatype: name, len: bytes.len() });
            }
            (0..count.min(MAX_ARRAY + 1)).map(|i| Value::Bool(bits[i / 8] & (0x80 >> (i % 8)) != 0)).collect()
        }
        33 => {
            let text = bytes.strip_suffix(&[0]).unwrap_or(bytes);
            if text.is_empty() {
                Vec::new()
            } else {
                let parts = text.split(|b| *b == 0).take(MAX_ARRAY + 1);
                parts.map(|p| Value::Text(String::from_utf8_lossy(p).into_owned())).collect()
            }
        }
        _ => {
            let width = match datatype {
                22 | 26 => 1,
                23 | 27 => 2,
                24 | 28 | 30 => 4,
                _ => 8,
            };
            if !bytes.len().is_multiple_of(width) {
                return Err(TypeError::BadArray { datatype: name, len: bytes.len() });
            }
            bytes.chunks_exact(width).take(MAX_ARRAY + 1).map(|c| element(datatype, c)).collect()
        }
    };
    if items.len() > MAX_ARRAY {
        return Err(TypeError::ArrayTooLong { datatype: name, len: items.len(), max: MAX_ARRAY });
    }
    Ok(Value::Array(items))
}

/// One little-endian element of a numeric array (`c` is exactly its width).
fn element(datatype: u32, c: &[u8]) -> Value {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    let raw = u64::from_le_bytes(b);
    match datatype {
        22 => Value::Int(i64::from(raw as u8 as i8)),
        23 => Value::Int(i64::from(raw as u16 as i16)),
        24 => Value::Int(i64::from(raw as u32 as i32)),
        25 | 34 => Value::Int(raw as i64),
        26..=28 => Value::Int(raw as i64),
        29 => i64::try_from(raw).map_or(Value::Float(raw as f64), Value::Int),
        30 => float(f64::from(f32::from_bits(raw as u32))),
        _ => float(f64::from_bits(raw)),
    }
}

/// A float reading; NaN and the infinities are no reading (`Null`), as the wire format's
/// non-finite samples are: rules compare numbers, and the state is kept as JSON.
fn float(v: f64) -> Value {
    if v.is_finite() { Value::Float(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_the_sign_of_their_width() {
        let int = |t, v| read(t, Some(&MetricValue::IntValue(v)), false);
        assert_eq!(int(dt::INT8, 255), Ok(Value::Int(-1)), "pysparkplug's Int8 -1");
        assert_eq!(int(dt::INT8, u32::MAX), Ok(Value::Int(-1)), "sign-extended by other encoders");
        assert_eq!(int(dt::INT16, 0x8000), Ok(Value::Int(-32768)));
        assert_eq!(int(dt::INT32, u32::MAX), Ok(Value::Int(-1)));
        assert_eq!(int(dt::UINT32, u32::MAX), Ok(Value::Int(4_294_967_295)));
        let long = |t, v| read(t, Some(&MetricValue::LongValue(v)), false);
        assert_eq!(long(dt::INT64, u64::MAX), Ok(Value::Int(-1)));
        assert_eq!(long(dt::UINT64, u64::MAX), Ok(Value::Float(u64::MAX as f64)));
        assert_eq!(long(dt::DATETIME, 1_796_512_550_892), Ok(Value::Int(1_796_512_550_892)));
        assert_eq!(long(dt::UINT32, 4_000_000_000), Ok(Value::Int(4_000_000_000)), "Tahu's UInt32, in long_value");
        assert_eq!(int(dt::INT64, 7), Ok(Value::Int(7)));
    }

    /// Found by the fuzzer: a NaN kept as the last known value did not survive the state's
    /// JSON (`null` does not read back as a number).
    #[test]
    fn non_finite_floats_are_no_reading() {
        assert_eq!(read(dt::FLOAT, Some(&MetricValue::FloatValue(f32::NAN)), false), Ok(Value::Null));
        assert_eq!(read(dt::DOUBLE, Some(&MetricValue::DoubleValue(f64::INFINITY)), false), Ok(Value::Null));
        let arr = read(31, Some(&MetricValue::BytesValue(f64::NEG_INFINITY.to_le_bytes().to_vec())), false);
        assert_eq!(arr, Ok(Value::Array(vec![Value::Null])));
    }

    #[test]
    fn wrong_fields_nulls_and_unsupported_kinds_are_told_apart() {
        assert_eq!(
            read(dt::DOUBLE, Some(&MetricValue::BooleanValue(true)), false),
            Err(TypeError::Mismatch { datatype: "Double" })
        );
        assert_eq!(read(dt::DOUBLE, Some(&MetricValue::DoubleValue(1.0)), true), Ok(Value::Null));
        assert_eq!(read(dt::STRING, None, false), Ok(Value::Null));
        assert_eq!(read(16, None, false), Err(TypeError::Unsupported("DataSet")));
        assert_eq!(read(19, Some(&MetricValue::IntValue(1)), false), Err(TypeError::Unsupported("Template")));
        assert_eq!(read(99, Some(&MetricValue::IntValue(1)), false), Err(TypeError::Unsupported("Unknown")));
    }

    #[test]
    fn arrays_unpack_as_the_specification_packs_them() {
        let arr = |t, b: &[u8]| read(t, Some(&MetricValue::BytesValue(b.to_vec())), false);
        assert_eq!(arr(22, &[0xff, 1]), Ok(Value::Array(vec![Value::Int(-1), Value::Int(1)])));
        assert_eq!(arr(27, &[1, 0, 0xff, 0xff]), Ok(Value::Array(vec![Value::Int(1), Value::Int(65535)])));
        assert_eq!(arr(30, &1.5f32.to_le_bytes()), Ok(Value::Array(vec![Value::Float(1.5)])));
        assert_eq!(arr(31, &[0; 7]), Err(TypeError::BadArray { datatype: "DoubleArray", len: 7 }));
        // Booleans: a count of 3, then 0b101_00000.
        let bools = arr(32, &[3, 0, 0, 0, 0b1010_0000]);
        assert_eq!(bools, Ok(Value::Array(vec![Value::Bool(true), Value::Bool(false), Value::Bool(true)])));
        assert!(matches!(arr(32, &[9, 0, 0, 0, 0]), Err(TypeError::BadArray { .. })), "more bits than bytes");
        let strings = arr(33, b"ab\0\0c\0");
        let text = |s: &str| Value::Text(s.into());
        assert_eq!(strings, Ok(Value::Array(vec![text("ab"), text(""), text("c")])));
        let long = vec![0u8; (MAX_ARRAY + 1) * 2];
        assert!(matches!(arr(23, &long), Err(TypeError::ArrayTooLong { .. })));
    }
}

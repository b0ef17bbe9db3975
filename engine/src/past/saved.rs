//! A key's past, saved: two pieces, so the one that changes with every reading stays small.
//!
//! ```text
//! Touched::PastOpen  raw bytes, written with every reading (about 60 bytes a field):
//!                    u8 8, then for each field: varint length and the field's name,
//!                    varint span, varint every, zigzag varint start, varint count,
//!                    f64 LE mean, m2, min, max
//! Touched::Past      {"fields":[{"field":"temperature","span":604800000,"every":3600000,
//!                                "newest":<ms>,"buckets":"<base64>"}]}  once per bucket closed
//! ```
//!
//! The closed buckets are JSON text like most engine state. The open ones were too (`{"fields":
//! [{"field", "span", "every", "start", "r": [count, mean, m2, min, max]}]}`, about 130 bytes,
//! still read): formatting their four full-precision floats cost about 5 000 instructions a
//! reading (callgrind), a third of what a rule's past costs. Snapshots carry the raw form as
//! base64 (`Store::snapshot`). Each field carries its span and resolution: restored into a
//! rule whose `past` changed since, only the fields that still fit are kept. `start` and
//! `newest` are bucket starts, ms since the epoch.
//!
//! The closed buckets, oldest first (`newest` is the last), each:
//! ```text
//! varint  count << 3 | scale      0 alone: an empty bucket
//! f32 LE  mean, f32 LE  m2
//! scale 0: f32 LE min, f32 LE max
//! scale s in 1..=5: zigzag varint n(min), varint n(max) - n(min), where value = n / 10^(s-1)
//!                   reads back as the same f32 (checked when encoding)
//! ```
//! A bucket of readings with two decimals costs about 13 bytes, 18 in base64: "7d by 1h" is
//! about 3.1 KB saved (see the test `a_week_by_the_hour_saves_under_4_kb`).

use super::ring::Bucket;
use super::{KeyPast, PastSpec, Summary};
use crate::history::rollup::{POW10, get_varint, put_varint, unzigzag, zigzag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Saved past that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PastError {
    #[error("saved past is not the expected JSON: {0}")]
    Json(String),
    #[error("saved buckets of `{field}`: {why}")]
    Buckets { field: String, why: &'static str },
}

#[derive(Serialize, Deserialize)]
struct Saved<F> {
    fields: Vec<F>,
}

#[derive(Serialize, Deserialize)]
struct ClosedField {
    field: String,
    span: i64,
    every: i64,
    newest: i64,
    buckets: String,
}

/// The open buckets as earlier versions saved them (still read).
#[derive(Deserialize)]
struct OpenField {
    field: String,
    span: i64,
    every: i64,
    start: i64,
    r: (u64, f64, f64, f64, f64),
}

impl KeyPast {
    /// The closed buckets of every field, or `None` when there are none.
    pub(crate) fn save_closed(&self, specs: &[PastSpec]) -> Option<Vec<u8>> {
        let fields: Vec<ClosedField> = self
            .fields
            .iter()
            .zip(specs)
            .filter(|(f, s)| f.ring.len() == s.buckets())
            .map(|(f, s)| {
                let mut bytes = Vec::with_capacity(16 * f.ring.len());
                f.ring_in_order(s.buckets()).for_each(|b| encode(b, &mut bytes));
                ClosedField {
                    field: s.field.to_string(),
                    span: s.span_ms,
                    every: s.every_ms,
                    newest: f.newest.saturating_mul(s.every_ms),
                    buckets: STANDARD.encode(bytes),
                }
            })
            .collect();
        (!fields.is_empty()).then(|| serde_json::to_vec(&Saved { fields }).unwrap_or_default())
    }

    /// The open bucket of every field, or `None` when there is none.
    pub(crate) fn save_open(&self, specs: &[PastSpec]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (f, s) in self.fields.iter().zip(specs) {
            let Some((j, o)) = f.open else { continue };
            if out.is_empty() {
                out.reserve(1 + 60 * specs.len());
                out.push(OPEN);
            }
            put_varint(&mut out, s.field.len() as u64);
            out.extend_from_slice(s.field.as_bytes());
            put_varint(&mut out, zigzag(s.span_ms));
            put_varint(&mut out, zigzag(s.every_ms));
            put_varint(&mut out, zigzag(j.saturating_mul(s.every_ms)));
            put_varint(&mut out, o.count);
            for v in [o.mean, o.m2, o.min, o.max] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Restores closed buckets saved by [`KeyPast::save_closed`]; returns the indices of the
    /// fields restored (fields whose declaration changed are dropped).
    pub(crate) fn restore_closed(&mut self, specs: &[PastSpec], bytes: &[u8]) -> Result<Vec<usize>, PastError> {
        let saved: Saved<ClosedField> = serde_json::from_slice(bytes).map_err(|e| PastError::Json(e.to_string()))?;
        let mut restored = Vec::new();
        for c in saved.fields {
            let Some(idx) = fitting(specs, &c.field, c.span, c.every) else { continue };
            let n = specs[idx].buckets();
            let bad = |why| PastError::Buckets { field: c.field.clone(), why };
            let bytes = STANDARD.decode(&c.buckets).map_err(|_| bad("not base64"))?;
            let mut at = 0;
            let mut buckets = Vec::with_capacity(n);
            while at < bytes.len() {
                buckets.push(decode(&bytes, &mut at).map_err(bad)?);
            }
            if buckets.len() != n {
                return Err(bad("not as many buckets as the span holds"));
            }
            self.field_mut(idx).set_ring(n, c.newest.div_euclid(c.every), buckets);
            restored.push(idx);
        }
        Ok(restored)
    }

    /// Restores open buckets saved by [`KeyPast::save_open`]; returns the indices of the
    /// fields restored.
    pub(crate) fn restore_open(&mut self, specs: &[PastSpec], bytes: &[u8]) -> Result<Vec<usize>, PastError> {
        let saved = match bytes.split_first() {
            Some((&OPEN, rest)) => open_fields(rest)
                .ok_or_else(|| PastError::Buckets { field: String::new(), why: "open buckets cut short" })?,
            _ => serde_json::from_slice::<Saved<OpenField>>(bytes).map_err(|e| PastError::Json(e.to_string()))?.fields,
        };
        let mut restored = Vec::new();
        for o in saved {
            let Some(idx) = fitting(specs, &o.field, o.span, o.every) else { continue };
            let (count, mean, m2, min, max) = o.r;
            if ![mean, m2, min, max].iter().all(|v| v.is_finite()) || m2 < 0.0 || min > max {
                return Err(PastError::Buckets { field: o.field, why: "open bucket out of range" });
            }
            let s = Summary { count, mean, m2, min, max };
            self.field_mut(idx).set_open(specs[idx].buckets(), o.start.div_euclid(o.every), s);
            restored.push(idx);
        }
        Ok(restored)
    }
}

/// The first byte of the open buckets' raw form (JSON, before it, starts with `{`).
const OPEN: u8 = 8;

/// The fields of the open buckets' raw form (after its first byte).
fn open_fields(mut bytes: &[u8]) -> Option<Vec<OpenField>> {
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let mut at = 0;
        let varint = |at: &mut usize| get_varint(bytes, at).ok();
        let len = usize::try_from(varint(&mut at)?).ok()?;
        let field = std::str::from_utf8(bytes.get(at..at.checked_add(len)?)?).ok()?.to_owned();
        at += len;
        let (span, every, start) = (unzigzag(varint(&mut at)?), unzigzag(varint(&mut at)?), unzigzag(varint(&mut at)?));
        let count = varint(&mut at)?;
        let mut r = [0f64; 4];
        for v in &mut r {
            *v = f64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            at += 8;
        }
        fields.push(OpenField { field, span, every, start, r: (count, r[0], r[1], r[2], r[3]) });
        bytes = &bytes[at..];
    }
    Some(fields)
}

/// The index of the spec a saved field still fits: same name, span and resolution.
fn fitting(specs: &[PastSpec], field: &str, span: i64, every: i64) -> Option<usize> {
    specs.iter().position(|s| &*s.field == field && s.span_ms == span && s.every_ms == every)
}

fn encode(b: &Bucket, out: &mut Vec<u8>) {
    if b.count == 0 {
        out.push(0);
        return;
    }
    let scale = (1..=5u32).find(|&s| scaled(b.min, s).is_some() && scaled(b.max, s).is_some()).unwrap_or(0);
    put_varint(out, u64::from(b.count) << 3 | u64::from(scale));
    out.extend_from_slice(&b.mean.to_le_bytes());
    out.extend_from_slice(&b.m2.to_le_bytes());
    match (scaled(b.min, scale), scaled(b.max, scale)) {
        (Some(lo), Some(hi)) if scale > 0 => {
            put_varint(out, zigzag(lo));
            // min <= max, so the difference is >= 0 (both below 2^53).
            put_varint(out, (hi - lo) as u64);
        }
        _ => {
            out.extend_from_slice(&b.min.to_le_bytes());
            out.extend_from_slice(&b.max.to_le_bytes());
        }
    }
}

fn decode(bytes: &[u8], at: &mut usize) -> Result<Bucket, &'static str> {
    let head = get_varint(bytes, at).map_err(|_| "truncated")?;
    if head == 0 {
        return Ok(Bucket::default());
    }
    let (count, scale) = (head >> 3, (head & 7) as usize);
    let count = u32::try_from(count).map_err(|_| "count out of range")?;
    if count == 0 || scale > 5 {
        return Err("bad header");
    }
    let f32_at = |at: &mut usize| -> Result<f32, &'static str> {
        let b: [u8; 4] = bytes.get(*at..*at + 4).and_then(|s| s.try_into().ok()).ok_or("truncated")?;
        *at += 4;
        Ok(f32::from_le_bytes(b))
    };
    let (mean, m2) = (f32_at(at)?, f32_at(at)?);
    let (min, max) = if scale == 0 {
        (f32_at(at)?, f32_at(at)?)
    } else {
        let lo = unzigzag(get_varint(bytes, at).map_err(|_| "truncated")?);
        let d = i64::try_from(get_varint(bytes, at).map_err(|_| "truncated")?).map_err(|_| "value out of range")?;
        let hi = lo.checked_add(d).ok_or("value out of range")?;
        let p = POW10[scale - 1];
        ((lo as f64 / p) as f32, (hi as f64 / p) as f32)
    };
    if ![mean, m2, min, max].iter().all(|v| v.is_finite()) || min > max {
        return Err("value out of range");
    }
    Ok(Bucket { count, mean, m2, min, max })
}

/// `x` as an integer at decimal scale `s` (1..=5: 10^(s-1)), if that reads back as `x`.
fn scaled(x: f32, s: u32) -> Option<i64> {
    if s == 0 {
        return None;
    }
    let p = POW10[s as usize - 1];
    let n = (f64::from(x) * p).round();
    (n.abs() < 9.0e15 && ((n as i64 as f64 / p) as f32).to_bits() == x.to_bits()).then_some(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> Vec<PastSpec> {
        vec![PastSpec { field: "temperature".into(), span_ms: 7 * 86_400_000, every_ms: 3_600_000 }]
    }

    /// A week of a reading a minute, two decimals.
    fn a_week() -> KeyPast {
        let mut kp = KeyPast::new(1);
        let mut x: u64 = 1;
        for minute in 0..(7 * 24 * 60 + 90) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = 15.0 + ((x >> 33) % 1500) as f64 / 100.0;
            let j = (minute * 60_000i64).div_euclid(3_600_000);
            kp.field_mut(0).place(168, j, &Summary::of(v)).expect("placed");
        }
        kp
    }

    #[test]
    fn a_week_by_the_hour_saves_under_4_kb_and_round_trips() {
        let specs = spec();
        let kp = a_week();
        let closed = kp.save_closed(&specs).expect("closed buckets");
        let open = kp.save_open(&specs).expect("an open bucket");
        assert!(closed.len() < 4096, "{} bytes", closed.len());
        assert!(open.len() <= 60, "{} bytes", open.len());
        let mut back = KeyPast::default();
        assert_eq!(back.restore_open(&specs, &open), Ok(vec![0]));
        assert_eq!(back.restore_closed(&specs, &closed), Ok(vec![0]));
        assert_eq!(back, kp, "bit for bit");
    }

    #[test]
    fn fields_whose_declaration_changed_are_dropped() {
        let kp = a_week();
        let bytes = kp.save_closed(&spec()).expect("saved");
        let changed = vec![PastSpec { field: "temperature".into(), span_ms: 86_400_000, every_ms: 3_600_000 }];
        let mut back = KeyPast::default();
        assert_eq!(back.restore_closed(&changed, &bytes), Ok(vec![]));
        assert_eq!(back, KeyPast::default());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let specs = spec();
        let mut kp = KeyPast::default();
        assert!(kp.restore_closed(&specs, b"{").is_err());
        let short =
            br#"{"fields":[{"field":"temperature","span":604800000,"every":3600000,"newest":0,"buckets":"AAA="}]}"#;
        assert!(kp.restore_closed(&specs, short).is_err());
        let nan = br#"{"fields":[{"field":"temperature","span":604800000,"every":3600000,"start":0,"r":[1,1.0,-1.0,1.0,1.0]}]}"#;
        assert!(kp.restore_open(&specs, nan).is_err());
    }

    /// Open buckets saved as JSON by earlier versions: still restored, bit for bit.
    #[test]
    fn open_buckets_saved_as_json_are_still_read() {
        let specs = spec();
        let json = br#"{"fields":[{"field":"temperature","span":604800000,"every":3600000,"start":7200000,"r":[3,21.25,0.125,21.0,21.5]}]}"#;
        let mut kp = KeyPast::default();
        assert_eq!(kp.restore_open(&specs, json), Ok(vec![0]));
        let raw = kp.save_open(&specs).expect("an open bucket");
        assert_eq!(raw[0], OPEN);
        let mut back = KeyPast::default();
        assert_eq!(back.restore_open(&specs, &raw), Ok(vec![0]));
        assert_eq!(back, kp);
        assert_eq!(back.fields[0].open, Some((2, Summary { count: 3, mean: 21.25, m2: 0.125, min: 21.0, max: 21.5 })));
    }

    proptest! {
        #[test]
        fn open_buckets_of_anything_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = KeyPast::default().restore_open(&spec(), &bytes);
            let mut raw = vec![OPEN];
            raw.extend_from_slice(&bytes);
            let _ = KeyPast::default().restore_open(&spec(), &raw);
        }

        #[test]
        fn buckets_round_trip(count in 1u32.., mean: f32, m2 in 0f32.., a: f32, b: f32,
                              cents in -1_000_000i64..1_000_000, d in 0i64..10_000) {
            prop_assume!(mean.is_finite() && m2.is_finite() && a.is_finite() && b.is_finite());
            for (min, max) in [(a.min(b), a.max(b)), ((cents as f64 / 100.0) as f32, ((cents + d) as f64 / 100.0) as f32)] {
                let bucket = Bucket { count, mean, m2, min, max };
                let mut out = Vec::new();
                encode(&bucket, &mut out);
                let mut at = 0;
                let back = decode(&out, &mut at);
                prop_assert_eq!(at, out.len());
                let back = back.map_err(TestCaseError::fail)?;
                prop_assert_eq!(back.min.to_bits(), min.to_bits());
                prop_assert_eq!(back.max.to_bits(), max.to_bits());
                prop_assert_eq!(back, bucket);
            }
        }

        #[test]
        fn decoding_anything_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut at = 0;
            while at < bytes.len() && decode(&bytes, &mut at).is_ok() {}
        }
    }
}

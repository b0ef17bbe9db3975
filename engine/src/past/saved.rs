//! A key's past, saved: two pieces, so the one that changes with every reading stays small.
//!
//! ```text
//! Touched::PastOpen  {"fields":[{"field":"temperature","span":604800000,"every":3600000,
//!                                "start":<ms>,"r":[count,mean,m2,min,max]}]}     ~130 bytes a field
//! Touched::Past      {"fields":[{"field":"temperature","span":604800000,"every":3600000,
//!                                "newest":<ms>,"buckets":"<base64>"}]}  once per bucket closed
//! ```
//!
//! JSON text like all engine state (snapshots carry it as strings). Each field carries its
//! span and resolution: restored into a rule whose `past` changed since, only the fields
//! that still fit are kept. `start` and `newest` are bucket starts, ms since the epoch.
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

#[derive(Serialize, Deserialize)]
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
        let fields: Vec<OpenField> = self
            .fields
            .iter()
            .zip(specs)
            .filter_map(|(f, s)| {
                let (j, o) = f.open?;
                Some(OpenField {
                    field: s.field.to_string(),
                    span: s.span_ms,
                    every: s.every_ms,
                    start: j.saturating_mul(s.every_ms),
                    r: (o.count, o.mean, o.m2, o.min, o.max),
                })
            })
            .collect();
        (!fields.is_empty()).then(|| serde_json::to_vec(&Saved { fields }).unwrap_or_default())
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
        let saved: Saved<OpenField> = serde_json::from_slice(bytes).map_err(|e| PastError::Json(e.to_string()))?;
        let mut restored = Vec::new();
        for o in saved.fields {
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
        assert!(open.len() < 200, "{} bytes", open.len());
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

    proptest! {
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

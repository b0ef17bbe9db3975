//! [`Rollup`]: what a period of readings of one numeric field comes down to (count, sum, sum
//! of squares, min, max, first, last), and its compact encoding on disk.
//!
//! Roll-ups merge exactly (`a` then `b` is `a.merge(&b)`), so a coarse period is the merge
//! of its fine periods, and a span of a rule is the merge of its buckets.
//!
//! # Encoding (published in docs/operations.md)
//! ```text
//! varint  count << 3 | scale          scale 0: the four values below are f64, little-endian
//! f64 LE  sum                         scale s in 1..=5: each is an integer n with
//! f64 LE  sum of squares                value = n / 10^(s-1), exactly (checked when encoding)
//! min     zigzag varint n(min)
//! max     varint n(max) - n(min)
//! first   varint n(first) - n(min)
//! last    varint n(last) - n(min)
//! ```
//! A reading with up to four decimals (what sensors send) costs 1-3 bytes per value: a
//! typical roll-up is 22-26 bytes, against 56 for seven raw numbers. Anything else falls
//! back to raw f64, so the encoding never rounds.
//!
//! Hand-written rather than postcard: postcard would store the seven numbers raw (52+
//! bytes); the point here is the decimal scaling, which no serde format does.

use serde::{Deserialize, Serialize};

/// A period of readings of one field, summed up. Never empty: it starts with a reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub count: u64,
    pub sum: f64,
    /// Sum of squares, for the variance.
    pub sumsq: f64,
    pub min: f64,
    pub max: f64,
    /// The period's first reading (in the order they were folded in).
    pub first: f64,
    /// The period's last reading.
    pub last: f64,
}

/// Bytes that are not a roll-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a roll-up: {0}")]
pub struct RollupError(pub(crate) &'static str);

impl RollupError {
    pub(crate) const NOT_JSON: RollupError = RollupError("saved series is not the expected JSON");
}

impl Rollup {
    /// The roll-up of one reading.
    pub fn of(v: f64) -> Self {
        Rollup { count: 1, sum: v, sumsq: v * v, min: v, max: v, first: v, last: v }
    }

    /// Folds in one more reading (after the others).
    pub fn fold(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.sumsq += v * v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = v;
    }

    /// Folds in the readings of `later`, which came after this one's.
    pub fn merge(&mut self, later: &Rollup) {
        self.count += later.count;
        self.sum += later.sum;
        self.sumsq += later.sumsq;
        self.min = self.min.min(later.min);
        self.max = self.max.max(later.max);
        self.last = later.last;
    }

    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// The sample variance (n - 1), 0 for a single reading. Computed from sums, so it is
    /// clamped at 0 where rounding would make it slightly negative.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        ((self.sumsq - self.sum * self.sum / n) / (n - 1.0)).max(0.0)
    }

    /// The sample standard deviation.
    pub fn stddev(&self) -> f64 {
        self.variance().sqrt()
    }

    /// The most bytes [`Rollup::encode`] appends: a count varint, two floats, four more.
    pub const ENCODED_MAX: usize = 10 + 2 * 8 + 4 * 10;

    /// Appends the compact encoding (see the module's documentation).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let values = [self.min, self.max, self.first, self.last];
        // The smallest scale at which all four are exact, with their integers at it (each
        // value scaled once per scale tried: this runs for every reading of a series).
        let fixed = (1..=5u32).find_map(|s| Some((s, scaled_all(&values, s)?)));
        put_varint(out, self.count << 3 | u64::from(fixed.map_or(0, |(s, _)| s)));
        out.extend_from_slice(&self.sum.to_le_bytes());
        out.extend_from_slice(&self.sumsq.to_le_bytes());
        let Some((_, n)) = fixed else {
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
            return;
        };
        put_varint(out, zigzag(n[0]));
        for x in &n[1..] {
            // min <= max, first, last, so each difference is >= 0 and fits (all below 2^53).
            put_varint(out, (x - n[0]) as u64);
        }
    }

    /// Reads one roll-up from the front of `bytes`; returns it and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(Rollup, usize), RollupError> {
        let mut at = 0;
        let head = get_varint(bytes, &mut at)?;
        let (count, scale) = (head >> 3, (head & 7) as u32);
        if count == 0 || scale > 5 {
            return Err(RollupError("bad header"));
        }
        let sum = get_f64(bytes, &mut at)?;
        let sumsq = get_f64(bytes, &mut at)?;
        let [min, max, first, last] = if scale == 0 {
            [get_f64(bytes, &mut at)?, get_f64(bytes, &mut at)?, get_f64(bytes, &mut at)?, get_f64(bytes, &mut at)?]
        } else {
            let min = unzigzag(get_varint(bytes, &mut at)?);
            let mut rest = [0i64; 3];
            for r in &mut rest {
                let d = i64::try_from(get_varint(bytes, &mut at)?).map_err(|_| RollupError("value out of range"))?;
                *r = min.checked_add(d).ok_or(RollupError("value out of range"))?;
            }
            let p = POW10[scale as usize - 1];
            [min as f64 / p, rest[0] as f64 / p, rest[1] as f64 / p, rest[2] as f64 / p]
        };
        Ok((Rollup { count, sum, sumsq, min, max, first, last }, at))
    }
}

pub(crate) const POW10: [f64; 5] = [1.0, 10.0, 100.0, 1_000.0, 10_000.0];

/// All of `values` at scale `s`, if each is exact there.
fn scaled_all(values: &[f64; 4], s: u32) -> Option<[i64; 4]> {
    let mut n = [0i64; 4];
    for (n, &v) in n.iter_mut().zip(values) {
        *n = scaled(v, s)?;
    }
    Some(n)
}

/// `v` as an integer at decimal scale `s` (1..=5: 10^(s-1)), if that is exact.
fn scaled(v: f64, s: u32) -> Option<i64> {
    let p = POW10[s as usize - 1];
    let n = (v * p).round();
    // Compared bit for bit as decoding will compute it, so -0.0 (which would come back as
    // 0.0) stays raw.
    (n.abs() < 9.0e15 && ((n as i64) as f64 / p).to_bits() == v.to_bits()).then_some(n as i64)
}

/// `n` as an unsigned number that is small when `n` is near 0 (either sign), for a varint.
pub fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// The inverse of [`zigzag`].
pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Appends `v` as a LEB128 varint (postcard's too).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*at`, moving `*at` past it.
pub fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64, RollupError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(RollupError("truncated"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(RollupError("varint too long"))
}

fn get_f64(bytes: &[u8], at: &mut usize) -> Result<f64, RollupError> {
    let b: [u8; 8] = bytes.get(*at..*at + 8).and_then(|s| s.try_into().ok()).ok_or(RollupError("truncated"))?;
    *at += 8;
    Ok(f64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn of_all(vs: &[f64]) -> Rollup {
        let mut r = Rollup::of(vs[0]);
        for &v in &vs[1..] {
            r.fold(v);
        }
        r
    }

    #[test]
    fn folds_and_merges_agree() {
        let vs = [21.5, 22.0, 19.25, 30.0, 21.5];
        let whole = of_all(&vs);
        let mut parts = of_all(&vs[..2]);
        parts.merge(&of_all(&vs[2..]));
        assert_eq!(whole, parts);
        assert_eq!((whole.count, whole.min, whole.max, whole.first, whole.last), (5, 19.25, 30.0, 21.5, 21.5));
        assert!((whole.mean() - 22.85).abs() < 1e-12);
        // Sample standard deviation of the five readings, computed the long way.
        let m = whole.mean();
        let var = vs.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / 4.0;
        assert!((whole.stddev() - var.sqrt()).abs() < 1e-9);
        assert_eq!(Rollup::of(3.0).stddev(), 0.0);
    }

    #[test]
    fn decimal_readings_encode_small_and_exactly() {
        let r = of_all(&[21.3, 21.4, 21.35, 21.3]);
        let mut buf = Vec::new();
        r.encode(&mut buf);
        assert!(buf.len() <= 24, "{} bytes", buf.len());
        assert_eq!(Rollup::decode(&buf), Ok((r, buf.len())));
        // Not a short decimal: raw, still exact.
        let r = of_all(&[std::f64::consts::PI, -1e300]);
        buf.clear();
        r.encode(&mut buf);
        assert_eq!(buf.len(), 1 + 6 * 8);
        assert_eq!(Rollup::decode(&buf), Ok((r, buf.len())));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Rollup::decode(&[]).is_err());
        assert!(Rollup::decode(&[0x08 | 1]).is_err());
        assert!(Rollup::decode(&[0xff; 20]).is_err());
    }

    proptest! {
        #[test]
        fn encoding_round_trips(vs in prop::collection::vec(prop_oneof![
            (-100_000i64..100_000).prop_map(|n| n as f64 / 100.0),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ], 1..20)) {
            let r = of_all(&vs);
            let mut buf = vec![7u8];
            r.encode(&mut buf);
            let (back, used) = Rollup::decode(&buf[1..]).expect("decodes what it encoded");
            prop_assert_eq!(used, buf.len() - 1);
            // Bit-exact: -0.0 and 0.0 must not be confused either.
            prop_assert_eq!(back.min.to_bits(), r.min.to_bits());
            prop_assert_eq!(back.last.to_bits(), r.last.to_bits());
            prop_assert_eq!(back.count, r.count);
        }

        #[test]
        fn decoding_anything_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Rollup::decode(&bytes);
        }
    }
}

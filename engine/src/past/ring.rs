//! [`FieldPast`]: one field's past for one key, as buckets of `every` on event time.
//!
//! ```text
//! open:  (index, Summary in f64)      the bucket being filled (the latest event time's)
//! ring:  n × Bucket (20 bytes, f32)   the n = span / every buckets before it, slot = index mod n,
//!                                     valid for indices in (newest - n, newest]
//! ```
//!
//! A bucket is index `time / every` (floor). A reading of a later bucket closes the open one
//! into the ring (rounded to f32 once, then) and opens its own; a reading of an earlier
//! bucket still kept (late, or a clock that jumped back) is folded into the ring; an older
//! one is refused. Old buckets are never deleted one by one: the ring overwrites them as
//! time advances, and clears the slots a gap in time jumps over.
//!
//! # Bytes per key
//! A closed bucket is count (u32), mean, sum of squared deviations, min, max (f32): 20
//! bytes. "7d by 1h" holds 168 of them (3 360 bytes, allocated when the first bucket
//! closes) plus the open bucket and the bookkeeping ([`FieldPast`]: 144 bytes, 64 of them the
//! last span summed): 3 504 bytes, and a key's `Vec` of fields adds 24 (see the test
//! `seven_days_by_the_hour_fit_in_4_kb`).
//!
//! f32 keeps about 7 significant digits: `avg` and `stddev` of closed buckets are that
//! precise; `min` and `max` are handed back as the shortest decimal the f32 holds, so a
//! reading with up to 6 significant digits (`21.35`, `1013.25`) comes back exactly.

use super::Summary;

/// A closed bucket: 20 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Bucket {
    /// Readings; 0: empty.
    pub(crate) count: u32,
    pub(crate) mean: f32,
    /// Sum of squared deviations from the mean.
    pub(crate) m2: f32,
    pub(crate) min: f32,
    pub(crate) max: f32,
}

impl Bucket {
    fn of(s: &Summary) -> Bucket {
        Bucket {
            count: u32::try_from(s.count).unwrap_or(u32::MAX),
            mean: s.mean as f32,
            m2: s.m2 as f32,
            min: s.min as f32,
            max: s.max as f32,
        }
    }

    /// In f64; min and max as the shortest decimals their f32 holds.
    fn summary(&self) -> Summary {
        let mut s = self.raw();
        (s.min, s.max) = (widen(self.min), widen(self.max));
        s
    }

    /// In f64, min and max converted exactly (widened once, after a span is merged).
    fn raw(&self) -> Summary {
        Summary {
            count: u64::from(self.count),
            mean: f64::from(self.mean),
            m2: f64::from(self.m2),
            min: f64::from(self.min),
            max: f64::from(self.max),
        }
    }
}

/// `x` as the f64 of the shortest decimal that reads back as `x`: `21.35f32` is 21.35, not
/// 21.350000381469727.
pub(crate) fn widen(x: f32) -> f64 {
    if !x.is_finite() {
        return f64::from(x);
    }
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// A reading (or a seeded roll-up) could not be placed: its bucket is older than the past
/// kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooOld;

/// One field's past for one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldPast {
    /// The bucket being filled, and its readings in f64, so that a bucket is rounded to
    /// f32 once, when it closes, rather than at every reading.
    pub(crate) open: Option<(i64, Summary)>,
    /// Index of the newest bucket the ring holds: it holds (newest - n, newest].
    pub(crate) newest: i64,
    /// The closed buckets, slot `index mod n`; empty until the first bucket closes.
    pub(crate) ring: Box<[Bucket]>,
    /// The closed buckets of the range `summarize` summed last, and their sum: a rule asks
    /// the same span at every reading, and the ring changes once a bucket (when one closes),
    /// so summing a "1h by 1m" span 60 times a minute becomes once.
    memo: Memo,
}

/// `(from, to, sum)` of [`FieldPast::summarize`]'s last range of closed buckets; cleared by
/// every change to the ring. A cache: neither saved nor compared (two pasts are equal
/// whatever they last summed).
#[derive(Debug, Clone, Default)]
struct Memo(std::cell::Cell<Option<(i64, i64, Summary)>>);

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl FieldPast {
    /// Places readings `s` in bucket `j`, the ring holding `n` buckets. `Ok(true)`: the
    /// closed buckets changed (not only the open one).
    pub(crate) fn place(&mut self, n: usize, j: i64, s: &Summary) -> Result<bool, TooOld> {
        match &mut self.open {
            Some((a, o)) if *a == j => {
                o.merge(s);
                Ok(false)
            }
            Some((a, _)) if *a < j => {
                if let Some((a, o)) = self.open.take() {
                    self.merge_closed(n, a, &o);
                }
                self.open = Some((j, *s));
                Ok(true)
            }
            Some((a, _)) => {
                // Earlier than the open bucket: into the ring if still kept.
                if j < *a - n as i64 {
                    return Err(TooOld);
                }
                self.merge_closed(n, j, s);
                Ok(true)
            }
            None if !self.ring.is_empty() && j <= self.newest => {
                if j <= self.newest - n as i64 {
                    return Err(TooOld);
                }
                self.merge_closed(n, j, s);
                Ok(true)
            }
            None => {
                self.open = Some((j, *s));
                Ok(false)
            }
        }
    }

    /// Merges `s` into closed bucket `j`, moving the ring forward to it if it is newer.
    fn merge_closed(&mut self, n: usize, j: i64, s: &Summary) {
        self.memo.0.set(None);
        if self.ring.len() != n {
            self.ring = vec![Bucket::default(); n].into_boxed_slice();
            self.newest = j;
        } else if j > self.newest {
            let gap = j - self.newest;
            if gap >= n as i64 {
                self.ring.fill(Bucket::default());
            } else {
                for i in self.newest + 1..=j {
                    self.ring[slot(n, i)] = Bucket::default();
                }
            }
            self.newest = j;
        }
        let b = &mut self.ring[slot(n, j)];
        if b.count == 0 {
            *b = Bucket::of(s);
        } else {
            let mut m = b.summary();
            m.merge(s);
            *b = Bucket::of(&m);
        }
    }

    /// Does bucket `j` hold readings?
    pub(crate) fn has(&self, n: usize, j: i64) -> bool {
        self.open.is_some_and(|(a, o)| a == j && o.count > 0) || self.closed(n, j).is_some()
    }

    /// Closed bucket `j`, if the ring holds it and it is not empty.
    fn closed(&self, n: usize, j: i64) -> Option<&Bucket> {
        if self.ring.len() != n || j > self.newest || j <= self.newest - n as i64 {
            return None;
        }
        self.ring.get(slot(n, j)).filter(|b| b.count > 0)
    }

    /// The readings of the buckets in `ranges` (inclusive index ranges, not overlapping).
    pub(crate) fn summarize(&self, n: usize, ranges: impl IntoIterator<Item = (i64, i64)>) -> Summary {
        // Closed buckets first, min and max widened once at the end; then the open bucket.
        let mut closed = Summary::default();
        let mut open = Summary::default();
        for (from, to) in ranges {
            if let Some((a, o)) = &self.open {
                if (from..=to).contains(a) {
                    open.merge(o);
                }
            }
            if self.ring.len() != n {
                continue;
            }
            let from = from.max(self.newest - n as i64 + 1);
            let to = to.min(self.newest);
            if from > to {
                continue;
            }
            let sum = match self.memo.0.get() {
                Some((a, b, sum)) if (a, b) == (from, to) => sum,
                _ => {
                    let mut sum = Summary::default();
                    for j in from..=to {
                        if self.open.is_some_and(|(a, _)| a == j) {
                            continue;
                        }
                        if let Some(b) = self.ring.get(slot(n, j)).filter(|b| b.count > 0) {
                            sum.merge(&b.raw());
                        }
                    }
                    self.memo.0.set(Some((from, to, sum)));
                    sum
                }
            };
            closed.merge(&sum);
        }
        if closed.count > 0 {
            // Exact: each is an f32 value.
            (closed.min, closed.max) = (widen(closed.min as f32), widen(closed.max as f32));
        }
        closed.merge(&open);
        closed
    }

    /// Heap bytes this field holds (its ring).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.len() * size_of::<Bucket>()
    }

    /// The closed buckets oldest first, from `newest - n + 1`.
    pub(crate) fn ring_in_order(&self, n: usize) -> impl Iterator<Item = &Bucket> {
        let first = self.newest - n as i64 + 1;
        (first..=self.newest).filter_map(move |j| self.ring.get(slot(n, j)))
    }

    /// Sets the closed buckets from `buckets`, oldest first, the last one being `newest`
    /// (a restore). Ignored unless there are `n` of them.
    pub(crate) fn set_ring(&mut self, n: usize, newest: i64, buckets: Vec<Bucket>) {
        if buckets.len() != n {
            return;
        }
        let mut ring = vec![Bucket::default(); n].into_boxed_slice();
        for (j, b) in (newest - n as i64 + 1..).zip(buckets) {
            ring[slot(n, j)] = b;
        }
        self.ring = ring;
        self.newest = newest;
        self.memo.0.set(None);
        self.settle(n);
    }

    /// Sets the open bucket (a restore).
    pub(crate) fn set_open(&mut self, n: usize, j: i64, s: Summary) {
        self.open = (s.count > 0).then_some((j, s));
        self.settle(n);
    }

    /// Keeps the open bucket newer than the ring's newest, should two restored pieces
    /// disagree (they are saved together, so only defensively): an open bucket the ring
    /// already passed is folded into the ring.
    fn settle(&mut self, n: usize) {
        if let Some((a, o)) = self.open {
            if self.ring.len() == n && a <= self.newest {
                self.open = None;
                if a > self.newest - n as i64 {
                    self.merge_closed(n, a, &o);
                }
            }
        }
    }
}

fn slot(n: usize, j: i64) -> usize {
    j.rem_euclid(n as i64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference: every reading kept with its bucket index.
    fn reference(readings: &[(i64, f64)], ranges: &[(i64, i64)]) -> (u64, f64, f64, f64, f64) {
        let vs: Vec<f64> =
            readings.iter().filter(|(j, _)| ranges.iter().any(|(a, b)| (a..=b).contains(&j))).map(|r| r.1).collect();
        let n = vs.len() as f64;
        let mean = vs.iter().sum::<f64>() / n;
        let var = if vs.len() > 1 { vs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let min = vs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (vs.len() as u64, mean, var.sqrt(), min, max)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-5 * b.abs().max(1.0)
    }

    #[test]
    fn the_last_span_summed_is_never_stale() {
        // One span asked after every reading, as a rule does: the sum kept from the last ask
        // must be what summing again gives, through readings that close buckets, late ones
        // folded into closed buckets, gaps, and a restored ring.
        let n = 12;
        let mut f = FieldPast::default();
        let mut x: u64 = 11;
        let mut j = 0i64;
        for step in 0..2_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (((x >> 33) % 4000) as i64 - 1000) as f64 / 100.0;
            let at = if x.is_multiple_of(5) { j - 1 - (x % 4) as i64 } else { j };
            let _ = f.place(n, at, &Summary::of(v));
            if step == 1_000 {
                let ring: Vec<Bucket> = f.ring_in_order(n).copied().collect();
                f.set_ring(n, f.newest, ring.into_iter().map(|b| Bucket { count: b.count * 2, ..b }).collect());
            }
            j += i64::from(x.is_multiple_of(4)) + 5 * i64::from(x.is_multiple_of(97));
            let got = f.summarize(n, [(j - 11, j)]);
            let mut fresh = f.clone();
            fresh.memo = Memo::default();
            assert_eq!(got, fresh.summarize(n, [(j - 11, j)]), "step {step}");
        }
    }

    #[test]
    fn buckets_are_20_bytes() {
        assert_eq!(size_of::<Bucket>(), 20);
    }

    #[test]
    fn widening_gives_back_short_decimals() {
        for v in [21.35, 1013.25, -0.5, 0.1, 123456.0, -40.125] {
            assert_eq!(widen(v as f32), v);
        }
        assert!(widen(f32::INFINITY).is_infinite());
    }

    #[test]
    fn spans_match_a_reference_as_time_advances_with_gaps() {
        // 24 buckets; readings in buckets 0..200 with gaps, two decimals, some late.
        let n = 24;
        let mut f = FieldPast::default();
        let mut kept: Vec<(i64, f64)> = Vec::new();
        let mut x: u64 = 7;
        let mut j = 0i64;
        while j < 200 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Two decimals, as a sensor sends them (the nearest f64 to the decimal).
            let v = (((x >> 33) % 4000) as i64 - 1000) as f64 / 100.0;
            // A late reading now and then, two buckets back.
            let at = if x.is_multiple_of(7) { j - 2 } else { j };
            f.place(n, at, &Summary::of(v)).expect("kept");
            kept.push((at, v));
            // Gaps: sometimes jump a few buckets, once past the whole ring.
            j += match x % 11 {
                _ if j == 120 => 30,
                0 => 3,
                _ => i64::from(x.is_multiple_of(3)),
            };
            for (from, to) in [(j - 23, j), (j - 5, j - 1), (j, j), (j - 24, j - 24)] {
                let got = f.summarize(n, [(from, to)]);
                let want = reference(&kept, &[(from.max(j - 24), to)]);
                if want.0 == 0 {
                    assert_eq!(got.count, 0, "{from}..={to} at {j}");
                    continue;
                }
                assert_eq!(got.count, want.0, "{from}..={to} at {j}");
                assert!(close(got.mean, want.1), "mean {} vs {}", got.mean, want.1);
                assert!(close(got.stddev().unwrap_or(f64::NAN), want.2), "stddev {:?} vs {}", got.stddev(), want.2);
                assert_eq!((got.min, got.max), (want.3, want.4), "{from}..={to} at {j}");
            }
        }
    }

    #[test]
    fn the_ring_forgets_what_falls_out_of_the_span() {
        let n = 4;
        let mut f = FieldPast::default();
        for j in 0..4 {
            f.place(n, j, &Summary::of(j as f64)).expect("placed");
        }
        assert_eq!(f.summarize(n, [(0, 3)]).count, 4);
        // Buckets 5 then 6 (4 stays empty): the ring holds 2..=5 and 6 is open; 0 and 1 are
        // gone, and can no longer be written.
        f.place(n, 5, &Summary::of(5.0)).expect("placed");
        f.place(n, 6, &Summary::of(6.0)).expect("placed");
        assert_eq!(f.summarize(n, [(0, 1)]).count, 0);
        assert_eq!(f.summarize(n, [(2, 6)]).count, 4, "2, 3, 5 and the open 6");
        assert_eq!(f.place(n, 1, &Summary::of(0.0)), Err(TooOld));
        assert_eq!(f.place(n, 2, &Summary::of(2.0)), Ok(true), "late, still kept");
        assert_eq!(f.summarize(n, [(2, 2)]).count, 2);
        // A gap longer than the ring clears it.
        f.place(n, 100, &Summary::of(1.0)).expect("placed");
        f.place(n, 101, &Summary::of(1.0)).expect("placed");
        assert_eq!(f.summarize(n, [(0, 99)]).count, 0);
        assert_eq!(f.summarize(n, [(97, 101)]).count, 2);
    }

    #[test]
    fn seven_days_by_the_hour_fit_in_4_kb() {
        let n = 168;
        let mut f = FieldPast::default();
        for j in 0..=(n as i64 + 5) {
            f.place(n, j, &Summary::of(20.0)).expect("placed");
        }
        let bytes = size_of::<FieldPast>() + f.heap_bytes();
        // 144 bytes of bookkeeping on 64-bit targets (fewer on 32-bit ones), of which 64 the
        // last span summed; 20 a bucket.
        assert!(size_of::<FieldPast>() <= 144, "{}", size_of::<FieldPast>());
        assert_eq!(bytes, size_of::<FieldPast>() + 168 * 20);
        assert!(bytes + size_of::<Vec<FieldPast>>() < 4096);
    }
}

//! Novelty: is this value, or this move between two readings, new for the series?
//!
//! The detection at the heart of the `anomaly` kind, chosen and tuned on NAB (one parameter
//! set for all 58 series; docs/benchmarks.md has the scores and how they were made):
//!
//! 1. **Range.** The series' running minimum and maximum. A reading beyond them is a new
//!    extreme, scored by how far beyond: `0.5 + 0.5 · excess / old range`, at most 1. The
//!    range grows by at most [`GROW`] times its width a reading, and every [`AGE`] readings
//!    it shrinks a little towards the range of those readings, so a sensor's wild error
//!    code blunts the bins for days, not for good. (On NAB the two cost 0.8 points.)
//! 2. **Moves.** Readings are quantised into [`BINS`] equal bins of the range, and the
//!    detector counts the moves from one bin to the next (a `BINS × BINS` table). A move never
//!    seen before scores 1. Every [`AGE`] readings all counts are halved, so moves that
//!    stopped happening become new again.
//! 3. **Clusters.** An isolated novel reading counts half; one within [`CLUSTER`] readings of
//!    the previous novel reading counts fully: anomalies come in bunches, noise does not.
//! 4. **Rest.** After a score of at least [`REST_AT`] the next [`REST`] readings score 0, so
//!    one disturbance is one alarm, not a burst of them.
//!
//! The state is the range (running and recent), the last bin, three counters and 36 small
//! counts: under 150 bytes, O(1) per reading (the aging pass touches 36 counts once every 800 readings).
//!
//! It is a bounded-memory cousin of NAB's CAD OSE detector (contexts of quantised values and
//! their novelty), reduced to first-order moves. What it misses: a value normal for the series
//! but wrong for the time of day (the daily profile in `anomaly.rs` covers that), and a
//! drift inside the range seen so far, until it leaves it.

/// Bins of the running range.
pub const BINS: usize = 6;
/// Readings between halvings of the move counts.
pub const AGE: u64 = 800;
/// A new extreme scores at least this ...
const EXTREME_BASE: f64 = 0.5;
/// ... plus this times its excess over the old range.
const EXTREME_SLOPE: f64 = 0.5;
/// A novel reading within this many readings of the previous one counts fully.
pub const CLUSTER: u64 = 30;
/// Readings scored 0 after a score of at least [`REST_AT`].
pub const REST: u32 = 100;
/// See [`REST`].
pub const REST_AT: f64 = 0.5;
/// A new extreme moves the range by at most this many times its width.
const GROW: f64 = 10.0;
/// Share of the gap between the running range and the recent one closed at each aging pass
/// (half-life: 23 passes, about 18 000 readings).
const SHRINK: f64 = 0.03;
/// Readings before the first score.
const WARM: u64 = 10;

/// One series' novelty state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Novelty {
    /// Readings seen.
    n: u64,
    /// The running range.
    lo: f64,
    hi: f64,
    /// The range of the readings since the last aging pass, which the running range shrinks
    /// towards (a little, each pass), so one wild reading does not blunt the bins for good.
    recent_lo: f64,
    recent_hi: f64,
    /// The range at the last aging pass: what "new" is measured against when the caller asks
    /// how far a reading is beyond the range ([`Novelty::beyond`]).
    #[serde(default)]
    ref_lo: f64,
    #[serde(default)]
    ref_hi: f64,
    /// The previous reading's bin; `None` before the first.
    prev: Option<u8>,
    /// Times each move (from bin, to bin) was seen, halved every [`AGE`] readings.
    moves: [[u16; BINS]; BINS],
    /// The reading number of the last novel reading.
    last_novel: u64,
    /// Readings left in the rest period.
    rest: u32,
}

impl Default for Novelty {
    fn default() -> Self {
        Novelty {
            n: 0,
            lo: 0.0,
            hi: 0.0,
            recent_lo: f64::INFINITY,
            recent_hi: f64::NEG_INFINITY,
            ref_lo: 0.0,
            ref_hi: 0.0,
            prev: None,
            moves: [[0; BINS]; BINS],
            last_novel: 0,
            rest: 0,
        }
    }
}

impl Novelty {
    /// How far `x` is beyond the range as it was at the last aging pass (up to [`AGE`]
    /// readings ago), as a share of that range's width; 0 inside it. A drift gets far beyond
    /// it, the tail of steady noise only a hair.
    pub fn beyond(&self, x: f64) -> f64 {
        let width = self.ref_hi - self.ref_lo;
        let excess = (x - self.ref_hi).max(self.ref_lo - x).max(0.0);
        if width > 0.0 {
            excess / width
        } else if excess > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }

    /// Scores `x` (0, or 0.25 to 1), then learns from it.
    pub fn step(&mut self, x: f64) -> f64 {
        self.n += 1;
        if self.n == 1 {
            (self.lo, self.hi, self.ref_lo, self.ref_hi) = (x, x, x, x);
        }
        let old = self.hi - self.lo;
        let extreme =
            |excess: f64| if old > 0.0 { (EXTREME_BASE + EXTREME_SLOPE * excess / old).min(1.0) } else { 1.0 };
        let mut score = 0.0;
        // The range grows by at most GROW times itself a reading, so one wild reading (a
        // sensor's error code) does not blunt the bins: it scores, and a lasting move gets
        // there in a few readings.
        let most = if old > 0.0 { GROW * old } else { f64::INFINITY };
        if x > self.hi {
            score = extreme(x - self.hi);
            self.hi += (x - self.hi).min(most);
        } else if x < self.lo {
            score = extreme(self.lo - x);
            self.lo -= (self.lo - x).min(most);
        }
        let range = self.hi - self.lo;
        let bin = if range > 0.0 { (((x - self.lo).max(0.0) / range * BINS as f64) as usize).min(BINS - 1) } else { 0 };
        if let Some(prev) = self.prev {
            if let Some(count) = self.moves.get_mut(usize::from(prev)).and_then(|row| row.get_mut(bin)) {
                if *count == 0 {
                    score = 1.0;
                }
                *count = count.saturating_add(1);
            }
        }
        self.prev = u8::try_from(bin).ok();
        if self.n < AGE {
            // Until the first aging pass, "new" is measured against the range so far.
            (self.ref_lo, self.ref_hi) = (self.lo, self.hi);
        }
        self.recent_lo = self.recent_lo.min(x.max(self.lo));
        self.recent_hi = self.recent_hi.max(x.min(self.hi));
        if self.n.is_multiple_of(AGE) {
            for c in self.moves.iter_mut().flatten() {
                *c >>= 1;
            }
            self.lo += (self.recent_lo - self.lo).max(0.0) * SHRINK;
            self.hi -= (self.hi - self.recent_hi).max(0.0) * SHRINK;
            (self.recent_lo, self.recent_hi) = (f64::INFINITY, f64::NEG_INFINITY);
            (self.ref_lo, self.ref_hi) = (self.lo, self.hi);
        }
        if self.n < WARM {
            return 0.0;
        }
        let mut out = 0.0;
        if score > 0.0 {
            out = if self.n - self.last_novel < CLUSTER && self.last_novel > 0 { score } else { 0.5 * score };
            self.last_novel = self.n;
        }
        if self.rest > 0 {
            self.rest -= 1;
            return 0.0;
        }
        if out >= REST_AT {
            self.rest = REST;
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1] (xorshift).
    pub(crate) fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 2001) as f64 / 1000.0 - 1.0
    }

    /// A daily-ish wave: 20 ± 2, a period of 288 readings, with ±0.3 of noise.
    fn normal(i: u64, seed: &mut u64) -> f64 {
        20.0 + 2.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + 0.3 * noise(seed)
    }

    fn learnt(readings: u64) -> (Novelty, u64) {
        let mut nv = Novelty::default();
        let mut seed = 7;
        for i in 0..readings {
            nv.step(normal(i, &mut seed));
        }
        (nv, seed)
    }

    #[test]
    fn a_learnt_normal_signal_scores_nothing() {
        let (mut nv, mut seed) = learnt(3_000);
        let worst = (3_000..6_000).map(|i| nv.step(normal(i, &mut seed))).fold(0.0, f64::max);
        // At most a lone new extreme by a hair (the noise's tail): under the default threshold.
        assert!(worst < 0.3, "{worst}");
    }

    #[test]
    fn a_spike_scores_by_how_far_it_is_outside_the_range() {
        let (nv, seed) = learnt(3_000);
        let (mut small, mut big) = (nv.clone(), nv);
        let (mut s1, mut s2) = (seed, seed);
        small.step(normal(3_000, &mut s1));
        big.step(normal(3_000, &mut s2));
        // 0.5 of the range above it, and 5 ranges above it; alone, each counts half.
        let (a, b) = (small.step(20.0 + 2.3 + 0.5 * 4.6), big.step(20.0 + 2.3 + 5.0 * 4.6));
        assert!(a >= 0.3 && a < b, "{a} {b}");
        assert_eq!(b, 0.5, "a lone reading counts half of its score (1)");
    }

    /// Scores of 50 readings of the normal signal, disturbed, after 3 000 normal ones.
    fn disturbed(f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
        let (mut nv, mut seed) = learnt(3_000);
        (3_000..3_050)
            .map(|i| {
                let x = normal(i, &mut seed);
                let n = noise(&mut seed);
                nv.step(f(x, n))
            })
            .collect()
    }

    #[test]
    fn a_level_shift_out_of_the_range_scores_at_once() {
        let scores = disturbed(|x, _| x + 3.0);
        assert!(scores[0] >= 0.3, "{scores:?}");
    }

    #[test]
    fn a_noise_burst_scores_fully_then_rests() {
        let scores = disturbed(|x, n| x + 4.0 * n);
        let first = scores.iter().position(|&s| s >= REST_AT).unwrap_or_else(|| panic!("{scores:?}"));
        assert!(first < 10, "{scores:?}");
        assert!(scores[first + 1..].iter().all(|&s| s == 0.0), "the rest period: {scores:?}");
    }

    #[test]
    fn a_wild_error_code_widens_the_range_ten_times_at_most_and_it_shrinks_back() {
        let (mut nv, mut seed) = learnt(3_000);
        let width = nv.hi - nv.lo;
        assert!(nv.step(65_535.0) > 0.0, "the error code itself is new");
        assert!(nv.hi - nv.lo <= (GROW + 1.0) * width + 1e-9, "{nv:?}");
        let wide = nv.hi - nv.lo;
        let mut scores = Vec::new();
        for i in 3_001..60_000 {
            scores.push(nv.step(normal(i, &mut seed)));
        }
        // 57 000 readings on (about 40 days at one a minute), most of the excess is gone.
        assert!(nv.hi - nv.lo < wide / 4.0, "{} vs {wide}", nv.hi - nv.lo);
        // Sharp again: a reading of 30 stands out.
        assert!(nv.step(30.0) >= 0.3, "{nv:?}");
    }

    #[test]
    fn the_state_is_small() {
        let (nv, _) = learnt(1_000);
        assert!(std::mem::size_of::<Novelty>() <= 160, "{}", std::mem::size_of::<Novelty>());
        let json = serde_json::to_vec(&nv).expect("serialises");
        assert!(json.len() < 400, "{}", json.len());
    }
}

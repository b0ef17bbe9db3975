//! The trend of one series: an exponentially weighted least-squares line through its
//! readings, and when that line crosses a threshold.
//!
//! A reading `age` hours old weighs `exp(-age / tau)`, so the fit follows the last `tau` or
//! so of readings and forgets older ones smoothly, whatever the spacing of the readings
//! (irregular intervals, gaps, bursts). Six running sums give the line exactly, in O(1) per
//! reading and a fixed few bytes per key; no reading is stored. Times are kept relative to
//! the newest reading and values relative to the first, so the sums stay small and the
//! squares do not cancel away.
//!
//! Why a weighted line rather than Holt's linear smoothing: both are O(1), but the line
//! also gives the variances of its level and slope, from which a crossing time gets a
//! confidence; Holt's method has no such variance without a model around it.

use super::normal_cdf;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// The running sums of one series' weighted fit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrendFit {
    /// Time (ms) of the newest reading: the origin of `t` in the sums.
    t_ref: i64,
    /// The first value: the origin of `y` in the sums.
    y_ref: f64,
    /// Σw, Σw·t, Σw·t², Σw·y, Σw·t·y, Σw·y², Σw² (t in hours from `t_ref`, y from `y_ref`).
    s: [f64; 7],
    /// Readings pushed.
    n: u64,
    /// Time of the first reading, for how much history the fit has seen.
    first: i64,
}

/// A fitted line, at the newest reading's time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// The line's value now.
    pub level: f64,
    /// Change per hour.
    pub slope: f64,
    /// Variance of `level`.
    pub var_level: f64,
    /// Variance of `slope`.
    pub var_slope: f64,
    /// Covariance of the two.
    pub cov: f64,
    /// Standard deviation of the readings around the line.
    pub sigma: f64,
}

/// A predicted crossing of a threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    /// Hours from the newest reading until the line reaches the threshold (0: it has).
    pub hours: f64,
    /// How sure: the probability that the line, `horizon` hours ahead, is past the
    /// threshold, given the uncertainty of its level and slope.
    pub confidence: f64,
}

impl TrendFit {
    /// A fit whose first reading is `y` at `t`.
    pub fn new(t: i64, y: f64) -> TrendFit {
        TrendFit { t_ref: t, y_ref: y, s: [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], n: 1, first: t }
    }

    /// Adds a reading; older readings fade with time constant `tau_h` hours. A reading older
    /// than the newest (out of order) is added at its place without fading anything.
    pub fn push(&mut self, t: i64, y: f64, tau_h: f64) {
        let [s0, s1, s2, sy, sty, syy, sw2] = &mut self.s;
        let mut at = 0.0;
        if t > self.t_ref {
            // Move the origin to `t`: every old t becomes t - d.
            let d = (t - self.t_ref) as f64 / MS_PER_HOUR;
            *s2 += -2.0 * d * *s1 + d * d * *s0;
            *s1 -= d * *s0;
            *sty -= d * *sy;
            let fade = (-d / tau_h).exp();
            for v in [&mut *s0, &mut *s1, &mut *s2, &mut *sy, &mut *sty, &mut *syy] {
                *v *= fade;
            }
            *sw2 *= fade * fade;
            self.t_ref = t;
        } else {
            at = (t - self.t_ref) as f64 / MS_PER_HOUR;
        }
        let y = y - self.y_ref;
        *s0 += 1.0;
        *s1 += at;
        *s2 += at * at;
        *sy += y;
        *sty += at * y;
        *syy += y * y;
        *sw2 += 1.0;
        self.n += 1;
    }

    /// Readings pushed so far.
    pub fn readings(&self) -> u64 {
        self.n
    }

    /// Time between the first reading and the newest, in ms.
    pub fn span_ms(&self) -> i64 {
        self.t_ref - self.first
    }

    /// The line, or `None` while it is not determined (fewer than three readings' worth of
    /// weight, or all at the same time).
    pub fn fit(&self) -> Option<Fit> {
        let [s0, s1, s2, sy, sty, syy, sw2] = self.s;
        let denom = s0 * s2 - s1 * s1;
        // The weighted spread of the times, relative to their scale.
        if s0 <= 0.0 || denom <= 1e-12 * s0 * s0.max(s2) {
            return None;
        }
        let slope = (s0 * sty - s1 * sy) / denom;
        let intercept = (sy - slope * s1) / s0;
        // Weighted residual sum of squares, and the effective number of readings.
        let rss = (syy - intercept * sy - slope * sty).max(0.0);
        let n_eff = s0 * s0 / sw2;
        if n_eff <= 2.0 {
            return None;
        }
        let var = rss / s0 * n_eff / (n_eff - 2.0);
        Some(Fit {
            level: intercept + self.y_ref,
            slope,
            var_level: var * s2 / denom,
            var_slope: var * s0 / denom,
            cov: -var * s1 / denom,
            sigma: var.sqrt(),
        })
    }
}

impl Fit {
    /// The line `hours` ahead, and the standard deviation of that estimate.
    pub fn at(&self, hours: f64) -> (f64, f64) {
        let v = self.var_level + hours * hours * self.var_slope + 2.0 * hours * self.cov;
        (self.level + self.slope * hours, v.max(0.0).sqrt())
    }

    /// When the line reaches `threshold` from above (`below`) or from below, looking at most
    /// `horizon` hours ahead for the confidence; `None` if it heads away or stays level.
    pub fn crossing(&self, threshold: f64, below: bool, horizon: f64) -> Option<Crossing> {
        let past = |v: f64| if below { v <= threshold } else { v >= threshold };
        let hours = if past(self.level) {
            0.0
        } else if (below && self.slope < 0.0) || (!below && self.slope > 0.0) {
            (threshold - self.level) / self.slope
        } else {
            return None;
        };
        let (mean, sd) = self.at(horizon);
        let z = if sd > 0.0 {
            (threshold - mean) / sd
        } else if past(mean) {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
        let confidence = if below { normal_cdf(z) } else { normal_cdf(-z) };
        Some(Crossing { hours, confidence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn fit_of(points: impl IntoIterator<Item = (i64, f64)>, tau_h: f64) -> TrendFit {
        let mut it = points.into_iter();
        let (t, y) = it.next().expect("a point");
        let mut f = TrendFit::new(t, y);
        for (t, y) in it {
            f.push(t, y, tau_h);
        }
        f
    }

    #[test]
    fn a_straight_line_is_fitted_exactly_whatever_the_spacing() {
        // 3.9 V falling by 0.02 V an hour, readings at irregular times from a real epoch.
        let t0 = 1_780_000_000_000;
        let times = [0, 7, 30, 31, 90, 200, 201, 330, 600, 601, 602, 900];
        let f = fit_of(times.iter().map(|m| (t0 + m * 60_000, 3.9 - 0.02 * *m as f64 / 60.0)), 6.0);
        let fit = f.fit().expect("determined");
        assert!((fit.slope + 0.02).abs() < 1e-9, "{fit:?}");
        assert!((fit.level - (3.9 - 0.02 * 15.0)).abs() < 1e-9, "{fit:?}");
        assert!(fit.sigma < 1e-6, "{fit:?}");
        let c = fit.crossing(3.3, true, 24.0).expect("heading down");
        assert!((c.hours - 0.3 / 0.02).abs() < 1e-6, "{c:?}");
        assert!(c.confidence > 0.999, "{c:?}");
        assert!(fit.crossing(4.5, false, 24.0).is_none(), "it heads away from 4.5");
    }

    #[test]
    fn old_readings_fade_so_a_new_trend_takes_over() {
        // Flat for two days, then falling by 0.05 an hour for 12 hours.
        let flat = (0..48).map(|h| (h * H, 4.0));
        let falling = (48..=60).map(|h| (h * H, 4.0 - 0.05 * (h - 48) as f64));
        let f = fit_of(flat.chain(falling), 3.0);
        let fit = f.fit().expect("determined");
        assert!(fit.slope < -0.03, "the recent fall dominates: {fit:?}");
        let slow = fit_of(
            (0..48).map(|h| (h * H, 4.0)).chain((48..=60).map(|h| (h * H, 4.0 - 0.05 * (h - 48) as f64))),
            100.0,
        );
        assert!(slow.fit().expect("determined").slope > fit.slope, "a long memory lags");
    }

    #[test]
    fn noise_lowers_the_confidence_and_a_level_series_predicts_no_crossing() {
        // A deterministic zig-zag of ±0.1 around a slow fall of 0.01 an hour.
        let pts = (0..24).map(|h| (h * H, 3.6 - 0.01 * h as f64 + if h % 2 == 0 { 0.1 } else { -0.1 }));
        let fit = fit_of(pts, 12.0).fit().expect("determined");
        assert!(fit.sigma > 0.05, "{fit:?}");
        let c = fit.crossing(3.3, true, 24.0).expect("heading down");
        assert!(c.confidence < 0.99 && c.confidence > 0.01, "{c:?}");
        let level = fit_of((0..24).map(|h| (h * H, 3.6 + if h % 2 == 0 { 0.1 } else { -0.1 })), 12.0);
        let fit = level.fit().expect("determined");
        // Level on average: any predicted crossing is far and unsure.
        if let Some(c) = fit.crossing(3.3, true, 24.0) {
            assert!(c.hours > 24.0 && c.confidence < 0.5, "{c:?}");
        }
    }

    #[test]
    fn already_past_the_threshold_is_a_crossing_now_and_too_little_data_is_no_fit() {
        let f = fit_of((0..5).map(|h| (h * H, 3.2 - 0.01 * h as f64)), 6.0);
        let c = f.fit().expect("determined").crossing(3.3, true, 24.0).expect("below already");
        assert_eq!(c.hours, 0.0);
        assert!(TrendFit::new(0, 1.0).fit().is_none());
        let same_time = fit_of([(0, 1.0), (0, 2.0), (0, 3.0)], 6.0);
        assert!(same_time.fit().is_none(), "no spread of times, no slope");
    }

    #[test]
    fn an_out_of_order_reading_is_placed_at_its_time() {
        let in_order = fit_of([(0, 1.0), (H, 2.0), (2 * H, 3.0), (3 * H, 4.0)], 1e9);
        let shuffled = fit_of([(0, 1.0), (2 * H, 3.0), (H, 2.0), (3 * H, 4.0)], 1e9);
        let (a, b) = (in_order.fit().expect("fit"), shuffled.fit().expect("fit"));
        assert!((a.slope - b.slope).abs() < 1e-6 && (a.level - b.level).abs() < 1e-6, "{a:?} {b:?}");
    }
}

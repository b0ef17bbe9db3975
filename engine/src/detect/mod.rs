//! Streaming detectors: plain arithmetic over one series, no Rhai, no clock. The rule kinds
//! `anomaly` and `forecast` (`kinds/anomaly.rs`, `kinds/forecast.rs`) keep one per key and
//! feed it each reading with its event time.
//!
//! ```text
//! reading (time, value) ─▶ forecast::TrendFit::push ─▶ fit(): level, slope, their variances
//!                                                    ─▶ Fit::crossing(threshold) ─▶ when, how sure
//! reading (time, value) ─▶ anomaly::Detector::step ─▶ Score { score, expected, band, kind }
//! ```
//!
//! State is a few dozen numbers per key, saved with serde like every kind's state.

pub mod anomaly;
pub mod forecast;
pub mod novelty;

/// The standard normal distribution's CDF, Φ(z).
///
/// Hand-written because it is the only special function the detectors need: W. J. Cody's
/// rational approximation of erfc as given in Numerical Recipes (`erfcc`, fractional error
/// under 1.2e-7 everywhere), which is far finer than any confidence a rule reports.
/// A crate for it (`libm`, `statrs`) would add a dependency for ten lines.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    let x = -z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let erfc = if x >= 0.0 { erfc } else { 2.0 - erfc };
    0.5 * erfc
}

#[cfg(test)]
mod tests {
    use super::normal_cdf;

    #[test]
    fn the_normal_cdf_matches_its_table() {
        // Values from any statistics table.
        for (z, p) in
            [(0.0, 0.5), (1.0, 0.841_344_746), (-1.0, 0.158_655_254), (1.96, 0.975_002_105), (-3.0, 0.001_349_898)]
        {
            assert!((normal_cdf(z) - p).abs() < 1e-6, "Φ({z}) = {} not {p}", normal_cdf(z));
        }
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert!(normal_cdf(f64::NAN).is_nan());
    }
}
